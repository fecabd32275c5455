"""Faults against the real server: clients that vanish, go silent or flood; a SIGTERM under load.

Each test checks two things: everyone else goes on being served, and nothing
is kept for the clients that are gone (the admin's client count returns to
what it was, and the worker's memory does not grow with each round).
"""

from __future__ import annotations

import base64
import json
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path

from websockets.sync.client import ClientConnection

from tests.support.clients import connect, is_presence, join, recv_until, say, send_json
from tests.support.gunicorn import ChatServer, worker_rss
from tests.support.http import get_json, http_request, session
from tests.support.names import fresh_nick, fresh_room
from tests.support.raw import RawClient, handshake_request, kernel_buffer_bound
from tests.support.timeouts import scaled

StartChat = Callable[..., ChatServer]
PASSWORD = "fault-tests-admin"


def connected_clients(chat: ChatServer) -> int:
    credentials = base64.b64encode(f"admin:{PASSWORD}".encode()).decode()
    status, body, _ = http_request(chat.http + "/admin/api/rooms", headers={"Authorization": f"Basic {credentials}"})
    assert status == 200, body
    return int(body["totals"]["clients"])


def wait_for_clients(chat: ChatServer, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while (now := connected_clients(chat)) != count:
        assert time.monotonic() < deadline, f"{now} clients connected, expected {count}"
        time.sleep(0.1)


def abort(sock: socket.socket) -> None:
    """Close with a reset (SO_LINGER 0), as a crashed client's kernel would."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def vanish_round(chat: ChatServer, urls: list[str], count: int) -> None:
    """``count`` clients each vanish at another point: mid-handshake, mid-frame, mid-message."""
    for i in range(count):
        sock = socket.create_connection(("127.0.0.1", chat.ws_port), timeout=scaled(10))
        kind = i % 4
        if kind == 0:  # half a request head, then gone
            sock.sendall(handshake_request("/ws")[:40])
        elif kind == 1:  # a whole head without the blank line
            sock.sendall(handshake_request("/ws")[:-2])
        else:
            url = urls[i % len(urls)]
            sock.close()
            raw = RawClient.open(url)
            sock = raw.sock
            if kind == 2:  # two bytes of a frame header
                sock.sendall(b"\x81\xfe")
            else:  # a frame announcing 60 KB that sends 10
                sock.sendall(b"\x81\xfe" + struct.pack("!H", 60_000) + b"\x00" * 4 + b"x" * 10)
        (abort if i % 2 else socket.socket.close)(sock)


def test_clients_vanishing_mid_handshake_and_mid_frame_are_freed(start_chat: StartChat, tmp_path: Path) -> None:
    chat = start_chat(tmp_path, CHAT_ADMIN_PASSWORD=PASSWORD)
    room = fresh_room()
    ws, _ = connect(chat, fresh_nick("steady"))
    with ws:
        join(ws, room)
        urls = [session(chat, fresh_nick("ghost"))["ws_url"] for _ in range(8)]
        vanish_round(chat, urls, 200)  # warm up: allocator pools, caches
        wait_for_clients(chat, 1, scaled(15))
        before = worker_rss(chat)
        for _ in range(3):
            vanish_round(chat, urls, 200)
            assert say(ws, room, "still served")["text"] == "still served"
        wait_for_clients(chat, 1, scaled(15))
        growth = worker_rss(chat) - before
    assert growth < 2 * 1024 * 1024, f"the worker grew by {growth} bytes over 600 vanished clients"


def test_a_silent_client_is_found_by_keepalive_and_its_rooms_told(start_chat: StartChat, tmp_path: Path) -> None:
    chat = start_chat(tmp_path, CHAT_ADMIN_PASSWORD=PASSWORD, CHAT_PING_INTERVAL=0.5, CHAT_PING_TIMEOUT=0.5)
    room, ghost = fresh_room(), fresh_nick("ghost")
    watcher, _ = connect(chat, fresh_nick("watcher"))  # websockets answers pings by itself
    with watcher:
        join(watcher, room)
        raw = RawClient.open(session(chat, ghost)["ws_url"])
        raw.send_json({"type": "join", "room": room})
        recv_until(watcher, is_presence(room, ghost, "join"))
        # From now on the raw client neither reads nor answers: to the server
        # it is a peer whose host went away without a FIN or a reset.
        left = recv_until(watcher, is_presence(room, ghost, "leave"), timeout=scaled(10))
        assert left["count"] == 1
        wait_for_clients(chat, 1, scaled(5))
        raw.close()


def test_sigterm_under_heavy_traffic_loses_no_acknowledged_message(start_chat: StartChat, tmp_path: Path) -> None:
    first = start_chat(tmp_path)
    room = fresh_room("busy")
    acked: list[dict] = []
    lock = threading.Lock()
    senders = [connect(first, fresh_nick(f"s{i}"))[0] for i in range(4)]
    for ws in senders:
        join(ws, room)

    def blast(ws: ClientConnection, name: str) -> None:
        sent = 0
        try:
            while True:
                for _ in range(20):  # keep 20 in flight
                    send_json(ws, {"type": "say", "room": room, "text": f"{name} {sent}", "ref": f"{name}-{sent}"})
                    sent += 1
                for _ in range(20):
                    reply = json.loads(ws.recv(timeout=scaled(10)))
                    while reply.get("type") != "message" or not str(reply.get("ref", "")).startswith(name):
                        reply = json.loads(ws.recv(timeout=scaled(10)))
                    with lock:
                        acked.append(reply)
        except Exception:  # the server went away: that is the point
            return

    threads = [threading.Thread(target=blast, args=(ws, f"s{i}")) for i, ws in enumerate(senders)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)
    first.stop()  # SIGTERM, mid-blast
    for thread in threads:
        thread.join(timeout=scaled(20))
    for ws in senders:
        ws.close()
    assert len(acked) > 100, "the blast was heavy"

    second = start_chat(tmp_path, db_path=first.db_path)
    status, body = get_json(second, f"/api/rooms/{room}/messages?since=0&limit=1000")
    assert status == 200, body
    stored = {m["id"]: m["text"] for m in body["messages"]}
    last = body["messages"][-1]["id"] if body["messages"] else 0
    while len(body["messages"]) == 1000:
        status, body = get_json(second, f"/api/rooms/{room}/messages?since={last}&limit=1000")
        stored.update({m["id"]: m["text"] for m in body["messages"]})
        last = body["messages"][-1]["id"] if body["messages"] else last
    lost = [ack for ack in acked if stored.get(ack["id"]) != ack["text"]]
    assert not lost, f"{len(lost)} acknowledged messages lost, e.g. {lost[:3]}"


class Drain:
    """Reads every frame of many raw clients on one thread, counting each one's chat messages."""

    def __init__(self, clients: list[RawClient]) -> None:
        self.counts = [0] * len(clients)
        self._clients = clients
        self._buffers = [raw.buffer for raw in clients]
        self._stop = threading.Event()
        self._selector = selectors.DefaultSelector()
        for index, raw in enumerate(clients):
            raw.sock.setblocking(False)
            self._selector.register(raw.sock, selectors.EVENT_READ, index)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._selector.select(0.1):
                index = key.data
                try:
                    data = key.fileobj.recv(1 << 18)  # type: ignore[union-attr]
                except BlockingIOError:
                    continue
                if not data:
                    self._selector.unregister(key.fileobj)
                    continue
                self._buffers[index] += data
                self._count(index)

    def _count(self, index: int) -> None:
        buffer, offset = self._buffers[index], 0
        while len(buffer) - offset >= 2:
            length, start = buffer[offset + 1] & 0x7F, offset + 2
            if length == 126:
                if len(buffer) - offset < 4:
                    break
                (length,) = struct.unpack_from("!H", buffer, offset + 2)
                start = offset + 4
            elif length == 127:
                if len(buffer) - offset < 10:
                    break
                (length,) = struct.unpack_from("!Q", buffer, offset + 2)
                start = offset + 10
            if len(buffer) < start + length:
                break
            if buffer[offset] & 0x0F == 0x1 and b'"type":"message"' in buffer[start : start + 40]:
                self.counts[index] += 1
            offset = start + length
        self._buffers[index] = buffer[offset:]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=scaled(5))


