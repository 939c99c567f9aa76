"""A module's interface: its variables and outputs, read with a real HCL parser.

Variables (type, description, default, sensitive, nullable, required, validation blocks)
and outputs (description, sensitive) come from `python-hcl2`, so a `}` inside a string, a
heredoc description or a nested `validation` block are read as tofu reads them. `.tf.json`
files are plain JSON and read as such; `override.tf` / `*_override.tf` files are merged
last, attribute by attribute, as tofu does.

Parsing costs a parser start-up and a tree walk, and every resource of an estate asks for
the schema of one of a few modules: a schema is parsed once per module *content* (the
digest of its `.tf`/`.tf.json` files) and kept for the process. A file that does not parse
is one `ModuleSchemaError` line naming the file and the position.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from . import settings
from .sources import SourceError, cache_root, is_git_source, parse

#: Shown instead of a sensitive variable's default.
MASKED = "(sensitive)"
_CACHE_SIZE = 256
_EXPRESSION = re.compile(r"^\$\{(.*)\}$", re.DOTALL)


class ModuleSchemaError(ValueError):
    """A module whose `.tf` files cannot be read: one line naming the file (and where)."""


@dataclass(frozen=True)
class Validation:
    """A `validation` block: enforced by tofu at plan time, shown here for the reader."""

    condition: str
    error_message: str


@dataclass(frozen=True)
class Variable:
    name: str
    type: str | None = None
    description: str | None = None
    default: Any = None
    #: whether a `default` is written (a `default = null` counts: the variable is optional)
    has_default: bool = False
    sensitive: bool = False
    nullable: bool = True
    validations: tuple[Validation, ...] = ()

    @property
    def required(self) -> bool:
        """Without a default tofu would stop and ask for a value."""
        return not self.has_default

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready; a sensitive variable's default is masked (it may be a credential)."""
        default = self.default
        if self.has_default and self.sensitive and default is not None:
            default = MASKED
        return {"type": self.type, "description": self.description,
                "default": default if self.has_default else None,
                "required": self.required, "sensitive": self.sensitive,
                "nullable": self.nullable,
                "validations": [{"condition": v.condition, "error_message": v.error_message}
                                for v in self.validations]}


@dataclass(frozen=True)
class Output:
    name: str
    description: str | None = None
    sensitive: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"description": self.description, "sensitive": self.sensitive}


@dataclass(frozen=True)
class ModuleSchema:
    """What a module takes and gives, by name (read-only: one instance is shared)."""

    variables: Mapping[str, Variable] = field(default_factory=lambda: MappingProxyType({}))
    outputs: Mapping[str, Output] = field(default_factory=lambda: MappingProxyType({}))
    #: digest of the files it was read from (the cache key)
    digest: str = ""

    @property
    def sensitive_variables(self) -> set[str]:
        return {name for name, v in self.variables.items() if v.sensitive}

    @property
    def required_variables(self) -> set[str]:
        return {name for name, v in self.variables.items() if v.required}

    def as_dict(self) -> dict[str, Any]:
        """The `schema` of `ik inspect --json`."""
        return {"variables": {n: v.as_dict() for n, v in sorted(self.variables.items())},
                "outputs": {n: o.as_dict() for n, o in sorted(self.outputs.items())}}


# -- reading ---------------------------------------------------------------------------


def _files(directory: Path) -> list[Path]:
    """The files tofu reads as configuration, overrides last (tofu merges them last)."""
    files = [f for f in directory.iterdir() if f.is_file()
             and f.name.endswith((".tf", ".tf.json"))] if directory.is_dir() else []
    return sorted(files, key=lambda f: (_is_override(f), f.name))


def _is_override(file: Path) -> bool:
    stem = file.name.removesuffix(".json").removesuffix(".tf")
    return stem == "override" or stem.endswith("_override")


def _digest(files: list[Path]) -> tuple[str, dict[Path, bytes]]:
    digest = hashlib.sha256()
    contents: dict[Path, bytes] = {}
    for file in files:
        data = file.read_bytes()
        contents[file] = data
        digest.update(file.name.encode() + b"\0" + data + b"\0")
    return digest.hexdigest()[:16], contents


def _parse_hcl(file: Path, text: str) -> dict[str, Any]:
    """One `.tf` file as plain Python values: strings unquoted and unescaped, expressions
    as `${...}`, blocks as dicts (hcl2 is imported here: its grammar loads on first use)."""
    import hcl2

    options = hcl2.SerializationOptions(
        with_comments=False, explicit_blocks=False, strip_string_quotes=True,
        preserve_heredocs=False)
    try:
        return hcl2.loads(text, serialization_options=options)
    except Exception as exc:  # lark raises several types, and hcl2 its own
        raise ModuleSchemaError(f"{file}: {_parse_failure(exc)}") from None


