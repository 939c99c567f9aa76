"""`ik`: the command line for pipelines and resource records.

Errors are one clear line on stderr and a non-zero exit (1: bad input or failure,
2: refused, e.g. destroy blocked by children); never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from . import settings
from .access import AccessControl, Permission, PermissionDenied, Role
from .approvals import (
    ApprovalError,
    Approvals,
    RequestStatus,
    decision_payload,
    gated,
    pipeline_named,
)
from .errors import CliError
from .graph import PipelineGraph, find_pipeline, load_graph, names_from_run_vars
from .module_schema import ModuleSchema, ModuleSchemaError, applied_module_schema, text_lines
from .notify import plan_text
from .signatures import SignatureError, sign
from .spec import PipelineError, read_pipeline
from .store import IllegalTransition, LifecycleStore, RecordView, State, default_actor
from .store.lifecycle import deletable


def _graph(name: str) -> PipelineGraph:
    return load_graph(find_pipeline(name, settings.pipelines_dir()))


def _parse_vars(pairs: Sequence[str]) -> dict[str, str]:
    values: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CliError(f"--var expects KEY=VALUE, got {pair!r}")
        values[key] = value
    return values


def _environment(graph: PipelineGraph, env: str | None) -> str:
    names = list(graph.pipeline.environments)
    if not names:
        if env not in (None, "default"):
            raise CliError(f"pipeline {graph.pipeline.name!r} has no [environments]; "
                           f"--env {env} is not valid")
        return "default"
    if env is None:
        raise CliError(f"pipeline {graph.pipeline.name!r} has environments "
                       f"({', '.join(names)}); choose one with --env")
    if env not in names:
        raise CliError(f"unknown environment {env!r} (choose from: {', '.join(names)})")
    return env


def _split_target(target: str) -> tuple[str, str]:
    pipeline, sep, task = target.partition("/")
    if not sep or not task:
        raise CliError(f"expected PIPELINE/TASK, got {target!r}")
    return pipeline, task


def _owners(pipeline: str) -> list[str]:
    """The TOML `owners` of a pipeline; none when its file is gone or broken."""
    try:
        return list(read_pipeline(find_pipeline(pipeline, settings.pipelines_dir())).owners)
    except PipelineError:
        return []


def _require(permission: Permission, pipeline: str, actor: str, what: str = "") -> None:
    AccessControl(LifecycleStore()).require(permission, pipeline, actor, _owners(pipeline), what)


def _viewable(actor: str):
    """A predicate: may `actor` view pipeline P? (cached per pipeline)"""
    access = AccessControl(LifecycleStore())
    seen: dict[str, bool] = {}

    def allowed(pipeline: str | None) -> bool:
        if pipeline is None:
            return True
        if pipeline not in seen:
            seen[pipeline] = access.allows(Permission.VIEW, pipeline, actor, _owners(pipeline))
        return seen[pipeline]

    return allowed


# -- commands -----------------------------------------------------------------------------


def cmd_validate(args: argparse.Namespace) -> int:
    failed = 0
    for file in args.files:
        try:
            graph = load_graph(file)
        except PipelineError as exc:
            failed += 1
            for problem in exc.problems:
                print(f"{file}: {problem}", file=sys.stderr)
            continue
        kinds = [graph.nodes[n].kind for n in graph.order]
        print(f"{file}: ok ({graph.pipeline.name}: {kinds.count('resource')} resources, "
              f"{kinds.count('command')} commands, {len(graph.teardowns)} teardown tasks)")
    return 1 if failed else 0


def cmd_graph(args: argparse.Namespace) -> int:
    print(_graph(args.name).draw(args.format, forensic=args.forensic))
    return 0


def cmd_run(args: argparse.Namespace, job_suffix: str = "provision") -> int:
    graph = _graph(args.name)
    environment = _environment(graph, args.env)
    _require(Permission.VIEW if job_suffix == "plan" else Permission.REQUEST,
             graph.pipeline.name, args.actor, f"{job_suffix} of the pipeline")
    selection = [s.strip() for s in (args.select or "").split(",") if s.strip()]
    for item in selection:
        if not graph.expand(item):
            raise CliError(f"--select names unknown task {item!r}")
    runtime_vars = _parse_vars(args.var)
    from_failure = getattr(args, "from_failure", None)
    if not from_failure:
        _require_run_vars(graph, runtime_vars, selection)
    if (job_suffix == "provision" and not from_failure and not getattr(args, "force", False)
            and _up_to_date(graph, environment, runtime_vars, selection, args.actor)):
        return 0
    warming = (_prewarm_in_background(graph, environment, runtime_vars, selection, args.actor)
               if job_suffix == "provision" and not from_failure else None)
    from .launch import run_pipeline_job  # imports Dagster while the inits run

    try:  # a task whose directory is still being initialised waits for it (its lock)
        result = run_pipeline_job(
            graph, job_suffix, environment=environment, runtime_vars=runtime_vars,
            select=selection, actor=args.actor, force=getattr(args, "force", False),
            print_output=getattr(args, "print_output", False),
            from_failure=getattr(args, "from_failure", None),
        )
    finally:
        if warming is not None:
            warming.join()
    return 0 if result.success else 1


def _prewarm_in_background(graph: PipelineGraph, environment: str,
                           runtime_vars: dict[str, str], selection: list[str],
                           actor: str) -> threading.Thread:
    """Initialise the working directories of the resources to run while Dagster loads
    (see `runtime.prewarm`); quiet: the run reports any problem in its own turn."""
    from .runtime import RunContext
    from .runtime.prewarm import prewarm
    from .tofu import TofuSettings

    names = ([n for item in selection for n in graph.expand(item)] if selection
             else list(graph.order))
    context = RunContext(graph=graph, environment=environment, store=LifecycleStore(),
                         tofu=TofuSettings(), runtime_vars=runtime_vars, actor=actor,
                         log=_quiet, progress=_quiet)
    thread = threading.Thread(target=prewarm, args=(context, [graph.nodes[n] for n in names]),
                              name="infrakitchen-prewarm", daemon=True)
    thread.start()
    return thread


def _quiet(_line: str) -> None:
    return None


def _up_to_date(graph: PipelineGraph, environment: str, runtime_vars: dict[str, str],
                selection: list[str], actor: str) -> bool:
    """Whether every resource to run is unchanged (configuration and state): then no run
    is launched at all, as `tofu apply` says "No changes" without touching anything."""
    from .runtime import RunContext
    from .runtime.provision import up_to_date
    from .tofu import TofuSettings

    names = ([n for item in selection for n in graph.expand(item)] if selection
             else list(graph.order))
    context = RunContext(graph=graph, environment=environment, store=LifecycleStore(),
                         tofu=TofuSettings(), runtime_vars=runtime_vars, actor=actor)
    if not names or not all(up_to_date(context, graph.nodes[n]) for n in names):
        return False
    print(f"nothing to do: the {len(names)} resource(s) of {graph.pipeline.name} "
          f"({environment}) are unchanged since their last apply (configuration and "
          "state); no run launched (--force runs anyway)")
    return True


def _require_run_vars(graph: PipelineGraph, runtime_vars: dict[str, str],
                      selection: list[str]) -> None:
    """A file without [vars] takes names from --var: refuse a run that misses one before
    anything runs, instead of failing halfway through."""
    chosen = {n for item in selection for n in graph.expand(item)} if selection else None
    missing = {name: tasks for name, tasks in names_from_run_vars(graph).items()
               if name not in runtime_vars
               and (chosen is None or any(t in chosen for t in tasks))}
    if missing:
        raise CliError("; ".join(f"{', '.join(tasks)} use{'s' if len(tasks) == 1 else ''} "
                                 f"{{{{.{name}}}}}: pass --var {name}=..."
                                 for name, tasks in sorted(missing.items())))


def cmd_destroy(args: argparse.Namespace) -> int:
    from .launch import destroy_resources

    graph = _graph(args.name)
    environment = _environment(graph, args.env)
    if args.task and not graph.expand(args.task):
        raise CliError(f"unknown task {args.task!r}")
    targets = graph.expand(args.task) if args.task else graph.resources
    for name in targets:  # gated: a write role may ask; otherwise the reference's admin
        needs_approval = gated(graph.pipeline.approval, graph.nodes[name].task.approval)
        _require(Permission.REQUEST if needs_approval else Permission.DESTROY,
                 graph.pipeline.name, args.actor, f"destroy of {name}")
    blocked = destroy_resources(graph, environment, args.task, actor=args.actor)
    if blocked is not None:
        print(json.dumps(blocked, indent=2))
        return 2
    return 0


def cmd_resources(args: argparse.Namespace) -> int:
    viewable = _viewable(args.actor)
    wanted = _parse_labels(args.label)
    stored = LifecycleStore().records(args.pipeline)
    hidden = sum(1 for r in stored if not viewable(r.pipeline))
    records = [r.public() for r in stored
               if viewable(r.pipeline)
               and all((r.labels or {}).get(k) == v for k, v in wanted.items())]
    note = (f"{hidden} hidden: records of pipelines {args.actor!r} may not view (read role "
            "needed)") if hidden else ""
    if args.json:
        print(json.dumps(records, indent=2, default=str))
        if note:
            print(note, file=sys.stderr)  # stdout stays one JSON document
        return 0
    if not records:
        print("no resources" + (f" ({note})" if note else ""))
        return 0
    rows = [(r["pipeline"], r["task"], r["environment"], r["state"], r["status"],
             str(r["revision"]), ",".join(f"{k}={v}" for k, v in sorted(r["labels"].items())))
            for r in records]
    _table(("PIPELINE", "TASK", "ENV", "STATE", "STATUS", "REV", "LABELS"), rows)
    if note:
        print(note)
    return 0


def _parse_labels(pairs: Sequence[str]) -> dict[str, str]:
    """`--label key=value` filters: every one must match the record's labels."""
    labels: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise CliError(f"--label expects KEY=VALUE, got {pair!r}")
        labels[key.strip()] = value
    return labels


