"""The connection state machine (RFC 6455 §5–§7): one test per MUST it enforces.

Every failure is checked on the wire: the close frame the connection queues
(parsed as a client would, unmasked), its code, the state, and that input
after the failure is ignored (§7.1.7: "MUST NOT further process data").
"""

from __future__ import annotations

import time

import pytest

from app.ws.connection import DEFAULT_MAX_MESSAGE_SIZE, Connection, State
from app.ws.deflate import DeflateParams, PerMessageDeflate
from app.ws.events import BinaryMessage, CloseReceived, Event, Ping, Pong, TextMessage
from app.ws.exceptions import InvalidState
from app.ws.frames import CloseCode, Frame, Opcode, encode_frame, parse_close_payload, read_frames
from tests.support.memory import peak_memory
from tests.support.wire import MASK, client_deflate

INVALID_CLOSE_CODES = [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535]
VALID_CLOSE_CODES = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999]


def frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv1: bool = False,
    rsv2: bool = False,
    rsv3: bool = False,
) -> bytes:
    """A client frame, masked as §5.1 requires."""
    return encode_frame(opcode, payload, fin=fin, rsv1=rsv1, rsv2=rsv2, rsv3=rsv3, mask=MASK)


def header(opcode: int, length: int, *, fin: bool = True, rsv1: bool = False) -> bytes:
    """Just the header of a masked client frame announcing ``length`` bytes."""
    b0 = opcode | (0x80 if fin else 0) | (0x40 if rsv1 else 0)
    if length < 126:
        return bytes([b0, 0x80 | length]) + MASK
    if length < 0x10000:
        return bytes([b0, 0xFE]) + length.to_bytes(2, "big") + MASK
    return bytes([b0, 0xFF]) + length.to_bytes(8, "big") + MASK


def feed(conn: Connection, *pieces: bytes) -> list[Event]:
    """Feed ``pieces`` one after the other, pulling every event after each."""
    events: list[Event] = []
    for piece in pieces:
        conn.receive_data(piece)
        events.extend(conn.events())
    return events


def sent(conn: Connection) -> list[Frame]:
    """The frames the connection queued, parsed as the client would (unmasked, §5.1)."""
    return read_frames(conn.data_to_send(), masked=False)


def assert_ignores_input(conn: Connection) -> None:
    """§7.1.7: once failed or closed, nothing more is processed or sent."""
    code = conn.close_code
    conn.receive_data(frame(Opcode.PING, b"late"))
    conn.receive_data(frame(Opcode.TEXT, b"late"))
    conn.receive_data(b"\x00\x00garbage")
    assert conn.events() == []
    assert conn.next_event() is None
    assert conn.data_to_send() == b""
    assert conn.state is State.CLOSED
    assert conn.close_code == code


def assert_failed(conn: Connection, code: int) -> str:
    """The connection failed with ``code`` (§7.1.7): one close frame, CLOSED, deaf from now on."""
    frames = sent(conn)
    assert [f.opcode for f in frames] == [Opcode.CLOSE]
    sent_code, reason = parse_close_payload(frames[0].payload)
    assert sent_code == code
    assert len(reason.encode()) <= 123  # §5.5.1: the reason fits a control frame
    assert conn.state is State.CLOSED
    assert conn.close_code == code
    assert conn.close_reason == reason
    assert conn.failure is not None
    assert conn.failure.code == code
    assert_ignores_input(conn)
    return reason


