"""SSH signatures over approval decisions (`ssh-keygen -Y sign / find-principals / verify`).

A pipeline that names `approvers` (an OpenSSH allowed_signers file) accepts a decision only
with a signature, by a listed key, over a canonical text naming exactly what is decided.
The text is rebuilt from the stored request every time it is checked, so a decision row
edited or written by hand, or one whose request changed since, never verifies.

Why `ssh-keygen` rather than a Python crypto library: it is what people already use to
sign commits, it understands allowed_signers files exactly (options, patterns, cert
authorities), and it signs with keys held by ssh-agent or hardware tokens. It is always
run with an argv list and the payload on stdin: nothing is spliced into a shell string.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

#: the `-n` namespace of every infrakitchen signature (a git or file signature never counts)
NAMESPACE = "infrakitchen"
#: first line of the canonical payload; bumped if the format ever changes
PAYLOAD_VERSION = "infrakitchen-approval-v1"
#: the payload's fields, in order
PAYLOAD_FIELDS = ("request_id", "pipeline", "task", "environment", "operation", "decision",
                  "fingerprint")
DECISIONS = ("approve", "reject")
_TIMEOUT = 60  # seconds; signing may wait on an agent confirming (ssh-add -c)
_GOOD = re.compile(r'^Good "[^"]*" signature for (?P<principal>.+) with (?P<type>\S+) key '
                   r"(?P<fingerprint>SHA256:[A-Za-z0-9+/=]+)\s*$", re.MULTILINE)


class SignatureError(Exception):
    """A signature could not be made, or does not prove what it must."""


@dataclass(frozen=True)
class Signer:
    """Who a verified signature proves: the allowed_signers principal and the key."""

    principal: str
    key_fingerprint: str  # "SHA256:..."


def canonical_payload(*, request_id: int, pipeline: str, task: str, environment: str,
                      operation: str, decision: str, fingerprint: str) -> bytes:
    """The exact bytes signed for one decision: a version line, then `name=value` lines in
    `PAYLOAD_FIELDS` order, each ending in a newline. No value may hold a line break, so
    two different decisions never share a payload."""
    if decision not in DECISIONS:
        raise ValueError(f"decision must be one of {DECISIONS}, got {decision!r}")
    values = {"request_id": str(int(request_id)), "pipeline": pipeline, "task": task,
              "environment": environment, "operation": operation, "decision": decision,
              "fingerprint": fingerprint}
    lines = [PAYLOAD_VERSION]
    for name in PAYLOAD_FIELDS:
        value = values[name]
        if "\n" in value or "\r" in value:
            raise ValueError(f"payload field {name} holds a line break")
        lines.append(f"{name}={value}")
    return ("\n".join(lines) + "\n").encode("utf-8")


def _ssh_keygen() -> str:
    found = shutil.which("ssh-keygen")
    if found is None:
        raise SignatureError("ssh-keygen is not installed (OpenSSH 8.2 or later is needed "
                             "to sign and verify approvals)")
    return found


def _run(argv: list[str], payload: bytes) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(argv, input=payload, capture_output=True, timeout=_TIMEOUT,
                              check=False)
    except subprocess.TimeoutExpired:
        raise SignatureError(f"ssh-keygen {argv[1]} {argv[2]} took over {_TIMEOUT}s "
                             "(a passphrase prompt or an agent waiting for confirmation?)"
                             ) from None


def _last_line(data: bytes) -> str:
    lines = [line for line in data.decode("utf-8", "replace").splitlines()
             if line.strip() and not line.startswith("Signing data on standard input")]
    return lines[-1].strip() if lines else "no message"


def sign(payload: bytes, key: Path) -> str:
    """Sign `payload` with `key` and return the armored signature.

    `key` is a private key file, or a public key whose private half ssh-agent holds
    (`ssh-keygen -Y sign -f KEY.pub` asks the agent)."""
    key = Path(key).expanduser()
    if not key.is_file():
        raise SignatureError(f"--key {str(key)!r}: no such key file")
    result = _run([_ssh_keygen(), "-Y", "sign", "-n", NAMESPACE, "-f", str(key)], payload)
    armored = result.stdout.decode("utf-8", "replace")
    if result.returncode != 0 or "BEGIN SSH SIGNATURE" not in armored:
        raise SignatureError(f"could not sign with {str(key)!r}: "
                             f"{_last_line(result.stderr)}")
    return armored.strip() + "\n"


def verify(payload: bytes, signature: str, allowed_signers: Path) -> list[Signer]:
    """Every principal of `allowed_signers` for whom `signature` is a good `infrakitchen`
    signature over `payload`, in the file's order (one key may be listed for several).

    Raises SignatureError when the signature is malformed, its key is not listed, or it
    does not match the payload (edited request, forged row, wrong namespace)."""
    if not allowed_signers.is_file():
        raise SignatureError(f"the approvers file {str(allowed_signers)!r} is missing")
    if "BEGIN SSH SIGNATURE" not in (signature or ""):
        raise SignatureError("the decision carries no SSH signature")
    keygen = _ssh_keygen()
    with tempfile.TemporaryDirectory(prefix="ik-sig-") as tmp:
        sig_file = Path(tmp) / "decision.sig"
        sig_file.write_text(signature)
        found = _run([keygen, "-Y", "find-principals", "-s", str(sig_file),
                      "-f", str(allowed_signers)], b"")
        principals = [p.strip() for p in found.stdout.decode("utf-8", "replace").splitlines()
                      if p.strip()]
        if found.returncode != 0 or not principals:
            raise SignatureError(f"the signing key is not listed in the approvers file "
                                 f"{allowed_signers.name!r}")
        signers: list[Signer] = []
        failure = ""
        for principal in principals:
            checked = _run([keygen, "-Y", "verify", "-f", str(allowed_signers),
                            "-I", principal, "-n", NAMESPACE, "-s", str(sig_file)], payload)
            good = _GOOD.search(checked.stdout.decode("utf-8", "replace"))
            if checked.returncode == 0 and good:
                signers.append(Signer(principal, good["fingerprint"]))
            else:
                failure = _last_line(checked.stderr or checked.stdout)
    if not signers:
        raise SignatureError(f"the signature does not verify for this decision ({failure})")
    return signers

