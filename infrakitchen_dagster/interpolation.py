"""`{{.x}}` references, their resolution, shell-safe insertion and the `if` expression.

Values reach a shell command only through `render_shell`, which quotes each value for the
shell context it lands in (bare word, double quotes, single quotes, heredoc, `$(...)`), so
a value can never become code, while `echo "VPC {{.vpc_id}}"` still prints what a wf user
expects (no stray quotes).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

PLACEHOLDER = re.compile(
    r"\{\{\s*\.(?P<name>[A-Za-z_][A-Za-z0-9_-]*(?:\[[^\]{}]*\])?)"
    r"(?:\.(?P<attr>[A-Za-z_][A-Za-z0-9_]*))?\s*\}\}"
)
_CONDITION = re.compile(
    r"""^\s*(?P<var>[A-Za-z_][A-Za-z0-9_-]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?)\s*
        (?P<op>==|!=)\s*
        (?P<lit>"(?:[^"\\]|\\.)*"|'[^']*'|[A-Za-z0-9_.:/+-]+)\s*$""",
    re.VERBOSE,
)


class InterpolationError(Exception):
    """A reference that cannot be resolved, or a value that cannot be inserted safely."""


@dataclass(frozen=True)
class Ref:
    """`{{.name}}` or `{{.task.attr}}` (an output of an upstream resource task)."""

    name: str
    attr: str | None = None

    def __str__(self) -> str:
        return "{{." + self.name + (f".{self.attr}" if self.attr else "") + "}}"


def references(text: str) -> list[Ref]:
    return [Ref(m.group("name"), m.group("attr")) for m in PLACEHOLDER.finditer(text)]


def references_in(value: Any) -> list[Ref]:
    """References anywhere inside a nested TOML value (strings in dicts and lists)."""
    if isinstance(value, str):
        return references(value)
    if isinstance(value, Mapping):
        return [r for v in value.values() for r in references_in(v)]
    if isinstance(value, list | tuple):
        return [r for v in value for r in references_in(v)]
    return []


_OPENING = re.compile(r"\{\{\s*\.")


def malformed_references(text: str) -> list[str]:
    """One description per `{{.` that does not form a whole reference.

    Rendering substitutes only well-formed `{{.name}}` / `{{.task.attr}}`; anything else
    (`{{.X` never closed, `{{.a b}}`, `{{.a.b.c}}`) would reach the shell or tofu as literal
    text, so validation refuses it instead."""
    found: list[str] = []
    for opening in _OPENING.finditer(text):
        start = opening.start()
        if PLACEHOLDER.match(text, start):
            continue
        close = text.find("}}", start + 2)
        reopen = text.find("{{", start + 2)
        if close == -1 or (reopen != -1 and reopen < close):
            end = reopen if reopen != -1 else len(text)
            snippet = text[start:end].split("\n", 1)[0].rstrip()
            snippet = snippet if len(snippet) <= 30 else snippet[:27] + "..."
            found.append(f"unclosed reference {snippet!r} (no closing '}}}}')")
        else:
            snippet = text[start : close + 2]
            snippet = snippet if len(snippet) <= 40 else snippet[:37] + "..."
            found.append(f"malformed reference {snippet!r} "
                         "(expected {{.name}} or {{.task.output}})")
    return found


def malformed_references_in(value: Any) -> list[str]:
    """`malformed_references` anywhere inside a nested TOML value."""
    if isinstance(value, str):
        return malformed_references(value)
    if isinstance(value, Mapping):
        return [r for v in value.values() for r in malformed_references_in(v)]
    if isinstance(value, list | tuple):
        return [r for v in value for r in malformed_references_in(v)]
    return []


Resolver = Callable[[Ref], Any]


def to_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | dict):
        import json

        return json.dumps(value, sort_keys=True)
    return str(value)


def render(text: str, resolve: Resolver) -> Any:
    """Plain substitution. A string that is exactly one reference keeps the value's type,
    so `count = "{{.azs}}"` passes a number or a list to tofu, not its text."""
    whole = PLACEHOLDER.fullmatch(text.strip())
    if whole:
        return resolve(Ref(whole.group("name"), whole.group("attr")))
    return PLACEHOLDER.sub(
        lambda m: to_text(resolve(Ref(m.group("name"), m.group("attr")))), text
    )


