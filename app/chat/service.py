"""The chat domain's one entry point: connect, handle a client's message, disconnect.

Data flows one way: the transport hands :class:`ChatService` a member's
text; a ``say`` is stored first (:mod:`app.chat.store`, group commit), and
only once durable is it published to the broker, whose delivery encodes it
once and hands the same bytes to every member of the room.

Joining without gaps or duplicates: the joiner is registered as *joining*
before history is read, so every event delivered meanwhile is kept aside;
after ``joined`` goes out, the kept events follow, minus the messages the
history already held (compared by position). A message is broadcast only
after it is committed, so it is either in the history read or delivered after it.

Positions are an epoch and an id (:mod:`app.chat.store`). When a room's
messages start coming under a new epoch (the store lost its data and
counts from 1 again), its members get ``reset`` first, and the room's
position starts over, so the new messages are not dropped as already
delivered; a ``since`` of another epoch gets a ``joined`` with ``reset``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import secrets
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from gevent.event import AsyncResult
from gevent.lock import Semaphore

from app import metrics

from . import events, lifecycle
from .accounts import Accounts, account_key
from .auth import ACCOUNT_SESSION, Identity
from .broker import Broker
from .directory import Directory, ModAction, RoomSettings
from .events import Outgoing
from .limits import RateLimiter, Verdict
from .protocol import (
    ChatError,
    Create,
    Delete,
    DirectMessage,
    Edit,
    Info,
    Invite,
    Join,
    Leave,
    ListRooms,
    Moderator,
    Mute,
    React,
    Ref,
    Remove,
    Say,
    Slow,
    Typing,
    check_nick,
    check_room,
    check_text,
    is_private,
    parse_command,
)
from .roomrules import RoomRules, absent, account_name
from .rooms import Client, Member, Rooms
from .search import NoSearch, Search
from .store import Conflict, Duplicate, History, HistoryError, HistoryUnavailable, Replay, StoredMessage

__all__ = ["BANNED", "KICKED", "ChatService"]

log = logging.getLogger(__name__)

HISTORY_ON_JOIN = 50
MAX_SINCE = 1000
#: Fan-out latencies kept for the admin page's p99.
FANOUT_SAMPLES = 1000
#: Close codes of the operator's actions (4000-4999: private use, RFC 6455 §7.4.2).
KICKED = 4001
SIGNED_OUT = 4002
BANNED = 4003
#: A flood goes on after ``rate_limited`` (RFC 6455 §7.4.1: policy violation).
POLICY_VIOLATION = 1008
#: Seconds a pushed message may wait to be stored before the push fails.
STORE_TIMEOUT = 10.0
#: Seconds between two ``typing`` events of one nick in one room: more often, they are dropped.
TYPING_EVERY = 3.0
#: Tries of an edit, deletion or reaction whose message another process changed meanwhile.
AMEND_TRIES = 5


class ChatService:
    """Rooms, presence and messages for the members connected to this process.

    What spans processes (presence, the client registry, operator commands)
    goes through the :class:`~app.chat.broker.Broker`.
    """

    def __init__(
        self,
        history: History,
        broker: Broker,
        *,
        accounts: Accounts | None = None,
        directory: Directory | None = None,
        search: Search | None = None,
        max_text: int = 4000,
        max_rooms: int = 0,
        message_rate: float = 0.0,
        message_burst: int = 1,
    ) -> None:
        self.history = history
        self.broker = broker
        #: Registered names; None: everyone is a guest (a service built without them, in tests).
        self.accounts = accounts
        #: Owned and private rooms' settings; None: every room is public and nobody's (a service built without).
        self.directory = directory
        self.rules = RoomRules(directory)
        self._amending = _KeyedLocks()
        self.search_index: Search = search or NoSearch()
        self.max_text = max_text
        #: Rooms one client may be in at once (0: no limit).
        self.max_rooms = max_rooms
        self.limiter = RateLimiter(message_rate, message_burst)
        #: Set by the transport while it accepts connections (for /readyz).
        self.accepting = False
        #: Chat messages stored by this process; the last fan-out latencies (seconds).
        self.messages_stored = 0
        self._fanout_samples: deque[float] = deque(maxlen=FANOUT_SAMPLES)
        self.rooms = Rooms()
        self._clients: dict[str, Client] = {}
        self._bans: dict[str, float] = {}  # nick -> when the ban ends (epoch seconds)
        self._typed: dict[tuple[str, str], float] = {}  # (room, nick) -> when its last typing went out
        self._clock: Callable[[], float] = time.time

    # -- life cycle ----------------------------------------------------------

    def start(self) -> None:
        """Open the history and the accounts, and start delivering room events."""
        self.history.open()
        if self.accounts is not None:
            self.accounts.open()
        if self.directory is not None:
            self.directory.open()
        self.search_index.open()
        self.broker.start(self._deliver, self._run_command, self._catch_up)

    def close(self) -> None:
        """Stop delivering, then commit every accepted message."""
        self.broker.close()
        self.search_index.close()
        if self.directory is not None:
            self.directory.close()
        if self.accounts is not None:
            self.accounts.close()
        self.history.close()

    # -- members ---------------------------------------------------------------

    def connect(self, member: Member) -> None:
        """A client connected: say hello."""
        client = self._clients[member.conn_id] = Client(member)
        self.broker.connected(member, lambda: self._describe(client))
        member.send(events.hello(member.nick, member.conn_id))

    def disconnect(self, member: Member) -> None:
        """A client is gone: it leaves every room (a join under way undoes itself)."""
        self.limiter.forget(member.conn_id)
        client = self._clients.pop(member.conn_id, None)
        if client is None:
            return
        client.gone = True
        for room in sorted(client.rooms):
            self._remove(member, room)
        client.rooms.clear()
        self.broker.disconnected(member)

    def nick_taken(self, identity: Identity) -> bool:
        """Whether a connected client of *another* session holds the nick, on any process."""
        return self.broker.nick_taken(identity.nick, identity.session_id)

    def refusal(self, identity: Identity) -> ChatError | None:
        """Why ``identity`` may not connect now (banned, its nick held or owned by another, signed out), or None."""
        if self.is_banned(identity.nick):
            return ChatError("banned", f"{identity.nick!r} is banned for now")
        if self.accounts is not None:
            if identity.account is not None:
                if not self.accounts.current(identity.account, identity.generation):
                    return ChatError("unauthorized", "signed out: sign in again")
            elif not self.accounts.guests:
                return ChatError("guests_disabled", "sign in to chat: guests are not allowed here")
            elif self.accounts.registered(identity.nick):
                return ChatError("nick_registered", f"{identity.nick!r} is registered: sign in to use it")
        if self.nick_taken(identity):
            return ChatError("nick_taken", f"{identity.nick!r} is in use by someone else")
        return None

    def sign_out_everywhere(self, account: str) -> int:
        """Revoke the account's tokens and close its connections, on every process (4002); how many here."""
        assert self.accounts is not None
        self.accounts.sign_out_everywhere(account)
        session = f"{ACCOUNT_SESSION}{account}"
        closing = sum(1 for c in self._clients.values() if c.member.session_id == session)
        self._order({"op": "sign_out", "session": session})
        return closing

    # -- client messages -------------------------------------------------------

    def handle(self, member: Member, text: str) -> None:
        """Act on one text message from ``member``; bad input gets an ``error`` event."""
        if self.limiter.enabled and not self._within_rate(member):
            return
        try:
            command = parse_command(text, max_text=self.max_text)
            if isinstance(command, Say):
                self._say(member, command)
            elif isinstance(command, Join):
                self._join(member, command)
            elif isinstance(command, Leave):
                self._leave(member, command)
            elif isinstance(command, ListRooms):
                member.send(events.rooms(self.room_list(account_name(member))))
            elif isinstance(command, Typing):
                self._typing(member, command)
            else:
                self._handle_more(member, command)
        except ChatError as error:  # the WebSocket's one error handler
            member.send(events.error(error.code, error.message, error.ref, error.retry_after))
        except HistoryError as error:  # reading what an edit or a room needs failed
            failed = _not_stored(error, getattr(command, "ref", None), "not done")
            member.send(events.error(failed.code, failed.message, failed.ref))

    def _within_rate(self, member: Member) -> bool:
        """Whether a message may be handled; a flood is refused, then closed (1008)."""
        verdict = self.limiter.check(member.conn_id)
        if verdict is Verdict.ALLOW:
            return True
        if verdict is Verdict.CLOSE:
            member.close(POLICY_VIOLATION, "message rate limit exceeded")
        else:
            per_second = f"{self.limiter.rate:g}"
            member.send(events.error("rate_limited", f"too many messages: at most {per_second} per second, slow down"))
        return False

    def unsupported(self, member: Member) -> None:
        """A binary message: not part of the protocol."""
        member.send(events.error("unsupported", "binary messages are not supported"))

    def _say(self, member: Member, command: Say) -> None:
        client = self._clients.get(member.conn_id)
        if client is None or command.room not in client.rooms:
            raise ChatError("not_joined", "join the room first", command.ref)
        self._check_voice(member, command.room, command.ref, slow=True)

        arrived = time.perf_counter()

        def stored(result: StoredMessage | Duplicate | HistoryError) -> None:
            if isinstance(result, HistoryError):
                log.error("message to %s not stored: %s", command.room, result)
                error = _not_stored(result, command.ref)
                member.send(events.error(error.code, error.message, error.ref))
                return
            if isinstance(result, Duplicate):  # a retry: the sender gets the original again, nobody else
                member.send(events.message(result.message))
                return
            durable = time.perf_counter()
            self._publish_message(result)
            self._observe(arrived, durable, time.perf_counter())

        try:
            ts = int(self._clock() * 1000)
            self.history.submit(
                command.room, member.nick, command.text, ts, command.ref, stored, once=True, author=member.session_id
            )
        except HistoryError as error:
            raise _not_stored(error, command.ref) from None

    def _observe(self, arrived: float, durable: float, delivered: float) -> None:
        """One message's store and fan-out latencies: for /metrics, and the admin page's recent p99."""
        metrics.STORE_SECONDS.observe(durable - arrived)
        metrics.FANOUT_SECONDS.observe(delivered - arrived)
        self.messages_stored += 1
        self._fanout_samples.append(delivered - arrived)

    def readiness(self) -> dict[str, str]:
        """Each part's state, ``"ok"`` or why not: for ``/readyz``."""
        checks = {"websocket": "ok" if self.accepting else "not accepting connections"}
        for name, check in (("history", self.history.check), ("broker", self.broker.check)):
            try:
                check()
            except Exception as error:  # whatever it is, the part is not ready
                checks[name] = str(error) or type(error).__name__
            else:
                checks[name] = "ok"
        return checks

    def stats(self) -> dict[str, Any]:
        """Headline figures of this process: messages stored so far, and the recent fan-out p99 (ms)."""
        samples = sorted(self._fanout_samples)
        p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))] * 1000 if samples else None
        return {"messages_stored": self.messages_stored, "fanout_p99_ms": p99, "rooms": len(self.rooms)}

    def _publish_message(self, message: StoredMessage) -> None:
        if not self.history.publishes:
            self.broker.publish(
                message.room, events.message(message), message_id=message.id, epoch=self.history.epoch(message.room)
            )

    def _join(self, member: Member, command: Join) -> None:
        """Join a room: read its history while delivery to it is kept aside, record presence, then go live.

        Reading history and recording presence both yield to other greenlets
        (the reader thread, a Redis round trip): the client may be gone after
        either, and the join then undoes itself (see :mod:`app.chat.rooms`).
        """
        client = self._clients.get(member.conn_id)
        if client is None:
            return
        if command.room in client.rooms:
            raise ChatError("already_joined", "already in this room", command.ref)
        if self.max_rooms and len(client.rooms) >= self.max_rooms:
            raise ChatError("too_many_rooms", f"a client may be in at most {self.max_rooms} rooms", command.ref)
        settings = self.rules.check_readable(command.room, account_name(member), command.ref)
        room = self.rooms.get_or_create(command.room)
        room.begin_join(member.conn_id)
        try:
            replay, truncated, reset = self._history_for_join(command)
        except HistoryError as error:
            room.abort_join(member.conn_id)
            self.rooms.discard_if_empty(room.name)
            raise _not_stored(error, command.ref, "history unavailable, try again") from None
        if client.gone:
            room.abort_join(member.conn_id)
            self.rooms.discard_if_empty(room.name)
            return
        # Still joining: what is delivered while the broker answers (a Redis
        # round trip) is kept too, and so reaches the client after ``joined``.
        client.rooms.add(room.name)  # the broker's registry shows the room
        new_nick, nicks = self.broker.room_join(room.name, member)
        if client.gone:  # its disconnect left client.rooms; presence is this join's to undo
            room.abort_join(member.conn_id)
            self.broker.room_leave(room.name, member)
            self.rooms.discard_if_empty(room.name)
            return
        last_id = replay.messages[-1].id if replay.messages else (0 if reset else command.since or 0)
        targets = self._targets(room.name, replay.messages)
        joined = events.joined(room.name, nicks, replay, truncated, reset, targets=targets)
        room.finish_join(member, joined, replay.epoch, last_id)
        if settings is not None:  # an owned or private room: what it is, who moderates it
            member.send(events.room(self.rules.describe(room.name, settings)))
        if new_nick:
            self.broker.publish(
                room.name, events.presence(room.name, member.nick, "join", len(nicks)), exclude_conn=member.conn_id
            )

    def _history_for_join(self, command: Join) -> tuple[Replay, bool, bool]:
        """``(replay, truncated, reset)``: the last 50 messages, or those after ``since`` (the newest 1000 if more).

        A ``since`` of another epoch, or beyond the room's last id (which only
        another epoch can explain, for a client that sends none), cannot be
        honoured: the last 50 then, and ``reset``.
        """
        if command.since is None:
            return self.history.replay(command.room, None, HISTORY_ON_JOIN), False, False
        replay = self.history.replay(command.room, command.since, MAX_SINCE)
        if (command.epoch and command.epoch != replay.epoch) or command.since > replay.last_id:
            return self.history.replay(command.room, None, HISTORY_ON_JOIN), False, True
        truncated = bool(replay.messages) and replay.messages[0].id > command.since + 1
        return replay, truncated, False

    def _typing(self, member: Member, command: Typing) -> None:
        """Tell the room's other members, at most once every TYPING_EVERY seconds per nick and room."""
        client = self._clients.get(member.conn_id)
        if client is None or command.room not in client.rooms:
            raise ChatError("not_joined", "join the room first", command.ref)
        now = time.monotonic()
        key = (command.room, member.nick)
        if now - self._typed.get(key, -TYPING_EVERY) < TYPING_EVERY:
            return  # coalesced: the others were told a moment ago
        if len(self._typed) > 10_000:  # forget who typed long ago
            self._typed = {k: t for k, t in self._typed.items() if now - t < TYPING_EVERY}
        self._typed[key] = now
        self.broker.publish(command.room, events.typing(command.room, member.nick), exclude_conn=member.conn_id)

    def _leave(self, member: Member, command: Leave) -> None:
        client = self._clients.get(member.conn_id)
        if client is None or command.room not in client.rooms:
            raise ChatError("not_joined", "not in this room", command.ref)
        client.rooms.discard(command.room)
        self._remove(member, command.room)
        member.send(events.left(command.room))

    def _remove(self, member: Member, name: str) -> None:
        room = self.rooms.get(name)
        if room is None:
            return
        if room.remove(member.conn_id):
            gone, count = self.broker.room_leave(name, member)
            if gone:
                self.broker.publish(name, events.presence(name, member.nick, "leave", count))
        self.rooms.discard_if_empty(name)

    # -- owned and private rooms, the message lifecycle, moderation (docs/protocol.md §3.1-3.3) ------

    def _handle_more(self, member: Member, command: object) -> None:
        if isinstance(command, Edit):
            self._edit(member, command)
        elif isinstance(command, Delete):
            self._delete(member, command)
        elif isinstance(command, React):
            self._react(member, command)
        elif isinstance(command, DirectMessage):
            self._direct_message(member, command)
        elif isinstance(command, Info):
            settings = self.rules.check_readable(command.room, account_name(member), command.ref)
            member.send(events.room(self.rules.describe(command.room, settings), command.ref))
        elif isinstance(command, Create):
            self._create(member, command)
        elif isinstance(command, Invite):
            self._invite(member, command)
        elif isinstance(command, Remove):
            self._remove_member(member, command)
        elif isinstance(command, Moderator):
            self._appoint(member, command)
        elif isinstance(command, Mute):
            self._mute(member, command)
        elif isinstance(command, Slow):
            self._slow(member, command)

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

    # -- edits, deletions, reactions ---------------------------------------------------

    def _edit(self, member: Member, command: Edit) -> None:
        self._check_voice(member, command.room, command.ref)

        def plan(original: StoredMessage, settings: RoomSettings | None) -> tuple[StoredMessage, StoredMessage]:
            if original.author != member.session_id:
                raise ChatError("forbidden", "you may edit only your own messages", command.ref)
            ts = int(self._clock() * 1000)
            target = lifecycle.edited(original, command.text, ts)
            return target, lifecycle.amendment(
                original, "edit", member.nick, member.session_id, ts, command.text, ref=command.ref
            )

        self._amend(member, command.room, command.id, command.ref, plan)

    def _delete(self, member: Member, command: Delete) -> None:
        """Delete one's own message; a moderator may delete anyone's, which goes into the moderation log."""
        account = account_name(member)
        whose: list[str] = []  # the sender of the message deleted (a moderator's deletion of another's is logged)

        def plan(original: StoredMessage, settings: RoomSettings | None) -> tuple[StoredMessage, StoredMessage]:
            moderator = settings is not None and account is not None and settings.is_moderator(account)
            if original.author != member.session_id and not moderator:
                raise ChatError("forbidden", "you may delete only your own messages", command.ref)
            whose[:] = [original.nick] if original.author != member.session_id else []
            ts = int(self._clock() * 1000)
            return lifecycle.deleted(original), lifecycle.amendment(
                original, "delete", member.nick, member.session_id, ts, ref=command.ref
            )

        entry = self._amend(member, command.room, command.id, command.ref, plan)
        if entry is not None and whose and account is not None:
            assert self.directory is not None
            action = ModAction(entry.ts, command.room, account, "delete", whose[0], f"message {command.id}")
            self.directory.record(action)

    def _react(self, member: Member, command: React) -> None:
        self._check_voice(member, command.room, command.ref)

        def plan(original: StoredMessage, settings: RoomSettings | None) -> tuple[StoredMessage, StoredMessage] | None:
            target = lifecycle.reacted(original, command.emoji, member.nick, command.on, command.ref)
            if target is None:
                return None  # as asked already
            ts = int(self._clock() * 1000)
            meta = {"emoji": command.emoji, "on": command.on}
            return target, lifecycle.amendment(
                original, "react", member.nick, member.session_id, ts, meta=meta, ref=command.ref
            )

        self._amend(member, command.room, command.id, command.ref, plan)

    def _amend(
        self,
        member: Member,
        room: str,
        message_id: int,
        ref: Ref | None,
        plan: Callable[[StoredMessage, RoomSettings | None], tuple[StoredMessage, StoredMessage] | None],
    ) -> StoredMessage | None:
        """Read the message, let ``plan`` decide its next version, store it (rewrite and entry at once), broadcast.

        This process changes one message at a time (a lock per message), so
        two reactions here never race; another process may still change it
        between the read and the store, which the store's compare-and-set
        refuses (:class:`Conflict`): then read again and decide again.
        """
        client = self._clients.get(member.conn_id)
        if client is None or room not in client.rooms:
            raise ChatError("not_joined", "join the room first", ref)
        settings = self.rules.settings(room)
        with self._amending.hold((room, message_id)):
            for _ in range(AMEND_TRIES):
                original = self.history.get(room, [message_id]).get(message_id)
                if original is None or original.kind is not None or lifecycle.is_deleted(original):
                    raise ChatError("not_found", f"there is no message {message_id} in {room!r}", ref)
                planned = plan(original, settings)
                if planned is None:
                    return None
                result = self._store_amendment(planned[0], original.meta, planned[1])
                if isinstance(result, Conflict):
                    continue
                if isinstance(result, HistoryError):
                    raise _not_stored(result, ref, "not changed")
                return result
        raise ChatError("unavailable", "the message kept changing: try again", ref)

    def _store_amendment(
        self, target: StoredMessage, expected_meta: str | None, entry: StoredMessage
    ) -> StoredMessage | HistoryError:
        """Store an amendment and wait for it; it is broadcast as soon as stored, in id order with the messages."""
        done: AsyncResult = AsyncResult()

        def stored(result: StoredMessage | Duplicate | HistoryError) -> None:
            if isinstance(result, StoredMessage) and not self.history.publishes:
                self.broker.publish(
                    result.room,
                    events.update(result, target),
                    message_id=result.id,
                    epoch=self.history.epoch(result.room),
                )
            done.set(result)

        self.history.amend(target, expected_meta, entry, stored)
        result = done.get(timeout=STORE_TIMEOUT)
        assert not isinstance(result, Duplicate)
        return result

    def _targets(self, room: str, messages: Iterable[StoredMessage]) -> dict[int, StoredMessage]:
        """The messages the amendment entries among ``messages`` change, as they are now."""
        held: dict[int, StoredMessage] = {}
        wanted: set[int] = set()
        for message in messages:
            if message.kind is None:
                held[message.id] = message
            elif message.target is not None:
                wanted.add(message.target)
        missing = wanted - held.keys()
        if missing:
            held.update(self.history.get(room, missing))
        return held

    # -- delivery --------------------------------------------------------------

    def _deliver(
        self,
        name: str | None,
        message: Outgoing,
        message_id: int | None,
        exclude_conn: str | None,
        epoch: str | None = None,
    ) -> None:
        """Hand an event from the broker to this process's members of its room (every client if no room)."""
        if name is None:
            for client in list(self._clients.values()):
                client.member.send(message)
            return
        room = self.rooms.get(name)
        if room is not None:
            room.deliver(message, message_id, exclude_conn, epoch)

    def _catch_up(self) -> None:
        """After the shared store was unreachable: deliver what this process may have missed."""
        self.rules.forget()  # settings changed meanwhile were announced to nobody here
        for name, room in list(self.rooms.items()):
            if not room.has_members:
                continue
            try:  # floors are all above last_id: nobody here has seen past it
                replay = self.history.replay(name, room.last_id, MAX_SINCE)
                if room.epoch and replay.epoch and replay.epoch != room.epoch:
                    replay = self.history.replay(name, 0, MAX_SINCE)  # restarted: the new epoch's messages
            except HistoryError as error:
                log.warning("catching up on %s failed: %s", name, error)
                continue
            targets = self._targets(name, replay.messages)
            for message in replay.messages:
                event = _event_of(message, targets)
                if event is not None:
                    room.deliver(event, message.id, None, replay.epoch)

    # -- operators and backends -------------------------------------------------

    def kick(self, conn_id: str, reason: str = "disconnected by an admin") -> bool:
        """Close one connection, on whichever process it is, with 4001; whether it was connected."""
        if conn_id not in self._clients and not self.broker.remote_client(conn_id):
            return False
        self._order({"op": "kick", "conn": conn_id, "reason": reason})
        return True

    def ban(self, nick: str, seconds: float) -> int:
        """Refuse ``nick`` for ``seconds`` everywhere: close its connections (4003); how many."""
        closing = sum(1 for c in self._clients.values() if c.member.nick == nick) + self.broker.remote_connections(nick)
        self._order({"op": "ban", "nick": nick, "until": self._clock() + seconds, "seconds": int(seconds)})
        return closing

    def _order(self, command: dict[str, Any]) -> None:
        """Run an operator's command here, then on every other process."""
        self._run_command(command)
        self.broker.command(command)

    def _run_command(self, command: dict[str, Any]) -> None:
        """An operator's command, from this process or another: act on the clients here."""
        op = command.get("op")
        if op == "kick":
            client = self._clients.get(command["conn"])
            if client is not None:
                client.member.close(KICKED, command["reason"])
        elif op == "ban":
            nick, until = command["nick"], float(command["until"])
            self._bans[nick] = max(until, self._bans.get(nick, 0.0))
            if until > self._clock():
                for client in [c for c in self._clients.values() if c.member.nick == nick]:
                    client.member.close(BANNED, f"banned for {command['seconds']} s by an admin")
        elif op == "sign_out":
            for client in [c for c in self._clients.values() if c.member.session_id == command["session"]]:
                client.member.close(SIGNED_OUT, "signed out everywhere")
        elif op == "room":  # a room's settings changed: read them again when next needed
            self.rules.forget(command["room"])
        elif op == "invited":
            self.rules.forget(command["room"])
            invited = events.invited(command["room"], command["by"], command.get("title", ""), command.get("dm", False))
            for client in self._clients_of(command["account"]):
                client.member.send(invited)
        elif op == "removed":
            name = command["room"]
            self.rules.forget(name)
            for client in self._clients_of(command["account"]):
                if name in client.rooms:
                    client.rooms.discard(name)
                    self._remove(client.member, name)
                client.member.send(events.removed(name, command["by"]))
        else:
            log.warning("unknown operator command %r ignored", op)

    def _clients_of(self, account: str) -> list[Client]:
        """This process's connections signed in to the account (by its key)."""
        session = f"{ACCOUNT_SESSION}{account}"
        return [c for c in self._clients.values() if c.member.session_id == session]

    def is_banned(self, nick: str) -> bool:
        """Whether ``nick`` is banned now."""
        until = self._bans.get(nick)
        if until is None:
            return False
        if until <= self._clock():
            del self._bans[nick]
            return False
        return True

    def bans(self) -> list[dict[str, Any]]:
        """The bans in force: nick and when each ends (epoch seconds)."""
        now = self._clock()
        return [{"nick": nick, "until": until} for nick, until in sorted(self._bans.items()) if until > now]

    def system(self, text: str, room: str | None = None) -> None:
        """A system message to one room's members, or to every connected client, on every process."""
        self.broker.publish(room, events.system(text, room))

    def post(self, room: str, text: object, nick: object) -> StoredMessage:
        """Store a message from a backend and deliver it like any other, once stored.

        Blocks the calling greenlet until the message is durable. Raises
        :class:`ChatError` for bad input and :class:`HistoryError` when it
        could not be stored.
        """
        check_room(room)
        if is_private(room):  # a backend's token opens no private room: to it, there is none
            raise absent(room)
        check_nick(nick, "from", "invalid_field")
        check_text(text, self.max_text)
        done: AsyncResult = AsyncResult()

        def stored(result: StoredMessage | Duplicate | HistoryError) -> None:
            if isinstance(result, StoredMessage):
                self._publish_message(result)
            done.set(result)

        self.history.submit(room, str(nick), str(text), int(self._clock() * 1000), None, stored)
        result = done.get(timeout=STORE_TIMEOUT)
        if isinstance(result, HistoryError):
            raise result
        return result

    # -- reading ---------------------------------------------------------------

    def room_list(self, account: str | None = None) -> list[dict[str, Any]]:
        """The rooms ``account`` may see, with their member counts (on every process).

        Every public room with members or history, and the private rooms
        ``account`` (an account's name; None: a guest) is a member of.
        """
        public = {name for name in set(self.rooms) | set(self.history.room_names()) if not is_private(name)}
        mine = set(self.rules.private_rooms_of(account))
        names = sorted(public | mine)
        counts = self.broker.room_counts(names)
        return [
            {"name": name, "members": counts.get(name, 0), **(self.rules.listing(name) if name in mine else {})}
            for name in names
        ]

    def check_readable(self, room: str, account: str | None) -> None:
        """``not_found`` unless ``account`` (a name; None: a guest, or no one) may read the room (HTTP history)."""
        self.rules.check_readable(room, account)

    def clients(self) -> list[dict[str, Any]]:
        """Every connected client with its rooms (this process's first), for the admin page."""
        local = [self._describe(client) for client in list(self._clients.values())]
        return local + self.broker.remote_clients()

    def _describe(self, client: Client) -> dict[str, Any]:
        """A client for the admin page: its public rooms by name, its private ones only counted (their members'
        business, not the operators')."""
        public = sorted(room for room in client.rooms if not is_private(room))
        described = {**client.member.describe(), "node": self.broker.node or None, "rooms": public}
        described["private_rooms"] = len(client.rooms) - len(public)
        return described

    def moderation_log(self, limit: int = 100) -> list[dict[str, Any]]:
        """The moderators' latest actions, newest first (every process's), for the admin page."""
        if self.directory is None:
            return []
        return [dataclasses.asdict(action) for action in self.directory.actions(limit)]

    def search(
        self, query: str, room: str | None = None, limit: int = 50, account: str | None = None
    ) -> list[StoredMessage]:
        """The messages matching ``query`` in the rooms ``account`` may read: the public ones and its private ones."""
        if room is not None:
            self.rules.check_readable(room, account)
            return self.search_index.search(query, [room], limit)
        return self.search_index.search(query, None, limit, private=self.rules.private_rooms_of(account))

    def epoch(self, room: str) -> str:
        """The epoch the room's ids are numbered under now (docs/protocol.md §4.1)."""
        return self.history.epoch(room)

    def messages(self, room: str, since: int | None, limit: int) -> list[dict[str, Any]]:
        """A room's history as event objects: after ``since``, or the last ``limit`` messages."""
        found = self.history.recent(room, limit) if since is None else self.history.since(room, since, limit)
        targets = self._targets(room, found)
        page = []
        for message in found:
            if message.kind is None:
                page.append(events.message_fields(message))
            elif message.target in targets:  # else its message was trimmed away (Redis): nothing to show
                page.append(events.update_fields(message, targets[message.target]))
        return page


