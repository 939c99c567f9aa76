"""Sensors, drift checks and crash recovery, through Dagster's evaluation APIs and real
Terraform applies (the daemon itself is exercised in test_daemon.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from dagster import (
    AssetKey,
    DagsterEventType,
    DagsterInstance,
    RunRequest,
    build_run_status_sensor_context,
    build_sensor_context,
)

from infrakitchen_dagster import build_definitions
from infrakitchen_dagster.approvals import REQUEST_TAG
from infrakitchen_dagster.resources import InfraKitchenResource, TofuResource

from .conftest import FIXTURES, IkEnv, ik_in_process, processes_in, write_pipeline

STEP_MODULE = FIXTURES / "modules" / "step"


def _gated_pipeline(directory: Path, counts: Path, sleep: int = 0) -> None:
    write_pipeline(directory, "gate", f"""
name = "gate"
approval = true
owners = ["olive"]
allow_self_approval = true  # olive both runs and approves
drift_schedule = "0 * * * *"
[tasks.net]
module = "{STEP_MODULE}"
variables = {{ name = "net", value = "one", count_file = "{counts}/net" }}
[tasks.web]
module = "{STEP_MODULE}"
variables = {{ name = "web", value = "two", sleep_seconds = {sleep} }}
""")


def _ik(*args: str) -> subprocess.CompletedProcess[str]:
    return ik_in_process(*args)


def _evaluate(pipelines: Path, cursor: str | None) -> tuple[list[RunRequest], str | None]:
    defs = build_definitions(pipelines)
    sensor = defs.get_sensor_def("infrakitchen_approvals")
    with DagsterInstance.ephemeral() as instance:
        result = sensor(build_sensor_context(instance=instance, cursor=cursor,
                                             definitions=defs))
    return list(result.run_requests or []), result.cursor


def _pending(env: IkEnv, task: str) -> dict:
    found = json.loads(_ik("approvals", "--pending", "--json", "--as", "olive").stdout)
    [request] = [r for r in found if r["task"] == task]
    return request


def test_approvals_sensor_launches_each_approved_request_once(store_env: IkEnv,
                                                             tmp_path: Path) -> None:
    _gated_pipeline(store_env.pipelines, tmp_path)
    _ik("run", "gate", "--as", "olive")
    net, web = _pending(store_env, "net"), _pending(store_env, "web")

    # pending requests never launch
    requests, cursor = _evaluate(store_env.pipelines, None)
    assert requests == [] and cursor == "0"

    _ik("approve", str(net["id"]), "--as", "olive")
    _ik("reject", str(web["id"]), "--reason", "no", "--as", "olive")
    requests, cursor = _evaluate(store_env.pipelines, "0")
    [run_request] = requests
    assert run_request.run_key == str(net["id"])
    assert run_request.job_name == "gate__provision"
    assert run_request.asset_selection == [AssetKey(["gate", "net"])]
    assert run_request.tags[REQUEST_TAG] == str(net["id"])
    assert cursor == "2"  # both decisions read; the rejection launched nothing
    launched = json.loads(_ik("approvals", "--json", "--as", "olive").stdout)
    assert {r["task"]: r["status"] for r in launched} == {"net": "launched", "web": "rejected"}

    # the same tick evaluated again (same cursor), a later tick, and a restarted daemon
    # that lost its cursor: no duplicate
    assert _evaluate(store_env.pipelines, "0")[0] == []
    assert _evaluate(store_env.pipelines, cursor)[0] == []
    assert _evaluate(store_env.pipelines, None)[0] == []

    # a launch whose run never came (the tick died after claiming): looked at again later
    from datetime import timedelta

    from infrakitchen_dagster.store import LifecycleStore
    from infrakitchen_dagster.store.models import ApprovalRequestRow

    with LifecycleStore().session() as session:
        row = session.get(ApprovalRequestRow, net["id"])
        row.updated_at = row.updated_at - timedelta(seconds=600)
    [again] = _evaluate(store_env.pipelines, cursor)[0]
    assert again.run_key == str(net["id"]) and again.job_name == "gate__provision"


def test_two_sensors_racing_launch_a_request_once(store_env: IkEnv, tmp_path: Path) -> None:
    _gated_pipeline(store_env.pipelines, tmp_path)
    _ik("run", "gate", "--select", "net", "--as", "olive")
    _ik("approve", str(_pending(store_env, "net")["id"]), "--as", "olive")
    results: list[list[RunRequest]] = []
    barrier = threading.Barrier(4)

    def tick() -> None:
        barrier.wait()
        results.append(_evaluate(store_env.pipelines, "0")[0])

    threads = [threading.Thread(target=tick) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(results) == 4
    assert sorted(len(r) for r in results) == [0, 0, 0, 1]


def test_drift_check_fails_on_out_of_band_change_and_passes_after_reapply(
        store_env: IkEnv, tmp_path: Path) -> None:
    write_pipeline(store_env.pipelines, "drifty", f"""
