"""The chat UI in a real Chromium: landing page, chat page, reconnects, escaping, CSP, phone width.

Each page is a fresh browser context (its own cookies: another user). Every
wait is a Playwright ``expect`` or ``wait_for_*`` with an explicit timeout;
nothing sleeps for correctness. The hooks used here are listed at the top of
``static/chat.js``.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.support.browser import ADMIN_PASSWORD, API_TOKEN
from tests.support.gunicorn import ChatServer, server_environment, spawn_gunicorn
from tests.support.http import http_request
from tests.support.names import fresh_nick, fresh_room
from tests.support.pages import WAIT_MS, enter, ids, message, say, texts, wait_joined
from tests.support.processes import free_port
from tests.support.timeouts import scaled

#: Long enough for a server restart and a few reconnect attempts with backoff.
RECONNECT_MS = scaled(30) * 1000

XSS = "<img src=x onerror=alert(1)>"

NewPage = Callable[[], Page]


# -- two users -------------------------------------------------------------------------------------------------------


def test_two_users_see_each_others_messages_and_presence(chat: ChatServer, new_page: NewPage) -> None:
    room, alice, bob = fresh_room(), fresh_nick("alice"), fresh_nick("bob")
    a = enter(new_page(), chat, alice, room)
    b = enter(new_page(), chat, bob, room)

    expect(a.locator("#members li")).to_have_text(sorted([alice, bob]), timeout=WAIT_MS)
    expect(b.locator("#members li")).to_have_text(sorted([alice, bob]), timeout=WAIT_MS)

    say(a, "hello bob")
    expect(message(b, "hello bob")).to_have_count(1, timeout=WAIT_MS)
    say(b, "hi alice\nsecond line")
    expect(message(a, "hi alice\nsecond line")).to_have_count(1, timeout=WAIT_MS)

    line = a.locator("#messages li.msg").last
    expect(line.locator(".from")).to_have_text(bob)
    expect(line.locator("time")).to_have_text(re.compile(r"\d"))
    assert line.get_attribute("data-id") is not None

    b.click("#leave-room")
    expect(a.locator("#members li")).to_have_text([alice], timeout=WAIT_MS)
    expect(b.locator("#rooms-list li")).to_have_count(0, timeout=WAIT_MS)


def test_shift_enter_is_a_newline_and_enter_sends(chat: ChatServer, new_page: NewPage) -> None:
    nick, room = fresh_nick(), fresh_room()
    page = enter(new_page(), chat, nick, room)
    box = page.locator("#composer textarea")
    box.fill("first")
    box.press("Shift+Enter")
    box.press_sequentially("second")
    expect(box).to_have_value("first\nsecond")
    expect(page.locator("#messages li.msg")).to_have_count(0)
    box.press("Enter")
    expect(message(page, "first\nsecond")).to_have_count(1, timeout=WAIT_MS)
    expect(box).to_have_value("")


def test_rooms_joined_from_the_sidebar_count_unread_messages(chat: ChatServer, new_page: NewPage) -> None:
    first, second = fresh_room("first"), fresh_room("second")
    alice, bob = fresh_nick("alice"), fresh_nick("bob")
    a = enter(new_page(), chat, alice, first)
    a.fill("#join-room", second)
    a.press("#join-room", "Enter")
    expect(a.locator("#room-title")).to_have_text(second, timeout=WAIT_MS)
    wait_joined(a, alice)
    a.locator(f'#rooms-list li[data-room="{first}"] button').click()
    expect(a.locator("#room-title")).to_have_text(first)

    b = enter(new_page(), chat, bob, second)
    say(b, "one")
    say(b, "two")
    badge = a.locator(f'#rooms-list li[data-room="{second}"] .unread')
    expect(badge).to_have_text("2", timeout=WAIT_MS)
    a.locator(f'#rooms-list li[data-room="{second}"] button').click()
    expect(badge).to_be_hidden()
    assert texts(a) == ["one", "two"]


def test_mentions_of_you_are_highlighted_and_flag_the_unread_badge(chat: ChatServer, new_page: NewPage) -> None:
    first, second = fresh_room("first"), fresh_room("second")
    alice, bob = fresh_nick("alice"), fresh_nick("bob")
    a = enter(new_page(), chat, alice, first)
    a.fill("#join-room", second)
    a.press("#join-room", "Enter")
    wait_joined(a, alice)
    a.locator(f'#rooms-list li[data-room="{first}"] button').click()

    b = enter(new_page(), chat, bob, second)
    say(b, "no mention here")
    say(b, f"hey @{alice.upper()}, look")  # any case
    say(b, f"not a mention: x@{alice}")
    badge = a.locator(f'#rooms-list li[data-room="{second}"] .unread')
    expect(badge).to_have_text("@ 3", timeout=WAIT_MS)
    expect(badge).to_have_class(re.compile(r"\bmention\b"))
    assert badge.get_attribute("data-mentions") == "1"
    a.locator(f'#rooms-list li[data-room="{second}"] button').click()
    expect(a.locator("#messages li.msg.mention")).to_have_count(1, timeout=WAIT_MS)
    expect(a.locator("#messages li.msg.mention .text")).to_have_text(f"hey @{alice.upper()}, look")
    expect(b.locator("#messages li.msg.mention")).to_have_count(0)


def test_typing_shows_under_the_others_messages_for_a_few_seconds(chat: ChatServer, new_page: NewPage) -> None:
    room, alice, bob = fresh_room(), fresh_nick("alice"), fresh_nick("bob")
    a = enter(new_page(), chat, alice, room)
    b = enter(new_page(), chat, bob, room)
    b.locator("#composer textarea").press_sequentially("hel")
    expect(a.locator("#typing")).to_have_text(f"{bob} is typing…", timeout=WAIT_MS)
    expect(b.locator("#typing")).to_have_text("")
    b.press("#composer textarea", "Enter")  # the message arrives: no longer typing
    expect(message(a, "hel")).to_have_count(1, timeout=WAIT_MS)
    expect(a.locator("#typing")).to_have_text("")


def test_the_landing_page_shows_rooms_and_the_apis_errors(chat: ChatServer, new_page: NewPage) -> None:
    room, alice = fresh_room(), fresh_nick("alice")
    enter(new_page(), chat, alice, room)

    page = new_page()
    page.goto(chat.http + "/", timeout=WAIT_MS)
    entry = page.locator(f'#rooms li[data-room="{room}"]')
    expect(entry).to_contain_text("1 member", timeout=WAIT_MS)

    page.fill("#nick", alice)
    page.fill("#room", room)
    page.click("#join-button")
    expect(page.locator("#form-error")).to_contain_text("in use by someone else", timeout=WAIT_MS)

    page.fill("#nick", fresh_nick())
    page.fill("#room", "no spaces here")
    page.click("#join-button")
    expect(page.locator("#form-error")).to_contain_text("Room names are", timeout=WAIT_MS)

    page.fill("#nick", " leading space")
    page.click("#join-button")
    expect(page.locator("#form-error")).to_contain_text("space", timeout=WAIT_MS)
    assert page.url.endswith("/")


def test_chat_without_a_nick_redirects_to_the_landing_page(chat: ChatServer, new_page: NewPage) -> None:
    page = new_page()
    page.goto(chat.http + "/chat?room=lobby", timeout=WAIT_MS)
    page.wait_for_url(re.compile(r"/\?room=lobby$"), timeout=WAIT_MS)
    expect(page.locator("#room")).to_have_value("lobby")


# -- text is text ----------------------------------------------------------------------------------------------------


def test_an_html_message_is_shown_as_text_and_runs_nothing(chat: ChatServer, new_page: NewPage) -> None:
    room = fresh_room()
    sender_nick = '<b onmouseover="alert(2)">x'  # a valid nick: printable, 1-32 characters
    dialogs: list[str] = []
    pages = [enter(new_page(), chat, sender_nick, room), enter(new_page(), chat, fresh_nick(), room)]
    for page in pages:
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))

    say(pages[0], XSS)
    for page in pages:
        line = message(page, XSS)
        expect(line).to_have_count(1, timeout=WAIT_MS)
        assert line.locator(".text").text_content() == XSS
        expect(line.locator(".from")).to_have_text(sender_nick)
        assert page.locator("#messages img").count() == 0
        assert page.locator("#messages b").count() == 0
        # An onerror handler would have run by the time the next frame is painted.
        page.evaluate("() => new Promise(resolve => requestAnimationFrame(() => setTimeout(resolve, 100)))")
    assert dialogs == []


# -- the operator's actions (through the admin API, HTTP Basic auth) --------------------------------------------------


def admin_api(chat: ChatServer, method: str, path: str, payload: object = None) -> tuple[int, Any]:
    credentials = base64.b64encode(f"admin:{ADMIN_PASSWORD}".encode()).decode()
    headers = {"Authorization": f"Basic {credentials}", "Content-Type": "application/json"}
    body = None if payload is None else json.dumps(payload).encode()
    status, decoded, _ = http_request(f"{chat.http}/admin/api{path}", method=method, body=body, headers=headers)
    return status, decoded


def conn_id_of(chat: ChatServer, nick: str) -> str:
    status, body = admin_api(chat, "GET", "/clients")
    assert status == 200, (status, body)
    return next(client["id"] for client in body["clients"] if client["nick"] == nick)


def test_a_kicked_page_says_why_and_does_not_reconnect(chat: ChatServer, new_page: NewPage) -> None:
    nick, room = fresh_nick(), fresh_room()
    page = enter(new_page(), chat, nick, room)
    sessions: list[str] = []
    page.on("request", lambda request: sessions.append(request.url) if "/api/session" in request.url else None)

    status, body = admin_api(chat, "POST", f"/clients/{conn_id_of(chat, nick)}/kick")
    assert status == 200, (status, body)
    expect(page.locator("#notice")).to_have_text(
        "You were disconnected by an admin: disconnected by an admin", timeout=WAIT_MS
    )
    expect(page.locator("#conn-state")).to_have_attribute("data-state", "disconnected")
    # Proving an absence takes a wait: three times the longest first backoff, then a nudge.
    page.evaluate("() => window.dispatchEvent(new Event('online'))")
    page.wait_for_timeout(1500)
    assert sessions == []
    expect(page.locator("#conn-state")).to_have_attribute("data-state", "disconnected")


def test_a_banned_page_says_why_and_a_reload_shows_the_ban(chat: ChatServer, new_page: NewPage) -> None:
    nick, room = fresh_nick(), fresh_room()
    page = enter(new_page(), chat, nick, room)
    status, body = admin_api(chat, "POST", "/bans", {"nick": nick, "seconds": 60})
    assert status == 201, (status, body)
    expect(page.locator("#notice")).to_have_text(
        "You were disconnected by an admin: banned for 60 s by an admin", timeout=WAIT_MS
    )
    expect(page.locator("#conn-state")).to_have_attribute("data-state", "disconnected")

    page.reload(timeout=WAIT_MS)
    expect(page.locator("#notice")).to_contain_text("is banned for now", timeout=WAIT_MS)
    expect(page.locator("#conn-state")).to_have_attribute("data-state", "disconnected")


def test_system_messages_show_in_their_room_or_in_every_room(chat: ChatServer, new_page: NewPage) -> None:
    nick, first, second = fresh_nick(), fresh_room("first"), fresh_room("second")
    page = enter(new_page(), chat, nick, first)
    page.fill("#join-room", second)
    page.press("#join-room", "Enter")
    wait_joined(page, nick)

    assert admin_api(chat, "POST", "/broadcast", {"text": "only here", "room": second})[0] == 202
    expect(page.locator("#messages li.system")).to_have_text(["only here"], timeout=WAIT_MS)
    assert admin_api(chat, "POST", "/broadcast", {"text": "<b>to everyone</b>"})[0] == 202
    expect(page.locator("#messages li.system")).to_have_text(["only here", "<b>to everyone</b>"], timeout=WAIT_MS)
    page.locator(f'#rooms-list li[data-room="{first}"] button').click()
    expect(page.locator("#messages li.system")).to_have_text(["<b>to everyone</b>"])
    assert page.locator("#messages b").count() == 0


# -- reloads and restarts ---------------------------------------------------------------------------------------------


def test_a_reload_rejoins_every_room_and_shows_history_again(chat: ChatServer, new_page: NewPage) -> None:
    nick, room, other = fresh_nick(), fresh_room(), fresh_room("other")
    page = enter(new_page(), chat, nick, room)
    for text in ("one", "two", "three"):
        say(page, text)
    page.fill("#join-room", other)
    page.press("#join-room", "Enter")
    expect(page.locator("#room-title")).to_have_text(other, timeout=WAIT_MS)
    wait_joined(page, nick)
    say(page, "elsewhere")
    page.locator(f'#rooms-list li[data-room="{room}"] button').click()

    page.reload(timeout=WAIT_MS)
    wait_joined(page, nick)
    expect(page.locator("#room-title")).to_have_text(room)
    expect(page.locator("#messages li.msg")).to_have_count(3, timeout=WAIT_MS)
    assert texts(page) == ["one", "two", "three"]
    expect(page.locator("#rooms-list li")).to_have_count(2)
    page.locator(f'#rooms-list li[data-room="{other}"] button').click()
    expect(page.locator("#messages li.msg .text")).to_have_text(["elsewhere"], timeout=WAIT_MS)


@pytest.fixture
def fixed_port_chat(tmp_path: Path) -> Iterator[Callable[..., ChatServer]]:
    """``start(db_path=None)``: a chat on the same two ports, database and secret key every time it is called.

    A page keeps its origin and its CSP's ``connect-src`` across a restart only
    if the new server listens where the old one did; ``launch_chat`` picks new
    ephemeral ports, so this starts gunicorn with an extra fixed ``--bind``.
    Every server it started is stopped at the end, by PID.
    """
    http_port, ws_port = free_port(), free_port()
    db_path, secret = tmp_path / "chat.db", secrets.token_hex(32)
    servers: list[ChatServer] = []

    def start(database: Path | None = None) -> ChatServer:
        log_dir = tmp_path / f"fixed-{len(servers) + 1}"
        log_dir.mkdir()
        env = server_environment(
            database or db_path,
            CHAT_WS_BIND=f"127.0.0.1:{ws_port}",
            CHAT_SECRET_KEY=secret,
            CHAT_API_TOKEN=API_TOKEN,
            CHAT_ADMIN_PASSWORD=ADMIN_PASSWORD,
        )
        process = spawn_gunicorn(log_dir / "gunicorn.log", env, "--bind", f"127.0.0.1:{http_port}")
        server = ChatServer(process, log_dir / "gunicorn.log", database or db_path, http_port, ws_port)
        servers.append(server)
        http_ready = re.compile(rf"Listening at: \S*http://127\.0\.0\.1:{http_port}\b")
        ws_ready = f"listening on ws://127.0.0.1:{ws_port}/ws"
        deadline = time.monotonic() + scaled(30)
        while True:
            logs = server.logs()
            worker = re.search(r"Booting worker with pid: (\d+)", logs)
            if worker and not server.worker_pid:
                server.worker_pid = int(worker.group(1))
            if worker and http_ready.search(logs) and ws_ready in logs:
                return server
            if process.poll() is not None or time.monotonic() > deadline:
                server.stop(timeout=scaled(5))
                pytest.fail(f"the chat did not start (exit status {server.returncode}):\n{logs}")
            time.sleep(0.05)

    yield start
    for server in servers:
        server.stop()


def push(chat: ChatServer, room: str, text: str, sender: str = "backend") -> int:
    status, body, _ = http_request(
        f"{chat.http}/api/rooms/{room}/messages",
        method="POST",
        body=json.dumps({"text": text, "from": sender}).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {API_TOKEN}"},
    )
    assert status == 202, (status, body)
    return int(body["id"])


def test_after_a_server_restart_pages_reconnect_and_show_missed_messages_once(
    fixed_port_chat: Callable[[], ChatServer], new_page: NewPage
) -> None:
    chat = fixed_port_chat()
    room, alice, bob = fresh_room(), fresh_nick("alice"), fresh_nick("bob")
    pages = {alice: enter(new_page(), chat, alice, room), bob: enter(new_page(), chat, bob, room)}
    say(pages[alice], "before restart 1")
    say(pages[bob], "before restart 2")
    for page in pages.values():
        expect(page.locator("#messages li.msg")).to_have_count(2, timeout=WAIT_MS)

    # One page cannot get a session until the pushes are done: it must catch up
    # through join(since); the other may come back before, during or after them.
    blocked = pages[alice]
    blocked.context.route("**/api/session", lambda route: route.abort())

    assert chat.stop(signal.SIGTERM) == 0
    for page in pages.values():
        expect(page.locator("#conn-state")).to_have_attribute("data-state", "reconnecting", timeout=WAIT_MS)

    chat = fixed_port_chat()
    pushed = [f"pushed while away {n}" for n in range(1, 4)]
    pushed_ids = [push(chat, room, text) for text in pushed]
    assert pushed_ids == sorted(pushed_ids)

    blocked.context.unroute("**/api/session")
    blocked.evaluate("() => window.dispatchEvent(new Event('online'))")  # retry now, as when the network returns

    expected = ["before restart 1", "before restart 2", *pushed]
    for nick, page in pages.items():
        expect(page.locator("#conn-state")).to_have_attribute("data-state", "live", timeout=RECONNECT_MS)
        expect(page.locator("#messages li.msg")).to_have_count(len(expected), timeout=WAIT_MS)
        for text in expected:
            expect(message(page, text)).to_have_count(1)
        assert texts(page) == expected
        assert ids(page) == sorted(set(ids(page)))
        wait_joined(page, nick)

    # Live again: a message after the restart reaches the other page once.
    say(pages[bob], "after restart")
    expect(message(pages[alice], "after restart")).to_have_count(1, timeout=WAIT_MS)
    expect(pages[alice].locator("#messages li.msg")).to_have_count(len(expected) + 1)


#: In the page before its scripts: when each WebSocket closed (code, reason) and each POST /api/session started.
RECORD_RECONNECTS = """
window.__reconnects = [];
const realFetch = window.fetch;
window.fetch = function (url, ...rest) {
  if (String(url).includes("/api/session")) window.__reconnects.push({ what: "session", at: performance.now() });
  return realFetch.call(this, url, ...rest);
};
window.WebSocket = class extends window.WebSocket {
  constructor(...args) {
    super(...args);
    this.addEventListener("close", (e) =>
      window.__reconnects.push({ what: "close", at: performance.now(), code: e.code, reason: e.reason }));
  }
};
"""


def test_after_a_1012_the_page_comes_back_after_the_servers_hint_and_catches_up_with_since(
    fixed_port_chat: Callable[[], ChatServer], new_page: NewPage
) -> None:
    chat = fixed_port_chat()
    room, alice = fresh_room(), fresh_nick("alice")
    page = new_page()
    page.add_init_script(RECORD_RECONNECTS)
    enter(page, chat, alice, room)
    say(page, "before restart")
    # Away until the message below is pushed: its sessions are refused meanwhile.
    page.context.route("**/api/session", lambda route: route.abort())

    assert chat.stop(signal.SIGTERM) == 0  # the drain: 1012 "restarting retry=MS"
    expect(page.locator("#conn-state")).to_have_attribute("data-state", "reconnecting", timeout=WAIT_MS)
    # its first attempt, at the hint, is refused: it goes on by backoff
    page.wait_for_function(
        """() => {
          const close = window.__reconnects.find((r) => r.what === "close");
          return close && window.__reconnects.some((r) => r.what === "session" && r.at > close.at);
        }""",
        timeout=WAIT_MS,
    )
    chat = fixed_port_chat()
    pushed = push(chat, room, "pushed while away")
    page.context.unroute("**/api/session")  # no 'online' event: the page comes back by its own backoff

    expect(page.locator("#conn-state")).to_have_attribute("data-state", "live", timeout=RECONNECT_MS)
    expect(message(page, "pushed while away")).to_have_count(1, timeout=WAIT_MS)
    assert texts(page) == ["before restart", "pushed while away"]
    assert ids(page)[-1] == pushed
    wait_joined(page, alice)

    events = page.evaluate("() => window.__reconnects")
    closes = [e for e in events if e["what"] == "close"]
    assert closes[0]["code"] == 1012, closes
    hint = re.fullmatch(r"restarting retry=(\d+)", closes[0]["reason"])
    assert hint, closes[0]
    waited = next(e["at"] for e in events if e["what"] == "session" and e["at"] > closes[0]["at"]) - closes[0]["at"]
    hint_ms = int(hint.group(1))
    assert hint_ms - 20 <= waited <= hint_ms * 1.1 + scaled(1) * 1000, (waited, hint_ms)


def test_after_a_restart_on_another_database_pages_reset_the_room_instead_of_dropping_its_new_messages(
    fixed_port_chat: Callable[..., ChatServer], new_page: NewPage, tmp_path: Path
) -> None:
    chat = fixed_port_chat()
    room, alice = fresh_room(), fresh_nick("alice")
    page = enter(new_page(), chat, alice, room)
    old = [f"old {n}" for n in range(1, 4)]
    for text in old:
        say(page, text)
    assert chat.stop(signal.SIGTERM) == 0
    expect(page.locator("#conn-state")).to_have_attribute("data-state", "reconnecting", timeout=WAIT_MS)

    chat = fixed_port_chat(tmp_path / "restored-from-an-old-backup.db")  # its ids start at 1 again
    new = [f"new {n}" for n in range(1, 6)]  # more than the page saw: its since alone could not tell
    assert [push(chat, room, text) for text in new] == [1, 2, 3, 4, 5]

    expect(page.locator("#conn-state")).to_have_attribute("data-state", "live", timeout=RECONNECT_MS)
    expect(page.locator("#messages li.history-reset")).to_have_count(1, timeout=WAIT_MS)
    expect(page.locator("#messages li.msg")).to_have_count(len(old) + len(new), timeout=WAIT_MS)
    assert texts(page) == old + new, "the old lines stay, above the notice; every new message shows"
    assert ids(page) == [1, 2, 3, 4, 5], "only the new lines answer to the new ids"
    say(page, "after the reset")
    assert ids(page) == [1, 2, 3, 4, 5, 6]


# -- phone width -----------------------------------------------------------------------------------------------------


def test_at_phone_width_the_composer_and_messages_are_usable(chat: ChatServer, new_page: NewPage) -> None:
    page = new_page()
    page.set_viewport_size({"width": 375, "height": 700})
    nick, room = fresh_nick(), fresh_room()
    enter(page, chat, nick, room)
    say(page, "sent from a phone")

    composer, messages, rooms = (
        page.locator("#composer textarea"),
        page.locator("#messages"),
        page.locator("#rooms-list"),
    )
    expect(composer).to_be_in_viewport()
    expect(message(page, "sent from a phone")).to_be_in_viewport()
    expect(page.locator("#send")).to_be_in_viewport()
    rooms_box, messages_box, composer_box = rooms.bounding_box(), messages.bounding_box(), composer.bounding_box()
    assert rooms_box and messages_box and composer_box
    assert rooms_box["y"] + rooms_box["height"] <= messages_box["y"], "the room list sits above the messages"
    assert composer_box["y"] + composer_box["height"] <= 700
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 375, "no sideways scrolling"


# -- the Content-Security-Policy --------------------------------------------------------------------------------------


def test_pages_send_a_csp_that_blocks_inline_script(chat: ChatServer, new_page: NewPage) -> None:
    page = new_page()
    landing = page.goto(chat.http + "/", timeout=WAIT_MS)
    assert landing is not None
    page.fill("#nick", fresh_nick())
    page.fill("#room", fresh_room())
    with page.expect_response(re.compile(r"/chat\?room="), timeout=WAIT_MS) as info:
        page.click("#join-button")
    for response in (landing, info.value):
        policy = response.headers["content-security-policy"]
        assert "script-src 'self';" in policy
        assert "unsafe-inline" not in policy
        assert f"connect-src 'self' ws://127.0.0.1:{chat.ws_port};" in policy
        assert response.headers["x-content-type-options"] == "nosniff"

    # the chat page must be settled, or the navigation could swallow the event
    expect(page.locator("#conn-state")).to_have_attribute("data-state", "live", timeout=WAIT_MS)
    blocked = page.evaluate(
        """() => new Promise(resolve => {
            document.addEventListener("securitypolicyviolation", e => resolve(e.violatedDirective), {once: true});
            const script = document.createElement("script");
            script.textContent = "window.inlineRan = true";
            document.body.append(script);
            setTimeout(() => resolve(window.inlineRan ? "ran" : "no event"), 8000);
        })"""
    )
    assert blocked.startswith("script-src")
    assert page.evaluate("() => window.inlineRan") is None


def test_searching_the_history_lists_the_matching_messages(chat: ChatServer, new_page: NewPage) -> None:
    room, alice = fresh_room(), fresh_nick("alice")
    page = enter(new_page(), chat, alice, room)
    for text in ("the deploy finished", "lunch at noon", "deployed again"):
        say(page, text)
    page.fill("#search", "deplo")
    results = page.locator("#search-results li.result")
    deadline = time.monotonic() + scaled(10)
    while results.count() < 2:  # indexed within a second or so: search again until both are there
        assert time.monotonic() < deadline, page.locator("#search-status").text_content()
        page.click("#search-form button")
        page.wait_for_timeout(300)
    expect(results).to_have_count(2)
    assert sorted(results.locator(".text").all_text_contents()) == ["deployed again", "the deploy finished"]
    expect(results.first.locator(".room")).to_have_text(f"#{room}")
    page.fill("#search", "?!")
    page.click("#search-form button")
    expect(page.locator("#search-status")).to_have_text("search for at least one word", timeout=WAIT_MS)
