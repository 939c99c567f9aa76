"""What a plan changes, resource by resource, read from the plan tofu printed.

Terraform tools show a plan as a list of resources, each with its action and the
attributes it touches; the counts alone (`+1 ~0 -1`) do not say what happens. The lines
read here are the ones the run already logged (masked as they were printed, and tofu
prints sensitive values as `(sensitive value)`), so no extra tofu process is needed and no
value reaches metadata that was not already fit for the log.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

#: "  # null_resource.this will be created" -> address, verb
_HEADER = re.compile(r"^\s*# (\S+) (?:will|must) be (.+?)\s*$")
#: an attribute line of a resource block: indent, marker, name, rest
_ATTRIBUTE = re.compile(r'^(\s*)(-/\+|\+/-|[-+~])\s+("[^"]*"|[\w.-]+)\s*=\s*(.*)$')
_ACTIONS = (("created", "create"), ("destroyed", "delete"), ("updated in-place", "update"),
            ("replaced", "replace"), ("read during apply", "read"))
#: a shown value longer than this is cut (a change list is for reading, not for copying)
MAX_VALUE = 60


@dataclass(frozen=True)
class ResourceChange:
    """One resource a plan touches: its address, action and the attributes it changes."""

    address: str
    action: str
    attributes: tuple[str, ...] = field(default_factory=tuple)


def _action(verb: str) -> str:
    for phrase, action in _ACTIONS:
        if verb.startswith(phrase):
            return action
    return verb


def _shown(text: str) -> str:
    text = text.replace(" # forces replacement", "").strip()
    return text if len(text) <= MAX_VALUE else text[:MAX_VALUE - 1] + "…"


def parse_changes(lines: Iterable[str]) -> list[ResourceChange]:
    """The resource changes of a plan printed by `tofu plan` / `tofu apply` (human form).

    Attributes are the block's first-level names, and the keys changed inside a map or
    block (`triggers.value`); an in-place change shows `old -> new` as tofu printed it.
    """
    changes: list[ResourceChange] = []
    address = action = ""
    attributes: list[str] = []
    top: int | None = None
    parent = ""

    def close() -> None:
        if address:
            changes.append(ResourceChange(address, action, tuple(attributes)))

    for line in lines:
        if line.startswith(("Plan:", "Changes to Outputs:", "No changes.")):
            close()
            address = ""
            if line.startswith("Plan:"):
                break
            continue
        header = _HEADER.match(line)
        if header:
            close()
            address, action = header.group(1), _action(header.group(2))
            attributes, top, parent = [], None, ""
            continue
        match = _ATTRIBUTE.match(line) if address else None
        if not match:
            continue
        indent, marker, name, rest = (len(match.group(1)), match.group(2),
                                      match.group(3).strip('"'), match.group(4))
        if top is None:
            top = indent
        if indent == top:
            parent = name if rest.rstrip().endswith("{") or "{ #" in rest else ""
            if not parent:
                attributes.append(_attribute(name, marker, rest))
        elif parent and indent > top:
            attributes.append(_attribute(f"{parent}.{name}", marker, rest))
    close()
    return changes


def _attribute(name: str, marker: str, rest: str) -> str:
    if marker == "~" and "->" in rest:
        old, _, new = rest.partition("->")
        return f"{name}: {_shown(old)} → {_shown(new)}"
    return name


def changes_markdown(changes: list[ResourceChange]) -> str:
    """A markdown table: address, action, changed attributes."""
    rows = ["| Address | Action | Changed attributes |", "| --- | --- | --- |"]
    for change in changes:
        touched = "<br>".join(a.replace("|", "\\|") for a in change.attributes) or "-"
        rows.append(f"| `{change.address}` | {change.action} | {touched} |")
    return "\n".join(rows)
