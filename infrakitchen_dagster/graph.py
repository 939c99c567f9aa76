"""The task DAG of a pipeline: matrix expansion, dependencies, order, teardown coverage.

Everything that can be known without running anything is checked here, so that
`ik validate` and definitions loading report every problem of a file at once.
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Literal

from .distributed import local_state_problems
from .interpolation import (
    Condition,
    malformed_references_in,
    render,
    to_text,
)
from .module_schema import ModuleSchema, ModuleSchemaError, module_schema
from .policy import policy_problems
from .sources import SourceError, is_git_source
from .sources import parse as parse_git_source
from .spec import (
    Pipeline,
    PipelineError,
    Scalar,
    Task,
    allowed_signers_problems,
    read_pipeline,
)

#: Names a teardown command always receives (wf's forensic variables).
TEARDOWN_BUILTINS = ("failed_task", "error_message", "failed_dag")
#: Names usable in backend config, so one backend block can give each resource its own state.
BACKEND_BUILTINS = ("ik_pipeline", "ik_task", "ik_environment")
_CRON_FIELD = re.compile(r"^(\*|\d+(-\d+)?|[A-Za-z]{3}(-[A-Za-z]{3})?)(/\d+)?$")
_CRON_ALIASES = {"@hourly", "@daily", "@weekly", "@monthly", "@yearly", "@annually", "@midnight"}


def is_valid_cron(expression: str) -> bool:
    text = expression.strip()
    if text in _CRON_ALIASES:
        return True
    fields = text.split()
    return len(fields) == 5 and all(
        all(_CRON_FIELD.match(part) for part in f.split(",")) for f in fields
    )


def is_remote_module(module: str) -> bool:
    return "::" in module or module.startswith(("git@", "https://", "http://"))


def git_source_problems(module: str) -> list[str]:
    """A remote module must be a well-formed `git::URL//subdir?ref=REF` (checked without
    the network: whether the ref exists is known only when a run resolves it)."""
    if not is_git_source(module):
        return [f"module {module!r}: remote modules are git sources, written "
                "git::URL//subdir?ref=TAG|BRANCH|COMMIT"]
    try:
        parse_git_source(module)
    except SourceError as exc:
        return [str(exc)]
    return []


@dataclass(frozen=True)
class Node:
    """One runnable unit: a task, or one combination of a matrix task."""

    name: str
    task_name: str
    task: Task
    matrix_values: tuple[tuple[str, Scalar], ...] = ()
    deps: tuple[str, ...] = ()
    registers: tuple[str, ...] = ()

    @property
    def kind(self) -> Literal["resource", "abstract", "command", "teardown"]:
        return self.task.kind

    @property
    def asset_name(self) -> str:
        """Asset key component: Dagster names may not contain `[`, `=` or `,`."""
        if not self.matrix_values:
            return self.task_name
        parts = [f"{k}-{to_text(v)}" for k, v in self.matrix_values]
        return re.sub(r"[^A-Za-z0-9_-]", "_", "__".join([self.task_name, *parts]))

    @property
    def op_name(self) -> str:
        return re.sub(r"[^A-Za-z0-9_]", "_", self.asset_name)

    @property
    def matrix(self) -> dict[str, Scalar]:
        return dict(self.matrix_values)


@dataclass
class PipelineGraph:
    pipeline: Pipeline
    nodes: dict[str, Node] = field(default_factory=dict)
    teardowns: dict[str, Node] = field(default_factory=dict)

    # -- structure --------------------------------------------------------------------

    # Everything below is linear in the graph's size (nodes + edges), never in its
    # transitive closure: a 10,000-resource chain must load as fast as 10,000 lone resources.

    @cached_property
    def order(self) -> list[str]:
        """Topological order, stable with respect to file order (iterative: no recursion
        limit on long chains)."""
        done: list[str] = []
        seen: set[str] = set()
        for root in self.nodes:
            if root in seen:
                continue
            seen.add(root)
            stack: list[tuple[str, int]] = [(root, 0)]
            while stack:
                name, index = stack.pop()
                deps = self.nodes[name].deps
                while index < len(deps) and deps[index] in seen:
                    index += 1
                if index < len(deps):
                    stack.append((name, index + 1))
                    seen.add(deps[index])
                    stack.append((deps[index], 0))
                else:
                    done.append(name)
        return done

    @cached_property
    def rank(self) -> dict[str, int]:
        """Position of each node in `order`."""
        return {n: i for i, n in enumerate(self.order)}

    @cached_property
    def children(self) -> dict[str, list[str]]:
        result: dict[str, list[str]] = {n: [] for n in self.nodes}
        for name in self.order:
            for dep in self.nodes[name].deps:
                result[dep].append(name)
        return result

    @cached_property
    def _by_task(self) -> dict[str, list[str]]:
        result: dict[str, list[str]] = {}
        for node in self.nodes.values():
            result.setdefault(node.task_name, []).append(node.name)
        return result

    def ancestors(self, name: str) -> list[str]:
        """All ancestors, nearest first (breadth-first), each once."""
        return self._walk(name, lambda n: self.nodes[n].deps)

    def descendants(self, name: str) -> list[str]:
        """All descendants, nearest first (breadth-first), each once."""
        return self._walk(name, lambda n: self.children[n])

    @staticmethod
    def _walk(name: str, step) -> list[str]:
        result: list[str] = []
        seen: set[str] = set()
        frontier = list(step(name))
        while frontier:
            nxt: list[str] = []
            for other in frontier:
                if other not in seen:
                    seen.add(other)
                    result.append(other)
                    nxt.extend(step(other))
            frontier = nxt
        return result

    def is_upstream(self, ancestor: str, name: str) -> bool:
        """Whether `ancestor` is a (transitive) dependency of `name`. A direct dependency
        answers at once; otherwise the ancestor set of `name` is built once and kept, so
        validation pays for closures only where a reference skips a generation."""
        if ancestor in self.nodes[name].deps:
            return True
        cache = self.__dict__.setdefault("_ancestor_sets", {})
        if name not in cache:
            cache[name] = frozenset(self.ancestors(name))
        return ancestor in cache[name]

    def nearest_upstream(self, name: str, members: frozenset[str]) -> list[str]:
        """Nearest ancestors of `name` that are in `members`, looking through the others:
        the direct edges of a job built over `members` only (plan, destroy)."""
        cache = self.__dict__.setdefault("_nearest", {}).setdefault(members, {})
        for current in self._postorder_of(name, cache):
            found: list[str] = []
            for dep in self.nodes[current].deps:
                for parent in ([dep] if dep in members else cache[dep]):
                    if parent not in found:
                        found.append(parent)
            cache[current] = found
        return cache[name]

    def _postorder_of(self, name: str, cache: dict[str, list[str]]) -> list[str]:
        """`name` and its ancestors not yet in `cache`, dependencies first."""
        result: list[str] = []
        seen = {name}
        stack: list[tuple[str, int]] = [(name, 0)]
        while stack:
            current, index = stack.pop()
            deps = self.nodes[current].deps
            while index < len(deps) and (deps[index] in seen or deps[index] in cache):
                index += 1
            if index < len(deps):
                stack.append((current, index + 1))
                seen.add(deps[index])
                stack.append((deps[index], 0))
            elif current not in cache:
                result.append(current)
        return result

    def nearest_downstream(self, name: str, members: frozenset[str]) -> list[str]:
        """Nearest descendants of `name` in `members` (the inverse of `nearest_upstream`)."""
        key = ("down", members)
        cache = self.__dict__.setdefault("_nearest", {})
        if key not in cache:
            inverse: dict[str, list[str]] = {n: [] for n in self.nodes}
            for member in self.order:
                if member in members:
                    for parent in self.nearest_upstream(member, members):
                        inverse[parent].append(member)
            cache[key] = inverse
        return cache[key][name]

    @cached_property
    def lifecycle_members(self) -> frozenset[str]:
        """Nodes with a lifecycle record: resources and abstract tasks."""
        return frozenset(n for n, node in self.nodes.items()
                         if node.kind in ("resource", "abstract"))

    def resource_parents(self, name: str) -> list[str]:
        """Nearest resource (or abstract) ancestors: the record's parents in the lifecycle."""
        return list(self.nearest_upstream(name, self.lifecycle_members))

    def resource_children(self, name: str) -> list[str]:
        """Nodes whose record has `name` among its parents, in topological order."""
        key = ("children", self.lifecycle_members)
        cache = self.__dict__.setdefault("_nearest", {})
        if key not in cache:
            inverse: dict[str, list[str]] = {n: [] for n in self.nodes}
            for node in self.order:
                for parent in self.resource_parents(node):
                    inverse[parent].append(node)
            cache[key] = inverse
        return list(cache[key][name])

    @property
    def resources(self) -> list[str]:
        return list(self._resources)

    @cached_property
    def _resources(self) -> tuple[str, ...]:
        return tuple(n for n in self.order if self.nodes[n].kind == "resource")

    @cached_property
    def width(self) -> int:
        """Largest number of tasks that can run at once (longest-path layering)."""
        level: dict[str, int] = {}
        for name in self.order:
            level[name] = 1 + max((level[d] for d in self.nodes[name].deps), default=-1)
        counts: dict[int, int] = {}
        for lvl in level.values():
            counts[lvl] = counts.get(lvl, 0) + 1
        return max(counts.values(), default=0)

    def registered_by(self) -> dict[str, str]:
        return {var: n.name for n in self.nodes.values() for var in n.registers}

    # -- failure handling -------------------------------------------------------------

    def teardown_of(self, name: str) -> str | None:
        """The task's own on_failure teardown (None: the global one applies)."""
        return self.nodes[name].task.on_failure

    def destroy_targets(self, teardown: str, provisioned: set[str] | None = None) -> list[str]:
        """Resource nodes a destroy-teardown tears down, children before parents."""
        spec = self.teardowns[teardown].task.destroy if teardown in self.teardowns else None
        if spec is None:
            spec = self.nodes[teardown].task.destroy if teardown in self.nodes else None
        if spec is None:
            return []
        if spec == "all":
            targets = list(self.resources)
        else:
            targets = [n for t in spec for n in self.expand(t)]
        if provisioned is not None:
            targets = [t for t in targets if t in provisioned]
        return sorted(set(targets), key=lambda n: self.rank[n], reverse=True)

    def expand(self, target: str) -> list[str]:
        """A task name (all matrix nodes) or a node name -> node names."""
        if target in self.nodes:
            return [target]
        return list(self._by_task.get(target, ()))

    # -- identity ---------------------------------------------------------------------

    def module_dir(self, name: str) -> Path | None:
        module = self.nodes[name].task.module
        if module is not None and is_git_source(module):
            # known only once a run resolved its commit (`use_source`): loading a
            # pipeline never needs the network or a clone
            return self.__dict__.get("_sources", {}).get(name)
        if module is None or is_remote_module(module):
            return None
        # resolved once per module path and graph: thousands of tasks share a few modules
        cache = self.__dict__.setdefault("_module_dirs", {})
        if module not in cache:
            cache[module] = (self.pipeline.source_dir / module).resolve()
        return cache[module]

    def use_source(self, name: str, directory: Path) -> None:
        """Where the git source of `name` was resolved to (by the run's `Resolver`): the
        module directory every later step of that task uses."""
        self.__dict__.setdefault("_sources", {})[name] = directory

    def module_hash(self, name: str) -> str:
        directory = self.module_dir(name)
        if directory is None:
            module = self.nodes[name].task.module or self.nodes[name].task.cmd or ""
            return hashlib.sha256(module.encode()).hexdigest()[:16]
        return directory_hash(directory)

    def code_version(self, name: str) -> str:
        """The asset's code version. Hashed once per module directory and graph (many
        resources share one module); `module_hash`, which fingerprints use at run time,
        always reads the directory afresh."""
        node = self.nodes[name]
        if node.kind == "resource":
            cache = self.__dict__.setdefault("_code_versions", {})
            key = self.module_dir(name) or name
            if key not in cache:
                cache[key] = self.module_hash(name)
            return cache[key]
        payload = repr((node.task.cmd, node.task.variables, node.matrix_values)).encode()
        return hashlib.sha256(payload).hexdigest()[:16]

    def declarations(self, name: str) -> tuple[set[str], set[str]] | None:
        """`checkable_declarations` of the node's module, read once per directory and
        graph (validation asks for every task; an estate shares a few modules)."""
        directory = self.module_dir(name)
        cache = self.__dict__.setdefault("_declarations", {})
        if directory not in cache:
            cache[directory] = checkable_declarations(directory)
        return cache[directory]

    def schema(self, name: str) -> ModuleSchema | None:
        """The node's module schema, read once per directory and graph (an estate's
        thousands of assets share a few modules); None while the module is not on disk (a
        git source this process has not fetched). Raises `ModuleSchemaError`."""
        directory = self.module_dir(name)
        if directory is None or not directory.is_dir():
            return None
        cache = self.__dict__.setdefault("_schemas", {})
        if directory not in cache:
            try:
                cache[directory] = module_schema(directory)
            except ModuleSchemaError as exc:
                cache[directory] = exc
        found = cache[directory]
        if isinstance(found, ModuleSchemaError):
            raise ModuleSchemaError(str(found))
        return found

    # -- drawing ----------------------------------------------------------------------

    def draw(self, fmt: str = "text", forensic: bool = False) -> str:
        if fmt == "mermaid":
            return self._draw_mermaid(forensic)
        if fmt == "dot":
            return self._draw_dot(forensic)
        return self._draw_text(forensic)

    def _label(self, name: str) -> str:
        node = self.nodes.get(name) or self.teardowns[name]
        parts = [f"[{name}]"]
        if node.kind != "command":
            parts.append(f"({node.kind})")
        if node.registers:
            parts.append("→ " + ", ".join(node.registers))
        if node.task.if_:
            parts.append(f"if {node.task.if_}")
        return " ".join(parts)

    def _draw_text(self, forensic: bool) -> str:
        lines = [f"{self.pipeline.name}: {len(self.nodes)} tasks"]
        placed: set[str] = set()

        def place(name: str, prefix: str, last: bool, root: bool) -> None:
            connector = "" if root else ("└── " if last else "├── ")
            extra = ""
            others = [d for d in self.nodes[name].deps if d != parent_of.get(name)]
            if others and not root:
                extra = "  (also after: " + ", ".join(others) + ")"
            cover = ""
            if forensic:
                own = self.teardown_of(name)
                cover = f"  ⚑ on_failure → {own}" if own else ""
                if not own and self.pipeline.on_failure and self.nodes[name].kind != "teardown":
                    cover = f"  ⚑ on_failure → {self.pipeline.on_failure} (global)"
            lines.append(prefix + connector + self._label(name) + extra + cover)
            placed.add(name)
            kids = [c for c in self.children[name] if parent_of.get(c) == name]
            child_prefix = prefix + ("" if root else ("    " if last else "│   "))
            for i, kid in enumerate(kids):
                place(kid, child_prefix, i == len(kids) - 1, False)

        rank = {n: i for i, n in enumerate(self.order)}
        parent_of = {
            n: max(self.nodes[n].deps, key=lambda d: rank[d])
            for n in self.nodes
            if self.nodes[n].deps
        }
        for name in self.order:
            if not self.nodes[name].deps:
                place(name, "", True, True)
        if forensic:
            lines.append("")
            lines.append("teardown tasks:")
            for name, node in self.teardowns.items():
                covers = [n for n in self.order if self.teardown_of(n) == name]
                if name == self.pipeline.on_failure:
                    covers.append("(global: any task without its own on_failure, crashed runs)")
                what = (
                    "destroy " + ", ".join(self.destroy_targets(name))
                    if node.task.destroy is not None
                    else "cmd"
                )
                lines.append(f"  [{name}] {what}; covers: {', '.join(covers) or '-'}")
        return "\n".join(lines)

    def _all_edges(self, forensic: bool) -> list[tuple[str, str, str]]:
        edges = [(d, n, "") for n in self.order for d in self.nodes[n].deps]
        if forensic:
            for n in self.order:
                target = self.teardown_of(n) or self.pipeline.on_failure
                if target:
                    edges.append((n, target, "on_failure"))
        return edges

    def _draw_mermaid(self, forensic: bool) -> str:
        ids = {n: f"n{i}" for i, n in enumerate([*self.order, *self.teardowns])}
        lines = ["graph TD"]
        for name, ident in ids.items():
            if name in self.nodes or forensic:
                lines.append(f'    {ident}["{self._label(name)}"]')
        for src, dst, label in self._all_edges(forensic):
            arrow = f" -. {label} .-> " if label else " --> "
            lines.append(f"    {ids[src]}{arrow}{ids[dst]}")
        return "\n".join(lines)

    def _draw_dot(self, forensic: bool) -> str:
        lines = [f'digraph "{self.pipeline.name}" {{', "  rankdir=TB;"]
        for name in [*self.order, *(self.teardowns if forensic else [])]:
            shape = "box" if name in self.nodes else "octagon"
            label = self._label(name).replace('"', '\\"')
            lines.append(f'  "{name}" [shape={shape}, label="{label}"];')
        for src, dst, label in self._all_edges(forensic):
            style = f' [style=dashed, label="{label}"]' if label else ""
            lines.append(f'  "{src}" -> "{dst}"{style};')
        lines.append("}")
        return "\n".join(lines)


