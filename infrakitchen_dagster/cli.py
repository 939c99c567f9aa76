"""`ik`: the command line for pipelines and resource records.

Errors are one clear line on stderr and a non-zero exit (1: bad input or failure,
2: refused, e.g. destroy blocked by children); never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from . import settings
from .graph import PipelineGraph, find_pipeline, load_graph
from .spec import PipelineError
from .store import LifecycleStore, default_actor


class CliError(Exception):
    def __init__(self, message: str, code: int = 1):
        self.code = code
        super().__init__(message)


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
    from .launch import run_pipeline_job

    graph = _graph(args.name)
    environment = _environment(graph, args.env)
    selection = [s.strip() for s in (args.select or "").split(",") if s.strip()]
    for item in selection:
        if not graph.expand(item):
            raise CliError(f"--select names unknown task {item!r}")
    result = run_pipeline_job(
        graph, job_suffix, environment=environment, runtime_vars=_parse_vars(args.var),
        select=selection, actor=args.actor, force=getattr(args, "force", False),
        print_output=getattr(args, "print_output", False),
        from_failure=getattr(args, "from_failure", None),
    )
    return 0 if result.success else 1


def cmd_destroy(args: argparse.Namespace) -> int:
    from .launch import destroy_resources

    graph = _graph(args.name)
    environment = _environment(graph, args.env)
    if args.task and not graph.expand(args.task):
        raise CliError(f"unknown task {args.task!r}")
    blocked = destroy_resources(graph, environment, args.task, actor=args.actor)
    if blocked is not None:
        print(json.dumps(blocked, indent=2))
        return 2
    return 0


def cmd_resources(args: argparse.Namespace) -> int:
    records = [r.public() for r in LifecycleStore().records(args.pipeline)]
    if args.json:
        print(json.dumps(records, indent=2, default=str))
        return 0
    if not records:
        print("no resources")
        return 0
    rows = [(r["pipeline"], r["task"], r["environment"], r["state"], r["status"],
             str(r["revision"])) for r in records]
    _table(("PIPELINE", "TASK", "ENV", "STATE", "STATUS", "REV"), rows)
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    pipeline, task = _split_target(args.target)
    env = args.env or "default"
    record = LifecycleStore().get(pipeline, task, env)
    if record is None:
        raise CliError(f"no record for {pipeline}/{task} in environment {env!r}")
    data = record.public()
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
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    pipeline, task = _split_target(args.target) if args.target else (None, None)
    entries = LifecycleStore().audit_entries(pipeline, task)
    if args.json:
        print(json.dumps(entries, indent=2, default=str))
        return 0
    rows = [(e["time"][:19], e["actor"], e["action"], f"{e['pipeline']}/{e['task'] or '-'}",
             e["environment"] or "-", str(e["revision"] or "-"), (e["run_id"] or "-")[:8])
            for e in entries]
    _table(("TIME", "ACTOR", "ACTION", "RESOURCE", "ENV", "REV", "RUN"), rows)
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
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_resources)

    p = sub.add_parser("inspect", parents=[common], help="show one resource record")
    p.add_argument("target", metavar="NAME/TASK")
    p.add_argument("--env", default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("audit", parents=[common], help="show the audit log")
    p.add_argument("target", nargs="?", metavar="NAME/TASK")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_audit)
    return parser


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