def fails_with(data: bytes, code: int, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> Connection:
    """A fresh connection fed ``data`` fails with ``code`` and reports no event."""
    conn = Connection(max_message_size=max_message_size)
    assert feed(conn, data) == []
    assert_failed(conn, code)
    return conn


def deflate_connection(**kwargs: int) -> Connection:
    return Connection(deflate=PerMessageDeflate(DeflateParams()), **kwargs)


class TestFraming:
    """RFC 6455 §5.1–§5.5: what a server MUST refuse in the framing."""

    @pytest.mark.parametrize("opcode", [Opcode.TEXT, Opcode.BINARY, Opcode.PING, Opcode.CLOSE])
    def test_unmasked_client_frame_fails_with_1002(self, opcode: Opcode) -> None:
        """§5.1: "a server MUST close the connection upon receiving a frame that is not masked"."""
        payload = b"\x03\xe8" if opcode is Opcode.CLOSE else b"Hello"
        fails_with(encode_frame(opcode, payload), 1002)

    @pytest.mark.parametrize("bit", ["rsv1", "rsv2", "rsv3"])
    @pytest.mark.parametrize("opcode", [Opcode.TEXT, Opcode.BINARY, Opcode.PING, Opcode.PONG, Opcode.CLOSE])
    def test_reserved_bit_without_extension_fails_with_1002(self, bit: str, opcode: Opcode) -> None:
        """§5.2: RSV1-3 MUST be 0 unless an extension defines them."""
        fails_with(frame(opcode, b"", **{bit: True}), 1002)

    @pytest.mark.parametrize("bit", ["rsv2", "rsv3"])
    def test_rsv2_or_rsv3_with_deflate_negotiated_fails_with_1002(self, bit: str) -> None:
        """RFC 7692 defines RSV1 only."""
        conn = deflate_connection()
        assert feed(conn, frame(Opcode.TEXT, b"x", **{bit: True})) == []
        assert_failed(conn, 1002)

    @pytest.mark.parametrize("opcode", [Opcode.PING, Opcode.PONG, Opcode.CLOSE])
    def test_rsv1_on_a_control_frame_with_deflate_negotiated_fails_with_1002(self, opcode: Opcode) -> None:
        """RFC 7692 §6: permessage-deflate applies to data messages only."""
        conn = deflate_connection()
        assert feed(conn, frame(opcode, b"", rsv1=True)) == []
        assert_failed(conn, 1002)

    def test_rsv1_on_a_continuation_frame_with_deflate_negotiated_fails_with_1002(self) -> None:
        """RFC 7692 §6.1: RSV1 is set on the first frame of a message only."""
        conn = deflate_connection()
        data = client_deflate(b"hello hello hello")
        events = feed(
            conn,
            frame(Opcode.TEXT, data[:3], fin=False, rsv1=True),
            frame(Opcode.CONTINUATION, data[3:], rsv1=True),
        )
        assert events == []
        assert_failed(conn, 1002)

    @pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 11, 12, 13, 14, 15])
    def test_reserved_opcode_fails_with_1002(self, opcode: int) -> None:
        """§5.2: "If an unknown opcode is received, the receiving endpoint MUST _Fail_"."""
        fails_with(frame(opcode, b"x"), 1002)

    @pytest.mark.parametrize("opcode", [Opcode.PING, Opcode.PONG, Opcode.CLOSE])
    def test_fragmented_control_frame_fails_with_1002(self, opcode: Opcode) -> None:
        """§5.5: "Control frames ... MUST NOT be fragmented"."""
        fails_with(frame(opcode, b"", fin=False), 1002)

    @pytest.mark.parametrize("opcode", [Opcode.PING, Opcode.PONG, Opcode.CLOSE])
    def test_control_frame_over_125_bytes_fails_with_1002(self, opcode: Opcode) -> None:
        """§5.5: "All control frames MUST have a payload length of 125 bytes or less"."""
        fails_with(frame(opcode, b"\x03\xe8" + b"x" * 124), 1002)

    def test_control_frame_over_125_bytes_fails_from_its_header(self) -> None:
        fails_with(header(Opcode.PING, 126), 1002)

    def test_control_frame_of_125_bytes_is_accepted(self) -> None:
        conn = Connection()
        assert feed(conn, frame(Opcode.PING, b"x" * 125)) == [Ping(b"x" * 125)]
        assert sent(conn) == [Frame(Opcode.PONG, b"x" * 125)]

    def test_continuation_frame_without_a_start_fails_with_1002(self) -> None:
        """§5.4: a fragmented message starts with a non-continuation frame."""
        fails_with(frame(Opcode.CONTINUATION, b"lo"), 1002)

    def test_continuation_after_a_finished_message_fails_with_1002(self) -> None:
        conn = Connection()
        assert feed(conn, frame(Opcode.TEXT, b"Hel", fin=False), frame(Opcode.CONTINUATION, b"lo")) == [
            TextMessage("Hello")
        ]
        assert feed(conn, frame(Opcode.CONTINUATION, b"!")) == []
        assert_failed(conn, 1002)

    @pytest.mark.parametrize("opcode", [Opcode.TEXT, Opcode.BINARY])
    def test_new_data_frame_inside_a_fragmented_message_fails_with_1002(self, opcode: Opcode) -> None:
        """§5.4: fragments of one message are not interleaved with another message."""
        conn = Connection()
        assert feed(conn, frame(Opcode.TEXT, b"Hel", fin=False), frame(opcode, b"lo")) == []
        assert_failed(conn, 1002)

    @pytest.mark.parametrize(
        "data",
        [
            pytest.param(bytes([0x82, 0xFE, 0x00, 0x7D]) + MASK + b"x" * 125, id="16-bit-125"),
            pytest.param(bytes([0x82, 0xFE, 0x00, 0x00]) + MASK, id="16-bit-0"),
            pytest.param(bytes([0x82, 0xFF]) + (65535).to_bytes(8, "big") + MASK, id="64-bit-65535"),
            pytest.param(bytes([0x82, 0xFF]) + (125).to_bytes(8, "big") + MASK + b"x" * 125, id="64-bit-125"),
        ],
    )
    def test_non_minimal_length_encoding_fails_with_1002(self, data: bytes) -> None:
        """§5.2: "the minimal number of bytes MUST be used to encode the length"."""
        fails_with(data, 1002)

    def test_64_bit_length_with_most_significant_bit_fails_with_1002(self) -> None:
        """§5.2: "the most significant bit MUST be 0"."""
        fails_with(bytes([0x82, 0xFF]) + (1 << 63 | 0x10000).to_bytes(8, "big") + MASK, 1002)


