"""Where things live, from the environment (SPEC section 7), resolved at call time."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def home() -> Path:
    """Working dirs, local state, saved plans and the default store live here."""
    return Path(os.environ.get("INFRAKITCHEN_HOME", ".infrakitchen")).resolve()


def database_url() -> str:
    url = os.environ.get("INFRAKITCHEN_DATABASE_URL")
    if url:
        return url
    return f"sqlite:///{home() / 'infrakitchen.db'}"


def pipelines_dir() -> Path:
    return Path(os.environ.get("INFRAKITCHEN_PIPELINES", "pipelines"))


def default_tofu_binary() -> str:
    """`INFRAKITCHEN_TOFU`, else `tofu` when installed, else `terraform` (same CLI)."""
    override = os.environ.get("INFRAKITCHEN_TOFU")
    if override:
        return override
    return "tofu" if shutil.which("tofu") else "terraform"


def plans_dir() -> Path:
    """Saved plans awaiting approval (they hold variable values: kept owner-only)."""
    path = home() / "plans"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path
