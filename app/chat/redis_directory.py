"""The room directory in Redis, shared by every process of the chat: see :mod:`app.chat.directory`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis

from .accounts import account_key
from .directory import MAX_ACTIONS, ModAction, RoomSettings, member_keys
from .protocol import ChatError
from .redis_link import UNREACHABLE, RedisLink

__all__ = ["RedisDirectory"]

#: Attempts of one update while other processes keep changing the same room.
UPDATE_ATTEMPTS = 50

# KEYS: the room's settings, then the member index of each of its members. ARGV: the settings' JSON, the room.
# 1 if created, 0 if the room has settings already.
CREATE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX') == false then return 0 end
for i = 2, #KEYS do redis.call('SADD', KEYS[i], ARGV[2]) end
return 1
"""
# KEYS: the send's marker. ARGV: slow mode, in milliseconds. 0 if the user may send (the send is
# counted), else the milliseconds left to wait.
SLOW = """
if redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then return 0 end
return math.max(redis.call('PTTL', KEYS[1]), 1)
"""


class RedisDirectory:
    """The directory in Redis, shared by every process.

    ``prefix:room:NAME``: the settings' JSON; ``prefix:account-rooms:KEY``: a
    set of the private rooms an account is a member of, changed in the same
    transaction as the settings; ``prefix:mod-actions``: the moderation log
    (a list, newest first); ``prefix:slow:ROOM:USER``: a user's last send,
    expiring when slow mode lets them send again.
    """

    def __init__(self, link: RedisLink, keep_actions: int = MAX_ACTIONS) -> None:
        self.link = link
        self._keep_actions = keep_actions
        self._create = link.client.register_script(CREATE)
        self._slow = link.client.register_script(SLOW)

    def open(self) -> None:
        pass  # the link connects when first used

    def close(self) -> None:
        pass  # the link is the history's to close

    # -- settings --------------------------------------------------------------------

    def get(self, room: str) -> RoomSettings | None:
        text = self._call(self.link.client.get, self._room(room))
        return None if text is None else RoomSettings.from_json(text)

    def create(self, settings: RoomSettings) -> bool:
        keys = [self._room(settings.name), *(self._index(key) for key in sorted(member_keys(settings)))]
        return bool(self._call(self._create, keys, [settings.to_json(), settings.name]))

    def update(self, room: str, change: Callable[[RoomSettings], RoomSettings]) -> RoomSettings | None:
        """WATCH the room, read, change, write in MULTI; again if another process wrote it meanwhile."""
        for _ in range(UPDATE_ATTEMPTS):
            done, settings = self._call(self._try_update, room, change)
            if done:
                return settings
        raise ChatError("unavailable", "the room's settings are changing too often, try again shortly")

    def _try_update(
        self, room: str, change: Callable[[RoomSettings], RoomSettings]
    ) -> tuple[bool, RoomSettings | None]:
        key = self._room(room)
        with self.link.client.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(key)
                text = pipe.get(key)
                if text is None:
                    return True, None
                old = RoomSettings.from_json(text)
                new = change(old)
                if new.name != room:
                    raise ValueError(f"a change of {room!r} returned the settings of {new.name!r}")
                if new == old:
                    return True, new
                before, after = member_keys(old), member_keys(new)
                pipe.multi()
                pipe.set(key, new.to_json())
                for member in sorted(before - after):
                    pipe.srem(self._index(member), room)
                for member in sorted(after - before):
                    pipe.sadd(self._index(member), room)
                pipe.execute()
                return True, new
            except redis.WatchError:
                return False, None

    def delete(self, room: str) -> bool:
        for _ in range(UPDATE_ATTEMPTS):
            done, deleted = self._call(self._try_delete, room)
            if done:
                return deleted
        raise ChatError("unavailable", "the room's settings are changing too often, try again shortly")

    def _try_delete(self, room: str) -> tuple[bool, bool]:
        key = self._room(room)
        with self.link.client.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(key)
                text = pipe.get(key)
                if text is None:
                    return True, False
                pipe.multi()
                pipe.delete(key)
                for member in sorted(member_keys(RoomSettings.from_json(text))):
                    pipe.srem(self._index(member), room)
                pipe.execute()
                return True, True
            except redis.WatchError:
                return False, False

    def rooms_of(self, name: str) -> list[RoomSettings]:
        key = account_key(name)
        rooms = sorted(member.decode() for member in self._call(self.link.client.smembers, self._index(key)))
        if not rooms:
            return []
        texts = self._call(self.link.client.mget, [self._room(room) for room in rooms])
        found = (RoomSettings.from_json(text) for text in texts if text is not None)
        return [settings for settings in found if key in member_keys(settings)]

    # -- the moderation log ------------------------------------------------------------

    def record(self, action: ModAction) -> None:
        log = self.link.key("mod-actions")
        with self.link.client.pipeline(transaction=True) as pipe:
            pipe.lpush(log, action.to_json())
            pipe.ltrim(log, 0, self._keep_actions - 1)
            self._call(pipe.execute)

    def actions(self, limit: int = 100) -> list[ModAction]:
        if limit <= 0:
            return []
        texts = self._call(self.link.client.lrange, self.link.key("mod-actions"), 0, limit - 1)
        return [ModAction.from_json(text) for text in texts]

    # -- slow mode ----------------------------------------------------------------------

    def slow_wait(self, room: str, user: str, seconds: int) -> float:
        if seconds <= 0:
            return 0.0
        left = self._call(self._slow, [self.link.key("slow", room, user)], [int(seconds * 1000)])
        return int(left) / 1000

    # -- keys and errors -------------------------------------------------------------------

    def _room(self, room: str) -> str:
        return self.link.key("room", room)

    def _index(self, key: str) -> str:
        return self.link.key("account-rooms", key)

    def _call(self, command: Any, *args: Any) -> Any:
        if not self.link.up:
            raise ChatError("degraded", "the chat's shared store is unreachable, try again shortly")
        try:
            return command(*args)
        except UNREACHABLE as exc:
            self.link.failed(exc)
            raise ChatError("degraded", "the chat's shared store is unreachable, try again shortly") from exc
