"""Destroy one resource, and the forensic teardown that destroys after a failure.

A requested destroy (destroy job, `ik destroy`) checks roles, children and the approval
flow; a teardown is the pipeline's own clean-up and skips them, but never destroys a gated
resource the failed run did not apply.
"""

from __future__ import annotations

import json
from typing import Any

from ..access import Permission
from ..approvals import ApprovalRequest, Operation, RequestStatus
from ..graph import TEARDOWN_BUILTINS, Node
from ..policy import PolicySet
from ..store import RecordView, State
from ..store.leases import Leases
from ..store.lifecycle import Action
from ..tofu import TofuWorkspace
from . import policy
from .commands import run_command
from .context import RunContext
from .errors import TaskFailure
from .gate import approved_request, awaiting, current_saved_plan, file_request
from .outcome import Outcome, OutcomeStatus
from .resolve import Resolver

DESTROY_OPS = (Operation.DESTROY.value,)


def dependency_payload(blocking: list[RecordView]) -> dict[str, Any]:
    """The reference's error body when a destroy is blocked by children."""
    return {"error": "Cannot destroy resource", "reason": "Dependencies exist",
            "dependencies": [{"resource_id": r.id, "resource_name": r.task, "state": r.state}
                             for r in blocking]}


def blocking_children(ctx: RunContext, name: str) -> list[RecordView]:
    """Children whose infrastructure exists (provisioned, or on the way to destroyed).

    A child still in `provision` never got a complete apply (waiting, rejected, failed
    and cleaned); counting it would block its parent's destroy for good, since such a
    child can be neither destroyed nor deleted.
    """
    result = []
    for child in ctx.graph.resource_children(name):
        record = ctx.record(child)
        if record is not None and record.state in (State.PROVISIONED, State.DESTROY):
            result.append(record)
    return result


def destroy(ctx: RunContext, name: str, timeout: float | None = None, reason: str = "destroy",
            *, requested: bool = False) -> Outcome:
    """`tofu destroy` one resource; a no-op for what is not provisioned.

    `requested`: a user asked for it (destroy job, `ik destroy`), so roles, children and
    the approval flow apply. A teardown after a failure is the pipeline's own cleanup
    and skips them.
    """
    node = ctx.graph.nodes[name]
    record = ctx.record(name)
    if record is None or record.state == State.DESTROYED:
        ctx.progress(f"{name}: nothing to destroy ({record.state if record else 'no record'})")
        return Outcome(OutcomeStatus.SKIPPED, record, reason="not provisioned")
    if requested:
        blocking = blocking_children(ctx, name)
        if blocking:
            payload = dependency_payload(blocking)
            ctx.audit("destroy_refused", name, payload)
            raise TaskFailure(f"{name}: {json.dumps(payload)}")
    gated_destroy = requested and ctx.gated(node) and record.state != State.PROVISION
    approved = approved_request(ctx, record, DESTROY_OPS) if gated_destroy else None
    if requested and approved is None:
        ctx.require(Permission.REQUEST if gated_destroy else Permission.DESTROY,
                    f"destroy of {name}")
    if node.kind == "abstract" or record.kind == "abstract":
        return _destroy_abstract(ctx, record)
    resolved = Resolver(ctx).resolve(node, variables=record.variables)
    lines: list[str] = []
    workspace = ctx.workspace_for(resolved, timeout=timeout, lines=lines,
                                  secrets=record.secrets)
    with workspace.locked(ctx.progress), Leases(ctx.store).held(record.id, ctx.run_id):
        if record.state == State.PROVISION:
            return _destroy_partial(ctx, node, record, workspace, reason)
        try:
            if gated_destroy:
                if approved is None:
                    return _request_destroy(ctx, node, record, workspace, resolved.policies)
                return _destroy_approved(ctx, node, record, workspace, approved, lines,
                                         resolved.policies)
        except policy.PolicyDenied as exc:
            policy.cancel_destroy(ctx, node, exc)  # the resource stays as it is
            raise
        # under policies: a destroy plan, judged before any move, applied instead
        planned = policy.planned_destroy(ctx, node, record, resolved.policies, workspace,
                                         set(workspace.secrets))
        if record.state == State.PROVISIONED:
            record = ctx.move(record, Action.DESTROY_REQUEST, details={"reason": reason})
        record = ctx.move(record, Action.DESTROY_START)
        try:
            if planned is not None:
                workspace.apply_saved(planned)
            else:
                workspace.prepare(record.variables)
                workspace.init()
                workspace.destroy()
        except BaseException as exc:
            _destroy_failed(ctx, record, exc)
            raise
        finally:
            if planned is not None:
                planned.unlink(missing_ok=True)
        return _destroyed(ctx, record, reason, lines)


def _destroy_abstract(ctx: RunContext, record: RecordView) -> Outcome:
    """Abstract records have no infrastructure: the transitions without tofu."""
    if record.state == State.PROVISIONED:
        record = ctx.move(record, Action.DESTROY_REQUEST)
    record = ctx.move(record, Action.DESTROY_START)
    record = ctx.move(record, Action.DESTROY_SUCCESS, outputs={})
    return Outcome(OutcomeStatus.DESTROYED, record)


