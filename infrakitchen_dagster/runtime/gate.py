"""The approval gate: nothing gated is applied without an approved request for exactly
this configuration, and then only as exactly the file that was reviewed.

Provision and update file a request (plan saved, run stops); the run after approval
checks the saved plan (sha256, signature where the pipeline signs decisions, the state
not moved since) and applies that file. Destroy requests use the same filing path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..access import Permission
from ..approvals import (
    APPROVED,
    ApprovalError,
    ApprovalRequest,
    Operation,
    RequestStatus,
)
from ..graph import Node
from ..notify import plan_text
from ..policy import PolicySet
from ..store import RecordView, State
from ..tofu import PlanSummary, TofuWorkspace
from . import policy
from .apply import Change, apply, recreate_if_needed, start
from .changes import parse_changes
from .context import RunContext
from .errors import TaskFailure
from .outcome import Outcome, OutcomeStatus

PROVISION_OPS = (Operation.PROVISION.value, Operation.UPDATE.value)


def approved_request(ctx: RunContext, record: RecordView, operations: tuple[str, ...]
                     ) -> ApprovalRequest | None:
    request = ctx.approvals.latest(record, operations)
    return request if request is not None and request.status in APPROVED else None


def provision_gated(ctx: RunContext, record: RecordView, change: Change) -> Outcome:
    """Apply the approved plan for this exact configuration, or ask for one."""
    node, fingerprint = change.resolved.node, change.resolved.fingerprint
    latest = ctx.approvals.latest(record, PROVISION_OPS)
    if latest is not None and latest.fingerprint == fingerprint:
        if latest.status in APPROVED:
            return _apply_approved(ctx, record, change, latest)
        if latest.status == RequestStatus.PENDING:
            return awaiting(ctx, node, record, latest)
        if latest.status == RequestStatus.REJECTED and not ctx.force:
            reason = (f"request {latest.id} for this exact configuration was rejected by "
                      f"{latest.decided_by} ({latest.reason}); change the configuration, "
                      "or run with force to ask again")
            ctx.progress(f"{node.name}: not applied: {reason}")
            return Outcome(OutcomeStatus.REJECTED, record, reason=reason)
    elif latest is not None and latest.status in APPROVED:
        ctx.require(Permission.REQUEST, f"provision of {node.name}")
        ctx.approvals.mark(latest.id, RequestStatus.STALE, actor=ctx.actor, run_id=ctx.run_id,
                           reason="the configuration changed after approval")
    return _request(ctx, record, change)


def _request(ctx: RunContext, record: RecordView, change: Change) -> Outcome:
    """Plan, save the plan with the request, and stop: nothing is applied."""
    resolved = change.resolved
    ctx.require(Permission.REQUEST, f"provision of {resolved.node.name}")
    record = recreate_if_needed(ctx, record)
    operation = (Operation.UPDATE if record.state == State.PROVISIONED
                 else Operation.PROVISION)
    outcome = file_request(ctx, resolved.node, record, change.workspace, operation,
                           variables=resolved.variables, fingerprint=resolved.fingerprint,
                           sensitive=set(resolved.sensitive & set(resolved.variables)),
                           policies=resolved.policies)
    outcome.changes = parse_changes(change.lines)
    return outcome


def file_request(ctx: RunContext, node: Node, record: RecordView, workspace: TofuWorkspace,
                 operation: Operation, *, variables: dict[str, Any], fingerprint: str,
                 sensitive: set[str], policies: PolicySet | None = None) -> Outcome:
    """Plan with `variables`, keep the plan with a new request, and stop there.

    Under `policies` the plan is judged first: a deny files no request.
    """
    workspace.prepare(variables)
    workspace.init()
    ctx.progress(f"{node.name}: planning the {operation.value} for approval")
    plan, plan_file = workspace.plan(destroy=operation == Operation.DESTROY)
    try:
        policy.check_plan(ctx, node, policies, workspace, plan_file, operation.value,
                          set(workspace.secrets))
    except BaseException:
        plan_file.unlink(missing_ok=True)
        raise
    request = ctx.approvals.request(
        record, operation=operation, fingerprint=fingerprint, plan_file=plan_file,
        plan_summary=plan.as_dict(),
        proposed_variables=variables if operation != Operation.DESTROY else {},
        sensitive_variables=sensitive, requested_by=ctx.actor, run_id=ctx.run_id,
        runtime_vars=ctx.runtime_vars)
    plan_file.unlink(missing_ok=True)
    record = ctx.record(node.name) or record
    ctx.notify("approval_requested", record, operation=request.operation,
               request_id=request.id, plan=request.plan_summary, asked_by=request.requested_by)
    return awaiting(ctx, node, record, request, plan)


def awaiting(ctx: RunContext, node: Node, record: RecordView, request: ApprovalRequest,
             plan: PlanSummary | None = None) -> Outcome:
    reason = (f"{request.operation} waits for approval of request {request.id} "
              f"(plan: {plan_text(request.plan_summary)}); an owner or admin runs "
              f"`ik approve {request.id}` or `ik reject {request.id} --reason ...`")
    ctx.progress(f"{node.name}: {reason}")
    return Outcome(OutcomeStatus.APPROVAL_PENDING, record, plan=plan, reason=reason,
                   request_id=request.id)


def current_saved_plan(ctx: RunContext, node: Node, request: ApprovalRequest,
                       workspace: TofuWorkspace, variables: dict[str, Any],
                       policies: PolicySet | None = None) -> Path | None:
    """The request's saved plan, checked and ready to apply in a prepared workspace;
    None (the request marked stale) when the state moved since it was made. A missing
    or altered file, a decision that no longer verifies, or a plan today's `policies`
    deny, fails the request."""
    try:
        saved = ctx.approvals.verified_plan(request, ctx.pipeline)
    except ApprovalError as exc:
        ctx.approvals.mark(request.id, RequestStatus.FAILED, actor=ctx.actor,
                           run_id=ctx.run_id, reason=str(exc))
        raise TaskFailure(f"{node.name}: {exc}") from None
    workspace.prepare(variables)
    workspace.init()
    if workspace.plan_is_stale(saved):
        ctx.progress(f"{node.name}: the state changed since request {request.id} was "
                     "planned; planning again for a new approval")
        ctx.approvals.mark(request.id, RequestStatus.STALE, actor=ctx.actor, run_id=ctx.run_id,
                           reason="the state changed after the plan was made")
        return None
    try:
        policy.check_plan(ctx, node, policies, workspace, saved, request.operation,
                          set(workspace.secrets))
    except policy.PolicyDenied as exc:
        ctx.approvals.mark(request.id, RequestStatus.FAILED, actor=ctx.actor,
                           run_id=ctx.run_id, reason=str(exc)[-500:])
        raise
    return saved


def _apply_approved(ctx: RunContext, record: RecordView, change: Change,
                    request: ApprovalRequest) -> Outcome:
    """Apply exactly the approved file (sha256 checked), unless the state moved."""
    node = change.resolved.node
    saved = current_saved_plan(ctx, node, request, change.workspace, change.resolved.variables,
                               policies=change.resolved.policies)
    if saved is None:
        return _request(ctx, record, change)
    if ctx.run_id:
        ctx.approvals.mark_launched_run(request.id, ctx.run_id)
    ctx.progress(f"{node.name}: applying the plan approved in request {request.id} "
                 f"by {request.decided_by} (sha256 {request.plan_sha256[:12]}…)")
    record = start(ctx, recreate_if_needed(ctx, record), change.resolved.fingerprint)
    try:
        outcome = apply(ctx, record, change, (PlanSummary(**request.plan_summary), saved),
                        request_id=request.id)
    except BaseException as exc:
        ctx.approvals.mark(request.id, RequestStatus.FAILED, actor=ctx.actor,
                           run_id=ctx.run_id, reason=(str(exc) or "failed")[-500:])
        raise
    ctx.approvals.mark(request.id, RequestStatus.APPLIED, actor=ctx.actor, run_id=ctx.run_id)
    outcome.request_id = request.id
    return outcome
