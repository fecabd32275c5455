"""SQLiteHistory against real SQLite files: ids, group commit, reads, durability, failure, backpressure."""

from __future__ import annotations

import logging
import os
import selectors
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import gevent
import pytest

from app.chat import sqlite_history as history_module
from app.chat.sqlite_history import SQLiteHistory
from app.chat.store import Conflict, HistoryError, StoredMessage
from tests.support.timeouts import scaled

ROOT = Path(__file__).resolve().parents[2]


class Recorder:
    """An ``on_stored`` callback that keeps what it was given, in order."""

    def __init__(self) -> None:
        self.results: list[StoredMessage | HistoryError] = []

    def __call__(self, result: StoredMessage | HistoryError) -> None:
        self.results.append(result)

    @property
    def stored(self) -> list[StoredMessage]:
        return [r for r in self.results if isinstance(r, StoredMessage)]

    @property
    def errors(self) -> list[HistoryError]:
        return [r for r in self.results if isinstance(r, HistoryError)]


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    return str(tmp_path / "data" / "history.db")  # open() creates the missing directory


@pytest.fixture
def history(db_path: str) -> Iterator[SQLiteHistory]:
    store = SQLiteHistory(db_path)
    store.open()
    with gevent.Timeout(scaled(10)):
        yield store
    store.close()


def rows_on_disk(path: str, room: str) -> list[int]:
    """The ids of the room as a fresh connection sees them."""
    with sqlite3.connect(path) as conn:
        ids = [row[0] for row in conn.execute("SELECT id FROM messages WHERE room = ? ORDER BY id", (room,))]
    conn.close()
    return ids


def hold_write_lock(path: str) -> sqlite3.Connection:
    """Another connection that holds the write lock until it commits: a slow disk, made deterministic."""
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    return blocker


def submit_concurrently(history: SQLiteHistory, room: str, senders: int, each: int, on_stored: Recorder) -> list[int]:
    """``senders`` greenlets each submit ``each`` messages, yielding between submissions."""
    returned: list[int] = []

    def sender(n: int) -> None:
        for i in range(each):
            returned.append(history.submit(room, f"user{n}", f"message {i}", 1000 + i, f"r{n}-{i}", on_stored))
            gevent.sleep(0)

    gevent.joinall([gevent.spawn(sender, n) for n in range(senders)], raise_error=True)
    history.flush()
    return returned


# -- ids and the message value -------------------------------------------------


def test_ids_start_at_1_and_increase_per_room_independently(history: SQLiteHistory) -> None:
    done = Recorder()
    ids = [history.submit(room, "ann", "hi", 1, None, done) for room in ["a", "a", "b", "a", "b"]]
    assert ids == [1, 2, 1, 3, 2]
    assert history.last_id("a") == 3
    assert history.last_id("b") == 2
    assert history.last_id("c") == 0
    assert history.room_names() == ["a", "b"]
    history.flush()
    assert [(m.room, m.id) for m in done.stored] == [("a", 1), ("a", 2), ("b", 1), ("a", 3), ("b", 2)]


def test_string_and_integer_refs_come_back_from_the_database_with_their_type(db_path: str) -> None:
    first = SQLiteHistory(db_path)
    first.open()
    for ref in ["42", 42, -7, 2**53 - 1, None, ""]:
        first.submit("a", "ann", "text", 1, ref, Recorder())
    first.close()

    second = SQLiteHistory(db_path)  # a new process: nothing from memory, every row read back
    second.open()
    refs = [m.ref for m in second.since("a", 0)]
    assert refs == ["42", 42, -7, 2**53 - 1, None, ""]
    assert [type(ref) for ref in refs] == [str, int, int, int, type(None), str]
    assert [m.ref for m in second.recent("a", 3)] == [2**53 - 1, None, ""]
    second.close()


def test_on_stored_gets_the_message_as_given(history: SQLiteHistory) -> None:
    done = Recorder()
    history.submit("lobby", "ann", "hello", 42, "c-1", done)
    history.submit("lobby", "bob", "hey", 43, None, done)
    history.flush()
    assert done.results == [
        StoredMessage("lobby", 1, "ann", "hello", 42, "c-1"),
        StoredMessage("lobby", 2, "bob", "hey", 43, None),
    ]


# -- group commit ----------------------------------------------------------------


def test_on_stored_is_called_only_after_the_row_is_committed(history: SQLiteHistory, db_path: str) -> None:
    seen_on_disk: list[bool] = []

    def on_stored(result: StoredMessage | HistoryError) -> None:
        assert isinstance(result, StoredMessage)
        seen_on_disk.append(result.id in rows_on_disk(db_path, "lobby"))

    for i in range(10):
        history.submit("lobby", "ann", f"m{i}", i, None, on_stored)
        gevent.sleep(0)
    history.flush()
    assert seen_on_disk == [True] * 10


def test_callbacks_run_in_id_order_for_concurrent_submitters(history: SQLiteHistory) -> None:
    done = Recorder()
    returned = submit_concurrently(history, "lobby", senders=50, each=20, on_stored=done)
    assert [m.id for m in done.results if isinstance(m, StoredMessage)] == list(range(1, 1001))
    assert sorted(returned) == list(range(1, 1001))
    assert [m.id for m in history.since("lobby", 0, limit=2000)] == list(range(1, 1001))


def test_group_commit_writes_many_messages_per_transaction(history: SQLiteHistory) -> None:
    done = Recorder()
    submit_concurrently(history, "lobby", senders=100, each=10, on_stored=done)
    assert len(done.stored) == 1000
    assert 0 < history.commits < 1000 / 5


