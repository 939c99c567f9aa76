"""Signed approvals and four eyes, with real ed25519 keys made by `ssh-keygen`, the `ik`
CLI, real Terraform applies and the lifecycle store on SQLite and PostgreSQL.

Cast: olive owns the pipelines, adam is a granted admin, wendy may write (request),
mallory's key is listed in the approvers file but she holds no role, eve's key is not
listed at all.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import func, select

from infrakitchen_dagster import signatures
from infrakitchen_dagster.approvals import ApprovalError, Approvals, decision_payload
from infrakitchen_dagster.signatures import SignatureError
from infrakitchen_dagster.store import LifecycleStore
from infrakitchen_dagster.store.models import ApprovalRequestRow

from .conftest import FIXTURES, IkEnv, ik_in_process, write_pipeline

STEP_MODULE = FIXTURES / "modules" / "step"
PEOPLE = ("olive", "adam", "wendy", "mallory", "eve")


def _keys(directory: Path) -> dict[str, Path]:
    """An ed25519 key pair per person (no passphrase), made by ssh-keygen."""
    directory.mkdir(parents=True, exist_ok=True)
    keys = {}
    for person in PEOPLE:
        key = directory / person
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", person,
                        "-f", str(key)], check=True, capture_output=True)
        keys[person] = key
    return keys


def _fingerprint(key: Path) -> str:
    out = subprocess.run(["ssh-keygen", "-l", "-E", "sha256", "-f", f"{key}.pub"],
                         check=True, capture_output=True, text=True).stdout
    return out.split()[1]


def _signers_line(principal: str, key: Path) -> str:
    kind, blob = Path(f"{key}.pub").read_text().split()[:2]
    return f"{principal} {kind} {blob}\n"


def _write_signers(file: Path, keys: dict[str, Path], people: tuple[str, ...]) -> None:
    file.write_text("# who may sign infrakitchen decisions\n"
                    + "".join(_signers_line(p, keys[p]) for p in people))


def _ik(*args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
    result = ik_in_process(*args, check=False)
    assert result.returncode == code, (
        f"ik {' '.join(args)}: exit {result.returncode}, wanted {code}\n"
        f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def _requests(pipeline: str, task: str, status: str | None = None) -> list[dict]:
    found = json.loads(_ik("approvals", "--pipeline", pipeline, "--json", "--as", "olive").stdout)
    return [r for r in found if r["task"] == task and status in (None, r["status"])]


def _audit(pipeline: str, task: str, action: str) -> list[dict]:
    entries = json.loads(_ik("audit", f"{pipeline}/{task}", "--json", "--as", "olive").stdout)
    return [e for e in entries if e["action"] == action]


def _applies(counts: Path, task: str) -> int:
    path = counts / task
    return len(path.read_text().split()) if path.exists() else 0


def _forge(request_id: int, **values: object) -> None:
    """Write a decision straight into the database, as someone with database access
    (and no key) could."""
    store = LifecycleStore()
    with store.session() as session:
        row = session.get(ApprovalRequestRow, request_id)
        assert row is not None
        seq = session.scalar(select(func.max(ApprovalRequestRow.decision_seq))) or 0
        row.decision_seq = seq + 1
        for name, value in values.items():
            setattr(row, name, value)


# -- the payload and ssh-keygen, without a store ---------------------------------------------


def test_canonical_payload_is_exact_and_verifies_only_for_its_decision(tmp_path: Path) -> None:
    keys = _keys(tmp_path / "keys")
    signers = tmp_path / "allowed_signers"
    _write_signers(signers, keys, ("olive", "adam"))
    fields = dict(request_id=7, pipeline="gate", task="net", environment="prod",
                  operation="update", fingerprint="ab" * 32)
    approve = signatures.canonical_payload(decision="approve", **fields)
    assert approve == (b"infrakitchen-approval-v1\nrequest_id=7\npipeline=gate\ntask=net\n"
                       b"environment=prod\noperation=update\ndecision=approve\n"
                       b"fingerprint=" + b"ab" * 32 + b"\n")

    signature = signatures.sign(approve, keys["olive"])
    assert signature.startswith("-----BEGIN SSH SIGNATURE-----")
    [signer] = signatures.verify(approve, signature, signers)
    assert signer == signatures.Signer("olive", _fingerprint(keys["olive"]))

    # the same signature over any other decision, request or fingerprint does not verify
    for other in (signatures.canonical_payload(decision="reject", **fields),
                  signatures.canonical_payload(decision="approve", **{**fields,
                                                                      "request_id": 8}),
                  signatures.canonical_payload(decision="approve", **{**fields,
                                                                      "fingerprint": "cd"})):
        with pytest.raises(SignatureError, match="does not verify"):
            signatures.verify(other, signature, signers)

    # a key that is not listed; a signature made for another namespace (e.g. git)
    with pytest.raises(SignatureError, match="not listed"):
        signatures.verify(approve, signatures.sign(approve, keys["eve"]), signers)
    git_sig = subprocess.run(["ssh-keygen", "-Y", "sign", "-n", "git", "-f",
                              str(keys["olive"])], input=approve, capture_output=True,
                             check=True).stdout.decode()
    with pytest.raises(SignatureError, match="does not verify"):
        signatures.verify(approve, git_sig, signers)
    with pytest.raises(SignatureError, match="no SSH signature"):
        signatures.verify(approve, "olive says yes", signers)
    with pytest.raises(SignatureError, match="no such key file"):
        signatures.sign(approve, tmp_path / "missing")
    with pytest.raises(ValueError, match="line break"):
        signatures.canonical_payload(decision="approve", **{**fields, "task": "a\ndecision"})


def test_agent_held_key_signs_with_its_public_half(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """`--key KEY.pub` with the private half only in ssh-agent (`ssh-keygen -Y sign -f
    PUBKEY` asks the agent)."""
    keys = _keys(tmp_path / "keys")
    signers = tmp_path / "allowed_signers"
    _write_signers(signers, keys, ("adam",))
    public_only = tmp_path / "agent" / "adam.pub"
    public_only.parent.mkdir()
    public_only.write_text(Path(f"{keys['adam']}.pub").read_text())
    sock = tmp_path / "agent" / "sock"
    started = subprocess.run(["ssh-agent", "-s", "-a", str(sock)], capture_output=True,
                             text=True, check=True).stdout
    pid = int(re.search(r"SSH_AGENT_PID=(\d+)", started).group(1))
    try:
        env = {**os.environ, "SSH_AUTH_SOCK": str(sock)}
        subprocess.run(["ssh-add", "-q", str(keys["adam"])], env=env, check=True,
                       capture_output=True)
        payload = signatures.canonical_payload(request_id=1, pipeline="p", task="t",
                                               environment="default", operation="provision",
                                               decision="approve", fingerprint="f" * 64)
        monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
        signature = signatures.sign(payload, public_only)
        monkeypatch.delenv("SSH_AUTH_SOCK")
        [signer] = signatures.verify(payload, signature, signers)
        assert signer.principal == "adam"
        with pytest.raises(SignatureError, match="could not sign"):  # no agent: no key
            signatures.sign(payload, public_only)
    finally:
        os.kill(pid, 15)


# -- end to end: ik, Terraform, the store ----------------------------------------------------


def _signed_pipeline(directory: Path, counts: Path) -> None:
    write_pipeline(directory, "signed", f"""
