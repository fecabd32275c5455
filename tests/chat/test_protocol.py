"""The command parser against docs/protocol.md §3 (client → server) and §5 (errors), as tables.

``parse_command(text, *, max_text)`` is total on the client's text: it
returns a command or raises :class:`ChatError` whose ``code`` is a row of §5's
table, with the request's ``ref`` when the request had a valid one. One
table of valid requests and the command each is; one of invalid requests and
the error each gets. Only the module's public names are used.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from app.chat.protocol import (
    ChatError,
    Create,
    Delete,
    DirectMessage,
    Edit,
    Info,
    Invite,
    Join,
    Leave,
    ListRooms,
    Moderator,
    Mute,
    React,
    Remove,
    Say,
    Slow,
    parse_command,
)

MAX_SAFE_INTEGER = 2**53 - 1  # docs/protocol.md §3: an integer ref within ±(2**53 - 1)


def request(**fields: Any) -> str:
    """A client's text frame: ``fields`` as a JSON object."""
    return json.dumps(fields)


# -- §3: valid requests -----------------------------------------------------------------------------------------------

# (id, text frame, command expected)
VALID: list[tuple[str, str, object]] = [
    ("join", request(type="join", room="lobby"), Join("lobby")),
    ("join-since", request(type="join", room="lobby", since=41), Join("lobby", since=41)),
    ("join-since-0", request(type="join", room="lobby", since=0), Join("lobby", since=0)),
    ("join-since-null", request(type="join", room="lobby", since=None), Join("lobby")),
    (
        "join-since-epoch-ref",
        request(type="join", room="lobby", since=41, epoch="9f2c", ref="j1"),
        Join("lobby", since=41, ref="j1", epoch="9f2c"),
    ),
    ("join-epoch-64", request(type="join", room="lobby", epoch="e" * 64), Join("lobby", epoch="e" * 64)),
    ("join-epoch-empty", request(type="join", room="lobby", epoch=""), Join("lobby", epoch="")),
    ("say", request(type="say", room="lobby", text="hi"), Say("lobby", "hi")),
    ("say-ref", request(type="say", room="lobby", text="hi", ref="m1"), Say("lobby", "hi", ref="m1")),
    ("say-text-4000", request(type="say", room="lobby", text="x" * 4000), Say("lobby", "x" * 4000)),
    ("say-text-4000-multibyte", request(type="say", room="lobby", text="é" * 4000), Say("lobby", "é" * 4000)),
    ("say-text-a-space", request(type="say", room="lobby", text=" "), Say("lobby", " ")),
    ("say-non-ascii-unescaped", '{"type": "say", "room": "lobby", "text": "héllo"}', Say("lobby", "héllo")),
    ("leave", request(type="leave", room="lobby"), Leave("lobby")),
    ("leave-ref", request(type="leave", room="lobby", ref=7), Leave("lobby", ref=7)),
    ("rooms", request(type="rooms"), ListRooms()),
    ("rooms-ref", request(type="rooms", ref="l1"), ListRooms(ref="l1")),
    ("unknown-fields-ignored", request(type="rooms", extra={"a": 1}), ListRooms()),
    # refs: a string of at most 64 characters, or an integer within ±(2**53 - 1); it comes back as it came
    ("ref-null", request(type="rooms", ref=None), ListRooms()),
    ("ref-empty-string", request(type="rooms", ref=""), ListRooms(ref="")),
    ("ref-64-characters", request(type="rooms", ref="r" * 64), ListRooms(ref="r" * 64)),
    ("ref-a-digit-string", request(type="rooms", ref="17"), ListRooms(ref="17")),
    ("ref-0", request(type="rooms", ref=0), ListRooms(ref=0)),
    ("ref-max-safe-integer", request(type="rooms", ref=MAX_SAFE_INTEGER), ListRooms(ref=MAX_SAFE_INTEGER)),
    ("ref-min-safe-integer", request(type="rooms", ref=-MAX_SAFE_INTEGER), ListRooms(ref=-MAX_SAFE_INTEGER)),
    # room names: ^[\w.-]{1,64}$, \w being Unicode word characters
    ("room-one-character", request(type="join", room="a"), Join("a")),
    ("room-64-characters", request(type="join", room="r" * 64), Join("r" * 64)),
    ("room-dots-dashes-underscores", request(type="join", room="a.b-c_d"), Join("a.b-c_d")),
    ("room-digits-only", request(type="join", room="2026"), Join("2026")),
    ("room-accented", request(type="join", room="café"), Join("café")),
    ("room-cyrillic", request(type="join", room="комната"), Join("комната")),
    ("room-chinese", request(type="join", room="房间"), Join("房间")),
    ("room-fullwidth-digits", request(type="join", room="１２３"), Join("１２３")),
    ("room-64-accented", request(type="join", room="é" * 64), Join("é" * 64)),
    # §3.1: owned and private rooms, direct messages
    ("create-public", request(type="create", room="team"), Create("team")),
    ("create-private", request(type="create", private=True, title="Plans"), Create(None, True, "Plans")),
    ("create-private-no-title", request(type="create", private=True, ref=1), Create(None, True, ref=1)),
    ("create-private-room-ignored", request(type="create", private=True, room="x"), Create(None, True)),
    ("invite", request(type="invite", room="p.1", nick="bob"), Invite("p.1", "bob")),
    ("remove", request(type="remove", room="p.1", nick="bob", ref="r"), Remove("p.1", "bob", ref="r")),
    ("dm", request(type="dm", to="bob", text="hi", ref="d"), DirectMessage("bob", "hi", ref="d")),
    ("info", request(type="info", room="lobby"), Info("lobby")),
    # §3.2: edits, deletions, reactions
    ("edit", request(type="edit", room="lobby", id=42, text="fixed"), Edit("lobby", 42, "fixed")),
    ("delete", request(type="delete", room="lobby", id=1), Delete("lobby", 1)),
    ("react", request(type="react", room="lobby", id=42, emoji="👍"), React("lobby", 42, "👍")),
    ("react-off", request(type="react", room="lobby", id=42, emoji="🎉", on=False), React("lobby", 42, "🎉", False)),
    ("react-with-variation-selector", request(type="react", room="l", id=1, emoji="❤️"), React("l", 1, "❤️")),
    ("react-zwj-sequence", request(type="react", room="l", id=1, emoji="👨‍👩‍👧"), React("l", 1, "👨‍👩‍👧")),
    ("react-punctuation", request(type="react", room="l", id=1, emoji="+"), React("l", 1, "+")),
    # §3.3: moderation
    ("moderator", request(type="moderator", room="team", nick="bob"), Moderator("team", "bob")),
    ("moderator-off", request(type="moderator", room="team", nick="bob", on=False), Moderator("team", "bob", False)),
    ("mute", request(type="mute", room="team", nick="eve", seconds=600), Mute("team", "eve", 600)),
    ("mute-lifted", request(type="mute", room="team", nick="eve", seconds=0), Mute("team", "eve", 0)),
    ("mute-30-days", request(type="mute", room="t", nick="eve", seconds=2592000), Mute("t", "eve", 2592000)),
    ("slow", request(type="slow", room="team", seconds=10), Slow("team", 10)),
    ("slow-off", request(type="slow", room="team", seconds=0), Slow("team", 0)),
]