def test_batches_are_at_most_batch_size(db_path: str) -> None:
    store = SQLiteHistory(db_path, batch_size=10)
    store.open()
    done = Recorder()
    for i in range(95):
        store.submit("lobby", "ann", f"m{i}", i, None, done)
    store.close()
    assert len(done.stored) == 95
    assert store.commits == 10


def test_the_hub_keeps_running_while_a_big_batch_commits(db_path: str) -> None:
    store = SQLiteHistory(db_path, synchronous="FULL", batch_size=5000)
    store.open()
    done = Recorder()
    ticks: list[float] = []

    def ticker() -> None:
        while True:
            ticks.append(time.monotonic())
            gevent.sleep(0.001)

    text = "x" * 2000
    for i in range(5000):
        store.submit("big", "ann", text, i, None, done)
    running = gevent.spawn(ticker)
    started = time.monotonic()
    store.flush()
    took = time.monotonic() - started
    running.kill()
    store.close()
    assert len(done.stored) == 5000
    during = [t for t in ticks if t <= started + took]
    gaps = [b - a for a, b in pairwise(during)]
    assert len(during) >= 5, f"ticker ran {len(during)} times during a {took:.3f} s flush"
    assert max(gaps) < took / 2


# -- reading ---------------------------------------------------------------------


def test_recent_returns_the_last_messages_oldest_first(history: SQLiteHistory) -> None:
    for i in range(1, 11):
        history.submit("lobby", "ann", f"m{i}", i, None, Recorder())
    history.submit("other", "ann", "elsewhere", 0, None, Recorder())
    history.flush()
    assert [m.text for m in history.recent("lobby", 3)] == ["m8", "m9", "m10"]
    assert [m.id for m in history.recent("lobby")] == list(range(1, 11))
    assert history.recent("lobby", 0) == []
    assert history.recent("nowhere") == []


def test_since_returns_the_first_messages_after_an_id_oldest_first(history: SQLiteHistory) -> None:
    for i in range(1, 11):
        history.submit("lobby", "ann", f"m{i}", i, None, Recorder())
    history.flush()
    assert [m.id for m in history.since("lobby", 4)] == [5, 6, 7, 8, 9, 10]
    assert [m.id for m in history.since("lobby", 4, limit=3)] == [5, 6, 7]
    assert history.since("lobby", 10) == []
    assert history.since("nowhere", 0) == []


def test_reads_see_only_committed_messages(history: SQLiteHistory, db_path: str) -> None:
    history.submit("lobby", "ann", "committed", 1, None, Recorder())
    history.flush()
    blocker = hold_write_lock(db_path)
    try:
        done = Recorder()
        history.submit("lobby", "ann", "waiting", 2, None, done)
        gevent.sleep(0.05)  # the batch is taken and waits for the lock
        assert history.last_id("lobby") == 2
        assert [m.text for m in history.recent("lobby")] == ["committed"]
        assert [m.text for m in history.since("lobby", 0)] == ["committed"]
        assert done.results == []
    finally:
        blocker.commit()
        blocker.close()
    history.flush()
    assert [m.text for m in history.recent("lobby")] == ["committed", "waiting"]


def test_reads_show_a_committed_message_only_once_its_callback_has_run(history: SQLiteHistory, db_path: str) -> None:
    """Reader registered for live delivery, then read: each message comes once, read or live."""
    seen_by_reader: list[list[int]] = []

    def slow_broadcast(result: StoredMessage | HistoryError) -> None:
        assert isinstance(result, StoredMessage)
        # While this callback runs, the row is committed but not yet delivered.
        reader = gevent.spawn(lambda: [m.id for m in history.recent("lobby")])
        gevent.sleep(0.05)
        seen_by_reader.append(reader.get(timeout=scaled(5)))

    history.submit("lobby", "ann", "first", 1, None, Recorder())
    history.flush()
    history.submit("lobby", "ann", "second", 2, None, slow_broadcast)
    history.flush()
    assert rows_on_disk(db_path, "lobby") == [1, 2]
    assert seen_by_reader == [[1]]
    assert [m.id for m in history.recent("lobby")] == [1, 2]
    assert [m.id for m in history.since("lobby", 0)] == [1, 2]


def test_the_last_messages_of_a_busy_room_come_from_memory(monkeypatch: pytest.MonkeyPatch, db_path: str) -> None:
    monkeypatch.setattr(SQLiteHistory, "tail_size", 50)
    history = SQLiteHistory(db_path)
    history.open()
    try:
        for i in range(80):
            history.submit("lobby", "ann", f"m{i}", i, None, Recorder())
        history.flush()
        reads = history.reads
        assert [m.id for m in history.recent("lobby", 50)] == list(range(31, 81))
        assert [m.id for m in history.since("lobby", 70)] == list(range(71, 81))
        assert history.reads == reads  # a new room's tail is cached from its first message
        assert [m.id for m in history.since("lobby", 10, 5)] == [11, 12, 13, 14, 15]
        assert history.reads == reads + 1  # older than the tail: from the database
    finally:
        history.close()


