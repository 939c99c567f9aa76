"""The dry run (`ik plan`, the `<p>__plan` job) and integration credentials from the
environment, with real Terraform and the run's own event log as the evidence."""

from __future__ import annotations

import json

import pytest
from dagster import AssetKey, DagsterEventType, DagsterInstance

from .conftest import FIXTURES, IkEnv, ik_in_process, write_pipeline

STEP = FIXTURES / "modules" / "step"
SQLITE_ONLY = pytest.mark.parametrize("store_env", ["sqlite"], indirect=True)


def _observations(pipeline: str, task: str) -> list[dict]:
    instance = DagsterInstance.get()
    records = instance.fetch_observations(AssetKey([pipeline, task]), limit=100).records
    return [{k: v.value for k, v in r.asset_observation.metadata.items()}
            for r in records if r.asset_observation is not None]


@SQLITE_ONLY
def test_plan_changes_nothing_and_reports_per_resource(store_env: IkEnv) -> None:
    write_pipeline(store_env.pipelines, "dry", f"""
name = "dry"
[vars]
VALUE = "one"
[tasks.a]
module = "{STEP}"
variables = {{ name = "a", value = "{{{{.VALUE}}}}" }}
[tasks.b]
module = "{STEP}"
depends_on = ["a"]
variables = {{ name = "b", value = "{{{{.a.value}}}}" }}
""")
    ik_in_process("plan", "dry")
    [a_plan] = _observations("dry", "a")
    assert a_plan["operation"] == "plan" and a_plan["plan"] == "+1 ~0 -0"
    assert "| `null_resource.this` | create |" in a_plan["changes"]  # what the UI shows
    [b_plan] = _observations("dry", "b")
    assert b_plan["plan"].startswith("not planned: upstream outputs unknown")
    assert json.loads(ik_in_process("resources", "--json").stdout) == []
    state = store_env.home / "work" / "dry" / "default" / "a" / "terraform.tfstate"
    assert not state.exists() or json.loads(state.read_text())["resources"] == []

    ik_in_process("run", "dry")
    ik_in_process("plan", "dry", "--var", "VALUE=two")
    latest = _observations("dry", "a")[0]  # newest first
    assert latest["plan"] == "+1 ~0 -1"  # replaced
    assert "| `null_resource.this` | replace |" in latest["changes"]
    record = json.loads(ik_in_process("inspect", "dry/a", "--json").stdout)
    assert (record["revision"], record["outputs"]["value"]) == (1, "one")


@SQLITE_ONLY
def test_integration_credentials_come_from_the_environment_and_stay_masked(
        store_env: IkEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    write_pipeline(store_env.pipelines, "creds", """
name = "creds"
[integrations.cloud]
env = { CLOUD_TOKEN = { from_env = "IK_TEST_CLOUD_TOKEN" }, CLOUD_REGION = "eu-west-1" }
[tasks.whoami]
integrations = ["cloud"]
cmd = 'echo "region=$CLOUD_REGION length=${#CLOUD_TOKEN} token=$CLOUD_TOKEN"'
""")
    missing = ik_in_process("run", "creds", check=False)
    assert missing.returncode == 1
    monkeypatch.setenv("IK_TEST_CLOUD_TOKEN", "tok-Very-Secret-77")
    result = ik_in_process("run", "creds", "--print-output")
    instance = DagsterInstance.get()
    [succeeded, failed] = instance.get_runs()  # newest first
    failure = repr(instance.all_logs(failed.run_id, of_type=DagsterEventType.STEP_FAILURE))
    assert "environment variable 'IK_TEST_CLOUD_TOKEN' (for CLOUD_TOKEN) is not set" in failure
    lines = [e.user_message for e in instance.all_logs(succeeded.run_id)]
    assert any("region=eu-west-1 length=18 token=***" in line for line in lines)
    everything = "\n".join(lines) + result.stdout + result.stderr
    assert "tok-Very-Secret-77" not in everything
    step_output = [e for e in instance.all_logs(succeeded.run_id,
                                                of_type=DagsterEventType.ASSET_MATERIALIZATION)]
    assert step_output and "tok-Very-Secret-77" not in repr(step_output)