@pytest.mark.parametrize(("text", "expected"), [pytest.param(*case[1:], id=case[0]) for case in VALID])
def test_a_valid_request_is_its_command(text: str, expected: object) -> None:
    assert parse_command(text) == expected


# -- §5: invalid requests ---------------------------------------------------------------------------------------------

SAY = {"type": "say", "room": "lobby", "text": "hi"}

# (id, text frame, code expected, ref expected in the error: None when the request had no valid one)
INVALID: list[tuple[str, str, str, str | int | None]] = [
    # invalid_json: the text is not a JSON object
    ("not-json", "not json", "invalid_json", None),
    ("empty-text-frame", "", "invalid_json", None),
    ("truncated-json", '{"type": "rooms", "ref": "r"', "invalid_json", None),
    ("json-array", "[1, 2]", "invalid_json", None),
    ("json-array-of-a-request", '[{"type": "rooms", "ref": "r"}]', "invalid_json", None),
    ("json-string", '"rooms"', "invalid_json", None),
    ("json-number", "42", "invalid_json", None),
    ("json-null", "null", "invalid_json", None),
    # unknown_type: type missing or not one of §3's
    ("type-missing", request(room="lobby", ref="t1"), "unknown_type", "t1"),
    ("type-null", request(type=None, ref="t2"), "unknown_type", "t2"),
    ("type-unknown", request(type="dance", ref="t3"), "unknown_type", "t3"),
    ("type-in-capitals", request(type="SAY", room="lobby", text="hi", ref="t4"), "unknown_type", "t4"),
    ("type-a-number", request(type=5, ref="t5"), "unknown_type", "t5"),
    ("type-a-list", request(type=["say"], ref="t6"), "unknown_type", "t6"),
    ("type-unknown-integer-ref", request(type="bogus", ref=-3), "unknown_type", -3),
    # missing_field: a required field is missing
    ("join-without-room", request(type="join", ref="f1"), "missing_field", "f1"),
    ("say-without-room", request(type="say", text="hi", ref="f2"), "missing_field", "f2"),
    ("say-without-text", request(type="say", room="lobby", ref="f3"), "missing_field", "f3"),
    ("say-without-anything", request(type="say", ref="f4"), "missing_field", "f4"),
    ("leave-without-room", request(type="leave", ref="f5"), "missing_field", "f5"),
    # invalid_field: room, text, since, epoch of the wrong type or size
    ("room-a-number", request(type="join", room=5, ref="i1"), "invalid_field", "i1"),
    ("room-null", request(type="join", room=None, ref="i2"), "invalid_field", "i2"),
    ("room-a-list", request(type="leave", room=["lobby"], ref="i3"), "invalid_field", "i3"),
    ("text-a-number", request(type="say", room="lobby", text=5, ref="i4"), "invalid_field", "i4"),
    ("text-null", request(type="say", room="lobby", text=None, ref="i5"), "invalid_field", "i5"),
    ("since-negative", request(type="join", room="lobby", since=-1, ref="i6"), "invalid_field", "i6"),
    ("since-a-string", request(type="join", room="lobby", since="3", ref="i7"), "invalid_field", "i7"),
    ("since-a-float", request(type="join", room="lobby", since=1.5, ref="i8"), "invalid_field", "i8"),
    ("since-an-integral-float", request(type="join", room="lobby", since=1.0, ref="i9"), "invalid_field", "i9"),
    ("since-a-boolean", request(type="join", room="lobby", since=True, ref="i10"), "invalid_field", "i10"),
    ("epoch-a-number", request(type="join", room="lobby", epoch=5, ref="i11"), "invalid_field", "i11"),
    ("epoch-a-list", request(type="join", room="lobby", epoch=["e"], ref="i12"), "invalid_field", "i12"),
    ("epoch-65-characters", request(type="join", room="lobby", epoch="e" * 65, ref="i13"), "invalid_field", "i13"),
    # invalid_field: a ref that is not one is not echoed
    ("ref-a-float", request(**SAY, ref=5.5), "invalid_field", None),
    ("ref-an-integral-float", request(**SAY, ref=1.0), "invalid_field", None),
    ("ref-true", request(**SAY, ref=True), "invalid_field", None),
    ("ref-false", request(**SAY, ref=False), "invalid_field", None),
    ("ref-an-object", request(**SAY, ref={"id": 1}), "invalid_field", None),
    ("ref-a-list", request(**SAY, ref=[1]), "invalid_field", None),
    ("ref-past-max-safe-integer", request(**SAY, ref=MAX_SAFE_INTEGER + 1), "invalid_field", None),
    ("ref-past-min-safe-integer", request(**SAY, ref=-MAX_SAFE_INTEGER - 1), "invalid_field", None),
    ("ref-65-characters", request(**SAY, ref="x" * 65), "invalid_field", None),
    ("ref-bad-before-any-other-error", request(type="say", room="lobby", text="", ref=True), "invalid_field", None),
    ("ref-bad-on-an-unknown-type", request(type="dance", ref=0.5), "invalid_field", None),
    # invalid_room: the name does not match ^[\w.-]{1,64}$
    ("room-empty", request(type="join", room="", ref="n1"), "invalid_room", "n1"),
    ("room-65-characters", request(type="join", room="r" * 65, ref="n2"), "invalid_room", "n2"),
    ("room-65-accented", request(type="join", room="é" * 65, ref="n3"), "invalid_room", "n3"),
    ("room-with-a-space", request(type="join", room="bad room", ref="n4"), "invalid_room", "n4"),
    ("room-with-a-slash", request(type="join", room="a/b", ref="n5"), "invalid_room", "n5"),
    ("room-with-a-trailing-newline", request(type="join", room="lobby\n", ref="n6"), "invalid_room", "n6"),
    ("room-an-emoji", request(type="join", room="🎉", ref="n7"), "invalid_room", "n7"),
    ("room-with-punctuation", request(type="join", room="lobby!", ref="n8"), "invalid_room", "n8"),
    ("say-to-a-bad-room", request(type="say", room="a b", text="hi", ref="n9"), "invalid_room", "n9"),
    ("leave-a-bad-room", request(type="leave", room="a b", ref="n10"), "invalid_room", "n10"),
    # empty_text, text_too_long (CHAT_MAX_TEXT, 4000 characters by default)
    ("text-empty", request(type="say", room="lobby", text="", ref="e1"), "empty_text", "e1"),
    ("text-empty-integer-ref-0", request(type="say", room="lobby", text="", ref=0), "empty_text", 0),
    ("text-4001", request(type="say", room="lobby", text="x" * 4001, ref="l1"), "text_too_long", "l1"),
    ("text-4001-multibyte", request(type="say", room="lobby", text="é" * 4001, ref="l2"), "text_too_long", "l2"),
    ("text-4001-no-ref", request(type="say", room="lobby", text="x" * 4001), "text_too_long", None),
    # §3.1-3.3's requests
    ("create-without-room", request(type="create", ref="c1"), "missing_field", "c1"),
    ("create-private-not-a-boolean", request(type="create", private="yes", ref="c2"), "invalid_field", "c2"),
    ("create-title-65", request(type="create", private=True, title="t" * 65, ref="c3"), "invalid_field", "c3"),
    ("create-title-a-newline", request(type="create", private=True, title="a\nb", ref="c4"), "invalid_field", "c4"),
    ("invite-without-nick", request(type="invite", room="p.1", ref="c5"), "missing_field", "c5"),
    ("invite-a-bad-nick", request(type="invite", room="p.1", nick=" bob", ref="c6"), "invalid_field", "c6"),
    ("dm-without-text", request(type="dm", to="bob", ref="c7"), "missing_field", "c7"),
    ("dm-empty-text", request(type="dm", to="bob", text="", ref="c8"), "empty_text", "c8"),
    ("dm-to-a-number", request(type="dm", to=5, text="hi", ref="c9"), "invalid_field", "c9"),
    ("edit-without-id", request(type="edit", room="l", text="x", ref="d1"), "missing_field", "d1"),
    ("edit-id-0", request(type="edit", room="l", id=0, text="x", ref="d2"), "invalid_field", "d2"),
    ("edit-id-a-string", request(type="edit", room="l", id="4", text="x", ref="d3"), "invalid_field", "d3"),
    ("edit-id-a-boolean", request(type="edit", room="l", id=True, text="x", ref="d4"), "invalid_field", "d4"),
    ("edit-empty-text", request(type="edit", room="l", id=4, text="", ref="d5"), "empty_text", "d5"),
    ("edit-text-4001", request(type="edit", room="l", id=4, text="x" * 4001, ref="d6"), "text_too_long", "d6"),
    ("delete-a-bad-room", request(type="delete", room="a b", id=4, ref="d7"), "invalid_room", "d7"),
    ("react-a-word", request(type="react", room="l", id=4, emoji="like", ref="d8"), "invalid_emoji", "d8"),
    ("react-empty", request(type="react", room="l", id=4, emoji="", ref="d9"), "invalid_emoji", "d9"),
    ("react-a-space", request(type="react", room="l", id=4, emoji="👍 ", ref="d10"), "invalid_emoji", "d10"),
    ("react-17-characters", request(type="react", room="l", id=4, emoji="!" * 17, ref="d11"), "invalid_emoji", "d11"),
    ("react-a-control", request(type="react", room="l", id=4, emoji="\u0007", ref="d12"), "invalid_emoji", "d12"),
    (
        "react-on-a-string",
        request(type="react", room="l", id=4, emoji="👍", on="no", ref="d13"),
        "invalid_field",
        "d13",
    ),
    ("mute-negative", request(type="mute", room="t", nick="e", seconds=-1, ref="m1"), "invalid_field", "m1"),
    ("mute-past-30-days", request(type="mute", room="t", nick="e", seconds=2592001, ref="m2"), "invalid_field", "m2"),
    ("mute-a-float", request(type="mute", room="t", nick="e", seconds=1.5, ref="m3"), "invalid_field", "m3"),
    ("mute-without-seconds", request(type="mute", room="t", nick="e", ref="m4"), "missing_field", "m4"),
    ("slow-past-an-hour", request(type="slow", room="t", seconds=3601, ref="m5"), "invalid_field", "m5"),
]