def test_a_since_after_a_reconnect_of_a_thousand_messages_comes_from_memory(history: SQLiteHistory) -> None:
    for i in range(1200):
        history.submit("lobby", "ann", f"m{i}", i, None, Recorder())
    history.flush()
    reads = history.reads
    assert [m.id for m in history.since("lobby", 200)] == list(range(201, 1201))
    assert [m.id for m in history.since("lobby", 500, 10)] == list(range(501, 511))
    assert history.replay("lobby", 0, 1000).messages == history.since("lobby", 200)
    assert history.reads == reads
    assert [m.id for m in history.since("lobby", 100, 5)] == [101, 102, 103, 104, 105]
    assert history.reads == reads + 1  # older than the tail's 1000: from the database


def test_a_since_read_from_the_database_up_to_the_last_message_becomes_the_tail(db_path: str) -> None:
    first = SQLiteHistory(db_path)
    first.open()
    for i in range(300):
        first.submit("lobby", "ann", f"m{i}", i, None, Recorder())
    first.close()
    second = SQLiteHistory(db_path)
    second.open()
    try:
        reads = second.reads
        assert [m.id for m in second.since("lobby", 0, 10)] == list(range(1, 11))  # not up to the last: not kept
        assert [m.id for m in second.since("lobby", 0)] == list(range(1, 301))
        assert second.reads == reads + 2
        assert [m.id for m in second.since("lobby", 0)] == list(range(1, 301))  # the next client back
        assert [m.id for m in second.recent("lobby")] == list(range(251, 301))
        assert second.reads == reads + 2
    finally:
        second.close()


def test_a_room_without_history_and_a_caught_up_since_are_answered_without_a_read(db_path: str) -> None:
    first = SQLiteHistory(db_path)
    first.open()
    for i in range(3):
        first.submit("lobby", "ann", f"m{i}", i, None, Recorder())
    first.close()
    second = SQLiteHistory(db_path)  # the tail cache is empty: only what open() read is known
    second.open()
    try:
        reads = second.reads
        assert second.recent("new-room") == []
        assert second.since("new-room", 0) == []
        assert second.since("lobby", 3) == []
        assert second.reads == reads
        assert [m.text for m in second.since("lobby", 2)] == ["m2"]  # the database still answers the rest
    finally:
        second.close()


def test_a_reopened_room_is_read_once_then_served_from_memory(db_path: str) -> None:
    first = SQLiteHistory(db_path)
    first.open()
    for i in range(60):
        first.submit("lobby", "ann", f"m{i}", i, None, Recorder())
    first.close()
    second = SQLiteHistory(db_path)
    second.open()
    try:
        assert [m.id for m in second.recent("lobby")] == list(range(11, 61))
        reads = second.reads
        second.submit("lobby", "bob", "new", 99, None, Recorder())
        second.flush()
        assert [m.id for m in second.recent("lobby")] == list(range(12, 62))
        assert [m.text for m in second.since("lobby", 59)] == ["m59", "new"]
        assert second.reads == reads
    finally:
        second.close()


# -- durability --------------------------------------------------------------------


def test_a_new_database_has_small_pages_and_an_existing_one_keeps_its_own(tmp_path: Path) -> None:
    old = tmp_path / "old.db"
    with sqlite3.connect(old) as conn:
        conn.execute("CREATE TABLE earlier (x)")  # created with SQLite's default page size
        (default_size,) = conn.execute("PRAGMA page_size").fetchone()
    conn.close()
    for path, expected in ((tmp_path / "new.db", history_module.PAGE_SIZE), (old, default_size)):
        store = SQLiteHistory(str(path))
        store.open()
        store.submit("lobby", "ann", "hi", 1, None, Recorder())
        store.close()
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA page_size").fetchone() == (expected,)
        conn.close()
    assert default_size != history_module.PAGE_SIZE


def test_reopening_keeps_history_and_continues_ids(db_path: str) -> None:
    first = SQLiteHistory(db_path)
    first.open()
    for room in ["a", "a", "b"]:
        first.submit(room, "ann", "before", 1, "x", Recorder())
    first.close()

    second = SQLiteHistory(db_path)
    second.open()
    assert second.room_names() == ["a", "b"]
    assert second.last_id("a") == 2
    assert second.submit("a", "bob", "after", 2, None, Recorder()) == 3
    second.flush()
    assert [(m.id, m.text, m.ref) for m in second.recent("a")] == [
        (1, "before", "x"),
        (2, "before", "x"),
        (3, "after", None),
    ]
    second.close()


CHILD = """
import sys
from gevent import monkey

monkey.patch_all()

import gevent

from app.chat.sqlite_history import SQLiteHistory
from app.chat.store import StoredMessage

store = SQLiteHistory(sys.argv[1], synchronous="NORMAL")
store.open()


def acknowledged(result):
    if isinstance(result, StoredMessage):
        sys.stdout.write(f"{result.id}\\n")
        sys.stdout.flush()


def sender(n):
    for i in range(1_000_000):
        store.submit("durable", f"user{n}", f"message {i}", i, None, acknowledged)
        gevent.sleep(0)


gevent.joinall([gevent.spawn(sender, n) for n in range(10)])
"""


