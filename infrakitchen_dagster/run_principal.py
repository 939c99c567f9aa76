"""Who a Dagster run acts as, and what to tell someone whose launch was refused.

`ik run`, `dagster job execute` and the approvals sensor start runs whose principal is
known: the `infrakitchen/user` tag, else (a terminal with no tag) the code location's own
identity (INFRAKITCHEN_USER, else the OS user). A run launched from the UI (Materialize,
Launchpad) is a run of the code location (it has a remote job origin) that no schedule,
sensor or backfill started: its tags are whatever the person typed, so it acts as
`INFRAKITCHEN_UI_PRINCIPAL`, a setting of the deployment, and with that unset it is
refused with a line saying how to set it, never acting as whoever runs the webserver.
Schedules and file watches (`infrakitchen/trigger`, on a run Dagster's daemon started) act
as the code location's identity; the same tag typed on a UI launch names nobody.

Limit: Dagster does not stop a Launchpad user from typing its own automation tags
(`dagster/sensor_name`, ...); a run carrying one is taken for a sensor's, schedule's or
backfill's run. Pipelines whose approvals must prove who decided sign them (`approvers`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from dagster import DagsterRun

from .store import default_actor

#: the principal runs launched from the UI act as (a setting of the code location)
UI_PRINCIPAL_ENV = "INFRAKITCHEN_UI_PRINCIPAL"
USER_TAG = "infrakitchen/user"
TRIGGER_TAG = "infrakitchen/trigger"
#: set on a run that named no principal when it started (launched from the UI)
LAUNCH_TAG = "infrakitchen/launch"
UI_LAUNCH = "ui"
#: the source of a UI launch's principal when the deployment sets none
UNSET = "unset"


@dataclass(frozen=True)
class RunPrincipal:
    """The acting principal of a run and where it came from."""

    name: str
    #: "tag" (ik run, sensors), "ui" (INFRAKITCHEN_UI_PRINCIPAL), "trigger" (schedules,
    #: file watches), "location" (an untagged run started in-process or from a terminal:
    #: the code location's identity) or "unset" (a UI launch while no UI principal is set:
    #: refused)
    source: str

    @property
    def unset(self) -> bool:
        """A UI launch while the deployment names no UI principal: refused before anything
        runs, whatever roles the code location's own user holds."""
        return self.source == UNSET

    def refusal_hint(self, pipeline: str) -> str:
        """What to add to a refusal so that the person who launched the run can act."""
        if self.unset:
            return (f" Runs launched from the UI act as {UI_PRINCIPAL_ENV}, which this "
                    f"deployment does not set. Set it on the code location (and the daemon) "
                    f"to a principal with the write role on {pipeline!r} (ik grant NAME "
                    f"write --pipeline {pipeline}), or launch with `ik run {pipeline} --as "
                    "NAME`.")
        if self.source == "location":
            return (f" This run was launched without a principal (from the UI): it acts as "
                    f"{UI_PRINCIPAL_ENV}, which this code location does not set, so it "
                    f"fell back to its own user {self.name!r}. Set {UI_PRINCIPAL_ENV} to a "
                    f"principal with the write role on {pipeline!r} (ik grant NAME write "
                    f"--pipeline {pipeline}), or launch with `ik run {pipeline} --as NAME`.")
        if self.source == "ui":
            return (f" UI launches act as {UI_PRINCIPAL_ENV}={self.name!r}; grant it the "
                    f"write role (ik grant {self.name} write --pipeline {pipeline}).")
        return ""


#: tags Dagster itself puts on runs that a schedule, a sensor or a backfill started
_AUTOMATION_TAGS = ("dagster/schedule_name", "dagster/sensor_name", "dagster/backfill")


def ui_principal() -> str | None:
    """The deployment's principal for UI launches, when set."""
    return os.environ.get(UI_PRINCIPAL_ENV, "").strip() or None


def run_principal(run: DagsterRun | None) -> RunPrincipal:
    """The principal `run` acts as (see the module docstring)."""
    tags = run.tags if run is not None else {}
    named = tags.get(USER_TAG)
    from_location = run is not None and run.remote_job_origin is not None
    automated = any(tag in tags for tag in _AUTOMATION_TAGS)
    if from_location and not automated:  # launched from the UI: its tags are typed
        configured = ui_principal()
        return RunPrincipal(configured, "ui") if configured else RunPrincipal(
            default_actor(), UNSET)
    if tags.get(TRIGGER_TAG) and not named:  # a schedule's or file watch's run
        return RunPrincipal(default_actor(), "trigger")
    if named and tags.get(LAUNCH_TAG) != UI_LAUNCH:
        return RunPrincipal(named, "tag")
    configured = ui_principal()
    if configured:  # an untagged run started in-process acts as a UI launch would
        return RunPrincipal(configured, "ui")
    return RunPrincipal(default_actor(), "location")
