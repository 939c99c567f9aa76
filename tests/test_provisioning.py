"""End-to-end provisioning with real Terraform applies, through Dagster's real surfaces."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml
from dagster import (
    AssetKey,
    DagsterEventType,
    DagsterInstance,
    build_reconstructable_job,
    execute_job,
)

from .conftest import FIXTURES, IkEnv, make_ik_env, processes_in, write_pipeline

STEP_MODULE = FIXTURES / "modules" / "step"
CHAIN = ["provision-network", "provision-subnets", "provision-database", "provision-compute",
         "provision-alb", "configure-dns"]


def _lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def _latest_metadata(pipeline: str, task: str, partition: str | None = None) -> dict:
    instance = DagsterInstance.get()
    event = instance.get_latest_materialization_event(AssetKey([pipeline, task]))
    assert event is not None, f"{pipeline}/{task} was never materialised"
    materialization = event.asset_materialization
    assert materialization is not None
    if partition:
        assert materialization.partition == partition
    return {k: v.value for k, v in materialization.metadata.items()}


def _audit(ik_env: IkEnv, target: str | None = None) -> list[dict]:
    args = ["audit", "--json"] + ([target] if target else [])
    return json.loads(ik_env.ik(*args).stdout)


def test_example_provisions_end_to_end(ik_env: IkEnv) -> None:
    result = ik_env.dagster_job("infra_provisioning__provision")
    assert "RUN_SUCCESS" in result.stdout + result.stderr
    records = {t: ik_env.inspect("infra-provisioning", t) for t in CHAIN}
    for task, record in records.items():
        assert (record["state"], record["status"], record["revision"]) == (
            "provisioned", "done", 1), task
        metadata = _latest_metadata("infra-provisioning", task)
        assert metadata["outputs"] == record["outputs"]
    network, subnets = records["provision-network"], records["provision-subnets"]
    database, compute = records["provision-database"], records["provision-compute"]
    alb, dns = records["provision-alb"], records["configure-dns"]
    # each child's own outputs echo what it received from its parents
    assert network["outputs"]["vpc_id"].startswith("vpc-")
    assert subnets["outputs"]["vpc_id"] == network["outputs"]["vpc_id"]
    assert database["outputs"]["vpc_id"] == network["outputs"]["vpc_id"]
    assert database["outputs"]["subnet_ids"] == subnets["outputs"]["subnet_ids"]
    assert compute["outputs"]["rds_endpoint"] == database["outputs"]["rds_endpoint"]
    assert alb["outputs"]["cluster_arn"] == compute["outputs"]["cluster_arn"]
    assert dns["outputs"]["alb_dns"] == alb["outputs"]["alb_dns"]
    # inherited dependency_tags / configs reached the grandchildren
    assert dns["outputs"]["tags"] == {"cost_center": "42"}
    assert alb["outputs"]["region"] == "us-east-1"
    # the sensitive output is stored but never shown
    assert database["outputs"]["db_password"] == "(sensitive)"
    assert _latest_metadata("infra-provisioning", "provision-database")["outputs"][
        "db_password"] == "(sensitive)"
    assert "ik-example-S3cret-pw" not in result.stdout + result.stderr
    assert "ik-example-S3cret-pw" not in ik_env.ik("resources", "--json").stdout
    assert "ik-example-S3cret-pw" not in json.dumps(_audit(ik_env))
    # the if-gated task ran because the smoke test registered "passed"
    assert _latest_metadata("infra-provisioning", "tag-resources")["outcome"] == "ran"


def _counting_pipeline(directory: Path, counts: Path, *, b_fail: str = "false",
                       extra: str = "") -> None:
    write_pipeline(directory, "counting", f"""
