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

An entry's field ``m`` is its event's JSON, as published; ``a`` is its
author (the sender's session id, never sent to clients). An amendment entry
(see :mod:`app.chat.store`) has ``m``, the ``update`` event, and ``k``, ``t``,
``x`` and ``e``: its kind, target, meta and text.

Amendments
----------
A stream entry cannot be rewritten, so an amended original's current
version lives in the room's *overlay*, the hash ``prefix:overlay:ROOM``:
field ``N`` is message N as it is now (JSON: nick, text, ts, ref, author,
meta), and field ``N:x`` its meta alone (absent when None), which the amend
script compares. The amend script is one step, as the store script: check
the original is in the stream, an original, at the expected meta (else
nothing is written: a conflict), write its overlay, then append and publish
the entry exactly as a message is (the same Lua, epoch included). Reads are
one script each too, so an entry and its overlay are read at one point: the
replay's position, entries and overlay at once (it was a ``MULTI``).

Overlay fields of messages trimmed from the stream are dead weight, left
until the overlay has more than 4 × the stream's length fields: the next
amendment then deletes those below the stream's first id. Each amendment
adds at most two fields, and the live ones are at most two per message in
the stream, so that sweep costs O(1) amortized. A trimmed message cannot be
amended (a conflict) nor read, overlay or not.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import deque
from collections.abc import Iterable
from typing import Any

import gevent
import redis
from gevent.event import Event
from gevent.lock import Semaphore

from .events import message_json_around_id, update_json_around_id
from .protocol import Ref
from .redis_link import UNREACHABLE, RedisLink
from .store import (
    ONCE_SECONDS,
    Conflict,
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

# Both write scripts, first: KEYS seq, stream, room set, events channel, epoch;
# ARGV maxlen, JSON before the id, JSON after the id, room, pub/sub header before the id, a new epoch.
# append(fields): take the room's next id, append the event (and these fields), publish it; the new id.
APPEND = """
local function append(fields)
  local id = redis.call('INCR', KEYS[1])
  local epoch = redis.call('GET', KEYS[5])
  if not epoch then
    epoch = ARGV[6]
    redis.call('SET', KEYS[5], epoch)
  end
  local event = ARGV[2] .. id .. ARGV[3]
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], id .. '-0', 'm', event, unpack(fields))
  redis.call('SADD', KEYS[3], ARGV[4])
  redis.call('PUBLISH', KEYS[4], ARGV[5] .. id .. '\\n' .. epoch .. '\\n' .. event)
  return id
end
"""
# ARGV then: the retry key ('' when the message is not sent once), seconds it is kept, the author ('' if none).
# Returns the new id, or for a retry of a message still in the stream {the original id, its fields}.
STORE = (
    APPEND
    + """
if ARGV[7] ~= '' then
  local prior = redis.call('GET', ARGV[7])
  if prior then
    local entry = redis.call('XRANGE', KEYS[2], prior .. '-0', prior .. '-0')
    if #entry > 0 then return {tonumber(prior), entry[1][2]} end
  end
end
local fields = {}
if ARGV[9] ~= '' then fields = {'a', ARGV[9]} end
local id = append(fields)
if ARGV[7] ~= '' then redis.call('SET', ARGV[7], id, 'EX', ARGV[8]) end
return id
"""
)
# KEYS then: the overlay. ARGV then: the original's id, '1' if a meta is expected ('0': none), the expected
# meta, the original's new version (JSON), its new meta after a '=' ('' when none), the entry's fields.
# Returns the entry's id, or 0 (a conflict: nothing written).
AMEND = (
    APPEND
    + """
local target = ARGV[7]
local original = redis.call('XRANGE', KEYS[2], target .. '-0', target .. '-0')
if #original == 0 then return 0 end
local meta = false
local fields = original[1][2]
for i = 1, #fields, 2 do
  if fields[i] == 'k' then return 0 end
  if fields[i] == 'x' then meta = fields[i + 1] end
end
if redis.call('HEXISTS', KEYS[6], target) == 1 then meta = redis.call('HGET', KEYS[6], target .. ':x') end
if ARGV[8] == '1' then
  if meta ~= ARGV[9] then return 0 end
elseif meta then
  return 0
end
redis.call('HSET', KEYS[6], target, ARGV[10])
redis.call('HDEL', KEYS[6], target .. ':x')
if ARGV[11] ~= '' then redis.call('HSET', KEYS[6], target .. ':x', string.sub(ARGV[11], 2)) end
local entry = {}
for i = 12, #ARGV do entry[#entry + 1] = ARGV[i] end
local id = append(entry)
if redis.call('HLEN', KEYS[6]) > 4 * tonumber(ARGV[1]) then
  local first = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
  local oldest = tonumber(string.match(first[1][1], '^(%d+)'))
  for _, field in ipairs(redis.call('HKEYS', KEYS[6])) do
    if tonumber(string.match(field, '^(%d+)')) < oldest then redis.call('HDEL', KEYS[6], field) end
  end
end
return id
"""
)
# KEYS: stream, overlay, epoch, seq. ARGV: 'rev' or 'fwd', from, to, count, a new epoch ('': no position).
# Returns {entries, their overlay (nil where none)} and, with a new epoch, the room's epoch and last id.
READ = """
local entries
if ARGV[1] == 'rev' then
  entries = redis.call('XREVRANGE', KEYS[1], ARGV[2], ARGV[3], 'COUNT', ARGV[4])
else
  entries = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[3], 'COUNT', ARGV[4])
end
local overlay = {}
local ids = {}
for i, entry in ipairs(entries) do ids[i] = string.match(entry[1], '^(%d+)') end
for i = 1, #ids, 1000 do
  local part = redis.call('HMGET', KEYS[2], unpack(ids, i, math.min(i + 999, #ids)))
  for j = 1, #part do overlay[i + j - 1] = part[j] end
end
if ARGV[5] == '' then return {entries, overlay} end
redis.call('SET', KEYS[3], ARGV[5], 'NX')
return {entries, overlay, redis.call('GET', KEYS[3]), redis.call('GET', KEYS[4])}
"""
# KEYS: stream, overlay. ARGV: ids. Returns {entry, its overlay or nil} for each id in the stream.
GET = """
local found = {}
for _, id in ipairs(ARGV) do
  local entry = redis.call('XRANGE', KEYS[1], id .. '-0', id .. '-0')
  if #entry > 0 then found[#found + 1] = {entry[1], redis.call('HGET', KEYS[2], id)} end
end
return found
"""


def sent_key(link: RedisLink, room: str, nick: str, ref: Ref | None) -> str:
    """The key that marks a message sent with a ref, for its retries: (room, nick, ref), hashed."""
    digest = hashlib.sha256(json.dumps([room, nick, ref]).encode()).hexdigest()[:32]
    return link.key("sent", digest)


def event_header(room: str | None, exclude_conn: str | None) -> str:
    """The start of a pub/sub payload: ``room \\n exclude \\n id \\n epoch \\n JSON`` (id and epoch come after)."""
    return f"{room or ''}\n{exclude_conn or ''}\n"


class _Pending:
    """A message waiting for the writer."""

    __slots__ = ("author", "nick", "on_stored", "once", "ref", "room", "text", "ts")

    def __init__(
        self,
        room: str,
        nick: str,
        text: str,
        ts: int,
        ref: Ref | None,
        on_stored: OnStored,
        once: bool,
        author: str | None = None,
    ) -> None:
        self.room, self.nick, self.text, self.ts, self.ref, self.on_stored = room, nick, text, ts, ref, on_stored
        self.once = once and ref is not None
        self.author = author

    def retry_key(self, link: RedisLink) -> str:
        """The key that marks this message sent, for its retries: (room, nick, ref), hashed."""
        if not self.once:
            return ""
        return sent_key(link, self.room, self.nick, self.ref)

    def script(self, history: RedisHistory, epoch: str) -> tuple[str, list[Any], list[Any]]:
        """Which script stores it, with its keys and arguments."""
        head, tail = message_json_around_id(self.room, self.nick, self.text, self.ts, self.ref)
        args = [self.retry_key(history.link), ONCE_SECONDS, self.author or ""]
        return STORE, history.append_keys(self.room), history.append_args(self.room, epoch, head, tail, args)

    def outcome(self, result: Any) -> StoredMessage | Duplicate | HistoryError:
        if isinstance(result, list):  # a retry: the original, as stored
            return Duplicate(_message(self.room, str(result[0]).encode(), _fields(result[1]), None))
        return StoredMessage(self.room, int(result), self.nick, self.text, self.ts, self.ref, self.author)


class _Amendment:
    """An amendment waiting for the writer."""

    __slots__ = ("entry", "expected_meta", "on_stored", "room", "target")

    def __init__(
        self, target: StoredMessage, expected_meta: str | None, entry: StoredMessage, on_stored: OnStored
    ) -> None:
        self.room = target.room
        self.target = target._replace(kind=None, target=None)
        self.entry = entry._replace(room=target.room, target=target.id)
        self.expected_meta = expected_meta
        self.on_stored = on_stored

    def script(self, history: RedisHistory, epoch: str) -> tuple[str, list[Any], list[Any]]:
        target, entry = self.target, self.entry
        head, tail = update_json_around_id(entry, target)
        fields = ["k", entry.kind or "", "t", str(target.id)]
        for name, value in (("a", entry.author), ("x", entry.meta), ("e", entry.text or None)):
            if value is not None:
                fields += [name, value]
        args = [
            target.id,
            "0" if self.expected_meta is None else "1",
            self.expected_meta or "",
            _overlay_value(target),
            "" if target.meta is None else f"={target.meta}",
            *fields,
        ]
        keys = [*history.append_keys(self.room), history.link.key("overlay", self.room)]
        return AMEND, keys, history.append_args(self.room, epoch, head, tail, args)

    def outcome(self, result: Any) -> StoredMessage | Duplicate | HistoryError:
        if int(result) == 0:
            return Conflict(f"{self.room}#{self.target.id} is not at the version read; read it again")
        return self.entry._replace(id=int(result))


class RedisHistory:
    """Every room's history in Redis Streams; see the module docstring."""

    publishes = True

    def __init__(self, link: RedisLink, *, max_pending: int = 10_000, stream_length: int = STREAM_LENGTH) -> None:
        self.link = link
        self.stream_length = stream_length
        #: The write scripts' SHA1s, once loaded (script -> sha).
        self._shas: dict[str, str] = {}
        self._read_script = link.client.register_script(READ)
        self._get_script = link.client.register_script(GET)
        self._queue: deque[_Pending | _Amendment] = deque()
        self._queued = Event()
        self._idle = Event()
        self._idle.set()
        self._slots = Semaphore(max_pending)
        self._writer: gevent.Greenlet | None = None
        self._open = False

    def _stream(self, room: str) -> str:
        return self.link.key("stream", room)

    def append_keys(self, room: str) -> list[Any]:
        """The keys every write script starts with (see APPEND)."""
        return [
            self.link.key("seq", room),
            self._stream(room),
            self.link.key("rooms"),
            self.link.key("events"),
            self.link.key("epoch", room),
        ]

    def append_args(self, room: str, epoch: str, head: str, tail: str, rest: list[Any]) -> list[Any]:
        """The arguments every write script starts with (see APPEND), then ``rest``."""
        return [self.stream_length, head, tail, room, event_header(room, None), epoch, *rest]

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
    ) -> None:
        """Queue a message; ``on_stored`` gets it once appended and published, or an error.

        With ``once``, a retry (same room, nick and ref within ONCE_SECONDS, on
        any process) is not stored: ``on_stored`` gets the original as a ``Duplicate``.
        """
        self._enqueue(_Pending(room, nick, text, ts, ref, on_stored, once, author))

    def amend(
        self, target: StoredMessage, expected_meta: str | None, entry: StoredMessage, on_stored: OnStored
    ) -> None:
        """Queue an amendment; ``on_stored`` gets its entry once appended and published, or an error.

        The compare-and-set is the amend script's (see the module docstring): a
        :class:`~app.chat.store.Conflict` when the original is not at
        ``expected_meta``, whichever process amended it.
        """
        self._enqueue(_Amendment(target, expected_meta, entry, on_stored))

    def _enqueue(self, pending: _Pending | _Amendment) -> None:
        if not self._open:
            raise HistoryError("history is closed")
        if not self.link.up:
            raise HistoryUnavailable("redis is unreachable")
        self._slots.acquire()
        self._queue.append(pending)
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

    def _write(self, batch: list[_Pending | _Amendment]) -> None:
        results = self._run_scripts(batch) if self._shas else []
        if not self._shas or any(isinstance(result, redis.exceptions.NoScriptError) for result in results):
            # Not loaded yet, or Redis restarted and lost its script cache (no script ran,
            # so running them again is safe).
            try:
                self._shas = {script: self.link.client.script_load(script) for script in (STORE, AMEND)}
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
            else:
                outcome = pending.outcome(result)
            try:
                pending.on_stored(outcome)
            except Exception:
                log.exception("on_stored callback failed for %s", pending.room)

    def _run_scripts(self, batch: list[_Pending | _Amendment]) -> list[Any]:
        """One pipeline of write scripts: a result or an exception per message or amendment."""
        epoch = new_epoch()  # taken only by a room whose ids start (again) in this batch
        pipe = self.link.client.pipeline(transaction=False)
        for pending in batch:
            script, keys, args = pending.script(self, epoch)
            pipe.evalsha(self._shas[script], len(keys), *keys, *args)
        try:
            return list(pipe.execute(raise_on_error=False))
        except UNREACHABLE as exc:
            self.link.failed(exc)
            return [HistoryUnavailable(f"redis unreachable: {exc}")] * len(batch)
        except redis.RedisError as exc:
            return [exc] * len(batch)

    # -- reading ------------------------------------------------------------

    def sent(self, room: str, nick: str, ref: Ref) -> bool:
        return bool(self._call(self.link.client.exists, sent_key(self.link, room, nick, ref)))

    def recent(self, room: str, limit: int = 50) -> list[StoredMessage]:
        """The last ``limit`` entries of the room, oldest first, originals as they are now."""
        if limit <= 0:
            return []
        entries, overlay = self._read(room, "rev", "+", "-", limit, "")
        return _messages(room, entries, overlay)[::-1]

    def since(self, room: str, after_id: int, limit: int = 1000) -> list[StoredMessage]:
        """The first ``limit`` entries of the room with an id above ``after_id``, oldest first."""
        if limit <= 0:
            return []
        entries, overlay = self._read(room, "fwd", f"({after_id}-0", "+", limit, "")
        return _messages(room, entries, overlay)

    def get(self, room: str, ids: Iterable[int]) -> dict[int, StoredMessage]:
        """The current version of these ids of the room, those still in its stream."""
        wanted = sorted({int(message_id) for message_id in ids if message_id > 0})
        if not wanted:
            return {}
        keys = [self._stream(room), self.link.key("overlay", room)]
        found = self._call(self._get_script, keys=keys, args=wanted)
        messages = (_message(room, entry[0], _fields(entry[1]), over) for entry, over in found)
        return {message.id: message for message in messages}

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
        """The newest ``limit`` entries (after ``since`` if given) and the position, read in one script."""
        oldest = "-" if since is None else f"({since}-0"
        entries, overlay, epoch, last = self._read(room, "rev", "+", oldest, max(limit, 1), new_epoch())
        messages = _messages(room, entries, overlay)[::-1] if limit > 0 else []
        return Replay(epoch.decode(), int(last or 0), messages)

    def _read(self, room: str, direction: str, start: str, end: str, count: int, epoch: str) -> list[Any]:
        """Entries and their overlay at one point (with a new ``epoch``: the room's epoch and last id too)."""
        keys = [self._stream(room), self.link.key("overlay", room), self.link.key("epoch", room)]
        keys.append(self.link.key("seq", room))
        result: list[Any] = self._call(self._read_script, keys=keys, args=[direction, start, end, count, epoch])
        return result

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


def _overlay_value(original: StoredMessage) -> str:
    """An original's new version as its overlay field keeps it (room and id are the field's)."""
    return json.dumps([original.nick, original.text, original.ts, original.ref, original.author, original.meta])


def _fields(flat: list[bytes]) -> dict[bytes, bytes]:
    """A stream entry's fields as a script returns them (name, value, …), as a dict."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _messages(room: str, entries: list[Any], overlay: list[bytes | None]) -> list[StoredMessage]:
    return [
        _message(room, entry_id, _fields(flat), over) for (entry_id, flat), over in zip(entries, overlay, strict=True)
    ]


def _message(room: str, entry_id: bytes, fields: dict[bytes, bytes], overlay: bytes | None) -> StoredMessage:
    """An entry as stored; an original in its overlay's version when it was amended."""
    message_id = int(entry_id.split(b"-")[0])
    if overlay is not None:
        nick, text, ts, ref, author, meta = json.loads(overlay)
        return StoredMessage(room, message_id, nick, text, ts, ref, author, None, None, meta)
    event = json.loads(fields[b"m"])
    author = fields[b"a"].decode() if b"a" in fields else None
    meta = fields[b"x"].decode() if b"x" in fields else None
    kind = fields.get(b"k")
    if kind is None:
        return StoredMessage(
            room, message_id, event["from"], event["text"], event["ts"], event.get("ref"), author, None, None, meta
        )
    text = fields[b"e"].decode() if b"e" in fields else ""
    target = int(fields[b"t"])
    return StoredMessage(room, message_id, event["from"], text, event["ts"], None, author, kind.decode(), target, meta)
