"""Crashes heal without a person: `kill -9` of a run mid-apply, then the next run proceeds.

A killed process cannot clean up after itself, so everything here is done by others: the
guardian process stops tofu's whole session (provider plugins, `local-exec` children) as
soon as the worker is gone, the record's lease tells any later run (or the healing sensor
under the daemon) that its holder is dead, and healing marks the record `error`, marks the
Dagster run failed and releases the stale state lock.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterInstance, DagsterRunStatus

from infrakitchen_dagster.runtime.healing import LOCK_INFO, release_stale_state_lock
from infrakitchen_dagster.store import LifecycleStore
from infrakitchen_dagster.store.leases import Holder, Leases, Verdict, judge
from infrakitchen_dagster.store.models import utcnow

from .conftest import (
    FIXTURES,
    IkEnv,
    Toolchain,
    ik_in_process,
    make_ik_env,
    processes_in,
    write_pipeline,
)

STEP_MODULE = FIXTURES / "modules" / "step"
WAIT_SECONDS = 120


def _wait(what: str, check: Callable[[], Any], seconds: float = WAIT_SECONDS) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"no {what} within {seconds:.0f}s"
        time.sleep(0.2)


def _inspect(task: str) -> dict[str, Any]:
    return json.loads(ik_in_process("inspect", task, "--json").stdout)


def _pipeline(env: IkEnv, count: Path, *, value: str, sleep: int) -> None:
    write_pipeline(env.pipelines, "slow", f"""
name = "slow"
[tasks.net]
module = "{STEP_MODULE}"
variables = {{ name = "net", value = "{value}", sleep_seconds = {sleep}, count_file = "{count}" }}
""")


def _kill_mid_apply(process: subprocess.Popen[bytes], count_file: Path, applies: int) -> None:
    """Wait until the provisioner of apply number `applies` runs, then kill -9 the group."""
    try:
        _wait("apply in progress", lambda: (
            count_file.exists() and len(count_file.read_text().split()) >= applies)
            or process.poll() is not None)
        assert process.poll() is None, "the run ended before it could be killed mid-apply"
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


def test_killed_ik_run_heals_on_the_next_run(store_env: IkEnv, tmp_path: Path) -> None:
    count_file = tmp_path / "applies"
    _pipeline(store_env, count_file, value="one", sleep=0)
    ik_in_process("run", "slow")
    assert _inspect("slow/net")["revision"] == 1

    # an update that hangs in its provisioner, killed with its whole process group
    _pipeline(store_env, count_file, value="two", sleep=300)
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "ik"), "run", "slow"], cwd=store_env.root,
        env=store_env.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    _kill_mid_apply(process, count_file, applies=2)
    workdir = store_env.home / "work" / "slow" / "default" / "net"
    record = _inspect("slow/net")
    assert (record["state"], record["status"]) == ("provisioned", "in_progress")
    dead_run = record["last_run_id"]
    # tofu's session (provider plugin, local-exec shell and its sleep) dies with the run
    assert _wait("tofu's session to be stopped", lambda: not processes_in(workdir),
                 seconds=60)

    # the next run, --force included, proceeds with no manual step (a fresh process: the
    # pipeline file changed)
    _pipeline(store_env, count_file, value="two", sleep=0)
    store_env.ik("run", "slow", "--force")
    record = _inspect("slow/net")
    assert (record["state"], record["status"], record["revision"]) == (
        "provisioned", "done", 2)
    assert record["outputs"]["value"] == "two"
    marks = [e for e in json.loads(ik_in_process("audit", "slow/net", "--json").stdout)
             if e["action"] == "mark_error"]
    assert [m["details"]["crashed_run_id"] for m in marks] == [dead_run]
    run = DagsterInstance.get().get_run_by_id(dead_run)
    assert run is not None and run.status == DagsterRunStatus.FAILURE
    assert not (workdir / LOCK_INFO).exists()
    listed = store_env.run(store_env.env["INFRAKITCHEN_TOFU"], "state", "list", cwd=workdir)
    assert listed.stdout.split() == ["null_resource.this"]


def test_a_live_holder_is_never_healed(store_env: IkEnv) -> None:
    """A lease held by a live process (this one) keeps the record: no second run may take
    it over, whatever Dagster says of the run."""
    write_pipeline(store_env.pipelines, "held", f"""
