"""Cost independent of the estate (issue 8): what a run loads is its own pipeline's one
job; plan and destroy jobs are wired by direct edges only (linear in the tasks), and
still destroy children first; long chains load without recursion or quadratic work.

Speed itself is measured by bench/bench.py, not asserted here.
"""

from __future__ import annotations

import runpy
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from dagster import DagsterInstance

from infrakitchen_dagster import build_definitions
from infrakitchen_dagster.assets import split_job_name
from infrakitchen_dagster.definitions import (
    build_job,
    declared_name,
    load_job_for_run,
    pipeline_file_for,
    write_workspace,
)
from infrakitchen_dagster.graph import load_graph
from infrakitchen_dagster.store import LifecycleStore

from .conftest import FIXTURES, IkEnv, ik_in_process, write_pipeline

STEP_MODULE = FIXTURES / "modules" / "step"


def chain(name: str, n: int, middle_command: bool = False) -> str:
    """`n` resources r0 <- r1 <- ...; with `middle_command`, r1 waits for a command `c`
    that waits for r0 (the plan/destroy edges must look through it)."""
    lines = [f'name = "{name}"']
    for i in range(n):
        dep = f"r{i - 1}"
        if middle_command and i == 1:
            lines.append('[tasks.c]\ncmd = "true"\ndepends_on = ["r0"]')
            dep = "c"
        after = f'depends_on = ["{dep}"]\n' if i else ""
        lines.append(f'[tasks.r{i}]\nmodule = "{STEP_MODULE}"\n{after}'
                     f'variables = {{ name = "r{i}" }}')
    return "\n".join(lines) + "\n"


def edges(job) -> dict[str, list[str]]:
    """op name -> the ops it waits for, from the job's public dependency structure."""
    result: dict[str, list[str]] = {}
    for invocation, inputs in job.graph.dependencies.items():
        result[invocation.alias or invocation.name] = sorted(d.node for d in inputs.values())
    return result


# -- plan and destroy jobs: direct edges ---------------------------------------------------


@pytest.mark.parametrize("kind", ["plan", "destroy"])
def test_chain_jobs_have_one_edge_per_link(tmp_path: Path, kind: str) -> None:
    write_pipeline(tmp_path, "long", chain("long", 60))
    job = build_job(tmp_path, f"long__{kind}")
    wired = edges(job)
    assert sum(len(v) for v in wired.values()) == 59  # not 60*59/2
    assert len(job.graph.node_dict) == 60
    if kind == "plan":
        assert wired["long__plan__r5"] == ["long__plan__r4"]
    else:  # children first: a parent's destroy waits for its child's
        assert wired["long__destroy__r4"] == ["long__destroy__r5"]
        assert wired["long__destroy__r59"] == []  # the last child goes first


def test_edges_look_through_tasks_outside_the_job(tmp_path: Path) -> None:
    write_pipeline(tmp_path, "via", chain("via", 3, middle_command=True))
    assert edges(build_job(tmp_path, "via__plan"))["via__plan__r1"] == ["via__plan__r0"]
    assert edges(build_job(tmp_path, "via__destroy"))["via__destroy__r0"] == [
        "via__destroy__r1"]


