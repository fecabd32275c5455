"""The chat's Prometheus metrics, defined once; ``/metrics`` serves them (app/web/ops.py).

The hot path pays nothing per delivery: per-connection counters (bytes,
messages) live on the connections, and the WebSocket server adds their growth
to these counters once a second (:class:`~app.server.chat.ChatServer`). What
is counted at the event is rare (a refused handshake, a slow client closed).
The store and fan-out latencies, once per chat message, are bucketed in
plain integers (:class:`LatencyHistogram`) and reach Prometheus in the same
once-a-second report.

Under gunicorn every worker writes its samples to ``PROMETHEUS_MULTIPROC_DIR``
(set by ``gunicorn.conf.py``) and ``/metrics``, whichever worker answers,
reports the sum over the live workers (prometheus_client's multiprocess mode).
"""

from __future__ import annotations

from bisect import bisect_left

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "BYTES_IN",
    "BYTES_OUT",
    "CONNECTIONS",
    "CONNECTIONS_OPEN",
    "FANOUT_SECONDS",
    "HANDSHAKES_REJECTED",
    "MESSAGES_IN",
    "MESSAGES_OUT",
    "REDIS_ERRORS",
    "ROOMS",
    "SLOW_CONSUMER_CLOSES",
    "STORE_SECONDS",
    "LatencyHistogram",
    "publish_latencies",
]

#: Latency buckets, seconds: 0.1 ms to 2.5 s.
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

CONNECTIONS_OPEN = Gauge("chat_connections_open", "WebSocket clients connected now", multiprocess_mode="livesum")
CONNECTIONS = Counter("chat_connections", "WebSocket clients accepted (handshake completed)")
HANDSHAKES_REJECTED = Counter("chat_handshakes_rejected", "Opening handshakes refused, by reason", ["reason"])
ROOMS = Gauge("chat_rooms", "Rooms with members on this process (summed over workers)", multiprocess_mode="livesum")
MESSAGES_IN = Counter("chat_messages_in", "WebSocket messages received from clients")
MESSAGES_OUT = Counter("chat_messages_out", "Events queued to clients (a broadcast counts once per member)")
BYTES_IN = Counter("chat_bytes_in", "WebSocket bytes received from clients")
BYTES_OUT = Counter("chat_bytes_out", "WebSocket bytes sent to clients")
REDIS_ERRORS = Counter("chat_redis_errors", "Redis operations that failed", ["kind"])
SLOW_CONSUMER_CLOSES = Counter("chat_slow_consumer_closes", "Clients closed (1008) for not reading fast enough")


class LatencyHistogram:
    """A Prometheus histogram for the hot path: observing is a bisect and two additions.

    prometheus_client's ``observe`` takes a lock and, in multiprocess mode,
    checks the process id and writes to a memory-mapped file for every
    observation: a tenth of the chat's CPU at 4,000 messages a second. Here
    observations are counted per bucket in plain integers, and
    :meth:`publish` adds what was counted since the last call to the
    Prometheus histogram (its buckets' and sum's values, the
    ``prometheus_client`` pinned in requirements.txt) in one go.
    Prometheus's buckets are "less than or equal", as ``bisect_left`` finds.
    """

    __slots__ = ("_bounds", "_counts", "_histogram", "_sum")

    def __init__(self, name: str, documentation: str, buckets: tuple[float, ...]) -> None:
        self._histogram = Histogram(name, documentation, buckets=buckets)
        self._bounds = tuple(buckets)
        self._counts = [0] * (len(buckets) + 1)  # the last one: +Inf
        self._sum = 0.0

    def observe(self, seconds: float) -> None:
        self._counts[bisect_left(self._bounds, seconds)] += 1
        self._sum += seconds

    def publish(self) -> None:
        """Hand what was observed since the last call to Prometheus."""
        counts, self._counts = self._counts, [0] * len(self._counts)
        total, self._sum = self._sum, 0.0
        if not any(counts):
            return
        # observe()'s own steps, in bulk: the sum, then each bucket's count
        self._histogram._sum.inc(total)
        for bucket, count in zip(self._histogram._buckets, counts, strict=True):
            if count:
                bucket.inc(count)


FANOUT_SECONDS = LatencyHistogram(
    "chat_fanout_seconds",
    "From a chat message's arrival to its broadcast being queued for every member on this process",
    LATENCY_BUCKETS,
)
STORE_SECONDS = LatencyHistogram(
    "chat_history_store_seconds",
    "From a chat message's arrival to its being durable (SQLite commit or Redis append)",
    LATENCY_BUCKETS,
)


def publish_latencies() -> None:
    """Hand the latencies observed since the last call to Prometheus (once a second, by the server)."""
    FANOUT_SECONDS.publish()
    STORE_SECONDS.publish()
