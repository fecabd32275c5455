"""Fuzzing the two edges where a client's bytes come in: the request head and the frames.

Whatever a client sends, only the protocol's own answers may come out. Before
the upgrade: a request, or a :class:`HandshakeRejected` carrying an HTTP status
(400, 431), and for any request :func:`accept` returns a 101 or a well-formed
rejection. After it: events, pongs and at most one close frame, whose code
names the rule that was broken (1002, 1007, 1009). Never another exception,
never a buffer beyond its bound, never a message over ``max_message_size``
(compressed or not), and the same outcome however the socket cuts the bytes.

Each property is an *oracle*, a function that fails with ``AssertionError``,
paired in :data:`CHECKS` with the strategy that feeds it: arbitrary bytes,
and valid traffic with one mutation whose consequence is known. The tests
below run every check briefly; ``python -m tests.ws.fuzz_long`` runs the same
checks for as long as asked, coverage-guided under atheris when it is
installed (see that module). test_properties.py pins the round trips of valid
traffic; this file is about hostile traffic.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from itertools import pairwise
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from app.ws.connection import Connection, State
from app.ws.deflate import DeflateConfig, DeflateParams, PerMessageDeflate, negotiate
from app.ws.events import BinaryMessage, CloseReceived, Event, Ping, Pong, TextMessage
from app.ws.exceptions import HandshakeRejected, InvalidPayloadData, MessageTooBig, ProtocolError
from app.ws.frames import (
    CloseCode,
    Opcode,
    apply_mask,
    encode_close_payload,
    encode_frame,
    parse_close_payload,
    read_frames,
)
from app.ws.handshake import Handshake, accept, accept_key, parse_extensions, rejection
from app.ws.http11 import MAX_HEAD_SIZE, Request, RequestReader
from tests.support.memory import peak_memory
from tests.support.wire import MASK, TAIL, client_deflate

from .test_connection import assert_ignores_input
from .test_handshake import assert_rejected, header, parse_response

# -- what every check shares ---------------------------------------------------


def split(data: bytes, cuts: Sequence[int]) -> list[bytes]:
    """``data`` cut at ``cuts`` (clamped, sorted), as the socket might deliver it."""
    bounds = [0, *sorted(min(max(cut, 0), len(data)) for cut in cuts), len(data)]
    return [data[a:b] for a, b in pairwise(bounds)]


def retained_bytes(obj: object, seen: set[int] | None = None) -> int:
    """Bytes held by ``obj``'s slots and the app.ws objects they hold, whatever the slots are called.

    Counts the length of every bytes, bytearray and str value (and of those in
    lists and tuples), so a buffer that grows shows up even after the code
    that keeps it is reorganised.
    """
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    total = 0
    for cls in type(obj).__mro__:
        for name in getattr(cls, "__slots__", ()):
            total += _value_size(getattr(obj, name, None), seen)
    return total


def _value_size(value: object, seen: set[int]) -> int:
    if isinstance(value, bytes | bytearray | str):
        return len(value)
    if isinstance(value, list | tuple):
        return sum(_value_size(item, seen) for item in value)
    if type(value).__module__.startswith("app.ws"):
        return retained_bytes(value, seen)
    return 0


#: Where the socket cuts a stream: mostly within the first bytes, where headers are.
cut_lists = st.lists(st.integers(0, 64) | st.integers(0, 4096), max_size=8).map(tuple)
masks = st.binary(min_size=4, max_size=4)


@dataclass(frozen=True)
class Check:
    """One fuzz target: a strategy and the oracle every value it draws must pass.

    ``raw`` checks take bytes as they are, so a coverage-guided fuzzer can
    mutate them directly, starting from ``seeds``.
    """

    name: str
    strategy: st.SearchStrategy[Any]
    oracle: Callable[[Any], None]
    raw: bool = False
    seeds: tuple[bytes, ...] = ()

    def reproducer(self, value: object) -> str:
        """Python that replays ``value`` through the oracle (run it from the repository root)."""
        return f"from tests.ws.test_fuzz import *\n{self.oracle.__name__}({value!r})"


# -- the request head and the handshake ----------------------------------------

READER_STATUSES = {HTTPStatus.BAD_REQUEST, HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE}
SUBPROTOCOLS = ("chat", "superchat")
DEFLATE_CONFIGS = (
    DeflateConfig(),
    DeflateConfig(
        server_no_context_takeover=True,
        client_no_context_takeover=True,
        server_max_window_bits=10,
        client_max_window_bits=9,
    ),
)


@dataclass(frozen=True)
class RequestCase:
    """Bytes a client sends before the upgrade, where the socket cuts them, and the reader's cap."""

    data: bytes
    cuts: tuple[int, ...] = ()
    max_size: int = MAX_HEAD_SIZE


Outcome = Request | HandshakeRejected | None


def read_head(pieces: Sequence[bytes], max_size: int) -> tuple[Outcome, bytes]:
    """What a :class:`RequestReader` makes of ``pieces``, and the bytes left after the head.

    Lets through nothing but :class:`HandshakeRejected` (any other exception
    fails the check), and holds at most its cap between two reads.
    """
    reader = RequestReader(max_size)
    for i, piece in enumerate(pieces):
        try:
            request = reader.feed(piece)
        except HandshakeRejected as error:
            return error, b""
        if request is not None:
            return request, reader.leftover + b"".join(pieces[i + 1 :])
        assert retained_bytes(reader) <= max_size, "the reader holds more than its cap between reads"
    return None, b""


def comparable(outcome: Outcome) -> object:
    if isinstance(outcome, HandshakeRejected):
        return (outcome.status, outcome.reason)
    return outcome