name = "drifty"
drift_schedule = "*/30 * * * *"
[tasks.net]
module = "{STEP_MODULE}"
variables = {{ name = "net", value = "one" }}
""")
    _ik("run", "drifty")
    defs = build_definitions(store_env.pipelines)
    schedule = defs.get_schedule_def("drifty__drift")
    assert schedule.cron_schedule == "*/30 * * * *"
    assert schedule.job_name == "drifty__drift_check"
    job = defs.resolve_job_def("drifty__drift_check")

    def check() -> tuple[bool, dict]:
        with DagsterInstance.ephemeral() as instance:
            result = job.execute_in_process(instance=instance, raise_on_error=False)
        [evaluation] = result.get_asset_check_evaluations()
        return evaluation.passed, {k: v.value for k, v in evaluation.metadata.items()}

    passed, metadata = check()
    assert passed and metadata["drifted_environments"] == "none"

    workdir = store_env.home / "work" / "drifty" / "default" / "net"
    store_env.run(store_env.env["INFRAKITCHEN_TOFU"], "taint", "null_resource.this",
                  cwd=workdir)
    passed, metadata = check()
    assert not passed
    assert metadata["changes"] == ["default: null_resource.this is tainted, so must be replaced"]
    record = json.loads(_ik("inspect", "drifty/net", "--json").stdout)
    assert record["drift"]["drifted"] is True
    audit = json.loads(_ik("audit", "drifty/net", "--json").stdout)
    assert audit[-1]["action"] == "drift_detected"

    _ik("run", "drifty", "--force")
    passed, _ = check()
    assert passed
    audit = json.loads(_ik("audit", "drifty/net", "--json").stdout)
    assert "drift_resolved" in [e["action"] for e in audit]


def test_killed_worker_leaves_error_then_a_new_run_converges(store_env: IkEnv,
                                                            tmp_path: Path) -> None:
    write_pipeline(store_env.pipelines, "slow", f"""
name = "slow"
[tasks.net]
module = "{STEP_MODULE}"
variables = {{ name = "net", value = "one", sleep_seconds = 60, count_file = "{tmp_path}/n" }}
""")
    worker = subprocess.Popen(
        [str(Path(sys.executable).parent / "dagster"), "job", "execute", "-f",
         str(store_env.root / "definitions.py"), "-j", "slow__provision"],
        cwd=store_env.root, env=store_env.env, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        count_file = tmp_path / "n"
        while not count_file.exists():  # the provisioner started: tofu is mid-apply
            assert worker.poll() is None, "the run ended before the apply started"
            assert time.monotonic() < deadline, "the apply never started"
            time.sleep(0.2)
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)
    record = json.loads(_ik("inspect", "slow/net", "--json").stdout)
    assert record["status"] == "in_progress"

    # what run monitoring does for a dead worker, then the failure sensor's evaluation
    instance = DagsterInstance.get()
    run = instance.get_run_by_id(record["last_run_id"])
    assert run is not None
    instance.report_run_failed(run, "run worker was killed")
    failure = instance.all_logs(run.run_id, of_type=DagsterEventType.RUN_FAILURE)[-1]
    defs = build_definitions(store_env.pipelines)
    sensor = defs.get_sensor_def("infrakitchen_run_failures")
    context = build_run_status_sensor_context(
        sensor_name="infrakitchen_run_failures", dagster_event=failure.dagster_event,
        dagster_instance=instance, dagster_run=instance.get_run_by_id(run.run_id),
        resources={"tofu": TofuResource(), "infrakitchen": InfraKitchenResource()})
    sensor(context)
    record = json.loads(_ik("inspect", "slow/net", "--json").stdout)
    assert (record["state"], record["status"]) == ("provision", "error")
    marks = [e for e in json.loads(_ik("audit", "slow/net", "--json").stdout)
             if e["action"] == "mark_error"]
    assert marks and marks[-1]["run_id"] == run.run_id
    workdir = store_env.home / "work" / "slow" / "default" / "net"
    assert processes_in(workdir) == [], "tofu's children outlived the dead run"

    # a new run converges: one resource in the state, the record provisioned
    pipeline = store_env.pipelines / "slow.toml"
    pipeline.write_text(pipeline.read_text().replace("sleep_seconds = 60", "sleep_seconds = 0"))
    store_env.ik("run", "slow")  # a fresh process: the pipeline file changed
    record = json.loads(_ik("inspect", "slow/net", "--json").stdout)
    assert (record["state"], record["status"]) == ("provisioned", "done")
    listed = store_env.run(store_env.env["INFRAKITCHEN_TOFU"], "state", "list", cwd=workdir)
    assert listed.stdout.split() == ["null_resource.this"]


def test_teardown_job_acts_once_per_claimed_failed_run(store_env: IkEnv,
                                                      tmp_path: Path) -> None:
    """The teardown job destroys without approval, so launching it by hand (a made-up
    failed run, or replaying a real one) must not destroy anything."""
    write_pipeline(store_env.pipelines, "guarded", f"""
name = "guarded"
on_failure = "teardown-all"
[tasks.net]
module = "{STEP_MODULE}"
variables = {{ name = "net" }}
[tasks.bad]
module = "{STEP_MODULE}"
depends_on = ["net"]
variables = {{ name = "bad", fail = true }}
[tasks.teardown-all]
type = "forensic"
destroy = "all"
""")
    assert ik_in_process("run", "guarded", check=False).returncode == 1
    assert json.loads(_ik("inspect", "guarded/net", "--json").stdout)["state"] == "destroyed"
    [failed] = [r for r in DagsterInstance.get().get_runs()
                if r.job_name == "guarded__provision"]
    _ik("run", "guarded", "--select", "net")  # provisioned again

    for failed_run_id in (failed.run_id, "not-a-run"):
        config = tmp_path / "teardown.yaml"
        config.write_text(json.dumps({"ops": {"guarded__global_teardown": {"config": {
            "failed_run_id": failed_run_id, "failed_task": "bad"}}}}))
        result = store_env.dagster_job("guarded__teardown", "-c", str(config), check=False)
        assert result.returncode != 0
        assert "the global teardown runs once per failed provision run of guarded" in (
            result.stdout + result.stderr)
        record = json.loads(_ik("inspect", "guarded/net", "--json").stdout)
        assert (record["state"], record["status"]) == ("provisioned", "done")
