"""permessage-deflate (RFC 7692): negotiation and the per-connection codec.

Negotiation (§5, §7.1) takes the client's offers in order and accepts the
first one this server can honour; an offer with an unknown or repeated
parameter, or a bad value, is declined and the next one tried. If none fits,
the connection runs uncompressed.

Compression (§7.2.1): each message is deflated and flushed with a sync
flush, and its trailing ``00 00 ff ff`` removed. With
``server_no_context_takeover`` a message's bytes do not depend on the
connection's earlier messages, so one shared compressor per window size
serves every such connection: a broadcast is compressed once
(:attr:`PerMessageDeflate.encoding_key`).

Decompression (§7.2.2) is bounded: the inflater never produces more than the
remaining message budget plus one byte, so a decompression bomb stops at the
limit, not after inflating it.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

from .exceptions import InvalidPayloadData, MessageTooBig

__all__ = ["DeflateConfig", "DeflateParams", "PerMessageDeflate", "negotiate"]

EXTENSION_NAME = "permessage-deflate"
_TAIL = b"\x00\x00\xff\xff"
_WINDOW_BITS = re.compile(r"[1-9][0-9]?\Z")
# zlib cannot deflate with a 256-byte window (deflateInit2 turns -8 into an
# error): an offer that requires server_max_window_bits=8 is declined.
MIN_SERVER_WINDOW_BITS = 9


@dataclass(frozen=True, slots=True)
class DeflateConfig:
    """What this server is willing to do; see RFC 7692 §7.1 for each parameter.

    ``server_no_context_takeover`` forces that parameter into every response
    (§7.1.1.1 allows it), so broadcasts can be compressed once.
    ``client_no_context_takeover`` asks clients to reset their context too,
    saving the server an inflate window between messages. Window sizes are
    upper bounds. Messages shorter than ``min_size`` bytes are sent
    uncompressed (allowed by §6: RSV1 is per message).
    """

    server_no_context_takeover: bool = False
    client_no_context_takeover: bool = False
    server_max_window_bits: int = 15
    client_max_window_bits: int = 15
    level: int = 6
    mem_level: int = 8
    min_size: int = 0

    def __post_init__(self) -> None:
        if not MIN_SERVER_WINDOW_BITS <= self.server_max_window_bits <= 15:
            raise ValueError("server_max_window_bits must be within 9..15")
        if not 8 <= self.client_max_window_bits <= 15:
            raise ValueError("client_max_window_bits must be within 8..15")


@dataclass(frozen=True, slots=True)
class DeflateParams:
    """The agreed parameters of one connection (RFC 7692 §7.1)."""

    server_no_context_takeover: bool = False
    client_no_context_takeover: bool = False
    server_max_window_bits: int = 15
    client_max_window_bits: int = 15
    # whether the response names each window size (a value the client must honour)
    announce_server_bits: bool = False
    announce_client_bits: bool = False

    def response_header(self) -> str:
        """The ``Sec-WebSocket-Extensions`` value that accepts this agreement."""
        parts = [EXTENSION_NAME]
        if self.server_no_context_takeover:
            parts.append("server_no_context_takeover")
        if self.client_no_context_takeover:
            parts.append("client_no_context_takeover")
        if self.announce_server_bits:
            parts.append(f"server_max_window_bits={self.server_max_window_bits}")
        if self.announce_client_bits:
            parts.append(f"client_max_window_bits={self.client_max_window_bits}")
        return "; ".join(parts)


def _window_bits(value: str | None) -> int | None:
    if value is None or not _WINDOW_BITS.match(value):
        return None
    bits = int(value)
    return bits if 8 <= bits <= 15 else None


def _accept_offer(params: list[tuple[str, str | None]], config: DeflateConfig) -> DeflateParams | None:
    """The agreement for one offer, or ``None`` to decline it (§7.1)."""
    seen: set[str] = set()
    server_nct = config.server_no_context_takeover
    client_nct = config.client_no_context_takeover
    server_bits = config.server_max_window_bits
    client_bits = 15
    announce_server = server_bits < 15
    announce_client = False
    for name, value in params:
        if name in seen:
            return None  # §7.1: each parameter at most once
        seen.add(name)
        if name == "server_no_context_takeover":
            if value is not None:
                return None
            server_nct = True
        elif name == "client_no_context_takeover":
            if value is not None:
                return None
            client_nct = True
        elif name == "server_max_window_bits":
            bits = _window_bits(value)
            if bits is None or bits < MIN_SERVER_WINDOW_BITS:
                return None
            server_bits = min(bits, server_bits)
            announce_server = True  # §7.1.2.1: the response must carry it
        elif name == "client_max_window_bits":
            if value is None:
                client_bits = config.client_max_window_bits
                announce_client = client_bits < 15
            else:
                bits = _window_bits(value)
                if bits is None:
                    return None
                client_bits = min(bits, config.client_max_window_bits)
                announce_client = client_bits < bits
        else:
            return None  # unknown parameter
    if "client_max_window_bits" not in seen:
        # §7.1.2.2: without the client's support the response cannot limit it.
        client_bits = 15
    return DeflateParams(
        server_no_context_takeover=server_nct,
        client_no_context_takeover=client_nct,
        server_max_window_bits=server_bits,
        client_max_window_bits=client_bits,
        announce_server_bits=announce_server,
        announce_client_bits=announce_client,
    )


def negotiate(offers: list[tuple[str, list[tuple[str, str | None]]]], config: DeflateConfig) -> DeflateParams | None:
    """Accept the first acceptable permessage-deflate offer, if any (§5.1)."""
    for name, params in offers:
        if name == EXTENSION_NAME:
            agreed = _accept_offer(params, config)
            if agreed is not None:
                return agreed
    return None


_shared_compressors: dict[tuple[int, int, int], zlib._Compress] = {}


def _shared_compressor(window_bits: int, level: int, mem_level: int) -> zlib._Compress:
    key = (window_bits, level, mem_level)
    compressor = _shared_compressors.get(key)
    if compressor is None:
        compressor = zlib.compressobj(level, zlib.DEFLATED, -window_bits, mem_level)
        _shared_compressors[key] = compressor
    return compressor


class PerMessageDeflate:
    """One connection's compressor and bounded decompressor."""

    __slots__ = ("_compressor", "_decompressor", "config", "encoding_key", "params")

    def __init__(self, params: DeflateParams, config: DeflateConfig | None = None) -> None:
        self.params = params
        self.config = config or DeflateConfig()
        self._compressor: zlib._Compress | None = None
        self._decompressor: zlib._Decompress | None = None
        #: Connections with equal keys get identical bytes for a message;
        #: a connection that keeps context has a key of its own.
        self.encoding_key: object = (
            ("deflate", params.server_max_window_bits, self.config.level, self.config.mem_level, self.config.min_size)
            if params.server_no_context_takeover
            else self
        )

    def should_compress(self, payload: bytes) -> bool:
        """Whether a message of this size is worth compressing."""
        return len(payload) >= self.config.min_size

    def compress(self, payload: bytes) -> bytes:
        """The compressed payload of one message, without the ``00 00 ff ff`` tail."""
        if self.params.server_no_context_takeover:
            # A full flush ends the message *and* resets the dictionary, so
            # the shared compressor's next message starts from nothing.
            compressor = _shared_compressor(
                self.params.server_max_window_bits, self.config.level, self.config.mem_level
            )
            data = compressor.compress(payload) + compressor.flush(zlib.Z_FULL_FLUSH)
        else:
            if self._compressor is None:
                self._compressor = zlib.compressobj(
                    self.config.level, zlib.DEFLATED, -self.params.server_max_window_bits, self.config.mem_level
                )
            data = self._compressor.compress(payload) + self._compressor.flush(zlib.Z_SYNC_FLUSH)
        if data.endswith(_TAIL):
            data = data[:-4]
        return data or b"\x00"

    def decompress(self, data: bytes, budget: int) -> bytes:
        """Inflate a piece of a message; at most ``budget`` bytes may come out.

        Raises :class:`MessageTooBig` as soon as the output would exceed the
        budget and :class:`InvalidPayloadData` on data that is not deflate.
        """
        decompressor = self._decompressor
        if decompressor is None:
            decompressor = self._decompressor = zlib.decompressobj(-self.params.client_max_window_bits)
        elif decompressor.eof:
            return b""  # the message ended with a BFINAL block (§7.2.3.4): the rest is padding
        try:
            out = decompressor.decompress(data, budget + 1)
        except zlib.error:
            raise InvalidPayloadData("invalid compressed data") from None
        if len(out) > budget:
            raise MessageTooBig("message too big once decompressed", within=out[:budget])
        return out

    def finish(self, budget: int) -> bytes:
        """Inflate the end of a message (the tail §7.2.2 has us append)."""
        out = self.decompress(_TAIL, budget)
        if self.params.client_no_context_takeover or (self._decompressor is not None and self._decompressor.eof):
            # Nothing of this message is needed again, or its stream ended
            # with a BFINAL block and the next message starts a new one.
            self._decompressor = None
        return out
