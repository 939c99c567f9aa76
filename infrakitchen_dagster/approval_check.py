"""The `approval` asset check of each gated resource: where a pending request shows.

People look at an asset's checks, not at its event log, to see whether something waits
for them. The check reads the newest request of the resource (every environment of the
pipeline) from the lifecycle store:

- WARN while a request is open, with what an approver needs: the request id, operation,
  plan (`+1 ~0 -1`), the variable diff (secrets masked), who asked, and the exact
  command (or the `<pipeline>__approve` job) that decides it;
- passing once approved or applied (approver, key fingerprint where signed, plan sha256),
  or when nothing is open;
- failing (ERROR) when the request was rejected, or its approved plan failed to apply.

The provision steps and the approve job log this evaluation as they change a request,
so the check is current without anyone executing it; executing it re-reads the store
(after `ik approve` on the command line, say).
"""

import json
from collections.abc import Iterator, Mapping
from typing import Any

from dagster import (
    AssetCheckEvaluation,
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetKey,
    MetadataValue,
    multi_asset_check,
)

from .approvals import (
    ApprovalRequest,
    Approvals,
    RequestStatus,
    decision_payload,
    gated,
)
from .graph import PipelineGraph
from .notify import plan_text
from .signatures import NAMESPACE
from .store import LifecycleStore

APPROVAL_CHECK = "approval"
#: every operation a request can be about
OPERATIONS = ("provision", "update", "destroy")


def gated_resources(graph: PipelineGraph) -> list[str]:
    """The resources of `graph` whose changes wait for an approval."""
    return [n for n in graph.resources
            if gated(graph.pipeline.approval, graph.nodes[n].task.approval)]


def approve_job_name(graph: PipelineGraph) -> str:
    return f"{graph.pipeline.job_prefix}__approve"


def approve_command(graph: PipelineGraph, request: ApprovalRequest, approve: bool = True
                    ) -> str:
    """The `ik` command that takes this decision (signed where the pipeline signs)."""
    command = (f"ik approve {request.id}" if approve
               else f"ik reject {request.id} --reason '...'")
    return command + (" --key PATH" if graph.pipeline.approvers else "")


def variables_markdown(diff: Mapping[str, Any]) -> str:
    """The request's variable diff (already masked) as a markdown table."""
    if not diff:
        return "no variable changes (a new resource, or a destroy)"
    rows = ["| Variable | Old | New |", "| --- | --- | --- |"]
    for name, change in diff.items():
        old, new = (json.dumps(change.get(side)).replace("|", "\\|") for side in ("old", "new"))
        rows.append(f"| `{name}` | {old} | {new} |")
    return "\n".join(rows)


def _pending(graph: PipelineGraph, request: ApprovalRequest) -> dict[str, Any]:
    meta = {
        "request_id": request.id, "operation": request.operation,
        "environment": request.environment, "plan": plan_text(request.plan_summary),
        "variables": MetadataValue.md(variables_markdown(request.diff)),
        "requested_by": request.requested_by,
        "requested_at": request.requested_at.isoformat(timespec="seconds"),
        "approve_command": approve_command(graph, request),
        "reject_command": approve_command(graph, request, approve=False),
        "approve_job": f"{approve_job_name(graph)} (Launchpad: request_id {request.id}, "
                       "decision approve or reject)",
    }
    if graph.pipeline.approvers:  # what to sign for the approve job's `signature`
        payload = decision_payload(request, True).decode()
        meta["signing_payload"] = MetadataValue.md(f"```\n{payload}```")
        meta["sign_command"] = (f"ssh-keygen -Y sign -n {NAMESPACE} -f KEY < payload.txt "
                                "(the payload above, ending in a newline; paste the output "
                                "into the approve job's signature)")
    return meta


def _decided(request: ApprovalRequest) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "request_id": request.id, "operation": request.operation,
        "environment": request.environment, "status": request.status,
        "plan": plan_text(request.plan_summary), "plan_sha256": request.plan_sha256,
        "requested_by": request.requested_by, "decided_by": request.decided_by or "-",
    }
    if request.identity == "signed":
        meta["key_fingerprint"] = request.key_fingerprint or "-"
    if request.reason:
        meta["reason"] = request.reason
    return meta


