"""Frames byte for byte (RFC 6455 §5): the RFC's own examples, the parser, the encoder."""

from __future__ import annotations

import sys

import pytest

from app.ws.connection import Connection, State
from app.ws.events import Pong, TextMessage
from app.ws.exceptions import InvalidPayloadData, ProtocolError
from app.ws.frames import (
    CloseCode,
    Frame,
    FrameChunk,
    FrameHeader,
    FrameParser,
    Opcode,
    apply_mask,
    encode_close_payload,
    encode_frame,
    new_mask,
    parse_close_payload,
    read_frames,
)

# The masking key of every masked example in RFC 6455 §5.7.
RFC_MASK = bytes.fromhex("37fa213d")

UNMASKED_HELLO = bytes.fromhex("810548656c6c6f")
MASKED_HELLO = bytes.fromhex("818537fa213d7f9f4d5158")
FRAGMENT_HEL = bytes.fromhex("010348656c")
FRAGMENT_LO = bytes.fromhex("80026c6f")
UNMASKED_PING_HELLO = bytes.fromhex("890548656c6c6f")
MASKED_PONG_HELLO = bytes.fromhex("8a8537fa213d7f9f4d5158")
PAYLOAD_256 = bytes(range(256))
BINARY_256 = bytes.fromhex("827e0100") + PAYLOAD_256
PAYLOAD_64K = bytes(range(256)) * 256
BINARY_64K = bytes.fromhex("827f0000000000010000") + PAYLOAD_64K


def parse_chunks(data: bytes, *, masked: bool, step: int | None = None) -> list[FrameChunk]:
    """Every chunk the parser hands out for ``data``, fed whole or ``step`` bytes at a time."""
    parser = FrameParser(masked=masked)
    pieces = [data] if step is None else [data[i : i + step] for i in range(0, len(data), step)]
    chunks = []
    for piece in pieces:
        parser.feed(piece)
        while (chunk := parser.next()) is not None:
            chunks.append(chunk)
    return chunks


def parse_error(data: bytes, *, masked: bool = True) -> ProtocolError:
    """The error the parser raises on ``data``."""
    parser = FrameParser(masked=masked)
    parser.feed(data)
    with pytest.raises(ProtocolError) as info:
        while parser.next() is not None:
            pass
    return info.value


