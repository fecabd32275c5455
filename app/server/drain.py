"""The drain of a stopping server: when each client is closed, and when it is told to come back.

A deploy stops a process that may hold thousands of clients. Closed all at
once, they would all reconnect at once: a spike of handshakes, sessions and
``since`` replays on whatever serves next. So each client is closed with 1012
("Service Restart", RFC 6455 §7.4.1's IANA registry) at its own moment of a
window (``CHAT_DRAIN_SECONDS``), and told in the close reason how long to
wait before reconnecting, each its own delay (docs/protocol.md §5):

    restarting retry=3200

Until its moment a client is served as ever: what it sends is stored and
delivered. No I/O here: :meth:`app.server.chat.ChatServer.stop` does the
closing.
"""

from __future__ import annotations

import random

__all__ = ["RETRY_MAX_MS", "RETRY_MIN_MS", "moments", "restart_reason", "retry_hint"]

#: The retry hints, milliseconds: at least a second, so that the next process (or the
#: other workers) can take the client; spread over four more, so that even a drain with
#: no window (``CHAT_DRAIN_SECONDS=0``) spreads the reconnections.
RETRY_MIN_MS, RETRY_MAX_MS = 1000, 5000

_random = random.Random()


def moments(count: int, window: float, rng: random.Random = _random) -> list[float]:
    """When to close each of ``count`` clients, in seconds from the drain's start, in order.

    Jittered within strata: the ``i``-th moment falls at random in the ``i``-th
    of ``count`` equal slices of the window. Plain uniform moments would
    clump (a Poisson process has bursts); these cannot, and no two clients
    are closed by the same tick unless the window is that short.
    """
    if count <= 0:
        return []
    return [window * (i + rng.random()) / count for i in range(count)]


def retry_hint(rng: random.Random = _random) -> int:
    """Milliseconds a client should wait before reconnecting: at random in ``[RETRY_MIN_MS, RETRY_MAX_MS]``."""
    return rng.randint(RETRY_MIN_MS, RETRY_MAX_MS)


def restart_reason(retry_ms: int) -> str:
    """The reason of a 1012 close: ``restarting retry=MS`` (docs/protocol.md §5)."""
    return f"restarting retry={retry_ms}"
