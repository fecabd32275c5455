"""A gevent ``StreamServer`` that speaks WebSocket: one greenlet per client.

The handler contract (as in gevent's ``StreamServer``): ``handler(ws)`` runs
in the client's own greenlet once the handshake succeeded; when it returns,
the connection is closed (1000 unless the handler closed it otherwise).
"""

from __future__ import annotations

import logging
import signal
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import gevent
from gevent.event import Event
from gevent.server import StreamServer
from greenlet import getcurrent, greenlet

from app.ws import (
    DEFAULT_MAX_MESSAGE_SIZE,
    CloseCode,
    Connection,
    ConnectionClosed,
    DeflateConfig,
    Handshake,
    HandshakeRejected,
    PerMessageDeflate,
    Request,
    RequestReader,
    accept,
    reject,
    rejection,
)

from .websocket import ServerWebSocket

__all__ = ["ServerConfig", "WebSocketServer", "parse_bind", "wait_for_shutdown"]

log = logging.getLogger(__name__)

Handler = Callable[[ServerWebSocket], None]
#: Decides about a request before the upgrade: a refused :class:`Handshake`
#: (404 for an unknown path, 401, 403 …), or anything else to go on — that
#: value becomes the connection's ``context`` (say, the client's identity).
Gate = Callable[[Request], Any]


@dataclass(frozen=True)
class ServerConfig:
    """Everything the I/O layer can be told, with the defaults it uses."""

    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    deflate: DeflateConfig | None = field(default_factory=DeflateConfig)
    subprotocols: Sequence[str] = ()
    handshake_timeout: float = 10.0
    close_timeout: float = 5.0
    max_connections: int = 10_000
    #: Bytes that may wait to be sent to one client (see ServerWebSocket.offer).
    send_limit: int = 1024 * 1024
    #: Keep the request head on the connection (``ws.request``); a server
    #: holding many idle clients saves its memory by taking what it needs in
    #: the gate instead.
    keep_request: bool = True


