"""The room directory: the settings of the rooms that have an owner or are private.

A room comes into being when someone joins it: public, ownerless, and absent
from the directory. Only these rooms have an entry:

- *owned* rooms, created explicitly by a signed-in account, whose owner
  names moderators, slows the room down and mutes nicks;
- *private* rooms, read and joined by their ``members`` only: invite-only
  rooms (``p.<hex>``, shown by their ``title``, the name being opaque) and
  direct conversations (``dm.<hex>``, no owner, ``dm`` the two accounts).

:class:`RoomSettings` is an immutable value: every change builds a new one
(the ``with_*`` methods, pure), which a store writes in one atomic
read-modify-write (:meth:`Directory.update`). Names are compared by their
:func:`~app.chat.accounts.account_key` (without case) and kept as registered.

Two stores, as for the accounts: :class:`~app.chat.sqlite_directory.SQLiteDirectory`
(tables in the history's database file) and
:class:`~app.chat.redis_directory.RedisDirectory` (a JSON string per room,
shared by every process). Both keep the moderators' actions for the admin
page (the last :data:`MAX_ACTIONS`) and time slow mode.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from .accounts import account_key

__all__ = ["MAX_ACTIONS", "Directory", "ModAction", "RoomSettings", "member_keys"]

#: Moderation actions kept (older ones are dropped as new ones come).
MAX_ACTIONS = 1000


@dataclass(frozen=True, slots=True)
class RoomSettings:
    """One room's entry in the directory; immutable: updates build a new one (:func:`dataclasses.replace`)."""

    name: str
    #: The owner's account name as registered; None for a direct conversation.
    owner: str | None
    #: Invite-only: only ``members`` may read or join.
    private: bool
    #: Shown instead of the name (a private room's name is opaque).
    title: str = ""
    #: Account names allowed in a private room, the owner included, sorted by key.
    members: tuple[str, ...] = ()
    #: Account names with the moderator role, sorted by key; the owner is implied, never listed.
    moderators: tuple[str, ...] = ()
    #: A direct conversation: its two account names; () otherwise.
    dm: tuple[str, ...] = ()
    #: Slow mode: seconds between two messages of one user (0: off).
    slow: int = 0
    #: (nick key, until epoch seconds), sorted; expired ones linger until the next :meth:`with_mute`.
    mutes: tuple[tuple[str, float], ...] = ()
    #: When it was created, in milliseconds since the epoch.
    created: int = 0

    # -- who is who ---------------------------------------------------------------

    def is_owner(self, name: str) -> bool:
        return self.owner is not None and account_key(self.owner) == account_key(name)

    def is_member(self, name: str) -> bool:
        """Whether ``name`` is listed in ``members`` (or owns the room): who may enter a private room."""
        return self.is_owner(name) or account_key(name) in _keys(self.members)

    def is_moderator(self, name: str) -> bool:
        """The owner, or a listed moderator."""
        return self.is_owner(name) or account_key(name) in _keys(self.moderators)

    def muted_until(self, nick: str, now: float) -> float:
        """When ``nick``'s mute ends (epoch seconds); 0.0 if it is not muted at ``now``."""
        key = account_key(nick)
        return next((until for muted, until in self.mutes if muted == key and until > now), 0.0)

    # -- changes (each a new value) -------------------------------------------------

    def with_member(self, name: str) -> RoomSettings:
        """``name`` let in; unchanged if it is a member already (in any case)."""
        if account_key(name) in _keys(self.members):
            return self
        return dataclasses.replace(self, members=_sorted((*self.members, name)))

    def without_member(self, name: str) -> RoomSettings:
        """``name`` out, and out of the moderators too; the owner stays (an owner is always a member)."""
        if self.is_owner(name):
            return self
        key = account_key(name)
        return dataclasses.replace(
            self,
            members=tuple(m for m in self.members if account_key(m) != key),
            moderators=tuple(m for m in self.moderators if account_key(m) != key),
        )

    def with_moderator(self, name: str, on: bool) -> RoomSettings:
        """``name`` given (``on``) or stripped of the moderator role; the owner's cannot change."""
        if self.is_owner(name):
            return self
        key = account_key(name)
        others = tuple(m for m in self.moderators if account_key(m) != key)
        return dataclasses.replace(self, moderators=_sorted((*others, name)) if on else others)

    def with_mute(self, nick: str, until: float, now: float | None = None) -> RoomSettings:
        """``nick`` muted until ``until`` (epoch seconds; at or before ``now``: unmuted); expired mutes dropped."""
        now = time.time() if now is None else now
        key = account_key(nick)
        kept = [(muted, end) for muted, end in self.mutes if muted != key and end > now]
        if until > now:
            kept.append((key, float(until)))
        return dataclasses.replace(self, mutes=tuple(sorted(kept)))

    def with_slow(self, seconds: int) -> RoomSettings:
        """Slow mode of ``seconds`` between two messages of one user (0: off)."""
        if seconds < 0:
            raise ValueError(f"slow mode of {seconds} seconds")
        return dataclasses.replace(self, slow=int(seconds))

    # -- the stores' form ------------------------------------------------------------

    def to_json(self) -> str:
        """Compact JSON text: what both stores keep."""
        fields = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        return json.dumps(fields, separators=(",", ":"), ensure_ascii=False)

    @staticmethod
    def from_json(text: str | bytes) -> RoomSettings:
        """The settings :meth:`to_json` wrote; fields it does not know are ignored (a newer process wrote them)."""
        data: dict[str, Any] = json.loads(text)
        return RoomSettings(
            name=str(data["name"]),
            owner=None if data.get("owner") is None else str(data["owner"]),
            private=bool(data.get("private", False)),
            title=str(data.get("title", "")),
            members=tuple(str(m) for m in data.get("members", ())),
            moderators=tuple(str(m) for m in data.get("moderators", ())),
            dm=tuple(str(m) for m in data.get("dm", ())),
            slow=int(data.get("slow", 0)),
            mutes=tuple((str(nick), float(until)) for nick, until in data.get("mutes", ())),
            created=int(data.get("created", 0)),
        )


