"""What a :class:`~app.ws.connection.Connection` reports from the peer."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BinaryMessage", "CloseReceived", "Event", "Ping", "Pong", "TextMessage"]


@dataclass(frozen=True, slots=True)
class TextMessage:
    """A whole text message, reassembled, inflated and decoded."""

    data: str


@dataclass(frozen=True, slots=True)
class BinaryMessage:
    """A whole binary message, reassembled and inflated."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Ping:
    """A ping; the connection has already queued the pong (RFC 6455 §5.5.2)."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class Pong:
    """A pong, solicited or not (RFC 6455 §5.5.3)."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class CloseReceived:
    """The peer's close frame; ``code`` is 1005 when it carried none (§7.1.5)."""

    code: int
    reason: str


Event = TextMessage | BinaryMessage | Ping | Pong | CloseReceived
