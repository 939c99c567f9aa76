"""The Dagster UI as the operations console: what a person sees and does there.

Real Terraform applies (the `step` fixture module), a real SQLite lifecycle store and
Dagster instance. A "UI launch" is what the Materialize button and the Launchpad start: a
run of the definitions' asset job or of a job, with no `infrakitchen/user` tag. Every test
reads what the UI reads: run tags, log lines, asset check evaluations and metadata.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import (
    AssetCheckKey,
    AssetCheckSeverity,
    AssetKey,
    AssetSelection,
    DagsterEventType,
    DagsterInstance,
    Definitions,
    EventLogEntry,
    define_asset_job,
)

from infrakitchen_dagster.approvals import Approvals
from infrakitchen_dagster.definitions import build_definitions
from infrakitchen_dagster.store import LifecycleStore

from .conftest import FIXTURES, IkEnv, Toolchain, ik_in_process, make_ik_env, write_pipeline

STEP = FIXTURES / "modules" / "step"
SECRET = "console-S3cret-77"
NET = AssetKey(["gate", "net"])


@pytest.fixture
def console_env(tmp_path: Path, toolchain: Toolchain, monkeypatch: pytest.MonkeyPatch
                ) -> Iterator[IkEnv]:
    """An isolated home on SQLite whose environment this process uses too."""
    env = make_ik_env(tmp_path, toolchain, tmp_path / "pipelines")
    env.env["INFRAKITCHEN_EXECUTOR"] = "in_process"
    for key in ("INFRAKITCHEN_HOME", "DAGSTER_HOME", "INFRAKITCHEN_PIPELINES",
                "INFRAKITCHEN_TOFU", "TF_CLI_CONFIG_FILE", "INFRAKITCHEN_USER",
                "INFRAKITCHEN_EXECUTOR"):
        monkeypatch.setenv(key, env.env[key])
    for key in ("INFRAKITCHEN_DATABASE_URL", "INFRAKITCHEN_UI_PRINCIPAL"):
        monkeypatch.delenv(key, raising=False)
    yield env


def _gate(env: IkEnv, value: str = "v1") -> None:
    write_pipeline(env.pipelines, "gate", f"""
