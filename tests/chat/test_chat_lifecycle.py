"""The chat's life under stress and signals: slow readers, kill -9, SIGTERM, keepalive, deadlines, workers.

Every test starts its own server, with the settings it needs, and stops it
(by PID) at the end.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import websocket
from websocket import ABNF

from tests.support.clients import (
    Message,
    connect,
    is_message,
    is_presence,
    join,
    read_until_closed,
    recv_until,
    rooms,
    say,
    send_json,
)
from tests.support.gunicorn import ChatServer, server_environment, spawn_gunicorn
from tests.support.http import get_json, session
from tests.support.names import fresh_nick, fresh_room
from tests.support.processes import kill_worker, process_gone, wait_gone
from tests.support.raw import close_code, kernel_buffer_bound, open_raw_member, raw_frames_until
from tests.support.timeouts import scaled

pytestmark = [pytest.mark.timeout(scaled(90)), pytest.mark.slow]

StartChat = Callable[..., ChatServer]
TEXT, CLOSE, PING = 0x1, 0x8, 0x9


def test_slow_consumer_is_closed_while_the_others_receive_every_message_promptly(
    start_chat: StartChat, tmp_path: Path
) -> None:
    """A client that stops reading is closed (1008) once the server holds CHAT_SEND_BUFFER bytes for it.

    What the kernel buffers for the socket (its send buffer grows to
    ``tcp_wmem`` on loopback) comes on top, so the sender goes on in batches
    until it has sent more than all those buffers hold (or the slow client
    left); meanwhile a normal reader must get every batch promptly.
    """
    send_buffer = 65536
    chat = start_chat(tmp_path, CHAT_SEND_BUFFER=send_buffer)
    room = fresh_room()
    slow, slow_nick = open_raw_member(chat, room, rcvbuf=4096)  # from now on it does not read
    sender, _ = connect(chat, fresh_nick("sender"))
    reader, _ = connect(chat, fresh_nick("reader"))
    text, batch = "y" * 2000, 300
    most = (kernel_buffer_bound() + send_buffer + 1024 * 1024) // len(text) + batch
    sent, slow_left = 0, False
    with sender, reader:
        join(sender, room)
        join(reader, room)
        while not slow_left and sent < most:
            started = time.monotonic()
            for i in range(sent, sent + batch):
                send_json(sender, {"type": "say", "room": room, "text": f"{i:05d}{text}"})
            skipped: list[Message] = []
            deadline = started + scaled(5)
            received = [
                recv_until(reader, is_message(room), max(deadline - time.monotonic(), 0.001), skipped)
                for _ in range(batch)
            ]
            elapsed = time.monotonic() - started
            assert [m["text"][:5] for m in received] == [f"{i:05d}" for i in range(sent, sent + batch)]
            assert [m["id"] for m in received] == list(range(received[0]["id"], received[0]["id"] + batch))
            assert elapsed < scaled(5), f"the reader waited {elapsed:.1f} s for a batch of {batch}"
            sent += batch
            slow_left = any(is_presence(room, slow_nick, "leave")(m) for m in skipped)
        # the others are told once the server gave up on it (after at most its close timeout, 5 s)
        for ws in (reader, sender):
            assert recv_until(ws, is_presence(room, slow_nick, "leave"), scaled(15))["count"] == 2
        assert say(sender, room, "after the slow one")["text"] == "after the slow one"

    # what the slow client finally reads ends with EOF, after at most a close frame with 1008
    try:
        frames, closed = raw_frames_until(slow, CLOSE, scaled(20))
        if closed:
            assert close_code(frames[-1][1]) == 1008, frames[-1]
            assert slow.recv_frame(scaled(10)) is None, "the server closes TCP after its close frame"
        assert sum(len(payload) for _, payload in frames) < sent * len(text), "the slow client did not get it all"
    finally:
        slow.close()


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


def test_sigterm_closes_clients_with_1001_and_the_master_exits_in_time(start_chat: StartChat, tmp_path: Path) -> None:
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
        assert closed.rcvd.code == 1001
    returncode = chat.process.wait(timeout=scaled(15))
    elapsed = time.monotonic() - started
    assert elapsed < scaled(10), f"the master took {elapsed:.1f} s (graceful timeout: 10 s)"
    assert returncode == 0, chat.logs()
    assert wait_gone(chat.worker_pid, scaled(5))


def test_keepalive_keeps_answering_clients_and_closes_silent_ones_with_1011(
    start_chat: StartChat, tmp_path: Path
) -> None:
    chat = start_chat(tmp_path, CHAT_PING_INTERVAL=1, CHAT_PING_TIMEOUT=1)
    silent, _ = open_raw_member(chat, fresh_room())  # reads every frame, never sends a pong

    def watch_silent() -> tuple[list[tuple[int, bytes]], bool, float]:
        started = time.monotonic()
        frames, closed = raw_frames_until(silent, CLOSE, scaled(8))
        return frames, closed, time.monotonic() - started

    # websocket-client answers every ping it reads (RFC 6455 §5.5.2)
    url = session(chat, fresh_nick("polite"))["ws_url"]
    polite = websocket.create_connection(url, timeout=scaled(5), suppress_origin=True)
    try:
        assert json.loads(polite.recv())["type"] == "hello"
        with ThreadPoolExecutor(1) as pool:
            watcher = pool.submit(watch_silent)
            pings, started = 0, time.monotonic()
            while time.monotonic() - started < 4:
                opcode, _ = polite.recv_data(control_frame=True)
                assert opcode != ABNF.OPCODE_CLOSE, "the answering client was closed"
                pings += opcode == ABNF.OPCODE_PING
            frames, closed, elapsed = watcher.result(timeout=scaled(10))

        assert pings >= 2, f"{pings} pings in 4 s with CHAT_PING_INTERVAL=1"
        polite.send(json.dumps({"type": "rooms"}))
        while True:
            opcode, data = polite.recv_data(control_frame=True)
            if opcode == ABNF.OPCODE_TEXT:
                assert json.loads(data)["type"] == "rooms"
                break
    finally:
        polite.close(timeout=scaled(3))
        polite.shutdown()

    try:
        assert any(opcode == PING for opcode, _ in frames), "the silent client was never pinged"
        assert closed, f"no close frame for the silent client: {frames}"
        assert close_code(frames[-1][1]) == 1011
        assert elapsed < scaled(5), f"closed after {elapsed:.1f} s"
    finally:
        silent.close()


def read_to_eof(sock: socket.socket, timeout: float) -> bytes:
    """Everything the server sends until it closes, within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    data = b""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"still open after {timeout} s; got {data!r}")
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(4096)
        except ConnectionResetError:
            return data
        except TimeoutError:
            continue
        if not chunk:
            return data
        data += chunk


@pytest.mark.parametrize(
    "partial",
    [b"GET /ws?token=x HTTP/1.1\r\nHost: 127.0.0.1\r\n", b""],
    ids=["half-a-request", "nothing"],
)
def test_unfinished_handshake_is_answered_408_or_closed_after_the_timeout(
    start_chat: StartChat, tmp_path: Path, partial: bytes
) -> None:
    chat = start_chat(tmp_path, CHAT_HANDSHAKE_TIMEOUT=1)
    with socket.create_connection(("127.0.0.1", chat.ws_port), timeout=scaled(5)) as sock:
        started = time.monotonic()
        sock.sendall(partial)
        answer = read_to_eof(sock, scaled(3))
        elapsed = time.monotonic() - started
    assert answer == b"" or answer.startswith(b"HTTP/1.1 408"), answer
    assert 0.5 < elapsed < scaled(3), f"closed after {elapsed:.2f} s with a 1 s handshake timeout"

    ws, hello = connect(chat, fresh_nick())  # the server itself is fine
    with ws:
        assert hello["type"] == "hello"
        assert rooms(ws)["type"] == "rooms"


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
