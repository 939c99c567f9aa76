"""Pipeline TOML models (`spec.py`) and the task graph built from them (`graph.py`)."""

from __future__ import annotations

import itertools
import textwrap
from pathlib import Path

import pytest

from infrakitchen_dagster.graph import build_graph, load_graph
from infrakitchen_dagster.spec import PipelineError, parse_duration, parse_pipeline, read_pipeline

MODULE_TF = 'variable "name" {\n  type = string\n}\n\noutput "id" {\n  value = var.name\n}\n'


def graph_of(tmp_path: Path, text: str, name: str = "stack"):
    """Write a pipeline (and a local module `modules/m`) and build its graph."""
    module = tmp_path / "modules" / "m"
    module.mkdir(parents=True, exist_ok=True)
    (module / "main.tf").write_text(MODULE_TF)
    path = tmp_path / f"{name}.toml"
    path.write_text(textwrap.dedent(text))
    return load_graph(path)


def problems_of(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(PipelineError) as info:
        graph_of(tmp_path, text)
    return info.value.problems


# ---------------------------------------------------------------------------------------
# durations


@pytest.mark.parametrize("text,seconds", [
    ("500ms", 0.5),
    ("10s", 10.0),
    ("5m", 300.0),
    ("1h", 3600.0),
    ("1h30m", 5400.0),
    ("2h45m30s", 9930.0),
    ("1.5s", 1.5),
    ("1m500ms", 60.5),
    ("250us", 0.00025),
    (" 10s ", 10.0),
])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", [
    "", "   ", "10", "10 seconds", "5x", "s", "ms", "1h 30m", "-5s", "10S", "1d", "h1",
    "1.s", "five minutes",
])
def test_bad_duration_raises(text):
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize("value", [10, 1.5, None, ["10s"]])
def test_duration_must_be_a_string(value):
    with pytest.raises(ValueError):
        parse_duration(value)


def test_durations_on_a_task():
    pipeline = parse_pipeline(textwrap.dedent("""
        [tasks.flaky]
        cmd = "echo"
        retries = 2
        retry_delay = "1m30s"
        timeout = "500ms"
    """), "p.toml")
    task = pipeline.tasks["flaky"]
    assert (task.retries, task.retry_delay, task.timeout) == (2, 90.0, 0.5)
    assert parse_pipeline('[tasks.t]\ncmd = "x"\n', "p.toml").tasks["t"].timeout is None


def test_bad_duration_on_a_task_names_the_key():
    with pytest.raises(PipelineError) as info:
        parse_pipeline('[tasks.slow]\ncmd = "x"\ntimeout = "5x"\n', "p.toml")
    assert len(info.value.problems) == 1
    assert "tasks.slow.timeout" in info.value.problems[0]
    assert "5x" in info.value.problems[0]


# ---------------------------------------------------------------------------------------
# unknown keys


@pytest.mark.parametrize("text,key,suggestion", [
    ('[tasks.b]\ncmd = "x"\ndepend_on = ["a"]\n[tasks.a]\ncmd = "y"\n', "depend_on",
     "depends_on"),
    ('on_failur = "t"\n[tasks.a]\ncmd = "y"\n', "on_failur", "on_failure"),
    ('[tasks.a]\ncmd = "y"\nretry_dely = "1s"\n', "retry_dely", "retry_delay"),
    ('[backend]\ntype = "local"\nconfg = {}\n', "confg", "config"),
    ('[[triggers]]\ntype = "cron"\nschedul = "0 6 * * *"\n', "schedul", "schedule"),
    ('[tasks.a]\nmodule = "m"\ndependency_tags = [{ name = "a", value = "b", '
     'inherited_by_child = true }]\n', "inherited_by_child", "inherited_by_children"),
])
def test_unknown_key_suggests_nearest(text, key, suggestion):
    with pytest.raises(PipelineError) as info:
        parse_pipeline(text, "p.toml")
    line = next(p for p in info.value.problems if key in p)
    assert "unknown key" in line
    assert f"did you mean {suggestion!r}" in line
    assert str(info.value).startswith("p.toml: ")


