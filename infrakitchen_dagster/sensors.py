"""Sensors: approved requests become runs; failed runs get their teardown and records.

`infrakitchen_approvals` reads decisions past its cursor (never every request), claims
each approved one in the store (approved -> launched, so two sensors racing on one
database launch it once) and asks for one run per request with run key = request id.
`infrakitchen_run_failures` marks what a dead run left `in_progress` as `error`, fails the
approval request it carried and requests the global teardown.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from dagster import (
    AssetKey,
    DefaultSensorStatus,
    RunFailureSensorContext,
    RunRequest,
    RunsFilter,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    run_failure_sensor,
    sensor,
)

from .approvals import REQUEST_TAG, ApprovalRequest, Approvals, RequestStatus
from .failures import (
    PIPELINE_TAG,
    judge_failed_run,
    mark_crashed_resources,
    report_dead_run,
    teardown_ops_config,
)
from .graph import PipelineGraph
from .resources import InfraKitchenResource, TofuResource, run_config_vars
from .runtime.healing import heal, record_working_dir
from .store import LifecycleStore
from .store.leases import Leases

RUN_FAILURE_SENSOR = "infrakitchen_run_failures"
HEALING_SENSOR = "infrakitchen_healing"
APPROVALS_SENSOR = "infrakitchen_approvals"
#: an approved request not launched, or launched without a run, this long is looked at again
STRANDED_AFTER_SECONDS = 120


def approval_run_request(graph: PipelineGraph, request: ApprovalRequest,
                         key: AssetKey) -> RunRequest:
    """The run that applies one approved request: its job, asset or task, partition."""
    prefix = graph.pipeline.job_prefix
    tags = {REQUEST_TAG: str(request.id), PIPELINE_TAG: graph.pipeline.name,
            "infrakitchen/user": request.requested_by,
            "infrakitchen/approved_by": request.decided_by or ""}
    partition = request.environment if graph.pipeline.environments else None
    # the request's runtime vars, so that the run resolves the very values it planned with
    config = run_config_vars(request.runtime_vars)  # a reference: no value in run config
    if request.operation == "destroy":
        return RunRequest(
            run_key=str(request.id), job_name=f"{prefix}__destroy", partition_key=partition,
            run_config={"resources": {"infrakitchen": {"config": {
                **config, "tasks": [request.task]}}}},
            tags=tags)
    return RunRequest(run_key=str(request.id), job_name=f"{prefix}__provision",
                      asset_selection=[key], partition_key=partition, tags=tags,
                      run_config={"resources": {"infrakitchen": {"config": config}}})


def build_approvals_sensor(graphs: Mapping[str, PipelineGraph],
                           keys: Mapping[tuple[str, str], AssetKey], jobs: list
                           ) -> SensorDefinition:
    """One run per approved request, launched once; cursor = last decision seen."""

    @sensor(name=APPROVALS_SENSOR, jobs=jobs, default_status=DefaultSensorStatus.RUNNING,
            minimum_interval_seconds=5,
            description="Launches the run that applies each approved request, once")
    def _sensor(context: SensorEvaluationContext) -> SensorResult:
        cursor = int(context.cursor or 0)
        approvals = Approvals(LifecycleStore())
        requests: list[RunRequest] = []
        skipped: list[str] = []

        def launch(request: ApprovalRequest, claim: bool, note: str) -> None:
            """Request the run of `request` if its target still exists and, when `claim`,
            this sensor wins it (approved -> launched)."""
            graph = graphs.get(request.pipeline)
            if graph is None or request.task not in graph.nodes:
                skipped.append(f"request {request.id}: pipeline or task no longer defined")
                return
            if graph.pipeline.environments and request.environment not in (
                    graph.pipeline.environments):
                skipped.append(f"request {request.id}: environment {request.environment!r} "
                               "no longer defined")
                return
            if claim and not approvals.claim_for_launch(request.id):
                return  # another sensor won the race
            requests.append(approval_run_request(
                graph, request, keys[(request.pipeline, request.task)]))
            context.log.info(f"launching request {request.id}{note}: {request.operation} of "
                             f"{request.pipeline}/{request.task} ({request.environment})")

        for request in approvals.stranded(STRANDED_AFTER_SECONDS):
            if request.status == RequestStatus.LAUNCHED and context.instance.get_runs(
                    filters=RunsFilter(tags={REQUEST_TAG: str(request.id)}), limit=1):
                continue  # its run exists (queued, or failed before applying)
            launch(request, claim=request.status == RequestStatus.APPROVED,
                   note=" again (its run never started)")
        for request in approvals.decided_after(cursor):
            cursor = max(cursor, request.decision_seq or 0)
            if request.status == RequestStatus.APPROVED:  # not rejected, not launched yet
                launch(request, claim=True, note="")
        return SensorResult(
            run_requests=requests, cursor=str(cursor),
            skip_reason=None if requests else SkipReason(
                "; ".join(skipped) or "no newly approved requests"))

    return _sensor


def teardown_run_request(graph: PipelineGraph, run_id: str, environment: str,
                         failed_task: str, error_message: str) -> RunRequest:
    prefix = graph.pipeline.job_prefix
    return RunRequest(
        run_key=f"teardown-{run_id}",
        job_name=f"{prefix}__teardown",
        run_config={"ops": teardown_ops_config(graph, run_id, environment, failed_task,
                                               error_message)},
        tags={PIPELINE_TAG: graph.pipeline.name, "infrakitchen/failed_run": run_id},
    )


def build_run_failure_sensor(graphs: Mapping[str, PipelineGraph], jobs: list
                             ) -> SensorDefinition:
    """Marks resources of dead runs `error` and requests the global teardown job."""

    @run_failure_sensor(name=RUN_FAILURE_SENSOR, monitor_all_code_locations=False,
                        request_jobs=jobs, default_status=DefaultSensorStatus.RUNNING,
                        minimum_interval_seconds=10)
    def _sensor(context: RunFailureSensorContext, tofu: TofuResource,
                infrakitchen: InfraKitchenResource):
        run = context.dagster_run
        graph = graphs.get(run.tags.get(PIPELINE_TAG) or "")
        job = run.tags.get("infrakitchen/job")
        if graph is None or job not in ("provision", "destroy", None):
            return SkipReason(f"run {run.run_id} is not a provision or destroy run of a "
                              "known pipeline")
        store = infrakitchen.store()
        marked = mark_crashed_resources(store, run, graph, "run-failure-sensor", tofu)
        if marked:
            context.log.info(f"marked error after run {run.run_id} died: {', '.join(marked)}")
        fail_launched_request(store, run.tags.get(REQUEST_TAG), run.run_id)
        if job == "destroy" or not graph.pipeline.on_failure:
            return SkipReason("no global on_failure applies to this run")
        verdict = judge_failed_run(context.instance, run, graph)
        if not verdict.fire:
            return SkipReason(verdict.reason)
        if not store.claim_teardown(run.run_id, graph.pipeline.name, "sensor"):
            return SkipReason(f"global teardown of run {run.run_id} already handled")
        environment = run.tags.get("dagster/partition", "default")
        return teardown_run_request(graph, run.run_id, environment, verdict.failed_task,
                                    verdict.error_message)

    return _sensor


def build_healing_sensor(graphs: Mapping[str, PipelineGraph]) -> SensorDefinition:
    """Heals records whose lease holder died (killed `ik run`, lost worker or machine).

    Marks them `error`, stops what the dead process left running, releases its stale state
    lock and marks its Dagster run failed; the run-failure sensor then applies SPEC 3.4
    (the request it carried fails, the global teardown runs where it must).
    """

    @sensor(name=HEALING_SENSOR, minimum_interval_seconds=15,
            default_status=DefaultSensorStatus.RUNNING,
            description="Marks records left in progress by dead runs as error, without a "
                        "person")
    def _sensor(context: SensorEvaluationContext, tofu: TofuResource,
                infrakitchen: InfraKitchenResource) -> SkipReason:
        store = infrakitchen.store()
        healed = []
        for record in Leases(store).abandoned():
            graph = graphs.get(record.pipeline)
            if graph is None:
                continue
            heal(store, record, record_working_dir(tofu, record, graph),
                 actor=HEALING_SENSOR, run_id=None,
                 report_dead_run=lambda run_id, reason: report_dead_run(
                     context.instance, run_id, reason))
            healed.append(f"{record.pipeline}/{record.task} ({record.environment})")
        if healed:
            context.log.info(f"healed records of dead runs: {', '.join(healed)}")
        return SkipReason(f"healed {len(healed)} record(s)" if healed
                          else "no record held by a dead run")

    return _sensor


def build_file_watch_sensors(graph: PipelineGraph, provision_job) -> list[SensorDefinition]:
    """wf `file_watch` triggers: provision when a watched file changes.

    The first tick only records what is there (deploying the sensor must not apply
    anything); from then on, a newer modification time among the matching files launches
    the provision job once per environment, with the change time as run key.
    """
    sensors = []
    environments = list(graph.pipeline.environments)
    watches = [t for t in graph.pipeline.triggers if t.type == "file_watch" and t.path]
    for index, trigger in enumerate(watches):
        base = Path(trigger.path or "").expanduser()
        base = base if base.is_absolute() else graph.pipeline.source_dir / base
        pattern = trigger.pattern or "*"

        @sensor(name=f"{graph.pipeline.job_prefix}__file_watch_{index}", job=provision_job,
                minimum_interval_seconds=max(5, int(trigger.interval or 30)),
                default_status=DefaultSensorStatus.RUNNING,
                description=f"wf file_watch trigger on {base} ({pattern})")
        def _watch(context: SensorEvaluationContext, base: Path = base,
                   pattern: str = pattern) -> SensorResult:
            newest = _newest_change(base, pattern)
            seen = int(context.cursor) if context.cursor else None
            if seen is None or newest <= seen:
                return SensorResult(cursor=str(max(newest, seen or 0)), skip_reason=SkipReason(
                    "first look: recorded the current files" if seen is None
                    else "no file changed"))
            # no user tag: the run acts as the code location's identity (grant it write)
            tags = {"infrakitchen/trigger": f"file_watch {base}"}
            requests = ([RunRequest(run_key=str(newest), tags=tags)] if not environments else
                        [RunRequest(run_key=f"{newest}-{env}", partition_key=env, tags=tags)
                         for env in environments])
            return SensorResult(run_requests=requests, cursor=str(newest))

        sensors.append(_watch)
    return sensors


def _newest_change(base: Path, pattern: str) -> int:
    """Latest modification time (ns) of the watched files; 0 when there are none."""
    if base.is_file():
        return base.stat().st_mtime_ns
    if not base.is_dir():
        return 0
    return max((f.stat().st_mtime_ns for f in base.rglob(pattern) if f.is_file()), default=0)


def fail_launched_request(store: LifecycleStore, request_id: str | None, run_id: str) -> None:
    """A run launched for a request died before the asset could say how it went."""
    if not request_id:
        return
    approvals = Approvals(store)
    request = approvals.get(int(request_id))
    if request is not None and request.status == RequestStatus.LAUNCHED:
        approvals.mark(request.id, RequestStatus.FAILED, actor="run-failure-sensor",
                       run_id=run_id, reason=f"run {run_id} failed")
