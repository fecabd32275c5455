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
