"""A pipeline's Dagster definitions: one asset per task, its jobs, hooks and executor."""


import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetObservation,
    AssetsDefinition,
    AssetSelection,
    Config,
    DagsterRunStatus,
    DefaultScheduleStatus,
    ExecutorDefinition,
    Failure,
    GraphDefinition,
    HookContext,
    HookDefinition,
    In,
    JobDefinition,
    MaterializeResult,
    MetadataValue,
    Nothing,
    OpExecutionContext,
    Out,
    Output,
    RetryPolicy,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    StaticPartitionsDefinition,
    define_asset_job,
    failure_hook,
    in_process_executor,
    multi_asset,
    multiprocess_executor,
    op,
    schedule,
)
from dagster import DependencyDefinition as Dep

from .checks import build_drift_check, build_drift_job
from .failures import PIPELINE_TAG, REFUSED
from .graph import Node, PipelineGraph
from .interpolation import InterpolationError
from .process import ProcessTimeout
from .resources import InfraKitchenResource
from .runtime import Outcome, Refused, TaskFailure, TaskRuntime
from .sensors import build_file_watch_sensors
from .store import SENSITIVE, IllegalTransition, masked
from .tofu import TofuError, TofuResource
from .translator import InfraKitchenTranslator

#: the run queue limits concurrent applies per state backend with this tag (deploy/)
BACKEND_TAG = "infrakitchen/state-backend"
#: outcomes after which the asset is not materialised (its downstream is skipped)
NOT_MATERIALISED = ("skipped", "approval_pending", "rejected", "blocked")

_TERMINAL = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}


@dataclass
class PipelineDefinitions:
    graph: PipelineGraph
    assets: list[AssetsDefinition] = field(default_factory=list)
    jobs: list[Any] = field(default_factory=list)
    checks: list[Any] = field(default_factory=list)
    schedules: list[Any] = field(default_factory=list)
    sensors: list[Any] = field(default_factory=list)
    partitions: StaticPartitionsDefinition | None = None

    @property
    def provision_job_name(self) -> str:
        return f"{self.graph.pipeline.job_prefix}__provision"


def choose_executor(graph: PipelineGraph, preference: str = "auto") -> ExecutorDefinition:
    """In-process for chains (a step costs ~0.2 s instead of ~1 s), forkserver
    multiprocess where tasks can run side by side; see bench/ for the numbers.

    `preference`: auto | in_process | forkserver | spawn.
    """
    if preference not in ("auto", "in_process", "forkserver", "spawn"):
        raise ValueError(f"unknown executor {preference!r} (auto, in_process, forkserver, spawn)")
    if preference == "in_process" or (preference == "auto" and graph.width <= 1):
        return in_process_executor
    start_method = "spawn" if preference == "spawn" else "forkserver"
    concurrency = max(1, min(graph.width, int(os.environ.get("INFRAKITCHEN_MAX_PARALLEL", 8))))
    return multiprocess_executor.configured(
        {"max_concurrent": concurrency, "start_method": {start_method: {}}},
        name=f"infrakitchen_{start_method}",
    )


def environment_of(context: Any) -> str:
    if getattr(context, "has_partition_key", False):
        return context.partition_key
    return "default"


def make_runtime(graph: PipelineGraph, context: Any, tofu: TofuResource,
                 infrakitchen: InfraKitchenResource, environment: str) -> TaskRuntime:
    instance = context.instance
    run = getattr(context, "dagster_run", None) or instance.get_run_by_id(context.run_id)

    def run_is_alive(run_id: str) -> bool:
        other = instance.get_run_by_id(run_id)
        return other is not None and other.status not in _TERMINAL

    log = context.log
    return TaskRuntime(
        graph=graph, environment=environment, store=infrakitchen.store(), tofu=tofu,
        runtime_vars=dict(infrakitchen.vars), actor=infrakitchen.principal(
            run.tags if run else None),
        run_id=context.run_id, log=log.debug, progress=log.info, force=infrakitchen.force,
        run_is_alive=run_is_alive,
    )