class TestRfc6455Section57Examples:
    """Every example frame of RFC 6455 §5.7, encoded and parsed byte for byte."""

    def test_single_frame_unmasked_text_encodes_to_rfc_bytes(self) -> None:
        assert encode_frame(Opcode.TEXT, b"Hello") == UNMASKED_HELLO

    def test_single_frame_unmasked_text_parses_to_hello(self) -> None:
        assert read_frames(UNMASKED_HELLO, masked=False) == [Frame(Opcode.TEXT, b"Hello")]

    def test_single_frame_masked_text_encodes_to_rfc_bytes(self) -> None:
        assert encode_frame(Opcode.TEXT, b"Hello", mask=RFC_MASK) == MASKED_HELLO

    def test_single_frame_masked_text_parses_to_hello(self) -> None:
        assert read_frames(MASKED_HELLO, masked=True) == [Frame(Opcode.TEXT, b"Hello")]

    def test_masked_text_header_carries_the_masking_key(self) -> None:
        [chunk] = parse_chunks(MASKED_HELLO, masked=True)
        assert chunk.header == FrameHeader(Opcode.TEXT, 5, mask=RFC_MASK)
        assert chunk.data == b"Hello"
        assert chunk.first and chunk.last

    def test_fragmented_unmasked_text_encodes_to_rfc_bytes(self) -> None:
        assert encode_frame(Opcode.TEXT, b"Hel", fin=False) == FRAGMENT_HEL
        assert encode_frame(Opcode.CONTINUATION, b"lo") == FRAGMENT_LO

    def test_fragmented_unmasked_text_parses_to_two_frames(self) -> None:
        assert read_frames(FRAGMENT_HEL + FRAGMENT_LO, masked=False) == [
            Frame(Opcode.TEXT, b"Hel", fin=False),
            Frame(Opcode.CONTINUATION, b"lo"),
        ]

    def test_unmasked_ping_encodes_to_rfc_bytes(self) -> None:
        assert encode_frame(Opcode.PING, b"Hello") == UNMASKED_PING_HELLO

    def test_unmasked_ping_parses_to_hello(self) -> None:
        assert read_frames(UNMASKED_PING_HELLO, masked=False) == [Frame(Opcode.PING, b"Hello")]

    def test_masked_pong_encodes_to_rfc_bytes(self) -> None:
        assert encode_frame(Opcode.PONG, b"Hello", mask=RFC_MASK) == MASKED_PONG_HELLO

    def test_masked_pong_parses_to_hello(self) -> None:
        assert read_frames(MASKED_PONG_HELLO, masked=True) == [Frame(Opcode.PONG, b"Hello")]

    def test_256_byte_binary_uses_16_bit_length(self) -> None:
        assert encode_frame(Opcode.BINARY, PAYLOAD_256) == BINARY_256

    def test_256_byte_binary_parses_back(self) -> None:
        assert read_frames(BINARY_256, masked=False) == [Frame(Opcode.BINARY, PAYLOAD_256)]

    def test_64_kib_binary_uses_64_bit_length(self) -> None:
        assert encode_frame(Opcode.BINARY, PAYLOAD_64K) == BINARY_64K

    def test_64_kib_binary_parses_back(self) -> None:
        assert read_frames(BINARY_64K, masked=False) == [Frame(Opcode.BINARY, PAYLOAD_64K)]

    def test_64_kib_binary_parses_back_when_fed_in_pieces(self) -> None:
        chunks = parse_chunks(BINARY_64K, masked=False, step=1000)
        assert b"".join(chunk.data for chunk in chunks) == PAYLOAD_64K
        assert chunks[0].first and not chunks[0].last
        assert chunks[-1].last
        assert all(chunk.header.length == 65536 for chunk in chunks)

    def test_frame_serialize_matches_the_examples(self) -> None:
        assert Frame(Opcode.TEXT, b"Hello").serialize() == UNMASKED_HELLO
        assert Frame(Opcode.TEXT, b"Hello").serialize(RFC_MASK) == MASKED_HELLO
        assert Frame(Opcode.TEXT, b"Hel", fin=False).serialize() == FRAGMENT_HEL

    def test_masked_hello_fed_to_a_connection_is_a_text_message(self) -> None:
        conn = Connection()
        conn.receive_data(MASKED_HELLO)
        assert conn.events() == [TextMessage("Hello")]
        assert conn.state is State.OPEN
        assert conn.data_to_send() == b""

    def test_masked_pong_fed_to_a_connection_is_a_pong_event(self) -> None:
        conn = Connection()
        conn.receive_data(MASKED_PONG_HELLO)
        assert conn.events() == [Pong(b"Hello")]
        assert conn.state is State.OPEN
        assert conn.data_to_send() == b""

    def test_masked_examples_fed_one_byte_at_a_time_to_a_connection(self) -> None:
        conn = Connection()
        events = []
        for byte in MASKED_HELLO + MASKED_PONG_HELLO:
            conn.receive_data(bytes([byte]))
            events.extend(conn.events())
        assert events == [TextMessage("Hello"), Pong(b"Hello")]

    @pytest.mark.parametrize("frame", [UNMASKED_HELLO, UNMASKED_PING_HELLO, FRAGMENT_HEL])
    def test_unmasked_examples_are_refused_by_a_server_connection(self, frame: bytes) -> None:
        """§5.1: a server must close the connection on an unmasked frame."""
        conn = Connection()
        conn.receive_data(frame)
        assert conn.events() == []
        assert conn.state is State.CLOSED
        assert conn.close_code == CloseCode.PROTOCOL_ERROR


