"""Nicks and room names no other test uses, so tests can share one chat."""

from __future__ import annotations

import itertools
import secrets

_names = itertools.count(1)


def fresh_nick(prefix: str = "user") -> str:
    """A nick no other test uses (1-32 printable characters)."""
    return f"{prefix[:16]}-{next(_names)}-{secrets.token_hex(2)}"


def fresh_room(prefix: str = "room") -> str:
    """A room name no other test uses (``^[\\w.-]{1,64}$``)."""
    return f"{prefix[:32]}-{next(_names)}-{secrets.token_hex(3)}"
