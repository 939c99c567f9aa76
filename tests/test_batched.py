"""Batched execution: one step walks the task DAG with threads (real applies).

What it must keep from per-step execution: a task runs once its parents are done, side by
side with its siblings; a failed branch does not stop the others, its downstream is not
materialised, its own `on_failure` runs after its retries, the global teardown still sees
which task failed; a selection runs only its part.
"""

from __future__ import annotations

import json
from pathlib import Path

from dagster import DagsterEventType, DagsterInstance, RunsFilter

from .conftest import FIXTURES, IkEnv, write_pipeline

STEP = FIXTURES / "modules" / "step"
BARRIER = FIXTURES / "modules" / "barrier"


def _materialised(run_id: str) -> dict[str, dict]:
    """Task -> metadata of every materialisation in the run."""
    found = {}
    for record in DagsterInstance.get().all_logs(
            run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION):
        materialization = record.asset_materialization
        assert materialization is not None
        found[materialization.asset_key.path[-1]] = {
            k: v.value for k, v in materialization.metadata.items()}
    return found


def _last_run(job: str) -> str:
    [run, *_] = DagsterInstance.get().get_runs(filters=RunsFilter(job_name=job), limit=1)
    return run.run_id


def test_siblings_run_side_by_side_in_one_step(ik_env: IkEnv, tmp_path: Path) -> None:
    """Two resources that only succeed if they run at the same time (a barrier), and a
    child that needs both."""
    a, b = tmp_path / "a.started", tmp_path / "b.started"
    write_pipeline(ik_env.pipelines, "meet", f"""
name = "meet"
[tasks.left]
module = "{BARRIER}"
variables = {{ mine = "{a}", other = "{b}" }}
[tasks.right]
module = "{BARRIER}"
variables = {{ mine = "{b}", other = "{a}" }}
[tasks.after]
module = "{STEP}"
depends_on = ["left", "right"]
variables = {{ name = "after", value = "{{{{.left.met}}}}" }}
""")
    ik_env.env["INFRAKITCHEN_EXECUTION"] = "batched"
    ik_env.ik("run", "meet")
    run_id = _last_run("meet__provision")
    steps = {r.step_key for r in DagsterInstance.get().all_logs(
        run_id, of_type=DagsterEventType.STEP_SUCCESS)}
    assert steps == {"meet__batch"}
    done = _materialised(run_id)
    assert set(done) == {"left", "right", "after"}
    assert {m["outcome"] for m in done.values()} == {"applied"}
    assert all(m["worker"].endswith(tuple("0123456789")) for m in done.values())
    assert ik_env.inspect("meet", "after")["outputs"]["value"] == str(b)

    # per step, with one process per task, the same pipeline works too (no regression)
    ik_env.env["INFRAKITCHEN_EXECUTION"] = "per_step"
    ik_env.ik("run", "meet", "--force")
    assert set(_materialised(_last_run("meet__provision"))) == {"left", "right", "after"}


def test_a_failed_branch_keeps_the_others_and_tears_down(ik_env: IkEnv,
                                                        tmp_path: Path) -> None:
    counts, marker = tmp_path / "applies", tmp_path / "failed-once"
    write_pipeline(ik_env.pipelines, "branches", f"""
name = "branches"
on_failure = "teardown-all"
[tasks.good]
module = "{STEP}"
variables = {{ name = "good", count_file = "{counts}" }}
[tasks.flaky]
module = "{STEP}"
retries = 1
retry_delay = "100ms"
variables = {{ name = "flaky", fail_once_marker = "{marker}", count_file = "{counts}" }}
[tasks.bad]
module = "{STEP}"
variables = {{ name = "bad", fail = true }}
[tasks.below-bad]
module = "{STEP}"
depends_on = ["bad"]
variables = {{ name = "below-bad" }}
[tasks.teardown-all]
type = "forensic"
destroy = "all"
""")
    ik_env.env["INFRAKITCHEN_EXECUTION"] = "batched"
    result = ik_env.ik("run", "branches", check=False)
    assert result.returncode == 1
    run_id = _last_run("branches__provision")
    done = _materialised(run_id)
    assert set(done) == {"good", "flaky"}  # bad failed, below-bad never ran
    assert sorted(counts.read_text().split()) == ["flaky", "flaky", "good"]  # one retry
    # the global teardown saw `bad` fail (a task without its own on_failure) and ran
    teardowns = [e for e in json.loads(ik_env.ik("audit", "--json").stdout)
                 if e["action"] == "teardown"]
    assert [t["details"]["failed_task"] for t in teardowns] == ["bad"]
    for task in ("good", "flaky"):
        assert ik_env.inspect("branches", task)["state"] == "destroyed", task
    missing = ik_env.ik("inspect", "branches/below-bad", check=False)
    assert missing.returncode == 1 and "no record" in missing.stderr


def test_a_selection_runs_only_its_part(ik_env: IkEnv) -> None:
    write_pipeline(ik_env.pipelines, "picked", f"""
name = "picked"
[tasks.one]
module = "{STEP}"
variables = {{ name = "one" }}
[tasks.two]
module = "{STEP}"
variables = {{ name = "two" }}
""")
    ik_env.env["INFRAKITCHEN_EXECUTION"] = "batched"
    ik_env.ik("run", "picked", "--select", "two")
    assert set(_materialised(_last_run("picked__provision"))) == {"two"}
    assert ik_env.ik("inspect", "picked/one", check=False).returncode == 1
    # an unchanged re-run of everything: nothing applied twice
    ik_env.ik("run", "picked")
    done = _materialised(_last_run("picked__provision"))
    assert {k: v["outcome"] for k, v in done.items()} == {"one": "applied",
                                                         "two": "unchanged"}


def test_an_unchanged_ik_run_launches_no_run_until_the_state_moves(ik_env: IkEnv,
                                                                   tmp_path: Path) -> None:
    counts = tmp_path / "applies"
    write_pipeline(ik_env.pipelines, "still", f"""
name = "still"
[tasks.one]
module = "{STEP}"
variables = {{ name = "one", count_file = "{counts}" }}
[tasks.two]
module = "{STEP}"
variables = {{ name = "two", count_file = "{counts}" }}
""")
    ik_env.ik("run", "still")
    runs = len(DagsterInstance.get().get_runs())
    again = ik_env.ik("run", "still")
    assert "nothing to do: the 2 resource(s) of still (default) are unchanged" in again.stdout
    assert len(DagsterInstance.get().get_runs()) == runs  # no run launched
    assert sorted(counts.read_text().split()) == ["one", "two"]

    # the state moved outside the pipeline (a taint): no longer up to date, `two` re-applied
    workdir = ik_env.home / "work" / "still" / "default" / "two"
    ik_env.run(ik_env.env["INFRAKITCHEN_TOFU"], "taint", "null_resource.this", cwd=workdir)
    ik_env.ik("run", "still")
    assert len(DagsterInstance.get().get_runs()) == runs + 1
    assert sorted(counts.read_text().split()) == ["one", "two", "two"]
    assert ik_env.inspect("still", "two")["revision"] == 2
