"""A room's state machine (app/chat/rooms.py) against its own API: joining, delivery, floors, restarts.

The members record what they are sent; the events are the real encoders'.
"""

from __future__ import annotations

import json
from typing import Any

from app.chat import events
from app.chat.rooms import Room
from app.chat.store import StoredMessage


class Recorder:
    def __init__(self, conn_id: str) -> None:
        self.conn_id, self.nick, self.session_id = conn_id, conn_id, conn_id
        self.got: list[dict[str, Any]] = []

    def send(self, message: events.Outgoing) -> None:
        self.got.append(json.loads(message.data))

    def close(self, code: int, reason: str) -> None:
        pass

    def describe(self) -> dict[str, Any]:
        return {}

    def positions(self) -> list[tuple[str, Any]]:
        """What it got, as (type, id or epoch)."""
        return [(e["type"], e.get("id", e.get("epoch"))) for e in self.got]


def message(message_id: int) -> events.Outgoing:
    return events.message(StoredMessage("lobby", message_id, "ann", f"m{message_id}", 1))


def joined(epoch: str) -> events.Outgoing:
    return events.Outgoing.of({"type": "joined", "epoch": epoch})


def test_what_is_delivered_while_joining_follows_joined_past_the_read_and_nothing_twice() -> None:
    room, member = Room("lobby"), Recorder("c1")
    room.deliver(message(1), 1, epoch="e1")
    room.begin_join("c1")
    for i in (2, 3, 4):
        room.deliver(message(i), i, epoch="e1")
    room.deliver(events.system("hello", "lobby"))  # not a message: always passed on
    room.finish_join(member, joined("e1"), "e1", 3)  # its read held messages up to 3
    assert member.positions() == [("joined", "e1"), ("message", 4), ("system", None)]
    room.deliver(message(5), 5, epoch="e1")
    assert member.positions()[-1] == ("message", 5)


def test_a_read_ahead_of_this_process_sets_a_floor_the_late_messages_skip() -> None:
    room, early, joiner = Room("lobby"), Recorder("c1"), Recorder("c2")
    room.begin_join("c1")
    room.finish_join(early, joined("e1"), "e1", 0)
    room.begin_join("c2")
    room.finish_join(joiner, joined("e1"), "e1", 2)  # another process stored 1 and 2, on their way here
    for i in (1, 2, 3):
        room.deliver(message(i), i, epoch="e1")
    assert early.positions()[1:] == [("message", 1), ("message", 2), ("message", 3)]
    assert joiner.positions()[1:] == [("message", 3)]


def test_a_new_epoch_resets_every_member_once_then_numbers_from_one() -> None:
    room, member = Room("lobby"), Recorder("c1")
    room.begin_join("c1")
    room.finish_join(member, joined("e1"), "e1", 0)
    for i in (1, 2):
        room.deliver(message(i), i, epoch="e1")
    for i in (1, 2, 2):
        room.deliver(message(i), i, epoch="e2")
    assert member.positions()[1:] == [("message", 1), ("message", 2), ("reset", "e2"), ("message", 1), ("message", 2)]
    assert (room.epoch, room.last_id) == ("e2", 2)


def test_a_join_that_read_the_new_epoch_before_this_process_saw_it_gets_no_reset_and_no_repeat() -> None:
    room, old, joiner = Room("lobby"), Recorder("c1"), Recorder("c2")
    room.begin_join("c1")
    room.finish_join(old, joined("e1"), "e1", 0)
    room.deliver(message(7), 7, epoch="e1")
    room.begin_join("c2")
    room.finish_join(joiner, joined("e2"), "e2", 2)  # the store restarted: it read e2's 1 and 2
    for i in (1, 2, 3):
        room.deliver(message(i), i, epoch="e2")
    assert old.positions()[1:] == [("message", 7), ("reset", "e2"), ("message", 1), ("message", 2), ("message", 3)]
    assert joiner.positions() == [("joined", "e2"), ("message", 3)]


def test_a_restart_during_the_read_reaches_the_joiner_after_joined_with_the_new_messages() -> None:
    room, old, joiner = Room("lobby"), Recorder("c1"), Recorder("c2")
    room.begin_join("c1")
    room.finish_join(old, joined("e1"), "e1", 0)
    room.deliver(message(4), 4, epoch="e1")
    room.begin_join("c2")
    room.deliver(message(1), 1, epoch="e2")  # the store restarted while the joiner read e1's history
    room.finish_join(joiner, joined("e1"), "e1", 4)
    room.deliver(message(2), 2, epoch="e2")
    assert joiner.positions() == [("joined", "e1"), ("reset", "e2"), ("message", 1), ("message", 2)]


def test_an_aborted_join_keeps_nothing_and_an_empty_room_can_go() -> None:
    room = Room("lobby")
    room.begin_join("c1")
    assert not room.empty
    room.deliver(message(1), 1, epoch="e1")
    room.abort_join("c1")
    assert room.empty and not room.has_members
