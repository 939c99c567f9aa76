"""The policy step: a saved plan, shown as JSON, judged by the pipeline's Rego policies
before anything is applied.

Every path that applies a plan goes through `check_plan` when the pipeline has policies:
an ungated provision or update (`provision_checked`: plan to a file, check, apply that
file), an ungated destroy (`planned_destroy`), a gated plan filed for approval and the
approved plan again just before it is applied (`gate.py`). A `deny` raises `PolicyDenied`
before any record moves or any apply starts; the verdict (deny and warn messages, the
policies' digest) is kept on the record either way. Without policies none of this runs and
no extra tofu process is started.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..graph import Node
from ..interpolation import to_text
from ..policy import PolicyError, PolicySet, Verdict
from ..store import RecordView, State, Status
from ..store.lifecycle import Action
from ..tofu import TofuWorkspace
from .apply import Change, apply, failed, recreate_if_needed, start
from .context import RunContext
from .errors import TaskFailure
from .outcome import Outcome
from .resolve import Resolver


class PolicyDenied(TaskFailure):
    """A policy denied the plan: nothing was applied. Carries the verdict for the caller
    that reports it (the Dagster `policy` check)."""

    def __init__(self, task: str, verdict: Verdict):
        self.task, self.verdict = task, verdict
        super().__init__(f"{task}: policy denied the {verdict.operation} plan: "
                         + "; ".join(verdict.deny))


def about(ctx: RunContext, node: Node, operation: str) -> dict[str, Any]:
    """`data.infrakitchen`: where the plan comes from."""
    return {"pipeline": ctx.pipeline.name, "task": node.name, "environment": ctx.environment,
            "labels": dict(node.task.labels), "operation": operation}


def check_plan(ctx: RunContext, node: Node, policies: PolicySet | None,
               workspace: TofuWorkspace, plan_file: Path, operation: str,
               secrets: set[str] | frozenset[str]) -> Verdict | None:
    """Judge `plan_file`; keep the verdict on the record; raise `PolicyDenied` on a deny.

    None (and no tofu call) when the pipeline has no policies.
    """
    if policies is None:
        return None
    document = workspace.show_json(plan_file)
    # a message may quote any value of the plan: mask this resource's own secrets too
    # (its sensitive outputs, and what the plan marks sensitive before and after)
    record = ctx.record(node.name)
    secrets = set(secrets) | plan_secrets(document) | set(record.secrets if record else ())
    try:
        verdict = policies.evaluate(document, about(ctx, node, operation), secrets,
                                    operation=operation)
    except PolicyError as exc:
        raise TaskFailure(f"{node.name}: {exc}") from None
    keep(ctx, node, verdict)
    ctx.progress(f"{node.name}: policy {verdict.summary()}")
    if verdict.denied:
        if record is not None:  # no record moves on a deny: tell the failure from here
            ctx.notify("failed", record, operation=operation,
                       error="denied by policy: " + "; ".join(verdict.deny))
        raise PolicyDenied(node.name, verdict)
    return verdict


def _leaves(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for item in value.values():
            yield from _leaves(item)
    elif isinstance(value, list):
        for item in value:
            yield from _leaves(item)
    elif value is not None and value != "":
        yield to_text(value)


def _marked(value: Any, marks: Any) -> Iterator[str]:
    """The leaves of `value` that `marks` (tofu's `*_sensitive` shape) flags as sensitive."""
    if marks is True:
        yield from _leaves(value)
    elif isinstance(marks, dict) and isinstance(value, dict):
        for key, mark in marks.items():
            yield from _marked(value.get(key), mark)
    elif isinstance(marks, list) and isinstance(value, list):
        for item, mark in zip(value, marks, strict=False):
            yield from _marked(item, mark)


def _module_secrets(module: dict[str, Any]) -> Iterator[str]:
    for resource in module.get("resources") or []:
        yield from _marked(resource.get("values"), resource.get("sensitive_values"))
    for child in module.get("child_modules") or []:
        yield from _module_secrets(child)


def plan_secrets(document: dict[str, Any]) -> set[str]:
    """Every value a plan document (`tofu show -json`) marks sensitive: resource changes
    before and after, the prior state, and sensitive outputs."""
    found: set[str] = set()
    for change in document.get("resource_changes") or []:
        detail = change.get("change") or {}
        for side in ("before", "after"):
            found.update(_marked(detail.get(side), detail.get(f"{side}_sensitive")))
    prior = ((document.get("prior_state") or {}).get("values") or {}).get("root_module")
    if prior:
        found.update(_module_secrets(prior))
    for output in ((document.get("planned_values") or {}).get("outputs") or {}).values():
        if output.get("sensitive"):
            found.update(_leaves(output.get("value")))
    return found


def keep(ctx: RunContext, node: Node, verdict: Verdict) -> None:
    """The verdict on the record (`policy`) and in the audit log.

    A verdict is an observation about a plan, like a drift check, not a lifecycle move:
    it is kept whatever state the record is in (a gated request filed, a deny that
    leaves the record as it was).
    """
    ctx.store.record_policy(ctx.pipeline.name, node.name, ctx.environment,
                            verdict.as_dict(), run_id=ctx.run_id)
    ctx.audit("policy_denied" if verdict.denied else "policy_passed", node.name,
              {"operation": verdict.operation, "digest": verdict.digest,
               "deny": list(verdict.deny), "warn": list(verdict.warn)})


def provision_checked(ctx: RunContext, record: RecordView, change: Change) -> Outcome:
    """An ungated provision or update under policies: plan to a file, judge it, then
    apply exactly that file (without policies the plan and apply are one tofu call)."""
    resolved, workspace = change.resolved, change.workspace
    operation = "update" if record.state == State.PROVISIONED else "provision"
    try:
        workspace.prepare(resolved.variables)
        workspace.init()
        plan, plan_file = workspace.plan()
    except BaseException as exc:
        failed(ctx, start(ctx, recreate_if_needed(ctx, record), resolved.fingerprint), exc)
        raise
    try:
        check_plan(ctx, resolved.node, resolved.policies, workspace, plan_file, operation,
                   resolved.secrets)
        record = start(ctx, recreate_if_needed(ctx, record), resolved.fingerprint)
        return apply(ctx, record, change, (plan, plan_file))
    finally:
        plan_file.unlink(missing_ok=True)  # it holds the variables, secrets included


def planned_destroy(ctx: RunContext, node: Node, record: RecordView,
                    policies: PolicySet | None, workspace: TofuWorkspace,
                    secrets: set[str] | frozenset[str]) -> Path | None:
    """A judged destroy plan to apply instead of `tofu destroy`; None without policies."""
    if policies is None:
        return None
    workspace.prepare(record.variables)
    workspace.init()
    _plan, plan_file = workspace.plan(destroy=True)
    try:
        check_plan(ctx, node, policies, workspace, plan_file, "destroy", secrets)
    except BaseException:
        plan_file.unlink(missing_ok=True)
        raise
    return plan_file


def cancel_destroy(ctx: RunContext, node: Node, denied: PolicyDenied) -> None:
    """A denied destroy leaves the resource provisioned: a destroy the gate had begun
    (requested, or approved) is cancelled instead of blocking the next provision."""
    record = ctx.record(node.name)
    if record is not None and record.state == State.DESTROY and record.status in (
            Status.READY, Status.ERROR, Status.REJECTED, Status.APPROVAL_PENDING):
        ctx.move(record, Action.CANCEL_DESTROY, details={"reason": str(denied)[-500:]})


def dry_run(ctx: RunContext, node: Node) -> Verdict | None:
    """Today's configuration judged by today's policies, nothing applied or recorded (the
    `policy` check run on its own). None when the pipeline has no policies."""
    resolved = Resolver(ctx).resolve(node)
    if resolved.policies is None:
        return None
    record = ctx.record(node.name)
    operation = ("update" if record is not None and record.state == State.PROVISIONED
                 else "provision")
    workspace = ctx.workspace_for(resolved, timeout=node.task.timeout)
    with workspace.locked(ctx.progress):
        workspace.prepare(resolved.variables)
        workspace.init()
        _plan, plan_file = workspace.plan()
        try:
            document = workspace.show_json(plan_file)
        finally:
            plan_file.unlink(missing_ok=True)
    try:
        return resolved.policies.evaluate(document, about(ctx, node, operation),
                                          resolved.secrets, operation=operation)
    except PolicyError as exc:
        raise TaskFailure(f"{node.name}: {exc}") from None
