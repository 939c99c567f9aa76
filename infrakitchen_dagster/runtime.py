"""What one task does when it runs, independent of how Dagster scheduled it.

`TaskRuntime` resolves a node's values (runtime vars, registered values, upstream outputs,
inherited configs), moves its record through the lifecycle and runs tofu or the command.
The Dagster layer (`assets.py`) only turns its results into events, which keeps this
logic usable from the CLI, hooks and sensors alike.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from .approvals import (
    APPROVED,
    ApprovalError,
    ApprovalRequest,
    Approvals,
    Operation,
    Permission,
    PermissionDenied,
    RequestStatus,
    gated,
    plan_text,
)
from .failures import mark_dead_run_error
from .graph import BACKEND_BUILTINS, TEARDOWN_BUILTINS, Node, PipelineGraph
from .interpolation import (
    Condition,
    InterpolationError,
    Ref,
    env_name,
    render,
    render_shell,
    render_value,
    to_text,
)
from .process import ProcessResult, run_streaming
from .spec import FromEnv
from .store import LifecycleStore, RecordView, State, Status
from .store.lifecycle import Action
from .tofu import (
    BackendSettings,
    PlanSummary,
    TofuResource,
    TofuWorkspace,
    module_required_variables,
    module_sensitive_variables,
)

Log = Callable[[str], None]


class TaskFailure(Exception):
    """A task failed for a reason the user must fix; the message is the whole story."""


class Refused(TaskFailure):
    """The action was not allowed (role, lifecycle state): nothing was changed, so no
    teardown may follow it."""


@dataclass
class Outcome:
    """What a run of one task produced, for metadata and the caller."""

    #: applied | unchanged | ran | skipped | ignored_failure | destroyed |
    #: approval_pending | rejected | blocked
    status: str
    record: RecordView | None = None
    outputs: dict[str, Any] = field(default_factory=dict)
    sensitive_outputs: set[str] = field(default_factory=set)
    plan: PlanSummary | None = None
    registered: dict[str, Any] = field(default_factory=dict)
    duration: float = 0.0
    log_tail: str = ""
    tofu_version: str | None = None
    reason: str = ""
    request_id: int | None = None


@dataclass
class _Change:
    """What a provision or update would write: values, identity and where it runs."""

    variables: dict[str, Any]
    sensitive: set[str]
    fingerprint: str
    workspace: TofuWorkspace
    lines: list[str]
    secrets: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class Drift:
    drifted: bool
    plan: PlanSummary
    changes: list[str]

    def as_dict(self) -> dict[str, Any]:
        return {"drifted": self.drifted, "plan": self.plan.as_dict(), "changes": self.changes}


#: "  # null_resource.this will be created" -> (address, what happens)
_PLANNED_CHANGE = re.compile(r"^\s*# (\S+) (.*\b(?:will|must) be\b.*)$")
def _carrying(values: dict[str, Any], secrets: set[str]) -> set[str]:
    """Names whose value contains one of `secrets` (as masking would find it)."""
    usable = [secret for secret in secrets if secret and len(secret) >= 3]
    return {name for name, value in values.items()
            if any(secret in to_text(value) for secret in usable)}


PROVISION_OPS = (Operation.PROVISION.value, Operation.UPDATE.value)


@dataclass
class TaskRuntime:
    graph: PipelineGraph
    environment: str
    store: LifecycleStore
    tofu: TofuResource
    runtime_vars: dict[str, Any] = field(default_factory=dict)
    actor: str = "dagster"
    run_id: str | None = None
    log: Log = print  # tool output lines
    progress: Log = print  # what the task is doing, one line per step
    force: bool = False
    run_is_alive: Callable[[str], bool] = lambda _run_id: False

    @property
    def pipeline(self):
        return self.graph.pipeline

    # -- values -----------------------------------------------------------------------

    def pipeline_vars(self) -> dict[str, Any]:
        values: dict[str, Any] = dict(self.pipeline.vars)
        values.update(self.pipeline.environments.get(self.environment, {}))
        values.update(self.runtime_vars)
        return values

    def resolver(self, node: Node, extra: dict[str, Any] | None = None):
        """A function Ref -> value for `node`, plus the secrets it may reveal."""
        values = self.pipeline_vars()
        registered = self.store.registered(self.pipeline.name, self.environment)
        secrets: set[str] = set()
        records: dict[str, RecordView | None] = {}

        def record_of(name: str) -> RecordView | None:
            if name not in records:
                records[name] = self.store.get(self.pipeline.name, name, self.environment)
            return records[name]

        def resolve(ref: Ref) -> Any:
            if ref.attr is not None:
                targets = self.graph.expand(ref.name)
                record = record_of(targets[0]) if targets else None
                if record is None or ref.attr not in record.outputs:
                    state = f"{record.state}/{record.status}" if record else "never provisioned"
                    raise InterpolationError(
                        f"{ref}: upstream task {ref.name!r} has no output {ref.attr!r} "
                        f"in environment {self.environment!r} ({state})")
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

    def _render_env(self, node: Node, resolve) -> tuple[dict[str, str], set[str]]:
        """Integration env (credentials) + task env; `from_env` values become secrets."""
        env: dict[str, str] = {}
        secrets: set[str] = set()
        for name in self._integrations(node):
            spec = self.pipeline.integrations[name]
            for key, value in spec.env.items():
                if isinstance(value, FromEnv):
                    if value.from_env not in os.environ:
                        raise TaskFailure(
                            f"integration {name!r}: environment variable {value.from_env!r} "
                            f"(for {key}) is not set")
                    env[key] = os.environ[value.from_env]
                    secrets.add(env[key])
                else:
                    env[key] = to_text(render(value, resolve))
        for key, value in node.task.env.items():
            env[key] = to_text(render(value, resolve) if isinstance(value, str) else value)
        return env, secrets

    def _integrations(self, node: Node) -> list[str]:
        """A task's own integrations, else its nearest parents' (the reference's rule)."""
        if node.task.integrations is not None:
            return list(node.task.integrations)
        found: list[str] = []
        for parent in self.graph.resource_parents(node.name):
            for name in self._integrations(self.graph.nodes[parent]):
                if name not in found:
                    found.append(name)
        return found

    def inherited(self, node: Node) -> tuple[dict[str, Any], dict[str, Any]]:
        """(configs, tags) flowing from ancestors; nearer ancestors win on conflicts."""
        configs: dict[str, Any] = {}
        tags: dict[str, Any] = {}
        resolve, _ = self.resolver(node)
        for ancestor in reversed(self.graph.ancestors(node.name)):
            task = self.graph.nodes[ancestor].task
            for item in task.dependency_configs:
                if item.inherited_by_children:
                    configs[item.name] = render_value(item.value, resolve)
            for item in task.dependency_tags:
                if item.inherited_by_children:
                    tags[item.name] = to_text(render_value(item.value, resolve))
        for item in node.task.dependency_tags:
            tags[item.name] = to_text(render_value(item.value, resolve))
        return configs, tags

    def tfvars(self, node: Node, resolve) -> dict[str, Any]:
        """Inherited configs < task variables < runtime vars naming a module variable."""
        directory = self.graph.module_dir(node.name)
        from .graph import module_declarations

        declared = module_declarations(directory)[0] if directory else set()
        configs, tags = self.inherited(node)
        values = {k: v for k, v in configs.items() if not declared or k in declared}
        values.update(render_value(dict(node.task.variables), resolve))
        for key, value in self.runtime_vars.items():
            if key in declared:
                values[key] = value
        if tags and "tags" in declared:
            merged = dict(tags)
            if isinstance(values.get("tags"), dict):
                merged.update(values["tags"])
            values["tags"] = merged
        return values

    def backend(self, node: Node, resolve) -> BackendSettings:
        spec = node.task.backend or self.pipeline.backend
        builtins = {"ik_pipeline": self.pipeline.name, "ik_task": node.asset_name,
                    "ik_environment": self.environment}
        assert set(builtins) == set(BACKEND_BUILTINS)

        def resolve_backend(ref: Ref) -> Any:
            return builtins[ref.name] if ref.name in builtins and not ref.attr else resolve(ref)

        config = {k: to_text(render_value(v, resolve_backend)) for k, v in spec.config.items()}
        if spec.type == "pg" and "schema_name" not in config:
            # one state per resource: the pg backend keys state by schema
            raw = f"ik_{self.pipeline.name}_{node.asset_name}_{self.environment}"
            config["schema_name"] = "".join(c if c.isalnum() else "_" for c in raw).lower()[:63]
        return BackendSettings(spec.type, tuple(sorted(config.items())))

    # -- resource tasks ---------------------------------------------------------------

    def _sensitive_variables(self, node: Node) -> set[str]:
        """Listed in the task's `sensitive`, or declared `sensitive = true` by the module."""
        directory = self.graph.module_dir(node.name)
        declared = module_sensitive_variables(directory) if directory else set()
        return set(node.task.sensitive) | declared

    def _workspace(self, node: Node, *, backend: BackendSettings, env: dict[str, str],
                   secrets: set[str], timeout: float | None,
                   lines: list[str] | None = None) -> TofuWorkspace:
        """The node's working directory; every output line is logged (and kept in `lines`)."""

        def on_line(line: str) -> None:
            if lines is not None:
                lines.append(line)
            self.log(line)

        return self.tofu.workspace(
            pipeline=self.pipeline.name, environment=self.environment, task=node.asset_name,
            module_dir=self.graph.module_dir(node.name) or Path("."), backend=backend,
            env=env, on_line=on_line, secrets=secrets, timeout=timeout)

    def _record(self, node: Node) -> RecordView:
        record = self.store.create(
            self.pipeline.name, node.name, self.environment, kind=node.kind,
            module=node.task.module, parents=self.graph.resource_parents(node.name),
            actor=self.actor, run_id=self.run_id)
        if record.status == Status.IN_PROGRESS and record.last_run_id != self.run_id and not (
            record.last_run_id and self.run_is_alive(record.last_run_id)
        ):
            self.progress(
                f"{node.name}: run {record.last_run_id} died mid-operation; marking error")
            record = mark_dead_run_error(
                self.store, record,
                self.tofu.working_dir(self.pipeline.name, self.environment, node.asset_name),
                actor=self.actor, run_id=self.run_id)
        return record

    def _check_parents(self, node: Node) -> None:
        for parent in self.graph.resource_parents(node.name):
            record = self.store.get(self.pipeline.name, parent, self.environment)
            if record is None or record.state != State.PROVISIONED:
                state = f"{record.state}/{record.status}" if record else "not created"
                raise TaskFailure(f"parent {parent!r} must be provisioned first (it is {state})")

    def _check_required(self, node: Node, variables: dict[str, Any]) -> None:
        """The reference's "required variables must be provided", before tofu would ask."""
        directory = self.graph.module_dir(node.name)
        if node.kind != "resource" or directory is None:
            return
        missing = sorted(module_required_variables(directory) - set(variables))
        if missing:
            raise TaskFailure(f"module {node.task.module!r} requires variables that are not "
                              f"set: {', '.join(missing)} (set them under `variables`, or "
                              "inherit them through dependency_configs)")

    def _check_frozen_and_unique(self, node: Node, record: RecordView,
                                 variables: dict[str, Any]) -> None:
        if record.state in (State.PROVISIONED, State.DESTROY):
            for name in node.task.frozen:
                if name in record.variables and record.variables.get(name) != variables.get(name):
                    shown = "(sensitive)" if name in record.sensitive_variables else (
                        f"{record.variables.get(name)!r} -> {variables.get(name)!r}")
                    raise TaskFailure(
                        f"variable {name!r} is frozen and may not change once provisioned "
                        f"({shown})")
        for name in node.task.unique:
            if name not in variables:
                continue
            for other in self.store.records():
                if other.id == record.id or other.module != node.task.module:
                    continue
                if other.state == State.DESTROYED:
                    continue
                if other.variables.get(name) == variables[name]:
                    raise TaskFailure(  # the value itself is not repeated: it may be secret
                        f"variable {name!r} must be unique among resources of module "
                        f"{node.task.module!r}, but {other.pipeline}/{other.task} "
                        f"({other.environment}) already uses the same value")

    def fingerprint(self, node: Node, variables: dict[str, Any],
                    backend: BackendSettings) -> str:
        payload = json.dumps({
            "module": self.graph.module_hash(node.name), "variables": variables,
            "backend": [backend.type, list(backend.config)], "tofu": self.tofu.version(),
        }, sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()

    # -- who may act -----------------------------------------------------------------

    def _require(self, permission: Permission, what: str) -> None:
        try:
            self.approvals.access.require(permission, self.pipeline.name, self.actor,
                                          self.pipeline.owners, what)
        except PermissionDenied as exc:
            raise Refused(str(exc)) from None

    def _gated(self, node: Node) -> bool:
        return node.kind == "resource" and gated(self.pipeline.approval, node.task.approval)

    @cached_property
    def approvals(self) -> Approvals:
        return Approvals(self.store)

    def _recreate_if_needed(self, record: RecordView) -> RecordView:
        """The reference's Recreate: from destroyed, or from a rejected provision."""
        if record.state == State.DESTROYED or (record.state == State.PROVISION
                                              and record.status == Status.REJECTED):
            return self.store.transition(record, Action.RECREATE, actor=self.actor,
                                         run_id=self.run_id)
        return record

    # -- provision / update -----------------------------------------------------------

    def provision(self, node: Node, timeout: float | None = None) -> Outcome:
        """Create / provision / update one resource (or an abstract record).

        Under an approval flow nothing is applied without an approved request for this
        exact configuration; see `_provision_gated`.
        """
        existing = self.store.get(self.pipeline.name, node.name, self.environment)
        approved = (existing is not None and self._gated(node)
                    and self._approved_request(existing, PROVISION_OPS) is not None)
        if not approved:  # an approved request carries its approver's authority
            self._require(Permission.REQUEST, f"provision of {node.name}")
        record = self._record(node)
        if record.state == State.DESTROY:
            reason = (f"a destroy of {node.name} is under way ({record.state}/{record.status}); "
                      "finish it, or reject its request to keep the resource, before "
                      "provisioning again")
            self.progress(f"{node.name}: not provisioned: {reason}")
            return Outcome("blocked", record, reason=reason)
        resolve, secrets = self.resolver(node)
        try:
            self._check_parents(node)
            variables = self.tfvars(node, resolve)
            self._check_required(node, variables)
            env, env_secrets = self._render_env(node, resolve)
            backend = self.backend(node, resolve)
            self._check_frozen_and_unique(node, record, variables)
        except (InterpolationError, TaskFailure) as exc:
            self.store.audit("provision_refused", actor=self.actor, pipeline=self.pipeline.name,
                             task=node.name, environment=self.environment, run_id=self.run_id,
                             details={"error": str(exc)})
            raise TaskFailure(f"{node.name}: {exc}") from None
        secrets |= env_secrets
        if self.graph.module_dir(node.name) is None and node.kind == "resource":
            raise TaskFailure(f"{node.name}: remote module sources ({node.task.module}) are "
                              "not supported yet; vendor the module into the pipeline dir")
        # a variable that carries a secret (a sensitive upstream output, a registered secret,
        # a credential) is itself sensitive
        sensitive_vars = self._sensitive_variables(node) | _carrying(variables, secrets)
        secrets |= {to_text(variables[k]) for k in sensitive_vars if k in variables}
        fingerprint = self.fingerprint(node, variables, backend)

        if node.kind == "abstract":
            record = self._recreate_if_needed(record)
            return self._record_abstract(node, record, variables, sensitive_vars, fingerprint)
        if (record.state == State.PROVISIONED and record.status == Status.DONE
                and record.fingerprint == fingerprint and not self.force):
            self.progress(
                f"{node.name}: unchanged since revision {record.revision}; not running tofu")
            record = self.store.transition(record, Action.UNCHANGED, actor=self.actor,
                                           run_id=self.run_id,
                                           details={"fingerprint": fingerprint})
            self._register(node, record.outputs, set(record.sensitive_outputs))
            return Outcome("unchanged", record, dict(record.outputs),
                           set(record.sensitive_outputs), tofu_version=self.tofu.version())

        lines: list[str] = []
        workspace = self._workspace(node, backend=backend, env=env, secrets=secrets,
                                    timeout=timeout, lines=lines)
        change = _Change(variables, sensitive_vars, fingerprint, workspace, lines, secrets)
        with workspace.locked(self.progress):
            if self._gated(node):
                return self._provision_gated(node, record, change)
            record = self._recreate_if_needed(record)
            record = self._start(record, fingerprint)
            try:
                workspace.prepare(variables)
                workspace.init()
                plan, plan_file = workspace.plan()
            except BaseException as exc:
                self._failed(record, exc)
                raise
            return self._apply(node, record, change, plan, plan_file)

    def _start(self, record: RecordView, fingerprint: str) -> RecordView:
        action = (Action.UPDATE_START if record.state == State.PROVISIONED
                  else Action.PROVISION_START)
        return self.store.transition(record, action, actor=self.actor, run_id=self.run_id,
                                     details={"fingerprint": fingerprint})

    def _failed(self, record: RecordView, exc: BaseException) -> None:
        action = (Action.UPDATE_FAILURE if record.state == State.PROVISIONED
                  else Action.PROVISION_FAILURE)
        message = str(exc) or type(exc).__name__
        self.store.transition(record, action, actor=self.actor, run_id=self.run_id,
                              details={"error": message[-2000:]}, error=message[-4000:])

    def _apply(self, node: Node, record: RecordView, change: _Change, plan: PlanSummary,
               plan_file: Path, saved: bool = False) -> Outcome:
        """Apply a plan to a record already `in_progress`, then merge the result."""
        updating = record.state == State.PROVISIONED
        try:
            if saved:
                change.workspace.apply_saved(plan_file)
            else:
                change.workspace.apply(plan_file)
            raw_outputs = change.workspace.outputs()
        except BaseException as exc:
            self._failed(record, exc)
            raise
        finally:
            if not saved:
                plan_file.unlink(missing_ok=True)  # it holds variable values
        outputs = {k: v.get("value") for k, v in raw_outputs.items()}
        sensitive_outputs = {k for k, v in raw_outputs.items() if v.get("sensitive")}
        sensitive_outputs |= _carrying(outputs, change.secrets)
        record = self.store.transition(
            record, Action.UPDATE_SUCCESS if updating else Action.PROVISION_SUCCESS,
            actor=self.actor, run_id=self.run_id, bump_revision=updating,
            details={"plan": plan.as_dict()}, variables=change.variables, outputs=outputs,
            sensitive_variables=sorted(change.sensitive & set(change.variables)),
            sensitive_outputs=sorted(sensitive_outputs), fingerprint=change.fingerprint,
            module_hash=self.graph.module_hash(node.name), error=None)
        self._register(node, outputs, sensitive_outputs)
        return Outcome("applied", record, outputs, sensitive_outputs, plan,
                       log_tail="\n".join(change.lines[-20:]), tofu_version=self.tofu.version())

    # -- the approval gate ------------------------------------------------------------

    def _approved_request(self, record: RecordView, operations: tuple[str, ...]
                          ) -> ApprovalRequest | None:
        request = self.approvals.latest(record, operations)
        return request if request is not None and request.status in APPROVED else None

    def _provision_gated(self, node: Node, record: RecordView, change: _Change) -> Outcome:
        """Apply the approved plan for this exact configuration, or ask for one."""
        latest = self.approvals.latest(record, PROVISION_OPS)
        if latest is not None and latest.fingerprint == change.fingerprint:
            if latest.status in APPROVED:
                return self._apply_approved(node, record, change, latest)
            if latest.status == RequestStatus.PENDING:
                return self._awaiting(node, record, latest)
            if latest.status == RequestStatus.REJECTED and not self.force:
                reason = (f"request {latest.id} for this exact configuration was rejected by "
                          f"{latest.decided_by} ({latest.reason}); change the configuration, "
                          "or run with force to ask again")
                self.progress(f"{node.name}: not applied: {reason}")
                return Outcome("rejected", record, reason=reason)
        elif latest is not None and latest.status in APPROVED:
            self._require(Permission.REQUEST, f"provision of {node.name}")
            self.approvals.mark(latest.id, RequestStatus.STALE, actor=self.actor,
                                run_id=self.run_id,
                                reason="the configuration changed after approval")
        return self._request(node, record, change)

    def _request(self, node: Node, record: RecordView, change: _Change) -> Outcome:
        """Plan, save the plan with the request, and stop: nothing is applied."""
        self._require(Permission.REQUEST, f"provision of {node.name}")
        record = self._recreate_if_needed(record)
        operation = (Operation.UPDATE if record.state == State.PROVISIONED
                     else Operation.PROVISION)
        return self._file_request(node, record, change.workspace, operation,
                                  variables=change.variables, fingerprint=change.fingerprint,
                                  sensitive=change.sensitive & set(change.variables))

    def _file_request(self, node: Node, record: RecordView, workspace: TofuWorkspace,
                      operation: Operation, *, variables: dict[str, Any], fingerprint: str,
                      sensitive: set[str]) -> Outcome:
        """Plan with `variables`, keep the plan with a new request, and stop there."""
        workspace.prepare(variables)
        workspace.init()
        plan, plan_file = workspace.plan(destroy=operation == Operation.DESTROY)
        request = self.approvals.request(
            record, operation=operation, fingerprint=fingerprint, plan_file=plan_file,
            plan_summary=plan.as_dict(),
            proposed_variables=variables if operation != Operation.DESTROY else {},
            sensitive_variables=sensitive, requested_by=self.actor, run_id=self.run_id,
            runtime_vars=self.runtime_vars)
        plan_file.unlink(missing_ok=True)
        record = self.store.get(self.pipeline.name, node.name, self.environment) or record
        return self._awaiting(node, record, request, plan)

    def _awaiting(self, node: Node, record: RecordView, request: ApprovalRequest,
                  plan: PlanSummary | None = None) -> Outcome:
        reason = (f"{request.operation} waits for approval of request {request.id} "
                  f"(plan: {plan_text(request.plan_summary)}); an owner or admin runs "
                  f"`ik approve {request.id}` or `ik reject {request.id} --reason ...`")
        self.progress(f"{node.name}: {reason}")
        return Outcome("approval_pending", record, plan=plan, reason=reason,
                       request_id=request.id)

    def _current_saved_plan(self, node: Node, request: ApprovalRequest,
                            workspace: TofuWorkspace, variables: dict[str, Any]
                            ) -> Path | None:
        """The request's saved plan, checked and ready to apply in a prepared workspace;
        None (the request marked stale) when the state moved since it was made. A missing
        or altered file fails the request."""
        try:
            saved = self.approvals.verified_plan(request)
        except ApprovalError as exc:
            self.approvals.mark(request.id, RequestStatus.FAILED, actor=self.actor,
                                run_id=self.run_id, reason=str(exc))
            raise TaskFailure(f"{node.name}: {exc}") from None
        workspace.prepare(variables)
        workspace.init()
        if workspace.plan_is_stale(saved):
            self.progress(f"{node.name}: the state changed since request {request.id} was "
                          "planned; planning again for a new approval")
            self.approvals.mark(request.id, RequestStatus.STALE, actor=self.actor,
                                run_id=self.run_id,
                                reason="the state changed after the plan was made")
            return None
        return saved

    def _apply_approved(self, node: Node, record: RecordView, change: _Change,
                        request: ApprovalRequest) -> Outcome:
        """Apply exactly the approved file (sha256 checked), unless the state moved."""
        saved = self._current_saved_plan(node, request, change.workspace, change.variables)
        if saved is None:
            return self._request(node, record, change)
        if self.run_id:
            self.approvals.mark_launched_run(request.id, self.run_id)
        self.progress(f"{node.name}: applying the plan approved in request {request.id} "
                      f"by {request.decided_by} (sha256 {request.plan_sha256[:12]}…)")
        record = self._recreate_if_needed(record)
        record = self._start(record, change.fingerprint)
        plan = PlanSummary(**request.plan_summary)
        try:
            outcome = self._apply(node, record, change, plan, saved, saved=True)
        except BaseException as exc:
            self.approvals.mark(request.id, RequestStatus.FAILED, actor=self.actor,
                                run_id=self.run_id, reason=(str(exc) or "failed")[-500:])
            raise
        self.approvals.mark(request.id, RequestStatus.APPLIED, actor=self.actor,
                            run_id=self.run_id)
        outcome.request_id = request.id
        return outcome

    def plan(self, node: Node) -> PlanSummary:
        """A dry run: `tofu plan` with today's values; no record changes."""
        resolve, secrets = self.resolver(node)
        variables = self.tfvars(node, resolve)
        env, env_secrets = self._render_env(node, resolve)
        sensitive = self._sensitive_variables(node)
        secrets |= env_secrets | {to_text(variables[k]) for k in sensitive if k in variables}
        workspace = self._workspace(node, backend=self.backend(node, resolve), env=env,
                                    secrets=secrets, timeout=node.task.timeout)
        with workspace.locked(self.progress):
            workspace.prepare(variables)
            workspace.init()
            summary, plan_file = workspace.plan()
            plan_file.unlink(missing_ok=True)
        return summary

    def drift(self, node: Node) -> Drift | None:
        """`plan -detailed-exitcode` against the applied values: does reality still match?

        Plans with the variables the record was applied with, so a pending configuration
        change is not mistaken for drift. None when there is nothing provisioned to check.
        """
        record = self.store.get(self.pipeline.name, node.name, self.environment)
        if record is None or record.state != State.PROVISIONED or node.kind != "resource":
            return None
        resolve, secrets = self.resolver(node)
        env, env_secrets = self._render_env(node, resolve)
        workspace = self._workspace(node, backend=self.backend(node, resolve), env=env,
                                    secrets=secrets | env_secrets | set(record.secrets),
                                    timeout=node.task.timeout)
        with workspace.locked(self.progress):
            workspace.prepare(record.variables)
            workspace.init()
            code, summary, result = workspace.detailed_plan()
        changes = [f"{m.group(1)} {m.group(2)}" for line in result.lines
                   if (m := _PLANNED_CHANGE.match(line))]
        drift = Drift(drifted=code == 2, plan=summary, changes=changes)
        self.store.record_drift(record, drift.as_dict(), actor=self.actor, run_id=self.run_id)
        return drift

    def _record_abstract(self, node: Node, record: RecordView, variables: dict[str, Any],
                         sensitive: set[str], fingerprint: str) -> Outcome:
        if record.state == State.PROVISIONED and record.fingerprint == fingerprint:
            return Outcome("unchanged", record)
        updating = record.state == State.PROVISIONED
        start, ok = ((Action.UPDATE_START, Action.UPDATE_SUCCESS) if updating
                     else (Action.PROVISION_START, Action.PROVISION_SUCCESS))
        record = self.store.transition(record, start, actor=self.actor, run_id=self.run_id)
        record = self.store.transition(
            record, ok, actor=self.actor, run_id=self.run_id, bump_revision=updating,
            details={"abstract": True}, variables=variables,
            sensitive_variables=sorted(sensitive & set(variables)), fingerprint=fingerprint)
        return Outcome("applied", record)

    def _register(self, node: Node, outputs: dict[str, Any], sensitive: set[str]) -> None:
        wanted = {name: outputs[name] for name in node.registers if name in outputs}
        missing = [name for name in node.registers if name not in outputs]
        if missing:
            raise TaskFailure(f"{node.name}: register names outputs the module does not "
                              f"produce: {', '.join(missing)}")
        if wanted:
            self.store.register(self.pipeline.name, self.environment, wanted, task=node.name,
                                sensitive=sensitive, run_id=self.run_id)

    # -- command tasks ----------------------------------------------------------------

    def run_command(self, node: Node, timeout: float | None = None,
                    extra: dict[str, Any] | None = None) -> Outcome:
        """Run a `cmd` task with `/bin/sh -c`, values quoted for their shell context."""
        resolve, secrets = self.resolver(node, extra)
        try:
            if node.task.if_:
                condition = Condition.parse(node.task.if_)
                if not condition.evaluate(resolve):
                    reason = f"condition {node.task.if_!r} is false"
                    self.progress(f"{node.name}: skipped, {reason}")
                    return Outcome("skipped", reason=reason)
            assert node.task.cmd is not None
            script = render_shell(node.task.cmd, resolve)
            env, env_secrets = self._render_env(node, resolve)
            exported = self._exported_values(node, resolve, extra)
            cwd = self._working_dir(node, resolve)
        except (InterpolationError, TaskFailure) as exc:
            raise TaskFailure(f"{node.name}: {exc}") from None
        secrets |= env_secrets
        base = ({"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                 "HOME": os.environ.get("HOME", "/")}
                if node.task.clean_env else dict(os.environ))
        full_env = {**base, **exported, **env}
        lines: list[str] = []

        def on_line(line: str) -> None:
            lines.append(line)
            self.log(line)

        result: ProcessResult = run_streaming(
            ["/bin/sh", "-c", script], cwd=cwd, env=full_env, on_line=on_line,
            secrets=secrets, timeout=timeout, grace=self.tofu.timeout_grace_seconds)
        if result.returncode != 0:
            message = (f"{node.name}: command exited with code {result.returncode}\n"
                       f"{result.tail(10)}")
            if node.task.ignore_failure:
                self.progress(f"{node.name}: failure ignored (ignore_failure = true)")
                return Outcome("ignored_failure", duration=result.duration,
                               log_tail=result.tail(20), reason=message)
            raise TaskFailure(message)
        registered: dict[str, Any] = {}
        if node.registers:
            last = next((line for line in reversed(result.lines) if line.strip()), "")
            registered = {node.registers[0]: last.strip()}
            self.store.register(self.pipeline.name, self.environment, registered,
                                task=node.name, sensitive=set(), run_id=self.run_id)
        return Outcome("ran", registered=registered, duration=result.duration,
                       log_tail=result.tail(20))

    def _exported_values(self, node: Node, resolve, extra: dict[str, Any] | None
                         ) -> dict[str, str]:
        """`IK_<NAME>` for every value the command could reference."""
        names = set(self.pipeline_vars()) | set(node.matrix) | set(extra or {})
        names |= set(self.store.registered(self.pipeline.name, self.environment))
        exported: dict[str, str] = {}
        for name in names:
            try:
                exported[env_name(name)] = to_text(resolve(Ref(name)))
            except InterpolationError:
                continue
        return exported

    def _working_dir(self, node: Node, resolve) -> Path:
        if not node.task.working_dir:
            return self.pipeline.source_dir
        directory = Path(to_text(render(node.task.working_dir, resolve))).expanduser()
        directory = directory if directory.is_absolute() else self.pipeline.source_dir / directory
        if not directory.is_dir():
            raise TaskFailure(f"working_dir {str(directory)!r} does not exist")
        return directory

    # -- destroy and teardown ---------------------------------------------------------

    def _touched_by(self, name: str, run_id: str | None) -> bool:
        """Whether `run_id` applied (or tried to apply) the resource `name`."""
        if not run_id:
            return False
        applied = {"provision_start", "update_start"}
        return any(e["run_id"] == run_id and e["action"] in applied
                   and e["environment"] == self.environment
                   for e in self.store.audit_entries(self.pipeline.name, name))

    def blocking_children(self, name: str) -> list[RecordView]:
        """Children whose infrastructure exists (provisioned, or on the way to destroyed).

        A child still in `provision` never got a complete apply (waiting, rejected, failed
        and cleaned); counting it would block its parent's destroy for good, since such a
        child can be neither destroyed nor deleted.
        """
        result = []
        for child in self.graph.resource_children(name):
            record = self.store.get(self.pipeline.name, child, self.environment)
            if record is not None and record.state in (State.PROVISIONED, State.DESTROY):
                result.append(record)
        return result

    def destroy(self, name: str, timeout: float | None = None, reason: str = "destroy",
                *, requested: bool = False) -> Outcome:
        """`tofu destroy` one resource; a no-op for what is not provisioned.

        `requested`: a user asked for it (destroy job, `ik destroy`), so roles, children and
        the approval flow apply. A teardown after a failure is the pipeline's own cleanup
        and skips them.
        """
        node = self.graph.nodes[name]
        record = self.store.get(self.pipeline.name, name, self.environment)
        if record is None or record.state == State.DESTROYED:
            self.progress(f"{name}: nothing to destroy ({record.state if record else 'no record'})")
            return Outcome("skipped", record, reason="not provisioned")
        if requested:
            blocking = self.blocking_children(name)
            if blocking:
                payload = dependency_payload(blocking)
                self.store.audit("destroy_refused", actor=self.actor,
                                 pipeline=self.pipeline.name, task=name,
                                 environment=self.environment, run_id=self.run_id,
                                 details=payload)
                raise TaskFailure(f"{name}: {json.dumps(payload)}")
        gated_destroy = requested and self._gated(node) and record.state != State.PROVISION
        approved = self._approved_request(record, ("destroy",)) if gated_destroy else None
        if requested and approved is None:
            self._require(Permission.REQUEST if gated_destroy else Permission.DESTROY,
                          f"destroy of {name}")
        if node.kind == "abstract" or record.kind == "abstract":
            return self._destroy_abstract(record)
        resolve, secrets = self.resolver(node)
        env, env_secrets = self._render_env(node, resolve)
        lines: list[str] = []
        workspace = self._workspace(node, backend=self.backend(node, resolve), env=env,
                                    secrets=secrets | env_secrets | set(record.secrets),
                                    timeout=timeout, lines=lines)
        with workspace.locked(self.progress):
            if record.state == State.PROVISION:
                return self._destroy_partial(node, record, workspace, resolve, reason)
            if gated_destroy:
                if approved is None:
                    return self._request_destroy(node, record, workspace)
                return self._destroy_approved(node, record, workspace, approved, lines)
            if record.state == State.PROVISIONED:
                record = self.store.transition(record, Action.DESTROY_REQUEST,
                                               actor=self.actor, run_id=self.run_id,
                                               details={"reason": reason})
            record = self.store.transition(record, Action.DESTROY_START, actor=self.actor,
                                           run_id=self.run_id)
            try:
                workspace.prepare(record.variables)
                workspace.init()
                workspace.destroy()
            except BaseException as exc:
                self._destroy_failed(record, exc)
                raise
            return self._destroyed(record, reason, lines)

    def _destroy_abstract(self, record: RecordView) -> Outcome:
        """Abstract records have no infrastructure: the transitions without tofu."""
        if record.state == State.PROVISIONED:
            record = self.store.transition(record, Action.DESTROY_REQUEST, actor=self.actor,
                                           run_id=self.run_id)
        record = self.store.transition(record, Action.DESTROY_START, actor=self.actor,
                                       run_id=self.run_id)
        record = self.store.transition(record, Action.DESTROY_SUCCESS, actor=self.actor,
                                       run_id=self.run_id, outputs={})
        return Outcome("destroyed", record)

    def _destroy_partial(self, node: Node, record: RecordView, workspace: TofuWorkspace,
                         resolve, reason: str) -> Outcome:
        """A failed first apply may have left resources behind: clean them, keep the
        record in `provision` (the state table allows no other move from there)."""
        if workspace.path.is_dir():
            workspace.prepare(record.variables or self.tfvars(node, resolve))
            workspace.init()
            workspace.destroy()
        self.store.audit("destroy_partial_state", actor=self.actor,
                         pipeline=self.pipeline.name, task=node.name,
                         environment=self.environment, run_id=self.run_id,
                         details={"reason": reason})
        return Outcome("destroyed", record, reason="partial state cleaned")

    def _destroy_failed(self, record: RecordView, exc: BaseException) -> None:
        self.store.transition(record, Action.DESTROY_FAILURE, actor=self.actor,
                              run_id=self.run_id, details={"error": str(exc)[-2000:]},
                              error=str(exc)[-4000:])

    def _destroyed(self, record: RecordView, reason: str, lines: list[str]) -> Outcome:
        record = self.store.transition(record, Action.DESTROY_SUCCESS, actor=self.actor,
                                       run_id=self.run_id, details={"reason": reason},
                                       outputs={}, sensitive_outputs=[], error=None)
        return Outcome("destroyed", record, log_tail="\n".join(lines[-20:]))

    def _request_destroy(self, node: Node, record: RecordView,
                         workspace: TofuWorkspace) -> Outcome:
        pending = self.approvals.latest(record, ("destroy",))
        if pending is not None and pending.status == RequestStatus.PENDING:
            return self._awaiting(node, record, pending)
        if record.state == State.PROVISIONED:
            record = self.store.transition(record, Action.DESTROY_REQUEST, actor=self.actor,
                                           run_id=self.run_id, details={"reason": "destroy"})
        return self._file_request(node, record, workspace, Operation.DESTROY,
                                  variables=record.variables,
                                  fingerprint=record.fingerprint or "", sensitive=set())

    def _destroy_approved(self, node: Node, record: RecordView, workspace: TofuWorkspace,
                          request: ApprovalRequest, lines: list[str]) -> Outcome:
        saved = self._current_saved_plan(node, request, workspace, record.variables)
        if saved is None:
            return self._request_destroy(node, record, workspace)
        self.progress(f"{node.name}: destroying with the plan approved in request "
                      f"{request.id} by {request.decided_by}")
        record = self.store.transition(record, Action.DESTROY_START, actor=self.actor,
                                       run_id=self.run_id, details={"request_id": request.id})
        try:
            workspace.apply_saved(saved)
        except BaseException as exc:
            self._destroy_failed(record, exc)
            self.approvals.mark(request.id, RequestStatus.FAILED, actor=self.actor,
                                run_id=self.run_id, reason=(str(exc) or "failed")[-500:])
            raise
        self.approvals.mark(request.id, RequestStatus.APPLIED, actor=self.actor,
                            run_id=self.run_id)
        outcome = self._destroyed(record, "destroy", lines)
        outcome.request_id = request.id
        return outcome

    def run_teardown(self, teardown: str, failed_task: str, error_message: str,
                     failed_run_id: str | None = None) -> list[str]:
        """Run a forensic task: destroy its targets (children first) or run its command.

        Gated resources (approval flow) are destroyed only when the failed run itself
        applied them (or left them half-applied); anything else needs an approved destroy.
        """
        node = self.graph.teardowns.get(teardown) or self.graph.nodes[teardown]
        self.store.audit("teardown", actor=self.actor, pipeline=self.pipeline.name,
                         environment=self.environment, run_id=self.run_id,
                         details={"teardown": teardown, "failed_task": failed_task})
        if node.task.destroy is not None:
            provisioned = {r.task for r in self.store.records(self.pipeline.name)
                           if r.environment == self.environment
                           and r.state != State.DESTROYED}
            targets = self.graph.destroy_targets(teardown, provisioned)
            kept = [t for t in targets if self._gated(self.graph.nodes[t])
                    and not self._touched_by(t, failed_run_id)]
            if kept:
                self.progress(f"teardown {teardown}: keeping {', '.join(kept)} (approval flow: "
                              "not applied by the failed run; destroy them through a request)")
            targets = [t for t in targets if t not in kept]
            self.progress(f"teardown {teardown}: destroying {', '.join(targets) or 'nothing'}")
            for target in targets:
                self.destroy(target, timeout=node.task.timeout, reason=f"teardown:{teardown}")
            return targets
        builtins = {"failed_task": failed_task, "error_message": error_message,
                    "failed_dag": self.pipeline.name}
        assert set(builtins) == set(TEARDOWN_BUILTINS)
        self.run_command(node, timeout=node.task.timeout, extra=builtins)
        return []


def dependency_payload(blocking: list[RecordView]) -> dict[str, Any]:
    """The reference's error body when a destroy is blocked by children."""
    return {"error": "Cannot destroy resource", "reason": "Dependencies exist",
            "dependencies": [{"resource_id": r.id, "resource_name": r.task, "state": r.state}
                             for r in blocking]}