def cmd_inspect(args: argparse.Namespace) -> int:
    pipeline, task = _split_target(args.target)
    env = args.env or "default"
    _require(Permission.VIEW, pipeline, args.actor)
    store = LifecycleStore()
    record = store.get(pipeline, task, env)
    if record is None:
        raise CliError(f"no record for {pipeline}/{task} in environment {env!r}")
    data = record.public()
    pending = [r.public() for r in Approvals(store).open_for(record)]
    data["open_requests"] = pending
    data["pending_update"] = next((r for r in pending if r["operation"] == "update"), None)
    schema, why_not = _record_schema(record)
    data["schema"] = schema.as_dict() if schema else None
    if why_not:
        data["schema_unavailable"] = why_not
    if args.json:
        print(json.dumps(data, indent=2, default=str))
        return 0
    for key in ("pipeline", "task", "environment", "state", "status", "revision",
                "fingerprint", "updated_at", "last_run_id", "error"):
        print(f"{key:12} {data[key]}")
    print("outputs:")
    for key, value in data["outputs"].items():
        print(f"  {key} = {json.dumps(value)}")
    print("variables:")
    for key, value in data["variables"].items():
        print(f"  {key} = {json.dumps(value)}")
    if data.get("policy"):  # the last verdict of the pipeline's policies on a plan
        verdict = data["policy"]
        print(f"policy:      {verdict.get('operation')} plan, {len(verdict.get('deny', []))} "
              f"denied, {len(verdict.get('warn', []))} warning(s) (digest "
              f"{str(verdict.get('digest', ''))[:12]}, {verdict.get('evaluated_at', '?')})")
        for kind in ("deny", "warn"):
            for message in verdict.get(kind, []):
                print(f"  {kind}: {message}")
    for request in pending:
        print(f"open request {request['id']}: {request['operation']} {request['status']} "
              f"(plan {plan_text(request['plan_summary'])})")
        for key, change in request["diff"].items():
            print(f"  {key}: {json.dumps(change['old'])} -> {json.dumps(change['new'])}")
    for line in text_lines(schema) if schema else ([f"module schema: {why_not}"]
                                                   if why_not else []):
        print(line)
    return 0