def _parse_failure(exc: Exception) -> str:
    line, column = getattr(exc, "line", None), getattr(exc, "column", None)
    where = f" at line {line}, column {column}" if line and line > 0 else ""
    token = getattr(exc, "token", None)
    found = getattr(exc, "char", None) if token is None else str(token)
    if token is not None and getattr(token, "type", "") == "$END":
        what = "unexpected end of file (an unclosed block or string?)"
    elif found:
        shown = found.strip().splitlines()[0][:40] if found.strip() else "line break"
        what = f"unexpected {shown!r}"
    else:
        what = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
    return f"not valid HCL{where}: {what}"


def _blocks(data: dict[str, Any], kind: str) -> list[tuple[str, dict[str, Any]]]:
    """(label, body) of every `kind` block: hcl2 gives a list of {label: body}, JSON
    configuration a {label: body} object (or a list of them)."""
    found: list[tuple[str, dict[str, Any]]] = []
    raw = data.get(kind) or []
    for entry in raw if isinstance(raw, list) else [raw]:
        if isinstance(entry, dict):
            for label, body in entry.items():
                found.append((str(label), body if isinstance(body, dict) else {}))
    return found


def _read(file: Path, data: bytes) -> dict[str, Any]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ModuleSchemaError(f"{file}: not UTF-8 text") from None
    if file.name.endswith(".json"):
        try:
            loaded = json.loads(text)
        except ValueError as exc:
            raise ModuleSchemaError(f"{file}: not valid JSON: {exc}") from None
        if not isinstance(loaded, dict):
            raise ModuleSchemaError(f"{file}: a JSON configuration must be an object")
        return loaded
    return _parse_hcl(file, text)


def _expression(value: Any) -> str | None:
    """A type constraint or condition as written: `${map(string)}` -> `map(string)`."""
    if value is None:
        return None
    if isinstance(value, str):
        match = _EXPRESSION.match(value)
        return match.group(1) if match else value
    return json.dumps(value)


def _text(value: Any) -> str | None:
    """A description: HCL's `$${` and `%%{` escapes read as the literal characters."""
    if value is None:
        return None
    text = value if isinstance(value, str) else json.dumps(value)
    return text.replace("$${", "${").replace("%%{", "%{")


def _flag(value: Any, default: bool) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value in ("true", "false"):
        return value == "true"
    return default


def _variable(name: str, body: dict[str, Any]) -> Variable:
    validations = body.get("validation") or []
    if isinstance(validations, dict):
        validations = [validations]
    return Variable(
        name=name, type=_expression(body.get("type")), description=_text(body.get("description")),
        default=body.get("default"), has_default="default" in body,
        sensitive=_flag(body.get("sensitive"), False), nullable=_flag(body.get("nullable"), True),
        validations=tuple(Validation(_expression(v.get("condition")) or "",
                                     _text(v.get("error_message")) or "")
                          for v in validations if isinstance(v, dict)))


def parse_module(directory: Path) -> ModuleSchema:
    """Read a module's schema now, bypassing the cache (see `module_schema`)."""
    files = _files(directory)
    digest, contents = _digest(files)
    return _build(files, contents, digest)


def _build(files: list[Path], contents: dict[Path, bytes], digest: str) -> ModuleSchema:
    variables: dict[str, dict[str, Any]] = {}
    outputs: dict[str, dict[str, Any]] = {}
    for file in files:
        data = _read(file, contents[file])
        override = _is_override(file)
        for kind, target in (("variable", variables), ("output", outputs)):
            for label, body in _blocks(data, kind):
                if override and label in target:
                    target[label] = {**target[label], **body}
                elif not override:
                    target[label] = dict(body)
    return ModuleSchema(
        variables=MappingProxyType({n: _variable(n, b) for n, b in variables.items()}),
        outputs=MappingProxyType({
            n: Output(n, _text(b.get("description")), _flag(b.get("sensitive"), False))
            for n, b in outputs.items()}),
        digest=digest)


_cache: OrderedDict[str, ModuleSchema | ModuleSchemaError] = OrderedDict()
_lock = threading.Lock()


def module_schema(directory: Path) -> ModuleSchema:
    """The schema of the module in `directory`, parsed once per content.

    Each call reads the configuration files (to know whether they changed: a code server
    lives for days while modules are edited) but parses only content it has not seen; a
    file that did not parse is remembered too, so a broken module costs one parse.
    """
    if not directory.is_dir():
        raise ModuleSchemaError(f"module directory {directory} does not exist")
    files = _files(directory)
    digest, contents = _digest(files)
    with _lock:
        known = _cache.get(digest)
        if known is not None:
            _cache.move_to_end(digest)
    if known is None:
        known = _remembered(digest)
    if known is None:
        try:
            known = _build(files, contents, digest)
            _remember(known)
        except ModuleSchemaError as exc:
            known = exc
        with _lock:
            _cache[digest] = known
            while len(_cache) > _CACHE_SIZE:
                _cache.popitem(last=False)
    if isinstance(known, ModuleSchemaError):
        raise ModuleSchemaError(str(known))
    return known


