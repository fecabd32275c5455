"""WebSocket frames (RFC 6455 §5): values, an incremental parser, an encoder.

The parser is fed whatever the socket returned — half a header, a frame split
at any byte, many frames at once — and hands out :class:`FrameChunk` values.
A data frame's payload is handed out *as it arrives* (unmasked, in order), so
a message can be validated and size-checked before its last byte is read
(RFC 6455 §8.1 "fail fast" on invalid UTF-8); a control frame is handed out
whole, as it is at most 125 bytes (§5.5). The size limit is enforced from the
header, before any payload is buffered.

The encoder builds server frames (unmasked, §5.1), so one encoded frame can be
written unchanged to every member of a room.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import NamedTuple

from .exceptions import InvalidPayloadData, ProtocolError

__all__ = [
    "CloseCode",
    "Frame",
    "FrameChunk",
    "FrameHeader",
    "FrameParser",
    "Opcode",
    "apply_mask",
    "encode_close_payload",
    "encode_frame",
    "new_mask",
    "parse_close_payload",
    "read_frames",
]


class Opcode(IntEnum):
    """Frame opcodes (RFC 6455 §5.2, §11.8); 3–7 and 11–15 are reserved."""

    CONTINUATION = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA

    @property
    def is_control(self) -> bool:
        """Control frames have the high bit of the opcode set (§5.5)."""
        return self >= 0x8


class CloseCode(IntEnum):
    """Close status codes (RFC 6455 §7.4.1) and the registered extras."""

    NORMAL_CLOSURE = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    NO_STATUS_RCVD = 1005  # never on the wire: "the close frame had no code"
    ABNORMAL_CLOSURE = 1006  # never on the wire: "no close frame at all"
    INVALID_DATA = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    MANDATORY_EXTENSION = 1010
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012  # IANA registry: "the server is restarting", reconnect
    TRY_AGAIN_LATER = 1013  # IANA registry: "temporary server condition"
    BAD_GATEWAY = 1014  # IANA registry: a gateway's upstream failed


# Opcode by its 4-bit value; None for the reserved ones (§5.2).
_OPCODES: tuple[Opcode | None, ...] = tuple(Opcode(v) if v in Opcode._value2member_map_ else None for v in range(16))


def is_valid_close_code(code: int) -> bool:
    """Whether ``code`` may appear in a close frame we receive (RFC 6455 §7.4).

    1000–1003 and 1007–1011 are defined by the RFC; 1012–1014 were added to
    its IANA registry since (a client echoes the 1012 the chat closes with on
    a restart); 3000–3999 are registered with IANA and 4000–4999 are private.
    1004–1006 and 1015 are reserved and must never be sent; anything else is
    unassigned.
    """
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


class FrameHeader(NamedTuple):
    """The fixed part of a frame (RFC 6455 §5.2), as read from the wire."""

    opcode: Opcode
    length: int
    fin: bool = True
    rsv1: bool = False
    rsv2: bool = False
    rsv3: bool = False
    mask: bytes | None = None


class FrameChunk(NamedTuple):
    """A piece of one frame's payload, unmasked, as it arrived.

    ``first`` and ``last`` tell where the piece sits in its frame: a frame that
    arrived whole is one chunk with both set. The first chunk comes as soon
    as the header is complete, possibly with no data yet, so limits apply
    before the payload is read. Control frames are always a single chunk.
    """

    header: FrameHeader
    data: bytes
    first: bool
    last: bool


@dataclass(frozen=True, slots=True)
class Frame:
    """A whole frame: what the encoder writes and what tests compare."""

    opcode: Opcode
    payload: bytes = b""
    fin: bool = True
    rsv1: bool = False
    rsv2: bool = False
    rsv3: bool = False

    def serialize(self, mask: bytes | None = None) -> bytes:
        """The frame's bytes; masked with ``mask`` (a client's frame) if given."""
        return encode_frame(
            self.opcode,
            self.payload,
            fin=self.fin,
            rsv1=self.rsv1,
            rsv2=self.rsv2,
            rsv3=self.rsv3,
            mask=mask,
        )


def new_mask() -> bytes:
    """A fresh masking key; RFC 6455 §5.3 wants it unpredictable."""
    return os.urandom(4)


def apply_mask(data: bytes, mask: bytes, offset: int = 0) -> bytes:
    """XOR ``data`` with the 4-byte ``mask`` (RFC 6455 §5.3), as one big integer.

    ``offset`` is the position of ``data`` within its frame's payload, so a
    payload unmasked in pieces gives the same bytes as unmasked whole. Python
    XORs arbitrary-size integers in C, so there is no per-byte Python loop.
    """
    n = len(data)
    if not n:
        return b""
    shift = offset & 3
    if shift:
        mask = mask[shift:] + mask[:shift]
    key = int.from_bytes((mask * ((n + 3) >> 2))[:n], "little")
    return (int.from_bytes(data, "little") ^ key).to_bytes(n, "little")


_PACK_SHORT = struct.Struct("!BB").pack
_PACK_MEDIUM = struct.Struct("!BBH").pack
_PACK_LONG = struct.Struct("!BBQ").pack


def encode_frame(
    opcode: int,
    payload: bytes,
    *,
    fin: bool = True,
    rsv1: bool = False,
    rsv2: bool = False,
    rsv3: bool = False,
    mask: bytes | None = None,
) -> bytes:
    """The bytes of one frame (RFC 6455 §5.2), with the shortest length encoding.

    Server frames are unmasked (§5.1); pass ``mask`` to build a client frame.
    """
    b0 = opcode | (0x80 if fin else 0) | (0x40 if rsv1 else 0)
    if rsv2:
        b0 |= 0x20
    if rsv3:
        b0 |= 0x10
    n = len(payload)
    mask_bit = 0x80 if mask is not None else 0
    if n < 126:
        head = _PACK_SHORT(b0, n | mask_bit)
    elif n < 0x10000:
        head = _PACK_MEDIUM(b0, 126 | mask_bit, n)
    else:
        head = _PACK_LONG(b0, 127 | mask_bit, n)
    if mask is not None:
        return head + mask + apply_mask(payload, mask)
    return head + payload


class FrameParser:
    """Turns a stream of bytes into :class:`FrameChunk` values.

    Feed bytes with :meth:`feed`, then call :meth:`next` until it returns
    ``None`` (more bytes needed). Violations of the framing rules raise
    :class:`ProtocolError`; after one, the parser must not be used again.

    ``masked`` says what the peer must do (§5.1): a server requires masked
    client frames (``True``), a client requires unmasked server frames.
    Only a partial header or a partial control frame (at most 139 bytes) is
    ever kept between calls: data payloads leave as soon as they arrive.
    """

    __slots__ = ("_buf", "_header", "_offset", "_pos", "masked")

    def __init__(self, *, masked: bool = True) -> None:
        self.masked = masked
        self._buf = b""
        self._pos = 0
        self._header: FrameHeader | None = None
        self._offset = 0

    def feed(self, data: bytes) -> None:
        """Add bytes received from the peer."""
        if self._pos >= len(self._buf):
            self._buf = bytes(data)
        else:
            self._buf = self._buf[self._pos :] + data
        self._pos = 0

    def next(self) -> FrameChunk | None:
        """The next chunk of payload, or ``None`` until more bytes arrive."""
        header = self._header
        first = header is None
        if header is None:
            header = self._read_header()
            if header is None:
                return None
        buf = self._buf
        pos = self._pos
        offset = self._offset
        remaining = header.length - offset
        take = len(buf) - pos
        if take >= remaining:
            take = remaining
        elif take == 0 and not first:
            return None
        data = buf[pos : pos + take]
        if header.mask is not None:
            data = apply_mask(data, header.mask, offset)
        self._pos = pos + take
        self._offset = offset + take
        last = take == remaining
        if last:
            self._header = None
        return FrameChunk(header, data, first, last)

    def _read_header(self) -> FrameHeader | None:
        buf = self._buf
        pos = self._pos
        available = len(buf) - pos
        if available < 2:
            if not available and buf:
                # All read: let the last bytes go now rather than at the next
                # feed, which on an idle connection may be hours away.
                self._buf = b""
                self._pos = 0
            return None
        b0 = buf[pos]
        b1 = buf[pos + 1]
        length = b1 & 0x7F
        is_masked = bool(b1 & 0x80)
        size = 2 + (4 if is_masked else 0) + (2 if length == 126 else 8 if length == 127 else 0)
        if available < size:
            return None
        opcode = _OPCODES[b0 & 0x0F]
        if opcode is None:
            raise ProtocolError(f"reserved opcode {b0 & 0x0F:#x}")
        if is_masked != self.masked:
            raise ProtocolError("client frames must be masked" if self.masked else "server frames must not be masked")
        if length == 126:
            length = int.from_bytes(buf[pos + 2 : pos + 4], "big")
            if length < 126:
                raise ProtocolError("frame length not minimally encoded")
        elif length == 127:
            length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
            if length >> 63:
                raise ProtocolError("frame length has its most significant bit set")
            if length < 0x10000:
                raise ProtocolError("frame length not minimally encoded")
        fin = bool(b0 & 0x80)
        if opcode >= 0x8:
            if not fin:
                raise ProtocolError("fragmented control frame")
            if length > 125:
                raise ProtocolError("control frame payload over 125 bytes")
            if available < size + length:
                return None  # control frames are handed out whole
        header = FrameHeader(
            opcode,
            length,
            fin,
            bool(b0 & 0x40),
            bool(b0 & 0x20),
            bool(b0 & 0x10),
            buf[pos + size - 4 : pos + size] if is_masked else None,
        )
        self._header = header
        self._pos = pos + size
        self._offset = 0
        return header


def read_frames(data: bytes, *, masked: bool = False) -> list[Frame]:
    """Every whole frame in ``data``, as :class:`Frame` values (for tests and tools).

    A trailing partial frame is ignored. Raises :class:`ProtocolError`.
    """
    parser = FrameParser(masked=masked)
    parser.feed(data)
    frames: list[Frame] = []
    parts: list[bytes] = []
    while (chunk := parser.next()) is not None:
        parts.append(chunk.data)
        if chunk.last:
            h = chunk.header
            frames.append(Frame(h.opcode, b"".join(parts), h.fin, h.rsv1, h.rsv2, h.rsv3))
            parts = []
    return frames


def encode_close_payload(code: int, reason: str = "") -> bytes:
    """A close frame's payload: the code, then the UTF-8 reason (§5.5.1)."""
    payload = code.to_bytes(2, "big") + reason.encode()
    if len(payload) > 125:
        raise ValueError("close reason longer than 123 bytes")
    return payload


def parse_close_payload(payload: bytes) -> tuple[int, str]:
    """The code and reason of a received close frame (RFC 6455 §5.5.1, §7.4).

    No payload means "no status code" (1005, §7.1.5). A one-byte payload or
    an invalid code is a protocol error (1002); a reason that is not UTF-8 is
    invalid data (1007).
    """
    if not payload:
        return CloseCode.NO_STATUS_RCVD, ""
    if len(payload) == 1:
        raise ProtocolError("close frame payload of one byte")
    code = int.from_bytes(payload[:2], "big")
    if not is_valid_close_code(code):
        raise ProtocolError(f"invalid close code {code}")
    try:
        reason = payload[2:].decode()
    except UnicodeDecodeError:
        raise InvalidPayloadData("close reason is not valid UTF-8") from None
    return code, reason
