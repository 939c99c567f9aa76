"""The approval flow end to end: real Terraform applies, the `ik` CLI and `dagster job
execute` as subprocesses, the lifecycle store on SQLite and on PostgreSQL.

One pipeline, three resources: `net` (gated, holds a secret), `app` (a child of `net`
that opts out of the gate) and `extra` (gated, independent, to be rejected).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

from dagster import DagsterInstance

from infrakitchen_dagster.approvals import Approvals
from infrakitchen_dagster.failures import judge_failed_run
from infrakitchen_dagster.graph import load_graph
from infrakitchen_dagster.store import LifecycleStore

from .conftest import FIXTURES, IkEnv, ik_in_process, write_pipeline

STEP_MODULE = FIXTURES / "modules" / "step"
SECRET = "gate-S3cret-value-91"


class Transcript:
    """Runs `ik` and keeps every byte it printed, so the secret can be searched for.

    Most calls run `ik`'s `main` in this process (the same code path minus ~2 s of
    interpreter start-up each); `subprocess=True` runs the installed console script.
    """

    def __init__(self, env: IkEnv):
        self.env = env
        self.text: list[str] = []

    def ik(self, *args: str, as_: str, code: int | None = 0,
           subprocess: bool = False) -> subprocess.CompletedProcess:
        if subprocess:
            result = self.env.ik(*args, "--as", as_, check=False)
        else:
            result = ik_in_process(*args, "--as", as_, check=False)
        self.text += [result.stdout, result.stderr]
        if code is not None:
            assert result.returncode == code, (
                f"ik {' '.join(args)} --as {as_}: exit {result.returncode}, wanted {code}\n"
                f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        return result

    def json(self, *args: str, as_: str = "olive"):
        return json.loads(self.ik(*args, "--json", as_=as_).stdout)

    def record(self, task: str) -> dict:
        return self.json("inspect", f"gate/{task}")

    def requests(self, task: str | None = None, **where: str) -> list[dict]:
        found = self.json("approvals")
        return [r for r in found if (task is None or r["task"] == task)
                and all(r[k] == v for k, v in where.items())]


def _pipeline(directory: Path, counts: Path) -> None:
    write_pipeline(directory, "gate", f"""
