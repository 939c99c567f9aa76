"""Secrets at rest: real runs with known secret values, then every sink is searched.

Dagster's storage (runs, event logs, compute logs), the lifecycle store's raw bytes, the
InfraKitchen home and the pipeline tree may hold a secret only where tofu itself must have
it (state, tfvars), and those files must be owner-only. Plus: the key file, `ik
rotate-key`, and sealing a store made before encryption.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sqlite3
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography.fernet import Fernet, InvalidToken
from dagster import DagsterInstance

from infrakitchen_dagster import crypto
from infrakitchen_dagster.store import LifecycleStore, _engines
from infrakitchen_dagster.store.lifecycle import Action

from .conftest import FIXTURES, IkEnv, Toolchain, make_ik_env, write_pipeline

STEP_MODULE = FIXTURES / "modules" / "step"
PASSWORD = "pw-Q7x9-at-rest-1"
TOKEN = "tok-K2m4-at-rest-2"
SECRETS = (PASSWORD.encode(), TOKEN.encode())
#: where tofu must have the values: its state and the variables file it reads
ALLOWED = {"terraform.tfstate", "terraform.tfstate.backup", "terraform.tfvars.json"}


@pytest.fixture
def env(tmp_path: Path, toolchain: Toolchain, monkeypatch: pytest.MonkeyPatch) -> IkEnv:
    pipelines = tmp_path / "pipelines"
    pipelines.mkdir()
    made = make_ik_env(tmp_path, toolchain, pipelines)
    made.env.pop(crypto.ENV_VAR, None)
    for key in ("INFRAKITCHEN_HOME", "DAGSTER_HOME", "INFRAKITCHEN_PIPELINES"):
        monkeypatch.setenv(key, made.env[key])
    monkeypatch.delenv("INFRAKITCHEN_DATABASE_URL", raising=False)
    monkeypatch.delenv(crypto.ENV_VAR, raising=False)
    return made


def _pipelines(directory: Path, counts: Path) -> None:
    # `value` is sensitive because the task says so, `secret` because the module does;
    # the `secret` output is registered (a sensitive registered value) and used by a command
    write_pipeline(directory, "vault", f"""
name = "vault"
[tasks.db]
module = "{STEP_MODULE}"
sensitive = ["value"]
register = ["secret"]
variables = {{ name = "db", value = "{{{{.DB_TOKEN}}}}", secret = "{{{{.DB_PASSWORD}}}}", \
count_file = "{counts}/db" }}
[tasks.use]
depends_on = ["db"]
cmd = 'echo "connecting with {{{{.secret}}}}"'
""")
    write_pipeline(directory, "gated", f"""