def test_a_thousand_resource_chain_loads(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("INFRAKITCHEN_EXECUTION", "per_step")  # the worst case: an op a task
    write_pipeline(tmp_path, "big", chain("big", 1000))
    graph = load_graph(tmp_path / "big.toml")
    assert graph.resource_parents("r999") == ["r998"]
    assert graph.resource_children("r0") == ["r1"]
    assert len(graph.ancestors("r999")) == 999
    for kind in ("plan", "destroy", "provision"):
        job = build_job(tmp_path, f"big__{kind}")
        assert len(job.graph.node_dict) == 1000
    assert sum(len(v) for v in edges(build_job(tmp_path, "big__plan")).values()) == 999


def test_very_long_chain_validates_without_recursion(tmp_path: Path) -> None:
    """Ordering, cycle detection and validation walk iteratively: deeper than Python's
    recursion limit."""
    n = sys.getrecursionlimit() + 500
    write_pipeline(tmp_path, "deep", "\n".join(
        ['name = "deep"'] + [f'[tasks.t{i}]\ncmd = "true"\n'
                             + (f'depends_on = ["t{i - 1}"]' if i else "")
                             for i in range(n)]))
    graph = load_graph(tmp_path / "deep.toml")
    assert graph.order[0] == "t0" and graph.order[-1] == f"t{n - 1}"
    assert graph.is_upstream("t0", f"t{n - 1}")
    assert not graph.is_upstream(f"t{n - 1}", "t0")
    cyclic = tmp_path / "cyclic"
    write_pipeline(cyclic, "loop", (tmp_path / "deep.toml").read_text().replace(
        '[tasks.t0]\ncmd = "true"\n', f'[tasks.t0]\ncmd = "true"\ndepends_on = ["t{n - 1}"]'))
    with pytest.raises(Exception, match="dependency cycle: t0 -> "):
        load_graph(cyclic / "loop.toml")


# -- loading what one run needs ------------------------------------------------------------


@contextmanager
def opened_files() -> Iterator[list[str]]:
    """Every file this process opens meanwhile (Python's audit hook `open` event)."""
    seen: list[str] = []
    active = [True]

    def hook(event: str, args: tuple) -> None:
        if active[0] and event == "open" and isinstance(args[0], str | Path):
            seen.append(str(args[0]))

    sys.addaudithook(hook)  # cannot be removed: `active` switches it off
    try:
        yield seen
    finally:
        active[0] = False


def test_a_run_loads_only_its_own_pipeline(tmp_path: Path) -> None:
    write_pipeline(tmp_path, "alpha", chain("alpha", 3))
    write_pipeline(tmp_path, "beta", chain("beta", 3))
    (tmp_path / "broken.toml").write_text("name = [unclosed\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build_definitions(tmp_path)  # the whole directory: the broken file is reported
    assert any("broken.toml" in str(w.message) for w in caught)

    with warnings.catch_warnings(record=True) as caught, opened_files() as seen:
        warnings.simplefilter("always")
        job = load_job_for_run(str(tmp_path), "alpha__provision")
    assert not [w for w in caught if "broken" in str(w.message)]
    assert not [f for f in seen if f.endswith(("beta.toml", "broken.toml"))]
    assert any(f.endswith("alpha.toml") for f in seen)
    assert {k.path[0] for k in job.asset_layer.asset_graph.get_all_asset_keys()} == {"alpha"}
    # a run of the other pipeline is unaffected by alpha or the broken file alike
    assert load_job_for_run(str(tmp_path), "beta__destroy").name == "beta__destroy"


def test_each_job_a_run_loads_is_the_one_the_location_shows(tmp_path: Path) -> None:
    """Built alone, every job kind has the same ops, edges and executor as in the whole
    definitions (a run's step processes reconstruct it that way)."""
    text = chain("full", 3, middle_command=True).replace(
        'name = "full"', 'name = "full"\non_failure = "clean"\ndrift_schedule = "0 * * * *"')
    write_pipeline(tmp_path, "full", text + '[tasks.clean]\ntype = "forensic"\ndestroy = "all"\n')
    whole = build_definitions(tmp_path)
    for kind in ("provision", "plan", "destroy", "drift_check", "teardown"):
        alone = load_job_for_run(str(tmp_path), f"full__{kind}")
        shown = whole.resolve_job_def(f"full__{kind}")
        assert edges(alone) == edges(shown), kind
        assert alone.executor_def.name == shown.executor_def.name, kind
        assert (alone.get_job_snapshot().snapshot_id
                == shown.get_job_snapshot().snapshot_id), kind


def test_job_file_found_by_declared_name(tmp_path: Path) -> None:
    """A file need not be named after its pipeline; only heads of files are read."""
    write_pipeline(tmp_path, "file-one", chain("my-net", 1))
    write_pipeline(tmp_path, "my_net", chain("other", 1))  # stem matches, name does not
    assert pipeline_file_for(tmp_path, "my_net") == tmp_path / "file-one.toml"
    assert declared_name(tmp_path / "my_net.toml") == "other"
    assert build_job(tmp_path, "my_net__plan").name == "my_net__plan"
    with pytest.raises(Exception, match="no pipeline with jobs nope__"):
        pipeline_file_for(tmp_path, "nope")


def test_job_names_are_split_explicitly() -> None:
    assert split_job_name("a__b__plan") == ("a__b", "plan")
    assert split_job_name("net__drift_check") == ("net", "drift_check")
    for bad in ("net", "net__apply", "__plan"):
        with pytest.raises(ValueError, match="is not an infrakitchen job name"):
            split_job_name(bad)


def test_workspace_has_one_location_per_pipeline(tmp_path: Path) -> None:
    pipelines = tmp_path / "pipelines"
    write_pipeline(pipelines, "alpha", chain("alpha", 2))
    write_pipeline(pipelines, "beta", chain("beta", 2))
    (pipelines / "broken.toml").write_text("name = [unclosed\n")
    workspace = write_workspace(pipelines, tmp_path / "ws")
    text = workspace.read_text()
    assert text.count("python_file:") == 3 and "location_name: alpha" in text
    defs = runpy.run_path(str(tmp_path / "ws" / "locations" / "alpha.py"))["defs"]
    assert defs.resolve_job_def("alpha__provision").name == "alpha__provision"
    with pytest.raises(Exception, match="beta__provision"):
        defs.resolve_job_def("beta__provision")
    with pytest.warns(UserWarning, match="broken.toml"):  # only its own location is broken
        runpy.run_path(str(tmp_path / "ws" / "locations" / "broken.py"))


# -- real destroys with direct edges ---------------------------------------------------------


@pytest.mark.parametrize("store_env", ["sqlite"], indirect=True)
def test_destroy_with_direct_edges_goes_children_first(store_env: IkEnv) -> None:
    """The runtime refuses a parent's destroy while a child is provisioned, so a wrong
    order fails the run; direct edges must keep it, through a command in between and
    beside a second child."""
    text = chain("order", 3, middle_command=True) + (
        f'[tasks.side]\nmodule = "{STEP_MODULE}"\ndepends_on = ["r0"]\n'
        'variables = { name = "side" }\n')
    write_pipeline(store_env.pipelines, "order", text)
    ik_in_process("run", "order")
    ik_in_process("destroy", "order")
    audit = LifecycleStore().audit_entries("order")  # in the order written
    done = [e["task"] for e in audit if e["action"] == "destroy_success"]
    assert sorted(done) == ["r0", "r1", "r2", "side"]
    assert done.index("r2") < done.index("r1") < done.index("r0")
    assert done.index("side") < done.index("r0")


@pytest.mark.parametrize("store_env", ["sqlite"], indirect=True)
def test_destroy_targets_come_from_the_run_task_list(store_env: IkEnv) -> None:
    """A destroy run acting on some tasks names them in the resource's `tasks`: the other
    ops pass, so the edges between the chosen ones stay intact."""
    write_pipeline(store_env.pipelines, "part", chain("part", 3))
    ik_in_process("run", "part")
    job = load_job_for_run(str(store_env.pipelines), "part__destroy")
    with DagsterInstance.get() as instance:
        result = job.execute_in_process(instance=instance, run_config={
            "resources": {"infrakitchen": {"config": {"tasks": ["r2", "r1"]}}}})
    assert result.success
    states = {t: store_env.inspect("part", t)["state"] for t in ("r0", "r1", "r2")}
    assert states == {"r0": "provisioned", "r1": "destroyed", "r2": "destroyed"}
