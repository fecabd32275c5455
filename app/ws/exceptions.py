"""The exceptions of the WebSocket core, in one tree.

.. code-block:: text

    WebSocketError                 root of everything raised here
    ├── ProtocolError              the peer broke RFC 6455/7692: fail with a close code
    │   ├── InvalidPayloadData     1007: text that is not UTF-8, undecodable deflate data
    │   └── MessageTooBig          1009: over the configured limit, before or after inflating
    ├── HandshakeRejected          the opening handshake cannot be accepted: an HTTP status
    ├── InvalidState               *our* bug: an action the connection's state forbids
    └── ConnectionClosed           raised by the I/O layer once the connection is over

A :class:`ProtocolError` carries the close code and a short reason that is safe to
send to the peer (never internal details); a :class:`HandshakeRejected` carries
the HTTP status and headers of the response that says why. The parser and the
handshake never let these escape to the I/O loop: they turn them into a close
frame or an HTTP response and keep the exception for the logs.
"""

from __future__ import annotations

from http import HTTPStatus

__all__ = [
    "ConnectionClosed",
    "HandshakeRejected",
    "InvalidPayloadData",
    "InvalidState",
    "MessageTooBig",
    "ProtocolError",
    "WebSocketError",
]


class WebSocketError(Exception):
    """Root of every exception of the WebSocket core."""


class ProtocolError(WebSocketError):
    """The peer violated the protocol; the connection fails with :attr:`code`.

    RFC 6455 §7.1.7 ("Fail the WebSocket Connection"): send a close frame with
    a status code, then close the TCP connection, and process nothing more.
    """

    code: int = 1002

    def __init__(self, reason: str, code: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        if code is not None:
            self.code = code


class InvalidPayloadData(ProtocolError):
    """Data inconsistent with the message type (RFC 6455 §7.4.1, 1007)."""

    code = 1007


class MessageTooBig(ProtocolError):
    """A message larger than this endpoint accepts (RFC 6455 §7.4.1, 1009).

    ``within`` is what a decompressed message held up to the limit, so that
    a defect there (invalid UTF-8) is reported first, as it would be had the
    message come in smaller pieces.
    """

    code = 1009

    def __init__(self, reason: str, code: int | None = None, *, within: bytes = b"") -> None:
        super().__init__(reason, code)
        self.within = within


class HandshakeRejected(WebSocketError):
    """The opening handshake is refused with an HTTP error response.

    ``status`` is the HTTP status; ``headers`` are extra response headers
    (``Sec-WebSocket-Version: 13`` on a 426, RFC 6455 §4.4).
    """

    def __init__(
        self,
        status: HTTPStatus,
        reason: str,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        super().__init__(f"{status.value} {status.phrase}: {reason}")
        self.status = status
        self.reason = reason
        self.headers = headers or []


class InvalidState(WebSocketError, AssertionError):
    """Our own code asked for something the connection's state forbids (a bug)."""


class ConnectionClosed(WebSocketError):
    """The connection is closed; ``code`` and ``reason`` say how it ended.

    Raised by the I/O layer (never by the sans-I/O core), with the cause
    chained when the connection failed.
    """

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"connection closed: {code} {reason}".rstrip())
        self.code = code
        self.reason = reason
