"""An operator's day in the Dagster UI, in headless Chromium: ask, approve, apply, get denied.

tests/test_webserver_browser.py shows that the UI can be browsed. This test uses it the way
an infrastructure team does, with every run launched by a click: `dagster dev` (the
webserver and the daemon that dequeues runs and ticks the approvals sensor) serves the
embedded SQLite instance, and each person's console acts as its code location's
`INFRAKITCHEN_UI_PRINCIPAL`. The pipeline `gate` is gated (owner `olive`, writer `wendy`)
and judged by the Rego fixtures under tests/fixtures/policies:

1. a console that names no principal: Materialize is refused in one ERROR line that says
   how to set the principal; the run is not a failure and the asset is not materialised;
2. wendy's console: Materialize files request 1; the run's last WARNING says so, and the
   asset's `approval` check shows the request, its plan, requester and approve command;
   wendy cannot approve it from the Launchpad (a writer); her `cache` of size "huge" is
   denied by policy: the materialisation fails and the `policy` check shows the message;
3. olive's console: the Launchpad of `gate__approve` approves request 1; the approvals
   sensor applies exactly that plan and the asset shows it applied; her `ik plan` from a
   terminal shows in the job's run history, as runs the UI started do.

Real Terraform applies (null provider) count themselves in files, so the test also sees
what was, and was not, applied. Screenshots are saved in the test's tmp dir (pytest keeps
the last runs' dirs), for CI to keep as artifacts and for whoever debugs a failure.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from .browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    screenshot,
    serving,
    skip_community_dialog,
)
from .conftest import FIXTURES, ROOT, IkEnv, Toolchain, make_ik_env, write_pipeline

pytestmark = pytest.mark.timeout(900)

PIPELINE, OWNER, WRITER = "gate", "olive", "wendy"
LOCATION = "definitions.py"
UI_TIMEOUT_MS = 60_000
RUN_TIMEOUT_MS = 240_000  # queued, dequeued by the daemon, planned/applied, on a busy machine
STARTUP_SECONDS = 120
STOP_SECONDS = 60


# -- the console: `dagster dev` acting as one principal ------------------------------------


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Ctrl-C for `dagster dev` (it stops its webserver, daemon and code server), then
    SIGKILL for whatever of its process group is still there."""
    if process.poll() is None:
        with suppress(ProcessLookupError):
            process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_SECONDS)
    with suppress(ProcessLookupError):  # nothing of the group left: nothing to do
        os.killpg(process.pid, signal.SIGKILL)


@contextmanager
def _console(env: IkEnv, principal: str | None, log: Path) -> Iterator[str]:
    """`dagster dev` on a free loopback port whose UI launches act as `principal` (None: the
    setting left out); yields the base URL once the webserver answers."""
    settings = dict(env.env)
    settings.pop("INFRAKITCHEN_UI_PRINCIPAL", None)
    if principal is not None:
        settings["INFRAKITCHEN_UI_PRINCIPAL"] = principal
    command = [str(Path(sys.executable).parent / "dagster"), "dev", "-f", LOCATION]
    with serving(command, settings, ROOT, log, STARTUP_SECONDS, _stop) as base:
        yield base


# -- what a person does in the UI -------------------------------------------------------


