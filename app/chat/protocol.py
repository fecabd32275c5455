"""The JSON chat protocol's input side (docs/protocol.md): commands in, and the checks every surface shares.

:func:`parse_command` turns a text frame into a typed command or raises
:class:`ChatError` with the code the client gets back. The same checks
(:func:`check_room`, :func:`check_nick`, :func:`check_text`) serve the HTTP
surfaces (the push API, sessions, the admin API): a :class:`ChatError`
carries its wire code and its HTTP status, and each surface has one handler
that turns it into its answer (an ``error`` event, or a JSON error with the
status). What goes out is :mod:`app.chat.events`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

__all__ = [
    "HTTP_STATUS",
    "PRIVATE_PREFIXES",
    "ROOM_NAME",
    "ChatError",
    "Create",
    "Delete",
    "DirectMessage",
    "Edit",
    "Info",
    "Invite",
    "Join",
    "Leave",
    "ListRooms",
    "Moderator",
    "Mute",
    "React",
    "Ref",
    "Remove",
    "Say",
    "Slow",
    "Typing",
    "check_emoji",
    "check_nick",
    "check_room",
    "check_text",
    "check_title",
    "is_private",
    "parse_command",
    "valid_nick",
    "valid_ref",
    "valid_room",
]

ROOM_NAME = re.compile(r"[\w.-]{1,64}\Z")
MAX_REF_LENGTH = 64
#: Integer refs round-trip through a JavaScript number only up to 2**53 - 1 (Number.MAX_SAFE_INTEGER).
MAX_SAFE_INTEGER = 2**53 - 1
MAX_NICK_LENGTH = 32
MAX_EPOCH_LENGTH = 64
MAX_TITLE_LENGTH = 64
MAX_EMOJI_LENGTH = 16
#: The longest mute, and the slowest slow mode, a moderator may set (seconds).
MAX_MUTE_SECONDS = 30 * 24 * 3600
MAX_SLOW_SECONDS = 3600
#: Names of private rooms (``p.<hex>``, named by the server) and direct conversations (``dm.<hex>``):
#: never created by joining, so that a room one may not see cannot be told from one that does not exist.
PRIVATE_PREFIXES = ("p.", "dm.")

#: A client's correlation id: a string (at most 64 characters) or an integer
#: (JSON-RPC ids and Socket.IO ack ids are integers); sent back as it came.
Ref = str | int

#: The HTTP status of each error code, for the surfaces that answer over HTTP
#: (docs/protocol.md §1, §6, §7; docs/admin.md). WebSocket clients get the code.
HTTP_STATUS = {
    "invalid_json": 400,
    "missing_field": 400,
    "invalid_field": 400,
    "invalid_room": 400,
    "invalid_nick": 400,
    "invalid_query": 400,
    "invalid_seconds": 400,
    "empty_text": 400,
    "unknown_type": 400,
    "unsupported": 400,
    "invalid_password": 400,
    "guests_disabled": 403,
    "unauthorized": 401,
    "forbidden": 403,
    "account_required": 403,
    "muted": 403,
    "unknown_user": 404,
    "room_exists": 409,
    "invalid_emoji": 400,
    "bad_credentials": 401,
    "banned": 403,
    "cross_site": 403,
    "csrf": 403,
    "not_found": 404,
    "not_joined": 409,
    "already_joined": 409,
    "too_many_rooms": 409,
    "nick_taken": 409,
    "nick_registered": 409,
    "name_taken": 409,
    "text_too_long": 413,
    "too_large": 413,
    "rate_limited": 429,
    "too_many_attempts": 429,
    "unavailable": 503,
    "degraded": 503,
    "busy": 503,
}


class ChatError(Exception):
    """A request the server refuses: its wire ``code``, a human ``message``, the request's ``ref``, an HTTP ``status``.

    Over the WebSocket it becomes ``{"type": "error", code, message, ref?}``
    (:func:`app.chat.events.error`); over HTTP, ``{"error": code, "message":
    message}`` with ``status`` (from :data:`HTTP_STATUS` unless given).
    """

    def __init__(
        self, code: str, message: str, ref: Ref | None = None, *, status: int | None = None, retry_after: int = 0
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.ref = ref
        self.status = status or HTTP_STATUS.get(code, 400)
        #: Seconds to wait before trying again (HTTP's ``Retry-After``); 0: not said.
        self.retry_after = retry_after


def valid_nick(nick: object) -> bool:
    """1–32 printable characters, without leading or trailing spaces."""
    return isinstance(nick, str) and 1 <= len(nick) <= MAX_NICK_LENGTH and nick.isprintable() and nick == nick.strip()


def valid_room(room: object) -> bool:
    """Room names match ``^[\\w.-]{1,64}$``."""
    return isinstance(room, str) and ROOM_NAME.match(room) is not None


def is_private(room: str) -> bool:
    """Whether ``room`` names a private room or a direct conversation (docs/protocol.md §3.1)."""
    return room.startswith(PRIVATE_PREFIXES)


def valid_ref(ref: object) -> bool:
    """A string of at most 64 characters, or an integer (not a boolean) a JavaScript number holds exactly."""
    if type(ref) is int:
        return -MAX_SAFE_INTEGER <= ref <= MAX_SAFE_INTEGER
    return isinstance(ref, str) and len(ref) <= MAX_REF_LENGTH


def check_room(room: object, ref: Ref | None = None) -> str:
    """``room`` if it is a room name; else :class:`ChatError` (``invalid_field``, ``invalid_room``)."""
    if not isinstance(room, str):
        raise ChatError("invalid_field", "room must be a string", ref)
    if not valid_room(room):
        raise ChatError("invalid_room", "room names are 1-64 letters, digits, '_', '.' or '-'", ref)
    return room


def check_nick(nick: object, field: str = "nick", code: str = "invalid_nick") -> str:
    """``nick`` if it is a valid nick; else :class:`ChatError` with ``code``, naming ``field``."""
    if not valid_nick(nick):
        raise ChatError(code, f"{field} must be 1-32 printable characters, without leading or trailing spaces")
    assert isinstance(nick, str)
    return nick


def check_text(text: object, max_text: int, ref: Ref | None = None) -> str:
    """``text`` if it may be said; else :class:`ChatError` (``invalid_field``, ``empty_text``, ``text_too_long``)."""
    if not isinstance(text, str):
        raise ChatError("invalid_field", "text must be a string", ref)
    if not text:
        raise ChatError("empty_text", "text is empty", ref)
    if len(text) > max_text:
        raise ChatError("text_too_long", f"text is longer than {max_text} characters", ref)
    return text


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


@dataclass(frozen=True, slots=True)
class Typing:
    """The client is typing in a room: shown to the others for a few seconds, never stored."""

    room: str
    ref: Ref | None = None


@dataclass(frozen=True, slots=True)
class Create:
    """Create a room one owns: public and named (``room``), or private (the server names it)."""

    room: str | None
    private: bool = False
    title: str = ""
    ref: Ref | None = None


@dataclass(frozen=True, slots=True)
class Invite:
    room: str
    nick: str
    ref: Ref | None = None


@dataclass(frozen=True, slots=True)
class Remove:
    room: str
    nick: str
    ref: Ref | None = None


@dataclass(frozen=True, slots=True)
class DirectMessage:
    """A message to one account, in the private room of the two (created by the first one)."""

    to: str
    text: str
    ref: Ref | None = None


@dataclass(frozen=True, slots=True)
class Info:
    room: str
    ref: Ref | None = None


@dataclass(frozen=True, slots=True)
class Edit:
    room: str
    id: int
    text: str
    ref: Ref | None = None


@dataclass(frozen=True, slots=True)
class Delete:
    room: str
    id: int
    ref: Ref | None = None


@dataclass(frozen=True, slots=True)
class React:
    room: str
    id: int
    emoji: str
    on: bool = True
    ref: Ref | None = None


@dataclass(frozen=True, slots=True)
class Moderator:
    room: str
    nick: str
    on: bool = True
    ref: Ref | None = None


@dataclass(frozen=True, slots=True)
class Mute:
    room: str
    nick: str
    seconds: int
    ref: Ref | None = None


@dataclass(frozen=True, slots=True)
class Slow:
    room: str
    seconds: int
    ref: Ref | None = None


Command = (
    Join
    | Say
    | Leave
    | ListRooms
    | Typing
    | Create
    | Invite
    | Remove
    | DirectMessage
    | Info
    | Edit
    | Delete
    | React
    | Moderator
    | Mute
    | Slow
)


def _required(obj: dict[str, Any], field: str, ref: Ref | None) -> Any:
    if field not in obj:
        raise ChatError("missing_field", f"{field} is required", ref)
    return obj[field]


def _nick_field(obj: dict[str, Any], field: str, ref: Ref | None) -> str:
    nick = _required(obj, field, ref)
    if not valid_nick(nick):
        raise ChatError("invalid_field", f"{field} must be a nick: 1-32 printable characters", ref)
    assert isinstance(nick, str)
    return nick


def _message_id(obj: dict[str, Any], ref: Ref | None) -> int:
    message_id = _required(obj, "id", ref)
    if type(message_id) is not int or message_id < 1:
        raise ChatError("invalid_field", "id must be a message's id: a positive integer", ref)
    return message_id


def _flag(obj: dict[str, Any], field: str, ref: Ref | None, default: bool = True) -> bool:
    value = obj.get(field, default)
    if type(value) is not bool:
        raise ChatError("invalid_field", f"{field} must be true or false", ref)
    return value


def _seconds(obj: dict[str, Any], maximum: int, ref: Ref | None) -> int:
    seconds = _required(obj, "seconds", ref)
    if type(seconds) is not int or not 0 <= seconds <= maximum:
        raise ChatError("invalid_field", f"seconds must be an integer from 0 to {maximum}", ref)
    return seconds


def check_emoji(emoji: object, ref: Ref | None = None) -> str:
    """1-16 characters, none of them a space, a letter, a digit or a control character."""
    if (
        not isinstance(emoji, str)
        or not 1 <= len(emoji) <= MAX_EMOJI_LENGTH
        or any(c.isspace() or c.isalnum() or (not c.isprintable() and c not in "\u200d\ufe0f") for c in emoji)
    ):
        raise ChatError(
            "invalid_emoji", f"emoji must be 1-{MAX_EMOJI_LENGTH} characters: no spaces, letters or digits", ref
        )
    return emoji


def check_title(title: object, ref: Ref | None = None) -> str:
    """A room's title: up to 64 printable characters (may be empty)."""
    if not isinstance(title, str) or len(title) > MAX_TITLE_LENGTH or not title.isprintable():
        raise ChatError("invalid_field", f"title must be at most {MAX_TITLE_LENGTH} printable characters", ref)
    return title.strip()


