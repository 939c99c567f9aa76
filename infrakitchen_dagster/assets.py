"""A pipeline's Dagster definitions: one asset per task, its jobs, hooks and executor."""


import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from dagster import (
    AssetExecutionContext,
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
    NodeInvocation,
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

from . import policy_check, settings
from .approval_check import build_approval_checks
from .approve_job import build_approve_job
from .batch import build_batched_asset
from .checks import build_drift_checks, build_drift_job
from .distributed import CELERY, celery_executor_def, is_distributed
from .failures import PIPELINE_TAG, REFUSED
from .graph import Node, PipelineGraph
from .interpolation import InterpolationError, to_text
from .notify import plan_text
from .process import ProcessTimeout
from .resources import InfraKitchenResource, TofuResource
from .runtime import OutcomeStatus, TaskFailure
from .runtime.changes import changes_markdown
from .sensors import build_file_watch_sensors
from .steps import (
    NOT_MATERIALISED,
    RETRYABLE_ERRORS,
    as_failure,
    environment_of,
    is_refusal,
    make_runtime,
    outcome_metadata,
    pending_summary,
    perform,
    principal_of,
    report_outcome,
    tag_ui_run,
)
from .store import IllegalTransition
from .tofu import TofuError
from .translator import InfraKitchenTranslator

#: the run queue limits concurrent applies per state backend with this tag (deploy/)
BACKEND_TAG = "infrakitchen/state-backend"


#: the jobs of a pipeline, named `<job_prefix>__<kind>`
PROVISION, PLAN, DESTROY, DRIFT_CHECK, TEARDOWN = (
    "provision", "plan", "destroy", "drift_check", "teardown")
#: deciding approval requests from the Launchpad (pipelines with gated resources)
APPROVE = "approve"
JOB_KINDS = (PROVISION, PLAN, DESTROY, DRIFT_CHECK, TEARDOWN, APPROVE)


def split_job_name(job_name: str) -> tuple[str, str]:
    """`<job_prefix>__<kind>` -> (job_prefix, kind); ValueError for any other name."""
    prefix, sep, kind = job_name.rpartition("__")
    if not sep or not prefix or kind not in JOB_KINDS:
        raise ValueError(f"{job_name!r} is not an infrakitchen job name "
                         f"(<pipeline>__{{{','.join(JOB_KINDS)}}})")
    return prefix, kind


@dataclass
class PipelineDefinitions:
    graph: PipelineGraph
    assets: list[AssetsDefinition] = field(default_factory=list)
    jobs: list[Any] = field(default_factory=list)
    checks: list[Any] = field(default_factory=list)
    schedules: list[Any] = field(default_factory=list)
    sensors: list[Any] = field(default_factory=list)
    partitions: StaticPartitionsDefinition | None = None
    #: each job by its kind (`JOB_KINDS`): how callers find a job, not by name suffix
    jobs_by_kind: dict[str, Any] = field(default_factory=dict)

    def job_name(self, kind: str) -> str:
        return f"{self.graph.pipeline.job_prefix}__{kind}"

    @property
    def provision_job_name(self) -> str:
        return self.job_name(PROVISION)

    def add_job(self, kind: str, job: Any) -> None:
        self.jobs.append(job)
        self.jobs_by_kind[kind] = job


EXECUTION_MODES = ("auto", "batched", "per_step")


def execution_mode(graph: PipelineGraph, preference: str | None = None,
                   executor: str | None = None) -> str:
    """`batched` (one step walks the DAG with threads) or `per_step` (one step per task).

    `preference` (default: INFRAKITCHEN_EXECUTION, else auto). auto picks batched: it is
    the faster on fan-outs (no process per step) and on chains too (a child starts as soon
    as its parent's apply ends, without a step's events in between; see bench/). per_step
    keeps a step, a retry and a hook per task in the UI, for those who want that view.
    Under a distributed `executor` (celery) auto is per_step, so that the steps spread
    over the workers.
    """
    preference = preference or os.environ.get("INFRAKITCHEN_EXECUTION", "auto")
    if preference not in EXECUTION_MODES:
        raise ValueError(f"unknown execution mode {preference!r} "
                         f"({', '.join(EXECUTION_MODES)})")
    if preference == "auto":
        if is_distributed(executor):
            return "per_step"
        return "batched"
    return preference


def choose_executor(graph: PipelineGraph, preference: str = "auto") -> ExecutorDefinition:
    """In-process for chains (a step costs ~0.2 s instead of ~1 s), forkserver
    multiprocess where tasks can run side by side; see bench/ for the numbers.

    `preference`: auto | in_process | forkserver | spawn | celery (dagster-celery workers,
    see distributed.py).
    """
    if preference not in ("auto", "in_process", "forkserver", "spawn", CELERY):
        raise ValueError(f"unknown executor {preference!r} "
                         "(auto, in_process, forkserver, spawn, celery)")
    if preference == CELERY:
        return celery_executor_def()
    if preference == "in_process" or (preference == "auto" and graph.width <= 1):
        return in_process_executor
    start_method = "spawn" if preference == "spawn" else "forkserver"
    concurrency = max(1, min(graph.width, settings.max_parallel()))
    return multiprocess_executor.configured(
        {"max_concurrent": concurrency, "start_method": {start_method: {}}},
        name=f"infrakitchen_{start_method}",
    )


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
        principal = principal_of(context, graph, infrakitchen)
        tag_ui_run(context, graph, principal)
        try:
            outcome = perform(runtime, node, principal)
        except RETRYABLE_ERRORS as exc:
            policy_check.report(context, spec.key, runtime.environment, error=exc)
            raise as_failure(exc) from None
        policy_check.report(context, spec.key, runtime.environment, record=outcome.record)
        report_outcome(context, graph, node, spec.key, outcome)
        if (summary := pending_summary(graph, [outcome])) is not None:
            context.log.warning(summary)
        if outcome.status in NOT_MATERIALISED:
            # Not materialised: Dagster skips everything downstream and the run succeeds.
            # An approval gate says so on the asset's timeline.
            if outcome.status != OutcomeStatus.SKIPPED:
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


def _op_aliases(graph: PipelineGraph, kind: str, names: list[str]) -> dict[str, str]:
    """node name -> its op's name in the `kind` job (what `op_selection` names)."""
    return {n: f"{graph.pipeline.job_prefix}__{kind}__{graph.nodes[n].op_name}" for n in names}


def _wired_graph(graph: PipelineGraph, kind: str, alias: dict[str, str],
                 edges: dict[str, list[str]], make_op: Any) -> GraphDefinition:
    """One op per node, wired by `edges` (node -> the nodes it waits for).

    The nodes share a handful of op definitions (one per number of inputs, each node an
    aliased invocation of it): building a thousand ops is then as cheap as building a few,
    and the graph stays linear in the number of tasks. Separate `Nothing` inputs, not a
    fan-in, so that a node is skipped as soon as any node it waits for was."""
    prefix = graph.pipeline.job_prefix
    defs: dict[int, Any] = {}
    deps: dict[NodeInvocation, dict[str, Dep]] = {}
    for name in alias:
        waits = edges[name]
        if len(waits) not in defs:
            defs[len(waits)] = make_op(f"{prefix}__{kind}_after_{len(waits)}",
                                       [f"after_{i}" for i in range(len(waits))])
        op_def = defs[len(waits)]
        deps[NodeInvocation(op_def.name, alias=alias[name])] = {
            f"after_{i}": Dep(alias[w]) for i, w in enumerate(waits)}
    return GraphDefinition(name=f"{prefix}__{kind}", node_defs=list(defs.values()),
                           dependencies=deps)


def build_destroy_job(graph: PipelineGraph, partitions: StaticPartitionsDefinition | None,
                      translator: InfraKitchenTranslator) -> JobDefinition:
    """`tofu destroy` of every resource, children before parents (reversed edges).

    Each op waits for its nearest resource children only (linear in the number of tasks);
    the order holds transitively. A run acting on some tasks names them in the
    `infrakitchen` resource's `tasks` (the others pass), never by op selection, which
    would cut the chain of edges between the chosen ops."""
    members = graph.lifecycle_members
    names = [n for n in graph.order if n in members]
    edges = {n: graph.nearest_downstream(n, members) for n in names}
    alias = _op_aliases(graph, "destroy", names)
    nodes = {a: graph.nodes[n] for n, a in alias.items()}
    job_graph = _wired_graph(graph, "destroy", alias, edges,
                             lambda name, ins: _destroy_op(graph, translator, name, ins, nodes))
    return job_graph.to_job(
        tags={PIPELINE_TAG: graph.pipeline.name, "infrakitchen/job": "destroy",
              BACKEND_TAG: graph.pipeline.backend.type},
        partitions_def=partitions, executor_def=in_process_executor,
        description=f"Destroy every resource of {graph.pipeline.name}, children first",
    )


def _destroy_op(graph: PipelineGraph, translator: InfraKitchenTranslator, name: str,
                in_names: list[str], nodes: dict[str, Node]):
    """The destroy op shared by every node with len(in_names) children; `nodes` maps an
    invocation's alias to its node."""
    @op(name=name, ins={n: In(Nothing) for n in in_names}, out=Out(Nothing, is_required=False),
        tags={PIPELINE_TAG: graph.pipeline.name})
    def _destroy(context: OpExecutionContext, tofu: TofuResource,
                 infrakitchen: InfraKitchenResource):
        node = nodes[context.op_handle.name]
        if infrakitchen.tasks and node.name not in infrakitchen.tasks:
            yield Output(None)  # not one of the tasks this run is about
            return
        runtime = make_runtime(graph, context, tofu, infrakitchen, environment_of(context))
        try:
            outcome = runtime.destroy(node.name, timeout=node.task.timeout, requested=True)
        except (TofuError, ProcessTimeout, TaskFailure, InterpolationError,
                IllegalTransition) as exc:
            policy_check.report(context, translator.get_asset_key(graph, node),
                                runtime.environment, error=exc)
            raise as_failure(exc) from None
        policy_check.report(context, translator.get_asset_key(graph, node),
                            runtime.environment, record=outcome.record)
        metadata = {"operation": "destroy", "outcome": outcome.status.value,
                    "state": outcome.record.state if outcome.record else "none"}
        if outcome.request_id is not None:
            metadata["approval_request"] = outcome.request_id
        if outcome.reason:
            metadata["reason"] = outcome.reason
        context.log_event(AssetObservation(
            asset_key=translator.get_asset_key(graph, node), metadata=metadata,
            partition=context.partition_key if context.has_partition_key else None))
        report_outcome(context, graph, node, translator.get_asset_key(graph, node), outcome)
        if outcome.status not in NOT_MATERIALISED:
            yield Output(None)  # waiting for approval: the parents' destroys are skipped

    return _destroy


def build_plan_job(graph: PipelineGraph, partitions: StaticPartitionsDefinition | None,
                   translator: InfraKitchenTranslator) -> JobDefinition:
    """A dry run: `tofu plan` of each resource in order; nothing is applied or recorded.

    Each op waits for its nearest upstream resources only (linear in the number of tasks)."""
    names = graph.resources
    members = frozenset(names)
    edges = {n: graph.nearest_upstream(n, members) for n in names}
    alias = _op_aliases(graph, "plan", names)
    nodes = {a: graph.nodes[n] for n, a in alias.items()}
    job_graph = _wired_graph(graph, "plan", alias, edges,
                             lambda name, ins: _plan_op(graph, translator, name, ins, nodes))
    return job_graph.to_job(
        tags={PIPELINE_TAG: graph.pipeline.name, "infrakitchen/job": "plan"},
        partitions_def=partitions, executor_def=in_process_executor,
        description=f"Dry run of {graph.pipeline.name}: tofu plan, nothing changes",
    )


def _plan_op(graph: PipelineGraph, translator: InfraKitchenTranslator, name: str,
             in_names: list[str], nodes: dict[str, Node]):
    """The plan op shared by every node with len(in_names) parents (see `_destroy_op`)."""
    @op(name=name, ins={n: In(Nothing) for n in in_names}, out=Out(Nothing),
        tags={PIPELINE_TAG: graph.pipeline.name})
    def _plan(context: OpExecutionContext, tofu: TofuResource,
              infrakitchen: InfraKitchenResource):
        node = nodes[context.op_handle.name]
        runtime = make_runtime(graph, context, tofu, infrakitchen, environment_of(context))
        try:
            dry_run = runtime.plan(node)
        except InterpolationError as exc:
            context.log.warning(f"{node.name}: not planned: {exc}")
            dry_run = None
        except (TofuError, ProcessTimeout, TaskFailure) as exc:
            raise as_failure(exc) from None
        metadata: dict[str, Any] = {"operation": "plan"}
        if dry_run is not None:
            metadata["plan"] = plan_text(dry_run.summary.as_dict())
            if dry_run.changes:
                metadata["changes"] = MetadataValue.md(changes_markdown(dry_run.changes))
            context.log.info(f"{node.name}: plan {metadata['plan']}")
        else:
            metadata["plan"] = "not planned: upstream outputs unknown until applied"
        context.log_event(AssetObservation(
            asset_key=translator.get_asset_key(graph, node), metadata=metadata,
            partition=context.partition_key if context.has_partition_key else None))
        yield Output(None)

    return _plan


def build_pipeline(graph: PipelineGraph, translator: InfraKitchenTranslator | None = None,
                   executor: str = "auto", execution: str | None = None,
                   only: str | None = None) -> PipelineDefinitions:
    """The pipeline's assets, checks, jobs, schedules and sensors.

    `only` (a job kind of `JOB_KINDS`): build just that job and what it needs, no
    schedules or sensors: what a run's process (and each of its step processes) loads.
    """
    if only is not None and only not in JOB_KINDS:
        raise ValueError(f"unknown job kind {only!r} ({', '.join(JOB_KINDS)})")
    translator = translator or InfraKitchenTranslator()
    pipeline = graph.pipeline
    partitions = (StaticPartitionsDefinition(list(pipeline.environments))
                  if pipeline.environments else None)
    result = PipelineDefinitions(graph=graph, partitions=partitions)

    def wanted(*kinds: str) -> bool:
        return only is None or only in kinds

    if wanted(PROVISION, DRIFT_CHECK):
        _add_assets(result, translator, executor, execution, provision_job=wanted(PROVISION))
    if graph.resources:
        if wanted(PLAN):
            result.add_job(PLAN, build_plan_job(graph, partitions, translator))
        if wanted(DESTROY):
            result.add_job(DESTROY, build_destroy_job(graph, partitions, translator))
        if wanted(DRIFT_CHECK):
            keys = {n: translator.get_asset_key(graph, graph.nodes[n]) for n in graph.resources}
            result.checks.append(build_drift_checks(graph, keys))
            if pipeline.policies:  # the check the plans' verdicts are reported on
                result.checks.append(policy_check.build_policy_checks(graph, keys))
            drift_job = build_drift_job(graph, list(keys.values()))
            result.add_job(DRIFT_CHECK, drift_job)
            if pipeline.drift_schedule and only is None:
                result.schedules.append(ScheduleDefinition(
                    name=f"{pipeline.job_prefix}__drift", cron_schedule=pipeline.drift_schedule,
                    job=drift_job, default_status=DefaultScheduleStatus.RUNNING,
                    description=f"Drift checks of {pipeline.name} ({pipeline.drift_schedule})"))
    if only is None:
        provision = result.jobs_by_kind[PROVISION]
        result.schedules.extend(build_trigger_schedules(graph, provision))
        result.sensors.extend(build_file_watch_sensors(graph, provision))
    if wanted(APPROVE):
        _add_approvals(result, translator, with_checks=only is None)
    if wanted(TEARDOWN):
        teardown = build_teardown_job(graph)
        if teardown is not None:
            result.add_job(TEARDOWN, teardown)
    return result


def _add_approvals(result: PipelineDefinitions, translator: InfraKitchenTranslator,
                   with_checks: bool) -> None:
    """The `<prefix>__approve` job and (`with_checks`: beside the assets) the `approval`
    checks of the gated resources."""
    graph = result.graph
    keys = {n: translator.get_asset_key(graph, graph.nodes[n]) for n in graph.resources}
    checks = build_approval_checks(graph, keys)
    if checks is None:
        return
    if with_checks:
        result.checks.append(checks)
    result.add_job(APPROVE, build_approve_job(graph, keys))


def _add_assets(result: PipelineDefinitions, translator: InfraKitchenTranslator,
                executor: str, execution: str | None, provision_job: bool) -> None:
    """The task assets (batched or one per task) and, when `provision_job`, their job."""
    graph, partitions, pipeline = result.graph, result.partitions, result.graph.pipeline
    batched = execution_mode(graph, execution, executor) == "batched"
    if batched:
        result.assets.append(build_batched_asset(graph, translator, partitions))
    else:
        for name in graph.order:
            result.assets.append(
                build_task_asset(graph, graph.nodes[name], translator, partitions))
    if not provision_job:
        return
    keys = [translator.get_asset_key(graph, graph.nodes[n]) for n in graph.order]
    result.add_job(PROVISION, define_asset_job(
        # drift checks run on their own schedule, not after every apply
        name=result.job_name(PROVISION),
        selection=AssetSelection.assets(*keys).without_checks(),
        partitions_def=partitions,
        # batched under celery: the one step still runs on a worker, not in the run process
        executor_def=(in_process_executor if batched and not is_distributed(executor)
                      else choose_executor(graph, executor)),
        tags={PIPELINE_TAG: pipeline.name, "infrakitchen/job": PROVISION,
              BACKEND_TAG: pipeline.backend.type},
        description=pipeline.description or f"Provision {pipeline.name}",
        config=launchpad_defaults(pipeline),
    ))


def launchpad_defaults(pipeline: Any) -> dict[str, Any] | None:
    """The provision job's default run config: the pipeline's `[vars]`, so the Launchpad
    shows what a run will use and what can be changed. A run given its own config (ik
    run, the sensors) replaces it. Variables that an environment overrides are left out:
    run config vars win over `[environments.E]`, and would undo the partition's values."""
    per_environment = {name for values in pipeline.environments.values() for name in values}
    defaults = {name: to_text(value) for name, value in pipeline.vars.items()
                if name not in per_environment}
    if not defaults:
        return None
    return {"resources": {"infrakitchen": {"config": {"vars": defaults}}}}


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
