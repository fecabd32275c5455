"""The Flask application factory and the process that serves it."""

from __future__ import annotations

import signal
from pathlib import Path

from app import create_app
from app.config import Settings
from tests.support.gunicorn import launch_chat
from tests.support.processes import assert_clean
from tests.support.user import use_the_chat


def test_settings_come_from_chat_environment_variables() -> None:
    settings = Settings.from_env({"CHAT_WS_BIND": "127.0.0.1:9999", "CHAT_MAX_MESSAGE_SIZE": "123"})
    assert settings.ws_bind == "127.0.0.1:9999"
    assert settings.max_message_size == 123


def test_overrides_win_over_the_environment() -> None:
    settings = Settings.from_env({"CHAT_WS_BIND": "127.0.0.1:9999"}, ws_bind="127.0.0.1:1")
    assert settings.ws_bind == "127.0.0.1:1"


def test_a_missing_secret_key_is_replaced_by_a_random_one() -> None:
    first, second = Settings.from_env({}), Settings.from_env({})
    assert len(first.secret_key) == 64
    assert first.secret_key != second.secret_key


def test_landing_page_is_served_with_autoescaped_templates() -> None:
    app = create_app(Settings.from_env({}))
    response = app.test_client().get("/")
    assert response.status_code == 200
    assert b"<h1>Chat</h1>" in response.data
    assert app.jinja_env.autoescape is not False


def test_healthz_answers_ok() -> None:
    response = create_app(Settings.from_env({})).test_client().get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_gunicorn_stops_on_sigterm_with_status_0_and_no_traceback(tmp_path: Path) -> None:
    """As the README runs it, after a session; no "Exception ignored in: <function _removeHandlerRef>" at exit."""
    chat = launch_chat(tmp_path)
    try:
        use_the_chat(chat.http)
    finally:
        status = chat.stop(signal.SIGTERM)
    logs = chat.logs()
    assert status == 0, logs
    assert "Using worker: gevent" in logs and "Shutting down: Master" in logs, logs
    assert_clean(logs)
