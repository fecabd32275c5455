"""The push API: a backend's message, stored and delivered like any other."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from app import create_app
from app.chat.service import ChatService
from app.config import Settings

from ..chat.test_service import RecordingMember

TOKEN = "push-secret"


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    app = create_app(Settings.from_env({}, db=str(tmp_path / "chat.db"), secret_key="s", api_token=TOKEN))
    app.extensions["chat"].start()
    yield app
    app.extensions["chat"].close()


def push(app: Flask, room: str, body: Any, token: str | None = TOKEN, **kwargs: Any) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return app.test_client().post(f"/api/rooms/{room}/messages", json=body, headers=headers, **kwargs)


def test_a_pushed_message_is_stored_then_delivered_to_the_room(app: Flask) -> None:
    chat: ChatService = app.extensions["chat"]
    alice = RecordingMember("c1", "alice")
    chat.connect(alice)
    chat.handle(alice, '{"type": "join", "room": "lobby"}')
    response = push(app, "lobby", {"text": "deploy finished", "from": "ci-bot"})
    assert response.status_code == 202
    assert response.get_json() == {"id": 1}
    (message,) = alice.of_type("message")
    assert (message["id"], message["from"], message["text"]) == (1, "ci-bot", "deploy finished")
    assert [m.text for m in chat.history.recent("lobby")] == ["deploy finished"]


def test_the_sender_defaults_to_api(app: Flask) -> None:
    assert push(app, "news", {"text": "hello"}).status_code == 202
    (stored,) = app.extensions["chat"].history.recent("news")
    assert stored.nick == "api"


def test_the_push_api_is_404_without_a_configured_token(tmp_path: Path) -> None:
    app = create_app(Settings.from_env({}, db=str(tmp_path / "chat.db"), secret_key="s"))
    response = push(app, "lobby", {"text": "x"})
    assert response.status_code == 404
    assert response.get_json()["error"] == "not_found"


@pytest.mark.parametrize("token", [None, "wrong", ""])
def test_a_missing_or_wrong_token_is_401(app: Flask, token: str | None) -> None:
    response = push(app, "lobby", {"text": "x"}, token=token)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert app.extensions["chat"].history.recent("lobby") == []


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ([1], "invalid_json"),
        ({"from": "bot"}, "invalid_field"),
        ({"text": 5}, "invalid_field"),
        ({"text": ""}, "empty_text"),
        ({"text": "x", "from": ""}, "invalid_field"),
        ({"text": "x", "from": 7}, "invalid_field"),
    ],
)
def test_an_invalid_body_is_400_with_a_reason(app: Flask, body: Any, code: str) -> None:
    response = push(app, "lobby", body)
    assert response.status_code == 400
    assert response.get_json()["error"] == code
    assert response.get_json()["message"]


def test_a_bad_room_name_is_400(app: Flask) -> None:
    response = push(app, "no%20spaces", {"text": "x"})
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_room"


def test_a_text_over_the_limit_is_413(app: Flask) -> None:
    response = push(app, "lobby", {"text": "x" * 4001})
    assert response.status_code == 413
    assert response.get_json()["error"] == "text_too_long"


def test_a_body_over_64_kib_is_413(app: Flask) -> None:
    body = json.dumps({"text": "x" * 70_000})
    response = push(app, "lobby", None, data=body, content_type="application/json")
    assert response.status_code == 413
    assert response.get_json()["error"] == "too_large"
