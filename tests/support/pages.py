"""The chat's pages in Playwright: enter a room, say something, find a message.

Every wait is a Playwright ``expect`` or ``wait_for_*`` with an explicit
timeout (:data:`WAIT_MS`); the hooks used are listed at the top of
``static/chat.js``.
"""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from tests.support.http import Endpoints
from tests.support.timeouts import scaled

#: Playwright's timeouts are in milliseconds.
WAIT_MS = scaled(10) * 1000


def enter(page: Page, chat: Endpoints, nick: str, room: str) -> Page:
    """Pick ``nick`` on the landing page, join ``room``, and wait until the room is joined and live."""
    page.goto(chat.http + "/", timeout=WAIT_MS)
    page.fill("#nick", nick)
    page.fill("#room", room)
    page.click("#join-button")
    page.wait_for_url(re.compile(r"/chat\?room="), timeout=WAIT_MS)
    wait_joined(page, nick)
    return page


def wait_joined(page: Page, nick: str) -> None:
    """The page is live and lists itself among the shown room's members."""
    expect(page.locator("#conn-state")).to_have_attribute("data-state", "live", timeout=WAIT_MS)
    expect(page.locator("#members li").filter(has_text=re.compile(f"^{re.escape(nick)}$"))).to_have_count(
        1, timeout=WAIT_MS
    )


def say(page: Page, text: str) -> None:
    """Type ``text`` in the composer and press Enter; wait until the page shows it (the server echoed it)."""
    before = page.locator("#messages li.msg").count()
    page.fill("#composer textarea", text)
    page.press("#composer textarea", "Enter")
    expect(page.locator("#messages li.msg")).to_have_count(before + 1, timeout=WAIT_MS)


def message(page: Page, text: str):  # type: ignore[no-untyped-def]
    """The messages of the shown room whose text is exactly ``text``."""
    return page.locator("#messages li.msg").filter(
        has=page.locator(".text", has_text=re.compile(f"^{re.escape(text)}$"))
    )


def texts(page: Page) -> list[str]:
    return page.locator("#messages li.msg .text").all_text_contents()


def ids(page: Page) -> list[int]:
    """The ids of the shown room's lines that have one (lines from before a history reset have none)."""
    found = page.locator("#messages li.msg").evaluate_all("els => els.map(e => e.dataset.id)")
    return [int(i) for i in found if i is not None]
