"""The chat page against a scripted WebSocket peer: edits, deletes, reactions, room settings, refusals.

The page, its session and its cookie come from a real chat under gunicorn;
its WebSocket is answered by :class:`ScriptedChat` (Playwright's
``route_web_socket``), which speaks docs/protocol.md §3.1-§5 just enough for
one owned room. So these tests check what the page shows and sends for each
event, whatever the server does; ``test_signed_in_flow`` checks the two together.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from playwright.sync_api import Dialog, Page, WebSocketRoute, expect

from tests.support.gunicorn import ChatServer
from tests.support.names import fresh_nick, fresh_room
from tests.support.pages import WAIT_MS, message

NewPage = Callable[[], Page]
TS = 1763712000000


class ScriptedChat:
    """One room, ``room``, owned by ``nick``; its history is ``history``. Every command received is in ``sent``."""

    def __init__(self, nick: str, room: str, history: list[dict[str, Any]]) -> None:
        self.nick, self.room, self.history = nick, room, history
        self.sent: list[dict[str, Any]] = []
        self.next_id = max((m["id"] for m in history), default=0) + 1
        self.ws: WebSocketRoute | None = None
        self.settings: dict[str, Any] = {"owner": nick, "moderators": [], "slow": 0, "muted": []}

    def route(self, ws: WebSocketRoute) -> None:
        self.ws = ws
        ws.on_message(lambda data: self.receive(json.loads(data)))
        self.push({"type": "hello", "nick": self.nick, "conn": "c1"})

    def push(self, event: dict[str, Any]) -> None:
        assert self.ws is not None
        self.ws.send(json.dumps(event))

    def room_event(self) -> dict[str, Any]:
        return {"type": "room", "room": self.room, "title": "", "private": False, **self.settings}

    def message(self, message_id: int) -> dict[str, Any]:
        return next(m for m in self.history if m["id"] == message_id)

    def update(self, target: int, action: str, **extra: Any) -> None:
        event = {"type": "update", "room": self.room, "id": self.next_id, "target": target, "action": action}
        self.next_id += 1
        self.push({**event, "from": self.nick, "ts": TS, **extra, "message": self.message(target)})

    def receive(self, command: dict[str, Any]) -> None:
        self.sent.append(command)
        kind = command["type"]
        if kind == "join":
            joined = {"room": self.room, "members": [self.nick], "epoch": "e1", "history": self.history}
            self.push({"type": "joined", **joined})
            self.push(self.room_event())
        elif kind == "rooms":
            self.push({"type": "rooms", "rooms": [{"name": self.room, "members": 1}]})
        elif kind == "say" and command["text"].startswith("slow"):
            self.push({"type": "error", "code": "rate_limited", "message": "wait", "ref": command["ref"], "wait": 7})
        elif kind == "say":
            said = {"id": self.next_id, "from": self.nick, "text": command["text"], "ts": TS, "ref": command["ref"]}
            self.next_id += 1
            self.history.append(said)
            self.push({"type": "message", "room": self.room, **said})
        elif kind == "edit":
            self.message(command["id"]).update(text=command["text"], edited=TS)
            self.update(command["id"], "edit")
        elif kind == "delete":
            self.message(command["id"]).update(text="", deleted=True)
            self.message(command["id"]).pop("reactions", None)
            self.update(command["id"], "delete")
        elif kind == "react":
            reactions = self.message(command["id"]).setdefault("reactions", {})
            who = reactions.setdefault(command["emoji"], [])
            who[:] = [n for n in who if n != self.nick] + ([self.nick] if command["on"] else [])
            if not who:
                del reactions[command["emoji"]]
            self.update(command["id"], "react", emoji=command["emoji"], on=command["on"])
        elif kind == "slow":
            self.settings["slow"] = command["seconds"]
            self.push(self.room_event())
            self.push({"type": "system", "room": self.room, "text": f"{self.nick} set slow mode"})


def scripted_page(new_page: NewPage, chat: ChatServer, history: list[dict[str, Any]]) -> tuple[Page, ScriptedChat]:
    nick, room = fresh_nick("alice"), fresh_room()
    page = new_page()
    script = ScriptedChat(nick, room, history)
    page.route_web_socket(re.compile(r"/ws\b"), script.route)
    page.goto(chat.http + "/", timeout=WAIT_MS)
    page.fill("#nick", nick)
    page.fill("#room", room)
    page.click("#join-button")
    expect(page.locator("#conn-state")).to_have_attribute("data-state", "live", timeout=WAIT_MS)
    return page, script


def test_a_history_shows_edits_deletes_and_reactions_and_your_buttons(chat: ChatServer, new_page: NewPage) -> None:
    page, script = scripted_page(new_page, chat, [])
    me = script.nick
    script.history.extend(
        [
            {"id": 1, "from": "bob", "text": "<b>first</b>", "ts": TS, "edited": TS, "reactions": {"👍": ["bob", me]}},
            {"id": 2, "from": "bob", "text": "", "ts": TS, "deleted": True},
            {"id": 3, "from": me, "text": "mine", "ts": TS},
        ]
    )
    page.reload(timeout=WAIT_MS)
    expect(page.locator("#messages li.msg")).to_have_count(3, timeout=WAIT_MS)
    first = message(page, "<b>first</b>")
    expect(first.locator(".edited")).to_have_text("(edited)")
    chip = first.locator('button.reaction[data-emoji="👍"]')
    expect(chip).to_have_text("👍 2")
    expect(chip).to_have_class(re.compile(r"\bmine\b"))
    expect(chip).to_have_attribute("title", f"bob, {me}")
    assert page.locator("#messages b").count() == 0
    expect(page.locator("#messages li.msg.deleted")).to_have_text(re.compile("message deleted"))
    expect(page.locator("#messages li.msg.deleted .text, #messages li.msg.deleted button")).to_have_count(0)
    expect(first.locator("button.edit")).to_have_count(0)
    expect(first.locator("button.delete")).to_be_visible()  # the owner's
    expect(message(page, "mine").locator("button.edit")).to_have_count(1)


def test_edit_delete_and_react_send_their_commands_and_updates_redraw_the_line(
    chat: ChatServer, new_page: NewPage
) -> None:
    page, script = scripted_page(new_page, chat, [])
    dialogs: list[str] = []

    def confirm(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.accept()

    page.on("dialog", confirm)
    page.fill("#composer textarea", "helo")
    page.press("#composer textarea", "Enter")
    line = message(page, "helo")
    expect(line).to_have_count(1, timeout=WAIT_MS)

    line.locator("button.edit").focus()  # reachable without a mouse
    page.keyboard.press("Enter")
    editor = page.locator("#messages textarea.edit-text")
    expect(editor).to_be_focused()
    editor.fill("never mind")
    editor.press("Escape")
    expect(editor).to_have_count(0)
    expect(message(page, "helo")).to_have_count(1)

    line.locator("button.edit").click()
    editor.fill("hello")
    editor.press("Enter")
    fixed = message(page, "hello")
    expect(fixed.locator(".edited")).to_have_text("(edited)", timeout=WAIT_MS)
    assert next(c for c in script.sent if c["type"] == "edit")["text"] == "hello"

    fixed.locator("button.react-add").click()
    expect(fixed.locator("button.pick")).to_have_count(5)
    fixed.locator('button.pick[data-emoji="🎉"]').click()
    chip = fixed.locator('button.reaction[data-emoji="🎉"]')
    expect(chip).to_have_text("🎉 1", timeout=WAIT_MS)
    chip.click()  # taken back
    expect(chip).to_have_count(0, timeout=WAIT_MS)
    reacts = [(c["emoji"], c["on"]) for c in script.sent if c["type"] == "react"]
    assert reacts == [("🎉", True), ("🎉", False)]

    fixed.locator("button.delete").click()
    expect(page.locator("#messages li.msg.deleted")).to_have_count(1, timeout=WAIT_MS)
    assert dialogs == ["Delete this message for everyone?"]

    # the updates took ids of the room's sequence (the message, an edit, two reactions, a delete):
    # a rejoin asks for what came after the last of them
    assert script.ws is not None
    script.ws.close(code=1001, reason="going away")
    expect(page.locator("#conn-state")).to_have_attribute("data-state", "live", timeout=WAIT_MS)
    joins = [c for c in script.sent if c["type"] == "join"]
    for _ in range(int(WAIT_MS / 100)):
        if len(joins) == 2:
            break
        page.wait_for_timeout(100)
        joins = [c for c in script.sent if c["type"] == "join"]
    assert joins[-1]["since"] == 5 and joins[-1]["epoch"] == "e1", joins


def test_slow_mode_shows_in_the_header_and_a_refused_message_stays_in_the_box(
    chat: ChatServer, new_page: NewPage
) -> None:
    page, script = scripted_page(new_page, chat, [])
    page.on("dialog", lambda dialog: dialog.accept("7"))
    expect(page.locator("#slow")).to_be_visible(timeout=WAIT_MS)
    expect(page.locator("#invite")).to_be_hidden()  # a public room: nobody to invite
    page.click("#slow")
    expect(page.locator("#slow-mode")).to_have_text("slow mode: 7 s", timeout=WAIT_MS)
    expect(page.locator("#messages li.system")).to_have_text([f"{script.nick} set slow mode"])
    page.fill("#composer textarea", "slow down")
    page.press("#composer textarea", "Enter")
    expect(page.locator("#messages li.local-notice")).to_have_text("Slow mode: wait 7 s.", timeout=WAIT_MS)
    expect(page.locator("#composer textarea")).to_have_value("slow down")


def test_at_phone_width_a_line_with_reactions_and_the_owners_tools_fit(chat: ChatServer, new_page: NewPage) -> None:
    reactions = {emoji: ["bob", "carol"] for emoji in ["👍", "❤️", "😂", "🎉", "😮"]}
    history = [{"id": 1, "from": "bob", "text": "a long line " * 20, "ts": TS, "edited": TS, "reactions": reactions}]
    page, _ = scripted_page(new_page, chat, history)
    page.set_viewport_size({"width": 375, "height": 700})
    expect(page.locator("#messages li.msg")).to_have_count(1, timeout=WAIT_MS)
    expect(page.locator("#slow")).to_be_visible()
    page.locator("#messages li.msg button.react-add").click()
    expect(page.locator("#messages button.pick")).to_have_count(5)
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 375, "no sideways scrolling"
