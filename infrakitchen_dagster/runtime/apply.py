"""Applying a plan to a record: the moves around it and merging what tofu produced.

Shared by the ungated path (`provision`) and the approved path (`gate`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..graph import Node
from ..notify import plan_text
from ..store import RecordView, State, Status
from ..store.lifecycle import Action
from ..tofu import PlanSummary, TofuWorkspace
from .changes import parse_changes
from .context import RunContext
from .errors import TaskFailure
from .outcome import Outcome, OutcomeStatus
from .resolve import ResolvedTask, carrying


@dataclass
class Change:
    """A resolved task on its way to tofu: where it runs and what tofu printed."""

    resolved: ResolvedTask
    workspace: TofuWorkspace
    lines: list[str] = field(default_factory=list)


def recreate_if_needed(ctx: RunContext, record: RecordView) -> RecordView:
    """The reference's Recreate: from destroyed, or from a rejected provision."""
    if record.state == State.DESTROYED or (record.state == State.PROVISION
                                          and record.status == Status.REJECTED):
        return ctx.move(record, Action.RECREATE)
    return record


def start(ctx: RunContext, record: RecordView, fingerprint: str) -> RecordView:
    action = (Action.UPDATE_START if record.state == State.PROVISIONED
              else Action.PROVISION_START)
    return ctx.move(record, action, details={"fingerprint": fingerprint})


def failed(ctx: RunContext, record: RecordView, exc: BaseException) -> None:
    action = (Action.UPDATE_FAILURE if record.state == State.PROVISIONED
              else Action.PROVISION_FAILURE)
    message = str(exc) or type(exc).__name__
    ctx.move(record, action, details={"error": message[-2000:]}, error=message[-4000:])


def apply(ctx: RunContext, record: RecordView, change: Change,
          saved: tuple[PlanSummary, Path] | None = None,
          request_id: int | None = None) -> Outcome:
    """Apply to a record already `in_progress`, then merge the result.

    `saved`: an approved plan (its summary, its file) to apply exactly; without one, plan
    and apply happen in one tofu process, as nobody reviews that plan. `request_id`: the
    approved request applied (audited with the success, and named by its notification).
    """
    resolved, workspace = change.resolved, change.workspace
    updating = record.state == State.PROVISIONED
    name = resolved.node.name
    try:
        if saved is not None:
            plan, plan_file = saved
            ctx.progress(f"{name}: applying the saved plan ({plan_text(plan.as_dict())})")
            workspace.apply_saved(plan_file)
        else:
            ctx.progress(f"{name}: planning and applying")
            plan, _result = workspace.apply_now()
        raw_outputs, identity = workspace.applied()
    except BaseException as exc:
        failed(ctx, record, exc)
        raise
    outputs = {k: v.get("value") for k, v in raw_outputs.items()}
    sensitive_outputs = {k for k, v in raw_outputs.items() if v.get("sensitive")}
    sensitive_outputs |= carrying(outputs, resolved.secrets)
    record = ctx.move(
        record, Action.UPDATE_SUCCESS if updating else Action.PROVISION_SUCCESS,
        bump_revision=updating,
        details={"plan": plan.as_dict(),
                 **({"request_id": request_id} if request_id is not None else {}),
                 **({"source": resolved.source} if resolved.source else {})},
        variables=resolved.variables, outputs=outputs,
        sensitive_variables=sorted(resolved.sensitive & set(resolved.variables)),
        sensitive_outputs=sorted(sensitive_outputs), fingerprint=resolved.fingerprint,
        module_hash=resolved.module_hash, error=None, **resolved.context,
        state_serial=identity[0] if identity else None,
        state_lineage=identity[1] if identity else None)
    register(ctx, resolved.node, outputs, sensitive_outputs)
    ctx.progress(f"{name}: Apply complete: {plan.add} added, {plan.change} changed, "
                 f"{plan.destroy} destroyed")
    return Outcome(OutcomeStatus.APPLIED, record, outputs, sensitive_outputs, plan,
                   log_tail="\n".join(change.lines[-20:]), tofu_version=ctx.tofu.version(),
                   changes=parse_changes(change.lines))


def register(ctx: RunContext, node: Node, outputs: dict[str, Any], sensitive: set[str]) -> None:
    wanted = {name: outputs[name] for name in node.registers if name in outputs}
    missing = [name for name in node.registers if name not in outputs]
    if missing:
        raise TaskFailure(f"{node.name}: register names outputs the module does not "
                          f"produce: {', '.join(missing)}")
    if wanted:
        ctx.store.register(ctx.pipeline.name, ctx.environment, wanted, task=node.name,
                           sensitive=sensitive, run_id=ctx.run_id)
