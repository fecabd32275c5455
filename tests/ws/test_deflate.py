"""permessage-deflate (RFC 7692): negotiation (§7.1), compression (§7.2.1), bounded inflating (§7.2.2)."""

from __future__ import annotations

import zlib

import pytest

from app.ws.connection import Connection, State
from app.ws.deflate import DeflateConfig, DeflateParams, PerMessageDeflate, negotiate
from app.ws.events import BinaryMessage, TextMessage
from app.ws.exceptions import InvalidPayloadData, MessageTooBig
from app.ws.frames import Frame, Opcode, encode_frame, parse_close_payload, read_frames
from app.ws.handshake import accept, parse_extensions
from app.ws.http11 import Request
from tests.support.memory import peak_memory
from tests.support.wire import MASK, TAIL, client_deflate

MESSAGE = b"The quick brown fox jumps over the lazy dog. " * 20


def agree(offer: str, config: DeflateConfig | None = None) -> DeflateParams | None:
    """The agreement for a ``Sec-WebSocket-Extensions`` offer."""
    return negotiate(parse_extensions(offer), config or DeflateConfig())


def response_for(offer: str, config: DeflateConfig | None = None) -> str | None:
    agreed = agree(offer, config)
    return None if agreed is None else agreed.response_header()


def inflate(payload: bytes, inflater: zlib._Decompress | None = None, bits: int = 15) -> bytes:
    """What a peer makes of a compressed message (§7.2.2: append 00 00 ff ff, inflate)."""
    inflater = inflater or zlib.decompressobj(-bits)
    return inflater.decompress(payload + TAIL)


def sent_frames(conn: Connection) -> list[Frame]:
    return read_frames(conn.data_to_send(), masked=False)


def deflate_connection(
    params: DeflateParams | None = None, config: DeflateConfig | None = None, **kwargs: int
) -> Connection:
    return Connection(deflate=PerMessageDeflate(params or DeflateParams(), config), **kwargs)


class TestRfc7692Section723Examples:
    """The example payloads of RFC 7692 §7.2.3, compressed and received byte for byte."""

    HELLO = bytes.fromhex("f248cdc9c90700")  # §7.2.3.1
    HELLO_AGAIN = bytes.fromhex("f200110000")  # §7.2.3.2, refers to the first "Hello"

    def test_hello_compresses_to_the_rfc_bytes(self) -> None:
        """§7.2.3.1: "Hello" in one compressed DEFLATE block."""
        conn = deflate_connection()
        conn.send_text("Hello")
        assert conn.data_to_send() == b"\xc1\x07" + self.HELLO

    def test_second_hello_shares_the_sliding_window(self) -> None:
        """§7.2.3.2: with context takeover the second "Hello" is a back-reference."""
        conn = deflate_connection()
        conn.send_text("Hello")
        conn.send_text("Hello")
        assert conn.data_to_send() == b"\xc1\x07" + self.HELLO + b"\xc1\x05" + self.HELLO_AGAIN

    @pytest.mark.parametrize(
        "payloads",
        [
            pytest.param(["f248cdc9c90700"], id="7.2.3.1-one-compressed-block"),
            pytest.param(["f248cdc9c90700", "f200110000"], id="7.2.3.2-sharing-the-window"),
            pytest.param(["000500faff48656c6c6f00"], id="7.2.3.3-block-with-no-compression"),
            pytest.param(["f348cdc9c9070000"], id="7.2.3.4-block-with-bfinal"),
            pytest.param(["f24805000000ffffcac9c90700"], id="7.2.3.5-two-blocks-in-one-message"),
        ],
    )
    def test_rfc_example_is_received_as_hello(self, payloads: list[str]) -> None:
        conn = deflate_connection()
        for payload in payloads:
            conn.receive_data(encode_frame(Opcode.TEXT, bytes.fromhex(payload), rsv1=True, mask=MASK))
        assert conn.events() == [TextMessage("Hello")] * len(payloads)
        assert conn.state is State.OPEN

    def test_rfc_example_fragmented_is_received_as_hello(self) -> None:
        """§7.2.3.1 split over two frames, RSV1 on the first only."""
        conn = deflate_connection()
        conn.receive_data(encode_frame(Opcode.TEXT, self.HELLO[:3], fin=False, rsv1=True, mask=MASK))
        conn.receive_data(encode_frame(Opcode.CONTINUATION, self.HELLO[3:], mask=MASK))
        assert conn.events() == [TextMessage("Hello")]

    @pytest.mark.parametrize(
        "following",
        [
            pytest.param("f348cdc9c9070000", id="another-bfinal-block"),
            pytest.param("f248cdc9c90700", id="a-sync-flushed-block"),
        ],
    )
    def test_message_after_one_ending_with_a_bfinal_block_is_received(self, following: str) -> None:
        """§7.2.3.4: a sender may end each message with BFINAL set (its trailing 0x00 lets the
        receiver append 00 00 ff ff as usual); the next message must decompress just the same.
        """
        conn = deflate_connection()
        conn.receive_data(encode_frame(Opcode.TEXT, bytes.fromhex("f348cdc9c9070000"), rsv1=True, mask=MASK))
        conn.receive_data(encode_frame(Opcode.TEXT, bytes.fromhex(following), rsv1=True, mask=MASK))
        assert conn.events() == [TextMessage("Hello"), TextMessage("Hello")]
        assert conn.state is State.OPEN