def _parse_more(kind: object, obj: dict[str, Any], ref: Ref | None, max_text: int) -> Command | None:
    """Rooms one owns, private rooms, the message lifecycle and moderation (docs/protocol.md §3.1-3.3)."""
    if kind == "create":
        private = _flag(obj, "private", ref, default=False)
        title = check_title(obj.get("title", ""), ref)
        if private:
            return Create(None, True, title, ref)
        return Create(check_room(_required(obj, "room", ref), ref), False, title, ref)
    if kind in ("invite", "remove"):
        room = check_room(_required(obj, "room", ref), ref)
        return (Invite if kind == "invite" else Remove)(room, _nick_field(obj, "nick", ref), ref)
    if kind == "dm":
        to = _nick_field(obj, "to", ref)
        return DirectMessage(to, check_text(_required(obj, "text", ref), max_text, ref), ref)
    if kind == "info":
        return Info(check_room(_required(obj, "room", ref), ref), ref)
    if kind == "edit":
        room = check_room(_required(obj, "room", ref), ref)
        message_id = _message_id(obj, ref)
        return Edit(room, message_id, check_text(_required(obj, "text", ref), max_text, ref), ref)
    if kind == "delete":
        return Delete(check_room(_required(obj, "room", ref), ref), _message_id(obj, ref), ref)
    if kind == "react":
        room = check_room(_required(obj, "room", ref), ref)
        message_id = _message_id(obj, ref)
        return React(room, message_id, check_emoji(_required(obj, "emoji", ref), ref), _flag(obj, "on", ref), ref)
    if kind == "moderator":
        room = check_room(_required(obj, "room", ref), ref)
        return Moderator(room, _nick_field(obj, "nick", ref), _flag(obj, "on", ref), ref)
    if kind == "mute":
        room = check_room(_required(obj, "room", ref), ref)
        return Mute(room, _nick_field(obj, "nick", ref), _seconds(obj, MAX_MUTE_SECONDS, ref), ref)
    if kind == "slow":
        return Slow(check_room(_required(obj, "room", ref), ref), _seconds(obj, MAX_SLOW_SECONDS, ref), ref)
    return None


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
        room = check_room(_required(obj, "room", ref), ref)
        return Say(room, check_text(_required(obj, "text", ref), max_text, ref), ref)
    if kind == "join":
        room = check_room(_required(obj, "room", ref), ref)
        since = obj.get("since")
        if since is not None and (type(since) is not int or since < 0):
            raise ChatError("invalid_field", "since must be a non-negative integer", ref)
        epoch = obj.get("epoch")
        if epoch is not None and (not isinstance(epoch, str) or len(epoch) > MAX_EPOCH_LENGTH):
            raise ChatError("invalid_field", f"epoch must be a string of at most {MAX_EPOCH_LENGTH} characters", ref)
        return Join(room, since, ref, epoch)
    if kind == "leave":
        return Leave(check_room(_required(obj, "room", ref), ref), ref)
    if kind == "rooms":
        return ListRooms(ref)
    if kind == "typing":
        return Typing(check_room(_required(obj, "room", ref), ref), ref)
    command = _parse_more(kind, obj, ref, max_text)
    if command is not None:
        return command
    if kind is None:
        raise ChatError("unknown_type", "type is required", ref)
    raise ChatError("unknown_type", f"unknown type {str(kind)[:32]!r}", ref)
