"""The chat end to end, as docs/protocol.md describes it: sessions, rooms, messages, presence, history.

One real server (gunicorn, its gevent worker and the WebSocket server) is
shared by the module; every test uses its own nicks and rooms.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from websockets.sync.client import ClientConnection

from tests.support.clients import (
    Message,
    connect,
    is_message,
    is_presence,
    join,
    open_ws,
    recv_json,
    recv_until,
    rooms,
    say,
    send_json,
)
from tests.support.gunicorn import ChatServer
from tests.support.http import get_json, http_opener, http_request, session
from tests.support.names import fresh_nick, fresh_room
from tests.support.timeouts import scaled

pytestmark = pytest.mark.timeout(scaled(60))

Client = Callable[..., tuple[ClientConnection, Message]]


def now_ms() -> int:
    return int(time.time() * 1000)


def summary(message: Message) -> tuple[Any, ...]:
    """What must be the same in every copy of a message: id, room, sender, text, time."""
    return message["id"], message["room"], message["from"], message["text"], message["ts"]


def collect_messages(ws: ClientConnection, room: str, count: int, timeout: float) -> list[Message]:
    """The next ``count`` messages of ``room`` (other messages are skipped), all within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    received: list[Message] = []
    while len(received) < count:
        received.append(recv_until(ws, is_message(room), max(deadline - time.monotonic(), 0.001)))
    return received


class TestSession:
    """§1 and §2: a session gives a token and a URL; the WebSocket greets with ``hello``."""

    def test_session_returns_the_nick_a_token_and_the_websocket_url(self, chat: ChatServer) -> None:
        nick = fresh_nick("alice")
        body = session(chat, nick)
        assert body["nick"] == nick
        assert isinstance(body["token"], str) and body["token"]
        assert body["ws_url"].startswith(chat.ws_base + "?")
        assert body["token"] in body["ws_url"]

    def test_hello_carries_the_nick_and_a_connection_id(self, client: Client) -> None:
        nick = fresh_nick("alice")
        _, hello = client(nick)
        _, other = client()
        assert hello["type"] == "hello"
        assert hello["nick"] == nick
        assert isinstance(hello["conn"], str) and hello["conn"]
        assert other["conn"] != hello["conn"]

    def test_session_cookie_opens_the_websocket_without_a_token(self, chat: ChatServer) -> None:
        nick = fresh_nick("cookie")
        status, body, headers = http_request(
            chat.http + "/api/session",
            method="POST",
            body=f'{{"nick": "{nick}"}}'.encode(),
            headers={"Content-Type": "application/json"},
            opener=http_opener(),
        )
        assert status == 200, body
        set_cookie = next((value for key, value in headers.items() if key.lower() == "set-cookie"), None)
        assert set_cookie, headers
        with open_ws(chat.ws_base, additional_headers={"Cookie": set_cookie.split(";", 1)[0]}) as ws:
            hello = recv_json(ws)
            assert hello["type"] == "hello"
            assert hello["nick"] == nick


class TestJoin:
    """§3 and §4: ``join`` replies ``joined`` with the members and the recent history."""

    def test_first_joiner_gets_itself_as_the_only_member_and_no_history(self, client: Client) -> None:
        ws, hello = client()
        room = fresh_room()
        joined = join(ws, room)
        assert joined["type"] == "joined"
        assert joined["room"] == room
        assert joined["members"] == [hello["nick"]]
        assert joined["history"] == []

    def test_join_returns_sorted_members_and_the_last_50_of_60_messages(self, client: Client) -> None:
        room = fresh_room()
        sender, sender_hello = client(fresh_nick("zed"))
        joiner, joiner_hello = client(fresh_nick("amy"))
        join(sender, room)
        acks = [say(sender, room, f"message {i}") for i in range(60)]
        assert [ack["id"] for ack in acks] == list(range(acks[0]["id"], acks[0]["id"] + 60))

        joined = join(joiner, room)

        assert joined["members"] == sorted([sender_hello["nick"], joiner_hello["nick"]])
        history = joined["history"]
        assert len(history) == 50
        assert all(entry["type"] == "message" for entry in history)
        assert [summary(entry) for entry in history] == [summary(ack) for ack in acks[-50:]]

    def test_join_with_since_returns_exactly_the_messages_after_that_id(self, client: Client) -> None:
        room = fresh_room()
        sender, _ = client()
        join(sender, room)
        acks = [say(sender, room, f"numbered {i}") for i in range(10)]
        ids = [ack["id"] for ack in acks]

        after_fourth, _ = client()
        history = join(after_fourth, room, since=ids[3])["history"]
        assert [summary(entry) for entry in history] == [summary(ack) for ack in acks[4:]]

        up_to_date, _ = client()
        assert join(up_to_date, room, since=ids[-1])["history"] == []

        from_start, _ = client()
        assert [entry["id"] for entry in join(from_start, room, since=0)["history"]] == ids

        # live messages continue right after the history: no gap
        live = say(sender, room, "live")
        assert live["id"] == ids[-1] + 1
        for ws in (after_fourth, up_to_date, from_start):
            assert recv_until(ws, is_message(room))["id"] == live["id"]


