"""Provision and update one resource (or an abstract record): create, check, plan, apply.

An unchanged resource (same fingerprint, provisioned and done) runs no tofu at all. Under
an approval flow the apply goes through `gate`.
"""

from __future__ import annotations

from ..access import Permission
from ..graph import Node
from ..interpolation import InterpolationError
from ..store import RecordView, State, Status
from ..store.leases import Leases
from ..store.lifecycle import Action
from ..tofu import TofuWorkspace
from . import gate, policy
from .apply import Change, apply, failed, recreate_if_needed, register, start
from .context import RunContext
from .errors import TaskFailure
from .healing import open_record
from .outcome import Outcome, OutcomeStatus
from .resolve import ResolvedTask, Resolver
from .rules import check_frozen_and_unique, check_parents, check_required, check_rules


def provision(ctx: RunContext, node: Node, timeout: float | None = None) -> Outcome:
    """Create / provision / update one resource (or an abstract record).

    Under an approval flow nothing is applied without an approved request for this exact
    configuration; see `gate.provision_gated`.
    """
    existing = ctx.record(node.name)
    approved = (existing is not None and ctx.gated(node)
                and gate.approved_request(ctx, existing, gate.PROVISION_OPS) is not None)
    if not approved:  # an approved request carries its approver's authority
        ctx.require(Permission.REQUEST, f"provision of {node.name}")
    record = open_record(ctx, node)
    if record.state == State.DESTROY:
        reason = (f"a destroy of {node.name} is under way ({record.state}/{record.status}); "
                  "finish it, or reject its request to keep the resource, before "
                  "provisioning again")
        ctx.progress(f"{node.name}: not provisioned: {reason}")
        return Outcome(OutcomeStatus.BLOCKED, record, reason=reason)
    resolved = _resolve_checked(ctx, node, record)
    if node.kind == "abstract":
        return _record_abstract(ctx, recreate_if_needed(ctx, record), resolved)
    lines: list[str] = []
    workspace = ctx.workspace_for(resolved, timeout=timeout, lines=lines)
    if unchanged(ctx, record, resolved, workspace):
        ctx.progress(
            f"{node.name}: unchanged since revision {record.revision}; not running tofu")
        record = ctx.move(record, Action.UNCHANGED,
                          details={"fingerprint": resolved.fingerprint}, **resolved.context)
        register(ctx, node, record.outputs, set(record.sensitive_outputs))
        return Outcome(OutcomeStatus.UNCHANGED, record, dict(record.outputs),
                       set(record.sensitive_outputs), tofu_version=ctx.tofu.version())
    change = Change(resolved, workspace, lines)
    with workspace.locked(ctx.progress), Leases(ctx.store).held(record.id, ctx.run_id):
        if ctx.gated(node):
            return gate.provision_gated(ctx, record, change)
        if resolved.policies is not None:  # the plan is judged before it is applied
            return policy.provision_checked(ctx, record, change)
        record = start(ctx, recreate_if_needed(ctx, record), resolved.fingerprint)
        try:
            workspace.prepare(resolved.variables)
            ctx.progress(f"{node.name}: " + ("tofu init done" if workspace.init()
                                             else "init skipped (module and backend "
                                                  "unchanged)"))
        except BaseException as exc:
            failed(ctx, record, exc)
            raise
        return apply(ctx, record, change)


def unchanged(ctx: RunContext, record: RecordView, resolved: ResolvedTask,
              workspace: TofuWorkspace) -> bool:
    """Nothing to do: provisioned and done with this exact configuration, and (where it
    can be read without tofu) the state is the one the last apply left."""
    if ctx.force or (record.state, record.status) != (State.PROVISIONED, Status.DONE):
        return False
    if record.fingerprint != resolved.fingerprint:
        return False
    if record.state_serial is None:
        return True  # applied before state identities were kept, or a remote backend
    identity = workspace.local_state_identity()
    return identity is None or identity == (record.state_serial, record.state_lineage)


def up_to_date(ctx: RunContext, node: Node) -> bool:
    """Whether provisioning `node` would do nothing at all: for a launcher deciding that
    no run is needed. Anything unclear (no record, a value that does not resolve, a
    record in progress) says no, and the run will tell."""
    record = ctx.record(node.name)
    if node.kind != "resource" or record is None:
        return False
    try:
        resolved = Resolver(ctx).resolve(node)
    except (InterpolationError, TaskFailure):
        return False
    workspace = ctx.workspace_for(resolved, timeout=None)
    return unchanged(ctx, record, resolved, workspace)


def _resolve_checked(ctx: RunContext, node: Node, record: RecordView) -> ResolvedTask:
    """Resolve once and run the create validations; a refusal is audited."""
    try:
        check_parents(ctx, node)
        resolved = Resolver(ctx).resolve(node)
        check_rules(resolved)
        check_required(resolved)
        check_frozen_and_unique(ctx, record, resolved)
    except (InterpolationError, TaskFailure) as exc:
        ctx.audit("provision_refused", node.name, {"error": str(exc)})
        raise TaskFailure(f"{node.name}: {exc}") from None
    if resolved.module_dir is None and node.kind == "resource":
        # a git source was resolved above; anything else remote is refused by validation
        raise TaskFailure(f"{node.name}: module {node.task.module!r} is neither a local "
                          "directory nor a git source (git::URL//subdir?ref=REF)")
    return resolved


def _record_abstract(ctx: RunContext, record: RecordView, resolved: ResolvedTask) -> Outcome:
    """Abstract records have no infrastructure: the lifecycle moves without tofu."""
    if record.state == State.PROVISIONED and record.fingerprint == resolved.fingerprint:
        return Outcome(OutcomeStatus.UNCHANGED, record)
    updating = record.state == State.PROVISIONED
    begin, done = ((Action.UPDATE_START, Action.UPDATE_SUCCESS) if updating
                   else (Action.PROVISION_START, Action.PROVISION_SUCCESS))
    record = ctx.move(record, begin)
    variables = resolved.variables
    record = ctx.move(
        record, done, bump_revision=updating, details={"abstract": True},
        variables=variables, sensitive_variables=sorted(resolved.sensitive & set(variables)),
        fingerprint=resolved.fingerprint, **resolved.context)
    return Outcome(OutcomeStatus.APPLIED, record)