def test_unknown_key_without_near_match_has_no_suggestion():
    with pytest.raises(PipelineError) as info:
        parse_pipeline('[tasks.a]\ncmd = "y"\nzzzzzz = 1\n', "p.toml")
    (line,) = info.value.problems
    assert "zzzzzz" in line and "did you mean" not in line


def test_toml_syntax_error_has_line_and_column():
    with pytest.raises(PipelineError) as info:
        parse_pipeline('[tasks.a]\ncmd = "y"\nretries 2\n', "p.toml")
    (line,) = info.value.problems
    assert "line 3" in line and "column" in line


# ---------------------------------------------------------------------------------------
# names


def test_name_defaults_to_file_stem(tmp_path):
    path = tmp_path / "my-stack_2.toml"
    path.write_text('[tasks.a]\ncmd = "echo"\n')
    pipeline = read_pipeline(path)
    assert pipeline.name == "my-stack_2"
    assert pipeline.job_prefix == "my_stack_2"
    assert pipeline.source_dir == tmp_path.resolve()


def test_explicit_name_wins_over_stem(tmp_path):
    path = tmp_path / "file.toml"
    path.write_text('name = "other"\n[tasks.a]\ncmd = "echo"\n')
    assert read_pipeline(path).name == "other"


@pytest.mark.parametrize("name", ["Bad Name!", "-lead", "UPPER", "a.b", ""])
def test_bad_pipeline_name(name):
    with pytest.raises(PipelineError) as info:
        parse_pipeline(f'name = "{name}"\n[tasks.a]\ncmd = "echo"\n', "p.toml")
    assert any("name" in p for p in info.value.problems)


# ---------------------------------------------------------------------------------------
# matrix


MATRIX = """
    [tasks.init]
    cmd = "echo init"

    [tasks.deploy]
    cmd = "echo {{.region}} {{.size}}"
    depends_on = ["init"]
    [tasks.deploy.matrix]
    region = ["us", "eu"]
    size = [1, 2]

    [tasks.collect]
    cmd = "echo collect"
    depends_on = ["deploy"]

    [tasks.one]
    cmd = "echo one"
    depends_on = ["deploy[region=eu,size=2]"]
"""
DEPLOY_NODES = [
    "deploy[region=us,size=1]",
    "deploy[region=us,size=2]",
    "deploy[region=eu,size=1]",
    "deploy[region=eu,size=2]",
]


def test_matrix_expansion_names_and_order(tmp_path):
    graph = graph_of(tmp_path, MATRIX)
    assert [n for n in graph.order if n.startswith("deploy")] == DEPLOY_NODES
    assert list(graph.nodes) == ["init", *DEPLOY_NODES, "collect", "one"]
    node = graph.nodes["deploy[region=eu,size=1]"]
    assert node.task_name == "deploy"
    assert node.matrix == {"region": "eu", "size": 1}
    assert node.deps == ("init",)
    assert graph.expand("deploy") == DEPLOY_NODES
    assert graph.expand("deploy[region=us,size=2]") == ["deploy[region=us,size=2]"]


def test_bare_matrix_name_in_depends_on_means_all_nodes(tmp_path):
    graph = graph_of(tmp_path, MATRIX)
    assert graph.nodes["collect"].deps == tuple(DEPLOY_NODES)
    assert graph.nodes["one"].deps == ("deploy[region=eu,size=2]",)
    order = graph.order
    assert all(order.index(n) < order.index("collect") for n in DEPLOY_NODES)
    assert set(graph.children["init"]) == set(DEPLOY_NODES)


def test_matrix_node_asset_names_are_dagster_safe(tmp_path):
    graph = graph_of(tmp_path, MATRIX)
    names = {graph.nodes[n].asset_name for n in DEPLOY_NODES}
    assert len(names) == 4
    for name in names:
        assert all(c.isalnum() or c in "_-" for c in name), name