class TestSay:
    """§3 and §4: ``say`` is stored, then broadcast to every member with an id, a time and the ``ref``."""

    def test_message_goes_to_every_member_sender_included(self, client: Client) -> None:
        room = fresh_room()
        members = [client(fresh_nick(name)) for name in ("ann", "ben", "cid")]
        for ws, _ in members:
            join(ws, room)
        (ann, ann_hello), (ben, _), (cid, _) = members

        before = now_ms()
        ack = say(ann, room, "hello all", ref="m1")
        after = now_ms()

        assert ack["type"] == "message"
        assert ack["room"] == room
        assert ack["from"] == ann_hello["nick"]
        assert ack["text"] == "hello all"
        assert ack["ref"] == "m1"
        assert isinstance(ack["id"], int) and not isinstance(ack["id"], bool)
        assert isinstance(ack["ts"], int) and not isinstance(ack["ts"], bool)
        assert before - 2000 <= ack["ts"] <= after + 2000, "ts is milliseconds since the epoch"
        for ws in (ben, cid):
            assert summary(recv_until(ws, is_message(room))) == summary(ack)

    def test_a_ref_comes_back_as_it_was_sent_string_or_integer(self, chat: ChatServer, client: Client) -> None:
        room = fresh_room()
        (ann, _), (ben, _) = client(), client()
        join(ann, room)
        join(ben, room)
        sent = []
        for ref in [7, "7", 0, -(2**53) + 1, 2**53 - 1, "rpc-1"]:  # JSON-RPC ids and Socket.IO acks are integers
            send_json(ann, {"type": "say", "room": room, "text": f"ref {ref!r}", "ref": ref})
            echo = recv_until(ann, lambda m, ref=ref: is_message(room)(m) and m.get("ref") == ref)
            assert type(echo["ref"]) is type(ref), echo
            sent.append(echo)
        assert [recv_until(ben, is_message(room)) for _ in sent] == sent, "every member sees the ref as sent"
        (late, _) = client()
        replayed = join(late, room)["history"]
        assert [(m["ref"], type(m["ref"])) for m in replayed] == [(m["ref"], type(m["ref"])) for m in sent]
        status, body = get_json(chat, f"/api/rooms/{room}/messages")
        assert status == 200, body
        assert [m["ref"] for m in body["messages"]] == [m["ref"] for m in sent]
        assert [type(m["ref"]) for m in body["messages"]] == [type(m["ref"]) for m in sent]

    def test_ids_increase_by_one_whoever_sends(self, client: Client) -> None:
        room = fresh_room()
        (ann, _), (ben, _) = client(), client()
        join(ann, room)
        join(ben, room)
        first = say(ann, room, "one")
        second = say(ben, room, "two")
        third = say(ann, room, "three")
        assert [second["id"], third["id"]] == [first["id"] + 1, first["id"] + 2]
        assert first["ts"] <= second["ts"] <= third["ts"]

    def test_every_member_sees_interleaved_senders_in_the_same_order(self, client: Client) -> None:
        room = fresh_room()
        members = [client(fresh_nick(name)) for name in ("ann", "ben", "cid")]
        for ws, _ in members:
            join(ws, room)
        per_sender = 30

        def send_all(index: int) -> None:
            ws, hello = members[index]
            for i in range(per_sender):
                send_json(ws, {"type": "say", "room": room, "text": f"{hello['nick']} #{i}", "ref": f"r{i}"})

        with ThreadPoolExecutor(len(members)) as pool:
            list(pool.map(send_all, range(len(members))))
        total = per_sender * len(members)
        sequences = [collect_messages(ws, room, total, scaled(15)) for ws, _ in members]

        expected = {(hello["nick"], f"{hello['nick']} #{i}") for _, hello in members for i in range(per_sender)}
        first = sequences[0]
        assert [m["id"] for m in first] == list(range(first[0]["id"], first[0]["id"] + total))
        assert {(m["from"], m["text"]) for m in first} == expected
        for sequence in sequences[1:]:
            assert [summary(m) for m in sequence] == [summary(m) for m in first]
        for _, hello in members:  # each sender's own messages keep its order
            own = [m["text"] for m in first if m["from"] == hello["nick"]]
            assert own == [f"{hello['nick']} #{i}" for i in range(per_sender)]

    def test_a_client_in_two_rooms_gets_each_message_tagged_with_its_room(self, client: Client) -> None:
        red, blue = fresh_room("red"), fresh_room("blue")
        (both, _), (in_red, red_hello), (in_blue, blue_hello) = client(), client(), client()
        join(both, red)
        join(both, blue)
        join(in_red, red)
        join(in_blue, blue)

        say(in_red, red, "for red")
        say(in_blue, blue, "for blue")
        say(in_red, red, "red again")

        got = [recv_until(both, lambda m: m.get("type") == "message") for _ in range(3)]
        assert [(m["room"], m["from"], m["text"]) for m in got] == [
            (red, red_hello["nick"], "for red"),
            (blue, blue_hello["nick"], "for blue"),
            (red, red_hello["nick"], "red again"),
        ]
        assert got[2]["id"] == got[0]["id"] + 1, "ids count per room"


