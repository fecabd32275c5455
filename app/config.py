"""Configuration in one place: defaults, then ``CHAT_*`` environment variables.

Every setting the product reads is a field of :class:`Settings`; nothing else
reads the environment (``tests/test_environment.py`` checks it). Tests
build a ``Settings`` with overrides instead. The README lists them all.
"""

from __future__ import annotations

import ipaddress
import math
import os
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import Field, dataclass, field, fields, replace
from typing import Any

__all__ = ["DEFLATE_MODES", "Settings"]

#: The values of CHAT_DEFLATE: how WebSocket messages are compressed (permessage-deflate, RFC 7692).
DEFLATE_MODES = ("shared", "per-client", "off")


@dataclass(frozen=True)
class Settings:
    """The product's settings; each is read from ``CHAT_`` + its name in capitals.

    A field whose metadata has ``env`` is read from the variable it names
    instead (one whose name another library fixes), or not from the
    environment at all if ``env`` is False.
    """

    #: Signs session cookies and tokens. Unset: a random key, so sessions end with the process.
    secret_key: str = ""
    #: Where the web app listens (``HOST:PORT``) when gunicorn is given no ``--bind``, and for ``python wsgi.py``.
    http_bind: str = "127.0.0.1:8000"
    #: Where the WebSocket server listens (``HOST:PORT``).
    ws_bind: str = "127.0.0.1:8001"
    #: The WebSocket URL clients are given; empty: derived from ``ws_bind`` and the request's host.
    ws_public_url: str = ""
    #: Browser origins allowed to open a WebSocket, comma-separated; empty: the web app's own origin.
    allowed_origins: str = ""
    #: The SQLite history database.
    db: str = "instance/chat.db"
    #: SQLite ``synchronous``: NORMAL survives a killed process, FULL also a power cut.
    db_synchronous: str = "NORMAL"
    #: How long a session token is valid, in seconds.
    token_ttl: int = 86400
    #: The largest WebSocket message accepted, in bytes (larger: closed with 1009).
    max_message_size: int = 64 * 1024
    #: The longest chat text, in characters.
    max_text: int = 4000
    #: permessage-deflate: ``shared`` (no server context takeover: a broadcast is compressed once
    #: for every client), ``per-client`` (each connection keeps its own compression context, so
    #: every client's copy is compressed on its own) or ``off`` (offers are declined).
    deflate: str = "shared"
    #: Bytes a client may have waiting to be sent before it is closed with 1008.
    send_buffer: int = 1024 * 1024
    #: Seconds between keepalive pings, and to wait for the pong.
    ping_interval: float = 20.0
    ping_timeout: float = 20.0
    #: Seconds a client may send nothing (pongs aside) before it is closed with 1001; 0: never.
    idle_timeout: float = 0.0
    #: Seconds a client has to complete the opening handshake, and the closing one.
    handshake_timeout: float = 10.0
    close_timeout: float = 5.0
    #: Seconds over which a stopping server closes its clients (1012, each at its own moment, each
    #: told when to come back), so that they do not all reconnect at once; 0: all at once.
    drain_seconds: float = 10.0
    #: Most simultaneous WebSocket connections (beyond: 503).
    max_connections: int = 10_000
    #: Most simultaneous WebSocket connections from one address (beyond: 429; 0: no limit).
    #: Behind a proxy every client has the proxy's address: set 0 and limit in the proxy.
    max_connections_per_address: int = 50
    #: Messages a client may send per second over time, and at once (0: no limit).
    message_rate: float = 20.0
    message_burst: int = 100
    #: Rooms one client may be in at once (0: no limit).
    max_rooms: int = 50
    #: Whether people may chat without an account, under a nick nobody registered.
    guests: bool = True
    #: The admin page's password (user ``admin``); empty: no admin page (404).
    admin_password: str = ""
    #: The bearer token of the push API; empty: no push API (404).
    api_token: str = ""
    #: A certificate chain and its key (PEM files): ``wss://`` on the WebSocket port.
    tls_cert: str = ""
    tls_key: str = ""
    #: Browsers reach the web app over HTTPS (gunicorn's own TLS, or a proxy): Secure cookies, HSTS.
    force_https: bool = False
    #: Set when ``secret_key`` was made up at start (CHAT_SECRET_KEY unset): development only.
    random_secret_key: bool = field(default=False, metadata={"env": False})
    #: Log lines as ``text`` or ``json`` (one object per line), on stderr.
    log_format: str = "text"
    #: Redis shared by several workers or hosts (``redis://HOST:PORT/DB``); empty: one process, SQLite.
    redis_url: str = ""
    #: The prefix of every Redis key and channel: chats sharing one Redis must differ.
    redis_prefix: str = "chat"
    #: Where gunicorn's workers write their metrics, so that /metrics sums them: prometheus_client's
    #: multiprocess mode, which prometheus_client itself also reads from this variable. Empty: this
    #: process's metrics only (gunicorn.conf.py sets a temporary directory when it is unset).
    metrics_dir: str = field(default="", metadata={"env": "PROMETHEUS_MULTIPROC_DIR"})

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ, **overrides: Any) -> Settings:
        """Defaults, then ``CHAT_*`` variables from ``environ``, then ``overrides``."""
        values: dict[str, Any] = {}
        for setting in fields(cls):
            variable = _variable(setting)
            if variable is None:
                continue
            raw = environ.get(variable)
            if raw is None:
                continue
            kind: Any = type(setting.default)
            if kind is bool:
                values[setting.name] = _flag(variable, raw)
                continue
            try:
                values[setting.name] = kind(raw) if kind in (int, float) else raw
            except ValueError:
                raise ValueError(f"{variable} must be a number, got {raw!r}") from None
        settings = cls(**values)
        if not settings.secret_key and "secret_key" not in overrides:
            settings = replace(settings, secret_key=secrets.token_hex(32), random_secret_key=True)
        return replace(settings, **overrides)

    def refusal(self, http_binds: Iterable[str]) -> str | None:
        """Why this configuration must not start, or None.

        A random secret key is for development only: it changes at every
        start (every session ends) and differs between workers, so it is
        refused once the chat listens beyond loopback or shares rooms through
        Redis.
        """
        if not self.random_secret_key:
            return None
        exposed = [bind for bind in (*http_binds, self.ws_bind) if not _loopback(bind)]
        if exposed or self.redis_url:
            where = f"it listens on {', '.join(exposed)}" if exposed else "workers share rooms through Redis"
            return f"set CHAT_SECRET_KEY (a long random string, the same for every worker and host): {where}"
        return None

    def __post_init__(self) -> None:
        if self.drain_seconds < 0:
            raise ValueError("CHAT_DRAIN_SECONDS must be 0 or more")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("CHAT_TLS_CERT and CHAT_TLS_KEY go together: set both, or neither")
        if self.deflate not in DEFLATE_MODES:
            raise ValueError(f"CHAT_DEFLATE must be one of {', '.join(DEFLATE_MODES)}, got {self.deflate!r}")

    @property
    def graceful_timeout(self) -> int:
        """Whole seconds a stopping process may take: the drain, then :data:`SHUTDOWN_MARGIN` to finish.

        gunicorn's ``graceful_timeout`` (gunicorn.conf.py): the master kills a
        worker that takes longer.
        """
        return math.ceil(self.drain_seconds + SHUTDOWN_MARGIN)

    @property
    def secure(self) -> bool:
        """Whether browsers reach the chat over TLS: cookies are then ``Secure``, pages send HSTS."""
        return bool(self.tls_cert) or self.ws_public_url.startswith("wss://") or self.force_https

    @property
    def origins(self) -> frozenset[str]:
        """The configured allowed origins, without trailing slashes."""
        return frozenset(o.strip().rstrip("/") for o in self.allowed_origins.split(",") if o.strip())


#: Seconds a stopping process has after the drain: the last clients' closing handshakes
#: (``close_timeout``), the HTTP requests under way, the history's last commit.
SHUTDOWN_MARGIN = 10

TRUE, FALSE = frozenset({"1", "true", "yes", "on"}), frozenset({"0", "false", "no", "off", ""})


def _variable(setting: Field[Any]) -> str | None:
    """The environment variable a setting is read from; None if it is not read from the environment."""
    env = setting.metadata.get("env", True)
    if env is False:
        return None
    return env if isinstance(env, str) else "CHAT_" + setting.name.upper()


def _flag(variable: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in TRUE or value in FALSE:
        return value in TRUE
    raise ValueError(f"{variable} must be 1 or 0 (true or false), got {raw!r}")


def _loopback(bind: str) -> bool:
    """Whether a ``HOST:PORT`` (or ``unix:PATH``) bind is reachable from this machine only."""
    if bind.startswith("unix:"):
        return True
    host = bind.rpartition(":")[0].strip("[]") if ":" in bind else bind
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