def test_register_templated_by_matrix_value(tmp_path):
    graph = graph_of(tmp_path, """
        [vars]
        BASE = "x"

        [tasks.estimate]
        cmd = "echo 42"
        register = "estimated_delta_{{.env}}"
        [tasks.estimate.matrix]
        env = ["dev", "staging", "prod"]

        [tasks.gate]
        cmd = "echo {{.estimated_delta_dev}} {{.estimated_delta_prod}} {{.BASE}}"
        depends_on = ["estimate"]
    """)
    registers = {n: graph.nodes[n].registers for n in graph.expand("estimate")}
    assert registers == {
        "estimate[env=dev]": ("estimated_delta_dev",),
        "estimate[env=staging]": ("estimated_delta_staging",),
        "estimate[env=prod]": ("estimated_delta_prod",),
    }
    assert graph.registered_by()["estimated_delta_staging"] == "estimate[env=staging]"


def test_untemplated_register_on_matrix_is_registered_twice(tmp_path):
    problems = problems_of(tmp_path, """
        [tasks.estimate]
        cmd = "echo 42"
        register = "estimate"
        [tasks.estimate.matrix]
        env = ["dev", "prod"]
    """)
    assert any("registered by two tasks" in p and "'estimate'" in p for p in problems)


def test_unknown_matrix_node_in_depends_on(tmp_path):
    problems = problems_of(tmp_path, MATRIX.replace("region=eu,size=2", "region=eu,size=3"))
    assert any("deploy[region=eu,size=3]" in p for p in problems)


# ---------------------------------------------------------------------------------------
# cycles


@pytest.mark.parametrize("edges", [
    {"a": ["b"], "b": ["a"]},
    {"a": ["c"], "b": ["a"], "c": ["b"]},
    {"a": ["a"]},
    {"s": [], "a": ["s", "d"], "b": ["a"], "c": ["b"], "d": ["c"], "e": ["d"]},
])
def test_cycle_is_named(tmp_path, edges):
    text = "".join(
        f'[tasks.{name}]\ncmd = "echo {name}"\ndepends_on = {deps!r}\n\n'.replace("'", '"')
        for name, deps in edges.items()
    )
    problems = problems_of(tmp_path, text)
    (line,) = [p for p in problems if "cycle" in p]
    assert line.startswith("dependency cycle: ")
    chain = line.removeprefix("dependency cycle: ").split(" -> ")
    assert chain[0] == chain[-1]
    assert len(chain) >= 2
    for src, dst in itertools.pairwise(chain):
        assert dst in edges[src], f"{src} -> {dst} is not a depends_on edge in {line!r}"
    in_cycle = {n for n in edges if n not in ("s", "e")}
    assert set(chain) == in_cycle


def test_no_cycle_in_a_diamond(tmp_path):
    graph = graph_of(tmp_path, """
        [tasks.a]
        cmd = "echo"
        [tasks.b]
        cmd = "echo"
        depends_on = ["a"]
        [tasks.c]
        cmd = "echo"
        depends_on = ["a"]
        [tasks.d]
        cmd = "echo"
        depends_on = ["b", "c"]
    """)
    assert graph.order == ["a", "b", "c", "d"]


# ---------------------------------------------------------------------------------------
# width


@pytest.mark.parametrize("text,width", [
    ('[tasks.a]\ncmd = "x"\n', 1),
    ('[tasks.a]\ncmd = "x"\n[tasks.b]\ncmd = "x"\ndepends_on = ["a"]\n'
     '[tasks.c]\ncmd = "x"\ndepends_on = ["b"]\n', 1),
    ('[tasks.a]\ncmd = "x"\n[tasks.b]\ncmd = "x"\n[tasks.c]\ncmd = "x"\n', 3),
    ('[tasks.root]\ncmd = "x"\n'
     '[tasks.b]\ncmd = "x"\ndepends_on = ["root"]\n'
     '[tasks.c]\ncmd = "x"\ndepends_on = ["root"]\n'
     '[tasks.d]\ncmd = "x"\ndepends_on = ["root"]\n'
     '[tasks.e]\ncmd = "x"\ndepends_on = ["b", "c", "d"]\n', 3),
    # longest-path layering: `late` sits at level 2 next to `z`
    ('[tasks.a]\ncmd = "x"\n[tasks.b]\ncmd = "x"\ndepends_on = ["a"]\n'
     '[tasks.z]\ncmd = "x"\ndepends_on = ["b"]\n'
     '[tasks.late]\ncmd = "x"\ndepends_on = ["b"]\n'
     '[tasks.other]\ncmd = "x"\n', 2),
])
def test_graph_width(tmp_path, text, width):
    assert graph_of(tmp_path, text).width == width


