"""Accounts over HTTP (docs/protocol.md §1): register, sign in, own a name, sign out everywhere.

A real app with its real SQLite file; the WebSocket handshake's decision is
the chat service's ``refusal`` on the identity the authenticator reads, as
the WebSocket server asks it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app import create_app
from app.chat.auth import Identity
from app.chat.service import ChatService
from app.config import Settings
from app.web.sessions import websocket_authenticator
from app.ws import Request

PASSWORD = "correct horse battery staple"


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "chat.db"


def make_app(db: Path, **overrides: object) -> Flask:
    app = create_app(Settings.from_env({}, db=str(db), secret_key="test-secret", **overrides))
    app.extensions["chat"].start()
    return app


@pytest.fixture
def app(db: Path) -> Iterator[Flask]:
    app = make_app(db)
    yield app
    app.extensions["chat"].close()


def chat(app: Flask) -> ChatService:
    return app.extensions["chat"]


def register(client: FlaskClient, name: str, password: str = PASSWORD) -> tuple[int, dict[str, object]]:
    response = client.post("/api/accounts", json={"name": name, "password": password})
    return response.status_code, response.get_json()


def login(client: FlaskClient, name: str, password: str = PASSWORD) -> tuple[int, dict[str, object], dict[str, str]]:
    response = client.post("/api/login", json={"name": name, "password": password})
    return response.status_code, response.get_json(), dict(response.headers)


def identity_of(app: Flask, ws_url: object) -> Identity | None:
    """The identity the WebSocket handshake reads from a ``ws_url``'s token."""
    assert isinstance(ws_url, str)
    query = urlsplit(ws_url).query
    request = Request("GET", f"/ws?{query}", (1, 1), (("Host", "127.0.0.1:8001"),))
    return websocket_authenticator(app)(request)


def test_registering_signs_in_and_the_token_opens_the_websocket_as_the_account(app: Flask) -> None:
    status, body = register(app.test_client(), "Alice")
    assert status == 201, body
    assert (body["nick"], body["account"]) == ("Alice", True)
    identity = identity_of(app, body["ws_url"])
    assert identity is not None and identity.account == "alice"
    assert chat(app).refusal(identity) is None


def test_the_password_is_stored_hashed_with_scrypt_never_as_given(app: Flask, db: Path) -> None:
    register(app.test_client(), "alice")
    with sqlite3.connect(db) as conn:
        ((name, stored),) = conn.execute("SELECT name, password_hash FROM accounts").fetchall()
    assert name == "alice"
    assert stored.startswith("scrypt:") and PASSWORD not in stored


@pytest.mark.parametrize(
    ("name", "password", "status", "code"),
    [
        ("alice", "short", 400, "invalid_password"),
        ("alice", "x" * 1025, 400, "invalid_password"),
        ("alice", 12345678, 400, "invalid_password"),
        (" alice", PASSWORD, 400, "invalid_nick"),
        ("x" * 33, PASSWORD, 400, "invalid_nick"),
        (None, PASSWORD, 400, "invalid_nick"),
    ],
)
def test_bad_registrations_are_refused_with_their_code(
    app: Flask, name: object, password: object, status: int, code: str
) -> None:
    response = app.test_client().post("/api/accounts", json={"name": name, "password": password})
    assert (response.status_code, response.get_json()["error"]) == (status, code)


def test_registrations_from_one_address_are_limited_to_10_an_hour_then_429(app: Flask) -> None:
    for i in range(10):
        assert register(app.test_client(), f"user{i}")[0] == 201
    response = app.test_client().post("/api/accounts", json={"name": "user10", "password": PASSWORD})
    assert (response.status_code, response.get_json()["error"]) == (429, "too_many_attempts")
    assert 1 <= int(response.headers["Retry-After"]) <= 3600
    assert login(app.test_client(), "user3")[0] == 200, "signing in is not what is limited"


def test_a_name_is_registered_once_whatever_its_case(app: Flask) -> None:
    assert register(app.test_client(), "alice")[0] == 201
    status, body = register(app.test_client(), "ALICE", "another password")
    assert (status, body["error"]) == (409, "name_taken")


def test_a_registered_name_is_its_owners_even_offline_guests_get_409(app: Flask) -> None:
    register(app.test_client(), "alice")
    for nick in ("alice", "Alice"):
        response = app.test_client().post("/api/session", json={"nick": nick})
        assert (response.status_code, response.get_json()["error"]) == (409, "nick_registered")
    # A guest token issued before the name was registered no longer opens the WebSocket.
    early = Identity("bob", "guest-session")
    assert chat(app).refusal(early) is None
    register(app.test_client(), "bob")
    refusal = chat(app).refusal(early)
    assert refusal is not None and (refusal.code, refusal.status) == ("nick_registered", 409)


