"""The lifecycle store: resource records, revisions, registered values and the audit log.

SQLite under the InfraKitchen home by default, PostgreSQL when `INFRAKITCHEN_DATABASE_URL`
says so. Every state change goes through `lifecycle.next_state`, in one transaction that
also writes the revision snapshot and the audit entry, so the record and its history never
disagree.
"""

from __future__ import annotations

import fcntl
import os
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, event, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from ..settings import database_url
from .lifecycle import Action, IllegalTransition, State, Status, next_state
from .models import AuditEntry, RegisteredValue, ResourceRecord, Revision, TeardownMark, utcnow

__all__ = [
    "Action",
    "IllegalTransition",
    "LifecycleStore",
    "RecordView",
    "State",
    "Status",
]

SENSITIVE = "(sensitive)"
_MIGRATIONS = Path(__file__).parent / "migrations"
_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


def masked(values: dict[str, Any], sensitive: list[str] | set[str]) -> dict[str, Any]:
    return {k: (SENSITIVE if k in sensitive else v) for k, v in values.items()}


@dataclass(frozen=True)
class RecordView:
    """A detached, read-only copy of a resource record."""

    id: str
    pipeline: str
    task: str
    environment: str
    kind: str
    module: str | None
    state: str
    status: str
    revision: int
    variables: dict[str, Any]
    outputs: dict[str, Any]
    sensitive_variables: list[str]
    sensitive_outputs: list[str]
    parents: list[str]
    fingerprint: str | None
    last_run_id: str | None
    error: str | None
    module_hash: str | None
    drift: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, row: ResourceRecord) -> RecordView:
        return cls(**{f: getattr(row, f) for f in cls.__dataclass_fields__})

    @property
    def secrets(self) -> list[str]:
        """Sensitive values as text, for masking log lines."""
        values = [self.variables.get(k) for k in self.sensitive_variables]
        values += [self.outputs.get(k) for k in self.sensitive_outputs]
        return [str(v) for v in values if v not in (None, "")]

    def public(self) -> dict[str, Any]:
        """The `ik inspect --json` shape: secrets replaced by "(sensitive)"."""
        return {
            "id": self.id,
            "pipeline": self.pipeline,
            "task": self.task,
            "environment": self.environment,
            "kind": self.kind,
            "module": self.module,
            "state": self.state,
            "status": self.status,
            "revision": self.revision,
            "outputs": masked(self.outputs, self.sensitive_outputs),
            "variables": masked(self.variables, self.sensitive_variables),
            "parents": self.parents,
            "fingerprint": self.fingerprint,
            "last_run_id": self.last_run_id,
            "error": self.error,
            "drift": self.drift,
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "updated_at": self.updated_at.isoformat() if self.updated_at else None,
        }


class RefusedInTransaction(Exception):
    """Carries an IllegalTransition out of the transaction it must not commit."""

    def __init__(self, error: IllegalTransition):
        self.error = error
        super().__init__(str(error))


def _engine(url: str) -> Engine:
    with _engines_lock:
        if url not in _engines:
            if url.startswith("sqlite"):
                path = url.split("///", 1)[-1]
                if path and path != ":memory:":
                    Path(path).parent.mkdir(parents=True, exist_ok=True)
                engine = create_engine(url, connect_args={"timeout": 60})

                @event.listens_for(engine, "connect")
                def _sqlite_pragmas(conn, _record):  # WAL: many step processes write at once
                    cursor = conn.cursor()
                    cursor.execute("PRAGMA journal_mode=WAL")
                    cursor.execute("PRAGMA busy_timeout=60000")
                    cursor.close()
            else:
                engine = create_engine(url, pool_pre_ping=True)
            _migrate(engine, url)
            _engines[url] = engine
        return _engines[url]


