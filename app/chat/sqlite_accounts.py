"""Accounts in the history's SQLite file (table ``accounts``), for the embedded chat: see :mod:`app.chat.accounts`."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from typing import Any

from gevent.lock import Semaphore
from gevent.threadpool import ThreadPool

from .accounts import Account, account_key

__all__ = ["SQLiteAccounts"]


class _Failures:
    """Failure counts in memory, each with the end of its window (one process: the embedded chat)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._counts: dict[str, tuple[int, float]] = {}

    def record(self, key: str, window: int) -> tuple[int, float]:
        now = self._clock()
        count, ends = self._counts.get(key, (0, now + window))
        if ends <= now:
            count, ends = 0, now + window
        self._counts[key] = (count + 1, ends)
        if len(self._counts) > 10_000:  # forget the windows that are over
            self._counts = {k: v for k, v in self._counts.items() if v[1] > now}
        return count + 1, ends - now

    def get(self, key: str) -> tuple[int, float]:
        now = self._clock()
        count, ends = self._counts.get(key, (0, now))
        return (count, ends - now) if ends > now else (0, 0.0)

    def clear(self, key: str) -> None:
        self._counts.pop(key, None)


ACCOUNTS_SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    key TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created INTEGER NOT NULL,
    generation INTEGER NOT NULL DEFAULT 1
)
"""


class SQLiteAccounts:
    """Accounts in the history's SQLite file (table ``accounts``), on a thread of their own.

    Reads are cached in memory: this process is the only writer, so the
    cache is the table. Every account's generation is in memory from the
    start, so the checks on every handshake (is this nick registered? is
    this token's generation current?) never wait for the database.
    """

    def __init__(self, path: str, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._pool: ThreadPool | None = None
        self._cache: dict[str, Account | None] = {}
        self._generations: dict[str, int] = {}
        self._failures = _Failures(clock)
        self._write = Semaphore()

    def open(self) -> None:
        self._pool = ThreadPool(1)
        self._conn = self._pool.apply(_open_accounts, (self.path,))
        self._generations = dict(self._run("SELECT key, generation FROM accounts", ()))

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

    def generation(self, key: str) -> int | None:
        if self._conn is None:
            self.open()
        return self._generations.get(key)

    def get(self, key: str) -> Account | None:
        if key in self._cache:
            return self._cache[key]
        rows = self._run("SELECT name, password_hash, created, generation FROM accounts WHERE key = ?", (key,))
        account = Account(*rows[0]) if rows else None
        self._cache[key] = account
        if len(self._cache) > 10_000:
            self._cache.clear()
        return account

    def create(self, account: Account) -> bool:
        key = account_key(account.name)
        with self._write:
            rows = self._run(
                "INSERT INTO accounts (key, name, password_hash, created, generation) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (key) DO NOTHING RETURNING key",
                (key, *account),
            )
            if rows:
                self._cache[key] = account
                self._generations[key] = account.generation
            return bool(rows)

    def bump_generation(self, key: str) -> int:
        with self._write:
            rows = self._run(
                "UPDATE accounts SET generation = generation + 1 WHERE key = ? RETURNING generation", (key,)
            )
            self._cache.pop(key, None)
            if not rows:
                return 0
            self._generations[key] = int(rows[0][0])
            return int(rows[0][0])

    def record_failure(self, key: str, window: int) -> tuple[int, float]:
        return self._failures.record(key, window)

    def failures(self, key: str) -> tuple[int, float]:
        return self._failures.get(key)

    def clear_failures(self, key: str) -> None:
        self._failures.clear(key)


def _open_accounts(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=5.0, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(ACCOUNTS_SCHEMA)
    except BaseException:
        conn.close()
        raise
    return conn


def _execute(conn: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    return conn.execute(sql, params).fetchall()
