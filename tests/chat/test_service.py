"""The chat service against its own API: real SQLite history, in-process broker.

The members here are recording transports (the chat layer's ``Member``
interface is the transport's to implement); everything behind them is real.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gevent
import pytest

from app.chat.auth import Identity
from app.chat.broker import LocalBroker
from app.chat.events import Outgoing
from app.chat.service import ChatService
from app.chat.sqlite_history import SQLiteHistory
from tests.support.timeouts import scaled


class RecordingMember:
    """A transport that keeps what it is sent, decoded."""

    def __init__(self, conn_id: str, nick: str, session_id: str = "") -> None:
        self.conn_id = conn_id
        self.nick = nick
        self.session_id = session_id or f"s-{nick}"
        self.received: list[dict[str, Any]] = []
        self.closed: tuple[int, str] | None = None

    def send(self, message: Outgoing) -> None:
        self.received.append(json.loads(message.data))

    def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)

    def describe(self) -> dict[str, Any]:
        return {"id": self.conn_id, "nick": self.nick}

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [event for event in self.received if event["type"] == kind]


@pytest.fixture
def service(tmp_path: Path) -> Iterator[ChatService]:
    chat = ChatService(SQLiteHistory(str(tmp_path / "chat.db")), LocalBroker())
    chat.start()
    yield chat
    chat.close()


def connect(service: ChatService, conn_id: str, nick: str) -> RecordingMember:
    member = RecordingMember(conn_id, nick)
    service.connect(member)
    return member


def say(service: ChatService, member: RecordingMember, room: str, text: str, ref: str | int | None = None) -> None:
    command: dict[str, Any] = {"type": "say", "room": room, "text": text}
    if ref is not None:
        command["ref"] = ref
    service.handle(member, json.dumps(command))


def join(service: ChatService, member: RecordingMember, room: str, since: int | None = None) -> None:
    command: dict[str, Any] = {"type": "join", "room": room}
    if since is not None:
        command["since"] = since
    service.handle(member, json.dumps(command))


def test_connect_says_hello_with_nick_and_connection_id(service: ChatService) -> None:
    alice = connect(service, "c1", "alice")
    assert alice.received == [{"type": "hello", "nick": "alice", "conn": "c1"}]


def test_a_message_is_broadcast_only_after_it_is_stored(service: ChatService, tmp_path: Path) -> None:
    alice = connect(service, "c1", "alice")
    join(service, alice, "lobby")
    say(service, alice, "lobby", "hi", ref="r1")
    assert alice.of_type("message") == []  # not yet committed, so not yet acknowledged
    service.history.flush()
    (message,) = alice.of_type("message")
    assert isinstance(message.pop("ts"), int)
    assert message == {"type": "message", "room": "lobby", "id": 1, "from": "alice", "text": "hi", "ref": "r1"}
    assert [m.text for m in service.history.recent("lobby")] == ["hi"]


def test_every_member_gets_the_same_sequence(service: ChatService) -> None:
    members = [connect(service, f"c{i}", f"n{i}") for i in range(3)]
    for member in members:
        join(service, member, "lobby")
    for round_ in range(10):
        for member in members:
            say(service, member, "lobby", f"{member.nick}-{round_}")
    service.history.flush()
    sequences = [[(e["id"], e["text"]) for e in m.of_type("message")] for m in members]
    assert sequences[0] == sequences[1] == sequences[2]
    assert [i for i, _ in sequences[0]] == list(range(1, 31))


def test_join_while_others_send_has_no_gap_and_no_duplicate(service: ChatService) -> None:
    """Messages committed while the joiner reads history come exactly once."""
    sender = connect(service, "c1", "sender")
    join(service, sender, "lobby")
    for i in range(100):
        say(service, sender, "lobby", f"before {i}")
    service.history.flush()

    def keep_sending() -> None:
        for i in range(300):
            say(service, sender, "lobby", f"during {i}")
            gevent.sleep(0)

    background = gevent.spawn(keep_sending)
    joiners = []
    for n in range(5):
        gevent.sleep(0.002)
        joiner = connect(service, f"j{n}", f"joiner{n}")
        join(service, joiner, "lobby", since=50 + n)
        joiners.append((50 + n, joiner))
    background.join(timeout=scaled(10))
    service.history.flush()
    last = service.history.last_id("lobby")
    for since, joiner in joiners:
        (joined,) = joiner.of_type("joined")
        ids = [m["id"] for m in joined["history"]] + [m["id"] for m in joiner.of_type("message")]
        assert ids == list(range(since + 1, last + 1))


def test_messages_of_a_new_epoch_reset_every_member_once_and_are_delivered_not_dropped(
    service: ChatService,
) -> None:
    """What a node sees when the shared store restarted empty: ids from 1 again, under another epoch."""
    alice, bob = connect(service, "c1", "alice"), connect(service, "c2", "bob")
    join(service, alice, "lobby")
    join(service, bob, "lobby")
    for i in range(5):
        say(service, alice, "lobby", f"old {i}")
    service.history.flush()
    (joined,) = alice.of_type("joined")
    old_epoch = joined["epoch"]
    assert old_epoch == service.epoch("lobby")

    for message_id in (1, 2, 2, 3):  # the broker delivers the new run's messages (one of them twice)
        text = f'{{"type":"message","room":"lobby","id":{message_id},"from":"x","text":"new {message_id}","ts":1}}'
        service.broker.publish("lobby", Outgoing(text.encode()), message_id=message_id, epoch="other-epoch")

    for member in (alice, bob):
        after_old = member.received[[e.get("text") for e in member.received].index("old 4") + 1 :]
        assert after_old == [
            {"type": "reset", "room": "lobby", "epoch": "other-epoch"},
            *(
                {"type": "message", "room": "lobby", "id": i, "from": "x", "text": f"new {i}", "ts": 1}
                for i in (1, 2, 3)
            ),
        ]


def test_join_with_a_since_of_another_epoch_gets_the_last_fifty_and_reset(service: ChatService) -> None:
    alice = connect(service, "c1", "alice")
    join(service, alice, "lobby")
    for i in range(60):
        say(service, alice, "lobby", str(i))
    service.history.flush()
    current = service.epoch("lobby")
    for request, reset in [
        ({"since": 55, "epoch": current}, False),
        ({"since": 55}, False),  # no epoch: the since is taken as it is
        ({"since": 55, "epoch": "an-old-epoch"}, True),
        ({"since": 61}, True),  # beyond the last id: only another epoch explains it
    ]:
        member = connect(service, f"m-{request}", "member")
        service.handle(member, json.dumps({"type": "join", "room": "lobby", **request}))
        (joined,) = member.of_type("joined")
        assert joined["epoch"] == current
        assert joined.get("reset", False) is reset, (request, joined)
        expected = [str(i) for i in range(10, 60)] if reset else ["55", "56", "57", "58", "59"]
        assert [m["text"] for m in joined["history"]] == expected
    bad = connect(service, "c9", "bad")
    service.handle(bad, json.dumps({"type": "join", "room": "lobby", "since": 3, "epoch": 7, "ref": "e"}))
    assert bad.of_type("error") == [
        {
            "type": "error",
            "code": "invalid_field",
            "message": "epoch must be a string of at most 64 characters",
            "ref": "e",
        }
    ]


def test_typing_reaches_the_others_at_most_once_every_3_seconds_and_is_never_stored(service: ChatService) -> None:
    alice, bob = connect(service, "c1", "alice"), connect(service, "c2", "bob")
    join(service, alice, "lobby")
    join(service, bob, "lobby")
    for _ in range(5):
        service.handle(alice, json.dumps({"type": "typing", "room": "lobby"}))
    assert bob.of_type("typing") == [{"type": "typing", "room": "lobby", "nick": "alice"}]
    assert alice.of_type("typing") == [], "not to the one typing"
    service.handle(bob, json.dumps({"type": "typing", "room": "lobby"}))  # another nick: its own 3 seconds
    assert alice.of_type("typing") == [{"type": "typing", "room": "lobby", "nick": "bob"}]
    assert service.history.last_id("lobby") == 0
    carol = connect(service, "c3", "carol")
    service.handle(carol, json.dumps({"type": "typing", "room": "lobby", "ref": 9}))
    assert [(e["code"], e["ref"]) for e in carol.of_type("error")] == [("not_joined", 9)]


def test_a_say_retried_with_its_ref_is_stored_once_and_the_sender_gets_the_original(service: ChatService) -> None:
    alice, bob = connect(service, "c1", "alice"), connect(service, "c2", "bob")
    join(service, alice, "lobby")
    join(service, bob, "lobby")
    say(service, alice, "lobby", "hello", ref="r1")
    say(service, alice, "lobby", "hello", ref="r1")  # while the first is still being committed
    service.history.flush()
    say(service, alice, "lobby", "hello again?", ref="r1")  # once it is stored: the text does not matter
    say(service, alice, "lobby", "other", ref="r2")
    service.history.flush()
    assert [(m.id, m.text, m.ref) for m in service.history.recent("lobby")] == [(1, "hello", "r1"), (2, "other", "r2")]
    assert [(e["id"], e["text"], e["ref"]) for e in alice.of_type("message")] == [
        (1, "hello", "r1"),
        (1, "hello", "r1"),
        (1, "hello", "r1"),
        (2, "other", "r2"),
    ]
    assert [e["id"] for e in bob.of_type("message")] == [1, 2], "the others get it once"
    say(service, bob, "lobby", "hello", ref="r1")  # another nick's r1 is another message
    service.history.flush()
    assert bob.of_type("message")[-1]["id"] == 3


def test_a_retry_after_a_restart_within_5_minutes_is_not_stored_again(tmp_path: Path) -> None:
    first = ChatService(SQLiteHistory(str(tmp_path / "chat.db")), LocalBroker())
    first.start()
    alice = connect(first, "c1", "alice")
    join(first, alice, "lobby")
    say(first, alice, "lobby", "sent just before the crash", ref=7)
    first.history.flush()
    first.close()

    second = ChatService(SQLiteHistory(str(tmp_path / "chat.db")), LocalBroker())
    second.start()
    try:
        again = connect(second, "c9", "alice")
        join(second, again, "lobby", since=0)
        say(second, again, "lobby", "sent just before the crash", ref=7)
        second.history.flush()
        assert [e["id"] for e in again.of_type("message")] == [1]
        assert second.history.last_id("lobby") == 1
    finally:
        second.close()


def test_join_without_since_gets_the_last_fifty(service: ChatService) -> None:
    alice = connect(service, "c1", "alice")
    join(service, alice, "lobby")
    for i in range(60):
        say(service, alice, "lobby", str(i))
    service.history.flush()
    bob = connect(service, "c2", "bob")
    join(service, bob, "lobby")
    (joined,) = bob.of_type("joined")
    assert [m["id"] for m in joined["history"]] == list(range(11, 61))
    assert joined["members"] == ["alice", "bob"]


def test_since_with_more_than_a_thousand_missed_gives_the_newest_and_says_so(service: ChatService) -> None:
    alice = connect(service, "c1", "alice")
    join(service, alice, "lobby")
    for i in range(1100):
        say(service, alice, "lobby", str(i))
    service.history.flush()
    bob = connect(service, "c2", "bob")
    join(service, bob, "lobby", since=10)
    (joined,) = bob.of_type("joined")
    assert [m["id"] for m in joined["history"]] == list(range(101, 1101))
    assert joined["truncated"] is True


def test_presence_goes_to_the_others_once_per_nick(service: ChatService) -> None:
    alice = connect(service, "c1", "alice")
    join(service, alice, "lobby")
    bob_tab1 = connect(service, "c2", "bob")
    bob_tab2 = RecordingMember("c3", "bob", session_id=bob_tab1.session_id)
    service.connect(bob_tab2)
    join(service, bob_tab1, "lobby")
    join(service, bob_tab2, "lobby")
    assert alice.of_type("presence") == [
        {"type": "presence", "room": "lobby", "nick": "bob", "event": "join", "count": 2}
    ]
    assert bob_tab1.of_type("presence") == []
    service.disconnect(bob_tab1)
    assert len(alice.of_type("presence")) == 1  # bob is still there through his other tab
    service.disconnect(bob_tab2)
    assert alice.of_type("presence")[-1] == {
        "type": "presence",
        "room": "lobby",
        "nick": "bob",
        "event": "leave",
        "count": 1,
    }


def test_leave_stops_delivery_and_answers_left(service: ChatService) -> None:
    alice, bob = connect(service, "c1", "alice"), connect(service, "c2", "bob")
    join(service, alice, "lobby")
    join(service, bob, "lobby")
    service.handle(bob, '{"type": "leave", "room": "lobby"}')
    assert bob.received[-1] == {"type": "left", "room": "lobby"}
    say(service, alice, "lobby", "after bob left")
    service.history.flush()
    assert bob.of_type("message") == []
    assert alice.of_type("presence")[-1]["event"] == "leave"


@pytest.mark.parametrize(
    ("command", "code"),
    [
        ("not json", "invalid_json"),
        ("[1, 2]", "invalid_json"),
        ('{"room": "lobby"}', "unknown_type"),
        ('{"type": "shout"}', "unknown_type"),
        ('{"type": "say", "text": "x"}', "missing_field"),
        ('{"type": "say", "room": "lobby"}', "missing_field"),
        ('{"type": "say", "room": "lobby", "text": 5}', "invalid_field"),
        ('{"type": "join", "room": "lobby", "since": -1}', "invalid_field"),
        ('{"type": "join", "room": "lobby", "since": true}', "invalid_field"),
        ('{"type": "join", "room": "no spaces"}', "invalid_room"),
        ('{"type": "join", "room": ""}', "invalid_room"),
        ('{"type": "say", "room": "lobby", "text": ""}', "empty_text"),
        ('{"type": "say", "room": "lobby", "text": "' + "x" * 4001 + '"}', "text_too_long"),
        ('{"type": "say", "room": "elsewhere", "text": "x"}', "not_joined"),
        ('{"type": "leave", "room": "elsewhere"}', "not_joined"),
        ('{"type": "join", "room": "lobby"}', "already_joined"),
    ],
)
def test_bad_input_gets_an_error_and_changes_nothing(service: ChatService, command: str, code: str) -> None:
    alice = connect(service, "c1", "alice")
    join(service, alice, "lobby")
    before = service.room_list()
    service.handle(alice, command)
    error = alice.received[-1]
    assert error["type"] == "error"
    assert error["code"] == code
    assert error["message"]
    assert service.room_list() == before


def test_errors_carry_the_ref_of_the_request(service: ChatService) -> None:
    alice = connect(service, "c1", "alice")
    service.handle(alice, '{"type": "say", "room": "lobby", "text": "x", "ref": "m7"}')
    assert alice.received[-1] == {"type": "error", "code": "not_joined", "message": "join the room first", "ref": "m7"}


def test_rooms_exist_while_they_have_members_or_history(service: ChatService) -> None:
    alice = connect(service, "c1", "alice")
    join(service, alice, "empty")
    join(service, alice, "talked")
    say(service, alice, "talked", "hello")
    service.history.flush()
    assert service.room_list() == [{"name": "empty", "members": 1}, {"name": "talked", "members": 1}]
    service.disconnect(alice)
    assert service.room_list() == [{"name": "talked", "members": 0}]


def test_a_nick_is_taken_only_by_another_connected_session(service: ChatService) -> None:
    connect(service, "c1", "alice")
    assert service.nick_taken(Identity("alice", "someone-else"))
    assert not service.nick_taken(Identity("alice", "s-alice"))
    assert not service.nick_taken(Identity("bob", "someone-else"))


def test_a_since_after_an_edit_or_a_deletion_replays_the_new_version_never_the_encoded_old_one(
    service: ChatService,
) -> None:
    alice = connect(service, "c1", "alice")
    join(service, alice, "lobby")
    for text in ("teh draft", "a regrettable line", "fine"):
        say(service, alice, "lobby", text)
    service.history.flush()
    before = connect(service, "c2", "bob")
    join(service, before, "lobby", since=0)  # the three are encoded and kept for the next replay
    assert [m["text"] for m in before.of_type("joined")[0]["history"]] == ["teh draft", "a regrettable line", "fine"]

    service.handle(alice, json.dumps({"type": "edit", "room": "lobby", "id": 1, "text": "the draft"}))
    service.handle(alice, json.dumps({"type": "delete", "room": "lobby", "id": 2}))
    service.history.flush()
    after = connect(service, "c3", "carol")
    join(service, after, "lobby", since=0)
    history = after.of_type("joined")[0]["history"]
    messages = {m["id"]: m for m in history if m["type"] == "message"}
    assert messages[1]["text"] == "the draft" and "edited" in messages[1]
    assert messages[2]["text"] == "" and messages[2]["deleted"] is True
    assert messages[3]["text"] == "fine"
    assert [(m["action"], m["message"]["id"]) for m in history if m["type"] == "update"] == [("edit", 1), ("delete", 2)]
    assert "teh draft" not in json.dumps(history) and "regrettable" not in json.dumps(history)


def test_clients_coming_back_with_since_get_the_same_replay_encoded_once(
    service: ChatService, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.chat import encoded

    alice = connect(service, "c1", "alice")
    join(service, alice, "lobby")
    for i in range(300):
        say(service, alice, "lobby", f"m{i}")
    service.history.flush()
    encoded_ids: list[int] = []
    message_json = encoded.message_json
    monkeypatch.setattr(encoded, "message_json", lambda m: encoded_ids.append(m.id) or message_json(m))
    reads = service.history.reads  # type: ignore[attr-defined]
    joiners = [connect(service, f"j{i}", f"joiner{i}") for i in range(3)]
    for joiner in joiners:
        join(service, joiner, "lobby", since=0)
    replays = [joiner.of_type("joined")[0]["history"] for joiner in joiners]
    assert replays[0] == replays[1] == replays[2]
    assert [m["id"] for m in replays[0]] == list(range(1, 301))
    assert encoded_ids == list(range(1, 301)), "encoded for the first replay only"
    assert service.history.reads == reads, "answered from memory: no trip to the reader thread"
    say(service, alice, "lobby", "one more")  # the room is replayed lately: its broadcast's JSON is kept
    service.history.flush()
    late = connect(service, "j9", "latecomer")
    join(service, late, "lobby", since=0)
    assert late.of_type("joined")[0]["history"][-1]["text"] == "one more"
    assert encoded_ids == list(range(1, 301))