name = "counting"
[vars]
VAL = "one"
[tasks.a]
module = "{STEP_MODULE}"
variables = {{ name = "a", value = "{{{{.VAL}}}}", count_file = "{counts}/a" }}
[tasks.b]
module = "{STEP_MODULE}"
depends_on = ["a"]
variables = {{ name = "b", value = "{{{{.a.value}}}}", count_file = "{counts}/b", fail = {b_fail} }}
[tasks.c]
module = "{STEP_MODULE}"
depends_on = ["b"]
variables = {{ name = "c", value = "{{{{.b.id}}}}", count_file = "{counts}/c" }}
{extra}
""")


def test_reexecution_from_failure_and_unchanged_rerun(tmp_path: Path, toolchain,
                                                      monkeypatch) -> None:
    pipelines, counts = tmp_path / "p", tmp_path / "counts"
    counts.mkdir()
    _counting_pipeline(pipelines, counts, b_fail="true")
    env = make_ik_env(tmp_path, toolchain, pipelines)
    env.env["INFRAKITCHEN_EXECUTION"] = "per_step"  # re-execution of the failed steps only
    for key in ("INFRAKITCHEN_HOME", "DAGSTER_HOME", "INFRAKITCHEN_PIPELINES",
                "INFRAKITCHEN_TOFU", "TF_CLI_CONFIG_FILE", "INFRAKITCHEN_EXECUTION"):
        monkeypatch.setenv(key, env.env[key])
    job = build_reconstructable_job(
        "infrakitchen_dagster.definitions", "load_job_for_run",
        reconstructable_kwargs={"pipelines_dir": str(pipelines), "job_name": "counting__provision"})
    instance = DagsterInstance.get()
    with execute_job(job, instance=instance) as first:
        assert not first.success
        first_id = first.run_id
    assert _lines(counts / "a") == ["a"]
    assert _lines(counts / "b") == ["b"] and _lines(counts / "c") == []
    assert env.inspect("counting", "b")["status"] == "error"

    _counting_pipeline(pipelines, counts, b_fail="false")  # the fix
    resumed = env.ik("run", "counting", "--from-failure", first_id)
    second_id = resumed.stdout.split("run ", 1)[1].split(":", 1)[0]
    second = instance.get_run_by_id(second_id)
    assert second is not None and second.parent_run_id == first_id
    ran = {r.step_key for r in instance.all_logs(second_id, of_type=DagsterEventType.STEP_SUCCESS)}
    assert "counting__a" not in ran and {"counting__b", "counting__c"} <= ran
    assert _lines(counts / "a") == ["a"], "re-execution re-applied a step that succeeded"
    assert _lines(counts / "b") == ["b", "b"] and _lines(counts / "c") == ["c"]

    started = time.monotonic()
    env.dagster_job("counting__provision")
    assert time.monotonic() - started < 60
    assert (_lines(counts / "a"), _lines(counts / "b"), _lines(counts / "c")) == (
        ["a"], ["b", "b"], ["c"]), "an unchanged pipeline applied again"
    for task in "abc":
        assert _latest_metadata("counting", task)["outcome"] == "unchanged"
        assert env.inspect("counting", task)["revision"] == 1


def test_runtime_vars_reach_tfvars(ik_env: IkEnv, tmp_path: Path) -> None:
    counts = tmp_path / "counts"
    counts.mkdir()
    _counting_pipeline(ik_env.pipelines, counts)
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(
        {"resources": {"infrakitchen": {"config": {"vars": {"VAL": "from-config"}}}}}))
    ik_env.dagster_job("counting__provision", "-c", str(config))
    assert ik_env.inspect("counting", "a")["outputs"]["value"] == "from-config"
    tfvars = ik_env.home / "work" / "counting" / "default" / "a" / "terraform.tfvars.json"
    assert json.loads(tfvars.read_text())["value"] == "from-config"

    ik_env.ik("run", "counting", "--var", "VAL=from-cli", "--select", "a")
    record = ik_env.inspect("counting", "a")
    assert record["outputs"]["value"] == "from-cli"
    assert record["revision"] == 2, "an update bumps the revision"
    assert _lines(counts / "a") == ["a", "a"]


def test_environment_partition_has_its_own_state_and_record(ik_env: IkEnv) -> None:
    write_pipeline(ik_env.pipelines, "envs", f"""
