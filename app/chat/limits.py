"""Per-client message rate limits, kept only while they matter.

A client may send ``burst`` messages at once and ``rate`` per second over
time. A message over the limit is refused (the client gets ``rate_limited``);
a client that sends ``burst`` more refused messages in a row is flooding, and
is closed.

The limiter is GCRA (the generic cell rate algorithm, a token bucket kept as
one number): per client, the *theoretical arrival time* its next message is
due at. Once that time has passed, the client is as good as new, so its entry
is dropped at the next sweep: an idle client holds no limiter state.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable

__all__ = ["RateLimiter", "Verdict"]


class Verdict(enum.Enum):
    """What to do with one message."""

    ALLOW = "allow"
    REFUSE = "refuse"
    #: refused, and the client keeps on sending: close it
    CLOSE = "close"


class RateLimiter:
    """Rates by key (a connection id, an address); ``rate <= 0`` turns limiting off."""

    #: Seconds between sweeps of the entries whose time has passed.
    SWEEP_EVERY = 1.0

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self._interval = 1.0 / rate if rate > 0 else 0.0
        #: how far ahead of now a client's due time may be and a message still pass
        self._slack = (self.burst - 1) * self._interval
        self._clock = clock
        self._due: dict[str, float] = {}
        self._refused: dict[str, int] = {}
        self._next_sweep = clock() + self.SWEEP_EVERY

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def check(self, conn_id: str) -> Verdict:
        """Account for one message of ``conn_id``."""
        if self.rate <= 0:
            return Verdict.ALLOW
        now = self._clock()
        if now >= self._next_sweep:
            self._sweep(now)
        due = max(self._due.get(conn_id, now), now)
        if due - now <= self._slack:
            self._due[conn_id] = due + self._interval
            self._refused.pop(conn_id, None)
            return Verdict.ALLOW
        refused = self._refused[conn_id] = self._refused.get(conn_id, 0) + 1
        return Verdict.CLOSE if refused > self.burst else Verdict.REFUSE

    def wait(self, key: str) -> float:
        """Seconds until ``key`` may pass again (0: now), without counting anything."""
        due = self._due.get(key)
        if due is None or self.rate <= 0:
            return 0.0
        return max(0.0, due - self._clock() - self._slack)

    def forget(self, conn_id: str) -> None:
        self._due.pop(conn_id, None)
        self._refused.pop(conn_id, None)

    def __len__(self) -> int:
        """How many clients the limiter holds state for."""
        return len(self._due)

    def _sweep(self, now: float) -> None:
        for conn_id in [conn for conn, due in self._due.items() if due <= now]:
            del self._due[conn_id]
            self._refused.pop(conn_id, None)
        self._next_sweep = now + self.SWEEP_EVERY
