"""The chat's WebSocket server: ``/ws``, authenticated, a greenlet per client at work.

:class:`ChatServer` puts :class:`~app.chat.service.ChatService` behind a
:class:`~app.server.server.WebSocketServer`. Before the upgrade it refuses
other paths (404), foreign browser origins (403), missing or bad credentials
(401), banned nicks (403) and a nick another session holds (409). Each client is a
:class:`Client`: the chat domain's member, writing through its
:class:`ServerWebSocket` without ever blocking a broadcast; an idle client
keeps no greenlet (the server's :class:`~app.server.server.EventHandler`
mode, about 2 KB per idle client instead of 8). One greenlet pings
every client (keepalive); :meth:`ChatServer.stop` closes them all with 1012
and a retry hint, spread over ``CHAT_DRAIN_SECONDS`` (:mod:`.drain`), and
commits the history.
"""

from __future__ import annotations

import itertools
import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, TypeVar

import gevent

from app import metrics
from app.chat.auth import Identity
from app.chat.events import Outgoing
from app.chat.protocol import ChatError
from app.chat.service import ChatService
from app.config import Settings
from app.resources import open_file_limit, websocket_budget
from app.ws import CloseCode, DeflateConfig, Request, TextMessage, reject

from .drain import moments, restart_reason, retry_hint
from .server import ServerConfig, WebSocketServer, parse_bind
from .tls import server_context
from .websocket import Message, ServerWebSocket

__all__ = ["ChatServer", "Client"]

log = logging.getLogger(__name__)

Authenticate = Callable[[Request], "Identity | None"]
WS_PATH = "/ws"
#: Seconds between reports of the connections' counters to the metrics.
METRICS_INTERVAL = 1.0
#: Clients visited between two turns of the event loop by a pass over all of them (metrics,
#: keepalive, idle check): summing 2,000 at once held messages up for 1 to 2 ms, and a
#: keepalive pass pings every client that connected within the same tick.
TURN_CLIENTS = 250
#: Seconds between log lines about connections refused over a limit (a flood is one line, not thousands).
REFUSALS_LOG_INTERVAL = 10.0

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Admission:
    """What the handshake gate learnt of a client: who it is, and its user agent.

    Only this outlives the handshake; the request head itself is dropped.
    """

    identity: Identity
    user_agent: str


class Client:
    """A connected client: the chat domain's member, backed by a WebSocket."""

    __slots__ = ("conn_id", "connected_at", "msgs_in", "msgs_out", "nick", "session_id", "user_agent", "ws")

    def __init__(self, conn_id: str, admission: Admission, ws: ServerWebSocket) -> None:
        self.conn_id = conn_id
        self.nick = admission.identity.nick
        self.session_id = admission.identity.session_id
        self.user_agent = admission.user_agent
        self.ws = ws
        self.connected_at = time.time()
        self.msgs_in = 0
        self.msgs_out = 0

    def send(self, message: Outgoing) -> None:
        """Queue an event; a client too slow to take it is closed (1008), never waited for."""
        ws = self.ws
        frame = message.frames.get(ws.encoding_key)  # the broadcast's shared frame, once framed
        if frame is None:
            frame = ws.frame_for(message.data, message.frames)
        if ws.offer(frame):
            self.msgs_out += 1

    def close(self, code: int, reason: str) -> None:
        self.ws.close_soon(code, reason)

    def describe(self) -> dict[str, Any]:
        """What the operator sees of this connection."""
        ws = self.ws
        return {
            "id": self.conn_id,
            "nick": self.nick,
            "addr": _address(ws.address),
            "user_agent": self.user_agent,
            "connected_at": self.connected_at,
            "msgs_in": self.msgs_in,
            "msgs_out": self.msgs_out,
            "bytes_in": ws.bytes_in,
            "bytes_out": ws.bytes_out,
            "buffered": ws.buffered,
            "rtt_ms": None if ws.rtt is None else round(ws.rtt * 1000, 3),
        }


