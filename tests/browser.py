"""What the browser tests share: a webserver on a free loopback port, a log tail for
failures, the optional community dialog of a first visit, and screenshots that must not be
empty."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import Page, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeout

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tail(path: Path, limit: int = 6000) -> str:
    return path.read_text(errors="replace")[-limit:] if path.exists() else "(no output)"


def skip_community_dialog(page: Page, timeout_ms: int, appear_ms: int = 10_000) -> None:
    """The first visit may show "Join the Dagster community"; dismiss it when it comes
    (other UI versions, or a browser context that saw it, do not show it)."""
    skip = page.get_by_role("button", name="Skip")
    try:
        skip.wait_for(state="visible", timeout=appear_ms)
    except PlaywrightTimeout:
        return
    skip.click()
    expect(skip).to_have_count(0, timeout=timeout_ms)


def screenshot(page: Page, path: Path) -> Path:
    page.screenshot(path=str(path), full_page=True)
    assert path.is_file() and path.stat().st_size > 0, f"empty screenshot {path}"
    return path


def wait_until_serving(process: subprocess.Popen[bytes], base: str, log: Path,
                       seconds: float, what: str) -> None:
    """Until `base` answers /server_info; fails with the log's tail if `process` exits
    first or `seconds` pass. Polls: a port has no event to wait on."""
    deadline = time.monotonic() + seconds
    while True:
        code = process.poll()
        if code is not None:
            raise AssertionError(f"{what} exited {code} before serving:\n{tail(log)}")
        try:
            with urllib.request.urlopen(f"{base}/server_info", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not answer on {base} within {seconds}s:\n"
                                 f"{tail(log)}")
        time.sleep(0.5)


@contextmanager
def serving(argv: list[str], env: dict[str, str], cwd: Path, log: Path, seconds: float,
            stop: Callable[[subprocess.Popen[bytes]], None]) -> Iterator[str]:
    """`argv` (a Dagster webserver command) on a free loopback port, in its own session
    with its output in `log`; yields the base URL once it answers, and `stop`s it after."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with log.open("wb") as out:
        process = subprocess.Popen([*argv, "-h", "127.0.0.1", "-p", str(port)], cwd=cwd,
                                   env=env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        wait_until_serving(process, base, log, seconds, Path(argv[0]).name)
        yield base
    finally:
        stop(process)
