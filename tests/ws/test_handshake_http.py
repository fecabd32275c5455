"""The opening handshake over raw TCP: what the echo server answers to each request.

Requests are written by hand to a socket; the expected ``Sec-WebSocket-Accept``
is computed here from RFC 6455 §1.3, not with the project's function.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import struct
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.echo import run_echo_server
from tests.support.processes import stop_process
from tests.support.timeouts import scaled

pytestmark = pytest.mark.timeout(scaled(60))

RFC_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
# The sample nonce of RFC 6455 §1.3 and the answer the RFC gives for it.
RFC_KEY = "dGhlIHNhbXBsZSBub25jZQ=="
RFC_ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def expected_accept(key: str) -> str:
    """RFC 6455 §1.3: base64(SHA-1(key + GUID))."""
    return base64.b64encode(hashlib.sha1(key.encode() + RFC_GUID).digest()).decode()


def new_key() -> str:
    return base64.b64encode(os.urandom(16)).decode()


def upgrade_request(
    *,
    method: str = "GET",
    target: str = "/chat?room=1",
    version: str = "HTTP/1.1",
    key: str | None = RFC_KEY,
    ws_version: str | None = "13",
    extra: list[tuple[str, str]] | None = None,
    upgrade: bool = True,
) -> bytes:
    lines = [f"{method} {target} {version}", "Host: 127.0.0.1"]
    if upgrade:
        lines += ["Upgrade: websocket", "Connection: Upgrade"]
    if key is not None:
        lines.append(f"Sec-WebSocket-Key: {key}")
    if ws_version is not None:
        lines.append(f"Sec-WebSocket-Version: {ws_version}")
    lines += [f"{name}: {value}" for name, value in extra or []]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


@dataclass
class HttpResponse:
    status: int
    headers: dict[str, str]  # lower-cased names
    body: bytes
    rest: bytes  # bytes after the head of a 101 (WebSocket frames)


def parse_response(data: bytes) -> HttpResponse:
    head, sep, rest = data.partition(b"\r\n\r\n")
    assert sep, f"no complete response head in {data[:200]!r}"
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    http_version, status, _ = status_line.split(" ", 2)
    assert http_version == "HTTP/1.1"
    headers: dict[str, str] = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return HttpResponse(int(status), headers, rest if int(status) != 101 else b"", rest)


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=scaled(10))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_until_eof(sock: socket.socket) -> bytes:
    """Everything the server sends before it closes the connection (bounded by the socket timeout)."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
        assert len(data) < 1_000_000, "response too long"
    return data