class Operator:
    """One browser tab on one console, and where its screenshots go."""

    def __init__(self, page: Page, base: str, shots: Path) -> None:
        self.page, self.base, self.shots = page, base, shots

    def open(self, path: str) -> None:
        self.page.goto(f"{self.base}{path}")
        self._skip_community_dialog()

    def _skip_community_dialog(self) -> None:
        skip_community_dialog(self.page, UI_TIMEOUT_MS, appear_ms=5_000)

    def shot(self, name: str) -> Path:
        return screenshot(self.page, self.shots / f"{name}.png")

    def materialize(self, task: str) -> str:
        """Click Materialize on the asset's page, follow the toast to the run; its id."""
        self.open(f"/assets/{PIPELINE}/{task}")
        button = self.page.get_by_role("button").filter(has_text=re.compile(r"^Materialize$"))
        expect(button).to_be_enabled(timeout=UI_TIMEOUT_MS)
        button.click()
        return self._follow_launched_run()

    def launch_approval(self, request_id: int, decision: str) -> str:
        """Fill the Launchpad of `gate__approve` as a person types it; Launch Run."""
        self.open(f"/locations/{LOCATION}/jobs/{PIPELINE}__approve/playground")
        editor = self.page.locator(".CodeMirror").first
        expect(editor).to_be_visible(timeout=UI_TIMEOUT_MS)
        editor.click()
        self.page.keyboard.press("Control+A")
        self.page.keyboard.insert_text(
            f"ops:\n  {PIPELINE}__decide:\n    config:\n      request_id: {request_id}\n"
            f"      decision: {decision}\n")
        expect(self.page.get_by_text("No errors")).to_be_visible(timeout=UI_TIMEOUT_MS)
        self.page.get_by_role("button", name="Launch Run").click()
        self.page.wait_for_url(re.compile(r"/runs/[0-9a-f-]{36}"), timeout=UI_TIMEOUT_MS)
        return self.page.url.rsplit("/", 1)[-1]

    def _follow_launched_run(self) -> str:
        expect(self.page.get_by_text(re.compile(r"^Launched run"))).to_be_visible(
            timeout=UI_TIMEOUT_MS)
        self.page.get_by_role("button", name="View").or_(
            self.page.get_by_role("link", name="View")).first.click()
        self.page.wait_for_url(re.compile(r"/runs/[0-9a-f-]{36}"), timeout=UI_TIMEOUT_MS)
        return self.page.url.rsplit("/", 1)[-1]

    def run_ends(self, status: str) -> None:
        """Wait on the run page until its status is `status` (Success, Failure)."""
        expect(self.page.get_by_text(status, exact=True).first).to_be_visible(
            timeout=RUN_TIMEOUT_MS)

    def log_line(self, text: str, query: str | None = None) -> None:
        """Filter the run's event log for `query` and expect a line with `text`."""
        search = self.page.get_by_placeholder("Filter…", exact=True)
        search.fill(query or text)
        search.press("Enter")
        expect(self.page.get_by_text(text).first).to_be_visible(timeout=UI_TIMEOUT_MS)

    def tags(self, expected: dict[str, str]) -> None:
        """The run's tags, as "View tags and config" lists them."""
        self.page.get_by_role("button", name="View tags and config").click()
        dialog = self.page.get_by_role("dialog")
        for key, value in expected.items():
            expect(dialog.get_by_text(f"{key}: {value}", exact=True)).to_be_visible(
                timeout=UI_TIMEOUT_MS)
        dialog.get_by_role("button", name="OK").click()
        expect(dialog).to_have_count(0, timeout=UI_TIMEOUT_MS)

    def open_run_of(self, job: str) -> str:
        """The newest run in the job's run history (once there is one); its id."""
        self.open(f"/locations/{LOCATION}/jobs/{job}/runs")
        run = self.page.locator('a[href*="/runs/"]').filter(
            has_text=re.compile(r"^[0-9a-f]{8}$")).first
        expect(run).to_be_visible(timeout=RUN_TIMEOUT_MS)
        run.click()
        self.page.wait_for_url(re.compile(r"/runs/[0-9a-f-]{36}"), timeout=UI_TIMEOUT_MS)
        return self.page.url.rsplit("/", 1)[-1]

    def check(self, task: str, name: str) -> None:
        """The asset's Checks tab, with check `name` selected."""
        self.open(f"/assets/{PIPELINE}/{task}?view=checks&checkDetail={name}")
        expect(self.page.get_by_text("Latest execution")).to_be_visible(
            timeout=UI_TIMEOUT_MS)

    def metadata(self, key: str, value: str, timeout: int = UI_TIMEOUT_MS) -> None:
        """A metadata row `key | value` is on the page (within `timeout` ms)."""
        row = self.page.get_by_role("row").filter(
            has=self.page.get_by_text(key, exact=True)).filter(
            has=self.page.get_by_text(value, exact=True))
        expect(row.first).to_be_visible(timeout=timeout)


