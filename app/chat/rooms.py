"""Room state in one place: who is in which room, who is still joining, and what each is sent.

Theory of operation
-------------------
A client of this process is a :class:`Client`: its transport (a
:class:`Member`), the rooms it is in, and whether it is gone. A room's
side is a :class:`Room`. Only the room changes its own state, through the
transitions below; :class:`~app.chat.service.ChatService` orchestrates them
(it reads history and asks the broker in between, which both yield to other
greenlets) and never edits a room's fields.

For one client in one room::

    (absent) --begin_join--> JOINING --finish_join--> JOINED --remove--> (absent)
                                |
                                +--abort_join--> (absent)   the read failed, or the client is gone

- JOINING: the history is being read. Every event delivered to the room
  meanwhile is kept for the joiner (:class:`Kept`), so nothing sent during
  the read is lost.
- ``finish_join`` sends ``joined`` (which carries the read), then the kept
  events that come after the position the read reached: no gap, no
  duplicate. If the read was ahead of this process's delivery (another
  process stored messages that are still on their way here, or the store
  restarted under an epoch not seen here yet), the member gets a *floor*:
  the messages up to that position skip it when they arrive.
- ``deliver`` hands one event to every member (the same :class:`Outgoing`,
  encoded once), past the floors, and keeps it for the joiners.

A position is an epoch and an id (:mod:`app.chat.store`). A message of an
epoch other than the room's means the store restarted its ids: the room
sends its members ``reset`` first, and its position starts over
(:meth:`Room.restart`).
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple, Protocol

from . import events
from .events import Outgoing

__all__ = ["Client", "Kept", "Member", "Room", "Rooms"]

log = logging.getLogger(__name__)


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


class Client:
    """A client of this process: its transport, the rooms it is in, and whether it is gone.

    ``gone`` is set once, when it disconnects: a join still reading history
    or waiting for the broker sees it and undoes itself.
    """

    __slots__ = ("gone", "member", "rooms")

    def __init__(self, member: Member) -> None:
        self.member = member
        self.rooms: set[str] = set()
        self.gone = False


class Kept(NamedTuple):
    """An event delivered to a room while a member's join was reading its history."""

    message: Outgoing
    #: A chat message's position (None for other events), or for a restart the new epoch.
    message_id: int | None = None
    epoch: str | None = None
    #: The ``reset`` event: the room's ids restarted under ``epoch``.
    restart: bool = False


