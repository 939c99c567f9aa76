"""`{{.x}}` references, shell-safe insertion (`render_shell`), `if` conditions and masking.

The shell tests run every rendered script with `/bin/sh -c` in a temporary directory and
compare stdout byte for byte: a value must arrive exactly as it is, whatever the shell
context the reference sits in, and must never run as code (no `PWNED` file appears).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from infrakitchen_dagster.interpolation import (
    Condition,
    InterpolationError,
    Ref,
    env_name,
    malformed_references,
    malformed_references_in,
    mask,
    references,
    references_in,
    render,
    render_shell,
    render_value,
)

NASTY_VALUES = [
    "plain",
    "a b",
    "  leading and trailing spaces  ",
    "it's",
    '"q"',
    "a'b\"c",
    "$(touch PWNED)",
    "`touch PWNED`",
    "`id`",
    "; touch PWNED",
    "; rm -rf x",
    "'; touch PWNED; '",
    '"; touch PWNED; "',
    "&& touch PWNED ||",
    "| touch PWNED",
    "> PWNED",
    "\\",
    "trailing\\",
    "\\n is not a newline",
    "$HOME",
    "${HOME:-x}$((1+1))",
    "*",
    "#not a comment",
    "-n",
    "line1\nline2",
    "ends with newlines\n\n",
    "\ttab\tseparated",
    "",
    "héllo wörld ✓ 日本語 🚀",
]

# (id, template, expected stdout for value v)
CONTEXTS = [
    ("bare", "printf %s {{.x}}", lambda v: v),
    ("double-quotes", 'printf %s "v={{.x}}"', lambda v: "v=" + v),
    ("single-quotes", "printf %s 'v={{.x}}'", lambda v: "v=" + v),
    # command substitution drops trailing newlines, as it does for any value
    ("subst-in-dquotes", 'printf %s "$(printf %s {{.x}})"', lambda v: v.rstrip("\n")),
    ("dquotes-in-subst-in-dquotes", 'printf %s "$(printf %s "{{.x}}")"',
     lambda v: v.rstrip("\n")),
    ("heredoc", "cat <<EOF\n{{.x}}\nEOF", lambda v: v + "\n"),
    ("quoted-heredoc", "cat <<'EOF'\n{{.x}}\nEOF", lambda v: v + "\n"),
    ("after-heredoc", "cat <<EOF\nhead\nEOF\nprintf %s {{.x}}", lambda v: "head\n" + v),
    ("after-quoted-string", "printf %s 'a' \"b\" >/dev/null; printf %s {{.x}}", lambda v: v),
]


def run_sh(script: str, cwd: Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["/bin/sh", "-c", script],
        cwd=cwd,
        capture_output=True,
        timeout=10,
        env={"PATH": "/usr/bin:/bin", "HOME": str(cwd), "LC_ALL": "C.UTF-8"},
    )


def const(value):
    return lambda ref: value


@pytest.mark.parametrize("context,template,expected", CONTEXTS, ids=[c[0] for c in CONTEXTS])
@pytest.mark.parametrize("value", NASTY_VALUES, ids=[repr(v) for v in NASTY_VALUES])
def test_render_shell_value_arrives_verbatim(tmp_path, context, template, expected, value):
    script = render_shell(template, const(value))
    result = run_sh(script, tmp_path)
    assert not (tmp_path / "PWNED").exists(), f"value ran as code: {script!r}"
    assert result.returncode == 0, (script, result.stderr.decode(errors="replace"))
    assert result.stdout.decode("utf-8") == expected(value), script


@pytest.mark.parametrize("value", [*NASTY_VALUES, "a\ntouch PWNED\n'"],
                         ids=[repr(v) for v in [*NASTY_VALUES, "a\ntouch PWNED\n'"]])
def test_render_shell_reference_in_comment_stays_a_comment(tmp_path, value):
    # A reference inside a `#` comment must not end the comment: a newline in the value
    # would turn the rest of the value into commands (or break the script).
    script = render_shell("echo hi # note {{.x}}\necho after", const(value))
    result = run_sh(script, tmp_path)
    assert not (tmp_path / "PWNED").exists(), f"value ran as code: {script!r}"
    assert (result.returncode, result.stdout) == (0, b"hi\nafter\n"), (
        script, result.stderr.decode(errors="replace"))


@pytest.mark.parametrize("value", ["a; touch PWNED", "it's"])
@pytest.mark.parametrize("template", [
    "echo $((1 << 20))\nprintf %s {{.x}}",
    "SIZE=$((1<<20)); echo $SIZE\nprintf %s {{.x}}",
], ids=["arith", "arith-assign"])
def test_render_shell_arithmetic_shift_is_not_a_heredoc(tmp_path, template, value):
    # `<<` inside `$((...))` is a shift, not a heredoc: the next lines are ordinary
    # commands, so a value there needs ordinary (bare word) quoting.
    script = render_shell(template, const(value))
    result = run_sh(script, tmp_path)
    assert not (tmp_path / "PWNED").exists(), f"value ran as code: {script!r}"
    assert result.stdout.decode() == "1048576\n" + value, (
        script, result.stderr.decode(errors="replace"))


def test_render_shell_wf_style_echo_has_no_stray_quotes(tmp_path):
    script = render_shell('echo "VPC {{.vpc_id}} in {{.region}}"',
                          lambda ref: {"vpc_id": "vpc-123", "region": "us-east-1"}[ref.name])
    assert script == 'echo "VPC vpc-123 in us-east-1"'
    assert run_sh(script, tmp_path).stdout == b"VPC vpc-123 in us-east-1\n"


def test_render_shell_several_references_and_types(tmp_path):
    values = {"n": 3, "flag": True, "items": ["a", "b c"], "s": "x y"}
    script = render_shell('printf "%s|" {{.n}} {{.flag}} {{.s}} "{{.items}}"',
                          lambda ref: values[ref.name])
    assert run_sh(script, tmp_path).stdout.decode() == '3|true|x y|["a", "b c"]|'


def test_render_shell_wf_escaped_dollar_then_substitution(tmp_path):
    # the shape used in wf-examples/cost-modeling.toml
    template = 'echo "est +\\$$(echo "{{.delta}}" | tr -d \'+\')"'
    script = render_shell(template, const("+42; touch PWNED"))
    result = run_sh(script, tmp_path)
    assert result.stdout.decode() == "est +$42; touch PWNED\n"
    assert not (tmp_path / "PWNED").exists()


def test_render_shell_unresolvable_reference_propagates(tmp_path):
    def resolve(ref):
        raise InterpolationError(f"cannot resolve {ref}")

    with pytest.raises(InterpolationError, match=r"\{\{\.missing\}\}"):
        render_shell("echo {{.missing}}", resolve)


@pytest.mark.parametrize("template", [
    "cat <<EOF\n{{.x}}\nEOF",
    "cat <<'EOF'\n{{.x}}\nEOF",
    'cat <<"EOF"\n{{.x}}\nEOF',
    "cat <<\\EOF\n{{.x}}\nEOF",
    "cat << EOF\n{{.x}}\nEOF",
], ids=["unquoted", "single-quoted", "double-quoted", "backslash", "space"])
@pytest.mark.parametrize("value", ["EOF", "a\nEOF\ntouch PWNED", "a\nEOF"])
def test_heredoc_delimiter_in_value_is_refused(template, value):
    with pytest.raises(InterpolationError, match="delimiter"):
        render_shell(template, const(value))


def test_heredoc_delimiter_mentioned_inside_a_line_is_fine(tmp_path):
    script = render_shell("cat <<EOF\n{{.x}}\nEOF", const("not EOF here\nEOFX"))
    assert run_sh(script, tmp_path).stdout == b"not EOF here\nEOFX\n"


@pytest.mark.parametrize("template", [
    "cat <<-EOF\n\t{{.x}}\n\tEOF",
    "cat <<-'EOF'\n\t{{.x}}\n\tEOF",
], ids=["unquoted", "quoted"])
def test_tab_stripping_heredoc_delimiter_in_value_is_refused(template):
    # With `<<-` the shell strips leading tabs, so the line "\tEOF" ends the heredoc and
    # whatever follows it in the value runs as a command.
    with pytest.raises(InterpolationError, match="delimiter"):
        render_shell(template, const("a\n\tEOF\ntouch PWNED"))


def test_heredoc_value_completing_a_delimiter_line_never_runs(tmp_path):
    # The template's text before the reference ("E") plus the value's first line ("OF")
    # make the delimiter line "EOF"; the rest of the value must not become commands.
    template = "cat <<EOF\nE{{.x}}\nEOF"
    try:
        script = render_shell(template, const("OF\ntouch PWNED\ncat <<X"))
    except InterpolationError:
        return
    run_sh(script, tmp_path)
    assert not (tmp_path / "PWNED").exists(), f"value ran as code: {script!r}"


# ---------------------------------------------------------------------------------------
# render / references


def test_render_whole_reference_keeps_type():
    values = {"n": 3, "azs": ["a", "b"], "on": False, "cfg": {"k": 1}}
    for name, value in values.items():
        assert render("{{." + name + "}}", lambda ref: values[ref.name]) == value
    assert render("{{.n}}", const(3)) == 3
    assert isinstance(render("{{ .n }}", const(3)), int)


def test_render_embedded_reference_is_text():
    assert render("n={{.n}}", const(3)) == "n=3"
    assert render("{{.a}}-{{.b}}", lambda ref: {"a": 1, "b": True}[ref.name]) == "1-true"
    assert render("l={{.l}}", const(["x", 1])) == 'l=["x", 1]'
    assert render("no refs at all", const("unused")) == "no refs at all"


def test_render_value_nested():
    values = {"region": "eu-west-1", "count": 2}
    out = render_value(
        {"a": "{{.region}}", "b": ["{{.count}}", "x-{{.count}}"], "c": 5},
        lambda ref: values[ref.name],
    )
    assert out == {"a": "eu-west-1", "b": [2, "x-2"], "c": 5}


def test_references_parse():
    refs = references("echo {{.a}} {{ .B_2 }} {{.task-name.output}} {{.x-y}} {{not}} {{.}}")
    assert refs == [Ref("a"), Ref("B_2"), Ref("task-name", "output"), Ref("x-y")]
    assert refs[2].name == "task-name" and refs[2].attr == "output"
    assert str(refs[2]) == "{{.task-name.output}}"
    assert str(Ref("a")) == "{{.a}}"


def test_references_of_matrix_node_output():
    (ref,) = references("{{.build[env=dev].image}}")
    assert ref == Ref("build[env=dev]", "image")


def test_references_in_nested_values():
    value = {"a": "{{.x}}", "b": ["{{.y.out}}", 3, {"c": "z {{.z}}"}], "d": None}
    assert references_in(value) == [Ref("x"), Ref("y", "out"), Ref("z")]


# ---------------------------------------------------------------------------------------
# Condition


@pytest.mark.parametrize("expression,var,op,literal", [
    ('health == "passed"', "health", "==", "passed"),
    ("health != 'failed'", "health", "!=", "failed"),
    ("count == 3", "count", "==", "3"),
    ("  status==ok  ", "status", "==", "ok"),
    ('msg == "say \\"hi\\""', "msg", "==", 'say "hi"'),
    ("x == ''", "x", "==", ""),
    ('x == "a b"', "x", "==", "a b"),
    ('provision-alb.status == "up"', "provision-alb.status", "==", "up"),
])
def test_condition_parse(expression, var, op, literal):
    cond = Condition.parse(expression)
    assert (cond.var, cond.op, cond.literal) == (var, op, literal)


def test_condition_ref_of_dotted_var():
    assert Condition.parse('provision-alb.status == "up"').ref == Ref("provision-alb", "status")
    assert Condition.parse("health == ok").ref == Ref("health")


@pytest.mark.parametrize("expression,value,expected", [
    ('health == "passed"', "passed", True),
    ('health == "passed"', "failed", False),
    ('health != "passed"', "passed", False),
    ('health != "passed"', "failed", True),
    ("count == 3", 3, True),
    ("count != 3", 4, True),
    ("enabled == true", True, True),
    ("enabled == true", False, False),
    ('health == "passed"', "passed ", False),
])
def test_condition_evaluate(expression, value, expected):
    assert Condition.parse(expression).evaluate(const(value)) is expected


@pytest.mark.parametrize("expression", [
    "health >= 3",
    "health",
    "== 3",
    "health ==",
    'health == "unterminated',
    "health == a b",
    "health = 3",
    "health === 3",
    "a == 1 && b == 2",
    "",
    "1abc == 3",
])
def test_condition_bad_expressions_raise(expression):
    with pytest.raises(ValueError, match="if expression"):
        Condition.parse(expression)


# ---------------------------------------------------------------------------------------
# mask / env_name


def test_mask_longest_first():
    line = "password=abcdef and abc and xabcdefx"
    assert mask(line, ["abc", "abcdef"]) == "password=*** and *** and x***x"
    assert mask(line, ["abcdef", "abc"]) == "password=*** and *** and x***x"


def test_mask_short_and_empty_secrets_untouched():
    assert mask("ab a b xy", ["ab", "a", ""]) == "ab a b xy"
    assert mask("key=abc", ["abc", "ab"]) == "key=***"


def test_mask_every_occurrence_and_duplicates():
    assert mask("s3cr3t/s3cr3t", ["s3cr3t", "s3cr3t"]) == "***/***"
    assert mask("nothing here", ["s3cr3t"]) == "nothing here"


@pytest.mark.parametrize("name,expected", [
    ("vpc_id", "IK_VPC_ID"),
    ("REGION", "IK_REGION"),
    ("alb-dns", "IK_ALB_DNS"),
    ("provision-network.id", "IK_PROVISION_NETWORK_ID"),
    ("build[env=dev]", "IK_BUILD_ENV_DEV_"),
])
def test_env_name(name, expected):
    assert env_name(name) == expected


# ---------------------------------------------------------------------------------------
# malformed references (refused at validation instead of printed literally)


@pytest.mark.parametrize("text,expected", [
    ("echo {{.X", ["unclosed reference '{{.X' (no closing '}}')"]),
    ("echo {{ .X }", ["unclosed reference '{{ .X }' (no closing '}}')"]),
    ("echo {{.X and {{.Y}}", ["unclosed reference '{{.X and' (no closing '}}')"]),
    ("a {{.X\nb", ["unclosed reference '{{.X' (no closing '}}')"]),
    ("{{.a b}}", ["malformed reference '{{.a b}}' (expected {{.name}} or {{.task.output}})"]),
    ("{{.net.outputs.id}}",
     ["malformed reference '{{.net.outputs.id}}' (expected {{.name}} or {{.task.output}})"]),
    ("{{.}}", ["malformed reference '{{.}}' (expected {{.name}} or {{.task.output}})"]),
])
def test_malformed_references_are_found(text, expected):
    assert malformed_references(text) == expected


@pytest.mark.parametrize("text", [
    "echo {{.X}} {{ .Y }} {{.net.id}} {{.list[0]}}",
    "docker ps --format '{{json .}}'",  # not a `{{.` reference: left alone
    "plain text with } and {{ braces }}",
    "",
])
def test_well_formed_text_has_no_malformed_references(text):
    assert malformed_references(text) == []


def test_malformed_references_in_nested_values():
    value = {"a": ["ok {{.x}}", {"b": "bad {{.y"}], "c": 3, "d": True}
    assert malformed_references_in(value) == ["unclosed reference '{{.y' (no closing '}}')"]
    assert malformed_references_in(7) == []


def test_render_leaves_an_unclosed_reference_literal():
    """Why validation must refuse it: rendering cannot tell it from text."""
    assert render("echo {{.X", lambda ref: "v") == "echo {{.X"