# -- the day ---------------------------------------------------------------------------------


def _setup(tmp_path: Path, toolchain: Toolchain, pipelines: Path) -> tuple[IkEnv, Path]:
    """Only the `gate` pipeline, its module and the Rego fixtures; wendy may write."""
    for file in pipelines.glob("*.toml"):
        file.unlink()
    shutil.copytree(FIXTURES / "policies" / "module", pipelines / "policy-module")
    shutil.copytree(FIXTURES / "policies" / "rego", pipelines / "policies")
    counts = tmp_path / "applied"
    counts.mkdir()
    write_pipeline(pipelines, PIPELINE, f"""
name = "{PIPELINE}"
description = "The edge network and its cache, behind the approval flow"
approval = true
owners = ["{OWNER}"]
policies = ["policies/*.rego"]

[tasks.net]
module = "policy-module"
variables = {{ name = "edge-net", size = "small", count_file = "{counts}/net" }}

[tasks.cache]
module = "policy-module"
variables = {{ name = "edge-cache", size = "huge", count_file = "{counts}/cache" }}
""")
    env = make_ik_env(tmp_path, toolchain, pipelines)
    env.ik("grant", WRITER, "write", "--pipeline", PIPELINE, "--as", OWNER)
    return env, counts


def _applied(counts: Path, task: str) -> list[str]:
    path = counts / task
    return path.read_text().split() if path.exists() else []