class TestCloseFrames:
    """§5.5.1 and §7.4: close frames received."""

    @pytest.mark.parametrize("code", INVALID_CLOSE_CODES)
    def test_invalid_close_code_fails_with_1002(self, code: int) -> None:
        """§7.4: only 1000–1003, 1007–1011 and 3000–4999 may be sent; anything else is a protocol error."""
        fails_with(frame(Opcode.CLOSE, code.to_bytes(2, "big")), 1002)

    @pytest.mark.parametrize("code", VALID_CLOSE_CODES)
    def test_valid_close_code_is_echoed(self, code: int) -> None:
        """§5.5.1: "the endpoint typically echos the status code it received"."""
        conn = Connection()
        assert feed(conn, frame(Opcode.CLOSE, code.to_bytes(2, "big") + b"bye")) == [CloseReceived(code, "bye")]
        assert sent(conn) == [Frame(Opcode.CLOSE, code.to_bytes(2, "big"))]
        assert conn.state is State.CLOSED
        assert conn.close_code == code
        assert conn.close_reason == "bye"
        assert conn.failure is None
        assert_ignores_input(conn)

    def test_one_byte_close_payload_fails_with_1002(self) -> None:
        """§5.5.1: a body, if any, starts with a 2-byte code."""
        fails_with(frame(Opcode.CLOSE, b"\x03"), 1002)

    def test_empty_close_payload_is_answered_with_an_empty_close(self) -> None:
        """§7.1.5: no code means 1005, which MUST NOT be sent back (§7.4.1)."""
        conn = Connection()
        assert feed(conn, frame(Opcode.CLOSE)) == [CloseReceived(1005, "")]
        assert sent(conn) == [Frame(Opcode.CLOSE, b"")]
        assert conn.state is State.CLOSED
        assert conn.close_code == 1005
        assert_ignores_input(conn)

    def test_invalid_utf8_in_close_reason_fails_with_1007(self) -> None:
        """§5.5.1: the reason is UTF-8; §7.4.1: 1007 for inconsistent data."""
        fails_with(frame(Opcode.CLOSE, b"\x03\xe8bad \xff reason"), 1007)

    def test_close_reason_with_a_surrogate_fails_with_1007(self) -> None:
        fails_with(frame(Opcode.CLOSE, b"\x03\xe8\xed\xa0\x80"), 1007)