class Room:
    """One room's members on this process, its joiners, and the position of its delivery.

    Presence (which nicks are in the room, on every process) is the broker's;
    this is who this process delivers the room's events to.
    """

    __slots__ = ("_epoch", "_floors", "_joining", "_last_id", "_members", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self._members: dict[str, Member] = {}
        #: connection id -> the events delivered while its join reads history
        self._joining: dict[str, list[Kept]] = {}
        #: the position of the last message delivered here: its epoch ("" while
        #: unknown: none delivered, none read) and id
        self._epoch = ""
        self._last_id = 0
        #: connection id -> the position (epoch, id) its join's history reached,
        #: when that is ahead of the room's; those messages must not reach it twice
        self._floors: dict[str, tuple[str, int]] = {}

    # -- reading ----------------------------------------------------------------

    @property
    def epoch(self) -> str:
        return self._epoch

    @property
    def last_id(self) -> int:
        """The id of the last message delivered here (0 if none, or since a restart)."""
        return self._last_id

    @property
    def has_members(self) -> bool:
        return bool(self._members)

    @property
    def empty(self) -> bool:
        """No member and no joiner: the room can be forgotten."""
        return not self._members and not self._joining

    # -- joining ----------------------------------------------------------------

    def begin_join(self, conn_id: str) -> None:
        """JOINING: from now on, what is delivered here is kept for ``conn_id``."""
        self._joining[conn_id] = []

    def abort_join(self, conn_id: str) -> None:
        """JOINING -> absent: the read failed, or the client is gone."""
        self._joining.pop(conn_id, None)

    def finish_join(self, member: Member, joined: Outgoing, epoch: str, last_id: int) -> None:
        """JOINING -> JOINED: send ``joined`` (its history read up to ``(epoch, last_id)``), then what came since."""
        kept = self._joining.pop(member.conn_id)
        if not self._epoch:
            self._epoch = epoch
        restarted = any(entry.restart for entry in kept)
        if (epoch == self._epoch and last_id > self._last_id) or (epoch != self._epoch and not restarted):
            # The read saw messages this process has not delivered yet (another
            # process stored them), or a newer epoch: they are on their way, and
            # must skip this member.
            self._floors[member.conn_id] = (epoch, last_id)
        self._members[member.conn_id] = member
        member.send(joined)
        for entry in kept:  # what was delivered meanwhile, past the position ``joined`` left it at
            if entry.restart:
                if entry.epoch != epoch:  # else its history was read under the new epoch already
                    member.send(entry.message)
                    epoch, last_id = entry.epoch or "", 0
            elif entry.message_id is None:
                member.send(entry.message)
            else:
                epoch = epoch or entry.epoch or ""  # the room's first epoch, unknown when read
                if (entry.epoch or epoch) == epoch and entry.message_id > last_id:
                    member.send(entry.message)
                    last_id = entry.message_id

    # -- leaving ----------------------------------------------------------------

    def remove(self, conn_id: str) -> bool:
        """JOINED -> absent; whether it was a member."""
        self._floors.pop(conn_id, None)
        return self._members.pop(conn_id, None) is not None

    # -- delivery ---------------------------------------------------------------

    def deliver(
        self,
        message: Outgoing,
        message_id: int | None = None,
        exclude_conn: str | None = None,
        epoch: str | None = None,
    ) -> None:
        """Hand one event to every member (a chat message once, in position order): the same bytes to all."""
        if message_id is not None:
            if epoch and epoch != self._epoch:
                if self._epoch:
                    self.restart(epoch)
                self._epoch = epoch
            if message_id <= self._last_id:
                return  # delivered already (a catch-up after an outage overlaps the live stream)
            self._last_id = message_id
            if self._floors:
                self._deliver_past_floors(message, message_id)
                return
        for conn_id, member in self._members.items():
            if conn_id != exclude_conn:
                member.send(message)
        if self._joining:
            entry = Kept(message, message_id, self._epoch if message_id is not None else None)
            for kept in self._joining.values():
                kept.append(entry)

    def _deliver_past_floors(self, message: Outgoing, message_id: int) -> None:
        """Deliver a message to the members whose join's history did not hold it already."""
        epoch = self._epoch
        for conn_id, member in self._members.items():
            floor = self._floors.get(conn_id)
            if floor is None or (floor[0] == epoch and message_id > floor[1]):
                member.send(message)
        self._floors = {
            conn: floor for conn, floor in self._floors.items() if floor[0] != epoch or floor[1] > message_id
        }
        entry = Kept(message, message_id, epoch)
        for kept in self._joining.values():
            kept.append(entry)

    def restart(self, epoch: str) -> None:
        """The room's ids start again under ``epoch``: its members reset their position first."""
        log.warning("room %s: its history restarted (epoch %s); members told to reset", self.name, epoch)
        self._epoch, self._last_id = epoch, 0
        reset = events.reset(self.name, epoch)
        for conn_id, member in self._members.items():
            floor = self._floors.get(conn_id)
            if floor is None or floor[0] != epoch:  # else its join read the new epoch already
                member.send(reset)
        self._floors = {conn: floor for conn, floor in self._floors.items() if floor[0] == epoch}
        entry = Kept(reset, None, epoch, restart=True)
        for kept in self._joining.values():
            kept.append(entry)


class Rooms(dict[str, Room]):
    """The rooms with live members (or members joining), by name."""

    def get_or_create(self, name: str) -> Room:
        room = self.get(name)
        if room is None:
            room = self[name] = Room(name)
        return room

    def discard_if_empty(self, name: str) -> None:
        room = self.get(name)
        if room is not None and room.empty:
            del self[name]
