"""The embedded history store: every room's messages in one SQLite file, written by group commit.

Theory of operation
-------------------
:meth:`SQLiteHistory.submit` gives a message the next id of its room at once,
in memory, and queues it. One *flusher* greenlet, woken once per turn of the
event loop, takes what is queued (up to ``batch_size``; ``inline_rows`` with
``synchronous=NORMAL``, below) as a batch and writes it in one transaction
(``BEGIN IMMEDIATE``, ``executemany(INSERT)``, ``COMMIT``). Only one batch is
in flight at a time, so commit order is id order. Once the commit returned,
the flusher calls each message's ``on_stored`` in submission order, hence in
id order within a room; a message is acknowledged only after its ``COMMIT``
returned, so a caller that broadcasts from ``on_stored`` never shows a message
that could be lost.

Where the commit runs depends on whether it could fsync or wait:

- With ``synchronous=NORMAL`` a WAL commit appends to the WAL and does not
  fsync: tens of µs of CPU (10 to 20 µs a row). So batches are committed
  **inline**, in the flusher greenlet on the hub. That spares what a thread
  costs before any message of the batch can be broadcast: the hand-off, the
  GIL hand-overs (each up to the 5 ms switch interval while the hub is busy)
  and the wake-up of the hub. A batch is then at most ``inline_rows``
  messages, and the flusher yields between two batches: a burst (the
  clients' messages held up by a pause of the machine, then all readable at
  once) is committed and broadcast ``inline_rows`` messages at a time, so
  its first messages go out while the last are still being committed,
  instead of every one waiting for the whole burst.
- On a real OS thread of a one-thread :class:`gevent.threadpool.ThreadPool`
  (the *writer thread*), so the hub never waits: every commit with
  ``synchronous=FULL`` (each fsyncs the WAL; SQLite checkpoints there on its
  own, as usual); a batch that found the write lock taken by another
  connection (the inline attempt never waits for a lock; the thread waits up
  to :data:`BUSY_TIMEOUT`); and the commit that restarts the WAL, below.

Checkpoints, with ``synchronous=NORMAL``, never run on the hub: SQLite's
automatic checkpoint is off on the writer's connection. After every
``checkpoint_rows`` committed rows a *checkpointer* thread with its own
connection copies the WAL into the database (``wal_checkpoint(PASSIVE)``,
which fsyncs both files) while inline commits go on. Meanwhile a read
transaction held on a fourth connection (the *pin*) keeps the WAL from being
restarted: a commit that starts a fresh WAL fsyncs its header, and must not
be an inline one. Once the checkpointer is done (after up to
:data:`CHECKPOINT_PASSES` passes, each catching up on the commits made
during the one before), the flusher releases the pin (no I/O) and sends the
next batch to the writer thread, which copies the few frames left and
commits; that commit restarts the WAL, fsync included, off the hub. So the
WAL stays about ``checkpoint_rows`` times 2.9 KB long, and the hub never waits
for the disk; the messages that arrive during the restart's commit do wait
for it (the only commit that fsyncs), hence a checkpoint only every
``checkpoint_rows`` rows.

Reads (:meth:`~SQLiteHistory.recent`, :meth:`~SQLiteHistory.since`,
:meth:`~SQLiteHistory.get`) are answered from memory, on the hub, when the
*tail cache* (:mod:`app.chat.tails`: each recently used room's last
:data:`TAIL_SIZE` acknowledged messages, current versions) holds what they
ask for: the last 50 of a join, a ``since`` after a reconnect. Only the rest
goes to the database, on a second one-thread pool (the *reader thread*) with
its own connection, so the hub never waits for SQLite; in WAL mode those
reads neither wait for nor block the writer. Reads show a message only once
its ``on_stored`` has run (not merely once committed), so a joiner that
registers for live delivery and then reads history gets each message exactly
once.

Durability
----------
The database is in WAL mode. With ``synchronous=NORMAL`` a committed message
survives ``kill -9`` of the process (the commit is in the WAL, which the OS
keeps); it may be lost on power loss or an OS crash. With ``synchronous=FULL``
the WAL is fsynced at every commit, so an acknowledged message also survives
power loss; group commit makes that one fsync per batch, not per message.

Failure
-------
If a commit fails (disk full, database locked past the busy timeout, I/O
error …) the transaction is rolled back and every callback of the batch gets a
:class:`HistoryError`: nothing of it was acknowledged. The ids it had been
given are taken back: each affected room's last id is reset to its committed
``MAX(id)`` (re-read from the database), so stored ids stay gap-free and
increasing, and a failed id may be given again to a later message. Messages
already queued behind the failed batch *in the same rooms* fail as well (their
ids follow the ones taken back); other rooms are unaffected, and the flusher
goes on serving later batches. The same holds inline and on the writer thread.
A failed checkpoint is logged and tried again ``checkpoint_rows`` rows later;
it never fails a message.

Backpressure: when ``max_pending`` messages wait for a batch, ``submit()``
blocks the calling greenlet (never the hub) until the flusher takes some.

Amendments
----------
:meth:`SQLiteHistory.amend` (an edit, deletion or reaction: see
:mod:`app.chat.store`) is queued like a message and gets the room's next id
at once, so ids stay in order and gap-free. Its batch inserts the entry row
and rewrites the original (``UPDATE … WHERE meta IS expected``) in the same
transaction. The compare-and-set is decided in Python, at ``amend()`` time,
against the original as the amendments already queued leave it (else as
acknowledged: the tail cache, or a read): a conflict is reported there and
then, before an id is given, so no id is ever lost to one. This process is
the database's only writer, so the ``UPDATE``'s condition cannot fail but
through a bug; if it does, the batch fails as a failed commit does (its
rooms' ids taken back), its amendments with a
:class:`~app.chat.store.Conflict`. Once the commit returned, the tail cache
gets the rewritten original *before* the amendment's ``on_stored`` runs: no
read shows the old text after it. (A read of the database may show the new
text a moment earlier, between the commit and ``on_stored``.)

Databases made before amendments lack the columns ``author``, ``kind``,
``target`` and ``meta``: :meth:`SQLiteHistory.open` adds them (``ALTER
TABLE``, NULL in the old rows, which are chat messages).

Epoch
-----
A message's position is its id *and* the history's epoch: a random name
given to the database when it is created (table ``meta``). A client that
comes back with ``since`` from another database (the file was deleted or
replaced, a backup restored) has an epoch that no longer matches, and is
told to reset instead of being sent the wrong messages, or none.
"""

