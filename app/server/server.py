"""A gevent ``StreamServer`` that speaks WebSocket: each client in a greenlet of its own.

Two ways to serve a client, one per server:

- A **handler** ``handler(ws)`` (as in gevent's ``StreamServer``) runs in the
  client's own greenlet once the handshake succeeded, for the connection's
  whole life; when it returns, the connection is closed (1000 unless the
  handler closed it otherwise). Simple, and what the echo server's
  ``--greenlet`` mode and small tools use.
- An :class:`EventHandler` is told when a client opened, sent a message, and
  closed. The client still gets a greenlet of its own whenever it has work
  (its handshake, its messages, its blocking sends), but an idle client
  keeps none: its connection waits on the socket's read watcher. A waiting
  greenlet costs about 6 KB (a page of Python's frame stack and greenlet's
  copy of the C stack); without one, an idle chat client costs about 2 KB
  (docs/performance.md). The chat serves this way.

Either way a client's messages are handled one at a time, in order, and the
greenlets that run them are reused (a new greenlet maps and unmaps its frame
stack: about 8 µs, per message if nothing were reused).
"""

from __future__ import annotations

import errno
import logging
import signal
import socket
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Protocol

import gevent
from gevent.event import Event
from greenlet import getcurrent, greenlet

from app.compat import AcceptorBase, raw_socket
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
from app.ws.http11 import error_response

from .tls import TLSStream
from .websocket import Message, ServerWebSocket

__all__ = ["EventHandler", "ServerConfig", "WebSocketServer", "parse_bind", "wait_for_shutdown"]

log = logging.getLogger(__name__)

Handler = Callable[[ServerWebSocket], None]
#: Decides about a request before the upgrade: a refused :class:`Handshake`
#: (404 for an unknown path, 401, 403 …), or anything else to go on — that
#: value becomes the connection's ``context`` (say, the client's identity).
Gate = Callable[[Request], Any]


class EventHandler(Protocol):
    """What a server that keeps no greenlet for idle clients tells its application.

    Each method runs in a greenlet serving that one client, so it may block
    (a database, a send that waits for the client); a client's calls come
    one at a time, in order: ``opened``, ``received`` for each message,
    ``closed`` once. An exception from ``opened`` or ``received`` is logged
    and closes the connection with 1011. ``closed`` is called however the
    connection ended (close handshake, reset, abort, the server's stop), with
    the close code (1006 if there was none) and reason.
    """

    def opened(self, ws: ServerWebSocket) -> None: ...

    def received(self, ws: ServerWebSocket, message: Message) -> None: ...

    def closed(self, ws: ServerWebSocket, code: int, reason: str) -> None: ...


