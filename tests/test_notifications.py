"""Notifications end to end: a real HTTP endpoint (http.server on a thread) receives the
`json://` posts Apprise makes while `ik` and `dagster job execute` drive real Terraform
applies, approvals, failures, drift checks and destroys.

Each message must name what happened and where to act, and never carry a sensitive
value; an endpoint that is down costs the apply nothing but an audit row that names the
event and the endpoint's scheme and host, never the URL (it may hold a token).
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from .conftest import FIXTURES, IkEnv, ik_in_process, write_pipeline

STEP_MODULE = FIXTURES / "modules" / "step"
SECRET = "notify-S3cret-value-47"
TOKEN = "tok-9f8e7d6c5b4a"


class Hook:
    """A JSON webhook: keeps every body posted to it, and lets a test wait for one."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        self.paths: list[str] = []
        self._changed = threading.Condition()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length))
                self.send_response(200)
                self.end_headers()
                with hook._changed:
                    hook.bodies.append(body)
                    hook.paths.append(self.path)
                    hook._changed.notify_all()

            def log_message(self, *_args: object) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"json://127.0.0.1:{self.server.server_port}/hooks/infra"

    def wait_for(self, predicate: Callable[[dict], bool], timeout: float = 60) -> dict:
        """The first body `predicate` accepts, waiting for it to be posted."""
        with self._changed:
            found = self._changed.wait_for(
                lambda: next((b for b in self.bodies if predicate(b)), None), timeout)
        assert found, f"no matching notification within {timeout}s; got {self.bodies}"
        return found

    def events(self) -> list[str]:
        with self._changed:
            return [_event(b) for b in self.bodies]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook() -> Iterator[Hook]:
    server = Hook()
    yield server
    server.close()


def _event(body: dict) -> str:
    return _fields(body).get("event", "")


def _fields(body: dict) -> dict[str, str]:
    """The `name: value` lines of a message."""
    pairs = (line.partition(": ") for line in body["message"].splitlines())
    return {name: value for name, sep, value in pairs if sep}


def _about(event: str, task: str) -> Callable[[dict], bool]:
    return lambda body: _fields(body).get("event") == event and _fields(body).get("task") == task


def _closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _ik(*argv: str, code: int = 0):
    result = ik_in_process(*argv, check=False)
    assert result.returncode == code, f"ik {' '.join(argv)}: {result.returncode}\n" \
                                      f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def test_approval_requested_approved_rejected_applied(store_env: IkEnv, hook: Hook) -> None:
    write_pipeline(store_env.pipelines, "gate", f"""
name = "gate"
approval = true
owners = ["olive"]
[notifications]
urls = ["{hook.url}"]
[tasks.net]
module = "{STEP_MODULE}"
variables = {{ name = "net", value = "v1", secret = "{SECRET}" }}
[tasks.extra]
module = "{STEP_MODULE}"
variables = {{ name = "extra" }}
""")
    _ik("grant", "wendy", "write", "--pipeline", "gate", "--as", "olive")
    _ik("run", "gate", "--as", "wendy")
    requests = {r["task"]: r for r in json.loads(_ik("approvals", "--json").stdout)}
    net_id, extra_id = requests["net"]["id"], requests["extra"]["id"]

    asked = hook.wait_for(_about("approval_requested", "net"))
    fields = _fields(asked)
    assert (fields["pipeline"], fields["environment"], fields["operation"]) == (
        "gate", "default", "provision")
    assert fields["request"] == str(net_id) and fields["plan"] == "+1 ~0 -0"
    assert fields["asked by"] == "wendy"
    assert f"`ik approve {net_id}`" in fields["next"]
    assert f"`ik reject {net_id} --reason ...`" in fields["next"]
    assert asked["title"] == f"gate/net (default): provision waits for approval (request {net_id})"
    assert hook.paths[0] == "/hooks/infra"

    _ik("approve", str(net_id), "--as", "olive")
    approved = _fields(hook.wait_for(_about("approved", "net")))
    assert (approved["request"], approved["decided by"], approved["asked by"]) == (
        str(net_id), "olive", "wendy")
    assert "`ik run gate --select net`" in approved["next"]

    _ik("reject", str(extra_id), "--reason", "not this quarter", "--as", "olive")
    rejected = _fields(hook.wait_for(_about("rejected", "extra")))
    assert (rejected["request"], rejected["reason"]) == (str(extra_id), "not this quarter")

    _ik("run", "gate", "--select", "net", "--as", "wendy")
    applied = _fields(hook.wait_for(_about("applied", "net")))
    assert (applied["operation"], applied["request"], applied["plan"]) == (
        "provision", str(net_id), "+1 ~0 -0")
    assert applied["revision"] == "1" and applied["run"]
    assert applied["next"] == "`ik inspect gate/net`"
    record = json.loads(_ik("inspect", "gate/net", "--json", "--as", "olive").stdout)
    assert record["state"] == "provisioned"

    everything = json.dumps(hook.bodies)
    assert SECRET not in everything