def check_request_bytes(case: RequestCase) -> None:
    """The reader refuses with 400 or 431 or returns a request, the same however the bytes are cut.

    The outcome is predicted from where the first CRLF CRLF is (RFC 7230 §3,
    RFC 6585 §5): no head end and over the cap is 431, so is a head whose end
    is over the cap, and a head within the cap is a request or a 400. The
    bytes after the head are handed on exactly, neither lost nor duplicated.
    """
    outcome, rest = read_head(split(case.data, case.cuts), case.max_size)
    whole, whole_rest = read_head([case.data], case.max_size)
    assert comparable(outcome) == comparable(whole), "the outcome depends on how the bytes were cut"
    end = case.data.find(b"\r\n\r\n")
    if end < 0:
        too_large = len(case.data) > case.max_size
        assert (outcome is None) if not too_large else isinstance(outcome, HandshakeRejected)
    else:
        too_large = end + 4 > case.max_size
        assert outcome is not None
    if isinstance(outcome, HandshakeRejected):
        assert outcome.status in READER_STATUSES
        assert (outcome.status == HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE) == too_large
        assert_rejected(rejection(outcome), outcome.status)
    elif outcome is not None:
        assert not too_large
        assert rest == whole_rest == case.data[end + 4 :]
        check_request(outcome)


def check_request(request: Request) -> None:
    """Everything the server reads from a parsed request works, and :func:`accept` is total."""
    assert isinstance(request.path, str)
    assert isinstance(request.query, dict)
    for name, _ in request.headers:
        assert request.get(name) is not None
    for subprotocols, deflate in [((), None), *((SUBPROTOCOLS, config) for config in DEFLATE_CONFIGS)]:
        check_handshake(request, accept(request, subprotocols=subprotocols, deflate=deflate), subprotocols, deflate)


def check_handshake(
    request: Request, handshake: Handshake, subprotocols: Sequence[str], config: DeflateConfig | None
) -> None:
    """A 101 that agrees to nothing it was not offered, or a well-formed 4xx/5xx that says why."""
    code, headers, body = parse_response(handshake.response.serialize())
    if not handshake.accepted:
        assert handshake.error is not None
        assert 400 <= handshake.error.status < 600
        assert_rejected(handshake, handshake.error.status)
        return
    assert code == 101
    assert body == b""
    [key] = request.get_all("Sec-WebSocket-Key")
    assert header(headers, "Sec-WebSocket-Accept") == [accept_key(key)]
    offered = [item.strip() for value in request.get_all("Sec-WebSocket-Protocol") for item in value.split(",")]
    if handshake.subprotocol is None:
        assert header(headers, "Sec-WebSocket-Protocol") == []
    else:
        assert handshake.subprotocol in subprotocols
        assert handshake.subprotocol in offered
        assert header(headers, "Sec-WebSocket-Protocol") == [handshake.subprotocol]
    extensions = header(headers, "Sec-WebSocket-Extensions")
    if handshake.deflate is None:
        assert extensions == []
    else:
        assert config is not None
        [value] = extensions
        [(name, _)] = parse_extensions(value)
        assert name == "permessage-deflate"
        check_agreement(handshake.deflate, config)


def check_agreement(params: DeflateParams, config: DeflateConfig) -> None:
    """An agreement within the configured limits, on which both sides can actually talk (RFC 7692 §7)."""
    assert 9 <= params.server_max_window_bits <= config.server_max_window_bits
    assert 8 <= params.client_max_window_bits <= 15
    assert params.server_no_context_takeover or not config.server_no_context_takeover
    codec = PerMessageDeflate(params, config)
    message = b"Hello, hello, hello! " * 20
    inflater = zlib.decompressobj(-params.server_max_window_bits)
    assert inflater.decompress(codec.compress(message) + TAIL) == message
    if params.client_max_window_bits >= 9:  # zlib cannot deflate with a 256-byte window
        compressor = zlib.compressobj(wbits=-params.client_max_window_bits)
        conn = Connection(deflate=codec)
        conn.receive_data(encode_frame(Opcode.BINARY, client_deflate(message, compressor), rsv1=True, mask=MASK))
        assert conn.events() == [BinaryMessage(message)]


def check_extensions_header(value: str) -> None:
    """``Sec-WebSocket-Extensions`` parses to tokens or raises ValueError, and negotiation is total.

    What parses is lower-cased tokens with token values, so writing it back
    and parsing again gives the same offers.
    """
    try:
        offers = parse_extensions(value)
    except ValueError:
        return
    written = ", ".join(
        "; ".join([name, *(param if arg is None else f"{param}={arg}" for param, arg in params)])
        for name, params in offers
    )
    assert parse_extensions(written) == offers
    for config in DEFLATE_CONFIGS:
        agreed = negotiate(offers, config)
        if agreed is not None:
            check_agreement(agreed, config)
            assert parse_extensions(agreed.response_header())[0][0] == "permessage-deflate"


TCHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
NASTY = b"\x00\t\n\r \x7f\x80\xff\"',;=:\\/[]?#@%"
tokens = st.text(TCHARS, min_size=1, max_size=12)
nasty_bytes = st.binary(max_size=24) | st.lists(st.sampled_from(NASTY), max_size=12).map(bytes)


@st.composite
def extension_offers(draw: st.DrawFn) -> str:
    """``Sec-WebSocket-Extensions`` values near the grammar of RFC 6455 §9.1, some of them broken."""
    names = st.sampled_from(["permessage-deflate", "PerMessage-Deflate", "x-webkit-deflate-frame"]) | tokens
    params = st.sampled_from(
        ["server_no_context_takeover", "client_no_context_takeover", "server_max_window_bits", "client_max_window_bits"]
    )
    values = st.sampled_from(["8", "9", "10", "15", "16", "0", "08", "7", '"10"', '"1\\0"', '""', '"a b"', "=", ""])
    space = st.sampled_from(["", " ", "  ", "\t"])
    offers = []
    for _ in range(draw(st.integers(1, 3))):
        parts = [draw(names)]
        for _ in range(draw(st.integers(0, 4))):
            name = draw(params | tokens)
            parts.append(name if draw(st.booleans()) else f"{name}{draw(space)}={draw(space)}{draw(values)}")
        offers.append(f"{draw(space)};{draw(space)}".join(parts))
    text = f"{draw(space)},{draw(space)}".join(offers)
    if draw(st.booleans()):
        position = draw(st.integers(0, len(text)))
        text = (
            text[:position] + draw(st.sampled_from([",", ";", '"', "\\", "=", ",,", " x ", "\x7f"])) + text[position:]
        )
    return text