def render_value(value: Any, resolve: Resolver) -> Any:
    if isinstance(value, str):
        return render(value, resolve)
    if isinstance(value, Mapping):
        return {k: render_value(v, resolve) for k, v in value.items()}
    if isinstance(value, list):
        return [render_value(v, resolve) for v in value]
    return value


# ---------------------------------------------------------------------------------------
# Shell-aware rendering

_NORMAL, _DQUOTE, _SQUOTE, _HEREDOC, _LITERAL_HEREDOC, _COMMENT = "N", "D", "S", "H", "L", "C"
_ARITH = "A"
_HEREDOC_START = re.compile(r"<<(-?)[ \t]*(?:'([^'\n]+)'|\"([^\"\n]+)\"|\\?([A-Za-z0-9_]+))")


def _quote_for(context: str, value: str, delimiter: str | None) -> str:
    if context == _COMMENT:
        # inert text, but a newline would end the comment and start a command
        return value.replace("\n", " ").replace("\r", " ")
    if context in (_NORMAL, _ARITH):
        return shlex.quote(value)
    if context == _DQUOTE:
        return re.sub(r'([\\"$`])', r"\\\1", value)
    if context == _SQUOTE:
        return value.replace("'", "'\\''")
    if context == _HEREDOC:
        return re.sub(r"([\\$`])", r"\\\1", value)
    return value  # literal heredoc: no expansion happens inside it


def render_shell(cmd: str, resolve: Resolver) -> str:
    """Substitute references in a `/bin/sh -c` command, each value quoted for its context."""
    out: list[str] = []
    stack: list[str] = [_NORMAL]
    pending_heredocs: list[tuple[str, bool, bool]] = []  # (delimiter, expands, strip_tabs)
    heredoc: tuple[str, bool, bool] | None = None
    arith_depth: list[int] = []  # open parens of each $(( )) on the stack
    value_in_heredoc_line = False
    i, n = 0, len(cmd)
    at_line_start = True
    while i < n:
        if heredoc is not None and at_line_start:
            end = cmd.find("\n", i)
            line = cmd[i : end if end != -1 else n]
            check = line.lstrip("\t") if heredoc[2] else line
            if check == heredoc[0]:
                out.append(line)
                i += len(line)
                heredoc = pending_heredocs.pop(0) if pending_heredocs else None
                continue
        at_line_start = False
        match = PLACEHOLDER.match(cmd, i) if cmd.startswith("{{", i) else None
        if match:
            value = to_text(resolve(Ref(match.group("name"), match.group("attr"))))
            if heredoc is not None:
                context = _HEREDOC if heredoc[1] else _LITERAL_HEREDOC
                quoted = _quote_for(context, value, heredoc[0])
                prefix = "".join(out).rsplit("\n", 1)[-1]
                for line in (prefix + quoted).split("\n")[:-1]:
                    _refuse_delimiter_line(line, heredoc)
                out.append(quoted)
                value_in_heredoc_line = True
            else:
                out.append(_quote_for(stack[-1][0], value, None))
            i = match.end()
            continue
        ch = cmd[i]
        if ch == "\n" and heredoc is not None and value_in_heredoc_line:
            _refuse_delimiter_line("".join(out).rsplit("\n", 1)[-1], heredoc)
            value_in_heredoc_line = False
        out.append(ch)
        i += 1
        if ch == "\n":
            at_line_start = True
            if stack[-1] == _COMMENT:
                stack.pop()
            if heredoc is None and pending_heredocs and stack[-1][0] == _NORMAL:
                heredoc = pending_heredocs.pop(0)
            continue
        if heredoc is not None:
            continue
        top = stack[-1]
        if top == _SQUOTE:
            if ch == "'":
                stack.pop()
            continue
        if top == _COMMENT:
            continue
        if ch == "\\" and i < n:
            out.append(cmd[i])
            i += 1
            continue
        if top == _DQUOTE:
            if ch == '"':
                stack.pop()
            elif ch == "$" and cmd.startswith("((", i):
                stack.append(_ARITH)
                arith_depth.append(2)
                out.append("((")
                i += 2
            elif ch == "$" and cmd.startswith("(", i):
                stack.append(_NORMAL + ")")
                out.append("(")
                i += 1
            elif ch == "`":
                stack.append(_NORMAL + "`")
            continue
        if top == _ARITH:
            if ch == "(":
                arith_depth[-1] += 1
            elif ch == ")":
                arith_depth[-1] -= 1
                if arith_depth[-1] == 0:
                    stack.pop()
                    arith_depth.pop()
            continue
        # normal context (top level, inside $(...), (...) or `...`)
        if ch == "$" and cmd.startswith("((", i):
            stack.append(_ARITH)
            arith_depth.append(2)
            out.append("((")
            i += 2
        elif ch == "'":
            stack.append(_SQUOTE)
        elif ch == '"':
            stack.append(_DQUOTE)
        elif ch == "`":
            if top == _NORMAL + "`":
                stack.pop()
            else:
                stack.append(_NORMAL + "`")
        elif ch == "(":
            stack.append(_NORMAL + ")")
        elif ch == ")" and top == _NORMAL + ")":
            stack.pop()
        elif ch == "#" and (len(out) < 2 or out[-2] in " \t\n;&|("):
            stack.append(_COMMENT)
        elif ch == "<" and cmd.startswith("<", i) and not cmd.startswith("<<", i):
            start = _HEREDOC_START.match(cmd, i - 1)
            if start:
                delimiter = start.group(2) or start.group(3) or start.group(4)
                quoted = bool(start.group(2) or start.group(3)) or start.group(0).find("\\") > 0
                pending_heredocs.append((delimiter, not quoted, bool(start.group(1))))
                out.append(cmd[i : start.end()])
                i = start.end()
    if heredoc is not None and value_in_heredoc_line:
        _refuse_delimiter_line("".join(out).rsplit("\n", 1)[-1], heredoc)
    return "".join(out)


