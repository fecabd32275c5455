"""Full-text search in the history: SQLite's FTS5, kept off the hot path.

Messages are not indexed as they are committed (an FTS5 insert costs tens of
µs, and inline commits run on the hub): an *indexer* greenlet, once a
second, asks the history which rooms have new acknowledged messages and
indexes them on a thread of its own, with its own connection. A message is
found at most about :data:`INDEX_EVERY` seconds after it was sent.

The index is a database file of its own beside the history's
(``chat.db`` → ``chat.search.db``: ``messages_fts``, the messages' words and
fields, and ``fts_indexed``, each room's last indexed id), with the
history's attached read-only: indexing only *reads* the history (a WAL
reader, which never blocks its writer), so the history's commits never wait
for the index's. It survives restarts, catches up on what was stored while
it was away, and can be deleted at any time (it is rebuilt).

Only originals are indexed, as they are when indexed; an amendment entry is
not, but an edit or deletion re-indexes its original: its row goes, and
comes back with its new text unless it was deleted. Each indexed message's
FTS rowid is kept in ``fts_keys`` for that. A search returns each message as
the history has it now (its meta included), and never a deleted one; an
edited one is found by its old words only until the next pass.

A query is words: each is matched as a whole word or its start (``deplo``
finds ``deployed``), without case or accents, all of them in one message;
FTS5's own syntax is not exposed (quotes, ``OR``, ``NEAR`` … are plain text).
Results come best match first, then newest.

With Redis (``CHAT_REDIS_URL``) there is no index: :class:`NoSearch`
refuses, and docs/protocol.md §6 says so.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import urllib.parse
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

import gevent
from gevent.lock import Semaphore
from gevent.threadpool import ThreadPool

from .protocol import PRIVATE_PREFIXES, ChatError
from .sqlite_history import history_columns
from .store import StoredMessage

__all__ = ["MAX_QUERY", "NoSearch", "SQLiteSearch", "Search", "fts_query"]

log = logging.getLogger(__name__)

#: Seconds between two passes of the indexer; rows indexed per room and pass. (Passes every
#: 0.25 s cost the rooms benchmark more than once a second: each pass has a fixed cost.)
INDEX_EVERY = 1.0
INDEX_BATCH = 5000
MAX_QUERY = 200
MAX_WORDS = 16
_WORD = re.compile(r"\w+", re.UNICODE)

#: The index's layout; an index file of an older one is dropped and rebuilt at open.
VERSION = 2
SCHEMA = (
    "CREATE VIRTUAL TABLE IF NOT EXISTS messages_fts USING fts5(text, room UNINDEXED, id UNINDEXED, "
    "nick UNINDEXED, ts UNINDEXED, ref UNINDEXED, tokenize = 'unicode61 remove_diacritics 2')",
    "CREATE TABLE IF NOT EXISTS fts_indexed (room TEXT PRIMARY KEY, last_id INTEGER NOT NULL)",
    # Each indexed message's rowid in messages_fts: an edit or deletion finds its original's row by it
    # (room and id are UNINDEXED columns: looking them up would read the whole index).
    "CREATE TABLE IF NOT EXISTS fts_keys (room TEXT NOT NULL, id INTEGER NOT NULL, UNIQUE (room, id))",
)
#: A history row worth finding: an original (no amendment entry), neither deleted nor empty.
_SHOWN = (
    "m.kind IS NULL AND m.text != '' AND "
    "CASE WHEN m.meta IS NULL THEN 1 WHEN json_valid(m.meta) THEN json_type(m.meta, '$.deleted') IS NULL ELSE 1 END"
)
#: Copied inside SQLite, the GIL released, a few statements a room: no Python work per message, which
#: would hold the GIL from the hub (the ref as JSON: a string quoted, an integer's BLOB as its digits).
KEY_ROOM = (
    "INSERT OR IGNORE INTO fts_keys (room, id) "
    "SELECT room, id FROM history.messages WHERE room = ? AND id > ? AND id <= ? AND kind IS NULL"
)
_INSERT_FTS = (
    "INSERT INTO messages_fts (rowid, text, room, id, nick, ts, ref) SELECT k.rowid, m.text, m.room, m.id, m.nick, "
    "m.ts, CASE typeof(m.ref) WHEN 'blob' THEN CAST(m.ref AS TEXT) ELSE json_quote(m.ref) END "
    "FROM history.messages AS m JOIN fts_keys AS k ON k.room = m.room AND k.id = m.id "
)
#: The room's new originals, as they are now (an original edited since it was sent has its new text).
INDEX_ROOM = f"{_INSERT_FTS} WHERE m.room = ? AND m.id > ? AND m.id <= ? AND {_SHOWN}"
#: The originals the room's new edits and deletions changed: their rows go, and come back as they are now.
_AMENDED = "SELECT target FROM history.messages WHERE room = ? AND id > ? AND id <= ? AND kind IN ('edit', 'delete')"
UNINDEX_AMENDED = (
    f"DELETE FROM messages_fts WHERE rowid IN (SELECT rowid FROM fts_keys WHERE room = ? AND id IN ({_AMENDED}))"
)
REINDEX_AMENDED = f"{_INSERT_FTS} WHERE m.room = ? AND m.id IN ({_AMENDED}) AND {_SHOWN}"


def index_path(history_path: str) -> str:
    """Where the index of the history at ``history_path`` lives: ``chat.db`` -> ``chat.search.db``."""
    path = Path(history_path)
    return str(path.with_name(f"{path.stem}.search{path.suffix or '.db'}"))


class Search(Protocol):
    def open(self) -> None: ...

    def close(self) -> None: ...

    def search(
        self, query: str, rooms: Iterable[str] | None, limit: int, private: Iterable[str] = ()
    ) -> list[StoredMessage]:
        """The messages matching ``query``, best first; ``ChatError`` if refused.

        In ``rooms``; or (None) in every public room and the ``private`` ones
        (the private rooms and conversations the asker is a member of).
        """


def fts_query(query: str) -> str:
    """``query``'s words as an FTS5 query: each a quoted prefix (``"deplo"*``), all of them required."""
    if len(query) > MAX_QUERY:
        raise ChatError("invalid_query", f"a search is at most {MAX_QUERY} characters")
    words = _WORD.findall(query)[:MAX_WORDS]
    if not words:
        raise ChatError("invalid_query", "search for at least one word")
    return " ".join(f'"{word}"*' for word in words)