name = "signed"
approval = true
owners = ["olive"]
approvers = "signed.allowed_signers"
[vars]
VALUE = "v1"
[tasks.net]
module = "{STEP_MODULE}"
variables = {{ name = "net", value = "{{{{.VALUE}}}}", count_file = "{counts}/net" }}
[tasks.extra]
module = "{STEP_MODULE}"
variables = {{ name = "extra", count_file = "{counts}/extra" }}
""")


def test_signed_decisions_end_to_end(store_env: IkEnv, tmp_path: Path) -> None:
    counts = tmp_path / "counts"
    counts.mkdir()
    keys = _keys(tmp_path / "keys")
    signers_file = store_env.pipelines / "signed.allowed_signers"
    _write_signers(signers_file, keys, ("olive", "adam", "wendy", "mallory"))
    _signed_pipeline(store_env.pipelines, counts)
    _ik("grant", "adam", "admin", "--pipeline", "signed", "--as", "olive")
    _ik("grant", "wendy", "write", "--pipeline", "signed", "--as", "olive")

    _ik("run", "signed", "--select", "net", "--as", "wendy")
    _ik("run", "signed", "--select", "extra", "--as", "adam")
    [net] = _requests("signed", "net", "pending")
    [extra] = _requests("signed", "extra", "pending")
    net_id, extra_id = str(net["id"]), str(extra["id"])

    # a claimed identity does not count, not even the owner's
    refused = _ik("approve", net_id, "--as", "olive", code=2)
    assert "accepts only signed decisions" in refused.stderr
    assert f"ik approve {net_id} --key PATH" in refused.stderr
    # a key not in the approvers file; a listed key whose principal holds no approve role
    refused = _ik("approve", net_id, "--key", str(keys["eve"]), "--as", "olive", code=2)
    assert "not listed in the approvers file" in refused.stderr
    refused = _ik("approve", net_id, "--key", str(keys["mallory"]), "--as", "olive", code=2)
    assert "belongs to 'mallory', which holds no owner or admin role" in refused.stderr
    assert _fingerprint(keys["mallory"]) in refused.stderr
    refused = _ik("approve", net_id, "--key", str(keys["wendy"]), code=2)
    assert "'wendy', which holds no owner or admin role" in refused.stderr
    refusals = _audit("signed", "net", "approval_signature_refused")
    assert len(refusals) == 4
    assert refusals[0]["actor"] == "olive" and refusals[0]["details"]["stage"] == "decision"
    assert refusals[2]["details"]["principal"] == "mallory"

    # four eyes: adam requested extra, so adam's valid signature cannot approve it ...
    refused = _ik("approve", extra_id, "--key", str(keys["adam"]), code=2)
    assert "'adam' requested request" in refused.stderr and "four eyes" in refused.stderr
    [self_refusal] = _audit("signed", "extra", "self_approval_refused")
    assert self_refusal["actor"] == "adam"
    # ... but adam may reject (withdraw) his own request, signed
    _ik("reject", extra_id, "--key", str(keys["adam"]), "--reason", "not yet")
    assert _requests("signed", "extra")[0]["status"] == "rejected"

    # olive signs; --as names someone else, but the principal is the one the key proves
    approved = _ik("approve", net_id, "--key", str(keys["olive"]), "--as", "mallory")
    olive_fp = _fingerprint(keys["olive"])
    assert f"signed by olive ({olive_fp})" in approved.stdout
    [decided] = _requests("signed", "net")
    assert (decided["status"], decided["decided_by"], decided["identity"]) == (
        "approved", "olive", "signed")
    assert (decided["signer_principal"], decided["key_fingerprint"]) == ("olive", olive_fp)
    [audit] = _audit("signed", "net", "approve")
    assert audit["actor"] == "olive"
    assert {k: audit["details"][k] for k in ("identity", "principal", "key_fingerprint")} == {
        "identity": "signed", "principal": "olive", "key_fingerprint": olive_fp}
    assert "(signed)" in _ik("approvals", "--as", "olive").stdout

    # verified again before the apply: still good, so the approved plan is applied
    _ik("run", "signed", "--select", "net", "--as", "wendy")
    assert _applies(counts, "net") == 1
    assert _requests("signed", "net")[0]["status"] == "applied"

    # a key removed from the approvers file after it signed: the apply is refused
    _ik("run", "signed", "--select", "net", "--var", "VALUE=v2", "--as", "wendy")
    [update] = _requests("signed", "net", "pending")
    _ik("approve", str(update["id"]), "--key", str(keys["olive"]))
    _write_signers(signers_file, keys, ("adam", "wendy", "mallory"))
    failed = _ik("run", "signed", "--select", "net", "--var", "VALUE=v2", "--as", "wendy",
                 code=1)
    assert _applies(counts, "net") == 1
    [update] = [r for r in _requests("signed", "net") if r["id"] == update["id"]]
    assert update["status"] == "failed"
    [refusal] = [e for e in _audit("signed", "net", "approval_signature_refused")
                 if e["details"]["stage"] == "apply"]
    assert refusal["details"]["request_id"] == update["id"]
    assert "not listed in the approvers file" in refusal["details"]["reason"]
    assert "not listed in the approvers file" in failed.stdout + failed.stderr
    record = json.loads(_ik("inspect", "signed/net", "--json", "--as", "olive").stdout)
    assert (record["revision"], record["outputs"]["value"]) == (1, "v1")

    # a decision row written into the database by hand (no signature) is refused
    _write_signers(signers_file, keys, ("olive", "adam", "wendy", "mallory"))
    _ik("run", "signed", "--select", "net", "--var", "VALUE=v3", "--as", "wendy")
    [forged] = _requests("signed", "net", "pending")
    _forge(forged["id"], status="approved", decided_by="olive", identity="signed")
    failed = _ik("run", "signed", "--select", "net", "--var", "VALUE=v3", "--as", "wendy",
                 code=1)
    assert "approved without a signature" in failed.stdout + failed.stderr
    assert _applies(counts, "net") == 1

    # a real signature copied from another decision: its payload no longer matches
    genuine = Approvals(LifecycleStore()).get(update["id"])
    assert genuine is not None and genuine.signature
    _ik("run", "signed", "--select", "net", "--var", "VALUE=v4", "--as", "wendy")
    [copied] = _requests("signed", "net", "pending")
    _forge(copied["id"], status="approved", decided_by="olive", identity="signed",
           signature=genuine.signature, signer_principal="olive", key_fingerprint=olive_fp)
    failed = _ik("run", "signed", "--select", "net", "--var", "VALUE=v4", "--as", "wendy",
                 code=1)
    assert "does not verify" in failed.stdout + failed.stderr
    assert _applies(counts, "net") == 1
    apply_refusals = [e for e in _audit("signed", "net", "approval_signature_refused")
                      if e["details"]["stage"] == "apply"]
    assert [e["details"]["request_id"] for e in apply_refusals] == [
        update["id"], forged["id"], copied["id"]]

    # the requester's own signed approval, forged in after the fact, fails four eyes
    _ik("run", "signed", "--select", "net", "--var", "VALUE=v5", "--as", "adam")
    [own] = _requests("signed", "net", "pending")
    own_request = Approvals(LifecycleStore()).get(own["id"])
    assert own_request is not None
    signature = signatures.sign(decision_payload(own_request, True), keys["adam"])
    _forge(own["id"], status="approved", decided_by="adam", identity="signed",
           signature=signature, signer_principal="adam",
           key_fingerprint=_fingerprint(keys["adam"]))
    failed = _ik("run", "signed", "--select", "net", "--var", "VALUE=v5", "--as", "adam",
                 code=1)
    assert "four eyes" in failed.stdout + failed.stderr
    assert _applies(counts, "net") == 1
    assert [e["details"]["stage"] for e in _audit("signed", "net", "self_approval_refused")
            ] == ["apply"]


@pytest.mark.parametrize("store_env", ["sqlite"], indirect=True)
def test_claimed_decisions_and_four_eyes(store_env: IkEnv, tmp_path: Path) -> None:
    """Without `approvers` one operator's claimed name still decides, recorded as claimed;
    the requester cannot approve its own request unless `allow_self_approval = true`."""
    counts = tmp_path / "counts"
    counts.mkdir()
    keys = _keys(tmp_path / "keys")
    for name, extra in (("plain", ""), ("selfok", "allow_self_approval = true")):
        write_pipeline(store_env.pipelines, name, f"""
