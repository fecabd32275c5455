"""Accounts in Redis, shared by every process of the chat: see :mod:`app.chat.accounts`."""

from __future__ import annotations

from typing import Any

from .accounts import Account, account_key
from .protocol import ChatError
from .redis_link import UNREACHABLE, RedisLink

__all__ = ["RedisAccounts"]

# KEYS: the account's hash. ARGV: name, password hash, created. 1 if created, 0 if the name is taken.
CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'name', ARGV[1], 'hash', ARGV[2], 'created', ARGV[3], 'generation', 1)
return 1
"""
# KEYS: the account's hash. The new generation, or 0 if there is no such account.
BUMP = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
return redis.call('HINCRBY', KEYS[1], 'generation', 1)
"""


class RedisAccounts:
    """Accounts in Redis, ``prefix:account:KEY`` (a hash), and failure counters, shared by every process."""

    def __init__(self, link: RedisLink) -> None:
        self.link = link
        self._create = link.client.register_script(CREATE)
        self._bump = link.client.register_script(BUMP)

    def open(self) -> None:
        pass  # the link connects when first used

    def close(self) -> None:
        pass  # the link is the history's to close

    def generation(self, key: str) -> int | None:
        generation = self._call(self.link.client.hget, self.link.key("account", key), "generation")
        return None if generation is None else int(generation)

    def get(self, key: str) -> Account | None:
        fields = self._call(self.link.client.hgetall, self.link.key("account", key))
        if not fields:
            return None
        return Account(
            fields[b"name"].decode(), fields[b"hash"].decode(), int(fields[b"created"]), int(fields[b"generation"])
        )

    def create(self, account: Account) -> bool:
        key = self.link.key("account", account_key(account.name))
        return bool(self._call(self._create, [key], [account.name, account.password_hash, account.created]))

    def bump_generation(self, key: str) -> int:
        return int(self._call(self._bump, [self.link.key("account", key)], []))

    def record_failure(self, key: str, window: int) -> tuple[int, float]:
        counter = self.link.key("signin-failures", key)
        with self.link.client.pipeline(transaction=True) as pipe:
            pipe.incr(counter)
            pipe.expire(counter, window, nx=True)
            pipe.ttl(counter)
            count, _, ttl = self._call(pipe.execute)
        return int(count), float(max(ttl, 0))

    def failures(self, key: str) -> tuple[int, float]:
        counter = self.link.key("signin-failures", key)
        with self.link.client.pipeline(transaction=False) as pipe:
            pipe.get(counter)
            pipe.ttl(counter)
            count, ttl = self._call(pipe.execute)
        return int(count or 0), float(max(ttl, 0))

    def clear_failures(self, key: str) -> None:
        self._call(self.link.client.delete, self.link.key("signin-failures", key))

    def _call(self, command: Any, *args: Any) -> Any:
        if not self.link.up:
            raise ChatError("degraded", "the chat's shared store is unreachable, try again shortly")
        try:
            return command(*args)
        except UNREACHABLE as exc:
            self.link.failed(exc)
            raise ChatError("degraded", "the chat's shared store is unreachable, try again shortly") from exc
