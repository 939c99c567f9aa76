"""Dry runs: the plan job (today's values, no record changes) and drift checks (the
values the record was applied with, so a pending change is not mistaken for drift)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..graph import Node
from ..store import State
from ..tofu import PlanSummary
from .changes import ResourceChange, parse_changes
from .context import RunContext
from .outcome import Drift
from .resolve import Resolver
from .rules import check_rules

#: "  # null_resource.this will be created" -> (address, what happens)
_PLANNED_CHANGE = re.compile(r"^\s*# (\S+) (.*\b(?:will|must) be\b.*)$")


@dataclass(frozen=True)
class DryRun:
    """What a dry run would do: the counts and each resource change, read from the same
    plan output the apply's metadata reads (sensitive values are masked by tofu)."""

    summary: PlanSummary
    changes: list[ResourceChange]


def plan(ctx: RunContext, node: Node) -> DryRun:
    """A dry run: `tofu plan` with today's values; no record changes."""
    resolved = Resolver(ctx).resolve(node)
    check_rules(resolved)  # a value the apply would refuse is refused by its dry run too
    lines: list[str] = []
    workspace = ctx.workspace_for(resolved, timeout=node.task.timeout, lines=lines)
    with workspace.locked(ctx.progress):
        workspace.prepare(resolved.variables)
        workspace.init()
        summary, plan_file = workspace.plan()
        plan_file.unlink(missing_ok=True)
    return DryRun(summary, parse_changes(lines))


def drift(ctx: RunContext, node: Node) -> Drift | None:
    """`plan -detailed-exitcode` against the applied values: does reality still match?

    None when there is nothing provisioned to check.
    """
    record = ctx.record(node.name)
    if record is None or record.state != State.PROVISIONED or node.kind != "resource":
        return None
    resolved = Resolver(ctx).resolve(node, variables=record.variables)
    workspace = ctx.workspace_for(resolved, timeout=node.task.timeout,
                                  secrets=record.secrets)
    with workspace.locked(ctx.progress):
        workspace.prepare(record.variables)
        workspace.init()
        code, summary, result = workspace.detailed_plan()
    changes = [f"{m.group(1)} {m.group(2)}" for line in result.lines
               if (m := _PLANNED_CHANGE.match(line))]
    found = Drift(drifted=code == 2, plan=summary, changes=changes)
    ctx.store.record_drift(record, found.as_dict(), actor=ctx.actor, run_id=ctx.run_id)
    if found.drifted and not (record.drift or {}).get("drifted"):
        # told once when drift appears, not on every scheduled check while it lasts
        ctx.notify("drift_detected", record, plan=summary.as_dict(), changes=changes,
                   revision=record.revision)
    return found