class TestTextValidation:
    """§5.6 and §8.1: text is UTF-8, checked as it arrives."""

    def test_invalid_utf8_in_a_single_frame_fails_with_1007(self) -> None:
        fails_with(frame(Opcode.TEXT, b"caf\xe9"), 1007)

    def test_invalid_utf8_across_fragments_fails_at_the_fragment_that_makes_it_invalid(self) -> None:
        """§8.1: fail as soon as the data cannot be valid, before the message ends."""
        conn = Connection()
        assert feed(conn, frame(Opcode.TEXT, b"ok \xce", fin=False)) == []
        assert conn.state is State.OPEN
        assert conn.data_to_send() == b""
        # \xce needs a continuation byte; "A" is not one
        assert feed(conn, frame(Opcode.CONTINUATION, b"A more", fin=False)) == []
        assert_failed(conn, 1007)
        assert feed(conn, frame(Opcode.CONTINUATION, b" end")) == []

    def test_invalid_utf8_in_a_frame_fed_in_pieces_fails_at_the_piece_with_the_bad_byte(self) -> None:
        payload = "κόσμε ".encode() + b"\xff" + b" never read"
        data = frame(Opcode.TEXT, payload)
        bad = 6 + payload.index(b"\xff")  # 2 header bytes, 4 mask bytes
        conn = Connection()
        assert feed(conn, data[:bad]) == []
        assert conn.state is State.OPEN
        assert conn.data_to_send() == b""
        assert feed(conn, data[bad : bad + 1]) == []
        assert_failed(conn, 1007)

    def test_surrogate_prefix_fails_at_its_second_byte_within_a_frame(self) -> None:
        """RFC 3629 §3: ED A0 can only start a surrogate; fail there, not at the next byte."""
        data = frame(Opcode.TEXT, b"ab\xed\xa0\x80cd")
        conn = Connection()
        assert feed(conn, data[: 6 + 3]) == []
        assert conn.state is State.OPEN
        assert feed(conn, data[6 + 3 : 6 + 4]) == []
        assert_failed(conn, 1007)

    def test_surrogate_prefix_fails_at_the_fragment_that_ends_with_it(self) -> None:
        conn = Connection()
        assert feed(conn, frame(Opcode.TEXT, b"ab\xed", fin=False)) == []
        assert conn.state is State.OPEN
        assert feed(conn, frame(Opcode.CONTINUATION, b"\xa0", fin=False)) == []
        assert_failed(conn, 1007)

    def test_incomplete_sequence_at_the_end_of_a_message_fails_with_1007(self) -> None:
        conn = Connection()
        assert feed(conn, frame(Opcode.TEXT, b"ok \xe2\x82", fin=False), frame(Opcode.CONTINUATION, b"")) == []
        assert_failed(conn, 1007)

    def test_character_split_across_fragments_is_reassembled(self) -> None:
        data = "€𝄞".encode()
        conn = Connection()
        pieces = [frame(Opcode.TEXT, data[:1], fin=False)]
        pieces += [frame(Opcode.CONTINUATION, data[i : i + 1], fin=False) for i in range(1, len(data))]
        pieces.append(frame(Opcode.CONTINUATION, b""))
        assert feed(conn, *pieces) == [TextMessage("€𝄞")]

    def test_invalid_utf8_in_a_compressed_message_fails_with_1007(self) -> None:
        conn = deflate_connection()
        assert feed(conn, frame(Opcode.TEXT, client_deflate(b"ok \xff"), rsv1=True)) == []
        assert_failed(conn, 1007)

    def test_binary_message_is_not_checked_as_utf8(self) -> None:
        conn = Connection()
        assert feed(conn, frame(Opcode.BINARY, b"\xff\xed\xa0")) == [BinaryMessage(b"\xff\xed\xa0")]


