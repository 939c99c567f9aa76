"""Generate a Dagster workspace with one code location per pipeline file.

    python deploy/workspace_per_pipeline.py [PIPELINES_DIR] [OUT_DIR]
    dagster dev -w OUT_DIR/workspace.yaml           # or the webserver and daemon with -w

PIPELINES_DIR defaults to INFRAKITCHEN_PIPELINES (else ./pipelines), OUT_DIR to
./workspace-per-pipeline. Each location is a generated `locations/<stem>.py` that loads
its one TOML (`build_definitions(pipeline_files=[...])`), so a run launched from the UI,
and each of its step processes, loads one pipeline instead of the whole estate, and a
broken file breaks only its own location. Each location has its own sensors (approvals,
run failure, healing), which act on their own pipeline only. Re-run after adding or
removing pipeline files; the output holds absolute paths, so generate it where it is used
rather than committing it.

With separately started code servers (deploy/workspace.yaml), start one per generated
file instead: `dagster code-server start -p 4001 -f OUT_DIR/locations/<stem>.py`.
"""

import os
import sys
from pathlib import Path

from infrakitchen_dagster.definitions import write_workspace


def main(argv: list[str]) -> int:
    pipelines = Path(argv[0] if argv else os.environ.get("INFRAKITCHEN_PIPELINES", "pipelines"))
    out = Path(argv[1] if len(argv) > 1 else "workspace-per-pipeline")
    if not pipelines.is_dir():
        print(f"workspace_per_pipeline: {pipelines} is not a directory", file=sys.stderr)
        return 2
    print(write_workspace(pipelines, out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