class TestParser:
    def test_header_is_handed_out_before_the_payload_arrives(self) -> None:
        """§10.4: limits can apply from the header, before payload is buffered."""
        frame = encode_frame(Opcode.BINARY, b"x" * 1000, mask=RFC_MASK)
        [chunk] = parse_chunks(frame[:8], masked=True)
        assert chunk.header.length == 1000
        assert chunk.data == b""
        assert chunk.first and not chunk.last

    def test_partial_header_yields_nothing(self) -> None:
        frame = encode_frame(Opcode.BINARY, b"x" * 1000, mask=RFC_MASK)
        for end in range(8):
            assert parse_chunks(frame[:end], masked=True) == []

    def test_data_payload_is_handed_out_as_it_arrives(self) -> None:
        payload = bytes(range(200))
        frame = encode_frame(Opcode.BINARY, payload, mask=RFC_MASK)
        chunks = parse_chunks(frame, masked=True, step=7)
        assert len(chunks) > 2
        assert b"".join(chunk.data for chunk in chunks) == payload
        assert [chunk.first for chunk in chunks] == [True] + [False] * (len(chunks) - 1)
        assert [chunk.last for chunk in chunks] == [False] * (len(chunks) - 1) + [True]

    def test_control_frame_is_handed_out_whole(self) -> None:
        """§5.5: control frames are at most 125 bytes, so the parser waits for all of them."""
        payload = bytes(range(125))
        frame = encode_frame(Opcode.PING, payload, mask=RFC_MASK)
        assert parse_chunks(frame[:-1], masked=True) == []
        chunks = parse_chunks(frame, masked=True, step=3)
        assert len(chunks) == 1
        assert chunks[0].data == payload
        assert chunks[0].first and chunks[0].last

    def test_empty_frame_is_one_chunk(self) -> None:
        [chunk] = parse_chunks(encode_frame(Opcode.BINARY, b"", mask=RFC_MASK), masked=True)
        assert chunk.data == b""
        assert chunk.first and chunk.last

    def test_several_frames_in_one_read(self) -> None:
        data = b"".join(encode_frame(Opcode.BINARY, bytes([n]) * n, mask=RFC_MASK) for n in range(5))
        assert read_frames(data, masked=True) == [Frame(Opcode.BINARY, bytes([n]) * n) for n in range(5)]

    def test_parser_lets_go_of_the_bytes_once_every_frame_is_read(self) -> None:
        # An idle connection's parser must not hold its last read until the next one.
        data = bytes(MASKED_HELLO)  # a copy of our own, so its reference count is ours to watch
        references = sys.getrefcount(data)
        parser = FrameParser(masked=True)
        parser.feed(data)
        assert parser.next() is not None
        assert parser.next() is None
        assert sys.getrefcount(data) == references

    def test_parser_keeps_a_partial_header_until_the_rest_arrives(self) -> None:
        parser = FrameParser(masked=True)
        parser.feed(MASKED_HELLO[:1])
        assert parser.next() is None
        parser.feed(MASKED_HELLO[1:])
        chunk = parser.next()
        assert chunk is not None
        assert chunk.data == b"Hello"

    def test_read_frames_ignores_a_trailing_partial_frame(self) -> None:
        assert read_frames(UNMASKED_HELLO + UNMASKED_HELLO[:-1], masked=False) == [Frame(Opcode.TEXT, b"Hello")]

    def test_reserved_bits_are_reported(self) -> None:
        frame = encode_frame(Opcode.TEXT, b"x", rsv1=True, rsv2=True, rsv3=True)
        assert frame[0] == 0xF1
        assert read_frames(frame, masked=False) == [Frame(Opcode.TEXT, b"x", rsv1=True, rsv2=True, rsv3=True)]

    def test_unmasked_frame_refused_when_masking_required(self) -> None:
        """§5.1: a server must fail the connection on an unmasked client frame."""
        assert parse_error(UNMASKED_HELLO, masked=True).code == 1002

    def test_masked_frame_refused_when_masking_forbidden(self) -> None:
        """§5.1: a client must fail the connection on a masked server frame."""
        assert parse_error(MASKED_HELLO, masked=False).code == 1002

    @pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 11, 12, 13, 14, 15])
    def test_reserved_opcode_refused(self, opcode: int) -> None:
        """§5.2: reserved opcodes fail the connection."""
        assert parse_error(encode_frame(opcode, b"", mask=RFC_MASK)).code == 1002

    @pytest.mark.parametrize("opcode", [Opcode.CLOSE, Opcode.PING, Opcode.PONG])
    def test_fragmented_control_frame_refused(self, opcode: Opcode) -> None:
        """§5.5: control frames must not be fragmented."""
        assert parse_error(encode_frame(opcode, b"", fin=False, mask=RFC_MASK)).code == 1002

    @pytest.mark.parametrize("opcode", [Opcode.CLOSE, Opcode.PING, Opcode.PONG])
    def test_control_frame_over_125_bytes_refused(self, opcode: Opcode) -> None:
        """§5.5: control frame payloads are at most 125 bytes."""
        frame = encode_frame(opcode, b"x" * 126, mask=RFC_MASK)
        # refused from the header, before the payload arrives
        assert parse_error(frame[:8]).code == 1002

    def test_16_bit_length_under_126_refused(self) -> None:
        """§5.2: the minimal number of bytes must be used to encode the length."""
        frame = bytes([0x82, 0xFE, 0x00, 0x7D]) + RFC_MASK + b"x" * 125
        assert parse_error(frame).code == 1002

    @pytest.mark.parametrize("length", [0, 125, 126, 65535])
    def test_64_bit_length_under_65536_refused(self, length: int) -> None:
        """§5.2: the minimal number of bytes must be used to encode the length."""
        frame = bytes([0x82, 0xFF]) + length.to_bytes(8, "big") + RFC_MASK
        assert parse_error(frame).code == 1002

    def test_64_bit_length_with_most_significant_bit_refused(self) -> None:
        """§5.2: the most significant bit of a 64-bit length must be 0."""
        frame = bytes([0x82, 0xFF]) + (1 << 63 | 0x10000).to_bytes(8, "big") + RFC_MASK
        assert parse_error(frame).code == 1002

    def test_largest_64_bit_length_is_accepted_as_a_header(self) -> None:
        frame = bytes([0x82, 0xFF]) + ((1 << 63) - 1).to_bytes(8, "big") + RFC_MASK
        [chunk] = parse_chunks(frame, masked=True)
        assert chunk.header.length == (1 << 63) - 1