def test_graph_width_counts_matrix_nodes(tmp_path):
    assert graph_of(tmp_path, MATRIX).width == 4


def test_teardown_tasks_are_not_nodes(tmp_path):
    graph = graph_of(tmp_path, """
        on_failure = "cleanup"
        [tasks.a]
        cmd = "echo"
        [tasks.cleanup]
        type = "forensic"
        cmd = "echo {{.failed_task}}"
    """)
    assert list(graph.nodes) == ["a"]
    assert list(graph.teardowns) == ["cleanup"]
    assert graph.width == 1


# ---------------------------------------------------------------------------------------
# destroy targets


RESOURCES = """
    on_failure = "teardown-all"

    [tasks.network]
    module = "modules/m"
    variables = { name = "net" }

    [tasks.announce]
    cmd = "echo {{.network.id}}"
    depends_on = ["network"]

    [tasks.database]
    module = "modules/m"
    variables = { name = "{{.network.id}}" }
    depends_on = ["announce"]

    [tasks.app]
    module = "modules/m"
    variables = { name = "app-{{.zone}}" }
    depends_on = ["database", "network"]
    [tasks.app.matrix]
    zone = ["a", "b"]

    [tasks.cache]
    module = "modules/m"
    variables = { name = "cache" }

    [tasks.teardown-all]
    type = "forensic"
    destroy = "all"

    [tasks.teardown-app]
    type = "forensic"
    destroy = ["app", "network"]
"""


def test_destroy_all_in_reverse_order(tmp_path):
    graph = graph_of(tmp_path, RESOURCES)
    assert graph.resources == ["network", "database", "app[zone=a]", "app[zone=b]", "cache"]
    targets = graph.destroy_targets("teardown-all")
    assert targets == ["cache", "app[zone=b]", "app[zone=a]", "database", "network"]
    assert "announce" not in targets
    order = graph.order
    for node in targets:  # children always come before their parents
        for parent in graph.ancestors(node):
            if parent in targets:
                assert targets.index(node) < targets.index(parent)
        assert node in order


def test_destroy_all_only_what_is_provisioned(tmp_path):
    graph = graph_of(tmp_path, RESOURCES)
    provisioned = {"network", "app[zone=b]", "announce"}
    assert graph.destroy_targets("teardown-all", provisioned) == ["app[zone=b]", "network"]
    assert graph.destroy_targets("teardown-all", set()) == []


def test_destroy_list_expands_matrix_and_reverses(tmp_path):
    graph = graph_of(tmp_path, RESOURCES)
    assert graph.destroy_targets("teardown-app") == ["app[zone=b]", "app[zone=a]", "network"]


def test_destroy_of_a_command_task_is_refused(tmp_path):
    problems = problems_of(tmp_path, RESOURCES.replace('["app", "network"]',
                                                       '["app", "announce"]'))
    assert any("'announce'" in p and "not a resource" in p for p in problems)


def test_build_graph_reports_every_problem_at_once(tmp_path):
    path = tmp_path / "many.toml"
    path.write_text(textwrap.dedent("""
        [vars]
        A = "1"
        [tasks.a]
        cmd = "echo {{.nope}}"
        depends_on = ["ghost"]
        on_failure = "missing"
        [tasks.b]
        cmd = "echo"
        if = "x >= 1"
    """))
    with pytest.raises(PipelineError) as info:
        build_graph(read_pipeline(path))
    text = "\n".join(info.value.problems)
    for needle in ("ghost", "missing", "x >= 1", "{{.nope}}"):
        assert needle in text
    assert len(info.value.problems) == 4


# ---------------------------------------------------------------------------------------
# bad input refused (issue 9 item 6) and the control-plane keys


