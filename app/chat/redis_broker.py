"""The broker for several processes and hosts: Redis pub/sub, presence and a client registry.

Every process (a *node*: one gunicorn worker) subscribes to two channels:

``prefix:events``
    room events, as ``room \\n exclude \\n id \\n epoch \\n JSON``: the JSON is
    delivered as it came (encoded once, where it was published), the header
    says to whom. Chat messages are published by the history's store script
    (:mod:`app.chat.redis_history`), so each room's messages arrive in id
    order on every node.
``prefix:control``
    operators' commands (kick, ban) as JSON; each node acts on its own clients.

Shared state, each node writing only its own part:

- ``prefix:nodes``: a sorted set, node -> when its heartbeat expires. A node
  refreshes it every :data:`HEARTBEAT` seconds; one that stops for
  :data:`NODE_TTL` seconds is dead, and the first live node to notice
  removes its clients (and says they left their rooms).
  Until then, every answer about presence (the members of a room, the
  counts, who holds a nick) leaves out the entries of nodes whose heartbeat
  has expired, as the admin page's list does: a crashed node's clients are
  gone from all of them at the same moment, :data:`NODE_TTL` seconds after
  its last heartbeat, whether or not it has been reaped yet.
- ``prefix:clients:NODE``: a hash, connection id -> the client as the admin
  page shows it, rewritten at each heartbeat.
- ``prefix:members:ROOM``: a hash, connection id -> nick: presence.
- ``prefix:holders:NICK``: a hash, connection id -> session id: who holds a nick.
- ``prefix:bans``: a hash, nick -> when the ban ends.

Connection ids are ``NODE.cN``, so the node that holds one is in its name.

Redis unreachable: every answer falls back to this node's own view (the
:class:`~app.chat.broker.LocalBroker` this extends), events reach this node's
clients only, the outage is logged once, and the subscriber reconnects with
backoff. Once back, the node rewrites its part of the shared state and the
service catches up on the messages it missed (see ``resync``).
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Callable, Iterable
from typing import Any

import gevent
import redis
from gevent.event import Event

from app import metrics

from . import events
from .broker import Command, Deliver, LocalBroker, Presence
from .events import Outgoing, compact_json
from .redis_history import event_header
from .redis_link import UNREACHABLE, RedisLink

__all__ = ["RedisBroker"]

log = logging.getLogger(__name__)

#: Seconds between a node's heartbeats, and after which a silent node is dead.
HEARTBEAT = 5.0
NODE_TTL = 15.0
#: Seconds a node's client list outlives its last heartbeat, for the reaper to read.
REGISTRY_TTL = 86_400
#: Reconnection backoff, seconds.
BACKOFF_FIRST, BACKOFF_MAX = 0.1, 5.0
#: Seconds to wait for Redis to confirm a subscription.
COMMAND_WAIT = 5.0

# A room's live members: the fields (``NODE.cN`` -> nick) of a members hash
# whose node's heartbeat has not expired. KEYS[1]: members hash, KEYS[2]: the
# nodes' sorted set. ARGV[1]: conn, ARGV[2]: nick, ARGV[3]: now (epoch
# seconds), ARGV[4]: the calling node (live, even before its first heartbeat).
LIVE_MEMBERS = """
local function live_members()
  local now, live = tonumber(ARGV[3]), {[ARGV[4]] = true}
  local seen, nicks, same = {}, {}, 0
  local fields = redis.call('HGETALL', KEYS[1])
  for i = 1, #fields, 2 do
    local node = string.match(fields[i], '^(.-)%.') or ''
    local up = live[node]
    if up == nil then
      local expires = redis.call('ZSCORE', KEYS[2], node)
      up = expires ~= false and tonumber(expires) > now
      live[node] = up
    end
    local nick = fields[i + 1]
    if up and not seen[nick] then seen[nick] = true; nicks[#nicks + 1] = nick end
    if up and nick == ARGV[2] then same = same + 1 end
  end
  return nicks, same
end
"""
# Returns {nick new in the room (1/0), the room's live nicks}.
JOIN = (
    LIVE_MEMBERS
    + """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local nicks, same = live_members()
return {same == 1 and 1 or 0, nicks}
"""
)
# Returns {nick gone from the room (1/0), live nicks left}; {0, -1} if the conn was not there.
LEAVE = (
    LIVE_MEMBERS
    + """
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return {0, -1} end
local nicks, same = live_members()
return {same == 0 and 1 or 0, #nicks}
"""
)


class RedisBroker(LocalBroker):
    """Fan-out, presence and operator commands across processes, through Redis."""

    def __init__(self, link: RedisLink) -> None:
        super().__init__()
        self.link = link
        self.node = f"n{secrets.token_hex(4)}"
        self._events, self._control = link.key("events"), link.key("control")
        self._join = link.client.register_script(JOIN)
        self._leave = link.client.register_script(LEAVE)
        self._describers: dict[str, Callable[[], dict[str, Any]]] = {}
        self._local_rooms: dict[str, dict[str, str]] = {}  # room -> conn -> nick, of this node
        self._local_nicks: dict[str, dict[str, str]] = {}  # nick -> conn -> session, of this node
        self._touched_rooms: set[str] = set()
        self._touched_nicks: set[str] = set()
        self._resync: Callable[[], None] = lambda: None
        self._subscribed = Event()
        self._greenlets: list[gevent.Greenlet] = []

    # -- life cycle ---------------------------------------------------------

    def start(self, deliver: Deliver, command: Command, resync: Callable[[], None]) -> None:
        """Subscribe and start the heartbeat; the bans are loaded once subscribed.

        Redis need not answer yet (an orchestrator may start it second): the
        node then serves degraded (see the module docstring) and the
        subscriber connects, with backoff, once Redis answers.
        """
        super().start(deliver, command, resync)
        self._resync = resync
        try:
            self.link.client.ping()
        except UNREACHABLE as exc:
            self.link.failed(exc)
        self._greenlets = [gevent.spawn(self._subscribe_loop), gevent.spawn(self._heartbeat_loop)]
        if not self.link.up:
            return  # logged by the link; the subscriber connects once Redis answers
        if self._subscribed.wait(timeout=COMMAND_WAIT * 2):
            log.info("redis: node %s joined the chat on %s", self.node, self.link.url)
        else:
            log.error("redis: no subscription on %s yet; retrying", self.link.url)

    def _load_bans(self) -> None:
        """The bans in force, as every node keeps them (operators may have banned while this node was away)."""
        now = time.time()
        for nick, until in self.link.client.hgetall(self.link.key("bans")).items():
            if float(until) > now and self._command is not None:
                self._command({"op": "ban", "nick": nick.decode(), "until": float(until), "seconds": 0})

    def close(self) -> None:
        """Stop, and take this node out of the shared state."""
        gevent.killall(self._greenlets)
        try:
            with self.link.client.pipeline() as pipe:
                pipe.zrem(self.link.key("nodes"), self.node)
                pipe.delete(self.link.key("clients", self.node))
                pipe.execute()
        except redis.RedisError as exc:
            log.warning("redis: could not remove node %s: %s", self.node, exc)
        super().close()  # the link stays open: the history closes it, last

    # -- publishing -----------------------------------------------------------

    def publish(
        self,
        room: str | None,
        message: Outgoing,
        *,
        message_id: int | None = None,
        exclude_conn: str | None = None,
        epoch: str | None = None,
    ) -> None:
        payload = f"{event_header(room, exclude_conn)}{message_id or ''}\n{epoch or ''}\n".encode() + message.data
        if self._try(self.link.client.publish, self._events, payload) is None:
            super().publish(room, message, message_id=message_id, exclude_conn=exclude_conn, epoch=epoch)

    def command(self, command: dict[str, Any]) -> None:
        if command.get("op") == "ban":
            self._try(self.link.client.hset, self.link.key("bans"), command["nick"], command["until"])
        self._try(self.link.client.publish, self._control, json.dumps({**command, "from": self.node}))

    def _try(self, call: Callable[..., Any], *args: Any) -> Any:
        """``call(*args)``, or None (logged once per outage) when Redis is unreachable."""
        if not self.link.up:
            return None
        try:
            return call(*args)
        except UNREACHABLE as exc:
            self.link.failed(exc)
        except redis.RedisError as exc:
            metrics.REDIS_ERRORS.labels("command").inc()
            log.error("redis: %s failed: %s", getattr(call, "__name__", call), exc)
        return None

    # -- the subscriber -------------------------------------------------------

    def _subscribe_loop(self) -> None:
        backoff = BACKOFF_FIRST
        first = True
        while True:
            pubsub = self.link.subscriber.pubsub()
            try:
                pubsub.subscribe(self._events, self._control)
                confirmed = 0
                while confirmed < 2:
                    reply = pubsub.get_message(timeout=COMMAND_WAIT)
                    if reply is None:
                        raise redis.TimeoutError("no subscription confirmation")
                    confirmed += reply["type"] == "subscribe"
                self._load_bans()
                self._subscribed.set()
                if not first or not self.link.up:
                    self._rejoin()
                first, backoff = False, BACKOFF_FIRST
                while True:
                    reply = pubsub.get_message(timeout=1.0)
                    if reply is not None and reply["type"] == "message":
                        self._on_message(reply["channel"], reply["data"])
                    if not self.link.up:
                        # Another call failed while this connection stayed up: probe, and
                        # once Redis answers again, resume as after a reconnection.
                        self.link.client.ping()
                        self._rejoin()
            except UNREACHABLE as exc:
                self.link.failed(exc)
            except Exception:
                log.exception("redis: the subscriber failed; reconnecting")
            finally:
                try:
                    pubsub.close()
                except Exception:  # the connection is gone already
                    pass
            gevent.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)

    def _on_message(self, channel: bytes, data: bytes) -> None:
        if channel == self._events.encode():
            fields = data.split(b"\n", 4)
            if len(fields) == 4:  # a node from before epochs: ``room \n exclude \n id \n JSON``
                fields.insert(3, b"")
            room, exclude, message_id, epoch, body = fields
            if self._deliver is not None:
                self._deliver(
                    room.decode() or None,
                    Outgoing(body),
                    int(message_id) if message_id else None,
                    exclude.decode() or None,
                    epoch.decode() or None,
                )
        elif self._command is not None:
            command = json.loads(data)
            if command.get("from") != self.node:
                self._command(command)

    def _rejoin(self) -> None:
        """Redis is back: rewrite this node's shared state, then catch up on missed messages."""
        self.link.recovered()
        try:
            self._write_registry()
            for room in sorted(self._touched_rooms):
                self._reconcile(self.link.key("members", room), self._local_rooms.get(room, {}))
            for nick in sorted(self._touched_nicks):
                self._reconcile(self.link.key("holders", nick), self._local_nicks.get(nick, {}))
        except redis.RedisError as exc:
            log.warning("redis: rewriting node %s's state failed: %s", self.node, exc)
        self._resync()

    def _reconcile(self, key: str, current: dict[str, str]) -> None:
        """Make this node's fields of a hash exactly ``current``."""
        mine = [field for field, _ in self.link.client.hscan_iter(key, match=f"{self.node}.*")]
        stale = [field for field in mine if field.decode() not in current]
        with self.link.client.pipeline() as pipe:
            if stale:
                pipe.hdel(key, *stale)
            if current:
                pipe.hset(key, mapping=current)
            pipe.execute()

    # -- heartbeat, registry and the dead --------------------------------------

    def _heartbeat_loop(self) -> None:
        while True:
            if self.link.up:
                try:
                    self._write_registry()
                    self._reap()
                except UNREACHABLE as exc:
                    self.link.failed(exc)
                except redis.RedisError:
                    log.exception("redis: heartbeat failed")
            gevent.sleep(HEARTBEAT)

    def _write_registry(self) -> None:
        """Refresh this node's heartbeat and rewrite its client list."""
        clients_key = self.link.key("clients", self.node)
        entries = {
            conn_id: compact_json({**describe(), "node": self.node}) for conn_id, describe in self._describers.items()
        }
        with self.link.client.pipeline() as pipe:  # MULTI: the list is never seen half-written
            pipe.zadd(self.link.key("nodes"), {self.node: time.time() + NODE_TTL})
            pipe.delete(clients_key)
            if entries:
                pipe.hset(clients_key, mapping=entries)
            # Kept long after the node stops: the reaper reads it to say its clients left.
            pipe.expire(clients_key, REGISTRY_TTL)
            pipe.execute()

    def _reap(self) -> None:
        """Remove the clients of nodes whose heartbeat stopped; tell their rooms they left."""
        nodes = self.link.key("nodes")
        for dead in self.link.client.zrangebyscore(nodes, "-inf", time.time()):
            if not self.link.client.zrem(nodes, dead):
                continue  # another node is reaping it
            node = dead.decode()
            clients_key = self.link.key("clients", node)
            entries = self.link.client.hgetall(clients_key)
            log.warning("redis: node %s stopped; removing its %d clients", node, len(entries))
            for conn_id, raw in entries.items():
                info = json.loads(raw)
                self.link.client.hdel(self.link.key("holders", info["nick"]), conn_id)
                for room in info.get("rooms", ()):
                    gone, count = self._presence_script(self._leave, room, conn_id, info["nick"])
                    if count < 0:
                        continue
                    if gone:
                        self.publish(room, events.presence(room, info["nick"], "leave", count))
            self.link.client.delete(clients_key)

    # -- presence -------------------------------------------------------------

    def connected(self, member: Presence, describe: Callable[[], dict[str, Any]]) -> None:
        super().connected(member, describe)
        self._describers[member.conn_id] = describe
        self._local_nicks.setdefault(member.nick, {})[member.conn_id] = member.session_id
        self._touched_nicks.add(member.nick)
        entry = compact_json({**describe(), "node": self.node})
        if self.link.up:
            try:
                with self.link.client.pipeline(transaction=False) as pipe:
                    pipe.hset(self.link.key("clients", self.node), member.conn_id, entry)
                    pipe.hset(self.link.key("holders", member.nick), member.conn_id, member.session_id)
                    pipe.execute()
            except UNREACHABLE as exc:
                self.link.failed(exc)

    def disconnected(self, member: Presence) -> None:
        super().disconnected(member)
        self._describers.pop(member.conn_id, None)
        holders = self._local_nicks.get(member.nick, {})
        holders.pop(member.conn_id, None)
        if not holders:
            self._local_nicks.pop(member.nick, None)
        if self.link.up:
            try:
                with self.link.client.pipeline(transaction=False) as pipe:
                    pipe.hdel(self.link.key("clients", self.node), member.conn_id)
                    pipe.hdel(self.link.key("holders", member.nick), member.conn_id)
                    pipe.execute()
            except UNREACHABLE as exc:
                self.link.failed(exc)

    def _register(self, conn_id: str) -> None:
        """Rewrite one client's registry entry (its rooms changed)."""
        describe = self._describers.get(conn_id)
        if describe is not None:
            entry = compact_json({**describe(), "node": self.node})
            self._try(self.link.client.hset, self.link.key("clients", self.node), conn_id, entry)

    def nick_taken(self, nick: str, session_id: str) -> bool:
        if super().nick_taken(nick, session_id):
            return True
        holders = self._try(self._live_holders, nick) or {}
        return any(holder.decode() != session_id for holder in holders.values())

    def room_join(self, room: str, member: Presence) -> tuple[bool, list[str]]:
        local = super().room_join(room, member)
        self._local_rooms.setdefault(room, {})[member.conn_id] = member.nick
        self._touched_rooms.add(room)
        result = self._try(self._presence_script, self._join, room, member.conn_id, member.nick)
        self._register(member.conn_id)
        if result is None:
            return local
        new, nicks = result
        return bool(new), sorted(nick.decode() for nick in nicks)

    def room_leave(self, room: str, member: Presence) -> tuple[bool, int]:
        local = super().room_leave(room, member)
        members = self._local_rooms.get(room, {})
        members.pop(member.conn_id, None)
        if not members:
            self._local_rooms.pop(room, None)
        result = self._try(self._presence_script, self._leave, room, member.conn_id, member.nick)
        self._register(member.conn_id)
        if result is None or result[1] < 0:
            return local
        return bool(result[0]), int(result[1])

    def _presence_script(self, script: Any, room: str, conn_id: str, nick: str) -> Any:
        keys = [self.link.key("members", room), self.link.key("nodes")]
        return script(keys=keys, args=[conn_id, nick, time.time(), self.node])

    def room_counts(self, rooms: Iterable[str]) -> dict[str, int]:
        names = list(rooms)
        if not self.link.up or not names:
            return super().room_counts(names)
        try:
            with self.link.client.pipeline(transaction=False) as pipe:
                pipe.zrangebyscore(self.link.key("nodes"), time.time(), "+inf")
                for name in names:
                    pipe.hgetall(self.link.key("members", name))
                live, *rooms_members = pipe.execute()
        except UNREACHABLE as exc:
            self.link.failed(exc)
            return super().room_counts(names)
        alive = self._alive(live)
        return {
            name: len({nick for conn, nick in members.items() if alive(conn)})
            for name, members in zip(names, rooms_members, strict=True)
        }

    def _alive(self, live_nodes: Iterable[bytes]) -> Callable[[bytes], bool]:
        """Whether a connection id (``NODE.cN``) belongs to this node or one of ``live_nodes``."""
        nodes = {node.decode() for node in live_nodes} | {self.node}
        return lambda conn: conn.decode().partition(".")[0] in nodes

    def _live_holders(self, nick: str) -> dict[bytes, bytes]:
        """The connections holding ``nick`` on live nodes (connection id -> session id); {} if unreachable."""
        with self.link.client.pipeline(transaction=False) as pipe:
            pipe.zrangebyscore(self.link.key("nodes"), time.time(), "+inf")
            pipe.hgetall(self.link.key("holders", nick))
            live, holders = pipe.execute()
        alive = self._alive(live)
        return {conn: session for conn, session in holders.items() if alive(conn)}

    def remote_clients(self) -> list[dict[str, Any]]:
        clients: list[dict[str, Any]] = []
        for node in self._live_nodes():
            if node != self.node:
                raw = self._try(self.link.client.hvals, self.link.key("clients", node)) or []
                clients.extend(json.loads(entry) for entry in raw)
        return clients

    def remote_connections(self, nick: str) -> int:
        holders = self._try(self._live_holders, nick) or {}
        return sum(1 for conn in holders if not conn.decode().startswith(f"{self.node}."))

    def remote_client(self, conn_id: str) -> bool:
        node = conn_id.partition(".")[0]
        if node == self.node or node not in self._live_nodes():
            return False
        return bool(self._try(self.link.client.hexists, self.link.key("clients", node), conn_id))

    def check(self) -> None:
        """Redis answers, and the subscription is up."""
        if not self.link.up:
            raise ConnectionError(f"redis at {self.link.url} is unreachable")
        self.link.client.ping()

    def _live_nodes(self) -> list[str]:
        nodes = self._try(self.link.client.zrangebyscore, self.link.key("nodes"), time.time(), "+inf") or []
        return [node.decode() for node in nodes]
