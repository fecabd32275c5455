"""The admin page in a real Chromium, against the chat under gunicorn.

The chat users are outside WebSocket clients (``websockets``), so what the
admin does is checked on the wire: close codes, refused sessions, system
events. The last two tests put a browser user on the chat page instead and
check what that page shows (the hooks are listed at the top of
``static/chat.js``). Every wait has an explicit timeout; nothing sleeps for
correctness, except to show that a kicked page does *not* come back.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Callable, Iterator

import pytest
from playwright.sync_api import Page, expect
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection

from tests.support.browser import ADMIN_PASSWORD
from tests.support.clients import Message, connect, join, recv_json, recv_until, rooms, say, send_json
from tests.support.gunicorn import ChatServer
from tests.support.http import http_request, post_session
from tests.support.names import fresh_nick, fresh_room
from tests.support.raw import open_raw_member
from tests.support.timeouts import scaled

#: Playwright's timeouts are in milliseconds.
WAIT_MS = scaled(10) * 1000
BASIC = {"Authorization": "Basic " + base64.b64encode(f"admin:{ADMIN_PASSWORD}".encode()).decode()}

NewPage = Callable[[], Page]
Connect = Callable[[str], tuple[ClientConnection, Message]]


@pytest.fixture
def user(chat: ChatServer) -> Iterator[Connect]:
    """``user(nick)``: a connected outside WebSocket client and its hello, closed at the end."""
    opened: list[ClientConnection] = []

    def make(nick: str) -> tuple[ClientConnection, Message]:
        ws, hello = connect(chat, nick)
        opened.append(ws)
        return ws, hello

    yield make
    for ws in opened:
        ws.close()


def admin_page(new_page: NewPage, chat: ChatServer, errors: list[str] | None = None) -> Page:
    """A browser logged in through the form, on the live admin page; its console errors go to ``errors``."""
    page = new_page()
    if errors is not None:
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(chat.http + "/admin", timeout=WAIT_MS)
    expect(page).to_have_url(re.compile(r"/admin/login$"))
    page.fill("#password", ADMIN_PASSWORD)
    page.click("#login button[type=submit]")
    expect(page).to_have_url(re.compile(r"/admin$"), timeout=WAIT_MS)
    expect(page.locator("#status")).to_have_text(re.compile("^Updated"), timeout=WAIT_MS)
    return page


def row(page: Page, conn_id: str):  # type: ignore[no-untyped-def]
    return page.locator(f'#clients tbody tr[data-id="{conn_id}"]')


def cell(page: Page, conn_id: str, column: str):  # type: ignore[no-untyped-def]
    return row(page, conn_id).locator(f'td[data-column="{column}"]')


def closed_with(ws: ClientConnection, timeout: float | None = None) -> tuple[int, str]:
    """Read until the server closes ``ws``; its close code and reason."""
    deadline = time.monotonic() + (scaled(10) if timeout is None else timeout)
    with pytest.raises(ConnectionClosed) as closed:
        while time.monotonic() < deadline:
            recv_json(ws, deadline - time.monotonic())
    assert closed.value.rcvd is not None, closed.value
    return closed.value.rcvd.code, closed.value.rcvd.reason


def connected_nicks(chat: ChatServer) -> list[str]:
    status, body, _ = http_request(chat.http + "/admin/api/clients", headers=BASIC)
    assert status == 200, body
    return [client["nick"] for client in body["clients"]]


# -- with outside WebSocket clients -----------------------------------------------------------------------------------


def test_the_admin_logs_in_and_sees_the_clients_live(chat: ChatServer, new_page: NewPage, user: Connect) -> None:
    login = new_page()
    login.goto(chat.http + "/admin/login", timeout=WAIT_MS)
    login.fill("#password", "not the password")
    with login.expect_response(re.compile(r"/admin/login$")) as refused:
        login.click("#login button[type=submit]")
    assert refused.value.status == 401
    expect(login.locator("#login-error")).to_have_text("Wrong password.")

    lobby, dev = fresh_room("lobby"), fresh_room("dev")
    alice_nick, bob_nick = fresh_nick("alice"), fresh_nick("bob")
    alice, alice_hello = user(alice_nick)
    bob, bob_hello = user(bob_nick)
    join(alice, lobby)
    join(alice, dev)
    join(bob, lobby)

    errors: list[str] = []  # a CSP violation or a script error would show here
    page = admin_page(new_page, chat, errors)
    alice_id, bob_id = alice_hello["conn"], bob_hello["conn"]
    expect(cell(page, alice_id, "nick")).to_have_text(alice_nick)
    expect(cell(page, alice_id, "rooms")).to_have_text(", ".join(sorted([lobby, dev])))
    expect(cell(page, bob_id, "nick")).to_have_text(bob_nick)
    expect(cell(page, bob_id, "rooms")).to_have_text(lobby)
    expect(cell(page, alice_id, "addr")).to_have_text(re.compile(r"^127\.0\.0\.1:\d+$"))
    expect(cell(page, alice_id, "user_agent")).to_contain_text("websockets")
    expect(cell(page, alice_id, "msgs")).to_have_text(re.compile(r"^\d+ / \d+$"))
    expect(page.locator("#rooms tbody tr").filter(has_text=lobby)).to_contain_text("2")
    expect(page.locator("#total-clients")).to_have_text("2")

    carol, carol_hello = user(fresh_nick("carol"))  # live: a new client shows up, a gone one goes
    expect(row(page, carol_hello["conn"])).to_have_count(1, timeout=WAIT_MS)
    expect(page.locator("#total-clients")).to_have_text("3", timeout=WAIT_MS)
    carol.close()
    expect(row(page, carol_hello["conn"])).to_have_count(0, timeout=WAIT_MS)
    assert errors == []


def test_the_page_shows_the_message_rate_and_the_fanout_p99_live(
    chat: ChatServer, new_page: NewPage, user: Connect
) -> None:
    room = fresh_room()
    talker, _ = user(fresh_nick("talker"))
    join(talker, room)
    page = admin_page(new_page, chat)
    expect(page.locator("#total-fanout")).to_have_text("–")
    rate = "–"
    deadline = time.monotonic() + scaled(10)
    while time.monotonic() < deadline:  # keep talking until two polls have seen the count move
        say(talker, room, "busy")
        rate = page.locator("#total-rate").inner_text()
        if re.fullmatch(r"[1-9]\d*\.\d", rate):
            break
        time.sleep(0.05)
    assert re.fullmatch(r"[1-9]\d*\.\d", rate), f"the page showed {rate!r} messages/s while one client talked"
    expect(page.locator("#total-fanout")).to_have_text(re.compile(r"^\d+\.\d\d ms$"), timeout=WAIT_MS)


def test_a_kick_closes_the_connection_with_4001_and_removes_the_row(
    chat: ChatServer, new_page: NewPage, user: Connect
) -> None:
    alice, alice_hello = user(fresh_nick("alice"))
    bob, bob_hello = user(fresh_nick("bob"))
    page = admin_page(new_page, chat)
    expect(row(page, alice_hello["conn"])).to_have_count(1, timeout=WAIT_MS)

    row(page, alice_hello["conn"]).locator('button[data-action="kick"]').click()
    assert closed_with(alice) == (4001, "disconnected by an admin")
    expect(page.locator("#status")).to_contain_text("Kicked", timeout=WAIT_MS)
    expect(row(page, alice_hello["conn"])).to_have_count(0, timeout=WAIT_MS)
    expect(row(page, bob_hello["conn"])).to_have_count(1)
    assert rooms(bob)["type"] == "rooms"  # bob is still connected


def test_a_ban_closes_the_nick_with_4003_and_refuses_its_sessions(
    chat: ChatServer, new_page: NewPage, user: Connect
) -> None:
    nick = fresh_nick("mallory")
    mallory, hello = user(nick)
    page = admin_page(new_page, chat)

    row(page, hello["conn"]).locator('button[data-action="ban"]').click()  # fills in the form
    expect(page.locator("#ban-nick")).to_have_value(nick)
    page.fill("#ban-seconds", "120")
    page.click("#ban-form button[type=submit]")
    code, reason = closed_with(mallory)
    assert code == 4003, reason
    expect(page.locator("#bans tbody tr").filter(has_text=nick)).to_have_count(1, timeout=WAIT_MS)
    expect(row(page, hello["conn"])).to_have_count(0, timeout=WAIT_MS)
    status, body = post_session(chat, {"nick": nick})
    assert (status, body["error"]) == (403, "banned")


def test_a_system_message_to_a_room_reaches_only_its_members(
    chat: ChatServer, new_page: NewPage, user: Connect
) -> None:
    room, other = fresh_room("news"), fresh_room("quiet")
    alice, _ = user(fresh_nick("alice"))
    bob, _ = user(fresh_nick("bob"))
    join(alice, room)
    join(bob, other)
    page = admin_page(new_page, chat)

    page.fill("#broadcast-room", room)
    page.fill("#broadcast-text", "the server restarts at noon <b>UTC</b>")
    page.click("#broadcast-form button[type=submit]")
    assert recv_json(alice) == {"type": "system", "text": "the server restarts at noon <b>UTC</b>", "room": room}
    expect(page.locator("#status")).to_contain_text(f"sent to {room}", timeout=WAIT_MS)
    expect(page.locator("#broadcast-text")).to_have_value("")
    skipped: list[Message] = []
    send_json(bob, {"type": "rooms"})  # a round trip: whatever was sent to bob before has arrived
    recv_until(bob, lambda m: m.get("type") == "rooms", skipped=skipped)
    assert [m for m in skipped if m.get("type") == "system"] == []


def test_a_client_that_stops_reading_is_highlighted_at_the_top(launch, new_page: NewPage) -> None:  # type: ignore[no-untyped-def]
    """Its outgoing buffer fills up: its row comes first and stands out (a large send buffer keeps it open)."""
    chat: ChatServer = launch(CHAT_SEND_BUFFER=64 * 1024 * 1024, CHAT_MAX_TEXT=60_000)
    room = fresh_room("flood")
    alice, _ = connect(chat, fresh_nick("alice"))
    slow, slow_nick = open_raw_member(chat, room, rcvbuf=4096)  # from now on it does not read
    try:
        page = admin_page(new_page, chat)
        body = json.dumps({"text": "x" * 60_000, "room": room}).encode()
        headers = {**BASIC, "Content-Type": "application/json"}
        for sent in range(1, 401):  # the kernel holds a few MiB (tcp_wmem) before the server must keep any
            assert http_request(chat.http + "/admin/api/broadcast", method="POST", body=body, headers=headers)[0] == 202
            if sent % 10 == 0 and stalled(chat, slow_nick):
                break
        assert stalled(chat, slow_nick), "the server never had to keep bytes for the client that stopped reading"
        first = page.locator("#clients tbody tr").first
        expect(first).to_have_attribute("data-nick", slow_nick, timeout=WAIT_MS)
        expect(first).to_have_class(re.compile(r"\bstalled\b"))
        expect(page.locator("#clients tbody tr.stalled")).to_have_count(1)
        expect(page.locator("#total-buffered")).not_to_have_text("0 B")
    finally:
        slow.close()
        alice.close()


def stalled(chat: ChatServer, nick: str) -> bool:
    status, body, _ = http_request(chat.http + "/admin/api/clients", headers=BASIC)
    assert status == 200, body
    return any(client["nick"] == nick and client["buffered"] > 0 for client in body["clients"])


def test_logging_out_or_losing_the_session_leads_back_to_the_login_form(chat: ChatServer, new_page: NewPage) -> None:
    page = admin_page(new_page, chat)
    page.click("#logout button[type=submit]")
    expect(page).to_have_url(re.compile(r"/admin/login$"), timeout=WAIT_MS)
    page.goto(chat.http + "/admin", timeout=WAIT_MS)
    expect(page).to_have_url(re.compile(r"/admin/login$"))

    page = admin_page(new_page, chat)
    page.context.clear_cookies()  # the session is gone: the next poll is a 401 without a Basic challenge
    expect(page).to_have_url(re.compile(r"/admin/login$"), timeout=WAIT_MS)


# -- with a browser user on the chat page -----------------------------------------------------------------------------


def chat_user(new_page: NewPage, chat: ChatServer, nick: str, room: str) -> Page:
    """A browser with a session for ``nick`` on the chat page, live in ``room``."""
    page = new_page()
    response = page.request.post(chat.http + "/api/session", data={"nick": nick})
    assert response.status == 200, response.text()
    page.goto(f"{chat.http}/chat?room={room}", timeout=WAIT_MS)
    expect(page.locator("#conn-state")).to_have_attribute("data-state", "live", timeout=WAIT_MS)
    expect(page.locator("#members li").filter(has_text=re.compile(f"^{re.escape(nick)}$"))).to_have_count(
        1, timeout=WAIT_MS
    )
    return page


def conn_id_of(chat: ChatServer, nick: str) -> str:
    status, body, _ = http_request(chat.http + "/admin/api/clients", headers=BASIC)
    assert status == 200, body
    (conn_id,) = [client["id"] for client in body["clients"] if client["nick"] == nick]
    return conn_id


def test_a_kicked_chat_page_says_so_and_does_not_reconnect(chat: ChatServer, new_page: NewPage) -> None:
    nick, room = fresh_nick("alice"), fresh_room("lobby")
    page = chat_user(new_page, chat, nick, room)
    admin = admin_page(new_page, chat)
    conn_id = conn_id_of(chat, nick)

    row(admin, conn_id).locator('button[data-action="kick"]').click()
    expect(page.locator("#notice")).to_contain_text("disconnected by an admin", timeout=WAIT_MS)
    expect(page.locator("#conn-state")).to_have_attribute("data-state", "disconnected")
    expect(row(admin, conn_id)).to_have_count(0, timeout=WAIT_MS)
    time.sleep(scaled(2.5))  # longer than the page's first reconnect delay and the admin page's poll
    expect(page.locator("#conn-state")).to_have_attribute("data-state", "disconnected")
    assert nick not in connected_nicks(chat)
    expect(admin.locator('#clients tbody tr[data-nick="' + nick + '"]')).to_have_count(0)


def test_a_system_message_appears_in_the_chat_pages_room(chat: ChatServer, new_page: NewPage) -> None:
    nick, room = fresh_nick("alice"), fresh_room("lobby")
    page = chat_user(new_page, chat, nick, room)
    admin = admin_page(new_page, chat)

    admin.fill("#broadcast-room", room)
    admin.fill("#broadcast-text", "maintenance in 5 minutes")
    admin.click("#broadcast-form button[type=submit]")
    expect(page.locator("#messages li.system")).to_have_text("maintenance in 5 minutes", timeout=WAIT_MS)