class SQLiteSearch:
    """FTS5 over the SQLite history; see the module docstring."""

    def __init__(self, history_path: str, acked: Callable[[], dict[str, int]]) -> None:
        self.history_path = history_path
        self.path = index_path(history_path)
        #: Each room's last acknowledged id, from the history: what there is to index.
        self._acked = acked
        self._pool: ThreadPool | None = None
        self._conn: sqlite3.Connection | None = None
        self._indexed: dict[str, int] = {}
        self._indexer: gevent.Greenlet | None = None
        self._indexing = Semaphore()  # one pass at a time: each reads what the last one indexed

    def open(self) -> None:
        self._pool = ThreadPool(1)
        self._conn, self._indexed = self._pool.apply(_open, (self.path, self.history_path))
        self._indexer = gevent.spawn(self._index_loop)

    def close(self) -> None:
        if self._indexer is not None:
            self._indexer.kill()
            self._indexer = None
        if self._pool is not None:
            if self._conn is not None:
                self._pool.apply(self._conn.close)
            self._pool.kill()
        self._pool = self._conn = None

    def _index_loop(self) -> None:
        while True:
            try:
                self.index_pending()
            except sqlite3.Error as exc:  # locked for long, disk full …: the next pass tries again
                log.warning("search: indexing failed: %s", exc)
            gevent.sleep(INDEX_EVERY)

    def index_pending(self) -> int:
        """Index what was acknowledged since the last pass; how many messages."""
        with self._indexing:
            return self._index_pending()

    def _index_pending(self) -> int:
        indexed = self._indexed
        todo = {
            room: (indexed.get(room, 0), min(last, indexed.get(room, 0) + INDEX_BATCH))
            for room, last in self._acked().items()
            if last > indexed.get(room, 0)
        }
        if not todo or self._pool is None:
            return 0
        self._pool.apply(_index, (self._conn, todo))
        for room, (_, upto) in todo.items():
            indexed[room] = upto
        return sum(upto - after for after, upto in todo.values())

    def search(
        self, query: str, rooms: Iterable[str] | None, limit: int, private: Iterable[str] = ()
    ) -> list[StoredMessage]:
        match = fts_query(query)
        if self._pool is None:
            raise ChatError("unavailable", "search is not open")
        names = None if rooms is None else sorted(set(rooms))
        if names == []:
            return []
        allowed = sorted(set(private))
        rows: list[tuple[Any, ...]] = self._pool.apply(_search, (self._conn, match, names, limit, allowed))
        return list(map(StoredMessage._make, rows))


