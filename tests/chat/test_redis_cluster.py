"""Several chat processes sharing rooms through real Redis.

Two gunicorn processes on different ports (two *nodes*), or one gunicorn with
two workers on one WebSocket port, share one Redis: the machine's on
127.0.0.1:6379 under a key prefix of the test's own, or, for the tests that
stop Redis, a ``redis-server`` the test starts on a free port and stops.
Clients are outside ones (``websockets``, ``urllib``); Redis is inspected
with ``redis-py``.
"""

from __future__ import annotations

import json
import secrets
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from tests.support.clients import (
    connect_to,
    is_message,
    is_presence,
    join,
    read_until_closed,
    recv_until,
    say,
    send_json,
)
from tests.support.gunicorn import ChatServer, two_workers
from tests.support.http import admin, http_request, post_session
from tests.support.names import fresh_nick, fresh_room
from tests.support.redis import API_TOKEN, SHARED_REDIS, RedisServer
from tests.support.timeouts import scaled


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


# -- two nodes, one room ------------------------------------------------------------------------------------------


def test_clients_on_two_nodes_chat_in_one_room_in_the_same_order(
    start_node: Callable[..., ChatServer], prefix: str
) -> None:
    a, b = start_node(SHARED_REDIS, prefix), start_node(SHARED_REDIS, prefix)
    room = fresh_room()
    ws_a, _ = connect_to(a, fresh_nick("alice"))
    ws_b, _ = connect_to(b, fresh_nick("bob"))
    with ws_a, ws_b:
        join(ws_a, room)
        join(ws_b, room)
        for i in range(20):  # interleaved, without waiting: both nodes store concurrently
            send_json(ws_a, {"type": "say", "room": room, "text": f"a{i}"})
            send_json(ws_b, {"type": "say", "room": room, "text": f"b{i}"})
        seen_a = [recv_until(ws_a, is_message(room)) for _ in range(40)]
        seen_b = [recv_until(ws_b, is_message(room)) for _ in range(40)]
    assert [m["id"] for m in seen_a] == list(range(1, 41))
    assert seen_a == seen_b, "both nodes deliver the same messages in the same order"
    texts = [m["text"] for m in seen_a]
    assert [t for t in texts if t[0] == "a"] == [f"a{i}" for i in range(20)]
    assert [t for t in texts if t[0] == "b"] == [f"b{i}" for i in range(20)]


def test_joining_on_one_node_while_the_other_sends_misses_and_repeats_nothing(
    start_node: Callable[..., ChatServer], prefix: str
) -> None:
    a, b = start_node(SHARED_REDIS, prefix), start_node(SHARED_REDIS, prefix)
    room, total = fresh_room(), 300
    ws_a, _ = connect_to(a, fresh_nick("talker"))
    with ws_a:
        join(ws_a, room)
        for i in range(total):  # queued at once: node A stores them while B's client joins
            send_json(ws_a, {"type": "say", "room": room, "text": f"m{i}"})
        for _ in range(5):  # several joins, each at a different point of the stream
            ws_b, _ = connect_to(b, fresh_nick("joiner"))
            with ws_b:
                joined = join(ws_b, room, since=0)
                ids = [m["id"] for m in joined["history"]]
                while not ids or ids[-1] < total:
                    ids.append(recv_until(ws_b, is_message(room))["id"])
            first = ids[0] if ids else 1
            assert ids == list(range(first, total + 1)), "contiguous: no gap and no repeat"
        recv_until(ws_a, lambda m: is_message(room)(m) and m["id"] == total, timeout=scaled(10))


def test_presence_and_the_room_list_span_nodes(start_node: Callable[..., ChatServer], prefix: str) -> None:
    a, b = start_node(SHARED_REDIS, prefix), start_node(SHARED_REDIS, prefix)
    room, alice, bob = fresh_room(), fresh_nick("alice"), fresh_nick("bob")
    ws_a, _ = connect_to(a, alice)
    ws_b, _ = connect_to(b, bob)
    with ws_a, ws_b:
        join(ws_a, room)
        joined = join(ws_b, room)
        assert joined["members"] == sorted([alice, bob])
        event = recv_until(ws_a, is_presence(room, bob, "join"))
        assert event["count"] == 2
        for node in (a, b):
            status, body = http_request(node.http + "/api/rooms")[:2]
            assert status == 200
            assert {"name": room, "members": 2} in body["rooms"]
        ws_b.close()
        left = recv_until(ws_a, is_presence(room, bob, "leave"))
        assert left["count"] == 1


