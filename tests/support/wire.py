"""A client's side of the protocol core's tests, in bytes: RFC 6455's sample mask, a client's deflate."""

from __future__ import annotations

import zlib

#: The masking key of RFC 6455 §5.7's examples.
MASK = bytes.fromhex("37fa213d")
#: What a sync flush ends with, removed from each compressed message (RFC 7692 §7.2.1).
TAIL = b"\x00\x00\xff\xff"


def client_deflate(payload: bytes, compressor: zlib._Compress | None = None) -> bytes:
    """A client's compressed message: sync flush, tail removed; a fresh compressor unless given."""
    compressor = compressor or zlib.compressobj(wbits=-15)
    data = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert data.endswith(TAIL)
    return data[:-4]
