"""The chat process's life: kill -9 and restart, SIGTERM, another database, several workers.

Every test starts its own gunicorn, with the settings it needs, and stops it
(by PID) at the end. A connection's own life (slow readers, keepalive, idle
clients, handshake deadlines) is tested in the test's process, in
tests/server/test_connections.py.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support.clients import (
    connect,
    join,
    read_until_closed,
    say,
    send_json,
)
from tests.support.gunicorn import ChatServer, server_environment, spawn_gunicorn
from tests.support.http import get_json
from tests.support.names import fresh_nick, fresh_room
from tests.support.processes import kill_worker, process_gone, wait_gone
from tests.support.timeouts import scaled

pytestmark = [pytest.mark.timeout(scaled(90)), pytest.mark.slow]

StartChat = Callable[..., ChatServer]


def test_kill_9_then_restart_loses_no_acknowledged_message(start_chat: StartChat, tmp_path: Path) -> None:
    first = start_chat(tmp_path)
    room = fresh_room("durable")
    ws, _ = connect(first, fresh_nick("writer"))
    with ws:
        join(ws, room)
        acks = [say(ws, room, f"durable {i}") for i in range(40)]
        for i in range(20):  # in flight when the server dies: kept or not, but never half
            send_json(ws, {"type": "say", "room": room, "text": f"in flight {i}", "ref": f"f{i}"})
        first.stop(signal.SIGKILL, timeout=scaled(10))
    assert process_gone(first.master_pid)
    assert process_gone(first.worker_pid)

    second = start_chat(tmp_path, db_path=first.db_path)
    status, body = get_json(second, f"/api/rooms/{room}/messages?since=0&limit=1000")
    assert status == 200, body
    stored = {m["id"]: m for m in body["messages"]}
    for ack in acks:
        assert ack["id"] in stored, f"acknowledged message {ack['id']} lost"
        assert (stored[ack["id"]]["from"], stored[ack["id"]]["text"], stored[ack["id"]]["ts"]) == (
            ack["from"],
            ack["text"],
            ack["ts"],
        )
    ids = sorted(stored)
    assert ids == list(range(ids[0], ids[0] + len(ids))), "no holes in the stored ids"
    assert all(m["text"].startswith(("durable ", "in flight ")) for m in stored.values())

    ws, _ = connect(second, fresh_nick("reader"))
    with ws:
        history = join(ws, room, since=0)["history"]
        assert [m["id"] for m in history] == ids
        assert say(ws, room, "after the restart")["id"] == ids[-1] + 1


def test_a_since_from_another_database_gets_a_reset_not_the_new_databases_messages(
    start_chat: StartChat, tmp_path: Path
) -> None:
    first = start_chat(tmp_path / "first")
    room = fresh_room()
    ws, _ = connect(first, fresh_nick("mobile"))
    with ws:
        epoch = join(ws, room)["epoch"]
        assert isinstance(epoch, str) and epoch
        last_seen = [say(ws, room, f"old {i}") for i in range(5)][-1]["id"]
    first.stop()

    same = start_chat(tmp_path / "same", db_path=first.db_path)  # the same database: the same epoch
    ws, _ = connect(same, fresh_nick("mobile"))
    with ws:
        joined = join(ws, room, since=3, epoch=epoch)
        assert (joined["epoch"], [m["text"] for m in joined["history"]]) == (epoch, ["old 3", "old 4"])
        assert "reset" not in joined
    same.stop()

    # The database is replaced (deleted, a backup restored …): its ids count from 1 again.
    other = start_chat(tmp_path / "other")
    writer, _ = connect(other, fresh_nick("writer"))
    with writer:
        new_epoch = join(writer, room)["epoch"]
        assert new_epoch != epoch
        texts = [say(writer, room, f"new {i}")["text"] for i in range(8)]  # past the client's since
        for request in ({"since": last_seen, "epoch": epoch}, {"since": 40}):  # with the old epoch; from the future
            ws, _ = connect(other, fresh_nick("mobile"))
            with ws:
                joined = join(ws, room, **request)
                assert joined["reset"] is True, joined
                assert joined["epoch"] == new_epoch
                assert [m["text"] for m in joined["history"]] == texts, "the last 50, as for a first join"
                texts.append(say(ws, room, "hello again")["text"])
        assert say(writer, room, "still counting")["id"] == len(texts) + 1


def test_sigterm_closes_clients_with_1012_and_the_master_exits_in_time(start_chat: StartChat, tmp_path: Path) -> None:
    chat = start_chat(tmp_path)
    room = fresh_room()
    in_room, _ = connect(chat, fresh_nick("a"))
    idle, _ = connect(chat, fresh_nick("b"))
    with in_room, idle:
        join(in_room, room)
        started = time.monotonic()
        chat.process.send_signal(signal.SIGTERM)
        with ThreadPoolExecutor(2) as pool:
            closes = list(pool.map(lambda ws: read_until_closed(ws, scaled(12)), (in_room, idle)))
    for closed in closes:
        assert closed.rcvd is not None, f"no close frame: {closed!r}"
        assert closed.rcvd.code == 1012  # CHAT_DRAIN_SECONDS=0: all at once (tests/chat/test_drain.py spreads it)
        assert re.fullmatch(r"restarting retry=\d+", closed.rcvd.reason), closed.rcvd.reason
    returncode = chat.process.wait(timeout=scaled(15))
    elapsed = time.monotonic() - started
    assert elapsed < scaled(10), f"the master took {elapsed:.1f} s (graceful timeout: 10 s)"
    assert returncode == 0, chat.logs()
    assert wait_gone(chat.worker_pid, scaled(5))


def test_more_than_one_worker_without_redis_refuses_to_start(tmp_path: Path) -> None:
    log_path = tmp_path / "gunicorn.log"
    process = spawn_gunicorn(log_path, server_environment(tmp_path / "chat.db"), "-w", "2")
    try:
        returncode = process.wait(timeout=scaled(15))
    except subprocess.TimeoutExpired:
        returncode = None
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=scaled(15))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=scaled(5))
        output = log_path.read_text(errors="replace")
        for line in output.splitlines():
            if "Booting worker with pid: " in line:
                pid = int(line.rsplit(":", 1)[1].split()[0])
                if not wait_gone(pid, scaled(5)):
                    kill_worker(pid)
    assert returncode is not None, f"gunicorn with 2 workers and no Redis kept running:\n{output}"
    assert returncode != 0, output
    assert "redis" in output.lower(), output