class TestPresence:
    """§4: presence goes to the other members; ``leave`` and disconnecting leave rooms."""

    def test_join_and_leave_are_announced_to_the_others_with_the_count(self, client: Client) -> None:
        room = fresh_room()
        (ann, _), (ben, ben_hello), (cid, cid_hello) = client(), client(), client()
        join(ann, room)
        join(ben, room)

        announced = recv_until(ann, is_presence(room, ben_hello["nick"], "join"))
        assert announced == {"type": "presence", "room": room, "nick": ben_hello["nick"], "event": "join", "count": 2}
        skipped: list[Message] = []
        send_json(ben, {"type": "rooms"})
        recv_until(ben, lambda m: m.get("type") == "rooms", skipped=skipped)
        assert not [m for m in skipped if m.get("type") == "presence"], "the joiner gets no presence of itself"

        join(cid, room)
        for ws in (ann, ben):
            assert recv_until(ws, is_presence(room, cid_hello["nick"], "join"))["count"] == 3

        send_json(ben, {"type": "leave", "room": room})
        assert recv_until(ben, lambda m: m.get("type") == "left") == {"type": "left", "room": room}
        for ws in (ann, cid):
            assert recv_until(ws, is_presence(room, ben_hello["nick"], "leave"))["count"] == 2

    def test_after_leave_no_more_messages_come_from_that_room(self, client: Client) -> None:
        room = fresh_room()
        (ann, _), (ben, _) = client(), client()
        join(ann, room)
        join(ben, room)
        send_json(ben, {"type": "leave", "room": room})
        recv_until(ben, lambda m: m.get("type") == "left")

        say(ann, room, "you are gone")  # broadcast done: the sender saw it come back

        skipped: list[Message] = []
        send_json(ben, {"type": "rooms"})
        recv_until(ben, lambda m: m.get("type") == "rooms", skipped=skipped)
        assert not [m for m in skipped if m.get("room") == room and m.get("type") == "message"]

    def test_disconnecting_leaves_every_room(self, chat: ChatServer, client: Client) -> None:
        first, second = fresh_room(), fresh_room()
        watcher, _ = client()
        join(watcher, first)
        join(watcher, second)
        nick = fresh_nick("gone")
        leaver, _ = connect(chat, nick)
        with leaver:
            join(leaver, first)
            join(leaver, second)
        seen = {}
        for _ in range(2):
            event = recv_until(
                watcher, lambda m: m.get("type") == "presence" and m.get("nick") == nick and m.get("event") == "leave"
            )
            seen[event["room"]] = event["count"]
        assert seen == {first: 1, second: 1}


