"""`build_definitions`: every pipeline file of a directory as one set of Dagster definitions.

A broken pipeline file must not take the others down: it is reported (log, warning and
the definitions' metadata) and skipped.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

from dagster import Definitions, JobDefinition

from . import settings
from .assets import PipelineDefinitions, build_pipeline
from .graph import PipelineGraph, load_graph
from .resources import InfraKitchenResource
from .sensors import build_approvals_sensor, build_run_failure_sensor
from .spec import PipelineError
from .tofu import TofuResource
from .translator import InfraKitchenTranslator

logger = logging.getLogger("infrakitchen_dagster")


def load_graphs(pipelines_dir: str | Path) -> tuple[dict[str, PipelineGraph], list[PipelineError]]:
    graphs: dict[str, PipelineGraph] = {}
    broken: list[PipelineError] = []
    for file in sorted(Path(pipelines_dir).glob("*.toml")):
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


def build_definitions(
    pipelines_dir: str | Path | None = None,
    *,
    tofu: TofuResource | None = None,
    infrakitchen: InfraKitchenResource | None = None,
    translator: InfraKitchenTranslator | None = None,
    executor: str | None = None,
) -> Definitions:
    """Definitions for every `*.toml` in `pipelines_dir` (default: INFRAKITCHEN_PIPELINES).

    `executor` (default: INFRAKITCHEN_EXECUTOR, else auto): auto | in_process | forkserver |
    spawn; auto runs chains in-process and parallel graphs with forkserver.
    """
    directory = Path(pipelines_dir) if pipelines_dir else settings.pipelines_dir()
    graphs, broken = load_graphs(directory)
    for error in broken:
        message = f"skipping broken pipeline: {error}"
        logger.error(message)
        warnings.warn(message, stacklevel=2)
    executor = executor or os.environ.get("INFRAKITCHEN_EXECUTOR", "auto")
    built: list[PipelineDefinitions] = [
        build_pipeline(g, translator, executor) for g in graphs.values()
    ]
    assets = [a for b in built for a in b.assets]
    jobs = [j for b in built for j in b.jobs]
    teardown_jobs = [j for j in jobs if isinstance(j, JobDefinition)
                     and j.name.endswith("__teardown")]
    sensors = [build_run_failure_sensor(graphs, teardown_jobs)] if graphs else []
    sensors += [s for b in built for s in b.sensors]
    translator = translator or InfraKitchenTranslator()
    keys = {(g.pipeline.name, n.name): translator.get_asset_key(g, n)
            for g in graphs.values() for n in g.nodes.values()}
    launchable = [j for j in jobs if j.name.endswith(("__provision", "__destroy"))]
    if launchable:
        sensors.append(build_approvals_sensor(graphs, keys, launchable))
    return Definitions(
        assets=assets,
        asset_checks=[c for b in built for c in b.checks],
        jobs=jobs,
        schedules=[s for b in built for s in b.schedules],
        sensors=sensors,
        resources={
            "tofu": tofu or TofuResource(),
            "infrakitchen": infrakitchen or InfraKitchenResource(),
        },
        metadata={
            "infrakitchen/pipelines": ", ".join(sorted(graphs)) or "(none)",
            "infrakitchen/broken_pipelines": "\n".join(str(e) for e in broken) or "(none)",
        },
    )


def load_job_for_run(pipelines_dir: str, job_name: str):
    """Module-level entry so `ik run` can hand Dagster a reconstructable job."""
    return build_definitions(pipelines_dir).resolve_job_def(job_name)
