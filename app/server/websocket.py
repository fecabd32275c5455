"""One accepted WebSocket connection, driven by its own greenlet.

:class:`ServerWebSocket` owns the socket and a sans-I/O
:class:`~app.ws.Connection`: it reads bytes into the protocol, writes what the
protocol queues (pongs, close frames), and hands the handler whole messages.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import gevent

from app.ws import (
    BinaryMessage,
    CloseCode,
    Connection,
    ConnectionClosed,
    InvalidState,
    Request,
    State,
    TextMessage,
)

__all__ = ["ServerWebSocket"]

Message = TextMessage | BinaryMessage
RECV_SIZE = 64 * 1024


class ServerWebSocket:
    """The handler's view of one client: receive messages, send, close."""

    def __init__(
        self,
        sock: socket.socket,
        address: tuple,
        protocol: Connection,
        request: Request,
        *,
        subprotocol: str | None = None,
        close_timeout: float = 5.0,
    ) -> None:
        self.sock = sock
        self.address = address
        self.protocol = protocol
        self.request = request
        self.subprotocol = subprotocol
        self.close_timeout = close_timeout
        self._transport_closed = False

    @property
    def closed(self) -> bool:
        """Whether the WebSocket connection is over (no more messages either way)."""
        return self.protocol.state is State.CLOSED

    # -- receiving ---------------------------------------------------------

    def receive(self) -> Message:
        """The next whole message; raises :class:`ConnectionClosed` at the end."""
        protocol = self.protocol
        while True:
            event = protocol.next_event()
            self._flush()  # a pong, or the close frame that answers or fails
            if event is None:
                if protocol.state is State.CLOSED:
                    raise self._closed_error()
                self._read()
            elif isinstance(event, (TextMessage, BinaryMessage)):
                return event

    def __iter__(self) -> Iterator[Message]:
        """Messages until the connection closes, normally or not."""
        while True:
            try:
                yield self.receive()
            except ConnectionClosed:
                return

    def feed(self, data: bytes) -> None:
        """Hand bytes already read from the socket (what followed the handshake) to the protocol."""
        self.protocol.receive_data(data)

    def _read(self) -> None:
        try:
            data = self.sock.recv(RECV_SIZE)
        except OSError:
            data = b""
        if data:
            self.protocol.receive_data(data)
        else:
            self.protocol.receive_eof()

    def _closed_error(self) -> ConnectionClosed:
        code = self.protocol.close_code or CloseCode.ABNORMAL_CLOSURE
        error = ConnectionClosed(code, self.protocol.close_reason)
        error.__cause__ = self.protocol.failure
        return error

    # -- sending -----------------------------------------------------------

    def send_text(self, text: str) -> None:
        """Send a text message (raises :class:`ConnectionClosed` if closed)."""
        self._ensure_open()
        self.protocol.send_text(text)
        self._flush()

    def send_binary(self, data: bytes) -> None:
        """Send a binary message (raises :class:`ConnectionClosed` if closed)."""
        self._ensure_open()
        self.protocol.send_binary(data)
        self._flush()

    def send(self, message: str | bytes) -> None:
        """Send ``str`` as text and ``bytes`` as binary."""
        if isinstance(message, str):
            self.send_text(message)
        else:
            self.send_binary(message)

    def ping(self, payload: bytes = b"") -> None:
        """Send a ping."""
        self._ensure_open()
        self.protocol.send_ping(payload)
        self._flush()

    def _ensure_open(self) -> None:
        if self.protocol.state is not State.OPEN:
            raise self._closed_error()

    def _flush(self) -> None:
        data = self.protocol.data_to_send()
        if data and not self._transport_closed:
            try:
                self.sock.sendall(data)
            except OSError:
                self.protocol.receive_eof()

    # -- closing -----------------------------------------------------------

    def close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Close the connection: the closing handshake, then TCP (RFC 6455 §7.1.1-2).

        Waits at most ``close_timeout`` for the peer's close frame and then
        for its end of TCP; the server closes TCP first.
        """
        if self.protocol.state is State.OPEN:
            try:
                self.protocol.send_close(code, reason)
            except InvalidState:  # pragma: no cover - state checked just above
                pass
            self._flush()
        with gevent.Timeout(self.close_timeout, False):
            while self.protocol.state is State.CLOSING:
                if self.protocol.next_event() is None:
                    self._read()
        self._close_transport()

    def _close_transport(self) -> None:
        """Flush, half-close, let the peer's remaining bytes drain, then close.

        Closing a socket with unread input sends an RST that can destroy our
        close frame in flight, so the read side is drained first, briefly.
        """
        if self._transport_closed:
            return
        self._flush()
        self._transport_closed = True
        self.protocol.receive_eof()
        try:
            self.sock.shutdown(socket.SHUT_WR)
            with gevent.Timeout(self.close_timeout, False):
                while self.sock.recv(RECV_SIZE):
                    pass
        except OSError:
            pass
        finally:
            self.sock.close()
