"""``wss://`` on the WebSocket port: a throw-away certificate, clients that verify it.

The certificate is made by the ``openssl`` command for this test (CN and
subjectAltName 127.0.0.1), and the clients (``websockets``, ``websocket-client``)
trust that certificate only: the connection is verified, not merely encrypted.
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import websocket  # websocket-client

from tests.support.clients import is_message, join, open_ws, recv_json, recv_until, say
from tests.support.gunicorn import ChatServer
from tests.support.http import session
from tests.support.names import fresh_nick, fresh_room
from tests.support.timeouts import scaled

StartChat = Callable[..., ChatServer]


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def trusting(cert: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(cert))
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    return context


def test_clients_chat_over_wss_verifying_the_certificate(
    start_chat: StartChat, tmp_path: Path, certificate: tuple[Path, Path]
) -> None:
    cert, key = certificate
    chat = start_chat(tmp_path, CHAT_TLS_CERT=cert, CHAT_TLS_KEY=key)
    alice = session(chat, fresh_nick("alice"))
    assert alice["ws_url"].startswith(f"wss://127.0.0.1:{chat.ws_port}/ws?token=")
    room = fresh_room()
    with open_ws(alice["ws_url"], ssl=trusting(cert)) as a:
        assert recv_json(a)["type"] == "hello"
        join(a, room)
        bob = websocket.create_connection(
            session(chat, fresh_nick("bob"))["ws_url"],
            sslopt={"context": trusting(cert)},
            timeout=scaled(10),
            suppress_origin=True,  # not a browser: no Origin, as the chat's origin check expects
        )
        try:
            assert json.loads(bob.recv())["type"] == "hello"
            bob.send(json.dumps({"type": "join", "room": room}))
            while json.loads(bob.recv())["type"] != "joined":
                pass
            big = "x" * 3000  # several TLS records' worth, both ways
            sent = [say(a, room, f"{i} {big}") for i in range(30)]
            got = []
            while len(got) < len(sent):
                event = json.loads(bob.recv())
                if event["type"] == "message":
                    got.append(event)
            assert [m["id"] for m in got] == [m["id"] for m in sent]
            bob.send(json.dumps({"type": "say", "room": room, "text": "over TLS too"}))
            assert recv_until(a, is_message(room))["text"] == "over TLS too"
        finally:
            bob.close()


def test_a_client_that_does_not_trust_the_certificate_cannot_connect(
    start_chat: StartChat, tmp_path: Path, certificate: tuple[Path, Path]
) -> None:
    cert, key = certificate
    chat = start_chat(tmp_path, CHAT_TLS_CERT=cert, CHAT_TLS_KEY=key)
    url = session(chat, fresh_nick())["ws_url"]
    with pytest.raises(ssl.SSLCertVerificationError):
        open_ws(url, ssl=ssl.create_default_context())


def test_plain_http_on_the_tls_port_is_not_served_and_the_server_goes_on(
    start_chat: StartChat, tmp_path: Path, certificate: tuple[Path, Path]
) -> None:
    cert, key = certificate
    chat = start_chat(tmp_path, CHAT_TLS_CERT=cert, CHAT_TLS_KEY=key)
    with socket.create_connection(("127.0.0.1", chat.ws_port), timeout=scaled(10)) as sock:
        sock.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n")
        reply = sock.recv(4096)
        assert not reply.startswith(b"HTTP/1.1 101")
    with open_ws(session(chat, fresh_nick())["ws_url"], ssl=trusting(cert)) as ws:
        assert recv_json(ws)["type"] == "hello"