REQUEST_HEADERS = [
    (b"Host", b"server.example.com"),
    (b"Upgrade", b"websocket"),
    (b"Connection", b"Upgrade"),
    (b"Sec-WebSocket-Key", b"dGhlIHNhbXBsZSBub25jZQ=="),
    (b"Sec-WebSocket-Version", b"13"),
]
MUTATIONS = ["drop", "duplicate", "case", "value", "name", "space", "fold", "lf", "nul", "pad"]
request_targets = st.sampled_from(
    ["/chat", "/", "*", "//[", "//[x]/p", "http://h/", "/a?b=1&b=2#f", "//]", "/%zz?%"]
) | (st.text("/?#[]@:%&=;az09~.\xe9", min_size=1, max_size=12).map(lambda t: "/" + t))


@st.composite
def mutated_requests(draw: st.DrawFn) -> RequestCase:
    """A valid upgrade request with a few of its lines broken, cut anywhere, sometimes near the reader's cap."""
    method = draw(st.sampled_from([b"GET", b"GET", b"POST", b"get", b"G(T"]))
    target = draw(request_targets).encode("latin-1")
    version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.10", b"http/1.1"]))
    headers = list(REQUEST_HEADERS)
    if draw(st.booleans()):
        offer = draw(st.lists(st.sampled_from([*SUBPROTOCOLS, "xmpp", " chat", "chat "]), min_size=1, max_size=3))
        headers.append((b"Sec-WebSocket-Protocol", ",".join(offer).encode()))
    if draw(st.booleans()):
        headers.append((b"Sec-WebSocket-Extensions", draw(extension_offers()).encode("latin-1")))
    lines = [b"%s: %s" % pair for pair in headers]
    line_ends = [b"\r\n"] * len(lines)
    max_size = draw(st.sampled_from([MAX_HEAD_SIZE, 64, 256, 1024]))
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(MUTATIONS))
        i = draw(st.integers(0, len(lines) - 1))
        name, _, value = lines[i].partition(b": ")
        if kind == "drop" and len(lines) > 1:
            del lines[i], line_ends[i]
        elif kind == "duplicate":
            lines.insert(i, lines[i])
            line_ends.insert(i, b"\r\n")
        elif kind == "case":
            lines[i] = draw(st.sampled_from([name.upper(), name.lower()])) + b": " + value
        elif kind == "value":
            lines[i] = name + b": " + draw(nasty_bytes)
        elif kind == "name":
            lines[i] = draw(nasty_bytes) + b": " + value
        elif kind == "space":
            lines[i] = name + b" : " + value
        elif kind == "fold":
            lines.insert(i + 1, b" " + value)
            line_ends.insert(i + 1, b"\r\n")
        elif kind == "lf":
            line_ends[i] = b"\n"
        elif kind == "nul":
            position = draw(st.integers(0, len(lines[i])))
            lines[i] = lines[i][:position] + b"\x00" + lines[i][position:]
        elif kind == "pad":
            lines.append(b"X-Pad: ")
            line_ends.append(b"\r\n")
    head = method + b" " + target + b" " + version + b"\r\n"
    head += b"".join(line + end for line, end in zip(lines, line_ends, strict=True))
    if lines[-1] == b"X-Pad: ":
        # a head ending right at the cap, or just over it
        size = max_size + draw(st.integers(-2, 2)) - len(head) - 2
        head = head[:-2] + b"a" * max(size, 0) + b"\r\n"
    end = draw(st.sampled_from([b"\r\n", b"\r\n", b"\n", b""]))
    leftover = draw(st.sampled_from([b"", encode_frame(Opcode.TEXT, b"hi", mask=MASK), b"\r\n\r\n"]))
    return RequestCase(head + end + leftover, draw(cut_lists), max_size)


def request_from_bytes(data: bytes) -> None:
    """Raw target: byte 0 picks the cap, byte 1 the read size, the rest is what the client sends."""
    if len(data) < 2:
        return
    max_size = MAX_HEAD_SIZE if data[0] < 128 else 16 + data[0]
    step = data[1] + 1
    payload = data[2:]
    check_request_bytes(RequestCase(payload, tuple(range(step, len(payload), step)), max_size))


REQUEST_SEEDS = tuple(
    bytes([0, 255]) + b"GET /chat HTTP/1.1\r\n" + b"".join(b"%s: %s\r\n" % pair for pair in headers) + b"\r\n"
    for headers in [
        REQUEST_HEADERS,
        [*REQUEST_HEADERS, (b"Sec-WebSocket-Extensions", b"permessage-deflate; client_max_window_bits")],
        [*REQUEST_HEADERS, (b"Sec-WebSocket-Protocol", b"xmpp, chat")],
    ]
)


# -- frames and the connection ----------------------------------------------------

CLOSE_CODES = {ProtocolError: 1002, InvalidPayloadData: 1007, MessageTooBig: 1009}


@dataclass(frozen=True)
class StreamCase:
    """Bytes a client sends after the upgrade, and what the connection agreed to.

    ``expected``, when known, is the events the connection must report and the
    close code it must end with (``None``: it stays open).
    """

    data: bytes
    cuts: tuple[int, ...] = ()
    deflate: bool = False
    client_no_context_takeover: bool = False
    max_message_size: int = 1024
    expected: tuple[tuple[Event, ...], int | None] | None = None


@dataclass(frozen=True)
class Run:
    """What a connection made of a stream: everything a caller of the API can observe."""

    events: tuple[Event, ...]
    sent: bytes
    state: State
    close_code: int | None
    close_reason: str
    failure: type[ProtocolError] | None = field(default=None)


def new_connection(case: StreamCase) -> Connection:
    deflate = None
    if case.deflate:
        deflate = PerMessageDeflate(DeflateParams(client_no_context_takeover=case.client_no_context_takeover))
    return Connection(deflate=deflate, max_message_size=case.max_message_size)


