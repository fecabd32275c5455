"""Accounts: a name a person owns, with a password, kept where the chat keeps its history.

A registered name is its owner's, online or not: a guest (``CHAT_GUESTS=1``,
the default) may pick any nick but a registered one, compared without case
(``Alice`` is taken once ``alice`` registered). Passwords are hashed with
werkzeug's ``scrypt`` (salted, memory-hard), on a thread of their own: a
hash costs some 80 ms of CPU, which must not stop the hub (``hashlib``
releases the GIL while it works).

Sign-in failures are limited: :data:`FAILURE_LIMIT` for one name, and
:data:`ADDRESS_FAILURE_LIMIT` from one address, within
:data:`FAILURE_WINDOW` seconds; past that, ``too_many_attempts`` (429) until
the window has passed, right password or not.

Revoking: every account has a *generation*, written into the tokens and
session cookies it signs in with. "Sign out everywhere" increments it, so
every earlier token and cookie is refused from then on, and closes the
account's live connections (on every process, through the broker).

Two stores, as for the history: :class:`~app.chat.sqlite_accounts.SQLiteAccounts`
(a table in the history's database file) and
:class:`~app.chat.redis_accounts.RedisAccounts` (a hash per account, shared
by every process).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import NamedTuple, Protocol

from gevent.threadpool import ThreadPool
from werkzeug.security import check_password_hash, generate_password_hash

from .protocol import ChatError, check_nick

__all__ = ["Account", "AccountStore", "Accounts", "account_key"]

log = logging.getLogger(__name__)

MIN_PASSWORD, MAX_PASSWORD = 8, 1024
#: Sign-in failures allowed per name, and per address, within FAILURE_WINDOW seconds.
FAILURE_LIMIT = 5
ADDRESS_FAILURE_LIMIT = 20
FAILURE_WINDOW = 15 * 60
#: Registration attempts allowed from one address within REGISTRATION_WINDOW seconds.
REGISTRATIONS_PER_ADDRESS = 10
REGISTRATION_WINDOW = 60 * 60


@functools.cache
def _dummy_hash() -> str:
    """A hash to check a password against when the name does not exist: a sign-in takes as long either way."""
    return generate_password_hash("not a password of anyone's")


class Account(NamedTuple):
    """A registered name."""

    #: As registered (what others see); its key (:func:`account_key`) decides who owns it.
    name: str
    password_hash: str
    #: When it was registered, in milliseconds since the epoch.
    created: int
    #: Incremented by "sign out everywhere": tokens of an earlier generation are refused.
    generation: int = 1


def account_key(name: str) -> str:
    """Names are owned without regard to case: ``Alice`` and ``alice`` are one name."""
    return name.casefold()


class AccountStore(Protocol):
    """Where accounts are kept. Every method may block: :class:`Accounts` calls them off the hub where it must."""

    def open(self) -> None: ...

    def close(self) -> None: ...

    def get(self, key: str) -> Account | None:
        """The account whose key is ``key``, or None."""

    def generation(self, key: str) -> int | None:
        """The account's generation (None: no such account); asked on every handshake, so cheap."""

    def create(self, account: Account) -> bool:
        """Store a new account; False if its name (key) is taken."""

    def bump_generation(self, key: str) -> int:
        """Increment the account's generation; the new one."""

    def record_failure(self, key: str, window: int) -> tuple[int, float]:
        """Count one failure under ``key`` (a window of ``window`` seconds from the first): count, seconds left."""

    def failures(self, key: str) -> tuple[int, float]:
        """The failures counted under ``key`` now, and the seconds left in their window."""

    def clear_failures(self, key: str) -> None: ...


