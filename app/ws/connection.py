"""A WebSocket connection after the handshake, as a state machine (RFC 6455 §5–§7).

Theory of operation
-------------------
The I/O layer hands received bytes to :meth:`Connection.receive_data`, then
pulls :meth:`Connection.next_event` (whole messages, pings, pongs, the
peer's close) until it returns ``None``, acting on each, and writes
:meth:`Connection.data_to_send`. Sending is the same in
reverse: ``send_*`` methods queue encoded frames.

States (one enum, transitions only here)::

    OPEN ──send_close()──────────▶ CLOSING ──peer's close────▶ CLOSED
    OPEN ──peer's close (echoed)─────────────────────────────▶ CLOSED
    OPEN/CLOSING ──protocol error (close frame queued)───────▶ CLOSED
    OPEN/CLOSING ──receive_eof()─────────────────────────────▶ CLOSED (1006)

In CLOSED the I/O layer flushes what is queued and closes the TCP
connection: the server closes first (§7.1.1). Protocol errors never escape
:meth:`receive_data`: the connection fails with the error's close code
(§7.1.7), keeps the exception in :attr:`failure`, and ignores later input.

Messages are checked as they arrive: the size limit against each frame's
header (and against the inflated size), UTF-8 at the first invalid byte,
even across fragments and across reads (§8.1).
"""

from __future__ import annotations

from enum import Enum

from .deflate import PerMessageDeflate
from .events import BinaryMessage, CloseReceived, Event, Ping, Pong, TextMessage
from .exceptions import InvalidPayloadData, InvalidState, MessageTooBig, ProtocolError
from .frames import (
    CloseCode,
    FrameHeader,
    FrameParser,
    Opcode,
    encode_close_payload,
    encode_frame,
    parse_close_payload,
)
from .utf8 import Utf8Decoder

__all__ = ["DEFAULT_MAX_MESSAGE_SIZE", "Connection", "State"]

DEFAULT_MAX_MESSAGE_SIZE = 1024 * 1024

_TEXT = Opcode.TEXT
_BINARY = Opcode.BINARY
_CONTINUATION = Opcode.CONTINUATION


class State(Enum):
    """Where a connection is in its life (RFC 6455 §4.1, §7)."""

    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


def _truncate_reason(reason: str) -> str:
    """A close reason that fits a control frame (123 bytes of UTF-8, §5.5.1)."""
    data = reason.encode()
    if len(data) <= 123:
        return reason
    return data[:123].decode(errors="ignore")


