"""Every event the server sends a client (docs/protocol.md §4), each with its one encoder.

Nothing else in the project builds event JSON: the chat service, the
brokers and the stores call these functions, and the Redis store and amend
scripts only complete the ``message`` and ``update`` JSON that
:func:`message_json_around_id` and :func:`update_json_around_id` laid out
(they put the id in). Each returns an :class:`Outgoing`, the event
encoded once as UTF-8, so a broadcast serializes it once for a whole room.

``message`` is on the hot path (once per message stored, and per message
replayed): it is written out directly from its fields, four strings quoted
by the C function the ``json`` encoder itself uses, which costs an eighth
of building a dict and walking it. The others are rare, and go through one
compact encoder.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from json.encoder import encode_basestring
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from .store import Replay, StoredMessage

__all__ = [
    "Outgoing",
    "compact_json",
    "error",
    "hello",
    "invited",
    "joined",
    "json_ref",
    "json_string",
    "left",
    "message",
    "message_fields",
    "message_json",
    "message_json_around_id",
    "presence",
    "removed",
    "reset",
    "room",
    "rooms",
    "system",
    "typing",
    "update",
    "update_fields",
    "update_json",
    "update_json_around_id",
]

#: Built once: ``json.dumps`` with arguments builds a new encoder on every call.
_COMPACT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
#: A ``str`` as a JSON string, quoted: the C function ``_COMPACT`` itself uses for strings.
json_string: Callable[[str], str] = encode_basestring


def compact_json(value: Any) -> str:
    """``value`` as the wire's JSON: no spaces, non-ASCII characters kept as they are."""
    return _COMPACT.encode(value)


def json_ref(ref: str | int) -> str:
    """A client's ref as JSON: a string quoted, an integer as its digits."""
    return json_string(ref) if isinstance(ref, str) else str(ref)


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


# -- message -----------------------------------------------------------------------


def message_json(stored: StoredMessage) -> str:
    """The ``message`` event of a stored original, as JSON text (``ref`` only when there is one).

    With a ``meta`` (the message was amended), its lifecycle state follows:
    ``edited``, ``deleted`` (the text then empty), ``reactions``. Without
    one, the common case, no JSON is parsed.
    """
    ref = "" if stored.ref is None else f',"ref":{json_ref(stored.ref)}'
    if stored.meta is None:
        return (
            f'{{"type":"message","room":{json_string(stored.room)},"id":{stored.id},"from":{json_string(stored.nick)},'
            f'"text":{json_string(stored.text)},"ts":{stored.ts}{ref}}}'
        )
    state = _lifecycle(stored.meta)
    text = "" if "deleted" in state else stored.text
    extra = f",{compact_json(state)[1:-1]}" if state else ""
    return (
        f'{{"type":"message","room":{json_string(stored.room)},"id":{stored.id},"from":{json_string(stored.nick)},'
        f'"text":{json_string(text)},"ts":{stored.ts}{ref}{extra}}}'
    )


def message(stored: StoredMessage) -> Outgoing:
    """The ``message`` event, encoded."""
    return Outgoing(message_json(stored).encode())


def message_fields(stored: StoredMessage) -> dict[str, Any]:
    """The ``message`` event as a dict (the HTTP history's entries): the same fields as :func:`message_json`."""
    event: dict[str, Any] = {
        "type": "message",
        "room": stored.room,
        "id": stored.id,
        "from": stored.nick,
        "text": stored.text,
        "ts": stored.ts,
    }
    if stored.ref is not None:
        event["ref"] = stored.ref
    if stored.meta is not None:
        state = _lifecycle(stored.meta)
        if "deleted" in state:
            event["text"] = ""
        event.update(state)
    return event


def message_json_around_id(room: str, nick: str, text: str, ts: int, ref: str | int | None) -> tuple[str, str]:
    """:func:`message_json` before the id is known, split where it goes (Redis's store script puts it)."""
    head = f'{{"type":"message","room":{json_string(room)},"id":'
    tail = f',"from":{json_string(nick)},"text":{json_string(text)},"ts":{ts}'
    if ref is not None:
        tail += f',"ref":{json_ref(ref)}'
    return head, tail + "}"


def update_json(entry: StoredMessage, target: StoredMessage) -> str:
    """The ``update`` event of an amendment entry: what was done, by whom, and the original as it is now.

    The original's current ``message`` event is spliced in, so a client
    replaces its copy whole; a reaction also says which emoji, and whether
    it was added (``on``) or taken back.
    """
    head, tail = update_json_around_id(entry, target)
    return f"{head}{entry.id}{tail}"


def update_json_around_id(entry: StoredMessage, target: StoredMessage) -> tuple[str, str]:
    """:func:`update_json` before the entry's id is known, split where it goes (Redis's amend script puts it)."""
    head = f'{{"type":"update","room":{json_string(entry.room)},"id":'
    tail = (
        f',"target":{entry.target},"action":{json_string(entry.kind or "")},"from":{json_string(entry.nick)},'
        f'"ts":{entry.ts},"message":{message_json(target)}'
    )
    reaction = _reaction(entry)
    if reaction:
        tail += f",{compact_json(reaction)[1:-1]}"
    if entry.ref is not None:  # the ref of the request that made it: the requester's answer, as a say's message
        tail += f',"ref":{json_ref(entry.ref)}'
    return head, tail + "}"


def update(entry: StoredMessage, target: StoredMessage) -> Outgoing:
    """The ``update`` event, encoded."""
    return Outgoing(update_json(entry, target).encode())


