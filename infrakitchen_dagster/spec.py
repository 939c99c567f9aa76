"""The pipeline TOML file as pydantic models.

The schema is a strict superset of the `wf` format: every key of a `wf` file keeps its
meaning, and unknown keys are errors (with the nearest valid key suggested) because a typo
in an infrastructure pipeline silently ignored is a resource silently mis-provisioned.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    NonNegativeInt,
    StrictBool,
    ValidationError,
    field_validator,
)

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
TASK_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
ENV_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}

Scalar = str | int | float | bool


class PipelineError(Exception):
    """A pipeline file that cannot be used; `problems` holds one line per problem."""

    def __init__(self, path: Path | str, problems: list[str]):
        self.path = str(path)
        self.problems = problems
        super().__init__("\n".join(f"{self.path}: {p}" for p in problems))


def parse_duration(text: str) -> float:
    """Seconds in a Go-style duration (`500ms`, `10s`, `1h30m`); wf files use this syntax."""
    if not isinstance(text, str):
        raise ValueError(f"duration must be a string like '10s', got {text!r}")
    value = text.strip()
    pos, total = 0, 0.0
    while pos < len(value):
        match = _DURATION_PART.match(value, pos)
        if not match:
            raise ValueError(
                f"bad duration {text!r} (use Go-style durations: 500ms, 10s, 5m, 1h30m)"
            )
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if not value:
        raise ValueError("empty duration")
    return total


def _duration(value: Any) -> float | None:
    """A duration key: absent, or strictly positive (a zero timeout would kill every attempt
    at once, a zero retry delay hammers what just failed)."""
    if value is None:
        return None
    if isinstance(value, str) and value.strip().startswith("-"):
        raise ValueError(f"duration {value!r} is negative; it must be greater than zero")
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError(f"duration {value!r} must be greater than zero")
    return seconds


Duration = Annotated[float | None, BeforeValidator(_duration)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class Inherited(_Strict):
    """A dependency tag or config; `inherited_by_children` makes it flow to descendants."""

    name: str
    value: Scalar
    inherited_by_children: bool = False


class FromEnv(_Strict):
    """A credential read from the orchestrator's environment at run time, never stored."""

    from_env: str


class Integration(_Strict):
    env: dict[str, str | FromEnv] = Field(default_factory=dict)


class Rule(_Strict):
    """Validation rules of one variable (`rules = { VAR = { ... } }` on a task), checked on
    the resolved value before any tofu runs; module `validation` blocks stay tofu's job."""

    regex: str | None = None
    min_length: NonNegativeInt | None = None
    max_length: NonNegativeInt | None = None
    min: float | None = None
    max: float | None = None
    options: list[Scalar] | None = None


NOTIFICATION_EVENTS = ("approval_requested", "approved", "rejected", "applied", "failed",
                       "drift_detected", "destroyed")


class Notifications(_Strict):
    """`[notifications]`: Apprise URLs told about the listed lifecycle events."""

    urls: list[str] = Field(default_factory=list)
    events: list[Literal[NOTIFICATION_EVENTS]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: list(NOTIFICATION_EVENTS))


class Backend(_Strict):
    type: str = "local"
    config: dict[str, Scalar] = Field(default_factory=dict)

    @field_validator("type", mode="before")
    @classmethod
    def _type_is_a_name(cls, value: Any) -> Any:
        if not isinstance(value, str) or not re.fullmatch(r"[a-z][a-z0-9_]*", value):
            raise ValueError(f"backend type must be a name like 'local' or 'pg', got {value!r}")
        return value


class Trigger(_Strict):
    """wf triggers: `cron` becomes a Dagster schedule, `file_watch` a sensor."""

    type: str
    schedule: str | None = None
    path: str | None = None
    pattern: str | None = None
    interval: Duration = None

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        if value not in ("cron", "file_watch"):
            raise ValueError(
                f"trigger type {value!r} cannot be honoured (supported: cron, file_watch)"
            )
        return value


