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
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from sqlalchemy.engine import make_url

from .conftest import ROOT, Toolchain, make_ik_env

pytestmark = pytest.mark.postgres

CHROMIUM = Path("/usr/bin/chromium")
PIPELINE, GROUP = "infra-provisioning", "infra_provisioning"
SECRET = "ik-example-S3cret-pw"  # the example's db_password; must never reach the UI
STARTUP_SECONDS = 90
STOP_SECONDS = 20
UI_TIMEOUT_MS = 30_000


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tail(path: Path, limit: int = 6000) -> str:
    return path.read_text(errors="replace")[-limit:] if path.exists() else "(no output)"


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
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    command = [str(Path(sys.executable).parent / "dagster-webserver"), "-f", "definitions.py",
               "-h", "127.0.0.1", "-p", str(port)]
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            code = process.poll()
            if code is not None:
                raise AssertionError(
                    f"dagster-webserver exited {code} before serving:\n{_tail(log)}")
            try:
                with urllib.request.urlopen(f"{base}/server_info", timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"dagster-webserver did not answer on {base} within {STARTUP_SECONDS}s:\n"
                    f"{_tail(log)}")
            time.sleep(0.5)
        yield base
    finally:
        _stop(process)


def _skip_community_dialog(page: Page) -> None:
    """The first visit shows "Join the Dagster community"; dismiss it when it comes."""
    skip = page.get_by_role("button", name="Skip")
    try:
        skip.wait_for(state="visible", timeout=10_000)
    except PlaywrightTimeout:  # the dialog is optional: other UI versions may not show it
        return
    skip.click()
    expect(skip).to_have_count(0, timeout=UI_TIMEOUT_MS)


def _screenshot(page: Page, path: Path) -> None:
    page.screenshot(path=str(path), full_page=True)
    assert path.is_file() and path.stat().st_size > 0, f"empty screenshot {path}"


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
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(UI_TIMEOUT_MS)

            # the asset graph of the pipeline's group: every task is a node
            page.goto(f"{base}/locations/definitions.py/asset-groups/{GROUP}")
            _skip_community_dialog(page)
            for task in ("provision-network", "provision-database", "configure-dns"):
                expect(page.get_by_text(task, exact=True).first).to_be_visible(
                    timeout=UI_TIMEOUT_MS)
            _screenshot(page, graph_png)

            # the asset's page carries the latest materialisation's metadata
            page.goto(f"{base}/assets/{PIPELINE}/provision-network")
            expect(page.get_by_text("output/vpc_id", exact=True)).to_be_visible(
                timeout=UI_TIMEOUT_MS)
            value = page.get_by_text(vpc_id, exact=True).first
            expect(value).to_be_visible(timeout=UI_TIMEOUT_MS)
            page.get_by_text("output/vpc_id", exact=True).scroll_into_view_if_needed()
            _screenshot(page, network_png)

            # a sensitive output is listed by name but its value never reaches the page
            page.goto(f"{base}/assets/{PIPELINE}/provision-database")
            expect(page.get_by_text("output/db_password", exact=True)).to_be_visible(
                timeout=UI_TIMEOUT_MS)
            expect(page.get_by_text(rds_endpoint, exact=True).first).to_be_visible(
                timeout=UI_TIMEOUT_MS)
            page.get_by_text("output/db_password", exact=True).scroll_into_view_if_needed()
            _screenshot(page, database_png)
            assert SECRET not in page.inner_text("body")
            assert SECRET not in page.content()
        finally:
            browser.close()