def _not_stored(error: HistoryError, ref: Ref | None, message: str = "message not stored") -> ChatError:
    """The client's error for a failed store: ``degraded`` while the shared store is unreachable."""
    if isinstance(error, HistoryUnavailable):
        return ChatError("degraded", f"{message}: the chat's shared store is unreachable, try again shortly", ref)
    return ChatError("unavailable", message, ref)


def _event_of(message: StoredMessage, targets: dict[int, StoredMessage]) -> Outgoing | None:
    """A stored entry's event: a ``message``, or for an amendment an ``update`` with its target as it is now.

    None for an amendment whose message is gone (trimmed from a Redis stream).
    """
    if message.kind is None:
        return events.message(message)
    target = targets.get(message.target) if message.target is not None else None
    return events.update(message, target) if target is not None else None


def _duration(seconds: int) -> str:
    """``600`` → ``10 minutes``, for people."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} s"


class _KeyedLocks:
    """One lock per key, held only while someone wants it (no lock kept per message ever changed)."""

    def __init__(self) -> None:
        self._locks: dict[Hashable, tuple[Semaphore, list[int]]] = {}

    @contextmanager
    def hold(self, key: Hashable) -> Iterator[None]:
        lock, users = self._locks.setdefault(key, (Semaphore(), [0]))
        users[0] += 1
        try:
            with lock:
                yield
        finally:
            users[0] -= 1
            if not users[0]:
                del self._locks[key]
