"""Policy as code: real Rego files (package main, deny/warn) judging real Terraform plans.

A pipeline's `policies` globs name Rego v1 files; on every provision, update and destroy
plan, gated or not, a `deny` stops the apply before it happens (the run fails with the
messages, nothing is applied) and a `warn` is kept. Verdicts live on the record (`ik
inspect`) and as the resource's `policy` asset check; a file that does not parse fails
validation naming it; the files' digest is part of the approval fingerprint.
"""

from __future__ import annotations

import json
import shutil
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
    RunsFilter,
    define_asset_job,
)

from infrakitchen_dagster import build_definitions

from .conftest import (
    FIXTURES,
    IkEnv,
    _apply_to_this_process,
    ik_in_process,
    make_ik_env,
    write_pipeline,
)

POLICY = FIXTURES / "policies"
TOKEN = "tok-S3cret-policy-77"
HUGE = "null_resource.this: size huge is not allowed (guarded/huge in default)"
LARGE = "null_resource.this: size large costs more"


@pytest.fixture
def env(tmp_path: Path, toolchain, pipelines_copy: Path,
        monkeypatch: pytest.MonkeyPatch) -> IkEnv:
    """An isolated home (SQLite store, steps in-process) whose pipelines dir holds the
    policy fixtures: the module as `policy-module/`, the Rego files as `policies/`."""
    for file in pipelines_copy.glob("*.toml"):
        file.unlink()
    shutil.copytree(POLICY / "module", pipelines_copy / "policy-module")
    shutil.copytree(POLICY / "rego", pipelines_copy / "policies")
    ik = make_ik_env(tmp_path, toolchain, pipelines_copy)
    ik.env["INFRAKITCHEN_EXECUTOR"] = "in_process"
    _apply_to_this_process(ik, monkeypatch)
    return ik


def _guarded(env: IkEnv, counts: Path) -> Path:
    counts.mkdir(exist_ok=True)

    def task(name: str, size: str, extra: str = "") -> str:
        return (f'[tasks.{name}]\nmodule = "policy-module"\n{extra}'
                f'variables = {{ name = "{name}", size = "{size}", '
                f'count_file = "{counts}/{name}"'
                + (f', token = "{TOKEN}"' if name == "big" else "") + " }\n")

    return write_pipeline(env.pipelines, "guarded", "\n".join([
        'name = "guarded"\npolicies = ["policies/*.rego"]\n[vars]\nHUGE_SIZE = "huge"\n',
        task("calm", "small"), task("big", "large"), task("huge", "{{.HUGE_SIZE}}"),
        task("after", "small", 'depends_on = ["huge"]\n'),
        task("vault", "small", 'labels = { protected = "true" }\n')]))


def _applied(counts: Path, name: str) -> int:
    path = counts / name
    return len(path.read_text().split()) if path.exists() else 0


def _record(pipeline: str, task: str) -> dict:
    return json.loads(ik_in_process("inspect", f"{pipeline}/{task}", "--json").stdout)


def _audit_actions(pipeline: str, task: str) -> list[str]:
    entries = json.loads(ik_in_process("audit", f"{pipeline}/{task}", "--json").stdout)
    return [e["action"] for e in entries]


def _last_run(job: str) -> str:
    [run, *_] = DagsterInstance.get().get_runs(filters=RunsFilter(job_name=job), limit=1)
    return run.run_id


def _check_evaluations(run_id: str) -> dict[str, object]:
    """Task -> the `policy` check evaluation logged in the run."""
    found = {}
    for entry in DagsterInstance.get().all_logs(
            run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION):
        evaluation = entry.dagster_event.event_specific_data
        if evaluation.check_name == "policy":
            found[evaluation.asset_key.path[-1]] = evaluation
    return found


def _state_resources(env: IkEnv, pipeline: str, task: str) -> list:
    state = env.home / "work" / pipeline / "default" / task / "terraform.tfstate"
    return json.loads(state.read_text())["resources"] if state.exists() else []


def test_a_policy_file_that_does_not_parse_fails_validation_naming_it(env: IkEnv,
                                                                      tmp_path: Path) -> None:
    path = _guarded(env, tmp_path / "counts")
    ok = ik_in_process("validate", str(path))
    assert "ok (guarded" in ok.stdout

    shutil.copy(POLICY / "broken.rego", env.pipelines / "policies" / "broken.rego")
    bad = ik_in_process("validate", str(path), check=False)
    assert bad.returncode == 1
    assert "policy file policies/broken.rego:4:22: this is unclosed" in bad.stderr
    # loading refuses it as well: nothing runs
    run = ik_in_process("run", "guarded", check=False)
    assert run.returncode != 0 and "policies/broken.rego" in run.stdout + run.stderr
    assert not (tmp_path / "counts" / "calm").exists()

    (env.pipelines / "policies" / "broken.rego").unlink()
    text = path.read_text().replace('"policies/*.rego"', '"policy/*.rego"')
    path.write_text(text)
    typo = ik_in_process("validate", str(path), check=False)
    assert typo.returncode == 1 and "'policy/*.rego' matches no file" in typo.stderr

    (env.pipelines / "policies" / "lib.rego").write_text(
        "package main\n\ndeny contains msg if { msg := shout(input) }\n")
    path.write_text(text.replace('"policy/*.rego"', '"policies/*.rego"'))
    unknown = ik_in_process("validate", str(path), check=False)
    assert unknown.returncode == 1
    assert "policy file policies/lib.rego: Function not found: shout" in unknown.stderr


