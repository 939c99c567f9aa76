"""Policy as code: a pipeline's Rego files, evaluated with a real Rego engine on every plan.

The conftest convention: the files are Rego v1, their verdict lives in `package main`, where
`deny` is a set of messages (any one stops the apply) and `warn` a set of messages that are
kept and shown. `input` is the plan as `tofu show -json` prints it; `data.infrakitchen`
tells the policy where the plan comes from (pipeline, task, environment, labels, operation).

The engine is `regopy` (rego-cpp). This module knows nothing of tofu, the store or Dagster:
it loads files, checks that they compile, and turns a plan into a `Verdict`.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from regopy import Interpreter, LogLevel, RegoError

from .interpolation import mask

#: the package whose `deny` / `warn` sets are the verdict (conftest's default)
PACKAGE = "main"
_QUERY = f"data.{PACKAGE}"
_DECLARES_MAIN = re.compile(rf"^\s*package\s+{PACKAGE}\s*(#.*)?$", re.MULTILINE)
#: one error of rego-cpp's report: `(error N:FILE|OFFSET|LENGTH ... (errormsg N:TEXT)`
_ERROR_AT = re.compile(r"\(error (?:\d+:([^|\s]*)\|(\d+)\|\d+)?")
_ERROR_MESSAGE = re.compile(r"\(errormsg (\d+):")
#: rego-cpp's C++ runtime is shared by every interpreter of the process: evaluations are
#: short, so one at a time costs nothing and rules out any thread-safety question
_ENGINE = threading.Lock()


class PolicyError(Exception):
    """A policy file cannot be used (missing, unreadable, or not valid Rego); the message
    names the file."""


@dataclass(frozen=True)
class PolicyFile:
    #: the path as the pipeline author knows it (relative to the TOML), used in messages
    name: str
    source: str


@dataclass(frozen=True)
class Verdict:
    """What the policies said about one plan."""

    digest: str
    operation: str
    deny: tuple[str, ...] = ()
    warn: tuple[str, ...] = ()
    files: tuple[str, ...] = field(default=())

    @property
    def denied(self) -> bool:
        return bool(self.deny)

    def as_dict(self) -> dict[str, Any]:
        """The record's `policy` shape (what `ik inspect` shows)."""
        return {"digest": self.digest, "operation": self.operation, "deny": list(self.deny),
                "warn": list(self.warn), "files": list(self.files)}

    def summary(self) -> str:
        if self.deny:
            return f"denied ({len(self.deny)}): " + "; ".join(self.deny)
        if self.warn:
            return f"passed with {len(self.warn)} warning(s): " + "; ".join(self.warn)
        return "passed"


@dataclass(frozen=True)
class PolicySet:
    """The policy files of one pipeline, read once; their digest joins the fingerprint."""

    files: tuple[PolicyFile, ...]
    digest: str

    @classmethod
    def load(cls, patterns: list[str], source_dir: Path) -> PolicySet | None:
        """Read the files `patterns` (globs relative to `source_dir`) name; None when there
        are no patterns. A pattern matching nothing is an error: a typo would otherwise
        switch the policies off without a word."""
        if not patterns:
            return None
        paths: dict[str, Path] = {}
        for pattern in patterns:
            found = sorted(Path(p) for p in glob.glob(str(source_dir / pattern), recursive=True)
                           if Path(p).is_file())
            if not found:
                raise PolicyError(f"policies: {pattern!r} matches no file (relative to "
                                  f"{source_dir})")
            for path in found:
                paths.setdefault(_shown(path, source_dir), path)
        files = []
        for name, path in sorted(paths.items()):
            try:
                files.append(PolicyFile(name, path.read_text(encoding="utf-8")))
            except (OSError, UnicodeDecodeError) as exc:
                raise PolicyError(f"policy file {name}: cannot be read ({exc})") from None
        digest = hashlib.sha256()
        for file in files:
            digest.update(f"{file.name}\0{file.source}\0".encode())
        return cls(tuple(files), digest.hexdigest())

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.files)

    def check(self) -> None:
        """Parse and compile every file (what `ik validate` and loading run); the error
        names the file."""
        if not any(_DECLARES_MAIN.search(f.source) for f in self.files):
            raise PolicyError(f"policies: none of {', '.join(self.names)} declares "
                              f"`package {PACKAGE}`, where deny/warn are read")
        self._query({}, {})

    def evaluate(self, plan: dict[str, Any], about: dict[str, Any],
                 secrets: set[str] | frozenset[str] = frozenset(),
                 operation: str = "") -> Verdict:
        """`deny` and `warn` of `package main` for `plan` (the `show -json` document);
        `about` becomes `data.infrakitchen`. Messages are masked: a policy may quote a
        sensitive value it found in the plan."""
        result = self._query(plan, about)
        usable = set(secrets)
        return Verdict(
            digest=self.digest, operation=operation,
            deny=tuple(mask(m, usable) for m in _messages(result.get("deny"))),
            warn=tuple(mask(m, usable) for m in _messages(result.get("warn"))),
            files=self.names)

    # -- the engine -------------------------------------------------------------------

    def _query(self, plan: dict[str, Any], about: dict[str, Any]) -> dict[str, Any]:
        with _ENGINE:
            try:
                return _run(self.files, plan, about)
            except _Unparsed:
                raise  # a syntax error names its file and line already
            except PolicyError:
                if len(self.files) == 1:
                    raise
            # a compile error (an unknown function, say) does not always say where: name
            # the files that fail on their own, else all of them
            culprits = []
            for file in self.files:
                try:
                    _run((file,), plan, about)
                except PolicyError as exc:
                    culprits.append(str(exc))
            try:
                _run(self.files, plan, about)
            except PolicyError as exc:
                raise PolicyError("; ".join(culprits) or str(exc)) from None
            raise AssertionError("unreachable: the policies failed and then compiled")