from __future__ import annotations

import enum
import json
import logging
import sqlite3
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gevent
from gevent.event import AsyncResult, Event
from gevent.lock import Semaphore
from gevent.threadpool import ThreadPool

from .protocol import Ref
from .store import ONCE_SECONDS, Conflict, HistoryError, OnStored, RecentSends, Replay, StoredMessage, new_epoch
from .tails import TailCache

__all__ = ["SQLiteHistory"]

log = logging.getLogger(__name__)

SYNCHRONOUS_MODES = ("NORMAL", "FULL")
#: The tail cache (:mod:`app.chat.tails`): the last TAIL_SIZE acknowledged messages of at most
#: TAIL_ROOMS rooms, about TAIL_BYTES in all. TAIL_SIZE covers the service's longest ``since``
#: (1000), so a client coming back after a reconnect is answered from memory.
TAIL_SIZE = 1000
TAIL_ROOMS = 1024
TAIL_BYTES = 32 * 1024 * 1024
#: Seconds a write waits for a lock held by another connection before failing.
BUSY_TIMEOUT = 5.0
#: With synchronous=NORMAL: the largest batch, committed inline on the hub (10 to 20 µs a row), then broadcast.
INLINE_ROWS = 32
#: Bytes per database page, for a new database. A commit writes every page it
#: changed to the WAL, and rows are kept by room: a batch of messages to
#: different rooms changes a page per message. With 1 KiB pages (not SQLite's
#: 4 KiB) a message costs 2.9 KB of WAL, not 7, for the same CPU: less to
#: write and to checkpoint.
PAGE_SIZE = 1024
#: With synchronous=NORMAL: rows committed between checkpoints. Each checkpoint ends
#: with the WAL's restart, whose fsyncs (2 to 15 ms on a virtual machine) every
#: message arriving meanwhile waits for: at 4,000 messages a second, one every 6 s,
#: with a WAL of up to about 70 MB (2.9 KB a row; see PAGE_SIZE).
CHECKPOINT_ROWS = 25_000
#: Checkpoint passes while inline commits go on; each catches up on the frames added during the last.
CHECKPOINT_PASSES = 3
#: Frames left to copy that make another concurrent pass not worth it.
CHECKPOINT_LEFT = 64

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    room TEXT NOT NULL,
    id INTEGER NOT NULL,
    nick TEXT NOT NULL,
    text TEXT NOT NULL,
    ts INTEGER NOT NULL,
    -- the client's ref: a string, or an integer as a BLOB of its decimal digits
    -- (TEXT affinity would store an integer as a string; SELECT_COLUMNS turns it back)
    ref TEXT,
    -- who sent it (a session id), an amendment entry's kind and target, the service's opaque JSON
    author TEXT,
    kind TEXT,
    target INTEGER,
    meta TEXT,
    PRIMARY KEY (room, id)
) WITHOUT ROWID
"""
#: The columns a database made before amendments lacks: added at open (``ALTER TABLE``; NULL in old rows).
ADDED_COLUMNS = (("author", "TEXT"), ("kind", "TEXT"), ("target", "INTEGER"), ("meta", "TEXT"))
#: One row per setting of the database: its ``epoch``, set once when it is created.
META_SCHEMA = "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
NEW_EPOCH = "INSERT OR IGNORE INTO meta (key, value) VALUES ('epoch', ?)"
SELECT_EPOCH = "SELECT value FROM meta WHERE key = 'epoch'"
INSERT = (
    "INSERT INTO messages (room, id, nick, text, ts, ref, author, kind, target, meta) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
#: An amendment's rewrite of its original: only if it still is the version the amendment was checked against.
REWRITE = "UPDATE messages SET text = ?, meta = ? WHERE room = ? AND id = ? AND kind IS NULL AND meta IS ?"


def history_columns(table: str = "") -> str:
    """The columns of a :class:`StoredMessage`, in its order (of ``table``, when given), the ref as stored."""
    t = f"{table}." if table else ""
    return (
        f"{t}room, {t}id, {t}nick, {t}text, {t}ts, CASE typeof({t}ref) WHEN 'blob' THEN CAST({t}ref AS INTEGER) "
        f"ELSE {t}ref END, {t}author, {t}kind, {t}target, {t}meta"
    )


COLUMNS = history_columns()
SELECT_RECENT = f"SELECT {COLUMNS} FROM messages WHERE room = ? AND id <= ? ORDER BY id DESC LIMIT ?"
SELECT_SINCE = f"SELECT {COLUMNS} FROM messages WHERE room = ? AND id > ? AND id <= ? ORDER BY id LIMIT ?"
SELECT_IDS = f"SELECT {COLUMNS} FROM messages WHERE room = ? AND id <= ? AND id IN (SELECT value FROM json_each(?))"
SELECT_LAST_IDS = "SELECT room, MAX(id) FROM messages GROUP BY room"
SELECT_LAST_ID = "SELECT MAX(id) FROM messages WHERE room = ?"
#: The messages with a ref sent since ``?`` (ms), among the last RECENT_TAIL of each room: retries to recognize.
RECENT_TAIL = 500
SELECT_RECENT_SENDS = f"""
SELECT {COLUMNS} FROM messages AS m
JOIN (SELECT room AS r, MAX(id) AS last FROM messages GROUP BY room) ON m.room = r AND m.id > last - {RECENT_TAIL}
WHERE m.ts > ? AND m.ref IS NOT NULL
"""
#: Any read: it starts the pin's read transaction (see the module docstring).
PIN_READ = "SELECT 1 FROM messages LIMIT 1"
CHECKPOINT = "PRAGMA wal_checkpoint(PASSIVE)"

#: A row of ``messages``: a :class:`StoredMessage`'s fields (an integer ref as a BLOB when written).
Row = tuple[Any, ...]
#: The parameters of :data:`REWRITE`: new text, new meta, room, id, expected meta.
Rewrite = tuple[str, str | None, str, int, str | None]


def _row(message: StoredMessage) -> Row:
    """The row to insert: the message itself, an integer ref as a BLOB (see SCHEMA)."""
    if type(message.ref) is int:
        return (*message[:5], str(message.ref).encode(), *message[6:])
    return message


class _StaleTarget(sqlite3.Error):
    """An amendment's original was not the version checked in :meth:`SQLiteHistory.amend` (a bug if ever)."""


