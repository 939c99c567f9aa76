"""What a built task graph must satisfy, beyond its shape: every `register` names an
output the module declares, every variable exists in the module, the modules parse, every
`rules` entry is usable and holds for the values known before a run, and every `{{...}}`
reference resolves to something that provides it.

These read the finished graph (modules, ancestors, what registers what), so they run after
`graph.build_graph` has built it, and report one line per problem like the rest of
validation.
"""

from __future__ import annotations

import contextlib
import difflib
import re
from pathlib import Path

from .graph import BACKEND_BUILTINS, TEARDOWN_BUILTINS, Node, PipelineGraph
from .interpolation import (
    PLACEHOLDER,
    Condition,
    Ref,
    malformed_references,
    references,
    references_in,
    render_value,
)
from .module_schema import ModuleSchemaError, module_schema
from .spec import Rule
from .value_rules import describe, rule_problems, violation


def graph_problems(graph: PipelineGraph, registered: dict[str, str]) -> list[str]:
    """Every problem of a built graph, one line each."""
    return [*_module_schema_problems(graph), *_register_problems(graph),
            *_module_variable_problems(graph), *_rule_problems(graph),
            *reference_problems(graph, registered)]


def _register_problems(graph: PipelineGraph) -> list[str]:
    """Registered names must be referenceable, and a resource can only register an output
    its module declares (else the name is silently never set)."""
    problems: list[str] = []
    pipeline = graph.pipeline
    name_re = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
    reported: set[tuple[str, str]] = set()
    for node in graph.nodes.values():
        task = node.task
        where = f"task {node.task_name!r}"
        for template in task.registers:
            for ref in references(template):
                if ref.attr is not None or ref.name not in node.matrix:
                    key = (node.task_name, str(ref))
                    if key not in reported:
                        reported.add(key)
                        problems.append(f"{where}: register uses {ref}, but only matrix keys "
                                        "of the task can be used in a register name")
        for var in node.registers:
            if PLACEHOLDER.search(var) or malformed_references(var):
                continue  # reported above or by _template_problems
            if not name_re.fullmatch(var):
                problems.append(f"{where}: register name {var!r} cannot be referenced as "
                                "{{.NAME}} (use letters, digits, _ and -)")
                continue
            if var in pipeline.vars:
                problems.append(f"{where}: register {var!r} has the name of a [vars] entry "
                                "(the var would always win); rename one of them")
                continue
            declarations = graph.declarations(node.name) if node.kind == "resource" else None
            if declarations is None:
                continue
            outputs = declarations[1]
            if var not in outputs and (node.task_name, var) not in reported:
                reported.add((node.task_name, var))
                declared = ", ".join(sorted(outputs)) or "none"
                problems.append(f"{where}: register names output {var!r}, which module "
                                f"{task.module!r} does not declare (outputs: {declared})")
    return problems


def _module_variable_problems(graph: PipelineGraph) -> list[str]:
    """A `variables` key the module does not declare is a typo tofu would only warn about
    (the module then silently runs with its default)."""
    problems: list[str] = []
    for name, task in graph.pipeline.tasks.items():
        if task.kind != "resource" or not task.variables:
            continue
        declarations = graph.declarations(graph.expand(name)[0])
        if declarations is None:
            continue
        declared = declarations[0]
        for key in task.variables:
            if key not in declared:
                close = difflib.get_close_matches(key, sorted(declared), n=1, cutoff=0.6)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                problems.append(f"task {name!r}: variables sets {key!r}, which module "
                                f"{task.module!r} does not declare{hint}")
    return problems


