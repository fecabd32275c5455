"""What operators look at, against real gunicorn: /readyz, /metrics (one and two workers), JSON logs."""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from websockets.exceptions import InvalidStatus

from tests.support.clients import connect, connect_to, join, open_ws, say
from tests.support.gunicorn import ChatServer, two_workers
from tests.support.http import http_opener, http_request, session
from tests.support.names import fresh_nick, fresh_room
from tests.support.redis import RedisServer
from tests.support.timeouts import scaled

StartChat = Callable[..., ChatServer]


def metric(text: str, name: str, labels: str = "") -> float:
    """One sample's value from the Prometheus text format (0 when absent)."""
    pattern = re.escape(name) + (re.escape("{" + labels + "}") if labels else r"(?:\{\})?") + r" ([0-9.e+-]+)$"
    found = re.search(pattern, text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def scrape(base: str) -> str:
    """The text of ``/metrics``."""
    with http_opener().open(base + "/metrics", timeout=scaled(10)) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        return response.read().decode()


def wait_metric(base: str, name: str, wanted: Callable[[float], bool], labels: str = "") -> float:
    deadline = time.monotonic() + scaled(10)
    while True:
        value = metric(scrape(base), name, labels)
        if wanted(value):
            return value
        assert time.monotonic() < deadline, f"{name}{{{labels}}} stayed at {value}"
        time.sleep(0.2)


def test_readyz_says_ready_when_every_part_answers(start_chat: StartChat, tmp_path: Path) -> None:
    chat = start_chat(tmp_path)
    status, body, _ = http_request(chat.http + "/readyz")
    assert status == 200, body
    assert body == {"status": "ready", "checks": {"websocket": "ok", "history": "ok", "broker": "ok"}}


def test_readyz_is_503_while_redis_is_down_and_ready_again_after(
    start_chat: StartChat, tmp_path: Path, own_redis: RedisServer
) -> None:
    chat = start_chat(tmp_path, CHAT_REDIS_URL=own_redis.url)
    assert http_request(chat.http + "/readyz")[0] == 200
    own_redis.stop()
    status, body, _ = http_request(chat.http + "/readyz")
    assert status == 503, body
    assert body["status"] == "unavailable"
    assert body["checks"]["websocket"] == "ok"
    assert body["checks"]["history"] != "ok" and body["checks"]["broker"] != "ok"
    wait_metric(chat.http, "chat_redis_errors_total", lambda value: value >= 1, 'kind="unreachable"')
    own_redis.start()
    deadline = time.monotonic() + scaled(30)
    while http_request(chat.http + "/readyz")[0] != 200:
        assert time.monotonic() < deadline, "not ready again after Redis came back"
        time.sleep(0.2)


def test_metrics_count_connections_messages_rejections_and_latencies(start_chat: StartChat, tmp_path: Path) -> None:
    chat = start_chat(tmp_path)
    room = fresh_room()
    a, _ = connect(chat, fresh_nick("a"))
    b, _ = connect(chat, fresh_nick("b"))
    with a, b:
        join(a, room)
        join(b, room)
        for i in range(5):
            say(a, room, f"m{i}")
        with pytest.raises(InvalidStatus):
            open_ws(chat.ws_base + "?token=forged")
        wait_metric(chat.http, "chat_connections_open", lambda v: v == 2)
        wait_metric(chat.http, "chat_messages_in_total", lambda v: v >= 7)  # 2 joins, 5 says
        wait_metric(chat.http, "chat_messages_out_total", lambda v: v >= 2 + 2 + 10)  # hellos, joined, 5 x 2
        text = scrape(chat.http)
    assert metric(text, "chat_connections_total") >= 2
    assert metric(text, "chat_bytes_in_total") > 0 and metric(text, "chat_bytes_out_total") > 0
    assert metric(text, "chat_rooms") == 1
    assert metric(text, "chat_fanout_seconds_count") == 5
    assert metric(text, "chat_history_store_seconds_count") == 5
    assert metric(text, "chat_handshakes_rejected_total", 'reason="unauthorized"') == 1
    wait_metric(chat.http, "chat_connections_open", lambda v: v == 0)


def test_metrics_are_summed_over_two_workers(tmp_path: Path, prefix: str) -> None:
    with two_workers(tmp_path, prefix) as node:
        clients, workers = [], set()
        while len(workers) < 2 or len(clients) < 6:
            ws, hello = connect_to(node, fresh_nick())
            clients.append(ws)
            workers.add(hello["conn"].split(".")[0])
            assert len(clients) < 60, "every connection went to one worker"
        wait_metric(node.http, "chat_connections_open", lambda v: v == len(clients))
        for ws in clients:
            ws.close()
        wait_metric(node.http, "chat_connections_open", lambda v: v == 0)


def test_json_logs_have_one_line_per_connect_and_disconnect_with_the_close_code(
    start_chat: StartChat, tmp_path: Path
) -> None:
    secret_key, admin_password = secrets.token_hex(32), "admin-" + secrets.token_hex(8)
    chat = start_chat(tmp_path, CHAT_LOG_FORMAT="json", CHAT_SECRET_KEY=secret_key, CHAT_ADMIN_PASSWORD=admin_password)
    secret_text = "secret-" + secrets.token_hex(8)
    ws, hello = connect(chat, fresh_nick())
    session_token = session(chat, fresh_nick())["token"]
    with ws:
        join(ws, "lobby")
        say(ws, "lobby", secret_text)
    deadline = time.monotonic() + scaled(10)
    while True:
        entries = [json.loads(line) for line in chat.logs().splitlines() if line.startswith("{")]
        events = {(e.get("event"), e.get("conn")): e for e in entries}
        if ("disconnect", hello["conn"]) in events:
            break
        assert time.monotonic() < deadline, entries
        time.sleep(0.1)
    assert ("connect", hello["conn"]) in events
    assert events[("disconnect", hello["conn"])]["code"] == 1000
    assert all({"ts", "level", "logger", "msg"} <= set(e) for e in entries)
    logs = chat.logs()
    for secret in (secret_text, secret_key, admin_password, session_token):
        assert secret not in logs
