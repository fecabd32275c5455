"""A message's life after it was sent: edits, deletion, reactions (docs/protocol.md §3.2).

Pure functions: they take the message as stored and give its next version;
the service decides who may, and the store (:meth:`app.chat.store.History.amend`)
rewrites the original and appends the amendment entry in one step, so a
client that catches up with ``since`` gets the change as an ``update`` and
never the old text.

A message's lifecycle state is its ``meta``, JSON: ``{"edited": ts}``,
``{"deleted": true}``, ``{"reactions": {"👍": ["alice", "bob"]}}``. A
message that never changed has none (``None``), so the hot path (sending,
replaying) never parses JSON for it.
"""

from __future__ import annotations

import json
from typing import Any

from .accounts import account_key
from .events import compact_json
from .protocol import ChatError, Ref
from .store import StoredMessage

__all__ = ["MAX_EMOJI_KINDS", "amendment", "deleted", "edited", "is_deleted", "reacted", "state"]

#: Different emoji one message may hold (a flood of distinct ones would bloat every replay of it).
MAX_EMOJI_KINDS = 20


def state(message: StoredMessage) -> dict[str, Any]:
    """The message's lifecycle state (empty if it never changed)."""
    return json.loads(message.meta) if message.meta else {}


def is_deleted(message: StoredMessage) -> bool:
    return bool(message.meta) and bool(state(message).get("deleted"))


def _with(message: StoredMessage, text: str, meta: dict[str, Any]) -> StoredMessage:
    return message._replace(text=text, meta=compact_json(meta) if meta else None)


def edited(message: StoredMessage, text: str, ts: int) -> StoredMessage:
    """The message with its new text, marked edited at ``ts``."""
    return _with(message, text, {**state(message), "edited": ts})


def deleted(message: StoredMessage) -> StoredMessage:
    """The message deleted: no text, no reactions (nothing of it is kept but that it was there)."""
    return _with(message, "", {"deleted": True})


def reacted(message: StoredMessage, emoji: str, nick: str, on: bool, ref: Ref | None = None) -> StoredMessage | None:
    """The message with ``nick``'s reaction added (``on``) or taken back; None if that changes nothing.

    Each person counts once per emoji, whatever the case of their nick.
    """
    meta = state(message)
    reactions: dict[str, list[str]] = {k: list(v) for k, v in meta.get("reactions", {}).items()}
    who = reactions.get(emoji, [])
    key = account_key(nick)
    present = any(account_key(n) == key for n in who)
    if present == on:
        return None
    if on:
        if emoji not in reactions and len(reactions) >= MAX_EMOJI_KINDS:
            raise ChatError("invalid_emoji", f"a message holds at most {MAX_EMOJI_KINDS} different emoji", ref)
        reactions[emoji] = [*who, nick]
    else:
        reactions[emoji] = [n for n in who if account_key(n) != key]
        if not reactions[emoji]:
            del reactions[emoji]
    if reactions:
        meta["reactions"] = reactions
    else:
        meta.pop("reactions", None)
    return _with(message, message.text, meta)


def amendment(
    target: StoredMessage,
    kind: str,
    nick: str,
    author: str,
    ts: int,
    text: str = "",
    meta: dict[str, Any] | None = None,
    ref: Ref | None = None,
) -> StoredMessage:
    """The entry that records an amendment of ``target`` in its room's sequence (the store gives it its id).

    ``ref`` is the request's: it comes back in the ``update``, which answers it.
    """
    return StoredMessage(
        target.room, 0, nick, text, ts, ref, author, kind, target.id, compact_json(meta) if meta else None
    )
