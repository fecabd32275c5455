"""Owned rooms, private rooms and direct messages through the running chat (docs/protocol.md §3.1).

gunicorn as the README runs it, `websockets` as clients, urllib as browsers;
then two nodes sharing Redis. A private room must not exist for anyone but
its members, on every path: join, ``since``, ``info``, the room lists, the
HTTP history, search, the push API.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from websockets.sync.client import ClientConnection

from tests.support.clients import Message, join, recv_until, rooms, say, send_json
from tests.support.gunicorn import ChatServer
from tests.support.http import get_json, http_request
from tests.support.names import fresh_nick, fresh_room
from tests.support.people import Person
from tests.support.redis import API_TOKEN, SHARED_REDIS
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


def test_a_private_room_is_invisible_to_outsiders_on_every_path_and_open_to_the_invited(
    chat: ChatServer, people: Callable[..., Person]
) -> None:
    owner, friend, outsider = people("owner"), people("friend"), people("outsider")
    created = owner.ask({"type": "create", "private": True, "title": "Plans"}, "room")
    room = created["room"]
    assert room.startswith("p.") and created["private"] is True and created["owner"] == owner.name
    assert created["title"] == "Plans" and created["members"] == [owner.name]
    assert join(owner.ws, room)["type"] == "joined"
    assert recv_until(owner.ws, lambda m: m.get("type") == "room")["room"] == room  # after joined: what it is
    secret = say(owner.ws, room, "the secret plan")

    absent = f"p.{'0' * 16}"  # a private name nobody created: the answers must be the same
    for name in (room, absent):
        assert join(outsider.ws, name)["code"] == "not_found"
        assert join(outsider.ws, name, since=0)["code"] == "not_found"
        assert outsider.refused({"type": "info", "room": name}) == "not_found"
        assert outsider.refused({"type": "say", "room": name, "text": "hi"}) == "not_joined"
        for browser in (outsider, None):
            path = f"/api/rooms/{name}/messages"
            status, body = outsider.get(path) if browser else get_json(chat, path)
            assert (status, body["error"]) == (404, "not_found"), body
        status, body = outsider.get(f"/api/search?q=secret&room={name}")
        assert (status, body["error"]) == (404, "not_found")
    assert room not in [entry["name"] for entry in rooms(outsider.ws)["rooms"]]
    assert room not in [entry["name"] for entry in outsider.get("/api/rooms")[1]["rooms"]]
    status, found = outsider.get("/api/search?q=secret")
    assert status == 200 and not any(hit["room"] == room for hit in found["results"])

    assert owner.refused({"type": "invite", "room": room, "nick": fresh_nick("nobody")}) == "unknown_user"
    assert outsider.refused({"type": "invite", "room": room, "nick": outsider.name}) == "not_found"
    owner_sees = owner.ask({"type": "invite", "room": room, "nick": friend.name.upper()}, "room")
    assert owner_sees["type"] == "room" and friend.name in owner_sees["members"]
    invited = recv_until(friend.ws, lambda m: m.get("type") == "invited")
    assert (invited["room"], invited["by"], invited["title"]) == (room, owner.name, "Plans")
    assert recv_until(owner.ws, lambda m: m.get("type") == "system")["text"] == f"{owner.name} invited {friend.name}"
    listed = {entry["name"]: entry for entry in rooms(friend.ws)["rooms"]}
    assert listed[room]["private"] is True and listed[room]["title"] == "Plans"
    joined = join(friend.ws, room)
    assert joined["type"] == "joined" and [m["text"] for m in joined["history"]] == [secret["text"]]
    status, page = friend.get(f"/api/rooms/{room}/messages")
    assert status == 200 and [m["text"] for m in page["messages"]] == ["the secret plan"]
    assert any(entry["name"] == room for entry in friend.get("/api/rooms")[1]["rooms"])
    deadline = time.monotonic() + scaled(10)  # indexed within a second or so: a member finds it
    while not any(hit["room"] == room for hit in friend.get("/api/search?q=secret")[1]["results"]):
        assert time.monotonic() < deadline, "a member's search never found the private room's message"
        time.sleep(0.2)
    status, found = outsider.get("/api/search?q=secret")  # indexed now, and still not the outsider's to find
    assert status == 200 and not any(hit["room"] == room for hit in found["results"])

    # Removed: the connection leaves the room at once, and the room is gone for them.
    assert friend.refused({"type": "remove", "room": room, "nick": owner.name}) == "forbidden"
    owner.ask({"type": "remove", "room": room, "nick": friend.name}, "room")
    removed = recv_until(friend.ws, lambda m: m.get("type") == "removed")
    assert (removed["room"], removed["by"]) == (room, owner.name)
    assert friend.refused({"type": "say", "room": room, "text": "still here?"}) == "not_joined"
    assert join(friend.ws, room)["code"] == "not_found"
    assert friend.get(f"/api/rooms/{room}/messages")[0] == 404


def test_guests_cannot_create_rooms_or_send_direct_messages(
    chat: ChatServer, client: Callable[..., tuple[ClientConnection, Message]]
) -> None:
    guest, _ = client()
    for request in (
        {"type": "create", "private": True},
        {"type": "create", "room": fresh_room()},
        {"type": "dm", "to": "someone", "text": "hi"},
    ):
        send_json(guest, {**request, "ref": "g"})
        reply = recv_until(guest, lambda m: m.get("ref") == "g")
        assert (reply["type"], reply["code"]) == ("error", "account_required")


def test_an_owned_public_room_is_open_to_all_and_taken_names_are_refused(
    chat: ChatServer, people: Callable[..., Person], client: Callable[..., tuple[ClientConnection, Message]]
) -> None:
    owner, other = people("own"), people("other")
    room = fresh_room()
    created = owner.ask({"type": "create", "room": room}, "room")
    assert (created["private"], created["owner"]) == (False, owner.name)
    assert other.refused({"type": "create", "room": room}) == "room_exists"
    busy = fresh_room()
    guest, _ = client()
    join(guest, busy)
    assert owner.refused({"type": "create", "room": busy}) == "room_exists"  # it has a member: not to be taken
    assert owner.refused({"type": "create", "room": "p.mine"}) == "invalid_room"  # the server names private rooms
    assert join(guest, room)["type"] == "joined"  # public: anyone joins
    info = owner.ask({"type": "info", "room": room}, "room")
    assert "members" not in info and info["owner"] == owner.name


def test_a_direct_message_creates_the_conversation_once_and_only_the_two_see_it(
    chat: ChatServer, people: Callable[..., Person]
) -> None:
    alice, bob, eve = people("alice"), people("bob"), people("eve")
    send_json(alice.ws, {"type": "dm", "to": bob.name.lower(), "text": "hello bob", "ref": "d1"})
    joined = recv_until(alice.ws, lambda m: m.get("type") == "joined")
    room = joined["room"]
    assert room.startswith("dm.")
    described = recv_until(alice.ws, lambda m: m.get("type") == "room")
    assert described["dm"] == sorted([alice.name, bob.name], key=str.casefold) and described["owner"] is None
    first = recv_until(alice.ws, lambda m: m.get("type") == "message" and m.get("ref") == "d1")
    assert (first["room"], first["text"], first["from"]) == (room, "hello bob", alice.name)

    invited = recv_until(bob.ws, lambda m: m.get("type") == "invited")
    assert (invited["room"], invited["by"], invited["dm"]) == (room, alice.name, True)
    history = join(bob.ws, room)["history"]
    assert [m["text"] for m in history] == ["hello bob"]
    # Bob writing back by name lands in the same room (whoever writes first names it).
    send_json(bob.ws, {"type": "dm", "to": alice.name, "text": "hi alice", "ref": "d2"})
    reply = recv_until(bob.ws, lambda m: m.get("type") == "message" and m.get("ref") == "d2")
    assert reply["room"] == room
    assert recv_until(alice.ws, lambda m: m.get("type") == "message" and m.get("text") == "hi alice")["room"] == room

    assert join(eve.ws, room)["code"] == "not_found"
    assert eve.get(f"/api/rooms/{room}/messages")[0] == 404
    assert eve.refused({"type": "dm", "to": eve.name, "text": "me"}) == "invalid_field"
    assert eve.refused({"type": "dm", "to": fresh_nick("ghost"), "text": "boo"}) == "unknown_user"
    assert alice.refused({"type": "invite", "room": room, "nick": eve.name}) == "forbidden"


def test_private_rooms_and_direct_messages_work_across_nodes(
    start_node: Callable[..., ChatServer], prefix: str
) -> None:
    a, b = start_node(SHARED_REDIS, prefix), start_node(SHARED_REDIS, prefix)
    owner, member, outsider = Person(a, fresh_nick("ow")), Person(b, fresh_nick("me")), Person(b, fresh_nick("out"))
    try:
        room = owner.ask({"type": "create", "private": True, "title": "Shared"}, "room")["room"]
        join(owner.ws, room)
        say(owner.ws, room, "across nodes")
        assert join(outsider.ws, room)["code"] == "not_found"  # node b reads the settings from Redis
        owner.ask({"type": "invite", "room": room, "nick": member.name}, "room")
        assert recv_until(member.ws, lambda m: m.get("type") == "invited")["room"] == room
        assert [m["text"] for m in join(member.ws, room)["history"]] == ["across nodes"]
        assert member.get(f"/api/rooms/{room}/messages")[0] == 200
        assert outsider.get(f"/api/rooms/{room}/messages")[0] == 404
        for name, expected in ((fresh_room(), 202), (room, 404), (f"p.{'0' * 16}", 404)):
            status, body, _ = http_request(  # a backend's token opens no private room
                b.http + f"/api/rooms/{name}/messages",
                method="POST",
                body=b'{"text": "pushed"}',
                headers={"Content-Type": "application/json", "Authorization": f"Bearer {API_TOKEN}"},
            )
            assert status == expected, body

        owner.ask({"type": "remove", "room": room, "nick": member.name}, "room")  # on a, for a client on b
        assert recv_until(member.ws, lambda m: m.get("type") == "removed")["room"] == room
        assert join(member.ws, room)["code"] == "not_found"

        send_json(outsider.ws, {"type": "dm", "to": owner.name, "text": "from b", "ref": "x"})
        dm = recv_until(outsider.ws, lambda m: m.get("type") == "message" and m.get("ref") == "x")["room"]
        assert recv_until(owner.ws, lambda m: m.get("type") == "invited")["room"] == dm
        assert [m["text"] for m in join(owner.ws, dm)["history"]] == ["from b"]
    finally:
        for person in (owner, member, outsider):
            person.close()
