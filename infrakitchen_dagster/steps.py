"""What a Dagster step does around the runtime: build it from the step's context, turn
its outcome into metadata and its errors into step failures.

Shared by the per-task assets (`assets.py`) and the batched step (`batch.py`).
"""

import os
import socket
from typing import Any

from dagster import (
    AssetExecutionContext,
    AssetKey,
    DagsterRun,
    DagsterRunStatus,
    Failure,
    MetadataValue,
    OpExecutionContext,
)

from .approval_check import approve_job_name, evaluate, gated_resources
from .failures import PIPELINE_TAG, REFUSED, report_dead_run
from .graph import Node, PipelineGraph
from .interpolation import InterpolationError
from .notify import plan_text
from .policy_check import policy_metadata
from .process import ProcessTimeout
from .resources import InfraKitchenResource, TofuResource
from .run_origin import attach_to_code_location
from .run_principal import LAUNCH_TAG, UI_LAUNCH, USER_TAG, RunPrincipal, run_principal
from .runtime import Outcome, OutcomeStatus, Refused, TaskFailure, TaskRuntime
from .runtime.changes import changes_markdown
from .store import SENSITIVE, IllegalTransition, LifecycleStore, masked
from .tofu import TofuError

#: outcomes after which the asset is not materialised (its downstream is skipped)
NOT_MATERIALISED = (OutcomeStatus.SKIPPED, OutcomeStatus.APPROVAL_PENDING,
                    OutcomeStatus.REJECTED, OutcomeStatus.BLOCKED, OutcomeStatus.REFUSED)
#: run tag saying how a run ended for the people watching it (approval_pending, refused)
OUTCOME_TAG = "infrakitchen/outcome"

#: what a task may raise that becomes a step failure (retried unless it is a TaskFailure)
RETRYABLE_ERRORS = (TaskFailure, TofuError, ProcessTimeout, InterpolationError,
                    IllegalTransition)

_TERMINAL = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}


def current_run(context: Any) -> DagsterRun | None:
    """The step's run, asked the way each context offers it (an asset context deprecates
    `run_id` and `dagster_run` for `run`; a hook context has only the id)."""
    if isinstance(context, AssetExecutionContext | OpExecutionContext):
        return context.run
    return context.instance.get_run_by_id(context.run_id)


def environment_of(context: Any) -> str:
    if getattr(context, "has_partition_key", False):
        return context.partition_key
    return "default"


#: principals settled in this process, by run id (a run's principal never changes)
_SETTLED: dict[str, RunPrincipal] = {}


def settled_principal(context: Any, graph: PipelineGraph, store: LifecycleStore
                      ) -> RunPrincipal:
    """Who the step's run acts as, judged once per run: the first step settles it in the
    store and then attaches a terminal run to its code location (`run_origin`), after which
    the run's origin alone would make it look like a UI launch."""
    run = current_run(context)
    if run is None:
        return run_principal(None)
    if run.run_id not in _SETTLED:
        judged = run_principal(run)
        name, source, settled_now = store.settle_run_principal(run.run_id, judged.name,
                                                               judged.source)
        _SETTLED.clear()  # one run at a time matters to a process; workers live long
        _SETTLED[run.run_id] = RunPrincipal(name, source)
        if settled_now:  # one step per run attaches it
            try:
                attach_to_code_location(context.instance, run, graph.pipeline)
            except Exception as exc:  # the run goes on; only the UI's history misses it
                context.log.warning(f"this run could not be filed under its code "
                                    f"location ({type(exc).__name__}: {exc}); it is in the "
                                    "Runs list only")
    return _SETTLED[run.run_id]


def make_runtime(graph: PipelineGraph, context: Any, tofu: TofuResource,
                 infrakitchen: InfraKitchenResource, environment: str) -> TaskRuntime:
    instance = context.instance
    run = current_run(context)
    store = infrakitchen.store()

    def run_is_alive(run_id: str) -> bool:
        other = instance.get_run_by_id(run_id)
        return other is not None and other.status not in _TERMINAL

    log = context.log
    return TaskRuntime(
        graph=graph, environment=environment, store=store, tofu=tofu,
        runtime_vars=infrakitchen.runtime_vars(),
        actor=settled_principal(context, graph, store).name,
        run_id=run.run_id if run else None, log=log.debug, progress=log.info,
        force=infrakitchen.force,
        run_is_alive=run_is_alive,
        report_dead_run=lambda run_id, reason: report_dead_run(instance, run_id, reason),
    )


def worker_name() -> str:
    """Which process did the work: INFRAKITCHEN_WORKER_NAME, else host:pid."""
    return os.environ.get("INFRAKITCHEN_WORKER_NAME") or f"{socket.gethostname()}:{os.getpid()}"