def outcome_metadata(outcome: Outcome) -> dict[str, Any]:
    """Materialisation metadata: secrets are redacted here, never later."""
    meta: dict[str, Any] = {"outcome": outcome.status}
    if outcome.record is not None:
        record = outcome.record
        meta.update(state=record.state, status=record.status, revision=record.revision,
                    fingerprint=(record.fingerprint or "")[:16])
    if outcome.outputs:
        shown = masked(outcome.outputs, outcome.sensitive_outputs)
        meta["outputs"] = MetadataValue.json(shown)
        for name, value in shown.items():
            if isinstance(value, str | int | float | bool):
                meta[f"output/{name}"] = value if value != SENSITIVE else SENSITIVE
    if outcome.plan is not None:
        meta["plan"] = MetadataValue.json(outcome.plan.as_dict())
    if outcome.registered:
        meta["registered"] = MetadataValue.json(outcome.registered)
    if outcome.tofu_version:
        meta["tofu_version"] = outcome.tofu_version
    if outcome.duration:
        meta["duration_seconds"] = round(outcome.duration, 3)
    if outcome.log_tail:
        meta["log_tail"] = MetadataValue.md("```\n" + outcome.log_tail + "\n```")
    if outcome.reason:
        meta["reason"] = outcome.reason
    if outcome.request_id is not None:
        meta["approval_request"] = outcome.request_id
    return meta


def _as_failure(exc: Exception) -> Failure:
    """A step failure; a refusal is marked so that neither teardown reacts to it."""
    if isinstance(exc, Refused | IllegalTransition):
        return Failure(description=str(exc), allow_retries=False, metadata={REFUSED: True})
    allow_retries = not isinstance(exc, TaskFailure | InterpolationError)
    return Failure(description=str(exc), allow_retries=allow_retries)


def is_refusal(exc: BaseException | None) -> bool:
    return isinstance(exc, Failure) and REFUSED in (exc.metadata or {})


def build_task_asset(graph: PipelineGraph, node: Node, translator: InfraKitchenTranslator,
                     partitions: StaticPartitionsDefinition | None) -> AssetsDefinition:
    spec = translator.get_asset_spec(graph, node)
    task = node.task
    retry = (RetryPolicy(max_retries=task.retries, delay=task.retry_delay or None)
             if task.retries else None)
    hooks = {teardown_hook(graph, node)} if task.on_failure else None

    @multi_asset(
        specs=[spec],
        name=f"{graph.pipeline.job_prefix}__{node.op_name}",
        retry_policy=retry,
        partitions_def=partitions,
        op_tags={"infrakitchen/task": node.op_name, PIPELINE_TAG: graph.pipeline.name},
        hooks=hooks,
    )
    def _task_asset(context: AssetExecutionContext, tofu: TofuResource,
                    infrakitchen: InfraKitchenResource) -> Iterator[MaterializeResult]:
        runtime = make_runtime(graph, context, tofu, infrakitchen, environment_of(context))
        try:
            if node.kind in ("resource", "abstract"):
                outcome = runtime.provision(node, timeout=task.timeout)
            else:
                outcome = runtime.run_command(node, timeout=task.timeout)
        except (TaskFailure, TofuError, ProcessTimeout, InterpolationError,
                IllegalTransition) as exc:
            raise _as_failure(exc) from None
        if outcome.status in NOT_MATERIALISED:
            # Not materialised: Dagster skips everything downstream and the run succeeds.
            # An approval gate says so on the asset's timeline.
            if outcome.status != "skipped":
                context.log_event(AssetObservation(
                    asset_key=spec.key, metadata=outcome_metadata(outcome),
                    partition=context.partition_key if context.has_partition_key else None))
            return
        yield MaterializeResult(asset_key=spec.key, metadata=outcome_metadata(outcome))

    return _task_asset


