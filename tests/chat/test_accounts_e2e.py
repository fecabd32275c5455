"""Accounts through the running chat: gunicorn as the README runs it, urllib as browsers, `websockets` as clients.

One process with SQLite, and two nodes sharing Redis: a name registered on
one is owned on the other, and signing out everywhere closes the account's
connections on every node.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus

from tests.support.clients import join, open_ws, read_until_closed, recv_json, say
from tests.support.gunicorn import ChatServer
from tests.support.http import http_opener, http_request, post_session
from tests.support.names import fresh_nick, fresh_room
from tests.support.redis import SHARED_REDIS
from tests.support.timeouts import scaled

PASSWORD = "a long enough password"

pytestmark = pytest.mark.timeout(scaled(90))


def post(node: ChatServer, path: str, body: object, browser: urllib.request.OpenerDirector) -> tuple[int, Any, dict]:
    return http_request(
        node.http + path,
        method="POST",
        body=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        opener=browser,
    )


def test_an_account_chats_under_its_name_and_signing_out_everywhere_closes_it_with_4002(
    start_chat: Callable[..., ChatServer], tmp_path: Path
) -> None:
    chat = start_chat(tmp_path)
    name, room = fresh_nick("owner"), fresh_room()
    laptop, phone = http_opener(cookies=True), http_opener(cookies=True)
    status, body, _ = post(chat, "/api/accounts", {"name": name, "password": PASSWORD}, laptop)
    assert status == 201, body
    ws = open_ws(body["ws_url"])
    hello = recv_json(ws)
    assert hello["nick"] == name
    join(ws, room)
    assert say(ws, room, "signed in")["from"] == name

    status, refused = post_session(chat, {"nick": name})  # a guest, without the cookie
    assert (status, refused["error"]) == (409, "nick_registered")

    status, signed_in, _ = post(chat, "/api/login", {"name": name.upper(), "password": PASSWORD}, phone)
    assert status == 200, signed_in
    second = open_ws(signed_in["ws_url"])  # the same account on a second browser: both connected
    assert recv_json(second)["nick"] == name

    status, body2, _ = post(chat, "/api/logout-everywhere", {}, phone)
    assert status == 200, body2
    for connection in (ws, second):
        closed = read_until_closed(connection, scaled(10))
        assert closed.rcvd is not None and (closed.rcvd.code, closed.rcvd.reason) == (4002, "signed out everywhere")
    with pytest.raises(InvalidStatus) as refused_again:
        open_ws(body["ws_url"])  # the token of before is void
    assert refused_again.value.response.status_code == 401


def test_a_name_registered_on_one_node_is_owned_on_the_other_and_signing_out_reaches_both(
    start_node: Callable[..., ChatServer], prefix: str
) -> None:
    a, b = start_node(SHARED_REDIS, prefix), start_node(SHARED_REDIS, prefix)
    name = fresh_nick("shared")
    browser = http_opener(cookies=True)
    status, body, _ = post(a, "/api/accounts", {"name": name, "password": PASSWORD}, browser)
    assert status == 201, body
    assert post_session(b, {"nick": name})[0] == 409, "a guest on the other node cannot take it"
    other_browser = http_opener(cookies=True)
    status, signed_in, _ = post(b, "/api/login", {"name": name, "password": PASSWORD}, other_browser)
    assert status == 200, signed_in
    on_b = open_ws(signed_in["ws_url"])
    assert recv_json(on_b)["nick"] == name
    for _ in range(5):
        assert post(b, "/api/login", {"name": name, "password": "wrong!!!"}, http_opener())[0] == 401
    status, limited, headers = post(a, "/api/login", {"name": name, "password": PASSWORD}, http_opener())
    assert (status, limited["error"]) == (429, "too_many_attempts"), "the failures count on every node"
    assert int(headers["Retry-After"]) > 0

    status, _, _ = post(a, "/api/logout-everywhere", {}, browser)
    assert status == 200
    closed = read_until_closed(on_b, scaled(10))
    assert closed.rcvd is not None and closed.rcvd.code == 4002