class _State(enum.Enum):
    NEW = "new"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


@dataclass(slots=True)
class _Pending:
    message: StoredMessage
    on_stored: OnStored
    #: Submission order, for flush().
    seq: int
    #: Whether it took one of the ``max_pending`` slots (a submit from a callback may not).
    holds_slot: bool
    #: Sent once (with a ref): its retries wait for it (see RecentSends).
    once: bool = False
    #: An amendment entry's original, rewritten, and the meta it replaces (``message`` is the entry).
    rewritten: StoredMessage | None = None
    expected_meta: str | None = None


@dataclass(frozen=True, slots=True)
class _Failure:
    error: BaseException
    #: Each affected room's committed MAX(id), re-read after the rollback; empty if that failed too.
    committed: dict[str, int]


class _Locked(enum.Enum):
    """An inline commit found the write lock taken by another connection, and did not wait."""

    LOCKED = "locked"


#: (busy, frames in the WAL, frames copied) of the checkpointer's last pass, or what failed.
_Checkpointed = tuple[int, int, int] | sqlite3.Error


class SQLiteHistory:
    """Message history of every room in one SQLite file; see the module docstring.

    Use from greenlets of one hub: :meth:`open`, then :meth:`submit` and the
    reads, then :meth:`close`. ``on_stored`` callbacks run in the flusher
    greenlet and should be quick (queue to a client, publish), since the next
    batch waits for them; they may :meth:`submit` but not :meth:`flush` or
    :meth:`close`.
    """

    #: Storing does not deliver: the service publishes once ``on_stored`` ran.
    publishes = False

    #: With synchronous=NORMAL: the largest batch, committed inline on the hub.
    inline_rows = INLINE_ROWS
    #: With synchronous=NORMAL: rows committed between checkpoints.
    checkpoint_rows = CHECKPOINT_ROWS
    #: The tail cache's bounds: messages per room, rooms, estimated bytes in all.
    tail_size = TAIL_SIZE
    tail_rooms = TAIL_ROOMS
    tail_bytes = TAIL_BYTES

    def __init__(
        self, path: str, *, synchronous: str = "NORMAL", max_pending: int = 10_000, batch_size: int = 500
    ) -> None:
        if synchronous.upper() not in SYNCHRONOUS_MODES:
            raise ValueError(f"synchronous must be one of {SYNCHRONOUS_MODES}, not {synchronous!r}")
        if max_pending < 1 or batch_size < 1:
            raise ValueError("max_pending and batch_size must be at least 1")
        self.path = path
        self.synchronous = synchronous.upper()
        self.max_pending = max_pending
        self.batch_size = batch_size
        self._state = _State.NEW
        self._closed = Event()
        self._last_ids: dict[str, int] = {}
        self._epoch = ""
        self._recent = RecentSends(time.time)
        #: per room, the last id whose on_stored has run: what reads may show
        self._acked: dict[str, int] = {}
        #: per recently used room, its last acknowledged messages (an LRU of rooms)
        self._tails = TailCache(self.tail_size, self.tail_rooms, self.tail_bytes)
        #: per (room, id) of an original with amendments queued: how many, and its newest version among them
        self._amending: dict[tuple[str, int], tuple[int, StoredMessage]] = {}
        #: amendments acknowledged so far (a read of an original that saw this change may be stale)
        self._amendments_acked = 0
        self._queue: deque[_Pending] = deque()
        self._queued = Event()  # set when the flusher has something to do
        self._slots = Semaphore(max_pending)
        self._next_seq = 0
        self._in_flight_from: int | None = None  # seq of the first message of the batch being stored
        self._flush_waiters: list[tuple[int, Event]] = []
        self._stopping = False
        self._commits = 0
        self._reads = 0
        self._writer: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._writer_pool: ThreadPool | None = None
        self._reader_pool: ThreadPool | None = None
        self._flusher: gevent.Greenlet | None = None
        # Checkpoints by the history itself, with synchronous=NORMAL only.
        self._inline = self.synchronous == "NORMAL"
        self._checkpointer: sqlite3.Connection | None = None
        self._pin: sqlite3.Connection | None = None
        self._checkpoint_pool: ThreadPool | None = None
        self._checkpointing: AsyncResult | None = None  # the checkpointer's passes, running or done
        self._rows_since_checkpoint = 0
        #: The next commit may restart the WAL (fsync), so it goes to the writer thread.
        self._restart_due = True

    @property
    def reads(self) -> int:
        """How many reads went to the database (the rest came from the tail cache)."""
        return self._reads

    @property
    def commits(self) -> int:
        """How many batches were committed: far fewer than messages when under load."""
        return self._commits

    # -- life cycle ---------------------------------------------------------

    def open(self) -> None:
        """Open (creating if needed) the database, load each room's last id, start the flusher."""
        if self._state is not _State.NEW:
            raise RuntimeError(f"open() on a history that is {self._state.value}")
        pools = [ThreadPool(1), ThreadPool(1)]
        if self._inline:
            pools.append(ThreadPool(1))
        opened: list[tuple[ThreadPool, sqlite3.Connection]] = []
        try:
            writer, last_ids, epoch = pools[0].apply(_open_writer, (self.path, self.synchronous))
            opened.append((pools[0], writer))
            since_ms = int((time.time() - ONCE_SECONDS) * 1000)
            for row in pools[0].apply(_fetch_all, (writer, SELECT_RECENT_SENDS, (since_ms,))):
                message = StoredMessage._make(row)
                self._recent.remember(message, message.ts / 1000)
            reader = pools[1].apply(_connect, (self.path,))
            opened.append((pools[1], reader))
            if self._inline:
                checkpointer = pools[2].apply(_connect, (self.path, self.synchronous))
                opened.append((pools[2], checkpointer))
                pin = pools[2].apply(_connect, (self.path,))
                opened.append((pools[2], pin))
                self._checkpointer, self._pin, self._checkpoint_pool = checkpointer, pin, pools[2]
        except (sqlite3.Error, OSError) as exc:
            for pool, conn in opened:
                pool.apply(conn.close)
            for pool in pools:
                pool.kill()
            self._checkpointer = self._pin = self._checkpoint_pool = None
            raise HistoryError(f"cannot open history {self.path}: {exc}") from exc
        self._writer, self._reader = writer, reader
        self._writer_pool, self._reader_pool = pools[0], pools[1]
        self._last_ids = last_ids
        self._epoch = epoch
        self._acked = dict(last_ids)
        self._state = _State.OPEN
        self._flusher = gevent.spawn(self._run)

    def close(self) -> None:
        """Store everything submitted, stop the flusher, close the database. Idempotent."""
        if self._state is _State.NEW:
            self._state = _State.CLOSED
            self._closed.set()
        if self._state is not _State.OPEN:
            self._closed.wait()
            return
        if gevent.getcurrent() is self._flusher:
            raise RuntimeError("close() from an on_stored callback would wait for itself")
        self._state = _State.CLOSING
        try:
            self._wait_for(self._next_seq)
            self._stopping = True
            self._queued.set()
            assert self._flusher is not None
            self._flusher.join()
        finally:
            # Interrupted (a Timeout)? The flusher still ends: what is left
            # fails on the closed connection and its callbacks are told.
            self._stopping = True
            self._queued.set()
            # The writer last: the last connection closed checkpoints the WAL and removes it.
            closing = [(self._checkpoint_pool, self._pin), (self._checkpoint_pool, self._checkpointer)]
            closing += [(self._reader_pool, self._reader), (self._writer_pool, self._writer)]
            for pool, conn in closing:
                if pool is None or conn is None:
                    continue  # no checkpointer with synchronous=FULL
                try:
                    pool.apply(conn.close)  # after a checkpoint still running, if any
                except sqlite3.Error:
                    log.exception("closing the history database failed")
            for pool in (self._checkpoint_pool, self._reader_pool, self._writer_pool):
                if pool is not None:
                    pool.kill()
            self._state = _State.CLOSED
            self._closed.set()

    # -- writing ------------------------------------------------------------

    def submit(
        self,
        room: str,
        nick: str,
        text: str,
        ts: int,
        ref: Ref | None,
        on_stored: OnStored,
        *,
        once: bool = False,
        author: str | None = None,
    ) -> int:
        """Give the message the room's next id and queue it; ``on_stored`` reports the commit.

        Returns the id at once. ``on_stored`` is called later, from the
        flusher greenlet, with the :class:`StoredMessage` once it is committed,
        or with a :class:`HistoryError` if its batch failed. Blocks the calling
        greenlet while ``max_pending`` messages wait. Raises
        :class:`HistoryError` when the history is not open.

        With ``once``, a retry (same room, nick and ref within
        :data:`~app.chat.store.ONCE_SECONDS`) is not queued: it returns 0 and
        ``on_stored`` gets the original, as a :class:`~app.chat.store.Duplicate`.
        ``author`` (the sender's session id) is stored with it.
        """
        self._check_open()
        once = once and ref is not None
        if once and not self._recent.claim((room, nick, ref), on_stored):  # type: ignore[arg-type]
            return 0
        holds_slot = self._take_slot()
        if self._state is not _State.OPEN:  # closed while waiting for a slot
            if holds_slot:
                self._slots.release()
            self._check_open()
        message_id = self._last_ids.get(room, 0) + 1
        self._last_ids[room] = message_id
        message = StoredMessage(room, message_id, nick, text, ts, ref, author)
        self._queue.append(_Pending(message, on_stored, self._next_seq, holds_slot, once))
        self._next_seq += 1
        self._queued.set()
        return message_id

    def amend(self, target: StoredMessage, expected_meta: str | None, entry: StoredMessage, on_stored: OnStored) -> int:
        """Check the original is at ``expected_meta``, then queue its rewrite and the entry; see the module docstring.

        Returns the entry's id at once, or 0 when the check failed:
        ``on_stored`` then already got a :class:`~app.chat.store.Conflict`,
        called from here. Raises :class:`HistoryError` when the history is
        not open or the original cannot be read.
        Only ``target``'s text and meta are written: its other fields stay as
        stored. Blocks the calling greenlet while the original is read (when
        not in the tail cache) or ``max_pending`` messages wait.
        """
        self._check_open()
        holds_slot = self._take_slot()
        try:
            self._check_open()
            current = self._current_version(target.room, target.id)
        except BaseException:
            if holds_slot:
                self._slots.release()
            raise
        if current is None or current.kind is not None or current.meta != expected_meta:
            if holds_slot:
                self._slots.release()
            on_stored(Conflict(f"{target.room}#{target.id} is not at the version read; read it again"))
            return 0
        room, key = target.room, (target.room, target.id)
        rewritten = current._replace(text=target.text, meta=target.meta)
        message_id = self._last_ids.get(room, 0) + 1
        self._last_ids[room] = message_id
        stored = entry._replace(room=room, id=message_id, target=target.id)
        self._amending[key] = (self._amending.get(key, (0, rewritten))[0] + 1, rewritten)
        self._queue.append(_Pending(stored, on_stored, self._next_seq, holds_slot, False, rewritten, expected_meta))
        self._next_seq += 1
        self._queued.set()
        return message_id

    def _current_version(self, room: str, message_id: int) -> StoredMessage | None:
        """The original as the amendments queued so far leave it: what the next amendment must be checked against.

        The newest queued amendment's version if there is one, else the
        acknowledged version (a read). A read that an amendment's
        acknowledgement overtook may show the version before it: read again.
        """
        for _ in range(3):
            seen = self._amendments_acked
            found = self.get(room, [message_id]).get(message_id)
            queued = self._amending.get((room, message_id))
            if queued is not None:
                return queued[1]
            if self._amendments_acked == seen:
                return found
        return None  # amended faster than it can be read: a conflict, which the service retries

    def flush(self) -> None:
        """Wait until everything submitted so far is committed (or failed) and its callbacks ran."""
        if self._state in (_State.NEW, _State.CLOSED):
            return
        if gevent.getcurrent() is self._flusher:
            raise RuntimeError("flush() from an on_stored callback would wait for itself")
        self._wait_for(self._next_seq)

    def _check_open(self) -> None:
        if self._state is not _State.OPEN:
            raise HistoryError(f"history {self.path} is {self._state.value}")

    def _take_slot(self) -> bool:
        if gevent.getcurrent() is self._flusher:
            # A callback that submits (a bot answering) must not wait for
            # the flusher, which is itself: it may exceed the bound.
            return bool(self._slots.acquire(blocking=False))
        self._slots.acquire()
        return True

    def _wait_for(self, seq: int) -> None:
        """Block until every submission numbered below ``seq`` is finished."""
        if self._done_below() >= seq:
            return
        done = Event()
        self._flush_waiters.append((seq, done))
        done.wait()

    def _done_below(self) -> int:
        # Batches are taken from the front of the queue and finished (callbacks
        # included) before the next is taken: everything before the batch in
        # flight, or else before the queue, is finished.
        if self._in_flight_from is not None:
            return self._in_flight_from
        return self._queue[0].seq if self._queue else self._next_seq

    def _release_waiters(self) -> None:
        done_below = self._done_below()
        waiting = []
        for seq, done in self._flush_waiters:
            if seq <= done_below:
                done.set()
            else:
                waiting.append((seq, done))
        self._flush_waiters = waiting

    # -- the flusher --------------------------------------------------------

    def _run(self) -> None:
        while True:
            if not self._queue:
                if self._stopping:
                    return
                self._queued.clear()
                self._queued.wait()
                continue
            batch = self._take_batch()
            self._in_flight_from = batch[0].seq
            try:
                self._store(batch)
            except Exception:  # never let the flusher die: later batches still deserve a try
                log.exception("the history flusher failed on a batch")
            finally:
                self._in_flight_from = None
            self._release_waiters()
            if self._queue:
                gevent.sleep(0)  # a burst: this batch's broadcast goes out before the next batch

    def _take_batch(self) -> list[_Pending]:
        limit = min(self.batch_size, self.inline_rows) if self._inline else self.batch_size
        batch = [self._queue.popleft() for _ in range(min(len(self._queue), limit))]
        self._release_slots(batch)
        return batch

    def _release_slots(self, taken: Iterable[_Pending]) -> None:
        for pending in taken:
            if pending.holds_slot:
                self._slots.release()

    def _store(self, batch: list[_Pending]) -> None:
        rows = [_row(pending.message) for pending in batch]
        rewrites: list[Rewrite] = [
            (rewritten.text, rewritten.meta, rewritten.room, rewritten.id, pending.expected_meta)
            for pending in batch
            if (rewritten := pending.rewritten) is not None
        ]
        try:
            failure = self._commit(rows, rewrites)
        except Exception as exc:  # a bug below, not an SQLite error: the rows' fate is unknown
            log.exception("writing a history batch failed unexpectedly")
            failure = _Failure(exc, {})
        if failure is None:
            self._commits += 1
            for pending in batch:
                message = pending.message
                if pending.once:  # its retries, if any, get it too
                    self._recent.settle((message.room, message.nick, message.ref), message)  # type: ignore[arg-type]
                if pending.rewritten is not None:  # before on_stored: from then on, no read shows the old version
                    self._rewrite(pending.rewritten)
                _notify(pending, message)
                self._remember(message)
        else:
            self._fail(batch, failure)

    def _commit(self, rows: list[Row], rewrites: list[Rewrite]) -> _Failure | None:
        """Commit the rows (and rewrites) inline when that can neither fsync nor wait, else on the writer thread."""
        assert self._writer_pool is not None and self._writer is not None
        if not self._inline:
            failure: _Failure | None = self._writer_pool.apply(_write_batch, (self._writer, rows, rewrites))
            return failure
        checkpointing = self._checkpointing
        if checkpointing is not None and checkpointing.ready():
            self._checkpointing = None
            self._report_checkpoint(checkpointing.get())
            self._release_pin()
            self._restart_due = True
        if not self._restart_due:
            outcome = _write_inline(self._writer, rows, rewrites)
            if outcome is not _Locked.LOCKED:
                self._committed(len(rows), outcome)
                return outcome
        # Restarting the WAL (fsync), or another connection holds the write
        # lock: on the writer thread, which may wait.
        restart = self._restart_due
        error, failure = self._writer_pool.apply(_write_batch_waiting, (self._writer, rows, rewrites, restart))
        if error is not None:
            log.error("checkpointing the history before a commit failed: %s", error)
        if restart and failure is None:
            self._restart_due = False
        self._committed(len(rows), failure)
        return failure

    def _committed(self, rows: int, failure: _Failure | None) -> None:
        """Count the rows toward the next checkpoint; start it when they are enough."""
        if failure is not None:
            return
        self._rows_since_checkpoint += rows
        if (
            self._rows_since_checkpoint >= self.checkpoint_rows
            and self._checkpointing is None
            and not self._restart_due
        ):
            assert self._checkpoint_pool is not None
            self._rows_since_checkpoint = 0
            self._checkpointing = self._checkpoint_pool.spawn(_checkpoint, self._checkpointer, self._pin)

    def _release_pin(self) -> None:
        """End the pin's read transaction: no I/O, so on the hub; the WAL may restart from now on."""
        assert self._pin is not None
        try:
            if self._pin.in_transaction:
                self._pin.execute("COMMIT")
        except sqlite3.Error as exc:  # then the WAL does not restart this time: it grows on
            log.error("releasing the history's pin failed: %s", exc)

    def _report_checkpoint(self, result: _Checkpointed) -> None:
        if isinstance(result, sqlite3.Error):
            log.error("checkpointing the history failed: %s", result)
        else:
            log.debug("history checkpoint: %d of %d WAL frames copied", result[2], result[1])

    def _fail(self, batch: list[_Pending], failure: _Failure) -> None:
        log.error("storing %d messages failed: %s", len(batch), failure.error)
        rooms = {pending.message.room for pending in batch}
        behind = [pending for pending in self._queue if pending.message.room in rooms]
        if behind:
            self._queue = deque(pending for pending in self._queue if pending.message.room not in rooms)
            self._release_slots(behind)
        for room in rooms:
            first = min(pending.message.id for pending in batch if pending.message.room == room)
            last_id = failure.committed.get(room, first - 1)
            if last_id > 0:
                self._last_ids[room] = last_id
            else:
                self._last_ids.pop(room, None)
        for pending in [*batch, *behind]:
            stale = isinstance(failure.error, _StaleTarget) and pending.rewritten is not None
            error = (Conflict if stale else HistoryError)(
                f"message {pending.message.room}#{pending.message.id} not stored: {failure.error}"
            )
            error.__cause__ = failure.error
            if pending.rewritten is not None:
                self._forget_amendment(pending.rewritten)
            if pending.once:
                message = pending.message
                self._recent.settle((message.room, message.nick, message.ref), error)  # type: ignore[arg-type]
            _notify(pending, error)

    # -- the tail cache ------------------------------------------------------

    def _remember(self, message: StoredMessage) -> None:
        """Acknowledge ``message``: reads may show it, and a cached tail gets it."""
        room = message.room
        if room in self._tails:
            self._tails.append(message)  # acknowledged in id order, so the tail stays contiguous
        elif self._acked.get(room, 0) == 0:
            self._tails.start(room, [message])  # a new room: its whole history is this
        self._acked[room] = message.id

    def _rewrite(self, original: StoredMessage) -> None:
        """An amendment is acknowledged: its original's new version replaces the old in the tail cache."""
        self._forget_amendment(original)
        self._amendments_acked += 1
        self._tails.rewrite(original)

    def _forget_amendment(self, original: StoredMessage) -> None:
        """One amendment of ``original`` is no longer queued (acknowledged, or failed)."""
        key = (original.room, original.id)
        count, newest = self._amending[key]
        if count > 1:
            self._amending[key] = (count - 1, newest)
        else:
            del self._amending[key]

    # -- reading ------------------------------------------------------------

    def sent(self, room: str, nick: str, ref: Ref) -> bool:
        return self._recent.known((room, nick, ref))

    def recent(self, room: str, limit: int = 50) -> list[StoredMessage]:
        """The last ``limit`` acknowledged messages of the room, oldest first.

        Reads show a message only once its ``on_stored`` has run, not as soon
        as it is committed: a reader that registered for live delivery before
        reading then gets each message exactly once, from the read or live.
        The last :data:`TAIL_SIZE` messages of recently used rooms come from
        memory (:mod:`app.chat.tails`), on the hub; only the rest is read from
        the database, on the reader thread.
        """
        self._check_open()
        acked = self._acked.get(room, 0)
        if limit <= 0 or acked == 0:
            return []  # a room without history (all rooms' last ids are known since open)
        cached = self._tails.after(room, max(0, acked - limit), limit)
        if cached is not None:
            return cached
        rows = self._read(SELECT_RECENT, (room, acked, limit))
        messages = list(map(StoredMessage._make, reversed(rows)))
        if self._acked.get(room, 0) == acked:
            self._tails.start(room, messages)  # nothing was acknowledged meanwhile: it is the tail
        return messages

    def since(self, room: str, after_id: int, limit: int = 1000) -> list[StoredMessage]:
        """The first ``limit`` acknowledged messages of the room with an id above ``after_id``, oldest first.

        From memory when the tail cache holds them all (a client catching up
        after a reconnect, up to :data:`TAIL_SIZE` messages back), else read on
        the reader thread; a read that reached the last acknowledged message
        becomes the room's tail, so the next client back is answered from memory.
        """
        self._check_open()
        acked = self._acked.get(room, 0)
        if limit <= 0 or after_id >= acked:
            return []  # nothing after it: no trip to the reader thread
        cached = self._tails.after(room, after_id, limit)
        if cached is not None:
            return cached
        messages = list(map(StoredMessage._make, self._read(SELECT_SINCE, (room, after_id, acked, limit))))
        if messages and messages[-1].id == acked and self._acked.get(room, 0) == acked:
            self._tails.start(room, messages)  # it reached the last acknowledged message: it is the tail
        return messages

    def get(self, room: str, ids: Iterable[int]) -> dict[int, StoredMessage]:
        """The current version of these acknowledged ids of the room (from the tail cache when it holds them)."""
        self._check_open()
        acked = self._acked.get(room, 0)
        wanted = {message_id for message_id in ids if 0 < message_id <= acked}
        if not wanted:
            return {}
        cached = self._tails.get(room, wanted)
        if cached is not None:
            return cached
        rows = self._read(SELECT_IDS, (room, acked, json.dumps(sorted(wanted))))
        return {message.id: message for message in map(StoredMessage._make, rows)}

    def last_id(self, room: str) -> int:
        """The last id given in the room (0 if none); may be ahead of what is committed yet."""
        return self._last_ids.get(room, 0)

    def epoch(self, room: str) -> str:
        """The database's epoch (every room shares it): ids are numbered under it."""
        return self._epoch

    def replay(self, room: str, since: int | None, limit: int) -> Replay:
        """The newest ``limit`` messages of the room (after ``since`` if given), with the position."""
        last = self.last_id(room)
        if since is None:
            return Replay(self._epoch, last, self.recent(room, limit))
        return Replay(self._epoch, last, self.since(room, max(since, last - limit), limit))

    def acked_ids(self) -> dict[str, int]:
        """Each room's last acknowledged id (a copy): what the search index may catch up on."""
        return dict(self._acked)

    def room_names(self) -> list[str]:
        """The rooms that have history (ids given), sorted."""
        return sorted(self._last_ids)

    def check(self) -> None:
        """A read round trip to the database (for readiness); :class:`HistoryError` if it fails."""
        self._read("SELECT 1", ())

    def _read(self, sql: str, params: Sequence[Any]) -> list[Row]:
        self._check_open()
        self._reads += 1
        assert self._reader_pool is not None
        try:
            rows: list[Row] = self._reader_pool.apply(_fetch_all, (self._reader, sql, params))
        except sqlite3.Error as exc:
            raise HistoryError(f"reading history failed: {exc}") from exc
        return rows