name = "envs"
[vars]
REGION = "us-east-1"
[environments.staging]
[environments.prod]
REGION = "eu-west-1"
[tasks.net]
module = "{STEP_MODULE}"
variables = {{ name = "net", region = "{{{{.REGION}}}}" }}
""")
    ik_env.ik("run", "envs", "--env", "prod")
    prod = ik_env.inspect("envs", "net", "prod")
    assert prod["environment"] == "prod" and prod["outputs"]["region"] == "eu-west-1"
    assert ik_env.ik("inspect", "envs/net", "--env", "staging", check=False).returncode == 1
    ik_env.ik("run", "envs", "--env", "staging")
    staging = ik_env.inspect("envs", "net", "staging")
    assert staging["outputs"]["region"] == "us-east-1"
    assert staging["outputs"]["id"] != prod["outputs"]["id"]
    for env in ("prod", "staging"):
        state = ik_env.home / "work" / "envs" / env / "net" / "terraform.tfstate"
        assert state.is_file(), f"no separate state for {env}"
    assert _latest_metadata("envs", "net", partition="staging")["revision"] == 1
    missing = ik_env.ik("run", "envs", check=False)
    assert missing.returncode == 1 and "--env" in missing.stderr


def _teardown_pipeline(directory: Path, counts: Path, *, own_teardown: bool) -> None:
    on_failure = 'on_failure = "teardown-c"' if own_teardown else ""
    write_pipeline(directory, "tear", f"""
name = "tear"
on_failure = "teardown-all"
[tasks.a]
module = "{STEP_MODULE}"
variables = {{ name = "a", count_file = "{counts}/a" }}
[tasks.b]
module = "{STEP_MODULE}"
depends_on = ["a"]
variables = {{ name = "b" }}
[tasks.c]
module = "{STEP_MODULE}"
depends_on = ["b"]
variables = {{ name = "c", fail = true }}
{on_failure}
[tasks.teardown-c]
type = "forensic"
destroy = ["b", "c"]
[tasks.teardown-all]
type = "forensic"
destroy = "all"
""")


def test_own_teardown_destroys_exactly_what_it_names(ik_env: IkEnv, tmp_path: Path) -> None:
    _teardown_pipeline(ik_env.pipelines, tmp_path, own_teardown=True)
    result = ik_env.ik("run", "tear", check=False)
    assert result.returncode == 1
    assert ik_env.inspect("tear", "a")["state"] == "provisioned"
    assert ik_env.inspect("tear", "b")["state"] == "destroyed"
    c = ik_env.inspect("tear", "c")
    assert (c["state"], c["status"]) == ("provision", "error")
    teardowns = [e["details"].get("teardown") for e in _audit(ik_env)
                 if e["action"] == "teardown"]
    assert teardowns == ["teardown-c"], "the global teardown fired for a task with its own"
    state = ik_env.home / "work" / "tear" / "default" / "c" / "terraform.tfstate"
    assert json.loads(state.read_text())["resources"] == [], "c's partial state was left"


def test_failure_without_own_teardown_fires_global_once(ik_env: IkEnv, tmp_path: Path) -> None:
    _teardown_pipeline(ik_env.pipelines, tmp_path, own_teardown=False)
    result = ik_env.ik("run", "tear", check=False)
    assert result.returncode == 1
    for task in ("a", "b"):
        assert ik_env.inspect("tear", task)["state"] == "destroyed", task
    teardowns = [e for e in _audit(ik_env) if e["action"] == "teardown"]
    assert [e["details"]["teardown"] for e in teardowns] == ["teardown-all"]
    assert teardowns[0]["details"]["failed_task"] == "c"


@pytest.mark.parametrize("execution", ["batched", "per_step"])
def test_retry_succeeds_on_second_attempt(ik_env: IkEnv, tmp_path: Path,
                                          execution: str) -> None:
    ik_env.env["INFRAKITCHEN_EXECUTION"] = execution
    marker, counts = tmp_path / "failed-once", tmp_path / "count"
    write_pipeline(ik_env.pipelines, "flaky", f"""
