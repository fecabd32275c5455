"""The drain on SIGTERM (docs/protocol.md §5): 1012 with a retry hint, spread over ``CHAT_DRAIN_SECONDS``.

A real gunicorn, outside clients (``websockets``) that keep talking while
the server drains: each is closed at its own moment with its own hint,
what it said until then was delivered to those still there and is in the
history the next process opens.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection

from tests.support.clients import connect, join, recv_json, send_json
from tests.support.gunicorn import ChatServer, gunicorn_command, server_environment
from tests.support.http import get_json
from tests.support.names import fresh_nick, fresh_room
from tests.support.processes import REPO_ROOT, wait_gone
from tests.support.timeouts import scaled

pytestmark = [pytest.mark.timeout(scaled(90)), pytest.mark.slow]

StartChat = Callable[..., ChatServer]
#: docs/protocol.md §5: the reason of a 1012.
RESTART_REASON = re.compile(r"restarting retry=(\d+)")
DRAIN = 2.0
CLIENTS = 20


@dataclass
class Talker:
    """One client that says something every 100 ms until the server closes it, and what it saw."""

    ws: ClientConnection
    name: str
    #: (id, text, when the ack came) of each of its own messages the server acknowledged
    acked: list[tuple[int, str, float]] = field(default_factory=list)
    #: message id -> when it arrived, everyone's
    received: dict[int, float] = field(default_factory=dict)
    closed_at: float = 0.0
    code: int | None = None
    reason: str = ""

    def talk(self, room: str) -> Talker:
        sent = 0
        try:
            while True:
                ref = f"{self.name}-{sent}"
                text = f"{self.name} says {sent}"
                send_json(self.ws, {"type": "say", "room": room, "text": text, "ref": ref})
                sent += 1
                deadline = time.monotonic() + 0.1
                while (remaining := deadline - time.monotonic()) > 0:
                    try:
                        message = recv_json(self.ws, remaining)
                    except TimeoutError:
                        break
                    if message.get("type") != "message":
                        continue
                    self.received[message["id"]] = time.monotonic()
                    if message.get("ref", "").startswith(f"{self.name}-"):
                        self.acked.append((message["id"], message["text"], time.monotonic()))
        except ConnectionClosed as closed:
            self.closed_at = time.monotonic()
            if closed.rcvd is not None:
                self.code, self.reason = closed.rcvd.code, closed.rcvd.reason
        return self


def test_sigterm_closes_each_client_with_1012_at_its_own_moment_and_loses_nothing(
    start_chat: StartChat, tmp_path: Path
) -> None:
    chat = start_chat(tmp_path, CHAT_DRAIN_SECONDS=DRAIN)
    room = fresh_room()
    talkers = []
    for number in range(CLIENTS):
        ws, _ = connect(chat, fresh_nick(f"t{number}"))
        join(ws, room)
        talkers.append(Talker(ws, f"t{number}"))
    with ThreadPoolExecutor(CLIENTS) as pool:
        done = [pool.submit(talker.talk, room) for talker in talkers]
        time.sleep(0.5)  # everyone talking
        signalled = time.monotonic()
        chat.process.send_signal(signal.SIGTERM)
        for future in done:
            future.result(timeout=scaled(DRAIN + 15))
    for talker in talkers:
        talker.ws.close()
    assert chat.process.wait(timeout=scaled(20)) == 0, chat.logs()
    assert wait_gone(chat.worker_pid, scaled(5))

    # every client: 1012 with a hint it can parse, each its own
    hints = []
    for talker in talkers:
        assert talker.code == 1012, (talker.code, talker.reason)
        hint = RESTART_REASON.fullmatch(talker.reason)
        assert hint, talker.reason
        hints.append(int(hint.group(1)))
    assert all(1000 <= ms <= 5000 for ms in hints), hints
    assert len(set(hints)) > CLIENTS // 2, f"the hints are not jittered: {hints}"

    # spread over the window, not all at once, and all within it (and a margin)
    moments = sorted(talker.closed_at - signalled for talker in talkers)
    assert moments[-1] < DRAIN + scaled(1.5), moments
    assert moments[-1] - moments[0] > DRAIN / 2, f"closed within {moments[-1] - moments[0]:.3f} s: {moments}"
    buckets = [int(moment / 0.1) for moment in moments]
    busiest = max(buckets.count(bucket) for bucket in buckets)
    assert busiest <= CLIENTS // 4, f"{busiest} of {CLIENTS} closed within one 100 ms: {moments}"

    # what was said during the drain was delivered to those still there...
    during = [(id_, at) for talker in talkers for id_, _, at in talker.acked if at > signalled]
    assert len(during) > CLIENTS, "the clients kept talking while the server drained"
    for id_, at in during:
        for talker in talkers:
            if talker.closed_at > at + 0.2:
                assert id_ in talker.received, f"message {id_} acknowledged but not delivered to {talker.name}"

    # ...and every acknowledged message is in the history the next process opens: 0 lost
    second = start_chat(tmp_path, db_path=chat.db_path)
    stored: dict[int, str] = {}
    since = 0
    while True:
        status, body = get_json(second, f"/api/rooms/{room}/messages?since={since}&limit=1000")
        assert status == 200, body
        stored.update({m["id"]: m["text"] for m in body["messages"]})
        if len(body["messages"]) < 1000:
            break
        since = body["messages"][-1]["id"]
    lost = [(id_, text) for talker in talkers for id_, text, _ in talker.acked if stored.get(id_) != text]
    assert not lost, f"{len(lost)} acknowledged messages lost, e.g. {lost[:3]}"


def test_without_clients_the_drain_window_is_not_waited_for(start_chat: StartChat, tmp_path: Path) -> None:
    chat = start_chat(tmp_path, CHAT_DRAIN_SECONDS=30)
    started = time.monotonic()
    assert chat.stop(signal.SIGTERM) == 0, chat.logs()
    assert time.monotonic() - started < scaled(10)


def test_gunicorn_graceful_timeout_follows_the_drain_window(tmp_path: Path) -> None:
    env = server_environment(tmp_path / "chat.db", CHAT_DRAIN_SECONDS="25.5")
    printed = subprocess.run(
        [*gunicorn_command(), "-c", "gunicorn.conf.py", "wsgi:app", "--print-config"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=scaled(30),
        check=True,
    ).stdout
    settings = dict(re.findall(r"^(\w+)\s+= (.*)$", printed, re.MULTILINE))
    assert settings["graceful_timeout"] == "36", "25.5 s of drain, then 10 s to finish, in whole seconds"
    assert settings["timeout"] == "41", "the master must not take a draining worker for stuck"
