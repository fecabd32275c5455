"""Message history in Redis Streams, shared by every process of the chat.

Each room is one stream, ``prefix:stream:ROOM``, trimmed with ``MAXLEN ~``.
A message's id is its stream id: entry ``N-0`` is the room's message ``N``,
the same 1, 2, 3 … as the embedded SQLite history, so clients and ``since``
work unchanged, on any process.

Storing is one Lua script (atomic on the server): take the room's next
number (``INCR``), append the entry (``XADD``), then ``PUBLISH`` it to every
process. Appending before publishing means a message anyone received is
stored; doing both in one script means every process receives each room's
messages in id order, whichever process stored them. ``on_stored`` runs once
the script returned: acknowledged means appended. (Durability is Redis's:
run it with ``appendonly yes``, see the README.)

Each room also has an epoch, ``prefix:epoch:ROOM`` (see :mod:`app.chat.store`),
named by whoever first needs it (the store script, or a read, with ``SET NX``).
A Redis that restarted without its data has lost it with the counter, so
the room's next ids 1, 2, 3 … come under a new epoch. The epoch travels
with every message published: each process notices the restart and tells
its clients to reset, instead of dropping the new messages as already
delivered.

Submissions queue to one writer greenlet, which sends everything waiting as
one pipeline: a burst costs one round trip, as the SQLite history's group
commit costs one transaction.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import deque
from typing import Any

import gevent
import redis
from gevent.event import Event
from gevent.lock import Semaphore

from .events import message_json_around_id
from .protocol import Ref
from .redis_link import UNREACHABLE, RedisLink
from .store import (
    ONCE_SECONDS,
    Duplicate,
    HistoryError,
    HistoryUnavailable,
    OnStored,
    Replay,
    StoredMessage,
    new_epoch,
)

__all__ = ["RedisHistory", "event_header"]

log = logging.getLogger(__name__)

#: Entries kept per room stream (approximately: ``MAXLEN ~``).
STREAM_LENGTH = 10_000
BATCH_SIZE = 500

# KEYS: seq, stream, room set, events channel, epoch.
# ARGV: maxlen, JSON before the id, JSON after the id, room, pub/sub header before the id, a new epoch,
#       the retry key ('' when the message is not sent once), seconds it is kept.
# Returns the new id, or for a retry of a message still in the stream {the original id, its JSON}.
STORE = """
if ARGV[7] ~= '' then
  local prior = redis.call('GET', ARGV[7])
  if prior then
    local entry = redis.call('XRANGE', KEYS[2], prior .. '-0', prior .. '-0')
    if #entry > 0 then return {tonumber(prior), entry[1][2][2]} end
  end
end
local id = redis.call('INCR', KEYS[1])
local epoch = redis.call('GET', KEYS[5])
if not epoch then
  epoch = ARGV[6]
  redis.call('SET', KEYS[5], epoch)
