"""SQLAlchemy tables of the lifecycle store (Alembic migrations mirror these)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class ResourceRecord(Base):
    """One resource per (pipeline, task, environment): the InfraKitchen record."""

    __tablename__ = "ik_resources"
    __table_args__ = (UniqueConstraint("pipeline", "task", "environment"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    pipeline: Mapped[str] = mapped_column(String(200), index=True)
    task: Mapped[str] = mapped_column(String(300))
    environment: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(20))
    module: Mapped[str | None] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20))
    revision: Mapped[int] = mapped_column(Integer, default=1)
    variables: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    outputs: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    sensitive_variables: Mapped[list[Any]] = mapped_column(JSON, default=list)
    sensitive_outputs: Mapped[list[Any]] = mapped_column(JSON, default=list)
    parents: Mapped[list[Any]] = mapped_column(JSON, default=list)
    fingerprint: Mapped[str | None] = mapped_column(String(64))
    last_run_id: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text)
    module_hash: Mapped[str | None] = mapped_column(String(64))
    drift: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    #: {"host", "pid", "started", "run_id"} of the process working on the record
    lease_holder: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    #: (serial, lineage) of the state as the last apply left it: a state moved since (an
    #: apply from elsewhere) is a change even when the configuration is not
    state_serial: Mapped[int | None] = mapped_column(Integer)
    state_lineage: Mapped[str | None] = mapped_column(String(64))
    #: where the module came from: {"module", "ref", "commit"} (commit for git sources)
    source: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    #: the task's labels ({key: value})
    labels: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    #: {"dependency_tags": [...], "dependency_configs": [...], "inherited_tags": [...],
    #:  "inherited_configs": [...]}: own entries, and effective inherited ones with `from`
    tags: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    #: the last policy evaluation: {"digest", "operation", "deny": [...], "warn": [...]}
    policy: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Revision(Base):
    """A full snapshot of a record at each change, with secrets already masked."""

    __tablename__ = "ik_revisions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    resource_id: Mapped[str] = mapped_column(String(36), index=True)
    revision: Mapped[int] = mapped_column(Integer)
    time: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    snapshot: Mapped[dict[str, Any]] = mapped_column(JSON)


class RegisteredValue(Base):
    """A pipeline variable published by `register` (per pipeline and environment)."""

    __tablename__ = "ik_registered"

    pipeline: Mapped[str] = mapped_column(String(200), primary_key=True)
    environment: Mapped[str] = mapped_column(String(100), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    value: Mapped[Any] = mapped_column(JSON)
    task: Mapped[str] = mapped_column(String(300))
    sensitive: Mapped[bool] = mapped_column(Boolean, default=False)
    run_id: Mapped[str | None] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class AuditEntry(Base):
    """Every action on a resource; kept (archived) after the record is deleted."""

    __tablename__ = "ik_audit"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    time: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(50))
    pipeline: Mapped[str | None] = mapped_column(String(200), index=True)
    task: Mapped[str | None] = mapped_column(String(300))
    environment: Mapped[str | None] = mapped_column(String(100))
    resource_id: Mapped[str | None] = mapped_column(String(36))
    revision: Mapped[int | None] = mapped_column(Integer)
    run_id: Mapped[str | None] = mapped_column(String(64))
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    archived: Mapped[bool] = mapped_column(Boolean, default=False)


class TeardownMark(Base):
    """A failed run whose global teardown has been handled, so it fires once."""

    __tablename__ = "ik_teardown_runs"

    run_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    pipeline: Mapped[str] = mapped_column(String(200))
    handled_by: Mapped[str] = mapped_column(String(50))
    time: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    #: the teardown run that acted on the claim (each claim is acted on once)
    teardown_run_id: Mapped[str | None] = mapped_column(String(64))


class RunPrincipalRow(Base):
    """Who a Dagster run acts as, settled by its first step (see `run_principal`)."""

    __tablename__ = "ik_run_principals"

    run_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    principal: Mapped[str] = mapped_column(String(200))
    #: where the principal came from: tag, ui, trigger, location or unset
    source: Mapped[str] = mapped_column(String(20))
    settled_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ApprovalRequestRow(Base):
    """A request to provision, update or destroy one resource, with its saved plan.

    For an update it is also the reference's "temporary state": the proposed variables and
    their diff live here until the apply merges them into the record.
    """

    __tablename__ = "ik_approval_requests"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    resource_id: Mapped[str] = mapped_column(String(36), index=True)
    pipeline: Mapped[str] = mapped_column(String(200), index=True)
    task: Mapped[str] = mapped_column(String(300))
    environment: Mapped[str] = mapped_column(String(100))
    operation: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20), index=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    plan_summary: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    plan_sha256: Mapped[str] = mapped_column(String(64))
    plan_path: Mapped[str] = mapped_column(Text)
    #: the saved plan itself, Fernet-encrypted: any machine sharing the store can apply it
    plan_blob: Mapped[bytes | None] = mapped_column(LargeBinary)
    proposed_variables: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    #: the run's runtime vars, so the run that applies the request resolves the same values
    runtime_vars: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    sensitive_variables: Mapped[list[Any]] = mapped_column(JSON, default=list)
    diff: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    requested_by: Mapped[str] = mapped_column(String(200))
    requested_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    request_run_id: Mapped[str | None] = mapped_column(String(64))
    decided_by: Mapped[str | None] = mapped_column(String(200))
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    decision_seq: Mapped[int | None] = mapped_column(Integer, index=True, unique=True)
    reason: Mapped[str | None] = mapped_column(Text)
    launched_run_id: Mapped[str | None] = mapped_column(String(64))
    applied_run_id: Mapped[str | None] = mapped_column(String(64))
    #: how the decider is known: "claimed" (--as, INFRAKITCHEN_USER) or "signed" (SSH key)
    identity: Mapped[str | None] = mapped_column(String(20))
    #: the armored `ssh-keygen -Y sign` signature over the canonical decision payload
    signature: Mapped[str | None] = mapped_column(Text)
    #: the allowed_signers principal the signature proved, and its key ("SHA256:...")
    signer_principal: Mapped[str | None] = mapped_column(String(200))
    key_fingerprint: Mapped[str | None] = mapped_column(String(100))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class RunVars(Base):
    """A run's runtime vars, sealed; its run config carries only the reference."""

    __tablename__ = "ik_run_vars"

    ref: Mapped[str] = mapped_column(String(64), primary_key=True)
    values: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class GrantRow(Base):
    """A role on a pipeline; the TOML `owners` are owners without a row."""

    __tablename__ = "ik_grants"

    pipeline: Mapped[str] = mapped_column(String(200), primary_key=True)
    principal: Mapped[str] = mapped_column(String(200), primary_key=True)
    role: Mapped[str] = mapped_column(String(20))
    granted_by: Mapped[str] = mapped_column(String(200))
    granted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