class TestRooms:
    """§3, §4 and §6: the room list, over WebSocket and HTTP."""

    def test_rooms_message_lists_rooms_with_member_counts(self, client: Client) -> None:
        busy, quiet = fresh_room("busy"), fresh_room("quiet")
        (ann, _), (ben, _), (cid, _) = client(), client(), client()
        join(ann, busy)
        join(ben, busy)
        join(cid, quiet)

        reply = rooms(ann)
        listed = {entry["name"]: entry["members"] for entry in reply["rooms"]}
        assert listed[busy] == 2
        assert listed[quiet] == 1
        assert all(set(entry) == {"name", "members"} for entry in reply["rooms"])

    def test_http_rooms_lists_rooms_while_they_have_members_or_history(self, chat: ChatServer, client: Client) -> None:
        empty, talked = fresh_room("empty"), fresh_room("talked")
        (ann, _), (ben, _) = client(), client()
        join(ann, empty)
        join(ben, talked)
        say(ben, talked, "something to remember")

        status, body = get_json(chat, "/api/rooms")
        assert status == 200, body
        listed = {entry["name"]: entry["members"] for entry in body["rooms"]}
        assert listed[empty] == 1
        assert listed[talked] == 1

        for ws, room in ((ann, empty), (ben, talked)):
            send_json(ws, {"type": "leave", "room": room})
            recv_until(ws, lambda m: m.get("type") == "left")
        status, body = get_json(chat, "/api/rooms")
        listed = {entry["name"]: entry["members"] for entry in body["rooms"]}
        assert empty not in listed, "a room with neither members nor history is gone"
        assert listed[talked] == 0, "a room with history stays"

        assert {e["name"]: e["members"] for e in rooms(ann)["rooms"]}.get(talked) == 0


class TestHistoryOverHttp:
    """§6: ``GET /api/rooms/<room>/messages`` serves the same messages as ``joined``."""

    def test_http_history_matches_the_joined_history(self, chat: ChatServer, client: Client) -> None:
        room = fresh_room()
        sender, _ = client()
        join(sender, room)
        acks = [say(sender, room, f"kept {i}") for i in range(12)]
        ids = [ack["id"] for ack in acks]
        reader, _ = client()
        history = join(reader, room)["history"]
        assert [summary(m) for m in history] == [summary(ack) for ack in acks]

        status, body = get_json(chat, f"/api/rooms/{room}/messages")
        assert status == 200, body
        assert body["room"] == room
        assert body["messages"] == history

        _, body = get_json(chat, f"/api/rooms/{room}/messages?since={ids[4]}")
        assert body["messages"] == history[5:]
        _, body = get_json(chat, f"/api/rooms/{room}/messages?limit=3")
        assert body["messages"] == history[-3:]
        _, body = get_json(chat, f"/api/rooms/{room}/messages?since={ids[4]}&limit=2")
        assert body["messages"] == history[5:7]
        _, body = get_json(chat, f"/api/rooms/{room}/messages?since={ids[-1]}")
        assert body["messages"] == []

    def test_http_history_defaults_to_the_last_50(self, chat: ChatServer, client: Client) -> None:
        room = fresh_room()
        sender, _ = client()
        join(sender, room)
        acks = [say(sender, room, f"m{i}") for i in range(55)]
        status, body = get_json(chat, f"/api/rooms/{room}/messages")
        assert status == 200, body
        assert [summary(m) for m in body["messages"]] == [summary(ack) for ack in acks[-50:]]