class NoSearch:
    """No index (the Redis store): every search is refused with ``unsupported`` (501)."""

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def search(
        self, query: str, rooms: Iterable[str] | None, limit: int, private: Iterable[str] = ()
    ) -> list[StoredMessage]:
        raise ChatError(
            "unsupported", "search needs the embedded SQLite store: it is off with CHAT_REDIS_URL", status=501
        )


# -- on the search thread ---------------------------------------------------------------


def _open(path: str, history_path: str) -> tuple[sqlite3.Connection, dict[str, int]]:
    # Opened as a URI, so that the history's URI below is one too (read-only), whatever the build's default.
    uri = "file:" + urllib.parse.quote(str(Path(path).resolve()))
    conn = sqlite3.connect(uri, timeout=5.0, isolation_level=None, check_same_thread=False, uri=True)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")  # an index: rebuilt if a power cut loses its last pass
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        if version != VERSION:  # made before edits and deletions were re-indexed: rebuilt
            for table in ("messages_fts", "fts_indexed", "fts_keys"):
                conn.execute(f"DROP TABLE IF EXISTS {table}")
            conn.execute(f"PRAGMA user_version = {VERSION}")
        for statement in SCHEMA:
            conn.execute(statement)
        history_uri = "file:" + urllib.parse.quote(str(Path(history_path).resolve())) + "?mode=ro"
        conn.execute("ATTACH DATABASE ? AS history", (history_uri,))
        indexed = dict(conn.execute("SELECT room, last_id FROM fts_indexed").fetchall())
    except BaseException:
        conn.close()
        raise
    return conn, indexed


def _index(conn: sqlite3.Connection, todo: dict[str, tuple[int, int]]) -> None:
    """Index each room's acknowledged messages in ``(after, upto]``, in one transaction."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        for room, (after, upto) in todo.items():
            conn.execute(KEY_ROOM, (room, after, upto))
            conn.execute(INDEX_ROOM, (room, after, upto))
            conn.execute(UNINDEX_AMENDED, (room, room, after, upto))
            conn.execute(REINDEX_AMENDED, (room, room, after, upto))
        conn.executemany(
            "INSERT INTO fts_indexed (room, last_id) VALUES (?, ?) "
            "ON CONFLICT (room) DO UPDATE SET last_id = excluded.last_id",
            [(room, upto) for room, (_, upto) in todo.items()],
        )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _search(
    conn: sqlite3.Connection, match: str, rooms: list[str] | None, limit: int, private: list[str]
) -> list[tuple[Any, ...]]:
    where = f"messages_fts MATCH ? AND {_SHOWN}"
    params: list[Any] = [match]
    if rooms is not None:
        where += f" AND f.room IN ({', '.join('?' * len(rooms))})"
        params += rooms
    else:  # every public room (names the server never gives a private room), and the asker's private ones
        public = " AND ".join(f"substr(f.room, 1, {len(prefix)}) != ?" for prefix in PRIVATE_PREFIXES)
        mine = f" OR f.room IN ({', '.join('?' * len(private))})" if private else ""
        where += f" AND (({public}){mine})"
        params += [*PRIVATE_PREFIXES, *private]
    # Each found message as the history has it now (its meta too), a deletion not yet indexed left out.
    sql = (
        f"SELECT {history_columns('m')} FROM messages_fts AS f "
        f"JOIN history.messages AS m ON m.room = f.room AND m.id = f.id "
        f"WHERE {where} ORDER BY f.rank, f.ts DESC LIMIT ?"
    )
    try:
        return conn.execute(sql, [*params, limit]).fetchall()
    except sqlite3.OperationalError as exc:  # a query FTS5 refuses after all
        raise ChatError("invalid_query", f"cannot search for that: {exc}") from exc
