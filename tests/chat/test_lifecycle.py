"""A message's next version after an edit, a deletion or a reaction (app/chat/lifecycle.py, docs/protocol.md §3.2)."""

from __future__ import annotations

import json

import pytest

from app.chat import lifecycle
from app.chat.protocol import ChatError
from app.chat.store import StoredMessage

SENT = StoredMessage("lobby", 7, "alice", "teh text", 1000, "m1", "account:alice")


def test_an_edit_replaces_the_text_and_marks_when_it_was_edited() -> None:
    edited = lifecycle.edited(SENT, "the text", 2000)
    assert (edited.text, json.loads(edited.meta or "")) == ("the text", {"edited": 2000})
    assert edited._replace(text=SENT.text, meta=None) == SENT  # nothing else changes: id, sender, ref, author


def test_a_deletion_keeps_nothing_of_the_text_nor_the_reactions() -> None:
    reacted = lifecycle.reacted(SENT, "👍", "bob", True)
    assert reacted is not None
    gone = lifecycle.deleted(lifecycle.edited(reacted, "x", 5))
    assert (gone.text, json.loads(gone.meta or "")) == ("", {"deleted": True})
    assert lifecycle.is_deleted(gone) and not lifecycle.is_deleted(SENT)


def test_each_person_counts_once_per_emoji_whatever_the_case_of_their_nick() -> None:
    once = lifecycle.reacted(SENT, "👍", "bob", True)
    assert once is not None
    assert lifecycle.reacted(once, "👍", "BOB", True) is None  # as asked already: nothing to store
    twice = lifecycle.reacted(once, "👍", "carol", True)
    assert twice is not None and lifecycle.state(twice)["reactions"] == {"👍": ["bob", "carol"]}
    back = lifecycle.reacted(twice, "👍", "Bob", False)
    assert back is not None and lifecycle.state(back)["reactions"] == {"👍": ["carol"]}
    none = lifecycle.reacted(back, "👍", "carol", False)
    assert none is not None and none.meta is None  # no reaction left, no state: as never changed
    assert lifecycle.reacted(SENT, "👍", "bob", False) is None


def test_a_message_holds_at_most_twenty_different_emoji() -> None:
    message = SENT
    for n in range(lifecycle.MAX_EMOJI_KINDS):
        changed = lifecycle.reacted(message, chr(0x1F600 + n), "bob", True)
        assert changed is not None
        message = changed
    with pytest.raises(ChatError) as refused:
        lifecycle.reacted(message, "🎉", "bob", True, ref="r")
    assert (refused.value.code, refused.value.ref) == ("invalid_emoji", "r")
    assert lifecycle.reacted(message, chr(0x1F600), "carol", True) is not None  # one already there: still counts


def test_an_amendment_entry_names_its_target_and_who_did_it() -> None:
    entry = lifecycle.amendment(SENT, "react", "bob", "account:bob", 3000, meta={"emoji": "👍", "on": True})
    assert (entry.room, entry.kind, entry.target, entry.nick, entry.author, entry.ts) == (
        "lobby",
        "react",
        7,
        "bob",
        "account:bob",
        3000,
    )
    assert json.loads(entry.meta or "") == {"emoji": "👍", "on": True}