def teardown_hook(graph: PipelineGraph, node: Node) -> HookDefinition:
    """The task's own `on_failure`: fires once, after the last retry failed."""
    teardown = node.task.on_failure
    assert teardown is not None

    @failure_hook(name=f"{graph.pipeline.job_prefix}__{node.op_name}__on_failure",
                  required_resource_keys={"tofu", "infrakitchen"})
    def _hook(context: HookContext) -> None:
        run = context.instance.get_run_by_id(context.run_id)
        environment = run.tags.get("dagster/partition", "default") if run else "default"
        runtime = make_runtime(graph, context, context.resources.tofu,
                               context.resources.infrakitchen, environment)
        if is_refusal(context.op_exception):
            context.log.info(f"{node.name} was refused, nothing was applied: no teardown")
            return
        error = str(context.op_exception or "failed")
        context.log.warning(f"{node.name} failed for good: running its teardown {teardown!r}")
        runtime.run_teardown(teardown, failed_task=node.name, error_message=error,
                             failed_run_id=context.run_id)

    return _hook


class TeardownConfig(Config):
    environment: str = "default"
    failed_run_id: str = ""
    failed_task: str = ""
    error_message: str = ""


def build_teardown_job(graph: PipelineGraph) -> JobDefinition | None:
    teardown = graph.pipeline.on_failure
    if not teardown:
        return None
    prefix = graph.pipeline.job_prefix

    @op(name=f"{prefix}__global_teardown", tags={PIPELINE_TAG: graph.pipeline.name})
    def _global_teardown(context: OpExecutionContext, config: TeardownConfig,
                         tofu: TofuResource, infrakitchen: InfraKitchenResource) -> None:
        # It destroys without approval, so it acts only on a claimed, failed provision run of
        # this pipeline and environment, once: never a way around the approval flow.
        failed = (context.instance.get_run_by_id(config.failed_run_id)
                  if config.failed_run_id else None)
        ok = (failed is not None and failed.status == DagsterRunStatus.FAILURE
              and failed.tags.get(PIPELINE_TAG) == graph.pipeline.name
              and failed.tags.get("infrakitchen/job") == "provision"
              and failed.tags.get("dagster/partition", "default") == config.environment)
        if not ok or not infrakitchen.store().start_teardown(config.failed_run_id,
                                                             context.run_id):
            raise Failure(description=(
                f"the global teardown runs once per failed provision run of "
                f"{graph.pipeline.name} in environment {config.environment!r}, launched by "
                f"`ik run` or the run-failure sensor; failed_run_id "
                f"{config.failed_run_id or '(not set)'} is not such a run; refusing"),
                allow_retries=False, metadata={REFUSED: True})
        runtime = make_runtime(graph, context, tofu, infrakitchen, config.environment)
        context.log.warning(f"global teardown {teardown!r} for failed run "
                            f"{config.failed_run_id} (task {config.failed_task or '?'})")
        runtime.run_teardown(teardown, failed_task=config.failed_task,
                             error_message=config.error_message,
                             failed_run_id=config.failed_run_id)

    return GraphDefinition(name=f"{prefix}__teardown", node_defs=[_global_teardown]).to_job(
        tags={PIPELINE_TAG: graph.pipeline.name, "infrakitchen/job": "teardown"},
        description=f"The global on_failure task {teardown!r} of {graph.pipeline.name}",
        executor_def=in_process_executor,
    )


def build_destroy_job(graph: PipelineGraph, partitions: StaticPartitionsDefinition | None,
                      translator: InfraKitchenTranslator) -> JobDefinition:
    """`tofu destroy` of every resource, children before parents (reversed edges)."""
    prefix = graph.pipeline.job_prefix
    names = [n for n in graph.order if graph.nodes[n].kind in ("resource", "abstract")]
    node_defs = []
    deps: dict[str, dict[str, Dep]] = {}
    for name in names:
        node = graph.nodes[name]
        children = [c for c in graph.descendants(name) if c in names]
        op_def = _destroy_op(graph, node, translator.get_asset_key(graph, node),
                             [f"after_{graph.nodes[c].op_name}" for c in children])
        node_defs.append(op_def)
        deps[op_def.name] = {
            f"after_{graph.nodes[c].op_name}": Dep(f"{prefix}__destroy__{graph.nodes[c].op_name}")
            for c in children
        }
    return GraphDefinition(name=f"{prefix}__destroy", node_defs=node_defs,
                           dependencies=deps).to_job(
        tags={PIPELINE_TAG: graph.pipeline.name, "infrakitchen/job": "destroy",
              BACKEND_TAG: graph.pipeline.backend.type},
        partitions_def=partitions, executor_def=in_process_executor,
        description=f"Destroy every resource of {graph.pipeline.name}, children first",
    )