def _taking_turns(items: list[_T]) -> Iterator[_T]:
    """``items``, with a turn of the event loop after every :data:`TURN_CLIENTS` of them.

    The turn is a timer, so the loop polls for I/O in between (``sleep(0)``
    would only run what is already scheduled): the clients' messages go on.
    """
    for start in range(0, len(items), TURN_CLIENTS):
        if start:
            gevent.sleep(0.001)
        yield from items[start : start + TURN_CLIENTS]


class _Counts:
    """Traffic counters summed over clients."""

    __slots__ = ("bytes_in", "bytes_out", "clients", "msgs_in", "msgs_out")

    def __init__(self) -> None:
        self.clients = self.msgs_in = self.msgs_out = self.bytes_in = self.bytes_out = 0

    def add(self, client: Client) -> None:
        self.clients += 1
        self.msgs_in += client.msgs_in
        self.msgs_out += client.msgs_out
        self.bytes_in += client.ws.bytes_in
        self.bytes_out += client.ws.bytes_out

    def merge(self, other: _Counts) -> None:
        for name in self.__slots__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


def _address(address: Any) -> str:
    return f"{address[0]}:{address[1]}" if isinstance(address, tuple) else str(address)


def deflate_config(mode: str) -> DeflateConfig | None:
    """permessage-deflate as ``CHAT_DEFLATE`` says: ``shared``, ``per-client`` or ``off`` (None).

    ``shared`` forces server_no_context_takeover, so a broadcast is compressed
    once for every client (the frame cache of :meth:`ServerWebSocket.frame_for`);
    ``per-client`` lets each connection keep its context, so each copy is
    compressed on its own (smaller on the wire, a compressor per connection).
    Both ask for client_no_context_takeover: no inflate window kept per idle client.
    """
    if mode == "off":
        return None
    return DeflateConfig(server_no_context_takeover=mode == "shared", client_no_context_takeover=True, min_size=256)


