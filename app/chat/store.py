"""The history store: its interface, and the types every implementation shares.

Two implementations: :class:`~app.chat.sqlite_history.SQLiteHistory` (embedded, one
process) and :class:`~app.chat.redis_history.RedisHistory` (Redis Streams,
shared by every process). Both give each room's messages ids 1, 2, 3 … and
acknowledge a message (``on_stored``) only once it is durable.

A position in a room is its *epoch* and an id. The epoch names one run of
the room's ids: when the store loses its data (a Redis restarted without
persistence, a database file replaced) ids start again at 1 under a new
epoch, so nobody mistakes the new message 3 for the old one (as Centrifugo's
``{offset, epoch}`` stream positions).

Edits, deletions and reactions are *amendments*: the original message is
rewritten in place (so no read ever returns its old text) and an amendment
entry is appended to the room under the next id (so a client catching up
with ``since`` sees it), both in one transaction or script. Who may amend,
and what the new ``meta`` is, is the service's policy: the stores only
compare-and-set the original's ``meta`` (:class:`Conflict`).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable
from typing import NamedTuple, Protocol

from .protocol import ChatError, Ref

__all__ = [
    "ONCE_SECONDS",
    "Conflict",
    "Duplicate",
    "History",
    "HistoryError",
    "HistoryUnavailable",
    "OnStored",
    "RecentSends",
    "Replay",
    "StoredMessage",
    "new_epoch",
    "not_stored",
]

#: Seconds within which a ``say`` sent again with the same ``ref`` (a retry) is not stored again.
ONCE_SECONDS = 300


class StoredMessage(NamedTuple):
    """A chat message, or an amendment of one, as committed to the history.

    A tuple, as SQLite reads and writes rows: a replay of 1000 messages makes
    1000 of these, and a frozen dataclass's ``__init__`` cost 3 times as much.

    An *original* (``kind`` None) is a chat message (its event:
    :func:`app.chat.events.message`); reads return it in its current version,
    rewritten by the amendments made to it since. An *amendment entry*
    (``kind`` "edit", "delete" or "react") takes the room's next id like a
    message, so that clients catching up with ``since`` see it (its event:
    :func:`app.chat.events.update`); ``target`` is the original's id.
    """

    room: str
    #: Increases by 1 within the room, starting at 1 (within an epoch).
    id: int
    nick: str
    text: str
    #: Milliseconds since the epoch, given by the sender's side.
    ts: int
    #: The sender's correlation id, kept so a reconnecting client can match its sends.
    ref: Ref | None = None
    #: Who sent it: a session id (``account:bob``, a guest's); decides "own message", never sent to clients.
    author: str | None = None
    #: None for a chat message; "edit", "delete" or "react" for an amendment entry.
    kind: str | None = None
    #: An amendment entry's original message id.
    target: int | None = None
    #: Opaque JSON text, the service's business: an original's lifecycle state
    #: (``{"edited":ts,"reactions":{..}}``), rewritten by amendments; an amendment entry's details.
    meta: str | None = None


class Replay(NamedTuple):
    """What a join reads, at one point of a room's history."""

    #: The room's epoch: ids count from 1 again under another one.
    epoch: str
    #: The room's last id then.
    last_id: int
    #: The newest ``limit`` messages (after ``since`` if given), oldest first.
    messages: list[StoredMessage]


def new_epoch() -> str:
    """A fresh epoch name: 8 random bytes, hex (a collision is a 1 in 2**64 chance)."""
    return secrets.token_hex(8)


class Duplicate(NamedTuple):
    """A retried message: stored once already, as ``message``; nothing was stored this time."""

    message: StoredMessage


class HistoryError(Exception):
    """Storing or reading failed (disk full, database locked, Redis refused ...); nothing was acknowledged."""


#: Called once the message is durable, with it; with the original if it was a retry; or with why not.
OnStored = Callable[[StoredMessage | Duplicate | HistoryError], None]


#: The (shared, never appended to) waiters of a send nobody retried yet: no list made per message.
_NO_WAITERS: list[OnStored] = []