class Connection:
    """The server side of one WebSocket connection, without I/O."""

    __slots__ = (
        "_msg_compressed",
        "_msg_decoder",
        "_msg_opcode",
        "_msg_parts",
        "_msg_size",
        "_msg_wire_size",
        "_out",
        "_parser",
        "auto_pong",
        "close_code",
        "close_reason",
        "deflate",
        "failure",
        "max_message_size",
        "state",
    )

    def __init__(
        self,
        *,
        deflate: PerMessageDeflate | None = None,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        auto_pong: bool = True,
    ) -> None:
        self.deflate = deflate
        self.max_message_size = max_message_size
        self.auto_pong = auto_pong
        self.state = State.OPEN
        #: The close code and reason: the peer's, ours when we failed the
        #: connection, or 1006 when the TCP connection ended without one.
        self.close_code: int | None = None
        self.close_reason = ""
        #: The protocol error that failed the connection, if one did.
        self.failure: ProtocolError | None = None
        self._parser = FrameParser(masked=True)
        # Frames to send; like the message's parts below, a list only while
        # there is something in it: a server holds many idle connections.
        self._out: list[bytes] | None = None
        # the message being reassembled, if any
        self._msg_opcode: Opcode | None = None
        self._msg_compressed = False
        self._msg_wire_size = 0
        self._msg_size = 0
        # the message so far: one growing buffer, whatever the size of its pieces
        # (a list of pieces would cost an object per piece: 30x the message for 2-byte pieces)
        self._msg_parts: bytearray | None = None
        self._msg_decoder: Utf8Decoder | None = None

    # -- receiving ---------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Take bytes from the peer; :meth:`next_event` turns them into events."""
        if self.state is not State.CLOSED:
            self._parser.feed(data)

    def receive_eof(self) -> None:
        """The peer closed the TCP connection (or it broke)."""
        if self.state is not State.CLOSED:
            # No close frame came (§7.1.5): whatever we sent, the code is 1006.
            self.state = State.CLOSED
            self.close_code = CloseCode.ABNORMAL_CLOSURE
            self.close_reason = ""

    def next_event(self) -> Event | None:
        """The next event from the received bytes, or ``None`` until more arrive.

        Frames are parsed only as far as needed for one event, so the caller
        acts on each message before a later frame can fail the connection:
        a valid message followed by garbage is answered, then the connection
        fails (what Autobahn calls strict behaviour).
        """
        parser = self._parser
        try:
            while self.state is not State.CLOSED:
                chunk = parser.next()
                if chunk is None:
                    return None
                header, payload, first, last = chunk
                if header.opcode >= 0x8:
                    return self._receive_control(header, payload)
                event = self._receive_data_chunk(header, payload, first, last)
                if event is not None:
                    return event
        except ProtocolError as exc:
            self._fail(exc)
        return None

    def events(self) -> list[Event]:
        """Every event the received bytes make, oldest first."""
        events = []
        while (event := self.next_event()) is not None:
            events.append(event)
        return events

    def _receive_data_chunk(self, header: FrameHeader, payload: bytes, first: bool, last: bool) -> Event | None:
        opcode = header.opcode
        if first:
            if header.rsv2 or header.rsv3:
                raise ProtocolError("reserved bit set")
            if opcode is _CONTINUATION:
                if self._msg_opcode is None:
                    raise ProtocolError("continuation frame without a message to continue")
                if header.rsv1:
                    raise ProtocolError("RSV1 set on a continuation frame")
            else:
                if self._msg_opcode is not None:
                    raise ProtocolError("new data frame inside a fragmented message")
                if header.rsv1 and self.deflate is None:
                    raise ProtocolError("reserved bit set")
                if last and header.fin and not header.rsv1:
                    # Fast path: a whole, unfragmented, uncompressed message.
                    if header.length > self.max_message_size:
                        raise MessageTooBig("message too big")
                    if opcode is _TEXT:
                        try:
                            text = payload.decode()
                        except UnicodeDecodeError:
                            raise InvalidPayloadData("invalid UTF-8 in text message") from None
                        return TextMessage(text)
                    return BinaryMessage(payload)
                self._msg_opcode = opcode
                self._msg_compressed = header.rsv1
                self._msg_wire_size = 0
                self._msg_size = 0
                self._msg_parts = bytearray()
                self._msg_decoder = Utf8Decoder() if opcode is _TEXT else None
            self._msg_wire_size += header.length
            if self._msg_wire_size > self.max_message_size:
                raise MessageTooBig("message too big")

        end = last and header.fin
        if self._msg_compressed:
            assert self.deflate is not None
            budget = self.max_message_size - self._msg_size
            try:
                payload = self.deflate.decompress(payload, budget)
            except MessageTooBig as error:
                self._check_before_limit(error.within)
                raise
            if end:
                try:
                    payload += self.deflate.finish(budget - len(payload))
                except MessageTooBig as error:
                    self._check_before_limit(payload + error.within)
                    raise
            self._msg_size += len(payload)
        parts = self._msg_parts
        assert parts is not None  # set when the message's first frame came
        if self._msg_decoder is not None and (payload or end):
            # validated as it comes (1007 at the first bad byte), decoded once at the end
            self._msg_decoder.decode(payload, end)
        parts += payload
        if not end:
            return None
        is_text = self._msg_opcode is _TEXT
        self._msg_opcode = None
        self._msg_parts = None
        self._msg_decoder = None
        if is_text:
            return TextMessage(parts.decode())
        return BinaryMessage(bytes(parts))

    def _check_before_limit(self, data: bytes) -> None:
        """Validate the text a too-big message held up to the limit (1007 before 1009).

        Failures are reported in stream order, so the same message gives the
        same close code however it was cut into frames and reads.
        """
        if self._msg_decoder is not None:
            self._msg_decoder.decode(data)

    def _receive_control(self, header: FrameHeader, payload: bytes) -> Event:
        if header.rsv1 or header.rsv2 or header.rsv3:
            raise ProtocolError("reserved bit set on a control frame")
        opcode = header.opcode
        if opcode is Opcode.PING:
            if self.auto_pong and self.state is State.OPEN:
                self._queue(encode_frame(Opcode.PONG, payload))
            return Ping(payload)
        if opcode is Opcode.PONG:
            return Pong(payload)
        code, reason = parse_close_payload(payload)
        if self.state is State.OPEN:
            # §5.5.1: answer with a close frame, echoing the status code.
            echo = b"" if code == CloseCode.NO_STATUS_RCVD else encode_close_payload(code)
            self._queue(encode_frame(Opcode.CLOSE, echo))
        self.close_code = code
        self.close_reason = reason
        self.state = State.CLOSED
        return CloseReceived(code, reason)

    def _fail(self, exc: ProtocolError) -> None:
        """Fail the connection (RFC 6455 §7.1.7): close frame, then no more input."""
        self.failure = exc
        reason = _truncate_reason(exc.reason)
        if self.state is State.OPEN:
            self._queue(encode_frame(Opcode.CLOSE, encode_close_payload(exc.code, reason)))
        self.close_code = exc.code
        self.close_reason = reason
        self.state = State.CLOSED

    # -- sending -----------------------------------------------------------

    @property
    def encoding_key(self) -> object:
        """Connections with equal keys are sent identical bytes for a message.

        A broadcast encodes a message once per key (:meth:`encode_message`)
        and writes those bytes to every connection with that key.
        """
        return None if self.deflate is None else self.deflate.encoding_key

    def encode_message(self, payload: bytes, *, text: bool = True) -> bytes:
        """The frame for a whole message, compressed if the connection agreed to.

        With a context-keeping compressor this advances its state, so the
        result must be sent on this connection (and in order).
        """
        opcode = _TEXT if text else _BINARY
        deflate = self.deflate
        if deflate is not None and deflate.should_compress(payload):
            return encode_frame(opcode, deflate.compress(payload), rsv1=True)
        return encode_frame(opcode, payload)

    def send_text(self, text: str) -> None:
        """Queue a text message."""
        self._check_open()
        self._queue(self.encode_message(text.encode()))

    def send_binary(self, data: bytes) -> None:
        """Queue a binary message."""
        self._check_open()
        self._queue(self.encode_message(data, text=False))

    def send_encoded(self, frame: bytes) -> None:
        """Queue a frame from :meth:`encode_message` (of a connection with the same key)."""
        self._check_open()
        self._queue(frame)

    def send_ping(self, payload: bytes = b"") -> None:
        """Queue a ping (at most 125 bytes of payload, §5.5)."""
        self._check_open()
        if len(payload) > 125:
            raise ValueError("ping payload over 125 bytes")
        self._queue(encode_frame(Opcode.PING, payload))

    def send_pong(self, payload: bytes = b"") -> None:
        """Queue an unsolicited pong (a heartbeat, §5.5.3)."""
        self._check_open()
        if len(payload) > 125:
            raise ValueError("pong payload over 125 bytes")
        self._queue(encode_frame(Opcode.PONG, payload))

    def send_close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Start the closing handshake (§7.1.2); the peer's close will end it."""
        self._check_open()
        reason = _truncate_reason(reason)
        self._queue(encode_frame(Opcode.CLOSE, encode_close_payload(code, reason)))
        self.close_code = code
        self.close_reason = reason
        self.state = State.CLOSING

    def data_to_send(self) -> bytes:
        """Everything queued for the peer since the last call."""
        out = self._out
        if out is None:
            return b""
        self._out = None
        return out[0] if len(out) == 1 else b"".join(out)

    def _queue(self, frame: bytes) -> None:
        if self._out is None:
            self._out = [frame]
        else:
            self._out.append(frame)

    def _check_open(self) -> None:
        if self.state is not State.OPEN:
            raise InvalidState(f"cannot send in state {self.state.value}")
