"""The chat's Prometheus metrics, defined once; ``/metrics`` serves them (app/web/ops.py).

The hot path pays nothing per delivery: per-connection counters (bytes,
messages) live on the connections, and the WebSocket server adds their growth
to these counters once a second (:class:`~app.server.chat.ChatServer`). What
is counted at the event is rare (a refused handshake, a slow client closed)
or once per chat message (the store and fan-out latencies).

Under gunicorn every worker writes its samples to ``PROMETHEUS_MULTIPROC_DIR``
(set by ``gunicorn.conf.py``) and ``/metrics``, whichever worker answers,
reports the sum over the live workers (prometheus_client's multiprocess mode).
"""

from __future__ import annotations

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
SLOW_CONSUMER_CLOSES = Counter("chat_slow_consumer_closes", "Clients closed (1008) for not reading fast enough")
FANOUT_SECONDS = Histogram(
    "chat_fanout_seconds",
    "From a chat message's arrival to its broadcast being queued for every member on this process",
    buckets=LATENCY_BUCKETS,
)
STORE_SECONDS = Histogram(
    "chat_history_store_seconds",
    "From a chat message's arrival to its being durable (SQLite commit or Redis append)",
    buckets=LATENCY_BUCKETS,
)
REDIS_ERRORS = Counter("chat_redis_errors", "Redis operations that failed", ["kind"])