def _destroy_op(graph: PipelineGraph, node: Node, key: AssetKey, in_names: list[str]):
    @op(name=f"{graph.pipeline.job_prefix}__destroy__{node.op_name}",
        ins={n: In(Nothing) for n in in_names}, out=Out(Nothing, is_required=False),
        tags={PIPELINE_TAG: graph.pipeline.name})
    def _destroy(context: OpExecutionContext, tofu: TofuResource,
                 infrakitchen: InfraKitchenResource):
        if infrakitchen.tasks and node.name not in infrakitchen.tasks:
            yield Output(None)  # not one of the tasks this run is about
            return
        runtime = make_runtime(graph, context, tofu, infrakitchen, environment_of(context))
        try:
            outcome = runtime.destroy(node.name, timeout=node.task.timeout, requested=True)
        except (TofuError, ProcessTimeout, TaskFailure, InterpolationError,
                IllegalTransition) as exc:
            raise _as_failure(exc) from None
        metadata = {"operation": "destroy", "outcome": outcome.status,
                    "state": outcome.record.state if outcome.record else "none"}
        if outcome.request_id is not None:
            metadata["approval_request"] = outcome.request_id
        if outcome.reason:
            metadata["reason"] = outcome.reason
        context.log_event(AssetObservation(
            asset_key=key, metadata=metadata,
            partition=context.partition_key if context.has_partition_key else None))
        if outcome.status not in NOT_MATERIALISED:
            yield Output(None)  # waiting for approval: the parents' destroys are skipped

    return _destroy


def build_plan_job(graph: PipelineGraph, partitions: StaticPartitionsDefinition | None,
                   translator: InfraKitchenTranslator) -> JobDefinition:
    """A dry run: `tofu plan` of each resource in order; nothing is applied or recorded."""
    prefix = graph.pipeline.job_prefix
    names = graph.resources
    node_defs = []
    deps: dict[str, dict[str, Dep]] = {}
    for name in names:
        node = graph.nodes[name]
        upstream = [a for a in graph.ancestors(name) if a in names]
        op_def = _plan_op(graph, node, translator.get_asset_key(graph, node),
                          [f"after_{graph.nodes[u].op_name}" for u in upstream])
        node_defs.append(op_def)
        deps[op_def.name] = {
            f"after_{graph.nodes[u].op_name}": Dep(f"{prefix}__plan__{graph.nodes[u].op_name}")
            for u in upstream
        }
    return GraphDefinition(name=f"{prefix}__plan", node_defs=node_defs,
                           dependencies=deps).to_job(
        tags={PIPELINE_TAG: graph.pipeline.name, "infrakitchen/job": "plan"},
        partitions_def=partitions, executor_def=in_process_executor,
        description=f"Dry run of {graph.pipeline.name}: tofu plan, nothing changes",
    )