name = "gate"
approval = true
owners = ["olive"]
[vars]
VALUE = "v1"
[tasks.net]
module = "{STEP_MODULE}"
variables = {{ name = "net", value = "{{{{.VALUE}}}}", count_file = "{counts}/net", \
secret = "{SECRET}" }}
[tasks.app]
module = "{STEP_MODULE}"
approval = false
depends_on = ["net"]
variables = {{ name = "app", value = "{{{{.net.value}}}}", count_file = "{counts}/app" }}
[tasks.extra]
module = "{STEP_MODULE}"
variables = {{ name = "extra", count_file = "{counts}/extra" }}
""")


def _applies(counts: Path, task: str) -> int:
    path = counts / task
    return len(path.read_text().split()) if path.exists() else 0


def test_approval_flow_end_to_end(store_env: IkEnv, tmp_path: Path) -> None:
    counts = tmp_path / "counts"
    counts.mkdir()
    _pipeline(store_env.pipelines, counts)
    t = Transcript(store_env)
    t.ik("grant", "wendy", "write", "--pipeline", "gate", as_="olive")
    t.ik("grant", "rita", "read", "--pipeline", "gate", as_="olive")
    t.ik("grant", "adam", "admin", "--pipeline", "gate", as_="olive")
    denied = t.ik("grant", "eve", "owner", "--pipeline", "gate", as_="wendy", code=2)
    assert "needs admin" in denied.stderr

    # a read-role principal cannot request: neither through ik nor through a Dagster run
    refused = t.ik("run", "gate", as_="rita", code=2, subprocess=True)
    assert "'rita' has role read" in refused.stderr and "needs write" in refused.stderr
    run = store_env.dagster_job("gate__provision", "--tags",
                               json.dumps({"infrakitchen/user": "rita"}), check=False)
    t.text += [run.stdout, run.stderr]
    assert run.returncode != 0 and "needs write" in run.stdout + run.stderr
    assert t.requests() == []
    refused_run = DagsterInstance.get().get_runs()[0]
    verdict = judge_failed_run(DagsterInstance.get(), refused_run,
                               load_graph(store_env.pipelines / "gate.toml"))
    assert not verdict.fire and "refused" in verdict.reason  # no teardown after a refusal

    # 1. provision under approval: a request with the plan, nothing applied
    t.ik("run", "gate", as_="wendy", subprocess=True)
    net = t.record("net")
    assert (net["state"], net["status"]) == ("provision", "approval_pending")
    assert _applies(counts, "net") == 0 and _applies(counts, "app") == 0
    [request] = t.requests("net", status="pending")
    assert request["operation"] == "provision" and request["requested_by"] == "wendy"
    assert request["plan_summary"] == {"add": 1, "change": 0, "destroy": 0}
    assert len(request["plan_sha256"]) == 64
    assert t.json("approvals", as_="rita")  # read may view
    pending = t.ik("approvals", "--pending", as_="olive").stdout
    assert f"{request['id']}" in pending and "gate/net" in pending

    # launching the job again (as the UI would, no approval) applies nothing, asks once
    run = store_env.dagster_job("gate__provision", "--tags",
                               json.dumps({"infrakitchen/user": "wendy"}))
    t.text += [run.stdout, run.stderr]
    assert _applies(counts, "net") == 0
    assert [r["id"] for r in t.requests("net")] == [request["id"]]

    # write may not approve; an owner may, once
    denied = t.ik("approve", str(request["id"]), as_="wendy", code=2)
    assert "needs admin" in denied.stderr
    t.ik("approve", str(request["id"]), as_="olive")
    again = t.ik("reject", str(request["id"]), "--reason", "late", as_="adam", code=2)
    assert "already approved by olive" in again.stderr
    assert (t.record("net")["state"], t.record("net")["status"]) == ("provision", "ready")

    # the approved run applies exactly the saved plan; app (approval = false) follows
    approved_bytes = Approvals(LifecycleStore()).saved_plan(request["id"])  # kept in the store
    assert approved_bytes is not None
    assert hashlib.sha256(approved_bytes).hexdigest() == request["plan_sha256"]
    t.ik("run", "gate", as_="wendy")
    workdir = store_env.home / "work" / "gate" / "default"
    # applied from a private copy that is gone afterwards (it holds variable values)
    assert not (workdir / "net" / "infrakitchen-approved.tfplan").exists()
    assert not list((store_env.home / "plans").glob("*.tfplan"))
    net, app = t.record("net"), t.record("app")
    assert (net["state"], net["status"], net["revision"]) == ("provisioned", "done", 1)
    assert net["outputs"]["value"] == "v1" and net["outputs"]["secret"] == "(sensitive)"
    assert (app["state"], app["status"]) == ("provisioned", "done")
    assert app["outputs"]["value"] == "v1"
    assert _applies(counts, "net") == 1 and _applies(counts, "app") == 1
    assert t.requests("net")[0]["status"] == "applied"

    # 2. provision rejected: the resource stays as it was, and is not asked for again
    [extra_request] = t.requests("extra", status="pending")
    t.ik("reject", str(extra_request["id"]), "--reason", "not this quarter", as_="adam")
    extra = t.record("extra")
    assert (extra["state"], extra["status"]) == ("provision", "rejected")
    t.ik("run", "gate", "--select", "extra", as_="wendy")
    assert len(t.requests("extra")) == 1 and _applies(counts, "extra") == 0

    # 3. update approved: a temporary state with a diff; the record only moves on apply
    t.ik("run", "gate", "--var", "VALUE=v2", as_="wendy")
    [update] = t.requests("net", status="pending")
    assert update["operation"] == "update"
    assert update["diff"] == {"value": {"old": "v1", "new": "v2"}}
    net = t.record("net")
    assert (net["state"], net["status"], net["revision"]) == ("provisioned", "done", 1)
    assert net["pending_update"]["id"] == update["id"]
    assert net["outputs"]["value"] == "v1" and _applies(counts, "net") == 1
    t.ik("approve", str(update["id"]), as_="olive")
    t.ik("run", "gate", "--var", "VALUE=v2", as_="wendy")
    net = t.record("net")
    assert (net["state"], net["status"], net["revision"]) == ("provisioned", "done", 2)
    assert net["outputs"]["value"] == "v2" and net["pending_update"] is None
    assert t.record("app")["outputs"]["value"] == "v2"  # app follows its parent

    # 4. update rejected: nothing changes, the temporary state is gone
    t.ik("run", "gate", "--var", "VALUE=v3", as_="wendy")
    [update] = t.requests("net", status="pending")
    t.ik("reject", str(update["id"]), "--reason", "wrong value", as_="olive")
    net = t.record("net")
    assert (net["revision"], net["outputs"]["value"], net["pending_update"]) == (2, "v2", None)
    rejected = t.requests("net", status="rejected")[0]
    assert rejected["proposed_variables"] == {} and rejected["diff"] == {}
    assert not list((store_env.home / "plans").glob(f"request-{update['id']}-*.tfplan"))

    # 5. a stale plan is refused and re-requested: the state moved after approval
    t.ik("run", "gate", "--var", "VALUE=v4", as_="wendy")
    [update] = t.requests("net", status="pending")
    t.ik("approve", str(update["id"]), as_="olive")
    store_env.run(str(store_env.env["INFRAKITCHEN_TOFU"]), "state", "rm", "null_resource.this",
                 cwd=workdir / "net")
    t.ik("run", "gate", "--var", "VALUE=v4", as_="wendy")
    assert t.requests("net", status="stale")[-1]["id"] == update["id"]
    [fresh] = t.requests("net", status="pending")
    assert fresh["id"] > update["id"] and fresh["plan_summary"]["add"] == 1
    assert t.record("net")["revision"] == 2 and _applies(counts, "net") == 2
    t.ik("approve", str(fresh["id"]), as_="olive")
    t.ik("run", "gate", "--var", "VALUE=v4", as_="wendy")
    net = t.record("net")
    assert (net["revision"], net["outputs"]["value"]) == (3, "v4")

    # 6. destroy: blocked by a provisioned child, then under approval
    blocked = t.ik("destroy", "gate", "--task", "net", as_="wendy", code=2)
    payload = json.loads(blocked.stdout)
    assert payload["error"] == "Cannot destroy resource"
    assert payload["reason"] == "Dependencies exist"
    assert [(d["resource_name"], d["state"]) for d in payload["dependencies"]] == [
        ("app", "provisioned")]
    assert t.record("net")["state"] == "provisioned"
    t.ik("destroy", "gate", "--task", "app", as_="wendy", code=2)  # ungated: admin only
    t.ik("destroy", "gate", "--task", "app", as_="adam")
    assert t.record("app")["state"] == "destroyed"
    t.ik("destroy", "gate", "--task", "net", as_="wendy")
    net = t.record("net")
    assert (net["state"], net["status"]) == ("destroy", "approval_pending")
    [destroy] = t.requests("net", status="pending")
    assert destroy["operation"] == "destroy" and destroy["plan_summary"]["destroy"] == 1
    t.ik("approve", str(destroy["id"]), as_="adam")
    t.ik("destroy", "gate", "--task", "net", as_="wendy")
    net = t.record("net")
    assert (net["state"], net["status"], net["outputs"]) == ("destroyed", "done", {})
    state = json.loads((workdir / "net" / "terraform.tfstate").read_text())
    assert state["resources"] == []

    # 7. delete: admin only (a rejected first provision may be deleted too: see
    # test_delete_unprovisioned.py); audit entries stay, archived
    t.ik("delete", "gate/extra", as_="wendy", code=2)  # admin only
    t.ik("delete", "gate/net", as_="wendy", code=2)
    t.ik("delete", "gate/net", as_="adam")
    missing = t.ik("inspect", "gate/net", as_="olive", code=1)
    assert "no record" in missing.stderr
    audit = t.json("audit", "gate/net")
    assert audit and all(e["archived"] for e in audit)
    actions = [e["action"] for e in audit]
    for expected in ("create", "request_approval", "approve", "reject", "provision_success",
                     "update_success", "destroy_success", "delete"):
        assert expected in actions, expected

    # 8. recreate from rejected: forcing asks again
    t.ik("run", "gate", "--select", "extra", "--force", as_="wendy")
    assert (t.record("extra")["state"], t.record("extra")["status"]) == (
        "provision", "approval_pending")
    [forced] = t.requests("extra", status="pending")
    # withdrawn by its requester: back to rejected, and a new run may ask again
    t.ik("withdraw", str(forced["id"]), as_="rita", code=2)
    t.ik("withdraw", str(forced["id"]), as_="wendy")
    assert t.record("extra")["status"] == "rejected"
    assert t.requests("extra")[-1]["status"] == "stale"
    t.ik("run", "gate", "--select", "extra", "--force", as_="wendy")

    # a broken pipeline file closes the pipeline: TOML owners are unknown, grants remain
    [pending] = t.requests("extra", status="pending")
    (store_env.pipelines / "gate.toml").write_text("name = [broken")
    assert t.json("approvals", as_="mallory") == []
    t.ik("reject", str(pending["id"]), "--reason", "mine now", as_="mallory", code=2)
    t.ik("reject", str(pending["id"]), "--reason", "owner file broken", as_="olive", code=2)
    t.ik("reject", str(pending["id"]), "--reason", "fix the file first", as_="adam")

    # the secret appears nowhere: CLI output, audit, requests, revisions, run logs
    t.text.append(json.dumps(t.json("audit", as_="adam")))
    t.text.append(json.dumps(t.json("approvals", as_="adam")))
    t.text.append(json.dumps(t.json("resources", as_="adam")))
    assert SECRET not in "\n".join(t.text)
    _assert_secret_absent_from_store_and_runs(store_env)


def _assert_secret_absent_from_store_and_runs(env: IkEnv) -> None:
    script = (
        "import json,sys\n"
        "from dagster import DagsterInstance\n"
        "from infrakitchen_dagster.store import LifecycleStore\n"
        "from infrakitchen_dagster.store.models import Revision\n"
        "from sqlalchemy import select\n"
        "store = LifecycleStore()\n"
        "with store.session() as s:\n"
        "    print(json.dumps([r.snapshot for r in s.scalars(select(Revision))]))\n"
        "inst = DagsterInstance.get()\n"
        "for run in inst.get_runs():\n"
        "    for entry in inst.all_logs(run.run_id):\n"
        "        print(repr(entry))\n"
    )
    dump = env.run(str(Path(env.env["PATH"].split(":")[0]) / "python"), "-c", script).stdout
    assert "provision_success" in dump or "provisioned" in dump
    assert SECRET not in dump
