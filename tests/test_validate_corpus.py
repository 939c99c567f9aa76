"""`ik validate` against the corpus of broken pipelines, the good fixtures and the wf examples;
`ik graph` on every wf example; `build_definitions` surviving a broken pipeline file.

The broken files declare what their error must mention in leading `# expect: TEXT` lines
(case-insensitive substrings of the error output); files that cannot carry a comment (an
empty file, a binary one) have theirs in `UNCOMMENTABLE`. Each broken file holds exactly one
mistake and must be reported with exactly one line.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from infrakitchen_dagster import build_definitions
from infrakitchen_dagster.cli import main as ik_main

HERE = Path(__file__).resolve().parent
FIXTURES = HERE / "fixtures"
BROKEN = sorted((FIXTURES / "broken").glob("*.toml"))
GOOD = sorted((FIXTURES / "good").glob("*.toml"))
WF_DIR = Path(__file__).resolve().parents[2] / "shared/reference/wf-examples"
WF_EXAMPLES = sorted(WF_DIR.glob("*.toml")) if WF_DIR.is_dir() else []
IK = Path(sys.executable).parent / "ik"
_EXPECT = re.compile(r"^#\s*expect:\s*(?P<text>.+?)\s*$")

needs_wf = pytest.mark.skipif(not WF_DIR.is_dir(), reason=f"wf examples not found at {WF_DIR}")


#: Expected messages of the broken files that cannot hold a `# expect:` comment.
UNCOMMENTABLE = {
    "empty-file": ["empty file: not a pipeline"],
    "binary-file": ["binary file (contains NUL bytes)"],
}


def expectations(path: Path) -> list[str]:
    """The `# expect:` lines of the file's leading comment block."""
    if path.stem in UNCOMMENTABLE:
        return UNCOMMENTABLE[path.stem]
    found: list[str] = []
    # errors="replace": the corpus holds a file that is not UTF-8 on purpose
    for line in path.read_bytes().decode("utf-8", errors="replace").splitlines():
        if not line.startswith("#"):
            break
        match = _EXPECT.match(line)
        if match:
            found.append(match.group("text"))
    return found


def _ik_env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("INFRAKITCHEN_DEBUG", None)
    env.update(INFRAKITCHEN_HOME=str(home / "ik-home"), DAGSTER_HOME=str(home / "dagster"),
               INFRAKITCHEN_USER="tester")
    return env


@pytest.fixture(scope="session")
def ik_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("ik-cli")
    (home / "dagster").mkdir()
    return home


@pytest.fixture(scope="session")
def broken_batch(ik_home: Path) -> subprocess.CompletedProcess[str]:
    """The real console script over the whole broken corpus in one process.

    Each `ik` start imports Dagster (about 1.5 s of CPU), so one process per file would
    blow the time budget; the per-file exit codes are checked through the same `main` the
    console script calls (see `test_broken_file_fails_validation_clearly`).
    """
    return subprocess.run([str(IK), "validate", *map(str, BROKEN)], capture_output=True,
                          text=True, env=_ik_env(ik_home), cwd=ik_home, timeout=120)


#: One file per kind of error path (TOML, schema, duration, graph, module, reference), run
#: as `ik validate FILE` one process each.
PER_FILE_SAMPLE = ["toml-syntax-error", "unknown-task-key", "bad-retry-delay", "cycle-two",
                   "missing-module-dir", "unresolvable-var", "binary-file", "module-escapes-dir"]


@pytest.fixture(scope="session")
def per_file_results(ik_home: Path) -> dict[str, subprocess.CompletedProcess[str]]:
    env = _ik_env(ik_home)

    def run(stem: str) -> subprocess.CompletedProcess[str]:
        path = FIXTURES / "broken" / f"{stem}.toml"
        return subprocess.run([str(IK), "validate", str(path)], capture_output=True,
                              text=True, env=env, cwd=ik_home, timeout=120)

    with ThreadPoolExecutor(max_workers=3) as pool:
        return dict(zip(PER_FILE_SAMPLE, pool.map(run, PER_FILE_SAMPLE), strict=True))


def _lines_for(path: Path, stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith(f"{path}: ")]


@pytest.fixture(scope="session")
def good_result(ik_home: Path) -> subprocess.CompletedProcess[str]:
    """One `ik validate` over every good file and wf example (exit 0 only if all are ok)."""
    files = [str(p) for p in [*GOOD, *WF_EXAMPLES]]
    return subprocess.run([str(IK), "validate", *files], capture_output=True, text=True,
                          env=_ik_env(ik_home), cwd=ik_home, timeout=120)


