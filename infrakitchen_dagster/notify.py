"""Telling people about lifecycle events through Apprise (a pipeline's `[notifications]`).

The process that records an event tells about it at once, on a thread of its own: a slow
or dead endpoint never holds up an apply, and the thread's work is bounded (a few
attempts, each with short connect and read timeouts), so a process that ends waits for
it a few seconds at most. A delivery that still fails is written to the audit log as
`notification_failed`, naming the event and where it was going the way Apprise prints a
URL with privacy on (scheme and host, tokens elided): an Apprise URL often carries a
token, so the URL itself is never logged, audited or echoed.

A message says what happened and where to act (pipeline, task, environment, operation,
request id, plan summary, who asked, the `ik` command); it never holds a variable or
output value, and its text is masked with the record's secrets besides.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .interpolation import mask
from .spec import NOTIFICATION_EVENTS, Notifications, Pipeline
from .store.lifecycle import Action

if TYPE_CHECKING:
    from .store import LifecycleStore

#: audit action of a delivery that failed every attempt
NOTIFICATION_FAILED = "notification_failed"
#: attempts per URL and the pauses between them; with the timeouts below, one delivery
#: takes at most ~20 s even against an endpoint that never answers
ATTEMPTS = 3
PAUSES = (0.5, 1.5)
CONNECT_TIMEOUT = 3.0
READ_TIMEOUT = 3.0

#: record moves that are events, with the operation they end
EVENT_OF_MOVE: dict[Action, tuple[str, str]] = {
    Action.PROVISION_SUCCESS: ("applied", "provision"),
    Action.UPDATE_SUCCESS: ("applied", "update"),
    Action.PROVISION_FAILURE: ("failed", "provision"),
    Action.UPDATE_FAILURE: ("failed", "update"),
    Action.DESTROY_FAILURE: ("failed", "destroy"),
    Action.DESTROY_SUCCESS: ("destroyed", "destroy"),
}

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


@dataclass(frozen=True)
class Event:
    """One thing that happened to a record, as names and counts (never values)."""

    kind: str  # one of NOTIFICATION_EVENTS
    pipeline: str
    task: str | None
    environment: str
    operation: str | None = None
    request_id: int | None = None
    plan: dict[str, int] | None = None
    asked_by: str | None = None
    decided_by: str | None = None
    reason: str | None = None
    error: str | None = None
    changes: Sequence[str] = field(default_factory=tuple)
    revision: int | None = None
    run_id: str | None = None


def plan_text(plan: dict[str, int]) -> str:
    """A plan summary the way people read it: +add ~change -destroy."""
    return f"+{plan.get('add', 0)} ~{plan.get('change', 0)} -{plan.get('destroy', 0)}"


def _headline(event: Event) -> str:
    request = f"request {event.request_id}"
    operation = event.operation or "change"
    return {
        "approval_requested": f"{operation} waits for approval ({request})",
        "approved": f"{request} ({operation}) approved by {event.decided_by}",
        "rejected": f"{request} ({operation}) rejected by {event.decided_by}",
        "applied": f"{operation} applied",
        "failed": f"{operation} failed",
        "drift_detected": "drift detected",
        "destroyed": "destroyed",
    }.get(event.kind, event.kind)


def next_step(event: Event) -> str:
    """The command (or place) that acts on `event`."""
    where = f"{event.pipeline}/{event.task}"
    env = f" --env {event.environment}" if event.environment != "default" else ""
    inspect = f"`ik inspect {where}{env}`"
    again = (f"ik destroy {event.pipeline} --task {event.task}{env}"
             if event.operation == "destroy"
             else f"ik run {event.pipeline} --select {event.task}{env}")
    request = event.request_id
    rejected = (f"the resource stays as it is: {inspect}" if event.operation == "destroy"
                else f"review: `ik approvals --pipeline {event.pipeline}`; change the "
                     f"configuration, or ask again with `{again} --force`")
    return {
        "approval_requested": (f"approve: `ik approve {request}` · reject: "
                               f"`ik reject {request} --reason ...` · review: {inspect}"),
        "approved": f"the approvals sensor launches it; without a daemon run `{again}`",
        "rejected": rejected,
        "applied": inspect,
        "failed": f"{inspect} and `ik audit {where}`; retry: `{again}`",
        "drift_detected": f"{inspect}; re-apply: `ik run {event.pipeline} --select "
                          f"{event.task}{env} --force`",
        "destroyed": f"`ik delete {where}{env}` removes the record (its audit stays)",
    }.get(event.kind, inspect)


def message(event: Event, secrets: Iterable[str] = ()) -> tuple[str, str]:
    """(title, body) of `event`; every line masked with `secrets`."""
    title = f"{event.pipeline}/{event.task} ({event.environment}): {_headline(event)}"
    lines = [
        ("event", event.kind), ("pipeline", event.pipeline), ("task", event.task),
        ("environment", event.environment), ("operation", event.operation),
        ("request", event.request_id),
        ("plan", plan_text(event.plan) if event.plan else None),
        ("asked by", event.asked_by), ("decided by", event.decided_by),
        ("reason", event.reason), ("error", _last_line(event.error)),
        ("changes", "; ".join(list(event.changes)[:5]) or None),
        ("revision", event.revision), ("run", event.run_id),
        ("next", next_step(event)),
    ]
    body = "\n".join(f"{name}: {value}" for name, value in lines if value not in (None, ""))
    secrets = list(secrets)
    return mask(title, secrets), mask(body, secrets)


def _last_line(error: str | None) -> str | None:
    """The last non-empty line of an error, short: the rest is in `ik inspect`."""
    if not error:
        return None
    lines = [line.strip() for line in error.splitlines() if line.strip()]
    return lines[-1][:300] if lines else None


def target(url: str) -> str:
    """Where `url` sends, safe to log: scheme and host as Apprise prints them with privacy
    on (a Slack or Discord "host" is a token and comes out elided), no user, path or
    query. Only the scheme for a URL Apprise cannot read."""
    plugin = _instantiate(url)
    if plugin is None:
        return describe(url)
    private = urlsplit(plugin.url(privacy=True))
    host = private.netloc.rpartition("@")[2]
    return f"{private.scheme}://{host}"


def describe(url: str) -> str:
    """A URL as `scheme://…`, for messages about a URL that may embed a secret."""
    found = _SCHEME.match(url.strip())
    return f"{found.group(1)}://…" if found else "(no scheme://)"


def url_problems(urls: Sequence[str]) -> list[str]:
    """One line per URL Apprise cannot parse (for `ik validate`), naming it by position
    and scheme only."""
    return [f"notifications.urls[{i}]: {describe(url)} is not a URL Apprise can send to "
            "(see the Apprise URL syntax of the service)"
            for i, url in enumerate(urls) if _instantiate(url) is None]


def _apprise():  # imported on first use: only pipelines with notifications pay for it
    import apprise

    # Apprise's own log lines may quote a URL (a token); they are not ours to print.
    logging.getLogger("apprise").propagate = False
    return apprise


def _instantiate(url: str) -> Any:
    try:
        return _apprise().Apprise.instantiate(url)
    except Exception:  # a URL Apprise chokes on is a URL it cannot parse
        return None


_NOTIFY_TYPES = {"failed": "failure", "drift_detected": "warning", "rejected": "warning",
                 "applied": "success", "destroyed": "success", "approved": "success"}


class Notifier:
    """Sends a pipeline's chosen events to its URLs; built once per run or process."""

    def __init__(self, settings: Notifications | None, store: LifecycleStore | None):
        self.urls = list(settings.urls) if settings else []
        self.events = set(settings.events) if settings else set()
        self.store = store

    @classmethod
    def of(cls, pipeline: Pipeline | None, store: LifecycleStore | None) -> Notifier:
        return cls(pipeline.notifications if pipeline is not None else None, store)

    def wants(self, kind: str) -> bool:
        return bool(self.urls) and kind in self.events

    def send(self, event: Event, secrets: Iterable[str] = ()) -> list[threading.Thread]:
        """Start delivering `event` to every URL (one thread each) and return at once.

        The threads are not daemons: a process that ends lets them finish, which their
        bounded attempts keep to seconds.
        """
        assert event.kind in NOTIFICATION_EVENTS, event.kind
        if not self.wants(event.kind):
            return []
        title, body = message(event, secrets)
        threads = [threading.Thread(target=self._deliver, args=(event, index, url, title, body),
                                    name=f"infrakitchen-notify-{event.kind}")
                   for index, url in enumerate(self.urls)]
        started = []
        for index, thread in enumerate(threads):
            try:
                thread.start()
            except RuntimeError:  # no thread to be had: the apply goes on, the audit says so
                self._record_failure(event, index, self.urls[index])
                continue
            started.append(thread)
        return started

    def _deliver(self, event: Event, index: int, url: str, title: str, body: str) -> None:
        if _send(url, title, body, _NOTIFY_TYPES.get(event.kind, "info")):
            return
        self._record_failure(event, index, url)

    def _record_failure(self, event: Event, index: int, url: str) -> None:
        if self.store is None:
            return
        details: dict[str, Any] = {"event": event.kind, "target": target(url),
                                   "url_index": index, "attempts": ATTEMPTS}
        if event.request_id is not None:
            details["request_id"] = event.request_id
        try:
            self.store.audit(NOTIFICATION_FAILED, actor=event.asked_by or "infrakitchen",
                             pipeline=event.pipeline, task=event.task,
                             environment=event.environment, run_id=event.run_id,
                             details=details)
        except Exception:  # the store is gone too: nothing left to tell, nobody to fail
            return


def _send(url: str, title: str, body: str, notify_type: str) -> bool:
    """Deliver to one URL: up to ATTEMPTS tries with short timeouts; True once accepted."""
    plugin = _instantiate(url)
    if plugin is None:
        return False
    plugin.socket_connect_timeout = min(plugin.socket_connect_timeout, CONNECT_TIMEOUT)
    plugin.socket_read_timeout = min(plugin.socket_read_timeout, READ_TIMEOUT)
    apprise = _apprise()
    server = apprise.Apprise()
    server.add(plugin)
    for attempt in range(ATTEMPTS):
        try:
            if server.notify(body=body, title=title,
                             notify_type=apprise.NotifyType(notify_type),
                             body_format=apprise.NotifyFormat.TEXT):
                return True
        except Exception:  # a plugin that raises is a failed attempt like any other
            pass
        if attempt < len(PAUSES):
            time.sleep(PAUSES[attempt])
    return False
