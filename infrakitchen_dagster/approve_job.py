"""`<pipeline>__approve`: deciding an approval request from the Launchpad.

An approver who found a WARN `approval` check on an asset decides it where they are:
the job takes the request id, the decision, a reason and (for pipelines with `approvers`)
the SSH signature over the decision. It decides through `Approvals.decide`, so the rules
are those of `ik approve` / `ik reject`: owner or admin only, once, four eyes, a signature
by a listed key where the pipeline signs decisions. The decider is the deployment's UI
principal (`INFRAKITCHEN_UI_PRINCIPAL`; the run's tags are never trusted, a Launchpad user
types them) or, where the pipeline signs, the principal the signature proves. The check
is re-evaluated at once, so the asset shows the decision; the approvals sensor launches
the approved run.
"""

from enum import Enum
from typing import NoReturn

from dagster import (
    AssetKey,
    Config,
    Failure,
    GraphDefinition,
    JobDefinition,
    OpExecutionContext,
    in_process_executor,
    op,
)
from pydantic import Field

from .access import PermissionDenied
from .approval_check import approve_job_name, evaluate
from .approvals import ApprovalError, Approvals
from .failures import PIPELINE_TAG
from .graph import PipelineGraph
from .resources import InfraKitchenResource
from .run_principal import UI_PRINCIPAL_ENV, ui_principal


class Decision(Enum):
    approve = "approve"
    reject = "reject"


class ApproveConfig(Config):
    """The Launchpad form of the approve job."""

    request_id: int = Field(description="The request to decide (the `approval` check's "
                                        "request_id, or `ik approvals --pending`)")
    decision: Decision = Field(description="approve or reject")
    reason: str = Field(default="", description="Why (required to reject)")
    signature: str = Field(
        default="", description="Pipelines with approvers only: the armored SSH signature "
                                "over the decision (the check's signing_payload, signed with "
                                "`ssh-keygen -Y sign -n infrakitchen -f KEY`)")


def decide_op_name(graph: PipelineGraph) -> str:
    """The approve job's one op; its Launchpad config is `ops.<this>.config`."""
    return f"{graph.pipeline.job_prefix}__decide"


def build_approve_job(graph: PipelineGraph, keys: dict[str, AssetKey]) -> JobDefinition:
    """The approve job of `graph`; `keys` maps its resources to their asset keys."""
    name = approve_job_name(graph)
    pipeline = graph.pipeline

    # the op cannot share the job's name: Dagster names a job's graph after the job, and op
    # and graph names are one namespace in a code location
    @op(name=decide_op_name(graph), tags={PIPELINE_TAG: pipeline.name})
    def _decide(context: OpExecutionContext, config: ApproveConfig,
                infrakitchen: InfraKitchenResource) -> None:
        # never the run's tags: a Launchpad user types those. The decider is the
        # deployment's UI principal, or the principal a signature proves.
        actor = ui_principal()
        if actor is None and not config.signature.strip():
            _refuse(context, "no principal decides from the UI: set "
                             f"{UI_PRINCIPAL_ENV} on the code location to the approver's "
                             "principal, sign the decision (pipelines with `approvers`), or "
                             f"use `ik approve {config.request_id} --as NAME`")
        actor = actor or "(signature)"
        store = infrakitchen.store()
        approvals = Approvals(store)
        request = approvals.get(config.request_id)
        if request is None or request.pipeline != pipeline.name:
            _refuse(context, f"request {config.request_id} is not a request of pipeline "
                             f"{pipeline.name!r}")
        approve = config.decision == Decision.approve
        try:
            decided = approvals.decide(
                request.id, approve=approve, actor=actor, owners=pipeline.owners,
                reason=config.reason or None, pipeline=pipeline,
                signature=config.signature.strip() + "\n" if config.signature.strip()
                else None)
        except (ApprovalError, PermissionDenied) as exc:
            hint = (f". Decisions from the UI act as {UI_PRINCIPAL_ENV}={actor!r}."
                    if isinstance(exc, PermissionDenied) else "")
            _refuse(context, f"{exc}{hint}")
        by = decided.decided_by
        if decided.identity == "signed":
            by = f"{by} (signed, {decided.key_fingerprint})"
        context.log.info(f"request {decided.id} {decided.status} by {by}: {decided.operation} "
                         f"of {decided.task} ({decided.environment})"
                         + ("; the infrakitchen_approvals sensor launches it (with the "
                            "daemon running), or materialize the asset" if approve else ""))
        key = keys.get(decided.task)
        if key is not None:
            context.log_event(evaluate(graph, decided.task, key, store))

    return GraphDefinition(name=name, node_defs=[_decide]).to_job(
        tags={PIPELINE_TAG: pipeline.name, "infrakitchen/job": "approve"},
        executor_def=in_process_executor,
        description=f"Approve or reject an approval request of {pipeline.name} (owner or "
                    "admin; the rules of `ik approve`)")


def _refuse(context: OpExecutionContext, message: str) -> NoReturn:
    """A decision that was not taken: one line, and the run fails."""
    context.log.error(message)
    raise Failure(description=message, allow_retries=False)
