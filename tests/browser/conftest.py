"""Browser-test fixtures: the real app as a server on 127.0.0.1, Debian's Chromium, a page that records console errors.

One server and one browser per session (starting them costs ~20 s on 2 cores); every test gets a fresh browser
context (no cookies, no storage) and page.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ..conftest import ROOT, studio_cmd

CHROMIUM = Path("/usr/bin/chromium")
# Headless Chromium that talks to nothing but the app: no GPU, no QUIC, no first-run or background traffic.
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1400, "height": 1000}
SERVER_START_S = 120  # importing gradio + torch on a busy 2-core machine

# Console errors that are not the app's: each one says why it is harmless. Keep this list short.
HARMLESS_CONSOLE = (
    # The browser asks for /favicon.ico by itself; a 404 there says nothing about the app.
    "favicon.ico",
)


@dataclass
class Server:
    url: str
    runs_dir: Path
    root: Path
    log_path: Path

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


@dataclass
class ConsoleLog:
    """Errors the page reported: console.error messages and uncaught exceptions."""

    errors: list[str] = field(default_factory=list)
    checked: bool = False

    def on_console(self, message) -> None:
        if message.type == "error":
            where = message.location.get("url", "") if isinstance(message.location, dict) else ""
            self.errors.append(f"console.error: {message.text} ({where})")

    def on_pageerror(self, error) -> None:
        self.errors.append(f"pageerror: {error}")

    @contextlib.contextmanager
    def reloading(self, page):
        """A reload cuts the old page's open event streams (the 1 s poll is nearly always in flight), and Gradio's
        client reports that as "AbortError" / "Connection errored out". Those two, and only while the page
        reloads, are the browser leaving, not the app failing."""
        start = len(self.errors)
        yield
        page.wait_for_timeout(500)  # late reports of the old page's streams
        cut = ("AbortError: signal is aborted", "Connection errored out")
        self.errors[start:] = [e for e in self.errors[start:] if not any(c in e for c in cut)]

    def app_errors(self) -> list[str]:
        return [e for e in self.errors if not any(h in e for h in HARMLESS_CONSOLE)]

    def assert_clean(self) -> None:
        self.checked = True
        errors = self.app_errors()
        assert not errors, "errors in the browser console:\n" + "\n".join(errors)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def chromium() -> Path:
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed at /usr/bin/chromium: `make test` installs it "
                    "(apt-get install chromium); the tests never download a browser")
    return CHROMIUM


@pytest.fixture(scope="session")
def studio_server(chromium, tmp_path_factory):
    """`python -m studio ui` with a temporary runs folder and the tiny test model, torn down after the session."""
    root = tmp_path_factory.mktemp("studio-ui")
    runs_dir = root / "runs"
    port = _free_port()
    env = {**os.environ, "STUDIO_TEST_MODELS": "1", "GRADIO_TEMP_DIR": str(root / "gradio-tmp"),
           "GRADIO_ANALYTICS_ENABLED": "False", "TOKENIZERS_PARALLELISM": "false"}
    log_path = root / "server.log"
    log = open(log_path, "w")
    proc = subprocess.Popen(studio_cmd("ui", "--port", str(port), "--runs-dir", str(runs_dir), "--test-models"),
                            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    server = Server(url=f"http://127.0.0.1:{port}/", runs_dir=runs_dir, root=root, log_path=log_path)
    try:
        deadline = time.time() + SERVER_START_S
        while True:
            try:
                with urllib.request.urlopen(server.url, timeout=2):
                    break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail(f"the app exited with code {proc.returncode} at start:\n{server.log_tail()}")
                if time.time() > deadline:
                    pytest.fail(f"the app did not answer within {SERVER_START_S} s:\n{server.log_tail()}")
                time.sleep(0.5)
        yield server
    finally:
        _stop_live_runs(runs_dir)
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


def _stop_live_runs(runs_dir: Path) -> None:
    """A test that failed mid-run must not leave a training process behind."""
    from studio import jobs

    try:
        busy = jobs.active_run(runs_dir)
        if busy is not None:
            jobs.stop_run(busy, grace_s=10)
            jobs.wait_for(busy, timeout_s=30)
    except Exception as err:  # noqa: BLE001 - teardown: report, never hide the test's own failure
        print(f"could not stop the live run in {runs_dir}: {err}")


@pytest.fixture(scope="session")
def browser(chromium):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # launch() (not a persistent context) gives a fresh, temporary user-data dir each session.
        browser = playwright.chromium.launch(executable_path=str(chromium), headless=True, args=LAUNCH_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def console() -> ConsoleLog:
    return ConsoleLog()


@pytest.fixture
def page(browser, studio_server, console):
    from playwright.sync_api import expect

    # Every answer comes from a server sharing 2 cores with a training process: allow it time.
    expect.set_options(timeout=30_000)
    context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
    context.set_default_timeout(30_000)
    page = context.new_page()
    page.on("console", console.on_console)
    page.on("pageerror", console.on_pageerror)
    page.goto(studio_server.url)
    page.locator("#model-choice").wait_for()
    yield page
    context.close()
    if not console.checked:
        console.assert_clean()


@pytest.fixture(scope="session")
def shots_dir(tmp_path_factory, request) -> Path:
    """Where screenshots go: $STUDIO_SCREENSHOTS (make screenshots: assets/screenshots), else a temporary folder."""
    wanted = os.environ.get("STUDIO_SCREENSHOTS")
    if wanted:
        folder = Path(wanted)
        folder = folder if folder.is_absolute() else ROOT / folder
        folder.mkdir(parents=True, exist_ok=True)
    else:
        folder = tmp_path_factory.mktemp("screenshots")
    request.config.stash[SHOTS_KEY] = folder
    return folder


SHOTS_KEY = pytest.StashKey[Path]()


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    folder = config.stash.get(SHOTS_KEY, None)
    if folder is not None:
        names = sorted(p.name for p in folder.glob("*.png"))
        terminalreporter.write_line(f"Browser screenshots in {folder}: {', '.join(names) or 'none'}")
