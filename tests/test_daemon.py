"""The approval flow under a real `dagster-daemon`, on the production (PostgreSQL) instance.

tests/test_approvals.py applies an approved request by running `ik run` again, which is
what an operator without a daemon does. In production nobody does that: the
`infrakitchen_approvals` sensor, ticked by `dagster-daemon`, sees the decision and
launches the apply run itself, through the run queue and the default run launcher. Only a
real daemon exercises that path end to end: the sensor's cursor and claim in the
lifecycle store, the run request's job, asset selection, run key and tags, the queue
daemon dequeuing it, the launched run applying exactly the approved plan, and the sensor
not launching it a second time on its next ticks.

Both the lifecycle store and the Dagster instance (`deploy/dagster-postgres.yaml`) live in
one fresh PostgreSQL database. The daemon runs on loopback as a subprocess in its own
process group, bounded in time and stopped by the test whatever happens.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

# Tick records (status, launched run ids) have no public export; these are the types
# `DagsterInstance.get_ticks` returns.
from dagster._core.scheduler.instigation import InstigatorTick, InstigatorType, TickStatus
from sqlalchemy.engine import make_url

from .conftest import FIXTURES, ROOT, IkEnv, Toolchain, make_ik_env, write_pipeline

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(480)]

STEP_MODULE = FIXTURES / "modules" / "step"
PIPELINE, TASK, OWNER = "gated", "net", "olive"
APPROVALS_SENSOR = "infrakitchen_approvals"
REQUEST_TAG = "infrakitchen/approval_request"
APPLY_SECONDS = 180  # approval -> provisioned/done, daemon start-up included
EXTRA_TICK_SECONDS = 60  # the sensor's interval is 5 s; the daemon may lag behind it
STOP_SECONDS = 30
POLL_SECONDS = 1.0
_FINISHED = (DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED)


# -- the daemon -----------------------------------------------------------------------------


def _tail(path: Path, limit: int = 8000) -> str:
    return path.read_text(errors="replace")[-limit:] if path.exists() else "(no output)"


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of the process group `pgid`, from /proc."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue  # gone meanwhile
        # "pid (comm) state ppid pgrp ...": comm may hold spaces, so split after its ")"
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry))
    return members


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    with suppress(ProcessLookupError):  # the whole group is gone already
        os.killpg(pgid, signum)


def _group_gone(process: subprocess.Popen[bytes], seconds: float) -> bool:
    """Wait, bounded, for the daemon and every other member of its group to exit."""
    deadline = time.monotonic() + seconds
    with suppress(subprocess.TimeoutExpired):
        process.wait(timeout=seconds)
    while _group_members(process.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    return process.poll() is not None and not _group_members(process.pid)


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the daemon's process group (code server, run workers), SIGKILL if stuck."""
    _signal_group(process.pid, signal.SIGTERM)
    if not _group_gone(process, STOP_SECONDS):
        _signal_group(process.pid, signal.SIGKILL)
        _group_gone(process, STOP_SECONDS)
    left = _group_members(process.pid)
    assert process.poll() is not None and not left, (
        f"dagster-daemon (pid {process.pid}) left processes behind: {left}")


@contextmanager
def _daemon(env: dict[str, str], workspace: Path, log: Path
            ) -> Iterator[subprocess.Popen[bytes]]:
    """`dagster-daemon run` for `workspace`, in its own process group; always stopped."""
    command = [str(Path(sys.executable).parent / "dagster-daemon"), "run",
               "-w", str(workspace)]
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield process
    finally:
        _stop_group(process)


def _wait_for(what: str, check: Callable[[], Any], *, seconds: float,
              daemon: subprocess.Popen[bytes], log: Path) -> Any:
    """Poll `check` until it returns something truthy; fail if the daemon dies or time's up."""
    deadline = time.monotonic() + seconds
    while True:
        found = check()
        if found:
            return found
        code = daemon.poll()
        if code is not None:
            raise AssertionError(f"dagster-daemon exited {code} while waiting for {what}:\n"
                                 f"{_tail(log)}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {seconds:.0f}s; dagster-daemon log:\n"
                                 f"{_tail(log)}")
        time.sleep(POLL_SECONDS)


# -- the instance ---------------------------------------------------------------------------


def _use_postgres_instance(env: IkEnv, database_url: str) -> dict[str, str]:
    """deploy/dagster-postgres.yaml as the instance, pointed at the test's database."""
    shutil.copy2(ROOT / "deploy" / "dagster-postgres.yaml", env.dagster_home / "dagster.yaml")
    url = make_url(database_url)
    settings = {
        "DAGSTER_PG_HOST": url.host or "127.0.0.1", "DAGSTER_PG_PORT": str(url.port or 5432),
        "DAGSTER_PG_DB": url.database or "", "DAGSTER_PG_USER": url.username or "postgres",
        "DAGSTER_PG_PASSWORD": url.password or "",
    }
    env.env.update(settings)
    return settings


def _write_workspace(directory: Path) -> Path:
    workspace = directory / "workspace.yaml"
    workspace.write_text(json.dumps({"load_from": [{"python_file": {
        "relative_path": str(ROOT / "definitions.py"),
        "working_directory": str(ROOT),
        "location_name": "definitions.py",
    }}]}, indent=2))  # JSON is YAML
    return workspace


def _request_runs(instance: DagsterInstance, request_id: int) -> Sequence[Any]:
    return instance.get_runs(filters=RunsFilter(tags={REQUEST_TAG: str(request_id)}))


