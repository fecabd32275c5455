"""The room directory in the history's SQLite file, for the embedded chat: see :mod:`app.chat.directory`."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from typing import Any

from gevent.lock import Semaphore
from gevent.threadpool import ThreadPool

from .accounts import account_key
from .directory import MAX_ACTIONS, ModAction, RoomSettings, member_keys

__all__ = ["SQLiteDirectory"]

DIRECTORY_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS room_settings (name TEXT PRIMARY KEY, settings TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS mod_actions ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT, ts INTEGER NOT NULL, room TEXT NOT NULL, actor TEXT NOT NULL,"
    " action TEXT NOT NULL, target TEXT NOT NULL, detail TEXT NOT NULL)",
)
UPSERT = (
    "INSERT INTO room_settings (name, settings) VALUES (?, ?) "
    "ON CONFLICT (name) DO UPDATE SET settings = excluded.settings"
)
SELECT_ACTIONS = "SELECT ts, room, actor, action, target, detail FROM mod_actions ORDER BY id DESC LIMIT ?"


class SQLiteDirectory:
    """The directory in tables ``room_settings`` (JSON per room) and ``mod_actions``, on a thread of its own.

    This process is the only writer, so every room's settings are read into
    memory on :meth:`open` and kept there: a read (on every join and every
    message of an owned room) never waits for the database, and
    :meth:`rooms_of` is an index lookup. Writes go through to the file, so the
    settings outlive the process. Slow mode is timed in memory only.
    """

    def __init__(self, path: str, clock: Callable[[], float] = time.time, keep_actions: int = MAX_ACTIONS) -> None:
        self.path = path
        self._clock = clock
        self._keep_actions = keep_actions
        self._conn: sqlite3.Connection | None = None
        self._pool: ThreadPool | None = None
        self._rooms: dict[str, RoomSettings] = {}
        self._rooms_of: dict[str, set[str]] = {}  # account key -> names of the private rooms it is a member of
        self._next_send: dict[tuple[str, str], float] = {}  # (room, user) -> when slow mode lets them send again
        self._write = Semaphore()

    def open(self) -> None:
        self._pool = ThreadPool(1)
        self._conn = self._pool.apply(_open_directory, (self.path,))
        self._rooms, self._rooms_of = {}, {}
        for (text,) in self._run("SELECT settings FROM room_settings", ()):
            self._remember(RoomSettings.from_json(text))

    def close(self) -> None:
        if self._pool is not None and self._conn is not None:
            self._pool.apply(self._conn.close)
        if self._pool is not None:
            self._pool.kill()
        self._conn = self._pool = None

    def _run(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        if self._pool is None or self._conn is None:  # used before open(): opened on first use
            self.open()
        assert self._pool is not None
        rows: list[tuple[Any, ...]] = self._pool.apply(_execute, (self._conn, sql, params))
        return rows

    def _loaded(self) -> None:
        if self._conn is None:
            self.open()

    # -- settings --------------------------------------------------------------------

    def get(self, room: str) -> RoomSettings | None:
        self._loaded()
        return self._rooms.get(room)

    def create(self, settings: RoomSettings) -> bool:
        self._loaded()
        with self._write:
            if settings.name in self._rooms:
                return False
            rows = self._run(
                "INSERT INTO room_settings (name, settings) VALUES (?, ?) ON CONFLICT (name) DO NOTHING RETURNING name",
                (settings.name, settings.to_json()),
            )
            if rows:
                self._remember(settings)
            return bool(rows)

    def update(self, room: str, change: Callable[[RoomSettings], RoomSettings]) -> RoomSettings | None:
        self._loaded()
        with self._write:  # one writer at a time: no other change lands between the read and the write
            old = self._rooms.get(room)
            if old is None:
                return None
            new = change(old)
            if new.name != room:
                raise ValueError(f"a change of {room!r} returned the settings of {new.name!r}")
            if new != old:
                self._run(UPSERT, (room, new.to_json()))
                self._forget(old)
                self._remember(new)
            return new

    def delete(self, room: str) -> bool:
        self._loaded()
        with self._write:
            old = self._rooms.get(room)
            if old is None:
                return False
            self._run("DELETE FROM room_settings WHERE name = ?", (room,))
            self._forget(old)
            return True

    def rooms_of(self, name: str) -> list[RoomSettings]:
        self._loaded()
        return [self._rooms[room] for room in sorted(self._rooms_of.get(account_key(name), ()))]

    def _remember(self, settings: RoomSettings) -> None:
        self._rooms[settings.name] = settings
        for key in member_keys(settings):
            self._rooms_of.setdefault(key, set()).add(settings.name)

    def _forget(self, settings: RoomSettings) -> None:
        self._rooms.pop(settings.name, None)
        for key in member_keys(settings):
            rooms = self._rooms_of.get(key, set())
            rooms.discard(settings.name)
            if not rooms:
                self._rooms_of.pop(key, None)

    # -- the moderation log ------------------------------------------------------------

    def record(self, action: ModAction) -> None:
        if self._pool is None or self._conn is None:
            self.open()
        assert self._pool is not None
        self._pool.apply(_append_action, (self._conn, action, self._keep_actions))

    def actions(self, limit: int = 100) -> list[ModAction]:
        return [ModAction(*row) for row in self._run(SELECT_ACTIONS, (limit,))]

    # -- slow mode ----------------------------------------------------------------------

    def slow_wait(self, room: str, user: str, seconds: int) -> float:
        if seconds <= 0:
            return 0.0
        now = self._clock()
        next_send = self._next_send.get((room, user), 0.0)
        if next_send > now:
            return next_send - now
        self._next_send[(room, user)] = now + seconds
        if len(self._next_send) > 10_000:  # forget the waits that are over
            self._next_send = {k: v for k, v in self._next_send.items() if v > now}
        return 0.0


def _open_directory(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=5.0, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        for statement in DIRECTORY_SCHEMA:
            conn.execute(statement)
    except BaseException:
        conn.close()
        raise
    return conn


def _execute(conn: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    return conn.execute(sql, params).fetchall()


def _append_action(conn: sqlite3.Connection, action: ModAction, keep: int) -> None:
    """Insert ``action`` and drop what falls off the end of the log, in one transaction."""
    with conn:
        conn.execute("BEGIN")
        (last,) = conn.execute(
            "INSERT INTO mod_actions (ts, room, actor, action, target, detail) VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
            (action.ts, action.room, action.actor, action.action, action.target, action.detail),
        ).fetchone()
        conn.execute("DELETE FROM mod_actions WHERE id <= ?", (last - keep,))
