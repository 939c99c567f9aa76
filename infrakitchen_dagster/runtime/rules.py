"""The reference's create validations and the task's value rules: checked before any tofu
runs, so a refusal costs nothing and changes nothing."""

from __future__ import annotations

from typing import Any

from ..graph import Node
from ..module_schema import ModuleSchemaError
from ..store import RecordView, State
from ..tofu import module_required_variables
from ..value_rules import describe, violation
from .context import RunContext
from .errors import TaskFailure
from .resolve import ResolvedTask


def check_parents(ctx: RunContext, node: Node) -> None:
    for parent in ctx.graph.resource_parents(node.name):
        record = ctx.record(parent)
        if record is None or record.state != State.PROVISIONED:
            state = f"{record.state}/{record.status}" if record else "not created"
            raise TaskFailure(f"parent {parent!r} must be provisioned first (it is {state})")


def check_required(resolved: ResolvedTask) -> None:
    """The reference's "required variables must be provided", before tofu would ask."""
    node = resolved.node
    if node.kind != "resource" or resolved.module_dir is None:
        return
    try:
        required = module_required_variables(resolved.module_dir)
    except ModuleSchemaError as exc:
        raise TaskFailure(f"module {node.task.module!r}: {exc}") from None
    missing = sorted(required - set(resolved.variables))
    if missing:
        raise TaskFailure(f"module {node.task.module!r} requires variables that are not "
                          f"set: {', '.join(missing)} (set them under `variables`, or "
                          "inherit them through dependency_configs)")


def check_rules(resolved: ResolvedTask) -> None:
    """Each `rules` entry against the value the task resolved to (a variable the task does
    not set is the module's default: the module's own business). A sensitive value is
    never repeated in the refusal."""
    node = resolved.node
    for name, rule in node.task.rules.items():
        if name not in resolved.variables:
            continue
        value = resolved.variables[name]
        broken = violation(rule, value)
        if broken is not None:
            raise TaskFailure(describe(node.name, name, value, broken,
                                       sensitive=name in resolved.sensitive))


def check_frozen_and_unique(ctx: RunContext, record: RecordView,
                            resolved: ResolvedTask) -> None:
    node, variables = resolved.node, resolved.variables
    if record.state in (State.PROVISIONED, State.DESTROY):
        for name in node.task.frozen:
            if name in record.variables and record.variables.get(name) != variables.get(name):
                shown = "(sensitive)" if name in record.sensitive_variables else (
                    f"{record.variables.get(name)!r} -> {variables.get(name)!r}")
                raise TaskFailure(
                    f"variable {name!r} is frozen and may not change once provisioned "
                    f"({shown})")
    for name in node.task.unique:
        if name in variables:
            _check_unique(ctx, record, node, name, variables[name])


def _check_unique(ctx: RunContext, record: RecordView, node: Node, name: str,
                  value: Any) -> None:
    for other in ctx.store.records():
        if other.id == record.id or other.module != node.task.module:
            continue
        if other.state == State.DESTROYED:
            continue
        if other.variables.get(name) == value:
            raise TaskFailure(  # the value itself is not repeated: it may be secret
                f"variable {name!r} must be unique among resources of module "
                f"{node.task.module!r}, but {other.pipeline}/{other.task} "
                f"({other.environment}) already uses the same value")