end
local event = ARGV[2] .. id .. ARGV[3]
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], id .. '-0', 'm', event)
redis.call('SADD', KEYS[3], ARGV[4])
redis.call('PUBLISH', KEYS[4], ARGV[5] .. id .. '\\n' .. epoch .. '\\n' .. event)
if ARGV[7] ~= '' then redis.call('SET', ARGV[7], id, 'EX', ARGV[8]) end
return id
"""


def event_header(room: str | None, exclude_conn: str | None) -> str:
    """The start of a pub/sub payload: ``room \\n exclude \\n id \\n epoch \\n JSON`` (id and epoch come after)."""
    return f"{room or ''}\n{exclude_conn or ''}\n"


class _Pending:
    __slots__ = ("nick", "on_stored", "once", "ref", "room", "text", "ts")

    def __init__(
        self, room: str, nick: str, text: str, ts: int, ref: Ref | None, on_stored: OnStored, once: bool
    ) -> None:
        self.room, self.nick, self.text, self.ts, self.ref, self.on_stored = room, nick, text, ts, ref, on_stored
        self.once = once and ref is not None

    def retry_key(self, link: RedisLink) -> str:
        """The key that marks this message sent, for its retries: (room, nick, ref), hashed."""
        if not self.once:
            return ""
        digest = hashlib.sha256(json.dumps([self.room, self.nick, self.ref]).encode()).hexdigest()[:32]
        return link.key("sent", digest)

    def json_around_id(self) -> tuple[str, str]:
        return message_json_around_id(self.room, self.nick, self.text, self.ts, self.ref)

    def stored(self, message_id: int) -> StoredMessage:
        return StoredMessage(self.room, message_id, self.nick, self.text, self.ts, self.ref)


class RedisHistory:
    """Every room's history in Redis Streams; see the module docstring."""

    publishes = True

    def __init__(self, link: RedisLink, *, max_pending: int = 10_000, stream_length: int = STREAM_LENGTH) -> None:
        self.link = link
        self.stream_length = stream_length
        self._store_sha = ""
        self._queue: deque[_Pending] = deque()
        self._queued = Event()
        self._idle = Event()
        self._idle.set()
        self._slots = Semaphore(max_pending)
        self._writer: gevent.Greenlet | None = None
        self._open = False

    def _stream(self, room: str) -> str:
        return self.link.key("stream", room)

    # -- life cycle ---------------------------------------------------------

    def open(self) -> None:
        """Start the writer. Redis need not answer yet: the store script is loaded when it does."""
        self._open = True
        self._writer = gevent.spawn(self._run)

    def close(self) -> None:
        """Store what was submitted (while Redis answers), then stop and close the link.

        The service closes the broker first and the history last, so the
        link they share is closed here.
        """
        if not self._open:
            return
        self.flush()
        self._open = False
        if self._writer is not None:
            self._writer.kill()
        self.link.close()

    def flush(self) -> None:
        while self._queue or not self._idle.is_set():
            self._idle.wait()
            if self._queue:
                gevent.sleep(0)

    # -- writing ------------------------------------------------------------

    def submit(
        self, room: str, nick: str, text: str, ts: int, ref: Ref | None, on_stored: OnStored, *, once: bool = False
    ) -> None:
        """Queue a message; ``on_stored`` gets it once appended and published, or an error.

        With ``once``, a retry (same room, nick and ref within ONCE_SECONDS, on
        any process) is not stored: ``on_stored`` gets the original as a ``Duplicate``.
        """
        if not self._open:
            raise HistoryError("history is closed")
        if not self.link.up:
            raise HistoryUnavailable("redis is unreachable")
        self._slots.acquire()
        self._queue.append(_Pending(room, nick, text, ts, ref, on_stored, once))
        self._queued.set()

    def _run(self) -> None:
        while True:
            if not self._queue:
                self._queued.clear()
                self._queued.wait()
                continue
            batch = [self._queue.popleft() for _ in range(min(len(self._queue), BATCH_SIZE))]
            for _ in batch:
                self._slots.release()
            self._idle.clear()
            try:
                self._write(batch)
            except Exception:  # never let the writer die: later batches deserve a try
                log.exception("the redis history writer failed on a batch")
            finally:
                self._idle.set()

    def _write(self, batch: list[_Pending]) -> None:
        results = self._run_scripts(batch) if self._store_sha else []
        if not self._store_sha or any(isinstance(result, redis.exceptions.NoScriptError) for result in results):
            # Not loaded yet, or Redis restarted and lost its script cache (no script ran,
            # so running them again is safe).
            try:
                self._store_sha = self.link.client.script_load(STORE)
            except UNREACHABLE as exc:
                self.link.failed(exc)
                results = [HistoryUnavailable(f"redis unreachable: {exc}")] * len(batch)
            except redis.RedisError as exc:
                results = [exc] * len(batch)
            else:
                results = self._run_scripts(batch)
        for pending, result in zip(batch, results, strict=True):
            outcome: StoredMessage | Duplicate | HistoryError
            if isinstance(result, HistoryError):
                outcome = result
            elif isinstance(result, Exception):
                log.error("storing a message in %s failed: %s", pending.room, result)
                outcome = HistoryError(f"message not stored: {result}")
            elif isinstance(result, list):  # a retry: the original, as stored
                outcome = Duplicate(_message(pending.room, (f"{result[0]}-0".encode(), {b"m": result[1]})))
            else:
                outcome = pending.stored(int(result))
            try:
                pending.on_stored(outcome)
            except Exception:
                log.exception("on_stored callback failed for %s", pending.room)

    def _run_scripts(self, batch: list[_Pending]) -> list[Any]:
        """One pipeline of store scripts: a result or an exception per message."""
        rooms, channel = self.link.key("rooms"), self.link.key("events")
        epoch = new_epoch()  # taken only by a room whose ids start (again) in this batch
        pipe = self.link.client.pipeline(transaction=False)
        for pending in batch:
            head, tail = pending.json_around_id()
            room = pending.room
            keys = [self.link.key("seq", room), self._stream(room), rooms, channel, self.link.key("epoch", room)]
            args: list[Any] = [
                self.stream_length,
                head,
                tail,
                room,
                event_header(room, None),
                epoch,
                pending.retry_key(self.link),
                ONCE_SECONDS,
            ]
            pipe.evalsha(self._store_sha, len(keys), *keys, *args)
        try:
            return list(pipe.execute(raise_on_error=False))
        except UNREACHABLE as exc:
            self.link.failed(exc)
            return [HistoryUnavailable(f"redis unreachable: {exc}")] * len(batch)
        except redis.RedisError as exc:
            return [exc] * len(batch)

    # -- reading ------------------------------------------------------------

    def recent(self, room: str, limit: int = 50) -> list[StoredMessage]:
        """The last ``limit`` messages of the room, oldest first."""
        if limit <= 0:
            return []
        entries = self._call(self.link.client.xrevrange, self._stream(room), "+", "-", count=limit)
        return [_message(room, entry) for entry in reversed(entries)]

    def since(self, room: str, after_id: int, limit: int = 1000) -> list[StoredMessage]:
        """The first ``limit`` messages of the room with an id above ``after_id``, oldest first."""
        if limit <= 0:
            return []
        entries = self._call(self.link.client.xrange, self._stream(room), f"({after_id}-0", "+", count=limit)
        return [_message(room, entry) for entry in entries]

    def last_id(self, room: str) -> int:
        """The last id given in the room (0 if none)."""
        return int(self._call(self.link.client.get, self.link.key("seq", room)) or 0)

    def epoch(self, room: str) -> str:
        """The room's epoch, named now if it has none yet."""
        with self.link.client.pipeline(transaction=True) as pipe:
            pipe.set(self.link.key("epoch", room), new_epoch(), nx=True)
            pipe.get(self.link.key("epoch", room))
            _, epoch = self._call(pipe.execute)
        return str(epoch.decode())

    def replay(self, room: str, since: int | None, limit: int) -> Replay:
        """The newest ``limit`` messages (after ``since`` if given) and the position, read in one transaction."""
        oldest = "-" if since is None else f"({since}-0"
        epoch_key = self.link.key("epoch", room)
        with self.link.client.pipeline(transaction=True) as pipe:  # MULTI: one point of the history
            pipe.set(epoch_key, new_epoch(), nx=True)
            pipe.get(epoch_key)
            pipe.get(self.link.key("seq", room))
            pipe.xrevrange(self._stream(room), "+", oldest, count=max(limit, 1))
            _, epoch, last, entries = self._call(pipe.execute)
        messages = [_message(room, entry) for entry in reversed(entries)] if limit > 0 else []
        return Replay(epoch.decode(), int(last or 0), messages)

    def room_names(self) -> list[str]:
        """The rooms that have history, sorted."""
        return sorted(name.decode() for name in self._call(self.link.client.smembers, self.link.key("rooms")))

    def check(self) -> None:
        """Redis answers a PING."""
        self._call(self.link.client.ping)

    def _call(self, command: Any, *args: Any, **kwargs: Any) -> Any:
        if not self.link.up:  # fail fast until the subscriber has reconnected
            raise HistoryUnavailable(f"redis at {self.link.url} is unreachable")
        try:
            return command(*args, **kwargs)
        except UNREACHABLE as exc:
            self.link.failed(exc)
            raise HistoryUnavailable(f"redis unreachable: {exc}") from exc
        except redis.RedisError as exc:
            raise HistoryError(f"reading history failed: {exc}") from exc


def _message(room: str, entry: tuple[bytes, dict[bytes, bytes]]) -> StoredMessage:
    entry_id, fields = entry
    event = json.loads(fields[b"m"])
    return StoredMessage(
        room, int(entry_id.split(b"-")[0]), event["from"], event["text"], event["ts"], event.get("ref")
    )