def _sensor_ticks(instance: DagsterInstance) -> list[InstigatorTick]:
    """Every stored tick of the approvals sensor, newest first ([] before its first tick)."""
    states = [s for s in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR)
              if s.instigator_name == APPROVALS_SENSOR]
    ticks: list[InstigatorTick] = []
    for state in states:
        ticks += instance.get_ticks(state.instigator_origin_id, state.selector_id)
    return sorted(ticks, key=lambda t: t.timestamp, reverse=True)


# -- the test -------------------------------------------------------------------------------


def _json(env: IkEnv, *args: str) -> Any:
    return json.loads(env.ik(*args, "--json", "--as", OWNER).stdout)


def _applies(count_file: Path) -> int:
    return len(count_file.read_text().split()) if count_file.exists() else 0


def test_daemon_sensor_applies_an_approved_request(
        tmp_path: Path, toolchain: Toolchain, postgres_database: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    pipelines = tmp_path / "pipelines"  # only this pipeline: the code location loads fast
    count_file = tmp_path / "applies"
    write_pipeline(pipelines, PIPELINE, f"""
name = "{PIPELINE}"
approval = true
owners = ["{OWNER}"]
allow_self_approval = true  # the owner both runs and approves
[tasks.{TASK}]
module = "{STEP_MODULE}"
variables = {{ name = "{TASK}", value = "daemon-v1", count_file = "{count_file}" }}
""")
    env = make_ik_env(tmp_path, toolchain, pipelines, database_url=postgres_database)
    env.env["INFRAKITCHEN_EXECUTOR"] = "in_process"
    for key, value in _use_postgres_instance(env, postgres_database).items():
        monkeypatch.setenv(key, value)  # for this process's view of the instance
    monkeypatch.setenv("DAGSTER_HOME", str(env.dagster_home))
    workspace = _write_workspace(tmp_path)
    log = tmp_path / "dagster-daemon.log"

    # 1. provision under approval: a pending request, nothing applied
    env.ik("run", PIPELINE, "--as", OWNER)
    record = _json(env, "inspect", f"{PIPELINE}/{TASK}")
    assert (record["state"], record["status"]) == ("provision", "approval_pending")
    [request] = _json(env, "approvals", "--pending")
    assert (request["pipeline"], request["task"], request["operation"]) == (
        PIPELINE, TASK, "provision")
    request_id = int(request["id"])
    assert _applies(count_file) == 0

    with DagsterInstance.from_config(str(env.dagster_home)) as instance, \
            _daemon(env.env, workspace, log) as daemon:
        assert not _request_runs(instance, request_id)

        # 2. an owner approves; the daemon's sensor launches the apply, nobody else does
        approved = env.ik("approve", str(request_id), "--as", OWNER)
        assert f"request {request_id} approved" in approved.stdout

        def provisioned() -> dict[str, Any] | None:
            for run in _request_runs(instance, request_id):
                if run.status in (DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED):
                    raise AssertionError(
                        f"the apply run {run.run_id} ended {run.status.value}; "
                        f"dagster-daemon log:\n{_tail(log)}")
            current = _json(env, "inspect", f"{PIPELINE}/{TASK}")
            done = (current["state"], current["status"]) == ("provisioned", "done")
            return current if done else None

        record = _wait_for("provisioned/done record", provisioned, seconds=APPLY_SECONDS,
                           daemon=daemon, log=log)

        def finished_run() -> Any:
            runs = _request_runs(instance, request_id)
            return runs[0] if len(runs) == 1 and runs[0].status in _FINISHED else None

        run = _wait_for("finished apply run", finished_run, seconds=STOP_SECONDS,
                        daemon=daemon, log=log)
        finished_at = time.time()

        launching = [t for t in _sensor_ticks(instance) if t.run_ids]
        assert [(t.status, t.run_ids, t.run_keys) for t in launching] == [
            (TickStatus.SUCCESS, [run.run_id], [str(request_id)])]
        launched_at = launching[0].timestamp

        # 3. the sensor ticks again after the launch and after the apply: nothing more
        def later_ticks() -> list[InstigatorTick] | None:
            later = [t for t in _sensor_ticks(instance)
                     if t.timestamp > launched_at and t.status != TickStatus.STARTED]
            after_apply = [t for t in later if t.timestamp > finished_at]
            return later if len(later) >= 2 and after_apply else None

        later = _wait_for(f"two more {APPROVALS_SENSOR} ticks, one after the apply",
                          later_ticks, seconds=EXTRA_TICK_SECONDS, daemon=daemon, log=log)
        assert all(t.status == TickStatus.SKIPPED and not t.run_ids for t in later), [
            (t.status, t.run_ids) for t in later]
        assert [r.run_id for r in _request_runs(instance, request_id)] == [run.run_id]
        assert [t.tick_id for t in _sensor_ticks(instance) if t.run_ids] == [
            launching[0].tick_id]
        assert daemon.poll() is None, f"dagster-daemon died:\n{_tail(log)}"

    # 4. the resource, the request, the apply and the run agree
    assert (record["state"], record["status"], record["revision"]) == (
        "provisioned", "done", 1)
    assert record["outputs"]["value"] == "daemon-v1"
    assert record["outputs"]["name"] == TASK
    assert _applies(count_file) == 1
    [decided] = [r for r in _json(env, "approvals") if r["id"] == request_id]
    assert (decided["status"], decided["decided_by"]) == ("applied", OWNER)
    assert decided["applied_run_id"] == run.run_id
    assert run.status == DagsterRunStatus.SUCCESS, run.status
    assert run.job_name == f"{PIPELINE}__provision"
    assert run.tags[REQUEST_TAG] == str(request_id)
    assert run.tags["dagster/run_key"] == str(request_id)
    assert run.tags["dagster/sensor_name"] == APPROVALS_SENSOR
    assert run.tags["infrakitchen/approved_by"] == OWNER
    assert _json(env, "approvals", "--pending") == []