def read_head(sock: socket.socket) -> bytes:
    """Bytes up to and including the end of a response head."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        assert chunk, f"connection closed before the response head ended: {data!r}"
        data += chunk
    return data


def read_exactly(sock: socket.socket, size: int, initial: bytes = b"") -> bytes:
    """``size`` bytes: what followed the response head, then from the socket."""
    data = initial
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, f"connection closed after {data!r}"
        data += chunk
    return data


def refused(port: int, request: bytes) -> HttpResponse:
    """Send a request the server must refuse; the response, read until the server closes."""
    with connect(port) as sock:
        sock.sendall(request)
        response = parse_response(read_until_eof(sock))
    assert response.status >= 400
    # an error response says why, in a body of the announced length, and closes
    assert response.body
    assert int(response.headers["content-length"]) == len(response.body)
    assert response.headers.get("connection", "").lower() == "close"
    return response


def client_frame(opcode: int, payload: bytes) -> bytes:
    """A masked client frame (RFC 6455 §5.2-5.3), payloads under 126 bytes."""
    key = os.urandom(4)
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + key + masked


class TestSuccessfulHandshake:
    """A valid upgrade gets 101 Switching Protocols (RFC 6455 §4.2.2)."""

    def test_rfc_sample_key_gets_the_rfc_sample_accept(self, echo_port: int) -> None:
        assert expected_accept(RFC_KEY) == RFC_ACCEPT  # our own computation, checked against §1.3
        with connect(echo_port) as sock:
            sock.sendall(upgrade_request(key=RFC_KEY))
            response = parse_response(read_head(sock))
        assert response.status == 101
        assert response.headers["sec-websocket-accept"] == RFC_ACCEPT
        assert response.headers["upgrade"].lower() == "websocket"
        assert "upgrade" in response.headers["connection"].lower()

    def test_request_sent_in_small_pieces_gets_101(self, echo_port: int) -> None:
        key = new_key()
        request = upgrade_request(key=key)
        with connect(echo_port) as sock:
            for start in range(0, len(request), 7):
                sock.sendall(request[start : start + 7])
                time.sleep(0.01)
            response = parse_response(read_head(sock))
            assert response.status == 101
            assert response.headers["sec-websocket-accept"] == expected_accept(key)
            # and the connection then speaks WebSocket
            sock.sendall(client_frame(0x1, b"after a slow handshake"))
            assert read_exactly(sock, 24, response.rest) == b"\x81\x16after a slow handshake"

    def test_frame_sent_with_the_request_is_echoed(self, echo_port: int) -> None:
        request = upgrade_request(key=new_key()) + client_frame(0x2, b"eager")
        with connect(echo_port) as sock:
            sock.sendall(request)
            response = parse_response(read_head(sock))
            assert response.status == 101
            assert read_exactly(sock, 7, response.rest) == b"\x82\x05eager"

    def test_no_extension_is_agreed_without_an_offer(self, echo_port: int) -> None:
        with connect(echo_port) as sock:
            sock.sendall(upgrade_request(key=new_key()))
            response = parse_response(read_head(sock))
        assert response.status == 101
        assert "sec-websocket-extensions" not in response.headers

    def test_deflate_offer_is_answered_with_permessage_deflate(self, echo_port: int) -> None:
        offer = [("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits")]
        with connect(echo_port) as sock:
            sock.sendall(upgrade_request(key=new_key(), extra=offer))
            response = parse_response(read_head(sock))
        assert response.status == 101
        assert response.headers["sec-websocket-extensions"].startswith("permessage-deflate")


class TestRefusedHandshake:
    """Requests that cannot open a WebSocket get an HTTP error that says why (RFC 6455 §4.2.1-2, §4.4)."""

    def test_plain_get_without_upgrade_gets_426_with_a_body(self, echo_port: int) -> None:
        response = refused(echo_port, upgrade_request(upgrade=False, key=None, ws_version=None))
        assert response.status == 426
        # RFC 7231 §6.5.15: a 426 names the protocol to upgrade to
        assert response.headers["upgrade"].lower() == "websocket"
        assert b"Upgrade" in response.body

    def test_websocket_version_8_gets_426_naming_version_13(self, echo_port: int) -> None:
        response = refused(echo_port, upgrade_request(ws_version="8"))
        assert response.status == 426
        assert response.headers["sec-websocket-version"] == "13"

    def test_missing_websocket_version_gets_426(self, echo_port: int) -> None:
        response = refused(echo_port, upgrade_request(ws_version=None))
        assert response.status == 426
        assert response.headers["sec-websocket-version"] == "13"

    @pytest.mark.parametrize(
        "key",
        [
            pytest.param("not base64!", id="not-base64"),
            pytest.param(base64.b64encode(b"12345678").decode(), id="8-bytes"),
            pytest.param(base64.b64encode(b"x" * 17).decode(), id="17-bytes"),
            pytest.param("", id="empty"),
            pytest.param(None, id="missing"),
        ],
    )
    def test_bad_websocket_key_gets_400(self, echo_port: int, key: str | None) -> None:
        response = refused(echo_port, upgrade_request(key=key))
        assert response.status == 400

    def test_two_websocket_keys_get_400(self, echo_port: int) -> None:
        response = refused(echo_port, upgrade_request(extra=[("Sec-WebSocket-Key", new_key())]))
        assert response.status == 400

    def test_post_gets_405_allowing_get(self, echo_port: int) -> None:
        response = refused(echo_port, upgrade_request(method="POST"))
        assert response.status == 405
        assert response.headers["allow"] == "GET"

    def test_http_1_0_gets_505(self, echo_port: int) -> None:
        response = refused(echo_port, upgrade_request(version="HTTP/1.0"))
        assert response.status == 505

    def test_missing_host_gets_400(self, echo_port: int) -> None:
        request = upgrade_request().replace(b"Host: 127.0.0.1\r\n", b"")
        assert refused(echo_port, request).status == 400

    @pytest.mark.parametrize(
        "request_bytes",
        [
            pytest.param(b"GARBAGE\r\n\r\n", id="no-request-line"),
            pytest.param(b"GET /\r\nHost: x\r\n\r\n", id="http-0.9-request-line"),
            pytest.param(upgrade_request().replace(b"Host:", b"Host :"), id="space-before-colon"),
            pytest.param(upgrade_request().replace(b"Host: 127.0.0.1", b"Host: 127.0.0.1\r\n folded"), id="obs-fold"),
        ],
    )
    def test_malformed_request_gets_400(self, echo_port: int, request_bytes: bytes) -> None:
        assert refused(echo_port, request_bytes).status == 400

    @pytest.mark.parametrize("pad", [9 * 1024, 64 * 1024])
    def test_request_head_over_8_kib_gets_431(self, echo_port: int, pad: int) -> None:
        response = refused(echo_port, upgrade_request(extra=[("X-Padding", "a" * pad)]))
        assert response.status == 431

    def test_head_over_8_kib_without_its_end_gets_431(self, echo_port: int) -> None:
        # the server must not wait for a blank line that would come after its limit
        request = upgrade_request()[:-2] + b"X-Padding: " + b"a" * (9 * 1024)
        assert refused(echo_port, request).status == 431

    def test_server_still_accepts_after_refusals(self, echo_port: int) -> None:
        refused(echo_port, upgrade_request(method="POST"))
        with connect(echo_port):
            pass  # a client that connects and leaves without a word
        with connect(echo_port) as sock:
            sock.sendall(upgrade_request(key=new_key()))
            assert parse_response(read_head(sock)).status == 101


class TestServerProcess:
    def test_server_exits_cleanly_on_sigterm(self, tmp_path: Path) -> None:
        with run_echo_server(tmp_path) as server:
            with connect(server.port) as sock:
                sock.sendall(upgrade_request(key=new_key()))
                assert parse_response(read_head(sock)).status == 101
                sock.sendall(client_frame(0x8, struct.pack("!H", 1000)))
                assert read_until_eof(sock).startswith(b"\x88\x02\x03\xe8")
            started = time.monotonic()
            assert stop_process(server.process, scaled(10)) == 0
            assert time.monotonic() - started < scaled(4)
