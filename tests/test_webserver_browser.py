"""The Dagster web UI in a real browser, against the production (PostgreSQL) instance.

The other tests read runs and materialisations through Dagster's Python API. What an
operator actually looks at is the web UI, served by `dagster-webserver` from the instance
in `deploy/dagster-postgres.yaml`. This test provisions the bundled example with a real
Terraform apply, serves the UI on loopback from the same PostgreSQL instance and drives
Debian's headless Chromium through Playwright: the asset keys must be on the asset graph,
a recorded output value must be on the asset's page, and a sensitive output must not be.
Screenshots are kept in the test's output directory for whoever debugs a failure.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright
from sqlalchemy.engine import make_url

from .browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    screenshot,
    serving,
    skip_community_dialog,
)
from .conftest import ROOT, Toolchain, make_ik_env

pytestmark = pytest.mark.postgres

PIPELINE, GROUP = "infra-provisioning", "infra_provisioning"
SECRET = "ik-example-S3cret-pw"  # the example's db_password; must never reach the UI
STARTUP_SECONDS = 90
STOP_SECONDS = 20
UI_TIMEOUT_MS = 30_000


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the webserver's process group (it spawns a code server), SIGKILL if stuck."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=STOP_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=STOP_SECONDS)
    except ProcessLookupError:
        process.wait(timeout=STOP_SECONDS)


@contextmanager
def _webserver(env: dict[str, str], log: Path) -> Iterator[str]:
    """`dagster-webserver` on a free loopback port; yields its base URL once it answers."""
    command = [str(Path(sys.executable).parent / "dagster-webserver"), "-f", "definitions.py"]
    with serving(command, env, ROOT, log, STARTUP_SECONDS, _stop) as base:
        yield base


def test_web_ui_shows_assets_and_outputs_from_postgres(
        tmp_path: Path, toolchain: Toolchain, pipelines_copy: Path,
        postgres_database: str) -> None:
    if not CHROMIUM.is_file():
        pytest.skip("Debian chromium is not installed; .ci/run installs it")
    url = make_url(postgres_database)
    env = make_ik_env(tmp_path, toolchain, pipelines_copy, database_url=postgres_database)
    shutil.copy2(ROOT / "deploy" / "dagster-postgres.yaml", env.dagster_home / "dagster.yaml")
    env.env.update(
        DAGSTER_PG_HOST=url.host or "127.0.0.1", DAGSTER_PG_PORT=str(url.port or 5432),
        DAGSTER_PG_DB=url.database or "", DAGSTER_PG_USER=url.username or "postgres",
        DAGSTER_PG_PASSWORD=url.password or "",
    )

    result = env.dagster_job("infra_provisioning__provision")
    assert "RUN_SUCCESS" in result.stdout + result.stderr
    vpc_id = env.inspect(PIPELINE, "provision-network")["outputs"]["vpc_id"]
    rds_endpoint = env.inspect(PIPELINE, "provision-database")["outputs"]["rds_endpoint"]
    assert vpc_id.startswith("vpc-")

    graph_png = tmp_path / "asset-graph.png"
    network_png = tmp_path / "asset-provision-network.png"
    database_png = tmp_path / "asset-provision-database.png"
    with _webserver(env.env, tmp_path / "webserver.log") as base, sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True,
            args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(UI_TIMEOUT_MS)

            # the asset graph of the pipeline's group: every task is a node
            page.goto(f"{base}/locations/definitions.py/asset-groups/{GROUP}")
            skip_community_dialog(page, UI_TIMEOUT_MS)
            for task in ("provision-network", "provision-database", "configure-dns"):
                expect(page.get_by_text(task, exact=True).first).to_be_visible(
                    timeout=UI_TIMEOUT_MS)
            screenshot(page, graph_png)

            # the asset's page carries the latest materialisation's metadata
            page.goto(f"{base}/assets/{PIPELINE}/provision-network")
            expect(page.get_by_text("output/vpc_id", exact=True)).to_be_visible(
                timeout=UI_TIMEOUT_MS)
            value = page.get_by_text(vpc_id, exact=True).first
            expect(value).to_be_visible(timeout=UI_TIMEOUT_MS)
            page.get_by_text("output/vpc_id", exact=True).scroll_into_view_if_needed()
            screenshot(page, network_png)

            # a sensitive output is listed by name but its value never reaches the page
            page.goto(f"{base}/assets/{PIPELINE}/provision-database")
            expect(page.get_by_text("output/db_password", exact=True)).to_be_visible(
                timeout=UI_TIMEOUT_MS)
            expect(page.get_by_text(rds_endpoint, exact=True).first).to_be_visible(
                timeout=UI_TIMEOUT_MS)
            page.get_by_text("output/db_password", exact=True).scroll_into_view_if_needed()
            screenshot(page, database_png)
            assert SECRET not in page.inner_text("body")
            assert SECRET not in page.content()
        finally:
            browser.close()
