"""Deleting what never existed: a record whose first provision was rejected or withdrawn
holds no infrastructure, so `ik delete` removes it (its audit entries stay, archived), as
it does a destroyed one. A provisioned record, or a rejected one whose apply once started
and may have left something behind, is refused until it is destroyed.

Real Terraform applies through `ik`, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from .conftest import FIXTURES, IkEnv, ik_in_process, write_pipeline

STEP_MODULE = FIXTURES / "modules" / "step"


def _ik(*argv: str, as_: str, code: int = 0) -> subprocess.CompletedProcess[str]:
    result = ik_in_process(*argv, "--as", as_, check=False)
    assert result.returncode == code, (
        f"ik {' '.join(argv)} --as {as_}: exit {result.returncode}, wanted {code}\n"
        f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def _json(*argv: str) -> list | dict:
    return json.loads(_ik(*argv, "--json", as_="olive").stdout)


def _record(task: str) -> tuple[str, str]:
    record = _json("inspect", f"keep/{task}")
    return record["state"], record["status"]


def _pending(task: str) -> int:
    [request] = [r["id"] for r in _json("approvals") if r["task"] == task
                 and r["status"] == "pending"]
    return request


def test_a_rejected_or_withdrawn_provision_can_be_deleted(store_env: IkEnv,
                                                          tmp_path: Path) -> None:
    counts = tmp_path / "counts"
    counts.mkdir()
    write_pipeline(store_env.pipelines, "keep", "\n".join(
        ['name = "keep"', "approval = true", 'owners = ["olive"]']
        + [f'[tasks.{name}]\nmodule = "{STEP_MODULE}"\n'
           f'variables = {{ name = "{name}", count_file = "{counts}/{name}", '
           f'fail = {"true" if name == "flaky" else "false"} }}'
           for name in ("rejected", "withdrawn", "kept", "flaky")]))
    _ik("grant", "wendy", "write", "--pipeline", "keep", as_="olive")
    _ik("run", "keep", as_="wendy")

    # rejected before any apply: only an admin or owner deletes it; audit kept, archived
    _ik("reject", str(_pending("rejected")), "--reason", "not needed", as_="olive")
    assert _record("rejected") == ("provision", "rejected")
    denied = _ik("delete", "keep/rejected", as_="wendy", code=2)
    assert "needs admin" in denied.stderr
    done = _ik("delete", "keep/rejected", as_="olive")
    assert "deleted keep/rejected (default)" in done.stdout
    missing = _ik("inspect", "keep/rejected", as_="olive", code=1)
    assert "no record" in missing.stderr
    audit = _json("audit", "keep/rejected")
    assert audit and all(e["archived"] for e in audit)
    assert [e["action"] for e in audit][-1] == "delete"
    assert audit[-1]["details"] == {"never_provisioned": True}
    assert "request_approval" in [e["action"] for e in audit]

    # withdrawn by its requester: the same
    _ik("withdraw", str(_pending("withdrawn")), as_="wendy")
    assert _record("withdrawn") == ("provision", "rejected")
    _ik("delete", "keep/withdrawn", as_="olive")
    assert not any(r["task"] == "withdrawn" for r in _json("resources"))

    # provisioned: refused, nothing changes
    _ik("approve", str(_pending("kept")), as_="olive")
    _ik("run", "keep", "--select", "kept", as_="wendy")
    assert _record("kept") == ("provisioned", "done")
    refused = _ik("delete", "keep/kept", as_="olive", code=2)
    assert ("only a destroyed resource, or one whose provision was rejected or withdrawn, "
            "can be deleted") in refused.stderr
    assert _record("kept") == ("provisioned", "done")

    # an apply that started and failed may have left infrastructure: rejected afterwards,
    # it is deleted only once `ik destroy` cleaned it
    _ik("approve", str(_pending("flaky")), as_="olive")
    _ik("run", "keep", "--select", "flaky", as_="wendy", code=1)
    assert _record("flaky") == ("provision", "error")
    _ik("run", "keep", "--select", "flaky", as_="wendy")
    _ik("reject", str(_pending("flaky")), "--reason", "give up", as_="olive")
    assert _record("flaky") == ("provision", "rejected")
    state = store_env.home / "work" / "keep" / "default" / "flaky" / "terraform.tfstate"
    assert json.loads(state.read_text())["resources"]  # the failed apply left a resource
    refused = _ik("delete", "keep/flaky", as_="olive", code=2)
    assert "may hold infrastructure" in refused.stderr
    assert "ik destroy keep --task flaky" in refused.stderr
    _ik("destroy", "keep", "--task", "flaky", as_="olive")
    assert json.loads(state.read_text())["resources"] == []
    _ik("delete", "keep/flaky", as_="olive")
    assert not state.parent.exists()  # its working directory went with it

    # a deleted record starts over: a new record asks for approval again
    _ik("run", "keep", "--select", "rejected", as_="wendy")
    assert _record("rejected") == ("provision", "approval_pending")
    assert not (counts / "rejected").exists() and not (counts / "withdrawn").exists()
