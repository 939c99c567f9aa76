"""`build_definitions`: pipeline files as one set of Dagster definitions.

A broken pipeline file must not take the others down: it is reported (log, warning and
the definitions' metadata) and skipped.

What a run loads costs what its pipeline costs, not what the estate costs:
`load_job_for_run` (the entry `ik run` hands Dagster, so every step process of the run
calls it again) reads the one pipeline file the job belongs to and builds that one job.
For the webserver and daemon, `write_workspace` generates one code location per pipeline
file (deploy/workspace-per-pipeline/), so that a UI-launched run and its steps load one
TOML too.
"""

from __future__ import annotations

import gc
import logging
import os
import re
import sys
import tomllib
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from dagster import Definitions, JobDefinition

from . import settings
from .assets import (
    DESTROY,
    PROVISION,
    TEARDOWN,
    PipelineDefinitions,
    build_pipeline,
    split_job_name,
)
from .graph import PipelineGraph, load_graph
from .resources import InfraKitchenResource, TofuResource
from .sensors import build_approvals_sensor, build_healing_sensor, build_run_failure_sensor
from .spec import PipelineError
from .translator import InfraKitchenTranslator

logger = logging.getLogger("infrakitchen_dagster")


def load_graphs(pipelines_dir: str | Path | None = None, *,
                files: Iterable[str | Path] | None = None
                ) -> tuple[dict[str, PipelineGraph], list[PipelineError]]:
    """Every `*.toml` of `pipelines_dir` (or just `files`), the broken ones apart."""
    paths = (sorted(Path(f) for f in files) if files is not None
             else sorted(Path(pipelines_dir or ".").glob("*.toml")))
    graphs: dict[str, PipelineGraph] = {}
    broken: list[PipelineError] = []
    for file in paths:
        try:
            graph = load_graph(file)
        except PipelineError as exc:
            broken.append(exc)
            continue
        if graph.pipeline.name in graphs:
            broken.append(PipelineError(file, [
                f"pipeline name {graph.pipeline.name!r} is already used by "
                f"{graphs[graph.pipeline.name].pipeline.path}"]))
            continue
        graphs[graph.pipeline.name] = graph
    return graphs, broken


@contextmanager
def _no_cycle_collection() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while definitions are built.

    Building allocates hundreds of thousands of long-lived objects, and each full
    collection meanwhile scans all of them again: for 10,000 resources that doubled the
    load (measured: 3.0 s vs 1.6 s), so the cost grew faster than the estate. What is
    built here is kept, not garbage; collection resumes as soon as the build is done."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _executor(executor: str | None) -> str:
    return executor or os.environ.get("INFRAKITCHEN_EXECUTOR", "auto")


def _resources(tofu: TofuResource | None, infrakitchen: InfraKitchenResource | None
               ) -> dict[str, object]:
    return {"tofu": tofu or TofuResource(), "infrakitchen": infrakitchen or InfraKitchenResource()}


def build_definitions(
    pipelines_dir: str | Path | None = None,
    *,
    pipeline_files: Iterable[str | Path] | None = None,
    tofu: TofuResource | None = None,
    infrakitchen: InfraKitchenResource | None = None,
    translator: InfraKitchenTranslator | None = None,
    executor: str | None = None,
    execution: str | None = None,
) -> Definitions:
    """Definitions for every `*.toml` in `pipelines_dir` (default: INFRAKITCHEN_PIPELINES),
    or for `pipeline_files` only (one code location per pipeline, see `write_workspace`).

    `executor` (default: INFRAKITCHEN_EXECUTOR, else auto): auto | in_process | forkserver |
    spawn | celery; auto runs chains in-process and parallel graphs with forkserver.
    `execution` (default: INFRAKITCHEN_EXECUTION, else auto): auto | batched | per_step,
    see `assets.execution_mode`.
    """
    with _no_cycle_collection():
        return _build_definitions(pipelines_dir, pipeline_files, tofu, infrakitchen,
                                  translator, executor, execution)


def _build_definitions(pipelines_dir: str | Path | None,
                       pipeline_files: Iterable[str | Path] | None,
                       tofu: TofuResource | None, infrakitchen: InfraKitchenResource | None,
                       translator: InfraKitchenTranslator | None, executor: str | None,
                       execution: str | None = None) -> Definitions:
    if pipeline_files is not None:
        graphs, broken = load_graphs(files=pipeline_files)
    else:
        graphs, broken = load_graphs(Path(pipelines_dir) if pipelines_dir
                                     else settings.pipelines_dir())
    for error in broken:
        message = f"skipping broken pipeline: {error}"
        logger.error(message)
        warnings.warn(message, stacklevel=2)
    _make_room_for(max((len(g.nodes) for g in graphs.values()), default=0))
    executor = _executor(executor)
    built: list[PipelineDefinitions] = [
        build_pipeline(g, translator, executor, execution) for g in graphs.values()
    ]
    teardown_jobs = [b.jobs_by_kind[TEARDOWN] for b in built if TEARDOWN in b.jobs_by_kind]
    sensors = ([build_run_failure_sensor(graphs, teardown_jobs), build_healing_sensor(graphs)]
               if graphs else [])
    sensors += [s for b in built for s in b.sensors]
    translator = translator or InfraKitchenTranslator()
    keys = {(g.pipeline.name, n.name): translator.get_asset_key(g, n)
            for g in graphs.values() for n in g.nodes.values()}
    launchable = [b.jobs_by_kind[k] for b in built for k in (PROVISION, DESTROY)
                  if k in b.jobs_by_kind]
    if launchable:
        sensors.append(build_approvals_sensor(graphs, keys, launchable))
    return Definitions(
        assets=[a for b in built for a in b.assets],
        asset_checks=[c for b in built for c in b.checks],
        jobs=[j for b in built for j in b.jobs],
        schedules=[s for b in built for s in b.schedules],
        sensors=sensors,
        resources=_resources(tofu, infrakitchen),
        metadata={
            "infrakitchen/pipelines": ", ".join(sorted(graphs)) or "(none)",
            "infrakitchen/broken_pipelines": "\n".join(str(e) for e in broken) or "(none)",
        },
    )