def test_a_nick_held_on_one_node_is_taken_on_the_other(start_node: Callable[..., ChatServer], prefix: str) -> None:
    a, b = start_node(SHARED_REDIS, prefix), start_node(SHARED_REDIS, prefix)
    nick = fresh_nick("unique")
    ws_a, _ = connect_to(a, nick)
    with ws_a:
        status, body = post_session(b, {"nick": nick})
        assert status == 409, body


def test_the_admin_list_shows_the_clients_of_every_node(start_node: Callable[..., ChatServer], prefix: str) -> None:
    a, b = start_node(SHARED_REDIS, prefix), start_node(SHARED_REDIS, prefix)
    room = fresh_room()
    ws_a, hello_a = connect_to(a, fresh_nick("alice"))
    ws_b, hello_b = connect_to(b, fresh_nick("bob"))
    with ws_a, ws_b:
        join(ws_b, room)
        assert hello_a["conn"].split(".")[0] != hello_b["conn"].split(".")[0], "connection ids name their node"
        for node in (a, b):
            status, body = admin(node, "/clients")
            assert status == 200, body
            by_id = {client["id"]: client for client in body["clients"]}
            assert {hello_a["conn"], hello_b["conn"]} <= set(by_id)
            assert by_id[hello_b["conn"]]["rooms"] == [room]
            assert by_id[hello_b["conn"]]["node"] == hello_b["conn"].split(".")[0]


def test_a_kick_from_one_node_closes_a_client_on_the_other(start_node: Callable[..., ChatServer], prefix: str) -> None:
    a, b = start_node(SHARED_REDIS, prefix), start_node(SHARED_REDIS, prefix)
    ws_b, hello_b = connect_to(b, fresh_nick("bob"))
    with ws_b:
        status, body = admin(a, f"/clients/{hello_b['conn']}/kick", {})
        assert status == 200, body
        closed = read_until_closed(ws_b, scaled(10))
        assert closed.rcvd is not None and closed.rcvd.code == 4001
    status, body = admin(a, "/clients/nobody.c1/kick", {})
    assert status == 404, body


def test_a_ban_from_one_node_closes_and_refuses_the_nick_on_the_other(
    start_node: Callable[..., ChatServer], prefix: str
) -> None:
    a, b = start_node(SHARED_REDIS, prefix), start_node(SHARED_REDIS, prefix)
    nick = fresh_nick("troll")
    ws_b, _ = connect_to(b, nick)
    with ws_b:
        status, body = admin(a, "/bans", {"nick": nick, "seconds": 60})
        assert status == 201, body
        assert body["closed"] == 1
        closed = read_until_closed(ws_b, scaled(10))
        assert closed.rcvd is not None and closed.rcvd.code == 4003
    status, body = post_session(b, {"nick": nick})
    assert status == 403, body
    c = start_node(SHARED_REDIS, prefix)  # a node started later knows the ban too
    status, body = admin(c, "/bans")
    assert [ban["nick"] for ban in body["bans"]] == [nick]


def test_admin_broadcast_and_the_push_api_reach_clients_on_every_node(
    start_node: Callable[..., ChatServer], prefix: str
) -> None:
    a, b = start_node(SHARED_REDIS, prefix), start_node(SHARED_REDIS, prefix)
    room = fresh_room()
    ws_a, _ = connect_to(a, fresh_nick("alice"))
    with ws_a:
        join(ws_a, room)
        status, body = admin(b, "/broadcast", {"text": "maintenance at noon"})
        assert status == 202, body
        system = recv_until(ws_a, lambda m: m.get("type") == "system")
        assert system["text"] == "maintenance at noon"
        status, body, _ = http_request(
            b.http + f"/api/rooms/{room}/messages",
            method="POST",
            body=json.dumps({"text": "deploy finished", "from": "ci-bot"}).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {API_TOKEN}"},
        )
        assert status == 202, body
        pushed = recv_until(ws_a, is_message(room))
        assert (pushed["from"], pushed["text"], pushed["id"]) == ("ci-bot", "deploy finished", body["id"])


def test_since_recovery_works_after_switching_nodes(start_node: Callable[..., ChatServer], prefix: str) -> None:
    a, b = start_node(SHARED_REDIS, prefix), start_node(SHARED_REDIS, prefix)
    room, nick = fresh_room(), fresh_nick("mobile")
    ws_a, _ = connect_to(a, nick)
    with ws_a:
        join(ws_a, room)
        sent = [say(ws_a, room, f"m{i}") for i in range(6)]
    last_seen = sent[2]["id"]
    ws_b, _ = connect_to(b, nick)
    with ws_b:
        joined = join(ws_b, room, since=last_seen)
        assert [m["text"] for m in joined["history"]] == ["m3", "m4", "m5"]
        assert [m["id"] for m in joined["history"]] == [m["id"] for m in sent[3:]]
        status, body = http_request(b.http + f"/api/rooms/{room}/messages")[:2]
        assert status == 200, body
        assert [m["text"] for m in body["messages"]] == [f"m{i}" for i in range(6)]