name = "{name}"
approval = true
owners = ["olive", "adam"]
{extra}
[tasks.net]
module = "{STEP_MODULE}"
variables = {{ name = "net", count_file = "{counts}/{name}" }}
""")
    _ik("run", "plain", "--as", "olive")
    [request] = _requests("plain", "net", "pending")
    refused = _ik("approve", str(request["id"]), "--as", "olive", code=2)
    assert "'olive' requested request" in refused.stderr and "allow_self_approval" in refused.stderr
    assert len(_audit("plain", "net", "self_approval_refused")) == 1
    # a key cannot be checked without an approvers file: refused, not silently ignored
    refused = _ik("approve", str(request["id"]), "--key", str(keys["adam"]), "--as", "adam",
                  code=2)
    assert "names no approvers file" in refused.stderr
    # the Python API keeps working as before (the pipeline looked up by name)
    with pytest.raises(ApprovalError, match="four eyes"):
        Approvals(LifecycleStore()).decide(request["id"], approve=True, actor="olive",
                                           owners=["olive", "adam"])
    _ik("approve", str(request["id"]), "--as", "adam")
    [decided] = _requests("plain", "net")
    assert (decided["decided_by"], decided["identity"], decided["key_fingerprint"]) == (
        "adam", "claimed", None)
    [audit] = _audit("plain", "net", "approve")
    assert audit["details"]["identity"] == "claimed" and "principal" not in audit["details"]
    _ik("run", "plain", "--as", "olive")
    assert _applies(counts, "plain") == 1

    # allow_self_approval = true: the requester may approve its own request
    _ik("run", "selfok", "--as", "olive")
    [own] = _requests("selfok", "net", "pending")
    _ik("approve", str(own["id"]), "--as", "olive")
    _ik("run", "selfok", "--as", "olive")
    assert _applies(counts, "selfok") == 1