@dataclass(frozen=True)
class ServerConfig:
    """Everything the I/O layer can be told, with the defaults it uses."""

    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    deflate: DeflateConfig | None = field(default_factory=DeflateConfig)
    subprotocols: Sequence[str] = ()
    handshake_timeout: float = 10.0
    close_timeout: float = 5.0
    max_connections: int = 10_000
    #: Connections one remote address may hold at once (0: no limit).
    max_connections_per_address: int = 0
    #: Bytes that may wait to be sent to one client (see ServerWebSocket.offer).
    send_limit: int = 1024 * 1024
    #: Serve ``wss://``: TLS on every accepted connection (see :mod:`app.server.tls`).
    ssl_context: ssl.SSLContext | None = None
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
        handler: Handler | EventHandler,
        config: ServerConfig | None = None,
        *,
        gate: Gate | None = None,
    ) -> None:
        self.config = config or ServerConfig()
        #: a function, run for each client's whole life; or an EventHandler, told of its events
        self.handler = handler
        self.events: EventHandler | None = None if callable(handler) else handler
        self.gate = gate
        #: Every client, with its greenlet if it has one; ``join`` and ``kill`` as on a gevent ``Pool``.
        self.pool = ClientGreenlets(
            self._handle, self._serve, self.config.max_connections, self.config.max_connections_per_address
        )
        self.stream_server = _Acceptor(listener, self._handle, self.pool)
        #: Called with a reason for each connection refused: at accept ("capacity",
        #: "address_limit") or by the protocol ("bad_request", "timeout" …), not by the gate.
        self.on_refused: Callable[[str], None] | None = None
        self.stream_server.on_refused = self._refused

    def _refused(self, reason: str) -> None:
        if self.on_refused is not None:
            self.on_refused(reason)

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

    def _read_request(self, recv: Callable[[int], bytes]) -> tuple[Request, bytes] | Handshake | None:
        """The request head and the bytes after it, a rejection, or ``None`` on EOF."""
        reader = RequestReader()
        while True:
            data = recv(8192)
            if not data:
                return None
            try:
                request = reader.feed(data)
            except HandshakeRejected as error:
                return rejection(error)
            if request is not None:
                return request, reader.leftover

    def _handshake(self, sock: socket.socket, tls: TLSStream | None) -> tuple[Handshake, Request, bytes, Any] | None:
        recv, sendall = (tls.recv_wait, tls.sendall) if tls is not None else (sock.recv, sock.sendall)
        try:
            with gevent.Timeout(self.config.handshake_timeout):
                if tls is not None:
                    tls.handshake()
                result = self._read_request(recv)
        except gevent.Timeout:
            if tls is not None and not tls.handshaken:
                return None  # no TLS session to say anything in
            result = reject(HTTPStatus.REQUEST_TIMEOUT, "handshake not completed in time")
        if result is None:
            return None
        if isinstance(result, Handshake):
            sendall(result.response.serialize())
            self._refused(_refusal_reason(result))
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
        sendall(handshake.response.serialize())
        if not handshake.accepted:
            if handshake is not context:  # the gate speaks for its own refusals
                self._refused(_refusal_reason(handshake))
            return None
        return handshake, request, leftover, context

    def _handle(self, sock: socket.socket, address: tuple) -> ServerWebSocket | None:
        """A new client: the handshake, then its handler's whole life, or its ``opened`` event.

        Returns the connection to wait for input on (event-driven), or None:
        the connection is over.
        """
        ws = self._open(sock, address)
        if ws is None:
            _close_quietly(sock)
            return None
        events = self.events
        if events is None:
            self._run_handler(ws)
            return None
        try:
            events.opened(ws)
        except Exception:
            log.exception("opened() failed for %s", address)
            ws.close_soon(CloseCode.INTERNAL_ERROR, "internal error")
        return ws if self._serve(ws) else None

    def _run_handler(self, ws: ServerWebSocket) -> None:
        """A handler's client, in its greenlet for life (gevent's handler contract)."""
        handler: Handler = self.handler  # type: ignore[assignment]
        try:
            handler(ws)
        except ConnectionClosed:
            pass
        except Exception:
            log.exception("handler failed for %s", ws.address)
            ws.close(CloseCode.INTERNAL_ERROR, "internal error")
        finally:
            ws.close()

    def _serve(self, ws: ServerWebSocket) -> bool:
        """What an event-driven client sent meanwhile, to its ``received``; whether it is still open.

        Once it is over, ``closed`` is told and the transport closed; also
        when this greenlet is killed (the server's stop).
        """
        events = self.events
        assert events is not None
        try:
            if ws.serve_available(self._received):
                return True
        except BaseException:
            ws.protocol.receive_eof()
            self._closed(events, ws, *ws.close_status)
            raise
        # told first, as soon as the close handshake is done: the TCP close may wait for the peer
        self._closed(events, ws, *ws.close_status)
        ws.finish()
        return False

    def _received(self, ws: ServerWebSocket, message: Message) -> None:
        try:
            self.events.received(ws, message)  # type: ignore[union-attr]
        except ConnectionClosed:
            pass
        except Exception:
            log.exception("received() failed for %s", ws.address)
            ws.close_soon(CloseCode.INTERNAL_ERROR, "internal error")

    @staticmethod
    def _closed(events: EventHandler, ws: ServerWebSocket, code: int, reason: str) -> None:
        try:
            events.closed(ws, code, reason)
        except Exception:
            log.exception("closed() failed for %s", ws.address)

    def _open(self, sock: socket.socket, address: tuple) -> ServerWebSocket | None:
        """The handshake; the connection if it succeeded.

        A function of its own so that the handshake's objects (the request
        head, the response) are freed before the client's long life starts.
        """
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass  # not TCP (a Unix socket in tests)
        context = self.config.ssl_context
        tls = TLSStream(sock, context) if context is not None else None
        try:
            done = self._handshake(sock, tls)
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
            tls=tls,
        )
        ws.feed(leftover)
        return ws