def pipeline_file_for(pipelines_dir: str | Path, job_prefix: str) -> Path:
    """The file of the pipeline whose job prefix is `job_prefix`, reading as few files as
    possible: the file named after it first (`my-net.toml` for `my_net`), then only the
    `name` key of the others. No other pipeline is validated, so a broken file beside it
    changes nothing."""
    directory = Path(pipelines_dir)
    files = sorted(directory.glob("*.toml"))
    named = [f for f in files if f.stem.replace("-", "_") == job_prefix]
    for file in [*named, *(f for f in files if f not in named)]:
        name = declared_name(file)
        if name is not None and name.replace("-", "_") == job_prefix:
            return file
    raise PipelineError(directory, [f"no pipeline with jobs {job_prefix}__* in {directory}/"])


_NAME_LINE = re.compile(r"""^name\s*=\s*(?:"([^"\\]*)"|'([^']*)')\s*(?:#.*)?$""")


def declared_name(file: Path) -> str | None:
    """The top-level `name` of a pipeline file (None if unreadable), from its head: TOML's
    top-level keys come before the first table, so a huge file is not parsed for it."""
    try:
        with file.open(encoding="utf-8-sig") as handle:
            for line in handle:
                stripped = line.strip()
                if stripped.startswith("["):
                    break
                if match := _NAME_LINE.match(stripped):
                    return match.group(1) if match.group(1) is not None else match.group(2)
        with file.open("rb") as handle:  # an unusual spelling: parse the whole file
            name = tomllib.load(handle).get("name")
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None
    return name if isinstance(name, str) else None


def _make_room_for(tasks: int) -> None:
    """Dagster walks a job's graph recursively, a frame per op along a chain, so Python's
    default limit (1,000 frames) stops a ~1,000-task chain: raise it to fit the longest
    pipeline (plain Python frames, no C stack on Python 3.11)."""
    needed = 3 * tasks + 1000
    if sys.getrecursionlimit() < needed:
        sys.setrecursionlimit(needed)


def build_job(pipelines_dir: str | Path, job_name: str, *,
              tofu: TofuResource | None = None,
              infrakitchen: InfraKitchenResource | None = None,
              executor: str | None = None) -> JobDefinition:
    """One job (`<job_prefix>__<kind>`) with its resources bound, built from its own
    pipeline file alone."""
    prefix, kind = split_job_name(job_name)
    with _no_cycle_collection():
        graph = load_graph(pipeline_file_for(pipelines_dir, prefix))
        _make_room_for(len(graph.nodes))
        built = build_pipeline(graph, executor=_executor(executor), only=kind)
        if kind not in built.jobs_by_kind:
            raise ValueError(f"pipeline {graph.pipeline.name!r} has no {kind} job")
        defs = Definitions(assets=built.assets, asset_checks=built.checks,
                           jobs=[built.jobs_by_kind[kind]],
                           resources=_resources(tofu, infrakitchen))
        return defs.resolve_job_def(job_name)


def load_job_for_run(pipelines_dir: str, job_name: str) -> JobDefinition:
    """Module-level entry so `ik run` can hand Dagster a reconstructable job: the run and
    each of its step processes load this one job of this one pipeline."""
    return build_job(pipelines_dir, job_name)


def write_workspace(pipelines_dir: str | Path, out_dir: str | Path) -> Path:
    """A `workspace.yaml` with one code location per pipeline file of `pipelines_dir`, each
    loading that one TOML (a generated `locations/<stem>.py`). Returns the workspace file.

        dagster dev -w <out_dir>/workspace.yaml

    A run launched from the UI then loads (in its run and step processes) one pipeline,
    not the estate; a broken file breaks only its own location. Re-run it when pipeline
    files are added or removed.
    """
    directory = Path(pipelines_dir).resolve()
    out = Path(out_dir)
    locations = out / "locations"
    locations.mkdir(parents=True, exist_ok=True)
    for stale in locations.glob("*.py"):
        stale.unlink()
    entries = []
    for file in sorted(directory.glob("*.toml")):
        module = locations / f"{file.stem.replace('-', '_')}.py"
        module.write_text(
            f'"""Code location of {file.name} (generated by write_workspace; do not edit)."""\n'
            "\nfrom infrakitchen_dagster.definitions import build_definitions\n\n"
            f"defs = build_definitions(pipeline_files=[{str(file)!r}])\n")
        entries.append(f"  - python_file:\n      relative_path: locations/{module.name}\n"
                       f"      location_name: {file.stem}\n")
    workspace = out / "workspace.yaml"
    workspace.write_text(
        f"# One code location per pipeline file of {directory} (write_workspace).\n"
        "load_from:\n" + ("".join(entries) if entries else "  []\n"))
    return workspace
