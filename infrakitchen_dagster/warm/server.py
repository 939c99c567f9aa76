"""The server side of the warm launcher: `ik serve` (see `warm/__init__.py`)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import stat
import sys
import threading
import time
from pathlib import Path
from typing import Any

from ..errors import CliError
from . import EXIT, LENGTH, SERVER_ENV, identity, recv_exactly, same_user

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
_REQUEST_KEYS = {"argv": list, "cwd": str, "env": dict, "umask": int, "identity": dict}


def serve(path: str) -> int:
    """Import what commands need, then fork one process per connection until stopped."""
    import importlib

    for name in _WARM_MODULES:
        importlib.import_module(name)
    with contextlib.suppress(ImportError):  # an instance on PostgreSQL opens with it
        importlib.import_module("dagster_postgres")
    served = identity()
    socket_path = _claim(Path(path).absolute())
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    previous = os.umask(0o177)  # the socket is born 0600
    try:
        server.bind(str(socket_path))
    finally:
        os.umask(previous)
    bound = os.stat(socket_path).st_ino
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
            _accept(server, conn, served)
    except KeyboardInterrupt:
        return 0
    finally:
        server.close()
        with contextlib.suppress(FileNotFoundError):
            if os.stat(socket_path).st_ino == bound:  # ours, not a later server's
                socket_path.unlink()


def _claim(socket_path: Path) -> Path:
    """The socket path, free to bind: refused when too long, when a server answers there,
    or when something other than a stale socket is in the way."""
    if len(str(socket_path)) > _MAX_SOCKET_PATH:
        raise CliError(f"socket path {socket_path} is longer than a Unix socket allows "
                       f"({_MAX_SOCKET_PATH} characters): pass a shorter --socket")
    socket_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = os.lstat(socket_path).st_mode
    except FileNotFoundError:
        return socket_path
    if not stat.S_ISSOCK(mode):
        raise CliError(f"{socket_path} exists and is not a socket; choose another --socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(socket_path))
    except OSError:  # nobody listens: a stale socket of a server that died
        socket_path.unlink()
        return socket_path
    finally:
        probe.close()
    raise CliError(f"a warm launcher already listens on {socket_path}")


def _reap() -> None:
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass


def _accept(server: socket.socket, conn: socket.socket, served: dict[str, str]) -> None:
    """Read one request and fork it; a request that cannot run is answered and dropped."""
    conn.settimeout(10)
    fds: list[int] = []
    try:
        same_user(conn)
        size = LENGTH.unpack(recv_exactly(conn, LENGTH.size))[0]
        if size > _MAX_REQUEST:
            raise ValueError("request too large")
        request = json.loads(recv_exactly(conn, size))
        _, fds, _, _ = socket.recv_fds(conn, 1, 3)
        _check(request, fds, served)
        conn.settimeout(None)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
    except (OSError, ValueError) as exc:
        with contextlib.suppress(OSError):
            conn.sendall(f"refused: {exc}\n".encode())
        conn.close()
        for fd in fds:
            os.close(fd)
        return
    if pid == 0:  # the fork: becomes the client's `ik` and never returns
        server.close()
        _run_request(conn, request, fds)
    for fd in fds:
        os.close(fd)
    conn.close()


def _check(request: Any, fds: list[int], served: dict[str, str]) -> None:
    if not isinstance(request, dict) or any(
            not isinstance(request.get(key), kind) for key, kind in _REQUEST_KEYS.items()):
        raise ValueError("not a request of this launcher")
    if len(fds) != 3:
        raise ValueError("stdin, stdout and stderr were not passed")
    if request["identity"] != served:
        raise ValueError(f"it serves {served['python']} with infrakitchen-dagster "
                         f"{served['package']} from {served['source']}")


def _run_request(conn: socket.socket, request: dict[str, Any], fds: list[int]) -> None:
    code = 1
    try:
        _become_the_command(request, fds)
        conn.sendall(f"pid {os.getpid()}\n".encode())
        threading.Thread(target=_end_with_client, args=(conn,), daemon=True).start()
        from ..cli import main

        code = main(list(request["argv"]))
        _wait_for_own_threads()  # notification deliveries, as `ik` waits for them
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
            conn.sendall(EXIT.pack(code))
        os._exit(code)


def _become_the_command(request: dict[str, Any], fds: list[int]) -> None:
    """Take on the client's session shape, descriptors, directory and environment."""
    os.setsid()  # its own session and process group, like an `ik` started alone
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    sys.stdout.reconfigure(line_buffering=sys.stdout.isatty())
    sys.stderr.reconfigure(line_buffering=True)  # as Python's own stderr
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    time.tzset()
    os.umask(request["umask"])
    sys.argv = ["ik", *request["argv"]]
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _wait_for_own_threads() -> None:
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()


def _end_with_client(conn: socket.socket) -> None:
    """The client went away without a signal to forward (SIGKILL): end as a killed `ik`
    would, at once; its tofu's guardians and crash healing do the rest, as for `ik`."""
    with contextlib.suppress(OSError):
        while conn.recv(64):
            pass
    os.kill(os.getpid(), signal.SIGKILL)