def run_stream(case: StreamCase, pieces: Sequence[bytes]) -> Run:
    """Feed ``pieces`` to a fresh connection as the I/O layer does, checking it after each read.

    Nothing may escape :meth:`Connection.next_event` (RFC 6455 §7.1.7 is the
    connection's job, not the caller's), and between reads the connection
    holds at most one message, a read, a partial control frame and a reason.
    """
    conn = new_connection(case)
    events: list[Event] = []
    out: list[bytes] = []
    largest_read = 0
    for piece in pieces:
        conn.receive_data(piece)
        while (event := conn.next_event()) is not None:
            events.append(event)
        out.append(conn.data_to_send())
        # one message, the largest read (a closed connection keeps its last), a control frame, a reason
        largest_read = max(largest_read, len(piece))
        bound = case.max_message_size + largest_read + 139 + 123 + 64
        assert retained_bytes(conn) <= bound, "the connection buffers beyond its bound"
    run = Run(
        tuple(events),
        b"".join(out),
        conn.state,
        conn.close_code,
        conn.close_reason,
        None if conn.failure is None else type(conn.failure),
    )
    check_run(conn, run, case.max_message_size)
    return run


def check_run(conn: Connection, run: Run, max_message_size: int) -> None:
    """The wire and the state agree with the events: pongs, then at most one close, with the right code."""
    frames = read_frames(run.sent, masked=False)
    assert sum(len(frame.serialize()) for frame in frames) == len(run.sent), "a partial frame was sent"
    assert all(frame.opcode in (Opcode.PONG, Opcode.CLOSE) for frame in frames)
    pongs = [frame.payload for frame in frames if frame.opcode is Opcode.PONG]
    closes = [frame for frame in frames if frame.opcode is Opcode.CLOSE]
    assert pongs == [event.payload for event in run.events if isinstance(event, Ping)]
    assert len(closes) <= 1
    assert not closes or frames[-1] == closes[0]
    for event in run.events:
        if isinstance(event, TextMessage):
            assert len(event.data.encode()) <= max_message_size
        elif isinstance(event, BinaryMessage):
            assert len(event.data) <= max_message_size
    received = [event for event in run.events if isinstance(event, CloseReceived)]
    assert not received or run.events[-1] == received[0], "an event came after the peer's close"
    if conn.failure is not None:
        assert not received
        assert run.state is State.CLOSED
        assert conn.failure.code == CLOSE_CODES[type(conn.failure)]
        assert run.close_code == conn.failure.code
        [close] = closes
        assert parse_close_payload(close.payload) == (run.close_code, run.close_reason)
        assert len(run.close_reason.encode()) <= 123
    elif received:
        [event] = received
        assert run.state is State.CLOSED
        assert (run.close_code, run.close_reason) == (event.code, event.reason)
        echo = b"" if event.code == CloseCode.NO_STATUS_RCVD else event.code.to_bytes(2, "big")
        assert [close.payload for close in closes] == [echo]
    else:
        assert run.state is State.OPEN
        assert run.close_code is None
        assert closes == []
    if run.state is State.CLOSED:
        assert_ignores_input(conn)


def observable(run: Run) -> tuple[object, ...]:
    """A run without its close reason, which names whichever defect was seen first.

    A compressed message may hold two defects, say bad deflate data after
    bytes that inflate to invalid UTF-8: cut after those bytes, the UTF-8
    check sees them first (§8.1, fail fast). Both are 1007; only the reason differs.
    """
    frames = read_frames(run.sent, masked=False)
    wire = [frame.payload[:2] if frame.opcode is Opcode.CLOSE else frame for frame in frames]
    return run.events, wire, run.state, run.close_code, run.failure


def check_stream(case: StreamCase) -> None:
    """A stream gives the same run whole and cut, and the one predicted when there is a prediction."""
    run = run_stream(case, split(case.data, case.cuts))
    whole = run_stream(case, [case.data])
    assert observable(whole) == observable(run), "the outcome depends on how the bytes were cut"
    if case.expected is not None:
        events, code = case.expected
        assert run.events == events
        assert run.close_code == code


def stream_from_bytes(data: bytes) -> None:
    """Raw target: byte 0 picks deflate and the size limit, byte 1 the read size, the rest is the stream."""
    if len(data) < 2:
        return
    flags, step, stream = data[0], data[1] + 1, data[2:]
    check_stream(
        StreamCase(
            stream,
            tuple(range(step, len(stream), step)),
            deflate=bool(flags & 1),
            client_no_context_takeover=bool(flags & 2),
            max_message_size=(0, 125, 1000, 70000)[(flags >> 2) & 3],
        )
    )


def compressed_from_bytes(data: bytes) -> None:
    """Raw target: the rest after three bytes of settings is a client's compressed message, in fragments.

    A fuzzer then mutates deflate data itself rather than frame headers. A
    second compressed message follows, so the state a mangled message leaves
    behind is used too.
    """
    if len(data) < 3:
        return
    flags, size, step, payload = data[0], data[1] + 1, data[2] + 1, data[3:]
    opcode = Opcode.TEXT if flags & 4 else Opcode.BINARY
    parts = split(payload, range(size, len(payload), size)) or [b""]
    frames = [
        encode_frame(opcode if i == 0 else Opcode.CONTINUATION, part, fin=i == len(parts) - 1, rsv1=i == 0, mask=MASK)
        for i, part in enumerate(parts)
    ]
    frames.append(encode_frame(Opcode.TEXT, client_deflate(b"after"), rsv1=True, mask=MASK))
    stream = b"".join(frames)
    check_stream(
        StreamCase(
            stream,
            tuple(range(step, len(stream), step)),
            deflate=True,
            client_no_context_takeover=bool(flags & 2),
            max_message_size=(64, 1000, 65536, 1 << 20)[(flags >> 3) & 3],
        )
    )


