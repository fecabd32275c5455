"""The JSON chat protocol (docs/protocol.md): commands in, events out.

:func:`parse_command` turns a text frame into a typed command or raises
:class:`ChatError` with the code the client gets back; :class:`Outgoing`
holds an event encoded once, so a broadcast serializes it once for a whole
room.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from json.encoder import encode_basestring
from typing import Any

__all__ = [
    "ROOM_NAME",
    "ChatError",
    "Join",
    "Leave",
    "ListRooms",
    "Outgoing",
    "Ref",
    "Say",
    "compact_json",
    "json_ref",
    "json_string",
    "parse_command",
    "valid_nick",
]

ROOM_NAME = re.compile(r"[\w.-]{1,64}\Z")
MAX_REF_LENGTH = 64
#: Integer refs round-trip through a JavaScript number only up to 2**53 - 1 (Number.MAX_SAFE_INTEGER).
MAX_SAFE_INTEGER = 2**53 - 1

#: A client's correlation id: a string (at most 64 characters) or an integer
#: (JSON-RPC ids and Socket.IO ack ids are integers); sent back as it came.
Ref = str | int
MAX_NICK_LENGTH = 32
MAX_EPOCH_LENGTH = 64


class ChatError(Exception):
    """A request the server refuses; the client gets ``{"type":"error", code, message, ref?}``."""

    def __init__(self, code: str, message: str, ref: Ref | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.ref = ref

    def to_json(self) -> dict[str, Any]:
        event: dict[str, Any] = {"type": "error", "code": self.code, "message": self.message}
        if self.ref is not None:
            event["ref"] = self.ref
        return event


@dataclass(frozen=True, slots=True)
class Join:
    room: str
    since: int | None = None
    ref: Ref | None = None
    #: The epoch ``since`` belongs to, as the last ``joined`` or ``reset`` gave it.
    epoch: str | None = None


@dataclass(frozen=True, slots=True)
class Say:
    room: str
    text: str
    ref: Ref | None = None


@dataclass(frozen=True, slots=True)
class Leave:
    room: str
    ref: Ref | None = None


@dataclass(frozen=True, slots=True)
class ListRooms:
    ref: Ref | None = None


Command = Join | Say | Leave | ListRooms


def valid_nick(nick: object) -> bool:
    """1–32 printable characters, without leading or trailing spaces."""
    return isinstance(nick, str) and 1 <= len(nick) <= MAX_NICK_LENGTH and nick.isprintable() and nick == nick.strip()


def valid_ref(ref: object) -> bool:
    """A string of at most 64 characters, or an integer (not a boolean) a JavaScript number holds exactly."""
    if type(ref) is int:
        return -MAX_SAFE_INTEGER <= ref <= MAX_SAFE_INTEGER
    return isinstance(ref, str) and len(ref) <= MAX_REF_LENGTH


def valid_room(room: object) -> bool:
    """Room names match ``^[\\w.-]{1,64}$``."""
    return isinstance(room, str) and ROOM_NAME.match(room) is not None


def _room(obj: dict[str, Any], ref: Ref | None) -> str:
    if "room" not in obj:
        raise ChatError("missing_field", "room is required", ref)
    room = obj["room"]
    if not isinstance(room, str):
        raise ChatError("invalid_field", "room must be a string", ref)
    if not valid_room(room):
        raise ChatError("invalid_room", "room names are 1-64 letters, digits, '_', '.' or '-'", ref)
    return room


def parse_command(text: str, *, max_text: int = 4000) -> Command:
    """The command in a client's text frame; :class:`ChatError` says what is wrong."""
    try:
        obj = json.loads(text)
    except ValueError:
        raise ChatError("invalid_json", "messages are JSON objects") from None
    if not isinstance(obj, dict):
        raise ChatError("invalid_json", "messages are JSON objects")
    ref = obj.get("ref")
    if ref is not None and not valid_ref(ref):
        raise ChatError(
            "invalid_field",
            f"ref must be a string of at most {MAX_REF_LENGTH} characters or an integer of at most 2**53 - 1",
        )
    kind = obj.get("type")
    if kind == "say":
        room = _room(obj, ref)
        if "text" not in obj:
            raise ChatError("missing_field", "text is required", ref)
        body = obj["text"]
        if not isinstance(body, str):
            raise ChatError("invalid_field", "text must be a string", ref)
        if not body:
            raise ChatError("empty_text", "text is empty", ref)
        if len(body) > max_text:
            raise ChatError("text_too_long", f"text is longer than {max_text} characters", ref)
        return Say(room, body, ref)
    if kind == "join":
        room = _room(obj, ref)
        since = obj.get("since")
        if since is not None and (type(since) is not int or since < 0):
            raise ChatError("invalid_field", "since must be a non-negative integer", ref)
        epoch = obj.get("epoch")
        if epoch is not None and (not isinstance(epoch, str) or len(epoch) > MAX_EPOCH_LENGTH):
            raise ChatError("invalid_field", f"epoch must be a string of at most {MAX_EPOCH_LENGTH} characters", ref)
        return Join(room, since, ref, epoch)
    if kind == "leave":
        return Leave(_room(obj, ref), ref)
    if kind == "rooms":
        return ListRooms(ref)
    if kind is None:
        raise ChatError("unknown_type", "type is required", ref)
    raise ChatError("unknown_type", f"unknown type {str(kind)[:32]!r}", ref)


#: Built once: ``json.dumps`` with arguments builds a new encoder on every call.
_COMPACT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
#: A ``str`` as a JSON string, quoted: the C function ``_COMPACT`` itself uses for strings.
json_string: Callable[[str], str] = encode_basestring


def json_ref(ref: Ref) -> str:
    """A ref as JSON: a string quoted, an integer as its digits."""
    return json_string(ref) if isinstance(ref, str) else str(ref)


def compact_json(value: Any) -> str:
    """``value`` as the wire's JSON: no spaces, non-ASCII characters kept as they are."""
    return _COMPACT.encode(value)


class Outgoing:
    """An event encoded once as UTF-8 JSON, with room for the transport's framing.

    ``frames`` is the transport's cache: the WebSocket layer stores the
    encoded frame per encoding, so a broadcast frames (and compresses) a
    message once for all the connections that share an encoding.
    """

    __slots__ = ("data", "frames")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.frames: dict[object, bytes] = {}

    @classmethod
    def of(cls, event: dict[str, Any]) -> Outgoing:
        """Encode ``event`` compactly."""
        return cls(_COMPACT.encode(event).encode())
