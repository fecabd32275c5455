"""One accepted WebSocket connection, driven by a greenlet of its own while it has work.

:class:`ServerWebSocket` owns the socket and a sans-I/O
:class:`~app.ws.Connection`: it reads bytes into the protocol, hands the
handler whole messages, and writes frames. It is read either by a greenlet
that waits for each message (:meth:`ServerWebSocket.receive`, a handler's
loop) or, event-driven, by one that takes what the socket holds and lets the
connection wait with no greenlet (:meth:`ServerWebSocket.serve_available`,
:meth:`ServerWebSocket.park`).

Writing never lets one client hold up another. :meth:`offer` (used by a
broadcast, from any greenlet) only queues the frame and marks the connection
dirty; as soon as the broadcasting greenlet yields, one hub callback writes
each dirty connection's frames with a single non-blocking ``send``
(coalescing: a burst of messages costs one system call per client, and a
quiet room still gets each message at once, with TCP_NODELAY). What the
kernel does not take waits in a bounded buffer that a writer greenlet,
started only then, drains. A client whose buffer would pass ``send_limit``
bytes while the kernel is already full is closed with 1008. The handler's own
sends (:meth:`send_text`, …) wait instead: backpressure on the one client that
is being answered.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import gevent
from gevent.event import Event
from greenlet import getcurrent

from app import metrics
from app.compat import raw_socket, read_watcher
from app.ws import (
    BinaryMessage,
    CloseCode,
    Connection,
    ConnectionClosed,
    Pong,
    Request,
    State,
    TextMessage,
)
from app.ws import Event as ProtocolEvent

from .tls import TLSStream

__all__ = ["ServerWebSocket"]

Message = TextMessage | BinaryMessage
RECV_SIZE = 64 * 1024
_OPEN = State.OPEN


def _recv_nowait(raw: socket.socket | TLSStream) -> bytes | None:
    """What the non-blocking socket holds (``b""`` at its end or on an error), or ``None``: nothing yet.

    A function of its own so that the ``BlockingIOError`` of an idle socket
    is caught in a frame that is gone before the caller waits: a frame an
    exception passed through keeps a frame object (about 200 bytes) for as
    long as it runs, and the reader's runs for an idle client's whole life.
    """
    try:
        return raw.recv(RECV_SIZE)
    except BlockingIOError:
        return None
    except OSError:  # reset by the peer …: the end of the stream
        return b""


class _Coalescer:
    """Writes every dirty connection's queued frames once the running greenlet yields.

    A hub callback, not a greenlet: it runs on the next turn of the event loop
    and only makes non-blocking sends.
    """

    __slots__ = ("_dirty", "_scheduled")

    def __init__(self) -> None:
        self._dirty: list[ServerWebSocket] = []
        self._scheduled = False

    def add(self, ws: ServerWebSocket) -> None:
        self._dirty.append(ws)
        if not self._scheduled:
            self._scheduled = True
            gevent.get_hub().loop.run_callback(self._run)

    def _run(self) -> None:
        dirty, self._dirty = self._dirty, []
        self._scheduled = False
        for ws in dirty:
            ws._flush_queued()


_coalescer = _Coalescer()


class ServerWebSocket:
    """The handler's view of one client: receive messages, send, close."""

    __slots__ = (
        "_abort_timer",
        "_dirty",
        "_drained",
        "_emptied",
        "_inflight",
        "_pending",
        "_pending_bytes",
        "_queued",
        "_queued_bytes",
        "_raw",
        "_read_watcher",
        "_transport_closed",
        "_writer",
        "address",
        "bytes_in",
        "bytes_out",
        "close_timeout",
        "context",
        "encoding_key",
        "last_ping_at",
        "ping_sent_at",
        "protocol",
        "request",
        "rtt",
        "send_limit",
        "sock",
        "subprotocol",
    )

    def __init__(
        self,
        sock: socket.socket,
        address: Any,
        protocol: Connection,
        request: Request | None,
        *,
        subprotocol: str | None = None,
        close_timeout: float = 5.0,
        send_limit: int = 1024 * 1024,
        context: Any = None,
        tls: TLSStream | None = None,
    ) -> None:
        self.sock = sock
        self.address = address
        self.protocol = protocol
        #: Connections with equal keys are sent the same bytes for a message
        #: (see :meth:`frame_for`); fixed once the handshake is done.
        self.encoding_key = protocol.encoding_key
        #: The opening request, unless the server was told not to keep it.
        self.request = request
        self.subprotocol = subprotocol
        self.close_timeout = close_timeout
        self.send_limit = send_limit
        #: What the server's gate decided about the request (the client's identity).
        self.context = context
        # the raw non-blocking socket under gevent's: writes that must not switch, and reads;
        # or, for wss://, the TLS stream over it, with the same non-blocking contract
        self._raw = tls if tls is not None else raw_socket(sock)
        # gevent's read watcher of the socket, for _wait_readable
        self._read_watcher = read_watcher(sock)
        # the last read emptied the socket (see _read)
        self._emptied = False
        # frames offered since the last coalesced write, and whether one is scheduled;
        # the lists exist only while there is something in them (idle clients are many)
        self._queued: list[bytes] | None = None
        self._queued_bytes = 0
        self._dirty = False
        # bytes the kernel did not take, for the writer greenlet
        self._pending: list[bytes] | None = None
        self._pending_bytes = 0
        self._inflight = 0
        self._writer: gevent.Greenlet | None = None
        self._drained: Event | None = None
        self._abort_timer: gevent.Greenlet | None = None
        self._transport_closed = False
        self.bytes_in = 0
        self.bytes_out = 0
        #: keepalive: when the outstanding ping was sent, and the last round trip
        self.ping_sent_at: float | None = None
        self.last_ping_at = time.monotonic()
        self.rtt: float | None = None

    @property
    def closed(self) -> bool:
        """Whether the WebSocket connection is over (no more messages either way)."""
        return self.protocol.state is State.CLOSED

    @property
    def buffered(self) -> int:
        """Bytes accepted for sending and not yet handed to the kernel."""
        return self._queued_bytes + self._pending_bytes + self._inflight

    # -- receiving ---------------------------------------------------------

    def receive(self) -> Message:
        """The next whole message; raises :class:`ConnectionClosed` at the end."""
        protocol = self.protocol
        while True:
            event = self._next_event()
            if event is None:
                if protocol.state is State.CLOSED:
                    raise self._closed_error()
                self._read()
            elif isinstance(event, (TextMessage, BinaryMessage)):
                return event
            elif isinstance(event, Pong):
                self._pong(event.payload)

    def _next_event(self) -> ProtocolEvent | None:
        """The protocol's next event, once what it has to answer is on its way (a pong, a close frame)."""
        event = self.protocol.next_event()
        out = self.protocol.data_to_send()
        if out:
            self._write(out)
        return event

    def __iter__(self) -> Iterator[Message]:
        """Messages until the connection closes, normally or not."""
        while True:
            try:
                yield self.receive()
            except ConnectionClosed:
                return

    def feed(self, data: bytes) -> None:
        """Hand bytes already read (what followed the handshake) to the protocol."""
        self.bytes_in += len(data)
        self.protocol.receive_data(data)

    def _read(self) -> None:
        """Read what the peer sent into the protocol, waiting until something comes.

        A plain socket that gave less than was asked for is most likely empty
        now: the next read waits for it to be readable before asking, instead
        of asking once more for nothing (a system call per chat message).
        epoll is level-triggered, so had more come meanwhile the wait returns
        at once. Not so with TLS: the TLS stream may hold records it has
        decrypted past what one read returns.
        """
        data = None if self._emptied else _recv_nowait(self._raw)
        while data is None:
            try:
                self._wait_readable()
            except OSError:  # gevent's socket was closed by another greenlet (cancel_wait)
                data = b""
                break
            data = _recv_nowait(self._raw)
        self._emptied = len(data) < RECV_SIZE and not isinstance(self._raw, TLSStream)
        if data:
            self.bytes_in += len(data)
            self.protocol.receive_data(data)
        else:
            self.protocol.receive_eof()

    def _wait_readable(self) -> None:
        """Park this greenlet until the socket is readable, with as little beneath as possible.

        An idle client spends its life here, and greenlet keeps a heap copy
        of the C stack under the point where a greenlet waits. gevent's
        ``sock.recv`` waits through a chain of compiled calls
        (``wait_on_socket``, ``hub.wait``, a ``Waiter``), all of them in that
        copy: about 1 KiB more per idle client than this, which starts the
        socket's own read watcher with the greenlet's ``switch`` (what
        gevent's ``cancel_wait`` expects to find there) and switches to the
        hub directly. Exceptions thrown in (a timeout, a kill) stop the
        watcher on their way out.
        """
        watcher = self._read_watcher
        watcher.start(getcurrent().switch)
        try:
            gevent.get_hub().switch()
        finally:
            watcher.stop()

    # -- receiving without a greenlet of one's own (event-driven serving) ------

    def serve_available(self, received: Callable[[ServerWebSocket, Message], None]) -> bool:
        """Hand ``received`` every message the socket holds now, never waiting; whether input may follow.

        The event-driven counterpart of :meth:`receive`, for a server whose
        idle clients keep no greenlet (see :class:`app.server.server.EventHandler`):
        called when the socket is readable, it reads until the socket is
        empty, answers pings and close frames on the way, and returns
        ``True`` to be called again at the next input, ``False`` once the
        connection is over (:attr:`closed`). As :meth:`_read`, a plain socket
        that gave less than was asked for is taken as emptied, without a
        read that would only say so.
        """
        protocol = self.protocol
        raw = self._raw
        tls = isinstance(raw, TLSStream)
        emptied = False
        while True:
            event = self._next_event()
            if event is None:
                if protocol.state is State.CLOSED:
                    return False
                if emptied:
                    return True
                data = _recv_nowait(raw)
                if data is None:
                    return True
                if data:
                    self.bytes_in += len(data)
                    protocol.receive_data(data)
                    emptied = len(data) < RECV_SIZE and not tls
                else:
                    protocol.receive_eof()
            elif isinstance(event, (TextMessage, BinaryMessage)):
                received(self, event)
            elif isinstance(event, Pong):
                self._pong(event.payload)

    def park(self, wake: Callable[[ServerWebSocket], None]) -> None:
        """Wait for input with no greenlet: the hub calls ``wake(self)`` once the socket is readable.

        Uses the socket's own read watcher (nothing is allocated for an idle
        client but the watcher's argument tuple); :meth:`unpark` stops it,
        and must be called before the socket is closed.
        """
        self._read_watcher.start(wake, self)

    def unpark(self) -> None:
        """Stop waiting for input (see :meth:`park`)."""
        self._read_watcher.stop()

    @property
    def close_status(self) -> tuple[int, str]:
        """How the connection ended: the close code (1006 without one, RFC 6455 §7.1.5) and reason."""
        return int(self.protocol.close_code or CloseCode.ABNORMAL_CLOSURE), self.protocol.close_reason

    def finish(self) -> None:
        """Close TCP under a connection that :meth:`serve_available` said is over (flush, half-close, drain)."""
        self._close_transport()

    def _closed_error(self) -> ConnectionClosed:
        code = self.protocol.close_code or CloseCode.ABNORMAL_CLOSURE
        error = ConnectionClosed(code, self.protocol.close_reason)
        error.__cause__ = self.protocol.failure
        return error

    # -- keepalive ---------------------------------------------------------

    def keepalive(self, now: float, interval: float, timeout: float) -> None:
        """Ping every ``interval`` seconds; close with 1011 when a pong is ``timeout`` late."""
        if self.protocol.state is not State.OPEN:
            return
        if self.ping_sent_at is not None:
            if now - self.ping_sent_at >= timeout:
                self.close_soon(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
        elif now - self.last_ping_at >= interval:
            self.ping_sent_at = self.last_ping_at = now
            self.protocol.send_ping(b"%.6f" % now)
            self._write(self.protocol.data_to_send())

    def _pong(self, payload: bytes) -> None:
        if self.ping_sent_at is not None and payload == b"%.6f" % self.ping_sent_at:
            self.rtt = time.monotonic() - self.ping_sent_at
            self.ping_sent_at = None

    # -- sending -----------------------------------------------------------

    def send_text(self, text: str) -> None:
        """Send a text message, waiting while this client's buffer is full."""
        self._send(self._encoded(text.encode(), True))

    def send_binary(self, data: bytes) -> None:
        """Send a binary message, waiting while this client's buffer is full."""
        self._send(self._encoded(data, False))

    def send(self, message: str | bytes) -> None:
        """Send ``str`` as text and ``bytes`` as binary."""
        if isinstance(message, str):
            self.send_text(message)
        else:
            self.send_binary(message)

    def frame_for(self, payload: bytes, cache: dict[object, bytes]) -> bytes:
        """The text frame of ``payload`` for this connection, shared through ``cache``.

        Connections with the same :attr:`~app.ws.Connection.encoding_key`
        get the same bytes, so a broadcast frames and compresses once per key.
        """
        key = self.encoding_key
        frame = cache.get(key)
        if frame is None:
            frame = self.protocol.encode_message(payload)
            if key is None or key is not self.protocol.deflate:
                cache[key] = frame  # shareable (a context-keeping key is ours alone)
        return frame

    def offer(self, frame: bytes) -> bool:
        """Queue a frame without ever blocking; close with 1008 if the buffer overflows.

        Returns whether the frame was accepted.
        """
        if self.protocol.state is not _OPEN:
            return False
        if self._writer is not None and self.buffered + len(frame) > self.send_limit:
            # the kernel's buffer is full and ours would overflow: too slow
            metrics.SLOW_CONSUMER_CLOSES.inc()
            self.close_soon(CloseCode.POLICY_VIOLATION, "too slow: outgoing buffer full", drop_pending=True)
            return False
        queued = self._queued
        if queued is None:
            self._queued = [frame]
        else:
            queued.append(frame)
        self._queued_bytes += len(frame)
        if not self._dirty:
            self._dirty = True
            _coalescer.add(self)
        return True

    def _flush_queued(self) -> None:
        """Write what :meth:`offer` queued (from the coalescer's hub callback)."""
        self._dirty = False
        if self._queued:
            self._write(b"")

    def ping(self, payload: bytes = b"") -> None:
        """Send a ping."""
        self._ensure_open()
        self.protocol.send_ping(payload)
        self._write(self.protocol.data_to_send())

    def _encoded(self, payload: bytes, text: bool) -> bytes:
        self._ensure_open()
        return self.protocol.encode_message(payload, text=text)

    def _send(self, frame: bytes) -> None:
        self._write(frame)
        while self.buffered > self.send_limit and not self._transport_closed:
            if self._drained is None:
                self._drained = Event()
            self._drained.wait()
        if self._transport_closed and self.protocol.state is not State.OPEN:
            raise self._closed_error()

    def _ensure_open(self) -> None:
        if self.protocol.state is not State.OPEN:
            raise self._closed_error()

    def _write(self, data: bytes) -> None:
        """Write now if nothing is waiting, else queue for the writer greenlet.

        Frames queued by :meth:`offer` go first, so the stream keeps the
        order frames were accepted in (a close frame is always last).
        """
        queued = self._queued
        if queued:
            if data:
                queued.append(data)
            data = queued[0] if len(queued) == 1 else b"".join(queued)
            self._queued = None
            self._queued_bytes = 0
        if not data or self._transport_closed:
            return
        if self._writer is None:
            try:
                sent = self._raw.send(data)
            except BlockingIOError:
                sent = 0
            except OSError:
                self._broken()
                return
            self.bytes_out += sent
            if sent == len(data):
                if isinstance(self._raw, TLSStream) and self._raw.backlog:
                    self._writer = gevent.spawn(self._drain)  # ciphertext the kernel did not take
                return
            data = data[sent:]
            self._writer = gevent.spawn(self._drain)
        if self._pending is None:
            self._pending = [data]
        else:
            self._pending.append(data)
        self._pending_bytes += len(data)

    def _drain(self) -> None:
        """The writer greenlet: send everything waiting, coalesced, then end."""
        raw = self._raw
        tls = raw if isinstance(raw, TLSStream) else None
        try:
            while self._pending or (tls is not None and tls.backlog):
                pending = self._pending or [b""]
                chunk = b"".join(pending) if len(pending) > 1 else pending[0]
                self._pending = None
                self._pending_bytes = 0
                self._inflight = len(chunk)
                if tls is not None:
                    tls.sendall(chunk)
                else:
                    self.sock.sendall(chunk)
                self.bytes_out += len(chunk)
                self._inflight = 0
                if self._drained is not None and self.buffered <= self.send_limit:
                    self._drained.set()
                    self._drained = None
        except OSError:
            self._broken()
        finally:
            self._inflight = 0
            self._writer = None
            if self._drained is not None:
                self._drained.set()
                self._drained = None

    def _broken(self) -> None:
        """The socket failed while writing: the connection is over."""
        self._queued = None
        self._queued_bytes = 0
        self._pending = None
        self._pending_bytes = 0
        self.protocol.receive_eof()
        self._abort()

    # -- closing -----------------------------------------------------------

    def close_soon(self, code: int, reason: str, *, drop_pending: bool = False) -> None:
        """Start closing from any greenlet: send a close frame, abort if no answer in time.

        The client's own greenlet sees the close complete (or the abort) and
        ends. ``drop_pending`` discards what is still waiting to be sent (a
        frame the kernel took in part is kept, so the stream stays whole).
        """
        if self.protocol.state is not State.OPEN:
            return
        if drop_pending:
            self._queued = None
            self._queued_bytes = 0
            self._pending = None
            self._pending_bytes = 0
        self.protocol.send_close(code, reason)
        self._write(self.protocol.data_to_send())
        if self._abort_timer is None:
            self._abort_timer = gevent.spawn_later(self.close_timeout, self._abort)

    def close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Close from the client's own greenlet (RFC 6455 §7.1.1-2), then the TCP connection.

        Waits at most ``close_timeout`` for the peer's close frame; the
        server closes TCP first.
        """
        if self.protocol.state is State.OPEN:
            self.protocol.send_close(code, reason)
            self._write(self.protocol.data_to_send())
        with gevent.Timeout(self.close_timeout, False):
            while self.protocol.state is State.CLOSING and not self._transport_closed:
                if self.protocol.next_event() is None:
                    self._read()
        self._close_transport()

    def _close_transport(self) -> None:
        """Flush, half-close, let the peer's remaining bytes drain, then close.

        Closing a socket with unread input sends an RST that can destroy our
        close frame in flight, so the read side is drained first, briefly.
        """
        if self._abort_timer is not None:
            self._abort_timer.kill(block=False)
            self._abort_timer = None
        self._write(self.protocol.data_to_send())
        if not self._transport_closed:
            with gevent.Timeout(self.close_timeout, False):
                writer = self._writer
                if writer is not None:
                    writer.join()
        self._transport_closed = True
        self.protocol.receive_eof()
        try:
            if isinstance(self._raw, TLSStream):
                self._raw.close_notify()
            self.sock.shutdown(socket.SHUT_WR)
            with gevent.Timeout(self.close_timeout, False):
                while self.sock.recv(RECV_SIZE):
                    pass
        except OSError:
            pass
        finally:
            self.sock.close()

    def _abort(self) -> None:
        """Cut the connection: the blocked reader and writer wake up with EOF or an error.

        The kernel's socket is shut down, not gevent's: gevent's ``shutdown``
        would also throw into whatever waits on the socket's read watcher,
        and a parked connection (:meth:`park`) has no greenlet there, only
        the server's callback; the shutdown makes the socket readable, which
        wakes a parked connection and a waiting greenlet alike.
        """
        self._abort_timer = None
        self._transport_closed = True
        self._queued = None
        self._queued_bytes = 0
        self._pending = None
        self._pending_bytes = 0
        try:
            raw_socket(self.sock).shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
