"""Modules from git at a source code version: `module = "git::URL//subdir?ref=REF"`.

Real repositories built with `git` in a temp dir (tags v1 and v2 of the null_resource test
module), reached through `file://` or a real HTTP server running `git http-backend`
behind a token check; real applies through `ik run`.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance

from .conftest import FIXTURES, IkEnv, ik_in_process, write_pipeline

GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.test",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.test",
           "GIT_CONFIG_NOSYSTEM": "1", "HOME": "/nonexistent"}


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, **GIT_ENV}
    return subprocess.run(["git", "-C", str(repo), *args], env=env, check=True,
                          capture_output=True, text=True).stdout.strip()


@pytest.fixture
def module_repo(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A repository holding the step module under modules/step: tag v1, then tag v2 with
    one more output. Returns (repo, {tag: commit})."""
    repo = tmp_path / "modules-repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    shutil.copytree(FIXTURES / "modules" / "step", repo / "modules" / "step")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "v1")
    git(repo, "tag", "v1")
    (repo / "modules" / "step" / "version.tf").write_text(
        'output "version" { value = "v2" }\n')
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "v2")
    git(repo, "tag", "v2")
    return repo, {tag: git(repo, "rev-parse", f"{tag}^{{commit}}") for tag in ("v1", "v2")}


def _pipeline(env: IkEnv, name: str, module: str, extra: str = "") -> None:
    write_pipeline(env.pipelines, name, f"""
name = "{name}"
{extra}
[tasks.net]
module = "{module}"
variables = {{ name = "net" }}
labels = {{ team = "core" }}
""")


def _audit(env: IkEnv, target: str) -> list[dict]:
    return json.loads(ik_in_process("audit", target, "--json").stdout)


def test_a_tag_is_applied_recorded_and_moving_it_is_an_update(
        store_env: IkEnv, module_repo: tuple[Path, dict[str, str]]) -> None:
    repo, commits = module_repo
    source = f"git::file://{repo}//modules/step?ref=v1"
    _pipeline(store_env, "gitmod", source)
    ik_in_process("run", "gitmod")
    record = store_env.inspect("gitmod", "net")
    assert record["state"] == "provisioned" and record["revision"] == 1
    assert record["source"] == {"module": source, "ref": "v1", "commit": commits["v1"]}
    assert "version" not in record["outputs"]
    applied = [e for e in _audit(store_env, "gitmod/net") if e["action"] == "provision_success"]
    assert applied[-1]["details"]["source"]["commit"] == commits["v1"]
    event = DagsterInstance.get().get_latest_materialization_event(AssetKey(["gitmod", "net"]))
    assert event is not None and event.asset_materialization is not None
    metadata = {k: v.value for k, v in event.asset_materialization.metadata.items()}
    assert (metadata["source_ref"], metadata["source_commit"]) == ("v1", commits["v1"])

    listed = json.loads(ik_in_process("sources", "gitmod", "--json").stdout)
    assert [(r["task"], r["ref"], r["commit"]) for r in listed] == [("net", "v1", commits["v1"])]
    assert commits["v1"] in ik_in_process("sources", "gitmod").stdout

    ik_in_process("run", "gitmod")  # same commit: nothing to do
    assert store_env.inspect("gitmod", "net")["revision"] == 1

    _pipeline(store_env, "gitmod", source.replace("ref=v1", "ref=v2"))
    store_env.ik("run", "gitmod")  # a new process reads the edited file (as a user's would)
    record = store_env.inspect("gitmod", "net")
    assert record["revision"] == 2
    assert record["source"]["commit"] == commits["v2"] and record["source"]["ref"] == "v2"
    assert record["outputs"]["version"] == "v2"  # the v2 module really ran
    updated = [e for e in _audit(store_env, "gitmod/net") if e["action"] == "update_success"]
    assert updated[-1]["details"]["source"]["commit"] == commits["v2"]

    ik_in_process("destroy", "gitmod", "--task", "net")
    assert store_env.inspect("gitmod", "net")["state"] == "destroyed"


