"""A person with an account, signed in from one browser, with one WebSocket connection: for the end-to-end tests."""

from __future__ import annotations

import json
from typing import Any

from websockets.sync.client import ClientConnection

from tests.support.clients import Message, open_ws, recv_json, recv_until, send_json
from tests.support.http import Endpoints, http_opener, http_request
from tests.support.names import fresh_nick

PASSWORD = "a long enough password"


class Person:
    """An account signed in from one browser (cookies kept), with one WebSocket connection."""

    def __init__(self, node: Endpoints, name: str, *, register: bool = True) -> None:
        self.node, self.name = node, name
        self.browser = http_opener(cookies=True)
        path = "/api/accounts" if register else "/api/login"
        status, body = self.post(path, {"name": name, "password": PASSWORD})
        assert status in (200, 201), body
        self.ws: ClientConnection = open_ws(body["ws_url"])
        assert recv_json(self.ws)["type"] == "hello"

    def post(self, path: str, body: object) -> tuple[int, Any]:
        status, answer, _ = http_request(
            self.node.http + path,
            method="POST",
            body=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            opener=self.browser,
        )
        return status, answer

    def get(self, path: str) -> tuple[int, Any]:
        status, answer, _ = http_request(self.node.http + path, opener=self.browser)
        return status, answer

    def ask(self, request: dict[str, Any], expect: str) -> Message:
        """Send a command with a ref; the reply of type ``expect`` (or an ``error``) that carries it."""
        ref = fresh_nick("r")
        send_json(self.ws, {**request, "ref": ref})
        return recv_until(self.ws, lambda m: m.get("type") in (expect, "error") and m.get("ref") == ref)

    def refused(self, request: dict[str, Any]) -> str:
        """The error code a command gets."""
        reply = self.ask(request, "error")
        assert reply["type"] == "error", reply
        return str(reply["code"])

    def close(self) -> None:
        self.ws.close()