class TestNegotiation:
    def test_default_offer_is_accepted(self) -> None:
        """§7.1: an offer without parameters asks for context takeover and 15-bit windows."""
        assert agree("permessage-deflate") == DeflateParams()
        assert response_for("permessage-deflate") == "permessage-deflate"

    def test_browser_offer_is_accepted(self) -> None:
        """The offer browsers send: client_max_window_bits without a value (§7.1.2.2)."""
        assert agree("permessage-deflate; client_max_window_bits") == DeflateParams()
        assert response_for("permessage-deflate; client_max_window_bits") == "permessage-deflate"

    def test_first_acceptable_of_several_offers_is_accepted(self) -> None:
        """§5.1: offers are in the client's order of preference."""
        offer = (
            "x-webkit-deflate-frame, permessage-deflate; server_max_window_bits=8, "
            "permessage-deflate; client_no_context_takeover, permessage-deflate"
        )
        assert agree(offer) == DeflateParams(client_no_context_takeover=True)

    def test_no_acceptable_offer_means_no_compression(self) -> None:
        assert agree("permessage-deflate; unknown, x-webkit-deflate-frame") is None

    def test_offers_of_other_extensions_are_ignored(self) -> None:
        assert agree("permessage-foo, x-webkit-deflate-frame") is None

    @pytest.mark.parametrize(
        "params",
        [
            pytest.param("unknown_param", id="unknown"),
            pytest.param("server_max_window_bits=10; x=1", id="unknown-after-known"),
            pytest.param("server_no_context_takeover; server_no_context_takeover", id="duplicate-flag"),
            pytest.param("client_max_window_bits=10; client_max_window_bits=11", id="duplicate-bits"),
            pytest.param("client_max_window_bits; client_max_window_bits", id="duplicate-bare-bits"),
            pytest.param("server_no_context_takeover=1", id="value-on-server-nct"),
            pytest.param('client_no_context_takeover="true"', id="value-on-client-nct"),
        ],
    )
    def test_offer_with_bad_parameters_is_declined_for_the_next(self, params: str) -> None:
        """§7.1: decline an offer with an unknown, repeated or ill-valued parameter."""
        assert agree(f"permessage-deflate; {params}") is None
        assert agree(f"permessage-deflate; {params}, permessage-deflate") == DeflateParams()

    @pytest.mark.parametrize("name", ["server_max_window_bits", "client_max_window_bits"])
    @pytest.mark.parametrize("value", ["0", "7", "16", "09", "abc", "-9", "1O", '"09"'])
    def test_bad_window_bits_are_declined_for_the_next(self, name: str, value: str) -> None:
        """§7.1.2: an integer 8..15 without leading zeros."""
        assert agree(f"permessage-deflate; {name}={value}") is None
        assert agree(f"permessage-deflate; {name}={value}, permessage-deflate") == DeflateParams()

    def test_server_max_window_bits_8_is_declined(self) -> None:
        """zlib cannot deflate with a 256-byte window (see deflate.py), so the offer is declined."""
        assert agree("permessage-deflate; server_max_window_bits=8") is None
        with pytest.raises(ValueError):
            DeflateConfig(server_max_window_bits=8)

    def test_server_max_window_bits_is_echoed(self) -> None:
        """§7.1.2.1: the response carries server_max_window_bits with the same or a smaller value."""
        agreed = agree("permessage-deflate; server_max_window_bits=10")
        assert agreed is not None
        assert agreed.server_max_window_bits == 10
        assert agreed.response_header() == "permessage-deflate; server_max_window_bits=10"

    def test_quoted_server_max_window_bits_is_echoed(self) -> None:
        assert response_for('permessage-deflate; server_max_window_bits="10"') == (
            "permessage-deflate; server_max_window_bits=10"
        )

    def test_server_max_window_bits_is_lowered_to_the_configured_limit(self) -> None:
        config = DeflateConfig(server_max_window_bits=9)
        assert response_for("permessage-deflate; server_max_window_bits=12", config) == (
            "permessage-deflate; server_max_window_bits=9"
        )

    def test_configured_server_window_is_announced_unasked(self) -> None:
        """§7.1.2.1: the server may name its window even when the offer did not."""
        agreed = agree("permessage-deflate", DeflateConfig(server_max_window_bits=12))
        assert agreed is not None
        assert agreed.server_max_window_bits == 12
        assert agreed.response_header() == "permessage-deflate; server_max_window_bits=12"

    def test_bare_client_max_window_bits_with_a_lower_limit_is_named(self) -> None:
        """§7.1.2.2: the client supports the parameter, so the response can limit its window."""
        agreed = agree("permessage-deflate; client_max_window_bits", DeflateConfig(client_max_window_bits=10))
        assert agreed is not None
        assert agreed.client_max_window_bits == 10
        assert agreed.response_header() == "permessage-deflate; client_max_window_bits=10"

    def test_client_window_is_not_limited_when_the_client_did_not_offer_the_parameter(self) -> None:
        """§7.1.2.2: without the parameter in the offer, the response must not include it."""
        agreed = agree("permessage-deflate", DeflateConfig(client_max_window_bits=10))
        assert agreed is not None
        assert agreed.client_max_window_bits == 15
        assert agreed.response_header() == "permessage-deflate"

    def test_client_window_hint_is_used_without_being_named(self) -> None:
        """§7.1.2.2: a value in the offer is a promise the client keeps even if the response is silent."""
        agreed = agree("permessage-deflate; client_max_window_bits=11")
        assert agreed is not None
        assert agreed.client_max_window_bits == 11
        assert agreed.response_header() == "permessage-deflate"

    def test_client_window_hint_above_the_limit_is_lowered_and_named(self) -> None:
        agreed = agree("permessage-deflate; client_max_window_bits=12", DeflateConfig(client_max_window_bits=9))
        assert agreed is not None
        assert agreed.client_max_window_bits == 9
        assert agreed.response_header() == "permessage-deflate; client_max_window_bits=9"

    @pytest.mark.parametrize(
        "offer",
        [
            "permessage-deflate",
            "permessage-deflate; client_max_window_bits",
            "permessage-deflate; server_max_window_bits=10",
            "permessage-deflate; server_no_context_takeover",
            "permessage-deflate; client_no_context_takeover",
        ],
    )
    def test_configured_server_no_context_takeover_is_in_every_response(self, offer: str) -> None:
        """§7.1.1.1: the server may add server_no_context_takeover on its own."""
        agreed = agree(offer, DeflateConfig(server_no_context_takeover=True))
        assert agreed is not None
        assert agreed.server_no_context_takeover
        assert "; server_no_context_takeover" in agreed.response_header()

    def test_client_no_context_takeover_offer_is_accepted_and_echoed(self) -> None:
        """§7.1.1.2."""
        assert response_for("permessage-deflate; client_no_context_takeover") == (
            "permessage-deflate; client_no_context_takeover"
        )

    def test_response_header_with_every_parameter_is_exact(self) -> None:
        config = DeflateConfig(
            server_no_context_takeover=True,
            client_no_context_takeover=True,
            server_max_window_bits=12,
            client_max_window_bits=10,
        )
        assert response_for("permessage-deflate; client_max_window_bits", config) == (
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
            "server_max_window_bits=12; client_max_window_bits=10"
        )

    def test_handshake_carries_the_agreement(self) -> None:
        request = Request(
            "GET",
            "/",
            (1, 1),
            (
                ("Host", "x"),
                ("Upgrade", "websocket"),
                ("Connection", "Upgrade"),
                ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                ("Sec-WebSocket-Version", "13"),
                ("Sec-WebSocket-Extensions", "permessage-deflate; server_max_window_bits=8, permessage-deflate"),
            ),
        )
        handshake = accept(request, deflate=DeflateConfig(server_no_context_takeover=True))
        assert handshake.accepted
        assert handshake.deflate == DeflateParams(server_no_context_takeover=True)
        assert ("Sec-WebSocket-Extensions", "permessage-deflate; server_no_context_takeover") in (
            handshake.response.headers
        )


