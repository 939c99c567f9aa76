"""Where things live, from the environment (SPEC section 7), resolved at call time."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path


def home() -> Path:
    """Working dirs, local state, saved plans and the default store live here."""
    return Path(os.environ.get("INFRAKITCHEN_HOME", ".infrakitchen")).resolve()


#: URL schemes whose SQLAlchemy default driver is not installed, and the one that is
_DRIVERS = {"postgresql": "postgresql+psycopg2", "postgres": "postgresql+psycopg2"}


def database_url() -> str:
    """The lifecycle store: INFRAKITCHEN_DATABASE_URL, else SQLite in the home.

    A plain `postgresql://` (or `postgres://`) URL gets the psycopg2 driver this package
    installs; SQLAlchemy's default for it would be psycopg 3.
    """
    url = os.environ.get("INFRAKITCHEN_DATABASE_URL")
    if not url:
        return f"sqlite:///{home() / 'infrakitchen.db'}"
    scheme, sep, rest = url.partition("://")
    return f"{_DRIVERS[scheme]}{sep}{rest}" if sep and scheme in _DRIVERS else url


def working_root() -> Path:
    """Per-resource working directories: INFRAKITCHEN_WORKING_ROOT, else <home>/work.

    Set here rather than only on a `TofuResource`, the CLI and the sensors see the same
    directories as the runs (crash reaping, `ik delete`)."""
    configured = os.environ.get("INFRAKITCHEN_WORKING_ROOT")
    return Path(configured).resolve() if configured else home() / "work"


def max_parallel() -> int:
    """How many tasks run side by side in one run: INFRAKITCHEN_MAX_PARALLEL (default 8)."""
    return max(1, int(os.environ.get("INFRAKITCHEN_MAX_PARALLEL", "8")))


def pipelines_dir() -> Path:
    return Path(os.environ.get("INFRAKITCHEN_PIPELINES", "pipelines"))


def default_tofu_binary() -> str:
    """`INFRAKITCHEN_TOFU`, else `tofu` when installed, else `terraform` (same CLI)."""
    override = os.environ.get("INFRAKITCHEN_TOFU")
    if override:
        return override
    return "tofu" if shutil.which("tofu") else "terraform"


def plans_dir() -> Path:
    """Private copies of saved plans, made just before an apply (they hold variable
    values); the plans themselves live encrypted in the store."""
    return private_dir(home() / "plans")


def private_home() -> Path:
    """The home, owner-only: it holds the key file, the store, state and tfvars."""
    return private_dir(home())


def private_dir(path: Path, *, ours: bool = True) -> Path:
    """`path` and every directory created on the way to it, mode 0700.

    `mkdir(parents=True)` gives the parents default modes, and `mode` is masked by the
    umask, so each missing component is made and chmodded here. An existing `path` is
    made 0700 too when it is one of ours (`ours`: a directory of an older version);
    existing parents are never touched, they may be anyone's.
    """
    missing: list[Path] = []
    current = path
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=0o700)
        except FileExistsError:
            continue
        os.chmod(directory, 0o700)
    if ours and path.is_dir() and (path.stat().st_mode & 0o777) != 0o700 and _owned(path):
        os.chmod(path, 0o700)
    return path


def _owned(path: Path) -> bool:
    return path.stat().st_uid == os.getuid()


def write_private(path: Path, data: str | bytes) -> None:
    """Write `path` atomically, mode 0600 from the first byte (never readable by others,
    not even for a moment, as write-then-chmod would be)."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode() if isinstance(data, str) else data)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