class TestMessageSize:
    """§10.4: limits on message size, 1009 (§7.4.1) when exceeded."""

    def test_message_at_the_limit_is_received(self) -> None:
        conn = Connection(max_message_size=1000)
        assert feed(conn, frame(Opcode.BINARY, b"x" * 1000)) == [BinaryMessage(b"x" * 1000)]

    def test_unfragmented_message_over_the_limit_fails_with_1009(self) -> None:
        fails_with(frame(Opcode.BINARY, b"x" * 1001), 1009, 1000)

    def test_text_message_over_the_limit_fails_with_1009(self) -> None:
        fails_with(frame(Opcode.TEXT, b"x" * 1001), 1009, 1000)

    def test_fragmented_message_whose_sum_exceeds_the_limit_fails_with_1009(self) -> None:
        conn = Connection(max_message_size=1000)
        events = feed(
            conn,
            frame(Opcode.BINARY, b"x" * 400, fin=False),
            frame(Opcode.CONTINUATION, b"x" * 400, fin=False),
            frame(Opcode.CONTINUATION, b"x" * 201),
        )
        assert events == []
        assert_failed(conn, 1009)

    def test_fragmented_message_at_the_limit_is_received(self) -> None:
        conn = Connection(max_message_size=1000)
        events = feed(conn, frame(Opcode.TEXT, b"x" * 500, fin=False), frame(Opcode.CONTINUATION, b"x" * 500))
        assert events == [TextMessage("x" * 1000)]

    def test_oversize_frame_fails_from_its_header_before_the_payload(self) -> None:
        """The limit applies to the announced length: nothing of the payload is read."""
        fails_with(header(Opcode.BINARY, 1001), 1009, 1000)

    def test_oversize_64_bit_frame_fails_from_its_header(self) -> None:
        fails_with(header(Opcode.TEXT, 1 << 40), 1009)

    def test_oversize_continuation_fails_from_its_header(self) -> None:
        conn = Connection(max_message_size=1000)
        assert feed(conn, frame(Opcode.BINARY, b"x" * 999, fin=False), header(Opcode.CONTINUATION, 2, fin=True)) == []
        assert_failed(conn, 1009)

    def test_compressed_message_inflating_over_the_limit_fails_with_1009(self) -> None:
        conn = deflate_connection(max_message_size=1000)
        assert feed(conn, frame(Opcode.BINARY, client_deflate(b"x" * 1001), rsv1=True)) == []
        assert_failed(conn, 1009)

    def test_compressed_message_inflating_to_the_limit_is_received(self) -> None:
        conn = deflate_connection(max_message_size=1000)
        assert feed(conn, frame(Opcode.BINARY, client_deflate(b"x" * 1000), rsv1=True)) == [BinaryMessage(b"x" * 1000)]

    def test_decompression_bomb_fails_with_1009_without_inflating_it(self, timeout_scale: float) -> None:
        """16 MiB of zeros in about 16 KiB: refused at 1 MiB, not after inflating it all."""
        bomb = client_deflate(bytes(16 * 1024 * 1024))
        assert len(bomb) < 32 * 1024
        conn = deflate_connection(max_message_size=1024 * 1024)
        data = frame(Opcode.BINARY, bomb, rsv1=True)
        started = time.perf_counter()
        events: list[Event] = []
        peak = peak_memory(lambda: events.extend(feed(conn, data)))
        elapsed = time.perf_counter() - started
        assert events == []
        assert_failed(conn, 1009)
        assert peak < 6 * 1024 * 1024  # inflating it all would take 16 MiB
        assert elapsed < 1.0 * timeout_scale

    def test_decompression_bomb_in_fragments_fails_with_1009(self) -> None:
        bomb = client_deflate(bytes(4 * 1024 * 1024))
        conn = deflate_connection(max_message_size=1024 * 1024)
        pieces = [frame(Opcode.BINARY, bomb[:100], fin=False, rsv1=True)]
        pieces += [frame(Opcode.CONTINUATION, bomb[i : i + 100], fin=False) for i in range(100, len(bomb), 100)]
        pieces.append(frame(Opcode.CONTINUATION, b""))
        assert feed(conn, *pieces) == []
        assert_failed(conn, 1009)


