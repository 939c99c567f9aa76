"""What one task does when it runs, independent of how Dagster scheduled it.

A small runner (`TaskRuntime`, a `RunContext` with one method per operation) over one
module per operation: `resolve` (a task into one resolved value), `rules` (create
validations), `healing` (records left by dead runs), `provision` + `apply` + `gate` (the
approval flow), `destroy` (and teardown), `planning` (plan job, drift) and `commands`.
The Dagster layer (`assets.py`) only turns outcomes into events, which keeps this logic
usable from the CLI, hooks and sensors alike.
"""

from __future__ import annotations

from ..graph import Node
from ..store import RecordView
from . import commands, destroy, planning, provision
from .context import Log, RunContext
from .errors import Refused, TaskFailure
from .gate import PROVISION_OPS
from .healing import heal, open_record
from .outcome import Drift, Outcome, OutcomeStatus
from .resolve import ResolvedTask, Resolver, carrying

dependency_payload = destroy.dependency_payload

__all__ = [
    "PROVISION_OPS", "Drift", "Log", "Outcome", "OutcomeStatus", "Refused", "ResolvedTask",
    "Resolver", "RunContext", "TaskFailure", "TaskRuntime", "carrying", "dependency_payload",
    "heal", "open_record",
]


class TaskRuntime(RunContext):
    """A run context with the operations as methods, for callers that hold one object."""

    def provision(self, node: Node, timeout: float | None = None) -> Outcome:
        return provision.provision(self, node, timeout)

    def run_command(self, node: Node, timeout: float | None = None,
                    extra: dict | None = None) -> Outcome:
        return commands.run_command(self, node, timeout, extra)

    def destroy(self, name: str, timeout: float | None = None, reason: str = "destroy",
                *, requested: bool = False) -> Outcome:
        return destroy.destroy(self, name, timeout, reason, requested=requested)

    def blocking_children(self, name: str) -> list[RecordView]:
        return destroy.blocking_children(self, name)

    def run_teardown(self, teardown: str, failed_task: str, error_message: str,
                     failed_run_id: str | None = None) -> list[str]:
        return destroy.run_teardown(self, teardown, failed_task, error_message, failed_run_id)

    def plan(self, node: Node) -> planning.DryRun:
        return planning.plan(self, node)

    def drift(self, node: Node) -> Drift | None:
        return planning.drift(self, node)
