"""Every refusal of docs/protocol.md: HTTP session errors, handshake refusals, chat errors, close codes.

Bad chat input gets an ``error`` message (with the request's ``ref``) and the
connection stays open, which each test proves with a ``rooms`` request and a
``say`` afterwards. The chat runs in the test's process
(tests/server/conftest.py): none of this needs gunicorn.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
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
from tests.support.http import get_json, http_opener, post_session, session
from tests.support.inprocess import InProcessChat
from tests.support.names import fresh_nick, fresh_room
from tests.support.raw import handshake_request, raw_status
from tests.support.timeouts import scaled

pytestmark = pytest.mark.timeout(scaled(60))

Client = Callable[..., tuple[ClientConnection, Message]]
ALLOWED = "http://allowed.example"
ALSO_ALLOWED = "https://also-allowed.example"
EVIL = "http://evil.example"
TOKEN_TTL = 2


@pytest.fixture(scope="module")
def configured_chat(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessChat]:
    """A second chat, with its own secret, an Origin allow-list and short-lived tokens."""
    server = InProcessChat.launch(
        tmp_path_factory.mktemp("configured"),
        CHAT_ALLOWED_ORIGINS=f"{ALLOWED},{ALSO_ALLOWED}",
        CHAT_TOKEN_TTL=TOKEN_TTL,
    )
    yield server
    server.stop()


@pytest.fixture
def member(client: Client) -> tuple[ClientConnection, str]:
    """A connected client that has joined a fresh room: ``(ws, room)``."""
    ws, _ = client()
    room = fresh_room()
    assert join(ws, room)["type"] == "joined"
    return ws, room


def recv_error(ws: ClientConnection) -> Message:
    return recv_until(ws, lambda m: m.get("type") == "error")


def assert_still_open(ws: ClientConnection, room: str) -> None:
    """The connection works after an error: the room list comes, and a message goes round."""
    assert rooms(ws)["type"] == "rooms"
    assert say(ws, room, "still here")["text"] == "still here"


# -- §5: error messages ---------------------------------------------------------------------------------------------

# (id, request built from (room joined, room not joined), expected code, ref expected back)
Build = Callable[[str, str], Any]
ERRORS: list[tuple[str, Build, str, str | int | None]] = [
    ("text-not-json", lambda r, o: "not json", "invalid_json", None),
    ("truncated-json", lambda r, o: '{"type": "rooms"', "invalid_json", None),
    ("empty-text-frame", lambda r, o: "", "invalid_json", None),
    ("json-array", lambda r, o: "[1, 2]", "invalid_json", None),
    ("json-string", lambda r, o: '"rooms"', "invalid_json", None),
    ("type-missing", lambda r, o: {"room": r, "ref": "t1"}, "unknown_type", "t1"),
    ("type-unknown", lambda r, o: {"type": "dance", "ref": "t2"}, "unknown_type", "t2"),
    ("type-not-a-string", lambda r, o: {"type": 5, "ref": "t3"}, "unknown_type", "t3"),
    ("join-without-room", lambda r, o: {"type": "join", "ref": "f1"}, "missing_field", "f1"),
    ("say-without-room", lambda r, o: {"type": "say", "text": "hi", "ref": "f2"}, "missing_field", "f2"),
    ("say-without-text", lambda r, o: {"type": "say", "room": r, "ref": "f3"}, "missing_field", "f3"),
    ("leave-without-room", lambda r, o: {"type": "leave", "ref": "f4"}, "missing_field", "f4"),
    ("since-negative", lambda r, o: {"type": "join", "room": o, "since": -1, "ref": "i1"}, "invalid_field", "i1"),
    ("since-a-string", lambda r, o: {"type": "join", "room": o, "since": "3", "ref": "i2"}, "invalid_field", "i2"),
    ("since-a-float", lambda r, o: {"type": "join", "room": o, "since": 1.5, "ref": "i3"}, "invalid_field", "i3"),
    ("since-a-boolean", lambda r, o: {"type": "join", "room": o, "since": True, "ref": "i4"}, "invalid_field", "i4"),
    ("text-not-a-string", lambda r, o: {"type": "say", "room": r, "text": 5, "ref": "i5"}, "invalid_field", "i5"),
    ("room-not-a-string", lambda r, o: {"type": "join", "room": 5, "ref": "i6"}, "invalid_field", "i6"),
    ("ref-a-float", lambda r, o: {"type": "say", "room": r, "text": "hi", "ref": 5.5}, "invalid_field", None),
    ("ref-a-boolean", lambda r, o: {"type": "say", "room": r, "text": "hi", "ref": True}, "invalid_field", None),
    ("ref-an-object", lambda r, o: {"type": "say", "room": r, "text": "hi", "ref": {"id": 1}}, "invalid_field", None),
    ("ref-past-2-53", lambda r, o: {"type": "say", "room": r, "text": "hi", "ref": 2**53}, "invalid_field", None),
    ("ref-too-long", lambda r, o: {"type": "say", "room": r, "text": "hi", "ref": "x" * 65}, "invalid_field", None),
    ("room-with-space", lambda r, o: {"type": "join", "room": "bad room", "ref": "n1"}, "invalid_room", "n1"),
    ("room-empty", lambda r, o: {"type": "join", "room": "", "ref": "n2"}, "invalid_room", "n2"),
    ("room-too-long", lambda r, o: {"type": "join", "room": "r" * 65, "ref": "n3"}, "invalid_room", "n3"),
    ("room-with-slash", lambda r, o: {"type": "join", "room": "a/b", "ref": "n4"}, "invalid_room", "n4"),
    ("say-to-bad-room", lambda r, o: {"type": "say", "room": "a b", "text": "hi", "ref": "n5"}, "invalid_room", "n5"),
    ("text-empty", lambda r, o: {"type": "say", "room": r, "text": "", "ref": "e1"}, "empty_text", "e1"),
    ("text-4001", lambda r, o: {"type": "say", "room": r, "text": "x" * 4001, "ref": "l1"}, "text_too_long", "l1"),
    ("say-not-joined", lambda r, o: {"type": "say", "room": o, "text": "hi", "ref": "j1"}, "not_joined", "j1"),
    ("leave-not-joined", lambda r, o: {"type": "leave", "room": o, "ref": "j2"}, "not_joined", "j2"),
    ("join-twice", lambda r, o: {"type": "join", "room": r, "ref": "a1"}, "already_joined", "a1"),
    ("integer-ref-comes-back", lambda r, o: {"type": "leave", "room": o, "ref": 17}, "not_joined", 17),
    ("integer-ref-zero", lambda r, o: {"type": "say", "room": r, "text": "", "ref": 0}, "empty_text", 0),
    ("integer-ref-negative", lambda r, o: {"type": "bogus", "ref": -3}, "unknown_type", -3),
]


@pytest.mark.parametrize(("build", "code", "ref"), [pytest.param(*case[1:], id=case[0]) for case in ERRORS])
def test_bad_request_gets_an_error_and_the_connection_stays_open(
    member: tuple[ClientConnection, str], build: Build, code: str, ref: str | int | None
) -> None:
    ws, room = member
    request = build(room, fresh_room("other"))
    ws.send(request if isinstance(request, str) else json.dumps(request))

    error = recv_error(ws)

    assert error["code"] == code, error
    assert isinstance(error.get("message"), str) and error["message"]
    if ref is not None:
        assert error.get("ref") == ref and type(error["ref"]) is type(ref), error
    else:
        assert "ref" not in error, error
    assert_still_open(ws, room)


def test_binary_message_gets_unsupported(member: tuple[ClientConnection, str]) -> None:
    ws, room = member
    ws.send(b'{"type": "rooms"}')
    assert recv_error(ws)["code"] == "unsupported"
    assert_still_open(ws, room)


def test_errors_go_only_to_the_client_that_erred(client: Client) -> None:
    room = fresh_room()
    (ann, _), (ben, _) = client(), client()
    join(ann, room)
    join(ben, room)
    send_json(ann, {"type": "say", "room": room, "text": "", "ref": "e"})
    assert recv_error(ann)["code"] == "empty_text"
    say(ann, room, "after the error")
    skipped: list[Message] = []
    recv_until(ben, is_message(room), skipped=skipped)
    assert not [m for m in skipped if m.get("type") == "error"]


class TestLimitsAccepted:
    """The edges of the limits are inside them."""

    def test_text_of_4000_characters_is_accepted_even_when_multibyte(
        self, member: tuple[ClientConnection, str]
    ) -> None:
        ws, room = member
        assert say(ws, room, "x" * 4000)["text"] == "x" * 4000
        assert say(ws, room, "é" * 4000)["text"] == "é" * 4000

    def test_ref_of_64_characters_comes_back(self, member: tuple[ClientConnection, str]) -> None:
        ws, room = member
        assert say(ws, room, "hi", ref="r" * 64)["ref"] == "r" * 64

    def test_room_name_of_64_word_characters_dots_and_dashes_is_valid(
        self, member: tuple[ClientConnection, str]
    ) -> None:
        ws, _ = member
        room = ("a.b-c_" + fresh_room()).ljust(64, "z")
        assert join(ws, room)["type"] == "joined"


# -- close codes ----------------------------------------------------------------------------------------------------


def test_message_over_max_size_closes_with_1009_and_others_keep_chatting(chat: InProcessChat, client: Client) -> None:
    room = fresh_room()
    (ben, _), (cid, _) = client(), client()
    nick = fresh_nick("big")
    big, _ = connect(chat, nick, compression=None)
    with big:
        for ws in (big, ben, cid):
            join(ws, room)
        oversized = '{"type": "say", "room": "%s", "text": "%s"}' % (room, "x" * (64 * 1024))  # noqa: UP031
        with pytest.raises(ConnectionClosed) as closed:
            big.send(oversized)
            deadline = time.monotonic() + scaled(10)
            while time.monotonic() < deadline:
                big.recv(timeout=scaled(10))
        assert closed.value.rcvd is not None, f"no close frame: {closed.value!r}"
        assert closed.value.rcvd.code == 1009

    assert recv_until(ben, is_presence(room, nick, "leave"))["count"] == 2
    ack = say(ben, room, "still chatting")
    assert recv_until(cid, is_message(room))["id"] == ack["id"]


# -- §1: session errors ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("body", [b"not json", b"", b"[1, 2]", b'"alice"', b"{"], ids=repr)
def test_session_body_not_a_json_object_is_400_invalid_json(chat: InProcessChat, body: bytes) -> None:
    status, reply = post_session(chat, body)
    assert status == 400
    assert reply["error"] == "invalid_json"
    assert isinstance(reply["message"], str)


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"nick": ""},
        {"nick": "a" * 33},
        {"nick": "a\x00b"},
        {"nick": "a\nb"},
        {"nick": "a\tb"},
        {"nick": "a\x1bb"},
        {"nick": "a\x7fb"},
        {"nick": " alice"},
        {"nick": "alice "},
        {"nick": 5},
        {"nick": None},
        {"nick": ["alice"]},
    ],
    ids=repr,
)
def test_session_with_a_bad_nick_is_400_invalid_nick(chat: InProcessChat, body: dict[str, Any]) -> None:
    status, reply = post_session(chat, body)
    assert status == 400
    assert reply["error"] == "invalid_nick"
    assert isinstance(reply["message"], str)


@pytest.mark.parametrize("nick", ["a" * 32, "x", "Zoë Ünal", "bob.smith-2_ok!"])
def test_session_accepts_1_to_32_printable_characters(chat: InProcessChat, nick: str) -> None:
    status, reply = post_session(chat, {"nick": nick})
    assert status == 200, reply


class TestNickTaken:
    """§1: 409 while a connected client of another session holds the nick."""

    def test_nick_of_a_connected_client_is_taken_until_it_disconnects(self, chat: InProcessChat) -> None:
        nick = fresh_nick("taken")
        browser = http_opener(cookies=True)
        url = session(chat, nick, browser)["ws_url"]
        with open_ws(url) as ws:
            assert recv_json(ws)["nick"] == nick
            status, reply = post_session(chat, {"nick": nick})
            assert status == 409, reply
            assert reply["error"] == "nick_taken"
            assert isinstance(reply["message"], str)

            status, reply = post_session(chat, {"nick": nick}, browser)
            assert status == 200, f"the holder's own session may post its nick again: {reply}"

        deadline = time.monotonic() + scaled(5)
        while True:
            status, reply = post_session(chat, {"nick": nick})
            if status == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert status == 200, f"the nick is free again after the disconnect: {reply}"

    def test_a_session_without_a_connection_does_not_hold_its_nick(self, chat: InProcessChat) -> None:
        nick = fresh_nick("idle")
        session(chat, nick)
        assert post_session(chat, {"nick": nick})[0] == 200


# -- §6: HTTP history errors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/api/rooms/bad%20room/messages",
        "/api/rooms/" + "r" * 65 + "/messages",
        "/api/rooms/lobby/messages?since=-1",
        "/api/rooms/lobby/messages?since=abc",
        "/api/rooms/lobby/messages?since=1.5",
        "/api/rooms/lobby/messages?limit=abc",
        "/api/rooms/lobby/messages?limit=-1",
    ],
)
def test_history_with_a_bad_room_since_or_limit_is_400(chat: InProcessChat, path: str) -> None:
    status, reply = get_json(chat, path)
    assert status == 400, reply
    assert isinstance(reply, dict) and isinstance(reply.get("error"), str), reply


# -- §2: handshake refusals -----------------------------------------------------------------------------------------


def refused_status(url: str, **options: Any) -> int:
    """The HTTP status a refused ``websockets`` handshake got."""
    with pytest.raises(InvalidStatus) as refused:
        open_ws(url, **options).close()
    return refused.value.response.status_code


def forged(token: str) -> str:
    """``token`` with one character in its middle changed (every bit there counts)."""
    i = len(token) // 2
    while not token[i].isalnum():
        i += 1
    return token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1 :]


class TestHandshakeRefusals:
    def test_wrong_path_is_404(self, chat: InProcessChat) -> None:
        token = session(chat, fresh_nick())["token"]
        assert raw_status(chat.ws_port, handshake_request(f"/chat?token={token}")) == 404
        assert refused_status(f"ws://127.0.0.1:{chat.ws_port}/elsewhere?token={token}") == 404

    def test_no_token_is_401(self, chat: InProcessChat) -> None:
        assert raw_status(chat.ws_port, handshake_request("/ws")) == 401
        assert refused_status(chat.ws_base) == 401

    @pytest.mark.parametrize("token", ["", "garbage", "a.b.c"])
    def test_bad_token_is_401(self, chat: InProcessChat, token: str) -> None:
        assert refused_status(f"{chat.ws_base}?token={token}") == 401

    def test_forged_token_is_401(self, chat: InProcessChat) -> None:
        token = session(chat, fresh_nick())["token"]
        assert raw_status(chat.ws_port, handshake_request(f"/ws?token={forged(token)}")) == 401
        assert refused_status(f"{chat.ws_base}?token={forged(token)}") == 401

    def test_token_signed_by_another_server_is_401(self, chat: InProcessChat, configured_chat: InProcessChat) -> None:
        token = session(configured_chat, fresh_nick())["token"]
        assert refused_status(f"{chat.ws_base}?token={token}") == 401

    def test_expired_token_is_401(self, configured_chat: InProcessChat) -> None:
        url = session(configured_chat, fresh_nick())["ws_url"]
        time.sleep(TOKEN_TTL + 2)
        assert refused_status(url) == 401

    def test_the_web_apps_own_origin_is_allowed_by_default(self, chat: InProcessChat) -> None:
        with open_ws(session(chat, fresh_nick())["ws_url"], origin=chat.http) as ws:
            assert recv_json(ws)["type"] == "hello"

    def test_another_origin_is_403_by_default(self, chat: InProcessChat) -> None:
        assert refused_status(session(chat, fresh_nick())["ws_url"], origin=EVIL) == 403

    @pytest.mark.parametrize("origin", [ALLOWED, ALSO_ALLOWED])
    def test_listed_origin_is_allowed(self, configured_chat: InProcessChat, origin: str) -> None:
        with open_ws(session(configured_chat, fresh_nick())["ws_url"], origin=origin) as ws:
            assert recv_json(ws)["type"] == "hello"

    @pytest.mark.parametrize("origin", [EVIL, "null", "http://allowed.example.evil"])
    def test_unlisted_origin_is_403(self, configured_chat: InProcessChat, origin: str) -> None:
        assert refused_status(session(configured_chat, fresh_nick())["ws_url"], origin=origin) == 403

    def test_the_web_apps_own_origin_is_403_when_not_listed(self, configured_chat: InProcessChat) -> None:
        url = session(configured_chat, fresh_nick())["ws_url"]
        assert refused_status(url, origin=configured_chat.http) == 403

    def test_no_origin_is_not_checked(self, configured_chat: InProcessChat) -> None:
        with open_ws(session(configured_chat, fresh_nick())["ws_url"]) as ws:
            assert recv_json(ws)["type"] == "hello"

    def test_raw_handshake_with_a_valid_token_is_101(self, chat: InProcessChat) -> None:
        token = session(chat, fresh_nick())["token"]
        assert raw_status(chat.ws_port, handshake_request(f"/ws?token={token}")) == 101

    def test_post_is_405(self, chat: InProcessChat) -> None:
        token = session(chat, fresh_nick())["token"]
        request = handshake_request(f"/ws?token={token}").replace(b"GET ", b"POST ", 1)
        assert raw_status(chat.ws_port, request) == 405

    def test_unsupported_websocket_version_is_426(self, chat: InProcessChat) -> None:
        token = session(chat, fresh_nick())["token"]
        request = handshake_request(f"/ws?token={token}").replace(b"Version: 13", b"Version: 8")
        assert raw_status(chat.ws_port, request) == 426

    @pytest.mark.parametrize(
        "mangle",
        [
            pytest.param(lambda r: r.replace(b"Upgrade: websocket\r\n", b""), id="no-upgrade"),
            pytest.param(lambda r: r.replace(b"Sec-WebSocket-Key: ", b"X-Key: "), id="no-key"),
            pytest.param(lambda r: r.replace(b"HTTP/1.1", b"HTTP/1.0"), id="http-1.0"),
            pytest.param(lambda r: r.replace(b"\r\n\r\n", b"\r\nX-Big: " + b"x" * 70000 + b"\r\n\r\n"), id="huge"),
            pytest.param(lambda r: b"NOT HTTP AT ALL\r\n\r\n", id="garbage"),
        ],
    )
    def test_invalid_handshake_is_refused_with_a_4xx_or_505(
        self, chat: InProcessChat, mangle: Callable[[bytes], bytes]
    ) -> None:
        token = session(chat, fresh_nick())["token"]
        assert raw_status(chat.ws_port, mangle(handshake_request(f"/ws?token={token}"))) in {400, 405, 426, 431, 505}


# -- §5: unavailable ------------------------------------------------------------------------------------------------


def test_say_that_cannot_be_stored_gets_unavailable_and_nothing_is_broadcast(
    start_chat: Callable[..., InProcessChat], tmp_path: Path
) -> None:
    chat = start_chat(tmp_path)
    room = fresh_room()
    ann, _ = connect(chat, fresh_nick("ann"))
    ben, _ = connect(chat, fresh_nick("ben"))
    with ann, ben:
        join(ann, room)
        join(ben, room)
        first = say(ann, room, "stored")
        assert recv_until(ben, is_message(room))["id"] == first["id"]
        db = Path(chat.db_path)
        if not db.exists() or not db.read_bytes().startswith(b"SQLite format 3\x00"):
            pytest.skip("the store is not an SQLite file: no outside way to make it fail")

        blocker = sqlite3.connect(db, timeout=scaled(10), isolation_level=None)
        try:
            blocker.execute("BEGIN EXCLUSIVE")  # every write of the server now fails (busy)
            send_json(ann, {"type": "say", "room": room, "text": "lost", "ref": "u1"})
            error = recv_until(ann, lambda m: m.get("ref") == "u1", scaled(30))
        finally:
            if blocker.in_transaction:
                blocker.rollback()
            blocker.close()
        assert error["type"] == "error", error
        assert error["code"] == "unavailable"

        again = say(ann, room, "stored again", timeout=scaled(15))
        assert again["id"] == first["id"] + 1
        skipped: list[Message] = []
        assert recv_until(ben, is_message(room), skipped=skipped)["id"] == again["id"], "nothing was broadcast"