class Accounts:
    """Registering, signing in, who owns a name, and revoking: the rules above, over an :class:`AccountStore`."""

    def __init__(self, store: AccountStore, *, guests: bool = True, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        #: Whether people may chat without an account (CHAT_GUESTS).
        self.guests = guests
        self._clock = clock
        self._hasher: ThreadPool | None = None

    def open(self) -> None:
        self.store.open()
        self._hasher = ThreadPool(2)

    def close(self) -> None:
        if self._hasher is not None:
            self._hasher.kill()
            self._hasher = None
        self.store.close()

    # -- the rules ----------------------------------------------------------------

    def register(self, name: object, password: object, address: str = "") -> Account:
        """A new account; ``ChatError``: ``invalid_nick``, ``invalid_password``, ``name_taken``, ``too_many_attempts``.

        At most :data:`REGISTRATIONS_PER_ADDRESS` attempts from one address per
        :data:`REGISTRATION_WINDOW` seconds: each hash costs 80 ms of CPU, and
        names are not to be squatted by the thousand.
        """
        name = check_nick(name, "name")
        password = _check_password(password)
        key = account_key(name)
        counter = f"register:{address}"
        count, left = self.store.failures(counter)
        if count >= REGISTRATIONS_PER_ADDRESS:
            raise _too_many(left, "too many accounts registered from here: try again later")
        self.store.record_failure(counter, REGISTRATION_WINDOW)
        if self.store.get(key) is not None:
            raise ChatError("name_taken", f"{name!r} is registered already")
        account = Account(name, self._hash(password), int(self._clock() * 1000))
        if not self.store.create(account):
            raise ChatError("name_taken", f"{name!r} is registered already")
        log.info("account registered", extra={"event": "register", "account": key})
        return account

    def sign_in(self, name: object, password: object, address: str) -> Account:
        """The account, if the password is its own; ``ChatError``: ``bad_credentials``, ``too_many_attempts``."""
        if not isinstance(name, str) or not isinstance(password, str):
            raise ChatError("invalid_field", "name and password must be strings")
        key = account_key(name)
        for counter, limit in ((f"name:{key}", FAILURE_LIMIT), (f"addr:{address}", ADDRESS_FAILURE_LIMIT)):
            count, left = self.store.failures(counter)
            if count >= limit:
                raise _too_many(left)
        account = self.store.get(key)
        hashed = account.password_hash if account is not None else self._pool().apply(_dummy_hash)
        if not (len(password) <= MAX_PASSWORD and self._check(hashed, password) and account is not None):
            self.store.record_failure(f"name:{key}", FAILURE_WINDOW)
            self.store.record_failure(f"addr:{address}", FAILURE_WINDOW)
            log.info("sign-in refused", extra={"event": "sign_in_failed", "account": key, "addr": address})
            raise ChatError("bad_credentials", "wrong name or password")
        self.store.clear_failures(f"name:{key}")
        return account

    def name_of(self, nick: str) -> str | None:
        """The registered name (as its owner wrote it) that ``nick`` is, in any case; None if nobody owns it."""
        account = self.store.get(account_key(nick))
        return account.name if account is not None else None

    def registered(self, nick: str) -> bool:
        """Whether an account owns ``nick``."""
        return self.store.generation(account_key(nick)) is not None

    def current(self, key: str, generation: int) -> bool:
        """Whether a token of ``generation`` for the account ``key`` still holds."""
        return self.store.generation(key) == generation

    def sign_out_everywhere(self, key: str) -> int:
        """Revoke every token and cookie of the account: its new generation."""
        generation = self.store.bump_generation(key)
        log.info("signed out everywhere", extra={"event": "sign_out_everywhere", "account": key})
        return generation

    # -- hashing, off the hub ----------------------------------------------------------

    def _hash(self, password: str) -> str:
        return str(self._pool().apply(generate_password_hash, (password,)))

    def _check(self, password_hash: str, password: str) -> bool:
        return bool(self._pool().apply(check_password_hash, (password_hash, password)))

    def _pool(self) -> ThreadPool:
        if self._hasher is None:  # used before open(): a web app whose chat is not started (a script, a test)
            self._hasher = ThreadPool(2)
        return self._hasher


def _check_password(password: object) -> str:
    if not isinstance(password, str) or not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise ChatError("invalid_password", f"passwords are {MIN_PASSWORD} to {MAX_PASSWORD} characters")
    return password


def _too_many(seconds_left: float, message: str = "too many failed sign-ins: try again later") -> ChatError:
    return ChatError("too_many_attempts", message, retry_after=max(1, int(seconds_left) + 1))
