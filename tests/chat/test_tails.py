"""The history's tail cache on its own: what it holds, how an amendment replaces a message, its bounds."""

from __future__ import annotations

import pytest

from app.chat.store import StoredMessage
from app.chat.tails import MESSAGE_OVERHEAD, TailCache


def msg(room: str, message_id: int, text: str = "hi", meta: str | None = None) -> StoredMessage:
    return StoredMessage(room, message_id, "ann", text, message_id, None, "s-ann", None, None, meta)


def messages(room: str, first: int, last: int) -> list[StoredMessage]:
    return [msg(room, i) for i in range(first, last + 1)]


def ids(found: list[StoredMessage] | None) -> list[int] | None:
    return None if found is None else [m.id for m in found]


def test_a_started_tail_answers_what_it_holds_and_nothing_older() -> None:
    cache = TailCache(size=10, rooms=4, budget=10**6)
    cache.start("a", messages("a", 1, 5))
    assert ids(cache.after("a", 0, 100)) == [1, 2, 3, 4, 5]
    assert ids(cache.after("a", 2, 2)) == [3, 4]
    assert ids(cache.after("a", 5, 10)) == []
    assert cache.after("b", 0, 10) is None
    cache.start("b", messages("b", 21, 30))
    assert cache.after("b", 19, 10) is None, "message 20 is older than the tail"
    assert ids(cache.after("b", 20, 10)) == list(range(21, 31))


def test_appended_messages_keep_the_last_size_of_a_room() -> None:
    cache = TailCache(size=3, rooms=4, budget=10**6)
    cache.start("a", [msg("a", 1)])
    for i in range(2, 7):
        cache.append(msg("a", i))
    cache.append(msg("b", 1))  # not cached: ignored
    assert ids(cache.after("a", 3, 10)) == [4, 5, 6]
    assert cache.after("a", 2, 10) is None
    assert "b" not in cache
    assert cache.used_bytes == 3 * (MESSAGE_OVERHEAD + 2)


def test_a_rewrite_replaces_the_cached_version_so_reads_show_only_the_new_text() -> None:
    cache = TailCache(size=10, rooms=4, budget=10**6)
    cache.start("a", messages("a", 1, 3))
    edited = msg("a", 2, "new text", '{"edited":5}')
    cache.rewrite(edited)
    cache.rewrite(msg("a", 9, "not cached"))  # beyond the tail: nothing to replace
    assert [m.text for m in cache.after("a", 0, 10) or []] == ["hi", "new text", "hi"]
    assert cache.get("a", [2]) == {2: edited}
    assert cache.used_bytes == 3 * (MESSAGE_OVERHEAD + 2) + len("new text") - 2 + len('{"edited":5}')


def test_get_answers_only_when_the_tail_reaches_back_to_the_lowest_id_asked() -> None:
    cache = TailCache(size=10, rooms=4, budget=10**6)
    cache.start("a", messages("a", 5, 8))
    assert cache.get("a", [6, 8]) == {6: msg("a", 6), 8: msg("a", 8)}
    assert cache.get("a", [7, 12]) == {7: msg("a", 7)}, "not acknowledged yet: absent"
    assert cache.get("a", [4, 6]) is None
    assert cache.get("z", [1]) is None


def test_the_least_recently_used_rooms_go_past_the_room_bound() -> None:
    cache = TailCache(size=10, rooms=2, budget=10**6)
    cache.start("a", messages("a", 1, 2))
    cache.start("b", messages("b", 1, 2))
    assert cache.after("a", 0, 10) is not None  # a is now the most recently used
    cache.start("c", messages("c", 1, 2))
    assert "b" not in cache
    assert "a" in cache and "c" in cache
    assert cache.used_bytes == 4 * (MESSAGE_OVERHEAD + 2)


def test_the_least_recently_used_rooms_go_past_the_byte_budget() -> None:
    each = MESSAGE_OVERHEAD + 2
    cache = TailCache(size=100, rooms=100, budget=10 * each)
    cache.start("a", messages("a", 1, 4))
    cache.start("b", messages("b", 1, 4))
    for i in range(5, 8):
        cache.append(msg("b", i))  # 11 messages in all: over the budget, a goes
    assert "a" not in cache
    assert ids(cache.after("b", 0, 100)) == list(range(1, 8))
    assert cache.used_bytes == 7 * each <= cache.budget


def test_a_bound_below_one_is_refused() -> None:
    with pytest.raises(ValueError):
        TailCache(size=0, rooms=1, budget=1)
