"""wf triggers become Dagster schedules and sensors, checked through Dagster's evaluation
APIs (no apply: what matters is which runs they ask for, and when)."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

from dagster import DagsterInstance, build_schedule_context, build_sensor_context

from infrakitchen_dagster import build_definitions

from .conftest import FIXTURES, write_pipeline

STEP = FIXTURES / "modules" / "step"


def _definitions(tmp_path: Path, environments: bool = False):
    envs = '[environments.prod]\n[environments.staging]\n' if environments else ""
    write_pipeline(tmp_path / "pipelines", "watched", f"""
name = "watched"
{envs}
[[triggers]]
type = "cron"
schedule = "15 3 * * *"
[[triggers]]
type = "file_watch"
path = "{tmp_path / 'inbox'}"
pattern = "*.json"
interval = "10s"
[tasks.net]
module = "{STEP}"
variables = {{ name = "net" }}
""")
    return build_definitions(tmp_path / "pipelines")


def test_cron_trigger_schedules_the_provision_job_per_environment(tmp_path: Path) -> None:
    defs = _definitions(tmp_path, environments=True)
    schedule = defs.get_schedule_def("watched__cron_0")
    assert schedule.cron_schedule == "15 3 * * *"
    assert schedule.job_name == "watched__provision"
    when = datetime(2026, 11, 22, 3, 15, tzinfo=UTC)
    with DagsterInstance.ephemeral() as instance:
        requests = schedule.evaluate_tick(
            build_schedule_context(instance=instance, scheduled_execution_time=when,
                                   repository_def=defs.get_repository_def())
        ).run_requests
    assert sorted(r.partition_key for r in requests) == ["prod", "staging"]
    assert len({r.run_key for r in requests}) == 2


def test_file_watch_launches_once_per_change_and_not_on_first_look(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "old.json").write_text("{}")
    defs = _definitions(tmp_path)
    sensor = defs.get_sensor_def("watched__file_watch_0")
    assert sensor.minimum_interval_seconds == 10

    def tick(cursor: str | None):
        with DagsterInstance.ephemeral() as instance:
            result = sensor(build_sensor_context(instance=instance, cursor=cursor,
                                                 definitions=defs))
        return list(result.run_requests or []), result.cursor

    requests, cursor = tick(None)
    assert requests == [] and cursor  # a baseline, no surprise apply on deploy
    assert tick(cursor)[0] == []
    (inbox / "ignored.txt").write_text("not watched")
    assert tick(cursor)[0] == []
    changed = inbox / "new.json"
    changed.write_text("{}")
    later = os.stat(inbox / "old.json").st_mtime + 5
    os.utime(changed, (later, later))
    requests, new_cursor = tick(cursor)
    [request] = requests
    assert request.run_key == str(changed.stat().st_mtime_ns)
    assert request.tags["infrakitchen/trigger"] == f"file_watch {inbox}"
    assert "infrakitchen/user" not in request.tags  # acts as the code location
    assert tick(new_cursor)[0] == []
