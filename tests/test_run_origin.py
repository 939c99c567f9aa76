"""Runs started from a terminal are filed under the code location the UI serves.

`ik run` and `dagster job execute` create their runs in-process, without the code-location
origin a UI launch has; the UI's job history and Overview timeline would leave them out.
Their first step attaches them (origin and the hidden repository tag the UI filters on), and
settles who the run acts as before doing so: a later step, which sees an origin like a UI
launch's, must still act as the person who ran `ik run --as`. Real applies on SQLite.
"""

from __future__ import annotations

import pytest
from dagster import DagsterInstance, DagsterRun, RunsFilter

from infrakitchen_dagster.run_origin import CODE_LOCATION_ENV
from infrakitchen_dagster.store import LifecycleStore

from .conftest import FIXTURES, IkEnv, ik_in_process, write_pipeline

STEP = FIXTURES / "modules" / "step"
LABEL_TAG = ".dagster/repository"  # what the UI's job history filters runs on


def _held(env: IkEnv, file: str = "held") -> None:
    """A two-resource chain only its owner (olive) and those she grants may change."""
    write_pipeline(env.pipelines, file, f"""
name = "held"
owners = ["olive"]
[tasks.net]
module = "{STEP}"
variables = {{ name = "net" }}
[tasks.app]
module = "{STEP}"
depends_on = ["net"]
variables = {{ name = "app", value = "{{{{.net.name}}}}" }}
""")


def _runs_of(job: str) -> list[DagsterRun]:
    return list(DagsterInstance.get().get_runs(RunsFilter(job_name=job)))


def _location(run: DagsterRun) -> str | None:
    origin = run.remote_job_origin
    return origin.repository_origin.code_location_origin.location_name if origin else None


@pytest.mark.parametrize(("execution", "executor"), [("batched", "in_process"),
                                                     ("per_step", "spawn")])
def test_an_ik_run_is_filed_under_its_code_location_and_keeps_its_principal(
        store_env: IkEnv, monkeypatch: pytest.MonkeyPatch, execution: str,
        executor: str) -> None:
    """Per step, each step is its own process: `app`'s starts after `net`'s attached the
    run, and learns its principal from the store."""
    monkeypatch.setenv("INFRAKITCHEN_EXECUTION", execution)
    monkeypatch.setenv("INFRAKITCHEN_EXECUTOR", executor)
    monkeypatch.delenv(CODE_LOCATION_ENV, raising=False)
    monkeypatch.delenv("INFRAKITCHEN_UI_PRINCIPAL", raising=False)
    _held(store_env)
    ik_in_process("run", "held", "--as", "olive")
    [run] = _runs_of("held__provision")
    assert _location(run) == "definitions.py"  # what `dagster dev -f definitions.py` serves
    assert run.remote_job_origin.repository_origin.repository_name == "__repository__"
    assert run.tags[LABEL_TAG] == "__repository__@definitions.py"
    # what the UI's job history asks for: runs of the job carrying the location's label
    assert [r.run_id for r in DagsterInstance.get().get_runs(RunsFilter(
        job_name="held__provision", tags={LABEL_TAG: "__repository__@definitions.py"}))
            ] == [run.run_id]
    assert run.tags["dagster/code_location"] == "definitions.py"
    assert run.tags["infrakitchen/user"] == "olive"
    # both resources, the second applied after the run had its origin, acted as olive
    applied = {e["task"]: e["actor"] for e in LifecycleStore().audit_entries("held")
               if e["action"] == "provision_success"}
    assert applied == {"net": "olive", "app": "olive"}


def test_dagster_job_execute_is_filed_under_the_named_location(ik_env: IkEnv) -> None:
    """`{pipeline_file}` names one location per pipeline file (`write_workspace`); an empty
    setting leaves runs as Dagster made them."""
    _held(ik_env, file="held-estate")
    ik_env.ik("grant", "tester", "write", "--pipeline", "held", "--as", "olive")
    ik_env.env[CODE_LOCATION_ENV] = "{pipeline_file}"
    ik_env.dagster_job("held__provision")
    ik_env.env[CODE_LOCATION_ENV] = ""
    ik_env.dagster_job("held__provision")
    with DagsterInstance.from_config(str(ik_env.dagster_home)) as instance:
        newest, first = instance.get_runs(RunsFilter(job_name="held__provision"))
    assert _location(first) == "held-estate"
    assert first.tags[LABEL_TAG] == "__repository__@held-estate"
    with DagsterInstance.from_config(str(ik_env.dagster_home)) as instance:
        assert [r.run_id for r in instance.get_runs(RunsFilter(
            tags={LABEL_TAG: "__repository__@held-estate"}))] == [first.run_id]
    assert _location(newest) is None and LABEL_TAG not in newest.tags