def read_acknowledged(proc: subprocess.Popen[bytes], wanted: int, timeout: float) -> list[int]:
    """Ids the child printed, until ``wanted`` of them or the deadline."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + timeout
    buffer = b""
    acknowledged: list[int] = []
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while len(acknowledged) < wanted and (left := deadline - time.monotonic()) > 0:
            if not selector.select(left):
                break
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            acknowledged.extend(int(line) for line in lines)
    return acknowledged


def test_acknowledged_messages_survive_kill_9(tmp_path: Path, db_path: str) -> None:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, str(script), db_path]
    with (
        open(tmp_path / "child.err", "wb") as stderr,
        subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=stderr) as proc,
    ):
        try:
            acknowledged = read_acknowledged(proc, wanted=2000, timeout=scaled(10))
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=scaled(10))
    assert proc.returncode == -signal.SIGKILL
    assert len(acknowledged) >= 2000, (tmp_path / "child.err").read_text()

    reopened = SQLiteHistory(db_path)
    reopened.open()
    try:
        stored = [m.id for m in reopened.since("durable", 0, limit=10_000_000)]
        assert set(acknowledged) <= set(stored)
        assert stored == list(range(1, len(stored) + 1))
        assert reopened.last_id("durable") == len(stored)
    finally:
        reopened.close()


# -- failure -------------------------------------------------------------------------


def reject_text(path: str, text: str) -> None:
    """Make every insert of ``text`` fail, from another connection: a deterministic failed commit."""
    with sqlite3.connect(path) as conn:
        conn.execute(
            f"CREATE TRIGGER reject BEFORE INSERT ON messages WHEN NEW.text = '{text}' "
            "BEGIN SELECT RAISE(ABORT, 'rejected by the test'); END"
        )
    conn.close()


def test_a_failed_commit_reports_history_error_and_later_ids_continue(history: SQLiteHistory, db_path: str) -> None:
    done = Recorder()
    history.submit("lobby", "ann", "fine", 1, None, done)
    history.flush()
    reject_text(db_path, "poison")

    failed = Recorder()
    assert history.submit("lobby", "ann", "good but unlucky", 2, None, failed) == 2
    assert history.submit("lobby", "ann", "poison", 3, None, failed) == 3
    history.flush()
    assert [type(r) for r in failed.results] == [HistoryError, HistoryError]
    assert "rejected by the test" in str(failed.errors[0])
    assert isinstance(failed.errors[0].__cause__, sqlite3.Error)
    assert history.last_id("lobby") == 1

    assert history.submit("lobby", "ann", "later", 4, None, done) == 2
    history.flush()
    assert [(m.id, m.text) for m in done.stored] == [(1, "fine"), (2, "later")]
    assert rows_on_disk(db_path, "lobby") == [1, 2]
    assert history.commits == 2


def test_messages_queued_behind_a_failed_batch_fail_in_its_rooms_only(history: SQLiteHistory, db_path: str) -> None:
    history.submit("a", "ann", "fine", 1, None, Recorder())
    history.flush()
    reject_text(db_path, "poison")
    done = Recorder()
    blocker = hold_write_lock(db_path)
    try:
        history.submit("a", "ann", "poison", 2, None, done)
        gevent.sleep(0.05)  # the poisoned batch is taken and waits for the lock
        history.submit("a", "ann", "behind, same room", 3, None, done)
        history.submit("b", "bob", "behind, other room", 4, None, done)
    finally:
        blocker.commit()
        blocker.close()
    history.flush()
    assert [(type(r).__name__, r.room if isinstance(r, StoredMessage) else None) for r in done.results] == [
        ("HistoryError", None),
        ("HistoryError", None),
        ("StoredMessage", "b"),
    ]
    assert history.last_id("a") == 1
    assert history.submit("a", "ann", "again", 5, None, done) == 2
    history.flush()
    assert rows_on_disk(db_path, "a") == [1, 2]
    assert rows_on_disk(db_path, "b") == [1]


def test_a_failed_first_message_leaves_the_room_without_history(history: SQLiteHistory, db_path: str) -> None:
    history.flush()
    reject_text(db_path, "poison")
    done = Recorder()
    history.submit("new", "ann", "poison", 1, None, done)
    history.flush()
    assert len(done.errors) == 1
    assert history.last_id("new") == 0
    assert history.room_names() == []


def test_a_failing_callback_does_not_stop_the_others(history: SQLiteHistory, caplog: pytest.LogCaptureFixture) -> None:
    done = Recorder()

    def broken(result: StoredMessage | HistoryError) -> None:
        raise RuntimeError("callback bug")

    history.submit("lobby", "ann", "one", 1, None, done)
    history.submit("lobby", "ann", "two", 2, None, broken)
    history.submit("lobby", "ann", "three", 3, None, done)
    with caplog.at_level(logging.ERROR, logger="app.chat.sqlite_history"):
        history.flush()
    assert [m.id for m in done.stored] == [1, 3]
    assert "on_stored callback failed for lobby#2" in caplog.text
    assert history.submit("lobby", "ann", "four", 4, None, done) == 4


def test_open_reports_an_unusable_path_as_history_error(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    store = SQLiteHistory(str(tmp_path / "a-file" / "history.db"))
    with pytest.raises(HistoryError):
        store.open()


def test_unknown_synchronous_mode_is_refused() -> None:
    with pytest.raises(ValueError):
        SQLiteHistory("x.db", synchronous="OFF")


# -- life cycle ------------------------------------------------------------------------


def test_submit_after_close_raises_history_error(db_path: str) -> None:
    store = SQLiteHistory(db_path)
    store.open()
    store.close()
    with pytest.raises(HistoryError):
        store.submit("lobby", "ann", "late", 1, None, Recorder())
    with pytest.raises(HistoryError):
        store.recent("lobby")


def test_submit_before_open_raises_history_error(db_path: str) -> None:
    with pytest.raises(HistoryError):
        SQLiteHistory(db_path).submit("lobby", "ann", "early", 1, None, Recorder())


def test_close_is_idempotent_and_stores_what_was_submitted(db_path: str) -> None:
    store = SQLiteHistory(db_path)
    store.open()
    done = Recorder()
    store.submit("lobby", "ann", "last words", 1, None, done)
    store.close()
    store.close()
    assert [m.text for m in done.stored] == ["last words"]
    assert rows_on_disk(db_path, "lobby") == [1]
    SQLiteHistory(db_path).close()  # never opened


def test_flush_waits_for_pending_callbacks(history: SQLiteHistory) -> None:
    done = Recorder()
    for i in range(100):
        history.submit("lobby", "ann", f"m{i}", i, None, done)
    assert done.results == []
    history.flush()
    assert len(done.stored) == 100
    history.flush()  # nothing pending: returns at once


def test_flush_waits_for_the_batch_being_written(history: SQLiteHistory, db_path: str) -> None:
    blocker = hold_write_lock(db_path)
    done = Recorder()
    history.submit("lobby", "ann", "slow", 1, None, done)
    gevent.sleep(0.05)  # the batch is taken and waits for the lock

    def release() -> None:
        blocker.commit()
        blocker.close()

    gevent.spawn_later(0.1, release)
    history.flush()
    assert [m.text for m in done.stored] == ["slow"]


def test_a_callback_may_submit_even_when_the_queue_is_full(db_path: str) -> None:
    store = SQLiteHistory(db_path, max_pending=1)
    store.open()
    replies = Recorder()

    def answer(result: StoredMessage | HistoryError) -> None:
        assert isinstance(result, StoredMessage)
        for _ in range(3):  # beyond max_pending: the flusher itself must not wait
            store.submit("lobby", "bot", f"re: {result.text}", result.ts, None, replies)

    store.submit("lobby", "ann", "hello", 1, None, answer)
    store.flush()
    store.flush()
    store.close()
    assert [m.id for m in replies.stored] == [2, 3, 4]


# -- backpressure --------------------------------------------------------------------


def test_a_full_queue_blocks_the_submitter_not_the_hub(db_path: str) -> None:
    store = SQLiteHistory(db_path, max_pending=5)
    store.open()
    done = Recorder()
    blocker = hold_write_lock(db_path)
    try:
        store.submit("lobby", "ann", "in flight", 0, None, done)
        gevent.sleep(0.05)  # the first batch is taken and waits for the lock
        submitted: list[int] = []

        def submitter() -> None:
            for i in range(20):
                submitted.append(store.submit("lobby", "bob", f"m{i}", i, None, done))

        ticks = 0

        def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                gevent.sleep(0.001)

        blocked, running = gevent.spawn(submitter), gevent.spawn(ticker)
        gevent.sleep(0.2)
        assert submitted == [2, 3, 4, 5, 6]
        assert not blocked.dead
        assert ticks > 20
        running.kill()
    finally:
        blocker.commit()
        blocker.close()
    blocked.join(timeout=scaled(5))
    assert blocked.successful()
    store.close()
    assert [m.id for m in done.stored] == list(range(1, 22))
    assert rows_on_disk(db_path, "lobby") == list(range(1, 22))


def test_a_submitter_blocked_by_a_full_queue_gets_history_error_when_closed(db_path: str) -> None:
    store = SQLiteHistory(db_path, max_pending=1)
    store.open()
    done = Recorder()
    blocker = hold_write_lock(db_path)
    store.submit("lobby", "ann", "in flight", 0, None, done)
    gevent.sleep(0.05)  # the first batch is taken and waits for the lock
    store.submit("lobby", "ann", "queued", 1, None, done)

    def submit_late() -> HistoryError | int:
        try:
            return store.submit("lobby", "bob", "blocked", 2, None, done)
        except HistoryError as error:
            return error

    late = gevent.spawn(submit_late)
    closing = gevent.spawn(store.close)
    gevent.sleep(0.05)
    assert not late.dead
    assert not closing.dead
    blocker.commit()
    blocker.close()
    gevent.joinall([late, closing], timeout=scaled(5))
    assert isinstance(late.value, HistoryError)
    assert closing.successful()
    assert [m.text for m in done.stored] == ["in flight", "queued"]
    assert rows_on_disk(db_path, "lobby") == [1, 2]


# -- where commits run, and checkpoints --------------------------------------------------


class Commits:
    """Wraps the module's commit functions: which ran where, and whether each restarted the WAL."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, wal_path: str) -> None:
        self.hub = threading.get_ident()
        self.wal_path = wal_path
        #: ("inline" | "thread", restarted the WAL, rows)
        self.calls: list[tuple[str, bool, int]] = []
        for name, path in (("_write_inline", "inline"), ("_write_batch_waiting", "thread")):
            monkeypatch.setattr(history_module, name, self._wrap(getattr(history_module, name), path))

    def _wrap(self, commit: Callable[..., Any], path: str) -> Callable[..., Any]:
        def recorded(conn: sqlite3.Connection, rows: list[Any], *args: Any) -> Any:
            before = self.wal_header()
            result = commit(conn, rows, *args)
            on_hub = threading.get_ident() == self.hub
            assert on_hub == (path == "inline")
            self.calls.append((path, self.wal_header() != before, len(rows)))
            return result

        return recorded

    def wal_header(self) -> bytes:
        """Checkpoint sequence and salts: a new WAL (a restart, with its fsync) has new ones."""
        try:
            with open(self.wal_path, "rb") as wal:
                return wal.read(32)[12:24]
        except FileNotFoundError:
            return b""

    def paths(self) -> list[str]:
        return [path for path, _, _ in self.calls]