def parse_bind(bind: str) -> tuple[str, int]:
    """``"127.0.0.1:9001"`` or ``"[::1]:9001"`` as an address tuple."""
    host, sep, port = bind.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {bind!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


class WebSocketServer:
    """Accepts connections, runs the handshake, then hands each client to ``handler``."""

    def __init__(
        self,
        listener: tuple[str, int] | socket.socket,
        handler: Handler,
        config: ServerConfig | None = None,
        *,
        gate: Gate | None = None,
    ) -> None:
        self.config = config or ServerConfig()
        self.handler = handler
        self.gate = gate
        #: Every client's greenlet; ``join`` and ``kill`` as on a gevent ``Pool``.
        self.pool = ClientGreenlets(self.config.max_connections)
        self.stream_server = _Acceptor(listener, self._handle, self.pool)

    @property
    def address(self) -> tuple[str, int]:
        """The bound address (the real port when bound to port 0)."""
        return self.stream_server.address

    def start(self) -> None:
        """Bind and accept in the background."""
        self.stream_server.start()

    def serve_forever(self) -> None:
        """Bind and accept until stopped."""
        self.stream_server.serve_forever()

    def stop(self, timeout: float | None = None) -> None:
        """Stop accepting and give running handlers ``timeout`` seconds to end, then kill them."""
        self.stream_server.close()
        self.pool.join(timeout=self.stream_server.stop_timeout if timeout is None else timeout)
        self.pool.kill(timeout=1)

    def _read_request(self, sock: socket.socket) -> tuple[Request, bytes] | Handshake | None:
        """The request head and the bytes after it, a rejection, or ``None`` on EOF."""
        reader = RequestReader()
        while True:
            data = sock.recv(8192)
            if not data:
                return None
            try:
                request = reader.feed(data)
            except HandshakeRejected as error:
                return rejection(error)
            if request is not None:
                return request, reader.leftover

    def _handshake(self, sock: socket.socket) -> tuple[Handshake, Request, bytes, Any] | None:
        try:
            with gevent.Timeout(self.config.handshake_timeout):
                result = self._read_request(sock)
        except gevent.Timeout:
            result = reject(HTTPStatus.REQUEST_TIMEOUT, "handshake not completed in time")
        if result is None:
            return None
        if isinstance(result, Handshake):
            sock.sendall(result.response.serialize())
            return None
        request, leftover = result
        context = self.gate(request) if self.gate is not None else None
        if isinstance(context, Handshake):
            handshake = context
        else:
            handshake = accept(
                request,
                subprotocols=self.config.subprotocols,
                deflate=self.config.deflate,
            )
        sock.sendall(handshake.response.serialize())
        if not handshake.accepted:
            log.info("handshake refused: %s", handshake.error)
            return None
        return handshake, request, leftover, context

    def _handle(self, sock: socket.socket, address: tuple) -> None:
        """The life of one client: handshake, handler, close (gevent handler contract)."""
        ws = self._open(sock, address)
        if ws is None:
            _close_quietly(sock)
            return
        try:
            self.handler(ws)
        except ConnectionClosed:
            pass
        except Exception:
            log.exception("handler failed for %s", address)
            ws.close(CloseCode.INTERNAL_ERROR, "internal error")
        finally:
            ws.close()

    def _open(self, sock: socket.socket, address: tuple) -> ServerWebSocket | None:
        """The handshake; the connection if it succeeded.

        A function of its own so that the handshake's objects (the request
        head, the response) are freed before the client's long life starts.
        """
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass  # not TCP (a Unix socket in tests)
        try:
            done = self._handshake(sock)
        except OSError:
            done = None
        if done is None:
            return None
        handshake, request, leftover, context = done
        deflate = (
            PerMessageDeflate(handshake.deflate, self.config.deflate)
            if handshake.deflate is not None and self.config.deflate is not None
            else None
        )
        protocol = Connection(deflate=deflate, max_message_size=self.config.max_message_size)
        ws = ServerWebSocket(
            sock,
            address,
            protocol,
            request if self.config.keep_request else None,
            subprotocol=handshake.subprotocol,
            close_timeout=self.config.close_timeout,
            send_limit=self.config.send_limit,
            context=context,
        )
        ws.feed(leftover)
        return ws


class ClientGreenlets:
    """The clients' greenlets, at most ``limit`` at once: a gevent ``Pool`` of bare greenlets.

    Why not a ``Pool``: an idle client's greenlet waits for its whole life,
    and a waiting greenlet keeps a copy of the C stack between where it
    started and where it waits (greenlet copies it to the heap). A gevent
    ``Greenlet`` starts under its compiled ``run()``, and ``StreamServer``
    calls the handler as ``handle(*args)``, which enters the interpreter a
    second time: with the ``Greenlet`` object, about 1.2 KiB more per idle
    client than a bare greenlet whose ``run`` is :meth:`_life`, with one
    interpreter frame under the handler's Python code.
    """

    __slots__ = ("_empty", "_running", "ended", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        #: Called after each client greenlet ends (the acceptor resumes accepting).
        self.ended: Callable[[], None] | None = None
        self._running: set[greenlet] = set()
        self._empty = Event()
        self._empty.set()

    def __len__(self) -> int:
        return len(self._running)

    def full(self) -> bool:
        """Whether ``limit`` clients are being served (the server stops accepting)."""
        return len(self._running) >= self.limit

    def start(self, handle: Callable[[socket.socket, Any], None], sock: socket.socket, address: Any) -> None:
        """Run ``handle(sock, address)`` in a new greenlet, now, until it first waits.

        Called from the hub (the accept callback), so the greenlet's parent
        is the hub, as with ``gevent.spawn``; starting it at once means a
        client is never scheduled but not yet running (nothing for
        :meth:`kill` to miss).
        """
        client = greenlet(self._life, gevent.get_hub())
        self._running.add(client)
        self._empty.clear()
        client.switch(self, handle, sock, address)

    @staticmethod
    def _life(
        clients: ClientGreenlets, handle: Callable[[socket.socket, Any], None], sock: socket.socket, address: Any
    ) -> None:
        """A client greenlet's body: ``handle``, then the socket closed whatever happened.

        A function, not a method: the greenlet keeps its ``run`` for life,
        and a bound method would be one more object per client. Plain
        positional calls only: ``f(*args)`` would enter the interpreter
        again, one C frame more under every waiting client.
        """
        try:
            handle(sock, address)
        except Exception:
            log.exception("client greenlet failed for %s", address)
        finally:
            sock.close()
            clients._running.discard(getcurrent())
            if not clients._running:
                clients._empty.set()
            if clients.ended is not None:
                clients.ended()

    def join(self, timeout: float | None = None) -> bool:
        """Wait at most ``timeout`` seconds for every client greenlet to end; whether they did."""
        return self._empty.wait(timeout)

    def kill(self, block: bool = True, timeout: float | None = None) -> None:
        """End every client greenlet with ``GreenletExit`` (their ``finally`` runs), as ``Pool.kill``."""
        hub = gevent.get_hub()
        for client in list(self._running):
            hub.loop.run_callback(_kill, client)
        if block:
            self.join(timeout)


def _kill(client: greenlet) -> None:
    """Throw ``GreenletExit`` into a client greenlet, from the hub, unless it has ended meanwhile."""
    if not client.dead:
        client.throw(gevent.GreenletExit)


class _Acceptor(StreamServer):
    """gevent's ``StreamServer`` (accepting, backing off on errors), clients run by :class:`ClientGreenlets`."""

    def __init__(
        self, listener: tuple[str, int] | socket.socket, handle: Callable[..., None], clients: ClientGreenlets
    ) -> None:
        super().__init__(listener, handle)
        self.clients = clients
        clients.ended = self._client_ended

    def full(self) -> bool:
        """At the limit the server stops accepting; :meth:`_client_ended` starts it again."""
        return self.clients.full()

    def do_handle(self, *args: Any) -> None:
        sock, address = args
        self.clients.start(self._handle, sock, address)

    def _client_ended(self) -> None:
        if self.started:
            self.start_accepting()  # a no-op unless being full stopped it


def wait_for_shutdown() -> None:
    """Block the calling greenlet until the process gets SIGTERM or SIGINT."""
    stop = Event()
    gevent.signal_handler(signal.SIGTERM, stop.set)
    gevent.signal_handler(signal.SIGINT, stop.set)
    stop.wait()


def _close_quietly(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    sock.close()