# ---------------------------------------------------------------------------------------
# the broken corpus


def test_corpus_is_large_enough():
    assert len(BROKEN) >= 60, [p.name for p in BROKEN]
    assert IK.is_file(), f"console script missing: {IK}"


@pytest.mark.parametrize("path", BROKEN, ids=[p.stem for p in BROKEN])
def test_every_broken_file_declares_expectations(path: Path):
    assert expectations(path), f"{path.name} has no leading `# expect:` line"


def _check_problem_lines(path: Path, stderr: str) -> None:
    assert "Traceback" not in stderr, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, f"{path.name}: expected one problem line, got:\n{stderr}"
    for line in lines:
        assert line.startswith(f"{path}: "), f"line does not start with the file: {line!r}"
        assert line[len(f"{path}: "):].strip(), f"empty problem line: {line!r}"
    for expected in expectations(path):
        assert expected.lower() in stderr.lower(), (
            f"expected {expected!r} in the error output of {path.name}:\n{stderr}")


@pytest.mark.parametrize("path", BROKEN, ids=[p.stem for p in BROKEN])
def test_broken_file_fails_validation_clearly(path: Path, capsys):
    """`ik validate FILE` (the `main` behind the console script): exit 1, one line per problem."""
    capsys.readouterr()
    code = ik_main(["validate", str(path)])
    out = capsys.readouterr()
    assert code == 1, (code, out.err)
    assert ": ok (" not in out.out
    _check_problem_lines(path, out.err)


@pytest.mark.parametrize("path", BROKEN, ids=[p.stem for p in BROKEN])
def test_broken_file_console_script_output(path: Path, broken_batch):
    """The real `ik` console script reports this file, with the expected words."""
    _check_problem_lines(path, "\n".join(_lines_for(path, broken_batch.stderr)))
    assert f"{path}: ok (" not in broken_batch.stdout


@pytest.mark.parametrize("stem", PER_FILE_SAMPLE)
def test_console_script_one_file(stem: str, per_file_results):
    path = FIXTURES / "broken" / f"{stem}.toml"
    result = per_file_results[stem]
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert result.stdout == ""
    _check_problem_lines(path, result.stderr)


def test_broken_corpus_console_script(broken_batch):
    assert broken_batch.returncode == 1, broken_batch.stderr
    assert "Traceback" not in broken_batch.stderr, broken_batch.stderr
    assert broken_batch.stdout.strip() == "", broken_batch.stdout
    prefixes = tuple(f"{p}: " for p in BROKEN)
    for line in broken_batch.stderr.splitlines():
        assert line.startswith(prefixes), f"line does not start with a file path: {line!r}"


# ---------------------------------------------------------------------------------------
# the good files and the wf examples


@pytest.mark.parametrize("path", GOOD, ids=[p.stem for p in GOOD])
def test_good_fixture_validates(path: Path, good_result):
    assert f"{path}: ok (" in good_result.stdout, good_result.stderr
    assert str(path) not in good_result.stderr, good_result.stderr


@needs_wf
@pytest.mark.parametrize("path", WF_EXAMPLES, ids=[p.stem for p in WF_EXAMPLES])
def test_wf_example_validates(path: Path, good_result):
    assert f"{path}: ok (" in good_result.stdout, good_result.stderr
    assert str(path) not in good_result.stderr, good_result.stderr


def test_all_good_files_exit_zero(good_result):
    assert len(GOOD) >= 2
    assert good_result.returncode == 0, good_result.stderr
    assert "Traceback" not in good_result.stderr


def _task_names(path: Path) -> tuple[list[str], list[str], list[str]]:
    """(runnable task names, their node names, teardown task names) of a pipeline file."""
    tasks = tomllib.loads(path.read_text(encoding="utf-8")).get("tasks", {})
    teardown = [n for n, t in tasks.items() if t.get("type") == "forensic"]
    runnable = [n for n in tasks if n not in teardown]
    matrix = set(_matrix_nodes(path))
    nodes = [n for n in runnable if not tasks[n].get("matrix")] + sorted(matrix)
    return runnable, nodes, teardown


def _matrix_nodes(path: Path) -> list[str]:
    import itertools

    tasks = tomllib.loads(path.read_text(encoding="utf-8")).get("tasks", {})
    nodes = []
    for name, task in tasks.items():
        matrix = task.get("matrix")
        if not matrix:
            continue
        keys = list(matrix)
        for combo in itertools.product(*(matrix[k] for k in keys)):
            label = ",".join(f"{k}={v}" for k, v in zip(keys, combo, strict=True))
            nodes.append(f"{name}[{label}]")
    return nodes


