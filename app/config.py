"""Configuration in one place: defaults, then ``CHAT_*`` environment variables.

Every setting the product reads is a field of :class:`Settings`; nothing else
reads the environment. Tests build a ``Settings`` with overrides instead.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

__all__ = ["Settings"]


@dataclass(frozen=True)
class Settings:
    """The product's settings; the environment variable of each is ``CHAT_`` + its name in capitals."""

    #: Signs session cookies and tokens; set it, or sessions end with the process.
    secret_key: str = ""
    #: Where the WebSocket server listens (``HOST:PORT``).
    ws_bind: str = "127.0.0.1:8001"
    #: The largest WebSocket message accepted, in bytes.
    max_message_size: int = 64 * 1024

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ, **overrides: Any) -> Settings:
        """Defaults, then ``CHAT_*`` variables from ``environ``, then ``overrides``."""
        values: dict[str, Any] = {}
        for field in fields(cls):
            raw = environ.get("CHAT_" + field.name.upper())
            if raw is None:
                continue
            default = field.default
            values[field.name] = int(raw) if isinstance(default, int) and not isinstance(default, bool) else raw
        settings = cls(**values)
        if not settings.secret_key:
            settings = replace(settings, secret_key=secrets.token_hex(32))
        return replace(settings, **overrides)
