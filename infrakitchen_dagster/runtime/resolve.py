"""Turn a task into one resolved value, once: variables, env, backend, secrets, fingerprint.

Everything an operation needs from the graph and the store is looked up here, at one
moment, and then travels as a `ResolvedTask`; the operations never ask the store for a
value again. The fingerprint is the approval fingerprint: every input that shapes the
apply is in it, so any difference makes an approved request stale.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..graph import BACKEND_BUILTINS, Node
from ..interpolation import InterpolationError, Ref, render, render_value, to_text
from ..module_schema import ModuleSchema, ModuleSchemaError, module_schema
from ..policy import PolicyError, PolicySet, pipeline_policies
from ..sources import CREDENTIAL_KEYS, SourceError, is_git_source
from ..sources import parse as parse_git_source
from ..sources import resolve as resolve_git_source
from ..spec import FromEnv
from ..store import RecordView
from ..tofu import BackendSettings
from .context import RunContext
from .errors import TaskFailure
from .record_context import inherited_entries, record_context

Lookup = Callable[[Ref], Any]


@dataclass(frozen=True)
class ResolvedTask:
    """What one run of a task works with, resolved once before anything runs."""

    node: Node
    variables: dict[str, Any]
    env: dict[str, str]
    backend: BackendSettings
    #: every text a log line must never show (credentials, sensitive values)
    secrets: frozenset[str]
    #: names of sensitive variables (declared, listed, or carrying a secret)
    sensitive: frozenset[str]
    fingerprint: str
    module_dir: Path | None
    module_hash: str
    #: a git module's {"module", "ref", "commit"} (the record's `source`); None when local
    source: dict[str, str] | None = None
    #: the record's `labels` and `tags` (own and inherited; see `record_context`)
    context: dict[str, Any] = field(default_factory=dict)
    #: the pipeline's Rego policies, judging every plan of this task (None: no policies)
    policies: PolicySet | None = None


def carrying(values: dict[str, Any], secrets: set[str] | frozenset[str]) -> set[str]:
    """Names whose value contains one of `secrets` (as masking would find it)."""
    usable = [secret for secret in secrets if secret and len(secret) >= 3]
    return {name for name, value in values.items()
            if any(secret in to_text(value) for secret in usable)}


def digest(values: dict[str, Any]) -> str:
    return hashlib.sha256(
        json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()


class Resolver:
    """Looks values up for one task; build one per operation (it caches store reads)."""

    def __init__(self, ctx: RunContext):
        self.ctx = ctx
        self._records: dict[str, RecordView | None] = {}
        self._registered: dict[str, tuple[Any, bool]] | None = None
        self._policies: tuple[PolicySet | None] | None = None  # (the set,) once loaded

    # -- lookups ----------------------------------------------------------------------

    def pipeline_vars(self) -> dict[str, Any]:
        pipeline = self.ctx.pipeline
        values: dict[str, Any] = dict(pipeline.vars)
        values.update(pipeline.environments.get(self.ctx.environment, {}))
        values.update(self.ctx.runtime_vars)
        return values

    def registered(self) -> dict[str, tuple[Any, bool]]:
        if self._registered is None:
            self._registered = self.ctx.store.registered(self.ctx.pipeline.name,
                                                         self.ctx.environment)
        return self._registered

    def _record_of(self, name: str) -> RecordView | None:
        if name not in self._records:
            self._records[name] = self.ctx.record(name)
        return self._records[name]

    def lookup(self, node: Node, extra: dict[str, Any] | None = None
               ) -> tuple[Lookup, set[str]]:
        """A function Ref -> value for `node`, plus the secrets it revealed so far."""
        values = self.pipeline_vars()
        secrets: set[str] = set()
        environment = self.ctx.environment

        def resolve(ref: Ref) -> Any:
            if ref.attr is not None:
                targets = self.ctx.graph.expand(ref.name)
                record = self._record_of(targets[0]) if targets else None
                if record is None or ref.attr not in record.outputs:
                    state = f"{record.state}/{record.status}" if record else "never provisioned"
                    raise InterpolationError(
                        f"{ref}: upstream task {ref.name!r} has no output {ref.attr!r} "
                        f"in environment {environment!r} ({state})")
                value = record.outputs[ref.attr]
                if ref.attr in record.sensitive_outputs:
                    secrets.add(to_text(value))
                return value
            if extra and ref.name in extra:
                return extra[ref.name]
            if ref.name in node.matrix:
                return node.matrix[ref.name]
            if ref.name in values:
                return values[ref.name]
            registered = self.registered()
            if ref.name in registered:
                value, sensitive = registered[ref.name]
                if sensitive:
                    secrets.add(to_text(value))
                return value
            raise InterpolationError(
                f"{ref} cannot be resolved: no runtime var, registered value or upstream "
                f"output named {ref.name!r} (pass it with --var {ref.name}=... or run the "
                "task that registers it first)")

        return resolve, secrets

    # -- pieces -----------------------------------------------------------------------

    def integrations(self, node: Node) -> list[str]:
        """A task's own integrations, else its nearest parents' (the reference's rule)."""
        if node.task.integrations is not None:
            return list(node.task.integrations)
        found: list[str] = []
        graph = self.ctx.graph
        for parent in graph.resource_parents(node.name):
            for name in self.integrations(graph.nodes[parent]):
                if name not in found:
                    found.append(name)
        return found

    def env(self, node: Node, resolve: Lookup
            ) -> tuple[dict[str, str], set[str], dict[str, str]]:
        """(env, secrets, digest per integration): integration env (credentials) and the
        task's env; `from_env` values become secrets."""
        env: dict[str, str] = {}
        secrets: set[str] = set()
        digests: dict[str, str] = {}
        for name in self.integrations(node):
            spec = self.ctx.pipeline.integrations[name]
            values: dict[str, str] = {}
            for key, value in spec.env.items():
                if isinstance(value, FromEnv):
                    if value.from_env not in os.environ:
                        raise TaskFailure(
                            f"integration {name!r}: environment variable {value.from_env!r} "
                            f"(for {key}) is not set")
                    values[key] = os.environ[value.from_env]
                    secrets.add(values[key])
                else:
                    values[key] = to_text(render(value, resolve))
            digests[name] = digest(values)
            env.update(values)
        for key, value in node.task.env.items():
            env[key] = to_text(render(value, resolve) if isinstance(value, str) else value)
        return env, secrets, digests

    def inherited(self, node: Node, resolve: Lookup) -> tuple[dict[str, Any], dict[str, Any]]:
        """(configs, tags) flowing from ancestors; nearer ancestors win on conflicts."""
        inherited_configs, inherited_tags = inherited_entries(self.ctx.graph, node, resolve)
        configs = {name: value for name, (value, _origin) in inherited_configs.items()}
        tags = {name: value for name, (value, _origin) in inherited_tags.items()}
        for item in node.task.dependency_tags:
            tags[item.name] = to_text(render_value(item.value, resolve))
        return configs, tags

    def tfvars(self, node: Node, resolve: Lookup) -> dict[str, Any]:
        """Inherited configs < task variables < runtime vars naming a module variable."""
        schema = self.schema(node)
        declared = set(schema.variables) if schema else set()
        configs, tags = self.inherited(node, resolve)
        values = {k: v for k, v in configs.items() if not declared or k in declared}
        values.update(render_value(dict(node.task.variables), resolve))
        for key, value in self.ctx.runtime_vars.items():
            if key in declared:
                values[key] = value
        if tags and "tags" in declared:
            merged = dict(tags)
            if isinstance(values.get("tags"), dict):
                merged.update(values["tags"])
            values["tags"] = merged
        return values

    def backend(self, node: Node, resolve: Lookup) -> BackendSettings:
        pipeline, environment = self.ctx.pipeline, self.ctx.environment
        spec = node.task.backend or pipeline.backend
        builtins = {"ik_pipeline": pipeline.name, "ik_task": node.asset_name,
                    "ik_environment": environment}
        assert set(builtins) == set(BACKEND_BUILTINS)

        def resolve_backend(ref: Ref) -> Any:
            return builtins[ref.name] if ref.name in builtins and not ref.attr else resolve(ref)

        config = {k: to_text(render_value(v, resolve_backend)) for k, v in spec.config.items()}
        if spec.type == "pg" and "schema_name" not in config:
            # one state per resource: the pg backend keys state by schema
            raw = f"ik_{pipeline.name}_{node.asset_name}_{environment}"
            config["schema_name"] = "".join(c if c.isalnum() else "_" for c in raw).lower()[:63]
        return BackendSettings(spec.type, tuple(sorted(config.items())))

    def sensitive_variables(self, node: Node) -> set[str]:
        """Listed in the task's `sensitive`, or declared `sensitive = true` by the module."""
        schema = self.schema(node)
        declared = schema.sensitive_variables if schema else set()
        return set(node.task.sensitive) | declared

    def schema(self, node: Node) -> ModuleSchema | None:
        """The module's parsed variables and outputs (parsed once per module content); a
        file edited since the pipeline loaded that no longer parses fails the task."""
        directory = self.ctx.graph.module_dir(node.name)
        if directory is None:
            return None
        try:
            return module_schema(directory)
        except ModuleSchemaError as exc:
            raise TaskFailure(f"module {node.task.module!r}: {exc}") from None

    def source(self, node: Node, env: dict[str, str], applied: bool) -> dict[str, str] | None:
        """A git module, resolved once for this operation to a local directory that the
        graph then gives as the task's module dir. `applied`: resolving for what the
        record was applied with (destroy, drift), so its recorded commit is used."""
        module = node.task.module
        if node.kind != "resource" or not is_git_source(module):
            return None
        record = self._record_of(node.name) if applied else None
        kept = (record.source or {}) if record is not None else {}
        base = self.ctx.pipeline.source_dir
        try:
            if kept.get("commit") and kept.get("module"):
                found = resolve_git_source(parse_git_source(kept["module"], base),
                                           credentials=env, commit=kept["commit"])
            else:
                found = resolve_git_source(parse_git_source(module, base), credentials=env,
                                           run_id=self.ctx.run_id)
        except SourceError as exc:
            raise TaskFailure(str(exc)) from None
        self.ctx.graph.use_source(node.name, found.directory)
        return found.record()

    def policies(self) -> PolicySet | None:
        """The pipeline's policy files, read once per resolver; one that does not load
        fails the task, naming the file."""
        if self._policies is None:
            try:
                self._policies = (pipeline_policies(self.ctx.pipeline),)
            except PolicyError as exc:
                raise TaskFailure(str(exc)) from None
        return self._policies[0]

    def fingerprint(self, node: Node, variables: dict[str, Any], backend: BackendSettings,
                    env: dict[str, str], integrations: dict[str, str], module_hash: str,
                    source: dict[str, str] | None = None) -> str:
        """Everything that shapes the apply. Integration values enter only as digests."""
        tofu = self.ctx.tofu
        payload = {
            "module": module_hash, "variables": variables,
            "backend": {"type": backend.type, "config": dict(backend.config)},
            "env": {k: v for k, v in env.items() if k in node.task.env},
            "integrations": integrations,
            "tofu": {"binary": Path(tofu.resolved_binary()).name, "version": tofu.version()},
            "environment": self.ctx.environment,
        }
        policies = self.policies()
        if policies is not None:  # the files that judge the plan: new files, new approval
            payload["policies"] = policies.digest
        if source is not None:  # a git module: the exact commit (local ones: content only)
            payload["source"] = {"commit": source["commit"],
                                 "subdir": parse_git_source(source["module"]).subdir}
        return digest(payload)

    # -- the whole value ------------------------------------------------------------------

    def resolve(self, node: Node, variables: dict[str, Any] | None = None) -> ResolvedTask:
        """Resolve `node`; `variables` (a record's applied values) replace the tfvars."""
        resolve, secrets = self.lookup(node)
        env, env_secrets, integrations = self.env(node, resolve)
        secrets |= {env[key] for key in CREDENTIAL_KEYS if env.get(key)}
        source = self.source(node, env, applied=variables is not None)
        if variables is None:
            variables = self.tfvars(node, resolve)
        backend = self.backend(node, resolve)
        secrets |= env_secrets
        # a variable that carries a secret (a sensitive upstream output, a registered
        # secret, a credential) is itself sensitive
        sensitive = self.sensitive_variables(node) | carrying(variables, secrets)
        secrets |= {to_text(variables[k]) for k in sensitive if k in variables}
        module_hash = self.ctx.graph.module_hash(node.name)
        return ResolvedTask(
            node=node, variables=variables, env=env, backend=backend,
            secrets=frozenset(secrets), sensitive=frozenset(sensitive),
            fingerprint=self.fingerprint(node, variables, backend, env, integrations,
                                         module_hash, source), source=source,
            module_dir=self.ctx.graph.module_dir(node.name), module_hash=module_hash,
            # the module string and its source as of this configuration (a record that
            # moved from one source to another, or to a local module, says so)
            context={**record_context(self.ctx.graph, node, resolve, secrets),
                     "source": source, "module": node.task.module},
            policies=self.policies())
