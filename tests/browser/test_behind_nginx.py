"""The chat behind Debian's real nginx, configured with docs/deploy/nginx.conf.

The site file is used as it is, but for its addresses: the upstreams point at
this test's gunicorn and WebSocket ports, and nginx listens on a free port of
127.0.0.1. A browser then uses only nginx's origin: pages, the API and the
WebSocket (``CHAT_WS_PUBLIC_URL=/ws``).
"""

from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.support.clients import is_message, join, open_ws, recv_json, recv_until, say
from tests.support.gunicorn import ChatServer
from tests.support.http import http_request, session
from tests.support.names import fresh_nick, fresh_room
from tests.support.pages import WAIT_MS, enter, message
from tests.support.pages import say as say_in_page
from tests.support.processes import free_port
from tests.support.timeouts import scaled

REPO_ROOT = Path(__file__).resolve().parents[2]
SITE = REPO_ROOT / "docs" / "deploy" / "nginx.conf"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

NewPage = Callable[[], Page]


@dataclass
class Proxy:
    """nginx in front of a chat; ``http`` is the only origin clients use."""

    port: int
    process: subprocess.Popen[bytes]

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def render_site(web_port: int, ws_port: int, listen_port: int) -> str:
    """docs/deploy/nginx.conf with this test's addresses, and nothing else changed."""
    site = SITE.read_text()
    for old, new in (
        ("server 127.0.0.1:8000;", f"server 127.0.0.1:{web_port};"),
        ("server 127.0.0.1:8001;", f"server 127.0.0.1:{ws_port};"),
        ("listen 80;", f"listen 127.0.0.1:{listen_port};"),
    ):
        assert site.count(old) == 1, f"{SITE} no longer has {old!r} once"
        site = site.replace(old, new)
    return site


def start_nginx(directory: Path, web_port: int, ws_port: int, port: int) -> Proxy:
    """Debian's nginx, as its own master process, with the site file and temp paths in ``directory``."""
    if not Path(NGINX).exists():
        pytest.fail("nginx is not installed (apt-get install nginx)")
    (directory / "site.conf").write_text(render_site(web_port, ws_port, port))
    temp = directory / "temp"
    temp.mkdir()
    (directory / "nginx.conf").write_text(
        f"""
daemon off;
master_process on;
worker_processes 1;
pid {directory}/nginx.pid;
error_log {directory}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log {directory}/access.log;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    include {directory}/site.conf;
}}
"""
    )
    config = directory / "nginx.conf"
    check = subprocess.run([NGINX, "-t", "-c", str(config)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    with (directory / "stderr.log").open("wb") as stderr:
        process = subprocess.Popen(
            [NGINX, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True
        )
    deadline = time.monotonic() + scaled(10)
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return Proxy(port, process)
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"nginx did not start: {(directory / 'error.log').read_text(errors='replace')}")
            time.sleep(0.05)


@pytest.fixture
def proxied(tmp_path: Path, launch) -> Iterator[tuple[ChatServer, Proxy]]:  # type: ignore[no-untyped-def]
    """A chat configured as docs/deploy/nginx.conf says, and nginx in front of it."""
    port = free_port()  # nginx's: the chat must know the origin browsers will see
    origin = f"http://127.0.0.1:{port}"
    chat = launch(CHAT_WS_PUBLIC_URL="/ws", CHAT_ALLOWED_ORIGINS=origin, CHAT_MAX_CONNECTIONS_PER_ADDRESS=0)
    directory = tmp_path / "nginx"
    directory.mkdir()
    proxy = start_nginx(directory, chat.http_port, chat.ws_port, port)
    yield chat, proxy
    proxy.process.send_signal(signal.SIGQUIT)  # graceful: ends the proxied WebSockets too
    try:
        proxy.process.wait(timeout=scaled(10))
    except subprocess.TimeoutExpired:
        proxy.process.kill()
        proxy.process.wait()


def test_the_api_hands_out_the_proxys_websocket_url_and_clients_chat_through_it(
    proxied: tuple[ChatServer, Proxy],
) -> None:
    _, proxy = proxied
    alice = session(proxy, fresh_nick("alice"))  # type: ignore[arg-type]
    assert alice["ws_url"].startswith(f"ws://127.0.0.1:{proxy.port}/ws?token=")
    status, _, headers = http_request(proxy.http + "/")
    assert status == 200
    assert f"ws://127.0.0.1:{proxy.port}" in headers["Content-Security-Policy"], "connect-src allows the proxy's /ws"
    room = fresh_room()
    with (
        open_ws(alice["ws_url"], origin=proxy.http) as a,
        open_ws(session(proxy, fresh_nick("bob"))["ws_url"], origin=proxy.http) as b,  # type: ignore[arg-type]
    ):
        assert recv_json(a)["type"] == "hello"
        assert recv_json(b)["type"] == "hello"
        join(a, room)
        join(b, room)
        sent = say(a, room, "through nginx")
        got = recv_until(b, is_message(room))
        assert (got["id"], got["text"]) == (sent["id"], "through nginx")


def test_a_foreign_origin_is_refused_through_the_proxy(proxied: tuple[ChatServer, Proxy]) -> None:
    _, proxy = proxied
    url = session(proxy, fresh_nick())["ws_url"]  # type: ignore[arg-type]
    with pytest.raises(Exception, match="403"):
        open_ws(url, origin="http://evil.example")


def test_a_browser_chats_through_nginx_on_one_origin(proxied: tuple[ChatServer, Proxy], new_page: NewPage) -> None:
    _, proxy = proxied
    room, alice, bob = fresh_room(), fresh_nick("alice"), fresh_nick("bob")
    seen: list[str] = []
    a = new_page()
    a.on("websocket", lambda ws: seen.append(ws.url))
    enter(a, proxy, alice, room)  # type: ignore[arg-type]
    b = enter(new_page(), proxy, bob, room)  # type: ignore[arg-type]
    say_in_page(a, "hello from behind nginx")
    expect(message(b, "hello from behind nginx")).to_have_count(1, timeout=WAIT_MS)
    assert seen and all(re.match(rf"ws://127\.0\.0\.1:{proxy.port}/ws\b", url) for url in seen), seen
    assert a.url.startswith(f"http://127.0.0.1:{proxy.port}/chat")
