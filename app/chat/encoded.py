"""Replayed events' JSON, encoded once per version of each message and kept per room.

A ``joined`` with ``since`` carries up to 1000 messages: 200 clients coming
back after a reconnect would encode the same 1000 messages 200 times. Here
each history entry's event (:func:`app.chat.events.message_json`, or
:func:`~app.chat.events.update_json` for an amendment entry) is encoded once
and kept, UTF-8, by room and id, so a replay joins bytes it already has
(:func:`app.chat.events.joined` splices them).

Every entry is kept *with what it was encoded from*: the
:class:`~app.chat.store.StoredMessage` (for an amendment entry, the entry
and its original's current version). A lookup uses the bytes only if the
message asked for is that same version, compared by identity (the history's
tail cache hands out the same objects) or else by value. So an edited,
deleted or reacted-to message, or a message of another epoch with the same
id, is encoded afresh and never shows its old JSON: the cache cannot go
stale, whatever changed the message and on whichever process. The service
also :meth:`~EncodedHistory.forget`\\ s an original when an amendment of it is
stored, so the old version's bytes are not kept.

Bounded: ``per_room`` entries a room (the oldest encoded go first), and
about ``budget`` bytes in all (each entry counted as its JSON plus
:data:`ENTRY_OVERHEAD`), past which the least recently replayed rooms are
dropped whole. No I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .events import message_json, update_json
from .roomlru import RoomLRU
from .store import StoredMessage

__all__ = ["ENTRY_OVERHEAD", "EncodedHistory"]

#: Bytes an entry costs besides its JSON: the dict slot, the tuple, the bytes object's header.
ENTRY_OVERHEAD = 150
#: What an entry was encoded from: an original, or an amendment entry with its original as it was then.
Source = StoredMessage | tuple[StoredMessage, StoredMessage]


class _Room:
    __slots__ = ("bytes", "entries")

    def __init__(self) -> None:
        #: id -> (what it was encoded from, its event's JSON)
        self.entries: dict[int, tuple[Source, bytes]] = {}
        self.bytes = 0


class EncodedHistory:
    """The encoded events of recently replayed rooms' messages; see the module docstring."""

    def __init__(self, per_room: int = 1000, rooms: int = 256, budget: int = 16 * 1024 * 1024) -> None:
        if per_room < 1 or rooms < 1 or budget < 1:
            raise ValueError("per_room, rooms and budget must be at least 1")
        self.per_room = per_room
        self._rooms: RoomLRU[_Room] = RoomLRU(rooms, budget)

    @property
    def rooms(self) -> int:
        return self._rooms.rooms

    @property
    def budget(self) -> int:
        return self._rooms.budget

    @property
    def used_bytes(self) -> int:
        """The kept JSON's estimated size, in bytes: at most about ``budget``."""
        return self._rooms.used_bytes

    def __contains__(self, room: object) -> bool:
        return room in self._rooms

    def history(
        self, room: str, messages: Sequence[StoredMessage], targets: Mapping[int, StoredMessage]
    ) -> list[bytes]:
        """The ``joined`` history's items for ``messages``: each entry's event JSON, encoded now only if not kept.

        An amendment entry is its ``update`` event, with its original's current
        version from ``targets`` (by id); one whose original is not there is
        left out, as :func:`app.chat.events.joined` does.
        """
        if not messages:
            return []  # nothing replayed: the room is not kept for it
        kept = self._rooms.use(room) or self._rooms.put(room, _Room())
        entries = kept.entries
        lookup = entries.get
        items: list[bytes] = []
        add = items.append
        added = 0
        for stored in messages:
            source: Source
            if stored.kind is None:
                hit = lookup(stored.id)
                if hit is not None and (hit[0] is stored or hit[0] == stored):
                    add(hit[1])
                    continue
                source, data = stored, message_json(stored).encode()
            else:
                target = targets.get(stored.target) if stored.target is not None else None
                if target is None:
                    continue  # its original is gone (trimmed from a Redis stream): nothing to show
                source = (stored, target)
                hit = lookup(stored.id)
                if hit is not None and hit[0] == source:
                    add(hit[1])
                    continue
                data = update_json(stored, target).encode()
            if hit is not None:
                added -= ENTRY_OVERHEAD + len(hit[1])
            entries[stored.id] = (source, data)
            added += ENTRY_OVERHEAD + len(data)
            add(data)
        if added:
            self._grew(kept, added)
        return items

    def remember(self, message: StoredMessage, data: bytes) -> None:
        """A message's event was just encoded for its broadcast: keep it, if its room's history was replayed lately."""
        kept = self._rooms.get(message.room)
        if kept is None or message.kind is not None:
            return
        old = kept.entries.get(message.id)
        kept.entries[message.id] = (message, data)
        self._grew(kept, len(data) - (len(old[1]) if old is not None else -ENTRY_OVERHEAD))

    def forget(self, room: str, message_id: int) -> None:
        """An amendment of this message was stored: its kept JSON is of an old version."""
        kept = self._rooms.get(room)
        if kept is None:
            return
        old = kept.entries.pop(message_id, None)
        if old is not None:
            self._rooms.resized(kept, -(ENTRY_OVERHEAD + len(old[1])))

    def _grew(self, kept: _Room, added: int) -> None:
        """``kept`` changed by ``added`` bytes: trim it to ``per_room`` entries, then the rooms to the budget."""
        entries = kept.entries
        while len(entries) > self.per_room:
            _, data = entries.pop(next(iter(entries)))  # the oldest encoded (a dict keeps insertion order)
            added -= ENTRY_OVERHEAD + len(data)
        self._rooms.resized(kept, added)
        self._rooms.shrink()