ZERO_MASK = b"\x00\x00\x00\x00"  # masks nothing: a fuzzer mutating a seed mutates the payload itself
# flags: bit 0 deflate, bit 1 client_no_context_takeover, bits 2-3 the limit (0, 125, 1000, 70000)
STREAM_SEEDS = tuple(
    bytes([flags, 255]) + stream
    for flags, stream in [
        (8, encode_frame(Opcode.TEXT, b"Hello", mask=ZERO_MASK)),
        (
            8,
            encode_frame(Opcode.TEXT, "h\xe9".encode(), fin=False, mask=ZERO_MASK)
            + encode_frame(Opcode.PING, b"p", mask=ZERO_MASK)
            + encode_frame(Opcode.CONTINUATION, b"llo", mask=ZERO_MASK)
            + encode_frame(Opcode.CLOSE, encode_close_payload(1000, "bye"), mask=ZERO_MASK),
        ),
        (9, encode_frame(Opcode.BINARY, client_deflate(b"Hello, hello"), rsv1=True, mask=ZERO_MASK)),
        (8, encode_frame(Opcode.BINARY, bytes(300), mask=ZERO_MASK)),
    ]
)
# flags: bit 1 client_no_context_takeover, bit 2 text, bits 3-4 the limit (64, 1000, 65536, 1 MiB)
COMPRESSED_SEEDS = tuple(
    bytes([flags, 255, 255]) + payload
    for flags, payload in [
        (12, client_deflate(b"Hello")),
        (8, client_deflate(bytes(100_000))),  # a bomb: 100 kB from 100 bytes, over the limit
        (14, bytes.fromhex("f248cdc9c90700")),  # RFC 7692 §7.2.3.1
        (12, bytes.fromhex("f348cdc9c9070000")),  # §7.2.3.4, a block with BFINAL
    ]
)


@st.composite
def raw_frames(draw: st.DrawFn) -> StreamCase:
    """Frames whose every header field is drawn: any first byte, masked or not, any length encoding.

    The declared length may be minimal, non-minimal, have its top bit set,
    or disagree with the payload; payloads are random, UTF-8 or deflate data.
    """
    stream = b""
    for _ in range(draw(st.integers(1, 6))):
        b0 = draw(st.integers(0, 255))
        payload = draw(
            st.binary(max_size=160)
            | st.text(max_size=40).map(str.encode)
            | st.binary(max_size=200).map(client_deflate)
            | st.sampled_from([b"\x03\xe8", b"\x03", b"\x03\xe8\xff", b"\x0f\xa0ok"])
        )
        length = len(payload) if draw(st.integers(0, 3)) else draw(st.integers(0, 1 << 16))
        encoding = draw(st.sampled_from(["minimal"] * 5 + ["16", "64", "msb"]))
        if draw(st.sampled_from([True] * 7 + [False])):
            mask = draw(masks)
            stream += frame_head(b0, length_field(length, encoding), mask) + apply_mask(payload, mask)
        else:
            stream += bytes([b0]) + length_field(length, encoding) + payload
    return StreamCase(
        stream,
        draw(cut_lists),
        deflate=draw(st.booleans()),
        client_no_context_takeover=draw(st.booleans()),
        max_message_size=draw(st.sampled_from([0, 1, 125, 126, 1000, 70000])),
    )


@dataclass
class Traffic:
    """A client's valid traffic as it is drawn: its frames, and the events they must give."""

    mask: bytes
    deflate: bool
    client_nct: bool
    frames: list[bytes] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    compressor: Any = field(default_factory=lambda: zlib.compressobj(wbits=-15))

    def frame(self, opcode: int, payload: bytes, **flags: Any) -> None:
        self.frames.append(encode_frame(opcode, payload, mask=self.mask, **flags))

    def compress(self, data: bytes) -> bytes:
        if self.client_nct:
            self.compressor = zlib.compressobj(wbits=-15)
        return client_deflate(data, self.compressor)

    def control(self, draw: st.DrawFn) -> None:
        opcode = draw(st.sampled_from([Opcode.PING, Opcode.PONG]))
        payload = draw(st.binary(max_size=20))
        self.frame(opcode, payload)
        self.events.append(Ping(payload) if opcode is Opcode.PING else Pong(payload))

    def message_start(self, draw: st.DrawFn) -> tuple[Opcode, Event, list[bytes], bool]:
        """A message's opcode, event and fragments (compressed or not), none of them sent yet."""
        if draw(st.booleans()):
            text = draw(st.text(max_size=30))
            opcode, raw, event = Opcode.TEXT, text.encode(), TextMessage(text)
        else:
            raw = draw(st.binary(max_size=60))
            opcode, event = Opcode.BINARY, BinaryMessage(raw)
        compressed = self.deflate and draw(st.booleans())
        wire = self.compress(raw) if compressed else raw
        return opcode, event, split(wire, draw(st.lists(st.integers(0, len(wire)), max_size=3))), compressed

    def message(self, draw: st.DrawFn) -> None:
        """A whole valid message, fragmented, with pings and pongs between its fragments."""
        opcode, event, parts, compressed = self.message_start(draw)
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            self.frame(opcode if i == 0 else Opcode.CONTINUATION, part, fin=last, rsv1=compressed and i == 0)
            if not last and draw(st.booleans()):
                self.control(draw)
        self.events.append(event)


def length_field(length: int, encoding: str = "minimal") -> bytes:
    """The 7-bit length and the extended length of §5.2, encoded as asked (to break the encoding).

    ``minimal`` is what §5.2 requires; ``16`` and ``64`` force that width, ``msb``
    sets the 64-bit length's top bit, which §5.2 requires to be 0.
    """
    if encoding == "minimal":
        encoding = "7" if length < 126 else "16" if length < 0x10000 else "64"
    if encoding == "7":
        return bytes([length])
    if encoding == "16":
        return bytes([126]) + (length & 0xFFFF).to_bytes(2, "big")
    top = 1 << 63 if encoding == "msb" else 0
    return bytes([127]) + ((length | top) & ((1 << 64) - 1)).to_bytes(8, "big")


def frame_head(b0: int, length: bytes, mask: bytes) -> bytes:
    """A masked frame's header, with its length field as given by :func:`length_field`."""
    return bytes([b0, 0x80 | length[0]]) + length[1:] + mask


# Defects whose consequence RFC 6455 fixes, wherever they occur: (name, close code).
FRAMING_DEFECTS = [
    ("reserved opcode", 1002),
    ("unmasked", 1002),
    ("rsv2 or rsv3", 1002),
    ("rsv1 on a control frame", 1002),
    ("fragmented control frame", 1002),
    ("control frame over 125 bytes", 1002),
    ("16-bit length under 126", 1002),
    ("64-bit length under 65536", 1002),
    ("64-bit length with its top bit", 1002),
    ("one-byte close", 1002),
    ("invalid close code", 1002),
    ("close reason not UTF-8", 1007),
    ("header over the limit", 1009),
]
# Defects that need a fragmented message in progress, or none.
IN_MESSAGE_DEFECTS = [("new data frame inside a message", 1002), ("rsv1 on a continuation", 1002)]
BETWEEN_MESSAGES_DEFECTS = [("orphan continuation", 1002), ("rsv1 without deflate", 1002)]
CONTENT_DEFECTS = [("text not UTF-8", 1007), ("fragments over the limit", 1009)]
DEFLATE_DEFECTS = [("invalid deflate data", 1007), ("decompression bomb", 1009)]


