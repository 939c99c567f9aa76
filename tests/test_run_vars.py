"""A plain wf file (no [vars]) takes names from `--var`; a run missing one is refused
before anything runs, naming the task and the flag to pass."""

from __future__ import annotations

from .conftest import IkEnv, ik_in_process, write_pipeline


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
