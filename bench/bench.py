"""Orchestration overhead of infrakitchen-dagster against plain terraform, as a table.

    . .infrakitchen/env.sh && python bench/bench.py

Uses the offline toolchain from scripts/setup.sh and a throwaway home per measurement.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STEP = ROOT / "tests" / "fixtures" / "modules" / "step"
BIN = Path(sys.executable).parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
import estate  # noqa: E402  (bench/estate.py, beside this script)


def _variables(i: int, wait: int) -> str:
    return f'{{ name = "r{i}", sleep_seconds = {wait} }}'


def chain_pipeline(n: int, wait: int = 0) -> str:
    lines = ['name = "chain"', "allow_external_modules = true"]
    for i in range(n):
        dep = f'depends_on = ["r{i - 1}"]\n' if i else ""
        lines.append(f'[tasks.r{i}]\nmodule = "{STEP}"\n{dep}variables = {_variables(i, wait)}')
    return "\n".join(lines)


def fanout_pipeline(n: int, wait: int = 0) -> str:
    lines = ['name = "fanout"', "allow_external_modules = true"]
    for i in range(n):
        lines.append(f'[tasks.r{i}]\nmodule = "{STEP}"\nvariables = {_variables(i, wait)}')
    return "\n".join(lines)


def noop_chain(n: int) -> str:
    lines = ['name = "noop"']
    for i in range(n):
        dep = f'depends_on = ["t{i - 1}"]\n' if i else ""
        lines.append(f'[tasks.t{i}]\ncmd = "true"\n{dep}')
    return "\n".join(lines)


def fresh_env(base: Path, pipeline: str, name: str, executor: str = "auto") -> dict[str, str]:
    pipelines = base / "pipelines"
    pipelines.mkdir(parents=True)
    (pipelines / f"{name}.toml").write_text(pipeline)
    dagster_home = base / "dagster"
    dagster_home.mkdir()
    shutil.copy2(ROOT / "dagster.yaml", dagster_home / "dagster.yaml")
    env = {k: v for k, v in os.environ.items() if k != "INFRAKITCHEN_SERVER"}  # cold runs
    env.update(INFRAKITCHEN_HOME=str(base / "home"), DAGSTER_HOME=str(dagster_home),
               INFRAKITCHEN_PIPELINES=str(pipelines), INFRAKITCHEN_EXECUTOR=executor,
               PYTHONWARNINGS="ignore")
    (base / "home").mkdir()
    shared_cache = ROOT / ".infrakitchen" / "plugin-cache"
    (base / "home" / "plugin-cache").symlink_to(shared_cache)
    initialise_home(env)
    return env


def initialise_home(env: dict[str, str]) -> None:
    """Create the Dagster storage and the lifecycle store before anything is timed: a
    machine pays that once, with its first command, not on every run."""
    subprocess.run([sys.executable, "-c", "from dagster import DagsterInstance; "
                    "DagsterInstance.get()"], env=env, check=True)
    subprocess.run([str(BIN / "ik"), "resources"], env=env, check=True, capture_output=True)


def timed(argv: list[str], env: dict[str, str], cwd: Path = ROOT) -> float:
    started = time.monotonic()
    result = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{argv} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return time.monotonic() - started


def ik_run(env: dict[str, str], name: str) -> float:
    return timed([str(BIN / "ik"), "run", name], env)


def shell_script(base: Path, count: int, wait: int = 0, parallel: bool = False) -> float:
    """The same modules applied by a plain script: `init && apply` per resource, one after
    the other (a chain) or all at once (a fan-out)."""
    terraform = os.environ["INFRAKITCHEN_TOFU"]
    script = ["set -e"]
    for i in range(count):
        work = base / f"r{i}"
        shutil.copytree(STEP, work)
        (work / "terraform.tfvars.json").write_text(
            f'{{"name": "r{i}", "sleep_seconds": {wait}}}')
        step = (f"cd {work} && {terraform} init -input=false -no-color >/dev/null && "
                f"{terraform} apply -input=false -no-color -auto-approve >/dev/null")
        script.append(f"( {step} ) &" if parallel else f"( {step} )")
    script.append("wait")
    env = dict(os.environ, TF_PLUGIN_CACHE_DIR=str(ROOT / ".infrakitchen" / "plugin-cache"))
    return timed(["bash", "-c", "\n".join(script)], env)


def median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def versus(base: Path, label: str, pipeline: str, name: str, count: int, wait: int,
           parallel: bool, repeat: int) -> tuple[float, float, float]:
    """(first ik run, raw script, unchanged re-run), medians of `repeat` fresh homes."""
    firsts, raws, agains = [], [], []
    for attempt in range(repeat):
        env = fresh_env(base / f"{label}-{attempt}", pipeline, name)
        firsts.append(ik_run(env, name))
        agains.append(ik_run(env, name))
        raws.append(shell_script(base / f"{label}-sh-{attempt}", count, wait, parallel))
    return median(firsts), median(raws), median(agains)


@contextlib.contextmanager
def warm_launcher() -> Iterator[str]:
    """One `ik serve` for the benchmark (it serves every home: each command brings its
    environment); yields its socket path once it listens."""
    directory = tempfile.mkdtemp(prefix="ik-bench-", dir="/tmp")
    path = os.path.join(directory, "ik.sock")
    server = subprocess.Popen([str(BIN / "ik"), "serve", "--socket", path],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=dict(os.environ, PYTHONWARNINGS="ignore"))
    try:
        line = server.stdout.readline()
        if "listening" not in line:
            raise SystemExit(f"ik serve did not start: {line}{server.stdout.read()}")
        yield path
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=60)
        shutil.rmtree(directory, ignore_errors=True)


def warm_runs(base: Path, label: str, pipeline: str, name: str, repeat: int,
              server: str) -> tuple[float, float]:
    """(first run, unchanged re-run) through the warm launcher, medians of `repeat`."""
    firsts, agains = [], []
    for attempt in range(repeat):
        env = fresh_env(base / f"{label}-{attempt}", pipeline, name)
        env["INFRAKITCHEN_SERVER"] = server
        firsts.append(ik_run(env, name))
        agains.append(ik_run(env, name))
    return median(firsts), median(agains)


def gated_pipeline() -> str:
    return (f'name = "gated"\napproval = true\nowners = ["lead"]\nallow_self_approval = true\n'
            'allow_external_modules = true\n'
            f'[tasks.r0]\nmodule = "{STEP}"\nvariables = {{ name = "r0" }}')


def approval_round_trip(base: Path) -> tuple[float, float]:
    """(request run + approve + apply run, the same resource applied without approval)."""
    env = fresh_env(base / "gated", gated_pipeline(), "gated")
    wall = timed([str(BIN / "ik"), "run", "gated", "--as", "lead"], env)
    wall += timed([str(BIN / "ik"), "approve", "1", "--as", "lead"], env)
    wall += timed([str(BIN / "ik"), "run", "gated", "--as", "lead"], env)
    plain = fresh_env(base / "plain", chain_pipeline(1), "chain")
    return wall, ik_run(plain, "chain")


def sensor_tick(base: Path, decided: int) -> float:
    """One evaluation of the approvals sensor with `decided` old decisions in the store
    (the cursor is past them): it reads what is new, not everything."""
    import uuid

    from dagster import DagsterInstance, build_sensor_context

    from infrakitchen_dagster import build_definitions
    from infrakitchen_dagster.store import LifecycleStore
    from infrakitchen_dagster.store.models import ApprovalRequestRow, utcnow

    env = fresh_env(base / f"tick-{decided}", gated_pipeline(), "gated")
    os.environ.update(env)
    store = LifecycleStore()
    with store.session() as session:
        session.add_all([ApprovalRequestRow(
            resource_id=str(uuid.uuid4()), pipeline="gated", task="r0",
            environment="default", operation="provision", status="applied", fingerprint="f",
            plan_summary={}, plan_sha256="", plan_path="", proposed_variables={},
            runtime_vars={}, sensitive_variables=[], diff={}, requested_by="dev",
            requested_at=utcnow(), decided_by="lead", decided_at=utcnow(), decision_seq=i + 1,
            launched_run_id=f"run-{i}", updated_at=utcnow()) for i in range(decided)])
    defs = build_definitions(env["INFRAKITCHEN_PIPELINES"])
    sensor = defs.get_sensor_def("infrakitchen_approvals")
    with DagsterInstance.ephemeral() as instance:
        started = time.monotonic()
        for _ in range(20):
            sensor(build_sensor_context(instance=instance, cursor=str(decided),
                                        definitions=defs))
        return (time.monotonic() - started) / 20


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["all", "estate", "runs"], default="all",
                        help="estate: the estate-size rows (bench/estate.py); runs: the rest")
    only = parser.parse_args(argv).only
    warnings.filterwarnings("ignore")  # Dagster's beta/preview notices, not measurements
    rows: list[tuple[str, str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        if only in ("all", "estate"):
            rows.extend(estate.load_rows(base / "estate"))
            rows.extend(estate.fanout_rows(base / "estate-fan", fresh_env, ik_run,
                                           fanout_pipeline))
        if only in ("all", "runs"):
            run_rows(base, rows)
    width = max(len(r[0]) for r in rows)
    print(f"{'measurement'.ljust(width)}  {'wall time':24}  result")
    print("-" * (width + 50))
    for name, value, ratio in rows:
        print(f"{name.ljust(width)}  {value:24}  {ratio}")


def run_rows(base: Path, rows: list[tuple[str, str, str]]) -> None:
    """Run overhead against plain terraform, executors, approvals and the sensor."""
    cases = [  # label, pipeline, name, count, wait, parallel, repeat, goal
        ("8-wide fan-out, 5 s apply wait, vs parallel script", fanout_pipeline(8, 5),
         "fanout", 8, 5, True, 3, "<= 1.2x"),
        ("8-wide fan-out, no wait, vs parallel script", fanout_pipeline(8), "fanout", 8, 0,
         True, 3, "<= 1.5x"),
        ("8-long chain, 5 s apply wait, vs sequential script", chain_pipeline(8, 5), "chain",
         8, 5, False, 3, "<= 1.05x"),
        ("10-long chain, no wait, vs sequential script", chain_pipeline(10), "chain", 10, 0,
         False, 3, "<= 1.3x"),
    ]
    with warm_launcher() as server:
        for index, (label, pipeline, name, count, wait, parallel, repeat, goal) in enumerate(
                cases):
            first, raw, again = versus(base, f"case-{index}", pipeline, name, count, wait,
                                       parallel, repeat)
            rows.append((f"{label} (ik run)", f"{first:.1f}s vs {raw:.1f}s",
                         f"{first / raw:.2f}x (goal {goal})"))
            warm_first, warm_again = warm_runs(base, f"warm-{index}", pipeline, name, repeat,
                                               server)
            rows.append(("  the same through `ik serve` (warm launcher)",
                         f"{warm_first:.1f}s vs {raw:.1f}s",
                         f"{warm_first / raw:.2f}x; unchanged re-run {warm_again:.2f}s"))
            _case_extras(base, rows, label, pipeline, name, first, raw, again)
    _executor_rows(base, rows)
    _approval_rows(base, rows)


def _case_extras(base: Path, rows: list[tuple[str, str, str]], label: str, pipeline: str,
                 name: str, first: float, raw: float, again: float) -> None:
    """Beside the 5 s fan-out: its unchanged re-run, and the per-step mode."""
    if not label.startswith("8-wide fan-out, 5 s"):
        return
    rows.append(("unchanged re-run of that fan-out vs its first run",
                 f"{again:.2f}s vs {first:.1f}s", f"{again / first:.2f}x (goal <= 0.1x)"))
    env = fresh_env(base / "fan-per-step", pipeline, name)
    env["INFRAKITCHEN_EXECUTION"] = "per_step"  # the other mode, for the trade-off
    per_step = ik_run(env, name)
    rows.append(("the same fan-out per step (forkserver process per task)",
                 f"{per_step:.1f}s vs {raw:.1f}s", f"{per_step / raw:.2f}x"))


def _executor_rows(base: Path, rows: list[tuple[str, str, str]]) -> None:
    """What one step costs under each executor (per-step mode, no-op command tasks)."""
    baseline = None
    for executor in ("in_process", "forkserver", "spawn"):
        env = fresh_env(base / f"noop-{executor}", noop_chain(10), "noop", executor)
        env["INFRAKITCHEN_EXECUTION"] = "per_step"  # what a step costs under each executor
        wall = ik_run(env, "noop")
        if executor == "in_process":
            env1 = fresh_env(base / "noop-1", noop_chain(1), "noop", executor)
            env1["INFRAKITCHEN_EXECUTION"] = "per_step"
            baseline = ik_run(env1, "noop")
        per_step = (wall - (baseline or 0)) / 9
        rows.append((f"10 no-op steps, executor {executor}", f"{wall:.1f}s",
                     f"~{per_step:.2f}s per step"))


def _approval_rows(base: Path, rows: list[tuple[str, str, str]]) -> None:
    """The approval round trip, a store-only command and the approvals sensor's tick."""
    gated, plain = approval_round_trip(base)
    rows.append(("approval round trip (request, approve, apply) vs plain apply",
                 f"{gated:.1f}s vs {plain:.1f}s", f"{gated / plain:.2f}x"))
    env = fresh_env(base / "cli", gated_pipeline(), "gated")
    read = timed([str(BIN / "ik"), "approvals", "--as", "lead"], env)
    rows.append(("`ik approvals` (store only, Dagster not imported)", f"{read:.2f}s", ""))
    small, large = sensor_tick(base, 10), sensor_tick(base, 5000)
    rows.append(("approvals sensor tick: 10 vs 5000 old decisions",
                 f"{small * 1000:.1f}ms vs {large * 1000:.1f}ms",
                 f"{large / small:.2f}x (cursor: reads only new ones)"))


if __name__ == "__main__":
    main()