class _Unparsed(PolicyError):
    """A file that is not valid Rego syntax (the message has its line and column)."""


def _run(files: tuple[PolicyFile, ...], plan: dict[str, Any],
         about: dict[str, Any]) -> dict[str, Any]:
    rego = Interpreter()
    rego.log_level = LogLevel.NONE  # errors come back as exceptions, not on stdout
    for file in files:
        try:
            rego.add_module(file.name, file.source)
        except RegoError as exc:
            raise _Unparsed(f"policy file {_describe(str(exc), file)}") from None
    rego.add_data({"infrakitchen": about})
    rego.set_input(plan)
    try:
        output = rego.query(_QUERY)
    except RegoError as exc:
        raise PolicyError(f"policy file {_describe(str(exc), *files)}") from None
    except json.JSONDecodeError as exc:
        # regopy hands an evaluation error back as text where JSON was expected; the text
        # (rego-cpp's error report) is all there is to tell the author
        raise PolicyError(f"policy file {_describe(exc.doc, *files)}") from None
    if not output.ok():
        raise PolicyError(f"policy file {', '.join(f.name for f in files)}: the policies do "
                          "not compile (conflicting rule values?)")
    if not output.results or not output.results[0].expressions:
        return {}  # no `package main` among these files
    value = output.results[0].expressions[0]
    return value if isinstance(value, dict) else {}


def _describe(report: str, *files: PolicyFile) -> str:
    """`NAME:LINE:COL: message` from rego-cpp's error report."""
    message = "not valid Rego"
    found = _ERROR_MESSAGE.search(report)
    if found:
        start = found.end()
        message = report[start:start + int(found.group(1))]
    at = _ERROR_AT.search(report)
    sources = {f.name: f.source for f in files}
    if at and at.group(1) in sources:
        before = sources[at.group(1)].encode()[:int(at.group(2))]
        line = before.count(b"\n") + 1
        column = len(before) - (before.rfind(b"\n") + 1) + 1
        return f"{at.group(1)}:{line}:{column}: {message}"
    return f"{', '.join(f.name for f in files)}: {message}"


def _without_prefix(exc: PolicyError) -> str:
    text = str(exc)
    return text.split(": ", 1)[1] if ": " in text else text


def _messages(value: Any) -> list[str]:
    """A `deny`/`warn` set as sorted text: strings as they are, conftest's `{"msg": ...}`
    objects by their `msg`, anything else as JSON. An object (a rule written the old way,
    `deny[msg] { ... }`) counts by its keys."""
    if value is None:
        return []
    items = list(value) if isinstance(value, dict) else value
    if not isinstance(items, list):
        items = [items]
    texts = []
    for item in items:
        if isinstance(item, str):
            texts.append(item)
        elif isinstance(item, dict) and isinstance(item.get("msg"), str):
            texts.append(item["msg"])
        else:
            texts.append(json.dumps(item, sort_keys=True))
    return sorted(set(texts))


def _shown(path: Path, source_dir: Path) -> str:
    """`path` relative to the pipeline's directory when it lies inside it."""
    relative = os.path.relpath(path, source_dir)
    return relative if not relative.startswith("..") else str(path)


def pipeline_policies(pipeline: Any) -> PolicySet | None:
    """The policy set of a `Pipeline` (None without `policies`)."""
    return PolicySet.load(list(pipeline.policies), pipeline.source_dir)


def policy_problems(pipeline: Any) -> list[str]:
    """Validation: every pattern matches, every file parses and the set compiles."""
    try:
        policies = pipeline_policies(pipeline)
        if policies is not None:
            policies.check()
    except PolicyError as exc:
        return [str(exc)]
    return []
