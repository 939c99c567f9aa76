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
    database_url: str | None = Field(
        default=None, description="Lifecycle store URL; default: INFRAKITCHEN_DATABASE_URL")
    tasks: list[str] = Field(
        default_factory=list,
        description="Destroy jobs only: act on these tasks and pass over the others")
    actor: str | None = Field(
        default=None, description="Who acts; default: INFRAKITCHEN_USER or the OS user")

    def store(self) -> LifecycleStore:
        return LifecycleStore(self.database_url)

    def principal(self, run_tags: dict[str, Any] | None = None) -> str:
        tags = run_tags or {}
        return self.actor or tags.get("infrakitchen/user") or default_actor()