def test_a_branch_moves_and_a_commit_pins(store_env: IkEnv,
                                          module_repo: tuple[Path, dict[str, str]]) -> None:
    repo, commits = module_repo
    _pipeline(store_env, "pinned", f"git::file://{repo}//modules/step?ref={commits['v1']}")
    ik_in_process("run", "pinned")
    assert store_env.inspect("pinned", "net")["source"]["commit"] == commits["v1"]

    _pipeline(store_env, "branch", f"git::file://{repo}//modules/step?ref=main")
    ik_in_process("run", "branch")
    assert store_env.inspect("branch", "net")["source"]["commit"] == commits["v2"]
    (repo / "modules" / "step" / "more.tf").write_text('output "more" { value = "yes" }\n')
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "v3")
    ik_in_process("run", "branch")  # the branch moved: a new commit, an update
    record = store_env.inspect("branch", "net")
    assert record["source"]["commit"] == git(repo, "rev-parse", "main")
    assert record["revision"] == 2 and record["outputs"]["more"] == "yes"


@pytest.mark.parametrize("case", ["ref", "url", "subdir"])
def test_a_bad_source_fails_before_any_tofu_with_one_line_naming_it(
        store_env: IkEnv, module_repo: tuple[Path, dict[str, str]], case: str) -> None:
    repo, _commits = module_repo
    module, expected = {
        "ref": (f"git::file://{repo}//modules/step?ref=v9",
                f"git source file://{repo} has no ref 'v9' (no such tag, branch or commit)"),
        "url": (f"git::file://{repo}-gone//modules/step?ref=v1",
                f"git source file://{repo}-gone cannot be fetched: fatal: "),
        "subdir": (f"git::file://{repo}//modules/nope?ref=v1",
                   "has no directory 'modules/nope'"),
    }[case]
    _pipeline(store_env, "bad", module)
    result = ik_in_process("run", "bad", check=False)
    assert result.returncode == 1
    lines = [line for line in (result.stdout + result.stderr).splitlines() if expected in line]
    assert lines, result.stderr[-3000:]
    assert not (store_env.home / "work" / "bad").exists()  # no working dir: tofu never ran
    refused = [e for e in _audit(store_env, "bad/net") if e["action"] == "provision_refused"]
    assert expected in refused[-1]["details"]["error"]


def test_validate_checks_the_source_string_without_the_network(tmp_path: Path) -> None:
    good = tmp_path / "ok.toml"  # an unreachable host: validation never goes there
    good.write_text('name = "ok"\n[tasks.a]\n'
                    'module = "git::https://git.invalid/org/mods.git//net?ref=v1"\n')
    assert ik_in_process("validate", str(good)).returncode == 0
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\n[tasks.a]\nmodule = "https://git.invalid/mods.zip"\n'
                   '[tasks.b]\nmodule = "git::https://git.invalid/m.git//net?ref=-x"\n'
                   '[tasks.c]\nmodule = "git::https://git.invalid/m.git//../up?ref=v1"\n')
    result = ik_in_process("validate", str(bad), check=False)
    assert result.returncode == 1
    assert "task 'a': module 'https://git.invalid/mods.zip': remote modules are git " \
           "sources" in result.stderr
    assert "ref '-x' is not a valid tag, branch or commit name" in result.stderr
    assert "subdirectory '../up' must stay inside the repository" in result.stderr

    # a token written into the URL is refused, and not repeated in the refusal
    leaky = tmp_path / "leaky.toml"
    leaky.write_text('name = "leaky"\n[tasks.a]\n'
                     'module = "git::https://bob:tok-9f8e7d@git.invalid/m.git//net?ref=v1"\n')
    refused = ik_in_process("validate", str(leaky), check=False)
    assert refused.returncode == 1
    assert "give it through an integration instead" in refused.stderr
    assert "tok-9f8e7d" not in refused.stderr + refused.stdout


