"""One process's link to Redis: the clients, the key names, and whether Redis is reachable.

The chat runs under gevent with the standard library monkey-patched
(gunicorn's gevent worker, ``python wsgi.py``), so redis-py's blocking
sockets wait in the hub, never block it.

Outages are the link's to notice: the first failure is logged once (not once
per client message), the rest of the process asks :attr:`RedisLink.up` to
fail fast meanwhile, and the subscriber (:mod:`app.chat.redis_broker`), which
reconnects with backoff, reports when Redis is back.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from app import metrics

__all__ = ["UNREACHABLE", "RedisLink"]

log = logging.getLogger(__name__)

#: What an unreachable (down, restarting, unreachable host) Redis raises.
UNREACHABLE = (redis.ConnectionError, redis.TimeoutError)
#: Connections one process opens for commands; more waiting greenlets queue for one.
POOL_SIZE = 32
COMMAND_TIMEOUT = 5.0
CONNECT_TIMEOUT = 2.0


class RedisLink:
    """Redis clients for one process, with the chat's key names under ``prefix``."""

    def __init__(self, url: str, prefix: str = "chat") -> None:
        self.url = url
        self.prefix = prefix
        # No retries: a command that may have run (an append) must not run twice.
        no_retry = Retry(NoBackoff(), 0)
        pool = redis.BlockingConnectionPool.from_url(
            url,
            max_connections=POOL_SIZE,
            timeout=COMMAND_TIMEOUT,
            socket_timeout=COMMAND_TIMEOUT,
            socket_connect_timeout=CONNECT_TIMEOUT,
            retry=no_retry,
        )
        # Typed Any: redis-py annotates each reply as sync-or-async, bytes-or-str.
        self.client: Any = redis.Redis(connection_pool=pool)
        #: For the subscription alone: it waits for messages without a timeout.
        self.subscriber: Any = redis.Redis.from_url(
            url, socket_timeout=None, socket_connect_timeout=CONNECT_TIMEOUT, retry=no_retry
        )
        self._up = True

    def key(self, *parts: str) -> str:
        """A key of this chat: ``prefix:part:part``."""
        return ":".join((self.prefix, *parts))

    @property
    def up(self) -> bool:
        """False from a failure until the subscriber has reconnected."""
        return self._up

    def failed(self, error: BaseException) -> None:
        """Redis did not answer: count it, and log it once for the whole outage."""
        metrics.REDIS_ERRORS.labels("unreachable").inc()
        if self._up:
            self._up = False
            log.error("redis: %s unreachable (%s); serving local clients only, retrying", self.url, error)

    def recovered(self) -> None:
        if not self._up:
            self._up = True
            log.warning("redis: %s reachable again; resuming", self.url)

    def close(self) -> None:
        self.client.close()
        self.subscriber.close()