class RecentSends:
    """The messages sent with a ``ref`` in the last :data:`ONCE_SECONDS`, by (room, nick, ref).

    So that retries are not stored twice.
    For a store in one process (the embedded SQLite history). A retry of a
    message still being committed waits for it, and gets what it gets: the
    stored original, or the same error.
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        #: key -> (when it is forgotten, the original once stored, the retries waiting for it)
        self._entries: dict[tuple[str, str, Ref], tuple[float, StoredMessage | None, list[OnStored]]] = {}
        self._next_sweep = 0.0

    def claim(self, key: tuple[str, str, Ref], on_stored: OnStored) -> bool:
        """True: the first send of ``key`` (store it, then :meth:`settle`).

        False: a retry, answered through ``on_stored`` (now, or once the first is stored).
        """
        entry = self._entries.get(key)
        now = self._clock()
        if entry is None or entry[0] <= now:
            if now >= self._next_sweep:
                self._entries = {k: entry for k, entry in self._entries.items() if entry[0] > now}
                self._next_sweep = now + 10.0
            self._entries[key] = (now + ONCE_SECONDS, None, _NO_WAITERS)
            return True
        if entry[1] is not None:
            on_stored(Duplicate(entry[1]))
        elif entry[2] is _NO_WAITERS:
            self._entries[key] = (entry[0], None, [on_stored])
        else:
            entry[2].append(on_stored)
        return False

    def known(self, key: tuple[str, str, Ref]) -> bool:
        """Whether ``key`` was sent (stored, or being stored) in the last :data:`ONCE_SECONDS`."""
        entry = self._entries.get(key)
        return entry is not None and entry[0] > self._clock()

    def settle(self, key: tuple[str, str, Ref], result: StoredMessage | HistoryError) -> None:
        """The first send of ``key`` is stored (or failed): answer the retries that waited."""
        entry = self._entries.get(key)
        if entry is None:
            return
        if isinstance(result, StoredMessage):
            self._entries[key] = (entry[0], result, _NO_WAITERS)
            for waiting in entry[2]:
                waiting(Duplicate(result))
        else:
            del self._entries[key]  # not stored: a retry may try again
            for waiting in entry[2]:
                waiting(result)

    def remember(self, message: StoredMessage, ts_seconds: float) -> None:
        """A message stored before this process started (read back at open), sent at ``ts_seconds``."""
        if message.ref is not None:
            self._entries[(message.room, message.nick, message.ref)] = (ts_seconds + ONCE_SECONDS, message, _NO_WAITERS)


class HistoryUnavailable(HistoryError):
    """The shared store cannot be reached (Redis is down): nothing was stored; try again later."""


class Conflict(HistoryError):
    """An amendment's target changed since it was read (its meta is not the expected one), or is no original.

    Nothing was stored. The service reads the target again and decides anew
    (compare-and-set: the policy is the service's, the store only refuses to
    write over a version the service has not seen). A target that does not
    exist, or is itself an amendment entry, is reported the same way.
    """


class History(Protocol):
    """Durable, ordered message history of every room."""

    #: True when storing a message also delivers it to every process (the
    #: Redis script appends and publishes in one step, which is what keeps
    #: every process's delivery in id order); the service then must not
    #: publish it again.
    publishes: bool

    def open(self) -> None: ...

    def close(self) -> None: ...

    def submit(
        self,
        room: str,
        nick: str,
        text: str,
        ts: int,
        ref: Ref | None,
        on_stored: OnStored,
        *,
        once: bool = False,
        author: str | None = None,
    ) -> object:
        """Queue a message; ``on_stored`` gets the :class:`StoredMessage` once durable, or a :class:`HistoryError`.

        With ``once`` (and a ``ref``), a message of the same room, nick and
        ref within :data:`ONCE_SECONDS` is a retry: nothing is stored, and
        ``on_stored`` gets the original as a :class:`Duplicate`. ``author``
        (the sender's session id) is stored with it.
        """

    def amend(
        self, target: StoredMessage, expected_meta: str | None, entry: StoredMessage, on_stored: OnStored
    ) -> object:
        """Rewrite an original and append its amendment entry, both or neither; queued like a message.

        ``target`` is the original's new version: as stored, but for its new
        ``text`` and ``meta``. ``expected_meta`` is the meta the service read:
        if the stored original's differs, or it does not exist (or is no
        original), nothing is written and ``on_stored`` gets a
        :class:`Conflict`. ``entry`` is the amendment entry (``kind``,
        ``target``, ``meta``, ``nick`` and ``author`` the actor's, ``text``
        the new text of an edit, else ""); its ``id`` is ignored: it gets the
        room's next id, in order with the messages. ``on_stored`` gets the
        entry as stored once durable, after which reads return the rewritten
        original; or a :class:`HistoryError`.
        """

    def get(self, room: str, ids: Iterable[int]) -> dict[int, StoredMessage]:
        """The current version of these acknowledged ids of the room; ids not stored (or no longer) are absent.

        For the targets of amendment entries outside a replay's window.
        """

    def flush(self) -> None: ...

    def sent(self, room: str, nick: str, ref: Ref) -> bool:
        """Whether a message of ``nick`` with ``ref`` was sent to ``room`` (once) in the last :data:`ONCE_SECONDS`.

        A send again is a retry, which the store answers with the original:
        slow mode must not refuse it.
        """

    def recent(self, room: str, limit: int = 50) -> list[StoredMessage]:
        """The last ``limit`` entries, oldest first: originals in their current version, amendment entries."""

    def since(self, room: str, after_id: int, limit: int = 1000) -> list[StoredMessage]: ...

    def last_id(self, room: str) -> int: ...

    def epoch(self, room: str) -> str:
        """The room's epoch: its ids count from 1 again under another one."""

    def replay(self, room: str, since: int | None, limit: int) -> Replay:
        """The newest ``limit`` messages (after ``since`` if given) and the position they were read at, at once."""

    def room_names(self) -> list[str]: ...

    def check(self) -> None:
        """Raise :class:`HistoryError` unless the store answers now (a read round trip)."""


def not_stored(error: HistoryError, ref: Ref | None, message: str = "message not stored") -> ChatError:
    """The client's error for a failed store: ``degraded`` while the shared store is unreachable."""
    if isinstance(error, HistoryUnavailable):
        return ChatError("degraded", f"{message}: the chat's shared store is unreachable, try again shortly", ref)
    return ChatError("unavailable", message, ref)