def _notify(pending: _Pending, result: StoredMessage | HistoryError) -> None:
    """Call one ``on_stored``; its failure is its own and must not stop the others."""
    try:
        pending.on_stored(result)
    except Exception:
        log.exception("on_stored callback failed for %s#%d", pending.message.room, pending.message.id)


# -- run on the pools' OS threads ---------------------------------------------


def _connect(path: str, synchronous: str | None = None, timeout: float = BUSY_TIMEOUT) -> sqlite3.Connection:
    # Autocommit mode: transactions are explicit. Each connection is used by
    # one thread at a time: its pool's, or the hub's for inline commits.
    conn = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)
    if synchronous is not None:
        try:
            conn.execute(f"PRAGMA synchronous={synchronous}")  # one of SYNCHRONOUS_MODES, checked
        except BaseException:
            conn.close()
            raise
    return conn


def _open_writer(path: str, synchronous: str) -> tuple[sqlite3.Connection, dict[str, int], str]:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    inline = synchronous == "NORMAL"
    # Inline commits never wait for a lock: the thread path sets a busy timeout for itself.
    conn = _connect(path, timeout=0 if inline else BUSY_TIMEOUT)
    try:
        conn.execute(f"PRAGMA page_size={PAGE_SIZE}")  # a new database only; an existing one keeps its own
        (mode,) = conn.execute("PRAGMA journal_mode=WAL").fetchone()
        if str(mode).lower() != "wal":
            raise sqlite3.OperationalError(f"cannot use WAL mode (journal_mode is {mode})")
        conn.execute(f"PRAGMA synchronous={synchronous}")  # one of SYNCHRONOUS_MODES, checked
        if inline:
            conn.execute("PRAGMA wal_autocheckpoint=0")  # the checkpointer's job, off the hub
        conn.execute(SCHEMA)
        present = {column[1] for column in conn.execute("PRAGMA table_info(messages)")}
        for name, sql_type in ADDED_COLUMNS:
            if name not in present:  # a database made before amendments: its rows get NULL
                conn.execute(f"ALTER TABLE messages ADD COLUMN {name} {sql_type}")
        conn.execute(META_SCHEMA)
        conn.execute(NEW_EPOCH, (new_epoch(),))  # a database older than epochs gets one now
        (epoch,) = conn.execute(SELECT_EPOCH).fetchone()
        last_ids = {room: last for room, last in conn.execute(SELECT_LAST_IDS)}
    except BaseException:
        conn.close()
        raise
    return conn, last_ids, epoch


