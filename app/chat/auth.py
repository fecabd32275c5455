"""Who a client is: signed, expiring session tokens (``itsdangerous``).

The web app issues a token when a session picks a nick (``POST
/api/session``); the WebSocket handshake accepts it in ``?token=``. The
token binds the nick to the browser session's id, so one session can hold a
nick across tabs while another session cannot take it.
"""

from __future__ import annotations

from dataclasses import dataclass

from itsdangerous import BadSignature, URLSafeTimedSerializer

__all__ = ["Identity", "TokenSigner"]


@dataclass(frozen=True, slots=True)
class Identity:
    """A nick, and the session that holds it."""

    nick: str
    session_id: str


class TokenSigner:
    """Issues and checks tokens; a token is valid for ``ttl`` seconds."""

    def __init__(self, secret_key: str, ttl: int) -> None:
        self._serializer = URLSafeTimedSerializer(secret_key, salt="chat-ws-token")
        self.ttl = ttl

    def issue(self, identity: Identity) -> str:
        """A token for ``identity``."""
        return self._serializer.dumps({"nick": identity.nick, "sid": identity.session_id})

    def verify(self, token: str) -> Identity | None:
        """The identity in a valid, unexpired token, else ``None``."""
        try:
            data = self._serializer.loads(token, max_age=self.ttl)
        except BadSignature:  # includes SignatureExpired
            return None
        if not isinstance(data, dict) or not isinstance(data.get("nick"), str) or not isinstance(data.get("sid"), str):
            return None
        return Identity(data["nick"], data["sid"])
