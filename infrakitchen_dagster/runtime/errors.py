"""Why a task did not do what was asked: the two failures the Dagster layer tells apart."""

from __future__ import annotations


class TaskFailure(Exception):
    """A task failed for a reason the user must fix; the message is the whole story."""


class Refused(TaskFailure):
    """The action was not allowed (role, lifecycle state): nothing was changed, so no
    teardown may follow it."""
