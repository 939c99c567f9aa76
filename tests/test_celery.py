"""Runs across machines on dagster-celery, for real: RabbitMQ as broker (a fresh vhost per
test, `rpc://` results), two `dagster-celery worker` processes that each have their own
`INFRAKITCHEN_HOME` and `DAGSTER_HOME` (as two machines would), the dagster-postgres
instance, the PostgreSQL lifecycle store and the `pg` tofu state backend.

- A reviewed plan filed on worker A applies on worker B, whose home starts empty, after
  worker A and its home are gone: the plan comes from the store, not from A's disk.
- A fan-out whose two branches meet at a barrier (each apply succeeds only while the other
  runs) lands on both workers, each taking one step at a time: the `worker` metadata of
  the materialisations says where each step ran.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from infrakitchen_dagster import distributed
from infrakitchen_dagster.graph import load_graph
from infrakitchen_dagster.spec import PipelineError

from .conftest import FIXTURES, ROOT, IkEnv, _pg_admin, make_ik_env, write_pipeline

BROKER_HOST, BROKER_PORT = "127.0.0.1", 5672
STEP_MODULE = FIXTURES / "modules" / "step"
BARRIER_MODULE = FIXTURES / "modules" / "barrier"
WORKER_READY_SECONDS = 90
BIN = Path(sys.executable).parent


# -- validation: a local state backend under a distributed executor ------------------------


def test_local_state_backend_is_refused_under_celery(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_pipeline(tmp_path, "mixed", f"""
name = "mixed"
[tasks.net]
module = "{STEP_MODULE}"
variables = {{ name = "net" }}
[tasks.app]
module = "{STEP_MODULE}"
variables = {{ name = "app" }}
backend = {{ type = "pg", config = {{ conn_str = "postgres://x@127.0.0.1/db" }} }}
[tasks.say]
cmd = "echo hi"
""")
    monkeypatch.setenv("INFRAKITCHEN_EXECUTOR", "forkserver")
    load_graph(path)  # one machine: local state is fine
    monkeypatch.setenv("INFRAKITCHEN_EXECUTOR", "celery")
    with pytest.raises(PipelineError) as caught:
        load_graph(path)
    [problem] = caught.value.problems
    assert "backend: type 'local' keeps tofu state on one machine's disk" in problem
    assert "executor is 'celery'" in problem and "(tasks net)" in problem
    assert 'type = "pg"' in problem

    # the pipeline backend is shared; one task overrides it with a local one
    path.write_text(path.read_text().replace(
        'name = "mixed"',
        'name = "mixed"\n[backend]\ntype = "pg"\nconfig = { conn_str = "postgres://x@h/db" }')
        .replace('variables = { name = "net" }',
                 'variables = { name = "net" }\nbackend = { type = "local" }'))
    with pytest.raises(PipelineError) as caught:
        load_graph(path)
    assert caught.value.problems == [
        "task 'net': backend type 'local' keeps tofu state on one machine's disk, but the "
        "executor is 'celery' (INFRAKITCHEN_EXECUTOR), whose steps run on any worker: use a "
        'shared state backend such as "pg"']


def test_celery_definitions_use_the_celery_executor_per_step(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    """auto execution is per_step under celery (steps spread), and the broker URL, which
    may hold a password, reaches Dagster as an env reference, not as a value."""
    pytest.importorskip("dagster_celery")
    from infrakitchen_dagster import build_definitions

    write_pipeline(tmp_path, "fan", f"""