def evaluate(graph: PipelineGraph, task: str, key: AssetKey, store: LifecycleStore
             ) -> AssetCheckEvaluation:
    """The check's result for one resource, over every environment of its pipeline."""
    approvals = Approvals(store)
    latest: list[ApprovalRequest] = []
    for environment in list(graph.pipeline.environments) or ["default"]:
        record = store.get(graph.pipeline.name, task, environment)
        request = approvals.latest(record, OPERATIONS) if record is not None else None
        if request is not None:
            latest.append(request)

    def first(*statuses: RequestStatus) -> ApprovalRequest | None:
        return next((r for r in latest if r.status in statuses), None)

    if (request := first(RequestStatus.PENDING)) is not None:
        return _evaluation(key, False, AssetCheckSeverity.WARN,
                           f"request {request.id} ({request.operation}, "
                           f"{request.environment}) waits for approval: plan "
                           f"{plan_text(request.plan_summary)}, asked by "
                           f"{request.requested_by}; {approve_command(graph, request)}",
                           _pending(graph, request))
    if (request := first(RequestStatus.REJECTED, RequestStatus.FAILED)) is not None:
        what = ("rejected by " + (request.decided_by or "?")
                if request.status == RequestStatus.REJECTED else "failed to apply")
        return _evaluation(key, False, AssetCheckSeverity.ERROR,
                           f"request {request.id} ({request.operation}, "
                           f"{request.environment}) {what}: {request.reason or '-'}",
                           _decided(request))
    if (request := first(RequestStatus.APPROVED, RequestStatus.LAUNCHED,
                         RequestStatus.APPLIED)) is not None:
        signed = (f", signed with {request.key_fingerprint}" if request.identity == "signed"
                  else "")
        return _evaluation(key, True, AssetCheckSeverity.WARN,
                           f"request {request.id} ({request.operation}, "
                           f"{request.environment}) {request.status}: approved by "
                           f"{request.decided_by}{signed}", _decided(request))
    return _evaluation(key, True, AssetCheckSeverity.WARN, "no approval request open",
                       {"open_requests": 0})


def _evaluation(key: AssetKey, passed: bool, severity: AssetCheckSeverity, description: str,
                metadata: dict[str, Any]) -> AssetCheckEvaluation:
    return AssetCheckEvaluation(asset_key=key, check_name=APPROVAL_CHECK, passed=passed,
                                severity=severity, description=description, metadata=metadata)


def build_approval_checks(graph: PipelineGraph, keys: Mapping[str, AssetKey]
                          ) -> AssetChecksDefinition | None:
    """The `approval` check of each gated resource; None when nothing is gated."""
    nodes = {keys[name]: name for name in gated_resources(graph) if name in keys}
    if not nodes:
        return None
    specs = [AssetCheckSpec(name=APPROVAL_CHECK, asset=key,
                            description="Open approval request of this resource: WARN while "
                                        "one waits, passing once approved, failing when "
                                        "rejected")
             for key in nodes]

    @multi_asset_check(name=f"{graph.pipeline.job_prefix}__{APPROVAL_CHECK}", specs=specs,
                       can_subset=True)
    def _approval(context: AssetCheckExecutionContext) -> Iterator[AssetCheckResult]:
        store = LifecycleStore()
        for check_key in sorted(context.selected_asset_check_keys, key=str):
            evaluation = evaluate(graph, nodes[check_key.asset_key], check_key.asset_key,
                                  store)
            yield _as_result(evaluation)

    return _approval


def _as_result(evaluation: AssetCheckEvaluation) -> AssetCheckResult:
    """The same evaluation as the `AssetCheckResult` a check function returns."""
    return AssetCheckResult(asset_key=evaluation.asset_key, check_name=evaluation.check_name,
                            passed=evaluation.passed, severity=evaluation.severity,
                            description=evaluation.description,
                            metadata=dict(evaluation.metadata))
