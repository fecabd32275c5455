"""A real Chromium (Debian's, driven by Playwright) against the chat under gunicorn.

Playwright's own browser download is not used: ``CHAT_TEST_CHROMIUM``
(default ``/usr/bin/chromium``, see :mod:`tests.support.browser`) is launched
headless. A failing test leaves a screenshot of each open page in
``tests/browser/screenshots/``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, sync_playwright

from tests.support.browser import ADMIN_PASSWORD, API_TOKEN, CHROMIUM, CHROMIUM_ARGS
from tests.support.gunicorn import ChatServer, launch_chat

SCREENSHOTS = Path(__file__).parent / "screenshots"


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: apt-get install chromium (or set CHAT_TEST_CHROMIUM)")
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="session")
def browser(playwright: Playwright) -> Iterator[Browser]:
    browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
    yield browser
    browser.close()


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[object]:
    """``launch(**env)``: a chat with an admin password and a push token, stopped after the test."""
    servers: list[ChatServer] = []

    def start(db_path: Path | None = None, **env: object) -> ChatServer:
        settings = {"CHAT_ADMIN_PASSWORD": ADMIN_PASSWORD, "CHAT_API_TOKEN": API_TOKEN, **env}
        server = launch_chat(tmp_path, db_path=db_path, **settings)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def chat(launch) -> ChatServer:  # type: ignore[no-untyped-def]
    """A fresh chat for one test."""
    return launch()


@pytest.fixture
def new_page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[object]:
    """``new_page()``: a page in a fresh browser context (its own cookies: another user)."""
    contexts: list[BrowserContext] = []
    pages: list[Page] = []

    def make() -> Page:
        context = browser.new_context(viewport={"width": 1100, "height": 800})
        context.set_default_timeout(10_000)
        contexts.append(context)
        page = context.new_page()
        pages.append(page)
        return page

    yield make
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        SCREENSHOTS.mkdir(exist_ok=True)
        name = re.sub(r"[^\w.-]+", "_", request.node.nodeid)
        for number, page in enumerate(pages):
            try:
                page.screenshot(path=str(SCREENSHOTS / f"{name}-{number}.png"), full_page=True)
            except Exception:  # the page may be gone; the failure matters more
                pass
    for context in contexts:
        context.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    if report.when == "call":
        item.rep_call = report  # type: ignore[attr-defined]
    return report
