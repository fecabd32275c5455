"""Per-client limits against the real server: message rate (flood) and rooms joined."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed

from ..conftest import scaled
from .conftest import ChatServer, connect, fresh_nick, fresh_room, is_message, join, recv_json, recv_until


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


def test_a_client_may_be_in_a_limited_number_of_rooms(tmp_path: Path, start_chat: Callable[..., ChatServer]) -> None:
    chat = start_chat(tmp_path, CHAT_MAX_ROOMS=3)
    rooms = [fresh_room() for _ in range(4)]
    ws, _ = connect(chat, fresh_nick())
    with ws:
        for room in rooms[:3]:
            assert join(ws, room)["type"] == "joined"
        refused = join(ws, rooms[3])
        assert (refused["type"], refused["code"]) == ("error", "too_many_rooms")
        ws.send(json.dumps({"type": "leave", "room": rooms[0]}))
        recv_until(ws, lambda m: m.get("type") == "left")
        assert join(ws, rooms[3])["type"] == "joined"
