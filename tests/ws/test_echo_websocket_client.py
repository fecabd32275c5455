"""The echo server as ``websocket-client`` sees it, down to hand-made frames.

``websocket-client`` lets a test send frames one by one (fragments, a ping in
the middle of a message) and write raw bytes to the socket, so the server's
answers to protocol violations can be read as close frames (RFC 6455 §7.1.7).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator

import pytest
import websocket
from websocket import ABNF

from tests.support.timeouts import scaled

pytestmark = pytest.mark.timeout(scaled(60))


@pytest.fixture
def ws(echo_server: str) -> Iterator[websocket.WebSocket]:
    connection = websocket.create_connection(echo_server, timeout=scaled(10))
    try:
        yield connection
    finally:
        connection.close(timeout=scaled(3))  # never raises; a no-op once a close was sent
        connection.shutdown()  # closes the socket even then


def masked_frame(first_byte: int, payload: bytes, *, mask: bool = True) -> bytes:
    """A client frame built by hand (RFC 6455 §5.2), independent of the project's encoder."""
    n = len(payload)
    if n < 126:
        head = bytes([first_byte, n | (0x80 if mask else 0)])
    elif n < 0x10000:
        head = bytes([first_byte, 126 | (0x80 if mask else 0)]) + struct.pack("!H", n)
    else:
        head = bytes([first_byte, 127 | (0x80 if mask else 0)]) + struct.pack("!Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def receive_close_code(ws: websocket.WebSocket) -> int:
    """The status code of the next frame, which must be a close frame."""
    frame = ws.recv_frame()
    assert frame.opcode == ABNF.OPCODE_CLOSE, f"expected a close frame, got opcode {frame.opcode}"
    assert len(frame.data) >= 2
    return struct.unpack("!H", frame.data[:2])[0]


def assert_server_closed_tcp(ws: websocket.WebSocket) -> None:
    """After its close frame the server closes the TCP connection first (§7.1.1)."""
    assert ws.sock is not None
    ws.sock.settimeout(scaled(10))
    assert ws.sock.recv(1) == b""


class TestEcho:
    def test_text_message_is_echoed(self, ws: websocket.WebSocket) -> None:
        ws.send("hello, wörld 🎉")
        assert ws.recv() == "hello, wörld 🎉"

    @pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 300_000])
    def test_binary_message_is_echoed_as_binary(self, ws: websocket.WebSocket, size: int) -> None:
        payload = os.urandom(size)
        ws.send_binary(payload)
        opcode, data = ws.recv_data()
        assert opcode == ABNF.OPCODE_BINARY
        assert data == payload

    def test_text_message_comes_back_as_a_text_frame(self, ws: websocket.WebSocket) -> None:
        ws.send("text")
        opcode, data = ws.recv_data()
        assert opcode == ABNF.OPCODE_TEXT
        assert data == b"text"


class TestFragmentation:
    """Continuation frames make one message (RFC 6455 §5.4)."""

    def test_continuation_frames_are_echoed_as_one_text_message(self, ws: websocket.WebSocket) -> None:
        # bytes: websocket-client encodes str only for OPCODE_TEXT, not for continuations
        ws.send_frame(ABNF.create_frame(b"Hello", ABNF.OPCODE_TEXT, fin=0))
        ws.send_frame(ABNF.create_frame(b", ", ABNF.OPCODE_CONT, fin=0))
        ws.send_frame(ABNF.create_frame("wörld".encode(), ABNF.OPCODE_CONT, fin=1))
        assert ws.recv() == "Hello, wörld"

    def test_continuation_frames_are_echoed_as_one_binary_message(self, ws: websocket.WebSocket) -> None:
        parts = [os.urandom(10), b"", os.urandom(70_000)]
        ws.send_frame(ABNF.create_frame(parts[0], ABNF.OPCODE_BINARY, fin=0))
        ws.send_frame(ABNF.create_frame(parts[1], ABNF.OPCODE_CONT, fin=0))
        ws.send_frame(ABNF.create_frame(parts[2], ABNF.OPCODE_CONT, fin=1))
        opcode, data = ws.recv_data()
        assert opcode == ABNF.OPCODE_BINARY
        assert data == b"".join(parts)

    def test_ping_between_fragments_is_answered_before_the_message(self, ws: websocket.WebSocket) -> None:
        # §5.4: control frames may be injected in the middle of a fragmented message.
        ws.send_frame(ABNF.create_frame(b"first half, ", ABNF.OPCODE_TEXT, fin=0))
        ws.ping("mid-message")
        ws.send_frame(ABNF.create_frame(b"second half", ABNF.OPCODE_CONT, fin=1))
        opcode, frame = ws.recv_data_frame(control_frame=True)
        assert opcode == ABNF.OPCODE_PONG
        assert frame.data == b"mid-message"
        assert ws.recv() == "first half, second half"


class TestPingPong:
    def test_ping_is_answered_with_a_pong_carrying_its_payload(self, ws: websocket.WebSocket) -> None:
        ws.ping("payload 123")
        opcode, frame = ws.recv_data_frame(control_frame=True)
        assert opcode == ABNF.OPCODE_PONG
        assert frame.data == b"payload 123"

    def test_ping_with_125_byte_payload_is_answered(self, ws: websocket.WebSocket) -> None:
        payload = os.urandom(125)
        ws.ping(payload)
        opcode, frame = ws.recv_data_frame(control_frame=True)
        assert opcode == ABNF.OPCODE_PONG
        assert frame.data == payload

    def test_unsolicited_pong_is_ignored(self, ws: websocket.WebSocket) -> None:
        ws.pong("heartbeat")
        ws.send("still talking")
        assert ws.recv() == "still talking"


