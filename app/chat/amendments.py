"""Edits, deletions and reactions: the commands of docs/protocol.md §3.2.

A part of :class:`~app.chat.service.ChatService` (it is mixed in). Each
reads the message, lets :mod:`app.chat.lifecycle` make its next version,
and has the store rewrite it and append the ``update`` entry in one step
(:meth:`app.chat.store.History.amend`), which is broadcast once stored, in id
order with the messages. Replays show each ``update`` with its message as
it is now (:meth:`MessageAmendments._targets`), so an old text never comes
back.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import contextmanager

from gevent.event import AsyncResult
from gevent.lock import Semaphore

from . import events, lifecycle
from .broker import Broker
from .directory import Directory, ModAction, RoomSettings
from .encoded import EncodedHistory
from .events import Outgoing
from .protocol import ChatError, Delete, Edit, React, Ref
from .roomrules import RoomRules, account_name
from .rooms import Client, Member
from .store import Conflict, Duplicate, History, HistoryError, StoredMessage, not_stored

__all__ = ["MessageAmendments", "event_of"]

#: Tries of an edit, deletion or reaction whose message another process changed meanwhile.
AMEND_TRIES = 5
#: Seconds an edit, a deletion or a reaction may wait to be stored.
STORE_TIMEOUT = 10.0


class MessageAmendments:
    """The lifecycle commands of :class:`~app.chat.service.ChatService`, which provides what is declared here."""

    broker: Broker
    directory: Directory | None
    history: History
    rules: RoomRules
    _clients: dict[str, Client]
    _clock: Callable[[], float]
    _amending: KeyedLocks
    encoded: EncodedHistory

    def _check_voice(self, member: Member, room: str, ref: Ref | None, *, slow: bool = False) -> None:
        raise NotImplementedError

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
                    raise not_stored(result, ref, "not changed")
                return result
        raise ChatError("unavailable", "the message kept changing: try again", ref)

    def _store_amendment(
        self, target: StoredMessage, expected_meta: str | None, entry: StoredMessage
    ) -> StoredMessage | HistoryError:
        """Store an amendment and wait for it; it is broadcast as soon as stored, in id order with the messages."""
        done: AsyncResult = AsyncResult()

        def stored(result: StoredMessage | Duplicate | HistoryError) -> None:
            if isinstance(result, StoredMessage):
                self.encoded.forget(target.room, target.id)  # its JSON kept for replays is of the old version
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

    def _targets(self, room: str, messages: Sequence[StoredMessage]) -> dict[int, StoredMessage]:
        """The messages the amendment entries among ``messages`` change, as they are now (by id).

        Those among ``messages`` themselves, the others read; nothing to do
        (a pass over ``messages``) when there is no amendment entry.
        """
        wanted = {message.target for message in messages if message.kind is not None and message.target is not None}
        if not wanted:
            return {}
        held = {message.id: message for message in messages if message.kind is None and message.id in wanted}
        missing = wanted - held.keys()
        if missing:
            held.update(self.history.get(room, missing))
        return held


def event_of(message: StoredMessage, targets: dict[int, StoredMessage]) -> Outgoing | None:
    """A stored entry's event: a ``message``, or for an amendment an ``update`` with its target as it is now.

    None for an amendment whose message is gone (trimmed from a Redis stream).
    """
    if message.kind is None:
        return events.message(message)
    target = targets.get(message.target) if message.target is not None else None
    return events.update(message, target) if target is not None else None


class KeyedLocks:
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