class TestCompression:
    def test_sent_message_decompresses_with_a_fresh_inflater(self) -> None:
        """§7.2.1: deflate, sync flush, drop 00 00 ff ff; RSV1 marks the message (§6)."""
        conn = deflate_connection()
        conn.send_text(MESSAGE.decode())
        [frame] = sent_frames(conn)
        assert frame.opcode is Opcode.TEXT
        assert frame.rsv1
        assert len(frame.payload) < len(MESSAGE)
        assert not frame.payload.endswith(TAIL)
        assert inflate(frame.payload) == MESSAGE

    def test_binary_message_is_compressed_too(self) -> None:
        conn = deflate_connection()
        conn.send_binary(MESSAGE)
        [frame] = sent_frames(conn)
        assert frame.opcode is Opcode.BINARY
        assert frame.rsv1
        assert inflate(frame.payload) == MESSAGE

    def test_empty_message_is_a_valid_compressed_message(self) -> None:
        for params in (DeflateParams(), DeflateParams(server_no_context_takeover=True)):
            conn = deflate_connection(params)
            conn.send_binary(b"")
            conn.send_binary(b"")
            frames = sent_frames(conn)
            assert [frame.rsv1 for frame in frames] == [True, True]
            inflater = zlib.decompressobj(-15)
            assert [inflate(frame.payload, inflater) for frame in frames] == [b"", b""]

    def test_with_context_takeover_later_messages_need_the_earlier_context(self) -> None:
        """§7.2.3.2: the second identical message is a back-reference into the first."""
        conn = deflate_connection()
        conn.send_binary(MESSAGE)
        conn.send_binary(MESSAGE)
        first, second = sent_frames(conn)
        assert len(second.payload) < len(first.payload)
        with pytest.raises(zlib.error):
            inflate(second.payload)
        inflater = zlib.decompressobj(-15)
        assert inflate(first.payload, inflater) == MESSAGE
        assert inflate(second.payload, inflater) == MESSAGE

    def test_with_server_no_context_takeover_each_message_decompresses_alone(self) -> None:
        """§7.1.1.1: every message inflates with a fresh inflater."""
        conn = deflate_connection(DeflateParams(server_no_context_takeover=True))
        messages = [MESSAGE, MESSAGE, MESSAGE[::-1], b"x" * 3000, MESSAGE]
        for message in messages:
            conn.send_binary(message)
        frames = sent_frames(conn)
        assert [inflate(frame.payload) for frame in frames] == messages
        assert frames[0].payload == frames[1].payload == frames[4].payload

    def test_with_server_no_context_takeover_connections_share_encoded_frames(self) -> None:
        """One encoding of a broadcast serves every connection with the same key."""
        params = DeflateParams(server_no_context_takeover=True)
        first = deflate_connection(params)
        second = deflate_connection(params)
        assert first.encoding_key == second.encoding_key
        assert first.encoding_key is not None
        # different histories must not change the bytes
        first.encode_message(b"something else entirely " * 10)
        second.encode_message(MESSAGE[::-1], text=False)
        frame = first.encode_message(MESSAGE)
        assert second.encode_message(MESSAGE) == frame
        assert inflate(read_frames(frame)[0].payload) == MESSAGE
        second.send_encoded(frame)
        assert second.data_to_send() == frame

    def test_connections_keeping_context_have_keys_of_their_own(self) -> None:
        first = deflate_connection()
        second = deflate_connection()
        assert first.encoding_key != second.encoding_key
        assert Connection().encoding_key is None

    def test_different_window_sizes_have_different_keys(self) -> None:
        first = deflate_connection(DeflateParams(server_no_context_takeover=True))
        second = deflate_connection(DeflateParams(server_no_context_takeover=True, server_max_window_bits=10))
        assert first.encoding_key != second.encoding_key

    def test_server_window_limit_is_honoured(self) -> None:
        """§7.1.2.1: a peer inflating with the agreed window can read every message."""
        data = bytes(range(256)) * 4 + b"tail" + bytes(range(256)) * 4
        for params in (
            DeflateParams(server_max_window_bits=9),
            DeflateParams(server_max_window_bits=10, server_no_context_takeover=True),
        ):
            conn = deflate_connection(params)
            conn.send_binary(data)
            conn.send_binary(data)
            inflater = zlib.decompressobj(-params.server_max_window_bits)
            assert [inflate(frame.payload, inflater) for frame in sent_frames(conn)] == [data, data]

    def test_messages_under_min_size_are_sent_uncompressed(self) -> None:
        """§6: RSV1 is per message, so small messages may go uncompressed."""
        conn = deflate_connection(config=DeflateConfig(min_size=64))
        conn.send_text("short")
        conn.send_binary(b"y" * 63)
        conn.send_binary(b"y" * 64)
        small_text, small_binary, big = sent_frames(conn)
        assert small_text == Frame(Opcode.TEXT, b"short")
        assert small_binary == Frame(Opcode.BINARY, b"y" * 63)
        assert big.rsv1
        assert inflate(big.payload) == b"y" * 64