class TestEncoder:
    @pytest.mark.parametrize(
        ("length", "header_size"),
        [(0, 2), (125, 2), (126, 4), (65535, 4), (65536, 10)],
    )
    def test_length_uses_the_shortest_encoding(self, length: int, header_size: int) -> None:
        """§5.2: 7-bit up to 125, 16-bit up to 65535, 64-bit beyond."""
        frame = encode_frame(Opcode.BINARY, b"\0" * length)
        assert len(frame) == header_size + length
        assert read_frames(frame, masked=False) == [Frame(Opcode.BINARY, b"\0" * length)]

    def test_server_frames_are_unmasked(self) -> None:
        """§5.1: a server must not mask the frames it sends."""
        assert encode_frame(Opcode.TEXT, b"Hello")[1] & 0x80 == 0

    def test_masked_frame_carries_mask_bit_and_key(self) -> None:
        frame = encode_frame(Opcode.BINARY, b"abc", mask=b"\1\2\3\4")
        assert frame[1] == 0x83
        assert frame[2:6] == b"\1\2\3\4"
        assert frame[6:] == bytes([ord("a") ^ 1, ord("b") ^ 2, ord("c") ^ 3])


class TestMask:
    def test_mask_xors_each_byte_with_key_byte_modulo_4(self) -> None:
        """§5.3: octet i is XORed with octet i MOD 4 of the masking key."""
        data = bytes(range(11))
        assert apply_mask(data, RFC_MASK) == bytes(b ^ RFC_MASK[i % 4] for i, b in enumerate(data))

    def test_mask_offset_continues_the_key_cycle(self) -> None:
        data = bytes(range(11))
        whole = apply_mask(data, RFC_MASK)
        assert apply_mask(data[3:], RFC_MASK, 3) == whole[3:]
        assert apply_mask(data[6:], RFC_MASK, 6) == whole[6:]

    def test_mask_of_nothing_is_nothing(self) -> None:
        assert apply_mask(b"", RFC_MASK, 3) == b""

    def test_new_mask_is_four_bytes_and_varies(self) -> None:
        masks = {new_mask() for _ in range(8)}
        assert all(len(mask) == 4 for mask in masks)
        assert len(masks) > 1


class TestOpcodeAndCloseCode:
    def test_control_opcodes_have_the_high_bit(self) -> None:
        assert [op for op in Opcode if op.is_control] == [Opcode.CLOSE, Opcode.PING, Opcode.PONG]

    def test_close_codes_match_rfc_7_4_1(self) -> None:
        assert CloseCode.NORMAL_CLOSURE == 1000
        assert CloseCode.PROTOCOL_ERROR == 1002
        assert CloseCode.NO_STATUS_RCVD == 1005
        assert CloseCode.ABNORMAL_CLOSURE == 1006
        assert CloseCode.INVALID_DATA == 1007
        assert CloseCode.MESSAGE_TOO_BIG == 1009


class TestClosePayload:
    def test_close_payload_is_code_then_utf8_reason(self) -> None:
        """§5.5.1: a 2-byte big-endian code, then the UTF-8 reason."""
        assert encode_close_payload(1000, "bye é") == b"\x03\xe8bye \xc3\xa9"
        assert parse_close_payload(b"\x03\xe8bye \xc3\xa9") == (1000, "bye é")

    def test_reason_of_123_bytes_fits_and_124_does_not(self) -> None:
        """§5.5: a control frame payload is at most 125 bytes."""
        assert len(encode_close_payload(1000, "x" * 123)) == 125
        with pytest.raises(ValueError):
            encode_close_payload(1000, "x" * 124)

    def test_empty_close_payload_means_no_status(self) -> None:
        """§7.1.5: a close frame without a code is reported as 1005."""
        assert parse_close_payload(b"") == (1005, "")

    def test_one_byte_close_payload_refused(self) -> None:
        with pytest.raises(ProtocolError) as info:
            parse_close_payload(b"\x03")
        assert info.value.code == 1002

    @pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 2999, 5000])
    def test_invalid_close_code_refused(self, code: int) -> None:
        with pytest.raises(ProtocolError) as info:
            parse_close_payload(code.to_bytes(2, "big"))
        assert info.value.code == 1002

    def test_close_reason_not_utf8_is_invalid_data(self) -> None:
        with pytest.raises(InvalidPayloadData) as info:
            parse_close_payload(b"\x03\xe8\xff")
        assert info.value.code == 1007