class TestRecovery:
    """§4: after ``joined`` live messages follow with no gap and no duplicate, even while others send."""

    def test_reconnecting_with_since_misses_nothing_while_others_keep_sending(
        self, chat: ChatServer, client: Client
    ) -> None:
        room = fresh_room()
        (ben, _), (cid, _) = client(), client()
        nick = fresh_nick("returning")
        url = session(chat, nick)["ws_url"]
        with open_ws(url) as ann:
            recv_json(ann)  # hello
            join(ann, room)
            join(ben, room)
            join(cid, room)
            for i in range(5):
                say(ben, room, f"before {i}")
            last_seen = collect_messages(ann, room, 5, scaled(5))[-1]["id"]

        stop = threading.Event()
        acked: list[Message] = []
        lock = threading.Lock()

        def keep_sending(ws: ClientConnection, name: str) -> None:
            for i in range(2000):
                if stop.is_set():
                    return
                ack = say(ws, room, f"{name} {i}", timeout=scaled(10))
                with lock:
                    acked.append(ack)

        def acked_count() -> int:
            with lock:
                return len(acked)

        with ThreadPoolExecutor(2) as pool:
            senders = [pool.submit(keep_sending, ben, "ben"), pool.submit(keep_sending, cid, "cid")]
            try:
                deadline = time.monotonic() + scaled(10)
                while acked_count() < 20 and time.monotonic() < deadline:
                    time.sleep(0.005)
                assert acked_count() >= 20, "the senders are not sending"

                with open_ws(url) as ann:  # the same token: a client reconnecting
                    assert recv_json(ann)["type"] == "hello"
                    joined = join(ann, room, since=last_seen, timeout=scaled(10))
                    assert joined["type"] == "joined", joined
                    history = joined["history"]
                    live = collect_messages(ann, room, 30, scaled(10))  # the senders go on after the join
                    stop.set()
                    for sender in senders:
                        sender.result(timeout=scaled(15))
                    last_acked = max(ack["id"] for ack in acked)
                    while live[-1]["id"] < last_acked:
                        live.append(recv_until(ann, is_message(room), scaled(10)))
            finally:
                stop.set()

        assert history, "messages were sent between the disconnect and the join"
        ids = [m["id"] for m in history + live]
        history_ids, live_ids = [m["id"] for m in history], [m["id"] for m in live]
        assert ids == list(range(last_seen + 1, last_acked + 1)), (
            f"every id after since={last_seen}, once, in order; history ends {history_ids[-5:]}, "
            f"live starts {live_ids[:5]}"
        )
        by_id = {ack["id"]: summary(ack) for ack in acked}
        assert all(summary(m) == by_id[m["id"]] for m in history + live if m["id"] in by_id)


class TestMany:
    """Many clients at once in one room: every one gets every message."""

    def test_200_clients_in_one_room_all_receive_every_message(self, chat: ChatServer) -> None:
        count, senders, per_sender = 200, 5, 2
        room = fresh_room("crowd")
        started = time.monotonic()
        clients: list[ClientConnection] = []
        lock = threading.Lock()

        def open_one(i: int) -> ClientConnection:
            ws, _ = connect(chat, fresh_nick(f"c{i}"), compression=None)
            with lock:
                clients.append(ws)
            return ws

        try:
            with ThreadPoolExecutor(16) as pool:
                connections = list(pool.map(open_one, range(count)))
                joins = list(pool.map(lambda ws: join(ws, room, timeout=scaled(20)), connections))
                assert all(reply["type"] == "joined" for reply in joins)

                status, body = get_json(chat, "/api/rooms")
                assert status == 200, body
                assert {e["name"]: e["members"] for e in body["rooms"]}[room] == count

                for i in range(per_sender):
                    for ws in connections[:senders]:
                        send_json(ws, {"type": "say", "room": room, "text": f"round {i}"})
                total = senders * per_sender
                received = list(pool.map(lambda ws: collect_messages(ws, room, total, scaled(20)), connections))
        finally:
            for ws in clients:
                ws.close()

        reference = [summary(m) for m in received[0]]
        assert len(reference) == total
        assert [m[0] for m in reference] == list(range(reference[0][0], reference[0][0] + total))
        assert all([summary(m) for m in sequence] == reference for sequence in received)
        assert time.monotonic() - started < scaled(30)
