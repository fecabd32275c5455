"""A WebSocket client on a bare socket, for what the ``websockets`` package refuses to do.

Handshakes written by hand (RFC 6455 §4.1), masked client frames built
independently of the project's encoder (§5.2), and :class:`RawClient`, which
reads frames only when told and never answers pings: a slow or silent client.
"""

from __future__ import annotations

import json
import os
import re
import socket
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from tests.support.http import Endpoints, session
from tests.support.names import fresh_nick
from tests.support.timeouts import scaled

#: The opcode of a text frame (RFC 6455 §5.2).
TEXT = 0x1

#: The sample key of RFC 6455 §1.3 and the accept value it yields.
SAMPLE_KEY = "dGhlIHNhbXBsZSBub25jZQ=="
SAMPLE_ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def handshake_request(path: str, *, host: str = "127.0.0.1", extra: str = "") -> bytes:
    """A client opening handshake (RFC 6455 §4.1) written by hand."""
    return (
        f"GET {path} HTTP/1.1\r\n"
        f"Host: {host}\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {SAMPLE_KEY}\r\n"
        "Sec-WebSocket-Version: 13\r\n"
        f"{extra}\r\n"
    ).encode()


def read_response_head(sock: socket.socket, timeout: float | None = None) -> tuple[int, bytes, bytes]:
    """Status code, head and leftover bytes of an HTTP response (``0`` if the server closed first)."""
    sock.settimeout(scaled(10) if timeout is None else timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            return 0, data, b""
        data += chunk
        assert len(data) < 65536, data[:200]
    head, _, rest = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), head, rest


def raw_status(port: int, request: bytes) -> int:
    """The status the WebSocket port answers ``request`` with, over a plain socket."""
    with socket.create_connection(("127.0.0.1", port), timeout=scaled(10)) as sock:
        sock.sendall(request)
        status, _, _ = read_response_head(sock)
        return status


def client_frame(opcode: int, payload: bytes) -> bytes:
    """A final, masked client frame (RFC 6455 §5.2), independent of the project's encoder."""
    n = len(payload)
    if n < 126:
        head = bytes([0x80 | opcode, 0x80 | n])
    elif n < 0x10000:
        head = bytes([0x80 | opcode, 0x80 | 126]) + struct.pack("!H", n)
    else:
        head = bytes([0x80 | opcode, 0x80 | 127]) + struct.pack("!Q", n)
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


@dataclass
class RawClient:
    """A WebSocket client on a bare socket: it reads frames only when told, and never answers pings."""

    sock: socket.socket
    buffer: bytes = b""

    @classmethod
    def open(cls, ws_url: str, *, rcvbuf: int | None = None) -> RawClient:
        """Connect to ``ws_url`` (``ws://127.0.0.1:PORT/ws?token=…``) and complete the handshake."""
        rest = ws_url.removeprefix("ws://")
        hostport, _, path = rest.partition("/")
        port = int(hostport.rpartition(":")[2])
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        try:
            sock.settimeout(scaled(10))
            sock.connect(("127.0.0.1", port))
            sock.sendall(handshake_request("/" + path))
            status, head, rest_bytes = read_response_head(sock)
            assert status == 101, head
            assert SAMPLE_ACCEPT.encode() in head, head
        except BaseException:
            sock.close()
            raise
        return cls(sock, rest_bytes)

    def send(self, opcode: int, payload: bytes) -> None:
        self.sock.sendall(client_frame(opcode, payload))

    def send_json(self, payload: object) -> None:
        self.send(0x1, json.dumps(payload).encode())

    def _fill(self, n: int, deadline: float) -> bool:
        """Read until ``n`` bytes are buffered; False on EOF or a reset."""
        while len(self.buffer) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no complete frame in time")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                return False
            if not chunk:
                return False
            self.buffer += chunk
        return True

    def recv_frame(self, timeout: float | None = None) -> tuple[int, bytes] | None:
        """The next server frame as ``(opcode, payload)``; ``None`` once the server closed TCP."""
        deadline = time.monotonic() + (scaled(10) if timeout is None else timeout)
        if not self._fill(2, deadline):
            return None
        opcode, length = self.buffer[0] & 0x0F, self.buffer[1] & 0x7F
        assert not self.buffer[1] & 0x80, "a server frame must not be masked (RFC 6455 §5.1)"
        offset = 2
        if length == 126:
            if not self._fill(4, deadline):
                return None
            (length,) = struct.unpack("!H", self.buffer[2:4])
            offset = 4
        elif length == 127:
            if not self._fill(10, deadline):
                return None
            (length,) = struct.unpack("!Q", self.buffer[2:10])
            offset = 10
        if not self._fill(offset + length, deadline):
            return None
        payload = self.buffer[offset : offset + length]
        self.buffer = self.buffer[offset + length :]
        return opcode, payload

    def close(self) -> None:
        self.sock.close()