def test_deny_stops_the_apply_warn_is_kept_and_the_check_reports_both(
        env: IkEnv, tmp_path: Path) -> None:
    counts = tmp_path / "counts"
    _guarded(env, counts)
    run = ik_in_process("run", "guarded", check=False)
    output = run.stdout + run.stderr
    assert run.returncode != 0 and HUGE in output

    # nothing of the denied plan was applied, and nothing downstream of it ran
    assert _applied(counts, "huge") == 0 and _applied(counts, "after") == 0
    assert _state_resources(env, "guarded", "huge") == []
    assert [_applied(counts, t) for t in ("calm", "big", "vault")] == [1, 1, 1]

    huge = _record("guarded", "huge")
    assert (huge["state"], huge["status"]) == ("provision", "ready")  # never started
    assert huge["policy"]["deny"] == [HUGE] and huge["policy"]["operation"] == "provision"
    assert huge["policy"]["files"] == ["policies/protect.rego", "policies/size.rego"]
    assert "policy_denied" in _audit_actions("guarded", "huge")
    big = _record("guarded", "big")
    assert (big["state"], big["status"]) == ("provisioned", "done")
    assert big["policy"]["deny"] == []
    # a policy quoting a sensitive value shows it masked, everywhere
    assert big["policy"]["warn"] == ["null_resource.this carries token ***", LARGE]
    calm = _record("guarded", "calm")
    assert calm["policy"]["deny"] == calm["policy"]["warn"] == []
    shown = ik_in_process("inspect", "guarded/huge").stdout
    assert f"deny: {HUGE}" in shown and "provision plan, 1 denied" in shown

    # the `policy` asset check of each resource, from the run that judged the plans
    run_id = _last_run("guarded__provision")
    checks = _check_evaluations(run_id)
    assert not checks["huge"].passed and checks["huge"].severity == AssetCheckSeverity.ERROR
    assert HUGE in checks["huge"].description
    assert not checks["big"].passed and checks["big"].severity == AssetCheckSeverity.WARN
    assert checks["calm"].passed and "after" not in checks
    [materialised] = [e.asset_materialization for e in DagsterInstance.get().all_logs(
        run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION)
        if e.asset_materialization.asset_key == AssetKey(["guarded", "big"])]
    assert LARGE in materialised.metadata["policy_warn"].value
    events = json.dumps([e.user_message for e in DagsterInstance.get().all_logs(run_id)])
    assert TOKEN not in output + events
    assert TOKEN not in ik_in_process("audit", "--json").stdout
    assert TOKEN not in ik_in_process("inspect", "guarded/big", "--json").stdout

    # an allowed value applies; what was applied already is unchanged (not judged again)
    ik_in_process("run", "guarded", "--var", "HUGE_SIZE=small")
    assert [_applied(counts, t) for t in ("huge", "after", "calm", "big")] == [1, 1, 1, 1]
    assert _record("guarded", "huge")["policy"]["deny"] == []

    # a destroy plan is judged too: the protected resource stays, the other one goes
    denied = ik_in_process("destroy", "guarded", "--task", "vault", check=False)
    assert denied.returncode != 0
    assert ("null_resource.this is protected: the destroy plan deletes it"
            in denied.stdout + denied.stderr)
    vault = _record("guarded", "vault")
    assert (vault["state"], vault["status"]) == ("provisioned", "done")
    assert vault["policy"]["operation"] == "destroy" and len(vault["policy"]["deny"]) == 1
    assert len(_state_resources(env, "guarded", "vault")) == 1
    destroy_checks = _check_evaluations(_last_run("guarded__destroy"))
    assert not destroy_checks["vault"].passed
    ik_in_process("destroy", "guarded", "--task", "calm")
    assert _record("guarded", "calm")["state"] == "destroyed"
    assert _state_resources(env, "guarded", "calm") == []


