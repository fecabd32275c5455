"""RedisHistory against the machine's Redis (a key prefix per test): amendments, the overlay, authors."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import gevent
import pytest
import redis

from app.chat import events
from app.chat.redis_history import RedisHistory
from app.chat.redis_link import RedisLink
from app.chat.store import Conflict, Duplicate, HistoryError, StoredMessage
from tests.support.redis import SHARED_REDIS
from tests.support.timeouts import scaled

Result = StoredMessage | Duplicate | HistoryError


@pytest.fixture
def history(prefix: str) -> Iterator[RedisHistory]:
    store = RedisHistory(RedisLink(SHARED_REDIS, prefix), stream_length=100)
    store.open()
    with gevent.Timeout(scaled(10)):
        yield store
    store.close()


def stored(history: RedisHistory, *submissions: tuple[str, str, str | None]) -> list[StoredMessage]:
    """Submit (nick, text, author) messages to room "a"; the messages as stored."""
    results: list[Result] = []
    for nick, text, author in submissions:
        history.submit("a", nick, text, 1000, None, results.append, author=author)
    history.flush()
    assert all(isinstance(result, StoredMessage) for result in results), results
    return results  # type: ignore[return-value]


def amended(history: RedisHistory, target: StoredMessage, expected: str | None, entry: StoredMessage) -> Result:
    results: list[Result] = []
    history.amend(target, expected, entry, results.append)
    history.flush()
    (result,) = results
    return result


def edit_of(original: StoredMessage, text: str) -> tuple[StoredMessage, StoredMessage]:
    return original._replace(text=text, meta='{"edited":2000}'), StoredMessage(
        "a", 0, original.nick, text, 2000, None, "account:ann", "edit", original.id, None
    )


def every_read(history: RedisHistory, message_id: int) -> list[StoredMessage]:
    return [
        next(m for m in history.recent("a", 50) if m.id == message_id),
        next(m for m in history.since("a", 0) if m.id == message_id),
        next(m for m in history.replay("a", None, 50).messages if m.id == message_id),
        next(m for m in history.replay("a", 0, 50).messages if m.id == message_id),
        history.get("a", [message_id])[message_id],
    ]


def test_the_author_is_stored_with_the_message_and_never_in_its_event(history: RedisHistory, prefix: str) -> None:
    (message,) = stored(history, ("ann", "hi", "account:ann"))
    assert message.author == "account:ann"
    assert history.recent("a") == [message]
    raw = redis.Redis.from_url(SHARED_REDIS).xrange(f"{prefix}:stream:a")
    assert b"account:ann" not in raw[0][1][b"m"]


def test_an_amendment_gets_the_next_id_and_every_read_shows_the_rewritten_original(history: RedisHistory) -> None:
    original, _ = stored(history, ("ann", "helo", "account:ann"), ("bob", "hi", None))
    new_version, entry = edit_of(original, "hello")
    result = amended(history, new_version, None, entry)
    assert result == StoredMessage("a", 3, "ann", "hello", 2000, None, "account:ann", "edit", 1, None)
    for read in every_read(history, 1):
        assert read == StoredMessage("a", 1, "ann", "hello", 1000, None, "account:ann", None, None, '{"edited":2000}')
    assert history.since("a", 2) == [result]
    assert history.get("a", [3, 99]) == {3: result}
    assert history.last_id("a") == 3


def test_an_amendment_is_published_on_the_events_channel_as_its_update_event(
    history: RedisHistory, prefix: str
) -> None:
    (original,) = stored(history, ("ann", "nice", "account:ann"))
    subscriber = redis.Redis.from_url(SHARED_REDIS).pubsub(ignore_subscribe_messages=True)
    subscriber.subscribe(f"{prefix}:events")
    try:
        reacted = original._replace(meta='{"reactions":{"👍":["bob"]}}')
        entry = StoredMessage("a", 0, "bob", "", 1500, None, "account:bob", "react", 1, '{"emoji":"👍","on":true}')
        result = amended(history, reacted, None, entry)
        assert isinstance(result, StoredMessage)
        reply = None
        deadline = time.monotonic() + scaled(5)
        while reply is None and time.monotonic() < deadline:  # the subscription's confirmation comes first
            reply = subscriber.get_message(timeout=0.5)
    finally:
        subscriber.close()
    assert reply is not None
    room, exclude, message_id, epoch, body = reply["data"].split(b"\n", 4)
    assert (room, exclude, int(message_id), epoch.decode()) == (b"a", b"", 2, history.epoch("a"))
    assert body.decode() == events.update_json(result, reacted)
    assert json.loads(body)["message"]["reactions"] == {"👍": ["bob"]}
    assert history.get("a", [2])[2] == result, "the entry reads back as it was given"


def test_an_amendment_against_a_stale_meta_conflicts_and_appends_nothing(history: RedisHistory) -> None:
    (original,) = stored(history, ("ann", "hi", None))
    first, entry = edit_of(original, "hi!")
    assert isinstance(amended(history, first, None, entry), StoredMessage)
    second, entry = edit_of(original, "hi?")
    assert isinstance(amended(history, second, None, entry), Conflict)
    assert history.last_id("a") == 2
    assert [m.id for m in stored(history, ("bob", "next", None))] == [3], "no id lost to the conflict"
    third, entry = edit_of(first, "hi, all")
    assert isinstance(amended(history, third._replace(meta=None), first.meta, entry), StoredMessage)
    assert history.get("a", [1])[1].text == "hi, all"
    fourth, entry = edit_of(first, "again")
    assert isinstance(amended(history, fourth, first.meta, entry), Conflict), "its meta was set back to None"
    assert isinstance(amended(history, fourth, None, entry), StoredMessage)


def test_amending_a_missing_message_or_an_amendment_entry_conflicts(history: RedisHistory) -> None:
    (original,) = stored(history, ("ann", "hi", None))
    new_version, entry = edit_of(original._replace(id=7), "ghost")
    assert isinstance(amended(history, new_version, None, entry), Conflict)
    new_version, entry = edit_of(original, "real")
    amendment = amended(history, new_version, None, entry)
    assert isinstance(amendment, StoredMessage)
    new_version, entry = edit_of(amendment, "edit of an edit")
    assert isinstance(amended(history, new_version, None, entry), Conflict)
    assert history.last_id("a") == 2


def test_overlay_fields_of_messages_trimmed_from_the_stream_are_swept(history: RedisHistory, prefix: str) -> None:
    client = redis.Redis.from_url(SHARED_REDIS)
    overlay = f"{prefix}:overlay:a"
    for i in range(300):  # each an original and its edit: the stream (about 100 kept) trims the oldest
        (message,) = stored(history, ("ann", f"m{i}", None))
        new_version, entry = edit_of(message, f"m{i}!")
        assert isinstance(amended(history, new_version, None, entry), StoredMessage)
        assert client.hlen(overlay) <= 4 * 100 + 2
    assert history.get("a", [1]) == {}, "trimmed, overlay or not"
    assert not client.hexists(overlay, "1"), "swept"
    (last,) = history.get("a", [599]).values()
    assert last.text == "m299!"


def test_a_retry_is_answered_with_the_original_as_stored_author_included(history: RedisHistory) -> None:
    results: list[Result] = []
    for _ in range(2):
        history.submit("a", "ann", "once", 1000, "r-1", results.append, once=True, author="account:ann")
        history.flush()
    first, retry = results
    assert retry == Duplicate(StoredMessage("a", 1, "ann", "once", 1000, "r-1", "account:ann"))
    assert first == retry.message


def test_a_send_with_a_ref_is_known_as_sent_for_its_retries_on_every_process(prefix: str) -> None:
    results: list[Result] = []
    first, second = (RedisHistory(RedisLink(SHARED_REDIS, prefix)) for _ in range(2))
    for history in (first, second):
        history.open()
    try:
        assert not second.sent("a", "ann", "r-1")
        first.submit("a", "ann", "once", 1000, "r-1", results.append, once=True)
        first.flush()
        assert isinstance(results[0], StoredMessage)
        assert second.sent("a", "ann", "r-1")  # the other process knows: slow mode lets the retry through
        assert not second.sent("a", "bob", "r-1") and not second.sent("b", "ann", "r-1")
    finally:
        for history in (first, second):
            history.close()