def test_concurrent_runs_share_one_cache(ik_env: IkEnv,
                                         module_repo: tuple[Path, dict[str, str]]) -> None:
    repo, commits = module_repo
    for name in ("left", "right"):
        _pipeline(ik_env, name, f"git::file://{repo}//modules/step?ref=v2")
    env = {**ik_env.env, "INFRAKITCHEN_EXECUTOR": "in_process"}
    ik = str(Path(sys.executable).parent / "ik")
    runs = [subprocess.Popen([ik, "run", name], env=env, cwd=ik_env.root, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for name in ("left", "right")]
    for run in runs:
        _out, err = run.communicate(timeout=300)
        assert run.returncode == 0, err[-3000:]
    for name in ("left", "right"):
        assert ik_env.inspect(name, "net")["source"]["commit"] == commits["v2"]
    checkouts = list((ik_env.home / "sources" / "checkouts").iterdir())
    assert len(checkouts) == 1  # one repository ...
    assert [p.name for p in checkouts[0].iterdir()] == [commits["v2"]]  # ... one export


# -- a private repository over HTTP ---------------------------------------------------------


class _GitHttp(BaseHTTPRequestHandler):
    """Smart HTTP through `git http-backend` (CGI), for clients sending the right token."""

    root: Path
    token: str
    seen_auth: list[str]

    def log_message(self, *args: object) -> None:  # quiet
        return None

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _serve(self) -> None:
        expected = "Basic " + base64.b64encode(f"x-access-token:{self.token}".encode()).decode()
        auth = self.headers.get("Authorization")
        if auth:
            self.seen_auth.append(auth)
        if auth != expected:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        path, _, query = self.path.partition("?")
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        env = {"GIT_PROJECT_ROOT": str(self.root), "GIT_HTTP_EXPORT_ALL": "1",
               "PATH_INFO": path, "QUERY_STRING": query, "REQUEST_METHOD": self.command,
               "CONTENT_TYPE": self.headers.get("Content-Type", ""),
               "CONTENT_LENGTH": str(len(body)), "REMOTE_USER": "x-access-token",
               "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
               "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
               "PATH": os.environ["PATH"]}
        out = subprocess.run(["git", "http-backend"], input=body, env=env,
                             capture_output=True, check=True).stdout
        head, _, payload = out.partition(b"\r\n\r\n")
        status, headers = 200, []
        for line in head.decode().split("\r\n"):
            key, _, value = line.partition(": ")
            if key.lower() == "status":
                status = int(value.split()[0])
            else:
                headers.append((key, value))
        self.send_response(status)
        for key, value in headers:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


@pytest.fixture
def private_repo(tmp_path: Path, module_repo: tuple[Path, dict[str, str]]
                 ) -> Iterator[tuple[str, str, list[str]]]:
    """(URL, token, Authorization headers seen) of the module repository served over
    HTTP on 127.0.0.1, readable only with the token."""
    repo, _commits = module_repo
    served = tmp_path / "served"
    served.mkdir()
    subprocess.run(["git", "clone", "-q", "--bare", str(repo), str(served / "mods.git")],
                   check=True, env={**os.environ, **GIT_ENV})
    token = "tok-" + os.urandom(12).hex()
    seen: list[str] = []
    handler = type("Handler", (_GitHttp,), {"root": served, "token": token, "seen_auth": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/mods.git", token, seen
    finally:
        server.shutdown()
        server.server_close()


def test_a_token_from_an_integration_reaches_git_and_nothing_else(
        ik_env: IkEnv, private_repo: tuple[str, str, list[str]]) -> None:
    url, token, seen = private_repo
    integration = ('[integrations.git]\nenv = { GIT_TOKEN = { from_env = "MODS_TOKEN" } }\n')
    write_pipeline(ik_env.pipelines, "private", f"""
name = "private"
{integration}
[tasks.net]
module = "git::{url}//modules/step?ref=v2"
integrations = ["git"]
variables = {{ name = "net" }}
""")
    env = {**ik_env.env, "INFRAKITCHEN_EXECUTOR": "in_process"}
    ik_env.env = env
    without = ik_env.ik("run", "private", check=False)
    assert without.returncode == 1  # MODS_TOKEN unset: the integration says so
    assert "MODS_TOKEN" in without.stdout + without.stderr

    ik_env.env = {**env, "MODS_TOKEN": token[:-1] + "x"}
    wrong = ik_env.ik("run", "private", "--print-output", check=False)
    assert wrong.returncode == 1
    assert f"git source {url} cannot be fetched" in wrong.stdout + wrong.stderr

    ik_env.env = {**env, "MODS_TOKEN": token}
    run = ik_env.ik("run", "private", "--print-output")
    record = ik_env.inspect("private", "net")
    assert record["state"] == "provisioned" and record["outputs"]["version"] == "v2"
    assert seen  # git did authenticate with the token

    shown = [run.stdout, run.stderr, wrong.stdout, wrong.stderr, json.dumps(record),
             ik_env.ik("audit", "--json").stdout, ik_env.ik("sources", "private").stdout]
    assert not [text for text in shown if token in text]
    stored = [p for root in (ik_env.home, ik_env.dagster_home) for p in root.rglob("*")
              if p.is_file() and not p.is_symlink()]
    assert stored
    assert not [p for p in stored if token.encode() in p.read_bytes()]
