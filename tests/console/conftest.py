"""The console in a real browser: Debian's chromium driven by Playwright (no browser download;
installed with apt-get when missing, as .ci/run does), against the local API over real HTTP.
Screenshots go to build/screenshots/ (git-ignored); a page's console errors fail its test."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ROOT, local_api_server

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = ROOT / "build" / "screenshots"


def ensure_chromium() -> Path:
    """Debian's chromium, installed with apt-get when this machine lacks it."""
    if not CHROMIUM.exists():
        if shutil.which("apt-get") is None:
            pytest.fail(f"{CHROMIUM} is missing and there is no apt-get: install chromium")
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], check=True)
    return CHROMIUM


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    executable = ensure_chromium()
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(executable),
                                              args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def capture_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The console API's capture store (and drift reports): its own, not the repository's."""
    return tmp_path_factory.mktemp("console-capture")


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory,
        capture_dir: Path) -> Iterator[tuple[httpx.Client, str]]:
    """The local API (its client, and its base URL for the browser)."""
    log = tmp_path_factory.mktemp("console-api") / "server.log"
    with local_api_server(log, extra=("--capture-dir", str(capture_dir))) as (client, port):
        yield client, f"http://127.0.0.1:{port}"


class Page:
    """A browser tab on the console, recording its console errors and failed loads."""

    def __init__(self, page: Any, base: str) -> None:
        self.page = page
        self.base = base
        self.errors: list[str] = []
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))

    def screenshot(self, name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path


@pytest.fixture
def tab(browser: Any, api: tuple[httpx.Client, str]) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1360, "height": 1000})
    page = Page(context.new_page(), api[1])
    page.page.set_default_timeout(30_000)
    yield page
    context.close()
