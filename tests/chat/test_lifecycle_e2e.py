"""Edits, deletions, reactions and moderation through the running chat (docs/protocol.md §3.2, §3.3).

gunicorn with SQLite, then two nodes sharing Redis; `websockets` clients.
A client that catches up with ``since`` must get every change as an
``update`` and never see an old text again, on any path.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from websockets.sync.client import ClientConnection

from tests.support.clients import Message, join, recv_until, say, send_json
from tests.support.gunicorn import ChatServer
from tests.support.http import admin, get_json
from tests.support.names import fresh_nick, fresh_room
from tests.support.people import Person
from tests.support.redis import ADMIN_PASSWORD, SHARED_REDIS
from tests.support.timeouts import scaled

pytestmark = pytest.mark.timeout(scaled(120))


@pytest.fixture
def people(chat: ChatServer) -> Iterator[Callable[..., Person]]:
    made: list[Person] = []

    def make(prefix: str, node: ChatServer | None = None) -> Person:
        person = Person(node or chat, fresh_nick(prefix))
        made.append(person)
        return person

    yield make
    for person in made:
        person.close()


def is_update(room: str, action: str) -> Callable[[Message], bool]:
    return lambda m: m.get("type") == "update" and m.get("room") == room and m.get("action") == action


def test_edit_delete_and_react_reach_members_live_and_on_catching_up_without_the_old_text(
    chat: ChatServer, people: Callable[..., Person], client: Callable[..., tuple[ClientConnection, Message]]
) -> None:
    alice, bob = people("alice"), people("bob")
    room = fresh_room()
    join(alice.ws, room)
    join(bob.ws, room)
    original = say(alice.ws, room, "teh first draft")
    doomed = say(alice.ws, room, "a regrettable line")
    seen = original["id"] - 1  # bob's position before the changes: he catches up from here later

    edited = alice.ask({"type": "edit", "room": room, "id": original["id"], "text": "the first draft"}, "update")
    assert edited["target"] == original["id"] and edited["id"] == doomed["id"] + 1
    assert edited["message"]["text"] == "the first draft" and edited["message"]["edited"] == edited["ts"]
    live = recv_until(bob.ws, is_update(room, "edit"))
    assert live["message"]["text"] == "the first draft" and live["from"] == alice.name

    assert bob.refused({"type": "edit", "room": room, "id": original["id"], "text": "mine now"}) == "forbidden"
    assert bob.refused({"type": "delete", "room": room, "id": original["id"]}) == "forbidden"
    assert alice.refused({"type": "edit", "room": room, "id": 10_000, "text": "x"}) == "not_found"

    reacted = bob.ask({"type": "react", "room": room, "id": original["id"], "emoji": "👍"}, "update")
    assert reacted["message"]["reactions"] == {"👍": [bob.name]} and reacted["emoji"] == "👍"
    assert recv_until(alice.ws, is_update(room, "react"))["message"]["reactions"] == {"👍": [bob.name]}
    alice.ask({"type": "react", "room": room, "id": original["id"], "emoji": "👍"}, "update")
    assert bob.refused({"type": "react", "room": room, "id": original["id"], "emoji": "abc"}) == "invalid_emoji"

    deleted = alice.ask({"type": "delete", "room": room, "id": doomed["id"]}, "update")
    assert deleted["message"]["deleted"] is True and deleted["message"]["text"] == ""
    assert alice.refused({"type": "edit", "room": room, "id": doomed["id"], "text": "back"}) == "not_found"

    # A newcomer's history, a catch-up with since, and the HTTP history: current versions only.
    newcomer, _ = client()
    history = join(newcomer, room)["history"]
    texts = [m.get("text") for m in history if m["type"] == "message"] + [
        m["message"]["text"] for m in history if m["type"] == "update"
    ]
    assert "teh first draft" not in texts and "a regrettable line" not in texts
    first = next(m for m in history if m.get("id") == original["id"])
    assert first["text"] == "the first draft" and first["reactions"] == {"👍": [bob.name, alice.name]}
    caught_up = join(client()[0], room, since=seen)["history"]
    assert [m["type"] for m in caught_up] == ["message", "message", "update", "update", "update", "update"]
    assert caught_up[-1]["action"] == "delete" and caught_up[-1]["message"]["text"] == ""
    assert all("regrettable" not in str(m) and "teh" not in str(m) for m in caught_up)
    status, page = get_json(chat, f"/api/rooms/{room}/messages?since={seen}")
    assert status == 200 and "regrettable" not in str(page) and "teh first" not in str(page)
    assert [m["type"] for m in page["messages"]][-1] == "update"


def test_a_guest_edits_only_what_this_browser_sent(
    chat: ChatServer, client: Callable[..., tuple[ClientConnection, Message]]
) -> None:
    room = fresh_room()
    first, _ = client()
    other, _ = client()
    join(first, room)
    join(other, room)
    mine = say(first, room, "a guest's line")
    send_json(other, {"type": "edit", "room": room, "id": mine["id"], "text": "hijacked", "ref": "h"})
    assert recv_until(other, lambda m: m.get("ref") == "h")["code"] == "forbidden"
    send_json(first, {"type": "edit", "room": room, "id": mine["id"], "text": "a guest's line, fixed", "ref": "e"})
    assert recv_until(first, lambda m: m.get("ref") == "e")["message"]["text"] == "a guest's line, fixed"


def test_moderators_mute_set_slow_mode_and_delete_and_the_admin_page_lists_it(
    start_chat: Callable[..., ChatServer], tmp_path: Path, people: Callable[..., Person]
) -> None:
    chat = start_chat(tmp_path, CHAT_ADMIN_PASSWORD=ADMIN_PASSWORD)
    owner, helper, talker = people("owner", chat), people("helper", chat), people("talker", chat)
    room = fresh_room()
    owner.ask({"type": "create", "room": room}, "room")
    for person in (owner, helper, talker):
        join(person.ws, room)
    assert talker.refused({"type": "mute", "room": room, "nick": helper.name, "seconds": 60}) == "forbidden"
    assert helper.refused({"type": "moderator", "room": room, "nick": helper.name}) == "forbidden"
    promoted = owner.ask({"type": "moderator", "room": room, "nick": helper.name}, "room")
    assert promoted["moderators"] == [helper.name]
    assert recv_until(talker.ws, lambda m: m.get("type") == "system")["text"] == (
        f"{owner.name} made {helper.name} a moderator"
    )

    line = say(talker.ws, room, "something rude")
    helper.ask({"type": "delete", "room": room, "id": line["id"]}, "update")  # a moderator deletes anyone's
    muted = helper.ask({"type": "mute", "room": room, "nick": talker.name, "seconds": 600}, "room")
    assert [entry["nick"] for entry in muted["muted"]] == [talker.name.casefold()]
    assert recv_until(talker.ws, lambda m: m.get("type") == "system" and "muted" in m["text"])["text"] == (
        f"{helper.name} muted {talker.name} for 10 minutes"
    )
    refused = talker.ask({"type": "say", "room": room, "text": "let me speak"}, "message")
    assert refused["code"] == "muted" and 590 <= refused["wait"] <= 600
    assert talker.refused({"type": "react", "room": room, "id": line["id"], "emoji": "👎"}) == "muted"
    assert helper.refused({"type": "mute", "room": room, "nick": owner.name, "seconds": 60}) == "forbidden"
    helper.ask({"type": "mute", "room": room, "nick": talker.name, "seconds": 0}, "room")
    say(talker.ws, room, "thank you")

    owner.ask({"type": "slow", "room": room, "seconds": 30}, "room")
    one = say(talker.ws, room, "one", ref="slow-1")
    too_soon = talker.ask({"type": "say", "room": room, "text": "two"}, "message")
    assert too_soon["code"] == "rate_limited" and 0 < too_soon["wait"] <= 30
    # The same say sent again (a reconnect's retry) is no new message: answered with the original, not slowed.
    assert say(talker.ws, room, "one", ref="slow-1")["id"] == one["id"]
    say(helper.ws, room, "moderators are exempt")
    say(helper.ws, room, "twice")

    status, log = admin(chat, "/moderation")
    assert status == 200, log
    actions = [(a["actor"], a["action"], a["target"]) for a in log["actions"] if a["room"] == room]
    assert actions[:5] == [
        (owner.name, "slow", ""),
        (helper.name, "unmute", talker.name),
        (helper.name, "mute", talker.name),
        (helper.name, "delete", talker.name),
        (owner.name, "moderator", helper.name),
    ]


def test_edits_and_mutes_hold_across_nodes(start_node: Callable[..., ChatServer], prefix: str) -> None:
    a, b = start_node(SHARED_REDIS, prefix), start_node(SHARED_REDIS, prefix)
    owner, talker = Person(a, fresh_nick("own")), Person(b, fresh_nick("talk"))
    try:
        room = fresh_room()
        owner.ask({"type": "create", "room": room}, "room")
        join(owner.ws, room)
        join(talker.ws, room)
        line = say(talker.ws, room, "tpyo")
        talker.ask({"type": "edit", "room": room, "id": line["id"], "text": "typo"}, "update")
        assert recv_until(owner.ws, is_update(room, "edit"))["message"]["text"] == "typo"
        late = Person(a, fresh_nick("late"))
        history = join(late.ws, room, since=0)["history"]
        late.close()
        assert [m.get("text") or m["message"]["text"] for m in history] == ["typo", "typo"]
        # Two reactions at once from the two nodes: both count (the store's compare-and-set).
        send_json(owner.ws, {"type": "react", "room": room, "id": line["id"], "emoji": "🎉", "ref": "r1"})
        send_json(talker.ws, {"type": "react", "room": room, "id": line["id"], "emoji": "🎉", "ref": "r2"})
        deadline = time.monotonic() + scaled(10)
        while True:
            update = recv_until(owner.ws, is_update(room, "react"))
            if len(update["message"].get("reactions", {}).get("🎉", [])) == 2 or time.monotonic() > deadline:
                break
        assert sorted(update["message"]["reactions"]["🎉"]) == sorted([owner.name, talker.name])

        owner.ask({"type": "mute", "room": room, "nick": talker.name, "seconds": 120}, "room")  # on a, for b
        deadline = time.monotonic() + scaled(5)
        while True:  # node b forgets its copy of the settings when told: within a moment
            reply = talker.ask({"type": "say", "room": room, "text": "am I muted?"}, "message")
            if reply["type"] == "error" or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert reply["code"] == "muted"
    finally:
        owner.close()
        talker.close()
