"""Git module sources: `module = "git::URL//subdir?ref=REF"` resolved to a local directory.

A resource may take its module from a git repository at a tag, branch or commit (a "source
code version"). Resolving one means: fetch the repository into a bare mirror under
`<INFRAKITCHEN_HOME>/sources/mirrors`, turn the ref into a 40-hex commit, and export that
commit once into `<INFRAKITCHEN_HOME>/sources/checkouts/<repo>/<commit>`. The commit, not
the ref, is what a record and a fingerprint keep: a tag that moves, or a pipeline moving
from `ref=v1` to `ref=v2`, is then a visible change.

Concurrent runs share the cache safely: everything that writes to one repository's mirror
or checkouts holds an exclusive file lock on it, and a checkout appears under its final
name only when complete (exported beside it, then renamed).

Credentials for private repositories never reach a command line, a file in the cache or a
log: an HTTPS token travels in the git process's environment and is handed to git by a
fixed `GIT_ASKPASS` script; an SSH private key is written 0600 into a private temporary
directory that exists only while git runs. Nothing here imports Dagster.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shlex
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from . import settings

PREFIX = "git::"
#: integration env keys read for private repositories (see README, "Git module sources")
TOKEN_KEY, USERNAME_KEY = "GIT_TOKEN", "GIT_USERNAME"
SSH_KEY_KEY, KNOWN_HOSTS_KEY = "GIT_SSH_KEY", "GIT_SSH_KNOWN_HOSTS"
CREDENTIAL_KEYS = (TOKEN_KEY, SSH_KEY_KEY)
DEFAULT_USERNAME = "x-access-token"
#: how long one git command may take (seconds): INFRAKITCHEN_GIT_TIMEOUT
DEFAULT_TIMEOUT = 300.0

_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_REF = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._/+-]*$")
#: the askpass program: fixed text, the secret comes from its environment only
_ASKPASS = """#!/bin/sh
case "$1" in
  Username*|username*) printf '%s\\n' "$IK_GIT_ASKPASS_USERNAME" ;;
  *) printf '%s\\n' "$IK_GIT_ASKPASS_TOKEN" ;;
esac
"""


class SourceError(Exception):
    """A git source that cannot be used; the message is one line naming what and why."""


@dataclass(frozen=True)
class GitSource:
    """A parsed `git::URL//subdir?ref=REF` module string."""

    module: str
    url: str
    subdir: str
    ref: str | None

    @property
    def shown_url(self) -> str:
        """The URL without any user or password in it (for messages and listings)."""
        return redact_url(self.url)

    @property
    def shown_module(self) -> str:
        return self.module.replace(self.url, self.shown_url, 1)

    @property
    def key(self) -> str:
        """Cache directory name of the repository (credentials do not change it)."""
        return hashlib.sha256(self.shown_url.encode()).hexdigest()[:20]


@dataclass(frozen=True)
class ResolvedSource:
    """A git source at one commit, exported to a local module directory."""

    source: GitSource
    commit: str
    directory: Path

    def record(self) -> dict[str, str]:
        """The record's `source` field: {"module", "ref", "commit"}."""
        return {"module": self.source.shown_module, "ref": self.source.ref or "HEAD",
                "commit": self.commit}


def is_git_source(module: str | None) -> bool:
    return bool(module) and module.startswith(PREFIX)


def redact_url(url: str) -> str:
    """`https://user:token@host/x` -> `https://host/x`; other URLs as they are."""
    if "://" not in url:
        return url
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def parse(module: str, base_dir: Path | None = None) -> GitSource:
    """Split `git::URL//subdir?ref=REF`; a relative local URL (`./x`, `../x`) is taken
    relative to `base_dir` (the pipeline's directory). Raises `SourceError`."""
    if not is_git_source(module):
        raise SourceError(f"module {module!r} is not a git source (expected git::URL...)")
    rest = module[len(PREFIX):]
    if re.search(r"://[^/@\s]*:[^/@\s]*@", rest):  # user:password@ in the URL
        raise SourceError(
            f"module {redact_in(module)!r}: a password or token in the git URL would reach "
            "command lines, the record and logs; give it through an integration instead "
            "(GIT_TOKEN or GIT_SSH_KEY in its env, from_env)")
    ref: str | None = None
    if "?" in rest:
        rest, _, query = rest.rpartition("?")
        for pair in filter(None, query.split("&")):
            key, sep, value = pair.partition("=")
            if key != "ref" or not sep or not value:
                raise SourceError(f"module {module!r}: unsupported query {pair!r} "
                                  "(only ?ref=TAG|BRANCH|COMMIT)")
            ref = value
    scheme_end = rest.find("://")
    start = scheme_end + 3 if scheme_end >= 0 else 0
    cut = rest.find("//", start + (1 if rest[start:start + 1] == "/" else 0))
    url, subdir = (rest, "") if cut < 0 else (rest[:cut], rest[cut + 2:].strip("/"))
    if not url or url.startswith("-"):
        raise SourceError(f"module {module!r}: no usable git URL")
    if ref is not None and (not _REF.match(ref) or ".." in ref):
        raise SourceError(f"module {module!r}: ref {ref!r} is not a valid tag, branch or "
                          "commit name")
    if any(part in ("..", ".") for part in Path(subdir).parts) or subdir.startswith("/"):
        raise SourceError(f"module {module!r}: subdirectory {subdir!r} must stay inside "
                          "the repository")
    if url.startswith(("./", "../")) and base_dir is not None:
        url = str((base_dir / url).resolve())
    return GitSource(module=module, url=url, subdir=subdir, ref=ref)