def test_a_crashed_nodes_clients_disappear_within_30_seconds(
    start_node: Callable[..., ChatServer], prefix: str
) -> None:
    a, b = start_node(SHARED_REDIS, prefix), start_node(SHARED_REDIS, prefix)
    room, bob = fresh_room(), fresh_nick("bob")
    ws_a, _ = connect_to(a, fresh_nick("alice"))
    ws_b, hello_b = connect_to(b, bob)
    with ws_a:
        join(ws_a, room)
        join(ws_b, room)
        recv_until(ws_a, is_presence(room, bob, "join"))
        b.stop(signal.SIGKILL)  # no goodbye: the heartbeat stops
        crashed_at = time.monotonic()
        left = recv_until(ws_a, is_presence(room, bob, "leave"), timeout=scaled(30))
        assert left["count"] == 1
        assert time.monotonic() - crashed_at < 30
        status, body = admin(a, "/clients")
        assert status == 200, body
        assert hello_b["conn"] not in {client["id"] for client in body["clients"]}
    ws_b.close_socket()


def test_a_say_retried_on_another_node_after_a_reconnect_is_stored_once(
    start_node: Callable[..., ChatServer], prefix: str
) -> None:
    a, b = start_node(SHARED_REDIS, prefix), start_node(SHARED_REDIS, prefix)
    room, nick = fresh_room(), fresh_nick("mobile")
    watcher, _ = connect_to(a, fresh_nick("watcher"))
    with watcher:
        join(watcher, room)
        ws_a, _ = connect_to(a, nick)
        with ws_a:
            join(ws_a, room)
            first = say(ws_a, room, "only once", ref="retry-1")
        ws_b, _ = connect_to(b, nick)  # the same session, reconnected to the other node
        with ws_b:
            join(ws_b, room, since=first["id"])
            again = say(ws_b, room, "only once", ref="retry-1")
            assert again == first, "answered with the original message"
            fresh = say(ws_b, room, "a new one", ref="retry-2")
            assert fresh["id"] == first["id"] + 1
        seen = [recv_until(watcher, is_message(room)) for _ in range(2)]
        assert [m["text"] for m in seen] == ["only once", "a new one"], "the room got the retry once"
    status, body = http_request(a.http + f"/api/rooms/{room}/messages")[:2]
    assert status == 200, body
    assert [m["text"] for m in body["messages"]] == ["only once", "a new one"]


def test_a_crashed_nodes_clients_leave_the_member_lists_as_they_leave_the_admin_list(
    start_node: Callable[..., ChatServer], prefix: str
) -> None:
    a, b = start_node(SHARED_REDIS, prefix), start_node(SHARED_REDIS, prefix)
    room, alice, bob = fresh_room(), fresh_nick("alice"), fresh_nick("bob")
    ws_b, hello_b = connect_to(b, bob)
    join(ws_b, room)
    ws_a, _ = connect_to(a, alice)
    with ws_a:
        assert join(ws_a, room)["members"] == sorted([alice, bob])
        send_json(ws_a, {"type": "leave", "room": room})
        recv_until(ws_a, lambda m: m.get("type") == "left")
        b.stop(signal.SIGKILL)  # no goodbye: the heartbeat stops
        crashed_at = time.monotonic()

        def in_admin_list() -> bool:
            status, body = admin(a, "/clients")
            assert status == 200, body
            return hello_b["conn"] in {client["id"] for client in body["clients"]}

        wait_for(lambda: not in_admin_list(), scaled(30), "the admin list to drop the crashed node's client")
        assert time.monotonic() - crashed_at < 30
        # From the moment the admin list drops it, no answer lists it any more:
        # not the members of a join, not the room list, not the nick's holders.
        assert join(ws_a, room)["members"] == [alice]
        status, body = http_request(a.http + "/api/rooms")[:2]
        assert {"name": room, "members": 1} in body["rooms"]
        status, body = post_session(a, {"nick": bob})
        assert status == 200, body
    ws_b.close_socket()


