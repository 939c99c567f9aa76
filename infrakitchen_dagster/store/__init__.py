"""The lifecycle store: resource records, revisions, registered values and the audit log.

SQLite under the InfraKitchen home by default, PostgreSQL when `INFRAKITCHEN_DATABASE_URL`
says so. Every state change goes through `lifecycle.next_state`, in one transaction that
also writes the revision snapshot and the audit entry, so the record and its history never
disagree.

Secrets are encrypted at rest (`crypto.py`): a record's sensitive variables and outputs,
sensitive registered values, the runtime vars a run references, and (in `approvals.py`)
requests' proposed secrets, runtime vars and saved plans. Only the rows hold ciphertext:
every read API returns plain values, and revisions and audit entries never hold secrets
at all (they are masked before they are written).
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

from sqlalchemy import create_engine, event, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from .. import settings
from ..crypto import SecretBox, box, is_sealed
from ..settings import database_url
from .lifecycle import (
    Action,
    IllegalTransition,
    MayHoldInfrastructure,
    State,
    Status,
    delete_action,
    next_state,
)
from .models import (
    ApprovalRequestRow,
    AuditEntry,
    RegisteredValue,
    ResourceRecord,
    Revision,
    RunPrincipalRow,
    RunVars,
    TeardownMark,
    utcnow,
)

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


#: the first revision whose rows hold sealed secrets; older stores are sealed on upgrade
SEALED_SINCE = "0004"


def masked(values: dict[str, Any], sensitive: list[str] | set[str]) -> dict[str, Any]:
    return {k: (SENSITIVE if k in sensitive else v) for k, v in values.items()}


def seal_values(values: dict[str, Any] | None, names: Any = None) -> dict[str, Any]:
    """`values` with the entries named in `names` (all of them when None) sealed; entries
    already sealed stay as they are, others not named are stored plain."""
    plain = values or {}
    secret = set(plain) if names is None else set(names)
    if not any(k in secret and not is_sealed(v) for k, v in plain.items()):
        return {k: (open_value(v) if k not in secret else v) for k, v in plain.items()}
    sealer = box()
    return {k: ((v if is_sealed(v) else sealer.seal(v)) if k in secret else open_value(v))
            for k, v in plain.items()}


def open_value(value: Any) -> Any:
    return box().open(value) if is_sealed(value) else value


def open_values(values: dict[str, Any] | None) -> dict[str, Any]:
    """The plain values of a dict that may hold sealed entries."""
    return {k: open_value(v) for k, v in (values or {}).items()}


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
    state_serial: int | None
    state_lineage: str | None
    source: dict[str, Any] | None
    labels: dict[str, Any] | None
    tags: dict[str, Any] | None
    policy: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, row: ResourceRecord) -> RecordView:
        """A plain copy of `row`: sealed variables and outputs are decrypted here."""
        fields = {f: getattr(row, f) for f in cls.__dataclass_fields__}
        fields["variables"] = open_values(row.variables)
        fields["outputs"] = open_values(row.outputs)
        return cls(**fields)

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
            "source": self.source,
            "labels": self.labels or {},
            "tags": self.tags or {},
            "policy": self.policy,
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "updated_at": self.updated_at.isoformat() if self.updated_at else None,
        }


_SECRET_FIELDS = {"variables", "outputs", "sensitive_variables", "sensitive_outputs"}


def _seal_record(row: ResourceRecord) -> None:
    """Seal a record's sensitive variables and outputs (and open any that stopped being
    sensitive), after its fields changed."""
    row.variables = seal_values(row.variables, row.sensitive_variables or [])
    row.outputs = seal_values(row.outputs, row.sensitive_outputs or [])


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
                    _private_sqlite_file(Path(path))
                engine = create_engine(url, connect_args={"timeout": 60})

                @event.listens_for(engine, "connect")
                def _sqlite_pragmas(conn, _record):  # WAL: many step processes write at once
                    cursor = conn.cursor()
                    cursor.execute("PRAGMA journal_mode=WAL")
                    # WAL + NORMAL: a crashed process loses nothing; only a power cut can
                    # lose the last commits, and no commit waits for an fsync
                    cursor.execute("PRAGMA synchronous=NORMAL")
                    cursor.execute("PRAGMA busy_timeout=60000")
                    cursor.close()
            else:
                engine = create_engine(url, pool_pre_ping=True)
            _migrate(engine, url)
            _engines[url] = engine
        return _engines[url]


def _private_sqlite_file(path: Path) -> None:
    """The SQLite file exists, owner-only, before SQLite opens it: its `-wal` and `-shm`
    files then get the same mode. Its directory is made 0700 when we create it (or when
    it is the InfraKitchen home); someone else's existing directory is left alone."""
    path = path.absolute()
    if path.parent == settings.home():
        settings.private_home()
    else:
        settings.private_dir(path.parent, ours=False)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.close(fd)
    if path.stat().st_uid == os.getuid():
        os.chmod(path, 0o600)


