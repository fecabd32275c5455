"""What the byte-level tests of the protocol core share: a client's side, in bytes."""

from __future__ import annotations

import tracemalloc
import zlib
from collections.abc import Callable

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


def peak_memory(action: Callable[[], object]) -> int:
    """Bytes of traced memory ``action`` needed at its peak, beyond what was already allocated."""
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before, _ = tracemalloc.get_traced_memory()
        action()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        if not was_tracing:
            tracemalloc.stop()
    return peak - before