def test_new_keys_default_off(tmp_path):
    pipeline = graph_of(tmp_path, '[tasks.a]\ncmd = "echo"\n').pipeline
    assert pipeline.approvers is None and pipeline.approvers_file is None
    assert pipeline.allow_self_approval is False
    assert pipeline.allow_external_modules is False


def _keypair(tmp_path: Path, name: str) -> str:
    """A real ed25519 public key line from ssh-keygen."""
    import subprocess

    key = tmp_path / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)],
                   check=True, capture_output=True)
    return (tmp_path / f"{name}.pub").read_text().strip()


def test_approvers_file_resolves_next_to_the_toml(tmp_path):
    alice, bob = _keypair(tmp_path, "alice"), _keypair(tmp_path, "bob")
    signers = tmp_path / "team" / "allowed_signers"
    signers.parent.mkdir()
    signers.write_text(
        "# who may approve\n\n"
        f"alice@example.com {alice}\n"
        f'bob@example.com,robert@example.com namespaces="infrakitchen" {bob}\n')
    graph = graph_of(tmp_path, """
        approval = true
        owners = ["alice"]
        approvers = "team/allowed_signers"
        allow_self_approval = true
        [tasks.a]
        cmd = "echo"
    """)
    assert graph.pipeline.approvers_file == signers.resolve()
    assert graph.pipeline.approvers_file.is_absolute()
    assert graph.pipeline.allow_self_approval is True


@pytest.mark.parametrize("content,needle", [
    ("alice@example.com\n", "line 1"),
    ("# c\nalice@example.com ssh-ed25519\n", "line 2"),
    ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE\n", "line 1"),  # no principal
    ("alice@example.com ssh-ed25519 not*base64\n", "line 1"),
    ("# only comments\n\n", "names no signer"),
])
def test_bad_approvers_file_is_one_line(tmp_path, content, needle):
    (tmp_path / "signers").write_text(content)
    problems = problems_of(tmp_path, """
        approvers = "signers"
        [tasks.a]
        cmd = "echo"
    """)
    assert len(problems) == 1, problems
    assert "approvers file 'signers'" in problems[0] and needle in problems[0]


def test_missing_approvers_file(tmp_path):
    problems = problems_of(tmp_path, 'approvers = "nope"\n[tasks.a]\ncmd = "echo"\n')
    assert problems == [f"approvers file 'nope' does not exist ({tmp_path.resolve() / 'nope'})"]


@pytest.mark.parametrize("module", ["/opt/modules/m", "../elsewhere/m", "modules/../../x/m",
                                    "./../m"])
def test_module_outside_the_pipeline_directory_is_refused(tmp_path, module):
    problems = problems_of(tmp_path, f'[tasks.a]\nmodule = "{module}"\n')
    assert len(problems) == 1, problems
    assert "outside the pipeline's directory" in problems[0]
    assert "allow_external_modules = true" in problems[0]


def test_external_module_allowed_when_the_pipeline_says_so(tmp_path):
    outside = tmp_path / "shared" / "m"
    outside.mkdir(parents=True)
    (outside / "main.tf").write_text(MODULE_TF)
    inner = tmp_path / "pipelines"
    (inner / "modules" / "m").mkdir(parents=True)
    (inner / "modules" / "m" / "main.tf").write_text(MODULE_TF)
    text = '[tasks.a]\nmodule = "{}"\n[tasks.b]\nmodule = "../shared/m"\n'
    (inner / "p.toml").write_text(text.format(outside))
    with pytest.raises(PipelineError) as info:
        load_graph(inner / "p.toml")
    assert len(info.value.problems) == 2
    (inner / "p.toml").write_text("allow_external_modules = true\n" + text.format(outside))
    graph = load_graph(inner / "p.toml")
    assert graph.module_dir("a") == outside.resolve()
    assert graph.module_dir("b") == outside.resolve()


@pytest.mark.parametrize("module", ["modules/m", "./modules/m", "modules/../modules/m"])
def test_module_inside_the_pipeline_directory_is_fine(tmp_path, module):
    graph = graph_of(tmp_path, f'[tasks.a]\nmodule = "{module}"\n')
    assert graph.module_dir("a") == (tmp_path / "modules" / "m").resolve()