@contextmanager
def _migration_lock(engine: Engine, url: str) -> Iterator[None]:
    """Serialise migrations across processes (many Dagster steps start at once)."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1] or "memory"
        fd = os.open(f"{path}.migrate.lock", os.O_WRONLY | os.O_CREAT, 0o600)
        with os.fdopen(fd, "w") as handle:
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


def _head_revision() -> str:
    """The newest migration: revisions are numbered files (`0006_record_context.py`), so
    knowing it needs no Alembic import (0.2 s of every `ik` command)."""
    return max(f.name.split("_", 1)[0] for f in (_MIGRATIONS / "versions").glob("[0-9]*_*.py"))


def _current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        try:
            return conn.exec_driver_sql("SELECT version_num FROM ik_alembic_version").scalar()
        except DBAPIError:  # a new store: no version table yet
            conn.rollback()
            return None


def _migrate(engine: Engine, url: str) -> None:
    if _current_revision(engine) == _head_revision():
        return
    from alembic import command  # only when there is something to upgrade
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext

    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    with _migration_lock(engine, url), engine.begin() as conn:
        # read again under the lock: another process may have upgraded meanwhile
        current = MigrationContext.configure(
            conn, opts={"version_table": "ik_alembic_version"}).get_current_revision()
        config.attributes["connection"] = conn
        command.upgrade(config, "head")
        if current is not None and current < SEALED_SINCE:
            # a store from before encryption: seal the secrets it holds in plain text
            with Session(bind=conn) as session:
                reseal(session, box())
                session.flush()


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
        if _SECRET_FIELDS & set(changes):
            _seal_record(row)
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

    def record_policy(self, pipeline: str, task: str, environment: str,
                      verdict: dict[str, Any], *, run_id: str | None) -> None:
        """Keep the last policy verdict on a record, whatever state it is in: like a drift
        check, a verdict is an observation about a plan, not a lifecycle move."""
        with self.session() as session:
            row = self._row(session, pipeline, task, environment)
            if row is not None:
                row.policy = {**verdict, "run_id": run_id,
                              "evaluated_at": utcnow().isoformat()}

    def delete(self, record: RecordView, *, actor: str) -> None:
        """Delete a destroyed record, or one that never got infrastructure (a rejected or
        withdrawn provision no apply of which ever started); its revisions go, its audit
        entries stay archived."""
        with self.session() as session:
            row = self._row(session, record.pipeline, record.task, record.environment)
            if row is None:
                return
            action = delete_action(row.state, row.status)
            if action == Action.DELETE_NEVER_PROVISIONED and self._apply_started(session, row):
                raise MayHoldInfrastructure(
                    row.state, row.status,
                    f"run `ik destroy {row.pipeline} --task {row.task}` to clean what the "
                    "failed apply left, then delete it")
            self._audit(session, row, Action.DELETE.value, actor, None,
                        {"never_provisioned": True}
                        if action == Action.DELETE_NEVER_PROVISIONED else {})
            for revision in session.scalars(
                select(Revision).where(Revision.resource_id == row.id)
            ):
                session.delete(revision)
            entries = select(AuditEntry).where(AuditEntry.resource_id == row.id)
            for entry in session.scalars(entries):
                entry.archived = True
            session.delete(row)

    @staticmethod
    def _apply_started(session: Session, row: ResourceRecord) -> bool:
        """Whether an apply of this record started since it last had no infrastructure
        (created, destroyed, or a failed first apply cleaned by `ik destroy`)."""
        latest = session.scalar(
            select(AuditEntry.action)
            .where(AuditEntry.resource_id == row.id,
                   AuditEntry.action.in_([Action.PROVISION_START.value,
                                          Action.DESTROY_SUCCESS.value,
                                          "destroy_partial_state"]))
            .order_by(AuditEntry.id.desc()).limit(1))
        return latest == Action.PROVISION_START.value

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
                secret = name in sensitive
                row.value = box().seal(value) if secret else value
                row.task, row.sensitive = task, secret
                row.run_id, row.updated_at = run_id, utcnow()

    def registered(self, pipeline: str, environment: str) -> dict[str, tuple[Any, bool]]:
        """name -> (value, sensitive)."""
        with self.session() as session:
            rows = session.scalars(select(RegisteredValue).where(
                RegisteredValue.pipeline == pipeline,
                RegisteredValue.environment == environment))
            return {r.name: (open_value(r.value), r.sensitive) for r in rows}

    # -- runtime vars passed by reference ------------------------------------------

    def put_run_vars(self, values: dict[str, Any]) -> str:
        """Keep a run's runtime vars, sealed, and return the reference its run config
        carries instead of them (run config is stored and shown in plain text)."""
        ref = uuid.uuid4().hex
        with self.session() as session:
            session.add(RunVars(ref=ref, values=box().seal(values), created_at=utcnow()))
        return ref

    def run_vars(self, ref: str) -> dict[str, Any]:
        with self.session() as session:
            row = session.get(RunVars, ref)
            if row is None:
                raise KeyError(f"no runtime vars under reference {ref!r} in this store")
            return dict(open_value(row.values))

    # -- keys ---------------------------------------------------------------------------

    def reseal(self) -> dict[str, int]:
        """Re-encrypt every sealed value with the first key, and seal any secret still
        held in plain text (a store from before encryption). Returns counts per table."""
        with self.session() as session:
            return reseal(session, box())

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

    def settle_run_principal(self, run_id: str, principal: str, source: str
                             ) -> tuple[str, str, bool]:
        """The (principal, source) of run `run_id`, and whether this call settled it: the
        first step to ask settles it, every later step of the run (any process, any
        worker) reads the same answer."""
        with self.session() as session:
            row = session.get(RunPrincipalRow, run_id)
            if row is not None:
                return row.principal, row.source, False
        try:
            with self.session() as session:
                session.add(RunPrincipalRow(run_id=run_id, principal=principal[:200],
                                            source=source, settled_at=utcnow()))
            return principal, source, True
        except IntegrityError:  # a parallel step settled it first
            with self.session() as session:
                row = session.get(RunPrincipalRow, run_id)
                assert row is not None
                return row.principal, row.source, False

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


def reseal(session: Session, sealer: SecretBox) -> dict[str, int]:
    """Bring every secret in the store to the first key of `sealer` (see
    `LifecycleStore.reseal`); one transaction, so a failure leaves the store as it was."""

    def fresh(value: Any) -> Any:
        if is_sealed(value):
            return value if sealer.is_current(value) else sealer.seal(sealer.open(value))
        return sealer.seal(value)

    def fresh_values(values: dict[str, Any] | None, names: Any) -> dict[str, Any]:
        secret = set(values or {}) if names is None else set(names)
        return {k: (fresh(v) if k in secret else sealer.open(v))
                for k, v in (values or {}).items()}

    counts = {"records": 0, "registered": 0, "requests": 0, "run_vars": 0}

    def update(row: Any, table: str, **values: Any) -> None:
        changes = {k: v for k, v in values.items() if getattr(row, k) != v}
        for key, value in changes.items():
            setattr(row, key, value)
        counts[table] += bool(changes)

    for row in session.scalars(select(ResourceRecord)):
        update(row, "records",
               variables=fresh_values(row.variables, row.sensitive_variables or []),
               outputs=fresh_values(row.outputs, row.sensitive_outputs or []))
    for reg in session.scalars(select(RegisteredValue).where(RegisteredValue.sensitive)):
        update(reg, "registered", value=fresh(reg.value))
    for req in session.scalars(select(ApprovalRequestRow)):
        blob = req.plan_blob
        if blob is None and req.plan_path and Path(req.plan_path).is_file():
            # a plan saved as a plain file by an older version: into the store, sealed (the
            # file goes when the request is done with, as before)
            blob = sealer.encrypt_bytes(Path(req.plan_path).read_bytes())
        elif blob is not None and not sealer.is_current_bytes(blob):
            blob = sealer.encrypt_bytes(sealer.decrypt_bytes(blob))
        update(req, "requests",
               proposed_variables=fresh_values(req.proposed_variables,
                                               req.sensitive_variables or []),
               runtime_vars=fresh_values(req.runtime_vars, None), plan_blob=blob)
    for run_vars in session.scalars(select(RunVars)):
        update(run_vars, "run_vars", values=fresh(run_vars.values))
    return counts
