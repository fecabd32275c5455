"""The chat's log lines: the text format's time as logging's own formatter writes it; JSON lines, gunicorn's too."""

from __future__ import annotations

import json
import logging
import signal
import sys
from pathlib import Path

import pytest

from app.logs import TEXT_FORMAT, AccessJsonFormatter, _TextFormatter, gunicorn_logconfig
from tests.support.gunicorn import launch_chat, server_environment
from tests.support.processes import REPO_ROOT, free_port
from tests.support.user import run_wsgi_and_use_it, use_the_chat


def record_at(created: float) -> logging.LogRecord:
    record = logging.LogRecord("app.server.chat", logging.INFO, __file__, 1, "connect %s", ("x.c1",), None)
    record.created, record.msecs = created, (created - int(created)) * 1000
    record.conn = "x.c1"
    return record


def test_text_lines_carry_the_same_time_as_the_standard_formatter_within_and_across_seconds() -> None:
    ours, standard = _TextFormatter(TEXT_FORMAT), logging.Formatter(TEXT_FORMAT)
    for created in (1_795_273_821.004, 1_795_273_821.999, 1_795_273_822.5, 1_795_273_821.25, 1_800_000_000.0):
        record = record_at(created)
        assert ours.format(record) == standard.format(record) + " [conn=x.c1]"


def access_record(atoms: dict[str, object]) -> logging.LogRecord:
    """A record as gunicorn's access log makes it: its format, and the request's atoms as the one argument."""
    return logging.LogRecord("gunicorn.access", logging.INFO, __file__, 1, '%(h)s "%(r)s" %(s)s %(b)s', (atoms,), None)


def test_access_lines_in_json_carry_the_request_as_fields() -> None:
    atoms = {"h": "127.0.0.1", "r": "GET /x?y=1 HTTP/1.1", "m": "GET", "U": "/x", "q": "y=1", "H": "HTTP/1.1"}
    atoms |= {"s": "404", "b": "9", "B": 9, "a": 'curl \\"quoted\\"', "f": "-", "D": 1500}
    entry = json.loads(AccessJsonFormatter().format(access_record(atoms)))
    assert entry["logger"] == "gunicorn.access"
    assert entry["msg"] == '127.0.0.1 "GET /x?y=1 HTTP/1.1" 404 9'
    assert {k: entry[k] for k in ("method", "path", "protocol", "status", "bytes", "remote_addr")} == {
        "method": "GET",
        "path": "/x",
        "protocol": "HTTP/1.1",
        "status": 404,
        "bytes": 9,
        "remote_addr": "127.0.0.1",
    }
    assert entry["user_agent"] == 'curl "quoted"'
    assert entry["duration_ms"] == 1.5
    assert "q" not in entry and "query" not in entry


def test_gunicorn_keeps_its_own_text_format_unless_json_is_asked_for() -> None:
    assert gunicorn_logconfig("text") == {}
    config = gunicorn_logconfig("json")
    assert set(config["loggers"]) == {"gunicorn.error", "gunicorn.access"}
    with pytest.raises(ValueError, match="CHAT_LOG_FORMAT"):
        gunicorn_logconfig("xml")


def test_with_json_every_line_gunicorn_and_the_chat_write_is_a_json_object(tmp_path: Path) -> None:
    """gunicorn's start, access and stop lines included, from start to SIGTERM."""
    chat = launch_chat(tmp_path, CHAT_LOG_FORMAT="json")
    try:
        use_the_chat(chat.http)
    finally:
        status = chat.stop(signal.SIGTERM)
    lines = [line for line in chat.logs().splitlines() if line.strip()]
    entries = []
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            raise AssertionError(f"not JSON: {line!r}\n{chat.logs()}") from None
        assert isinstance(entry, dict), line
        assert {"ts", "level", "logger", "msg"} <= set(entry), line
        entries.append(entry)
    assert status == 0, chat.logs()
    loggers = {entry["logger"] for entry in entries}
    assert {"gunicorn.error", "gunicorn.access", "app.server.chat"} <= loggers, loggers
    session = [e for e in entries if e["logger"] == "gunicorn.access" and e.get("path") == "/api/session"]
    assert session, entries
    assert (session[0]["method"], session[0]["status"], session[0]["remote_addr"]) == ("POST", 200, "127.0.0.1")
    assert isinstance(session[0]["duration_ms"], float) and isinstance(session[0]["bytes"], int), session[0]
    assert any(e["msg"] == "Shutting down: Master" for e in entries), entries


def test_with_json_every_line_the_development_server_writes_is_a_json_object(tmp_path: Path) -> None:
    """``python wsgi.py`` follows CHAT_LOG_FORMAT too: its start line and access lines included."""
    http_port, ws_port = free_port(), free_port()
    env = server_environment(
        tmp_path / "chat.db",
        CHAT_LOG_FORMAT="json",
        CHAT_HTTP_BIND=f"127.0.0.1:{http_port}",
        CHAT_WS_BIND=f"127.0.0.1:{ws_port}",
    )
    status, output = run_wsgi_and_use_it(
        Path(sys.executable), REPO_ROOT, env, tmp_path / "wsgi.log", http_port, signal.SIGTERM, 15
    )
    entries = []
    for line in filter(str.strip, output.splitlines()):
        try:
            entries.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"not JSON: {line!r}\n{output}") from None
    assert status == 0, output
    assert all(isinstance(e, dict) and {"ts", "level", "logger", "msg"} <= set(e) for e in entries), entries
    assert any(e["logger"] == "wsgi.access" and '"POST /api/session HTTP/1.1" 200' in e["msg"] for e in entries), output
