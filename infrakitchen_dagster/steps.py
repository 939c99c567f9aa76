"""What a Dagster step does around the runtime: build it from the step's context, turn
its outcome into metadata and its errors into step failures.

Shared by the per-task assets (`assets.py`) and the batched step (`batch.py`).
"""

import os
import socket
from typing import Any

from dagster import DagsterRunStatus, Failure, MetadataValue

from .failures import REFUSED, report_dead_run
from .graph import PipelineGraph
from .interpolation import InterpolationError
from .process import ProcessTimeout
from .resources import InfraKitchenResource, TofuResource
from .runtime import Outcome, OutcomeStatus, Refused, TaskFailure, TaskRuntime
from .store import SENSITIVE, IllegalTransition, masked
from .tofu import TofuError

#: outcomes after which the asset is not materialised (its downstream is skipped)
NOT_MATERIALISED = (OutcomeStatus.SKIPPED, OutcomeStatus.APPROVAL_PENDING,
                    OutcomeStatus.REJECTED, OutcomeStatus.BLOCKED)

#: what a task may raise that becomes a step failure (retried unless it is a TaskFailure)
RETRYABLE_ERRORS = (TaskFailure, TofuError, ProcessTimeout, InterpolationError,
                    IllegalTransition)

_TERMINAL = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}


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
        runtime_vars=infrakitchen.runtime_vars(), actor=infrakitchen.principal(
            run.tags if run else None),
        run_id=context.run_id, log=log.debug, progress=log.info, force=infrakitchen.force,
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


def as_failure(exc: Exception) -> Failure:
    """A step failure; a refusal is marked so that neither teardown reacts to it."""
    if isinstance(exc, Refused | IllegalTransition):
        return Failure(description=str(exc), allow_retries=False, metadata={REFUSED: True})
    allow_retries = not isinstance(exc, TaskFailure | InterpolationError)
    return Failure(description=str(exc), allow_retries=allow_retries)


def is_refusal(exc: BaseException | None) -> bool:
    return isinstance(exc, Failure) and REFUSED in (exc.metadata or {})
