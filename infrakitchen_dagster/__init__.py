"""infrakitchen-dagster: infrastructure stacks as Dagster assets.

The public names load lazily, so that the `ik` commands that only read the lifecycle
store (approvals, audit, inspect, ...) start without importing Dagster.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "AccessControl": ".access",
    "Approvals": ".approvals",
    "InfraKitchenResource": ".resources",
    "InfraKitchenTranslator": ".translator",
    "LifecycleStore": ".store",
    "Pipeline": ".spec",
    "PipelineError": ".spec",
    "PipelineGraph": ".graph",
    "TofuResource": ".resources",
    "TofuSettings": ".tofu",
    "build_definitions": ".definitions",
    "build_pipeline": ".assets",
    "load_graph": ".graph",
    "load_pipeline": ".graph",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'infrakitchen_dagster' has no attribute {name!r}")
    value = getattr(import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value
    return value