class ChatServer:
    """The WebSocket side of the chat, for one process."""

    def __init__(
        self,
        service: ChatService,
        settings: Settings,
        authenticate: Authenticate,
        *,
        allowed_origins: frozenset[str] = frozenset(),
        listener: Any = None,
    ) -> None:
        self.service = service
        self.settings = settings
        self.authenticate = authenticate
        self.allowed_origins = allowed_origins
        self.clients: dict[str, Client] = {}
        self._ids = itertools.count(1)
        #: Connection ids are unique across processes: ``NODE.cN`` with Redis, ``cN`` alone.
        self._id_prefix = f"{service.broker.node}.c" if service.broker.node else "c"
        #: The connections this process takes: CHAT_MAX_CONNECTIONS, or fewer if its open-file limit is low.
        self.capacity = websocket_budget(settings.max_connections)
        if self.capacity < settings.max_connections:
            log.warning(
                "chat: the open-file limit (%d) leaves room for %d WebSocket connections, not CHAT_MAX_CONNECTIONS=%d: "
                "raise it (ulimit -n, systemd's LimitNOFILE)",
                open_file_limit(),
                self.capacity,
                settings.max_connections,
            )
        service.capacity = self.capacity
        config = ServerConfig(
            max_message_size=settings.max_message_size,
            deflate=deflate_config(settings.deflate),
            handshake_timeout=settings.handshake_timeout,
            close_timeout=settings.close_timeout,
            max_connections=self.capacity,
            max_connections_per_address=settings.max_connections_per_address,
            send_limit=settings.send_buffer,
            keep_request=False,
            ssl_context=server_context(settings.tls_cert, settings.tls_key) if settings.tls_cert else None,
        )
        self.ws_server = WebSocketServer(listener or parse_bind(settings.ws_bind), self, config, gate=self._gate)
        self.ws_server.on_refused = self._refused_at_accept
        self._refusals = 0
        #: conn id -> (messages received, when that count changed), while CHAT_IDLE_TIMEOUT is set
        self._last_active: dict[str, tuple[int, float]] = {}
        self._refusals_logged_at = 0.0
        self._keepalive: gevent.Greenlet | None = None
        self._metrics: gevent.Greenlet | None = None
        #: counters of the clients that are gone, and of the totals last reported
        self._gone = _Counts()
        self._reported = _Counts()

    @property
    def address(self) -> tuple[str, int]:
        return self.ws_server.address

    @property
    def url(self) -> str:
        """The WebSocket endpoint's URL, as bound."""
        host, port = self.address[:2]
        host = f"[{host}]" if ":" in host else host
        scheme = "wss" if self.ws_server.config.ssl_context is not None else "ws"
        return f"{scheme}://{host}:{port}{WS_PATH}"

    def start(self) -> None:
        """Open the history, start accepting, start the keepalive."""
        self.service.start()
        self.ws_server.start()
        self.service.accepting = True
        self._keepalive = gevent.spawn(self._keepalive_loop)
        self._metrics = gevent.spawn(self._metrics_loop)
        log.warning("chat: WebSocket server listening on %s", self.url)

    def stop(self, timeout: float = 5.0, drain: float | None = None) -> None:
        """Stop accepting, drain the clients, give them ``timeout`` s more to go, then commit the history.

        The drain (:mod:`app.server.drain`) closes each client with 1012 and
        a retry hint at its own moment of ``drain`` seconds (default
        ``CHAT_DRAIN_SECONDS``); until then a client is served as ever.
        """
        window = self.settings.drain_seconds if drain is None else drain
        self.service.accepting = False
        self.ws_server.stream_server.close()
        self._drain(window)
        for greenlet in (self._keepalive, self._metrics):
            if greenlet is not None:
                greenlet.kill()
        self.ws_server.pool.join(timeout=timeout)
        self.ws_server.pool.kill(timeout=1)
        self.service.close()

    def _drain(self, window: float) -> None:
        """Close every client with 1012, each at its own moment of ``window`` s, each with its own hint."""
        clients = list(self.clients.values())
        random.shuffle(clients)
        if clients:
            log.warning("chat: draining %d clients over %.1f s", len(clients), window)
        started = time.monotonic()
        for client, moment in zip(clients, moments(len(clients), window), strict=True):
            if not self.clients:
                break  # every client left by itself
            delay = started + moment - time.monotonic()
            if delay > 0:
                gevent.sleep(delay)
            client.close(CloseCode.SERVICE_RESTART, restart_reason(retry_hint()))
        for client in list(self.clients.values()):  # those whose handshake was under way
            client.close(CloseCode.SERVICE_RESTART, restart_reason(retry_hint()))

    def _refused_at_accept(self, reason: str) -> None:
        """A connection refused before the gate (over a limit, a bad request): counted, logged now and then."""
        metrics.HANDSHAKES_REJECTED.labels(reason).inc()
        self._refusals += 1
        now = time.monotonic()
        if now - self._refusals_logged_at >= REFUSALS_LOG_INTERVAL:
            self._refusals_logged_at = now
            log.warning(
                "connections refused (%s, and others): %d since the last such line",
                reason,
                self._refusals,
                extra={"event": "refused", "reason": reason},
            )
            self._refusals = 0

    # -- the handshake gate --------------------------------------------------

    def _gate(self, request: Request) -> Any:
        admission = self._admit(request)
        if isinstance(admission, tuple):
            reason, status, message = admission
            metrics.HANDSHAKES_REJECTED.labels(reason).inc()
            log.info("handshake refused: %s", message, extra={"event": "refused", "reason": reason})
            return reject(status, message)
        return admission

    def _admit(self, request: Request) -> Admission | tuple[str, HTTPStatus, str]:
        """Who the client is, or why not: ``(reason, status, message)``."""
        if request.path != WS_PATH:
            return "not_found", HTTPStatus.NOT_FOUND, f"no WebSocket endpoint here; connect to {WS_PATH}"
        origin = request.get("Origin")
        if origin is not None and origin.rstrip("/") not in self.allowed_origins:
            return "origin", HTTPStatus.FORBIDDEN, "origin not allowed"
        identity = self.authenticate(request)
        if identity is None:
            return "unauthorized", HTTPStatus.UNAUTHORIZED, "a valid token or session cookie is required"
        try:
            refusal = self.service.refusal(identity)
        except ChatError as error:  # the accounts' shared store is unreachable
            refusal = error
        if refusal is not None:
            return refusal.code, HTTPStatus(refusal.status), refusal.message
        return Admission(identity, (request.get("User-Agent") or "")[:256])

    # -- one client: the server's EventHandler --------------------------------
    #
    # Each runs in a greenlet serving that client; between messages an idle
    # client keeps no greenlet (app/server/server.py).

    def opened(self, ws: ServerWebSocket) -> None:
        """A client passed the gate: it becomes a member of the chat."""
        client = Client(f"{self._id_prefix}{next(self._ids)}", ws.context, ws)
        ws.context = client  # the client copied what it needs of the admission: an idle client keeps no more
        self.clients[client.conn_id] = client
        log.info("connect", extra={"event": "connect", "conn": client.conn_id, "addr": _address(ws.address)})
        self.service.connect(client)

    def received(self, ws: ServerWebSocket, message: Message) -> None:
        client: Client = ws.context
        client.msgs_in += 1
        if isinstance(message, TextMessage):
            self.service.handle(client, message.data)
        else:
            self.service.unsupported(client)

    def closed(self, ws: ServerWebSocket, code: int, reason: str) -> None:
        client = ws.context
        if not isinstance(client, Client):
            return  # opened() failed before the client existed
        ws.context = None
        try:
            self.service.disconnect(client)
        finally:
            del self.clients[client.conn_id]
            self._retire(client, code, reason)

    def _retire(self, client: Client, code: int, reason: str) -> None:
        """A client is gone: its counters join the totals, and one log line says how it ended."""
        self._gone.add(client)
        log.info(
            "disconnect %s %s",
            code,
            reason,
            extra={"event": "disconnect", "conn": client.conn_id, "code": code, "reason": reason},
        )

    def _metrics_loop(self) -> None:
        """Once a second, add what the connections counted to the metrics (nothing per delivery)."""
        while True:
            gevent.sleep(METRICS_INTERVAL)
            self.report_metrics()

    def report_metrics(self) -> None:
        now = _Counts()
        now.merge(self._gone)
        for client in _taking_turns(list(self.clients.values())):
            now.add(client)
        last, self._reported = self._reported, now
        metrics.publish_latencies()
        metrics.MESSAGES_IN.inc(now.msgs_in - last.msgs_in)
        metrics.MESSAGES_OUT.inc(now.msgs_out - last.msgs_out)
        metrics.BYTES_IN.inc(now.bytes_in - last.bytes_in)
        metrics.BYTES_OUT.inc(now.bytes_out - last.bytes_out)
        metrics.CONNECTIONS.inc(now.clients - last.clients)
        metrics.CONNECTIONS_OPEN.set(len(self.clients))
        metrics.ROOMS.set(self.service.stats()["rooms"])

    def _keepalive_loop(self) -> None:
        interval, timeout = self.settings.ping_interval, self.settings.ping_timeout
        idle_timeout = self.settings.idle_timeout
        tick = max(0.05, min(interval, timeout, idle_timeout or interval) / 4)
        while True:
            gevent.sleep(tick)
            now = time.monotonic()
            for client in _taking_turns(list(self.clients.values())):
                client.ws.keepalive(now, interval, timeout)
            if idle_timeout:
                self._close_idle(now, idle_timeout)

    def _close_idle(self, now: float, idle_timeout: float) -> None:
        """Close (1001, the browser reconnects) the clients that sent no message for ``idle_timeout`` s.

        What each client had sent when last seen active is kept only while
        this limit is on: an idle client costs nothing more without it.
        """
        seen = self._last_active
        for conn_id, client in _taking_turns(list(self.clients.items())):
            last = seen.get(conn_id)
            if last is None or last[0] != client.msgs_in:
                seen[conn_id] = (client.msgs_in, now)
            elif now - last[1] >= idle_timeout:
                client.ws.close_soon(CloseCode.GOING_AWAY, "idle for too long")
        for conn_id in [conn_id for conn_id in seen if conn_id not in self.clients]:
            del seen[conn_id]
