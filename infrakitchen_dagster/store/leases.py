"""Leases on records: the process working on a record says so, and keeps saying so.

A record goes `in_progress` while one process applies or destroys it. If that process is
killed (kill -9, OOM, a machine gone), nothing else would ever move the record again. The
holder therefore writes who it is (host, pid, the pid's start time, run id) and renews an
expiry while it works. Anyone can then tell a dead holder from a live one without a
person: on the holder's own host at once (the pid is gone or is another process), from
anywhere else once the lease has expired.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import select

from . import RecordView
from .lifecycle import Status
from .models import ResourceRecord, utcnow

#: how long a lease lasts without renewal; renewed every third of it
DEFAULT_LEASE_SECONDS = 60.0


def lease_seconds() -> float:
    return float(os.environ.get("INFRAKITCHEN_LEASE_SECONDS", DEFAULT_LEASE_SECONDS))


def process_start(pid: int) -> str:
    """The kernel's start time of `pid` (clock ticks since boot), "" if there is none.

    A pid alone can be reused by an unrelated process; pid + start time cannot.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read().decode(errors="replace")
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


@dataclass(frozen=True)
class Holder:
    host: str
    pid: int
    started: str
    run_id: str | None = None

    @classmethod
    def current(cls, run_id: str | None) -> Holder:
        return cls(socket.gethostname(), os.getpid(), process_start(os.getpid()), run_id)

    @classmethod
    def of(cls, data: dict[str, Any] | None) -> Holder | None:
        if not data:
            return None
        return cls(str(data.get("host", "")), int(data.get("pid", 0)),
                   str(data.get("started", "")), data.get("run_id"))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def is_local(self) -> bool:
        return self.host == socket.gethostname()

    def process_alive(self) -> bool:
        """Only meaningful on the holder's host."""
        return process_start(self.pid) == self.started != ""


class Verdict(StrEnum):
    NONE = "none"  # no lease: fall back to what Dagster knows of the run
    ALIVE = "alive"
    DEAD = "dead"


def _aware(moment: datetime | None) -> datetime | None:
    if moment is not None and moment.tzinfo is None:  # SQLite drops the zone
        return moment.replace(tzinfo=UTC)
    return moment


def judge(holder: Holder | None, expires_at: datetime | None,
          now: datetime | None = None) -> Verdict:
    if holder is None:
        return Verdict.NONE
    if holder.is_local():
        return Verdict.ALIVE if holder.process_alive() else Verdict.DEAD
    expires_at = _aware(expires_at)
    if expires_at is not None and expires_at < (now or utcnow()):
        return Verdict.DEAD
    return Verdict.ALIVE


class Leases:
    """Lease rows of one lifecycle store."""

    def __init__(self, store: Any):  # LifecycleStore (imported lazily by it)
        self.store = store

    def _set(self, record_id: str, holder: Holder | None, seconds: float,
             only_if: Holder | None = None) -> bool:
        with self.store.session() as session:
            row = session.get(ResourceRecord, record_id, with_for_update=True)
            if row is None:
                return False
            if only_if is not None and Holder.of(row.lease_holder) != only_if:
                return False  # someone healed the record and another run took it
            row.lease_holder = holder.as_dict() if holder else None
            row.lease_expires_at = utcnow() + timedelta(seconds=seconds) if holder else None
            return True

    def hold(self, record_id: str, holder: Holder, seconds: float) -> None:
        self._set(record_id, holder, seconds)

    def renew(self, record_id: str, holder: Holder, seconds: float) -> bool:
        return self._set(record_id, holder, seconds, only_if=holder)

    def release(self, record_id: str, holder: Holder) -> None:
        self._set(record_id, None, 0, only_if=holder)

    def verdict(self, record_id: str) -> tuple[Verdict, Holder | None]:
        with self.store.session() as session:
            row = session.get(ResourceRecord, record_id)
            if row is None:
                return Verdict.NONE, None
            holder = Holder.of(row.lease_holder)
            return judge(holder, row.lease_expires_at), holder

    def abandoned(self) -> list[RecordView]:
        """`in_progress` records whose lease holder is dead (one query, any estate size)."""
        now = utcnow()
        with self.store.session() as session:
            rows = session.scalars(select(ResourceRecord).where(
                ResourceRecord.status == Status.IN_PROGRESS.value,
                ResourceRecord.lease_holder.is_not(None)))
            return [RecordView.of(row) for row in rows
                    if judge(Holder.of(row.lease_holder), row.lease_expires_at, now)
                    == Verdict.DEAD]

    @contextmanager
    def held(self, record_id: str, run_id: str | None) -> Iterator[Holder]:
        """Hold the lease on `record_id` for the duration, renewed in the background."""
        holder = Holder.current(run_id)
        seconds = lease_seconds()
        self.hold(record_id, holder, seconds)
        stop = threading.Event()

        def renew() -> None:
            while not stop.wait(seconds / 3):
                try:
                    self.renew(record_id, holder, seconds)
                except Exception:  # a missed renewal is retried on the next beat
                    continue

        beat = threading.Thread(target=renew, name=f"lease-{record_id[:8]}", daemon=True)
        beat.start()
        try:
            yield holder
        finally:
            stop.set()
            beat.join()
            self.release(record_id, holder)
