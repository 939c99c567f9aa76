"""`ik sources PIPELINE`: which source code version each resource is declared with, and
which commit its record was applied from.

Read from the pipeline file and the store only: listing never fetches, so it answers
offline and at once; the commit shown is the one a run resolved and recorded.
"""

from __future__ import annotations

from typing import Any

from .graph import PipelineGraph
from .sources import SourceError, is_git_source, parse
from .store import LifecycleStore


def declared(module: str) -> dict[str, Any]:
    """The declared source of a module string: kind, module (no credentials) and ref."""
    if not is_git_source(module):
        return {"kind": "local", "module": module, "ref": None}
    try:
        source = parse(module)
    except SourceError:
        return {"kind": "git", "module": module, "ref": None}
    return {"kind": "git", "module": source.shown_module, "ref": source.ref or "HEAD"}


def source_rows(graph: PipelineGraph, store: LifecycleStore,
                environments: list[str]) -> list[dict[str, Any]]:
    """One row per resource and environment: declared source, applied source and commit."""
    rows = []
    pipeline = graph.pipeline.name
    for name in graph.resources:
        module = graph.nodes[name].task.module or ""
        for environment in environments:
            record = store.get(pipeline, name, environment)
            applied = record.source if record is not None else None
            rows.append({
                "task": name, "environment": environment, **declared(module),
                "state": f"{record.state}/{record.status}" if record else None,
                "revision": record.revision if record else None,
                "applied": applied,
                "commit": (applied or {}).get("commit"),
            })
    return rows
