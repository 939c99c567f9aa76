"""infrakitchen-dagster: infrastructure stacks as Dagster assets."""

from .assets import build_pipeline
from .definitions import build_definitions
from .graph import PipelineGraph, load_graph, load_pipeline
from .resources import InfraKitchenResource
from .spec import Pipeline, PipelineError
from .store import LifecycleStore
from .tofu import TofuResource
from .translator import InfraKitchenTranslator

__all__ = [
    "InfraKitchenResource",
    "InfraKitchenTranslator",
    "LifecycleStore",
    "Pipeline",
    "PipelineError",
    "PipelineGraph",
    "TofuResource",
    "build_definitions",
    "build_pipeline",
    "load_graph",
    "load_pipeline",
]
