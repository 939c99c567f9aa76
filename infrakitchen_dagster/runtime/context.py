"""The run context every operation shares: who acts, where, and the one way records move.

Operations (provision, gate, destroy, plan, commands, healing) are plain functions taking a
`RunContext`, so the same code serves one op per asset, a batched step, the CLI and sensors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..access import Permission, PermissionDenied
from ..approvals import Approvals, gated
from ..graph import Node, PipelineGraph
from ..notify import EVENT_OF_MOVE, Event, Notifier
from ..spec import Pipeline
from ..store import LifecycleStore, RecordView
from ..store.lifecycle import Action
from ..tofu import BackendSettings, TofuSettings, TofuWorkspace
from .errors import Refused

if TYPE_CHECKING:  # resolve.py builds on this module
    from .resolve import ResolvedTask

Log = Callable[[str], None]


def _never_alive(_run_id: str) -> bool:
    return False


def _ignore_dead_run(_run_id: str, _reason: str) -> None:
    return None


@dataclass
class RunContext:
    graph: PipelineGraph
    environment: str
    store: LifecycleStore
    tofu: TofuSettings
    runtime_vars: dict[str, Any] = field(default_factory=dict)
    actor: str = "dagster"
    run_id: str | None = None
    log: Log = print  # tool output lines
    progress: Log = print  # what the task is doing, one line per step
    force: bool = False
    #: whether a Dagster run is still going (for records without a lease)
    run_is_alive: Callable[[str], bool] = _never_alive
    #: mark a Dagster run whose process died as failed (run id, reason)
    report_dead_run: Callable[[str, str], None] = _ignore_dead_run

    @property
    def pipeline(self) -> Pipeline:
        return self.graph.pipeline

    @cached_property
    def approvals(self) -> Approvals:
        return Approvals(self.store)

    # -- records ----------------------------------------------------------------------

    def record(self, task: str) -> RecordView | None:
        return self.store.get(self.pipeline.name, task, self.environment)

    def move(self, record: RecordView, action: Action, *, details: dict[str, Any] | None = None,
             bump_revision: bool = False, **changes: Any) -> RecordView:
        """The one way an operation moves a record: as this actor, in this run. A move
        that ends an operation (applied, failed, destroyed) is told to the pipeline's
        notifications from here, so no operation has to remember to."""
        moved = self.store.transition(record, action, actor=self.actor, run_id=self.run_id,
                                      details=details, bump_revision=bump_revision, **changes)
        if action in EVENT_OF_MOVE:
            kind, operation = EVENT_OF_MOVE[action]
            facts = details or {}
            self.notify(kind, moved, operation=operation, plan=facts.get("plan"),
                        request_id=facts.get("request_id"), error=facts.get("error"),
                        revision=moved.revision)
        return moved

    @cached_property
    def notifier(self) -> Notifier:
        return Notifier.of(self.pipeline, self.store)

    def notify(self, kind: str, record: RecordView, **facts: Any) -> None:
        """Tell the pipeline's `[notifications]` about `kind` on `record` (nothing when the
        event is not listed); returns at once, delivery runs on its own thread."""
        if self.notifier.wants(kind):
            facts.setdefault("asked_by", self.actor)
            self.notifier.send(Event(kind=kind, pipeline=record.pipeline, task=record.task,
                                     environment=record.environment, run_id=self.run_id,
                                     **facts), secrets=record.secrets)

    def audit(self, action: str, task: str | None, details: dict[str, Any]) -> None:
        self.store.audit(action, actor=self.actor, pipeline=self.pipeline.name, task=task,
                         environment=self.environment, run_id=self.run_id, details=details)

    # -- who may act -----------------------------------------------------------------

    def require(self, permission: Permission, what: str) -> None:
        try:
            self.approvals.access.require(permission, self.pipeline.name, self.actor,
                                          self.pipeline.owners, what)
        except PermissionDenied as exc:
            raise Refused(str(exc)) from None

    def gated(self, node: Node) -> bool:
        return node.kind == "resource" and gated(self.pipeline.approval, node.task.approval)

    # -- where tofu runs -----------------------------------------------------------------

    def working_dir(self, node: Node) -> Path:
        return self.tofu.working_dir(self.pipeline.name, self.environment, node.asset_name)

    def workspace_for(self, resolved: ResolvedTask, *, timeout: float | None,
                      lines: list[str] | None = None,
                      secrets: Iterable[str] = ()) -> TofuWorkspace:
        """The working directory of a resolved task, with its module (the git checkout
        it resolved, for a git source), backend, env and secrets (plus `secrets`)."""
        return self.workspace(resolved.node, backend=resolved.backend, env=resolved.env,
                              secrets=resolved.secrets | set(secrets), timeout=timeout,
                              lines=lines, module_dir=resolved.module_dir)

    def workspace(self, node: Node, *, backend: BackendSettings, env: dict[str, str],
                  secrets: set[str] | frozenset[str], timeout: float | None,
                  lines: list[str] | None = None,
                  module_dir: Path | None = None) -> TofuWorkspace:
        """The node's working directory; every output line is logged (and kept in `lines`)."""

        def on_line(line: str) -> None:
            if lines is not None:
                lines.append(line)
            self.log(line)

        return self.tofu.workspace(
            pipeline=self.pipeline.name, environment=self.environment, task=node.asset_name,
            module_dir=module_dir or self.graph.module_dir(node.name) or Path("."),
            backend=backend,
            env=env, on_line=on_line, secrets=set(secrets), timeout=timeout)
