"""What guards every response and the admin's door: headers, cookies, login attempts, the secret key."""

from __future__ import annotations

import base64
import re
import subprocess
from pathlib import Path

import pytest
from flask import Flask

from app import create_app
from app.config import Settings
from tests.support.gunicorn import server_environment, spawn_gunicorn
from tests.support.timeouts import scaled

PASSWORD = "a long admin password"


def make_app(tmp_path: Path, **overrides: object) -> Flask:
    return create_app(
        Settings.from_env({}, db=str(tmp_path / "chat.db"), secret_key="s", admin_password=PASSWORD, **overrides)
    )


@pytest.mark.parametrize(
    "path",
    ["/", "/healthz", "/api/rooms", "/static/style.css", "/no-such-page", "/admin/login", "/admin/api/clients"],
)
def test_every_response_carries_the_security_headers(tmp_path: Path, path: str) -> None:
    response = make_app(tmp_path).test_client().get(path)
    response.close()  # a static file's handle
    headers = response.headers
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["Referrer-Policy"] == "same-origin"
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert "Strict-Transport-Security" not in headers, "no HSTS over plain HTTP"


def test_the_session_cookie_is_httponly_and_samesite_lax(tmp_path: Path) -> None:
    response = make_app(tmp_path).test_client().post("/api/session", json={"nick": "alice"})
    assert response.status_code == 200
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie
    assert "Secure" not in cookie


@pytest.mark.parametrize(
    "overrides", [{"force_https": True}, {"ws_public_url": "wss://chat.example.org/ws"}], ids=["https", "wss"]
)
def test_under_tls_the_cookie_is_secure_and_pages_send_hsts(tmp_path: Path, overrides: dict[str, object]) -> None:
    client = make_app(tmp_path, **overrides).test_client()
    response = client.post("/api/session", json={"nick": "alice"}, base_url="https://localhost")
    assert "Secure" in response.headers["Set-Cookie"]
    assert client.get("/", base_url="https://localhost").headers["Strict-Transport-Security"].startswith("max-age=")


def test_wrong_admin_passwords_lock_the_address_out_even_for_the_right_one(tmp_path: Path) -> None:
    client = make_app(tmp_path).test_client()
    client.get("/admin/login")
    with client.session_transaction() as session:
        token = session["admin_csrf"]
    statuses = [
        client.post("/admin/login", data={"csrf_token": token, "password": "guess"}).status_code for _ in range(5)
    ]
    assert statuses == [401] * 5
    locked = client.post("/admin/login", data={"csrf_token": token, "password": PASSWORD})
    assert locked.status_code == 429
    assert int(locked.headers["Retry-After"]) > 0
    basic = base64.b64encode(f"admin:{PASSWORD}".encode()).decode()
    api = client.get("/admin/api/clients", headers={"Authorization": f"Basic {basic}"})
    assert api.status_code == 429
    assert api.get_json()["error"] == "too_many_attempts"


def test_a_random_secret_key_is_refused_beyond_loopback() -> None:
    random_key = Settings.from_env({})
    assert random_key.refusal(["127.0.0.1:8000"]) is None
    assert random_key.refusal(["[::1]:8000", "unix:/run/chat.sock"]) is None
    assert "CHAT_SECRET_KEY" in (random_key.refusal(["0.0.0.0:8000"]) or "")
    assert "CHAT_SECRET_KEY" in (Settings.from_env({"CHAT_WS_BIND": "0.0.0.0:8001"}).refusal([]) or "")
    assert "Redis" in (Settings.from_env({"CHAT_REDIS_URL": "redis://h"}).refusal([]) or "")
    assert Settings.from_env({"CHAT_SECRET_KEY": "k"}).refusal(["0.0.0.0:8000"]) is None


def test_gunicorn_on_a_public_address_without_a_secret_key_refuses_to_start(tmp_path: Path) -> None:
    env = server_environment(tmp_path / "chat.db")
    del env["CHAT_SECRET_KEY"]
    log_path = tmp_path / "gunicorn.log"
    process = spawn_gunicorn(log_path, env, "--bind", "0.0.0.0:0")
    try:
        returncode = process.wait(timeout=scaled(20))
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        pytest.fail("gunicorn started on 0.0.0.0 with a random secret key")
    output = log_path.read_text(errors="replace")
    assert returncode != 0, output
    assert re.search(r"set CHAT_SECRET_KEY", output), output
    assert "Booting worker" not in output
