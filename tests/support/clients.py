"""Outside WebSocket clients (the ``websockets`` package, sync): connect, join, say, wait for a message.

Each wait is bounded (scaled with ``CHAT_TEST_TIMEOUT_SCALE``); a client
buffers whatever arrives, so a test that reads late is never a slow consumer.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

from tests.support.http import Endpoints, session
from tests.support.names import fresh_nick
from tests.support.timeouts import scaled

Message = dict[str, Any]


def open_ws(url: str, **options: Any) -> ClientConnection:
    """A ``websockets`` client with bounded waits that buffers whatever arrives (never a slow reader)."""
    settings: dict[str, Any] = {
        "proxy": None,
        "open_timeout": scaled(10),
        "close_timeout": scaled(5),
        "ping_interval": None,
        "max_queue": None,
        "legacy": True,  # returns the connection; the callers close it (or use it in a with block)
    }
    settings.update(options)
    return ws_connect(url, **settings)


def recv_json(ws: ClientConnection, timeout: float | None = None) -> Message:
    """The next message as a JSON object, waiting at most ``timeout`` seconds (default 5, scaled)."""
    raw = ws.recv(timeout=scaled(5) if timeout is None else timeout)
    assert isinstance(raw, str), f"expected a text message, got {raw!r}"
    message = json.loads(raw)
    assert isinstance(message, dict), message
    return message


def recv_until(
    ws: ClientConnection,
    predicate: Callable[[Message], bool],
    timeout: float | None = None,
    skipped: list[Message] | None = None,
) -> Message:
    """The first message matching ``predicate`` within ``timeout`` seconds; the others go to ``skipped``."""
    deadline = time.monotonic() + (scaled(5) if timeout is None else timeout)
    seen: list[Message] = [] if skipped is None else skipped
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"no matching message in time; got {seen[-20:]}")
        try:
            message = recv_json(ws, remaining)
        except TimeoutError:
            raise AssertionError(f"no matching message in time; got {seen[-20:]}") from None
        if predicate(message):
            return message
        seen.append(message)


def send_json(ws: ClientConnection, payload: object) -> None:
    ws.send(json.dumps(payload))


def connect(chat: Endpoints, nick: str, **options: Any) -> tuple[ClientConnection, Message]:
    """A new session for ``nick`` and its WebSocket, past the ``hello``: ``(ws, hello)``."""
    url = session(chat, nick)["ws_url"]
    ws = open_ws(url, **options)
    try:
        hello = recv_json(ws)
    except BaseException:
        ws.close()
        raise
    assert hello.get("type") == "hello", hello
    return ws, hello


def join(
    ws: ClientConnection, room: str, since: int | None = None, timeout: float | None = None, epoch: str | None = None
) -> Message:
    """Join ``room`` (optionally ``since`` an id, of ``epoch``); the ``joined`` reply."""
    request: dict[str, Any] = {"type": "join", "room": room}
    if since is not None:
        request["since"] = since
    if epoch is not None:
        request["epoch"] = epoch
    send_json(ws, request)
    return recv_until(ws, lambda m: m.get("type") in {"joined", "error"} and m.get("room", room) == room, timeout)


def say(
    ws: ClientConnection, room: str, text: str, ref: str | int | None = None, timeout: float | None = None
) -> Message:
    """Say ``text`` in ``room`` and wait for it to come back (the ack): that ``message``."""
    ref = secrets.token_hex(8) if ref is None else ref
    send_json(ws, {"type": "say", "room": room, "text": text, "ref": ref})
    reply = recv_until(
        ws, lambda m: (m.get("type") == "message" or m.get("type") == "error") and m.get("ref") == ref, timeout
    )
    assert reply["type"] == "message", reply
    return reply


def rooms(ws: ClientConnection, timeout: float | None = None) -> Message:
    """Ask for the room list; the ``rooms`` reply (which also proves the connection is open)."""
    send_json(ws, {"type": "rooms"})
    return recv_until(ws, lambda m: m.get("type") == "rooms", timeout)


def is_message(room: str) -> Callable[[Message], bool]:
    return lambda m: m.get("type") == "message" and m.get("room") == room


def is_presence(room: str, nick: str, event: str) -> Callable[[Message], bool]:
    return lambda m: (
        m.get("type") == "presence" and m.get("room") == room and m.get("nick") == nick and m.get("event") == event
    )


@contextmanager
def clients_of(chat: Endpoints) -> Iterator[Callable[..., tuple[ClientConnection, Message]]]:
    """``make(nick=None, **options)``: connected clients of ``chat`` (fresh nicks by default), closed on exit."""
    opened: list[ClientConnection] = []

    def make(nick: str | None = None, **options: Any) -> tuple[ClientConnection, Message]:
        ws, hello = connect(chat, nick or fresh_nick(), **options)
        opened.append(ws)
        return ws, hello

    try:
        yield make
    finally:
        for ws in opened:
            ws.close()


def connect_to(node: Endpoints, nick: str) -> tuple[Any, dict[str, Any]]:
    """A new session for ``nick`` on ``node`` and its WebSocket, past the ``hello`` (no options)."""
    ws = open_ws(session(node, nick)["ws_url"])
    hello = recv_json(ws)
    assert hello["type"] == "hello", hello
    return ws, hello


def read_until_closed(ws: ClientConnection, timeout: float) -> ConnectionClosed:
    """Read (and drop) messages until the server closes; the ``ConnectionClosed`` it ended with."""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ws.recv(timeout=max(deadline - time.monotonic(), 0.001))
    except ConnectionClosed as closed:
        return closed
    except TimeoutError:
        pass
    raise AssertionError(f"the connection was not closed within {timeout} s")
