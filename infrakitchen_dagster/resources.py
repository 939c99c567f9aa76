"""The Dagster resources: how tofu runs, and per-run settings with the lifecycle store."""

from __future__ import annotations

from typing import Any

from dagster import ConfigurableResource
from pydantic import Field

from .store import LifecycleStore, default_actor
from .tofu import TofuSettings


class TofuResource(ConfigurableResource, TofuSettings):
    """Runs `tofu` (or `terraform`) for resource tasks: `TofuSettings` as a Dagster
    resource, configurable per code location (see `build_definitions(tofu=...)`)."""


class InfraKitchenResource(ConfigurableResource):
    """Runtime variables and options of a run, set in run config (Launchpad, `-c`, sensors).

    ```yaml
    resources:
      infrakitchen:
        config:
          vars: {REGION: eu-west-1}
    ```

    Run config is stored and shown in plain text, so `ik run --var` and the approvals
    sensor never put values there: they keep them encrypted in the lifecycle store and
    pass `vars_ref` (see `run_config_vars`). Read the values with `runtime_vars()`.
    """

    vars: dict[str, str] = Field(default_factory=dict,
                                 description="Runtime variables; override the pipeline's [vars]"
                                             " (plain text: pass secrets with `ik run --var`)")
    vars_ref: str = Field(
        default="", description="Reference to runtime variables kept encrypted in the "
                                "lifecycle store (set by `ik run` and the sensors)")
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

    def runtime_vars(self) -> dict[str, str]:
        """The run's runtime vars: the referenced (encrypted) ones, then `vars` over them."""
        values: dict[str, str] = {}
        if self.vars_ref:
            try:
                values.update(self.store().run_vars(self.vars_ref))
            except KeyError as exc:
                raise ValueError(f"run config vars_ref: {exc.args[0]}") from None
        values.update(self.vars)
        return values

    def principal(self, run_tags: dict[str, Any] | None = None) -> str:
        """The run's `infrakitchen/user` tag (set by `ik run` and the approvals sensor),
        else the code location's identity."""
        tags = run_tags or {}
        return tags.get("infrakitchen/user") or default_actor()


def run_config_vars(values: dict[str, Any], store: LifecycleStore | None = None
                    ) -> dict[str, Any]:
    """The `infrakitchen` resource config for runtime vars `values`, with no value in it:
    they are kept encrypted in the store and the config carries their reference."""
    if not values:
        return {}
    plain = {k: str(v) for k, v in values.items()}
    return {"vars_ref": (store or LifecycleStore()).put_run_vars(plain)}
