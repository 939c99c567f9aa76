"""A warm launcher: `ik serve` keeps Dagster imported, and each `ik` command that names it
(`INFRAKITCHEN_SERVER=<socket>`) runs in a fork of it instead of a new interpreter.

Every `ik` process otherwise spends about 1.5 s importing Dagster, SQLAlchemy and Alembic
before its run's first step starts: most of what a short run costs over a plain terraform
script (see bench/). A fork of a process that has already imported them starts at once.

What travels: the command's arguments, working directory, environment and umask (as JSON)
and its stdin/stdout/stderr (as file descriptors, SCM_RIGHTS), over a Unix socket that only
its owner may open (0600, and the peer's uid is checked). The fork takes on the command's
environment and descriptors, runs `cli.main` as `ik` would, and sends back the exit code.
The client forwards SIGINT, SIGTERM and SIGHUP to the fork; when the client is killed
(SIGKILL), the fork is killed likewise, and crash healing treats it as a killed `ik`.

A server that cannot serve the client (another interpreter or version of the package, no
socket) makes the client run the command itself, after one line on stderr.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import struct
import sys
import threading
from pathlib import Path
from typing import Any

from .errors import CliError

SERVER_ENV = "INFRAKITCHEN_SERVER"
_EXIT = struct.Struct("!i")
#: longest request accepted (arguments and environment as JSON)
_MAX_REQUEST = 1 << 20
#: Linux's limit on a Unix socket's path (sun_path holds 108 bytes, NUL included)
_MAX_SOCKET_PATH = 107
#: the modules a command needs, imported once by the server (not run: nothing is opened)
_WARM_MODULES = (
    "infrakitchen_dagster.cli", "infrakitchen_dagster.launch",
    "infrakitchen_dagster.definitions", "infrakitchen_dagster.assets",
    "infrakitchen_dagster.batch", "infrakitchen_dagster.runtime.provision",
    "infrakitchen_dagster.runtime.prewarm", "infrakitchen_dagster.module_schema",
    "dagster._core.storage.runs.sqlite.sqlite_run_storage",
    "dagster._core.storage.event_log.sqlite.sqlite_event_log",
    "dagster._core.storage.schedules.sqlite.sqlite_schedule_storage",
    "alembic.command", "alembic.runtime.migration",
)


def _identity() -> dict[str, str]:
    """What client and server must share for the fork to run the client's code."""
    from importlib.metadata import version

    return {"python": sys.executable, "package": version("infrakitchen-dagster"),
            "source": str(Path(__file__).resolve().parent)}


# -- the client: `ik` with INFRAKITCHEN_SERVER set ----------------------------------------


def run_through_server(path: str, argv: list[str]) -> int | None:
    """Run `ik argv` in a fork of the server at `path`; its exit code, or None when no
    server there can run it (the caller then runs the command itself)."""
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        client.connect(path)
        request = {"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ),
                   "umask": _current_umask(), "identity": _identity()}
        body = json.dumps(request).encode()
        client.sendall(struct.pack("!I", len(body)) + body)
        socket.send_fds(client, [b"f"], [0, 1, 2])
        answer = _read_line(client)
    except OSError as exc:
        client.close()
        print(f"ik: no warm launcher at {path} ({exc.strerror or exc}); running here",
              file=sys.stderr)
        return None
    if not answer.startswith("pid "):
        client.close()
        print(f"ik: the warm launcher at {path} cannot run this command ({answer}); "
              "running here", file=sys.stderr)
        return None
    return _wait_for_exit(client, int(answer.split()[1]))


def _wait_for_exit(client: socket.socket, pid: int) -> int:
    """Forward signals to the fork until it reports its exit code."""
    received: list[int] = []

    def forward(signum: int, _frame: Any) -> None:
        received.append(signum)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, forward)
    data = b""
    while len(data) < _EXIT.size:
        try:
            chunk = client.recv(_EXIT.size - len(data))
        except InterruptedError:
            continue
        if not chunk:
            break
        data += chunk
    client.close()
    if len(data) == _EXIT.size:
        return _EXIT.unpack(data)[0]
    return 128 + received[-1] if received else 1  # the fork died without a word


