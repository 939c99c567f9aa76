"""The client side of the warm launcher: `ik` with INFRAKITCHEN_SERVER set (see
`warm/__init__.py`)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys
from typing import Any

from . import EXIT, LENGTH, identity, recv_exactly, same_user

#: the commands that never run in a fork (a server does not start another)
LOCAL_COMMANDS = frozenset({"serve"})


def run_through_server(path: str, argv: list[str]) -> int | None:
    """Run `ik argv` in a fork of the server at `path`; its exit code, or None when no
    server there can run it (the caller then runs the command itself)."""
    if LOCAL_COMMANDS.intersection(argv[:1]):
        return None
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        client.connect(path)
        same_user(client)  # nothing (environment, terminal) goes to another user's socket
        request = {"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ),
                   "umask": _current_umask(), "identity": identity()}
        body = json.dumps(request).encode()
        client.sendall(LENGTH.pack(len(body)) + body)
        socket.send_fds(client, [b"f"], [0, 1, 2])
        answer, rest = _read_line(client)
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
    return _wait_for_exit(client, int(answer.split()[1]), rest)


def _wait_for_exit(client: socket.socket, pid: int, received: bytes) -> int:
    """Forward signals to the fork's process group until it reports its exit code."""
    forwarded: list[int] = []

    def forward(signum: int, _frame: Any) -> None:
        forwarded.append(signum)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signum)  # the fork leads its own group, as a terminal's `ik`

    previous = {signum: signal.signal(signum, forward)
                for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    data = received
    try:
        with contextlib.suppress(ConnectionError):
            data += recv_exactly(client, EXIT.size - len(data))
    finally:
        client.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if len(data) == EXIT.size:
        return EXIT.unpack(data)[0]
    return 128 + forwarded[-1] if forwarded else 1  # the fork died without a word


def _read_line(conn: socket.socket) -> tuple[str, bytes]:
    """The server's answer line, and whatever came after it (the exit code of a command
    that ended at once may arrive in the same read)."""
    data = b""
    while b"\n" not in data:
        chunk = conn.recv(256)
        if not chunk:
            raise ConnectionError("the warm launcher closed the connection")
        data += chunk
    line, _, rest = data.partition(b"\n")
    return line.decode().strip(), rest


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