def _record_schema(record: RecordView) -> tuple[ModuleSchema | None, str | None]:
    """(schema, why there is none) of a record's module: the pipeline's local module, or
    the checkout of the commit it was applied from; nothing is fetched to show it."""
    if not record.module:
        return None, None  # an abstract record has no module
    try:
        pipeline = read_pipeline(find_pipeline(record.pipeline, settings.pipelines_dir()))
    except PipelineError:
        return None, "the pipeline file is missing or does not parse"
    try:
        return applied_module_schema(record.module, pipeline.source_dir,
                                     (record.source or {}).get("commit")), None
    except ModuleSchemaError as exc:
        return None, str(exc)


def cmd_sources(args: argparse.Namespace) -> int:
    """Each resource's declared source (git ref) and the commit its record was applied from."""
    from .source_listing import source_rows

    graph = _graph(args.name)
    _require(Permission.VIEW, graph.pipeline.name, args.actor)
    environments = ([_environment(graph, args.env)] if args.env
                    else list(graph.pipeline.environments) or ["default"])
    rows = source_rows(graph, LifecycleStore(), environments)
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    _table(("TASK", "ENV", "SOURCE", "REF", "COMMIT", "STATE"),
           [(r["task"], r["environment"], r["module"], r["ref"] or "-",
             r["commit"] or ("-" if r["kind"] == "local" else "(not applied)"),
             r["state"] or "-") for r in rows])
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    pipeline, task = _split_target(args.target) if args.target else (None, None)
    if pipeline:
        _require(Permission.VIEW, pipeline, args.actor)
    viewable = _viewable(args.actor)
    entries = [e for e in LifecycleStore().audit_entries(pipeline, task)
               if viewable(e["pipeline"])]
    if args.json:
        print(json.dumps(entries, indent=2, default=str))
        return 0
    rows = [(e["time"][:19], e["actor"], e["action"], f"{e['pipeline']}/{e['task'] or '-'}",
             e["environment"] or "-", str(e["revision"] or "-"), (e["run_id"] or "-")[:8])
            for e in entries]
    _table(("TIME", "ACTOR", "ACTION", "RESOURCE", "ENV", "REV", "RUN"), rows)
    return 0