def _write_batch(conn: sqlite3.Connection, rows: list[Row], rewrites: list[Rewrite]) -> _Failure | None:
    """Commit the rows in one transaction; on failure, roll back and re-read the rooms' last ids."""
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.Error as exc:
        return _rolled_back(conn, rows, exc)
    return _insert_and_commit(conn, rows, rewrites)


def _try_write_batch(conn: sqlite3.Connection, rows: list[Row], rewrites: list[Rewrite]) -> _Failure | _Locked | None:
    """:func:`_write_batch` that does not wait (the connection's busy timeout is 0): LOCKED if it would."""
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.Error as exc:
        if exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY:
            return _Locked.LOCKED
        return _rolled_back(conn, rows, exc)
    return _insert_and_commit(conn, rows, rewrites)


def _write_inline(conn: sqlite3.Connection, rows: list[Row], rewrites: list[Rewrite]) -> _Failure | _Locked | None:
    """On the hub: :func:`_try_write_batch`, which there neither waits nor fsyncs (see the module docstring)."""
    return _try_write_batch(conn, rows, rewrites)


def _insert_and_commit(conn: sqlite3.Connection, rows: list[Row], rewrites: list[Rewrite]) -> _Failure | None:
    try:
        conn.executemany(INSERT, rows)
        for rewrite in rewrites:  # in queue order: a second amendment of one original expects the first's meta
            if conn.execute(REWRITE, rewrite).rowcount != 1:
                raise _StaleTarget(f"{rewrite[2]}#{rewrite[3]} changed since its amendment was checked")
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        return _rolled_back(conn, rows, exc)
    return None