def outcome_metadata(outcome: Outcome) -> dict[str, Any]:
    """Materialisation metadata: secrets are redacted here, never later."""
    meta: dict[str, Any] = {"outcome": outcome.status.value, "worker": worker_name()}
    if outcome.record is not None:
        record = outcome.record
        meta.update(status=f"{record.state}/{record.status} · revision {record.revision}",
                    revision=record.revision, fingerprint=(record.fingerprint or "")[:16])
        if record.source:  # a git module: which source code version this is
            meta.update({"source": record.source.get("module", ""),
                         "source_ref": record.source.get("ref", ""),
                         "source_commit": record.source.get("commit", "")})
        meta.update(policy_metadata(record))  # the policies' warnings on this run's plan
    if outcome.outputs:
        shown = masked(outcome.outputs, outcome.sensitive_outputs)
        meta["outputs"] = MetadataValue.json(shown)
        for name, value in shown.items():
            if isinstance(value, str | int | float | bool):
                meta[f"output/{name}"] = value if value != SENSITIVE else SENSITIVE
    if outcome.plan is not None:
        meta["plan"] = plan_text(outcome.plan.as_dict())
    if outcome.changes:
        meta["changes"] = MetadataValue.md(changes_markdown(outcome.changes))
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


def as_failure(exc: Exception) -> Failure:
    """A step failure; a refusal is marked so that neither teardown reacts to it."""
    if isinstance(exc, Refused | IllegalTransition):
        return Failure(description=str(exc), allow_retries=False, metadata={REFUSED: True})
    allow_retries = not isinstance(exc, TaskFailure | InterpolationError)
    return Failure(description=str(exc), allow_retries=allow_retries)


def is_refusal(exc: BaseException | None) -> bool:
    return isinstance(exc, Failure) and REFUSED in (exc.metadata or {})


# -- what a provision step does around one task --------------------------------------------


def principal_of(context: Any, graph: PipelineGraph, infrakitchen: InfraKitchenResource
                 ) -> RunPrincipal:
    return settled_principal(context, graph, infrakitchen.store())


def perform(runtime: TaskRuntime, node: Node, principal: RunPrincipal) -> Outcome:
    """Provision (or run) one task. A role refusal of a run launched from the UI is an
    outcome, not a step failure: one line, the asset is not materialised and not marked
    failed, nothing was changed. `ik run` and sensor runs fail on it as before (their
    launcher reports it)."""
    if principal.unset:
        reason = (f"{node.name}: refused, nothing was changed: no principal for a UI "
                  f"launch.{principal.refusal_hint(runtime.pipeline.name)}")
        return Outcome(OutcomeStatus.REFUSED, runtime.record(node.name), reason=reason)
    try:
        if node.kind in ("resource", "abstract"):
            return runtime.provision(node, timeout=node.task.timeout)
        return runtime.run_command(node, timeout=node.task.timeout)
    except Refused as exc:
        if principal.source not in ("ui", "location", "unset"):
            raise
        reason = (f"{node.name}: refused, nothing was changed: {exc}."
                  f"{principal.refusal_hint(runtime.pipeline.name)}")
        return Outcome(OutcomeStatus.REFUSED, runtime.record(node.name), reason=reason)


def tag_ui_run(context: Any, graph: PipelineGraph, principal: RunPrincipal) -> None:
    """Give a run launched from the UI (an asset selection, without the provision job's
    tags) the tags an `ik run` run carries, so the run-failure sensor, the run list and
    the audit see which pipeline and principal it was."""
    run = current_run(context)
    if run is None:
        return
    wanted = {PIPELINE_TAG: graph.pipeline.name, "infrakitchen/job": "provision",
              USER_TAG: principal.name}
    if principal.source in ("ui", "location", "unset"):
        wanted[LAUNCH_TAG] = UI_LAUNCH
    missing = {k: v for k, v in wanted.items() if k not in run.tags}
    if missing:
        _add_run_tags(context, missing)


def _add_run_tags(context: Any, tags: dict[str, str]) -> None:
    """Tags added to the running run. `DagsterInstance.add_run_tags` is what Dagster's
    own launchers use for this; Dagster has no other way for a run to tag itself."""
    run = current_run(context)
    if run is not None:
        context.instance.add_run_tags(run.run_id, tags)


def report_outcome(context: Any, graph: PipelineGraph, node: Node, key: AssetKey,
                   outcome: Outcome) -> None:
    """The lines and events an outcome needs beyond its metadata: a refusal or a waiting
    request said once (and tagged on the run), and the `approval` check of a gated
    resource brought up to date."""
    if outcome.status == OutcomeStatus.REFUSED:
        context.log.error(outcome.reason)
        _add_run_tags(context, {OUTCOME_TAG: OutcomeStatus.REFUSED.value})
        return
    if outcome.status == OutcomeStatus.APPROVAL_PENDING:
        _add_run_tags(context, {OUTCOME_TAG: OutcomeStatus.APPROVAL_PENDING.value})
    if node.name in gated_resources(graph) and outcome.status != OutcomeStatus.SKIPPED:
        context.log_event(evaluate(graph, node.name, key, LifecycleStore()))


def pending_summary(graph: PipelineGraph, outcomes: list[Outcome]) -> str | None:
    """The run's closing WARNING when it filed requests: nothing of those was applied."""
    waiting = [o for o in outcomes if o.status == OutcomeStatus.APPROVAL_PENDING]
    if not waiting:
        return None
    ids = ", ".join(str(o.request_id) for o in waiting)
    applied = sum(o.status == OutcomeStatus.APPLIED for o in outcomes)
    return (f"approval pending: request(s) {ids} wait for an owner or admin, and what "
            f"depends on them was not run ({applied} task(s) applied). Decide with "
            f"`ik approve ID` / `ik reject ID --reason ...` or the "
            f"{approve_job_name(graph)} job; the approved plan is then applied")
