"""Rooms one owns, private rooms, direct messages and moderation: the commands of docs/protocol.md §3.1 and §3.3.

A part of :class:`~app.chat.service.ChatService` (it is mixed in): these
commands change a room's settings in the directory (:mod:`app.chat.directory`),
make every process forget its cached copy (the broker's ``room`` command),
and show the result: the ``room`` event to the room's members (with the
request's ``ref`` to the one who asked), a ``system`` line for a
moderator's action, an entry in the admin page's log. Who may read a room
is :mod:`app.chat.roomrules`'s; a private room one is not in gets the same
``not_found`` as no room at all.
"""

from __future__ import annotations

import hashlib
import math
import secrets
from collections.abc import Callable
from typing import Any

from . import events
from .accounts import Accounts, account_key
from .broker import Broker
from .directory import Directory, ModAction, RoomSettings
from .protocol import (
    ChatError,
    Create,
    DirectMessage,
    Invite,
    Join,
    Moderator,
    Mute,
    Ref,
    Remove,
    Say,
    Slow,
    is_private,
)
from .roomrules import RoomRules, absent, account_name
from .rooms import Client, Member, Rooms
from .store import History

__all__ = ["RoomAdministration"]


class RoomAdministration:
    """The room commands of :class:`~app.chat.service.ChatService`, which provides what is declared here."""

    accounts: Accounts | None
    broker: Broker
    directory: Directory | None
    history: History
    rooms: Rooms
    rules: RoomRules
    _clients: dict[str, Client]
    _clock: Callable[[], float]

    def _order(self, command: dict[str, Any]) -> None:
        raise NotImplementedError

    def _join(self, member: Member, command: Join) -> None:
        raise NotImplementedError

    def _say(self, member: Member, command: Say) -> None:
        raise NotImplementedError

    def _check_voice(self, member: Member, room: str, ref: Ref | None, *, slow: bool = False) -> None:
        """Refuse a muted member (``muted``), and with ``slow`` a message too soon in slow mode (``rate_limited``)."""
        settings = self.rules.settings(room)
        if settings is None:
            return
        now = self._clock()
        until = settings.muted_until(member.nick, now)
        if until > now:
            wait = math.ceil(until - now)
            raise ChatError("muted", f"you are muted in this room for {_duration(wait)} more", ref, retry_after=wait)
        account = account_name(member)
        if slow and settings.slow and not (account is not None and settings.is_moderator(account)):
            assert self.directory is not None
            if ref is not None and self.history.sent(room, member.nick, ref):
                return  # a retry (after a reconnect): the store answers it with the original, it is no new message
            left = self.directory.slow_wait(room, account_key(member.nick), settings.slow)
            if left > 0:
                wait = math.ceil(left)
                message = f"slow mode: one message every {settings.slow} s; wait {wait} s"
                raise ChatError("rate_limited", message, ref, retry_after=wait)

    def _signed_in(self, member: Member, ref: Ref | None, doing: str) -> str:
        """The member's account name; ``account_required`` for a guest."""
        account = account_name(member)
        if account is None:
            raise ChatError("account_required", f"sign in to {doing}", ref)
        return account

    def _moderated(self, member: Member, room: str, ref: Ref | None) -> tuple[str, RoomSettings]:
        """The member's account and the room's settings, if the member moderates the room; else ``forbidden``."""
        account = account_name(member)
        settings = self.rules.check_readable(room, account, ref)
        if settings is None:
            raise ChatError("forbidden", "nobody owns this room: only the operators moderate it", ref)
        if account is None or not settings.is_moderator(account):
            raise ChatError("forbidden", "only the room's owner and moderators may do that", ref)
        return account, settings

    def _account_named(self, nick: str, ref: Ref | None) -> str:
        """The registered name ``nick`` is (in any case); ``unknown_user`` if there is no such account."""
        name = self.accounts.name_of(nick) if self.accounts is not None else None
        if name is None:
            raise ChatError("unknown_user", f"there is no account {nick!r}", ref)
        return name

    def _change_room(
        self, member: Member, room: str, change: Callable[[RoomSettings], RoomSettings], ref: Ref | None
    ) -> RoomSettings:
        """Change a room's settings, make every process read them again, and show the result.

        The one who changed it gets the ``room`` event with its ``ref`` (the
        answer to the command), the room's other members the same without.
        """
        assert self.directory is not None
        updated = self.directory.update(room, change)
        if updated is None:
            raise absent(room, ref)
        self._order({"op": "room", "room": room})
        described = self.rules.describe(room, updated)
        self.broker.publish(room, events.room(described), exclude_conn=member.conn_id)
        member.send(events.room(described, ref))
        return updated

    def _announce(self, room: str, actor: str, action: str, target: str, detail: str, line: str) -> None:
        """A moderator's action: a system line in the room, and an entry in the admin page's log.

        Who joins or leaves a private room is its members' business, not the
        operators': invitations and removals there are not logged.
        """
        assert self.directory is not None
        if not (is_private(room) and action in ("invite", "remove")):
            self.directory.record(ModAction(int(self._clock() * 1000), room, actor, action, target, detail))
        self.broker.publish(room, events.system(line, room))

    def _create(self, member: Member, command: Create) -> None:
        owner = self._signed_in(member, command.ref, "create rooms")
        assert self.directory is not None
        now = int(self._clock() * 1000)
        if command.private:
            name = f"p.{secrets.token_hex(8)}"
            settings = RoomSettings(name, owner, True, command.title, members=(owner,), created=now)
        else:
            name = command.room or ""
            if is_private(name):
                raise ChatError("invalid_room", "room names starting with 'p.' or 'dm.' are the server's", command.ref)
            if self._room_exists(name):
                raise ChatError("room_exists", f"{name!r} exists already: join it", command.ref)
            settings = RoomSettings(name, owner, False, command.title, created=now)
        if not self.directory.create(settings):
            raise ChatError("room_exists", f"{name!r} exists already: join it", command.ref)
        self._order({"op": "room", "room": name})  # a process may have read the room as nobody's
        if not command.private:  # a private room's existence is its members' business
            self.directory.record(ModAction(now, name, owner, "create", "", "public"))
        member.send(events.room(self.rules.describe(name, settings), command.ref))

    def _room_exists(self, room: str) -> bool:
        """Whether a public room has an owner, members (on any process) or history."""
        if self.rules.settings(room) is not None or room in self.rooms:
            return True
        return bool(self.broker.room_counts([room]).get(room)) or self.history.last_id(room) > 0

    def _invite(self, member: Member, command: Invite) -> None:
        actor, settings = self._moderated(member, command.room, command.ref)
        if not settings.private or settings.dm:
            raise ChatError("forbidden", "only private rooms take invitations", command.ref)
        name = self._account_named(command.nick, command.ref)
        if settings.is_member(name):
            return  # a member already: nothing changes
        updated = self._change_room(member, command.room, lambda s: s.with_member(name), command.ref)
        self._order(
            {"op": "invited", "account": account_key(name), "room": command.room, "by": actor, "title": updated.title}
        )
        self._announce(command.room, actor, "invite", name, "", f"{actor} invited {name}")

    def _remove_member(self, member: Member, command: Remove) -> None:
        account = account_name(member)
        settings = self.rules.check_readable(command.room, account, command.ref)
        leaving = account is not None and account_key(account) == account_key(command.nick)
        if settings is None or not settings.private or settings.dm:
            raise ChatError("forbidden", "only private rooms have members to remove", command.ref)
        if not leaving:
            account, settings = self._moderated(member, command.room, command.ref)
        if settings.is_owner(command.nick):
            raise ChatError("forbidden", "the owner cannot be removed", command.ref)
        if not settings.is_member(command.nick):
            return
        name = next(m for m in settings.members if account_key(m) == account_key(command.nick))
        assert account is not None
        self._change_room(member, command.room, lambda s: s.without_member(name), command.ref)
        self._order({"op": "removed", "account": account_key(name), "room": command.room, "by": account})
        line = f"{name} left" if leaving else f"{account} removed {name}"
        self._announce(command.room, account, "remove", name, "", line)

    def _appoint(self, member: Member, command: Moderator) -> None:
        account = account_name(member)
        settings = self.rules.check_readable(command.room, account, command.ref)
        if settings is None or settings.dm or account is None or not settings.is_owner(account):
            raise ChatError("forbidden", "only the room's owner appoints moderators", command.ref)
        name = self._account_named(command.nick, command.ref)
        if settings.private and not settings.is_member(name):
            raise ChatError("forbidden", f"{name} is not a member of this room: invite them first", command.ref)
        if settings.is_owner(name) or (name in settings.moderators) == command.on:
            return
        self._change_room(member, command.room, lambda s: s.with_moderator(name, command.on), command.ref)
        if command.on:
            self._announce(command.room, account, "moderator", name, "", f"{account} made {name} a moderator")
        else:
            self._announce(command.room, account, "unmoderator", name, "", f"{account} took {name}'s moderator role")

    def _mute(self, member: Member, command: Mute) -> None:
        actor, settings = self._moderated(member, command.room, command.ref)
        if settings.is_moderator(command.nick):
            raise ChatError("forbidden", "owners and moderators cannot be muted", command.ref)
        until = self._clock() + command.seconds
        self._change_room(member, command.room, lambda s: s.with_mute(command.nick, until), command.ref)
        if command.seconds:
            detail = f"{command.seconds} s"
            line = f"{actor} muted {command.nick} for {_duration(command.seconds)}"
            self._announce(command.room, actor, "mute", command.nick, detail, line)
        else:
            self._announce(command.room, actor, "unmute", command.nick, "", f"{actor} lifted {command.nick}'s mute")

    def _slow(self, member: Member, command: Slow) -> None:
        actor, settings = self._moderated(member, command.room, command.ref)
        if settings.slow == command.seconds:
            return
        self._change_room(member, command.room, lambda s: s.with_slow(command.seconds), command.ref)
        if command.seconds:
            line = f"{actor} turned slow mode on: one message every {_duration(command.seconds)}"
        else:
            line = f"{actor} turned slow mode off"
        self._announce(command.room, actor, "slow", "", f"{command.seconds} s", line)

    def _direct_message(self, member: Member, command: DirectMessage) -> None:
        """The first message creates the conversation (a private room of the two); later ones go into it."""
        me = self._signed_in(member, command.ref, "send direct messages")
        assert self.directory is not None
        other = self._account_named(command.to, command.ref)
        if account_key(other) == account_key(me):
            raise ChatError("invalid_field", "a direct message goes to someone else", command.ref)
        keys = sorted((account_key(me), account_key(other)))
        name = "dm." + hashlib.sha256("\0".join(keys).encode()).hexdigest()[:24]
        if self.rules.settings(name) is None:
            people = tuple(sorted((me, other), key=account_key))
            created = self.directory.create(
                RoomSettings(name, None, True, members=people, dm=people, created=int(self._clock() * 1000))
            )
            if created:  # every process forgets what it read of the room (nothing) as it tells the other one
                self._order({"op": "invited", "account": account_key(other), "room": name, "by": me, "dm": True})
            else:
                self.rules.forget(name)
        client = self._clients.get(member.conn_id)
        if client is not None and name not in client.rooms:
            self._join(member, Join(name, ref=command.ref))
        self._say(member, Say(name, command.text, command.ref))


def _duration(seconds: int) -> str:
    """``600`` → ``10 minutes``, for people."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} s"