name = "gated"
approval = true
owners = ["tester", "olive"]
[tasks.net]
module = "{STEP_MODULE}"
variables = {{ name = "net", secret = "{{{{.DB_PASSWORD}}}}", count_file = "{counts}/net" }}
""")


def _files(*roots: Path):
    for root in roots:
        for directory, _dirs, names in os.walk(root):
            for name in names:
                path = Path(directory) / name
                if path.is_file() and not path.is_symlink():
                    yield path


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_secrets_only_where_tofu_needs_them(env: IkEnv, tmp_path: Path) -> None:
    counts = tmp_path / "counts"
    counts.mkdir()
    _pipelines(env.pipelines, counts)
    secret_vars = ("--var", f"DB_PASSWORD={PASSWORD}", "--var", f"DB_TOKEN={TOKEN}")
    printed: list[str] = []

    def ik(*args: str) -> subprocess.CompletedProcess[str]:
        result = env.ik(*args)
        printed.extend([result.stdout, result.stderr])
        return result

    ik("run", "vault", *secret_vars, "--print-output")
    assert (counts / "db").read_text().split() == ["db"]  # tofu really applied
    ik("run", "gated", "--var", f"DB_PASSWORD={PASSWORD}")
    [request] = [r for r in json.loads(ik("approvals", "--json").stdout)
                 if r["pipeline"] == "gated"]
    assert request["status"] == "pending" and request["runtime_vars"] == ["DB_PASSWORD"]
    # pending: the plan is in the store, encrypted; no plan file anywhere at rest
    assert not [p for p in _files(env.home) if p.suffix == ".tfplan"]
    ik("approve", str(request["id"]), "--as", "olive")  # four eyes
    ik("run", "gated", "--var", f"DB_PASSWORD={PASSWORD}")
    assert (counts / "net").read_text().split() == ["net"]
    for pipeline, task in (("vault", "db"), ("gated", "net")):
        record = env.inspect(pipeline, task)
        assert record["state"] == "provisioned", record
        assert record["outputs"]["secret"] == "(sensitive)"
        printed.append(json.dumps(record))
    printed.append(ik("approvals", "--json").stdout)
    printed.append(ik("audit", "--json").stdout)

    # the store still gives the plain values back (decrypted on read)
    store = LifecycleStore()
    db = store.get("vault", "db", "default")
    assert db is not None and db.variables["secret"] == PASSWORD
    assert db.variables["value"] == TOKEN and db.outputs["value"] == TOKEN
    assert store.registered("vault", "default")["secret"] == (PASSWORD, True)

    # run config names the vars by reference, never by value
    runs = DagsterInstance.get().get_runs()
    assert runs
    for run in runs:
        config = run.run_config.get("resources", {}).get("infrakitchen", {}).get("config", {})
        assert not config.get("vars"), config
        assert "vars_ref" in config, config
        assert not any(s.decode() in json.dumps(run.tags) for s in SECRETS)

    # every sink: Dagster storage, the store (raw bytes), the home, the pipeline tree
    found: list[Path] = []
    for path in _files(env.dagster_home, env.home, env.pipelines, STEP_MODULE):
        data = path.read_bytes()
        if any(secret in data for secret in SECRETS):
            found.append(path)
    leaks = [p for p in found if p.name not in ALLOWED]
    assert not leaks, f"secrets found in {leaks}"
    assert {p.name for p in found} >= {"terraform.tfstate", "terraform.tfvars.json"}
    assert (env.home / "infrakitchen.db").stat().st_size > 0  # the store was searched
    for path in found:
        assert _mode(path) == 0o600, (path, oct(_mode(path)))
        for directory in [path.parent, *path.parent.parents]:
            assert _mode(directory) == 0o700, (directory, oct(_mode(directory)))
            if directory == env.home:
                break
    # the store, its key and the working directories are owner-only too
    for path in (env.home / "infrakitchen.db", env.home / crypto.KEY_FILE):
        assert _mode(path) == 0o600, path
    for directory in (env.home, env.home / "work", env.home / "plans"):
        assert _mode(directory) == 0o700, directory
    assert not [p for p in _files(env.home) if p.suffix == ".tfplan"]  # copies removed

    # nothing `ik` printed holds a secret either
    text = "\n".join(printed)
    assert PASSWORD not in text and TOKEN not in text



def _make_key(home: str, queue) -> None:
    os.environ["INFRAKITCHEN_HOME"] = home
    os.environ.pop(crypto.ENV_VAR, None)
    queue.put(crypto.box().keys)


def test_key_file_created_once_private_under_a_race(tmp_path: Path) -> None:
    home = tmp_path / "home"
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    workers = [context.Process(target=_make_key, args=(str(home), queue)) for _ in range(6)]
    for worker in workers:
        worker.start()
    keys = [queue.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
    assert all(k == keys[0] for k in keys) and len(keys[0]) == 1
    key_file = home / crypto.KEY_FILE
    assert key_file.read_text().split() == keys[0]
    assert _mode(key_file) == 0o600 and _mode(home) == 0o700
    assert sorted(p.name for p in home.iterdir()) == [crypto.KEY_FILE]  # no temp left


def _raw_secret(db: Path) -> str:
    with sqlite3.connect(db) as conn:
        [(variables,)] = conn.execute("SELECT variables FROM ik_resources").fetchall()
    return json.loads(variables)["pw"][crypto.MARK]


def _seeded_store(home: Path) -> LifecycleStore:
    store = LifecycleStore(f"sqlite:///{home / 'infrakitchen.db'}")
    record = store.create("p", "t", "default", kind="resource", module="m", parents=[],
                          actor="me")
    record = store.transition(record, Action.PROVISION_START, actor="me")
    store.transition(record, Action.PROVISION_SUCCESS, actor="me",
                     variables={"pw": PASSWORD, "plain": "x"}, outputs={},
                     sensitive_variables=["pw"], sensitive_outputs=[])
    store.register("p", "default", {"reg": TOKEN}, task="t", sensitive={"reg"}, run_id=None)
    return store


def test_rotate_key_with_the_key_file(env: IkEnv) -> None:
    store = _seeded_store(env.home)
    key_file = env.home / crypto.KEY_FILE
    [old] = key_file.read_text().split()
    Fernet(old.encode()).decrypt(_raw_secret(env.home / "infrakitchen.db").encode())

    out = env.ik("rotate-key").stdout
    assert "re-encrypted" in out and "1 records" in out and "1 registered" in out
    [new] = key_file.read_text().split()
    assert new != old and _mode(key_file) == 0o600
    token = _raw_secret(env.home / "infrakitchen.db").encode()
    with pytest.raises(InvalidToken):
        Fernet(old.encode()).decrypt(token)
    assert json.loads(Fernet(new.encode()).decrypt(token)) == PASSWORD
    record = store.get("p", "t", "default")
    assert record is not None and record.variables == {"pw": PASSWORD, "plain": "x"}
    assert store.registered("p", "default") == {"reg": (TOKEN, True)}
    assert any(e["action"] == "secret_key_rotated" for e in store.audit_entries())


def test_rotate_key_with_the_environment(env: IkEnv) -> None:
    store = _seeded_store(env.home)
    [old] = (env.home / crypto.KEY_FILE).read_text().split()
    new = env.ik("rotate-key", "--print-new-key").stdout.strip()
    env.env[crypto.ENV_VAR] = f"{new},{old}"
    out = env.ik("rotate-key").stdout
    assert "drop the other 1 key" in out
    token = _raw_secret(env.home / "infrakitchen.db").encode()
    assert json.loads(Fernet(new.encode()).decrypt(token)) == PASSWORD
    # the old key is no longer needed: the new one alone reads everything
    os.environ[crypto.ENV_VAR] = new
    try:
        record = store.get("p", "t", "default")
        assert record is not None and record.variables["pw"] == PASSWORD
    finally:
        del os.environ[crypto.ENV_VAR]
    # and a wrong key fails with one clear line, not a traceback
    env.env[crypto.ENV_VAR] = Fernet.generate_key().decode()
    failed = env.ik("inspect", "p/t", "--json", check=False)
    assert failed.returncode != 0 and "cannot be decrypted" in failed.stderr
    assert PASSWORD not in failed.stdout + failed.stderr


def test_a_store_from_before_encryption_is_sealed_on_upgrade(env: IkEnv) -> None:
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import create_engine

    from infrakitchen_dagster.store import _MIGRATIONS

    db = env.home / "old.db"
    env.home.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{db}"
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    engine = create_engine(url)
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0003")
        conn.exec_driver_sql(
            "INSERT INTO ik_resources (id, pipeline, task, environment, kind, state, status, "
            "revision, variables, outputs, sensitive_variables, sensitive_outputs, parents, "
            "created_at, updated_at) VALUES ('r1', 'p', 't', 'default', 'resource', "
            "'provisioned', 'done', 1, ?, '{}', '[\"pw\"]', '[]', '[]', "
            "'2024-01-01 00:00:00', '2024-01-01 00:00:00')",
            (json.dumps({"pw": PASSWORD, "plain": "x"}),))
    engine.dispose()
    assert PASSWORD.encode() in db.read_bytes()

    store = LifecycleStore(url)  # migrates to head, sealing on the way
    try:
        record = store.get("p", "t", "default")
        assert record is not None and record.variables == {"pw": PASSWORD, "plain": "x"}
        with sqlite3.connect(db) as conn:  # drop freed pages still holding the plain text
            conn.execute("VACUUM")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        assert all(PASSWORD.encode() not in p.read_bytes()
                   for p in env.home.iterdir() if p.name.startswith("old.db"))
    finally:
        _engines.pop(url).dispose()