class Task(_Strict):
    """One `[tasks.NAME]` table. Its kind follows from its keys (see `kind`)."""

    name: str | None = None
    description: str | None = None
    type: Literal["normal", "forensic"] = "normal"
    cmd: str | None = None
    module: str | None = None
    abstract: bool = False
    destroy: list[str] | Literal["all"] | None = None
    integrations: list[str] | None = None
    variables: dict[str, Any] = Field(default_factory=dict)
    depends_on: list[str] = Field(default_factory=list)
    register_: str | list[str] | None = Field(default=None, alias="register")
    retries: NonNegativeInt = 0
    retry_delay: Duration = None
    timeout: Duration = None
    on_failure: str | None = None
    env: dict[str, Scalar] = Field(default_factory=dict)
    approval: bool | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    dependency_tags: list[Inherited] = Field(default_factory=list)
    dependency_configs: list[Inherited] = Field(default_factory=list)
    frozen: list[str] = Field(default_factory=list)
    sensitive: list[str] = Field(default_factory=list)
    unique: list[str] = Field(default_factory=list)
    rules: dict[str, Rule] = Field(default_factory=dict)
    if_: str | None = Field(default=None, alias="if")
    ignore_failure: bool = False
    matrix: dict[str, list[Scalar]] | None = None
    clean_env: bool = False
    working_dir: str | None = None
    backend: Backend | None = None

    @field_validator("destroy", mode="before")
    @classmethod
    def _destroy_all_or_list(cls, value: Any) -> Any:
        if isinstance(value, str) and value != "all":
            raise ValueError(
                f'destroy must be "all" or a list of resource tasks, got {value!r}')
        return value

    @field_validator("matrix")
    @classmethod
    def _matrix_not_empty(cls, value: dict[str, list[Scalar]] | None):
        if value is not None:
            if not value:
                raise ValueError("matrix needs at least one key")
            for key, values in value.items():
                if not values:
                    raise ValueError(f"matrix key {key!r} has no values")
        return value

    @property
    def kind(self) -> Literal["resource", "abstract", "command", "teardown"]:
        if self.type == "forensic":
            return "teardown"
        if self.module is not None:
            return "resource"
        if self.abstract:
            return "abstract"
        return "command"

    @property
    def registers(self) -> list[str]:
        if self.register_ is None:
            return []
        return [self.register_] if isinstance(self.register_, str) else list(self.register_)


class Pipeline(_Strict):
    """A whole pipeline file; `path` and `source_dir` are set by `load_pipeline`."""

    name: str
    description: str | None = None
    tags: list[str] = Field(default_factory=list)
    on_failure: str | None = None
    approval: bool = False
    owners: list[str] = Field(default_factory=list)
    drift_schedule: str | None = None
    vars: dict[str, Scalar] = Field(default_factory=dict)
    environments: dict[str, dict[str, Scalar]] = Field(default_factory=dict)
    backend: Backend = Field(default_factory=Backend)
    integrations: dict[str, Integration] = Field(default_factory=dict)
    tasks: dict[str, Task] = Field(default_factory=dict)
    triggers: list[Trigger] = Field(default_factory=list)
    #: OpenSSH allowed_signers file (relative to this TOML) naming who may sign approvals.
    approvers: str | None = None
    #: Whether the user who started a run may approve its own gate.
    allow_self_approval: StrictBool = False
    #: Whether `module` may point outside the directory holding this TOML file.
    allow_external_modules: StrictBool = False
    #: Apprise notifications of lifecycle events.
    notifications: Notifications | None = None
    #: Rego policy files (globs relative to this TOML) evaluated on every plan.
    policies: list[str] = Field(default_factory=list)
    path: str = Field(default="", exclude=True)

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        if not NAME_RE.match(value):
            raise ValueError(f"pipeline name {value!r} must match ^[a-z0-9][a-z0-9_-]*$")
        return value

    @field_validator("environments")
    @classmethod
    def _valid_environments(cls, value: dict[str, dict[str, Scalar]]):
        for env in value:
            if not ENV_NAME_RE.match(env):
                raise ValueError(f"environment name {env!r} must match ^[A-Za-z0-9][A-Za-z0-9_-]*$")
        return value

    @field_validator("tasks")
    @classmethod
    def _valid_task_names(cls, value: dict[str, Task]):
        for name in value:
            if not TASK_NAME_RE.match(name):
                raise ValueError(f"task name {name!r} must match ^[A-Za-z0-9][A-Za-z0-9_.-]*$")
        return value

    @property
    def source_dir(self) -> Path:
        return Path(self.path).resolve().parent if self.path else Path.cwd()

    @property
    def approvers_file(self) -> Path | None:
        """Absolute path of the `approvers` allowed_signers file (None when not set)."""
        if self.approvers is None:
            return None
        return (self.source_dir / self.approvers).resolve()

    @property
    def environment_names(self) -> list[str]:
        return list(self.environments) or ["default"]

    @property
    def job_prefix(self) -> str:
        return self.name.replace("-", "_")