@st.composite
def defective_streams(draw: st.DrawFn, deflate: bool) -> StreamCase:
    """Valid traffic, then one defect whose close code RFC 6455 fixes, at a random place.

    The events of everything before the defect must be reported, then the
    connection fails with the defect's code, however the bytes are cut.
    """
    traffic = Traffic(draw(masks), deflate, deflate and draw(st.booleans()))
    max_size = draw(st.integers(200, 2000))
    for _ in range(draw(st.integers(0, 3))):
        if draw(st.integers(0, 2)):
            traffic.message(draw)
        else:
            traffic.control(draw)
    in_message = draw(st.booleans())
    candidates = FRAMING_DEFECTS + CONTENT_DEFECTS
    if in_message:
        candidates += IN_MESSAGE_DEFECTS
    else:
        candidates += BETWEEN_MESSAGES_DEFECTS if not deflate else BETWEEN_MESSAGES_DEFECTS[:1]
    candidates += DEFLATE_DEFECTS if deflate else []
    defect, code = draw(st.sampled_from(candidates))
    in_message = in_message and defect not in dict(CONTENT_DEFECTS + DEFLATE_DEFECTS)
    if in_message:
        # a message left open: its first fragments arrive, then the defect
        opcode, _, parts, compressed = traffic.message_start(draw)
        traffic.frame(opcode, parts[0], fin=False, rsv1=compressed)
        if draw(st.booleans()):
            traffic.control(draw)
    events = tuple(traffic.events)
    mask = traffic.mask
    frame = traffic.frame
    control = draw(st.sampled_from([Opcode.PING, Opcode.PONG, Opcode.CLOSE]))
    if defect == "reserved opcode":
        frame(draw(st.sampled_from([3, 4, 5, 6, 7, 11, 12, 13, 14, 15])), draw(st.binary(max_size=10)))
    elif defect == "unmasked":
        traffic.frames.append(encode_frame(draw(st.sampled_from(list(Opcode))), b"\x03\xe8"))
    elif defect == "rsv2 or rsv3":
        frame(draw(st.sampled_from(list(Opcode))), b"", rsv2=draw(st.booleans()), rsv3=True)
    elif defect == "rsv1 on a control frame":
        frame(control, b"", rsv1=True)
    elif defect == "fragmented control frame":
        frame(control, b"", fin=False)
    elif defect == "control frame over 125 bytes":
        length = draw(st.integers(126, 70000))
        traffic.frames.append(frame_head(0x80 | control, length_field(length), mask) + bytes(min(length, 200)))
    elif defect == "16-bit length under 126":
        traffic.frames.append(frame_head(0x82, length_field(draw(st.integers(0, 125)), "16"), mask))
    elif defect == "64-bit length under 65536":
        traffic.frames.append(frame_head(0x82, length_field(draw(st.integers(0, 0xFFFF)), "64"), mask))
    elif defect == "64-bit length with its top bit":
        traffic.frames.append(frame_head(0x82, length_field(draw(st.integers(0, (1 << 63) - 1)), "msb"), mask))
    elif defect == "one-byte close":
        frame(Opcode.CLOSE, draw(st.binary(min_size=1, max_size=1)))
    elif defect == "invalid close code":
        bad = st.integers(0, 999) | st.sampled_from([1004, 1005, 1006, 1015, 2999]) | st.integers(5000, 65535)
        frame(Opcode.CLOSE, draw(bad).to_bytes(2, "big") + draw(st.text(max_size=5)).encode())
    elif defect == "close reason not UTF-8":
        frame(Opcode.CLOSE, b"\x03\xe8" + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"ok\xc0\xaf"])))
    elif defect == "header over the limit":
        # inside a message only a continuation can carry on: any other data frame would be 1002
        length = draw(st.integers(max_size + 1, 1 << 40))
        b0 = 0x80 if in_message else 0x82
        traffic.frames.append(frame_head(b0, length_field(length), mask) + bytes(min(length, 100)))
    elif defect == "new data frame inside a message":
        frame(draw(st.sampled_from([Opcode.TEXT, Opcode.BINARY])), b"x")
    elif defect == "rsv1 on a continuation":
        frame(Opcode.CONTINUATION, b"x", rsv1=True)
    elif defect == "orphan continuation":
        frame(Opcode.CONTINUATION, b"x", fin=draw(st.booleans()))
    elif defect == "rsv1 without deflate":
        frame(draw(st.sampled_from([Opcode.TEXT, Opcode.BINARY])), b"x", rsv1=True)
    elif defect == "text not UTF-8":
        # the bad byte fails the fragment that holds it (§8.1); pings before it still count
        text = draw(st.text(max_size=20)).encode()
        position = draw(st.integers(0, len(text)))
        bad = text[:position] + draw(st.sampled_from([b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90"]))
        bad += text[position:]
        cut = draw(st.integers(0, position))
        if cut:
            frame(Opcode.TEXT, bad[:cut], fin=False)
            if draw(st.booleans()):
                traffic.control(draw)
            events = tuple(traffic.events)
        frame(Opcode.CONTINUATION if cut else Opcode.TEXT, bad[cut:], fin=draw(st.booleans()))
    elif defect == "fragments over the limit":
        sizes = draw(st.lists(st.integers(0, max_size), min_size=1, max_size=4))
        while sum(sizes) <= max_size:
            sizes.append(max_size)
        opcode: int = Opcode.BINARY
        total = 0
        for size in sizes:
            total += size
            frame(opcode, bytes(size), fin=False)
            opcode = Opcode.CONTINUATION
            if total > max_size:
                break
            if draw(st.booleans()):
                traffic.control(draw)
            events = tuple(traffic.events)
    elif defect == "invalid deflate data":
        # a reserved block type (BTYPE 11), or a stored block whose NLEN is not LEN's complement
        bad = draw(st.sampled_from([b"\x06", b"\x07abc", b"\x00\x05\x00\x00\x00hello"]))
        frame(Opcode.BINARY, bad, rsv1=True)
    elif defect == "decompression bomb":
        size = max_size + draw(st.integers(1, 3) | st.integers(4, 1 << 20))
        frame(Opcode.BINARY, traffic.compress(bytes(size)), rsv1=True)
    trailing = draw(st.sampled_from([b"", encode_frame(Opcode.PING, b"after", mask=mask)]))
    return StreamCase(
        b"".join(traffic.frames) + trailing,
        draw(cut_lists),
        deflate=deflate,
        client_no_context_takeover=traffic.client_nct,
        max_message_size=max_size,
        expected=(events, code),
    )


@st.composite
def bombs_at_the_limit(draw: st.DrawFn) -> StreamCase:
    """A compressed message inflating to just under, at or over the limit, fragmented and cut anywhere.

    With context takeover the message may be back-references into the one
    before, so a few bytes inflate to a whole window.
    """
    traffic = Traffic(draw(masks), True, draw(st.booleans()))
    max_size = draw(st.integers(1, 5000))
    text = draw(st.booleans())
    seed = draw(
        st.text("abc\xe9", min_size=1, max_size=4).map(str.encode) if text else st.binary(min_size=1, max_size=4)
    )
    if draw(st.booleans()):
        primer = (seed * (max_size // len(seed) + 1))[: max_size // 2]
        if text:
            primer = primer.decode(errors="ignore").encode()  # not cut inside a character
        before = traffic.compressor.copy()
        wire = traffic.compress(primer)
        if len(wire) <= max_size:
            traffic.frame(Opcode.TEXT if text else Opcode.BINARY, wire, rsv1=True)
            traffic.events.append(TextMessage(primer.decode()) if text else BinaryMessage(primer))
        else:  # it would fail from its header: not sent, and the client's context is as before
            traffic.compressor = before
    size = max_size + draw(st.integers(-3, 3) | st.sampled_from([1000, 1 << 20]))
    content = (seed * (max(size, 0) // len(seed) + 1))[: max(size, 0)]
    if text:
        content = content.decode(errors="ignore").encode()
    wire = traffic.compress(content)
    if draw(st.booleans()):
        wire += TAIL  # the client left the tail on: an empty stored block, harmless
    parts = split(wire, draw(st.lists(st.integers(0, len(wire)), max_size=4)))
    for i, part in enumerate(parts):
        opcode = (Opcode.TEXT if text else Opcode.BINARY) if i == 0 else Opcode.CONTINUATION
        traffic.frame(opcode, part, fin=i == len(parts) - 1, rsv1=i == 0)
    code = None
    if len(content) > max_size or len(wire) > max_size:
        code = 1009
    else:
        traffic.events.append(TextMessage(content.decode()) if text else BinaryMessage(content))
    return StreamCase(
        b"".join(traffic.frames),
        draw(cut_lists),
        deflate=True,
        client_no_context_takeover=traffic.client_nct,
        max_message_size=max_size,
        expected=(tuple(traffic.events), code),
    )


@st.composite
def mangled_compressed_streams(draw: st.DrawFn) -> StreamCase:
    """Valid compressed traffic with bytes of one message flipped: anything may come of it but a crash."""
    traffic = Traffic(draw(masks), True, draw(st.booleans()))
    for _ in range(draw(st.integers(0, 2))):
        traffic.message(draw)
    raw = draw(st.binary(min_size=1, max_size=300) | st.text(min_size=1, max_size=100).map(str.encode))
    wire = bytearray(traffic.compress(raw))
    if draw(st.booleans()):
        wire = bytearray(zlib.compress(raw, wbits=-15))  # ends with a BFINAL block, not a sync flush
        wire += draw(st.binary(max_size=8))  # "padding" after it, ignored (§7.2.3.4)
    for _ in range(draw(st.integers(1, 4))):
        wire[draw(st.integers(0, len(wire) - 1))] ^= draw(st.integers(1, 255))
    traffic.frame(draw(st.sampled_from([Opcode.TEXT, Opcode.BINARY])), bytes(wire), rsv1=True)
    traffic.message(draw)
    return StreamCase(
        b"".join(traffic.frames),
        draw(cut_lists),
        deflate=True,
        client_no_context_takeover=traffic.client_nct,
        max_message_size=draw(st.sampled_from([64, 1000, 1 << 20])),
    )


# -- the checks, for the tests below and for fuzz_long ------------------------------

CHECKS: dict[str, list[Check]] = {
    "handshake": [
        Check("request bytes", st.binary(max_size=600), request_from_bytes, raw=True, seeds=REQUEST_SEEDS),
        Check("mutated requests", mutated_requests(), check_request_bytes),
        Check("extension offers", extension_offers() | st.text(max_size=60), check_extensions_header),
    ],
    "frames": [
        Check("stream bytes", st.binary(max_size=600), stream_from_bytes, raw=True, seeds=STREAM_SEEDS),
        Check("raw frames", raw_frames(), check_stream),
        Check("defective streams", defective_streams(deflate=False), check_stream),
    ],
    "deflate": [
        Check("compressed bytes", st.binary(max_size=600), compressed_from_bytes, raw=True, seeds=COMPRESSED_SEEDS),
        Check("defective compressed streams", defective_streams(deflate=True), check_stream),
        Check("bombs at the limit", bombs_at_the_limit(), check_stream),
        Check("mangled compressed streams", mangled_compressed_streams(), check_stream),
    ],
}

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class TestRequestHead:
    """RFC 7230 §3, RFC 6585 §5: the reader lets out a request, a 400 or a 431, and nothing else."""

    @FAST
    @given(st.binary(max_size=300), cut_lists, st.sampled_from([MAX_HEAD_SIZE, 16, 100]))
    def test_arbitrary_bytes_give_a_request_or_a_400_or_a_431(self, data: bytes, cuts: tuple, cap: int) -> None:
        check_request_bytes(RequestCase(data, cuts, cap))

    @FAST
    @given(mutated_requests())
    @example(RequestCase(b"GET //[ HTTP/1.1\r\nHost: x\r\n\r\n"))
    @example(RequestCase(b"GET //[x]/chat HTTP/1.1\r\nHost: x\r\n\r\n"))
    def test_mutated_upgrade_request_is_refused_with_a_status_or_accepted_whole(self, case: RequestCase) -> None:
        """Requests the server can read are then fully usable: path, query, headers, :func:`accept`."""
        check_request_bytes(case)

    @settings(max_examples=20, deadline=None)
    @given(st.integers(1, 1 << 16), st.binary(min_size=1, max_size=8))
    def test_megabytes_without_a_head_end_are_refused_once_over_the_cap(self, step: int, filler: bytes) -> None:
        """The reader raises 431 within one read past its cap, and never holds more than the cap."""
        reader = RequestReader()
        filler = filler.replace(b"\r", b"") or b"a"  # no CRLF CRLF can ever form
        chunk = (filler * (step // len(filler) + 1))[:step]
        fed = 0
        with pytest.raises(HandshakeRejected) as info:
            while fed < 4 * 1024 * 1024:
                reader.feed(chunk)
                fed += step
                assert retained_bytes(reader) <= MAX_HEAD_SIZE
        assert info.value.status == HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE
        assert fed <= MAX_HEAD_SIZE

    def test_request_target_that_cannot_be_split_is_refused_with_400(self) -> None:
        """A target ``urlsplit`` refuses (an unclosed ``[``, a bracketed non-address) is a bad request.

        Found by fuzzing: such a request used to be returned, and reading its
        ``path`` (as the chat's handshake gate does) raised ``ValueError``
        into the connection's greenlet instead of answering 400.
        """
        for target in [b"//[", b"//[x", b"//a]", b"http://[::1/", b"//[abc]/chat"]:
            with pytest.raises(HandshakeRejected) as info:
                RequestReader().feed(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n")
            assert info.value.status == HTTPStatus.BAD_REQUEST

    @FAST
    @given(extension_offers() | st.text(max_size=60))
    def test_extension_header_parses_to_tokens_or_raises_value_error(self, value: str) -> None:
        check_extensions_header(value)


class TestFrameStream:
    """RFC 6455 §5, §7.1.7: any stream gives events, pongs and at most one close with the right code."""

    @FAST
    @given(st.binary(max_size=400), cut_lists, st.booleans(), st.sampled_from([0, 125, 1000]))
    def test_arbitrary_bytes_give_only_events_and_a_close_frame(
        self, data: bytes, cuts: tuple, deflate: bool, max_size: int
    ) -> None:
        check_stream(StreamCase(data, cuts, deflate=deflate, max_message_size=max_size))

    @FAST
    @given(raw_frames())
    def test_frames_with_arbitrary_header_fields_give_only_events_and_a_close_frame(self, case: StreamCase) -> None:
        check_stream(case)

    @FAST
    @given(defective_streams(deflate=False))
    def test_one_defect_in_valid_traffic_fails_with_its_code_after_the_events_before_it(self, case: StreamCase) -> None:
        """1002 for framing, 1007 for text that is not UTF-8, 1009 over the limit, however it is cut."""
        check_stream(case)


class TestCompressedStream:
    """RFC 7692 §7.2.2 with RFC 6455 §7.1.7: inflating is bounded by the limit and fails cleanly."""

    @FAST
    @given(defective_streams(deflate=True))
    def test_one_defect_in_compressed_traffic_fails_with_its_code_after_the_events_before_it(
        self, case: StreamCase
    ) -> None:
        check_stream(case)

    @FAST
    @given(bombs_at_the_limit())
    def test_compressed_message_is_received_up_to_the_limit_and_fails_with_1009_beyond(self, case: StreamCase) -> None:
        """The inflated size is checked exactly, across fragments and reads, with context from earlier messages."""
        check_stream(case)

    @FAST
    @given(mangled_compressed_streams())
    def test_mangled_deflate_data_gives_a_message_1007_or_1009_and_nothing_else(self, case: StreamCase) -> None:
        check_stream(case)

    @settings(max_examples=60, deadline=None)
    @given(st.binary(max_size=400) | st.sampled_from(COMPRESSED_SEEDS))
    def test_arbitrary_deflate_data_in_fragments_gives_only_events_and_a_close_frame(self, data: bytes) -> None:
        compressed_from_bytes(data)


class TestMemory:
    """What a peer can make a connection hold: about the limit, however it cuts the message."""

    @pytest.mark.parametrize("opcode", [Opcode.TEXT, Opcode.BINARY])
    def test_message_arriving_in_two_byte_pieces_holds_about_its_size(self, opcode: Opcode) -> None:
        """A message held while it is reassembled should cost about its size, not ~40 bytes per read."""
        max_size = 16 * 1024
        data = encode_frame(opcode, b"ab" * (max_size // 2), mask=MASK)
        conn = Connection(max_message_size=max_size)

        def feed_all_but_the_last_byte() -> None:
            for i in range(0, len(data) - 1, 2):
                conn.receive_data(data[i : min(i + 2, len(data) - 1)])
                assert conn.events() == []

        assert peak_memory(feed_all_but_the_last_byte) < 4 * max_size


class TestLongRunTargets:
    """``python -m tests.ws.fuzz_long`` starts from these; they must pass, or it reports them first."""

    @pytest.mark.parametrize(
        ("check", "seed"),
        [(check, seed) for checks in CHECKS.values() for check in checks for seed in check.seeds],
        ids=lambda value: value.name if isinstance(value, Check) else None,
    )
    def test_every_seed_of_a_raw_target_passes_its_check(self, check: Check, seed: bytes) -> None:
        """The seeds are traffic that gets past the first byte (valid messages, one bomb) for a fuzzer to mutate."""
        check.oracle(seed)

    def test_every_check_has_a_reproducer_that_replays_it(self) -> None:
        case = RequestCase(b"GET / HTTP/1.1\r\n\r\n", (3,), 64)
        code = CHECKS["handshake"][1].reproducer(case)
        exec(compile(code, "<reproducer>", "exec"), {})