def _plan_op(graph: PipelineGraph, node: Node, key: AssetKey, in_names: list[str]):
    @op(name=f"{graph.pipeline.job_prefix}__plan__{node.op_name}",
        ins={n: In(Nothing) for n in in_names}, out=Out(Nothing),
        tags={PIPELINE_TAG: graph.pipeline.name})
    def _plan(context: OpExecutionContext, tofu: TofuResource,
              infrakitchen: InfraKitchenResource):
        runtime = make_runtime(graph, context, tofu, infrakitchen, environment_of(context))
        try:
            summary = runtime.plan(node)
        except InterpolationError as exc:
            context.log.warning(f"{node.name}: not planned: {exc}")
            summary = None
        except (TofuError, ProcessTimeout, TaskFailure) as exc:
            raise _as_failure(exc) from None
        metadata: dict[str, Any] = {"operation": "plan"}
        if summary is not None:
            metadata["plan"] = MetadataValue.json(summary.as_dict())
        else:
            metadata["plan"] = "not planned: upstream outputs unknown until applied"
        context.log_event(AssetObservation(
            asset_key=key, metadata=metadata,
            partition=context.partition_key if context.has_partition_key else None))
        yield Output(None)

    return _plan


def build_pipeline(graph: PipelineGraph, translator: InfraKitchenTranslator | None = None,
                   executor: str = "auto") -> PipelineDefinitions:
    translator = translator or InfraKitchenTranslator()
    pipeline = graph.pipeline
    partitions = (StaticPartitionsDefinition(list(pipeline.environments))
                  if pipeline.environments else None)
    result = PipelineDefinitions(graph=graph, partitions=partitions)
    for name in graph.order:
        result.assets.append(build_task_asset(graph, graph.nodes[name], translator, partitions))
    keys = [translator.get_asset_key(graph, graph.nodes[n]) for n in graph.order]
    result.jobs.append(define_asset_job(
        # drift checks run on their own schedule, not after every apply
        name=result.provision_job_name, selection=AssetSelection.assets(*keys).without_checks(),
        partitions_def=partitions,
        executor_def=choose_executor(graph, executor),
        tags={PIPELINE_TAG: pipeline.name, "infrakitchen/job": "provision",
              BACKEND_TAG: pipeline.backend.type},
        description=pipeline.description or f"Provision {pipeline.name}",
    ))
    if graph.resources:
        result.jobs.append(build_plan_job(graph, partitions, translator))
        result.jobs.append(build_destroy_job(graph, partitions, translator))
        resource_keys = []
        for name in graph.resources:
            key = translator.get_asset_key(graph, graph.nodes[name])
            result.checks.append(build_drift_check(graph, graph.nodes[name], key))
            resource_keys.append(key)
        drift_job = build_drift_job(graph, resource_keys)
        result.jobs.append(drift_job)
        if pipeline.drift_schedule:
            result.schedules.append(ScheduleDefinition(
                name=f"{pipeline.job_prefix}__drift", cron_schedule=pipeline.drift_schedule,
                job=drift_job, default_status=DefaultScheduleStatus.RUNNING,
                description=f"Drift checks of {pipeline.name} ({pipeline.drift_schedule})"))
    result.schedules.extend(build_trigger_schedules(graph, result.jobs[0]))
    result.sensors.extend(build_file_watch_sensors(graph, result.jobs[0]))
    teardown = build_teardown_job(graph)
    if teardown is not None:
        result.jobs.append(teardown)
    return result


def build_trigger_schedules(graph: PipelineGraph, provision_job: Any) -> list[Any]:
    """wf `cron` triggers: the provision job on a schedule, every environment once."""
    schedules = []
    environments = list(graph.pipeline.environments)
    crons = [t.schedule for t in graph.pipeline.triggers if t.type == "cron" and t.schedule]
    for index, cron in enumerate(crons):

        @schedule(name=f"{graph.pipeline.job_prefix}__cron_{index}", cron_schedule=cron,
                  job=provision_job, default_status=DefaultScheduleStatus.RUNNING,
                  description=f"wf cron trigger {cron!r}")
        def _trigger(context: ScheduleEvaluationContext):
            # no user tag: the run acts as the code location's identity (grant it write)
            stamp = context.scheduled_execution_time.isoformat()
            tags = {"infrakitchen/trigger": "cron"}
            if not environments:
                return [RunRequest(run_key=stamp, tags=tags)]
            return [RunRequest(run_key=f"{stamp}-{env}", partition_key=env, tags=tags)
                    for env in environments]

        schedules.append(_trigger)
    return schedules
