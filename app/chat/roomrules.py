"""Who may read a room, and what it looks like to its members: the room directory, cached.

Rooms made by joining are public and nobody's: they have no settings. Rooms
created with ``create`` have an owner, and private ones (``p.…``) and direct
conversations (``dm.…``) a list of members (:mod:`app.chat.directory`).

Every path that shows a room (join, ``since``, ``info``, the room lists, the
HTTP history, search, the push API) asks :meth:`RoomRules.readable` first,
and answers ``not_found`` for a private room one is not a member of exactly
as for a room that does not exist (docs/protocol.md §3.1).

The settings are read on every ``say`` (mutes, slow mode), so each process
caches them; with Redis, whoever changes a room's settings tells every
process to forget its copy (the broker's ``room`` command), and a process
whose subscription was cut forgets them all (:meth:`RoomRules.forget`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from .auth import ACCOUNT_SESSION
from .directory import Directory, RoomSettings
from .protocol import ChatError, Ref, is_private
from .rooms import Member

__all__ = ["RoomRules", "account_name"]

#: Settings cached per process (a miss costs a Redis round trip); past this, the cache starts over.
CACHE_SIZE = 10_000


def account_name(member: Member) -> str | None:
    """The account a connection is signed in to (its nick is the account's name), or None for a guest."""
    return member.nick if member.session_id.startswith(ACCOUNT_SESSION) else None


def absent(room: str, ref: Ref | None = None) -> ChatError:
    """The one answer for a room that does not exist and a private room one is not in."""
    return ChatError("not_found", f"there is no room {room!r}", ref)


class RoomRules:
    """The directory's settings behind a per-process cache, and the checks built on them."""

    def __init__(self, directory: Directory | None, clock: Callable[[], float] = time.time) -> None:
        self.directory = directory
        self._clock = clock
        self._cache: dict[str, RoomSettings | None] = {}

    def settings(self, room: str) -> RoomSettings | None:
        """The room's settings (None: public, nobody's)."""
        if self.directory is None:
            return None
        try:
            return self._cache[room]
        except KeyError:
            pass
        found = self.directory.get(room)
        if len(self._cache) >= CACHE_SIZE:
            self._cache.clear()
        self._cache[room] = found
        return found

    def forget(self, room: str | None = None) -> None:
        """Drop the cached settings of ``room`` (of every room if None): they changed elsewhere."""
        if room is None:
            self._cache.clear()
        else:
            self._cache.pop(room, None)

    def readable(self, room: str, account: str | None) -> bool:
        """Whether ``account`` (None: a guest, or nobody in particular) may read and join ``room``."""
        if not is_private(room):
            return True
        settings = self.settings(room)
        return settings is not None and account is not None and settings.is_member(account)

    def check_readable(self, room: str, account: str | None, ref: Ref | None = None) -> RoomSettings | None:
        """The room's settings if ``account`` may read it; else ``not_found``, as for no room at all."""
        if not self.readable(room, account):
            raise absent(room, ref)
        return self.settings(room)

    def describe(self, room: str, settings: RoomSettings | None) -> dict[str, Any]:
        """The ``room`` event's fields (docs/protocol.md §4)."""
        now = self._clock()
        if settings is None:
            return {"room": room, "private": False, "owner": None, "moderators": [], "slow": 0, "muted": []}
        described: dict[str, Any] = {"room": room}
        if settings.title:
            described["title"] = settings.title
        described.update(private=settings.private, owner=settings.owner, moderators=list(settings.moderators))
        if settings.private:
            described["members"] = list(settings.members)
        if settings.dm:
            described["dm"] = list(settings.dm)
        described["slow"] = settings.slow
        described["muted"] = [{"nick": nick, "until": int(until)} for nick, until in settings.mutes if until > now]
        return described

    def listing(self, room: str) -> dict[str, Any]:
        """What a room list says of a private room, besides its name and member count."""
        settings = self.settings(room)
        if settings is None or not settings.private:
            return {}
        extra: dict[str, Any] = {"private": True}
        if settings.title:
            extra["title"] = settings.title
        if settings.dm:
            extra["dm"] = list(settings.dm)
        return extra

    def private_rooms_of(self, account: str | None) -> list[str]:
        """The private rooms an account is a member of."""
        if account is None or self.directory is None:
            return []
        return [settings.name for settings in self.directory.rooms_of(account)]
