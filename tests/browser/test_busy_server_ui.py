"""A browser that asks for a session while the chat is full waits as told, then gets in (docs/protocol.md §1.2).

Debian's Chromium against gunicorn with ``CHAT_MAX_CONNECTIONS=1``: while a
`websockets` client holds the one place, ``POST /api/session`` answers 503
``busy`` with ``Retry-After``; the landing page says it will try again, does
so after the jittered wait (static/backoff.js), and enters the chat once a
place is free. Every request the page made is recorded: none came sooner
than the server asked.
"""

from __future__ import annotations

import itertools
import re
import time
from collections.abc import Callable
from typing import Any

from playwright.sync_api import Page, Request, expect

from tests.support.clients import open_ws, recv_json
from tests.support.http import session
from tests.support.names import fresh_nick, fresh_room
from tests.support.pages import WAIT_MS, wait_joined

RETRY_AFTER = 5  # app/web/api.py UNAVAILABLE_RETRY_AFTER


def test_the_landing_page_waits_out_a_busy_chat_and_then_enters_it(
    launch: Callable[..., Any], new_page: Callable[[], Page]
) -> None:
    chat = launch(CHAT_MAX_CONNECTIONS=1)
    holder = open_ws(session(chat, fresh_nick("holder"))["ws_url"])
    assert recv_json(holder)["type"] == "hello"
    page = new_page()
    asked: list[float] = []

    def record(request: Request) -> None:
        if request.url.endswith("/api/session"):
            asked.append(time.monotonic())

    page.on("request", record)
    page.goto(chat.http + "/")
    nick, room = fresh_nick("patient"), fresh_room()
    page.fill("#nick", nick)
    page.fill("#room", room)
    page.click("#join-button")
    expect(page.locator("#form-error")).to_have_text(re.compile(r"busy; trying again in \d+ s"), timeout=WAIT_MS)
    holder.close()  # the place frees up while the page waits
    page.wait_for_url(re.compile(r"/chat\?room="), timeout=WAIT_MS * 2)
    wait_joined(page, nick)
    waits = [later - earlier for earlier, later in itertools.pairwise(asked)]
    assert waits, "the page asked once and never again"
    assert waits[0] >= RETRY_AFTER * 0.95, waits  # not sooner than Retry-After said (plus its jitter)
    assert waits[0] <= RETRY_AFTER * 1.5 + 2, waits
