"""The pipeline-wide `on_failure` (SPEC 3.4): once per failed run, decided from its events.

It fires when a task without an `on_failure` of its own failed, or when the run died
without any step failing (crash, termination). The same function serves the run-failure
sensor (under the daemon) and `ik run` (which handles its own runs at once); a mark in the
store makes sure only the first of them acts.
"""

from __future__ import annotations

from dataclasses import dataclass

from dagster import DagsterEventType, DagsterInstance, DagsterRun

from .graph import PipelineGraph
from .runtime.healing import heal, record_working_dir
from .store import LifecycleStore, Status
from .tofu import TofuSettings

PIPELINE_TAG = "infrakitchen/pipeline"
#: set on a step failure that refused to act (assets.py)
REFUSED = "infrakitchen/refused"
#: on a batched step's failure: [{"task", "message", "refused"}] (batch.py)
FAILED_TASKS = "infrakitchen/failed_tasks"


@dataclass(frozen=True)
class FailureVerdict:
    fire: bool
    failed_task: str
    error_message: str
    reason: str


def judge_failed_run(instance: DagsterInstance, run: DagsterRun, graph: PipelineGraph
                     ) -> FailureVerdict:
    """Whether the global teardown applies to this failed run, and for which task."""
    by_op = {f"{graph.pipeline.job_prefix}__{n.op_name}": n for n in graph.nodes.values()}
    failures = instance.all_logs(run.run_id, of_type=DagsterEventType.STEP_FAILURE)
    failed: list[tuple[str, str]] = []
    refused: list[str] = []
    for record in failures:
        event = record.dagster_event
        data = event.step_failure_data if event is not None else None
        metadata = (data.user_failure_data.metadata or {}) if (
            data is not None and data.user_failure_data is not None) else {}
        if FAILED_TASKS in metadata:  # a batched step: every failed task, named
            for item in metadata[FAILED_TASKS].value:
                if item.get("refused"):
                    refused.append(item["task"])
                else:
                    failed.append((item["task"], item.get("message", "")))
            continue
        node = by_op.get(record.step_key or "")
        if node is None:
            continue
        if REFUSED in metadata:
            refused.append(node.name)  # nothing was applied: nothing to tear down
            continue
        message = data.error.message.strip() if data is not None and data.error else ""
        failed.append((node.name, message))
    if not failed and refused:
        return FailureVerdict(False, refused[0], "", "the run was refused (role or state), "
                              "nothing was applied")
    if not failed:
        return FailureVerdict(True, "", "run failed without a task failure (crashed or "
                              "terminated)", "crashed")
    for name, message in failed:
        if not graph.nodes[name].task.on_failure:
            return FailureVerdict(True, name, message, "task without its own on_failure")
    return FailureVerdict(False, failed[0][0], failed[0][1],
                          "every failed task had its own on_failure")


def mark_crashed_resources(store: LifecycleStore, run: DagsterRun, graph: PipelineGraph,
                           actor: str, tofu: TofuSettings) -> list[str]:
    """Records a dead run left `in_progress` become `error` (with the run id audited).

    `tofu` is the configured resource, so its working directories are the ones cleaned.
    """
    marked = []
    for record in store.records(graph.pipeline.name):
        if record.status == Status.IN_PROGRESS and record.last_run_id == run.run_id:
            heal(store, record, record_working_dir(tofu, record, graph), actor=actor,
                 run_id=run.run_id)
            marked.append(record.task)
    return marked


def report_dead_run(instance: DagsterInstance, run_id: str, reason: str) -> None:
    """Mark a Dagster run whose process died as failed, so history, the run-failure sensor
    and the run queue see it ended (it would otherwise stay STARTED for good)."""
    run = instance.get_run_by_id(run_id)
    if run is not None and not run.is_finished:
        # a public DagsterInstance method, the documented way to end a run from outside
        instance.report_run_failed(run, message=f"infrakitchen: {reason}")


def teardown_ops_config(graph: PipelineGraph, failed_run_id: str, environment: str,
                        failed_task: str, error_message: str) -> dict:
    """Run config `ops` of the `<p>__teardown` job for one failed run."""
    return {f"{graph.pipeline.job_prefix}__global_teardown": {"config": {
        "environment": environment, "failed_run_id": failed_run_id,
        "failed_task": failed_task, "error_message": error_message[-2000:]}}}