def _destroy_partial(ctx: RunContext, node: Node, record: RecordView,
                     workspace: TofuWorkspace, reason: str) -> Outcome:
    """A failed first apply may have left resources behind: clean them, keep the
    record in `provision` (the state table allows no other move from there)."""
    if workspace.path.is_dir():
        resolver = Resolver(ctx)
        variables = record.variables or resolver.tfvars(node, resolver.lookup(node)[0])
        workspace.prepare(variables)
        workspace.init()
        workspace.destroy()
    ctx.audit("destroy_partial_state", node.name, {"reason": reason})
    return Outcome(OutcomeStatus.DESTROYED, record, reason="partial state cleaned")


def _destroy_failed(ctx: RunContext, record: RecordView, exc: BaseException) -> None:
    ctx.move(record, Action.DESTROY_FAILURE, details={"error": str(exc)[-2000:]},
             error=str(exc)[-4000:])


def _destroyed(ctx: RunContext, record: RecordView, reason: str, lines: list[str],
               request_id: int | None = None) -> Outcome:
    details: dict[str, Any] = {"reason": reason}
    if request_id is not None:
        details["request_id"] = request_id
    record = ctx.move(record, Action.DESTROY_SUCCESS, details=details,
                      outputs={}, sensitive_outputs=[], error=None)
    return Outcome(OutcomeStatus.DESTROYED, record, log_tail="\n".join(lines[-20:]))


def _request_destroy(ctx: RunContext, node: Node, record: RecordView,
                     workspace: TofuWorkspace, policies: PolicySet | None = None) -> Outcome:
    pending = ctx.approvals.latest(record, DESTROY_OPS)
    if pending is not None and pending.status == RequestStatus.PENDING:
        return awaiting(ctx, node, record, pending)
    if record.state == State.PROVISIONED:
        record = ctx.move(record, Action.DESTROY_REQUEST, details={"reason": "destroy"})
    return file_request(ctx, node, record, workspace, Operation.DESTROY,
                        variables=record.variables, fingerprint=record.fingerprint or "",
                        sensitive=set(), policies=policies)


def _destroy_approved(ctx: RunContext, node: Node, record: RecordView,
                      workspace: TofuWorkspace, request: ApprovalRequest,
                      lines: list[str], policies: PolicySet | None = None) -> Outcome:
    saved = current_saved_plan(ctx, node, request, workspace, record.variables,
                               policies=policies)
    if saved is None:
        return _request_destroy(ctx, node, record, workspace, policies)
    ctx.progress(f"{node.name}: destroying with the plan approved in request "
                 f"{request.id} by {request.decided_by}")
    record = ctx.move(record, Action.DESTROY_START, details={"request_id": request.id})
    try:
        workspace.apply_saved(saved)
    except BaseException as exc:
        _destroy_failed(ctx, record, exc)
        ctx.approvals.mark(request.id, RequestStatus.FAILED, actor=ctx.actor,
                           run_id=ctx.run_id, reason=(str(exc) or "failed")[-500:])
        raise
    ctx.approvals.mark(request.id, RequestStatus.APPLIED, actor=ctx.actor, run_id=ctx.run_id)
    outcome = _destroyed(ctx, record, "destroy", lines, request.id)
    outcome.request_id = request.id
    return outcome


def _touched_by(ctx: RunContext, name: str, run_id: str | None) -> bool:
    """Whether `run_id` applied (or tried to apply) the resource `name`."""
    if not run_id:
        return False
    applied = {"provision_start", "update_start"}
    return any(e["run_id"] == run_id and e["action"] in applied
               and e["environment"] == ctx.environment
               for e in ctx.store.audit_entries(ctx.pipeline.name, name))


def run_teardown(ctx: RunContext, teardown: str, failed_task: str, error_message: str,
                 failed_run_id: str | None = None) -> list[str]:
    """Run a forensic task: destroy its targets (children first) or run its command.

    Gated resources (approval flow) are destroyed only when the failed run itself
    applied them (or left them half-applied); anything else needs an approved destroy.
    """
    graph = ctx.graph
    node = graph.teardowns.get(teardown) or graph.nodes[teardown]
    ctx.audit("teardown", None, {"teardown": teardown, "failed_task": failed_task})
    if node.task.destroy is not None:
        provisioned = {r.task for r in ctx.store.records(ctx.pipeline.name)
                       if r.environment == ctx.environment and r.state != State.DESTROYED}
        targets = graph.destroy_targets(teardown, provisioned)
        kept = [t for t in targets if ctx.gated(graph.nodes[t])
                and not _touched_by(ctx, t, failed_run_id)]
        if kept:
            ctx.progress(f"teardown {teardown}: keeping {', '.join(kept)} (approval flow: "
                         "not applied by the failed run; destroy them through a request)")
        targets = [t for t in targets if t not in kept]
        ctx.progress(f"teardown {teardown}: destroying {', '.join(targets) or 'nothing'}")
        for target in targets:
            destroy(ctx, target, timeout=node.task.timeout, reason=f"teardown:{teardown}")
        return targets
    builtins = {"failed_task": failed_task, "error_message": error_message,
                "failed_dag": ctx.pipeline.name}
    assert set(builtins) == set(TEARDOWN_BUILTINS)
    run_command(ctx, node, timeout=node.task.timeout, extra=builtins)
    return []
