"""The `drift` asset check of each resource and the job that runs them all.

A check compares the infrastructure with what was applied (`plan -detailed-exitcode`):
it passes when tofu plans no change and fails with the planned changes in its metadata.
One check covers every environment of the pipeline, so it works the same for
partitioned and unpartitioned pipelines.
"""


from typing import Any

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetKey,
    AssetSelection,
    MetadataValue,
    asset_check,
    define_asset_job,
    in_process_executor,
)

from .graph import Node, PipelineGraph
from .resources import InfraKitchenResource
from .runtime import TaskRuntime
from .tofu import TofuResource

DRIFT_CHECK = "drift"


def build_drift_check(graph: PipelineGraph, node: Node, key: AssetKey) -> AssetChecksDefinition:
    environments = list(graph.pipeline.environments) or ["default"]

    @asset_check(asset=key, name=DRIFT_CHECK,
                 description="tofu plan -detailed-exitcode against the applied values")
    def _drift(context: AssetCheckExecutionContext, tofu: TofuResource,
               infrakitchen: InfraKitchenResource) -> AssetCheckResult:
        results: dict[str, Any] = {}
        drifted: list[str] = []
        for environment in environments:
            runtime = TaskRuntime(
                graph=graph, environment=environment, store=infrakitchen.store(), tofu=tofu,
                runtime_vars=dict(infrakitchen.vars), actor=infrakitchen.principal(),
                run_id=context.run.run_id, log=context.log.debug,
                progress=context.log.info)
            drift = runtime.drift(node)
            if drift is None:
                results[environment] = "not provisioned"
                continue
            results[environment] = drift.as_dict()
            if drift.drifted:
                drifted.append(environment)
                context.log.warning(f"{node.name} ({environment}) drifted: "
                                    f"{'; '.join(drift.changes) or drift.plan.as_dict()}")
        changes = [f"{env}: {change}" for env in drifted
                   for change in results[env]["changes"]]
        return AssetCheckResult(
            passed=not drifted, severity=AssetCheckSeverity.ERROR,
            description=(f"drift in {', '.join(drifted)}: {'; '.join(changes)}" if drifted
                         else "no drift"),
            metadata={"drifted_environments": ", ".join(drifted) or "none",
                      "changes": MetadataValue.json(changes),
                      "environments": MetadataValue.json(results)})

    return _drift


def build_drift_job(graph: PipelineGraph, keys: list[AssetKey]) -> Any:
    return define_asset_job(
        name=f"{graph.pipeline.job_prefix}__drift_check",
        selection=AssetSelection.checks_for_assets(*keys),
        executor_def=in_process_executor,
        tags={"infrakitchen/pipeline": graph.pipeline.name, "infrakitchen/job": "drift"},
        description=f"Drift checks of every resource of {graph.pipeline.name}",
    )
