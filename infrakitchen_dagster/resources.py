"""The Dagster resource carrying per-run settings and the lifecycle store."""

from __future__ import annotations

from typing import Any

from dagster import ConfigurableResource
from pydantic import Field

from .store import LifecycleStore, default_actor


class InfraKitchenResource(ConfigurableResource):
    """Runtime variables and options of a run, set in run config (Launchpad, `-c`, sensors).

    ```yaml
    resources:
      infrakitchen:
        config:
          vars: {REGION: eu-west-1}
    ```
    """

    vars: dict[str, str] = Field(default_factory=dict,
                                 description="Runtime variables; override the pipeline's [vars]")
    force: bool = Field(default=False,
                        description="Run tofu even for resources whose fingerprint is unchanged")
    tasks: list[str] = Field(
        default_factory=list,
        description="Destroy jobs only: act on these tasks and pass over the others")
    # The lifecycle store and the acting principal are deliberately not run config: whoever
    # launches a run must not be able to point it at another store (with approvals of its
    # own making) or name themselves. They come from the code location's environment
    # (INFRAKITCHEN_DATABASE_URL, INFRAKITCHEN_USER) and the run's `infrakitchen/user` tag.

    def store(self) -> LifecycleStore:
        return LifecycleStore()

    def principal(self, run_tags: dict[str, Any] | None = None) -> str:
        """The run's `infrakitchen/user` tag (set by `ik run` and the approvals sensor),
        else the code location's identity."""
        tags = run_tags or {}
        return tags.get("infrakitchen/user") or default_actor()