def _graph(capsys, path: Path, *args: str) -> str:
    capsys.readouterr()
    code = ik_main(["graph", str(path), *args])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "Traceback" not in out.err
    return out.out


@needs_wf
@pytest.mark.parametrize("path", WF_EXAMPLES, ids=[p.stem for p in WF_EXAMPLES])
def test_wf_example_graph_all_formats(path: Path, capsys):
    runnable, nodes, teardown = _task_names(path)

    text = _graph(capsys, path, "--format", "text")
    for name in [*runnable, *nodes]:
        assert f"[{name}" in text, f"{name!r} missing from the text graph"

    forensic = _graph(capsys, path, "--forensic")
    for name in [*runnable, *nodes, *teardown]:
        assert f"[{name}" in forensic, f"{name!r} missing from the forensic graph"

    mermaid = _graph(capsys, path, "--format", "mermaid")
    assert mermaid.startswith("graph TD")
    for name in nodes:
        assert f"[{name}]" in mermaid, f"{name!r} missing from the mermaid graph"

    dot = _graph(capsys, path, "--format", "dot")
    assert dot.startswith("digraph") and dot.rstrip().endswith("}")
    for name in nodes:
        assert f'"{name}"' in dot, f"{name!r} missing from the dot graph"

    for fmt in ("mermaid", "dot"):
        drawn = _graph(capsys, path, "--format", fmt, "--forensic")
        for name in teardown:
            assert name in drawn, f"{name!r} missing from the forensic {fmt} graph"


@needs_wf
def test_compliance_audit_matrix_nodes_in_graph(capsys):
    text = _graph(capsys, WF_DIR / "compliance-audit.toml")
    for framework in ("SOC2", "ISO27001", "HIPAA"):
        assert f"map-framework-controls[framework={framework}]" in text


@needs_wf
def test_ik_graph_console_script(ik_home: Path):
    """The real console script once (every format runs in-process above: the same `main`)."""
    path = WF_DIR / "compliance-audit.toml"
    result = subprocess.run([str(IK), "graph", str(path), "--forensic"], capture_output=True,
                            text=True, env=_ik_env(ik_home), cwd=ik_home, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "map-framework-controls[framework=SOC2]" in result.stdout
    assert "escalate-incomplete-audit" in result.stdout


def test_ik_graph_of_broken_file_is_one_line_per_problem(capsys):
    path = FIXTURES / "broken" / "cycle-two.toml"
    capsys.readouterr()
    code = ik_main(["graph", str(path)])
    err = capsys.readouterr().err
    assert code == 1
    assert err.strip().splitlines() == [
        f"ik: error: {path}: dependency cycle: ping -> pong -> ping"]
    assert "Traceback" not in err


# ---------------------------------------------------------------------------------------
# build_definitions with a broken file among good ones


def test_build_definitions_skips_broken_pipeline(tmp_path: Path):
    pipelines = tmp_path / "pipelines"
    pipelines.mkdir()
    for path in GOOD:
        shutil.copy2(path, pipelines / path.name)
    shutil.copytree(FIXTURES / "good" / "modules", pipelines / "modules")
    broken = FIXTURES / "broken" / "unknown-depends-on.toml"
    shutil.copy2(broken, pipelines / broken.name)
    also_broken = ["binary-file", "empty-file", "not-utf8", "unclosed-ref-in-cmd",
                   "module-absolute-path"]
    for stem in also_broken:
        shutil.copy2(FIXTURES / "broken" / f"{stem}.toml", pipelines / f"{stem}.toml")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        defs = build_definitions(pipelines)

    for path in GOOD:
        name = tomllib.loads(path.read_text())["name"]
        job = defs.resolve_job_def(f"{name.replace('-', '_')}__provision")
        assert job.name == f"{name.replace('-', '_')}__provision"
    assert defs.resolve_job_def("resource__provision") is not None

    metadata = defs.metadata or {}
    assert "infrakitchen/broken_pipelines" in metadata
    entry = metadata["infrakitchen/broken_pipelines"]
    text = str(getattr(entry, "value", entry))
    assert "unknown-depends-on.toml" in text
    assert "ghost-task" in text
    for stem in also_broken:
        assert f"{stem}.toml" in text
        for expected in expectations(FIXTURES / "broken" / f"{stem}.toml"):
            assert expected.lower() in text.lower(), (stem, expected, text)
    for path in GOOD:
        assert path.name not in text

    with pytest.raises(Exception, match="unknown_depends_on__provision"):
        defs.resolve_job_def("unknown_depends_on__provision")