@contextmanager
def _migration_lock(engine: Engine, url: str) -> Iterator[None]:
    """Serialise migrations across processes (many Dagster steps start at once)."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1] or "memory"
        with open(f"{path}.migrate.lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield
        return
    with engine.connect() as conn:
        conn.exec_driver_sql("SELECT pg_advisory_lock(727274)")
        try:
            yield
        finally:
            conn.exec_driver_sql("SELECT pg_advisory_unlock(727274)")
            conn.commit()


def _migrate(engine: Engine, url: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    head = ScriptDirectory.from_config(config).get_current_head()
    with engine.connect() as conn:
        current = MigrationContext.configure(
            conn, opts={"version_table": "ik_alembic_version"}
        ).get_current_revision()
    if current == head:
        return
    with _migration_lock(engine, url), engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "head")


class LifecycleStore:
    """Records and their history. Safe to create per step: engines are cached per URL."""

    def __init__(self, url: str | None = None):
        self.url = url or database_url()
        self.engine = _engine(self.url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions.begin() as session:
            yield session

    # -- records ----------------------------------------------------------------------

    def _row(self, session: Session, pipeline: str, task: str, environment: str):
        return session.scalar(
            select(ResourceRecord).where(
                ResourceRecord.pipeline == pipeline,
                ResourceRecord.task == task,
                ResourceRecord.environment == environment,
            ).with_for_update()
        )

    def get(self, pipeline: str, task: str, environment: str) -> RecordView | None:
        with self.session() as session:
            row = self._row(session, pipeline, task, environment)
            return RecordView.of(row) if row else None

    def records(self, pipeline: str | None = None) -> list[RecordView]:
        with self.session() as session:
            query = select(ResourceRecord).order_by(
                ResourceRecord.pipeline, ResourceRecord.environment, ResourceRecord.created_at
            )
            if pipeline:
                query = query.where(ResourceRecord.pipeline == pipeline)
            return [RecordView.of(r) for r in session.scalars(query)]

    def create(
        self,
        pipeline: str,
        task: str,
        environment: str,
        *,
        kind: str,
        module: str | None,
        parents: list[str],
        actor: str,
        run_id: str | None = None,
    ) -> RecordView:
        """The reference's Create step; returns the existing record if there is one."""
        try:
            with self.session() as session:
                row = self._row(session, pipeline, task, environment)
                if row is not None:
                    return RecordView.of(row)
                state, status = next_state(Action.CREATE, None, None)
                row = ResourceRecord(
                    id=str(uuid.uuid4()), pipeline=pipeline, task=task,
                    environment=environment, kind=kind, module=module, state=state,
                    status=status, revision=1, variables={}, outputs={},
                    sensitive_variables=[], sensitive_outputs=[], parents=parents,
                    created_at=utcnow(), updated_at=utcnow(), last_run_id=run_id,
                )
                session.add(row)
                session.flush()
                self._history(session, row, Action.CREATE, actor, run_id, {"module": module})
                return RecordView.of(row)
        except IntegrityError:  # another step created it at the same moment
            existing = self.get(pipeline, task, environment)
            assert existing is not None
            return existing

    def transition(
        self,
        record: RecordView,
        action: Action,
        *,
        actor: str,
        run_id: str | None = None,
        details: dict[str, Any] | None = None,
        bump_revision: bool = False,
        session: Session | None = None,
        **changes: Any,
    ) -> RecordView:
        """Apply `action` (checked by the state machine) and any field `changes` at once.

        A refused transition changes nothing and is audited as refused. Pass `session` to
        make the change part of a larger transaction (an approval decision, say).
        """
        if session is not None:
            return self._transition(session, record, action, actor, run_id, details,
                                    bump_revision, changes)
        try:
            with self.session() as own:
                return self._transition(own, record, action, actor, run_id, details,
                                        bump_revision, changes)
        except RefusedInTransaction as refused:
            self.audit(f"{action.value}_refused", actor=actor, pipeline=record.pipeline,
                       task=record.task, environment=record.environment, run_id=run_id,
                       details={"refused": str(refused.error), **(details or {})})
            raise refused.error from None

    def _transition(self, session: Session, record: RecordView, action: Action, actor: str,
                    run_id: str | None, details: dict[str, Any] | None, bump_revision: bool,
                    changes: dict[str, Any]) -> RecordView:
        row = self._row(session, record.pipeline, record.task, record.environment)
        if row is None:
            raise IllegalTransition(action, None, None, "an existing record")
        try:
            state, status = next_state(action, row.state, row.status)
        except IllegalTransition as exc:
            raise RefusedInTransaction(exc) from None
        row.state, row.status = state.value, status.value
        for key, value in changes.items():
            setattr(row, key, value)
        if bump_revision:
            row.revision += 1
        row.updated_at = utcnow()
        if run_id:
            row.last_run_id = run_id
        self._history(session, row, action, actor, run_id, details or {})
        return RecordView.of(row)

    def record_drift(self, record: RecordView, drift: dict[str, Any], *, actor: str,
                     run_id: str | None) -> None:
        """Keep the latest drift check on the record; audit when the verdict changes."""
        with self.session() as session:
            row = self._row(session, record.pipeline, record.task, record.environment)
            if row is None:
                return
            before = bool((row.drift or {}).get("drifted"))
            row.drift = {**drift, "checked_at": utcnow().isoformat(), "run_id": run_id}
            if drift["drifted"] or before:
                action = "drift_detected" if drift["drifted"] else "drift_resolved"
                self._audit(session, row, action, actor, run_id,
                            {"plan": drift["plan"], "changes": drift["changes"]})

    def delete(self, record: RecordView, *, actor: str) -> None:
        """Delete a destroyed record; its revisions go, its audit entries stay archived."""
        with self.session() as session:
            row = self._row(session, record.pipeline, record.task, record.environment)
            if row is None:
                return
            next_state(Action.DELETE, row.state, row.status)
            self._audit(session, row, Action.DELETE.value, actor, None, {})
            for revision in session.scalars(
                select(Revision).where(Revision.resource_id == row.id)
            ):
                session.delete(revision)
            entries = select(AuditEntry).where(AuditEntry.resource_id == row.id)
            for entry in session.scalars(entries):
                entry.archived = True
            session.delete(row)

    def _history(self, session: Session, row: ResourceRecord, action: Action, actor: str,
                 run_id: str | None, details: dict[str, Any]) -> None:
        snapshot = RecordView.of(row).public()
        snapshot.pop("created_at", None)
        snapshot["updated_at"] = row.updated_at.isoformat()
        session.add(Revision(resource_id=row.id, revision=row.revision, snapshot=snapshot,
                             time=utcnow()))
        self._audit(session, row, action.value, actor, run_id, details)

    def _audit(self, session: Session, row: ResourceRecord | None, action: str, actor: str,
               run_id: str | None, details: dict[str, Any], **where: Any) -> None:
        session.add(AuditEntry(
            time=utcnow(), actor=actor, action=action,
            pipeline=row.pipeline if row else where.get("pipeline"),
            task=row.task if row else where.get("task"),
            environment=row.environment if row else where.get("environment"),
            resource_id=row.id if row else None,
            revision=row.revision if row else None,
            run_id=run_id, details=details, archived=False,
        ))

    def audit_in(self, session: Session, record: RecordView | None, action: str, actor: str,
                 run_id: str | None, details: dict[str, Any]) -> None:
        """An audit entry written inside the caller's transaction."""
        row = session.get(ResourceRecord, record.id) if record else None
        self._audit(session, row, action, actor, run_id, details)

    def get_in(self, session: Session, resource_id: str) -> RecordView | None:
        row = session.get(ResourceRecord, resource_id, with_for_update=True)
        return RecordView.of(row) if row else None

    def audit(self, action: str, *, actor: str, pipeline: str | None = None,
              task: str | None = None, environment: str | None = None,
              run_id: str | None = None, details: dict[str, Any] | None = None) -> None:
        """An audit entry not tied to a state change (teardown, refused request, ...)."""
        with self.session() as session:
            row = (self._row(session, pipeline, task, environment)
                   if pipeline and task and environment else None)
            self._audit(session, row, action, actor, run_id, details or {},
                        pipeline=pipeline, task=task, environment=environment)

    def audit_entries(self, pipeline: str | None = None, task: str | None = None,
                      include_archived: bool = True) -> list[dict[str, Any]]:
        with self.session() as session:
            query = select(AuditEntry).order_by(AuditEntry.id)
            if pipeline:
                query = query.where(AuditEntry.pipeline == pipeline)
            if task:
                query = query.where(AuditEntry.task == task)
            if not include_archived:
                query = query.where(AuditEntry.archived.is_(False))
            return [
                {"time": e.time.isoformat(), "actor": e.actor, "action": e.action,
                 "pipeline": e.pipeline, "task": e.task, "environment": e.environment,
                 "revision": e.revision, "run_id": e.run_id, "details": e.details,
                 "archived": e.archived}
                for e in session.scalars(query)
            ]

    def revisions(self, record: RecordView) -> list[dict[str, Any]]:
        with self.session() as session:
            rows = session.scalars(select(Revision).where(Revision.resource_id == record.id)
                                   .order_by(Revision.id))
            return [{"revision": r.revision, "time": r.time.isoformat(), "snapshot": r.snapshot}
                    for r in rows]

    # -- registered values ------------------------------------------------------------

    def register(self, pipeline: str, environment: str, values: dict[str, Any], *, task: str,
                 sensitive: set[str], run_id: str | None) -> None:
        with self.session() as session:
            for name, value in values.items():
                row = session.get(RegisteredValue, (pipeline, environment, name))
                if row is None:
                    row = RegisteredValue(pipeline=pipeline, environment=environment, name=name)
                    session.add(row)
                row.value, row.task, row.sensitive = value, task, name in sensitive
                row.run_id, row.updated_at = run_id, utcnow()

    def registered(self, pipeline: str, environment: str) -> dict[str, tuple[Any, bool]]:
        """name -> (value, sensitive)."""
        with self.session() as session:
            rows = session.scalars(select(RegisteredValue).where(
                RegisteredValue.pipeline == pipeline,
                RegisteredValue.environment == environment))
            return {r.name: (r.value, r.sensitive) for r in rows}

    # -- global teardown bookkeeping --------------------------------------------------

    def start_teardown(self, failed_run_id: str, teardown_run_id: str) -> bool:
        """True once per claim: the teardown run that may act on a failed run's claim.

        Without a claim (made by `ik run` or the run-failure sensor) nothing may be torn
        down, which keeps the teardown job from being a way around the approval flow.
        """
        with self.session() as session:
            mark = session.get(TeardownMark, failed_run_id, with_for_update=True)
            if mark is None or mark.teardown_run_id not in (None, teardown_run_id):
                return False
            mark.teardown_run_id = teardown_run_id
            return True

    def claim_teardown(self, run_id: str, pipeline: str, handled_by: str) -> bool:
        """True exactly once per failed run, whoever (CLI or sensor) asks first."""
        try:
            with self.session() as session:
                session.add(TeardownMark(run_id=run_id, pipeline=pipeline,
                                         handled_by=handled_by, time=utcnow()))
            return True
        except IntegrityError:
            return False


def default_actor() -> str:
    import getpass

    return os.environ.get("INFRAKITCHEN_USER") or getpass.getuser()
