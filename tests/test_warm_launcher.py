"""`ik serve`, the warm launcher: `ik` commands run in forks of a process that has imported
Dagster already, with the caller's environment, working directory, stdio and exit code.

Real `ik serve` and `ik` processes, real applies. One server serves two homes (the
environment travels with each command); a client without a server runs the command itself;
a client killed mid-apply takes its fork (and the fork's tofu) with it.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import FIXTURES, IkEnv, Toolchain, make_ik_env, processes_in, write_pipeline

pytestmark = pytest.mark.timeout(600)

STEP = FIXTURES / "modules" / "step"
IK = str(Path(sys.executable).parent / "ik")
START_SECONDS = 120


@pytest.fixture
def server(ik_env: IkEnv) -> Iterator[str]:
    """`ik serve` on a short socket path (Unix sockets allow ~100 characters); yields the
    path once the server says it listens."""
    directory = tempfile.mkdtemp(prefix="ik-serve-", dir="/tmp")
    path = os.path.join(directory, "ik.sock")
    process = subprocess.Popen([IK, "serve", "--socket", path], env=ik_env.env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    try:
        ready, _, _ = select.select([process.stdout], [], [], START_SECONDS)
        line = process.stdout.readline() if ready else ""
        assert f"listening on {path}" in line, line + (process.stdout.read() if not ready
                                                       else "")
        assert os.stat(path).st_mode & 0o777 == 0o600  # only its owner may connect
        yield path
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)
        assert not os.path.exists(path)  # a stopped server leaves no socket behind
        os.rmdir(directory)


def _pipeline(env: IkEnv, sleep: int = 0) -> None:
    write_pipeline(env.pipelines, "warm", f"""
name = "warm"
[tasks.net]
module = "{STEP}"
variables = {{ name = "net", sleep_seconds = {sleep} }}
[tasks.app]
module = "{STEP}"
depends_on = ["net"]
variables = {{ name = "app", value = "{{{{.net.name}}}}" }}
""")


def _through(env: IkEnv, socket_path: str) -> IkEnv:
    return IkEnv(env.root, env.home, env.dagster_home, env.pipelines,
                 {**env.env, "INFRAKITCHEN_SERVER": socket_path})


def test_commands_run_in_forks_of_the_server_for_any_home(
        ik_env: IkEnv, server: str, tmp_path: Path, toolchain: Toolchain) -> None:
    _pipeline(ik_env)
    warm = _through(ik_env, server)
    ran = warm.ik("run", "warm")
    assert "no warm launcher" not in ran.stderr and "running here" not in ran.stderr
    assert "success" in ran.stdout and "app" in ran.stdout
    assert "net: Apply complete: 1 added" in ran.stderr  # the run's log, on its stderr
    records = json.loads(warm.ik("resources", "--json").stdout)
    assert {(r["task"], r["state"]) for r in records} == {("net", "provisioned"),
                                                          ("app", "provisioned")}
    missing = warm.ik("inspect", "warm/nope", check=False)
    assert missing.returncode == 1 and "ik: error:" in missing.stderr  # its exit code

    # a second home through the same server: the command's environment is its own
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    other = _through(make_ik_env(other_dir, toolchain, other_dir / "pipelines"), server)
    other.pipelines.mkdir()
    _pipeline(other)
    other.ik("run", "warm", "--select", "net")
    assert [r["task"] for r in json.loads(other.ik("resources", "--json").stdout)] == ["net"]
    assert (other.home / "work" / "warm" / "default" / "net" / "terraform.tfstate").is_file()
    assert len(json.loads(warm.ik("resources", "--json").stdout)) == 2


def test_without_a_server_the_command_runs_here(ik_env: IkEnv) -> None:
    _pipeline(ik_env)
    cold = _through(ik_env, "/tmp/ik-serve-none/ik.sock")
    ran = cold.ik("run", "warm")
    assert "ik: no warm launcher at /tmp/ik-serve-none/ik.sock" in ran.stderr
    assert "running here" in ran.stderr and "success" in ran.stdout


def test_a_killed_client_ends_its_fork_and_the_fork_s_tofu(ik_env: IkEnv, server: str) -> None:
    _pipeline(ik_env, sleep=120)
    client = subprocess.Popen([IK, "run", "warm"], env={**ik_env.env,
                                                         "INFRAKITCHEN_SERVER": server},
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for line in client.stderr:  # the apply has started (and sleeps)
        if "net: planning and applying" in line:
            break
    else:
        pytest.fail(f"the run never started applying (exit {client.wait()})")
    assert processes_in(ik_env.home), "the apply runs under the home"
    [fork] = _children_of_server(server)
    client.kill()
    client.wait()
    _wait_for_exit(fork)
    remaining = _wait_until_gone(ik_env.home)
    assert remaining == [], remaining


def _children_of_server(socket_path: str) -> list[int]:
    """The forks of the server listening on `socket_path` (found through /proc)."""
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if socket_path.encode() in cmdline and b"serve" in cmdline:
            children = Path(f"/proc/{entry}/task/{entry}/children").read_text().split()
            return [int(c) for c in children]
    raise AssertionError(f"no server for {socket_path}")


def _wait_for_exit(pid: int, timeout: float = 60) -> None:
    """Block until process `pid` (not our child) has ended: a pidfd becomes readable."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        ready, _, _ = select.select([fd], [], [], timeout)
        assert ready, f"process {pid} still runs {timeout} s after its client was killed"
    finally:
        os.close(fd)


def _wait_until_gone(home: Path, timeout: float = 60) -> list[str]:
    """The processes still under `home` once each of them has ended (or `timeout`)."""
    for entry in processes_in(home):
        _wait_for_exit(int(entry.split(":")[0]), timeout)
    return processes_in(home)


def test_an_exit_code_read_with_the_pid_line_is_not_lost() -> None:
    """A command that ends at once: its exit code can arrive in the same read as the
    server's "pid" line; the client must take it from there, not run the command again."""
    from infrakitchen_dagster.warm import EXIT
    from infrakitchen_dagster.warm.client import _read_line, _wait_for_exit

    server, client = socket.socketpair()
    with server, client:
        server.sendall(b"pid 4242\n" + EXIT.pack(3))
        server.close()
        line, rest = _read_line(client)
        assert line == "pid 4242"
        assert _wait_for_exit(client, 4242, rest) == 3


def test_a_second_server_on_the_same_socket_is_refused(ik_env: IkEnv, server: str) -> None:
    second = ik_env.ik("serve", "--socket", server, check=False)
    assert second.returncode == 1
    assert f"a warm launcher already listens on {server}" in second.stderr
    _pipeline(ik_env)
    assert _through(ik_env, server).ik("resources", "--json").stdout.strip() == "[]"