def test_events_published_by_a_node_from_before_epochs_still_reach_the_clients(
    start_node: Callable[..., ChatServer], prefix: str
) -> None:
    node = start_node(SHARED_REDIS, prefix)
    room = fresh_room()
    ws, _ = connect_to(node, fresh_nick("alice"))
    with ws:
        join(ws, room)
        old_node = redis.Redis.from_url(SHARED_REDIS)  # publishing as the previous version did: no epoch field
        try:
            event = {"type": "system", "text": "from an older node", "room": room}
            old_node.publish(f"{prefix}:events", f"{room}\n\n\n{json.dumps(event)}")
            message = {"type": "message", "room": room, "id": 1, "from": "old", "text": "hello", "ts": 1}
            old_node.publish(f"{prefix}:events", f"{room}\n\n1\n{json.dumps(message)}")
        finally:
            old_node.close()
        assert recv_until(ws, lambda m: m.get("type") == "system")["text"] == "from an older node"
        assert recv_until(ws, is_message(room)) == message
    assert "subscriber failed" not in node.logs()


# -- Redis goes away and comes back ---------------------------------------------------------------------------------


def test_redis_restarted_mid_chat_loses_nothing_acknowledged(
    start_node: Callable[..., ChatServer], own_redis: RedisServer
) -> None:
    a, b = start_node(own_redis.url, "chat"), start_node(own_redis.url, "chat")
    room = fresh_room()
    ws_a, _ = connect_to(a, fresh_nick("alice"))
    ws_b, _ = connect_to(b, fresh_nick("bob"))
    with ws_a, ws_b:
        join(ws_a, room)
        join(ws_b, room)
        acked = [say(ws_a, room, "before-1")["id"], say(ws_b, room, "before-2")["id"]]
        own_redis.stop()
        send_json(ws_a, {"type": "say", "room": room, "text": "during", "ref": "d1"})
        refused = recv_until(ws_a, lambda m: m.get("ref") == "d1")
        assert (refused["type"], refused["code"]) == ("error", "degraded"), refused
        own_redis.start()  # same port, same directory: the append-only file comes back
        deadline = time.monotonic() + scaled(30)
        while True:  # the nodes reconnect with backoff; say again until accepted
            ref = secrets.token_hex(4)
            send_json(ws_a, {"type": "say", "room": room, "text": "after", "ref": ref})
            reply = recv_until(ws_a, lambda m, ref=ref: m.get("ref") == ref)
            if reply["type"] == "message":
                break
            assert reply["code"] == "degraded", reply
            assert time.monotonic() < deadline, "the chat did not resume after Redis came back"
            time.sleep(0.5)
        acked.append(reply["id"])
        got_b = recv_until(ws_b, lambda m: is_message(room)(m) and m["text"] == "after")
        assert got_b["id"] == reply["id"]
    assert "unreachable" in a.logs()
    assert a.logs().count("unreachable (") == 1, "the outage is logged once"
    status, body = http_request(b.http + f"/api/rooms/{room}/messages")[:2]
    assert status == 200, body
    stored = [m["id"] for m in body["messages"]]
    assert set(acked) <= set(stored)
    assert [m["text"] for m in body["messages"]] == ["before-1", "before-2", "after"]


def test_a_node_started_before_redis_serves_degraded_then_connects_by_itself(
    start_node: Callable[..., ChatServer], tmp_path: Path
) -> None:
    redis_later = RedisServer(tmp_path)  # its port chosen, nothing listening yet
    try:
        node = start_node(redis_later.url, "chat")  # the worker boots; gunicorn does not exit
        status, body = http_request(node.http + "/healthz")[:2]
        assert status == 200, body
        status, body = http_request(node.http + "/readyz")[:2]
        assert status == 503, body
        assert body["checks"]["broker"] != "ok" and "unreachable" in body["checks"]["broker"], body
        room, nick = fresh_room(), fresh_nick("early")
        # Who owns a nick is in Redis: until it answers, no new session (a guest could take a registered name).
        status, body = post_session(node, {"nick": nick})
        assert (status, body["error"]) == (503, "degraded"), body
        redis_later.start()
        wait_for(lambda: http_request(node.http + "/readyz")[0] == 200, scaled(20), "the node to reach Redis")
        ws, _ = connect_to(node, nick)
        with ws:
            joined = join(ws, room)
            assert joined["type"] == "joined" and joined["members"] == [nick], joined
            assert say(ws, room, "connected by itself")["id"] == 1  # stored by the script, back through pub/sub
        later = start_node(redis_later.url, "chat")  # another node shares the room with the first
        ws_a, _ = connect_to(node, fresh_nick("a"))
        ws_b, _ = connect_to(later, fresh_nick("b"))
        with ws_a, ws_b:
            join(ws_a, room)
            join(ws_b, room)
            sent = say(ws_b, room, "across nodes")
            assert recv_until(ws_a, is_message(room))["id"] == sent["id"]
        assert node.alive(), node.logs()
        assert node.logs().count("unreachable (") == 1, "the outage is logged once"
    finally:
        redis_later.stop()


