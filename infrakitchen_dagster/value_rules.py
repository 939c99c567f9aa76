"""A task's validation rules (`rules = { VAR = { regex, min_length, ... } }`): what each
check means, whether a rule is itself usable, and whether a value passes it.

Shared by `ik validate` (literal values and `[vars]` defaults, in `graph.py`) and by the
runtime (the resolved value, before any tofu runs), so both refuse the same values with
the same words. Module `validation` blocks stay tofu's job: they are HCL expressions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .interpolation import to_text
from .spec import Rule

#: Shown instead of a sensitive variable's value in every message.
SENSITIVE = "(sensitive)"


@dataclass(frozen=True)
class Violation:
    """One failed check: `check` names the rule as written, `detail` says how the value
    missed it (dropped for sensitive values: a length or a bound tells about a secret)."""

    check: str
    detail: str = ""


def rule_problems(rule: Rule) -> list[str]:
    """What makes a rule unusable: no check at all, a regex that does not compile, bounds
    the wrong way round, or an option the other checks would refuse anyway."""
    problems: list[str] = []
    if rule.model_dump(exclude_none=True) == {}:
        problems.append("sets no check (use regex, min_length, max_length, min, max or "
                        "options)")
    if rule.regex is not None:
        try:
            re.compile(rule.regex)
        except re.error as exc:
            problems.append(f"regex {rule.regex!r} does not compile: {exc}")
            return problems
    if (rule.min_length is not None and rule.max_length is not None
            and rule.min_length > rule.max_length):
        problems.append(f"min_length {rule.min_length} is greater than max_length "
                        f"{rule.max_length}: no value could pass")
    if rule.min is not None and rule.max is not None and rule.min > rule.max:
        problems.append(f"min {_number(rule.min)} is greater than max {_number(rule.max)}: "
                        "no value could pass")
    if rule.options is not None and not rule.options:
        problems.append("options is empty: no value could pass")
    if problems:
        return problems
    others = rule.model_copy(update={"options": None})
    for option in rule.options or []:
        broken = violation(others, option)
        if broken is not None:
            problems.append(f"option {option!r} can never be chosen: it breaks "
                            f"{broken.check}")
    return problems


def violation(rule: Rule, value: Any) -> Violation | None:
    """The first check `value` fails, or None. Values from `--var` arrive as text, so
    `min`/`max` read numeric text as a number and `options` compare as text too."""
    if rule.options is not None and not any(
            value == option or to_text(value) == to_text(option) for option in rule.options):
        shown = ", ".join(to_text(o) for o in rule.options)
        return Violation(f"options [{shown}]", "not one of them")
    if rule.regex is not None:
        if isinstance(value, list | dict):
            return Violation(f"regex {rule.regex!r}", "a regex applies to text, not a "
                                                      + type(value).__name__)
        if not re.search(rule.regex, to_text(value)):
            return Violation(f"regex {rule.regex!r}", "does not match")
    if rule.min_length is not None or rule.max_length is not None:
        length = len(value) if isinstance(value, str | list | dict) else len(to_text(value))
        unit = "characters" if not isinstance(value, list | dict) else "items"
        if rule.min_length is not None and length < rule.min_length:
            return Violation(f"min_length {rule.min_length}", f"it has {length} {unit}")
        if rule.max_length is not None and length > rule.max_length:
            return Violation(f"max_length {rule.max_length}", f"it has {length} {unit}")
    if rule.min is not None or rule.max is not None:
        number = _as_number(value)
        bound = (f"min {_number(rule.min)}" if rule.min is not None
                 else f"max {_number(rule.max)}")
        if number is None:
            return Violation(bound, "not a number")
        if rule.min is not None and number < rule.min:
            return Violation(f"min {_number(rule.min)}", "it is smaller")
        if rule.max is not None and number > rule.max:
            return Violation(f"max {_number(rule.max)}", "it is greater")
    return None


def describe(task: str, variable: str, value: Any, broken: Violation,
             sensitive: bool) -> str:
    """The one line a refusal prints: task, variable, rule and value (or `(sensitive)`)."""
    shown = SENSITIVE if sensitive else repr(value)
    detail = "" if sensitive or not broken.detail else f" ({broken.detail})"
    return (f"task {task!r}: variable {variable!r} = {shown} breaks its rule "
            f"{broken.check}{detail}")


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def _number(value: float | None) -> str:
    """`10.0` as `10`: rules are written with whole numbers more often than not."""
    if value is not None and float(value).is_integer():
        return str(int(value))
    return str(value)