def test_failed_drift_and_destroyed_only_for_chosen_events(store_env: IkEnv, hook: Hook
                                                           ) -> None:
    write_pipeline(store_env.pipelines, "ops", f"""
name = "ops"
[notifications]
urls = ["{hook.url}"]
events = ["failed", "drift_detected", "destroyed"]
[environments.dev]
[tasks.net]
module = "{STEP_MODULE}"
variables = {{ name = "net", secret = "{SECRET}" }}
[tasks.bad]
module = "{STEP_MODULE}"
variables = {{ name = "bad", fail = true, secret = "{SECRET}" }}
""")
    # a console script: every delivery is done when it exits
    run = store_env.ik("run", "ops", "--env", "dev", check=False)
    assert run.returncode == 1, run.stderr[-3000:]
    failed = _fields(hook.wait_for(_about("failed", "bad")))
    assert (failed["environment"], failed["operation"], failed["asked by"]) == (
        "dev", "provision", "tester")
    assert failed["error"]
    assert "`ik inspect ops/bad --env dev`" in failed["next"]
    assert "`ik run ops --select bad --env dev`" in failed["next"]
    assert "applied" not in hook.events()  # not chosen: `net` applied without a word
    assert store_env.inspect("ops", "net", "dev")["state"] == "provisioned"

    workdir = store_env.home / "work" / "ops" / "dev" / "net"
    store_env.run(store_env.env["INFRAKITCHEN_TOFU"], "taint", "null_resource.this",
                  cwd=workdir)
    store_env.dagster_job("ops__drift_check", check=False)  # fails: the check found drift
    drift = _fields(hook.wait_for(_about("drift_detected", "net")))
    assert drift["changes"] == "null_resource.this is tainted, so must be replaced"
    assert "--force" in drift["next"]

    store_env.ik("destroy", "ops", "--task", "net", "--env", "dev")
    destroyed = _fields(hook.wait_for(_about("destroyed", "net")))
    assert destroyed["operation"] == "destroy"
    assert "`ik delete ops/net --env dev`" in destroyed["next"]

    assert sorted(hook.events()) == ["destroyed", "drift_detected", "failed"]
    assert SECRET not in json.dumps(hook.bodies)


def test_an_unreachable_endpoint_never_fails_the_apply(store_env: IkEnv) -> None:
    dead = f"json://127.0.0.1:{_closed_port()}/hooks/{TOKEN}?token={TOKEN}"
    write_pipeline(store_env.pipelines, "quiet", f"""
name = "quiet"
[notifications]
urls = ["{dead}"]
events = ["applied"]
[tasks.net]
module = "{STEP_MODULE}"
variables = {{ name = "net" }}
""")
    # the apply runs in a step process of its own: its delivery ends before that process
    store_env.env.update(INFRAKITCHEN_EXECUTOR="forkserver", INFRAKITCHEN_EXECUTION="per_step")
    run = store_env.ik("run", "quiet")
    assert store_env.inspect("quiet", "net")["state"] == "provisioned"
    audit = json.loads(store_env.ik("audit", "quiet/net", "--json").stdout)
    [failure] = [e for e in audit if e["action"] == "notification_failed"]
    host = dead.split("/")[2]
    assert failure["details"]["event"] == "applied"
    assert failure["details"]["target"] == f"json://{host}"
    assert failure["details"]["attempts"] == 3
    actions = [e["action"] for e in audit]
    assert actions.index("provision_success") < actions.index("notification_failed")
    assert TOKEN not in run.stdout + run.stderr + json.dumps(audit)


def test_validate_names_a_url_apprise_cannot_read_without_echoing_it(tmp_path: Path) -> None:
    text = f"""
name = "loud"
[notifications]
urls = ["json://hooks.internal/infra", "nosuchservice://{TOKEN}@example.org/x"]
[tasks.hello]
cmd = "true"
"""
    path = write_pipeline(tmp_path, "loud", text)
    refused = _ik("validate", str(path), code=1)
    [line] = refused.stderr.strip().splitlines()
    assert line == (f"{path}: notifications.urls[1]: nosuchservice://… is not a URL Apprise "
                    "can send to (see the Apprise URL syntax of the service)")
    assert TOKEN not in refused.stdout + refused.stderr

    path.write_text(text.replace(f"nosuchservice://{TOKEN}@example.org/x",
                                 "jsons://example.org/hook"))
    assert "ok (loud" in _ik("validate", str(path)).stdout