def test_signing_in_gives_the_account_on_a_second_browser(app: Flask) -> None:
    register(app.test_client(), "alice")
    second = app.test_client()
    status, body, _ = login(second, "ALICE")  # names without case
    assert status == 200, body
    assert (body["nick"], body["account"]) == ("alice", True)
    assert second.get("/api/me").get_json() == {"nick": "alice", "account": True}
    # Its session (the cookie) gets tokens again without the password, as the page does on reconnecting.
    again = second.post("/api/session", json={"nick": "whatever"}).get_json()
    identity = identity_of(app, again["ws_url"])
    assert identity is not None and (identity.nick, identity.account) == ("alice", "alice")


def test_a_wrong_password_and_an_unknown_name_get_the_same_401(app: Flask) -> None:
    register(app.test_client(), "alice")
    wrong = login(app.test_client(), "alice", "wrong password")
    unknown = login(app.test_client(), "nobody", "wrong password")
    assert (
        (wrong[0], wrong[1])
        == (unknown[0], unknown[1])
        == (401, {"error": "bad_credentials", "message": "wrong name or password"})
    )


def test_sign_in_failures_are_limited_per_name_then_429_with_retry_after_even_with_the_right_password(
    app: Flask,
) -> None:
    register(app.test_client(), "alice")
    for _ in range(5):
        assert login(app.test_client(), "alice", "wrong password")[0] == 401
    status, body, headers = login(app.test_client(), "alice")  # the right one, too late
    assert (status, body["error"]) == (429, "too_many_attempts")
    assert 1 <= int(headers["Retry-After"]) <= 15 * 60
    assert login(app.test_client(), "bob-unregistered", "x" * 8)[0] == 401, "other names are not locked"


def test_signing_out_everywhere_revokes_every_token_and_cookie_of_the_account(app: Flask) -> None:
    first, second = app.test_client(), app.test_client()
    _, body = register(first, "alice")
    _, other, _ = login(second, "alice")
    identities = [identity_of(app, body["ws_url"]), identity_of(app, other["ws_url"])]
    assert all(i is not None and chat(app).refusal(i) is None for i in identities)

    response = second.post("/api/logout-everywhere")
    assert response.status_code == 200, response.get_json()

    for identity in identities:
        assert identity is not None
        refusal = chat(app).refusal(identity)
        assert refusal is not None and (refusal.code, refusal.status) == ("unauthorized", 401)
    assert first.get("/api/me").get_json()["account"] is False, "the other browser's cookie is void too"
    response = first.post("/api/session", json={"nick": "alice"})
    assert (response.status_code, response.get_json()["error"]) == (409, "nick_registered")
    assert login(first, "alice")[0] == 200, "signing in again works"


def test_logout_forgets_this_browser_only(app: Flask) -> None:
    first, second = app.test_client(), app.test_client()
    register(first, "alice")
    login(second, "alice")
    assert first.post("/api/logout").status_code == 200
    assert first.get("/api/me").get_json()["account"] is False
    assert second.get("/api/me").get_json() == {"nick": "alice", "account": True}


def test_signing_out_everywhere_needs_a_sign_in(app: Flask) -> None:
    response = app.test_client().post("/api/logout-everywhere")
    assert (response.status_code, response.get_json()["error"]) == (401, "unauthorized")


def test_accounts_outlive_the_process(db: Path) -> None:
    first = make_app(db)
    register(first.test_client(), "alice")
    chat(first).close()
    second = make_app(db)
    try:
        assert login(second.test_client(), "alice")[0] == 200
        assert register(second.test_client(), "alice")[0] == 409
    finally:
        chat(second).close()


def test_without_guests_only_accounts_may_chat(db: Path) -> None:
    app = make_app(db, guests=False)
    try:
        response = app.test_client().post("/api/session", json={"nick": "drifter"})
        assert (response.status_code, response.get_json()["error"]) == (403, "guests_disabled")
        assert chat(app).refusal(Identity("drifter", "s1")) is not None
        status, body = register(app.test_client(), "member")
        assert status == 201 and chat(app).refusal(identity_of(app, body["ws_url"]) or Identity("", "")) is None
    finally:
        chat(app).close()


def test_a_name_a_guest_is_chatting_under_cannot_be_registered_from_under_them(app: Flask) -> None:
    class Guest:  # the transport side of a connected guest, as the WebSocket server hands it over
        conn_id, nick, session_id = "c1", "carol", "guest-session"

        def send(self, message: object) -> None:
            pass

        def close(self, code: int, reason: str) -> None:
            pass

        def describe(self) -> dict[str, object]:
            return {}

    chat(app).connect(Guest())
    status, body = register(app.test_client(), "carol")
    assert (status, body["error"]) == (409, "nick_taken")