name = "fan"
[backend]
type = "pg"
config = {{ conn_str = "postgres://x@127.0.0.1/db" }}
[tasks.root]
module = "{STEP_MODULE}"
variables = {{ name = "root" }}
[tasks.left]
module = "{STEP_MODULE}"
depends_on = ["root"]
variables = {{ name = "left" }}
[tasks.right]
module = "{STEP_MODULE}"
depends_on = ["root"]
variables = {{ name = "right" }}
""")
    monkeypatch.setenv(distributed.BROKER_ENV, "pyamqp://u:s3cret@broker:5672/v")
    monkeypatch.delenv("INFRAKITCHEN_EXECUTION", raising=False)
    defs = build_definitions(tmp_path, executor="celery")
    job = defs.resolve_job_def("fan__provision")
    assert job.executor_def.name == "infrakitchen_celery"
    assert "s3cret" not in json.dumps(distributed.celery_config(), default=str)
    assert distributed.celery_config()["broker"] == {"env": distributed.BROKER_ENV}
    assert len(job.graph.node_defs) == 3  # one step per task, not one batched step


def test_deploy_worker_config_matches_the_executor() -> None:
    """deploy/celery-worker.yaml is what workers start with: same broker, backend and
    Celery settings as the executor, or tasks would never reach them."""
    import yaml

    deployed = yaml.safe_load((ROOT / "deploy" / "celery-worker.yaml").read_text())
    env = {distributed.BROKER_ENV: "x", distributed.BACKEND_ENV: "y"}
    assert deployed == {"execution": {"config": distributed.celery_config(env)}}


# -- the distributed run ----------------------------------------------------------------------


def _broker_reachable() -> str | None:
    try:
        socket.create_connection((BROKER_HOST, BROKER_PORT), timeout=2).close()
    except OSError as exc:
        return f"no RabbitMQ broker on {BROKER_HOST}:{BROKER_PORT} ({exc}); start it (.ci/run)"
    if shutil.which("rabbitmqctl") is None:
        return "rabbitmqctl is not installed: cannot make a private vhost for the test"
    return None


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture
def broker_url() -> Iterator[str]:
    """A fresh RabbitMQ vhost for this test (deleted afterwards): its `dagster` queue and
    the workers listening on it are nobody else's."""
    reason = _broker_reachable()
    if reason:
        pytest.skip(reason)
    pytest.importorskip("dagster_celery")
    vhost = f"ik_test_{uuid.uuid4().hex[:12]}"
    try:
        _rabbitmqctl("add_vhost", vhost)
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"cannot add a RabbitMQ vhost ({exc.stderr.strip()[-300:]})")
    try:
        _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        yield f"pyamqp://guest:guest@{BROKER_HOST}:{BROKER_PORT}/{vhost}"
    finally:
        _rabbitmqctl("delete_vhost", vhost)


@dataclass
class Worker:
    name: str
    home: Path
    process: subprocess.Popen[bytes]
    log: Path
    log_start: int  # where this start's lines begin (a restarted worker appends)


def _use_postgres_instance(dagster_home: Path, database_url: str) -> dict[str, str]:
    """deploy/dagster-postgres.yaml as the instance of `dagster_home`, on the test's DB."""
    dagster_home.mkdir(parents=True, exist_ok=True)
    shutil.copy2(ROOT / "deploy" / "dagster-postgres.yaml", dagster_home / "dagster.yaml")
    url = make_url(database_url)
    return {
        "DAGSTER_PG_HOST": url.host or "127.0.0.1", "DAGSTER_PG_PORT": str(url.port or 5432),
        "DAGSTER_PG_DB": url.database or "", "DAGSTER_PG_USER": url.username or "postgres",
        "DAGSTER_PG_PASSWORD": url.password or "",
    }