def test_a_client_that_never_reads_is_closed_while_100_others_chat_at_full_speed(
    start_chat: StartChat, tmp_path: Path
) -> None:
    chat = start_chat(tmp_path, CHAT_SEND_BUFFER=65536, CHAT_MAX_CONNECTIONS_PER_ADDRESS=0)
    room = fresh_room()
    never_reads = RawClient.open(session(chat, fresh_nick("stuck"))["ws_url"], rcvbuf=4096)
    never_reads.send_json({"type": "join", "room": room})
    others = []
    for _ in range(99):
        raw = RawClient.open(session(chat, fresh_nick("other"))["ws_url"])
        raw.send_json({"type": "join", "room": room})
        others.append(raw)
    sender, _ = connect(chat, fresh_nick("sender"))  # the hundredth, and the one that talks
    drain = Drain(others)
    text, batch, sent = "z" * 3000, 100, 0
    try:
        join(sender, room)
        time.sleep(0.5)  # every join answered
        before = worker_rss(chat)
        stuck_left = False
        most = (kernel_buffer_bound() + 65536 + 1024 * 1024) // len(text) + batch  # more than it can hold
        while not stuck_left and sent < most:
            started = time.monotonic()
            for i in range(batch):
                send_json(sender, {"type": "say", "room": room, "text": f"{sent + i} {text}"})
            skipped: list[dict] = []
            for _ in range(batch):
                recv_until(sender, lambda m: m.get("type") == "message", skipped=skipped)
            sent += batch
            while min(drain.counts) < sent:  # every other client got the whole batch, promptly
                assert time.monotonic() - started < scaled(5), f"a batch took over 5 s: {min(drain.counts)}/{sent}"
                time.sleep(0.01)
            stuck_left = any(m.get("type") == "presence" and m.get("event") == "leave" for m in skipped)
        if not stuck_left:  # closed with 1008; it is gone once its close timeout (5 s) is over
            recv_until(sender, lambda m: m.get("type") == "presence" and m.get("event") == "leave", scaled(15))
        growth = worker_rss(chat) - before
        assert growth < 16 * 1024 * 1024, f"the worker grew by {growth} bytes"
        from .test_operations import wait_metric

        wait_metric(chat.http, "chat_slow_consumer_closes_total", lambda value: value == 1)
    finally:
        drain.stop()
        sender.close()
        never_reads.close()
        for raw in others:
            raw.close()
