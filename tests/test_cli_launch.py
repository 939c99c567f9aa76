"""What `ik run` settles before it launches anything: a plain wf file (no [vars]) takes
names from `--var`, and a run missing one is refused naming the task and the flag; the
working root configured for runs is the one the CLI cleans."""

from __future__ import annotations

from pathlib import Path

from .conftest import FIXTURES, IkEnv, ik_in_process, write_pipeline


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