def say_until_stored(
    ws: Any, room: str, text: str, timeout: float, skipped: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """Say ``text`` until it is accepted (the node may still be reconnecting to Redis): its ``message``."""
    deadline = time.monotonic() + timeout
    while True:
        ref = secrets.token_hex(4)
        send_json(ws, {"type": "say", "room": room, "text": text, "ref": ref})
        reply = recv_until(ws, lambda m, ref=ref: m.get("ref") == ref, skipped=skipped)
        if reply["type"] == "message":
            return reply
        assert reply["code"] == "degraded", reply
        assert time.monotonic() < deadline, "the chat did not resume after Redis came back"
        time.sleep(0.5)


def test_redis_restarted_empty_restarts_the_ids_under_a_new_epoch_and_clients_are_told(
    start_node: Callable[..., ChatServer], tmp_path: Path
) -> None:
    volatile = RedisServer(tmp_path, persistent=False)  # as the machine's own Redis: nothing kept on disk
    volatile.start()
    try:
        a, b = start_node(volatile.url, "chat"), start_node(volatile.url, "chat")
        room = fresh_room()
        ws_a, _ = connect_to(a, fresh_nick("alice"))
        ws_b, _ = connect_to(b, fresh_nick("bob"))
        with ws_a, ws_b:
            old_epoch = join(ws_a, room)["epoch"]
            assert join(ws_b, room)["epoch"] == old_epoch, "one epoch per room, whichever node answers"
            before = [say(ws_a, room, f"before {i}", ref=i) for i in range(5)]  # integer refs, through Redis
            assert [(m["id"], m["ref"]) for m in before] == [(1, 0), (2, 1), (3, 2), (4, 3), (5, 4)]
            for _ in before:
                recv_until(ws_b, is_message(room))
            volatile.stop()
            volatile.start()  # empty: the room's counter, stream and epoch are gone

            before_a: list[dict[str, Any]] = []
            after = say_until_stored(ws_a, room, "after", scaled(30), before_a)
            assert after["id"] == 1, "the ids start again, under a new epoch"
            before_b: list[dict[str, Any]] = []
            assert recv_until(ws_b, lambda m: is_message(room)(m) and m["text"] == "after", skipped=before_b) == after
            for skipped in (before_a, before_b):  # every member, on either node: told to reset, then the message
                resets = [m for m in skipped if m.get("type") == "reset"]
                assert len(resets) == 1 and resets[0]["room"] == room, skipped
                new_epoch = resets[0]["epoch"]
                assert isinstance(new_epoch, str) and new_epoch and new_epoch != old_epoch
            assert say(ws_b, room, "next")["id"] == 2
            assert recv_until(ws_a, is_message(room))["text"] == "next"

            for request in ({"since": 5, "epoch": old_epoch}, {"since": 5}):  # a client coming back
                ws_c, _ = connect_to(a, fresh_nick("back"))
                with ws_c:
                    joined = join(ws_c, room, **request)
                    assert (joined["reset"], joined["epoch"]) == (True, new_epoch), joined
                    assert [m["text"] for m in joined["history"]] == ["after", "next"]
            ws_d, _ = connect_to(b, fresh_nick("current"))
            with ws_d:
                joined = join(ws_d, room, since=1, epoch=new_epoch)
                assert "reset" not in joined and [m["text"] for m in joined["history"]] == ["next"], joined
    finally:
        volatile.stop()


# -- gunicorn -w 2 on one port --------------------------------------------------------------------------------------


def test_two_gunicorn_workers_share_one_websocket_port_and_every_room(tmp_path: Path, prefix: str) -> None:
    with two_workers(tmp_path, prefix) as node:
        room = fresh_room()
        clients, nodes = [], set()
        for _ in range(40):  # the kernel spreads new connections over both workers
            ws, hello = connect_to(node, fresh_nick())
            clients.append((ws, hello))
            nodes.add(hello["conn"].split(".")[0])
            if len(nodes) == 2 and len(clients) >= 2:
                break
        assert len(nodes) == 2, "every connection went to the same worker"
        first = clients[0]
        other = next(
            (ws, hello) for ws, hello in clients if hello["conn"].split(".")[0] != first[1]["conn"].split(".")[0]
        )
        join(first[0], room)
        join(other[0], room)
        sent = say(first[0], room, "across workers")
        got = recv_until(other[0], is_message(room))
        assert (got["id"], got["text"]) == (sent["id"], "across workers")
        for ws, _ in clients:
            ws.close()
