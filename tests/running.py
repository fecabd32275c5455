"""Helpers for tests that run the chat as a user does: its process tree, its output, one session through it.

The clients are outside ones only: ``urllib`` for HTTP, the ``websockets``
package for the WebSocket. Processes are found through ``/proc`` and signalled
by PID, and only those descending from a process the test started.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from websockets.sync.client import connect as ws_connect

from tests.conftest import scaled

#: What a clean stop must not print (a traceback, or an exception Python could only ignore).
UNCLEAN = ("Traceback", "Exception ignored")


def parent_of(pid: int) -> int | None:
    """The parent PID of ``pid``, or None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return int(stat.rpartition(")")[2].split()[1])


def command_line(pid: int) -> str:
    """``pid``'s command line, its arguments joined by spaces ('' once it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except (FileNotFoundError, ProcessLookupError):
        return ""


def descendants(pid: int) -> list[int]:
    """Every living process under ``pid`` (children first, then theirs)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            parent = parent_of(int(entry.name))
            if parent is not None:
                children.setdefault(parent, []).append(int(entry.name))
    found, queue = [], [pid]
    while queue:
        for child in children.get(queue.pop(0), []):
            found.append(child)
            queue.append(child)
    return found


def runs_gunicorn(pid: int) -> bool:
    """Whether ``pid`` runs gunicorn's script (``gunicorn ...`` or ``python .../gunicorn ...``)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (FileNotFoundError, ProcessLookupError):
        return False
    return any(Path(arg.decode(errors="replace")).name == "gunicorn" for arg in argv[:2])


def gunicorn_master(root: int) -> int | None:
    """The gunicorn master at or under ``root``: a gunicorn process whose parent is not one.

    ``bash -c 'a && b && gunicorn ...'`` may run gunicorn as a child, or exec it as its last command.
    """
    for pid in [root, *descendants(root)]:
        parent = parent_of(pid)
        if runs_gunicorn(pid) and parent is not None and not runs_gunicorn(parent):
            return pid
    return None


def end_tree(process: subprocess.Popen[Any], timeout: float) -> None:
    """End ``process`` and whatever still runs under it: SIGTERM by PID, SIGKILL after ``timeout`` seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = [*descendants(process.pid), process.pid] if process.poll() is None else descendants(process.pid)
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and (process.poll() is None or descendants(process.pid)):
            time.sleep(0.05)
        if process.poll() is not None and not descendants(process.pid):
            return
    process.wait(timeout=timeout)


def wait_for_output(log_path: Path, pattern: str, process: subprocess.Popen[Any], timeout: float) -> re.Match[str]:
    """The first match of ``pattern`` in ``log_path``; fails if ``process`` ends or ``timeout`` passes first."""
    deadline = time.monotonic() + timeout
    while True:
        text = log_path.read_text(errors="replace")
        match = re.search(pattern, text)
        if match:
            return match
        if process.poll() is not None or time.monotonic() > deadline:
            status = process.poll()
            raise AssertionError(f"no {pattern!r} in the output (exit status {status}):\n{text[-20000:]}")
        time.sleep(0.1)


def _http(url: str, body: object = None) -> tuple[int, str, bytes]:
    """Status, content type and body of a GET (or a JSON POST when ``body`` is given), ignoring proxies."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=scaled(10)) as response:
        return response.status, response.headers.get("Content-Type", ""), response.read()


def _recv(ws: Any, wanted: str) -> dict[str, Any]:
    """The next message of type ``wanted``, within 10 s (scaled)."""
    deadline = time.monotonic() + scaled(10)
    while True:
        message = json.loads(ws.recv(timeout=max(0.01, deadline - time.monotonic())))
        if message.get("type") in (wanted, "error"):
            return dict(message)


def use_the_chat(http_base: str) -> None:
    """What a user does: the page, a session, a WebSocket that joins the lobby and says hi (and gets it back)."""
    status, content_type, page = _http(http_base + "/")
    assert status == 200 and content_type.startswith("text/html"), (status, content_type)
    assert b"<h1>Chat</h1>" in page
    nick = "readme-" + secrets.token_hex(3)
    status, _, body = _http(http_base + "/api/session", {"nick": nick})
    assert status == 200, (status, body)
    session = json.loads(body)
    assert session["token"] and session["ws_url"].startswith("ws://"), session
    with ws_connect(session["ws_url"], proxy=None, open_timeout=scaled(10), close_timeout=scaled(5)) as ws:
        assert _recv(ws, "hello")["type"] == "hello"
        ws.send(json.dumps({"type": "join", "room": "lobby"}))
        joined = _recv(ws, "joined")
        assert joined["type"] == "joined" and joined["room"] == "lobby", joined
        ws.send(json.dumps({"type": "say", "room": "lobby", "text": "hi", "ref": "r1"}))
        message = _recv(ws, "message")
        assert (message["type"], message["text"], message["ref"]) == ("message", "hi", "r1"), message


def assert_clean(output: str) -> None:
    """No traceback, nor an ignored exception, anywhere in ``output``."""
    for word in UNCLEAN:
        assert word not in output, f"{word!r} in the output:\n{output[-20000:]}"