@pytest.mark.parametrize(("text", "code", "ref"), [pytest.param(*case[1:], id=case[0]) for case in INVALID])
def test_an_invalid_request_is_refused_with_its_code_and_ref(text: str, code: str, ref: str | int | None) -> None:
    with pytest.raises(ChatError) as refused:
        parse_command(text)
    assert (refused.value.code, refused.value.ref) == (code, ref)
    assert type(refused.value.ref) is type(ref), "a ref comes back as it came: an integer stays one"
    assert isinstance(refused.value.message, str) and refused.value.message


def test_every_code_the_parser_owns_is_in_the_table() -> None:
    """§5's rows about a request's own content, each tested above."""
    owned = {
        "invalid_json",
        "unknown_type",
        "missing_field",
        "invalid_field",
        "invalid_room",
        "empty_text",
        "text_too_long",
        "invalid_emoji",
    }
    assert {case[2] for case in INVALID} == owned


@pytest.mark.parametrize(("length", "accepted"), [(10, True), (11, False)])
def test_the_longest_text_is_max_text_characters(length: int, accepted: bool) -> None:
    text = request(type="say", room="lobby", text="x" * length, ref="m")
    if accepted:
        assert parse_command(text, max_text=10) == Say("lobby", "x" * length, ref="m")
    else:
        with pytest.raises(ChatError) as refused:
            parse_command(text, max_text=10)
        assert (refused.value.code, refused.value.ref) == ("text_too_long", "m")
