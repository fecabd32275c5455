"""Room state in one place: who is in which room, and who is still joining.

Only :class:`~app.chat.service.ChatService` changes it; readers (the web app,
the admin page) get copies through the service.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

from .protocol import Outgoing

__all__ = ["Kept", "Member", "Room", "Rooms"]


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


class Kept(NamedTuple):
    """An event delivered to a room while a member's join was reading its history."""

    message: Outgoing
    #: A chat message's position (None for other events), or for a restart the new epoch.
    message_id: int | None = None
    epoch: str | None = None
    #: The ``reset`` event: the room's ids restarted under ``epoch``.
    restart: bool = False


class Room:
    """A room's live members on this process, keyed by connection id.

    Presence (which nicks are in the room, on every process) is the broker's;
    this is who this process delivers the room's events to.
    """

    __slots__ = ("epoch", "floors", "joining", "last_id", "members", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self.members: dict[str, Member] = {}
        #: connection id -> the events delivered while its join reads history
        self.joining: dict[str, list[Kept]] = {}
        #: the position of the last message delivered here: its epoch ("" while
        #: unknown: none delivered, none read) and id
        self.epoch = ""
        self.last_id = 0
        #: connection id -> the position (epoch, id) its join's history reached,
        #: when that is ahead of the room's (the read saw messages still on their
        #: way here, or a newer epoch); those must not reach it twice
        self.floors: dict[str, tuple[str, int]] = {}

    def add(self, member: Member) -> None:
        self.members[member.conn_id] = member

    def remove(self, member: Member) -> bool:
        """Remove a member; whether it was one."""
        self.floors.pop(member.conn_id, None)
        return self.members.pop(member.conn_id, None) is not None


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
