"""Who a client is: signed, expiring session tokens (``itsdangerous``).

The web app issues a token when a session picks a nick (``POST
/api/session``); the WebSocket handshake accepts it in ``?token=``. The
token binds the nick to the browser session's id, so one session can hold a
nick across tabs while another session cannot take it.

A signed-in person's identity is its account's instead: the nick is the
account's name, the session id ``account:KEY`` (every browser it signed in
from holds the nick together), and the token carries the account's
generation, which "sign out everywhere" moves on (:mod:`app.chat.accounts`).
"""

from __future__ import annotations

from dataclasses import dataclass

from itsdangerous import BadSignature, URLSafeTimedSerializer

__all__ = ["Identity", "TokenSigner"]


@dataclass(frozen=True, slots=True)
class Identity:
    """A nick, and the session that holds it; for a signed-in person, its account's key and generation."""

    nick: str
    session_id: str
    #: The account's key (its name without case), or None for a guest.
    account: str | None = None
    generation: int = 0

    @classmethod
    def of_account(cls, name: str, key: str, generation: int) -> Identity:
        return cls(name, f"{ACCOUNT_SESSION}{key}", key, generation)

    def to_claims(self) -> dict[str, object]:
        """What a token or session cookie carries of it."""
        claims: dict[str, object] = {"nick": self.nick, "sid": self.session_id}
        if self.account is not None:
            claims.update(acct=self.account, gen=self.generation)
        return claims

    @classmethod
    def from_claims(cls, data: object) -> Identity | None:
        """The identity a token's or cookie's data carries, or None if it is not one."""
        if not isinstance(data, dict):
            return None
        nick, sid, account, generation = data.get("nick"), data.get("sid"), data.get("acct"), data.get("gen", 0)
        if not isinstance(nick, str) or not isinstance(sid, str):
            return None
        if account is not None and (not isinstance(account, str) or type(generation) is not int):
            return None
        return cls(nick, sid, account, generation if account is not None else 0)


#: The session id of every browser a person signed in from starts so, then the account's key.
ACCOUNT_SESSION = "account:"


class TokenSigner:
    """Issues and checks tokens; a token is valid for ``ttl`` seconds."""

    def __init__(self, secret_key: str, ttl: int) -> None:
        self._serializer = URLSafeTimedSerializer(secret_key, salt="chat-ws-token")
        self.ttl = ttl

    def issue(self, identity: Identity) -> str:
        """A token for ``identity``."""
        return self._serializer.dumps(identity.to_claims())

    def verify(self, token: str) -> Identity | None:
        """The identity in a valid, unexpired token, else ``None``."""
        try:
            data = self._serializer.loads(token, max_age=self.ttl)
        except BadSignature:  # includes SignatureExpired
            return None
        return Identity.from_claims(data)