def cache_root() -> Path:
    return settings.home() / "sources"


def timeout() -> float:
    return float(os.environ.get("INFRAKITCHEN_GIT_TIMEOUT", DEFAULT_TIMEOUT))


# -- resolving ------------------------------------------------------------------------------

#: (run id, url, ref) -> commit: a run fetches each ref once, however many tasks use it
_resolved_in_run: dict[tuple[str, str, str | None], str] = {}


def resolve(source: GitSource, *, credentials: Mapping[str, str] | None = None,
            commit: str | None = None, run_id: str | None = None) -> ResolvedSource:
    """The local module directory of `source` at its ref (or at `commit`, a record's
    applied one). Fetches only when the commit is not in the mirror yet, or the ref must
    be looked up again (a new run). Raises `SourceError` naming the source."""
    root = cache_root()
    mirror = root / "mirrors" / f"{source.key}.git"
    (root / "locks").mkdir(parents=True, exist_ok=True)
    git = _Git(mirror, credentials or {})
    with _locked(root / "locks" / f"{source.key}.lock"):
        created = not (mirror / "HEAD").is_file()
        if created:
            mirror.parent.mkdir(parents=True, exist_ok=True)
            git.run("init", "--quiet", "--bare", str(mirror), git_dir=False)
        wanted = commit or source.ref
        memo = (run_id, source.url, wanted) if run_id and commit is None else None
        found = _resolved_in_run.get(memo) if memo else None
        if found is None:
            try:
                found = _commit_of(git, source, wanted)
            except SourceError:
                if created:  # nothing was ever fetched: leave no empty mirror behind
                    shutil.rmtree(mirror, ignore_errors=True)
                raise
            if memo:
                _resolved_in_run[memo] = found
        directory = _export(git, root / "checkouts" / source.key, found)
    module_dir = directory / source.subdir if source.subdir else directory
    if not module_dir.is_dir():
        raise SourceError(f"git source {source.shown_url} at {_what(source, found)} has no "
                          f"directory {source.subdir!r}")
    return ResolvedSource(source, found, module_dir)


def _what(source: GitSource, commit: str) -> str:
    return f"ref {source.ref} (commit {commit})" if source.ref else f"commit {commit}"


def _commit_of(git: _Git, source: GitSource, wanted: str | None) -> str:
    """The 40-hex commit `wanted` (a tag, branch or commit; None: the default branch)."""
    if wanted and _COMMIT.match(wanted) and git.commit_exists(wanted):
        return wanted  # a pinned commit already fetched: no network needed
    git.fetch(source)
    if wanted is None:
        found = git.rev_parse("HEAD")
    else:
        found = (git.rev_parse(f"refs/tags/{wanted}") or git.rev_parse(f"refs/heads/{wanted}")
                 or (git.rev_parse(wanted) if re.fullmatch(r"[0-9a-f]{7,40}", wanted)
                     else None))
        if found is None and _COMMIT.match(wanted):
            git.fetch(source, wanted, quiet_failure=True)  # a commit no ref points at
            found = git.rev_parse(wanted)
    if found is None:
        name = wanted or "HEAD (default branch)"
        raise SourceError(f"git source {source.shown_url} has no ref {name!r} "
                          "(no such tag, branch or commit)")
    return found