def update_fields(entry: StoredMessage, target: StoredMessage) -> dict[str, Any]:
    """The ``update`` event as a dict (the HTTP history's entries): the same fields as :func:`update_json`."""
    event: dict[str, Any] = {
        "type": "update",
        "room": entry.room,
        "id": entry.id,
        "target": entry.target,
        "action": entry.kind or "",
        "from": entry.nick,
        "ts": entry.ts,
        "message": message_fields(target),
    }
    event.update(_reaction(entry))
    if entry.ref is not None:
        event["ref"] = entry.ref
    return event


def _lifecycle(meta: str) -> dict[str, Any]:
    """What an original's ``meta`` shows clients: ``edited`` (when), ``deleted``, non-empty ``reactions``."""
    state = json.loads(meta)
    if not isinstance(state, dict):
        return {}
    shown: dict[str, Any] = {}
    if "edited" in state:
        shown["edited"] = state["edited"]
    if "deleted" in state:
        shown["deleted"] = True
    reactions = state.get("reactions")
    if isinstance(reactions, dict) and reactions:
        shown["reactions"] = reactions
    return shown


def _reaction(entry: StoredMessage) -> dict[str, Any]:
    """A ``react`` entry's ``emoji`` and ``on``, from its meta; nothing for the other kinds."""
    if entry.kind != "react" or entry.meta is None:
        return {}
    details = json.loads(entry.meta)
    if not isinstance(details, dict):
        return {}
    return {key: details[key] for key in ("emoji", "on") if key in details}


# -- the others ----------------------------------------------------------------------


def hello(nick: str, conn: str) -> Outgoing:
    """The first event of a connection: who the server thinks it is, and its connection id."""
    return Outgoing.of({"type": "hello", "nick": nick, "conn": conn})


def joined(
    room: str,
    members: list[str],
    replay: Replay,
    truncated: bool,
    reset: bool,
    *,
    targets: Mapping[int, StoredMessage] | None = None,
    history: Sequence[bytes] | None = None,
) -> Outgoing:
    """The answer to ``join``: members, position and history, each message's JSON spliced in.

    Spliced, not re-encoded: a replay of 1000 messages is one join. An
    amendment entry is its ``update`` event, with its original's current
    version from ``targets`` (by id); one whose original is not there is
    left out. ``history``, when given, is those items already encoded (by
    :class:`app.chat.encoded.EncodedHistory`, which keeps them): they are
    joined as they are, and ``replay.messages`` is not encoded again.
    """
    head = compact_json({"type": "joined", "room": room, "members": members, "epoch": replay.epoch})
    more = (',"truncated":true' if truncated else "") + (',"reset":true' if reset else "")
    if history is not None:
        return Outgoing(b"".join((f'{head[:-1]},"history":['.encode(), b",".join(history), f"]{more}}}".encode())))
    found = targets or {}
    items = ",".join(
        message_json(stored) if stored.kind is None else update_json(stored, found[stored.target])  # type: ignore[index]
        for stored in replay.messages
        if stored.kind is None or stored.target in found
    )
    return Outgoing(f'{head[:-1]},"history":[{items}]{more}}}'.encode())


def presence(room: str, nick: str, event: Literal["join", "leave"], count: int) -> Outgoing:
    """A nick entered or left the room; ``count`` nicks are in it now."""
    return Outgoing.of({"type": "presence", "room": room, "nick": nick, "event": event, "count": count})


def left(room: str) -> Outgoing:
    """The answer to ``leave``."""
    return Outgoing.of({"type": "left", "room": room})


def rooms(listing: Iterable[dict[str, Any]]) -> Outgoing:
    """The answer to ``rooms``: each room's name and member count."""
    return Outgoing.of({"type": "rooms", "rooms": list(listing)})


def error(code: str, text: str, ref: str | int | None = None, wait: int = 0) -> Outgoing:
    """A refused request: its code (docs/protocol.md §5), a human message, its ``ref`` when it had one,
    and when a later try may succeed (``muted``, slow mode) the seconds to ``wait``."""
    event: dict[str, Any] = {"type": "error", "code": code, "message": text}
    if ref is not None:
        event["ref"] = ref
    if wait:
        event["wait"] = wait
    return Outgoing.of(event)


def system(text: str, room: str | None = None) -> Outgoing:
    """An operator's announcement: to one room, or (no ``room``) to every client."""
    event: dict[str, Any] = {"type": "system", "text": text}
    if room is not None:
        event["room"] = room
    return Outgoing.of(event)


def typing(room: str, nick: str) -> Outgoing:
    """``nick`` is typing in ``room`` (at most one every few seconds per nick and room)."""
    return Outgoing.of({"type": "typing", "room": room, "nick": nick})


def reset(room: str, epoch: str) -> Outgoing:
    """The room's history restarted: ids count from 1 again under ``epoch`` (docs/protocol.md §4.1)."""
    return Outgoing.of({"type": "reset", "room": room, "epoch": epoch})


# -- owned and private rooms (docs/protocol.md §3.1, §3.3) ------------------------------


def room(description: dict[str, Any], ref: str | int | None = None) -> Outgoing:
    """A room's settings, as :meth:`app.chat.roomrules.RoomRules.describe` gives them."""
    event: dict[str, Any] = {"type": "room", **description}
    if ref is not None:
        event["ref"] = ref
    return Outgoing.of(event)


def invited(room: str, by: str, title: str = "", dm: bool = False) -> Outgoing:
    """You were made a member of a private room (or someone wrote to you first: ``dm``)."""
    event: dict[str, Any] = {"type": "invited", "room": room, "by": by}
    if title:
        event["title"] = title
    if dm:
        event["dm"] = True
    return Outgoing.of(event)


def removed(room: str, by: str) -> Outgoing:
    """You are no longer a member of a private room: your connection left it."""
    return Outgoing.of({"type": "removed", "room": room, "by": by})
