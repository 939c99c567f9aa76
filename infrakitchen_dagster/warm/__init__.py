"""A warm launcher: `ik serve` keeps Dagster imported, and each `ik` command that names it
(`INFRAKITCHEN_SERVER=<socket>`) runs in a fork of it instead of a new interpreter.

Every `ik` process otherwise spends about 1.5 s importing Dagster, SQLAlchemy and Alembic
before its run's first step starts: most of what a short run costs over a plain terraform
script (see bench/). A fork of a process that has already imported them starts at once.

What travels (`client.py` to `server.py`): the command's arguments, working directory,
environment and umask (as JSON) and its stdin/stdout/stderr (as file descriptors,
SCM_RIGHTS), over a Unix socket created 0600. Each side checks that the other runs as the
same user (SO_PEERCRED) before anything is sent or run. The fork takes on the command's
environment and descriptors, runs `cli.main` as `ik` would, waits for what `ik` would wait
for (notification deliveries) and sends back the exit code. The client forwards SIGINT,
SIGTERM and SIGHUP to the fork's process group; when the client is killed (SIGKILL), the
fork is killed likewise, and crash healing treats it as a killed `ik`.

A server that cannot serve the client (another interpreter or version of the package, no
socket) makes the client run the command itself, after one line on stderr.
"""

from __future__ import annotations

import os
import socket
import struct
import sys
from pathlib import Path

SERVER_ENV = "INFRAKITCHEN_SERVER"
#: the exit code, after the "pid N" line
EXIT = struct.Struct("!i")
#: the request's length, before its JSON
LENGTH = struct.Struct("!I")


def identity() -> dict[str, str]:
    """What client and server must share for the fork to run the client's code."""
    from importlib.metadata import version

    return {"python": sys.executable, "package": version("infrakitchen-dagster"),
            "source": str(Path(__file__).resolve().parents[1])}


def peer_uid(conn: socket.socket) -> int:
    """The uid of the process at the other end of a Unix socket (SO_PEERCRED)."""
    creds = struct.Struct("3i")  # pid, uid, gid
    return creds.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                        creds.size))[1]


def same_user(conn: socket.socket) -> None:
    """Refuse a peer running as another user."""
    uid = peer_uid(conn)
    if uid != os.getuid():
        raise PermissionError(f"the other end runs as uid {uid}, not {os.getuid()}")


def recv_exactly(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise ConnectionError("the connection closed early")
        data += chunk
    return data
