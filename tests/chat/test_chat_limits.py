"""Limits against the real gunicorn worker: a flood, thousands of refused connections, no file descriptors left.

Each test looks at the worker process itself (its memory, its descriptors,
its log); the limits that need only the WebSocket server (rooms per client,
connections per address, idle clients) are in tests/server.
"""

from __future__ import annotations

import json
import resource
import socket
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed

from tests.support.clients import connect, is_message, join, recv_json, recv_until, say
from tests.support.gunicorn import ChatServer, worker_rss
from tests.support.names import fresh_nick, fresh_room
from tests.support.raw import open_raw_websocket, raw_handshake, ws_path
from tests.support.timeouts import scaled


def test_a_flood_is_refused_then_closed_while_the_room_chats_on(
    tmp_path: Path, start_chat: Callable[..., ChatServer]
) -> None:
    chat = start_chat(tmp_path, CHAT_MESSAGE_RATE=5, CHAT_MESSAGE_BURST=10)
    room = fresh_room()
    flooder, _ = connect(chat, fresh_nick("flood"))
    calm, _ = connect(chat, fresh_nick("calm"))
    with flooder, calm:
        join(flooder, room)
        join(calm, room)
        before = worker_rss(chat)
        for i in range(200):
            try:
                flooder.send(json.dumps({"type": "say", "room": room, "text": f"spam {i}"}))
            except ConnectionClosed:
                break
        errors = []
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                reply = recv_json(flooder, scaled(10))
                if reply["type"] == "error":
                    errors.append(reply)
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1008, "message rate limit exceeded")
        assert {e["code"] for e in errors} == {"rate_limited"}
        assert len(errors) >= 10
        # The calm member got the accepted ones (the burst, little more), in order, and still chats.
        skipped: list[dict] = []
        calm.send(json.dumps({"type": "say", "room": room, "text": "still here", "ref": "calm-1"}))
        mine = recv_until(calm, lambda m: m.get("ref") == "calm-1", skipped=skipped)
        spam = [m["text"] for m in skipped if is_message(room)(m)]
        assert 9 <= len(spam) < 20, spam  # the burst of 10, less the join
        assert spam == [f"spam {i}" for i in range(len(spam))]
        assert (mine["type"], mine["text"]) == ("message", "still here")
        growth = worker_rss(chat) - before
        assert growth < 4 * 1024 * 1024, f"the worker grew by {growth} bytes over the flood"


# -- connections -------------------------------------------------------------------------------------------------------


def raise_open_files(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= wanted, "the test needs more open files (ulimit -n)"


def test_ten_thousand_connections_against_a_limit_of_a_thousand_are_refused_cleanly(
    tmp_path: Path, start_chat: Callable[..., ChatServer]
) -> None:
    raise_open_files(3000)
    chat = start_chat(tmp_path, CHAT_MAX_CONNECTIONS=1000, CHAT_MAX_CONNECTIONS_PER_ADDRESS=0)
    held: list[socket.socket] = []
    room = fresh_room()
    steady, _ = connect(chat, fresh_nick("steady"))
    try:
        join(steady, room)
        path = ws_path(chat, fresh_nick("many"))
        while len(held) < 999:  # fill up to the limit with real, open WebSockets
            held.append(open_raw_websocket(chat, path))
        refused = Counter()
        before = worker_rss(chat)
        for _ in range(10_000 - 1000):
            status, body = raw_handshake(chat.ws_port, path)
            refused[status] += 1
        assert refused == {503: 9000}, refused
        assert b"too many connections" in body
        growth = worker_rss(chat) - before
        assert growth < 4 * 1024 * 1024, f"the worker grew by {growth} bytes over 9,000 refusals"
        assert say(steady, room, "still here")["text"] == "still here"
        for sock in held[:10]:
            sock.close()
        deadline = time.monotonic() + scaled(10)
        while raw_handshake(chat.ws_port, path)[0] != 101:  # room again once some left
            assert time.monotonic() < deadline, "no room after clients left"
            time.sleep(0.05)
    finally:
        steady.close()
        for sock in held:
            sock.close()


def test_the_accept_loop_survives_running_out_of_file_descriptors(
    tmp_path: Path, start_chat: Callable[..., ChatServer]
) -> None:
    # 300 descriptors: the WebSocket server takes about 100 clients (app/resources.py), and the
    # refused ones hold theirs until they close: the flood below still runs the worker out.
    chat = start_chat(tmp_path, nofile=300)
    room = fresh_room()
    steady, _ = connect(chat, fresh_nick("steady"))
    flood: list[socket.socket] = []
    try:
        join(steady, room)
        before = worker_rss(chat)
        for _ in range(500):  # far more than the worker has descriptors left; past the backlog, they wait
            sock = socket.socket()
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", chat.ws_port))
            flood.append(sock)
        # Past the listen backlog the kernel drops SYNs, which the clients send
        # again 1, 3, 7 s later: wait until the worker has run out, however long that takes here.
        deadline = time.monotonic() + scaled(15)
        while "out of file descriptors" not in chat.logs():
            assert time.monotonic() < deadline, "the worker never ran out of descriptors"
            time.sleep(0.1)
        assert say(steady, room, "still served")["text"] == "still served"
        for sock in flood:
            sock.close()
        flood.clear()
        deadline = time.monotonic() + scaled(15)
        while True:  # accepting again once descriptors are free
            try:
                ws, _ = connect(chat, fresh_nick("later"))
                ws.close()
                break
            except Exception:
                assert time.monotonic() < deadline, "the server never accepted again"
                time.sleep(0.2)
        assert say(steady, room, "and after")["text"] == "and after"
        growth = worker_rss(chat) - before
        assert growth < 4 * 1024 * 1024, f"the worker grew by {growth} bytes"
    finally:
        steady.close()
        for sock in flood:
            sock.close()
    logs = chat.logs()
    assert logs.count("out of file descriptors") == 1, logs[-3000:]
    assert "Traceback" not in logs
