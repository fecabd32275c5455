"""Many browsers asking for a session at once (docs/protocol.md §1.2, app/resources.py).

gunicorn as the README runs it, `websockets` and urllib as the browsers. After
a restart every open page asks for a session and opens its WebSocket at
once; each must get a session, or a deliberate ``503`` with ``Retry-After``:
never a reset, never a request left hanging because the process ran out of
file descriptors.
"""

from __future__ import annotations

import http.client
import json
import re
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection

from app.resources import HTTP_CONNECTIONS, RESERVED_FILES, websocket_budget
from tests.support.clients import open_ws, recv_json
from tests.support.gunicorn import ChatServer
from tests.support.http import post_session
from tests.support.names import fresh_nick
from tests.support.timeouts import scaled

pytestmark = pytest.mark.timeout(scaled(120))


def soft_open_file_limit(pid: int) -> int:
    limits = Path(f"/proc/{pid}/limits").read_text()
    found = re.search(r"^Max open files\s+(\d+)", limits, re.M)
    assert found, limits
    return int(found.group(1))


def test_the_open_file_limit_is_raised_to_the_hard_limit_at_start(
    start_chat: Callable[..., ChatServer], tmp_path: Path
) -> None:
    chat = start_chat(tmp_path, nofile=(256, 4096))  # a system's 1024 or less, with room to raise it
    assert soft_open_file_limit(chat.worker_pid) == 4096
    assert soft_open_file_limit(chat.process.pid) == 4096


def test_the_websocket_budget_leaves_room_for_the_web_app() -> None:
    assert websocket_budget(10_000, 1_048_576) == 10_000  # the setting, when the limit allows it
    assert websocket_budget(10_000, 20_000) == 10_000
    assert websocket_budget(10_000, 8_000) == 8_000 - HTTP_CONNECTIONS - RESERVED_FILES
    assert websocket_budget(10_000, 1_024) == 1_024 - 256 - RESERVED_FILES  # a quarter of a small limit for HTTP
    assert websocket_budget(10_000, 100) == 1  # someone is still served


def session_then_websocket(chat: ChatServer, nick: str, opened: list[ClientConnection]) -> str:
    """A browser after a restart, on a fresh connection: the outcome, ``ok``, ``busy`` or what went wrong."""
    connection = http.client.HTTPConnection("127.0.0.1", chat.http_port, timeout=scaled(30))
    try:
        connection.request("POST", "/api/session", json.dumps({"nick": nick}), {"Content-Type": "application/json"})
        response = connection.getresponse()
        body: dict[str, Any] = json.loads(response.read() or b"{}")
    except OSError as error:  # a reset, a refusal, a timeout: what must never happen
        return f"network: {type(error).__name__}"
    finally:
        connection.close()
    if response.status == 503:
        retry_after = response.getheader("Retry-After")
        return "busy" if body.get("error") == "busy" and retry_after and int(retry_after) > 0 else f"503 {body}"
    if response.status != 200:
        return f"http {response.status}"
    try:
        ws = open_ws(body["ws_url"])
    except InvalidStatus as refused:  # at the cap between the session and the handshake: 503 too
        return "busy" if refused.response.status_code == 503 else f"ws {refused.response.status_code}"
    except OSError as error:
        return f"ws network: {type(error).__name__}"
    opened.append(ws)
    assert recv_json(ws)["type"] == "hello"
    return "ok"


def test_a_burst_beyond_what_the_open_file_limit_allows_gets_sessions_or_503_never_a_reset(
    start_chat: Callable[..., ChatServer], tmp_path: Path
) -> None:
    limit = 400
    chat = start_chat(tmp_path, nofile=limit, CHAT_MAX_CONNECTIONS_PER_ADDRESS=0)
    budget = websocket_budget(10_000, limit)
    opened: list[ClientConnection] = []
    try:
        with ThreadPoolExecutor(max_workers=64) as pool:
            outcomes = Counter(
                pool.map(lambda n: session_then_websocket(chat, fresh_nick("storm"), opened), range(budget + 80))
            )
        assert set(outcomes) <= {"ok", "busy"}, outcomes
        assert outcomes["ok"] == budget == len(opened), outcomes  # every descriptor it could give, given
        assert outcomes["busy"] == 80, outcomes
        assert "leaves room for" in chat.logs()  # the operator is told why, and what to raise
        assert chat.alive()
        opened.pop().close()  # one leaves: a session again
        deadline_outcome = ""
        for _ in range(50):
            deadline_outcome = session_then_websocket(chat, fresh_nick("after"), opened)
            if deadline_outcome == "ok":
                break
        assert deadline_outcome == "ok"
    finally:
        for ws in opened:
            ws.close()


def test_a_full_chat_answers_a_session_with_503_busy_and_retry_after(
    start_chat: Callable[..., ChatServer], tmp_path: Path
) -> None:
    chat = start_chat(tmp_path, CHAT_MAX_CONNECTIONS=2)
    opened: list[ClientConnection] = []
    try:
        assert [session_then_websocket(chat, fresh_nick("f"), opened) for _ in range(2)] == ["ok", "ok"]
        status, body = post_session(chat, {"nick": fresh_nick("late")})
        assert (status, body["error"]) == (503, "busy")
        assert session_then_websocket(chat, fresh_nick("late"), opened) == "busy"
    finally:
        for ws in opened:
            ws.close()