# ---------------------------------------------------------------------------------------
# Loading with one clear line per problem


def _known_fields(model: type[BaseModel]) -> list[str]:
    return [f.alias or n for n, f in model.model_fields.items() if n != "path"]


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """Which model a validation error location points into (for key suggestions)."""
    model: type[BaseModel] | None = Pipeline
    i = 0
    while i < len(loc) and model is not None:
        key = loc[i]
        if isinstance(key, str) and _LOC_TAG.match(key) and i < len(loc) - 1:
            i += 1
            continue
        if model is Pipeline and key == "tasks":
            model, i = Task, i + 2
            continue
        if model is Pipeline and key == "integrations":
            model, i = Integration, i + 2
            continue
        if model is Pipeline and key == "triggers":
            model, i = Trigger, i + 2
            continue
        if model is Pipeline and key == "notifications":
            model, i = Notifications, i + 1
            continue
        if model is Task and key == "rules":
            model, i = Rule, i + 2
            continue
        if model is Integration and key == "env":
            model, i = FromEnv, i + 2
            continue
        if key in ("backend",):
            model, i = Backend, i + 1
            continue
        if key in ("dependency_tags", "dependency_configs"):
            model, i = Inherited, i + 2
            continue
        if i == len(loc) - 1:
            return model
        return None
    return model


#: Pydantic's union-branch and validator tags in an error location (not TOML keys; matched
#: whole, so keys such as `integrations` or `interval` are kept).
_LOC_TAG = re.compile(
    r"^(?:str|int|float|bool|none|strict-[a-z]+|function-[a-z]+(?:\[.*\])?"
    r"|(?:literal|list|dict|union|tuple|nullable|default)\[.*\]"
    r"|FromEnv)$"
)


def _format_loc(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif _LOC_TAG.match(str(item)):
            continue
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts)


def _describe(error: dict[str, Any]) -> str:
    loc = tuple(error["loc"])
    where = _format_loc(loc)
    if error["type"] == "extra_forbidden":
        key = str(loc[-1])
        model = _model_at(loc)
        hint = ""
        if model is not None:
            close = difflib.get_close_matches(key, _known_fields(model), n=1, cutoff=0.6)
            if close:
                hint = f" (did you mean {close[0]!r}?)"
        return f"unknown key {where!r}{hint}"
    message = error["msg"]
    message = message.removeprefix("Value error, ")
    if error["type"] == "missing":
        return f"missing required key {where!r}"
    return f"{where}: {message}" if where else message


def _errors_of(exc: ValidationError) -> list[str]:
    seen: list[str] = []
    # Union types report one error per branch; keep the most specific one per location.
    by_loc: dict[str, dict[str, Any]] = {}
    for error in exc.errors():
        key = _format_loc(tuple(error["loc"]))
        if key not in by_loc or error["type"] in ("value_error", "extra_forbidden"):
            by_loc[key] = error
    # A typo inside a table of a `str | Model` union (`{ from_en = "X" }`) is one mistake:
    # keep the unknown key, drop the other branch's type error and the missing keys beside it.
    typo_parents = {key.rsplit(".", 1)[0] for key, error in by_loc.items()
                    if error["type"] == "extra_forbidden" and "." in key}
    by_loc = {key: error for key, error in by_loc.items()
              if not (key in typo_parents and error["type"] != "extra_forbidden")
              and not (error["type"] == "missing" and key.rsplit(".", 1)[0] in typo_parents)}
    for error in by_loc.values():
        line = _describe(error)
        if line not in seen:
            seen.append(line)
    return seen


