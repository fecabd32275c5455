"""The admin page and API (docs/admin.md): who may ask, and what the chat does when they act.

The connected clients are recording members (the transport is not under
test here); the chat service behind them is real.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app import create_app
from app.chat.service import BANNED, KICKED, ChatService
from app.config import Settings
from app.web import admin

from ..chat.test_service import RecordingMember

PASSWORD = "correct horse ✓ battery"
READS = ["/admin/api/clients", "/admin/api/rooms", "/admin/api/bans"]
WRITES: list[tuple[str, Any]] = [
    ("/admin/api/clients/c1/kick", None),
    ("/admin/api/bans", {"nick": "alice", "seconds": 60}),
    ("/admin/api/broadcast", {"text": "maintenance at noon"}),
]


class Member(RecordingMember):
    """A recording member that also reports transport counters, as the real one does."""

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.conn_id,
            "nick": self.nick,
            "addr": "127.0.0.1:50000",
            "user_agent": "test/1.0",
            "connected_at": 1763712000.5,
            "msgs_in": 3,
            "msgs_out": len(self.received),
            "bytes_in": 120,
            "bytes_out": 4096,
            "buffered": 0,
            "rtt_ms": 1.25,
            "internal": "not for the API",
        }


def make_app(tmp_path: Path, password: str = PASSWORD) -> Flask:
    settings = Settings.from_env({}, db=str(tmp_path / "chat.db"), secret_key="test-secret", admin_password=password)
    return create_app(settings)


@pytest.fixture(autouse=True)
def no_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(admin, "FAILED_LOGIN_DELAY", 0)


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    app = make_app(tmp_path)
    app.extensions["chat"].start()
    yield app
    app.extensions["chat"].close()


@pytest.fixture
def chat(app: Flask) -> ChatService:
    return app.extensions["chat"]


def connect(chat: ChatService, conn_id: str, nick: str, *rooms: str) -> Member:
    member = Member(conn_id, nick)
    chat.connect(member)
    for room in rooms:
        chat.handle(member, json.dumps({"type": "join", "room": room}))
    return member


def basic(user: str = "admin", password: str = PASSWORD) -> dict[str, str]:
    credentials = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {credentials}"}


def form_token(client: FlaskClient) -> str:
    """The CSRF token the login form carries (GET /admin/login puts it in the session)."""
    client.get("/admin/login")
    with client.session_transaction() as session:
        return session["admin_csrf"]


def log_in(client: FlaskClient, password: str = PASSWORD) -> Any:
    return client.post("/admin/login", data={"password": password, "csrf_token": form_token(client)})


@pytest.fixture
def browser(app: Flask) -> tuple[FlaskClient, str]:
    """A logged-in browser and its CSRF token."""
    client = app.test_client()
    assert log_in(client).status_code == 303
    with client.session_transaction() as session:
        return client, session["admin_csrf"]


def post(client: FlaskClient, path: str, body: Any = None, **headers: str) -> Any:
    if body is None:
        return client.post(path, headers=headers)
    return client.post(path, json=body, headers=headers)


# -- disabled ---------------------------------------------------------------------------------------------------------

EVERY_ROUTE = [
    ("GET", "/admin"),
    ("GET", "/admin/"),
    ("GET", "/admin/login"),
    ("POST", "/admin/login"),
    ("POST", "/admin/logout"),
    *[("GET", path) for path in READS],
    *[("POST", path) for path, _ in WRITES],
]


@pytest.mark.parametrize(("method", "path"), EVERY_ROUTE, ids=lambda v: v)
def test_without_a_password_everything_under_admin_is_404(tmp_path: Path, method: str, path: str) -> None:
    client = make_app(tmp_path, password="").test_client()
    response = client.open(path, method=method, headers=basic(password=""), data={"password": ""})
    assert response.status_code == 404
    if path.startswith("/admin/api/"):
        assert response.get_json()["error"] == "not_found"


# -- logging in and out -----------------------------------------------------------------------------------------------


def test_the_page_sends_a_browser_without_a_session_to_the_login_form(app: Flask) -> None:
    response = app.test_client().get("/admin")
    assert response.status_code == 302
    assert response.headers["Location"] == "/admin/login"


def test_a_wrong_password_gets_401_and_the_form_with_an_error(app: Flask) -> None:
    client = app.test_client()
    response = log_in(client, "wrong")
    assert response.status_code == 401
    assert "Wrong password." in response.text
    assert 'name="password"' in response.text
    with client.session_transaction() as session:
        assert "admin" not in session
    assert client.get("/admin").status_code == 302


def test_a_failed_login_is_slowed_down(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr(admin.gevent, "sleep", slept.append)
    monkeypatch.setattr(admin, "FAILED_LOGIN_DELAY", 0.5)
    log_in(app.test_client(), "wrong")
    assert slept == [0.5]


def test_the_right_password_sets_the_session_and_opens_the_page(app: Flask) -> None:
    client = app.test_client()
    old_token = form_token(client)
    response = client.post("/admin/login", data={"password": PASSWORD, "csrf_token": old_token})
    assert response.status_code == 303
    assert response.headers["Location"] == "/admin"
    with client.session_transaction() as session:
        assert isinstance(session["admin"], str)
        assert PASSWORD not in session["admin"]
        token = session["admin_csrf"]
    assert token != old_token, "a login must get a fresh CSRF token"
    page = client.get("/admin")
    assert page.status_code == 200
    assert f'<meta name="csrf-token" content="{token}">' in page.text
    assert client.get("/admin/api/clients").status_code == 200


def test_login_without_the_form_token_is_refused_with_403(app: Flask) -> None:
    client = app.test_client()
    response = client.post("/admin/login", data={"password": PASSWORD})
    assert response.status_code == 403
    with client.session_transaction() as session:
        assert "admin" not in session


def test_logout_needs_the_token_then_clears_the_admin_session(browser: tuple[FlaskClient, str]) -> None:
    client, token = browser
    assert client.post("/admin/logout").status_code == 403
    assert client.get("/admin/api/clients").status_code == 200
    response = client.post("/admin/logout", data={"csrf_token": token})
    assert response.status_code == 303
    assert response.headers["Location"] == "/admin/login"
    with client.session_transaction() as session:
        assert "admin" not in session and "admin_csrf" not in session
    assert client.get("/admin/api/clients").status_code == 401
    assert client.get("/admin").status_code == 302


def test_logout_keeps_the_chat_session_of_the_same_browser(browser: tuple[FlaskClient, str]) -> None:
    client, token = browser
    assert client.post("/api/session", json={"nick": "operator"}).status_code == 200
    client.post("/admin/logout", data={"csrf_token": token})
    with client.session_transaction() as session:
        assert session["nick"] == "operator"


def test_changing_the_password_logs_every_browser_out(app: Flask, browser: tuple[FlaskClient, str]) -> None:
    client, _ = browser
    settings = app.config["CHAT_SETTINGS"]
    app.config["CHAT_SETTINGS"] = replace(settings, admin_password="a new password")
    assert client.get("/admin/api/clients").status_code == 401
    assert client.get("/admin").status_code == 302


def test_the_pages_load_their_script_and_styles_from_files_only(browser: tuple[FlaskClient, str]) -> None:
    """No inline script, style or event handler: the Content-Security-Policy forbids them."""
    client, _ = browser
    page, login = client.get("/admin").text, client.application.test_client().get("/admin/login").text
    for html in (page, login):
        assert not re.search(r"<script>|<style|\sstyle=|\son\w+=", html)
        assert '<link rel="stylesheet" href="/static/admin.css">' in html
    assert '<script type="module" src="/static/admin.js"></script>' in page


@pytest.mark.parametrize("path", ["/admin", "/admin/login", "/admin/api/clients", "/admin/api/bans"])
def test_admin_responses_are_never_cached_nor_framed(browser: tuple[FlaskClient, str], path: str) -> None:
    client, _ = browser
    for response in (client.get(path), client.application.test_client().get(path)):
        assert response.headers["Cache-Control"] == "no-store"
        assert response.headers["X-Frame-Options"] == "DENY"
        assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]


# -- the API's authentication -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), [("GET", p) for p in READS] + [("POST", p) for p, _ in WRITES])
def test_the_api_without_credentials_is_401_with_a_basic_challenge(app: Flask, method: str, path: str) -> None:
    response = app.test_client().open(path, method=method, json={})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Basic realm="chat admin"'
    assert response.get_json()["error"] == "unauthorized"


def test_admin_js_gets_401_without_a_challenge_so_no_browser_dialog(app: Flask) -> None:
    response = app.test_client().get("/admin/api/clients", headers={"X-Requested-With": "XMLHttpRequest"})
    assert response.status_code == 401
    assert "WWW-Authenticate" not in response.headers


def test_basic_auth_reads_the_api(app: Flask, chat: ChatService) -> None:
    connect(chat, "c1", "alice", "lobby")
    response = app.test_client().get("/admin/api/clients", headers=basic())
    assert response.status_code == 200
    assert [c["nick"] for c in response.get_json()["clients"]] == ["alice"]


@pytest.mark.parametrize(
    "headers",
    [basic(password="wrong"), basic(user="root"), basic(password=""), {"Authorization": "Bearer " + PASSWORD}],
    ids=["wrong-password", "wrong-user", "empty-password", "bearer"],
)
def test_wrong_credentials_are_401(app: Flask, headers: dict[str, str]) -> None:
    response = app.test_client().get("/admin/api/clients", headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Basic realm="chat admin"'


def test_wrong_basic_credentials_win_over_a_logged_in_session(browser: tuple[FlaskClient, str]) -> None:
    client, _ = browser
    assert client.get("/admin/api/clients", headers=basic(password="wrong")).status_code == 401


def test_basic_auth_needs_no_csrf_token(app: Flask, chat: ChatService) -> None:
    alice = connect(chat, "c1", "alice")
    response = post(app.test_client(), "/admin/api/clients/c1/kick", **basic())
    assert response.status_code == 200
    assert alice.closed == (KICKED, "disconnected by an admin")


@pytest.mark.parametrize(("path", "body"), WRITES, ids=["kick", "ban", "broadcast"])
def test_a_session_post_without_the_csrf_token_is_403(
    browser: tuple[FlaskClient, str], chat: ChatService, path: str, body: Any
) -> None:
    client, token = browser
    alice = connect(chat, "c1", "alice")
    for headers in ({}, {"X-CSRF-Token": "forged"}, {"X-CSRF-Token": ""}, {"X-CSRF-Token": token + "x"}):
        response = post(client, path, body, **headers)
        assert response.status_code == 403, headers
        assert response.get_json()["error"] == "csrf"
    assert alice.closed is None and not chat.is_banned("alice") and alice.of_type("system") == []
    assert post(client, path, body, **{"X-CSRF-Token": token}).status_code in {200, 201, 202}


def test_the_csrf_token_of_another_session_is_refused(app: Flask, browser: tuple[FlaskClient, str]) -> None:
    _, token = browser
    other = app.test_client()
    log_in(other)
    assert post(other, "/admin/api/broadcast", {"text": "hi"}, **{"X-CSRF-Token": token}).status_code == 403


@pytest.mark.parametrize(
    "headers",
    [{"Origin": "https://evil.example"}, {"Origin": "null"}, {"Sec-Fetch-Site": "cross-site"}],
    ids=["foreign-origin", "null-origin", "sec-fetch-cross-site"],
)
def test_state_changes_a_browser_marks_as_cross_site_are_refused(
    app: Flask, chat: ChatService, headers: dict[str, str]
) -> None:
    alice = connect(chat, "c1", "alice")
    response = post(app.test_client(), "/admin/api/clients/c1/kick", **basic(), **headers)
    assert response.status_code == 403
    assert response.get_json()["error"] == "cross_site"
    assert alice.closed is None


def test_same_origin_requests_from_the_page_are_accepted(browser: tuple[FlaskClient, str], chat: ChatService) -> None:
    client, token = browser
    connect(chat, "c1", "alice")
    headers = {"X-CSRF-Token": token, "Origin": "http://localhost", "Sec-Fetch-Site": "same-origin"}
    assert post(client, "/admin/api/clients/c1/kick", **headers).status_code == 200


def test_a_form_encoded_body_is_refused_even_with_the_token(browser: tuple[FlaskClient, str]) -> None:
    client, token = browser
    response = client.post("/admin/api/broadcast", data={"text": "hi"}, headers={"X-CSRF-Token": token})
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_json"


# -- reading ----------------------------------------------------------------------------------------------------------


def test_clients_lists_every_connection_with_its_rooms_and_counters(app: Flask, chat: ChatService) -> None:
    connect(chat, "c1", "alice", "lobby", "dev")
    connect(chat, "c2", "bob", "lobby")
    clients = app.test_client().get("/admin/api/clients", headers=basic()).get_json()["clients"]
    alice = next(c for c in clients if c["id"] == "c1")
    assert set(alice) == set(admin.CLIENT_FIELDS)
    assert alice["nick"] == "alice" and alice["rooms"] == ["dev", "lobby"]
    assert (alice["addr"], alice["user_agent"], alice["buffered"], alice["rtt_ms"]) == (
        "127.0.0.1:50000",
        "test/1.0",
        0,
        1.25,
    )
    assert sorted((c["id"], c["nick"]) for c in clients) == [("c1", "alice"), ("c2", "bob")]


def test_rooms_lists_member_counts_and_totals(app: Flask, chat: ChatService) -> None:
    connect(chat, "c1", "alice", "lobby", "dev")
    connect(chat, "c2", "bob", "lobby")
    body = app.test_client().get("/admin/api/rooms", headers=basic()).get_json()
    assert body["rooms"] == [{"name": "dev", "members": 1}, {"name": "lobby", "members": 2}]
    assert body["totals"] == {
        "clients": 2,
        "rooms": 2,
        "bytes_in": 240,
        "bytes_out": 8192,
        "buffered": 0,
        "messages_stored": 0,
        "fanout_p99_ms": None,
    }


# -- kick -------------------------------------------------------------------------------------------------------------


def test_kicking_an_unknown_connection_is_404(app: Flask) -> None:
    response = post(app.test_client(), "/admin/api/clients/c404/kick", **basic())
    assert response.status_code == 404
    assert response.get_json()["error"] == "not_found"


def test_kicking_closes_the_connection_with_4001(browser: tuple[FlaskClient, str], chat: ChatService) -> None:
    client, token = browser
    alice, bob = connect(chat, "c1", "alice"), connect(chat, "c2", "bob")
    response = post(client, "/admin/api/clients/c1/kick", **{"X-CSRF-Token": token})
    assert response.status_code == 200
    assert response.get_json() == {"kicked": "c1"}
    assert alice.closed == (4001, "disconnected by an admin")
    assert bob.closed is None


# -- ban --------------------------------------------------------------------------------------------------------------


def test_banning_closes_the_nicks_connections_with_4003_and_refuses_new_sessions(
    browser: tuple[FlaskClient, str], chat: ChatService
) -> None:
    client, token = browser
    tab1, tab2, bob = connect(chat, "c1", "alice"), connect(chat, "c2", "alice"), connect(chat, "c3", "bob")
    response = post(client, "/admin/api/bans", {"nick": "alice", "seconds": 600}, **{"X-CSRF-Token": token})
    assert response.status_code == 201
    body = response.get_json()
    assert (body["nick"], body["closed"]) == ("alice", 2)
    assert tab1.closed is not None and tab1.closed[0] == BANNED == 4003
    assert tab2.closed is not None and tab2.closed[0] == 4003
    assert bob.closed is None
    assert chat.is_banned("alice")
    assert client.get("/admin/api/bans").get_json() == {"bans": [{"nick": "alice", "until": body["until"]}]}
    refused = client.application.test_client().post("/api/session", json={"nick": "alice"})
    assert refused.status_code == 403


BAD_BANS: list[tuple[Any, str]] = [
    ("not json", "invalid_json"),
    (["alice", 60], "invalid_json"),
    ({"seconds": 60}, "invalid_nick"),
    ({"nick": "", "seconds": 60}, "invalid_nick"),
    ({"nick": " alice", "seconds": 60}, "invalid_nick"),
    ({"nick": "x" * 33, "seconds": 60}, "invalid_nick"),
    ({"nick": 7, "seconds": 60}, "invalid_nick"),
    ({"nick": "alice"}, "invalid_seconds"),
    ({"nick": "alice", "seconds": 0}, "invalid_seconds"),
    ({"nick": "alice", "seconds": -5}, "invalid_seconds"),
    ({"nick": "alice", "seconds": 31536001}, "invalid_seconds"),
    ({"nick": "alice", "seconds": "60"}, "invalid_seconds"),
    ({"nick": "alice", "seconds": 1.5}, "invalid_seconds"),
    ({"nick": "alice", "seconds": True}, "invalid_seconds"),
]


@pytest.mark.parametrize(("body", "code"), BAD_BANS, ids=[f"{i}-{code}" for i, (_, code) in enumerate(BAD_BANS)])
def test_bad_ban_bodies_are_400_with_a_reason(app: Flask, chat: ChatService, body: Any, code: str) -> None:
    client = app.test_client()
    if isinstance(body, str):
        response = client.post("/admin/api/bans", data=body, content_type="application/json", headers=basic())
    else:
        response = client.post("/admin/api/bans", json=body, headers=basic())
    assert response.status_code == 400
    assert response.get_json()["error"] == code
    assert response.get_json()["message"]
    assert chat.bans() == []


@pytest.mark.parametrize("seconds", [1, 31536000])
def test_the_ban_duration_limits_are_inclusive(app: Flask, seconds: int) -> None:
    response = post(app.test_client(), "/admin/api/bans", {"nick": "alice", "seconds": seconds}, **basic())
    assert response.status_code == 201


# -- broadcast --------------------------------------------------------------------------------------------------------


def test_a_broadcast_to_a_room_reaches_only_its_members(browser: tuple[FlaskClient, str], chat: ChatService) -> None:
    client, token = browser
    alice, bob = connect(chat, "c1", "alice", "lobby"), connect(chat, "c2", "bob", "dev")
    response = post(
        client, "/admin/api/broadcast", {"text": "restart at noon", "room": "lobby"}, **{"X-CSRF-Token": token}
    )
    assert response.status_code == 202
    assert response.get_json() == {}
    assert alice.of_type("system") == [{"type": "system", "text": "restart at noon", "room": "lobby"}]
    assert bob.of_type("system") == []


@pytest.mark.parametrize("body", [{"text": "hello all"}, {"text": "hello all", "room": None}])
def test_a_broadcast_without_a_room_reaches_every_client(app: Flask, chat: ChatService, body: Any) -> None:
    members = [connect(chat, "c1", "alice", "lobby"), connect(chat, "c2", "bob", "dev"), connect(chat, "c3", "carol")]
    assert post(app.test_client(), "/admin/api/broadcast", body, **basic()).status_code == 202
    for member in members:
        assert member.of_type("system") == [{"type": "system", "text": "hello all"}]


BAD_BROADCASTS: list[tuple[Any, str]] = [
    ("{", "invalid_json"),
    ("[]", "invalid_json"),
    ({}, "invalid_field"),
    ({"text": 5}, "invalid_field"),
    ({"text": ""}, "empty_text"),
    ({"text": "   "}, "empty_text"),
    ({"text": "hi", "room": ""}, "invalid_room"),
    ({"text": "hi", "room": "bad room"}, "invalid_room"),
    ({"text": "hi", "room": "x" * 65}, "invalid_room"),
    ({"text": "hi", "room": 3}, "invalid_room"),
]


@pytest.mark.parametrize(
    ("body", "code"), BAD_BROADCASTS, ids=[f"{i}-{code}" for i, (_, code) in enumerate(BAD_BROADCASTS)]
)
def test_bad_broadcast_bodies_are_400_with_a_reason(app: Flask, chat: ChatService, body: Any, code: str) -> None:
    alice = connect(chat, "c1", "alice", "lobby")
    client = app.test_client()
    if isinstance(body, str):
        response = client.post("/admin/api/broadcast", data=body, content_type="application/json", headers=basic())
    else:
        response = client.post("/admin/api/broadcast", json=body, headers=basic())
    assert response.status_code == 400
    assert response.get_json()["error"] == code
    assert alice.of_type("system") == []


def test_a_broadcast_over_the_longest_text_is_413_as_in_the_push_api(app: Flask) -> None:
    response = app.test_client().post("/admin/api/broadcast", json={"text": "x" * 4001}, headers=basic())
    assert response.status_code == 413
    assert response.get_json()["error"] == "text_too_long"


def test_a_broadcast_of_the_longest_text_is_accepted(app: Flask) -> None:
    assert post(app.test_client(), "/admin/api/broadcast", {"text": "x" * 4000}, **basic()).status_code == 202


def test_a_body_over_64_kib_is_413(app: Flask) -> None:
    body = {"text": "x" * (64 * 1024)}
    response = post(app.test_client(), "/admin/api/broadcast", body, **basic())
    assert response.status_code == 413
    assert response.get_json()["error"] == "too_large"