class Cluster:
    """The run side (an `IkEnv`) plus workers started and stopped on demand."""

    def __init__(self, tmp_path: Path, env: IkEnv, broker: str) -> None:
        self.tmp_path = tmp_path
        self.env = env
        self.workers: dict[str, Worker] = {}
        env.env[distributed.BROKER_ENV] = broker
        self.config = distributed.write_worker_config(tmp_path / "celery-worker.yaml",
                                                      env.env)

    def start(self, name: str) -> Worker:
        """One worker "machine": its own INFRAKITCHEN_HOME (not created: it starts empty)
        and DAGSTER_HOME, the shared store, instance, key, pipelines and broker."""
        base = self.tmp_path / name
        dagster_home = base / "dagster-home"
        env = dict(self.env.env)
        env.update(_use_postgres_instance(dagster_home, env["INFRAKITCHEN_DATABASE_URL"]))
        env.update(INFRAKITCHEN_HOME=str(base / "ik-home"), DAGSTER_HOME=str(dagster_home),
                   INFRAKITCHEN_WORKER_NAME=name)
        log = base / "worker.log"
        log_start = log.stat().st_size if log.exists() else 0
        argv = distributed.worker_command(self.config, name, concurrency=1,
                                          dagster_celery=str(BIN / "dagster-celery"))
        argv += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
        with log.open("ab") as out:  # a restarted worker keeps its earlier log
            process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        worker = Worker(name, base / "ik-home", process, log, log_start)
        self.workers[name] = worker
        self._wait_ready(worker)
        return worker

    def _wait_ready(self, worker: Worker) -> None:
        """Celery logs `<name>@<host> ready.` once it consumes from the queue."""
        deadline = time.monotonic() + WORKER_READY_SECONDS
        while time.monotonic() < deadline:
            if b" ready." in worker.log.read_bytes()[worker.log_start:]:
                return
            if worker.process.poll() is not None:
                break
            time.sleep(0.2)
        text = worker.log.read_text(errors="replace")[-4000:]
        self.stop(worker.name)
        raise AssertionError(f"worker {worker.name} did not become ready:\n{text}")

    def stop(self, name: str) -> None:
        """SIGTERM to the worker's process group (the CLI, celery and its pool), then
        SIGKILL if it lingers; returns once nothing of the group is left."""
        worker = self.workers.pop(name)
        pgid = worker.process.pid
        for sig, grace in ((signal.SIGTERM, 30.0), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            try:
                worker.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                continue
            if not _group_alive(pgid):
                break
            deadline = time.monotonic() + grace
            while _group_alive(pgid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if not _group_alive(pgid):
                break
        assert not _group_alive(pgid), f"worker {name} left processes behind"

    def stop_all(self) -> None:
        for name in list(self.workers):
            self.stop(name)

    def logs(self) -> str:
        return "\n".join(f"--- {w.name}\n{w.log.read_text(errors='replace')[-3000:]}"
                         for w in self.workers.values())

    def run_job(self, job: str) -> subprocess.CompletedProcess[str]:
        result = self.env.dagster_job(job, check=False, timeout=150)
        if result.returncode != 0:
            raise AssertionError(f"{job} exited {result.returncode}\n{result.stdout[-3000:]}\n"
                                 f"{result.stderr[-5000:]}\n{self.logs()}")
        return result


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _json(env: IkEnv, *args: str) -> Any:
    return json.loads(env.ik(*args, "--json", "--as", "alice").stdout)


def _worker_of(instance: Any, pipeline: str, task: str) -> str:
    from dagster import AssetKey

    event = instance.get_latest_materialization_event(AssetKey([pipeline, task]))
    assert event is not None, f"{pipeline}/{task} was not materialised"
    return event.asset_materialization.metadata["worker"].value


@pytest.fixture
def branch_state_databases(postgres_database: str) -> Iterator[dict[str, str]]:
    """One `pg` state database per barrier branch: Terraform's pg backend locks a state
    with pg_try_advisory_lock(<row id>), and every schema's `default` workspace is row 1,
    so two states in one database cannot be applied at the same time (hashicorp/terraform
    #22833, #29034); the branches must, to meet at the barrier."""
    names = {branch: f"{make_url(postgres_database).database}_{branch}"
             for branch in ("left", "right")}
    conn = _pg_admin()
    try:
        with conn.cursor() as cur:
            for name in names.values():
                cur.execute(f'CREATE DATABASE "{name}"')
        yield {branch: f"postgres://postgres@127.0.0.1:5432/{name}?sslmode=disable"
               for branch, name in names.items()}
    finally:
        with conn.cursor() as cur:
            for name in names.values():
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()


@pytest.mark.postgres
def test_celery_workers_share_plans_and_spread_a_fan_out(
        tmp_path: Path, toolchain, postgres_database: str, broker_url: str,
        branch_state_databases: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    from dagster import DagsterInstance

    db = make_url(postgres_database).database
    pg_state = f"postgres://postgres@127.0.0.1:5432/{db}?sslmode=disable"
    state_dbs = branch_state_databases
    pipelines = tmp_path / "pipelines"
    write_pipeline(pipelines, "gated", f"""
name = "gated"
approval = true
owners = ["alice", "tester"]
[backend]
type = "pg"
config = {{ conn_str = "{pg_state}" }}
[tasks.net]
module = "{STEP_MODULE}"
variables = {{ name = "net", value = "planned-on-a" }}
""")
    left, right = tmp_path / "barrier" / "left", tmp_path / "barrier" / "right"
    left.parent.mkdir()
    write_pipeline(pipelines, "fan", f"""
name = "fan"
[backend]
type = "pg"
config = {{ conn_str = "{pg_state}" }}
[tasks.root]
module = "{STEP_MODULE}"
variables = {{ name = "root" }}
[tasks.left]
module = "{BARRIER_MODULE}"
depends_on = ["root"]
variables = {{ mine = "{left}", other = "{right}" }}
backend = {{ type = "pg", config = {{ conn_str = "{state_dbs['left']}" }} }}
[tasks.right]
module = "{BARRIER_MODULE}"
depends_on = ["root"]
variables = {{ mine = "{right}", other = "{left}" }}
backend = {{ type = "pg", config = {{ conn_str = "{state_dbs['right']}" }} }}
""")
    env = make_ik_env(tmp_path / "run", toolchain, pipelines, database_url=postgres_database)
    instance_env = _use_postgres_instance(env.dagster_home, postgres_database)
    env.env.update(instance_env, INFRAKITCHEN_EXECUTOR="celery",
                   INFRAKITCHEN_SECRET_KEY=_fernet_key())
    env.env.pop("INFRAKITCHEN_EXECUTION", None)
    for key, value in instance_env.items():
        monkeypatch.setenv(key, value)
    cluster = Cluster(tmp_path, env, broker_url)
    try:
        # 1. the gated resource is planned on worker A (the only one up): a pending request
        worker_a = cluster.start("worker-a")
        cluster.run_job("gated__provision")
        [request] = _json(env, "approvals", "--pending")
        assert (request["pipeline"], request["task"]) == ("gated", "net")
        assert (worker_a.home / "work").is_dir(), "worker A did not plan the resource"

        # 2. machine A goes away with its disk; B starts with an empty home
        cluster.stop("worker-a")
        shutil.rmtree(worker_a.home)
        worker_b = cluster.start("worker-b")
        assert not worker_b.home.exists()
        env.ik("approve", str(request["id"]), "--as", "alice")
        cluster.run_job("gated__provision")
        record = env.inspect("gated", "net")
        assert (record["state"], record["status"]) == ("provisioned", "done")
        assert record["outputs"]["value"] == "planned-on-a"
        [applied] = [r for r in _json(env, "approvals") if r["id"] == request["id"]]
        assert applied["status"] == "applied"
        assert not worker_a.home.exists(), "something wrote to machine A's home"
        local_states = [p for p in worker_b.home.rglob("terraform.tfstate")
                        if ".terraform" not in p.parts]
        assert local_states == [], "state was written on the worker, not to the pg backend"

        # 3. a fan-out over two workers: the barrier branches must run side by side
        cluster.start("worker-a")
        cluster.run_job("fan__provision")
        with DagsterInstance.from_config(str(env.dagster_home)) as instance:
            assert _worker_of(instance, "gated", "net") == "worker-b"
            branches = {_worker_of(instance, "fan", t) for t in ("left", "right")}
            assert branches == {"worker-a", "worker-b"}
            assert _worker_of(instance, "fan", "root") in branches
        for task in ("root", "left", "right"):
            assert env.inspect("fan", task)["state"] == "provisioned"
    finally:
        cluster.stop_all()


def _fernet_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()