def _rolled_back(conn: sqlite3.Connection, rows: list[Row], error: sqlite3.Error) -> _Failure:
    committed: dict[str, int] = {}
    try:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        for room in {row[0] for row in rows}:
            (last,) = conn.execute(SELECT_LAST_ID, (room,)).fetchone()
            committed[room] = last or 0
    except sqlite3.Error:
        committed = {}
    return _Failure(error, committed)


def _write_batch_waiting(
    conn: sqlite3.Connection, rows: list[Row], rewrites: list[Rewrite], restart: bool
) -> tuple[sqlite3.Error | None, _Failure | None]:
    """On the writer thread, with synchronous=NORMAL: :func:`_write_batch`, waiting for the lock if need be.

    With ``restart`` (the pin released), first copy what is left of the WAL,
    so that this commit starts a fresh one (and fsyncs its header here, not on
    the hub). Returns what failed in that, and the batch's fate.
    """
    error: sqlite3.Error | None = None
    if restart:
        try:
            conn.execute(CHECKPOINT).fetchall()
        except sqlite3.Error as exc:
            error = exc
    outcome = _try_write_batch(conn, rows, rewrites)
    if outcome is not _Locked.LOCKED:
        return error, outcome
    try:
        conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT * 1000)}")
    except sqlite3.Error as exc:
        return error, _Failure(exc, {})
    try:
        return error, _write_batch(conn, rows, rewrites)
    finally:
        try:
            conn.execute("PRAGMA busy_timeout=0")
        except sqlite3.Error:
            pass  # then the next inline commit may wait for a lock, on the hub; never seen


def _checkpoint(checkpointer: sqlite3.Connection, pin: sqlite3.Connection) -> _Checkpointed:
    """On the checkpointer's thread: copy the WAL into the database while inline commits go on.

    Each pass first (re)starts the pin's read transaction at the WAL's end:
    the checkpoint copies up to there, and the WAL cannot restart while the pin
    holds it, so no inline commit ever restarts it (and fsyncs). Re-pinning is
    safe since frames are left to copy: a WAL with frames left never restarts.
    The pin stays held when this returns, until the flusher has seen the result
    and sent the next commit to the writer thread.
    """
    try:
        result = (0, 0, 0)
        for _ in range(CHECKPOINT_PASSES):
            if pin.in_transaction:
                pin.execute("COMMIT")
            pin.execute("BEGIN")
            pin.execute(PIN_READ).fetchall()
            busy, frames, copied = checkpointer.execute(CHECKPOINT).fetchone()
            result = (busy, frames, copied)
            if frames - copied <= CHECKPOINT_LEFT:
                break
        return result
    except sqlite3.Error as exc:
        return exc


def _fetch_all(conn: sqlite3.Connection, sql: str, params: Sequence[Any]) -> list[Row]:
    return conn.execute(sql, params).fetchall()