def cmd_approvals(args: argparse.Namespace) -> int:
    statuses = [RequestStatus.PENDING.value] if args.pending else []
    viewable = _viewable(args.actor)
    requests = [r.public() for r in Approvals(LifecycleStore()).list(args.pipeline, statuses)
                if viewable(r.pipeline)]
    if args.json:
        print(json.dumps(requests, indent=2, default=str))
        return 0
    if not requests:
        print("no approval requests" + (" pending" if args.pending else ""))
        return 0
    rows = [(str(r["id"]), f"{r['pipeline']}/{r['task']}", r["environment"], r["operation"],
             r["status"], r["requested_by"],
             (r["decided_by"] or "-") + (" (signed)" if r["identity"] == "signed" else ""),
             plan_text(r["plan_summary"]))
            for r in requests]
    _table(("ID", "RESOURCE", "ENV", "OPERATION", "STATUS", "REQUESTED BY", "DECIDED BY",
            "PLAN"), rows)
    return 0


def _request_id(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise CliError(f"a request id is a number, got {text!r}") from None


def _decide(args: argparse.Namespace, approve: bool) -> int:
    """`ik approve` / `ik reject`; with `--key`, the decision is signed (`ssh-keygen -Y
    sign`, namespace infrakitchen) over the request's canonical payload, and the decider
    is the principal the signature proves (required where the pipeline names approvers)."""
    approvals = Approvals(LifecycleStore())
    request_id = _request_id(args.id)
    request = approvals.get(request_id)
    if request is None:
        raise CliError(f"no approval request {request_id}")
    signature = None
    if args.key:
        try:
            signature = sign(decision_payload(request, approve), Path(args.key))
        except SignatureError as exc:
            raise CliError(str(exc)) from None
    decided = approvals.decide(request_id, approve=approve, actor=args.actor,
                               owners=_owners(request.pipeline),
                               reason=getattr(args, "reason", None),
                               pipeline=pipeline_named(request.pipeline), signature=signature)
    what = f"{decided.operation} of {decided.pipeline}/{decided.task} ({decided.environment})"
    if decided.identity == "signed":
        what += f", signed by {decided.signer_principal} ({decided.key_fingerprint})"
    if approve:
        command = (f"ik destroy {decided.pipeline} --task {decided.task}"
                   if decided.operation == "destroy"
                   else f"ik run {decided.pipeline} --select {decided.task}")
        if decided.environment != "default":
            command += f" --env {decided.environment}"
        same_vars = (f" with the same --var values ({', '.join(sorted(decided.runtime_vars))})"
                     if decided.runtime_vars else "")
        print(f"request {decided.id} approved: {what}. The infrakitchen_approvals sensor "
              f"launches it; without a daemon, run `{command}`{same_vars}")
    else:
        print(f"request {decided.id} rejected: {what}")
    return 0


def cmd_withdraw(args: argparse.Namespace) -> int:
    approvals = Approvals(LifecycleStore())
    request_id = _request_id(args.id)
    request = approvals.get(request_id)
    if request is None:
        raise CliError(f"no approval request {request_id}")
    withdrawn = approvals.withdraw(request_id, actor=args.actor,
                                   owners=_owners(request.pipeline))
    print(f"request {withdrawn.id} withdrawn: {withdrawn.operation} of "
          f"{withdrawn.pipeline}/{withdrawn.task} ({withdrawn.environment})")
    return 0


def cmd_grant(args: argparse.Namespace) -> int:
    _graph(args.pipeline)  # the pipeline must exist
    try:
        role = Role(args.role)
    except ValueError:
        raise CliError(f"unknown role {args.role!r} (owner, admin, write, read)") from None
    AccessControl(LifecycleStore()).grant(args.pipeline, args.principal, role,
                                          actor=args.actor, owners=_owners(args.pipeline))
    print(f"{args.principal} is now {role.value} on {args.pipeline}")
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    removed = AccessControl(LifecycleStore()).revoke(
        args.pipeline, args.principal, actor=args.actor, owners=_owners(args.pipeline))
    print(f"{args.principal}: grant on {args.pipeline} "
          f"{'revoked' if removed else 'did not exist (TOML owners stay owners)'}")
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    pipeline, task = _split_target(args.target)
    env = args.env or "default"
    _require(Permission.DELETE, pipeline, args.actor, f"of {task}")
    store = LifecycleStore()
    record = store.get(pipeline, task, env)
    if record is None:
        raise CliError(f"no record for {pipeline}/{task} in environment {env!r}")
    open_requests = Approvals(store).open_for(record)
    if open_requests:
        ids = ", ".join(str(r.id) for r in open_requests)
        raise CliError(f"{pipeline}/{task} has open approval requests ({ids}); approve and "
                       "apply or reject them first", code=2)
    if record.kind == "abstract" and record.state != State.DESTROYED:
        from .runtime import TaskRuntime
        from .tofu import TofuSettings

        runtime = TaskRuntime(graph=_graph(pipeline), environment=env, store=store,
                              tofu=TofuSettings(), actor=args.actor)
        record = runtime.destroy(task).record or record
    if not deletable(record.state, record.status):
        raise CliError(f"{pipeline}/{task} is {record.state}/{record.status}; only a destroyed "
                       "resource, or one whose provision was rejected or withdrawn, can be "
                       f"deleted (run `ik destroy {pipeline} --task {task}`)", code=2)
    store.delete(record, actor=args.actor)
    from .runtime.healing import record_working_dir
    from .tofu import TofuSettings

    try:
        graph: PipelineGraph | None = _graph(pipeline)
    except PipelineError:
        graph = None
    shutil.rmtree(record_working_dir(TofuSettings(), record, graph), ignore_errors=True)
    print(f"deleted {pipeline}/{task} ({env}); its audit entries are kept, archived")
    return 0


def cmd_rotate_key(args: argparse.Namespace) -> int:
    """Re-encrypt every secret in the store with a new key (see `crypto.py`).

    With INFRAKITCHEN_SECRET_KEY set, its first key is the new one (list the old ones
    after it until this is done). Otherwise a new key is put first in the key file, the
    old ones kept after it while re-encrypting, then dropped; running it again after an
    interruption finishes the job.
    """
    from . import crypto

    if args.print_new_key:
        print(crypto.new_key())
        return 0
    store = LifecycleStore()
    if os.environ.get(crypto.ENV_VAR, "").strip():
        keys, _ = crypto.configured_keys()
        counts = store.reseal()
        where = f"the first key of {crypto.ENV_VAR}"
        after = (f"; you may now drop the other {len(keys) - 1} key(s) from "
                 f"{crypto.ENV_VAR}" if len(keys) > 1 else "")
    else:
        old, _ = crypto.configured_keys()
        new = crypto.new_key()
        path = crypto.write_key_file([new, *old])  # old keys still decrypt meanwhile
        counts = store.reseal()
        crypto.write_key_file([new])
        where, after = f"a new key in {path}", ""
    store.audit("secret_key_rotated", actor=args.actor, details=dict(counts))
    done = ", ".join(f"{n} {table}" for table, n in counts.items())
    print(f"re-encrypted with {where}: {done}{after}")
    return 0


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
    for row in (header, *rows):
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=False)).rstrip())


