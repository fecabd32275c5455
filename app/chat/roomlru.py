"""Something kept per room, for the recently used rooms only: the bound both of the history's memories share.

:class:`RoomLRU` holds a value per room, at most ``rooms`` of them and about
``budget`` bytes in all (each value says its own estimated size in its
``bytes`` attribute); past either, the least recently used rooms are dropped
whole, never the most recent one. Used by the history's tail cache
(:mod:`app.chat.tails`) and the replays' encoded JSON (:mod:`app.chat.encoded`).
No I/O.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, Protocol, TypeVar

__all__ = ["RoomLRU", "Sized"]


class Sized(Protocol):
    #: the value's estimated size, in bytes; changed only through :meth:`RoomLRU.resized`
    bytes: int


V = TypeVar("V", bound=Sized)


class RoomLRU(Generic[V]):
    """Per-room values of the recently used rooms, bounded by count and by bytes; see the module docstring."""

    def __init__(self, rooms: int, budget: int) -> None:
        self.rooms = rooms
        self.budget = budget
        self._values: OrderedDict[str, V] = OrderedDict()
        self._bytes = 0

    @property
    def used_bytes(self) -> int:
        """The values' estimated size, in bytes: at most about ``budget``."""
        return self._bytes

    def __contains__(self, room: object) -> bool:
        return room in self._values

    def __len__(self) -> int:
        return len(self._values)

    def get(self, room: str) -> V | None:
        """The room's value, if kept (not a use: the room keeps its place)."""
        return self._values.get(room)

    def use(self, room: str) -> V | None:
        """The room's value, if kept, the room now the most recently used."""
        value = self._values.get(room)
        if value is not None:
            self._values.move_to_end(room)
        return value

    def put(self, room: str, value: V) -> V:
        """Keep ``value`` for the room (instead of any it had), as the most recently used; then keep to the bounds."""
        self.drop(room)
        self._values[room] = value
        self._bytes += value.bytes
        self.shrink()
        return value

    def resized(self, value: V, change: int) -> None:
        """A kept value grew (or shrank) by ``change`` bytes; :meth:`shrink` keeps to the budget after a growth."""
        value.bytes += change
        self._bytes += change

    def drop(self, room: str) -> None:
        """Forget the room's value."""
        value = self._values.pop(room, None)
        if value is not None:
            self._bytes -= value.bytes

    def shrink(self) -> None:
        """Drop the least recently used rooms while over either bound (the most recent one stays)."""
        values = self._values
        while len(values) > 1 and (len(values) > self.rooms or self._bytes > self.budget):
            _, value = values.popitem(last=False)
            self._bytes -= value.bytes
