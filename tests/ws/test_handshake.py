"""The server's opening handshake (RFC 6455 §4.2): 101 or a rejection that says why."""

from __future__ import annotations

from http import HTTPStatus

import pytest

from app.ws.deflate import DeflateConfig
from app.ws.exceptions import HandshakeRejected
from app.ws.handshake import Handshake, accept, accept_key, parse_extensions, parse_tokens, rejection
from app.ws.http11 import MAX_HEAD_SIZE, Request, RequestReader

RFC_KEY = "dGhlIHNhbXBsZSBub25jZQ=="
RFC_ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

BASE_HEADERS = {
    "Host": "server.example.com",
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Key": RFC_KEY,
    "Sec-WebSocket-Version": "13",
}


def make_request(
    *,
    method: str = "GET",
    version: tuple[int, int] = (1, 1),
    drop: tuple[str, ...] = (),
    **overrides: str,
) -> Request:
    """A valid upgrade request, with headers replaced (``Sec_WebSocket_Key=...``) or dropped."""
    headers = dict(BASE_HEADERS)
    for name, value in overrides.items():
        headers[name.replace("_", "-")] = value
    for name in drop:
        del headers[name]
    return Request(method, "/chat", version, tuple(headers.items()))


def parse_response(data: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
    """Status code, headers and body of a serialized response, checked for well-formedness."""
    head, sep, body = data.partition(b"\r\n\r\n")
    assert sep, "response head must end with CRLF CRLF"
    status_line, *lines = head.decode("latin-1").split("\r\n")
    version, code, phrase = status_line.split(" ", 2)
    assert version == "HTTP/1.1"
    assert phrase == HTTPStatus(int(code)).phrase
    headers = []
    for line in lines:
        name, colon, value = line.partition(": ")
        assert colon and name and value == value.strip()
        headers.append((name, value))
    return int(code), headers, body


def header(headers: list[tuple[str, str]], name: str) -> list[str]:
    return [value for key, value in headers if key.lower() == name.lower()]


def assert_rejected(handshake: Handshake, status: HTTPStatus) -> list[tuple[str, str]]:
    """The handshake is refused with ``status`` and a well-formed response that says why."""
    assert not handshake.accepted
    assert handshake.error is not None
    assert handshake.error.status == status
    assert handshake.response.status == status
    assert handshake.subprotocol is None
    assert handshake.deflate is None
    code, headers, body = parse_response(handshake.response.serialize())
    assert code == status.value
    assert header(headers, "Content-Length") == [str(len(body))]
    assert 0 < len(body) < 200
    assert handshake.error.reason.encode() in body
    assert header(headers, "Sec-WebSocket-Accept") == []
    return headers


class TestAcceptKey:
    def test_rfc_1_3_example_key(self) -> None:
        """RFC 6455 §1.3: the worked example of Sec-WebSocket-Accept."""
        assert accept_key(RFC_KEY) == RFC_ACCEPT

    def test_rfc_1_3_example_through_a_full_response(self) -> None:
        """RFC 6455 §1.2/§1.3: the example request gets the example response, byte for byte."""
        data = (
            b"GET /chat HTTP/1.1\r\n"
            b"Host: server.example.com\r\n"
            b"Upgrade: websocket\r\n"
            b"Connection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Origin: http://example.com\r\n"
            b"Sec-WebSocket-Protocol: chat, superchat\r\n"
            b"Sec-WebSocket-Version: 13\r\n"
            b"\r\n"
        )
        request = RequestReader().feed(data)
        assert request is not None
        handshake = accept(request, subprotocols=["chat"])
        assert handshake.accepted
        assert handshake.error is None
        assert handshake.subprotocol == "chat"
        assert handshake.response.serialize() == (
            b"HTTP/1.1 101 Switching Protocols\r\n"
            b"Upgrade: websocket\r\n"
            b"Connection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
            b"Sec-WebSocket-Protocol: chat\r\n"
            b"\r\n"
        )


class TestAccept:
    def test_valid_request_gets_101_with_upgrade_connection_and_accept(self) -> None:
        """§4.2.2 step 5: the 101 response and its three required header fields."""
        handshake = accept(make_request())
        assert handshake.accepted
        code, headers, body = parse_response(handshake.response.serialize())
        assert code == 101
        assert body == b""
        assert header(headers, "Upgrade") == ["websocket"]
        assert header(headers, "Connection") == ["Upgrade"]
        assert header(headers, "Sec-WebSocket-Accept") == [RFC_ACCEPT]
        assert header(headers, "Sec-WebSocket-Protocol") == []
        assert header(headers, "Sec-WebSocket-Extensions") == []

    @pytest.mark.parametrize(
        ("name", "value"),
        [
            ("Connection", "keep-alive, Upgrade"),
            ("Connection", "upgrade"),
            ("Connection", "Upgrade,keep-alive"),
            ("Upgrade", "WebSocket"),
            ("Upgrade", "websocket, h2c"),
        ],
    )
    def test_token_lists_match_case_insensitively(self, name: str, value: str) -> None:
        """§4.2.1: Upgrade contains "websocket", Connection contains "Upgrade", ASCII case-insensitive."""
        assert accept(make_request(**{name: value})).accepted

    def test_connection_header_split_over_two_fields_is_accepted(self) -> None:
        headers = (*make_request(drop=("Connection",)).headers, ("Connection", "keep-alive"), ("Connection", "Upgrade"))
        assert accept(Request("GET", "/", (1, 1), headers)).accepted

    def test_extra_headers_are_appended(self) -> None:
        handshake = accept(make_request(), extra_headers=[("Server", "chat")])
        assert handshake.response.headers[-1] == ("Server", "chat")

    def test_post_is_rejected_with_405_and_allow_get(self) -> None:
        """RFC 6455 §4.1: the method must be GET; RFC 7231 §6.5.5: a 405 names what is allowed."""
        headers = assert_rejected(accept(make_request(method="POST")), HTTPStatus.METHOD_NOT_ALLOWED)
        assert header(headers, "Allow") == ["GET"]

    def test_http_1_0_is_rejected_with_505(self) -> None:
        """§4.1: HTTP/1.1 or higher."""
        assert_rejected(accept(make_request(version=(1, 0))), HTTPStatus.HTTP_VERSION_NOT_SUPPORTED)

    def test_missing_host_is_rejected_with_400(self) -> None:
        """§4.2.1 item 2: a Host header field."""
        assert_rejected(accept(make_request(drop=("Host",))), HTTPStatus.BAD_REQUEST)

    def test_two_hosts_are_rejected_with_400(self) -> None:
        request = make_request()
        request = Request("GET", "/", (1, 1), (*request.headers, ("Host", "other.example.com")))
        assert_rejected(accept(request), HTTPStatus.BAD_REQUEST)

    @pytest.mark.parametrize(
        "overrides",
        [
            {"drop": ("Upgrade",)},
            {"Upgrade": "h2c"},
            {"Upgrade": "web socket"},
            {"Upgrade": ""},
        ],
    )
    def test_missing_or_wrong_upgrade_is_rejected_with_426(self, overrides: dict) -> None:
        """§4.2.1 item 3; RFC 7230 §6.7: the response names the protocol to upgrade to."""
        headers = assert_rejected(accept(make_request(**overrides)), HTTPStatus.UPGRADE_REQUIRED)
        assert header(headers, "Upgrade") == ["websocket"]

    @pytest.mark.parametrize(
        "overrides",
        [
            {"drop": ("Connection",)},
            {"Connection": "keep-alive"},
            {"Connection": "upgraded"},
        ],
    )
    def test_connection_without_upgrade_is_rejected_with_426(self, overrides: dict) -> None:
        """§4.2.1 item 4: Connection must contain the "Upgrade" token."""
        headers = assert_rejected(accept(make_request(**overrides)), HTTPStatus.UPGRADE_REQUIRED)
        assert header(headers, "Upgrade") == ["websocket"]

    @pytest.mark.parametrize(
        "overrides",
        [
            {"Sec_WebSocket_Version": "8"},
            {"Sec_WebSocket_Version": "12"},
            {"Sec_WebSocket_Version": "13, 8"},
            {"drop": ("Sec-WebSocket-Version",)},
        ],
    )
    def test_other_or_missing_version_is_rejected_with_426_naming_13(self, overrides: dict) -> None:
        """§4.2.2 / §4.4: reply with the version(s) this server speaks."""
        headers = assert_rejected(accept(make_request(**overrides)), HTTPStatus.UPGRADE_REQUIRED)
        assert header(headers, "Sec-WebSocket-Version") == ["13"]

    def test_every_426_names_the_protocol_it_requires(self) -> None:
        """RFC 7231 §6.5.15: "The server MUST send an Upgrade header field in a 426 response".

        This holds for the version mismatch too, not only for a missing Upgrade.
        """
        headers = assert_rejected(accept(make_request(Sec_WebSocket_Version="8")), HTTPStatus.UPGRADE_REQUIRED)
        assert header(headers, "Upgrade") == ["websocket"]

    @pytest.mark.parametrize(
        "key",
        [
            pytest.param("not base64!", id="not-base64"),
            pytest.param("dGhlIHNhbXBsZSBub25j", id="15-bytes"),
            pytest.param("dGhlIHNhbXBsZSBub25jZQ", id="missing-padding"),
            pytest.param("dGhlIHNhbXBsZSBub25jZSE=", id="17-bytes"),
            pytest.param("", id="empty"),
        ],
    )
    def test_key_not_16_bytes_of_base64_is_rejected_with_400(self, key: str) -> None:
        """§4.2.1 item 5: a base64-encoded value that decodes to 16 bytes."""
        assert_rejected(accept(make_request(Sec_WebSocket_Key=key)), HTTPStatus.BAD_REQUEST)

    def test_missing_key_is_rejected_with_400(self) -> None:
        assert_rejected(accept(make_request(drop=("Sec-WebSocket-Key",))), HTTPStatus.BAD_REQUEST)

    def test_every_rejection_closes_the_connection(self) -> None:
        for request in [
            make_request(method="POST"),
            make_request(version=(1, 0)),
            make_request(drop=("Host",)),
            make_request(Upgrade="h2c"),
            make_request(Sec_WebSocket_Version="8"),
            make_request(Sec_WebSocket_Key="x"),
        ]:
            _, headers, _ = parse_response(accept(request).response.serialize())
            assert "close" in ", ".join(header(headers, "Connection")).lower()

    @pytest.mark.parametrize(
        ("data", "status"),
        [
            pytest.param(
                b"GET / HTTP/1.1\r\nX: " + b"a" * MAX_HEAD_SIZE, HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, id="431"
            ),
            pytest.param(b"GET /\r\nHost: x\r\n\r\n", HTTPStatus.BAD_REQUEST, id="400-request-line"),
            pytest.param(b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", HTTPStatus.BAD_REQUEST, id="400-header"),
        ],
    )
    def test_unreadable_request_gets_a_well_formed_rejection(self, data: bytes, status: HTTPStatus) -> None:
        """The handshake is total: what the reader refuses still gets an HTTP answer."""
        with pytest.raises(HandshakeRejected) as info:
            RequestReader().feed(data)
        assert_rejected(rejection(info.value), status)


class TestSubprotocol:
    def test_first_of_the_clients_offer_that_the_server_speaks_is_chosen(self) -> None:
        """§4.2.2 step 5.5: the client lists its preference first."""
        handshake = accept(make_request(Sec_WebSocket_Protocol="superchat, chat"), subprotocols=["chat", "superchat"])
        assert handshake.subprotocol == "superchat"
        assert header(handshake.response.headers, "Sec-WebSocket-Protocol") == ["superchat"]

    def test_offers_in_several_fields_are_combined(self) -> None:
        request = make_request()
        request = Request(
            "GET",
            "/",
            (1, 1),
            (*request.headers, ("Sec-WebSocket-Protocol", "v1.a"), ("Sec-WebSocket-Protocol", "v2.b")),
        )
        assert accept(request, subprotocols=["v2.b"]).subprotocol == "v2.b"

    def test_no_overlap_means_no_subprotocol_and_no_header(self) -> None:
        """§4.2.2: the server may decline every offered subprotocol by leaving the field out."""
        handshake = accept(make_request(Sec_WebSocket_Protocol="mqtt, wamp"), subprotocols=["chat"])
        assert handshake.accepted
        assert handshake.subprotocol is None
        assert header(handshake.response.headers, "Sec-WebSocket-Protocol") == []

    def test_server_without_subprotocols_ignores_the_offer(self) -> None:
        handshake = accept(make_request(Sec_WebSocket_Protocol="chat"))
        assert handshake.accepted
        assert handshake.subprotocol is None

    def test_chosen_subprotocol_is_one_of_the_values_the_client_sent(self) -> None:
        """§4.2.2 step 5.5 /subprotocol/: the value is selected from the client's field, as sent.

        §4.1: a client fails the connection when the response names a subprotocol it
        did not send, and browsers compare the strings exactly.
        """
        offered = ["Chat.V2", "json"]
        handshake = accept(make_request(Sec_WebSocket_Protocol=", ".join(offered)), subprotocols=["chat.v2"])
        for value in header(handshake.response.headers, "Sec-WebSocket-Protocol"):
            assert value in offered


class TestExtensionsHeader:
    def test_parse_tokens_lowercases_and_skips_empty_items(self) -> None:
        assert parse_tokens(" keep-alive , ,Upgrade ") == ["keep-alive", "upgrade"]
        assert parse_tokens(None) == []

    def test_single_extension_without_parameters(self) -> None:
        assert parse_extensions("permessage-deflate") == [("permessage-deflate", [])]

    def test_parameters_with_and_without_values(self) -> None:
        """RFC 6455 §9.1: extension-param = token [ "=" (token | quoted-string) ]."""
        assert parse_extensions("permessage-deflate; client_max_window_bits; server_max_window_bits=10") == [
            ("permessage-deflate", [("client_max_window_bits", None), ("server_max_window_bits", "10")])
        ]

    def test_quoted_values_are_unquoted(self) -> None:
        """§9.1: a quoted-string value must be a token once unquoted."""
        assert parse_extensions('permessage-deflate; server_max_window_bits="10"; x="a\\b"') == [
            ("permessage-deflate", [("server_max_window_bits", "10"), ("x", "ab")])
        ]

    def test_multiple_offers_in_order(self) -> None:
        assert parse_extensions(
            "permessage-deflate; server_max_window_bits=10, permessage-deflate ,x-webkit-deflate-frame"
        ) == [
            ("permessage-deflate", [("server_max_window_bits", "10")]),
            ("permessage-deflate", []),
            ("x-webkit-deflate-frame", []),
        ]

    def test_names_are_case_insensitive(self) -> None:
        assert parse_extensions("PerMessage-Deflate; Client_Max_Window_Bits") == [
            ("permessage-deflate", [("client_max_window_bits", None)])
        ]

    def test_empty_header_is_no_offer(self) -> None:
        assert parse_extensions("  ") == []

    @pytest.mark.parametrize(
        "value",
        [
            "permessage-deflate;",
            "permessage-deflate,",
            ",permessage-deflate",
            "; x",
            "a=b",
            'x; a="b c"',
            'x; a="1',
            "x y",
            "x,,y",
            "x; =1",
        ],
    )
    def test_malformed_header_raises_value_error(self, value: str) -> None:
        with pytest.raises(ValueError):
            parse_extensions(value)

    @pytest.mark.parametrize("value", ["permessage-deflate;", 'permessage-deflate; x="a b"', "a=b"])
    def test_malformed_extensions_header_is_rejected_with_400(self, value: str) -> None:
        handshake = accept(make_request(Sec_WebSocket_Extensions=value), deflate=DeflateConfig())
        assert_rejected(handshake, HTTPStatus.BAD_REQUEST)

    def test_extension_offer_ignored_when_deflate_is_disabled(self) -> None:
        handshake = accept(make_request(Sec_WebSocket_Extensions="permessage-deflate"))
        assert handshake.accepted
        assert handshake.deflate is None
        assert header(handshake.response.headers, "Sec-WebSocket-Extensions") == []

    def test_unknown_extension_is_not_accepted(self) -> None:
        """§9.1: the server answers only with extensions it supports."""
        handshake = accept(make_request(Sec_WebSocket_Extensions="x-unknown; a=1"), deflate=DeflateConfig())
        assert handshake.accepted
        assert handshake.deflate is None
        assert header(handshake.response.headers, "Sec-WebSocket-Extensions") == []
