"""The HTTP API and the identities it hands to the WebSocket handshake."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from flask import Flask

from app import create_app
from app.chat.service import ChatService
from app.config import Settings
from app.web.sessions import websocket_authenticator
from app.ws import Request
from tests.support.timeouts import scaled


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    app = create_app(Settings.from_env({}, db=str(tmp_path / "chat.db"), secret_key="test-secret"))
    chat: ChatService = app.extensions["chat"]
    chat.start()
    yield app
    chat.close()


def handshake(target: str, *headers: tuple[str, str]) -> Request:
    return Request("GET", target, (1, 1), (("Host", "127.0.0.1:8001"), *headers))


def test_a_session_gets_a_token_that_opens_the_websocket(app: Flask) -> None:
    response = app.test_client().post("/api/session", json={"nick": "alice"})
    assert response.status_code == 200
    body = response.get_json()
    assert body["nick"] == "alice"
    url = urlsplit(body["ws_url"])
    assert (url.scheme, url.netloc, url.path) == ("ws", "127.0.0.1:8001", "/ws")
    assert parse_qs(url.query)["token"] == [body["token"]]
    identity = websocket_authenticator(app)(handshake(f"/ws?{url.query}"))
    assert identity is not None and identity.nick == "alice"


def test_the_session_cookie_alone_opens_the_websocket(app: Flask) -> None:
    client = app.test_client()
    client.post("/api/session", json={"nick": "bob"})
    cookie = client.get_cookie("session")
    assert cookie is not None
    identity = websocket_authenticator(app)(handshake("/ws", ("Cookie", f"other=1; session={cookie.value}")))
    assert identity is not None and identity.nick == "bob"


@pytest.mark.parametrize("target", ["/ws", "/ws?token=forged", "/ws?token="])
def test_no_or_forged_credentials_identify_nobody(app: Flask, target: str) -> None:
    assert websocket_authenticator(app)(handshake(target, ("Cookie", "session=forged"))) is None


def test_a_token_signed_with_another_secret_is_refused(app: Flask, tmp_path: Path) -> None:
    other = create_app(Settings.from_env({}, db=str(tmp_path / "other.db"), secret_key="another-secret"))
    other.extensions["chat"].start()
    try:
        token = other.test_client().post("/api/session", json={"nick": "mallory"}).get_json()["token"]
    finally:
        other.extensions["chat"].close()
    assert websocket_authenticator(app)(handshake(f"/ws?token={token}")) is None


@pytest.mark.parametrize("nick", ["", " alice", "x" * 33, "tab\there", 5, None])
def test_invalid_nicks_are_refused_with_400(app: Flask, nick: object) -> None:
    response = app.test_client().post("/api/session", json={"nick": nick})
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_nick"


def test_a_body_that_is_not_a_json_object_is_refused_with_400(app: Flask) -> None:
    response = app.test_client().post("/api/session", data="nick=alice", content_type="text/plain")
    assert response.status_code == 400
    assert response.get_json() == {"error": "invalid_json", "message": 'send a JSON object like {"nick": "alice"}'}


@pytest.mark.parametrize(
    "query", ["?since=-1", "?since=x", "?limit=0", "?limit=1001", "?limit=ten"], ids=lambda q: q.lstrip("?")
)
def test_bad_history_queries_are_refused_with_400(app: Flask, query: str) -> None:
    response = app.test_client().get(f"/api/rooms/lobby/messages{query}")
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_query"


def test_a_bad_room_name_in_the_history_url_is_refused_with_400(app: Flask) -> None:
    response = app.test_client().get("/api/rooms/bad%20room/messages")
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_room"


def test_history_of_an_unknown_room_is_empty(app: Flask) -> None:
    response = app.test_client().get("/api/rooms/nowhere/messages")
    assert response.status_code == 200
    body = response.get_json()
    assert (body["room"], body["messages"]) == ("nowhere", [])
    assert isinstance(body["epoch"], str) and body["epoch"], "the epoch its ids will be numbered under"


def test_search_finds_stored_messages_for_a_session_and_refuses_bad_queries(app: Flask) -> None:
    chat: ChatService = app.extensions["chat"]
    for room, text in [("ops", "the deploy finished"), ("lobby", "deploy tomorrow?"), ("lobby", "lunch")]:
        chat.post(room, text, "ci")
    client = app.test_client()
    assert client.get("/api/search?q=deploy").status_code == 401, "pick a nick first"
    client.post("/api/session", json={"nick": "searcher"})
    deadline = time.monotonic() + scaled(10)
    while True:  # indexed within a second or so
        response = client.get("/api/search?q=deploy")
        assert response.status_code == 200, response.get_json()
        if len(response.get_json()["results"]) == 2:
            break
        assert time.monotonic() < deadline, response.get_json()
        time.sleep(0.2)
    results = response.get_json()["results"]
    assert {(m["room"], m["text"], m["from"]) for m in results} == {
        ("ops", "the deploy finished", "ci"),
        ("lobby", "deploy tomorrow?", "ci"),
    }
    only = client.get("/api/search?q=deploy&room=ops").get_json()["results"]
    assert [m["text"] for m in only] == ["the deploy finished"]
    for query, code in [("", "invalid_query"), ("q=%3F%3F", "invalid_query"), ("q=x&room=bad%20room", "invalid_room")]:
        response = client.get(f"/api/search?{query}" if "=" in query else "/api/search")
        assert (response.status_code, response.get_json()["error"]) == (400, code)
