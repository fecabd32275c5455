"""The replayed events' JSON cache on its own: encoded once per version, never an old version, bounded."""

from __future__ import annotations

import json

import pytest

from app.chat import encoded as encoded_module
from app.chat import events
from app.chat.encoded import ENTRY_OVERHEAD, EncodedHistory
from app.chat.store import Replay, StoredMessage


def msg(message_id: int, text: str = "hi", meta: str | None = None, room: str = "a") -> StoredMessage:
    return StoredMessage(room, message_id, "ann", text, 1000 + message_id, None, "s-ann", None, None, meta)


def entry(message_id: int, target: int, kind: str = "edit", meta: str | None = None) -> StoredMessage:
    return StoredMessage("a", message_id, "ann", "", 2000, None, "s-ann", kind, target, meta)


@pytest.fixture
def encodes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The ids of the messages whose ``message`` JSON gets encoded."""
    seen: list[int] = []

    def counting(stored: StoredMessage) -> str:
        seen.append(stored.id)
        return events.message_json(stored)

    monkeypatch.setattr(encoded_module, "message_json", counting)
    return seen


def test_a_replay_is_each_messages_event_json_and_a_second_replay_encodes_nothing(encodes: list[int]) -> None:
    cache = EncodedHistory()
    messages = [msg(1), msg(2, 'é ✓ "quoted"'), msg(3)]
    first = cache.history("a", messages, {})
    assert first == [events.message_json(m).encode() for m in messages]
    second = cache.history("a", messages, {})
    assert all(a is b for a, b in zip(first, second, strict=True))
    assert encodes == [1, 2, 3]


def test_a_version_read_again_from_the_database_is_equal_so_its_json_is_reused(encodes: list[int]) -> None:
    cache = EncodedHistory()
    cache.history("a", [msg(1)], {})
    assert cache.history("a", [StoredMessage._make(tuple(msg(1)))], {}) == [events.message_json(msg(1)).encode()]
    assert encodes == [1]


def test_an_edited_or_deleted_message_is_encoded_again_and_never_shows_its_old_text(encodes: list[int]) -> None:
    cache = EncodedHistory()
    cache.history("a", [msg(1, "teh draft"), msg(2, "regrettable")], {})
    edited, deleted = msg(1, "the draft", '{"edited":2000}'), msg(2, "regrettable", '{"deleted":true}')
    (first, second) = cache.history("a", [edited, deleted], {})
    assert json.loads(first)["text"] == "the draft" and json.loads(first)["edited"] == 2000
    assert json.loads(second)["text"] == "" and json.loads(second)["deleted"] is True
    assert encodes == [1, 2, 1, 2]


def test_a_message_of_another_epoch_with_the_same_id_is_not_mistaken_for_the_old_one() -> None:
    cache = EncodedHistory()
    cache.history("a", [msg(1, "before the restart")], {})
    (item,) = cache.history("a", [msg(1, "after the restart")], {})
    assert json.loads(item)["text"] == "after the restart"


def test_an_amendment_entry_is_its_update_with_the_originals_current_version_or_left_out() -> None:
    cache = EncodedHistory()
    original, edit = msg(1, "new", '{"edited":2000}'), entry(2, 1)
    (item,) = cache.history("a", [edit], {1: original})
    assert item == events.update_json(edit, original).encode()
    reacted = original._replace(meta='{"edited":2000,"reactions":{"👍":["bob"]}}')
    (again,) = cache.history("a", [edit], {1: reacted})
    assert json.loads(again)["message"]["reactions"] == {"👍": ["bob"]}, "its original changed: encoded again"
    assert cache.history("a", [edit], {}) == [], "its original is gone"


def test_forget_drops_an_originals_json_and_remember_keeps_a_broadcast_only_for_replayed_rooms(
    encodes: list[int],
) -> None:
    cache = EncodedHistory()
    cache.history("a", [msg(1)], {})
    cache.forget("a", 1)
    cache.forget("elsewhere", 1)
    cache.remember(msg(2), b"broadcast-2")
    cache.remember(msg(1, room="b"), b"not replayed lately")
    assert cache.history("a", [msg(1), msg(2)], {}) == [events.message_json(msg(1)).encode(), b"broadcast-2"]
    assert encodes == [1, 1]
    assert "b" not in cache


def test_joined_splices_the_encoded_items_as_it_would_encode_them() -> None:
    original, edit = msg(1, "new", '{"edited":2000}'), entry(2, 1)
    replay = Replay("e1", 2, [original, edit])
    items = EncodedHistory().history("a", replay.messages, {1: original})
    spliced = events.joined("a", ["ann"], replay, True, False, history=items)
    assert spliced.data == events.joined("a", ["ann"], replay, True, False, targets={1: original}).data
    assert [m["id"] for m in json.loads(spliced.data)["history"]] == [1, 2]


def test_a_room_keeps_at_most_per_room_entries_the_oldest_going_first(encodes: list[int]) -> None:
    cache = EncodedHistory(per_room=3)
    cache.history("a", [msg(i) for i in range(1, 6)], {})
    encodes.clear()
    cache.history("a", [msg(i) for i in range(3, 6)], {})
    assert encodes == []
    cache.history("a", [msg(1)], {})
    assert encodes == [1]
    assert cache.used_bytes == sum(ENTRY_OVERHEAD + len(events.message_json(msg(i))) for i in (1, 4, 5))


def test_the_least_recently_replayed_rooms_go_past_the_room_bound_and_the_budget() -> None:
    size = ENTRY_OVERHEAD + len(events.message_json(msg(1)))
    cache = EncodedHistory(rooms=2, budget=11 * size)
    for room in ("a", "b", "c"):
        cache.history(room, [msg(1, room=room)], {})
    assert "a" not in cache and "b" in cache and "c" in cache
    cache.history("b", [msg(i, room="b") for i in range(1, 10)], {})  # 10 entries in all: within the budget
    assert "c" in cache
    cache.history("b", [msg(10, room="b")], {})  # 11, one a byte longer: over, the least recently replayed goes
    assert "c" not in cache and "b" in cache
    assert cache.used_bytes <= cache.budget


def test_a_bound_below_one_is_refused() -> None:
    with pytest.raises(ValueError):
        EncodedHistory(per_room=0)