name = "gate"
approval = true
owners = ["olive"]
[vars]
VALUE = "{value}"
[tasks.net]
module = "{STEP}"
variables = {{ name = "net", value = "{{{{.VALUE}}}}", secret = "{SECRET}" }}
""")


def _ik(*argv: str) -> subprocess.CompletedProcess[str]:
    """`ik` in this process, leaving the code location's own user as it was (`--as`
    sets INFRAKITCHEN_USER for the rest of the process)."""
    before = os.environ.get("INFRAKITCHEN_USER")
    try:
        return ik_in_process(*argv)
    finally:
        os.environ["INFRAKITCHEN_USER"] = before or ""


def _ui_materialize(key: AssetKey):
    """The Materialize button: the asset job with one asset (and its checks), no tags."""
    defs = build_definitions()
    job = defs.resolve_implicit_global_asset_job_def()
    return job.execute_in_process(instance=DagsterInstance.get(), asset_selection=[key],
                                  raise_on_error=False)


def _ui_launch(job_name: str, run_config: dict):
    """The Launchpad: one job of the definitions with its config, no tags."""
    job = build_definitions().resolve_job_def(job_name)
    return job.execute_in_process(instance=DagsterInstance.get(), run_config=run_config,
                                  raise_on_error=False)


def _events(run_id: str, kind: DagsterEventType | None = None) -> list[EventLogEntry]:
    return list(DagsterInstance.get().all_logs(run_id, of_type=kind) if kind
                else DagsterInstance.get().all_logs(run_id))


def _approval_check(run_id: str):
    """The run's last `approval` evaluation: what the asset's Checks tab shows."""
    entries = [e for e in _events(run_id, DagsterEventType.ASSET_CHECK_EVALUATION)
               if e.dagster_event.asset_check_evaluation_data.check_name == "approval"]
    return entries[-1].dagster_event.asset_check_evaluation_data


def _lines(run_id: str, level: str | None = None) -> list[str]:
    import logging

    wanted = getattr(logging, level) if level else None
    return [e.user_message for e in _events(run_id)
            if e.dagster_event is None and (wanted is None or e.level == wanted)]


def _text_of_run(run_id: str) -> str:
    """Everything the UI could show of a run: messages, metadata, tags, config."""
    run = DagsterInstance.get().get_run_by_id(run_id)
    return "\n".join([repr(e) for e in _events(run_id)] + [json.dumps(run.tags),
                                                          json.dumps(run.run_config)])


def test_the_approval_day_in_the_console(console_env: IkEnv,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    _gate(console_env)
    _ik("grant", "wendy", "write", "--pipeline", "gate", "--as", "olive")
    _ik("grant", "adam", "admin", "--pipeline", "gate", "--as", "olive")
    instance = DagsterInstance.get()

    # Materialize with no principal set: refused in one line, the run and asset not failed
    refused = _ui_materialize(NET)
    assert refused.success
    assert not _events(refused.run_id, DagsterEventType.STEP_FAILURE)
    [line] = [m for m in _lines(refused.run_id, "ERROR") if "refused" in m]
    assert "'tester' has no role on pipeline 'gate'" in line
    assert "INFRAKITCHEN_UI_PRINCIPAL" in line and "ik run gate --as NAME" in line
    tags = instance.get_run_by_id(refused.run_id).tags
    assert tags["infrakitchen/outcome"] == "refused"
    assert (tags["infrakitchen/pipeline"], tags["infrakitchen/job"]) == ("gate", "provision")
    assert not _events(refused.run_id, DagsterEventType.ASSET_MATERIALIZATION)
    assert Approvals(LifecycleStore()).list("gate") == []

    # with the UI principal set (a writer), Materialize files a request and says so
    monkeypatch.setenv("INFRAKITCHEN_UI_PRINCIPAL", "wendy")
    filed = _ui_materialize(NET)
    assert filed.success
    tags = instance.get_run_by_id(filed.run_id).tags
    assert tags["infrakitchen/outcome"] == "approval_pending"
    assert (tags["infrakitchen/user"], tags["infrakitchen/launch"]) == ("wendy", "ui")
    [request] = Approvals(LifecycleStore()).list("gate")
    warning = _lines(filed.run_id, "WARNING")[-1]
    assert warning.startswith("approval pending: request(s) 1 wait") and "gate__approve" in warning
    assert any("planning the provision for approval" in m for m in _lines(filed.run_id, "INFO"))
    pending = _approval_check(filed.run_id)
    assert (pending.passed, pending.severity) == (False, AssetCheckSeverity.WARN)
    meta = {k: v.value for k, v in pending.metadata.items()}
    assert meta["request_id"] == request.id and meta["operation"] == "provision"
    assert meta["plan"] == "+1 ~0 -0" and meta["requested_by"] == "wendy"
    assert meta["approve_command"] == f"ik approve {request.id}"
    [observed] = _events(filed.run_id, DagsterEventType.ASSET_OBSERVATION)
    observation = observed.dagster_event.asset_observation_data.asset_observation.metadata
    assert observation["status"].value == "provision/approval_pending · revision 1"
    assert "| `null_resource.this` | create |" in observation["changes"].value

    # the requester cannot approve from the Launchpad; an admin can
    decision = {"ops": {"gate__decide": {"config": {"request_id": request.id,
                                                     "decision": "approve"}}}}
    # a tag typed in the Launchpad is no identity: without a UI principal nobody decides
    monkeypatch.delenv("INFRAKITCHEN_UI_PRINCIPAL")
    forged = build_definitions().resolve_job_def("gate__approve").execute_in_process(
        instance=instance, run_config=decision, tags={"infrakitchen/user": "adam"},
        raise_on_error=False)
    assert not forged.success
    assert any("no principal decides from the UI" in m for m in _lines(forged.run_id, "ERROR"))
    assert Approvals(LifecycleStore()).get(request.id).status == "pending"
    monkeypatch.setenv("INFRAKITCHEN_UI_PRINCIPAL", "wendy")
    denied = _ui_launch("gate__approve", decision)
    assert not denied.success
    assert any("needs admin" in m for m in _lines(denied.run_id, "ERROR"))
    monkeypatch.setenv("INFRAKITCHEN_UI_PRINCIPAL", "adam")
    approved = _ui_launch("gate__approve", decision)
    assert approved.success
    decided = Approvals(LifecycleStore()).get(request.id)
    assert (decided.status, decided.decided_by) == ("approved", "adam")
    check = _approval_check(approved.run_id)
    assert check.passed and check.metadata["plan_sha256"].value == decided.plan_sha256
    assert check.metadata["decided_by"].value == "adam"

    # Materialize again: the approved plan is applied, progress at INFO, plan as text
    applied = _ui_materialize(NET)
    assert applied.success
    infos = _lines(applied.run_id, "INFO")
    assert any("net: Apply complete: 1 added, 0 changed, 0 destroyed" in m for m in infos)
    [done] = _events(applied.run_id, DagsterEventType.ASSET_MATERIALIZATION)
    metadata = done.dagster_event.materialization.metadata
    assert metadata["plan"].value == "+1 ~0 -0"
    assert metadata["status"].value == "provisioned/done · revision 1"
    assert _approval_check(applied.run_id).passed

    # an update: the check shows the variable diff; a rejection fails the check
    _gate(console_env, value="v2")
    monkeypatch.setenv("INFRAKITCHEN_UI_PRINCIPAL", "wendy")
    update = _ui_materialize(NET)
    check = _approval_check(update.run_id)
    assert not check.passed and check.metadata["operation"].value == "update"
    assert '| `value` | "v1" | "v2" |' in check.metadata["variables"].value
    [observed] = _events(update.run_id, DagsterEventType.ASSET_OBSERVATION)
    changes = observed.dagster_event.asset_observation_data.asset_observation.metadata
    assert 'triggers.value: "v1" → "v2"' in changes["changes"].value
    update_id = check.metadata["request_id"].value
    monkeypatch.setenv("INFRAKITCHEN_UI_PRINCIPAL", "adam")
    rejected = _ui_launch("gate__approve", {"ops": {"gate__decide": {"config": {
        "request_id": update_id, "decision": "reject", "reason": "not today"}}}})
    assert rejected.success
    check = _approval_check(rejected.run_id)
    assert (check.passed, check.severity) == (False, AssetCheckSeverity.ERROR)
    assert "not today" in check.description

    for run in (refused, filed, denied, approved, applied, update, rejected):
        assert SECRET not in _text_of_run(run.run_id)


def test_approval_check_executed_from_the_ui_reads_the_store(console_env: IkEnv) -> None:
    """After `ik approve` on the command line, executing the check shows the decision."""
    _gate(console_env)
    _ik("grant", "wendy", "write", "--pipeline", "gate", "--as", "olive")
    _ik("run", "gate", "--as", "wendy")
    [request] = Approvals(LifecycleStore()).list("gate")
    _ik("approve", str(request.id), "--as", "olive")
    # the check's Execute button: a run of the check alone
    only_check = define_asset_job("execute_approval_check", selection=AssetSelection.checks(
        AssetCheckKey(NET, "approval")))
    defs = Definitions.merge(build_definitions(), Definitions(jobs=[only_check]))
    result = defs.resolve_job_def("execute_approval_check").execute_in_process(
        instance=DagsterInstance.get())
    assert result.success
    [evaluation] = result.get_asset_check_evaluations()
    assert evaluation.passed and evaluation.metadata["decided_by"].value == "olive"


def test_ik_prints_no_beta_warnings_and_counts_hidden_records(console_env: IkEnv) -> None:
    write_pipeline(console_env.pipelines, "open", f"""