class TestClose:
    def test_client_close_code_is_echoed(self, ws: websocket.WebSocket) -> None:
        ws.close(status=4000, reason=b"client is done", timeout=scaled(5))
        assert ws.close_frame is not None
        assert struct.unpack("!H", ws.close_frame.data[:2])[0] == 4000

    def test_server_closes_tcp_after_echoing_the_close(self, ws: websocket.WebSocket) -> None:
        ws.send_close(1000, b"bye")
        assert receive_close_code(ws) == 1000
        assert_server_closed_tcp(ws)

    def test_close_without_a_code_is_answered_with_an_empty_close(self, ws: websocket.WebSocket) -> None:
        # §5.5.1: the body is optional; with none, 1005 is reported and nothing echoed.
        ws.send(b"", ABNF.OPCODE_CLOSE)
        frame = ws.recv_frame()
        assert frame.opcode == ABNF.OPCODE_CLOSE
        assert frame.data == b""
        assert_server_closed_tcp(ws)


ZERO_KEY = b"\x00\x00\x00\x00"
SURROGATE = b"\xed\xa0\x80"  # U+D800 encoded: not valid UTF-8 (RFC 3629 §3)

# A frame the server must refuse, and the close code it must answer with.
BAD_FRAMES = [
    pytest.param(masked_frame(0x81, b"hi", mask=False), 1002, id="unmasked-frame"),
    pytest.param(masked_frame(0x83, b"hi"), 1002, id="reserved-opcode-3"),
    pytest.param(masked_frame(0x8B, b""), 1002, id="reserved-control-opcode-11"),
    pytest.param(masked_frame(0x80, b"orphan"), 1002, id="continuation-without-message"),
    pytest.param(masked_frame(0x09, b""), 1002, id="fragmented-ping"),
    pytest.param(masked_frame(0x89, b"x" * 126), 1002, id="ping-over-125-bytes"),
    pytest.param(masked_frame(0x01, b"a") + masked_frame(0x81, b"b"), 1002, id="new-message-inside-fragmented"),
    pytest.param(masked_frame(0x88, b"\x03"), 1002, id="close-with-one-byte"),
    pytest.param(masked_frame(0x88, struct.pack("!H", 1005)), 1002, id="close-with-code-1005"),
    pytest.param(masked_frame(0x88, struct.pack("!H", 999)), 1002, id="close-with-code-999"),
    pytest.param(masked_frame(0x88, struct.pack("!H", 1000) + b"\xff"), 1007, id="close-reason-not-utf8"),
    pytest.param(masked_frame(0x81, "κόσμε".encode() + SURROGATE), 1007, id="text-not-utf8"),
    pytest.param(masked_frame(0x01, b"\xf0\x9f") + masked_frame(0x80, b"("), 1007, id="text-not-utf8-across-fragments"),
    pytest.param(masked_frame(0xC1, b"hi"), 1002, id="rsv1-without-deflate"),
    pytest.param(masked_frame(0x91, b"hi"), 1002, id="rsv3-set"),
    # lengths not in their shortest form (§5.2), masked with a zero key
    pytest.param(b"\x82\xfe" + struct.pack("!H", 100) + ZERO_KEY + b"x" * 100, 1002, id="16-bit-length-not-minimal"),
    pytest.param(b"\x82\xff" + struct.pack("!Q", 100) + ZERO_KEY + b"x" * 100, 1002, id="64-bit-length-not-minimal"),
    pytest.param(b"\x82\xff" + struct.pack("!Q", 1 << 63) + ZERO_KEY, 1002, id="64-bit-length-high-bit-set"),
]


class TestProtocolViolations:
    """Invalid frames fail the connection with a close code (RFC 6455 §7.1.7, §7.4.1)."""

    def test_rsv2_frame_gets_close_1002(self, ws: websocket.WebSocket) -> None:
        ws.send_frame(ABNF(fin=1, rsv2=1, opcode=ABNF.OPCODE_TEXT, data="hi"))
        assert receive_close_code(ws) == 1002
        assert_server_closed_tcp(ws)

    def test_unmasked_frame_written_raw_gets_close_1002(self, ws: websocket.WebSocket) -> None:
        assert ws.sock is not None
        ws.sock.sendall(b"\x81\x05hello")  # FIN + text, no mask bit (§5.1: clients must mask)
        assert receive_close_code(ws) == 1002
        assert_server_closed_tcp(ws)

    @pytest.mark.parametrize(("data", "code"), BAD_FRAMES)
    def test_invalid_frame_gets_the_right_close_code(self, ws: websocket.WebSocket, data: bytes, code: int) -> None:
        assert ws.sock is not None
        ws.sock.sendall(data)
        assert receive_close_code(ws) == code
        assert_server_closed_tcp(ws)

    def test_valid_message_before_garbage_is_echoed_first(self, ws: websocket.WebSocket) -> None:
        assert ws.sock is not None
        ws.sock.sendall(masked_frame(0x81, b"good") + masked_frame(0x81, b"bad", mask=False))
        assert ws.recv() == "good"
        assert receive_close_code(ws) == 1002
        assert_server_closed_tcp(ws)

    def test_frames_after_a_violation_are_not_processed(self, ws: websocket.WebSocket) -> None:
        assert ws.sock is not None
        ws.sock.sendall(masked_frame(0x83, b"") + masked_frame(0x81, b"ignored") + masked_frame(0x89, b"ignored"))
        assert receive_close_code(ws) == 1002
        assert_server_closed_tcp(ws)