def _read_line(conn: socket.socket) -> str:
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(256)
        if not chunk:
            raise ConnectionError("the warm launcher closed the connection")
        data += chunk
    return data.decode().strip()


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# -- the server: `ik serve` ----------------------------------------------------------------


def serve(path: str) -> int:
    """Import what commands need, then fork one process per connection until stopped."""
    import importlib

    for name in _WARM_MODULES:
        importlib.import_module(name)
    with contextlib.suppress(ImportError):  # an instance on PostgreSQL opens with it
        importlib.import_module("dagster_postgres")
    identity = _identity()
    socket_path = Path(path).absolute()
    if len(str(socket_path)) > _MAX_SOCKET_PATH:
        raise CliError(f"socket path {socket_path} is longer than a Unix socket allows "
                       f"({_MAX_SOCKET_PATH} characters): pass a shorter --socket")
    socket_path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        socket_path.unlink()
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    previous = os.umask(0o177)
    try:
        server.bind(str(socket_path))
    finally:
        os.umask(previous)
    server.listen(16)
    server.settimeout(1.0)  # wakes up to reap finished forks
    print(f"ik serve: listening on {socket_path}; use it with "
          f"export {SERVER_ENV}={socket_path}", flush=True)
    try:
        while True:
            _reap()
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            _accept(server, conn, identity)
    except KeyboardInterrupt:
        return 0
    finally:
        server.close()
        with contextlib.suppress(FileNotFoundError):
            socket_path.unlink()


def _reap() -> None:
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass


def _accept(server: socket.socket, conn: socket.socket, identity: dict[str, str]) -> None:
    """Read one request and fork it; a request that cannot run is answered and dropped."""
    conn.settimeout(10)
    fds: list[int] = []
    try:
        uid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                   struct.calcsize("3i")))[1]
        if uid != os.getuid():
            raise PermissionError(f"uid {uid} may not use this launcher")
        size = struct.unpack("!I", _recv_exactly(conn, 4))[0]
        if size > _MAX_REQUEST:
            raise ValueError("request too large")
        request = json.loads(_recv_exactly(conn, size))
        _, fds, _, _ = socket.recv_fds(conn, 1, 3)
        if len(fds) != 3:
            raise ValueError("stdin, stdout and stderr were not passed")
        if request.get("identity") != identity:
            raise ValueError(f"it serves {identity['python']} with infrakitchen-dagster "
                             f"{identity['package']} from {identity['source']}")
    except (OSError, ValueError) as exc:
        with contextlib.suppress(OSError):
            conn.sendall(f"refused: {exc}\n".encode())
        conn.close()
        for fd in fds:
            os.close(fd)
        return
    conn.settimeout(None)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the fork: becomes the client's `ik` and never returns
        server.close()
        _run_request(conn, request, fds)
    for fd in fds:
        os.close(fd)
    conn.close()


def _recv_exactly(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise ConnectionError("the client closed the connection")
        data += chunk
    return data


def _run_request(conn: socket.socket, request: dict[str, Any], fds: list[int]) -> None:
    code = 1
    try:
        os.setsid()  # its own session and process group, like an `ik` started alone
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        for stream in (sys.stdout, sys.stderr):
            stream.reconfigure(line_buffering=stream.isatty())
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        os.umask(int(request["umask"]))
        sys.argv = ["ik", *request["argv"]]
        signal.signal(signal.SIGINT, signal.default_int_handler)
        conn.sendall(f"pid {os.getpid()}\n".encode())
        threading.Thread(target=_end_with_client, args=(conn,), daemon=True).start()
        code = _main(list(request["argv"]))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # reported as an uncaught error in `ik` would be
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        import logging

        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        with contextlib.suppress(OSError):
            conn.sendall(_EXIT.pack(code))
        os._exit(code)


def _main(argv: list[str]) -> int:
    from .cli import main

    return main(argv)


def _end_with_client(conn: socket.socket) -> None:
    """The client went away without a signal to forward (SIGKILL): end as a killed `ik`
    would, at once; its tofu's guardians and crash healing do the rest, as for `ik`."""
    with contextlib.suppress(OSError):
        while conn.recv(64):
            pass
    os.kill(os.getpid(), signal.SIGKILL)
