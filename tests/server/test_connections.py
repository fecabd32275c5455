"""A connection's life in the WebSocket server: a slow reader, keepalive, idle clients, unfinished handshakes.

Every test starts its own chat, in the test's process, with the settings it
needs (tests/server/conftest.py); what needs the gunicorn process (signals,
kill -9, workers) stays in tests/chat/test_chat_lifecycle.py.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import websocket
from websocket import ABNF

from tests.support.clients import (
    Message,
    connect,
    is_message,
    is_presence,
    join,
    read_until_closed,
    recv_until,
    rooms,
    say,
    send_json,
)
from tests.support.http import session
from tests.support.inprocess import InProcessChat
from tests.support.names import fresh_nick, fresh_room
from tests.support.raw import close_code, kernel_buffer_bound, open_raw_member, raw_frames_until
from tests.support.timeouts import scaled

pytestmark = pytest.mark.timeout(scaled(90))

StartChat = Callable[..., InProcessChat]
CLOSE, PING = 0x8, 0x9


def test_slow_consumer_is_closed_while_the_others_receive_every_message_promptly(
    start_chat: StartChat, tmp_path: Path
) -> None:
    """A client that stops reading is closed (1008) once the server holds CHAT_SEND_BUFFER bytes for it.

    What the kernel buffers for the socket (its send buffer grows to
    ``tcp_wmem`` on loopback) comes on top, so the sender goes on in batches
    until it has sent more than all those buffers hold (or the slow client
    left); meanwhile a normal reader must get every batch promptly.
    """
    send_buffer = 65536
    chat = start_chat(tmp_path, CHAT_SEND_BUFFER=send_buffer)
    room = fresh_room()
    slow, slow_nick = open_raw_member(chat, room, rcvbuf=4096)  # from now on it does not read
    sender, _ = connect(chat, fresh_nick("sender"))
    reader, _ = connect(chat, fresh_nick("reader"))
    text, batch = "y" * 2000, 300
    most = (kernel_buffer_bound() + send_buffer + 1024 * 1024) // len(text) + batch
    sent, slow_left = 0, False
    with sender, reader:
        join(sender, room)
        join(reader, room)
        while not slow_left and sent < most:
            started = time.monotonic()
            for i in range(sent, sent + batch):
                send_json(sender, {"type": "say", "room": room, "text": f"{i:05d}{text}"})
            skipped: list[Message] = []
            deadline = started + scaled(5)
            received = [
                recv_until(reader, is_message(room), max(deadline - time.monotonic(), 0.001), skipped)
                for _ in range(batch)
            ]
            elapsed = time.monotonic() - started
            assert [m["text"][:5] for m in received] == [f"{i:05d}" for i in range(sent, sent + batch)]
            assert [m["id"] for m in received] == list(range(received[0]["id"], received[0]["id"] + batch))
            assert elapsed < scaled(5), f"the reader waited {elapsed:.1f} s for a batch of {batch}"
            sent += batch
            slow_left = any(is_presence(room, slow_nick, "leave")(m) for m in skipped)
        # the others are told once the server gave up on it (after at most its close timeout, 5 s)
        for ws in (reader, sender):
            assert recv_until(ws, is_presence(room, slow_nick, "leave"), scaled(15))["count"] == 2
        assert say(sender, room, "after the slow one")["text"] == "after the slow one"

    # what the slow client finally reads ends with EOF, after at most a close frame with 1008
    try:
        frames, closed = raw_frames_until(slow, CLOSE, scaled(20))
        if closed:
            assert close_code(frames[-1][1]) == 1008, frames[-1]
            assert slow.recv_frame(scaled(10)) is None, "the server closes TCP after its close frame"
        assert sum(len(payload) for _, payload in frames) < sent * len(text), "the slow client did not get it all"
    finally:
        slow.close()


def test_keepalive_keeps_answering_clients_and_closes_silent_ones_with_1011(
    start_chat: StartChat, tmp_path: Path
) -> None:
    chat = start_chat(tmp_path, CHAT_PING_INTERVAL=1, CHAT_PING_TIMEOUT=1)
    silent, _ = open_raw_member(chat, fresh_room())  # reads every frame, never sends a pong

    def watch_silent() -> tuple[list[tuple[int, bytes]], bool, float]:
        started = time.monotonic()
        frames, closed = raw_frames_until(silent, CLOSE, scaled(8))
        return frames, closed, time.monotonic() - started

    # websocket-client answers every ping it reads (RFC 6455 §5.5.2)
    url = session(chat, fresh_nick("polite"))["ws_url"]
    polite = websocket.create_connection(url, timeout=scaled(5), suppress_origin=True)
    try:
        assert json.loads(polite.recv())["type"] == "hello"
        with ThreadPoolExecutor(1) as pool:
            watcher = pool.submit(watch_silent)
            pings, started = 0, time.monotonic()
            while time.monotonic() - started < 4:
                opcode, _ = polite.recv_data(control_frame=True)
                assert opcode != ABNF.OPCODE_CLOSE, "the answering client was closed"
                pings += opcode == ABNF.OPCODE_PING
            frames, closed, elapsed = watcher.result(timeout=scaled(10))

        assert pings >= 2, f"{pings} pings in 4 s with CHAT_PING_INTERVAL=1"
        polite.send(json.dumps({"type": "rooms"}))
        while True:
            opcode, data = polite.recv_data(control_frame=True)
            if opcode == ABNF.OPCODE_TEXT:
                assert json.loads(data)["type"] == "rooms"
                break
    finally:
        polite.close(timeout=scaled(3))
        polite.shutdown()

    try:
        assert any(opcode == PING for opcode, _ in frames), "the silent client was never pinged"
        assert closed, f"no close frame for the silent client: {frames}"
        assert close_code(frames[-1][1]) == 1011
        assert elapsed < scaled(5), f"closed after {elapsed:.1f} s"
    finally:
        silent.close()


def read_to_eof(sock: socket.socket, timeout: float) -> bytes:
    """Everything the server sends until it closes, within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    data = b""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"still open after {timeout} s; got {data!r}")
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(4096)
        except ConnectionResetError:
            return data
        except TimeoutError:
            continue
        if not chunk:
            return data
        data += chunk


