"""Properties that hold for every input: round trips, masking, and reads split anywhere.

Every read is partial (STYLE.md §3): a byte stream must give the same events and
the same bytes to send however the socket happens to cut it.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from itertools import pairwise

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.ws.connection import Connection, State
from app.ws.deflate import DeflateParams, PerMessageDeflate
from app.ws.events import BinaryMessage, CloseReceived, Event, Ping, Pong, TextMessage
from app.ws.frames import Frame, FrameParser, Opcode, apply_mask, encode_close_payload, encode_frame, read_frames

TAIL = b"\x00\x00\xff\xff"
DATA_OPCODES = [Opcode.CONTINUATION, Opcode.TEXT, Opcode.BINARY]
CONTROL_OPCODES = [Opcode.CLOSE, Opcode.PING, Opcode.PONG]

masks = st.binary(min_size=4, max_size=4)
optional_masks = st.none() | masks


def tiled(size: int, seed: bytes) -> bytes:
    """``size`` bytes repeating ``seed``: big payloads without drawing every byte."""
    return (seed * (size // len(seed) + 1))[:size]


def payloads(min_size: int, max_size: int) -> st.SearchStrategy[bytes]:
    if max_size <= 256:
        return st.binary(min_size=min_size, max_size=max_size)
    return st.builds(tiled, st.integers(min_size, max_size), st.binary(min_size=1, max_size=16))


@st.composite
def data_frames(draw: st.DrawFn, min_size: int, max_size: int) -> Frame:
    return Frame(
        draw(st.sampled_from(DATA_OPCODES)),
        draw(payloads(min_size, max_size)),
        fin=draw(st.booleans()),
        rsv1=draw(st.booleans()),
        rsv2=draw(st.booleans()),
        rsv3=draw(st.booleans()),
    )


@st.composite
def control_frames(draw: st.DrawFn) -> Frame:
    return Frame(
        draw(st.sampled_from(CONTROL_OPCODES)),
        draw(payloads(0, 125)),
        rsv1=draw(st.booleans()),
        rsv2=draw(st.booleans()),
        rsv3=draw(st.booleans()),
    )


def length_field_size(n: int) -> int:
    """Bytes after the first two that encode the length (§5.2)."""
    return 0 if n < 126 else 2 if n < 0x10000 else 8


def assert_round_trip(frame: Frame, mask: bytes | None, cut: int) -> None:
    """Encode, check the header size, parse back whole and in two pieces."""
    data = frame.serialize(mask)
    n = len(frame.payload)
    assert len(data) == 2 + length_field_size(n) + (4 if mask is not None else 0) + n
    assert bool(data[1] & 0x80) == (mask is not None)
    assert read_frames(data, masked=mask is not None) == [frame]

    parser = FrameParser(masked=mask is not None)
    cut = min(cut, len(data))
    chunks = []
    for piece in (data[:cut], data[cut:]):
        parser.feed(piece)
        while (chunk := parser.next()) is not None:
            chunks.append(chunk)
    assert b"".join(chunk.data for chunk in chunks) == frame.payload
    assert chunks[0].first and chunks[-1].last
    assert all(chunk.header.length == n for chunk in chunks)


class TestFrameRoundTrip:
    """Encode then parse gives the frame back, for each length class of §5.2 and every opcode."""

    @settings(max_examples=300)
    @given(data_frames(0, 125), optional_masks, st.integers(0, 200))
    def test_short_data_frame_round_trips(self, frame: Frame, mask: bytes | None, cut: int) -> None:
        assert_round_trip(frame, mask, cut)

    @settings(max_examples=60, deadline=None)
    @given(data_frames(126, 65535), optional_masks, st.integers(0, 70000))
    def test_medium_data_frame_round_trips(self, frame: Frame, mask: bytes | None, cut: int) -> None:
        assert_round_trip(frame, mask, cut)

    @settings(max_examples=8, deadline=None)
    @given(data_frames(65536, 70000), optional_masks, st.integers(0, 70020))
    def test_long_data_frame_round_trips(self, frame: Frame, mask: bytes | None, cut: int) -> None:
        assert_round_trip(frame, mask, cut)

    @settings(max_examples=200)
    @given(control_frames(), optional_masks, st.integers(0, 140))
    def test_control_frame_round_trips(self, frame: Frame, mask: bytes | None, cut: int) -> None:
        assert_round_trip(frame, mask, cut)

    @given(st.integers(126, 65535) | st.integers(65536, (1 << 63) - 1))
    def test_extended_length_header_is_read_before_any_payload(self, n: int) -> None:
        """§5.2: 16-bit and 64-bit lengths, up to 2**63 - 1, read from the header alone."""
        parser = FrameParser(masked=False)
        parser.feed(bytes([0x82, 126 if n < 0x10000 else 127]) + n.to_bytes(length_field_size(n), "big"))
        chunk = parser.next()
        assert chunk is not None
        assert chunk.header.length == n
        assert chunk.data == b""
        assert chunk.first and not chunk.last


class TestMask:
    @given(st.binary(max_size=300), masks, st.integers(0, 1 << 20))
    def test_masking_twice_gives_back_the_data(self, data: bytes, mask: bytes, offset: int) -> None:
        """§5.3: the same algorithm masks and unmasks."""
        assert apply_mask(apply_mask(data, mask, offset), mask, offset) == data

    @given(st.binary(max_size=300), masks, st.lists(st.integers(0, 300), max_size=6), st.integers(0, 1 << 20))
    def test_unmasking_in_pieces_at_any_offset_equals_unmasking_whole(
        self, data: bytes, mask: bytes, cuts: list[int], base: int
    ) -> None:
        """A payload that arrives in pieces unmasks the same as one that arrives whole."""
        bounds = [0, *sorted(min(cut, len(data)) for cut in cuts), len(data)]
        pieces = [apply_mask(data[a:b], mask, base + a) for a, b in pairwise(bounds)]
        assert b"".join(pieces) == apply_mask(data, mask, base)

    @given(st.binary(max_size=64), masks)
    def test_mask_is_bytewise_xor_with_the_key(self, data: bytes, mask: bytes) -> None:
        assert apply_mask(data, mask) == bytes(b ^ mask[i % 4] for i, b in enumerate(data))


@dataclass(frozen=True)
class Scenario:
    """Client bytes, and what a server connection must make of them."""

    data: bytes
    events: list[Event]
    replies: bytes
    close_code: int | None
    failed: bool
    client_no_context_takeover: bool


VALID_CLOSE_CODES = [1000, 1001, 1003, 1008, 1011, 3000, 4999]
# (frame, close code): frames that fail the connection at the end of a stream
BAD_TAILS = [
    (encode_frame(Opcode.TEXT, b"unmasked"), 1002),
    (encode_frame(5, b"", mask=b"abcd"), 1002),
    (encode_frame(Opcode.TEXT, b"ok \xce\x41 never", mask=b"abcd"), 1007),
    (encode_frame(Opcode.TEXT, b"ok \xed\xa0\x80", mask=b"abcd"), 1007),
    (encode_frame(Opcode.CLOSE, b"\x03\xed", mask=b"abcd"), 1002),
    (encode_frame(Opcode.CONTINUATION, b"x", mask=b"abcd"), 1002),
    (encode_frame(Opcode.PING, b"x", fin=False, mask=b"abcd"), 1002),
    (encode_frame(Opcode.BINARY, b"\xff" * 3000, mask=b"abcd"), 1009),
]
MAX_MESSAGE_SIZE = 2000


@st.composite
def scenarios(draw: st.DrawFn, deflate: bool) -> Scenario:
    """Several client messages, fragmented, with pings in between, maybe compressed."""
    mask = draw(masks)
    client_nct = deflate and draw(st.booleans())
    compressor = zlib.compressobj(wbits=-15)
    frames: list[bytes] = []
    events: list[Event] = []
    replies: list[bytes] = []

    def control(opcode: Opcode) -> None:
        payload = draw(st.binary(max_size=20))
        frames.append(encode_frame(opcode, payload, mask=mask))
        if opcode is Opcode.PING:
            events.append(Ping(payload))
            replies.append(encode_frame(Opcode.PONG, payload))
        else:
            events.append(Pong(payload))

    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["text", "binary", "large", "ping", "pong"]))
        if kind in ("ping", "pong"):
            control(Opcode.PING if kind == "ping" else Opcode.PONG)
            continue
        if kind == "text":
            text = draw(st.text(max_size=30))
            raw = text.encode()
            event: Event = TextMessage(text)
        else:
            # "large" needs the 16-bit length field (§5.2), so headers split there too
            raw = draw(st.binary(max_size=40) if kind == "binary" else payloads(126, 400))
            event = BinaryMessage(raw)
        compressed = deflate and draw(st.booleans())
        wire = raw
        if compressed:
            if client_nct:
                compressor = zlib.compressobj(wbits=-15)
            wire = compressor.compress(raw) + compressor.flush(zlib.Z_SYNC_FLUSH)
            assert wire.endswith(TAIL)
            wire = wire[:-4]
        cuts = sorted(draw(st.lists(st.integers(0, len(wire)), max_size=3)))
        bounds = [0, *cuts, len(wire)]
        parts = [wire[a:b] for a, b in pairwise(bounds)]
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            opcode = (Opcode.TEXT if kind == "text" else Opcode.BINARY) if i == 0 else Opcode.CONTINUATION
            frames.append(encode_frame(opcode, part, fin=last, rsv1=compressed and i == 0, mask=mask))
            if not last and draw(st.booleans()):
                control(draw(st.sampled_from([Opcode.PING, Opcode.PONG])))
        events.append(event)

    close_code = None
    ending = draw(st.sampled_from(["none", "close", "bad"]))
    if ending == "close":
        close_code = draw(st.sampled_from(VALID_CLOSE_CODES))
        reason = draw(st.text(max_size=10))
        frames.append(encode_frame(Opcode.CLOSE, encode_close_payload(close_code, reason), mask=mask))
        events.append(CloseReceived(close_code, reason))
        replies.append(encode_frame(Opcode.CLOSE, encode_close_payload(close_code)))
    elif ending == "bad":
        tail, close_code = draw(st.sampled_from(BAD_TAILS))
        frames.append(tail)
    return Scenario(b"".join(frames), events, b"".join(replies), close_code, ending == "bad", client_nct)


def run(scenario: Scenario, pieces: list[bytes], deflate: bool) -> tuple[list[Event], bytes, State, int | None]:
    """Feed ``pieces`` to a fresh connection, pulling events and output after each."""
    params = DeflateParams(client_no_context_takeover=scenario.client_no_context_takeover)
    conn = Connection(
        deflate=PerMessageDeflate(params) if deflate else None,
        max_message_size=MAX_MESSAGE_SIZE,
    )
    events: list[Event] = []
    out: list[bytes] = []
    for piece in pieces:
        conn.receive_data(piece)
        events.extend(conn.events())
        out.append(conn.data_to_send())
    return events, b"".join(out), conn.state, conn.close_code


def assert_same_however_split(scenario: Scenario, deflate: bool) -> None:
    data = scenario.data
    whole = run(scenario, [data], deflate)
    events, sent, state, close_code = whole
    assert events == scenario.events
    assert close_code == scenario.close_code
    assert state is (State.OPEN if close_code is None else State.CLOSED)
    if scenario.failed:
        # the pongs, then the close frame that fails the connection (§7.1.7)
        assert sent.startswith(scenario.replies)
        [close] = read_frames(sent[len(scenario.replies) :], masked=False)
        assert close.opcode is Opcode.CLOSE
        assert int.from_bytes(close.payload[:2], "big") == close_code
    else:
        assert sent == scenario.replies
    for cut in range(len(data) + 1):
        assert run(scenario, [data[:cut], data[cut:]], deflate) == whole, f"split at {cut}"
    assert run(scenario, [data[i : i + 1] for i in range(len(data))], deflate) == whole


class TestSplitReads:
    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(scenarios(deflate=False))
    def test_stream_split_anywhere_gives_the_same_events_and_replies(self, scenario: Scenario) -> None:
        assert_same_however_split(scenario, deflate=False)

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(scenarios(deflate=True))
    def test_compressed_stream_split_anywhere_gives_the_same_events_and_replies(self, scenario: Scenario) -> None:
        assert_same_however_split(scenario, deflate=True)
