"""Per-client limits of the chat in the test's process: rooms joined, connections from one address.

The limits that are about the worker process (its memory over a flood or
thousands of refusals, its file descriptors) stay in
tests/chat/test_chat_limits.py, against gunicorn.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from tests.support.clients import connect, join, recv_until
from tests.support.inprocess import InProcessChat
from tests.support.names import fresh_nick, fresh_room
from tests.support.raw import open_raw_websocket, raw_handshake, ws_path


def test_a_client_may_be_in_a_limited_number_of_rooms(tmp_path: Path, start_chat: Callable[..., InProcessChat]) -> None:
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


def test_one_address_may_hold_a_limited_number_of_connections(
    tmp_path: Path, start_chat: Callable[..., InProcessChat]
) -> None:
    chat = start_chat(tmp_path, CHAT_MAX_CONNECTIONS_PER_ADDRESS=5)
    path = ws_path(chat, fresh_nick("tabs"))
    held = []
    try:
        for _ in range(5):
            held.append(open_raw_websocket(chat, path))
        status, body = raw_handshake(chat.ws_port, path)
        assert status == 429
        assert b"too many connections from your address" in body
    finally:
        for sock in held:
            sock.close()