# -- parser -------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--as", dest="actor", default=None,
                        help="principal to act as (default: INFRAKITCHEN_USER, else OS user)")
    parser = argparse.ArgumentParser(prog="ik", description=__doc__.splitlines()[0],
                                     parents=[common])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("validate", parents=[common], help="check pipeline files")
    p.add_argument("files", nargs="+")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("graph", parents=[common], help="draw a pipeline's task graph")
    p.add_argument("name")
    p.add_argument("--forensic", action="store_true", help="show teardown coverage")
    p.add_argument("--format", choices=("text", "mermaid", "dot"), default="text")
    p.set_defaults(func=cmd_graph)

    for name, suffix, helptext in (("run", "provision", "provision a pipeline"),
                                   ("plan", "plan", "dry run: tofu plan, nothing changes")):
        p = sub.add_parser(name, parents=[common], help=helptext)
        p.add_argument("name")
        p.add_argument("--var", action="append", default=[], metavar="K=V")
        p.add_argument("--env", default=None)
        p.add_argument("--select", default=None, metavar="T,...")
        p.add_argument("--print-output", action="store_true",
                       help="print every task's output lines as they come")
        if name == "run":
            p.add_argument("--force", action="store_true",
                           help="run tofu even where nothing changed")
            p.add_argument("--from-failure", default=None, metavar="RUN_ID",
                           help="re-execute a failed run from its failed steps")
        p.set_defaults(func=lambda a, s=suffix: cmd_run(a, s))

    p = sub.add_parser("destroy", parents=[common], help="destroy a pipeline's resources")
    p.add_argument("name")
    p.add_argument("--task", default=None)
    p.add_argument("--env", default=None)
    p.set_defaults(func=cmd_destroy)

    p = sub.add_parser("resources", parents=[common], help="list resource records")
    p.add_argument("--pipeline", default=None)
    p.add_argument("--label", action="append", default=[], metavar="KEY=VALUE",
                   help="only records with this label (repeatable: all must match)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_resources)

    p = sub.add_parser("inspect", parents=[common], help="show one resource record")
    p.add_argument("target", metavar="NAME/TASK")
    p.add_argument("--env", default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("sources", parents=[common],
                       help="list each resource's module source and applied commit")
    p.add_argument("name")
    p.add_argument("--env", default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_sources)

    p = sub.add_parser("audit", parents=[common], help="show the audit log")
    p.add_argument("target", nargs="?", metavar="NAME/TASK")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser("approvals", parents=[common], help="list approval requests")
    p.add_argument("--pending", action="store_true", help="only requests awaiting a decision")
    p.add_argument("--pipeline", default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_approvals)

    key_help = ("sign the decision with this SSH private key, or a public key whose "
                "private half ssh-agent holds (required where the pipeline names approvers)")
    p = sub.add_parser("approve", parents=[common], help="approve a request (owner, admin)")
    p.add_argument("id")
    p.add_argument("--key", default=None, metavar="PATH", help=key_help)
    p.set_defaults(func=lambda a: _decide(a, True))

    p = sub.add_parser("reject", parents=[common], help="reject a request (owner, admin)")
    p.add_argument("id")
    p.add_argument("--reason", required=True)
    p.add_argument("--key", default=None, metavar="PATH", help=key_help)
    p.set_defaults(func=lambda a: _decide(a, False))

    p = sub.add_parser("withdraw", parents=[common],
                       help="take back a pending or approved request (requester, owner, admin)")
    p.add_argument("id")
    p.set_defaults(func=cmd_withdraw)

    p = sub.add_parser("grant", parents=[common], help="give a principal a role on a pipeline")
    p.add_argument("principal")
    p.add_argument("role", choices=[r.value for r in Role])
    p.add_argument("--pipeline", required=True)
    p.set_defaults(func=cmd_grant)

    p = sub.add_parser("revoke", parents=[common], help="remove a principal's grant")
    p.add_argument("principal")
    p.add_argument("--pipeline", required=True)
    p.set_defaults(func=cmd_revoke)

    p = sub.add_parser("delete", parents=[common],
                       help="delete the record of a destroyed resource, or of one never "
                            "provisioned (rejected, withdrawn); audit kept, archived")
    p.add_argument("target", metavar="NAME/TASK")
    p.add_argument("--env", default=None)
    p.set_defaults(func=cmd_delete)

    p = sub.add_parser("rotate-key", parents=[common],
                       help="re-encrypt the store's secrets with a new key")
    p.add_argument("--print-new-key", action="store_true",
                   help="only print a new key (for INFRAKITCHEN_SECRET_KEY) and exit")
    p.set_defaults(func=cmd_rotate_key)

    p = sub.add_parser("serve", parents=[common],
                       help="a warm launcher: keep Dagster imported and run each `ik` "
                            "command that sets INFRAKITCHEN_SERVER in a fork of it")
    p.add_argument("--socket", default=None, metavar="PATH",
                   help="the Unix socket to listen on (default: $INFRAKITCHEN_HOME/ik.sock)")
    p.set_defaults(func=cmd_serve)
    return parser


def cmd_serve(args: argparse.Namespace) -> int:
    from .warm.server import serve

    return serve(args.socket or str(settings.home() / "ik.sock"))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.actor:
        os.environ["INFRAKITCHEN_USER"] = args.actor
    args.actor = args.actor or default_actor()
    try:
        return int(args.func(args) or 0)
    except CliError as exc:
        print(f"ik: error: {exc}", file=sys.stderr)
        return exc.code
    except (PermissionDenied, ApprovalError, IllegalTransition) as exc:
        print(f"ik: error: {exc}", file=sys.stderr)
        return 2
    except PipelineError as exc:
        for problem in exc.problems:
            print(f"ik: error: {exc.path}: {problem}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("ik: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a last line of defence: one line, no traceback
        if os.environ.get("INFRAKITCHEN_DEBUG"):
            raise
        print(f"ik: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