def test_remote_module_is_not_an_external_path(tmp_path):
    graph = graph_of(tmp_path, '[tasks.a]\nmodule = "git::https://git.example/m.git//net"\n')
    assert graph.resources == ["a"]


@pytest.mark.parametrize("value", ['"0s"', '"0ms"', '"-5s"', '"0h0m"'])
@pytest.mark.parametrize("key", ["timeout", "retry_delay"])
def test_zero_or_negative_durations_are_refused(key, value):
    with pytest.raises(PipelineError) as info:
        parse_pipeline(f'[tasks.a]\ncmd = "x"\n{key} = {value}\n', "p.toml")
    assert len(info.value.problems) == 1
    assert info.value.problems[0].startswith(f"tasks.a.{key}: duration ")


def test_zero_trigger_interval_is_refused():
    with pytest.raises(PipelineError) as info:
        parse_pipeline('[[triggers]]\ntype = "file_watch"\npath = "/x"\ninterval = "0s"\n'
                       '[tasks.a]\ncmd = "x"\n', "p.toml")
    assert info.value.problems == ["triggers[0].interval: duration '0s' must be greater than zero"]


@pytest.mark.parametrize("content", [b"", b"# nothing yet\n\n# [tasks.a]\n", b"\n\n"])
def test_empty_file_is_not_a_pipeline(tmp_path, content):
    path = tmp_path / "p.toml"
    path.write_bytes(content)
    with pytest.raises(PipelineError) as info:
        read_pipeline(path)
    assert info.value.problems == [
        "empty file: not a pipeline (it needs at least one [tasks.NAME] table)"]


def test_pipeline_without_tasks(tmp_path):
    assert problems_of(tmp_path, 'description = "x"\n') == [
        "no tasks: a pipeline needs at least one [tasks.NAME] table"]


def test_binary_and_non_utf8_files_are_one_clear_line(tmp_path):
    import gzip

    binary = tmp_path / "zipped.toml"
    binary.write_bytes(gzip.compress(b'[tasks.a]\ncmd = "x"\n', mtime=0))
    with pytest.raises(PipelineError) as info:
        read_pipeline(binary)
    assert str(info.value) == (f"{binary}: binary file (contains NUL bytes), not a pipeline "
                               "TOML file")
    latin = tmp_path / "latin.toml"
    latin.write_bytes('[tasks.a]\ncmd = "echo café"\n'.encode("latin-1"))
    with pytest.raises(PipelineError) as info:
        read_pipeline(latin)
    assert info.value.problems == [
        "not UTF-8 text (invalid byte 0xe9 on line 2); a pipeline file must be UTF-8 TOML"]


def test_utf8_bom_is_accepted(tmp_path):
    path = tmp_path / "bom.toml"
    path.write_bytes('\ufeff[tasks.a]\ncmd = "echo é"\n'.encode())
    assert read_pipeline(path).tasks["a"].cmd == "echo é"


def test_register_of_an_undeclared_output(tmp_path):
    problems = problems_of(tmp_path, """
        [tasks.net]
        module = "modules/m"
        register = ["id", "vpc_id"]
        variables = { name = "n" }
    """)
    assert problems == ["task 'net': register names output 'vpc_id', which module 'modules/m' "
                        "does not declare (outputs: id)"]
    graph = graph_of(tmp_path, '[tasks.net]\nmodule = "modules/m"\nregister = "id"\n')
    assert graph.nodes["net"].registers == ("id",)


def test_matrix_register_names_use_matrix_keys_only(tmp_path):
    graph = graph_of(tmp_path, """
        [tasks.build]
        cmd = "echo 1"
        register = "build_{{.os}}"
        matrix = { os = ["linux", "darwin"] }
    """)
    assert [n.registers for n in graph.nodes.values()] == [("build_linux",), ("build_darwin",)]


