"""The `policy` asset check of each resource: what the pipeline's Rego policies said about
its last plan.

A check evaluation is logged by the step that judged the plan (a provision, an update, a
destroy, a gated plan filed for approval), at that moment: a deny fails the step, so a
check run after the materialisation would never report it. It fails (ERROR) on a deny,
warns (WARN) on warnings and passes otherwise; its metadata holds the messages, the
operation, the environment and the policies' digest. The same verdict is kept on the
record (`ik inspect`). Run on its own (Execute in the UI), the check judges today's
configuration by today's policies: a plan per resource and environment, nothing applied.
"""

from collections.abc import Mapping
from typing import Any

from dagster import (
    AssetCheckEvaluation,
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetKey,
    MetadataValue,
)

from .checks import per_resource_check
from .graph import Node, PipelineGraph
from .interpolation import InterpolationError
from .resources import InfraKitchenResource, TofuResource
from .runtime import TaskRuntime
from .runtime.policy import PolicyDenied, dry_run
from .store import RecordView

POLICY_CHECK = "policy"


def _bullets(messages: list[str]) -> MetadataValue:
    return MetadataValue.md("\n".join(f"- {m}" for m in messages) or "none")


def _judged(verdicts: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    """passed, severity, description and metadata of verdicts by environment."""
    deny = [f"{env}: {m}" if len(verdicts) > 1 else m
            for env, v in verdicts.items() for m in v.get("deny", [])]
    warn = [f"{env}: {m}" if len(verdicts) > 1 else m
            for env, v in verdicts.items() for m in v.get("warn", [])]
    some = next(iter(verdicts.values()), {})
    if deny:
        description = f"denied: {'; '.join(deny)}"
    elif warn:
        description = f"{len(warn)} warning(s): {'; '.join(warn)}"
    else:
        description = "no policy denies or warns"
    return {
        "passed": not deny and not warn,
        "severity": AssetCheckSeverity.ERROR if deny else AssetCheckSeverity.WARN,
        "description": description[:2000],
        "metadata": {
            "environment": ", ".join(verdicts),
            "operation": ", ".join(sorted({v.get("operation", "") for v in verdicts.values()})),
            "deny": _bullets(deny), "warn": _bullets(warn),
            "policy_digest": str(some.get("digest", ""))[:16],
            "policy_files": ", ".join(some.get("files", [])),
        },
    }


def policy_evaluation(key: AssetKey, verdict: dict[str, Any],
                      environment: str) -> AssetCheckEvaluation:
    """The `policy` check evaluation of one verdict (the record's `policy` shape)."""
    return AssetCheckEvaluation(asset_key=key, check_name=POLICY_CHECK,
                                **_judged({environment: verdict}))


def judged_now(record: RecordView | None, run_id: str | None) -> dict[str, Any] | None:
    """The record's verdict when this run made it (an unchanged resource was not judged
    again: nothing was planned)."""
    policy = record.policy if record is not None else None
    if not policy or run_id is None or policy.get("run_id") != run_id:
        return None
    return policy


def report(context: Any, key: AssetKey, environment: str, *,
           record: RecordView | None = None, error: BaseException | None = None) -> None:
    """Log the `policy` evaluation this step made, if it made one: from a deny (`error`)
    or from the record it left."""
    if isinstance(error, PolicyDenied):
        verdict: dict[str, Any] | None = error.verdict.as_dict()
    else:
        verdict = judged_now(record, context.run.run_id)
    if verdict is not None:
        context.log_event(policy_evaluation(key, verdict, environment))


def policy_metadata(record: RecordView) -> dict[str, Any]:
    """Materialisation metadata of the verdict made in the run that moved `record` last."""
    policy = judged_now(record, record.last_run_id)
    if policy is None:
        return {}
    return {"policy_warn": _bullets(policy.get("warn", [])),
            "policy_digest": str(policy.get("digest", ""))[:16]}


def build_policy_checks(graph: PipelineGraph, keys: Mapping[str, AssetKey]
                        ) -> AssetChecksDefinition:
    """The `policy` check of each resource `keys` names (node name -> asset key), run on
    its own as a dry run of today's configuration."""
    return per_resource_check(graph, keys, POLICY_CHECK,
                              "the pipeline's Rego policies (deny/warn) on the plan",
                              _check_one)


def _check_one(graph: PipelineGraph, node: Node, key: AssetKey,
               context: AssetCheckExecutionContext, tofu: TofuResource,
               infrakitchen: InfraKitchenResource) -> AssetCheckResult:
    verdicts: dict[str, dict[str, Any]] = {}
    unplanned: list[str] = []
    for environment in graph.pipeline.environment_names:
        runtime = TaskRuntime(
            graph=graph, environment=environment, store=infrakitchen.store(), tofu=tofu,
            runtime_vars=infrakitchen.runtime_vars(), actor=infrakitchen.principal(),
            run_id=context.run.run_id, log=context.log.debug, progress=context.log.info)
        try:
            verdict = dry_run(runtime, node)
        except InterpolationError as exc:  # upstream outputs unknown until applied
            unplanned.append(f"{environment}: {exc}")
            continue
        if verdict is not None:
            verdicts[environment] = verdict.as_dict()
    if not verdicts:
        return AssetCheckResult(
            asset_key=key, check_name=POLICY_CHECK, passed=True,
            severity=AssetCheckSeverity.WARN,
            description="not planned: " + ("; ".join(unplanned) or "no policies"))
    judged = _judged(verdicts)
    if unplanned:
        judged["metadata"]["not_planned"] = "; ".join(unplanned)
    return AssetCheckResult(asset_key=key, check_name=POLICY_CHECK, **judged)
