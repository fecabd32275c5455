"""What processes share: room fan-out, presence, the client registry, operator commands.

The chat service keeps the state of *its own* clients; the :class:`Broker`
is how it learns and tells what spans every process serving the chat. The
embedded default, :class:`LocalBroker`, is the whole cluster in one process:
publishing is delivering and presence is a counter. The Redis broker
(:mod:`app.chat.redis_broker`) implements the same interface for several
workers and hosts.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from .events import Outgoing

__all__ = ["Broker", "Command", "Deliver", "LocalBroker", "Presence"]

#: Delivers one event to this process's members of ``room`` (every client
#: when ``room`` is None): ``deliver(room, message, message_id, exclude_conn, epoch)``;
#: ``message_id`` and ``epoch`` are a chat message's position (app/chat/store.py),
#: None for other events.
Deliver = Callable[[str | None, Outgoing, int | None, str | None, str | None], None]

#: Runs an operator's command (``{"op": "kick" | "ban", ...}``) on this process's clients.
Command = Callable[[dict[str, Any]], None]


class Presence(Protocol):
    """The chat member as presence sees it."""

    conn_id: str
    nick: str
    session_id: str


class Broker(Protocol):
    """Carries room events and shared state to every process serving the chat."""

    #: This process's name among the others ("" when it is the only one);
    #: its connection ids start with it, so any process can tell where one is.
    node: str

    def start(self, deliver: Deliver, command: Command, resync: Callable[[], None]) -> None:
        """Begin delivering published events and commands.

        ``resync`` is called after the shared state was unreachable and is
        back: the service then catches up on what it may have missed.
        """

    def publish(
        self,
        room: str | None,
        message: Outgoing,
        *,
        message_id: int | None = None,
        exclude_conn: str | None = None,
        epoch: str | None = None,
    ) -> None:
        """Deliver ``message`` to the room's members everywhere (every client if ``room`` is None)."""

    def command(self, command: dict[str, Any]) -> None:
        """Run an operator's command on every *other* process (the caller runs it here)."""

    def close(self) -> None:
        """Stop delivering; forget this process's clients."""

    # -- presence and the client registry --------------------------------------

    def connected(self, member: Presence, describe: Callable[[], dict[str, Any]]) -> None:
        """A client connected here; ``describe`` gives its current view for the registry."""

    def disconnected(self, member: Presence) -> None:
        """A client of this process is gone."""

    def nick_taken(self, nick: str, session_id: str) -> bool:
        """Whether a client of another session holds ``nick`` anywhere."""

    def room_join(self, room: str, member: Presence) -> tuple[bool, list[str]]:
        """Record a member in a room: whether its nick is new there, and the room's nicks."""

    def room_leave(self, room: str, member: Presence) -> tuple[bool, int]:
        """Forget a member in a room: whether its nick has left, and how many nicks remain."""

    def room_counts(self, rooms: Iterable[str]) -> dict[str, int]:
        """The number of nicks in each room, across every process."""

    def remote_clients(self) -> list[dict[str, Any]]:
        """The clients of the *other* processes, as their registry entries."""

    def remote_connections(self, nick: str) -> int:
        """How many clients of other processes hold ``nick``."""

    def remote_client(self, conn_id: str) -> bool:
        """Whether another process has a connected client with this id."""

    def check(self) -> None:
        """Raise unless the broker can reach the other processes now."""


class LocalBroker:
    """One process is the whole cluster: publishing is delivering, presence is counting."""

    #: Connection ids of this process start with it ("" here: there is no other).
    node = ""

    def __init__(self) -> None:
        self._deliver: Deliver | None = None
        self._command: Command | None = None
        #: room -> connections per nick
        self._nicks: dict[str, Counter[str]] = {}
        #: nick -> connections per session id
        self._holders: dict[str, Counter[str]] = {}

    def start(self, deliver: Deliver, command: Command, resync: Callable[[], None]) -> None:
        self._deliver = deliver
        self._command = command

    def publish(
        self,
        room: str | None,
        message: Outgoing,
        *,
        message_id: int | None = None,
        exclude_conn: str | None = None,
        epoch: str | None = None,
    ) -> None:
        if self._deliver is not None:
            self._deliver(room, message, message_id, exclude_conn, epoch)

    def command(self, command: dict[str, Any]) -> None:
        pass  # there is no other process

    def close(self) -> None:
        self._deliver = self._command = None

    def connected(self, member: Presence, describe: Callable[[], dict[str, Any]]) -> None:
        self._holders.setdefault(member.nick, Counter())[member.session_id] += 1

    def disconnected(self, member: Presence) -> None:
        sessions = self._holders.get(member.nick)
        if sessions is None:
            return
        sessions[member.session_id] -= 1
        if sessions[member.session_id] <= 0:
            del sessions[member.session_id]
            if not sessions:
                del self._holders[member.nick]

    def nick_taken(self, nick: str, session_id: str) -> bool:
        return any(sid != session_id for sid in self._holders.get(nick, ()))

    def room_join(self, room: str, member: Presence) -> tuple[bool, list[str]]:
        nicks = self._nicks.setdefault(room, Counter())
        nicks[member.nick] += 1
        return nicks[member.nick] == 1, sorted(nicks)

    def room_leave(self, room: str, member: Presence) -> tuple[bool, int]:
        nicks = self._nicks.get(room)
        if nicks is None or member.nick not in nicks:
            return False, len(nicks or ())
        nicks[member.nick] -= 1
        gone = nicks[member.nick] <= 0
        if gone:
            del nicks[member.nick]
            if not nicks:
                del self._nicks[room]
        return gone, len(nicks)

    def room_counts(self, rooms: Iterable[str]) -> dict[str, int]:
        return {room: len(self._nicks.get(room, ())) for room in rooms}

    def remote_clients(self) -> list[dict[str, Any]]:
        return []

    def remote_connections(self, nick: str) -> int:
        return 0

    def remote_client(self, conn_id: str) -> bool:
        return False

    def check(self) -> None:
        pass  # nothing to reach
