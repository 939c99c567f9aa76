"""Who a Dagster run acts as, and what to tell someone whose launch was refused.

`ik run` and the approvals sensor name the principal in the run's `infrakitchen/user`
tag. A run launched from the UI (Materialize, Launchpad) carries no such tag: it acts as
`INFRAKITCHEN_UI_PRINCIPAL` when the code location sets it. When it does not, the run acts
as the code location's own identity (INFRAKITCHEN_USER, else the OS user), which on a
pipeline with owners normally holds no role: the step is refused with a line saying how
to set the principal, instead of acting as whoever happens to run the webserver.
Schedules and sensors (`infrakitchen/trigger`) act as the code location's identity.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from .store import default_actor

#: the principal runs launched from the UI act as (a setting of the code location)
UI_PRINCIPAL_ENV = "INFRAKITCHEN_UI_PRINCIPAL"
USER_TAG = "infrakitchen/user"
TRIGGER_TAG = "infrakitchen/trigger"
#: set on a run that named no principal when it started (launched from the UI)
LAUNCH_TAG = "infrakitchen/launch"
UI_LAUNCH = "ui"


@dataclass(frozen=True)
class RunPrincipal:
    """The acting principal of a run and where it came from."""

    name: str
    #: "tag" (ik run, sensors), "ui" (INFRAKITCHEN_UI_PRINCIPAL), "trigger" (schedules,
    #: file watches) or "location" (a UI launch without a configured principal)
    source: str

    def refusal_hint(self, pipeline: str) -> str:
        """What to add to a refusal so that the person who launched the run can act."""
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


def run_principal(tags: Mapping[str, str] | None) -> RunPrincipal:
    """The principal a run with these tags acts as (see the module docstring)."""
    tags = tags or {}
    launched_from_ui = tags.get(LAUNCH_TAG) == UI_LAUNCH
    named = tags.get(USER_TAG)
    configured = os.environ.get(UI_PRINCIPAL_ENV, "").strip()
    if named and not launched_from_ui:
        return RunPrincipal(named, "tag")
    if tags.get(TRIGGER_TAG) and not named:
        return RunPrincipal(default_actor(), "trigger")
    if configured:
        return RunPrincipal(configured, "ui")
    return RunPrincipal(named or default_actor(), "location")