def close_code(payload: bytes) -> int | None:
    """The status code of a close frame's payload (RFC 6455 §5.5.1)."""
    return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None


def raw_frames_until(client: RawClient, wanted: int, timeout: float) -> tuple[list[tuple[int, bytes]], bool]:
    """Frames read up to the first with opcode ``wanted``; whether it came (False: EOF first)."""
    deadline = time.monotonic() + timeout
    frames: list[tuple[int, bytes]] = []
    while True:
        frame = client.recv_frame(max(deadline - time.monotonic(), 0.001))
        if frame is None:
            return frames, False
        frames.append(frame)
        if frame[0] == wanted:
            return frames, True


def open_raw_member(chat: Endpoints, room: str, *, rcvbuf: int | None = None) -> tuple[RawClient, str]:
    """A raw-socket client past ``hello`` and ``joined`` in ``room``: ``(client, nick)``."""
    nick = fresh_nick("raw")
    raw = RawClient.open(session(chat, nick)["ws_url"], rcvbuf=rcvbuf)
    raw.send_json({"type": "join", "room": room})
    deadline = time.monotonic() + scaled(10)
    while True:
        frame = raw.recv_frame(max(deadline - time.monotonic(), 0.001))
        assert frame is not None, "closed before joined"
        if frame[0] == TEXT and json.loads(frame[1]).get("type") == "joined":
            return raw, nick


def kernel_buffer_bound() -> int:
    """The most bytes the kernel may hold for one connection whose reader pinned a small receive buffer."""
    try:
        wmem = int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
    except (OSError, ValueError, IndexError):
        return 16 * 1024 * 1024
    return min(wmem, 64 * 1024 * 1024) + 64 * 1024  # the slow client's receive buffer is pinned small


def ws_path(chat: Endpoints, nick: str) -> str:
    """The WebSocket path and query (token included) of a new session for ``nick``."""
    url = urlsplit(session(chat, nick)["ws_url"])
    return f"{url.path}?{url.query}"


def open_raw_websocket(chat: Endpoints, path: str) -> socket.socket:
    """A socket past a successful opening handshake, left open (it holds a connection slot)."""
    sock = socket.create_connection(("127.0.0.1", chat.ws_port), timeout=scaled(10))
    sock.sendall(handshake_request(path))
    status, head, _ = read_response_head(sock)
    assert status == 101, head
    return sock


def raw_handshake(port: int, url_path: str) -> tuple[int, bytes]:
    """Status and body of one handshake over a plain socket (0 if the server closed first)."""
    with socket.create_connection(("127.0.0.1", port), timeout=scaled(10)) as sock:
        sock.sendall(handshake_request(url_path))
        status, head, rest = read_response_head(sock)
        length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        body = rest
        while length and len(body) < int(length.group(1)):
            chunk = sock.recv(4096)
            if not chunk:
                break
            body += chunk
        return status, body