def test_undeclared_module_variable_suggests_the_declared_one(tmp_path):
    problems = problems_of(tmp_path, '[tasks.a]\nmodule = "modules/m"\nvariables = { nme = 1 }\n')
    assert problems == ["task 'a': variables sets 'nme', which module 'modules/m' does not "
                        "declare (did you mean 'name'?)"]


def test_module_with_tf_json_is_not_second_guessed(tmp_path):
    (tmp_path / "modules" / "j").mkdir(parents=True)
    (tmp_path / "modules" / "j" / "main.tf.json").write_text('{"output": {"x": {"value": 1}}}')
    graph = graph_of(tmp_path, """
        [tasks.a]
        module = "modules/j"
        register = "x"
        variables = { anything = 1 }
        [tasks.b]
        cmd = "echo {{.a.x}}"
        depends_on = ["a"]
    """)
    assert graph.resources == ["a"]


def test_unquoted_hcl_labels_are_declarations(tmp_path):
    from infrakitchen_dagster.graph import module_declarations

    (tmp_path / "main.tf").write_text('variable region {\n}\noutput "id" {\n  value = 1\n}\n'
                                      'output arn{\n  value = 2\n}\n')
    assert module_declarations(tmp_path) == ({"region"}, {"id", "arn"})


@pytest.mark.parametrize("field,text", [
    ("cmd", 'cmd = "echo {{.A"'),
    ("variables", 'module = "modules/m"\nvariables = { name = "{{.A}" }'),
    ("env", 'cmd = "x"\nenv = { K = "{{ .A" }'),
    ("working_dir", 'cmd = "x"\nworking_dir = "/tmp/{{.A"'),
    ("register", 'cmd = "x"\nregister = "r_{{.A"'),
    ("k", 'abstract = true\ndependency_configs = [{ name = "k", value = "{{.A" }]'),
])
def test_unclosed_reference_refused_in_every_template(tmp_path, field, text):
    problems = problems_of(tmp_path, f'[vars]\nA = "1"\n[tasks.t]\n{text}\n')
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"task 't': {field}: unclosed reference '{{{{")


def test_teardown_builtins_only_in_teardown_tasks(tmp_path):
    graph = graph_of(tmp_path, """
        on_failure = "t"
        [tasks.a]
        cmd = "echo"
        [tasks.t]
        type = "forensic"
        cmd = "echo {{.failed_task}} {{.error_message}} {{.failed_dag}}"
    """)
    assert list(graph.teardowns) == ["t"]
    problems = problems_of(tmp_path, '[tasks.a]\ncmd = "echo {{.error_message}}"\n')
    assert problems == ["task 'a': cmd uses {{.error_message}}, which only teardown tasks "
                        '(type = "forensic") receive']


def test_undefined_reference_in_cmd_with_vars(tmp_path):
    problems = problems_of(tmp_path, '[vars]\nA = "1"\n[tasks.a]\ncmd = "echo {{.A}} {{.NOPE}}"\n')
    assert problems == ["task 'a': cmd uses {{.NOPE}}, which no var, register or upstream "
                        "task provides"]


def test_on_failure_must_name_a_teardown(tmp_path):
    problems = problems_of(tmp_path, 'on_failure = "b"\n[tasks.a]\ncmd = "x"\n'
                                     '[tasks.b]\ncmd = "y"\n')
    assert problems == ["on_failure names 'b', which is not a teardown task "
                        '(give it type = "forensic")']


def test_names_from_run_vars_of_a_file_without_vars(tmp_path):
    from infrakitchen_dagster.graph import names_from_run_vars

    graph = graph_of(tmp_path, """
        [tasks.probe]
        cmd = "echo {{.TARGET}}"
        register = "status"
        [tasks.report]
        cmd = "echo {{.status}} {{.TARGET}} {{.run_id}} {{.zone}}"
        depends_on = ["probe"]
        matrix = { zone = ["a", "b"] }
    """)
    assert names_from_run_vars(graph) == {"TARGET": ["probe", "report"], "run_id": ["report"]}
    closed = graph_of(tmp_path, '[vars]\nA = "1"\n[tasks.a]\ncmd = "echo {{.A}}"\n')
    assert names_from_run_vars(closed) == {}
