"""The Flask application factory and the process that serves it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from app import create_app
from app.config import Settings

from .conftest import end_process, scaled

ROOT = Path(__file__).resolve().parent.parent


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


def test_gunicorn_serves_the_app_with_the_gevent_worker(tmp_path: Path) -> None:
    """The README's run command, minus the install: gunicorn -c gunicorn.conf.py wsgi:app."""
    env = {
        **os.environ,
        "CHAT_HTTP_BIND": "127.0.0.1:0",
        "CHAT_WS_BIND": "127.0.0.1:0",
        "CHAT_DB": str(tmp_path / "chat.db"),
    }
    gunicorn = Path(sys.executable).with_name("gunicorn")
    command = [str(gunicorn)] if gunicorn.exists() else [sys.executable, "-m", "gunicorn"]
    proc = subprocess.Popen(
        [*command, "-c", "gunicorn.conf.py", "wsgi:app"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + scaled(30)
        port = None
        seen = []
        assert proc.stdout is not None
        while port is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            seen.append(line)
            match = re.search(r"Listening at: http://127\.0\.0\.1:(\d+)", line)
            if match:
                port = int(match.group(1))
        assert port is not None, "".join(seen)
        while time.monotonic() < deadline and not any("Using worker: gevent" in s for s in seen):
            seen.append(proc.stdout.readline())
        assert any("Using worker: gevent" in s for s in seen), "".join(seen)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=scaled(10)) as response:
            assert response.status == 200
            assert response.read() == b'{"status":"ok"}\n'
    finally:
        end_process(proc, scaled(15))
        if proc.stdout is not None:
            proc.stdout.close()


def test_ci_runs_exactly_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"```sh\n(.+?)\n```", readme)
    test_command = next(c for c in commands if "pytest" in c)
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_command in ci_lines