def _module_schema_problems(graph: PipelineGraph) -> list[str]:
    """A module file that does not parse: one line naming the file, once per module."""
    problems: list[str] = []
    seen: set[Path] = set()
    for name, task in graph.pipeline.tasks.items():
        nodes = graph.expand(name) if task.kind == "resource" else []
        directory = graph.module_dir(nodes[0]) if nodes else None
        if directory is None or directory in seen or not directory.is_dir():
            continue
        seen.add(directory)
        try:
            module_schema(directory)
        except ModuleSchemaError as exc:
            problems.append(f"task {name!r}: module {task.module!r}: {exc}")
    return problems


def _rule_problems(graph: PipelineGraph) -> list[str]:
    """Each task's `rules`: usable themselves, naming a variable the module declares, and
    passed by the values known now (literals, and templates over `[vars]` defaults and
    matrix keys, per environment); values known only at run time are checked then."""
    problems: list[str] = []
    pipeline = graph.pipeline
    for name, task in pipeline.tasks.items():
        if not task.rules:
            continue
        where = f"task {name!r}"
        if task.kind not in ("resource", "abstract"):
            problems.append(f"{where}: `rules` apply to the variables of resource and "
                            "abstract tasks")
            continue
        nodes = graph.expand(name)
        declared = graph.declarations(nodes[0]) if task.kind == "resource" else None
        sensitive = set(task.sensitive)
        directory = graph.module_dir(nodes[0]) if task.kind == "resource" else None
        with contextlib.suppress(ModuleSchemaError):  # reported by _module_schema_problems
            sensitive |= module_schema(directory).sensitive_variables if directory else set()
        usable: dict[str, Rule] = {}
        for var, rule in task.rules.items():
            own = [f"{where}: rules.{var}: {p}" for p in rule_problems(rule)]
            if declared is not None and var not in declared[0] and var not in task.variables:
                close = difflib.get_close_matches(var, sorted(declared[0]), n=1, cutoff=0.6)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                own.append(f"{where}: rules names {var!r}, which module {task.module!r} "
                           f"does not declare{hint}")
            problems.extend(own)
            if not own:
                usable[var] = rule
        for line in _rule_value_problems(graph, nodes, usable, sensitive):
            if line not in problems:
                problems.append(line)
    return problems


def _rule_value_problems(graph: PipelineGraph, nodes: list[str], rules: dict[str, Rule],
                         sensitive: set[str]) -> list[str]:
    """Rule violations of the values each node would resolve to in each environment, as
    far as they are known without running anything."""
    pipeline = graph.pipeline
    environments = pipeline.environment_names
    problems: list[str] = []
    for node_name in nodes:
        node = graph.nodes[node_name]
        for var, rule in rules.items():
            raw = _known_raw_value(graph, node, var)
            if raw is None:
                continue  # not set here: the module's default is the module's business
            refs = references_in(raw)
            broken_in: dict[str, list[str]] = {}  # refusal line -> environments
            for environment in environments:
                values = {**pipeline.vars, **pipeline.environments.get(environment, {}),
                          **node.matrix}
                if any(r.attr is not None or r.name not in values for r in refs):
                    break  # resolved at run time: checked then
                value = render_value(raw, lambda ref, v=values: v[ref.name])
                broken = violation(rule, value)
                if broken is not None:
                    line = describe(node_name, var, value, broken, var in sensitive)
                    broken_in.setdefault(line, []).append(environment)
            for line, where in broken_in.items():
                problems.append(line if len(where) == len(environments) else
                                f"{line} in environment{'s' if len(where) > 1 else ''} "
                                + ", ".join(repr(e) for e in where))
    return problems


def _known_raw_value(graph: PipelineGraph, node: Node, var: str) -> object:
    """The template a variable is set from: the task's `variables`, else the nearest
    ancestor's inherited `dependency_configs` entry (as the run resolves it)."""
    if var in node.task.variables:
        return node.task.variables[var]
    for ancestor in graph.ancestors(node.name):
        for item in graph.nodes[ancestor].task.dependency_configs:
            if item.inherited_by_children and item.name == var:
                return item.value
    return None




