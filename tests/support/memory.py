"""How much memory an action needs at its peak (``tracemalloc``)."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable


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