# -- kept on disk: every `ik` command and step process would otherwise start the HCL
# parser (0.2 s) to read the same few modules again ----------------------------------


def _memo_file(digest: str) -> Path:
    return settings.home() / "module-schemas" / f"{digest}.json"


def _remembered(digest: str) -> ModuleSchema | None:
    try:
        data = json.loads(_memo_file(digest).read_text())
        return ModuleSchema(
            variables=MappingProxyType({
                name: Variable(**{**v, "validations": tuple(
                    Validation(**x) for x in v["validations"])})
                for name, v in data["variables"].items()}),
            outputs=MappingProxyType({name: Output(**o) for name, o in data["outputs"].items()}),
            digest=digest)
    except (OSError, ValueError, KeyError, TypeError):
        return None  # not there, or written by another version: parse again


def _remember(schema: ModuleSchema) -> None:
    """Write the parsed schema beside the other private files (defaults may be secrets)."""
    data = {"variables": {n: dataclasses.asdict(v) for n, v in schema.variables.items()},
            "outputs": {n: dataclasses.asdict(o) for n, o in schema.outputs.items()}}
    try:
        memo = _memo_file(schema.digest)
        settings.private_dir(memo.parent)
        settings.write_private(memo, json.dumps(data, default=str))
    except OSError:
        pass  # a read-only home only costs the next process a parse


def applied_module_schema(module: str, base_dir: Path, commit: str | None = None
                          ) -> ModuleSchema:
    """The schema of a record's module without fetching anything: a local module from
    the pipeline's directory, a git source from the checkout of the commit it was applied
    from, if this machine has it. Raises `ModuleSchemaError` saying why not."""
    if not is_git_source(module):
        return module_schema((base_dir / module).resolve())
    if not commit:
        raise ModuleSchemaError("a git source not applied yet: its commit is not known")
    try:
        source = parse(module, base_dir)
    except SourceError as exc:
        raise ModuleSchemaError(str(exc)) from None
    checkout = cache_root() / "checkouts" / source.key / commit  # see `sources._export`
    directory = checkout / source.subdir if source.subdir else checkout
    if not directory.is_dir():
        raise ModuleSchemaError(f"commit {commit[:12]} of the git source is not checked out "
                                "on this machine (a run here fetches it)")
    return module_schema(directory)


# -- showing ---------------------------------------------------------------------------


def _cell(text: Any) -> str:
    """One markdown table cell: a single line, pipes escaped."""
    value = text if isinstance(text, str) else json.dumps(text)
    return " ".join(value.split()).replace("|", "\\|")


def markdown_table(schema: ModuleSchema, limit: int = 40) -> str:
    """Variables and outputs as two short markdown tables (the asset description)."""
    lines: list[str] = []
    if schema.variables:
        lines += ["| Variable | Type | Default | Description |", "|---|---|---|---|"]
        for name, var in sorted(schema.variables.items())[:limit]:
            shown = var.as_dict()["default"]
            default = ("*required*" if var.required
                       else "`" + _cell(shown) + "`" if shown is not None else "`null`")
            flags = " (sensitive)" if var.sensitive else ""
            lines.append(f"| `{name}`{flags} | `{_cell(var.type or 'any')}` | {default} | "
                         f"{_cell(var.description or '')} |")
        if len(schema.variables) > limit:
            lines.append(f"| … {len(schema.variables) - limit} more | | | |")
    if schema.outputs:
        if lines:
            lines.append("")
        lines += ["| Output | Description |", "|---|---|"]
        for name, out in sorted(schema.outputs.items())[:limit]:
            flags = " (sensitive)" if out.sensitive else ""
            lines.append(f"| `{name}`{flags} | {_cell(out.description or '')} |")
        if len(schema.outputs) > limit:
            lines.append(f"| … {len(schema.outputs) - limit} more | |")
    return "\n".join(lines)


def text_lines(schema: ModuleSchema) -> list[str]:
    """Variables and outputs for a terminal (`ik inspect`)."""
    lines = ["module variables:"]
    for name, var in sorted(schema.variables.items()):
        data = var.as_dict()
        marks = [m for m, on in (("required", var.required), ("sensitive", var.sensitive),
                                 ("not nullable", not var.nullable)) if on]
        if not var.required:
            marks.append(f"default {json.dumps(data['default'])}")
        if var.validations:
            marks.append(f"{len(var.validations)} validation"
                         + ("s" if len(var.validations) > 1 else ""))
        about = f" - {_cell(var.description)}" if var.description else ""
        lines.append(f"  {name}: {var.type or 'any'} ({', '.join(marks)}){about}")
    lines.append("module outputs:")
    for name, out in sorted(schema.outputs.items()):
        mark = " (sensitive)" if out.sensitive else ""
        about = f" - {_cell(out.description)}" if out.description else ""
        lines.append(f"  {name}{mark}{about}")
    return lines