def reference_problems(graph: PipelineGraph, registered: dict[str, str],
                        open_names: dict[str, list[str]] | None = None) -> list[str]:
    pipeline = graph.pipeline
    runtime = set(pipeline.vars)
    for overrides in pipeline.environments.values():
        runtime.update(overrides)
    problems: list[str] = []
    outputs_cache: dict[str, set[str] | None] = {}

    def outputs_of(node_name: str) -> set[str] | None:
        if node_name not in outputs_cache:
            declarations = graph.declarations(node_name)
            outputs_cache[node_name] = declarations[1] if declarations else None
        return outputs_cache[node_name]

    def check(node: Node, field_name: str, refs: list[Ref], extra: set[str]) -> None:
        for ref in refs:
            if ref.attr is not None:
                targets = graph.expand(ref.name)
                if not targets:
                    problems.append(
                        f"task {node.name!r}: {field_name} uses {ref} but there is no task "
                        f"{ref.name!r}"
                    )
                    continue
                target = targets[0]
                tnode = graph.nodes.get(target)
                if tnode is None or tnode.kind != "resource":
                    problems.append(f"task {node.name!r}: {field_name} uses {ref} but "
                                    f"{ref.name!r} is not a resource task with outputs")
                elif node.kind != "teardown" and not (
                        node.name in graph.nodes and graph.is_upstream(target, node.name)):
                    problems.append(f"task {node.name!r}: {field_name} uses {ref} but "
                                    f"{ref.name!r} is not upstream (add it to depends_on)")
                else:
                    declared = outputs_of(target)
                    if declared is not None and ref.attr not in declared:
                        problems.append(f"task {node.name!r}: {field_name} uses {ref} but "
                                        f"module of {ref.name!r} has no output {ref.attr!r}")
                continue
            if ref.name in runtime or ref.name in registered or ref.name in extra:
                continue
            if ref.name in TEARDOWN_BUILTINS and node.kind != "teardown":
                problems.append(f"task {node.name!r}: {field_name} uses {ref}, which only "
                                'teardown tasks (type = "forensic") receive')
                continue
            if ref.name in node.matrix:
                continue
            if not pipeline.vars:
                # A file without [vars] (plain wf) takes any name from `--var` at run time.
                if open_names is not None:
                    users = open_names.setdefault(ref.name, [])
                    if node.task_name not in users:
                        users.append(node.task_name)
                continue
            problems.append(
                f"task {node.name!r}: {field_name} uses {ref}, which no var, register or "
                "upstream task provides"
            )

    for node in [*graph.nodes.values(), *graph.teardowns.values()]:
        task = node.task
        extra = set(TEARDOWN_BUILTINS) if node.kind == "teardown" else set()
        if task.cmd:
            check(node, "cmd", references(task.cmd), extra)
        check(node, "variables", references_in(task.variables), extra)
        check(node, "env", references_in(task.env), extra)
        for dep in (*task.dependency_configs, *task.dependency_tags):
            check(node, dep.name, references_in(dep.value), extra)
        if task.if_:
            with contextlib.suppress(ValueError):
                check(node, "if", [Condition.parse(task.if_).ref], extra)
        if task.working_dir:
            check(node, "working_dir", references(task.working_dir), extra)
        if task.backend:
            check(node, "backend", references_in(task.backend.config), set(BACKEND_BUILTINS))
        for integration in task.integrations or []:
            spec = pipeline.integrations.get(integration)
            if spec:
                plain = {k: v for k, v in spec.env.items() if isinstance(v, str)}
                check(node, f"integration {integration!r}", references_in(plain), extra)
    backend_refs = references_in(pipeline.backend.config)
    for ref in backend_refs:
        if ref.attr is None and ref.name not in runtime and ref.name not in BACKEND_BUILTINS:
            problems.append(f"backend.config uses {ref}, which no var provides "
                            f"(builtins: {', '.join(BACKEND_BUILTINS)})")
    return problems


