"""Room state in one place: who is in which room, and who is still joining.

Only :class:`~app.chat.service.ChatService` changes it; readers (the web app,
the admin page) get copies through the service.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Protocol

from .protocol import Outgoing

__all__ = ["Member", "Room", "Rooms"]


class Member(Protocol):
    """A connected client, as the chat domain sees it (the transport implements it)."""

    conn_id: str
    nick: str
    session_id: str

    def send(self, message: Outgoing) -> None:
        """Queue ``message`` for the client; never blocks and never changes room state."""

    def close(self, code: int, reason: str) -> None:
        """Ask the transport to close the connection (it disconnects later)."""

    def describe(self) -> dict[str, Any]:
        """The transport's view of the connection (address, counters …), for operators."""


class Room:
    """A room's live members, keyed by connection id."""

    __slots__ = ("joining", "members", "name", "nicks")

    def __init__(self, name: str) -> None:
        self.name = name
        self.members: dict[str, Member] = {}
        #: connection id -> the events delivered while its join reads history
        self.joining: dict[str, list[dict[str, Any]]] = {}
        #: connections per nick (a session may have several tabs)
        self.nicks: Counter[str] = Counter()

    @property
    def count(self) -> int:
        """The number of nicks in the room."""
        return len(self.nicks)

    def add(self, member: Member) -> bool:
        """Add a member; whether its nick is new to the room."""
        self.members[member.conn_id] = member
        self.nicks[member.nick] += 1
        return self.nicks[member.nick] == 1

    def remove(self, member: Member) -> bool:
        """Remove a member; whether its nick has left the room."""
        if self.members.pop(member.conn_id, None) is None:
            return False
        self.nicks[member.nick] -= 1
        if self.nicks[member.nick] <= 0:
            del self.nicks[member.nick]
            return True
        return False


class Rooms(dict[str, Room]):
    """The rooms with live members (or members joining), by name."""

    def get_or_create(self, name: str) -> Room:
        room = self.get(name)
        if room is None:
            room = self[name] = Room(name)
        return room

    def discard_if_empty(self, name: str) -> None:
        room = self.get(name)
        if room is not None and not room.members and not room.joining:
            del self[name]
