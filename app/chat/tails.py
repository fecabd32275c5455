"""The history's memory: the last acknowledged messages of recently used rooms, so most reads need no database.

A room's *tail* is its newest acknowledged messages, up to ``size`` of them,
in id order and without gaps (ids within a room have none), each in its
current version. It is enough to answer a ``since`` of up to ``size``
messages (a client coming back after a reconnect) and the last 50 of a join
without a trip to the database. A tail is started by a read that reached the
room's last acknowledged message (or by a new room's first message), then
grows with every message acknowledged; an acknowledged amendment replaces
its original in place, so no read from memory ever shows an old version.

Memory is bounded twice: ``rooms`` tails at most, and about ``budget`` bytes
of them in all (a message is counted as its text and meta plus
:data:`MESSAGE_OVERHEAD`); past either, the least recently used rooms are
dropped whole. A dropped room is read from the database again, and its tail
starts over from that read.

No I/O: the store (:class:`~app.chat.sqlite_history.SQLiteHistory`) decides
what is acknowledged and when a read may be kept; this only remembers.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from itertools import islice

from .roomlru import RoomLRU
from .store import StoredMessage

__all__ = ["MESSAGE_OVERHEAD", "TailCache"]

#: Bytes a cached message costs besides its text and meta: the tuple, its other fields, the deque's slot.
MESSAGE_OVERHEAD = 300


def _cost(message: StoredMessage) -> int:
    return MESSAGE_OVERHEAD + len(message.text) + (len(message.meta) if message.meta else 0)


class _Tail:
    __slots__ = ("bytes", "messages")

    def __init__(self, messages: deque[StoredMessage]) -> None:
        self.messages = messages
        self.bytes = sum(map(_cost, messages))


class TailCache:
    """Each recently used room's last ``size`` acknowledged messages; see the module docstring."""

    def __init__(self, size: int, rooms: int, budget: int) -> None:
        if size < 1 or rooms < 1 or budget < 1:
            raise ValueError("size, rooms and budget must be at least 1")
        self.size = size
        self._tails: RoomLRU[_Tail] = RoomLRU(rooms, budget)

    @property
    def rooms(self) -> int:
        return self._tails.rooms

    @property
    def budget(self) -> int:
        return self._tails.budget

    @property
    def used_bytes(self) -> int:
        """The cached messages' estimated size, in bytes: at most about ``budget``."""
        return self._tails.used_bytes

    def __contains__(self, room: object) -> bool:
        return room in self._tails

    def __len__(self) -> int:
        return len(self._tails)

    # -- what the store tells it -------------------------------------------------

    def start(self, room: str, messages: list[StoredMessage]) -> None:
        """``messages`` (oldest first, contiguous) end at the room's last acknowledged one: they are its tail."""
        if messages:
            self._tails.put(room, _Tail(deque(messages[-self.size :], maxlen=self.size)))

    def append(self, message: StoredMessage) -> None:
        """``message`` was acknowledged, the next of its room: a cached tail gets it (the oldest may go)."""
        tail = self._tails.get(message.room)
        if tail is None:
            return
        messages = tail.messages
        added = _cost(message)
        if len(messages) == self.size:
            added -= _cost(messages[0])  # the deque drops it
        messages.append(message)
        self._tails.resized(tail, added)
        if added > 0:
            self._tails.shrink()

    def rewrite(self, original: StoredMessage) -> None:
        """An amendment was acknowledged: ``original``'s new version replaces the cached one, if cached."""
        tail = self._tails.get(original.room)
        if tail is None:
            return
        messages = tail.messages
        index = original.id - messages[0].id  # contiguous: the index is the id's distance from the first
        if 0 <= index < len(messages):
            change = _cost(original) - _cost(messages[index])
            messages[index] = original
            self._tails.resized(tail, change)

    def drop(self, room: str) -> None:
        """Forget the room's tail (it may no longer be contiguous with what is acknowledged)."""
        self._tails.drop(room)

    # -- reads -----------------------------------------------------------------------

    def after(self, room: str, after_id: int, limit: int) -> list[StoredMessage] | None:
        """The first ``limit`` cached messages after ``after_id``, or None when some of them are older than the tail.

        Only what the tail holds: the caller knows the room's last acknowledged id.
        """
        tail = self._tails.use(room)
        if tail is None:
            return None
        messages = tail.messages
        start = after_id + 1 - messages[0].id
        if start < 0:
            return None
        if start == 0 and limit >= len(messages):
            return list(messages)
        return list(islice(messages, start, start + limit))

    def get(self, room: str, ids: Iterable[int]) -> dict[int, StoredMessage] | None:
        """These ids' messages, or None unless the tail holds every id from the lowest asked up (higher ones absent)."""
        tail = self._tails.get(room)
        wanted = sorted(set(ids))
        if tail is None or not wanted:
            return None if tail is None else {}
        messages = tail.messages
        first = messages[0].id
        if wanted[0] < first:
            return None
        count = len(messages)
        return {message_id: messages[message_id - first] for message_id in wanted if message_id - first < count}
