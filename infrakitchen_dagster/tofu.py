"""`TofuResource`: runs the OpenTofu / Terraform CLI for one resource's working directory.

Each (pipeline, task, environment) gets a working directory under the InfraKitchen home
that outlives runs: the module is synced into it, `.terraform/` stays, so `init` is cheap
or skipped. Variables reach tofu only through `terraform.tfvars.json`; the backend through
an override file plus `-backend-config` arguments; nothing goes through a shell.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import threading
import zipfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from . import settings
from .graph import is_ignored_module_file
from .interpolation import mask
from .module_schema import module_schema
from .process import ProcessResult, ProcessTimeout, run_streaming

_PLAN_LINE = re.compile(r"Plan: (\d+) to add, (\d+) to change, (\d+) to destroy")
_NO_CHANGES = re.compile(r"No changes\.")


#: tofu runs with this umask: state, plans, lock files and `.terraform/` are owner-only
PRIVATE_UMASK = 0o077


class TofuError(Exception):
    """A tofu command failed; the message carries the command and the tail of its output."""

    def __init__(self, command: str, result: ProcessResult):
        self.result = result
        super().__init__(
            f"`{command}` failed with exit code {result.returncode}:\n{result.tail(15)}"
        )


@dataclass(frozen=True)
class PlanSummary:
    add: int = 0
    change: int = 0
    destroy: int = 0

    @property
    def has_changes(self) -> bool:
        return bool(self.add or self.change or self.destroy)

    def as_dict(self) -> dict[str, int]:
        return {"add": self.add, "change": self.change, "destroy": self.destroy}

    @classmethod
    def parse(cls, output: str) -> PlanSummary:
        match = _PLAN_LINE.search(output)
        if match:
            return cls(*(int(g) for g in match.groups()))
        return cls()


@dataclass(frozen=True)
class BackendSettings:
    type: str = "local"
    config: tuple[tuple[str, str], ...] = ()

    def override_file(self) -> str:
        return f'terraform {{\n  backend "{self.type}" {{}}\n}}\n'

    def args(self) -> list[str]:
        return [f"-backend-config={k}={v}" for k, v in self.config]


def module_sensitive_variables(directory: Path) -> set[str]:
    """Variables a module declares `sensitive = true` (from its parsed schema)."""
    return module_schema(directory).sensitive_variables


def module_required_variables(directory: Path) -> set[str]:
    """Variables without a `default`: tofu would stop and ask for them."""
    return module_schema(directory).required_variables


_versions: dict[str, str] = {}
_versions_lock = threading.Lock()


def tofu_version(binary: str) -> str:
    """The binary's version (part of every fingerprint), asked once per binary file.

    Kept in memory for the process (one lock: a fan-out's threads ask at the same moment)
    and in `<home>/.tofu-versions.json` keyed by the file's path, size and mtime, so a run
    does not start a tofu process just to learn what it learnt last time.
    """
    with _versions_lock:
        if binary not in _versions:
            _versions[binary] = _remembered_version(binary)
        return _versions[binary]


def _remembered_version(binary: str) -> str:
    path = os.path.realpath(shutil.which(binary) or binary)
    try:
        stat = os.stat(path)
    except OSError:
        return "unknown"
    key = f"{path}:{stat.st_size}:{stat.st_mtime_ns}"
    memo = settings.home() / ".tofu-versions.json"
    try:
        known = json.loads(memo.read_text())
    except (OSError, ValueError):
        known = {}
    if isinstance(known, dict) and isinstance(known.get(key), str):
        return known[key]
    try:
        out = subprocess.run([path, "version", "-json"], capture_output=True, text=True,
                             timeout=60, check=False).stdout
        data = json.loads(out)
        version = str(data.get("terraform_version") or data.get("version") or "unknown")
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return "unknown"
    try:
        settings.private_dir(memo.parent)
        settings.write_private(memo, json.dumps({key: version}))
    except OSError:
        pass  # a read-only home only costs the next run one `version` call
    return version


class TofuSettings(BaseModel):
    """How to run `tofu` (or `terraform`) for resource tasks, without Dagster.

    The runtime, the CLI and the sensors work with this; `TofuResource` is the same
    settings as a Dagster resource. Configure a provider mirror through `cli_config_file`
    for air-gapped use; every working directory shares `plugin_cache_dir`, so each
    provider is unpacked once per machine.
    """

    binary: str | None = Field(
        default=None,
        description="CLI to run; default: INFRAKITCHEN_TOFU, else tofu, else terraform")
    working_root: str | None = Field(
        default=None, description="Root of per-resource working dirs; default: "
                                  "INFRAKITCHEN_WORKING_ROOT, else <home>/work")
    plugin_cache_dir: str | None = Field(
        default=None, description="Shared provider plugin cache; default: <home>/plugin-cache")
    cli_config_file: str | None = Field(
        default=None, description="CLI config (provider mirrors); default: TF_CLI_CONFIG_FILE")
    extra_env: dict[str, str] = Field(default_factory=dict,
                                      description="Extra environment for every tofu call")
    lock_timeout: str = Field(
        default="120s",
        description="How long plan/apply/destroy wait for a state lock held by another run "
                    "(or by one that is still stopping)")
    timeout_grace_seconds: float = Field(
        default=10.0, description="Time between SIGINT and SIGKILL when a timeout hits")

    # -- paths and environment --------------------------------------------------------

    def resolved_binary(self) -> str:
        return self.binary or settings.default_tofu_binary()

    def version(self) -> str:
        return tofu_version(self.resolved_binary())

    def working_dir(self, pipeline: str, environment: str, task: str) -> Path:
        root = Path(self.working_root) if self.working_root else settings.working_root()
        safe_task = re.sub(r"[^A-Za-z0-9_.=,-]", "_", task)
        return root / pipeline / environment / safe_task

    def cache_dir(self) -> Path:
        path = (Path(self.plugin_cache_dir) if self.plugin_cache_dir
                else settings.home() / "plugin-cache")
        path.mkdir(parents=True, exist_ok=True)
        return path

    def base_env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            TF_IN_AUTOMATION="1", TF_INPUT="0", CHECKPOINT_DISABLE="1",
            TF_PLUGIN_CACHE_DIR=str(self.cache_dir()),
        )
        if self.cli_config_file:
            env["TF_CLI_CONFIG_FILE"] = self.cli_config_file
        env.update(self.extra_env)
        env.update(extra or {})
        return env

    def workspace(
        self, *, pipeline: str, environment: str, task: str, module_dir: Path,
        backend: BackendSettings, env: dict[str, str] | None = None,
        on_line: Callable[[str], None] = print, secrets: Iterable[str] = (),
        timeout: float | None = None,
    ) -> TofuWorkspace:
        return TofuWorkspace(
            resource=self, path=self.working_dir(pipeline, environment, task),
            module_dir=module_dir, backend=backend, env=self.base_env(env), on_line=on_line,
            secrets=list(secrets), timeout=timeout,
        )


@dataclass
class TofuWorkspace:
    """One resource's working directory and the CLI calls made in it."""

    resource: TofuSettings
    path: Path
    module_dir: Path
    backend: BackendSettings
    env: dict[str, str]
    on_line: Callable[[str], None]
    secrets: list[str]
    timeout: float | None = None

    PLAN_FILE = "infrakitchen.tfplan"
    APPROVED_PLAN = "infrakitchen-approved.tfplan"
    VARS_FILE = "terraform.tfvars.json"
    BACKEND_FILE = "infrakitchen_backend_override.tf"
    MANIFEST = ".infrakitchen-module-files"
    INIT_MARK = ".infrakitchen-init"

    @property
    def exists(self) -> bool:
        return (self.path / ".terraform").is_dir()

    def run(self, *args: str, check: bool = True) -> ProcessResult:
        argv = [self.resource.resolved_binary(), *args]
        # backend-config values may hold credentials: show only their keys
        shown = [a.split("=", 2)[0] + "=" + a.split("=", 2)[1] + "=…"
                 if a.startswith("-backend-config=") else a for a in args]
        self.on_line("$ " + " ".join([os.path.basename(argv[0]), *shown]))
        result = run_streaming(
            argv, cwd=self.path, env=self.env, on_line=self.on_line, secrets=self.secrets,
            timeout=self.timeout, grace=self.resource.timeout_grace_seconds,
            umask=PRIVATE_UMASK,
        )
        if check and result.returncode != 0:
            raise TofuError(" ".join([os.path.basename(argv[0]), args[0]]), result)
        return result

    # -- preparing the directory ------------------------------------------------------

    def prepare(self, variables: dict[str, Any]) -> None:
        """Sync the module, write tfvars and the backend override.

        The directory is 0700 and the tfvars 0600 from their first byte: they hold the
        variables, secrets included, as tofu must have them.
        """
        self.prepare_for_init()
        settings.write_private(self.path / self.VARS_FILE,
                               json.dumps(variables, indent=2, sort_keys=True))

    def prepare_for_init(self) -> None:
        """What `init` reads (module files and the backend), before the variables are
        known: for initialising a directory ahead of its turn."""
        settings.private_dir(self.path)
        self._sync_module()
        (self.path / self.BACKEND_FILE).write_text(self.backend.override_file())

    def _sync_module(self) -> None:
        manifest = self.path / self.MANIFEST
        previous = set(manifest.read_text().split("\n")) if manifest.exists() else set()
        current: set[str] = set()
        for file in sorted(self.module_dir.rglob("*")):
            rel = file.relative_to(self.module_dir)
            if not file.is_file() or is_ignored_module_file(rel):
                continue
            current.add(str(rel))
            target = self.path / rel
            data = file.read_bytes()
            if not target.exists() or target.read_bytes() != data:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
        for stale in previous - current - {""}:
            (self.path / stale).unlink(missing_ok=True)
        manifest.write_text("\n".join(sorted(current)))

    def _digest(self, *, with_backend: bool) -> str:
        digest = hashlib.sha256(self.resource.resolved_binary().encode())
        for file in sorted(self.path.glob("*.tf")):
            if with_backend or file.name != self.BACKEND_FILE:
                digest.update(file.name.encode() + file.read_bytes())
        lock_file = self.path / ".terraform.lock.hcl"
        if lock_file.is_file():
            digest.update(lock_file.read_bytes())
        if with_backend:
            digest.update(repr(self.backend).encode())
        return digest.hexdigest()

    def init(self) -> bool:
        """`init`, skipped when module, backend and binary are unchanged since the last one.

        Terraform's plugin cache is not safe for concurrent installs, so the first init of
        a module (per binary and provider requirements) runs alone; once it filled the
        cache, inits of the same module only link from it and run side by side, as a
        fan-out needs.
        """
        key = self._digest(with_backend=True)
        mark = self.path / self.INIT_MARK
        if mark.exists() and mark.read_text() == key and self.exists:
            return False
        cache = self.resource.cache_dir()
        warm = cache / f".infrakitchen-warm-{self._digest(with_backend=False)[:32]}"
        with open(cache / ".infrakitchen-init.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if warm.exists():
                fcntl.flock(lock, fcntl.LOCK_UN)  # the cache has what this module needs
            self.run("init", "-input=false", "-no-color", *self.backend.args())
            warm.touch()
        # digested again: the first init writes the provider lock file the key includes
        mark.write_text(self._digest(with_backend=True))
        return True

    # -- the operations ---------------------------------------------------------------

    @property
    def _lock_timeout(self) -> str:
        return f"-lock-timeout={self.resource.lock_timeout}"

    @contextmanager
    def locked(self, waiting: Callable[[str], None] | None = None) -> Iterator[None]:
        """Hold this resource's working directory: one run at a time prepares, plans and
        applies in it (a plan job or drift check must not rewrite the tfvars or the plan
        file between another run's plan and apply)."""
        settings.private_dir(self.path.parent)
        with open(self.path.parent / f".{self.path.name}.lock", "w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if waiting:
                    waiting("another run is working on this resource; waiting for it")
                fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    def plan(self, destroy: bool = False) -> tuple[PlanSummary, Path]:
        args = ["plan", "-input=false", "-no-color", self._lock_timeout,
                f"-out={self.PLAN_FILE}"]
        if destroy:
            args.append("-destroy")
        result = self.run(*args)
        plan_file = self.path / self.PLAN_FILE
        os.chmod(plan_file, 0o600)  # it holds variable values, secrets included
        return PlanSummary.parse(result.output), plan_file

    def show_json(self, plan_file: Path) -> dict[str, Any]:
        """`show -json PLANFILE`: the plan as a document (what policies read).

        Asked only by a caller that reads it (one more tofu process), and never logged: it
        holds every variable value, secrets included.
        """
        binary = self.resource.resolved_binary()
        self.on_line(f"$ {os.path.basename(binary)} show -json {plan_file.name}")
        return self._read_json("show", "-json", str(plan_file))

    def _read_json(self, *args: str) -> dict[str, Any]:
        """A tofu command whose JSON output holds real values (secrets included): read
        whole, never streamed to the log; only its error lines are shown, masked."""
        argv = [self.resource.resolved_binary(), *args]
        try:
            done = subprocess.run(argv, cwd=self.path, env=self.env, capture_output=True,
                                  text=True, timeout=self.timeout, check=False,
                                  umask=PRIVATE_UMASK)
        except subprocess.TimeoutExpired:
            raise ProcessTimeout(args[0], self.timeout or 0, 0) from None
        if done.returncode != 0:
            lines = [mask(line, self.secrets) for line in done.stderr.splitlines()]
            raise TofuError(f"{args[0]} -json", ProcessResult(done.returncode, lines))
        return json.loads(done.stdout or "{}")

    def detailed_plan(self) -> tuple[int, PlanSummary, ProcessResult]:
        """`plan -detailed-exitcode`: 0 no changes, 2 changes (drift checks)."""
        result = self.run("plan", "-input=false", "-no-color", self._lock_timeout,
                          "-detailed-exitcode", check=False)
        if result.returncode not in (0, 2):
            raise TofuError("plan", result)
        return result.returncode, PlanSummary.parse(result.output), result

    def apply(self, plan_file: Path) -> ProcessResult:
        return self.run("apply", "-input=false", "-no-color", self._lock_timeout,
                        str(plan_file.name))

    def apply_now(self) -> tuple[PlanSummary, ProcessResult]:
        """Plan and apply in one process (`apply -auto-approve`), as a plain script does.

        For resources whose plan nobody reviews: a saved plan costs a second tofu process
        (and a plan file holding the variables) for nothing. The plan summary is read from
        the same output.
        """
        result = self.run("apply", "-input=false", "-no-color", self._lock_timeout,
                          "-auto-approve")
        return PlanSummary.parse(result.output), result

    def _local_state(self) -> dict[str, Any] | None:
        """The state of a `local` backend, read from its file (no tofu process); None for
        other backends, which only tofu can read."""
        if self.backend.type != "local":
            return None
        path = self.path / dict(self.backend.config).get("path", "terraform.tfstate")
        try:
            return json.loads(path.read_text()) if path.is_file() else {}
        except (OSError, ValueError):
            return None  # half-written or unreadable: ask tofu

    def local_state_identity(self) -> tuple[int, str] | None:
        """(serial, lineage) of a local backend's state, read from its file; None for other
        backends (only a tofu process could tell)."""
        state = self._local_state()
        if state is None:
            return None
        return int(state.get("serial", 0)), str(state.get("lineage", ""))

    def applied(self) -> tuple[dict[str, dict[str, Any]], tuple[int, str] | None]:
        """(outputs, state identity) after an apply, from one read of a local backend's
        state file (no process); elsewhere `output -json` and no identity (telling it would
        cost another process). Never logged: outputs hold the real secret values."""
        state = self._local_state()
        if state is None:
            return self.outputs(), None
        outputs = {name: {"value": data.get("value"), "type": data.get("type"),
                          "sensitive": bool(data.get("sensitive", False))}
                   for name, data in (state.get("outputs") or {}).items()}
        return outputs, (int(state.get("serial", 0)), str(state.get("lineage", "")))

    def outputs(self) -> dict[str, dict[str, Any]]:
        """`output -json`, read once and never logged (it holds the real secret values)."""
        return self._read_json("output", "-json", "-no-color")

    def apply_saved(self, saved_plan: Path) -> ProcessResult:
        """Apply an approved plan file exactly as it was saved, from a private copy in the
        workdir that is removed afterwards (it holds variable values)."""
        target = self.path / self.APPROVED_PLAN
        settings.write_private(target, saved_plan.read_bytes())
        try:
            return self.apply(target)
        finally:
            target.unlink(missing_ok=True)

    def state_identity(self) -> tuple[int, str]:
        """(serial, lineage) of the current state, read without logging it (it holds
        output values)."""
        local = self.local_state_identity()
        if local is not None:
            return local
        argv = [self.resource.resolved_binary(), "state", "pull"]
        done = subprocess.run(argv, cwd=self.path, env=self.env, capture_output=True,
                              text=True, timeout=self.timeout, check=False,
                              umask=PRIVATE_UMASK)
        if done.returncode != 0:
            lines = [mask(line, self.secrets) for line in done.stderr.splitlines()]
            raise TofuError("state pull", ProcessResult(done.returncode, lines))
        if not done.stdout.strip():
            return 0, ""
        state = json.loads(done.stdout)
        return int(state.get("serial", 0)), str(state.get("lineage", ""))

    def plan_is_stale(self, plan_file: Path) -> bool:
        """Whether the state moved since `plan_file` was made.

        The plan embeds the state it was made against; Terraform itself does not refuse a
        plan made against an empty state once one exists (it would create the resources
        twice), so the comparison is made here, before anything is applied.
        """
        with zipfile.ZipFile(plan_file) as archive:
            prior = json.loads(archive.read("tfstate"))
        planned = (int(prior.get("serial", 0)), str(prior.get("lineage", "")))
        return planned != self.state_identity()

    def destroy(self) -> ProcessResult:
        return self.run("destroy", "-input=false", "-no-color", self._lock_timeout,
                        "-auto-approve")

    def state_resources(self) -> list[str]:
        result = self.run("state", "list", check=False)
        return [line for line in result.lines if line and not line.startswith("$ ")]


def __getattr__(name: str) -> type:
    """`TofuResource` lives with the Dagster resources (importing it imports Dagster);
    reachable here too, where it always was."""
    if name == "TofuResource":
        from .resources import TofuResource

        return TofuResource
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