name = "flaky"
[tasks.flaky]
module = "{STEP_MODULE}"
retries = 1
retry_delay = "200ms"
variables = {{ name = "flaky", fail_once_marker = "{marker}", count_file = "{counts}" }}
""")
    result = ik_env.dagster_job("flaky__provision")
    retried = ("STEP_UP_FOR_RETRY" if execution == "per_step"  # a Dagster retry of the step
               else "flaky: attempt 1 failed; retrying (1/1)")  # inside the batched step
    assert retried in result.stdout + result.stderr
    assert marker.exists() and _lines(counts) == ["flaky", "flaky"]
    record = ik_env.inspect("flaky", "flaky")
    assert (record["state"], record["status"]) == ("provisioned", "done")


def test_timeout_stops_the_attempt_and_leaves_no_process(ik_env: IkEnv, tmp_path: Path) -> None:
    write_pipeline(ik_env.pipelines, "slow", f"""
name = "slow"
[tasks.slow]
module = "{STEP_MODULE}"
timeout = "3s"
variables = {{ name = "slow", sleep_seconds = 120 }}
""")
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(
        {"resources": {"tofu": {"config": {"timeout_grace_seconds": 4}}}}))
    started = time.monotonic()
    result = ik_env.dagster_job("slow__provision", "-c", str(config), check=False)
    elapsed = time.monotonic() - started
    assert result.returncode != 0
    assert "timed out after 3s" in result.stdout + result.stderr
    # 3 s timeout + 4 s grace, plus Dagster's own start-up and tear-down
    assert elapsed < 3 + 4 + 25, f"took {elapsed:.1f}s"
    assert processes_in(ik_env.home) == []
    record = ik_env.inspect("slow", "slow")
    assert (record["state"], record["status"]) == ("provision", "error")


@pytest.mark.postgres
def test_lifecycle_store_and_pg_state_backend_on_postgres(tmp_path: Path, toolchain,
                                                          postgres_database: str) -> None:
    import psycopg2

    db = postgres_database.rsplit("/", 1)[1]
    pipelines = tmp_path / "p"
    write_pipeline(pipelines, "pgstack", f"""
name = "pgstack"
[backend]
type = "pg"
config = {{ conn_str = "postgres://postgres@127.0.0.1:5432/{db}?sslmode=disable" }}
[tasks.net]
module = "{STEP_MODULE}"
variables = {{ name = "net", value = "on-pg" }}
[tasks.app]
module = "{STEP_MODULE}"
depends_on = ["net"]
variables = {{ name = "app", value = "{{{{.net.id}}}}" }}
""")
    env = make_ik_env(tmp_path, toolchain, pipelines, database_url=postgres_database)
    env.ik("run", "pgstack")
    net, app = env.inspect("pgstack", "net"), env.inspect("pgstack", "app")
    assert net["state"] == app["state"] == "provisioned"
    assert app["outputs"]["value"] == net["outputs"]["id"]
    local_states = [p for p in (env.home / "work" / "pgstack").rglob("terraform.tfstate")
                    if ".terraform" not in p.parts]
    assert local_states == [], "state was written locally instead of to the pg backend"
    with psycopg2.connect(host="127.0.0.1", user="postgres", dbname=db) as conn, \
            conn.cursor() as cur:
        cur.execute("SELECT state, status FROM ik_resources WHERE pipeline = 'pgstack'")
        assert sorted(cur.fetchall()) == [("provisioned", "done")] * 2
        cur.execute("SELECT schema_name FROM information_schema.schemata "
                    "WHERE schema_name LIKE 'ik_pgstack_%'")
        schemas = sorted(r[0] for r in cur.fetchall())
        assert schemas == ["ik_pgstack_app_default", "ik_pgstack_net_default"]
        cur.execute("SELECT data FROM ik_pgstack_net_default.states WHERE name = 'default'")
        state = json.loads(cur.fetchone()[0])
        assert state["outputs"]["value"]["value"] == "on-pg"
    env.ik("destroy", "pgstack")
    assert env.inspect("pgstack", "net")["state"] == "destroyed"
