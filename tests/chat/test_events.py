"""The server's events (app/chat/events.py): each encoder writes what the json module would, compactly."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.chat import events
from app.chat.store import Replay, StoredMessage


def decoded(message: events.Outgoing) -> Any:
    return json.loads(message.data)


def compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def test_a_message_has_its_ref_only_when_given() -> None:
    message = StoredMessage("lobby", 7, "ann", "hello", 1_700_000_000_000)
    assert events.message_fields(message) == {
        "type": "message",
        "room": "lobby",
        "id": 7,
        "from": "ann",
        "text": "hello",
        "ts": 1_700_000_000_000,
    }
    assert events.message_fields(message._replace(ref="c-1"))["ref"] == "c-1"
    assert decoded(events.message(message._replace(ref=0)))["ref"] == 0


@settings(max_examples=300, deadline=None)
@given(
    room=st.text(min_size=1),
    message_id=st.integers(min_value=1, max_value=2**53),
    nick=st.text(min_size=1),
    text=st.text(),
    ts=st.integers(min_value=0, max_value=2**53),
    ref=st.none() | st.text() | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1),
)
def test_a_message_is_written_out_as_the_json_module_encodes_its_event_before_and_after_its_id_is_known(
    room: str, message_id: int, nick: str, text: str, ts: int, ref: str | int | None
) -> None:
    message = StoredMessage(room, message_id, nick, text, ts, ref)
    assert events.message_json(message) == compact(events.message_fields(message))
    assert events.message(message).data == events.message_json(message).encode()
    head, tail = events.message_json_around_id(room, nick, text, ts, ref)  # what Redis's store script completes
    assert f"{head}{message_id}{tail}" == events.message_json(message)


@pytest.mark.parametrize(("truncated", "reset"), [(False, False), (True, False), (False, True)])
def test_joined_splices_the_history_into_the_same_json_as_a_dict_would_give(truncated: bool, reset: bool) -> None:
    history = [StoredMessage("lobby", i, "ann", f'm{i} "quoted" ünï', i * 10, ref=i) for i in (3, 4)]
    event = events.joined("lobby", ["ann", "bob"], Replay("e1", 4, history), truncated, reset)
    expected: dict[str, Any] = {
        "type": "joined",
        "room": "lobby",
        "members": ["ann", "bob"],
        "epoch": "e1",
        "history": [events.message_fields(m) for m in history],
    }
    if truncated:
        expected["truncated"] = True
    if reset:
        expected["reset"] = True
    assert event.data.decode() == compact(expected)


def test_every_other_event_is_its_documented_object() -> None:
    assert decoded(events.hello("ann", "c1")) == {"type": "hello", "nick": "ann", "conn": "c1"}
    assert decoded(events.presence("lobby", "ann", "leave", 2)) == {
        "type": "presence",
        "room": "lobby",
        "nick": "ann",
        "event": "leave",
        "count": 2,
    }
    assert decoded(events.left("lobby")) == {"type": "left", "room": "lobby"}
    assert decoded(events.rooms([{"name": "lobby", "members": 2}])) == {
        "type": "rooms",
        "rooms": [{"name": "lobby", "members": 2}],
    }
    assert decoded(events.error("not_joined", "join first", 5)) == {
        "type": "error",
        "code": "not_joined",
        "message": "join first",
        "ref": 5,
    }
    assert "ref" not in decoded(events.error("invalid_json", "JSON objects"))
    assert decoded(events.system("maintenance")) == {"type": "system", "text": "maintenance"}
    assert decoded(events.system("maintenance", "lobby"))["room"] == "lobby"
    assert decoded(events.reset("lobby", "e2")) == {"type": "reset", "room": "lobby", "epoch": "e2"}
    assert events.hello("ünï", "c1").data.decode() == '{"type":"hello","nick":"ünï","conn":"c1"}', "UTF-8, compact"


# -- amendments ------------------------------------------------------------------------


def test_a_message_without_meta_is_written_out_byte_for_byte_as_before_amendments_existed() -> None:
    message = StoredMessage("lobby", 7, "ann", 'say "hi" ünï', 1_700_000_000_000, "c-1", author="account:ann")
    assert events.message_json(message) == (
        '{"type":"message","room":"lobby","id":7,"from":"ann","text":"say \\"hi\\" ünï","ts":1700000000000,"ref":"c-1"}'
    )
    assert "author" not in events.message_fields(message), "who sent it is the server's business"


def test_an_amended_message_shows_when_it_was_edited_its_reactions_and_whether_it_was_deleted() -> None:
    original = StoredMessage("lobby", 3, "ann", "hello there", 10, author="account:ann")
    edited = original._replace(meta='{"edited":20,"reactions":{"👍":["bob","cy"]},"private":1}')
    assert decoded(events.message(edited)) == {
        "type": "message",
        "room": "lobby",
        "id": 3,
        "from": "ann",
        "text": "hello there",
        "ts": 10,
        "edited": 20,
        "reactions": {"👍": ["bob", "cy"]},
    }
    deleted = original._replace(meta='{"deleted":30,"reactions":{}}')
    assert decoded(events.message(deleted)) == {**events.message_fields(original), "text": "", "deleted": True}
    no_reactions = original._replace(meta='{"reactions":{}}')
    assert events.message_json(no_reactions) == events.message_json(original), "an empty reactions object is not shown"
    for message in (edited, deleted, no_reactions):
        assert events.message_json(message) == compact(events.message_fields(message))


def test_an_update_carries_the_action_its_actor_and_the_original_as_it_is_now() -> None:
    original = StoredMessage("lobby", 3, "ann", "hello, corrected", 10, meta='{"edited":20}')
    entry = StoredMessage("lobby", 9, "ann", "hello, corrected", 20, None, "account:ann", "edit", 3, None)
    assert decoded(events.update(entry, original)) == {
        "type": "update",
        "room": "lobby",
        "id": 9,
        "target": 3,
        "action": "edit",
        "from": "ann",
        "ts": 20,
        "message": decoded(events.message(original)),
    }
    assert events.update_json(entry, original) == compact(events.update_fields(entry, original))
    head, tail = events.update_json_around_id(entry, original)  # what Redis's amend script completes
    assert f"{head}9{tail}" == events.update_json(entry, original)


def test_a_reaction_update_says_which_emoji_and_whether_it_was_added_or_taken_back() -> None:
    original = StoredMessage("lobby", 3, "ann", "hello", 10, meta='{"reactions":{"👍":["bob"]}}')
    entry = StoredMessage("lobby", 4, "bob", "", 20, None, "account:bob", "react", 3, '{"emoji":"👍","on":true}')
    event = decoded(events.update(entry, original))
    assert (event["action"], event["emoji"], event["on"]) == ("react", "👍", True)
    assert event["message"]["reactions"] == {"👍": ["bob"]}
    assert events.update_json(entry, original) == compact(events.update_fields(entry, original))


def test_joined_renders_amendment_entries_as_updates_of_their_targets_and_leaves_out_those_without() -> None:
    original = StoredMessage("lobby", 1, "ann", "new text", 10, meta='{"edited":20}')
    edit = StoredMessage("lobby", 3, "ann", "new text", 20, kind="edit", target=1)
    orphan = StoredMessage("lobby", 4, "bob", "", 21, kind="delete", target=2)
    history = [StoredMessage("lobby", 2, "bob", "hi", 11), edit, orphan]
    event = decoded(events.joined("lobby", [], Replay("e1", 4, history), False, False, targets={1: original}))
    assert event["history"] == [events.message_fields(history[0]), events.update_fields(edit, original)]
    assert decoded(events.joined("lobby", [], Replay("e1", 4, history), False, False))["history"] == [
        events.message_fields(history[0])
    ]