@pytest.mark.parametrize(
    "partial",
    [b"GET /ws?token=x HTTP/1.1\r\nHost: 127.0.0.1\r\n", b""],
    ids=["half-a-request", "nothing"],
)
def test_unfinished_handshake_is_answered_408_or_closed_after_the_timeout(
    start_chat: StartChat, tmp_path: Path, partial: bytes
) -> None:
    chat = start_chat(tmp_path, CHAT_HANDSHAKE_TIMEOUT=1)
    with socket.create_connection(("127.0.0.1", chat.ws_port), timeout=scaled(5)) as sock:
        started = time.monotonic()
        sock.sendall(partial)
        answer = read_to_eof(sock, scaled(3))
        elapsed = time.monotonic() - started
    assert answer == b"" or answer.startswith(b"HTTP/1.1 408"), answer
    assert 0.5 < elapsed < scaled(3), f"closed after {elapsed:.2f} s with a 1 s handshake timeout"

    ws, hello = connect(chat, fresh_nick())  # the server itself is fine
    with ws:
        assert hello["type"] == "hello"
        assert rooms(ws)["type"] == "rooms"


def test_idle_chat_clients_keep_no_greenlet_and_a_say_wakes_only_the_sender(
    tmp_path: Path, start_chat: Callable[..., InProcessChat]
) -> None:
    """Between messages a chat client is parked on its socket (app/server/server.py): no greenlet per idle client."""
    chat = start_chat(tmp_path)
    assert chat.server is not None
    pool = chat.server.ws_server.pool
    room = fresh_room()
    members = [connect(chat, fresh_nick("m"))[0] for _ in range(10)]
    try:
        for ws in members:
            join(ws, room)
        deadline = time.monotonic() + scaled(5)
        while pool.parked < 10 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert (pool.parked, pool.running) == (10, 0)
        assert say(members[0], room, "wake up")["text"] == "wake up"
        for ws in members[1:]:
            assert recv_until(ws, is_message(room), scaled(5))["text"] == "wake up"
        while pool.parked < 10 and time.monotonic() < deadline + scaled(5):
            time.sleep(0.02)
        assert (pool.parked, pool.running) == (10, 0)
    finally:
        for ws in members:
            ws.close()


def test_a_client_that_sends_nothing_for_the_idle_timeout_is_closed_and_a_talker_is_not(
    tmp_path: Path, start_chat: Callable[..., InProcessChat]
) -> None:
    chat = start_chat(tmp_path, CHAT_IDLE_TIMEOUT=1, CHAT_PING_INTERVAL=0.3, CHAT_PING_TIMEOUT=5)
    room = fresh_room()
    idle, _ = connect(chat, fresh_nick("idle"))  # answers pings (websockets does), says nothing
    talker, _ = connect(chat, fresh_nick("talker"))
    with idle, talker:
        join(talker, room)
        started = time.monotonic()
        while time.monotonic() - started < 3:
            assert say(talker, room, "still talking")["type"] == "message"
            time.sleep(0.3)
        closed = read_until_closed(idle, scaled(10))
        assert closed.rcvd is not None
        assert (closed.rcvd.code, closed.rcvd.reason) == (1001, "idle for too long")
        assert say(talker, room, "and on")["text"] == "and on"


@pytest.mark.parametrize("mode", ["shared", "per-client", "off"])
def test_chat_deflate_chooses_how_messages_are_compressed(start_chat: StartChat, tmp_path: Path, mode: str) -> None:
    """CHAT_DEFLATE: ``shared`` forces server_no_context_takeover, ``per-client`` lets each client keep its context.

    ``off`` declines the offer (websockets' client makes one by default);
    every message arrives whole whichever it is, the second and third too
    (compressed against the first when the context is kept).
    """
    chat = start_chat(tmp_path, CHAT_DEFLATE=mode)
    room = fresh_room()
    sender, _ = connect(chat, fresh_nick("sender"))
    reader, _ = connect(chat, fresh_nick("reader"))
    with sender, reader:
        agreed = reader.response.headers.get("Sec-WebSocket-Extensions")
        if mode == "off":
            assert agreed is None
        else:
            assert agreed is not None and agreed.startswith("permessage-deflate"), agreed
            assert ("server_no_context_takeover" in agreed) == (mode == "shared"), agreed
        join(sender, room)
        join(reader, room)
        texts = [f"{i} " + "the quick brown fox jumps over the lazy dog " * 10 for i in range(3)]
        for text in texts:
            say(sender, room, text)
        received = [recv_until(reader, is_message(room), scaled(5))["text"] for _ in texts]
        assert received == texts