@pytest.fixture
def commits(monkeypatch: pytest.MonkeyPatch, db_path: str) -> Commits:
    return Commits(monkeypatch, db_path + "-wal")


def submit_in_bursts(store: SQLiteHistory, bursts: int, each: int, on_stored: Recorder, pause: float = 0) -> None:
    """``bursts`` times ``each`` messages in 10 rooms, each burst one batch, ``pause`` s apart.

    A pause lets the hub wait for I/O, and so give the GIL to the history's
    threads: a hub that never waits keeps it for up to the switch interval.
    """
    for burst in range(bursts):
        for i in range(each):
            store.submit(f"room{i % 10}", "ann", f"m{burst}-{i}", burst, None, on_stored)
        store.flush()
        gevent.sleep(pause)


def test_small_batches_commit_inline_after_the_first(history: SQLiteHistory, commits: Commits) -> None:
    done = Recorder()
    submit_in_bursts(history, bursts=5, each=3, on_stored=done)
    assert len(done.stored) == 15
    # The first commit may restart a WAL left by an earlier run: on the thread.
    assert commits.paths() == ["thread", "inline", "inline", "inline", "inline"]


def test_a_burst_is_committed_inline_rows_at_a_time_each_broadcast_before_the_next(
    history: SQLiteHistory, commits: Commits
) -> None:
    history.submit("lobby", "ann", "first", 0, None, Recorder())
    history.flush()  # the first commit may restart a WAL left by an earlier run: on the thread
    history.inline_rows = 4
    order: list[str] = []

    def stored(result: StoredMessage | HistoryError) -> None:
        assert isinstance(result, StoredMessage)
        order.append(result.text)
        # what a broadcast does: queue the sends for the next turn of the loop
        gevent.get_hub().loop.run_callback(order.append, f"sent {result.text}")

    for i in range(10):
        history.submit("lobby", "ann", f"m{i}", i, None, stored)
    history.flush()

    assert commits.paths() == ["thread", "inline", "inline", "inline"]
    assert [rows for _, _, rows in commits.calls[1:]] == [4, 4, 2]
    assert order.index("sent m3") < order.index("m4")  # the first batch went out before the second was done
    assert order.index("sent m7") < order.index("m8")
    assert [event for event in order if not event.startswith("sent")] == [f"m{i}" for i in range(10)]


