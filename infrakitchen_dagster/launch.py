"""Launching a pipeline's jobs from the command line on the current Dagster instance.

Runs go through `execute_job` with a reconstructable job, so they use the job's own
executor (parallel where the graph allows) and land in the instance like a UI launch.
"""

from __future__ import annotations

import fcntl
import os
import sys
import warnings
from dataclasses import dataclass
from typing import Any

from dagster import (
    AssetKey,
    BetaWarning,
    DagsterInstance,
    PreviewWarning,
    ReexecutionOptions,
    build_reconstructable_job,
    execute_job,
)

from . import settings
from .approvals import Approvals
from .errors import CliError
from .failures import judge_failed_run, mark_crashed_resources, teardown_ops_config
from .graph import PipelineGraph
from .resources import run_config_vars
from .runtime import TaskRuntime, dependency_payload
from .store import LifecycleStore
from .tofu import TofuSettings

# The `ik` commands that load Dagster come through here: Dagster's notes on its beta and
# preview APIs are for the authors of this package, not for someone running a pipeline.
warnings.filterwarnings("ignore", category=BetaWarning)
warnings.filterwarnings("ignore", category=PreviewWarning)


@dataclass
class LaunchResult:
    success: bool
    run_id: str


def instance() -> DagsterInstance:
    if not os.environ.get("DAGSTER_HOME"):
        home = settings.private_dir(settings.home() / "dagster")
        os.environ["DAGSTER_HOME"] = str(home)
        print(f"DAGSTER_HOME is not set; using {home}", file=sys.stderr)
    # Dagster's SQLite storage creates its tables on first use without a lock of its own:
    # two first commands at once on a new home would both create them ("table ... already
    # exists"). One at a time opens the instance; the lock is free once the tables exist.
    if not os.path.isdir(os.environ["DAGSTER_HOME"]):
        return DagsterInstance.get()  # Dagster says what is wrong with the setting
    lock_path = os.path.join(os.environ["DAGSTER_HOME"], ".infrakitchen-instance.lock")
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return DagsterInstance.get()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _job(job_name: str):
    return build_reconstructable_job(
        "infrakitchen_dagster.definitions", "load_job_for_run",
        reconstructable_kwargs={"pipelines_dir": str(settings.pipelines_dir().resolve()),
                                "job_name": job_name})


def _run_tags(graph: PipelineGraph, environment: str, actor: str) -> dict[str, str]:
    """Who launched the run and, for pipelines with environments, its partition."""
    tags = {"infrakitchen/user": actor}
    if graph.pipeline.environments:
        tags["dagster/partition"] = environment
    return tags