@dataclass(frozen=True, slots=True)
class ModAction:
    """A moderator's action, for the admin page's log."""

    #: When, in milliseconds since the epoch.
    ts: int
    room: str
    #: Who: an account name, or ``"admin"``.
    actor: str
    #: ``mute``, ``unmute``, ``slow``, ``invite``, ``remove``, ``moderator``, ``unmoderator``, ``delete``, ``create``.
    action: str
    #: The nick or name acted on ("" for ``slow``).
    target: str = ""
    #: What else there is to say, e.g. ``"600 s"``.
    detail: str = ""

    def to_json(self) -> str:
        return json.dumps(dataclasses.astuple(self), separators=(",", ":"), ensure_ascii=False)

    @staticmethod
    def from_json(text: str | bytes) -> ModAction:
        ts, room, actor, action, target, detail = json.loads(text)
        return ModAction(int(ts), str(room), str(actor), str(action), str(target), str(detail))


def member_keys(settings: RoomSettings) -> frozenset[str]:
    """The accounts (keys) a room counts as theirs in :meth:`Directory.rooms_of`: a private room's members and owner."""
    if not settings.private:
        return frozenset()
    owner = () if settings.owner is None else (settings.owner,)
    return frozenset(_keys((*settings.members, *owner)))


def _keys(names: Iterable[str]) -> set[str]:
    return {account_key(name) for name in names}


def _sorted(names: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(names, key=account_key))


class Directory(Protocol):
    """Where the room directory is kept. Every method may block (on Redis, on the database's thread)."""

    def open(self) -> None: ...

    def close(self) -> None: ...

    def get(self, room: str) -> RoomSettings | None:
        """The room's settings; None: a public, ownerless room (or no room at all)."""

    def create(self, settings: RoomSettings) -> bool:
        """Store a new room's settings; False (nothing written) if the room has settings already."""

    def update(self, room: str, change: Callable[[RoomSettings], RoomSettings]) -> RoomSettings | None:
        """The settings ``change`` makes of the room's current ones, written atomically; None if it has none.

        ``change`` may be called more than once (another process changed the
        room meanwhile): it must be pure.
        """

    def delete(self, room: str) -> bool:
        """Forget the room's settings (it becomes public and ownerless); False if it had none."""

    def rooms_of(self, name: str) -> list[RoomSettings]:
        """The private rooms the account ``name`` (any case) is a member of, sorted by name."""

    def record(self, action: ModAction) -> None:
        """Append to the moderation log, which keeps the last :data:`MAX_ACTIONS`."""

    def actions(self, limit: int = 100) -> list[ModAction]:
        """The moderation log, newest first."""

    def slow_wait(self, room: str, user: str, seconds: int) -> float:
        """Slow mode: 0.0 if ``user`` (a nick key) may send in ``room`` now, else the seconds left (> 0).

        A 0.0 counts as the send: the next one waits ``seconds``.
        """