def test_with_synchronous_full_every_commit_is_on_the_writer_thread(db_path: str, commits: Commits) -> None:
    store = SQLiteHistory(db_path, synchronous="FULL")
    store.open()
    done = Recorder()
    for burst in range(3):
        store.submit("lobby", "ann", f"m{burst}", burst, None, done)
        store.flush()
    store.close()
    assert len(done.stored) == 3
    assert commits.calls == []  # neither inline nor the NORMAL-mode thread path
    assert rows_on_disk(db_path, "lobby") == [1, 2, 3]


def test_a_locked_database_moves_the_inline_batch_to_the_thread(
    history: SQLiteHistory, commits: Commits, db_path: str
) -> None:
    history.submit("lobby", "ann", "first", 1, None, Recorder())
    history.flush()
    blocker = hold_write_lock(db_path)
    done = Recorder()
    ticks = 0

    def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            gevent.sleep(0.001)

    running = gevent.spawn(ticker)
    try:
        history.submit("lobby", "ann", "waits for the lock", 2, None, done)
        gevent.sleep(0.1)
        assert done.results == []
        assert ticks > 20  # the hub did not wait for the lock
    finally:
        blocker.commit()
        blocker.close()
        running.kill()
    history.flush()
    assert [m.text for m in done.stored] == ["waits for the lock"]
    # The inline attempt gave up at once (LOCKED); the thread waited.
    assert commits.paths() == ["thread", "inline", "thread"]


def test_checkpoints_keep_the_wal_short_and_never_restart_it_inline(
    db_path: str, commits: Commits, caplog: pytest.LogCaptureFixture
) -> None:
    store = SQLiteHistory(db_path)
    store.checkpoint_rows = 40
    store.open()
    done = Recorder()
    with caplog.at_level(logging.DEBUG, logger="app.chat.sqlite_history"):
        submit_in_bursts(store, bursts=150, each=10, on_stored=done, pause=0.002)
    wal_size = os.path.getsize(db_path + "-wal")
    store.close()
    assert len(done.stored) == 1500
    restarts = [(path, rows) for path, restarted, rows in commits.calls if restarted]
    assert len(restarts) >= 5, commits.calls
    assert {path for path, _ in restarts} == {"thread"}  # the fsync of a new WAL, off the hub
    assert commits.paths().count("inline") > 100
    assert "history checkpoint:" in caplog.text
    # 1500 messages in 10 rooms are a page each in a WAL never checkpointed: about 6 MB.
    assert wal_size < 1_500_000
    for room in range(10):
        assert rows_on_disk(db_path, f"room{room}") == list(range(1, 151))


