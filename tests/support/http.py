"""HTTP to the chat with ``urllib``, proxies ignored: any request, and ``POST /api/session``.

The helpers take any running chat with an ``http`` base URL: the gunicorn
process of :mod:`tests.support.gunicorn` or the in-process one of
:mod:`tests.support.inprocess`.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from typing import Any, Protocol

from tests.support.redis import ADMIN_PASSWORD
from tests.support.timeouts import scaled


class Endpoints(Protocol):
    """What the HTTP and WebSocket helpers need of a running chat."""

    @property
    def http(self) -> str: ...

    @property
    def ws_base(self) -> str: ...

    ws_port: int


def http_opener(*, cookies: bool = False) -> urllib.request.OpenerDirector:
    """An opener that ignores proxy settings and, if asked, keeps cookies like a browser."""
    handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]
    if cookies:
        handlers.append(urllib.request.HTTPCookieProcessor())
    return urllib.request.build_opener(*handlers)


def http_request(
    url: str,
    *,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    opener: urllib.request.OpenerDirector | None = None,
) -> tuple[int, Any, dict[str, str]]:
    """Status, decoded JSON body (or ``None``) and headers of one HTTP request."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    opener = opener or http_opener()
    try:
        with opener.open(request, timeout=scaled(10)) as response:
            status, raw, response_headers = response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as error:
        status, raw, response_headers = error.code, error.read(), dict(error.headers)
        error.close()
    try:
        decoded = json.loads(raw) if raw else None
    except ValueError:
        decoded = None
    return status, decoded, response_headers


def get_json(chat: Endpoints, path: str) -> tuple[int, Any]:
    status, body, _ = http_request(chat.http + path)
    return status, body


def post_session(
    chat: Endpoints, body: bytes | object, opener: urllib.request.OpenerDirector | None = None
) -> tuple[int, Any]:
    """``POST /api/session`` with ``body`` (bytes as they are, anything else as JSON)."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    status, decoded, _ = http_request(
        chat.http + "/api/session",
        method="POST",
        body=raw,
        headers={"Content-Type": "application/json"},
        opener=opener,
    )
    return status, decoded


def session(chat: Endpoints, nick: str, opener: urllib.request.OpenerDirector | None = None) -> dict[str, Any]:
    """A new session for ``nick``: ``{"nick", "token", "ws_url"}``."""
    status, body = post_session(chat, {"nick": nick}, opener)
    assert status == 200, (status, body)
    assert isinstance(body, dict)
    return body


def admin(node: Endpoints, path: str, body: object | None = None) -> tuple[int, Any]:
    """The admin API (``/admin/api`` + ``path``) with the tests' admin password: GET, or POST ``body`` as JSON."""
    credentials = base64.b64encode(f"admin:{ADMIN_PASSWORD}".encode()).decode()
    headers = {"Authorization": f"Basic {credentials}", "Content-Type": "application/json"}
    raw = None if body is None else json.dumps(body).encode()
    status, decoded, _ = http_request(
        node.http + "/admin/api" + path, method="GET" if body is None else "POST", body=raw, headers=headers
    )
    return status, decoded
