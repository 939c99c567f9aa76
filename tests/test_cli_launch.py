"""What `ik run` settles before it launches anything: a plain wf file (no [vars]) takes
names from `--var`, and a run missing one is refused naming the task and the flag; the
working root configured for runs is the one the CLI cleans; and once it returns, nothing
it started is still running."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import FIXTURES, IkEnv, ik_in_process, processes_in, write_pipeline


def test_a_missing_run_var_is_refused_before_anything_runs(store_env: IkEnv) -> None:
    marker = store_env.home / "greeted"
    write_pipeline(store_env.pipelines, "greet", f"""
name = "greet"
[tasks.hello]
cmd = "echo hello {{{{.WHO}}}} > {marker}"
[tasks.other]
cmd = "true"
""")
    refused = ik_in_process("run", "greet", check=False)
    assert refused.returncode == 1
    assert "hello uses {{.WHO}}: pass --var WHO=..." in refused.stderr
    assert not marker.exists()
    assert ik_in_process("run", "greet", "--select", "other").returncode == 0
    ik_in_process("run", "greet", "--var", "WHO=world")
    assert marker.read_text().strip() == "hello world"


def test_a_configured_working_root_is_used_by_runs_and_the_cli(store_env: IkEnv,
                                                              tmp_path: Path,
                                                              monkeypatch) -> None:
    root = tmp_path / "elsewhere"
    monkeypatch.setenv("INFRAKITCHEN_WORKING_ROOT", str(root))
    write_pipeline(store_env.pipelines, "rooted", f"""
name = "rooted"
[tasks.net]
module = "{FIXTURES / 'modules' / 'step'}"
variables = {{ name = "net" }}
""")
    ik_in_process("run", "rooted")
    workdir = root / "rooted" / "default" / "net"
    assert (workdir / "terraform.tfstate").is_file()
    assert not (store_env.home / "work" / "rooted").exists()
    ik_in_process("destroy", "rooted", "--task", "net")
    ik_in_process("delete", "rooted/net")
    assert not workdir.exists()  # `ik delete` cleaned the configured directory


def _session_members(sid: int) -> list[str]:
    """Live processes of session `sid` (from /proc), as `pid: cmdline`."""
    members = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[0] != "Z" and int(fields[3]) == sid:
            members.append(f"{entry}: {cmdline.decode(errors='replace')}")
    return members


@pytest.mark.parametrize("execution", ["batched", "per_step"])
def test_ik_run_leaves_no_process_behind(ik_env: IkEnv, execution: str) -> None:
    """Everything `ik run` started (step processes, forkserver, tofu, guardians) has ended
    when it returns: its session is empty."""
    write_pipeline(ik_env.pipelines, "tidy", "\n".join(
        ['name = "tidy"'] + [f'[tasks.r{i}]\nmodule = "{FIXTURES / "modules" / "step"}"\n'
                             f'variables = {{ name = "r{i}" }}' for i in range(3)]))
    env = {**ik_env.env, "INFRAKITCHEN_EXECUTION": execution,
           "INFRAKITCHEN_EXECUTOR": "forkserver"}
    process = subprocess.Popen([str(Path(sys.executable).parent / "ik"), "run", "tidy"],
                               env=env, cwd=ik_env.root, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, start_new_session=True)
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output.decode()[-3000:]
    assert _session_members(process.pid) == []
    assert processes_in(ik_env.home) == []  # tofu's own sessions (and their guardians)