class TestDecompression:
    def test_compressed_messages_with_context_takeover_are_received(self) -> None:
        """§7.2.2: the server keeps its inflater between messages unless told otherwise."""
        conn = deflate_connection()
        compressor = zlib.compressobj(wbits=-15)
        for message in (MESSAGE, MESSAGE, "κόσμε".encode() * 30):
            conn.receive_data(encode_frame(Opcode.TEXT, client_deflate(message, compressor), rsv1=True, mask=MASK))
        assert conn.events() == [TextMessage(MESSAGE.decode())] * 2 + [TextMessage("κόσμε" * 30)]
        assert conn.state is State.OPEN

    def test_compressed_message_in_fragments_is_received(self) -> None:
        """§6.1: RSV1 on the first frame only; the payload is the concatenation."""
        conn = deflate_connection()
        data = client_deflate(MESSAGE, zlib.compressobj(wbits=-15))
        parts = [data[:5], data[5:6], data[6:]]
        conn.receive_data(encode_frame(Opcode.BINARY, parts[0], fin=False, rsv1=True, mask=MASK))
        conn.receive_data(encode_frame(Opcode.CONTINUATION, parts[1], fin=False, mask=MASK))
        conn.receive_data(encode_frame(Opcode.CONTINUATION, parts[2], mask=MASK))
        assert conn.events() == [BinaryMessage(MESSAGE)]

    def test_uncompressed_message_on_a_deflate_connection_is_received(self) -> None:
        conn = deflate_connection()
        conn.receive_data(encode_frame(Opcode.BINARY, b"plain", mask=MASK))
        assert conn.events() == [BinaryMessage(b"plain")]

    def test_with_client_no_context_takeover_each_message_inflates_alone(self) -> None:
        """§7.1.1.2: after agreeing, a message that refers to the previous one is invalid data."""
        conn = deflate_connection(DeflateParams(client_no_context_takeover=True))
        compressor = zlib.compressobj(wbits=-15)  # wrongly keeps its context
        first = client_deflate(MESSAGE, compressor)
        second = client_deflate(MESSAGE, compressor)
        conn.receive_data(encode_frame(Opcode.BINARY, first, rsv1=True, mask=MASK))
        assert conn.events() == [BinaryMessage(MESSAGE)]
        conn.receive_data(encode_frame(Opcode.BINARY, second, rsv1=True, mask=MASK))
        assert conn.events() == []
        assert conn.state is State.CLOSED
        assert conn.close_code == 1007

    def test_with_client_no_context_takeover_independent_messages_are_received(self) -> None:
        conn = deflate_connection(DeflateParams(client_no_context_takeover=True))
        for _ in range(3):
            data = client_deflate(MESSAGE, zlib.compressobj(wbits=-15))
            conn.receive_data(encode_frame(Opcode.BINARY, data, rsv1=True, mask=MASK))
        assert conn.events() == [BinaryMessage(MESSAGE)] * 3

    def test_invalid_deflate_data_fails_with_1007(self) -> None:
        """§7.2.2 / RFC 6455 §7.4.1: data inconsistent with the message type."""
        conn = deflate_connection()
        conn.receive_data(encode_frame(Opcode.BINARY, b"\xff\xff\xff\xff", rsv1=True, mask=MASK))
        assert conn.events() == []
        assert conn.state is State.CLOSED
        [close] = sent_frames(conn)
        assert parse_close_payload(close.payload)[0] == 1007

    def test_decompress_returns_output_within_the_budget(self) -> None:
        deflate = PerMessageDeflate(DeflateParams())
        data = client_deflate(MESSAGE, zlib.compressobj(wbits=-15))
        assert deflate.decompress(data, len(MESSAGE)) + deflate.finish(0) == MESSAGE

    def test_decompress_raises_one_byte_over_the_budget(self) -> None:
        deflate = PerMessageDeflate(DeflateParams())
        data = client_deflate(MESSAGE, zlib.compressobj(wbits=-15))
        with pytest.raises(MessageTooBig) as info:
            deflate.decompress(data, len(MESSAGE) - 1)
        assert info.value.code == 1009

    def test_decompress_of_a_bomb_stops_at_the_budget(self) -> None:
        """A bomb inflates no further than budget + 1 bytes before it is refused."""
        bomb = client_deflate(bytes(10 * 1024 * 1024), zlib.compressobj(wbits=-15))
        assert len(bomb) < 20 * 1024
        deflate = PerMessageDeflate(DeflateParams())

        def inflate_bomb() -> None:
            with pytest.raises(MessageTooBig):
                deflate.decompress(bomb, 1000)

        # the inflater's own state and window, and about 1000 bytes of output
        assert peak_memory(inflate_bomb) < 256 * 1024

    def test_decompress_of_invalid_data_raises_invalid_payload(self) -> None:
        with pytest.raises(InvalidPayloadData) as info:
            PerMessageDeflate(DeflateParams()).decompress(b"\xff\xff\xff\xff", 1000)
        assert info.value.code == 1007