def test_gated_plans_are_judged_when_filed_and_again_before_the_apply(
        env: IkEnv, tmp_path: Path) -> None:
    counts = tmp_path / "counts"
    counts.mkdir()
    write_pipeline(env.pipelines, "gated", f"""
name = "gated"
approval = true
owners = ["olive"]
policies = ["policies/*.rego"]
[tasks.db]
module = "policy-module"
labels = {{ protected = "true" }}
variables = {{ name = "db", size = "large", count_file = "{counts}/db" }}
[tasks.huge]
module = "policy-module"
variables = {{ name = "huge", size = "huge", count_file = "{counts}/huge" }}
""")
    ik_in_process("grant", "wendy", "write", "--pipeline", "gated", "--as", "olive")

    def requests(task: str) -> list[dict]:
        found = json.loads(ik_in_process("approvals", "--json", "--as", "olive").stdout)
        return [r for r in found if r["task"] == task]

    # a denied plan files no request; the run fails with the message
    run = ik_in_process("run", "gated", "--as", "wendy", check=False)
    assert run.returncode != 0
    assert "size huge is not allowed (gated/huge in default)" in run.stdout + run.stderr
    assert requests("huge") == []
    assert _record("gated", "huge")["policy"]["deny"]
    [first] = requests("db")
    assert first["status"] == "pending"
    assert _record("gated", "db")["policy"]["warn"] == [LARGE]
    ik_in_process("approve", str(first["id"]), "--as", "olive")

    # the policy files are in the approval fingerprint: changed files, a new request
    size = env.pipelines / "policies" / "size.rego"
    size.write_text(size.read_text() + "\n# reviewed\n")
    ik_in_process("run", "gated", "--select", "db", "--as", "wendy")
    assert _applied(counts, "db") == 0
    by_id = {r["id"]: r for r in requests("db")}
    assert by_id[first["id"]]["status"] == "stale"
    [second] = [r for r in by_id.values() if r["status"] == "pending"]
    ik_in_process("approve", str(second["id"]), "--as", "olive")
    ik_in_process("run", "gated", "--select", "db", "--as", "wendy")
    assert _applied(counts, "db") == 1
    assert _record("gated", "db")["state"] == "provisioned"
    # judged when filed, and again on the approved file just before it was applied
    actions = _audit_actions("gated", "db")
    applied_at = actions.index("provision_start")
    assert actions[:applied_at].count("policy_passed") == 3

    # a gated destroy that policy denies files no request and leaves the resource as is
    denied = ik_in_process("destroy", "gated", "--task", "db", "--as", "wendy", check=False)
    assert denied.returncode != 0 and "is protected" in denied.stdout + denied.stderr
    assert [r["operation"] for r in requests("db")] == ["provision", "provision"]
    db = _record("gated", "db")
    assert (db["state"], db["status"]) == ("provisioned", "done")


def test_per_step_runs_and_the_check_on_its_own(env: IkEnv, tmp_path: Path) -> None:
    """`dagster job execute` with a step per task; then the `policy` check run on its own
    judges today's configuration without applying it."""
    counts = tmp_path / "counts"
    counts.mkdir()
    write_pipeline(env.pipelines, "single", f"""
name = "single"
policies = ["policies/size.rego"]
[vars]
SIZE = "huge"
[tasks.box]
module = "policy-module"
variables = {{ name = "box", size = "{{{{.SIZE}}}}", count_file = "{counts}/box" }}
""")
    env.env["INFRAKITCHEN_EXECUTION"] = "per_step"
    run = env.dagster_job("single__provision", check=False)
    assert run.returncode != 0
    assert "size huge is not allowed (single/box in default)" in run.stdout + run.stderr
    assert _applied(counts, "box") == 0
    [evaluation] = _check_evaluations(_last_run("single__provision")).values()
    assert not evaluation.passed

    defs = build_definitions(env.pipelines)
    key = AssetCheckKey(AssetKey(["single", "box"]), "policy")
    job = Definitions.merge(defs, Definitions(jobs=[define_asset_job(
        "policy_now", selection=AssetSelection.checks(key))])).resolve_job_def("policy_now")

    def check() -> object:
        with DagsterInstance.ephemeral() as instance:
            result = job.execute_in_process(instance=instance, raise_on_error=False)
        [found] = result.get_asset_check_evaluations()
        return found

    assert not check().passed
    text = env.pipelines / "single.toml"
    text.write_text(text.read_text().replace('SIZE = "huge"', 'SIZE = "large"'))
    defs = build_definitions(env.pipelines)
    job = Definitions.merge(defs, Definitions(jobs=[define_asset_job(
        "policy_now", selection=AssetSelection.checks(key))])).resolve_job_def("policy_now")
    warned = check()
    assert not warned.passed and warned.severity == AssetCheckSeverity.WARN
    assert LARGE in warned.description
    assert _applied(counts, "box") == 0  # a dry run: nothing applied, nothing recorded
    assert _record("single", "box")["policy"]["deny"]


def test_values_a_plan_marks_sensitive_are_masked_in_messages() -> None:
    """A policy message may quote anything in the plan: the values tofu marks sensitive
    (before and after a change, in the prior state, sensitive outputs) are secrets too."""
    from infrakitchen_dagster.runtime.policy import plan_secrets

    document = {
        "resource_changes": [{"change": {
            "before": {"id": "1", "password": "old-pw-1"},
            "before_sensitive": {"password": True},
            "after": {"tokens": ["tok-a", "public"]},
            "after_sensitive": {"tokens": [True, False]}}}],
        "prior_state": {"values": {"root_module": {"child_modules": [{"resources": [
            {"values": {"result": "rand-pw-2"}, "sensitive_values": {"result": True}}]}]}}},
        "planned_values": {"outputs": {"dsn": {"sensitive": True, "value": "pg://x:y@h"},
                                       "host": {"sensitive": False, "value": "h"}}},
    }
    assert plan_secrets(document) == {"old-pw-1", "tok-a", "rand-pw-2", "pg://x:y@h"}