def directory_hash(directory: Path) -> str:
    """Content hash of a module tree (what `code_version` and fingerprints are made of)."""
    digest = hashlib.sha256()
    for file in sorted(directory.rglob("*")):
        rel = file.relative_to(directory)
        if not file.is_file() or is_ignored_module_file(rel):
            continue
        digest.update(str(rel).encode() + b"\0" + file.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def is_ignored_module_file(rel: Path) -> bool:
    return rel.parts[0] == ".terraform" or rel.name.startswith("terraform.tfstate") or (
        rel.suffix in (".tfplan",) or rel.name == ".terraform.lock.hcl"
    )


def module_declarations(directory: Path) -> tuple[set[str], set[str]]:
    """(variables, outputs) a local module declares, from its parsed schema (raises
    `ModuleSchemaError` for a file that does not parse)."""
    schema = module_schema(directory)
    return set(schema.variables), set(schema.outputs)


def checkable_declarations(directory: Path | None) -> tuple[set[str], set[str]] | None:
    """`module_declarations` when a check may trust them: None for a remote or missing
    module, one that does not parse (reported once, by `_module_schema_problems`), or one
    with `.tf.json` files (often generated; left to tofu), so no check guesses."""
    if directory is None or not directory.is_dir() or any(directory.glob("*.tf.json")):
        return None
    try:
        return module_declarations(directory)
    except ModuleSchemaError:
        return None


# ---------------------------------------------------------------------------------------
# Building and validating


def _expand_matrix(name: str, task: Task) -> list[tuple[str, tuple[tuple[str, Scalar], ...]]]:
    if not task.matrix:
        return [(name, ())]
    keys = list(task.matrix)
    combos = itertools.product(*(task.matrix[k] for k in keys))
    result = []
    for combo in combos:
        pairs = tuple(zip(keys, combo, strict=True))
        label = ",".join(f"{k}={to_text(v)}" for k, v in pairs)
        result.append((f"{name}[{label}]", pairs))
    return result


def build_graph(pipeline: Pipeline) -> PipelineGraph:
    """Expand and check a parsed pipeline; raises `PipelineError` listing every problem."""
    problems: list[str] = []
    graph = PipelineGraph(pipeline)
    task_names = set(pipeline.tasks)

    if not pipeline.tasks:
        problems.append("no tasks: a pipeline needs at least one [tasks.NAME] table")
    module_dirs: dict[str, tuple[Path, str]] = {}  # thousands of tasks share a few modules
    for name, task in pipeline.tasks.items():
        problems.extend(_task_shape_problems(pipeline, name, task, module_dirs))
    problems.extend(_template_problems(pipeline))
    if pipeline.drift_schedule is not None and not is_valid_cron(pipeline.drift_schedule):
        problems.append(f"drift_schedule: {pipeline.drift_schedule!r} is not a cron expression")
    for trigger in pipeline.triggers:
        if trigger.type == "cron" and not (trigger.schedule and is_valid_cron(trigger.schedule)):
            problems.append(f"triggers: cron trigger needs a valid `schedule`, got "
                            f"{trigger.schedule!r}")
        if trigger.type == "file_watch" and not trigger.path:
            problems.append("triggers: file_watch trigger needs `path`")
    gated_tasks = [n for n, t in pipeline.tasks.items()
                   if (pipeline.approval if t.approval is None else t.approval)]
    if gated_tasks and not pipeline.owners:
        problems.append(f"approval flow is on (for {', '.join(sorted(gated_tasks))}) but "
                        "`owners` is empty: name who may approve, e.g. owners = [\"alice\"]")
    if pipeline.approvers_file is not None:
        problems.extend(allowed_signers_problems(pipeline.approvers_file, pipeline.approvers))
    problems.extend(local_state_problems(pipeline))  # INFRAKITCHEN_EXECUTOR=celery
    if pipeline.notifications is not None and pipeline.notifications.urls:
        from .notify import url_problems  # Apprise loads only for pipelines that notify

        problems.extend(url_problems(pipeline.notifications.urls))
    problems.extend(policy_problems(pipeline))  # every Rego file parses and compiles

    # Expand nodes (matrix) first so that dependencies may name single combinations.
    expanded: dict[str, list[tuple[str, tuple[tuple[str, Scalar], ...]]]] = {
        name: _expand_matrix(name, task) for name, task in pipeline.tasks.items()
    }
    node_names = {n for nodes in expanded.values() for n, _ in nodes}

    def resolve_target(target: str) -> list[str] | None:
        if target in expanded:
            return [n for n, _ in expanded[target]]
        if target in node_names:
            return [target]
        return None

    for name, task in pipeline.tasks.items():
        deps: list[str] = []
        for dep in task.depends_on:
            resolved = resolve_target(dep)
            if resolved is None:
                problems.append(_unknown(f"task {name!r}: depends_on", dep, task_names))
            elif dep in expanded and pipeline.tasks[dep].kind == "teardown":
                problems.append(f"task {name!r}: depends_on names teardown task {dep!r}")
            else:
                deps.extend(d for d in resolved if d not in deps)
        for node_name, pairs in expanded[name]:
            values = dict(pairs)
            registers = tuple(
                str(render(r, lambda ref, v=values: v.get(ref.name, str(ref))))
                for r in task.registers
            )
            node = Node(node_name, name, task, pairs, tuple(deps), registers)
            (graph.teardowns if task.kind == "teardown" else graph.nodes)[node_name] = node

    if pipeline.on_failure and pipeline.on_failure not in task_names:
        problems.append(_unknown("on_failure", pipeline.on_failure, task_names))
    elif pipeline.on_failure and pipeline.tasks[pipeline.on_failure].kind != "teardown":
        problems.append(_not_teardown("on_failure", pipeline.on_failure))
    for name, task in pipeline.tasks.items():
        if task.on_failure and task.on_failure not in task_names:
            problems.append(_unknown(f"task {name!r}: on_failure", task.on_failure, task_names))
        elif task.on_failure and pipeline.tasks[task.on_failure].kind != "teardown":
            problems.append(_not_teardown(f"task {name!r}: on_failure", task.on_failure))
        if isinstance(task.destroy, list):
            for target in task.destroy:
                if target not in task_names and target not in node_names:
                    problems.append(_unknown(f"task {name!r}: destroy", target, task_names))
                elif pipeline.tasks.get(target, task).kind not in ("resource",) and (
                    target in pipeline.tasks
                ):
                    problems.append(
                        f"task {name!r}: destroy names {target!r}, which is not a resource "
                        "task (only tasks with `module` can be destroyed)"
                    )

    cycle = _find_cycle(graph)
    if cycle:
        problems.append("dependency cycle: " + " -> ".join(cycle))
        raise PipelineError(pipeline.path, problems)

    registered: dict[str, str] = {}
    for node in graph.nodes.values():
        for var in node.registers:
            if var in registered and registered[var] != node.name:
                problems.append(
                    f"variable {var!r} is registered by two tasks: {registered[var]!r} and "
                    f"{node.name!r}"
                )
            registered[var] = node.name

    from .graph_checks import graph_problems  # it reads the graph built here

    problems.extend(graph_problems(graph, registered))
    if problems:
        raise PipelineError(pipeline.path, problems)
    return graph


def _unknown(where: str, target: str, known: set[str]) -> str:
    close = difflib.get_close_matches(target, sorted(known), n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{where} names unknown task {target!r}{hint}"


def _not_teardown(where: str, target: str) -> str:
    return (f"{where} names {target!r}, which is not a teardown task "
            '(give it type = "forensic")')


def is_external_module(module: str) -> bool:
    """A local module path that is absolute or climbs out of the pipeline's directory
    (`..`): such a pipeline runs code from wherever its path points, so it must say so with
    `allow_external_modules = true`."""
    if is_remote_module(module):
        return False
    path = Path(module).expanduser()
    if path.is_absolute():
        return True
    parts: list[str] = []
    for part in path.parts:
        if part == "..":
            if not parts:
                return True
            parts.pop()
        elif part != ".":
            parts.append(part)
    return False


def _template_problems(pipeline: Pipeline) -> list[str]:
    """Every text that is rendered must hold only well-formed references."""
    problems: list[str] = []

    def check(where: str, value: object) -> None:
        problems.extend(f"{where}: {p}" for p in malformed_references_in(value))

    for name, task in pipeline.tasks.items():
        where = f"task {name!r}"
        check(f"{where}: cmd", task.cmd)
        check(f"{where}: variables", task.variables)
        check(f"{where}: env", task.env)
        check(f"{where}: working_dir", task.working_dir)
        check(f"{where}: register", task.registers)
        for dep in (*task.dependency_configs, *task.dependency_tags):
            check(f"{where}: {dep.name}", dep.value)
        if task.backend:
            check(f"{where}: backend", task.backend.config)
    for name, integration in pipeline.integrations.items():
        plain = [v for v in integration.env.values() if isinstance(v, str)]
        check(f"integration {name!r}: env", plain)
    check("backend.config", pipeline.backend.config)
    return problems


def _module_directory(pipeline: Pipeline, module: str,
                      seen: dict[str, tuple[Path, str]]) -> tuple[Path, str]:
    """(resolved directory, "missing" | "empty" | "ok") of a local module, once per path."""
    if module not in seen:
        directory = (pipeline.source_dir / module).resolve()
        state = ("missing" if not directory.is_dir() else
                 "ok" if any(directory.glob("*.tf")) or any(directory.glob("*.tf.json"))
                 else "empty")
        seen[module] = (directory, state)
    return seen[module]


def _task_shape_problems(pipeline: Pipeline, name: str, task: Task,
                         module_dirs: dict[str, tuple[Path, str]] | None = None) -> list[str]:
    problems: list[str] = []
    where = f"task {name!r}"
    if task.cmd is not None and task.module is not None:
        problems.append(f"{where}: has both `cmd` and `module`; a task is one or the other")
    if task.type == "forensic":
        if task.cmd is None and task.destroy is None:
            problems.append(f"{where}: a forensic (teardown) task needs `cmd` or `destroy`")
        if task.cmd is not None and task.destroy is not None:
            problems.append(f"{where}: has both `cmd` and `destroy`; choose one")
    else:
        if task.destroy is not None:
            problems.append(f"{where}: `destroy` is only for teardown tasks (type = \"forensic\")")
        if task.cmd is None and task.module is None and not task.abstract:
            problems.append(f"{where}: needs `cmd` (a command), `module` (a resource) or "
                            "`abstract = true`")
        if task.abstract and (task.cmd is not None or task.module is not None):
            problems.append(f"{where}: an abstract task has neither `cmd` nor `module`")
    if (task.module is not None and is_external_module(task.module)
            and not pipeline.allow_external_modules):
        problems.append(f"{where}: module {task.module!r} is outside the pipeline's directory "
                        f"({pipeline.source_dir}); move it under that directory or set "
                        "allow_external_modules = true")
    elif task.module is not None and is_remote_module(task.module):
        problems.extend(f"{where}: {p}" for p in git_source_problems(task.module))
    elif task.module is not None:
        directory, state = _module_directory(pipeline, task.module,
                                             {} if module_dirs is None else module_dirs)
        if state == "missing":
            problems.append(f"{where}: module directory {task.module!r} does not exist "
                            f"({directory})")
        elif state == "empty":
            problems.append(f"{where}: module directory {task.module!r} has no .tf files")
    if task.if_ is not None:
        try:
            Condition.parse(task.if_)
        except ValueError as exc:
            problems.append(f"{where}: {exc}")
    if task.kind != "resource":
        for key in ("frozen", "unique", "backend"):
            if getattr(task, key):
                problems.append(f"{where}: `{key}` applies to resource tasks (with `module`)")
    for integration in task.integrations or []:
        if integration not in pipeline.integrations:
            problems.append(f"{where}: unknown integration {integration!r} (define it under "
                            f"[integrations.{integration}])")
    if task.kind == "command" and len(task.registers) > 1:
        problems.append(f"{where}: a command task registers one value (its last stdout line)")
    return problems


def _find_cycle(graph: PipelineGraph) -> list[str] | None:
    """A dependency cycle in `depends_on` direction (`a -> b -> a`), or None.

    Depth-first without recursion, so a 10,000-task chain is no problem."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for root in graph.nodes:
        if root in state:
            continue
        state[root] = 1
        path: list[str] = [root]
        stack: list[int] = [0]  # next dependency index of each path entry
        while path:
            name, index = path[-1], stack[-1]
            deps = graph.nodes[name].deps
            if index == len(deps):
                state[name] = 2
                path.pop()
                stack.pop()
                continue
            stack[-1] += 1
            dep = deps[index]
            if state.get(dep) == 1:
                return [*path[path.index(dep):], dep]
            if dep not in state:
                state[dep] = 1
                path.append(dep)
                stack.append(0)
    return None


def names_from_run_vars(graph: PipelineGraph) -> dict[str, list[str]]:
    """Names a file without [vars] uses that nothing in it provides -> the tasks using them.

    Such a (plain wf) file takes any name from `--var` at run time, so validation accepts
    them; a launcher calls this to refuse a run whose `--var`s miss one, before anything runs,
    instead of failing halfway."""
    from .graph_checks import reference_problems

    found: dict[str, list[str]] = {}
    reference_problems(graph, graph.registered_by(), open_names=found)
    return found


def load_graph(path: Path | str) -> PipelineGraph:
    """Read, parse and check a pipeline file into its task graph."""
    return build_graph(read_pipeline(path))


def load_pipeline(path: Path | str) -> Pipeline:
    """Read and fully validate a pipeline file (the stable Python entry point)."""
    return load_graph(path).pipeline


def find_pipeline(name_or_path: str, pipelines_dir: Path | str) -> Path:
    """`ik` accepts a pipeline name (found in the pipelines dir) or a file path."""
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml" and candidate.exists():
        return candidate
    directory = Path(pipelines_dir)
    for file in sorted(directory.glob("*.toml")):
        if file.stem == name_or_path:
            return file
    for file in sorted(directory.glob("*.toml")):
        try:
            if read_pipeline(file).name == name_or_path:
                return file
        except PipelineError:
            continue
    raise PipelineError(name_or_path, [f"no pipeline named {name_or_path!r} in {directory}/"])
