"""Crashes heal themselves: a record left `in_progress` by a dead process is recognised,
cleaned up after and marked `error`, so the next run proceeds without a person.

Dead is decided by the record's lease (see `store.leases`): on the holder's host at once,
elsewhere once the lease expired. Records without a lease (written before leases existed)
fall back to what Dagster says of the run that left them.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..graph import Node, PipelineGraph
from ..process import reap_processes_in
from ..store import LifecycleStore, RecordView, Status
from ..store.leases import Leases, Verdict
from ..store.lifecycle import Action
from ..tofu import TofuSettings
from .context import RunContext

STATE_FILE = "terraform.tfstate"
LOCK_INFO = ".terraform.tfstate.lock.info"


def release_stale_state_lock(directory: Path) -> str | None:
    """Remove the local backend's lock info left by a dead tofu; returns its lock id.

    Tofu locks local state with a POSIX record lock on the state file and writes the lock
    info beside it. The kernel drops the record lock when its process dies, the info file
    stays. It is removed only when the lock itself can be taken now, i.e. its holder is
    gone: a live run's lock is never touched.
    """
    info, state = directory / LOCK_INFO, directory / STATE_FILE
    if not info.is_file() or not state.is_file():
        return None
    with open(state, "r+b") as handle:
        try:
            fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return None  # held by a live process
        try:
            lock_id = ""
            with contextlib.suppress(OSError, ValueError):
                lock_id = str(json.loads(info.read_text()).get("ID", ""))
            info.unlink(missing_ok=True)
            return lock_id or "unknown"
        finally:
            fcntl.lockf(handle, fcntl.LOCK_UN)


def record_working_dir(tofu: TofuSettings, record: RecordView,
                       graph: PipelineGraph | None) -> Path:
    """The working directory of `record`, also when its task left the pipeline (or the
    pipeline no longer loads): then the task name stands for the asset name."""
    node = graph.nodes.get(record.task) if graph is not None else None
    return tofu.working_dir(record.pipeline, record.environment,
                            node.asset_name if node else record.task)


def heal(store: LifecycleStore, record: RecordView, directory: Path, *, actor: str,
         run_id: str | None, report_dead_run: Callable[[str, str], None] | None = None
         ) -> RecordView:
    """`record` was left `in_progress` by a run that is gone: stop what it left running in
    the resource's working directory, release its stale state lock, mark the record
    `error` and tell Dagster the run failed. `run_id` is the run doing the healing."""
    dead = record.last_run_id
    reason = f"run {dead} ended while this resource was in progress"
    reaped = reap_processes_in(directory)
    lock_id = release_stale_state_lock(directory)
    details: dict[str, Any] = {"crashed_run_id": dead, "stray_processes_killed": len(reaped)}
    if lock_id:
        details["state_lock_released"] = lock_id
    record = store.transition(record, Action.MARK_ERROR, actor=actor, run_id=run_id,
                              details=details, error=reason, lease_holder=None,
                              lease_expires_at=None)
    if dead and report_dead_run is not None:
        report_dead_run(dead, reason)
    return record


def abandoned(ctx: RunContext, record: RecordView) -> bool:
    """Whether `record` is `in_progress` for a process that no longer works on it."""
    if record.status != Status.IN_PROGRESS:
        return False
    verdict, _holder = Leases(ctx.store).verdict(record.id)
    if verdict != Verdict.NONE:
        return verdict == Verdict.DEAD
    return record.last_run_id != ctx.run_id and not (
        record.last_run_id and ctx.run_is_alive(record.last_run_id))


def open_record(ctx: RunContext, node: Node) -> RecordView:
    """The reference's Create (or the existing record), healed if a dead run left it."""
    record = ctx.store.create(
        ctx.pipeline.name, node.name, ctx.environment, kind=node.kind,
        module=node.task.module, parents=ctx.graph.resource_parents(node.name),
        actor=ctx.actor, run_id=ctx.run_id)
    if abandoned(ctx, record):
        ctx.progress(f"{node.name}: run {record.last_run_id} died mid-operation; marking error")
        record = heal(ctx.store, record, ctx.working_dir(node), actor=ctx.actor,
                      run_id=ctx.run_id, report_dead_run=ctx.report_dead_run)
    return record
