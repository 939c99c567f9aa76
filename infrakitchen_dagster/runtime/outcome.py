"""What one operation on one task produced, in a shape any caller can turn into events."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from ..store import RecordView
from ..tofu import PlanSummary
from .changes import ResourceChange


class OutcomeStatus(StrEnum):
    """How an operation ended; the value is what metadata shows as `outcome`."""

    APPLIED = "applied"
    UNCHANGED = "unchanged"
    RAN = "ran"
    SKIPPED = "skipped"
    IGNORED_FAILURE = "ignored_failure"
    DESTROYED = "destroyed"
    APPROVAL_PENDING = "approval_pending"
    REJECTED = "rejected"
    BLOCKED = "blocked"
    #: not allowed (role): nothing was changed; the asset is not materialised, not failed
    REFUSED = "refused"


@dataclass
class Outcome:
    """What a run of one task produced, for metadata and the caller."""

    status: OutcomeStatus
    record: RecordView | None = None
    outputs: dict[str, Any] = field(default_factory=dict)
    sensitive_outputs: set[str] = field(default_factory=set)
    plan: PlanSummary | None = None
    registered: dict[str, Any] = field(default_factory=dict)
    duration: float = 0.0
    log_tail: str = ""
    tofu_version: str | None = None
    reason: str = ""
    request_id: int | None = None
    #: what the plan changes, resource by resource (read from the printed plan)
    changes: list[ResourceChange] = field(default_factory=list)


@dataclass(frozen=True)
class Drift:
    drifted: bool
    plan: PlanSummary
    changes: list[str]

    def as_dict(self) -> dict[str, Any]:
        return {"drifted": self.drifted, "plan": self.plan.as_dict(), "changes": self.changes}
