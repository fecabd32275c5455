"""The pages, through Flask's test client: what they render and the headers that guard them."""

from __future__ import annotations

from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app import create_app
from app.config import Settings


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    app = create_app(Settings.from_env({}, db=str(tmp_path / "chat.db"), secret_key="test-secret"))
    app.extensions["chat"].start()
    yield app
    app.extensions["chat"].close()


def signed_in(app: Flask, nick: str) -> FlaskClient:
    """A client whose session cookie carries ``nick``, as ``POST /api/session`` leaves it."""
    client = app.test_client()
    with client.session_transaction() as session:
        session["sid"], session["nick"] = "sid-1", nick
    return client


class Elements(HTMLParser):
    """Every start tag of a page, with its attributes, and the text of its scripts."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.script_text: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.script_text.append(data)

    def find(self, element_id: str) -> dict[str, str | None]:
        return next(attrs for _, attrs in self.tags if attrs.get("id") == element_id)


def parse(html: str) -> Elements:
    parser = Elements()
    parser.feed(html)
    return parser


def directives(policy: str) -> dict[str, list[str]]:
    parsed = {}
    for part in policy.split(";"):
        name, *values = part.split()
        parsed[name] = values
    return parsed


# -- the landing page ----------------------------------------------------------------------------------------------


def test_landing_page_renders_the_nick_form_with_autoescape_on(app: Flask) -> None:
    response = app.test_client().get("/")
    assert response.status_code == 200
    assert b"<h1>Chat</h1>" in response.data
    assert app.jinja_env.autoescape is not False
    page = parse(response.get_data(as_text=True))
    assert page.find("join-form") is not None
    assert page.find("nick")["value"] == ""
    assert page.find("room")["value"] == "lobby"


def test_landing_page_prefills_the_session_nick_and_the_requested_room(app: Flask) -> None:
    response = signed_in(app, "alice").get("/?room=dev.team")
    page = parse(response.get_data(as_text=True))
    assert page.find("nick")["value"] == "alice"
    assert page.find("room")["value"] == "dev.team"


# -- the chat page ------------------------------------------------------------------------------------------------


def test_chat_without_a_session_redirects_to_the_landing_page(app: Flask) -> None:
    response = app.test_client().get("/chat")
    assert response.status_code == 302
    assert response.headers["Location"] == "/"


def test_chat_without_a_session_keeps_the_room_for_the_landing_page(app: Flask) -> None:
    response = app.test_client().get("/chat?room=lobby")
    assert response.status_code == 302
    assert response.headers["Location"] == "/?room=lobby"


def test_chat_with_a_session_carries_the_nick_room_and_websocket_origin(app: Flask) -> None:
    response = signed_in(app, "alice").get("/chat?room=lobby")
    assert response.status_code == 200
    root = parse(response.get_data(as_text=True)).find("chat-app")
    assert root["data-nick"] == "alice"
    assert root["data-room"] == "lobby"
    assert root["data-ws-origin"] == "ws://127.0.0.1:8001"
    assert root["data-session-url"] == "/api/session"


def test_chat_after_post_api_session_uses_that_cookie(app: Flask) -> None:
    client = app.test_client()
    assert client.post("/api/session", json={"nick": "bob"}).status_code == 200
    response = client.get("/chat")
    assert response.status_code == 200
    assert parse(response.get_data(as_text=True)).find("chat-app")["data-nick"] == "bob"


def test_chat_ignores_a_room_name_the_server_would_refuse(app: Flask) -> None:
    response = signed_in(app, "alice").get("/chat?room=no%20spaces")
    assert parse(response.get_data(as_text=True)).find("chat-app")["data-room"] == ""


def test_a_nick_containing_html_is_escaped_in_the_chat_page(app: Flask) -> None:
    nick = '<img src=x onerror="alert(1)">'
    response = signed_in(app, nick).get("/chat")
    html = response.get_data(as_text=True)
    assert nick not in html
    assert "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in html
    page = parse(html)
    assert page.find("chat-app")["data-nick"] == nick  # the attribute's value, once unescaped
    assert not any(tag == "img" for tag, _ in page.tags)


# -- headers and what the policy forbids ------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/chat"])
def test_pages_carry_a_csp_that_forbids_inline_script_and_nosniff(app: Flask, path: str) -> None:
    response = signed_in(app, "alice").get(path)
    assert response.status_code == 200
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    policy = directives(response.headers["Content-Security-Policy"])
    assert policy["default-src"] == ["'self'"]
    assert policy["script-src"] == ["'self'"]
    assert policy["style-src"] == ["'self'"]
    assert policy["connect-src"] == ["'self'", "ws://127.0.0.1:8001"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert policy["base-uri"] == ["'none'"]
    assert policy["form-action"] == ["'self'"]


@pytest.mark.parametrize("path", ["/", "/chat"])
def test_pages_have_no_inline_script_or_style(app: Flask, path: str) -> None:
    page = parse(signed_in(app, "alice").get(path).get_data(as_text=True))
    scripts = [attrs for tag, attrs in page.tags if tag == "script"]
    assert scripts, "the page loads its module"
    assert all(attrs.get("src", "").startswith("/static/") and attrs.get("type") == "module" for attrs in scripts)
    assert page.script_text == []
    assert not any(tag == "style" for tag, _ in page.tags)
    assert not any("style" in attrs or any(name.startswith("on") for name in attrs) for _, attrs in page.tags)


def test_connect_src_follows_the_bound_websocket_url(app: Flask) -> None:
    app.config["CHAT_WS_URL"] = "ws://127.0.0.1:45678/ws"
    policy = directives(app.test_client().get("/").headers["Content-Security-Policy"])
    assert policy["connect-src"] == ["'self'", "ws://127.0.0.1:45678"]


def test_connect_src_uses_the_request_host_for_a_wildcard_bind(tmp_path: Path) -> None:
    app = create_app(Settings.from_env({}, db=str(tmp_path / "chat.db"), ws_bind="0.0.0.0:8001"))
    response = app.test_client().get("/", base_url="http://chat.example:8000")
    assert directives(response.headers["Content-Security-Policy"])["connect-src"] == [
        "'self'",
        "ws://chat.example:8001",
    ]


def test_connect_src_uses_the_public_websocket_url(tmp_path: Path) -> None:
    settings = Settings.from_env({}, db=str(tmp_path / "chat.db"), ws_public_url="wss://chat.example.com/ws")
    response = create_app(settings).test_client().get("/")
    assert directives(response.headers["Content-Security-Policy"])["connect-src"] == [
        "'self'",
        "wss://chat.example.com",
    ]


def test_healthz_still_answers_ok(app: Flask) -> None:
    response = app.test_client().get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}