def _export(git: _Git, checkouts: Path, commit: str) -> Path:
    """`checkouts/<commit>`, exported with `git archive` once (the lock is held)."""
    target = checkouts / commit
    if target.is_dir():
        return target
    checkouts.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{commit[:12]}-", dir=checkouts))
    try:
        git.archive_into(commit, staging)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock shared by every process using this cache (runs, CLI, daemon)."""
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class _Git:
    """git commands on one bare mirror, with credentials in the environment only."""

    def __init__(self, mirror: Path, credentials: Mapping[str, str]):
        self.mirror = mirror
        self.credentials = dict(credentials)

    def _secrets(self) -> list[str]:
        return [v for k, v in self.credentials.items() if k in CREDENTIAL_KEYS and v]

    def _mask(self, text: str) -> str:
        for secret in self._secrets():
            text = text.replace(secret, "***")
        return text

    @contextlib.contextmanager
    def _env(self) -> Iterator[dict[str, str]]:
        """git's environment: never prompt; a token through askpass; a key file that
        lives in a private temporary directory for the duration of the command."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_") or
               k in ("GIT_SSH_COMMAND", "GIT_SSH", "GIT_CONFIG_GLOBAL", "GIT_CONFIG_NOSYSTEM")}
        env.update(GIT_TERMINAL_PROMPT="0", LC_ALL="C")
        token = self.credentials.get(TOKEN_KEY)
        key = self.credentials.get(SSH_KEY_KEY)
        if not token and not key:
            env.setdefault("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")
            yield env
            return
        with tempfile.TemporaryDirectory(prefix="ik-git-") as private:
            os.chmod(private, 0o700)
            if token:
                askpass = Path(private) / "askpass"
                askpass.write_text(_ASKPASS)
                askpass.chmod(0o700)
                env.update(GIT_ASKPASS=str(askpass), IK_GIT_ASKPASS_TOKEN=token,
                           IK_GIT_ASKPASS_USERNAME=self.credentials.get(USERNAME_KEY)
                           or DEFAULT_USERNAME)
            if key:
                key_file = Path(private) / "id"
                key_file.touch(mode=0o600)
                key_file.write_text(key if key.endswith("\n") else key + "\n")
                command = ["ssh", "-i", str(key_file), "-o", "IdentitiesOnly=yes",
                           "-o", "BatchMode=yes"]
                known = self.credentials.get(KNOWN_HOSTS_KEY)
                if known:
                    hosts = Path(private) / "known_hosts"
                    hosts.write_text(known if known.endswith("\n") else known + "\n")
                    command += ["-o", f"UserKnownHostsFile={hosts}"]
                env["GIT_SSH_COMMAND"] = shlex.join(command)
            yield env

    def run(self, *args: str, git_dir: bool = True, check: bool = True
            ) -> subprocess.CompletedProcess[str]:
        argv = ["git", *(["--git-dir", str(self.mirror)] if git_dir else []), *args]
        with self._env() as env:
            try:
                result = subprocess.run(argv, env=env, capture_output=True, text=True,
                                        timeout=timeout(), stdin=subprocess.DEVNULL)
            except subprocess.TimeoutExpired:
                raise SourceError(f"git {args[0]} timed out after {timeout():g}s") from None
        if check and result.returncode != 0:
            raise SourceError(f"git {args[0]} failed: {self._reason(result.stderr)}")
        return result

    def _reason(self, stderr: str) -> str:
        """The line of git's complaint that says why, masked."""
        lines = [line.strip() for line in stderr.splitlines() if line.strip()]
        fatal = [line for line in lines if line.startswith(("fatal:", "error:"))]
        chosen = (fatal or lines or ["no reason given"])[0]
        return self._mask(redact_in(chosen))

    def fetch(self, source: GitSource, commit: str | None = None,
              quiet_failure: bool = False) -> None:
        specs = [commit] if commit else ["+refs/heads/*:refs/heads/*",
                                         "+refs/tags/*:refs/tags/*", "+HEAD:refs/ik/HEAD"]
        result = self.run("fetch", "--quiet", "--prune", "--no-tags", "--force", "--",
                          source.url, *specs, check=False)
        if result.returncode != 0 and not commit:
            # an empty repository, or one whose HEAD names nothing: fetch without HEAD
            retry = self.run("fetch", "--quiet", "--prune", "--no-tags", "--force", "--",
                             source.url, *specs[:2], check=False)
            if retry.returncode == 0:
                return
        if result.returncode != 0 and not quiet_failure:
            raise SourceError(f"git source {source.shown_url} cannot be fetched: "
                              f"{self._reason(result.stderr)}")
        if not commit:
            head = self.rev_parse("refs/ik/HEAD")
            if head:
                self.run("update-ref", "--no-deref", "HEAD", head, check=False)

    def rev_parse(self, name: str) -> str | None:
        result = self.run("rev-parse", "--verify", "--quiet", "--end-of-options",
                          f"{name}^{{commit}}", check=False)
        value = result.stdout.strip()
        return value if result.returncode == 0 and _COMMIT.match(value) else None

    def commit_exists(self, commit: str) -> bool:
        return self.run("cat-file", "-e", f"{commit}^{{commit}}", check=False).returncode == 0

    def archive_into(self, commit: str, target: Path) -> None:
        """Export the commit's tree into `target` (no index, no working tree in the mirror)."""
        argv = ["git", "--git-dir", str(self.mirror), "archive", "--format=tar", commit]
        with self._env() as env, subprocess.Popen(argv, env=env, stdout=subprocess.PIPE,
                                                  stderr=subprocess.PIPE) as process:
            assert process.stdout is not None
            with tarfile.open(fileobj=process.stdout, mode="r|") as archive:
                archive.extractall(target, filter="data")
            stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
            if process.wait(timeout=timeout()) != 0:
                raise SourceError(f"git archive failed: {self._reason(stderr)}")


def redact_in(text: str) -> str:
    """Remove `user:password@` from every URL in `text`."""
    return re.sub(r"(\w+://)[^/@\s]+@", r"\1", text)