def test_inline_commits_go_on_while_a_checkpoint_runs(
    db_path: str, commits: Commits, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkpoint = history_module._checkpoint
    running = threading.Event()

    def slow_checkpoint(checkpointer: sqlite3.Connection, pin: sqlite3.Connection) -> Any:
        running.set()
        time.sleep(0.3)  # on the checkpointer's thread: a slow disk
        try:
            return checkpoint(checkpointer, pin)
        finally:
            running.clear()

    monkeypatch.setattr(history_module, "_checkpoint", slow_checkpoint)
    store = SQLiteHistory(db_path)
    store.checkpoint_rows = 10
    store.open()
    done = Recorder()
    submit_in_bursts(store, bursts=3, each=5, on_stored=done)  # starts the checkpoint
    assert running.wait(scaled(5))
    started = time.monotonic()
    submit_in_bursts(store, bursts=20, each=5, on_stored=done)
    assert time.monotonic() - started < 0.25
    assert running.is_set()
    assert commits.paths()[3:] == ["inline"] * 20
    store.close()  # waits for the checkpoint
    assert len(done.stored) == 115


def test_a_failed_checkpoint_is_logged_and_fails_no_message(
    db_path: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken_checkpoint(checkpointer: sqlite3.Connection, pin: sqlite3.Connection) -> sqlite3.Error:
        return sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(history_module, "_checkpoint", broken_checkpoint)
    store = SQLiteHistory(db_path)
    store.checkpoint_rows = 10
    store.open()
    done = Recorder()
    with caplog.at_level(logging.ERROR, logger="app.chat.sqlite_history"):
        submit_in_bursts(store, bursts=20, each=5, on_stored=done, pause=0.005)
    store.close()
    assert len(done.stored) == 100
    assert caplog.text.count("checkpointing the history failed: disk I/O error") >= 2  # tried again
    assert rows_on_disk(db_path, "room0") == list(range(1, 21))


def test_a_failed_commit_on_the_writer_thread_takes_its_ids_back(db_path: str) -> None:
    store = SQLiteHistory(db_path, synchronous="FULL")  # every commit on the writer thread
    store.open()
    done = Recorder()
    store.submit("lobby", "ann", "fine", 1, None, done)
    store.flush()
    reject_text(db_path, "poison")
    store.submit("lobby", "ann", "unlucky", 2, None, done)
    store.submit("lobby", "ann", "poison", 3, None, done)
    store.flush()
    assert store.submit("lobby", "ann", "later", 4, None, done) == 2
    store.close()
    assert [type(r).__name__ for r in done.results] == [
        "StoredMessage",
        "HistoryError",
        "HistoryError",
        "StoredMessage",
    ]
    assert rows_on_disk(db_path, "lobby") == [1, 2]


def test_a_failed_inline_commit_takes_its_ids_back(history: SQLiteHistory, commits: Commits, db_path: str) -> None:
    history.submit("lobby", "ann", "fine", 1, None, Recorder())
    history.flush()
    reject_text(db_path, "poison")
    failed = Recorder()
    history.submit("lobby", "ann", "unlucky", 2, None, failed)
    history.submit("lobby", "ann", "poison", 3, None, failed)
    history.flush()
    assert [type(r) for r in failed.results] == [HistoryError, HistoryError]
    assert history.last_id("lobby") == 1
    assert commits.paths() == ["thread", "inline"]


# -- amendments: edit, delete, react ---------------------------------------------------

#: The messages table as it was before amendments (git history of app/chat/sqlite_history.py).
OLD_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    room TEXT NOT NULL,
    id INTEGER NOT NULL,
    nick TEXT NOT NULL,
    text TEXT NOT NULL,
    ts INTEGER NOT NULL,
    ref TEXT,
    PRIMARY KEY (room, id)
) WITHOUT ROWID
"""


def edit_of(original: StoredMessage, text: str, ts: int = 2000) -> tuple[StoredMessage, StoredMessage]:
    """The original's new version and the edit entry, as the service makes them."""
    meta = f'{{"edited":{ts}}}'
    return original._replace(text=text, meta=meta), StoredMessage(
        original.room, 0, original.nick, text, ts, None, original.author, "edit", original.id, None
    )


def every_read(history: SQLiteHistory, room: str, message_id: int) -> list[StoredMessage]:
    """The message as each read returns it."""
    return [
        next(m for m in history.recent(room, 50) if m.id == message_id),
        next(m for m in history.since(room, 0) if m.id == message_id),
        next(m for m in history.replay(room, None, 50).messages if m.id == message_id),
        next(m for m in history.replay(room, 0, 50).messages if m.id == message_id),
        history.get(room, [message_id])[message_id],
    ]


def test_an_amendment_gets_the_next_id_and_every_read_shows_the_rewritten_original(history: SQLiteHistory) -> None:
    done = Recorder()
    history.submit("a", "ann", "helo", 1000, "r1", done, author="account:ann")
    history.submit("a", "bob", "hi", 1001, None, done)
    history.flush()
    original = done.stored[0]
    new_version, entry = edit_of(original, "hello")
    assert history.amend(new_version, None, entry, done) == 3
    history.flush()
    stored_entry = done.results[-1]
    assert stored_entry == StoredMessage("a", 3, "ann", "hello", 2000, None, "account:ann", "edit", 1, None)
    for read in every_read(history, "a", 1):
        assert read == StoredMessage("a", 1, "ann", "hello", 1000, "r1", "account:ann", None, None, '{"edited":2000}')
    assert history.since("a", 2) == [stored_entry], "a client catching up sees the amendment"
    assert history.get("a", [3, 2, 99]) == {3: stored_entry, 2: done.stored[1]}


def test_no_read_shows_the_old_text_once_the_amendments_on_stored_runs(history: SQLiteHistory) -> None:
    done = Recorder()
    history.submit("a", "ann", "before", 1, None, done)
    history.flush()
    history.recent("a", 50)  # the tail cache holds the original
    reads: list[list[StoredMessage]] = []

    def on_stored(result: StoredMessage | HistoryError) -> None:
        assert isinstance(result, StoredMessage), result
        reads.append([history.get("a", [1])[1], history.recent("a", 50)[0], history.since("a", 0)[0]])

    new_version, entry = edit_of(done.stored[0], "after")
    history.amend(new_version, None, entry, on_stored)
    history.flush()
    assert [m.text for m in reads[0]] == ["after", "after", "after"]


def test_an_amendment_against_a_stale_meta_conflicts_and_stores_nothing_leaving_ids_gap_free(
    history: SQLiteHistory, db_path: str
) -> None:
    done = Recorder()
    history.submit("a", "ann", "hi", 1, None, done)
    history.flush()
    first, entry = edit_of(done.stored[0], "hi!")
    history.amend(first, None, entry, done)
    second, entry = edit_of(done.stored[0], "hi?")
    assert history.amend(second, None, entry, done) == 0, "the first edit's meta is expected now, queued or not"
    history.flush()
    assert [type(result) for result in done.results] == [StoredMessage, Conflict, StoredMessage]
    assert history.submit("a", "bob", "next", 3, None, done) == 3
    history.flush()
    assert rows_on_disk(db_path, "a") == [1, 2, 3]
    assert history.get("a", [1])[1].text == "hi!"
    third, entry = edit_of(first, "hi, all")
    assert history.amend(third, first.meta, entry, done) == 4, "with the meta it has, it goes through"
    history.flush()
    assert history.recent("a", 1)[0].kind == "edit"
    assert history.get("a", [1])[1].text == "hi, all"


def test_amending_a_missing_message_or_an_amendment_entry_conflicts(history: SQLiteHistory) -> None:
    done = Recorder()
    history.submit("a", "ann", "hi", 1, None, done)
    history.flush()
    new_version, entry = edit_of(done.stored[0]._replace(id=7), "ghost")
    assert history.amend(new_version, None, entry, done) == 0
    new_version, entry = edit_of(done.stored[0], "real")
    history.amend(new_version, None, entry, done)
    history.flush()
    amendment = done.results[-1]
    assert isinstance(amendment, StoredMessage)
    new_version, entry = edit_of(amendment, "edit of an edit")
    assert history.amend(new_version, None, entry, done) == 0
    history.flush()
    assert [type(result) for result in done.results] == [StoredMessage, Conflict, StoredMessage, Conflict]
    assert history.last_id("a") == 2


def test_amendments_and_authors_are_read_back_from_the_database_after_a_restart(db_path: str) -> None:
    first = SQLiteHistory(db_path)
    first.open()
    done = Recorder()
    for i in range(60):  # a tail cache, which the restart empties
        first.submit("a", "ann", f"m{i}", i, i, done, author="account:ann")
    first.flush()
    reacted = done.stored[0]._replace(meta='{"reactions":{"👍":["bob"]}}')
    entry = StoredMessage("a", 0, "bob", "", 99, None, "guest:b0b", "react", 1, '{"emoji":"👍","on":true}')
    first.amend(reacted, None, entry, done)
    first.close()

    second = SQLiteHistory(db_path)
    second.open()
    try:
        assert second.get("a", [1, 61]) == {
            1: StoredMessage("a", 1, "ann", "m0", 0, 0, "account:ann", None, None, '{"reactions":{"👍":["bob"]}}'),
            61: StoredMessage("a", 61, "bob", "", 99, None, "guest:b0b", "react", 1, '{"emoji":"👍","on":true}'),
        }
        assert second.since("a", 0, 1)[0].meta == '{"reactions":{"👍":["bob"]}}'
        assert second.recent("a", 1)[0].kind == "react"
    finally:
        second.close()


def test_a_database_made_before_amendments_opens_reads_and_takes_amendments(db_path: str) -> None:
    Path(db_path).parent.mkdir(parents=True)
    with sqlite3.connect(db_path) as conn:
        conn.execute(OLD_SCHEMA)
        conn.execute("INSERT INTO messages (room, id, nick, text, ts, ref) VALUES ('a', 1, 'ann', 'old', 5, 'r')")
    conn.close()
    history = SQLiteHistory(db_path)
    history.open()
    try:
        assert history.recent("a") == [StoredMessage("a", 1, "ann", "old", 5, "r")]
        done = Recorder()
        new_version, entry = edit_of(history.get("a", [1])[1], "new")
        assert history.amend(new_version, None, entry, done) == 2
        history.flush()
        assert done.errors == []
        assert history.since("a", 0) == [new_version, done.stored[0]]
    finally:
        history.close()
    history = SQLiteHistory(db_path)  # opened again: the columns are there already
    history.open()
    assert history.get("a", [1])[1].text == "new"
    history.close()


def test_a_rewrite_that_finds_its_original_changed_fails_its_batch_like_a_failed_commit(
    history: SQLiteHistory, db_path: str
) -> None:
    done = Recorder()
    history.submit("a", "ann", "hi", 1, None, done)
    history.flush()
    with sqlite3.connect(db_path) as other:  # a writer that is not this process: never in production
        other.execute("UPDATE messages SET meta = '{}' WHERE room = 'a' AND id = 1")
    other.close()
    new_version, entry = edit_of(done.stored[0], "hi!")
    history.amend(new_version, None, entry, done)
    history.flush()
    assert isinstance(done.results[-1], Conflict)
    assert history.submit("a", "bob", "next", 3, None, done) == 2, "the failed amendment's id is given again"
    history.flush()
    assert rows_on_disk(db_path, "a") == [1, 2]
