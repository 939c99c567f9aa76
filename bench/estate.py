"""Estate-size rows of the benchmark: what a run costs beside 10 or 10,000 resources.

    . .infrakitchen/env.sh && python bench/bench.py --only estate

Estates are generated pipelines of `null_resource` modules (the test `step` module copied
under the pipelines dir). Each resource depends on one earlier resource, four children
each (a tree: depth ~7 at 10,000, a realistic estate), so that pipelines have width and
run batched by default. One chain row shows the per-step worst case. Every load is a
fresh interpreter (what a run or step process pays), median of 3.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STEP = ROOT / "tests" / "fixtures" / "modules" / "step"
REPEAT = 3

Row = tuple[str, str, str]


def estate(directory: Path, pipelines: int, resources: int, shape: str = "tree",
           first: int = 0) -> Path:
    """`pipelines` files estate-<i>.toml of `resources` resources each, in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    if not (directory / "modules" / "step").exists():
        shutil.copytree(STEP, directory / "modules" / "step")
    for p in range(first, first + pipelines):
        lines = [f'name = "estate-{p}"']
        for i in range(resources):
            parent = i - 1 if shape == "chain" else (i - 1) // 4
            dep = f'depends_on = ["r{parent}"]\n' if i else ""
            lines.append(f'[tasks.r{i}]\nmodule = "modules/step"\n{dep}'
                         f'variables = {{ name = "r{i}" }}')
        (directory / f"estate-{p}.toml").write_text("\n".join(lines) + "\n")
    return directory


_RUN_LOAD = ("import time\n"
             "from infrakitchen_dagster.definitions import load_job_for_run\n"
             "started = time.perf_counter()\n"
             "load_job_for_run({dir!r}, {job!r})\n"
             "print(time.perf_counter() - started)\n")
_DIR_LOAD = ("from infrakitchen_dagster.definitions import build_definitions\n"
             "build_definitions({dir!r}).get_repository_def()\n")
_FILE_LOAD = ("from infrakitchen_dagster.definitions import build_definitions\n"
              "build_definitions(pipeline_files=[{file!r}]).get_repository_def()\n")


def load_seconds(code: str, **fields: str) -> float:
    """Median wall time of `code` in a fresh interpreter (imports included)."""
    return _loads(code, **fields)[0]


def _loads(code: str, **fields: str) -> tuple[float, float]:
    """Medians of (wall time, what `code` prints: the load alone, after the imports)."""
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    walls, inner = [], []
    for _ in range(REPEAT):
        started = time.monotonic()
        result = subprocess.run([sys.executable, "-c", code.format(**fields)], env=env,
                                capture_output=True, text=True)
        walls.append(time.monotonic() - started)
        if result.returncode != 0:
            raise SystemExit(f"load failed:\n{result.stderr[-3000:]}")
        inner.append(float(result.stdout.split()[-1]) if result.stdout.strip() else 0.0)
    return statistics.median(walls), statistics.median(inner)


def load_rows(base: Path) -> list[Row]:
    rows: list[Row] = []
    alone = estate(base / "alone", 1, 10)
    beside = estate(estate(base / "beside", 1, 10), 10, 100, first=1)
    job = "estate_0__provision"
    run_alone = load_seconds(_RUN_LOAD, dir=str(alone), job=job)
    run_beside = load_seconds(_RUN_LOAD, dir=str(beside), job=job)
    rows.append(("load for a run: 10-resource pipeline alone vs beside 10 x 100",
                 f"{run_alone:.2f}s vs {run_beside:.2f}s",
                 f"{run_beside / run_alone:.2f}x (goal <= 1.5x)"))
    location = load_seconds(_FILE_LOAD, file=str(beside / "estate-0.toml"))
    rows.append(("  its per-pipeline code location (deploy/workspace-per-pipeline)",
                 f"{location:.2f}s vs {run_alone:.2f}s", f"{location / run_alone:.2f}x"))
    whole_small = load_seconds(_DIR_LOAD, dir=str(alone))
    whole_large = load_seconds(_DIR_LOAD, dir=str(beside))
    rows.append(("  one code location for the whole dir: 1 x 10 vs 10 x 100 (+1 x 10)",
                 f"{whole_small:.2f}s vs {whole_large:.2f}s",
                 f"{whole_large / whole_small:.2f}x (all pipelines, by design)"))
    building: dict[int, float] = {}
    for n in (1000, 10000):
        directory = estate(base / f"one-{n}", 1, n)
        wall, building[n] = _loads(_RUN_LOAD, dir=str(directory), job=job)
        whole = load_seconds(_DIR_LOAD, dir=str(directory))
        goal = " (goal <= 2 s)" if n == 1000 else ""
        rows.append((f"load for a run: 1 pipeline x {n:,} resources",
                     f"{wall:.2f}s{goal}", f"whole code location {whole:.2f}s"))
    per_1000, per_10000 = building[1000], building[10000] / 10
    rows.append(("  building the job (imports apart), per 1,000 resources: 1,000 vs 10,000",
                 f"{per_1000:.2f}s vs {per_10000:.2f}s",
                 f"{per_10000 / per_1000:.2f}x (1.0 = linear)"))
    chain = estate(base / "chain-1000", 1, 1000, shape="chain")
    chained = load_seconds(_RUN_LOAD, dir=str(chain), job=job)
    planned = load_seconds(_RUN_LOAD, dir=str(chain), job="estate_0__plan")
    rows.append(("load for a run: 1,000-resource chain, provision (per step) / plan job",
                 f"{chained:.2f}s / {planned:.2f}s", "worst case: one op per task"))
    return rows


def fanout_rows(base: Path, fresh_env, ik_run, fanout_pipeline) -> list[Row]:
    """The 4-resource fan-out applied for real, alone and beside 10 x 100 resources."""
    alone, beside = [], []
    for i in range(REPEAT):
        env = fresh_env(base / f"fan-alone-{i}", fanout_pipeline(4), "fanout")
        alone.append(ik_run(env, "fanout"))
        env = fresh_env(base / f"fan-beside-{i}", fanout_pipeline(4), "fanout")
        estate(Path(env["INFRAKITCHEN_PIPELINES"]), 10, 100)
        beside.append(ik_run(env, "fanout"))
    a, b = statistics.median(alone), statistics.median(beside)
    return [("4-resource fan-out: ik run alone vs beside 10 x 100 resources",
             f"{a:.1f}s vs {b:.1f}s", f"{b / a:.2f}x (goal <= 1.1x)")]