class ClientGreenlets:
    """The clients, at most ``limit`` at once, each in a greenlet of its own while it has work.

    A connection is either *running* (its handshake, its handler, its
    messages, in a greenlet) or *parked* (event-driven and idle: no greenlet,
    its socket's read watcher waits for input, see
    :meth:`ServerWebSocket.park`). ``join`` and ``kill`` as on a gevent ``Pool``.

    Why bare greenlets, not a ``Pool``: a waiting greenlet keeps a copy of the
    C stack between where it started and where it waits (greenlet copies it
    to the heap). A gevent ``Greenlet`` starts under its compiled ``run()``,
    and ``StreamServer`` calls the handler as ``handle(*args)``, which enters
    the interpreter a second time: with the ``Greenlet`` object, about
    1.2 KiB more per waiting client than a bare greenlet whose ``run`` is
    :meth:`_work`, with one interpreter frame under the handler's Python code.

    Greenlets are reused: one whose connection is over or parked waits for
    the next (up to :data:`SPARE_GREENLETS` of them), since a new greenlet
    maps a fresh frame stack for Python and unmaps it when it ends, about
    8 µs: per message, for event-driven clients, were each woken in a new one.
    """

    __slots__ = ("_empty", "_open", "_parked", "_per_address", "_running", "_serve", "_spare", "limit", "per_address")

    def __init__(
        self,
        open_client: Callable[[socket.socket, Any], ServerWebSocket | None],
        serve: Callable[[ServerWebSocket], bool],
        limit: int,
        per_address: int = 0,
    ) -> None:
        #: ``open_client(sock, address)``: a new connection's life, or its start; the connection to park, or None
        self._open = open_client
        #: ``serve(ws)``: a parked connection's input; whether to park it again
        self._serve = serve
        self.limit = limit
        self.per_address = per_address
        self._running: set[greenlet] = set()
        self._parked: set[ServerWebSocket] = set()
        self._spare: list[greenlet] = []
        #: connections per remote host, kept only when ``per_address`` is set
        self._per_address: dict[str, int] = {}
        self._empty = Event()
        self._empty.set()

    def __len__(self) -> int:
        return len(self._running) + len(self._parked)

    @property
    def parked(self) -> int:
        """Connections waiting for input without a greenlet."""
        return len(self._parked)

    @property
    def running(self) -> int:
        """Connections being served by a greenlet now (handshakes, handlers, messages)."""
        return len(self._running)

    def full(self) -> bool:
        """Whether ``limit`` clients are being served (a new one is refused with 503)."""
        return len(self) >= self.limit

    def address_full(self, address: Any) -> bool:
        """Whether this client's host holds ``per_address`` connections already (429)."""
        return bool(self.per_address) and self._per_address.get(_host(address), 0) >= self.per_address

    def start(self, sock: socket.socket, address: Any) -> None:
        """Serve a new connection in a greenlet, now, until it first waits.

        Called from the hub (the accept callback), so the greenlet's parent
        is the hub, as with ``gevent.spawn``; starting it at once means a
        client is never scheduled but not yet running (nothing for
        :meth:`kill` to miss).
        """
        if self.per_address:
            host = _host(address)
            self._per_address[host] = self._per_address.get(host, 0) + 1
        self._empty.clear()
        self._run(sock, address, None)

    def _wake(self, ws: ServerWebSocket) -> None:
        """A parked connection is readable (the hub calls this): serve it in a greenlet."""
        ws.unpark()
        self._parked.discard(ws)
        self._run(ws.sock, ws.address, ws)

    def _run(self, sock: socket.socket, address: Any, ws: ServerWebSocket | None) -> None:
        if self._spare:
            worker = self._spare.pop()
            self._running.add(worker)
            worker.switch(sock, address, ws)
        else:
            worker = greenlet(self._work, gevent.get_hub())
            self._running.add(worker)
            worker.switch(self, sock, address, ws)

    @staticmethod
    def _work(clients: ClientGreenlets, sock: Any, address: Any, ws: ServerWebSocket | None) -> None:
        """A client greenlet's body: serve one connection until it is over or parked, then the next.

        A function, not a method: the greenlet keeps its ``run`` for life,
        and a bound method would be one more object. Plain positional calls
        only: ``f(*args)`` would enter the interpreter again, one C frame
        more under every waiting client.
        """
        me = getcurrent()
        hub = me.parent
        while True:
            idle = None
            try:
                idle = clients._open(sock, address) if ws is None else (ws if clients._serve(ws) else None)
            except Exception:
                log.exception("client greenlet failed for %s", address)
            finally:
                clients._running.discard(me)
                if idle is not None:
                    clients._parked.add(idle)
                    idle.park(clients._wake)
                else:
                    sock.close()
                    clients._ended(address)
            idle = ws = sock = address = None  # a spare greenlet holds no connection
            if len(clients._spare) >= SPARE_GREENLETS:
                return
            clients._spare.append(me)
            sock, address, ws = hub.switch()

    def _ended(self, address: Any) -> None:
        if self.per_address:
            host = _host(address)
            count = self._per_address.get(host, 0) - 1
            if count > 0:
                self._per_address[host] = count
            else:
                self._per_address.pop(host, None)
        if not self._running and not self._parked:
            self._empty.set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait at most ``timeout`` seconds for every connection to end; whether they did."""
        return self._empty.wait(timeout)

    def kill(self, block: bool = True, timeout: float | None = None) -> None:
        """End every connection, as ``Pool.kill``.

        A running greenlet gets ``GreenletExit`` (its ``finally`` runs, and an
        event-driven client's ``closed``); a parked connection is cut
        (shutdown), so that it wakes with end of stream and ends as any other.
        """
        hub = gevent.get_hub()
        for client in list(self._running):
            hub.loop.run_callback(_kill, client)
        for ws in list(self._parked):
            ws._abort()
        for spare in self._spare:
            hub.loop.run_callback(_kill, spare)
        self._spare = []
        if block:
            self.join(timeout)


#: Greenlets kept for the next connection or message once theirs is over or parked.
SPARE_GREENLETS = 64


def _kill(client: greenlet) -> None:
    """Throw ``GreenletExit`` into a client greenlet, from the hub, unless it has ended meanwhile."""
    if not client.dead:
        client.throw(gevent.GreenletExit)


class _Acceptor(AcceptorBase):
    """gevent's ``StreamServer`` accept loop, clients run by :class:`ClientGreenlets`.

    Over a limit, a connection is answered and closed right in the accept
    callback, before any per-client state exists: 503 when the server holds
    ``max_connections`` clients, 429 when the client's address holds
    ``max_connections_per_address``.

    Out of file descriptors (``EMFILE``, ``ENFILE``), accepting pauses and
    resumes after a growing delay (0.1 s doubling to 2 s); the clients already
    connected are served all along, and the condition is logged once until
    an accept succeeds again (gevent would print a traceback every time).
    """

    def __init__(
        self, listener: tuple[str, int] | socket.socket, handle: Callable[..., Any], clients: ClientGreenlets
    ) -> None:
        super().__init__(listener, handle)
        self.clients = clients
        self.on_refused: Callable[[str], None] | None = None
        self._starved = False
        self._starved_delay = STARVED_FIRST_DELAY
        self._resume_timer: Any = None
        #: refused connections until their sockets close
        self.refusals: set[_Refusal] = set()

    def accepting_paused(self) -> bool:
        """Never: over the limit, connections are refused with 503, not left in the backlog."""
        return False

    def accept_connection(self) -> tuple[socket.socket, Any] | None:
        try:
            accepted = super().accept_connection()
        except OSError as error:
            if error.errno not in (errno.EMFILE, errno.ENFILE):
                raise
            self._starve(error)
            return None
        if accepted is not None and self._starved:
            self._starved = False
            self._starved_delay = STARVED_FIRST_DELAY
            log.warning("accepting connections again: file descriptors are available")
        return accepted

    def _starve(self, error: OSError) -> None:
        if not self._starved:
            self._starved = True
            log.error(
                "out of file descriptors (%s): not accepting for now; the %d connected clients are served",
                error.strerror,
                len(self.clients),
            )
        self.stop_accepting()
        self._resume_timer = self.loop.timer(self._starved_delay)
        self._resume_timer.start(self._resume)
        self._starved_delay = min(STARVED_MAX_DELAY, self._starved_delay * 2)

    def _resume(self) -> None:
        self._resume_timer = None
        if self.started:
            self.start_accepting()

    def dispatch(self, sock: socket.socket, address: Any) -> None:
        if self.clients.full():
            self._refuse(sock, _OVER_CAPACITY, "capacity")
        elif self.clients.address_full(address):
            self._refuse(sock, _OVER_ADDRESS_LIMIT, "address_limit")
        else:
            self.clients.start(sock, address)

    def _refuse(self, sock: socket.socket, response: bytes, reason: str) -> None:
        """Answer and close from the hub, without a greenlet, a parser or a buffer of the client's.

        The answer goes out once the client's request has come (it is read
        and dropped: closing with unread input would reset the connection
        and could destroy the answer on its way), or after a short wait.
        """
        _Refusal(self, sock, response).start()
        if self.on_refused is not None:
            self.on_refused(reason)

    def close(self) -> None:
        if self._resume_timer is not None:
            self._resume_timer.stop()
            self._resume_timer = None
        super().close()


class _Refusal:
    """A connection refused over a limit: read its request, answer, half-close, drain, close."""

    __slots__ = ("acceptor", "raw", "reader", "response", "sock", "timer")

    def __init__(self, acceptor: _Acceptor, sock: socket.socket, response: bytes) -> None:
        self.acceptor = acceptor
        self.sock = sock
        self.raw: Any = raw_socket(sock)
        self.response = response
        self.reader = acceptor.loop.io(self.raw.fileno(), 1)
        self.timer = acceptor.loop.timer(REFUSED_WAIT)

    def start(self) -> None:
        self.acceptor.refusals.add(self)
        self.reader.start(self._answer)
        self.timer.start(self._answer)

    def _answer(self) -> None:
        self.reader.stop()
        self.timer.stop()
        self._drain()
        try:
            self.raw.send(self.response)  # a new socket's buffer takes this whole
            self.raw.shutdown(socket.SHUT_WR)
        except OSError:
            self._close()
            return
        self.timer = self.acceptor.loop.timer(REFUSED_LINGER)
        self.timer.start(self._close)

    def _drain(self) -> None:
        try:
            while self.raw.recv(65536):
                pass
        except OSError:
            pass

    def _close(self) -> None:
        self._drain()
        self.sock.close()
        self.acceptor.refusals.discard(self)


#: Seconds a refused connection may take to send its request before it is answered anyway.
REFUSED_WAIT = 1.0
#: Seconds a refused connection stays half-closed after the answer, its input dropped, before it closes.
REFUSED_LINGER = 0.25
#: Backoff while out of file descriptors, seconds.
STARVED_FIRST_DELAY, STARVED_MAX_DELAY = 0.1, 2.0
_OVER_CAPACITY = error_response(
    HTTPStatus.SERVICE_UNAVAILABLE, "too many connections, try again later", [("Retry-After", "5")]
).serialize()
_OVER_ADDRESS_LIMIT = error_response(
    HTTPStatus.TOO_MANY_REQUESTS, "too many connections from your address", [("Retry-After", "5")]
).serialize()


#: Why the protocol refused an opening handshake, by HTTP status, for ``on_refused``.
_REFUSAL_REASONS = {400: "bad_request", 408: "timeout", 426: "version", 431: "head_too_large"}


def _refusal_reason(handshake: Handshake) -> str:
    status = int(handshake.response.status)
    return _REFUSAL_REASONS.get(status, f"http_{status}")


def _host(address: Any) -> str:
    return str(address[0]) if isinstance(address, tuple) else str(address)


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