name = "open"
[tasks.a]
module = "{STEP}"
variables = {{ name = "a" }}
""")
    _gate(console_env)
    env = {**console_env.env, "PYTHONWARNINGS": "default", "INFRAKITCHEN_UI_PRINCIPAL": ""}
    ran = subprocess.run([str(Path(sys.executable).parent / "ik"), "run", "open"], env=env,
                         capture_output=True, text=True, timeout=300, cwd=console_env.root)
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert "BetaWarning" not in ran.stderr and "PreviewWarning" not in ran.stderr
    deprecated = [line for line in ran.stderr.splitlines()  # e.g. context.run_id on assets
                  if "infrakitchen_dagster/" in line and "DeprecationWarning" in line]
    assert not deprecated, ran.stderr[-3000:]
    assert "a: Apply complete: 1 added, 0 changed, 0 destroyed" in ran.stderr
    _ik("grant", "wendy", "write", "--pipeline", "gate", "--as", "olive")
    _ik("run", "gate", "--as", "wendy")
    listed = _ik("resources", "--as", "rita").stdout
    assert "open" in listed and "1 hidden" in listed and "gate" not in listed
    shown = _ik("resources", "--as", "olive").stdout
    assert "hidden" not in shown
    as_json = _ik("resources", "--json", "--as", "rita")
    assert [r["pipeline"] for r in json.loads(as_json.stdout)] == ["open"]
    assert "1 hidden" in as_json.stderr
    assert os.environ.get("INFRAKITCHEN_UI_PRINCIPAL") is None


def test_the_whole_code_location_loads_with_approve_jobs(tmp_path: Path) -> None:
    """Every job of a directory of gated pipelines, approve jobs included, fits in one
    code location: op and graph names are one namespace there (a job's graph carries the
    job's name), so the approve op must not share its job's name."""
    pipelines = tmp_path / "pipelines"
    for name in ("gate", "other"):
        write_pipeline(pipelines, name, f"""
name = "{name}"
approval = true
owners = ["olive"]
[tasks.net]
module = "{STEP}"
variables = {{ name = "net" }}
""")
    repository = build_definitions(pipelines).get_repository_def()
    repository.load_all_definitions()  # what a code server does; raises on a name clash
    assert {"gate__approve", "other__approve"} <= set(repository.job_names)
