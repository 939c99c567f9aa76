"""Who a run acts as, judged from what Dagster stored about it (`run_principal`).

A run with a code-location origin that no schedule, sensor or backfill started was launched
from the UI (Materialize, the Launchpad): its tags were typed by whoever launched it, so
none of them names who it acts as, not `infrakitchen/user` and not the `infrakitchen/trigger`
tag that schedules and file watches carry. Plain functions of a stored run; no Dagster
instance needed.
"""

from __future__ import annotations

import pytest
from dagster import DagsterRun

from infrakitchen_dagster.run_origin import location_origin
from infrakitchen_dagster.run_principal import UI_PRINCIPAL_ENV, run_principal

ORIGIN = location_origin("definitions.py", "gate__provision")  # as the webserver stores it

def _run(tags: dict[str, str], from_the_ui: bool) -> DagsterRun:
    return DagsterRun(job_name="gate__provision", run_id="r1", tags=tags,
                      remote_job_origin=ORIGIN if from_the_ui else None)


@pytest.fixture(autouse=True)
def _location_user(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFRAKITCHEN_USER", "location-user")
    monkeypatch.delenv(UI_PRINCIPAL_ENV, raising=False)


@pytest.mark.parametrize("typed", [{"infrakitchen/user": "olive"},
                                   {"infrakitchen/trigger": "schedule nightly"},
                                   {"infrakitchen/user": "olive",
                                    "infrakitchen/trigger": "file_watch /in"}])
def test_typed_tags_of_a_ui_launch_name_nobody(typed: dict[str, str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    unset = run_principal(_run(typed, from_the_ui=True))
    assert unset.unset and unset.name != "olive"
    monkeypatch.setenv(UI_PRINCIPAL_ENV, "console")
    assert (run_principal(_run(typed, from_the_ui=True)).name,
            run_principal(_run(typed, from_the_ui=True)).source) == ("console", "ui")


def test_terminal_sensor_and_schedule_runs_keep_their_principal() -> None:
    terminal = run_principal(_run({"infrakitchen/user": "olive"}, from_the_ui=False))
    assert (terminal.name, terminal.source) == ("olive", "tag")
    sensor = run_principal(_run({"infrakitchen/user": "olive",
                                 "dagster/sensor_name": "infrakitchen_approvals"},
                                from_the_ui=True))
    assert (sensor.name, sensor.source) == ("olive", "tag")
    scheduled = run_principal(_run({"infrakitchen/trigger": "schedule nightly",
                                    "dagster/schedule_name": "nightly"}, from_the_ui=True))
    assert (scheduled.name, scheduled.source) == ("location-user", "trigger")
    untagged = run_principal(_run({}, from_the_ui=False))
    assert (untagged.name, untagged.source) == ("location-user", "location")