class TestPingPong:
    """§5.5.2, §5.5.3."""

    @pytest.mark.parametrize("payload", [b"", b"Hello", bytes(range(125))])
    def test_ping_is_answered_with_a_pong_echoing_its_payload(self, payload: bytes) -> None:
        """§5.5.2: "the Pong frame ... MUST have identical Application data"."""
        conn = Connection()
        assert feed(conn, frame(Opcode.PING, payload)) == [Ping(payload)]
        assert sent(conn) == [Frame(Opcode.PONG, payload)]
        assert conn.state is State.OPEN

    def test_every_ping_is_answered_in_order(self) -> None:
        conn = Connection()
        events = feed(conn, frame(Opcode.PING, b"1") + frame(Opcode.PING, b"2") + frame(Opcode.PING, b"3"))
        assert events == [Ping(b"1"), Ping(b"2"), Ping(b"3")]
        assert sent(conn) == [Frame(Opcode.PONG, b"1"), Frame(Opcode.PONG, b"2"), Frame(Opcode.PONG, b"3")]

    def test_pings_between_fragments_are_answered_and_the_message_assembles(self) -> None:
        """§5.4: control frames MAY be injected in the middle of a fragmented message."""
        conn = Connection()
        events = feed(
            conn,
            frame(Opcode.TEXT, b"Hel", fin=False),
            frame(Opcode.PING, b"a"),
            frame(Opcode.CONTINUATION, b"l", fin=False),
            frame(Opcode.PONG, b"b"),
            frame(Opcode.PING, b"c"),
            frame(Opcode.CONTINUATION, b"o"),
        )
        assert events == [Ping(b"a"), Pong(b"b"), Ping(b"c"), TextMessage("Hello")]
        assert sent(conn) == [Frame(Opcode.PONG, b"a"), Frame(Opcode.PONG, b"c")]

    def test_pong_is_reported_and_not_answered(self) -> None:
        """§5.5.3: an unsolicited pong needs no response."""
        conn = Connection()
        assert feed(conn, frame(Opcode.PONG, b"beat")) == [Pong(b"beat")]
        assert conn.data_to_send() == b""

    def test_without_auto_pong_pings_are_only_reported(self) -> None:
        conn = Connection(auto_pong=False)
        assert feed(conn, frame(Opcode.PING, b"x")) == [Ping(b"x")]
        assert conn.data_to_send() == b""
        conn.send_pong(b"x")
        assert sent(conn) == [Frame(Opcode.PONG, b"x")]

    def test_ping_after_we_sent_close_is_not_answered(self) -> None:
        """Our close frame is the last frame we send (§5.5.1), so a late ping is only reported."""
        conn = Connection()
        conn.send_close()
        conn.data_to_send()
        assert feed(conn, frame(Opcode.PING, b"x")) == [Ping(b"x")]
        assert conn.data_to_send() == b""

    def test_sent_ping_and_pong_are_unmasked_control_frames(self) -> None:
        conn = Connection()
        conn.send_ping(b"p")
        conn.send_pong(b"q")
        assert conn.data_to_send() == b"\x89\x01p\x8a\x01q"

    @pytest.mark.parametrize("method", ["send_ping", "send_pong"])
    def test_sending_a_control_payload_over_125_bytes_is_refused(self, method: str) -> None:
        conn = Connection()
        with pytest.raises(ValueError):
            getattr(conn, method)(b"x" * 126)
        assert conn.data_to_send() == b""