def _refuse_delimiter_line(line: str, heredoc: tuple[str, bool, bool]) -> None:
    """A rendered heredoc line equal to the delimiter would end the heredoc early and turn
    what follows into commands."""
    candidate = line.lstrip("\t") if heredoc[2] else line
    if candidate == heredoc[0]:
        raise InterpolationError(
            f"a value would end the heredoc early (a line equal to its delimiter "
            f"{heredoc[0]!r}); refusing to insert it"
        )


# ---------------------------------------------------------------------------------------
# The `if` expression


@dataclass(frozen=True)
class Condition:
    """wf's `if`: `<var> (==|!=) <literal>`, compared as text."""

    var: str
    op: str
    literal: str

    @classmethod
    def parse(cls, expression: str) -> Condition:
        match = _CONDITION.match(expression)
        if not match:
            raise ValueError(
                f"bad if expression {expression!r} "
                '(expected: <var> == "value" or <var> != "value")'
            )
        literal = match.group("lit")
        if literal[0] in "\"'":
            literal = literal[1:-1]
            if match.group("lit")[0] == '"':
                literal = re.sub(r"\\(.)", r"\1", literal)
        return cls(match.group("var"), match.group("op"), literal)

    @property
    def ref(self) -> Ref:
        name, _, attr = self.var.partition(".")
        return Ref(name, attr or None)

    def evaluate(self, resolve: Resolver) -> bool:
        actual = to_text(resolve(self.ref))
        return (actual == self.literal) if self.op == "==" else (actual != self.literal)


def env_name(name: str) -> str:
    """`IK_<NAME>`: the environment variable a command task sees for a pipeline value."""
    return "IK_" + re.sub(r"[^A-Za-z0-9_]", "_", name).upper()


def mask(text: str, secrets: Iterable[str]) -> str:
    """Replace every secret occurrence in a log line; longest first so overlaps stay masked."""
    for secret in sorted({s for s in secrets if s and len(s) >= 3}, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text
