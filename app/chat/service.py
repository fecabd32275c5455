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
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from gevent.event import AsyncResult

from app import metrics

from . import events
from .accounts import Accounts
from .amendments import KeyedLocks, MessageAmendments, event_of
from .auth import ACCOUNT_SESSION, Identity
from .broker import Broker
from .directory import Directory
from .encoded import EncodedHistory
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
from .room_admin import RoomAdministration
from .roomrules import RoomRules, absent, account_name
from .rooms import Client, Member, Rooms
from .search import NoSearch, Search
from .store import Duplicate, History, HistoryError, Replay, StoredMessage, not_stored

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


class ChatService(RoomAdministration, MessageAmendments):
    """Rooms, presence and messages for the members connected to this process.

    What spans processes (presence, the client registry, operator commands)
    goes through the :class:`~app.chat.broker.Broker`. The room commands
    (owned and private rooms, direct messages, moderation) are
    :class:`~app.chat.room_admin.RoomAdministration`'s, edits, deletions and
    reactions :class:`~app.chat.amendments.MessageAmendments`': mixed in,
    each in a module of its own.
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
        self._amending = KeyedLocks()
        self.search_index: Search = search or NoSearch()
        self.max_text = max_text
        #: Rooms one client may be in at once (0: no limit).
        self.max_rooms = max_rooms
        self.limiter = RateLimiter(message_rate, message_burst)
        #: Set by the transport while it accepts connections (for /readyz).
        self.accepting = False
        #: The connections the transport takes at most (0: not said); at it, no new session (:meth:`busy`).
        self.capacity = 0
        #: Chat messages stored by this process; the last fan-out latencies (seconds).
        self.messages_stored = 0
        self._fanout_samples: deque[float] = deque(maxlen=FANOUT_SAMPLES)
        #: The replayed messages' event JSON, encoded once per version (a ``since`` of 1000 joins bytes).
        self.encoded = EncodedHistory(per_room=MAX_SINCE)
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

    def busy(self) -> bool:
        """Whether this process holds as many connections as it takes: a new session would be refused at once."""
        return bool(self.capacity) and len(self._clients) >= self.capacity

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
            failed = not_stored(error, getattr(command, "ref", None), "not done")
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
                error = not_stored(result, command.ref)
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
            raise not_stored(error, command.ref) from None

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
            event = events.message(message)
            self.encoded.remember(message, event.data)  # a room replayed lately: its next replay has it encoded
            self.broker.publish(message.room, event, message_id=message.id, epoch=self.history.epoch(message.room))

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
            raise not_stored(error, command.ref, "history unavailable, try again") from None
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
        history = self.encoded.history(room.name, replay.messages, targets)
        joined = events.joined(room.name, nicks, replay, truncated, reset, history=history)
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
                event = event_of(message, targets)
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
