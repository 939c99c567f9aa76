"""Command tasks: `/bin/sh -c` with every value quoted for the shell context it lands in,
and also exported as `IK_<NAME>`; the last output line may be registered."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..graph import Node
from ..interpolation import (
    Condition,
    InterpolationError,
    Ref,
    env_name,
    render,
    render_shell,
    to_text,
)
from ..process import ProcessResult, run_streaming
from .context import RunContext
from .errors import TaskFailure
from .outcome import Outcome, OutcomeStatus
from .resolve import Lookup, Resolver


def run_command(ctx: RunContext, node: Node, timeout: float | None = None,
                extra: dict[str, Any] | None = None) -> Outcome:
    """Run a `cmd` task with `/bin/sh -c`, values quoted for their shell context."""
    resolver = Resolver(ctx)
    resolve, secrets = resolver.lookup(node, extra)
    try:
        if node.task.if_:
            condition = Condition.parse(node.task.if_)
            if not condition.evaluate(resolve):
                reason = f"condition {node.task.if_!r} is false"
                ctx.progress(f"{node.name}: skipped, {reason}")
                return Outcome(OutcomeStatus.SKIPPED, reason=reason)
        assert node.task.cmd is not None
        script = render_shell(node.task.cmd, resolve)
        env, env_secrets, _digests = resolver.env(node, resolve)
        exported = _exported_values(resolver, node, resolve, extra)
        cwd = _working_dir(ctx, node, resolve)
    except (InterpolationError, TaskFailure) as exc:
        raise TaskFailure(f"{node.name}: {exc}") from None
    secrets |= env_secrets
    base = ({"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
             "HOME": os.environ.get("HOME", "/")}
            if node.task.clean_env else dict(os.environ))
    full_env = {**base, **exported, **env}
    lines: list[str] = []

    def on_line(line: str) -> None:
        lines.append(line)
        ctx.log(line)

    result: ProcessResult = run_streaming(
        ["/bin/sh", "-c", script], cwd=cwd, env=full_env, on_line=on_line,
        secrets=secrets, timeout=timeout, grace=ctx.tofu.timeout_grace_seconds)
    if result.returncode != 0:
        message = (f"{node.name}: command exited with code {result.returncode}\n"
                   f"{result.tail(10)}")
        if node.task.ignore_failure:
            ctx.progress(f"{node.name}: failure ignored (ignore_failure = true)")
            return Outcome(OutcomeStatus.IGNORED_FAILURE, duration=result.duration,
                           log_tail=result.tail(20), reason=message)
        raise TaskFailure(message)
    registered: dict[str, Any] = {}
    if node.registers:
        last = next((line for line in reversed(result.lines) if line.strip()), "")
        registered = {node.registers[0]: last.strip()}
        ctx.store.register(ctx.pipeline.name, ctx.environment, registered,
                           task=node.name, sensitive=set(), run_id=ctx.run_id)
    return Outcome(OutcomeStatus.RAN, registered=registered, duration=result.duration,
                   log_tail=result.tail(20))


def _exported_values(resolver: Resolver, node: Node, resolve: Lookup,
                     extra: dict[str, Any] | None) -> dict[str, str]:
    """`IK_<NAME>` for every value the command could reference."""
    names = set(resolver.pipeline_vars()) | set(node.matrix) | set(extra or {})
    names |= set(resolver.registered())
    exported: dict[str, str] = {}
    for name in names:
        try:
            exported[env_name(name)] = to_text(resolve(Ref(name)))
        except InterpolationError:
            continue
    return exported


def _working_dir(ctx: RunContext, node: Node, resolve: Lookup) -> Path:
    source_dir = ctx.pipeline.source_dir
    if not node.task.working_dir:
        return source_dir
    directory = Path(to_text(render(node.task.working_dir, resolve))).expanduser()
    directory = directory if directory.is_absolute() else source_dir / directory
    if not directory.is_dir():
        raise TaskFailure(f"working_dir {str(directory)!r} does not exist")
    return directory
