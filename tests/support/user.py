"""One session through the chat, as a user has it: the page, a session, a WebSocket that says hi.

The clients are outside ones only: ``urllib`` for HTTP, the ``websockets``
package for the WebSocket. It needs nothing but the web app's base URL, so it
also checks a chat started by hand (the README's command, ``python wsgi.py``).
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from websockets.sync.client import connect as ws_connect

from tests.support.processes import end_tree, wait_for_output
from tests.support.timeouts import scaled


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


def run_wsgi_and_use_it(
    python: Path, cwd: Path, env: dict[str, str], log_path: Path, http_port: int, stop_signal: int, stop_time: float
) -> tuple[int | None, str]:
    """``python wsgi.py`` in ``cwd``: wait for it, :func:`use_the_chat`, stop it with ``stop_signal``.

    Returns its exit status and everything it wrote; the process tree is ended either way.
    """
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [str(python), "wsgi.py"],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for_output(log_path, rf"chat: web app on http://127\.0\.0\.1:{http_port}/", server, scaled(30))
        use_the_chat(f"http://127.0.0.1:{http_port}")
        server.send_signal(stop_signal)
        status: int | None = server.wait(timeout=scaled(stop_time))
    finally:
        end_tree(server, scaled(stop_time))
    return status, log_path.read_text(errors="replace")