class TestClosingHandshake:
    """§7.1.2–§7.1.5."""

    def test_close_initiated_by_us_completes_when_the_peer_answers(self) -> None:
        conn = Connection()
        conn.send_close(1001, "going away")
        assert conn.state is State.CLOSING
        assert sent(conn) == [Frame(Opcode.CLOSE, b"\x03\xe9going away")]
        events = feed(conn, frame(Opcode.CLOSE, b"\x03\xe9"))
        assert events == [CloseReceived(1001, "")]
        assert conn.state is State.CLOSED
        assert conn.data_to_send() == b""  # no second close frame
        assert conn.failure is None
        assert_ignores_input(conn)

    def test_messages_still_arrive_while_closing(self) -> None:
        """§7.1.2: after sending close the endpoint keeps reading until the peer's close."""
        conn = Connection()
        conn.send_close()
        conn.data_to_send()
        assert feed(conn, frame(Opcode.TEXT, b"late"), frame(Opcode.CLOSE, b"\x03\xe8")) == [
            TextMessage("late"),
            CloseReceived(1000, ""),
        ]
        assert conn.state is State.CLOSED

    def test_protocol_error_while_closing_sends_no_second_close(self) -> None:
        conn = Connection()
        conn.send_close()
        conn.data_to_send()
        assert feed(conn, encode_frame(Opcode.TEXT, b"unmasked")) == []
        assert conn.state is State.CLOSED
        assert conn.close_code == 1002
        assert conn.data_to_send() == b""
        assert_ignores_input(conn)

    def test_close_initiated_by_the_peer_is_echoed_and_closes(self) -> None:
        """§5.5.1: reply with a close frame, then the server closes TCP first (§7.1.1)."""
        conn = Connection()
        events = feed(conn, frame(Opcode.CLOSE, b"\x03\xe8done"))
        assert events == [CloseReceived(1000, "done")]
        assert sent(conn) == [Frame(Opcode.CLOSE, b"\x03\xe8")]
        assert conn.state is State.CLOSED
        assert (conn.close_code, conn.close_reason) == (1000, "done")

    @pytest.mark.parametrize(
        ("method", "args"),
        [
            ("send_text", ("x",)),
            ("send_binary", (b"x",)),
            ("send_ping", (b"x",)),
            ("send_pong", (b"x",)),
            ("send_close", ()),
            ("send_encoded", (b"\x81\x01x",)),
        ],
    )
    @pytest.mark.parametrize("closing", [True, False], ids=["closing", "closed"])
    def test_sending_after_close_raises_invalid_state(self, method: str, args: tuple, closing: bool) -> None:
        """§5.5.1: "the endpoint MUST NOT send any more data frames" after a close frame."""
        conn = Connection()
        conn.send_close()
        if not closing:
            feed(conn, frame(Opcode.CLOSE, b"\x03\xe8"))
            assert conn.state is State.CLOSED
        else:
            assert conn.state is State.CLOSING
        conn.data_to_send()
        with pytest.raises(InvalidState):
            getattr(conn, method)(*args)
        assert conn.data_to_send() == b""

    def test_sending_after_a_failure_raises_invalid_state(self) -> None:
        conn = Connection()
        feed(conn, frame(7))
        with pytest.raises(InvalidState):
            conn.send_text("x")

    def test_eof_without_a_close_frame_is_1006(self) -> None:
        """§7.1.5: the connection closed with no close frame: code 1006."""
        conn = Connection()
        conn.receive_eof()
        assert conn.state is State.CLOSED
        assert conn.close_code == CloseCode.ABNORMAL_CLOSURE == 1006
        assert conn.data_to_send() == b""
        assert_ignores_input(conn)

    def test_eof_while_closing_without_the_peers_close_is_1006(self) -> None:
        """§7.1.5: no close frame *received* means code 1006, even after we sent ours.

        The module's own state table says the same: CLOSING --receive_eof()--> CLOSED (1006).
        """
        conn = Connection()
        conn.send_close(1001, "going away")
        conn.receive_eof()
        assert conn.state is State.CLOSED
        assert conn.close_code == 1006

    def test_eof_after_the_peers_close_keeps_its_code(self) -> None:
        conn = Connection()
        feed(conn, frame(Opcode.CLOSE, b"\x0f\xa0"))
        conn.receive_eof()
        assert conn.close_code == 4000

    def test_close_reason_is_truncated_to_123_bytes_on_a_character_boundary(self) -> None:
        """§5.5: a control frame payload (code + reason) is at most 125 bytes."""
        conn = Connection()
        conn.send_close(1000, "é" * 100)
        [close] = sent(conn)
        code, reason = parse_close_payload(close.payload)
        assert code == 1000
        assert reason == "é" * 61
        assert len(close.payload) <= 125


class TestEventOrder:
    def test_valid_message_before_an_invalid_frame_is_delivered_first(self) -> None:
        """next_event parses one event at a time: the message is handled, then the connection fails."""
        conn = Connection()
        conn.receive_data(frame(Opcode.TEXT, b"first") + frame(Opcode.PING, b"p") + frame(6, b"bad"))
        assert conn.next_event() == TextMessage("first")
        assert conn.state is State.OPEN
        assert conn.data_to_send() == b""
        assert conn.next_event() == Ping(b"p")
        assert sent(conn) == [Frame(Opcode.PONG, b"p")]
        assert conn.next_event() is None
        assert_failed(conn, 1002)

    def test_events_after_the_peers_close_are_not_parsed(self) -> None:
        conn = Connection()
        conn.receive_data(frame(Opcode.CLOSE, b"\x03\xe8") + frame(Opcode.TEXT, b"after"))
        assert conn.events() == [CloseReceived(1000, "")]
        assert conn.next_event() is None

    def test_sent_messages_are_unmasked_frames(self) -> None:
        """§5.1: "A server MUST NOT mask any frames that it sends"."""
        conn = Connection()
        conn.send_text("Hello")
        conn.send_binary(b"\x00\x01")
        assert conn.data_to_send() == b"\x81\x05Hello\x82\x02\x00\x01"
        assert conn.data_to_send() == b""