name = "held"
[tasks.net]
module = "{STEP_MODULE}"
variables = {{ name = "net" }}
""")
    from infrakitchen_dagster.store.lifecycle import Action

    store = LifecycleStore()
    record = store.create("held", "net", "default", kind="resource", module=str(STEP_MODULE),
                          parents=[], actor="tester", run_id="run-alive")
    record = store.transition(record, Action.PROVISION_START, actor="tester",
                              run_id="run-alive")
    with Leases(store).held(record.id, "run-alive"):
        result = ik_in_process("run", "held", check=False)
        assert result.returncode == 1
        assert "in_progress" in result.stdout + result.stderr
        after = _inspect("held/net")
        assert (after["state"], after["status"]) == ("provision", "in_progress")
    assert Leases(store).verdict(record.id)[0] == Verdict.NONE


def test_lease_verdicts_for_holders_here_and_elsewhere(store_env: IkEnv) -> None:
    here = Holder.current("r1")
    assert judge(here, None) == Verdict.ALIVE
    gone = Holder(here.host, here.pid, "not-its-start-time", "r1")  # the pid was reused
    assert judge(gone, None) == Verdict.DEAD
    elsewhere = Holder("another-host", 1, "1", "r1")
    assert judge(elsewhere, utcnow() + timedelta(seconds=30)) == Verdict.ALIVE
    assert judge(elsewhere, utcnow() - timedelta(seconds=1)) == Verdict.DEAD
    assert judge(None, None) == Verdict.NONE

    store = LifecycleStore()
    record = store.create("p", "t", "default", kind="resource", module=None, parents=[],
                          actor="tester")
    leases = Leases(store)
    leases.hold(record.id, elsewhere, -1)  # written by another machine, since expired
    assert leases.verdict(record.id) == (Verdict.DEAD, elsewhere)
    assert not leases.renew(record.id, here, 60)  # only its holder renews a lease
    leases.hold(record.id, elsewhere, 60)
    assert leases.verdict(record.id) == (Verdict.ALIVE, elsewhere)


def test_stale_state_lock_is_released_only_when_its_holder_is_gone(tmp_path: Path) -> None:
    import fcntl

    (tmp_path / "terraform.tfstate").write_text("{}")
    (tmp_path / LOCK_INFO).write_text(json.dumps({"ID": "lock-1234"}))
    holder = subprocess.Popen(  # a live process holding tofu's lock on the state file
        [sys.executable, "-c", "import fcntl,sys,time\n"
         f"f=open({str(tmp_path / 'terraform.tfstate')!r},'r+b')\n"
         "fcntl.lockf(f, fcntl.LOCK_EX)\nprint('locked', flush=True)\ntime.sleep(300)"],
        stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"locked"
        assert release_stale_state_lock(tmp_path) is None
        assert (tmp_path / LOCK_INFO).exists()
    finally:
        holder.kill()
        holder.wait()
    assert release_stale_state_lock(tmp_path) == "lock-1234"
    assert not (tmp_path / LOCK_INFO).exists()
    assert fcntl  # the same lock kind tofu takes (POSIX record lock)


@pytest.mark.postgres
@pytest.mark.timeout(480)
def test_killed_run_worker_under_the_daemon_heals_without_a_person(
        tmp_path: Path, toolchain: Toolchain, postgres_database: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from .test_daemon import _daemon, _tail, _use_postgres_instance, _write_workspace

    pipelines = tmp_path / "pipelines"
    env = make_ik_env(tmp_path, toolchain, pipelines, database_url=postgres_database)
    env.env["INFRAKITCHEN_EXECUTOR"] = "in_process"
    # `dagster job launch` goes through the code location, as the UI does: its run acts as
    # the deployment's UI principal (unset, it would be refused before anything runs)
    env.env["INFRAKITCHEN_UI_PRINCIPAL"] = "operator"
    for key, value in _use_postgres_instance(env, postgres_database).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("DAGSTER_HOME", str(env.dagster_home))
    monkeypatch.setenv("INFRAKITCHEN_DATABASE_URL", postgres_database)
    count_file = tmp_path / "applies"
    _pipeline(env, count_file, value="one", sleep=300)
    workspace = _write_workspace(tmp_path)
    log = tmp_path / "dagster-daemon.log"
    workdir = env.home / "work" / "slow" / "default" / "net"

    with DagsterInstance.from_config(str(env.dagster_home)) as instance, \
            _daemon(env.env, workspace, log) as daemon:
        env.run(str(Path(sys.executable).parent / "dagster"), "job", "launch", "-w",
                str(workspace), "-j", "slow__provision")
        [run] = instance.get_runs()

        store = LifecycleStore()

        def worker() -> int | None:
            """The lease holder of the record, once the apply is under way."""
            record = store.get("slow", "net", "default")
            if record is None or not count_file.exists():
                return None
            verdict, holder = Leases(store).verdict(record.id)
            return holder.pid if verdict == Verdict.ALIVE and holder else None

        pid = _wait("the run worker mid-apply", worker, seconds=240)
        group = os.getpgid(pid)
        if group == pid:  # the worker leads its own group: kill all of it
            os.killpg(group, signal.SIGKILL)
        else:  # the worker shares the daemon's group: kill the worker alone
            os.kill(pid, signal.SIGKILL)
        assert daemon.poll() is None, _tail(log)

        def healed() -> dict[str, Any] | None:
            record = json.loads(env.ik("inspect", "slow/net", "--json").stdout)
            return record if record["status"] == "error" else None

        record = _wait("the healing sensor to mark the record error", healed, seconds=180)
        assert record["state"] == "provision"
        assert _wait("the dead run to be marked failed", lambda: instance.get_run_by_id(
            run.run_id).status == DagsterRunStatus.FAILURE, seconds=60)
        assert _wait("tofu's session to be stopped", lambda: not processes_in(workdir),
                     seconds=60)

    _pipeline(env, count_file, value="one", sleep=0)
    env.ik("run", "slow")
    record = json.loads(env.ik("inspect", "slow/net", "--json").stdout)
    assert (record["state"], record["status"]) == ("provisioned", "done")
    marks = [e for e in json.loads(env.ik("audit", "slow/net", "--json").stdout)
             if e["action"] == "mark_error"]
    assert [m["details"]["crashed_run_id"] for m in marks] == [run.run_id]
