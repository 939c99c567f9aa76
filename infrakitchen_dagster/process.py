"""Running an external process the way infrastructure work needs it.

Each process gets its own process group, so a timeout or a terminated Dagster run can stop
everything it started (tofu, its provider plugins, their `local-exec` children): SIGINT to
the group first (tofu then releases locks and writes state), SIGKILL after a grace period.
Lines are masked before anyone sees them and handed to the caller on the calling thread,
because Dagster's log handlers are not meant to be fed from arbitrary threads.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .interpolation import mask


class ProcessTimeout(Exception):
    """The process ran past its time limit and was stopped."""

    def __init__(self, argv0: str, timeout: float, grace: float):
        self.timeout = timeout
        super().__init__(
            f"{argv0} timed out after {timeout:g}s (SIGINT sent, SIGKILL after {grace:g}s grace)"
        )


@dataclass
class ProcessResult:
    returncode: int
    lines: list[str] = field(default_factory=list)
    duration: float = 0.0

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def tail(self, count: int = 20) -> str:
        return "\n".join(self.lines[-count:])


def _children_of(pid: int) -> list[int]:
    """Every live descendant of `pid` (read from /proc; empty where /proc is missing)."""
    parents: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                stat = handle.read().decode(errors="replace")
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        parents.setdefault(ppid, []).append(int(entry))
    found: list[int] = []
    frontier = [pid]
    while frontier:
        nxt = []
        for p in frontier:
            for child in parents.get(p, []):
                found.append(child)
                nxt.append(child)
        frontier = nxt
    return found


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM when the run worker dies.

    The child has its own process group (so a timeout can stop its whole tree), which
    also means a killed worker would leave tofu running, holding the state lock. With
    this, tofu is interrupted the way Ctrl-C would: it stops, writes state and unlocks.
    Linux only; elsewhere a no-op.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


#: Watches one process group from outside it. Reads its stdin until EOF: "done" means the
#: owner saw the group finish; anything else (EOF without it) means the owner died, so the
#: whole group (tofu, provider plugins, `local-exec` children) is interrupted, then killed.
_GUARDIAN = """
import os, signal, sys, time
pgid, grace = int(sys.argv[1]), float(sys.argv[2])
if sys.stdin.buffer.read().endswith(b"done"):
    sys.exit(0)
def alive():
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
for sig in (signal.SIGINT, signal.SIGKILL):
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        sys.exit(0)
    deadline = time.monotonic() + grace
    while sig == signal.SIGINT and alive() and time.monotonic() < deadline:
        time.sleep(0.1)
"""


def _start_guardian(pgid: int, grace: float) -> subprocess.Popen:
    """A process outside both our group and the child's that stops the child's group if we
    die: PDEATHSIG reaches tofu only, and tofu's children would outlive us. Started with
    `-I -S` so it costs a bare interpreter start."""
    return subprocess.Popen(
        [sys.executable, "-I", "-S", "-c", _GUARDIAN, str(pgid), str(grace)],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)


def _release_guardian(guardian: subprocess.Popen) -> None:
    assert guardian.stdin is not None
    with contextlib.suppress(OSError):
        guardian.stdin.write(b"done")
        guardian.stdin.close()
    guardian.wait()


def reap_processes_in(directory: Path) -> list[int]:
    """SIGKILL every process whose working directory is `directory` (or below it).

    For a resource whose run died: tofu's provider plugins and provisioner commands can
    outlive a killed worker (tofu itself dies of the broken pipe without stopping them).
    Only called once the run that owned the directory is known to be dead.
    """
    target = str(directory.resolve())
    killed: list[int] = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return killed
    for entry in entries:
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cwd = os.readlink(f"/proc/{entry}/cwd").removesuffix(" (deleted)")
        except OSError:
            continue
        if cwd == target or cwd.startswith(target + os.sep):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(entry), signal.SIGKILL)
                killed.append(int(entry))
    return killed


def stop_process_tree(proc: subprocess.Popen, grace: float) -> None:
    """SIGINT the group, wait up to `grace`, then SIGKILL the group and any escapee."""
    descendants = _children_of(proc.pid)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGINT)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if proc.poll() is not None and not any(_alive(p) for p in descendants):
            break
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    for pid in [*descendants, *_children_of(proc.pid)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_streaming(
    argv: Sequence[str],
    *,
    cwd: str | os.PathLike[str],
    env: dict[str, str],
    on_line: Callable[[str], None],
    secrets: Iterable[str] = (),
    timeout: float | None = None,
    grace: float = 10.0,
    umask: int | None = None,
) -> ProcessResult:
    """Run `argv` (never through a shell), streaming masked lines to `on_line`.

    `umask` (e.g. 0o077) applies to the child only: files it creates (tofu's state, plan
    and lock files) are then private from their first byte.
    """
    secret_list = [s for s in secrets if s]
    started = time.monotonic()
    proc = subprocess.Popen(
        list(argv), cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent,
        umask=-1 if umask is None else umask,
    )
    guardian = _start_guardian(proc.pid, grace)
    lines_q: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for raw in iter(proc.stdout.readline, b""):
            lines_q.put(raw.decode("utf-8", errors="replace").rstrip("\r\n"))
        lines_q.put(None)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    result = ProcessResult(returncode=-1)
    deadline = started + timeout if timeout else None
    finished_reading = False
    try:
        while True:
            if deadline is not None and time.monotonic() > deadline:
                stop_process_tree(proc, grace)
                _drain(lines_q, result, on_line, secret_list)
                raise ProcessTimeout(os.path.basename(argv[0]), timeout or 0, grace)
            try:
                line = lines_q.get(timeout=0.1)
            except queue.Empty:
                if finished_reading or (proc.poll() is not None and not reader.is_alive()):
                    break
                continue
            if line is None:
                finished_reading = True
                if proc.poll() is not None:
                    break
                continue
            shown = mask(line, secret_list)
            result.lines.append(shown)
            on_line(shown)
        result.returncode = proc.wait(
            timeout=max(0.1, deadline - time.monotonic()) if deadline else None
        )
    except subprocess.TimeoutExpired:
        stop_process_tree(proc, grace)
        raise ProcessTimeout(os.path.basename(argv[0]), timeout or 0, grace) from None
    finally:
        if proc.poll() is None:  # interrupted (run terminated, exception): leave nothing
            stop_process_tree(proc, grace)
        _release_guardian(guardian)
        if proc.stdout:
            proc.stdout.close()
    result.duration = time.monotonic() - started
    return result


def _drain(lines_q: queue.Queue, result: ProcessResult, on_line: Callable[[str], None],
           secrets: list[str]) -> None:
    while True:
        try:
            line = lines_q.get_nowait()
        except queue.Empty:
            return
        if line is None:
            return
        shown = mask(line, secrets)
        result.lines.append(shown)
        on_line(shown)