def parse_pipeline(text: str, path: Path | str = "<string>") -> Pipeline:
    """Parse TOML text into a `Pipeline` (schema only; `validate_pipeline` does the rest)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PipelineError(path, [f"TOML syntax error: {exc}"]) from None
    if not data:
        raise PipelineError(path, [
            "empty file: not a pipeline (it needs at least one [tasks.NAME] table)"])
    data.setdefault("name", Path(str(path)).stem)
    try:
        return Pipeline.model_validate({**data, "path": str(path)})
    except ValidationError as exc:
        raise PipelineError(path, _errors_of(exc)) from None


def read_pipeline(path: Path | str) -> Pipeline:
    """Read a pipeline file; a directory, a binary or a non-UTF-8 file is one clear line."""
    file = Path(path)
    try:
        data = file.read_bytes()
    except IsADirectoryError:
        raise PipelineError(path, ["is a directory, not a pipeline TOML file"]) from None
    except OSError as exc:
        raise PipelineError(path, [f"cannot read file: {exc.strerror}"]) from None
    if b"\0" in data:
        raise PipelineError(path, ["binary file (contains NUL bytes), not a pipeline TOML file"])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise PipelineError(path, [
            f"not UTF-8 text (invalid byte 0x{data[exc.start]:02x} on line {line}); "
            "a pipeline file must be UTF-8 TOML"]) from None
    return parse_pipeline(text.removeprefix("\ufeff"), file)  # editors may add a BOM


# ---------------------------------------------------------------------------------------
# The approvers file (OpenSSH allowed_signers)

_KEY_TYPE = re.compile(r"^(?:ssh-[a-z0-9]+|ecdsa-sha2-[a-z0-9]+|sk-[A-Za-z0-9@.-]+"
                       r"|[a-z0-9-]+-cert-v01@openssh\.com)$")
_BASE64 = re.compile(r"^[A-Za-z0-9+/]+={0,2}$")


def _signer_tokens(line: str) -> list[str]:
    """Whitespace-split, keeping double-quoted runs (`namespaces="git,file"`) whole."""
    return re.findall(r'(?:[^\s"]|"[^"]*")+', line)


def allowed_signers_problems(file: Path, label: str | None = None) -> list[str]:
    """One line per problem of an allowed_signers file: missing, unreadable, or a line that
    lacks `principals [options] keytype base64-key`. A bad approvers file is refused at
    validation, not discovered when the first approval is checked."""
    name = label or str(file)
    try:
        text = file.read_bytes().decode("utf-8")
    except FileNotFoundError:
        return [f"approvers file {name!r} does not exist ({file})"]
    except IsADirectoryError:
        return [f"approvers file {name!r} is a directory, not an allowed_signers file"]
    except OSError as exc:
        return [f"approvers file {name!r} cannot be read: {exc.strerror}"]
    except UnicodeDecodeError:
        return [f"approvers file {name!r} is not UTF-8 text"]
    problems: list[str] = []
    entries = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        tokens = _signer_tokens(line)
        kind = next((i for i, t in enumerate(tokens) if _KEY_TYPE.match(t)), None)
        if kind is None or kind == 0 or kind + 1 >= len(tokens) or not _BASE64.match(
            tokens[kind + 1]
        ):
            problems.append(
                f"approvers file {name!r} line {number}: expected "
                "'principals [options] key-type base64-key' (e.g. "
                "'alice@example.com ssh-ed25519 AAAA...')"
            )
            continue
        entries += 1
    if not problems and not entries:
        problems.append(f"approvers file {name!r} names no signer (no key lines)")
    return problems