def test_a_day_in_the_console_request_approve_apply_and_a_policy_denial(
        tmp_path: Path, toolchain: Toolchain, pipelines_copy: Path) -> None:
    if not CHROMIUM.is_file():
        pytest.skip("Debian chromium (/usr/bin/chromium) is not installed; .ci/run installs it")
    env, counts = _setup(tmp_path, toolchain, pipelines_copy)
    shots = tmp_path / "screenshots"
    shots.mkdir()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True,
            args=CHROMIUM_ARGS)
        try:
            opened: list[Operator] = []

            def operator(base: str) -> Operator:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.set_default_timeout(UI_TIMEOUT_MS)
                opened.append(Operator(page, base, shots))
                return opened[-1]

            # 1. nobody set the console's principal: refused in one line, nothing changed
            with _console(env, None, tmp_path / "console-unset.log") as base:
                ui = operator(base)
                ui.materialize("net")
                ui.run_ends("Success")
                ui.log_line("net: refused, nothing was changed", query="refused")
                expect(ui.page.get_by_text("INFRAKITCHEN_UI_PRINCIPAL").first).to_be_visible()
                ui.shot("01-refused-without-principal")
                ui.tags({"infrakitchen/outcome": "refused", "infrakitchen/launch": "ui"})
                assert "Traceback" not in ui.page.inner_text("body")
                ui.open(f"/assets/{PIPELINE}/net")
                expect(ui.page.get_by_text("Never materialized")).to_be_visible()

            # 2. wendy's console: she asks for the network, and for a cache policy denies
            with _console(env, WRITER, tmp_path / "console-wendy.log") as base:
                ui = operator(base)
                ui.materialize("net")
                ui.run_ends("Success")
                ui.log_line("approval pending: request(s) 1 wait", query="approval pending")
                ui.shot("02-request-filed-run")
                ui.tags({"infrakitchen/outcome": "approval_pending", "infrakitchen/launch": "ui",
                         "infrakitchen/user": WRITER, "infrakitchen/pipeline": PIPELINE})

                ui.check("net", "approval")
                expect(ui.page.get_by_text(
                    "request 1 (provision, default) waits for approval: plan +1 ~0 -0, "
                    f"asked by {WRITER}; ik approve 1")).to_be_visible()
                for key, value in (("request_id", "1"), ("operation", "provision"),
                                   ("plan", "+1 ~0 -0"), ("requested_by", WRITER),
                                   ("approve_command", "ik approve 1")):
                    ui.metadata(key, value)
                ui.shot("03-approval-check-pending")

                ui.launch_approval(1, "approve")
                ui.run_ends("Failure")
                ui.log_line("approve request 1 needs admin or above", query="needs admin")
                ui.shot("04-writer-cannot-approve")

                ui.materialize("cache")
                ui.run_ends("Failure")
                denial = "null_resource.this: size huge is not allowed (gate/cache in default)"
                ui.log_line(f"policy denied the provision plan: {denial}",
                            query="policy denied")
                ui.shot("05-policy-denied-run")
                ui.check("cache", "policy")
                expect(ui.page.get_by_text(f"denied: {denial}")).to_be_visible()
                ui.metadata("operation", "provision")
                ui.shot("06-policy-check-denied")
            assert _applied(counts, "net") == [] and _applied(counts, "cache") == []

            # 3. olive's console: she approves from the Launchpad; the sensor applies it
            with _console(env, OWNER, tmp_path / "console-olive.log") as base:
                ui = operator(base)
                ui.launch_approval(1, "approve")
                ui.run_ends("Success")
                ui.log_line(f"request 1 approved by {OWNER}", query="approved by")
                ui.shot("07-approved-from-launchpad")

                # the approvals sensor launches the run that applies exactly that plan
                ui.open_run_of(f"{PIPELINE}__provision")
                ui.run_ends("Success")
                ui.log_line("net: Apply complete: 1 added, 0 changed, 0 destroyed",
                            query="Apply complete")
                ui.tags({"infrakitchen/approval_request": "1",
                         "infrakitchen/approved_by": OWNER})
                ui.shot("08-applied-by-the-approvals-sensor")

                ui.open(f"/assets/{PIPELINE}/net")
                ui.metadata("status", "provisioned/done · revision 1")
                ui.metadata("plan", "+1 ~0 -0")
                ui.shot("09-applied-asset")
                ui.check("net", "approval")
                expect(ui.page.get_by_text(
                    f"request 1 (provision, default) applied: approved by {OWNER}")
                ).to_be_visible()
                ui.shot("10-approval-check-applied")

                # a run from a terminal is in the job's history beside the UI's runs
                planned = env.ik("plan", PIPELINE, "--as", OWNER).stdout
                terminal_run = re.search(r"run ([0-9a-f-]{36})", planned).group(1)
                ui.open(f"/locations/{LOCATION}/jobs/{PIPELINE}__plan/runs")
                expect(ui.page.locator(f'a[href*="/runs/{terminal_run}"]').first
                       ).to_be_visible(timeout=UI_TIMEOUT_MS)
                ui.shot("11-terminal-run-in-job-history")
                ui.open("/overview/activity/timeline")  # its row: the terminal run's alone
                expect(ui.page.locator(f'a[href$="/jobs/{PIPELINE}__plan"]').first
                       ).to_be_visible(timeout=UI_TIMEOUT_MS)
                ui.shot("12-overview-timeline")
        except Exception:
            if opened:  # what the page showed when the day went wrong
                with suppress(Exception):
                    opened[-1].shot("failure")
            raise
        finally:
            browser.close()
    assert _applied(counts, "net") == ["edge-net"], "the approved plan was applied once"
    assert _applied(counts, "cache") == [], "a denied plan is never applied"
    record = json.loads(env.ik("inspect", f"{PIPELINE}/net", "--json", "--as", OWNER).stdout)
    assert (record["state"], record["status"]) == ("provisioned", "done")
