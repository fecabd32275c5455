"""Room fan-out: where an event published to a room is delivered from.

The :class:`Broker` interface is what the chat service publishes to; the
embedded default, :class:`LocalBroker`, delivers in-process. A Redis broker
(several workers or hosts) implements the same two methods.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["Broker", "Deliver", "LocalBroker"]

#: Delivers one event to this process's members of ``room`` (every member
#: when ``room`` is None): ``deliver(room, event, exclude_conn)``.
Deliver = Callable[[str | None, dict[str, Any], str | None], None]


class Broker(Protocol):
    """Carries room events to every process that has members in the room."""

    def start(self, deliver: Deliver) -> None:
        """Begin delivering published events with ``deliver``."""

    def publish(self, room: str | None, event: dict[str, Any], exclude_conn: str | None = None) -> None:
        """Send ``event`` to the room's members (every member if ``room`` is None), except ``exclude_conn``."""

    def close(self) -> None:
        """Stop delivering."""


class LocalBroker:
    """One process: publishing is delivering."""

    def __init__(self) -> None:
        self._deliver: Deliver | None = None

    def start(self, deliver: Deliver) -> None:
        self._deliver = deliver

    def publish(self, room: str | None, event: dict[str, Any], exclude_conn: str | None = None) -> None:
        if self._deliver is not None:
            self._deliver(room, event, exclude_conn)

    def close(self) -> None:
        self._deliver = None
