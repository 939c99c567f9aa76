"""The `drift` asset check of each resource and the job that runs them all.

A check compares the infrastructure with what was applied (`plan -detailed-exitcode`):
it passes when tofu plans no change and fails with the planned changes in its metadata.
One check covers every environment of the pipeline, so it works the same for
partitioned and unpartitioned pipelines.

All checks of a pipeline are one subsettable `multi_asset_check` (one op, however many
resources): a thousand-resource pipeline loads one check op instead of a thousand.
"""


from collections.abc import Callable, Iterator, Mapping
from typing import Any

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckKey,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetKey,
    AssetSelection,
    Failure,
    MetadataValue,
    define_asset_job,
    in_process_executor,
    multi_asset_check,
)

from .graph import Node, PipelineGraph
from .resources import InfraKitchenResource, TofuResource
from .runtime import TaskRuntime

DRIFT_CHECK = "drift"


def build_drift_checks(graph: PipelineGraph, keys: Mapping[str, AssetKey]
                       ) -> AssetChecksDefinition:
    """The `drift` check of each resource `keys` names (node name -> asset key)."""
    return per_resource_check(graph, keys, DRIFT_CHECK,
                              "tofu plan -detailed-exitcode against the applied values",
                              _check_one)


#: one resource's check: (graph, node, asset key, context, tofu, infrakitchen) -> result
CheckOne = Callable[[PipelineGraph, Node, AssetKey, AssetCheckExecutionContext, TofuResource,
                     InfraKitchenResource], AssetCheckResult]


def per_resource_check(graph: PipelineGraph, keys: Mapping[str, AssetKey], check_name: str,
                       description: str, check_one: CheckOne) -> AssetChecksDefinition:
    """One subsettable `multi_asset_check` named `<prefix>__<check_name>` with a check
    `check_name` on each resource `keys` names; `check_one` judges one resource. One
    resource's error does not hide the others' results: the check fails at the end,
    naming every resource that could not be checked."""
    nodes = {key: graph.nodes[name] for name, key in keys.items()}
    specs = [AssetCheckSpec(name=check_name, asset=key, description=description)
             for key in keys.values()]

    @multi_asset_check(name=f"{graph.pipeline.job_prefix}__{check_name}", specs=specs,
                       can_subset=True)
    def _check(context: AssetCheckExecutionContext, tofu: TofuResource,
               infrakitchen: InfraKitchenResource) -> Iterator[AssetCheckResult]:
        errors: list[str] = []
        for check_key in sorted(context.selected_asset_check_keys, key=str):
            node = nodes[check_key.asset_key]
            try:
                yield check_one(graph, node, check_key.asset_key, context, tofu, infrakitchen)
            except Exception as exc:  # one resource's error must not hide the others'
                context.log.error(f"{node.name}: {check_name} check failed: {exc}")
                errors.append(f"{node.name}: {exc}")
        if errors:
            raise Failure(description=f"{check_name} check failed for " + "; ".join(errors))

    return _check


def _check_one(graph: PipelineGraph, node: Node, key: AssetKey,
               context: AssetCheckExecutionContext, tofu: TofuResource,
               infrakitchen: InfraKitchenResource) -> AssetCheckResult:
    environments = list(graph.pipeline.environments) or ["default"]
    results: dict[str, Any] = {}
    drifted: list[str] = []
    for environment in environments:
        runtime = TaskRuntime(
            graph=graph, environment=environment, store=infrakitchen.store(), tofu=tofu,
            runtime_vars=infrakitchen.runtime_vars(), actor=infrakitchen.principal(),
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
        asset_key=key, check_name=DRIFT_CHECK,
        passed=not drifted, severity=AssetCheckSeverity.ERROR,
        description=(f"drift in {', '.join(drifted)}: {'; '.join(changes)}" if drifted
                     else "no drift"),
        metadata={"drifted_environments": ", ".join(drifted) or "none",
                  "changes": MetadataValue.json(changes),
                  "environments": MetadataValue.json(results)})


def build_drift_job(graph: PipelineGraph, keys: list[AssetKey]) -> Any:
    return define_asset_job(
        name=f"{graph.pipeline.job_prefix}__drift_check",
        # the drift checks only: the resources' other checks (policy, ...) have their own runs
        selection=AssetSelection.checks(*(AssetCheckKey(key, DRIFT_CHECK) for key in keys)),
        executor_def=in_process_executor,
        tags={"infrakitchen/pipeline": graph.pipeline.name, "infrakitchen/job": "drift"},
        description=f"Drift checks of every resource of {graph.pipeline.name}",
    )
