"""The request head reader and the response writer (RFC 7230 §3, RFC 6585 §5)."""

from __future__ import annotations

from http import HTTPStatus

import pytest

from app.ws.exceptions import HandshakeRejected
from app.ws.http11 import MAX_HEAD_SIZE, Request, RequestReader, Response, error_response

REQUEST = (
    b"GET /chat?room=lobby&room=dev HTTP/1.1\r\n"
    b"Host: server.example.com\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
    b"\r\n"
)


def padded_request(size: int) -> bytes:
    """A valid request head of exactly ``size`` bytes, CRLF CRLF included."""
    head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: "
    tail = b"\r\n\r\n"
    return head + b"a" * (size - len(head) - len(tail)) + tail


def rejection(data: bytes) -> HandshakeRejected:
    with pytest.raises(HandshakeRejected) as info:
        RequestReader().feed(data)
    return info.value


class TestRequestReader:
    def test_request_fed_whole_is_parsed(self) -> None:
        request = RequestReader().feed(REQUEST)
        assert request is not None
        assert request.method == "GET"
        assert request.target == "/chat?room=lobby&room=dev"
        assert request.version == (1, 1)
        assert request.headers[0] == ("Host", "server.example.com")
        assert len(request.headers) == 5

    def test_request_fed_one_byte_at_a_time_is_assembled(self) -> None:
        reader = RequestReader()
        for byte in REQUEST[:-1]:
            assert reader.feed(bytes([byte])) is None
        assert reader.feed(REQUEST[-1:]) == RequestReader().feed(REQUEST)
        assert reader.leftover == b""

    def test_request_split_at_every_position_is_assembled(self) -> None:
        expected = RequestReader().feed(REQUEST)
        for cut in range(1, len(REQUEST)):
            reader = RequestReader()
            assert reader.feed(REQUEST[:cut]) is None
            assert reader.feed(REQUEST[cut:]) == expected

    def test_bytes_after_the_head_are_kept_as_leftover(self) -> None:
        """The client may send its first frames right behind the handshake."""
        frame = bytes.fromhex("818537fa213d7f9f4d5158")
        reader = RequestReader()
        assert reader.feed(REQUEST + frame) is not None
        assert reader.leftover == frame

    def test_leftover_kept_when_the_head_ends_in_a_later_piece(self) -> None:
        reader = RequestReader()
        assert reader.feed(REQUEST[:-3]) is None
        assert reader.feed(REQUEST[-3:] + b"extra") is not None
        assert reader.leftover == b"extra"

    def test_head_of_exactly_the_limit_is_accepted(self) -> None:
        data = padded_request(MAX_HEAD_SIZE)
        assert len(data) == 8 * 1024
        reader = RequestReader()
        for i in range(0, len(data) - 1, 512):
            assert reader.feed(data[i : min(i + 512, len(data) - 1)]) is None
        assert reader.feed(data[-1:]) is not None

    def test_complete_head_over_8_kib_is_rejected_with_431(self) -> None:
        """RFC 6585 §5: 431 Request Header Fields Too Large."""
        assert rejection(padded_request(MAX_HEAD_SIZE + 1)).status == HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE

    def test_endless_head_is_rejected_with_431_once_over_8_kib(self) -> None:
        """The reader does not buffer without bound while waiting for CRLF CRLF."""
        reader = RequestReader()
        chunk = b"GET / HTTP/1.1\r\n" + b"X-Pad: " + b"a" * 1000 + b"\r\n"
        fed = 0
        with pytest.raises(HandshakeRejected) as info:
            while fed <= MAX_HEAD_SIZE + len(chunk):
                reader.feed(chunk)
                fed += len(chunk)
        assert info.value.status == HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE
        assert fed <= MAX_HEAD_SIZE

    def test_endless_head_fed_one_byte_at_a_time_is_rejected_at_the_limit(self) -> None:
        reader = RequestReader()
        for _ in range(MAX_HEAD_SIZE):
            assert reader.feed(b"a") is None
        with pytest.raises(HandshakeRejected) as info:
            reader.feed(b"a")
        assert info.value.status == 431

    @pytest.mark.parametrize(
        "line",
        [
            b"GET /",
            b"GET / HTTP/1.1 extra",
            b"GET  / HTTP/1.1",
            b"GET / http/1.1",
            b"GET / HTTP/11",
            b"GET / HTTP/1.1 ",
            b" GET / HTTP/1.1",
            b"G(T / HTTP/1.1",
            b"",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        ],
    )
    def test_malformed_request_line_is_rejected_with_400(self, line: bytes) -> None:
        """RFC 7230 §3.1.1: request-line = method SP request-target SP HTTP-version."""
        error = rejection(line + b"\r\nHost: x\r\n\r\n")
        assert error.status == HTTPStatus.BAD_REQUEST
        assert error.reason == "malformed request line"

    @pytest.mark.parametrize(
        "field",
        [
            pytest.param(b"X-Folded: a\r\n continued", id="obs-fold-space"),
            pytest.param(b"X-Folded: a\r\n\tcontinued", id="obs-fold-tab"),
            pytest.param(b"Host : x", id="space-before-colon"),
            pytest.param(b"Host\t: x", id="tab-before-colon"),
            pytest.param(b"Ho(st: x", id="bad-token"),
            pytest.param(b"Ho st: x", id="space-in-name"),
            pytest.param(b": x", id="empty-name"),
            pytest.param(b"NoColon", id="no-colon"),
            pytest.param(b"X-Ctl: a\x01b", id="control-character"),
            pytest.param(b"X-Del: a\x7fb", id="delete-character"),
        ],
    )
    def test_malformed_header_field_is_rejected_with_400(self, field: bytes) -> None:
        """RFC 7230 §3.2, §3.2.4: no obs-fold, no whitespace before the colon, names are tokens."""
        error = rejection(b"GET / HTTP/1.1\r\n" + field + b"\r\nHost: x\r\n\r\n")
        assert error.status == HTTPStatus.BAD_REQUEST

    def test_field_value_whitespace_is_trimmed(self) -> None:
        request = RequestReader().feed(b"GET / HTTP/1.1\r\nHost: \t x \t\r\nX-Empty:\r\n\r\n")
        assert request is not None
        assert request.headers == (("Host", "x"), ("X-Empty", ""))

    def test_obs_text_in_a_value_is_latin_1(self) -> None:
        """RFC 7230 §3.2.4: field values outside ASCII decode as ISO-8859-1."""
        request = RequestReader().feed(b"GET / HTTP/1.1\r\nX-Name: caf\xe9\r\n\r\n")
        assert request is not None
        assert request.get("x-name") == "café"

    def test_http_1_0_is_parsed_for_the_handshake_to_refuse(self) -> None:
        request = RequestReader().feed(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
        assert request is not None
        assert request.version == (1, 0)


class TestRequest:
    def test_header_lookup_ignores_case_and_joins_repeats(self) -> None:
        """RFC 7230 §3.2.2: repeated fields combine into one comma-separated list."""
        request = Request("GET", "/", (1, 1), (("Connection", "keep-alive"), ("connection", "Upgrade")))
        assert request.get_all("CONNECTION") == ["keep-alive", "Upgrade"]
        assert request.get("Connection") == "keep-alive, Upgrade"
        assert request.get("Upgrade") is None
        assert request.get_all("Upgrade") == []

    def test_path_and_query_come_from_the_target(self) -> None:
        request = RequestReader().feed(REQUEST)
        assert request is not None
        assert request.path == "/chat"
        assert request.query == {"room": ["lobby", "dev"]}


class TestResponse:
    def test_response_serializes_status_line_headers_and_body(self) -> None:
        response = Response(HTTPStatus.SWITCHING_PROTOCOLS, [("Upgrade", "websocket"), ("Connection", "Upgrade")])
        assert response.serialize() == (
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
        )

    def test_error_response_has_a_body_saying_why_with_matching_length(self) -> None:
        response = error_response(HTTPStatus.BAD_REQUEST, "malformed request line")
        head, _, body = response.serialize().partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        assert lines[0] == b"HTTP/1.1 400 Bad Request"
        assert b"Content-Length: %d" % len(body) in lines
        assert b"Connection: close" in lines
        assert body == b"400 Bad Request: malformed request line\n"

    def test_error_response_keeps_extra_headers_first(self) -> None:
        response = error_response(HTTPStatus.METHOD_NOT_ALLOWED, "only GET", [("Allow", "GET")])
        assert response.headers[0] == ("Allow", "GET")
