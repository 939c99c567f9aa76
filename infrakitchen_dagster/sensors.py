"""Sensors: the run-failure sensor that launches the global teardown of a failed run."""

from __future__ import annotations

from collections.abc import Mapping

from dagster import (
    DefaultSensorStatus,
    RunFailureSensorContext,
    RunRequest,
    SensorDefinition,
    SkipReason,
    run_failure_sensor,
)

from .failures import PIPELINE_TAG, judge_failed_run, mark_crashed_resources
from .graph import PipelineGraph
from .store import LifecycleStore

RUN_FAILURE_SENSOR = "infrakitchen_run_failures"


def teardown_run_request(graph: PipelineGraph, run_id: str, environment: str,
                         failed_task: str, error_message: str) -> RunRequest:
    prefix = graph.pipeline.job_prefix
    return RunRequest(
        run_key=f"teardown-{run_id}",
        job_name=f"{prefix}__teardown",
        run_config={"ops": {f"{prefix}__global_teardown": {"config": {
            "environment": environment, "failed_run_id": run_id,
            "failed_task": failed_task, "error_message": error_message[-2000:]}}}},
        tags={PIPELINE_TAG: graph.pipeline.name, "infrakitchen/failed_run": run_id},
    )


def build_run_failure_sensor(graphs: Mapping[str, PipelineGraph], jobs: list
                             ) -> SensorDefinition:
    """Marks resources of dead runs `error` and requests the global teardown job."""

    @run_failure_sensor(name=RUN_FAILURE_SENSOR, monitor_all_code_locations=False,
                        request_jobs=jobs, default_status=DefaultSensorStatus.RUNNING,
                        minimum_interval_seconds=10)
    def _sensor(context: RunFailureSensorContext):
        run = context.dagster_run
        pipeline = run.tags.get(PIPELINE_TAG)
        graph = graphs.get(pipeline or "")
        if graph is None or run.tags.get("infrakitchen/job") not in ("provision", None):
            return SkipReason(f"run {run.run_id} is not a provision run of a known pipeline")
        store = LifecycleStore()
        marked = mark_crashed_resources(store, run, graph.pipeline.name, "run-failure-sensor")
        if marked:
            context.log.info(f"marked error after run {run.run_id} died: {', '.join(marked)}")
        if not graph.pipeline.on_failure:
            return SkipReason("pipeline has no global on_failure")
        verdict = judge_failed_run(context.instance, run, graph)
        if not verdict.fire:
            return SkipReason(verdict.reason)
        if not store.claim_teardown(run.run_id, graph.pipeline.name, "sensor"):
            return SkipReason(f"global teardown of run {run.run_id} already handled")
        environment = run.tags.get("dagster/partition", "default")
        return teardown_run_request(graph, run.run_id, environment, verdict.failed_task,
                                    verdict.error_message)

    return _sensor
