"""Rules the runtime enforces before any tofu runs: dependency inheritance (SPEC 3.3),
required, frozen and unique variables, abstract tasks. Checked on what the runtime
computes and records, without an apply, so each rule is one fast assertion."""

from __future__ import annotations

from pathlib import Path

import pytest

from infrakitchen_dagster.graph import load_graph
from infrakitchen_dagster.runtime import Resolver, TaskFailure, TaskRuntime
from infrakitchen_dagster.store import LifecycleStore, State
from infrakitchen_dagster.store.lifecycle import Action
from infrakitchen_dagster.tofu import TofuSettings

from .conftest import FIXTURES, write_pipeline

STEP = FIXTURES / "modules" / "step"


def _runtime(tmp_path: Path, text: str) -> TaskRuntime:
    graph = load_graph(write_pipeline(tmp_path / "pipelines", "family", text))
    store = LifecycleStore(f"sqlite:///{tmp_path}/store.db")
    return TaskRuntime(graph=graph, environment="default", store=store, tofu=TofuSettings())


FAMILY = f"""
name = "family"
[tasks.grandparent]
module = "{STEP}"
variables = {{ name = "gp" }}
dependency_tags = [{{ name = "cost_center", value = "42", inherited_by_children = true }},
                   {{ name = "private", value = "x", inherited_by_children = false }}]
dependency_configs = [{{ name = "region", value = "us-east-1", inherited_by_children = true }},
                      {{ name = "value", value = "from-gp", inherited_by_children = true }}]
[tasks.other]
module = "{STEP}"
variables = {{ name = "other" }}
dependency_tags = [{{ name = "team", value = "web", inherited_by_children = true }}]
[tasks.parent]
module = "{STEP}"
depends_on = ["grandparent", "other"]
variables = {{ name = "parent" }}
dependency_configs = [{{ name = "region", value = "eu-west-1", inherited_by_children = true }}]
[tasks.child]
module = "{STEP}"
depends_on = ["parent"]
variables = {{ name = "child", value = "own" }}
"""


def _tfvars(runtime: TaskRuntime, task: str) -> dict:
    node = runtime.graph.nodes[task]
    return Resolver(runtime).resolve(node).variables


def test_grandchild_gets_the_union_of_inherited_tags(tmp_path: Path) -> None:
    values = _tfvars(_runtime(tmp_path, FAMILY), "child")
    assert values["tags"] == {"cost_center": "42", "team": "web"}  # not the private one


def test_nearer_ancestor_config_wins_and_the_task_own_value_wins_over_all(
        tmp_path: Path) -> None:
    values = _tfvars(_runtime(tmp_path, FAMILY), "child")
    assert values["region"] == "eu-west-1"  # parent's config over grandparent's
    assert values["value"] == "own"  # the task's own variable over the inherited config
    assert _tfvars(_runtime(tmp_path, FAMILY), "parent")["value"] == "from-gp"


def test_missing_required_variable_is_refused_before_tofu(tmp_path: Path) -> None:
    runtime = _runtime(tmp_path, f"""
name = "family"
[tasks.orphan]
module = "{STEP}"
""")
    with pytest.raises(TaskFailure, match="requires variables that are not set: name"):
        runtime.provision(runtime.graph.nodes["orphan"])
    assert not (runtime.tofu.working_dir("family", "default", "orphan")).exists()


def _provisioned(runtime: TaskRuntime, task: str, variables: dict):
    """Put `task`'s record in provisioned/done with `variables` (set-up, not the subject)."""
    store = runtime.store
    record = store.create("family", task, "default", kind="resource", module="m",
                          parents=[], actor="alice")
    for action in (Action.PROVISION_START, Action.PROVISION_SUCCESS):
        record = store.transition(record, action, actor="alice", variables=variables)
    return record


def test_frozen_variable_refuses_the_update_before_tofu(tmp_path: Path) -> None:
    runtime = _runtime(tmp_path, f"""
name = "family"
[tasks.db]
module = "{STEP}"
variables = {{ name = "db", region = "eu-west-1" }}
frozen = ["region"]
""")
    before = _provisioned(runtime, "db", {"name": "db", "region": "us-east-1"})
    with pytest.raises(TaskFailure, match=r"'region' is frozen.*'us-east-1' -> 'eu-west-1'"):
        runtime.provision(runtime.graph.nodes["db"])
    after = runtime.store.get("family", "db", "default")
    assert (after.state, after.revision, after.variables) == (
        State.PROVISIONED, before.revision, before.variables)
    assert not runtime.tofu.working_dir("family", "default", "db").exists()


def test_unique_variable_must_differ_across_resources_of_a_module(tmp_path: Path) -> None:
    runtime = _runtime(tmp_path, f"""
name = "family"
[tasks.one]
module = "{STEP}"
variables = {{ name = "same" }}
unique = ["name"]
[tasks.two]
module = "{STEP}"
variables = {{ name = "same" }}
unique = ["name"]
""")
    other = _provisioned(runtime, "one", {"name": "same"})
    with runtime.store.session() as session:  # same module as `two`
        from infrakitchen_dagster.store.models import ResourceRecord

        session.get(ResourceRecord, other.id).module = str(STEP)
    with pytest.raises(TaskFailure, match=r"'name' must be unique.*family/one"):
        runtime.provision(runtime.graph.nodes["two"])


def test_abstract_task_records_without_running_tofu(tmp_path: Path) -> None:
    runtime = _runtime(tmp_path, """
name = "family"
[tasks.team]
abstract = true
variables = { owner = "platform" }
""")
    outcome = runtime.provision(runtime.graph.nodes["team"])
    record = outcome.record
    assert (record.state, record.status, record.variables) == (
        "provisioned", "done", {"owner": "platform"})
    assert not runtime.tofu.working_dir("family", "default", "team").exists()
    destroyed = runtime.destroy("team", requested=True).record
    assert destroyed.state == "destroyed"


def test_a_variable_carrying_a_sensitive_upstream_output_is_sensitive(tmp_path: Path) -> None:
    runtime = _runtime(tmp_path, f"""
name = "family"
[tasks.db]
module = "{STEP}"
variables = {{ name = "db" }}
[tasks.app]
module = "{STEP}"
depends_on = ["db"]
variables = {{ name = "app", value = "postgres://u:{{{{.db.secret}}}}@db" }}
""")
    db = _provisioned(runtime, "db", {"name": "db"})
    runtime.store.transition(db, Action.UPDATE_START, actor="alice")
    runtime.store.transition(runtime.store.get("family", "db", "default"),
                             Action.UPDATE_SUCCESS, actor="alice",
                             outputs={"secret": "pw-Hidden-42"}, sensitive_outputs=["secret"])
    resolved = Resolver(runtime).resolve(runtime.graph.nodes["app"])
    assert resolved.variables["value"] == "postgres://u:pw-Hidden-42@db"
    assert "value" in resolved.sensitive
    assert "pw-Hidden-42" in resolved.secrets
