"""Approval requests and decisions (the reference's "Approval" step; roles: `access.py`).

A request pins one saved plan (by sha256) to one resource and one configuration
fingerprint. Only a request that an owner or admin approved is ever applied, and only by
applying exactly that file; anything that changed since (configuration, state) makes the
request `stale` and a new one is needed. The `ik` commands, the Dagster assets and the
Python API all decide through here, so they enforce the same rules.

Identity is whatever principal the caller names (`--as`, `INFRAKITCHEN_USER`, the run's
`infrakitchen/user` tag, the OS user): authorisation, not authentication, and every such
decision is recorded as `claimed`. A pipeline that names `approvers` (an OpenSSH
allowed_signers file) authenticates decisions: only an SSH signature over the decision by
a listed key counts (`signatures.py`), recorded as `signed` with the principal and key, and
checked again just before the apply. The requester never approves its own request unless
the pipeline sets `allow_self_approval` (four eyes).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, NoReturn

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from . import settings
from .access import AccessControl, Permission
from .crypto import box
from .notify import Event, Notifier
from .signatures import SignatureError, Signer, canonical_payload
from .signatures import verify as verify_signature
from .spec import Pipeline, PipelineError, read_pipeline
from .store import (
    SENSITIVE,
    IllegalTransition,
    LifecycleStore,
    RecordView,
    RefusedInTransaction,
    open_values,
    seal_values,
)
from .store.lifecycle import Action
from .store.models import ApprovalRequestRow, utcnow


class ApprovalError(Exception):
    """A decision that cannot be taken (unknown request, already decided, ...)."""


#: how a decider is known (the request's `identity`, the audit's details["identity"])
CLAIMED, SIGNED = "claimed", "signed"
#: audit actions of refused decisions and of decisions refused again before the apply
SIGNATURE_REFUSED = "approval_signature_refused"
SELF_APPROVAL_REFUSED = "self_approval_refused"


class RequestStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    LAUNCHED = "launched"
    APPLIED = "applied"
    STALE = "stale"
    FAILED = "failed"


class Operation(StrEnum):
    PROVISION = "provision"
    UPDATE = "update"
    DESTROY = "destroy"


#: approved, and possibly launched: a run may apply it
APPROVED = (RequestStatus.APPROVED, RequestStatus.LAUNCHED)
#: not yet done with: pending, or approved and not applied
OPEN = (RequestStatus.PENDING, *APPROVED)
#: run tag naming the request a run was launched for (set by the approvals sensor)
REQUEST_TAG = "infrakitchen/approval_request"


@dataclass(frozen=True)
class ApprovalRequest:
    """A detached copy of a request row."""

    id: int
    resource_id: str
    pipeline: str
    task: str
    environment: str
    operation: str
    status: str
    fingerprint: str
    plan_summary: dict[str, int]
    plan_sha256: str
    plan_path: str
    proposed_variables: dict[str, Any]
    runtime_vars: dict[str, Any]
    sensitive_variables: list[str]
    diff: dict[str, Any]
    requested_by: str
    requested_at: datetime
    request_run_id: str | None
    decided_by: str | None
    decided_at: datetime | None
    decision_seq: int | None
    reason: str | None
    launched_run_id: str | None
    applied_run_id: str | None
    identity: str | None = None  # "claimed" or "signed" once decided
    signature: str | None = None  # armored SSH signature of a signed decision
    signer_principal: str | None = None
    key_fingerprint: str | None = None

    @classmethod
    def of(cls, row: ApprovalRequestRow) -> ApprovalRequest:
        """A plain copy: the sealed proposed secrets and runtime vars are decrypted."""
        fields = {f: getattr(row, f) for f in cls.__dataclass_fields__}
        fields["proposed_variables"] = open_values(row.proposed_variables)
        fields["runtime_vars"] = open_values(row.runtime_vars)
        return cls(**fields)

    def public(self) -> dict[str, Any]:
        """The `ik approvals --json` shape; proposed secrets are masked, the diff already is."""
        return {
            "id": self.id, "pipeline": self.pipeline, "task": self.task,
            "environment": self.environment, "operation": self.operation,
            "status": self.status, "requested_by": self.requested_by,
            "requested_at": self.requested_at.isoformat(),
            "decided_by": self.decided_by,
            "decided_at": self.decided_at.isoformat() if self.decided_at else None,
            "reason": self.reason, "plan_summary": self.plan_summary,
            "plan_sha256": self.plan_sha256, "fingerprint": self.fingerprint,
            "diff": self.diff,
            "proposed_variables": {k: (SENSITIVE if k in self.sensitive_variables else v)
                                   for k, v in self.proposed_variables.items()},
            "runtime_vars": sorted(self.runtime_vars),  # names only: values may be secret
            "request_run_id": self.request_run_id, "launched_run_id": self.launched_run_id,
            "applied_run_id": self.applied_run_id, "identity": self.identity,
            "signer_principal": self.signer_principal, "key_fingerprint": self.key_fingerprint,
        }


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def variables_diff(old: dict[str, Any], new: dict[str, Any], sensitive: set[str]
                   ) -> dict[str, Any]:
    """name -> {old, new} for every changed variable; secrets shown as "(sensitive)"."""
    diff: dict[str, Any] = {}
    for name in sorted(set(old) | set(new)):
        if old.get(name) == new.get(name):
            continue
        secret = name in sensitive
        diff[name] = {side: (SENSITIVE if secret and name in values else values.get(name))
                      for side, values in (("old", old), ("new", new))}
    return diff


class Approvals:
    """Requests and decisions, stored beside the records they are about."""

    def __init__(self, store: LifecycleStore):
        self.store = store
        self.access = AccessControl(store)

    # -- reading ----------------------------------------------------------------------

    def get(self, request_id: int) -> ApprovalRequest | None:
        with self.store.session() as session:
            row = session.get(ApprovalRequestRow, request_id)
            return ApprovalRequest.of(row) if row else None

    def list(self, pipeline: str | None = None, statuses: Sequence[str] = ()
             ) -> list[ApprovalRequest]:
        with self.store.session() as session:
            query = select(ApprovalRequestRow).order_by(ApprovalRequestRow.id)
            if pipeline:
                query = query.where(ApprovalRequestRow.pipeline == pipeline)
            if statuses:
                query = query.where(ApprovalRequestRow.status.in_(list(statuses)))
            return [ApprovalRequest.of(r) for r in session.scalars(query)]

    def latest(self, record: RecordView, operations: Sequence[str]) -> ApprovalRequest | None:
        """The newest request about `record` for one of `operations`."""
        with self.store.session() as session:
            row = session.scalar(
                select(ApprovalRequestRow)
                .where(ApprovalRequestRow.resource_id == record.id,
                       ApprovalRequestRow.operation.in_(list(operations)))
                .order_by(ApprovalRequestRow.id.desc()).limit(1))
            return ApprovalRequest.of(row) if row else None

    def open_for(self, record: RecordView) -> list[ApprovalRequest]:
        with self.store.session() as session:
            rows = session.scalars(
                select(ApprovalRequestRow)
                .where(ApprovalRequestRow.resource_id == record.id,
                       ApprovalRequestRow.status.in_([s.value for s in OPEN]))
                .order_by(ApprovalRequestRow.id))
            return [ApprovalRequest.of(r) for r in rows]

    def decided_after(self, seq: int, limit: int = 100) -> list[ApprovalRequest]:
        """Decisions newer than the cursor `seq`, oldest first (the sensor's read)."""
        with self.store.session() as session:
            rows = session.scalars(
                select(ApprovalRequestRow)
                .where(ApprovalRequestRow.decision_seq > seq)
                .order_by(ApprovalRequestRow.decision_seq).limit(limit))
            return [ApprovalRequest.of(r) for r in rows]

    def stranded(self, older_than_seconds: float) -> list[ApprovalRequest]:
        """Approved requests the cursor passed without launching (their pipeline was broken
        at the time), and launched ones whose run never started applying: the sensor
        looks at these few again instead of leaving them behind."""
        cutoff = utcnow() - timedelta(seconds=older_than_seconds)
        with self.store.session() as session:
            rows = session.scalars(
                select(ApprovalRequestRow)
                .where(ApprovalRequestRow.status.in_([s.value for s in APPROVED]),
                       ApprovalRequestRow.launched_run_id.is_(None),
                       ApprovalRequestRow.updated_at < cutoff)
                .order_by(ApprovalRequestRow.id).limit(50))
            return [ApprovalRequest.of(r) for r in rows]

    # -- requesting -------------------------------------------------------------------

    def request(self, record: RecordView, *, operation: Operation, fingerprint: str,
                plan_file: Path, plan_summary: dict[str, int],
                proposed_variables: dict[str, Any], sensitive_variables: set[str],
                requested_by: str, run_id: str | None,
                runtime_vars: dict[str, Any] | None = None) -> ApprovalRequest:
        """Record a pending request, keep its plan, retire older open ones.

        Provision and destroy requests put the record in `approval_pending`; an update
        request leaves the record as it is (it is the temporary state). The plan (it holds
        variable values), the proposed secrets and every runtime var are stored encrypted;
        the plan is kept in the store, so any machine sharing it can apply the request.
        """
        diff = (variables_diff(record.variables, proposed_variables,
                               sensitive_variables | set(record.sensitive_variables))
                if operation == Operation.UPDATE else {})
        retired: list[str] = []
        with self.store.session() as session:
            retired = self._retire_open(session, record.id, "superseded by a newer request")
            row = ApprovalRequestRow(
                resource_id=record.id, pipeline=record.pipeline, task=record.task,
                environment=record.environment, operation=operation.value,
                status=RequestStatus.PENDING.value, fingerprint=fingerprint,
                plan_summary=plan_summary, plan_sha256="", plan_path="",
                proposed_variables=seal_values(proposed_variables, sensitive_variables),
                runtime_vars=seal_values(dict(runtime_vars or {})),
                sensitive_variables=sorted(sensitive_variables), diff=diff,
                requested_by=requested_by, requested_at=utcnow(), request_run_id=run_id,
                updated_at=utcnow())
            session.add(row)
            session.flush()
            plan = plan_file.read_bytes()
            row.plan_blob = box().encrypt_bytes(plan)
            row.plan_sha256 = hashlib.sha256(plan).hexdigest()
            # where the private copy goes just before the apply (the id alone could repeat
            # across stores sharing a home)
            row.plan_path = str(settings.plans_dir()
                                / f"request-{row.id}-{uuid.uuid4().hex[:8]}.tfplan")
            details = {"request_id": row.id, "operation": operation.value,
                       "plan_summary": plan_summary, "plan_sha256": row.plan_sha256,
                       "diff": diff}
            if operation == Operation.UPDATE:
                self.store.audit_in(session, record, Action.REQUEST_APPROVAL.value,
                                    requested_by, run_id, details)
            else:
                self._transition(session, record, Action.REQUEST_APPROVAL, requested_by,
                                 run_id, details)
            created = ApprovalRequest.of(row)
        _remove_plans(retired)  # only once the transaction holds
        return created

    def _retire_open(self, session: Session, resource_id: str, reason: str) -> list[str]:
        """Mark the open requests stale; returns their plan files, to remove after commit."""
        rows = session.scalars(select(ApprovalRequestRow).where(
            ApprovalRequestRow.resource_id == resource_id,
            ApprovalRequestRow.status.in_([s.value for s in OPEN])))
        plans = []
        for row in rows:
            row.status, row.reason, row.updated_at = RequestStatus.STALE.value, reason, utcnow()
            plans.append(row.plan_path)
        return plans

    def _transition(self, session: Session, record: RecordView, action: Action, actor: str,
                    run_id: str | None, details: dict[str, Any]) -> RecordView:
        try:
            return self.store.transition(record, action, actor=actor, run_id=run_id,
                                         details=details, session=session)
        except RefusedInTransaction as refused:
            raise refused.error from None

    # -- deciding ---------------------------------------------------------------------

    def decide(self, request_id: int, *, approve: bool, actor: str,
               owners: Sequence[str] | None, reason: str | None = None,
               pipeline: Pipeline | None = None, signature: str | None = None
               ) -> ApprovalRequest:
        """Approve or reject a pending request (owner or admin only; once).

        `pipeline` is the request's pipeline (looked up by name in the pipelines directory
        when not given). When it names `approvers`, the decision counts only with
        `signature`, an SSH signature over `decision_payload(request, approve)` by a listed
        key, and the decider is the principal that signature proves, whatever `actor`
        claims. Otherwise the decider is `actor`, recorded as claimed. The requester may
        not approve its own request (four eyes) unless the pipeline allows self-approval.
        """
        current = self.get(request_id)
        if current is None:
            raise ApprovalError(f"no approval request {request_id}")
        spec = pipeline if pipeline is not None else pipeline_named(current.pipeline)
        identity = self._decider(current, spec, approve, actor, owners, signature)
        actor = identity.get("principal", actor)
        self.access.require(Permission.APPROVE, current.pipeline, actor, owners,
                            f"request {request_id}")
        if approve:
            self._four_eyes(current, actor, spec, stage="decision")
        if not approve and not (reason or "").strip():
            raise ApprovalError("a rejection needs a reason (--reason)")
        try:
            with self.store.session() as session:
                self._lock_decisions(session)
                row = session.get(ApprovalRequestRow, request_id, with_for_update=True)
                assert row is not None
                if row.status != RequestStatus.PENDING:
                    by = f" by {row.decided_by}" if row.decided_by else ""
                    raise ApprovalError(f"request {request_id} is already {row.status}{by}; "
                                        "a decided request cannot be decided again")
                record = self.store.get_in(session, row.resource_id)
                if record is None:
                    raise ApprovalError(f"the resource of request {request_id} is gone")
                row.status = (RequestStatus.APPROVED if approve else RequestStatus.REJECTED).value
                row.decided_by, row.decided_at, row.updated_at = actor, utcnow(), utcnow()
                row.reason = reason
                row.decision_seq = (session.scalar(
                    select(func.max(ApprovalRequestRow.decision_seq))) or 0) + 1
                row.identity = identity["identity"]
                row.signature = signature if row.identity == SIGNED else None
                row.signer_principal = identity.get("principal")
                row.key_fingerprint = identity.get("key_fingerprint")
                details = {"request_id": row.id, "operation": row.operation,
                           "plan_sha256": row.plan_sha256, "reason": reason, **identity}
                self._apply_decision(session, row, record, approve, actor, details)
                decided = ApprovalRequest.of(row)
            if not approve:
                _remove_plans([decided.plan_path])  # a rejected plan is never applied
            _notify_decision(decided, spec, self.store)
            return decided
        except IllegalTransition as exc:
            raise ApprovalError(f"request {request_id}: {exc}") from None

    def _apply_decision(self, session: Session, row: ApprovalRequestRow, record: RecordView,
                        approve: bool, actor: str, details: dict[str, Any]) -> None:
        action = Action.APPROVE if approve else Action.REJECT
        if row.operation == Operation.UPDATE:
            # the record never left provisioned/done: the decision is about the temp state
            if not approve:
                row.proposed_variables, row.diff, row.runtime_vars = {}, {}, {}
                details["discarded"] = True
            self.store.audit_in(session, record, action.value, actor, None, details)
            return
        record = self._transition(session, record, action, actor, None, details)
        if not approve and row.operation == Operation.DESTROY:
            # the reference: a rejected destroy returns the resource to provisioned
            self._transition(session, record, Action.CANCEL_DESTROY, actor, None,
                             {"request_id": row.id})

    # -- who decided: claimed or signed, and four eyes ----------------------------------

    def _decider(self, request: ApprovalRequest, spec: Pipeline | None, approve: bool,
                 actor: str, owners: Sequence[str] | None, signature: str | None
                 ) -> dict[str, str]:
        """The audit's identity details of a decision: {"identity": "claimed"}, or
        {"identity": "signed", "principal", "key_fingerprint"} once the signature holds."""
        approvers = spec.approvers_file if spec is not None else None
        if approvers is None:
            if signature:
                self._refuse(request, actor, SIGNATURE_REFUSED,
                             f"pipeline {request.pipeline!r} names no approvers file, so a "
                             "signed decision cannot be checked; decide without --key",
                             stage="decision")
            return {"identity": CLAIMED}
        assert spec is not None
        verb = "approve" if approve else "reject"
        if not signature:
            self._refuse(request, actor, SIGNATURE_REFUSED,
                         f"pipeline {request.pipeline!r} accepts only signed decisions "
                         f"(approvers = {spec.approvers!r}); --as and INFRAKITCHEN_USER do "
                         f"not count: run `ik {verb} {request.id} --key PATH`",
                         stage="decision")
        signer = self._signers(request, spec, verb, signature or "", owners, actor,
                               stage="decision")[0]
        return {"identity": SIGNED, "principal": signer.principal,
                "key_fingerprint": signer.key_fingerprint}

    def _signers(self, request: ApprovalRequest, spec: Pipeline, decision: str,
                 signature: str, owners: Sequence[str] | None, actor: str, *, stage: str
                 ) -> list[Signer]:
        """The principals `signature` proves for this decision who may approve on the
        pipeline (owner or admin); refuses (audited) when there are none."""
        approvers = spec.approvers_file
        assert approvers is not None
        try:
            proved = verify_signature(decision_payload(request, decision == "approve"),
                                      signature, approvers)
        except SignatureError as exc:
            self._refuse(request, actor, SIGNATURE_REFUSED,
                         f"request {request.id}: {exc}", stage=stage)
        allowed = [s for s in proved
                   if self.access.allows(Permission.APPROVE, request.pipeline, s.principal,
                                         owners)]
        if not allowed:
            names = ", ".join(repr(s.principal) for s in proved)
            self._refuse(request, actor, SIGNATURE_REFUSED,
                         f"request {request.id}: the signing key "
                         f"({proved[0].key_fingerprint}) belongs to {names}, which holds no "
                         f"owner or admin role on pipeline {request.pipeline!r}",
                         stage=stage, principal=proved[0].principal,
                         key_fingerprint=proved[0].key_fingerprint)
        return allowed

    def _four_eyes(self, request: ApprovalRequest, approver: str, spec: Pipeline | None,
                   *, stage: str) -> None:
        """The principal that requested a change may not approve it (unless allowed)."""
        if approver != request.requested_by or (spec is not None and spec.allow_self_approval):
            return
        self._refuse(request, approver, SELF_APPROVAL_REFUSED,
                     f"{approver!r} requested request {request.id} and cannot approve it "
                     "too (four eyes): another owner or admin must approve it, or the "
                     "pipeline sets allow_self_approval = true", stage=stage)

    def _refuse(self, request: ApprovalRequest, actor: str, action: str, message: str,
                **details: str) -> NoReturn:
        self.store.audit(action, actor=actor, pipeline=request.pipeline, task=request.task,
                         environment=request.environment,
                         details={"request_id": request.id, "operation": request.operation,
                                  "reason": message, **details})
        raise ApprovalError(message)

    def verify_before_apply(self, request: ApprovalRequest, pipeline: Pipeline) -> None:
        """Check an approved request's decision again, just before its plan is applied.

        On a pipeline with `approvers`, the stored signature must still verify over the
        request as it is now, with the approvers file as it is now, for the recorded
        decider, who must still hold owner or admin: a decision row written by hand, a key
        removed from the file since, a role revoked or a payload that no longer matches
        is refused (ApprovalError, audited as `approval_signature_refused`). Four eyes is
        checked again on every pipeline (`self_approval_refused`).
        """
        decider = request.decided_by or "(nobody)"
        if pipeline.approvers_file is not None:
            if request.identity != SIGNED or not request.signature:
                self._refuse(request, decider, SIGNATURE_REFUSED,
                             f"request {request.id} was approved without a signature "
                             f"(decided by {decider}, {request.identity or 'unrecorded'}), "
                             f"but pipeline {request.pipeline!r} accepts only signed "
                             "decisions; refusing to apply it", stage="apply")
            signers = self._signers(request, pipeline, "approve", request.signature or "",
                                    pipeline.owners, decider, stage="apply")
            if not any(s.principal == request.decided_by
                       and s.key_fingerprint == request.key_fingerprint for s in signers):
                self._refuse(request, decider, SIGNATURE_REFUSED,
                             f"request {request.id}: the signature proves "
                             f"{signers[0].principal!r} ({signers[0].key_fingerprint}), not "
                             f"the recorded decider {decider!r} "
                             f"({request.key_fingerprint}); refusing to apply it",
                             stage="apply")
        self._four_eyes(request, decider, pipeline, stage="apply")

    def withdraw(self, request_id: int, *, actor: str, owners: Sequence[str] | None
                 ) -> ApprovalRequest:
        """Take back a pending or approved (not yet launched) request.

        The requester may withdraw their own; owners and admins any. The resource returns
        to where it was before the request: a provision to `rejected` (ask again to go on),
        a destroy to `provisioned/done`, an update leaves the record as it always was.
        """
        current = self.get(request_id)
        if current is None:
            raise ApprovalError(f"no approval request {request_id}")
        if actor != current.requested_by:
            self.access.require(Permission.APPROVE, current.pipeline, actor, owners,
                                f"withdraw request {request_id} of {current.requested_by}")
        with self.store.session() as session:
            row = session.get(ApprovalRequestRow, request_id, with_for_update=True)
            assert row is not None
            if row.status not in (RequestStatus.PENDING, RequestStatus.APPROVED):
                raise ApprovalError(f"request {request_id} is {row.status}; only a pending or "
                                    "approved request can be withdrawn")
            record = self.store.get_in(session, row.resource_id)
            was = row.status
            row.status, row.reason = RequestStatus.STALE.value, f"withdrawn by {actor}"
            row.updated_at = utcnow()
            details = {"request_id": row.id, "operation": row.operation, "withdrawn": True}
            if record is not None and row.operation != Operation.UPDATE:
                if record.status == "approval_pending":
                    record = self._transition(session, record, Action.REJECT, actor, None,
                                              details)
                if row.operation == Operation.DESTROY:
                    self._transition(session, record, Action.CANCEL_DESTROY, actor, None,
                                     details)
                elif was == RequestStatus.APPROVED:
                    self.store.audit_in(session, record, "request_withdrawn", actor, None,
                                        details)
            elif record is not None:
                self.store.audit_in(session, record, "request_withdrawn", actor, None, details)
            withdrawn = ApprovalRequest.of(row)
        _remove_plans([withdrawn.plan_path])
        return withdrawn

    def _lock_decisions(self, session: Session) -> None:
        """Decisions take their sequence numbers one at a time, so the sensor's cursor
        never skips one that commits late."""
        if session.bind is not None and session.bind.dialect.name == "postgresql":
            session.execute(select(func.pg_advisory_xact_lock(727275)))

    # -- running ----------------------------------------------------------------------

    def claim_for_launch(self, request_id: int) -> bool:
        """Move approved -> launched; True for exactly one caller (two sensors racing,
        a restarted daemon that lost its cursor)."""
        with self.store.session() as session:
            result = session.execute(
                update(ApprovalRequestRow)
                .where(ApprovalRequestRow.id == request_id,
                       ApprovalRequestRow.status == RequestStatus.APPROVED.value)
                .values(status=RequestStatus.LAUNCHED.value, updated_at=utcnow()))
            return result.rowcount == 1

    def mark_launched_run(self, request_id: int, run_id: str) -> None:
        """The run applying a request says which run it is (shown by `ik approvals`)."""
        with self.store.session() as session:
            row = session.get(ApprovalRequestRow, request_id)
            if row is not None and row.launched_run_id is None:
                row.launched_run_id = run_id

    def mark(self, request_id: int, status: RequestStatus, *, actor: str,
             run_id: str | None = None, reason: str | None = None) -> None:
        with self.store.session() as session:
            row = session.get(ApprovalRequestRow, request_id, with_for_update=True)
            if row is None:
                return
            row.status, row.updated_at = status.value, utcnow()
            if reason:
                row.reason = reason
            if status == RequestStatus.APPLIED:
                row.applied_run_id = run_id
            plan = row.plan_path
            record = self.store.get_in(session, row.resource_id)
            self.store.audit_in(session, record, f"request_{status.value}", actor, run_id,
                                {"request_id": row.id, "operation": row.operation,
                                 **({"reason": reason} if reason else {})})
        if status in (RequestStatus.APPLIED, RequestStatus.STALE, RequestStatus.FAILED):
            _remove_plans([plan])  # never to be applied again

    def saved_plan(self, request_id: int) -> bytes | None:
        """The plan bytes kept with a request (decrypted); None when there are none."""
        with self.store.session() as session:
            row = session.get(ApprovalRequestRow, request_id)
            blob = row.plan_blob if row is not None else None
        return box().decrypt_bytes(blob) if blob is not None else None

    def verified_plan(self, request: ApprovalRequest, pipeline: Pipeline | None = None
                      ) -> Path:
        """The saved plan of `request`, after checking it is the very file approved and
        that its decision still holds (`verify_before_apply` with `pipeline`, the run's
        own pipeline; looked up by name when not given).

        Written from the store to a private (0600) copy under the plans directory just
        before the apply; the copy is removed when the request is done with (`mark`).
        A request made before plans lived in the store still has only its file.
        """
        spec = pipeline if pipeline is not None else pipeline_named(request.pipeline)
        if spec is not None:
            self.verify_before_apply(request, spec)
        path = _local_plan(request.plan_path)
        plan = self.saved_plan(request.id)
        if plan is not None:
            settings.write_private(path, plan)
        if not path.is_file():
            raise ApprovalError(f"the saved plan of request {request.id} is missing "
                                f"({path}); a new request is needed")
        actual = sha256_file(path)
        if actual != request.plan_sha256:
            raise ApprovalError(f"the saved plan of request {request.id} changed after "
                                f"approval (sha256 {actual[:12]}… != {request.plan_sha256[:12]}…)"
                                "; refusing to apply it")
        return path


def _notify_decision(request: ApprovalRequest, spec: Pipeline | None,
                     store: LifecycleStore) -> None:
    """Tell the pipeline's `[notifications]` about a decision, wherever it was taken
    (`ik`, the UI, the Python API); delivery runs on its own thread."""
    kind = "approved" if request.status == RequestStatus.APPROVED else "rejected"
    Notifier.of(spec, store).send(Event(
        kind=kind, pipeline=request.pipeline, task=request.task,
        environment=request.environment, operation=request.operation,
        request_id=request.id, plan=request.plan_summary, asked_by=request.requested_by,
        decided_by=request.decided_by, reason=request.reason),
        secrets=[str(v) for k, v in request.proposed_variables.items()
                 if k in request.sensitive_variables])


def decision_payload(request: ApprovalRequest, approve: bool) -> bytes:
    """The canonical bytes an approver signs for a decision on `request`
    (see `signatures.canonical_payload`)."""
    return canonical_payload(request_id=request.id, pipeline=request.pipeline,
                             task=request.task, environment=request.environment,
                             operation=request.operation,
                             decision="approve" if approve else "reject",
                             fingerprint=request.fingerprint)


def pipeline_named(name: str) -> Pipeline | None:
    """The pipeline called `name` in the pipelines directory; None when it is missing or
    its file is broken (a caller that has the pipeline passes it instead)."""
    from .graph import find_pipeline  # graph is heavy; only decisions need it

    try:
        return read_pipeline(find_pipeline(name, settings.pipelines_dir()))
    except PipelineError:
        return None


def gated(pipeline_approval: bool, task_approval: bool | None) -> bool:
    """A task's own `approval` wins over the pipeline's."""
    return pipeline_approval if task_approval is None else task_approval


def _local_plan(plan_path: str) -> Path:
    """Where a request's private plan copy lives on this machine (the recorded path may
    be another machine's home)."""
    return settings.plans_dir() / Path(plan_path).name


def _remove_plans(paths: Sequence[str]) -> None:
    """Remove the private plan copies of requests that are done with (the encrypted
    plan stays with the request in the store)."""
    for path in paths:
        if path:
            Path(path).unlink(missing_ok=True)
            _local_plan(path).unlink(missing_ok=True)
