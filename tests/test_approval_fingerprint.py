"""An approval covers everything that shapes the apply: change any of it after approval
(task `env`, an integration's values, backend config values, a variable) and the
approved request goes stale, a new one is filed and nothing is applied."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from infrakitchen_dagster.graph import load_graph
from infrakitchen_dagster.runtime import Resolver, TaskRuntime
from infrakitchen_dagster.store import LifecycleStore
from infrakitchen_dagster.tofu import TofuSettings

from .conftest import FIXTURES, IkEnv, ik_in_process, write_pipeline

STEP_MODULE = FIXTURES / "modules" / "step"
OWNER = "olive"


def _ik(*args: str, as_: str = OWNER) -> str:
    return ik_in_process(*args, "--as", as_).stdout


def _requests() -> list[dict]:
    return json.loads(_ik("approvals", "--json"))


@pytest.mark.parametrize("changed", ["TARGET", "ACCOUNT", "VALUE"])
def test_a_change_after_approval_files_a_new_request(store_env: IkEnv, tmp_path: Path,
                                                    changed: str) -> None:
    counts = tmp_path / "applies"
    write_pipeline(store_env.pipelines, "bound", f"""
name = "bound"
approval = true
owners = ["{OWNER}"]
[vars]
TARGET = "staging"
ACCOUNT = "111111111111"
VALUE = "v1"
[integrations.cloud]
env = {{ CLOUD_ACCOUNT = "{{{{.ACCOUNT}}}}" }}
[tasks.net]
module = "{STEP_MODULE}"
integrations = ["cloud"]
env = {{ TARGET = "{{{{.TARGET}}}}" }}
variables = {{ name = "net", value = "{{{{.VALUE}}}}", count_file = "{counts}" }}
""")
    _ik("grant", "rita", "write", "--pipeline", "bound")  # rita asks, olive approves
    _ik("run", "bound", as_="rita")
    [first] = _requests()
    assert first["status"] == "pending"
    _ik("approve", str(first["id"]))

    other = {"TARGET": "production", "ACCOUNT": "999999999999", "VALUE": "v2"}[changed]
    _ik("run", "bound", "--var", f"{changed}={other}", as_="rita")
    by_id = {r["id"]: r for r in _requests()}
    assert by_id[first["id"]]["status"] == "stale"
    [second] = [r for r in by_id.values() if r["id"] != first["id"]]
    assert second["status"] == "pending"
    assert second["fingerprint"] != first["fingerprint"]
    assert not counts.exists(), "the approved plan was applied with other values"
    record = json.loads(_ik("inspect", "bound/net", "--json"))
    assert (record["state"], record["status"]) == ("provision", "approval_pending")


def test_fingerprint_covers_backend_values_tofu_and_environment(store_env: IkEnv) -> None:
    """Inputs a run cannot change from the command line without a new pipeline file or
    machine: each one still changes the fingerprint (and so stales an approval)."""
    path = write_pipeline(store_env.pipelines, "fp", f"""
name = "fp"
[vars]
STATE_FILE = "one.tfstate"
[environments.staging]
[environments.production]
[backend]
type = "local"
config = {{ path = "{{{{.STATE_FILE}}}}" }}
[tasks.net]
module = "{STEP_MODULE}"
variables = {{ name = "net" }}
""")
    graph = load_graph(path)
    node = graph.nodes["net"]

    def fingerprint(environment: str = "staging", tofu: TofuSettings | None = None,
                    **runtime_vars: str) -> str:
        runtime = TaskRuntime(graph=graph, environment=environment, store=LifecycleStore(),
                              tofu=tofu or TofuSettings(), runtime_vars=runtime_vars)
        return Resolver(runtime).resolve(node).fingerprint

    base = fingerprint()
    assert fingerprint() == base  # stable
    assert fingerprint(STATE_FILE="two.tfstate") != base  # a backend config value
    assert fingerprint("production") != base  # the environment / partition
    renamed = store_env.home / "tofu"  # another binary (same version, another name)
    renamed.symlink_to(store_env.env["INFRAKITCHEN_TOFU"])
    assert fingerprint(tofu=TofuSettings(binary=str(renamed))) != base