def _run_config(runtime_vars: dict[str, str], force: bool, verbose: bool,
                ops: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run config without a single runtime var value in it (it is stored and shown in
    plain text): the values go encrypted into the store, the config names them."""
    resource = {**run_config_vars(runtime_vars), "force": force}
    config: dict[str, Any] = {
        "resources": {"infrakitchen": {"config": resource}},
        "loggers": {"console": {"config": {"log_level": "DEBUG" if verbose else "INFO"}}},
    }
    if ops:
        config["ops"] = ops
    return config


def run_pipeline_job(graph: PipelineGraph, suffix: str, *, environment: str,
                     runtime_vars: dict[str, str], select: list[str], actor: str,
                     force: bool = False, print_output: bool = False,
                     from_failure: str | None = None) -> LaunchResult:
    prefix = graph.pipeline.job_prefix
    inst = instance()
    run_config = _run_config(runtime_vars, force, print_output)
    tags = _run_tags(graph, environment, actor)
    nodes = [n for item in select for n in graph.expand(item)]
    kwargs: dict[str, Any] = {}
    if nodes and suffix == "provision" and not from_failure:
        kwargs["asset_selection"] = [AssetKey([graph.pipeline.name, graph.nodes[n].asset_name])
                                     for n in nodes]
    elif from_failure:
        parent = inst.get_run_by_id(from_failure)
        if parent is None or parent.job_name != f"{prefix}__{suffix}":
            raise ValueError(f"run {from_failure} is not a run of {prefix}__{suffix}")
        kwargs = {"reexecution_options": ReexecutionOptions.from_failure(from_failure, inst)}
        run_config = parent.run_config
        tags.update({k: v for k, v in parent.tags.items() if k == "dagster/partition"})
    elif nodes:
        kwargs["op_selection"] = [f"{prefix}__{suffix}__{graph.nodes[n].op_name}" for n in nodes
                                  if graph.nodes[n].kind == "resource"]
    with execute_job(_job(f"{prefix}__{suffix}"), instance=inst,
                     run_config=run_config, tags=tags, **kwargs) as result:
        run = inst.get_run_by_id(result.run_id)
        success = result.success
    if not success and suffix == "provision" and run is not None:
        _handle_failure(graph, inst, run, environment, runtime_vars, actor)
    _print_summary(graph, environment, result.run_id, success)
    return LaunchResult(success, result.run_id)


def _handle_failure(graph: PipelineGraph, inst: DagsterInstance, run, environment: str,
                    runtime_vars: dict[str, str], actor: str) -> None:
    """SPEC 3.4: `ik run` runs the global teardown itself as soon as its run failed."""
    store = LifecycleStore()
    mark_crashed_resources(store, run, graph, actor, TofuSettings())
    teardown = graph.pipeline.on_failure
    if not teardown:
        return
    verdict = judge_failed_run(inst, run, graph)
    if not verdict.fire:
        print(f"global teardown not needed: {verdict.reason}", file=sys.stderr)
        return
    if not store.claim_teardown(run.run_id, graph.pipeline.name, "ik run"):
        return
    prefix = graph.pipeline.job_prefix
    print(f"run failed ({verdict.reason}: {verdict.failed_task or '-'}); running global "
          f"teardown {teardown!r}", file=sys.stderr)
    ops = teardown_ops_config(graph, run.run_id, environment, verdict.failed_task,
                              verdict.error_message)
    with execute_job(_job(f"{prefix}__teardown"), instance=inst,
                     run_config=_run_config(runtime_vars, False, False, ops),
                     tags={"infrakitchen/failed_run": run.run_id,
                           "infrakitchen/user": actor}) as result:
        if not result.success:
            print(f"global teardown run {result.run_id} failed", file=sys.stderr)


def _print_summary(graph: PipelineGraph, environment: str, run_id: str, success: bool) -> None:
    store = LifecycleStore()
    print(f"run {run_id}: {'success' if success else 'FAILED'}")
    for name in graph.order:
        if graph.nodes[name].kind not in ("resource", "abstract"):
            continue
        record = store.get(graph.pipeline.name, name, environment)
        if record is None:
            print(f"  {name:32} (not created)")
            continue
        waiting = [f"{r.operation} request {r.id} {r.status}"
                   for r in Approvals(store).open_for(record)]
        note = f"  ({'; '.join(waiting)})" if waiting else ""
        print(f"  {name:32} {record.state}/{record.status}  rev {record.revision}{note}")


def destroy_resources(graph: PipelineGraph, environment: str, task: str | None, *,
                      actor: str) -> dict[str, Any] | None:
    """Destroy one task's resource (refused while children exist) or all, children first.

    Returns the dependency error payload when refused, None when done.
    """
    if task is not None:
        runtime = TaskRuntime(graph=graph, environment=environment, store=LifecycleStore(),
                              tofu=TofuSettings(), actor=actor)
        blocking = [b for n in graph.expand(task) for b in runtime.blocking_children(n)]
        if blocking:
            store = runtime.store
            store.audit("destroy_refused", actor=actor, pipeline=graph.pipeline.name,
                        task=task, environment=environment,
                        details=dependency_payload(blocking))
            return dependency_payload(blocking)
    inst = instance()
    prefix = graph.pipeline.job_prefix
    tags = _run_tags(graph, environment, actor)
    run_config = _run_config({}, False, False)
    if task is not None:  # the run's task list, not op selection: children-first holds
        run_config["resources"]["infrakitchen"]["config"]["tasks"] = graph.expand(task)
    with execute_job(_job(f"{prefix}__destroy"), instance=inst, run_config=run_config,
                     tags=tags) as result:
        if not result.success:
            raise CliError(f"destroy run {result.run_id} failed; see `ik audit` and the run's "
                           "logs")
    store = LifecycleStore()
    for name in graph.order:
        record = store.get(graph.pipeline.name, name, environment)
        if record is not None and (task is None or name in graph.expand(task)):
            print(f"  {name:32} {record.state}/{record.status}")
    return None
