"""The room directory: RoomSettings' pure helpers, and both stores against a real SQLite file and a real Redis."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import gevent
import pytest

from app.chat.directory import Directory, ModAction, RoomSettings
from app.chat.redis_directory import RedisDirectory
from app.chat.redis_link import RedisLink
from app.chat.sqlite_directory import SQLiteDirectory
from tests.support.redis import SHARED_REDIS, shared_prefix
from tests.support.timeouts import scaled

#: A factory of stores over one storage: each call a new instance (a new process, for Redis), opened.
Stores = Callable[..., Directory]


def private_room(name: str = "p.3fa2", owner: str = "Alice", *members: str) -> RoomSettings:
    return RoomSettings(name, owner, True, title="Plans", members=(owner, *members), created=1_700_000_000_000)


# -- the pure helpers ---------------------------------------------------------------------


def test_members_owner_and_moderators_are_recognized_in_any_case() -> None:
    room = RoomSettings("team", "Alice", False, moderators=("Bob",), members=("Alice", "Carol"))
    assert room.is_owner("ALICE") and not room.is_owner("bob")
    assert room.is_member("carol") and room.is_member("alice") and not room.is_member("Bob")
    assert room.is_moderator("alice") and room.is_moderator("BOB") and not room.is_moderator("Carol")


def test_a_direct_conversation_has_no_owner_and_only_its_two_members() -> None:
    dm = RoomSettings("dm.9c1e", None, True, members=("Alice", "Bob"), dm=("Alice", "Bob"))
    assert not dm.is_owner("Alice") and not dm.is_moderator("Alice")
    assert dm.is_member("bob") and not dm.is_member("Carol")


def test_members_are_added_once_whatever_their_case_and_kept_sorted_by_key() -> None:
    room = private_room("p.1", "bob").with_member("Carol").with_member("alice").with_member("ALICE")
    assert room.members == ("alice", "bob", "Carol")


def test_a_removed_member_loses_the_moderator_role_but_the_owner_cannot_be_removed() -> None:
    room = private_room("p.1", "Alice", "Bob").with_moderator("Bob", True)
    removed = room.without_member("BOB")
    assert removed.members == ("Alice",) and removed.moderators == ()
    assert room.without_member("alice") is room


def test_moderators_are_given_and_taken_by_key_and_the_owner_is_never_listed() -> None:
    room = RoomSettings("team", "Alice", False).with_moderator("bob", True).with_moderator("Carol", True)
    assert room.moderators == ("bob", "Carol")
    assert room.with_moderator("BOB", False).moderators == ("Carol",)
    assert room.with_moderator("alice", True).moderators == ("bob", "Carol")


def test_a_mute_holds_until_its_end_and_an_end_in_the_past_unmutes() -> None:
    room = RoomSettings("team", "Alice", False).with_mute("Mallory", 1600.0, now=1000.0)
    assert room.mutes == (("mallory", 1600.0),)
    assert room.muted_until("MALLORY", 1000.0) == 1600.0
    assert room.muted_until("mallory", 1600.0) == 0.0
    assert room.muted_until("Bob", 1000.0) == 0.0
    assert room.with_mute("mallory", 1000.0, now=1000.0).mutes == ()


def test_a_new_mute_drops_the_expired_ones_and_replaces_the_nicks_earlier_mute() -> None:
    room = RoomSettings("team", "Alice", False, mutes=(("eve", 500.0), ("mallory", 1600.0)))
    assert room.with_mute("Mallory", 2000.0, now=1000.0).mutes == (("mallory", 2000.0),)
    assert room.with_mute("zed", 1100.0, now=1000.0).mutes == (("mallory", 1600.0), ("zed", 1100.0))


def test_slow_mode_is_set_and_turned_off_and_refuses_a_negative_delay() -> None:
    room = RoomSettings("team", "Alice", False).with_slow(30)
    assert room.slow == 30 and room.with_slow(0).slow == 0
    with pytest.raises(ValueError):
        room.with_slow(-1)


def test_changes_build_new_settings_and_leave_the_old_ones_as_they_were() -> None:
    room = private_room()
    changed = room.with_member("Bob").with_slow(5)
    assert room.members == ("Alice",) and room.slow == 0
    assert changed != room
    with pytest.raises(AttributeError):
        room.slow = 5  # type: ignore[misc]


def test_settings_survive_json_compact_and_whole() -> None:
    room = (
        private_room("p.3fa2", "Ålice", "Bob").with_moderator("Bob", True).with_mute("eve", 2e9, now=1e9).with_slow(10)
    )
    text = room.to_json()
    assert " " not in text.replace("Plans", "")
    assert RoomSettings.from_json(text) == room
    assert RoomSettings.from_json(text.encode()) == room
    dm = RoomSettings("dm.9c1e", None, True, members=("Alice", "Bob"), dm=("Alice", "Bob"))
    assert RoomSettings.from_json(dm.to_json()) == dm


def test_settings_json_ignores_fields_a_newer_process_added() -> None:
    text = '{"name":"team","owner":"Alice","private":false,"colour":"teal"}'
    assert RoomSettings.from_json(text) == RoomSettings("team", "Alice", False)


def test_mod_actions_survive_json() -> None:
    action = ModAction(1_700_000_000_000, "team", "Alice", "mute", "mallory", "600 s")
    assert ModAction.from_json(action.to_json()) == action


# -- the stores -------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "redis"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stores]:
    """New instances over one storage: a SQLite file, or a key prefix of the shared Redis."""
    opened: list[Directory] = []
    links: list[RedisLink] = []
    with shared_prefix() as prefix:

        def make(**options: object) -> Directory:
            store: Directory
            if request.param == "sqlite":
                store = SQLiteDirectory(str(tmp_path / "chat.db"), **options)  # type: ignore[arg-type]
            else:
                links.append(RedisLink(SHARED_REDIS, prefix))
                store = RedisDirectory(links[-1], **options)  # type: ignore[arg-type]
            store.open()
            opened.append(store)
            return store

        with gevent.Timeout(scaled(30)):
            yield make
        for store in opened:
            store.close()
        for link in links:
            link.close()


@pytest.fixture
def directory(stores: Stores) -> Directory:
    return stores()


def test_created_settings_are_read_back(directory: Directory) -> None:
    room = private_room("p.3fa2", "Alice", "Bob")
    assert directory.get("p.3fa2") is None
    assert directory.create(room)
    assert directory.get("p.3fa2") == room


def test_creating_a_room_that_has_settings_writes_nothing(directory: Directory) -> None:
    first = RoomSettings("team", "Alice", False, title="Team")
    assert directory.create(first)
    assert not directory.create(RoomSettings("team", "Mallory", True, members=("Mallory",)))
    assert directory.get("team") == first
    assert directory.rooms_of("Mallory") == []


def test_an_update_writes_what_the_change_makes_of_the_current_settings(directory: Directory) -> None:
    directory.create(private_room("p.1"))
    updated = directory.update("p.1", lambda room: room.with_member("Bob").with_slow(5))
    assert updated is not None and updated.members == ("Alice", "Bob") and updated.slow == 5
    assert directory.get("p.1") == updated


def test_an_update_of_a_room_without_settings_is_none_and_creates_nothing(directory: Directory) -> None:
    assert directory.update("lobby", lambda room: room.with_slow(5)) is None
    assert directory.get("lobby") is None


def test_concurrent_updates_of_one_room_all_land(stores: Stores) -> None:
    """Two writers (two processes for Redis) adding members at once: none of the additions is lost."""
    first, second = stores(), stores()
    first.create(private_room("p.busy"))
    if isinstance(first, SQLiteDirectory):
        # One process: greenlets, each update yielding while it writes to the database's thread.
        jobs = [gevent.spawn(add_members, first, prefix) for prefix in ("a", "b")]
        gevent.joinall(jobs, raise_error=True)
    else:
        start = threading.Barrier(2)
        threads = [
            threading.Thread(target=add_members, args=(store, prefix, start))
            for store, prefix in ((first, "a"), (second, "b"))
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(scaled(30))
    room = first.get("p.busy")
    assert room is not None
    assert len(room.members) == 1 + 2 * 20
    assert {f"{prefix}{i}" for prefix in "ab" for i in range(20)} <= set(room.members)
    assert {r.name for r in first.rooms_of("b19")} == {"p.busy"}


def add_members(store: Directory, prefix: str, start: threading.Barrier | None = None) -> None:
    if start is not None:
        start.wait(scaled(10))
    for i in range(20):
        store.update("p.busy", lambda room, name=f"{prefix}{i}": room.with_member(name))  # type: ignore[misc]


def test_rooms_of_finds_private_rooms_by_any_case_of_the_name(directory: Directory) -> None:
    directory.create(private_room("p.2", "Alice", "Bob"))
    directory.create(private_room("p.1", "Carol", "bob"))
    directory.create(RoomSettings("dm.9c1e", None, True, members=("Alice", "Bob"), dm=("Alice", "Bob")))
    directory.create(RoomSettings("team", "Bob", False))  # public: not a room Bob is a member of
    assert [room.name for room in directory.rooms_of("BOB")] == ["dm.9c1e", "p.1", "p.2"]
    assert [room.name for room in directory.rooms_of("alice")] == ["dm.9c1e", "p.2"]
    assert directory.rooms_of("Nobody") == []


def test_rooms_of_drops_a_room_once_the_member_is_removed(directory: Directory) -> None:
    directory.create(private_room("p.1", "Alice", "Bob"))
    directory.update("p.1", lambda room: room.without_member("bob"))
    assert directory.rooms_of("Bob") == []
    assert [room.name for room in directory.rooms_of("Alice")] == ["p.1"]


def test_a_deleted_room_has_no_settings_and_is_nobodys(directory: Directory) -> None:
    directory.create(private_room("p.1", "Alice", "Bob"))
    assert directory.delete("p.1")
    assert not directory.delete("p.1")
    assert directory.get("p.1") is None
    assert directory.rooms_of("bob") == []


def test_settings_outlive_the_instance_that_wrote_them(stores: Stores) -> None:
    """SQLite: a restart reads them from the file; Redis: every process sees them."""
    first = stores()
    first.create(private_room("p.1", "Alice", "Bob"))
    updated = first.update("p.1", lambda room: room.with_moderator("Bob", True))
    first.close()
    second = stores()
    assert second.get("p.1") == updated
    assert [room.name for room in second.rooms_of("BOB")] == ["p.1"]


def test_mutes_written_through_the_store_expire_on_their_own(directory: Directory) -> None:
    directory.create(RoomSettings("team", "Alice", False))
    now = time.time()
    room = directory.update("team", lambda room: room.with_mute("Mallory", now + 600, now=now))
    assert room is not None and room.muted_until("mallory", now) == now + 600
    stored = directory.get("team")
    assert stored is not None
    assert stored.muted_until("MALLORY", now + 599) == now + 600
    assert stored.muted_until("mallory", now + 601) == 0.0


def test_slow_mode_lets_one_message_through_then_makes_the_next_wait(directory: Directory) -> None:
    assert directory.slow_wait("team", "bob", 1) == 0.0
    wait = directory.slow_wait("team", "bob", 1)
    assert 0 < wait <= 1
    assert directory.slow_wait("team", "carol", 1) == 0.0  # per user
    assert directory.slow_wait("other", "bob", 1) == 0.0  # and per room
    time.sleep(wait + 0.05)
    assert directory.slow_wait("team", "bob", 1) == 0.0
    assert directory.slow_wait("team", "bob", 0) == 0.0  # slow mode off: never a wait


def test_slow_mode_on_sqlite_times_the_wait_with_its_clock(tmp_path: Path) -> None:
    now = [1000.0]
    directory = SQLiteDirectory(str(tmp_path / "chat.db"), clock=lambda: now[0])
    directory.open()
    try:
        assert directory.slow_wait("team", "bob", 30) == 0.0
        now[0] += 10
        assert directory.slow_wait("team", "bob", 30) == 20.0
        now[0] += 20
        assert directory.slow_wait("team", "bob", 30) == 0.0
    finally:
        directory.close()


def test_slow_mode_on_redis_is_shared_by_every_process(prefix: str) -> None:
    links = [RedisLink(SHARED_REDIS, prefix) for _ in range(2)]
    try:
        first, second = (RedisDirectory(link) for link in links)
        assert first.slow_wait("team", "bob", 60) == 0.0
        assert 59 < second.slow_wait("team", "bob", 60) <= 60
    finally:
        for link in links:
            link.close()


def test_the_moderation_log_is_newest_first(directory: Directory) -> None:
    directory.record(ModAction(1, "team", "Alice", "create"))
    directory.record(ModAction(2, "team", "Alice", "mute", "mallory", "600 s"))
    directory.record(ModAction(3, "team", "admin", "slow", detail="10 s"))
    assert [action.ts for action in directory.actions()] == [3, 2, 1]
    assert directory.actions(limit=1) == [ModAction(3, "team", "admin", "slow", detail="10 s")]
    assert directory.actions()[1] == ModAction(2, "team", "Alice", "mute", "mallory", "600 s")


def test_the_moderation_log_keeps_only_the_last_actions(stores: Stores) -> None:
    directory = stores(keep_actions=5)
    for ts in range(1, 13):
        directory.record(ModAction(ts, "team", "Alice", "slow", detail=f"{ts} s"))
    assert [action.ts for action in directory.actions(limit=100)] == [12, 11, 10, 9, 8]
