"""Attaching runs started from a terminal (`ik run`, `dagster job execute`) to the code
location the UI serves, so its job history, run bars and Overview timeline show them.

Dagster gives such runs no code-location origin: they are created in-process from a
reconstructable job, and the UI files runs under a location by the run's remote origin and
its hidden repository tag. The first step of such a run adds both, naming the location
`INFRAKITCHEN_CODE_LOCATION` (default `definitions.py`, the name `dagster dev -f
definitions.py` gives its location; `{pipeline_file}` stands for the pipeline file's stem,
the names `write_workspace` gives; empty: do not attach).

A run with an origin looks like a UI launch to `run_principal`, so the principal is settled
in the lifecycle store before the origin is written (see `steps.settled_principal`).
"""

from __future__ import annotations

import os
from pathlib import Path

from dagster import DagsterInstance, DagsterRun

# No public API sets a run's code-location origin after it was created (`execute_job` takes
# none); these are the types the webserver itself writes and reads for that.
from dagster._core.remote_origin import (
    RegisteredCodeLocationOrigin,
    RemoteJobOrigin,
    RemoteRepositoryOrigin,
)
from dagster._core.storage.tags import (
    CODE_LOCATION_TAG,
    MAX_RETRIES_TAG,
    REPOSITORY_LABEL_TAG,
)

from .spec import Pipeline

CODE_LOCATION_ENV = "INFRAKITCHEN_CODE_LOCATION"
DEFAULT_CODE_LOCATION = "definitions.py"
#: the repository name Dagster gives a code location's `Definitions`
REPOSITORY_NAME = "__repository__"


def code_location_name(pipeline: Pipeline) -> str | None:
    """The location terminal runs of `pipeline` are filed under, or None (not attached)."""
    configured = os.environ.get(CODE_LOCATION_ENV)
    name = DEFAULT_CODE_LOCATION if configured is None else configured.strip()
    if not name:
        return None
    return name.replace("{pipeline_file}", Path(pipeline.path).stem if pipeline.path
                        else pipeline.name)


def location_origin(location: str, job_name: str) -> RemoteJobOrigin:
    """The origin the webserver gives a run of `job_name` launched in code location
    `location` (the definitions' one repository)."""
    return RemoteJobOrigin(
        repository_origin=RemoteRepositoryOrigin(
            code_location_origin=RegisteredCodeLocationOrigin(location_name=location),
            repository_name=REPOSITORY_NAME),
        job_name=job_name)


def attach_to_code_location(instance: DagsterInstance, run: DagsterRun,
                            pipeline: Pipeline) -> bool:
    """Give a terminal run the origin of its code location (once: a run that has one is
    left alone). True when it was attached now.

    The run is tagged through Dagster's own `add_run_tags`, then re-read and replaced at
    once, so that only the instant between that read and write is open to a parallel
    step's tags. `dagster/max_retries=0` keeps Dagster's retry daemon (when a
    deployment enables run retries) from re-executing it as a UI launch would be run:
    `ik run` handles its own failures (teardown) and states its own principal.
    """
    location = code_location_name(pipeline)
    if run.remote_job_origin is not None or location is None:
        return False
    origin = location_origin(location, run.job_name)
    # the tags first: `add_run_tags` inserts the rows the UI filters on only for keys the
    # stored run does not have yet (`replace_job_origin` updates that row, never adds it)
    instance.add_run_tags(run.run_id, {
        REPOSITORY_LABEL_TAG: origin.repository_origin.get_label(),
        CODE_LOCATION_TAG: location, MAX_RETRIES_TAG: "0"})
    current = instance.get_run_by_id(run.run_id)
    if current is None or current.remote_job_origin is not None:
        return False
    instance.run_storage.replace_job_origin(current, origin)
    return True
