"""The floor: the least a Python server can do to relay the chat protocol, on gevent.

    python -m bench.peers.floor_peer --bind 127.0.0.1:0

A gevent ``StreamServer``, one greenlet per client: read the request head
until ``\\r\\n\\r\\n``, answer ``101`` with the ``Sec-WebSocket-Accept`` of
RFC 6455 §4.2.2 (nothing else is checked), then read masked client frames
(whole text messages only: no fragments, no extensions). For each ``say`` it
builds the ``message`` JSON, encodes ONE unmasked frame and calls
``sock.sendall(frame)`` once per member. ``join`` (with ``since``) gets a
``joined`` assembled from the already encoded history (the last 1000
messages per room, in memory). The nick comes from ``?nick=``. Prints
``listening on ws://HOST:PORT/ws`` once bound; stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import itertools
import json
import signal
import socket
import struct
import time
from collections import Counter, deque
from typing import Any
from urllib.parse import parse_qs, urlsplit

import gevent
from gevent.server import StreamServer

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
HISTORY = 1000
HISTORY_ON_JOIN = 50
MAX_HEAD = 16384


def dumps(event: dict[str, Any]) -> bytes:
    return json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode()


def frame(opcode: int, payload: bytes) -> bytes:
    """One final, unmasked server frame (RFC 6455 §5.2)."""
    n = len(payload)
    if n < 126:
        return struct.pack("!BB", 0x80 | opcode, n) + payload
    if n < 0x10000:
        return struct.pack("!BBH", 0x80 | opcode, 126, n) + payload
    return struct.pack("!BBQ", 0x80 | opcode, 127, n) + payload


def unmask(payload: bytes, key: bytes) -> bytes:
    n = len(payload)
    mask = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(mask, "little")).to_bytes(n, "little")


class Room:
    __slots__ = ("history", "last_id", "members", "nicks")

    def __init__(self) -> None:
        self.members: set[socket.socket] = set()
        self.nicks: Counter[str] = Counter()
        self.history: deque[tuple[int, bytes]] = deque(maxlen=HISTORY)  # (id, message JSON)
        self.last_id = 0


class Floor:
    def __init__(self) -> None:
        self.rooms: dict[str, Room] = {}
        self.ids = itertools.count(1)

    def handle(self, sock: socket.socket, address: Any) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk or len(data) > MAX_HEAD:
                return
            data += chunk
        head, _, data = data.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        target = lines[0].split(b" ")[1].decode()
        key = b""
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"sec-websocket-key":
                key = value.strip()
        accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
        sock.sendall(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        nick = parse_qs(urlsplit(target).query).get("nick", ["anon"])[0]
        sock.sendall(frame(0x1, dumps({"type": "hello", "nick": nick, "conn": f"c{next(self.ids)}"})))
        joined: set[str] = set()
        try:
            self.serve(sock, nick, joined, data)
        except OSError:
            pass
        finally:
            for name in joined:
                room = self.rooms[name]
                room.members.discard(sock)
                room.nicks[nick] -= 1
                if room.nicks[nick] <= 0:
                    del room.nicks[nick]

    def serve(self, sock: socket.socket, nick: str, joined: set[str], data: bytes) -> None:
        """Read masked client frames and act on each text message."""
        while True:
            while len(data) < 2 or len(data) < self._frame_size(data):
                chunk = sock.recv(65536)
                if not chunk:
                    return
                data += chunk
            opcode, length = data[0] & 0x0F, data[1] & 0x7F
            offset = 2
            if length == 126:
                (length,) = struct.unpack_from("!H", data, 2)
                offset = 4
            elif length == 127:
                (length,) = struct.unpack_from("!Q", data, 2)
                offset = 10
            key = data[offset : offset + 4]
            payload = unmask(data[offset + 4 : offset + 4 + length], key)
            data = data[offset + 4 + length :]
            if opcode == 0x8:  # close: answer it, then end
                sock.sendall(frame(0x8, payload[:2]))
                return
            if opcode == 0x9:
                sock.sendall(frame(0xA, payload))
            elif opcode == 0x1:
                self.command(sock, nick, joined, payload)

    @staticmethod
    def _frame_size(data: bytes) -> int:
        length = data[1] & 0x7F
        if length == 126:
            return 8 + (struct.unpack_from("!H", data, 2)[0] if len(data) >= 4 else 0)
        if length == 127:
            return 14 + (struct.unpack_from("!Q", data, 2)[0] if len(data) >= 10 else 0)
        return 6 + length

    def command(self, sock: socket.socket, nick: str, joined: set[str], payload: bytes) -> None:
        command = json.loads(payload)
        kind, name = command.get("type"), command.get("room")
        if kind == "say" and name in joined:
            room = self.rooms[name]
            room.last_id += 1
            event = {
                "type": "message",
                "room": name,
                "id": room.last_id,
                "from": nick,
                "text": command.get("text", ""),
                "ts": int(time.time() * 1000),
            }
            if "ref" in command:
                event["ref"] = command["ref"]
            message = dumps(event)
            room.history.append((room.last_id, message))
            encoded = frame(0x1, message)
            for member in list(room.members):
                try:
                    member.sendall(encoded)
                except OSError:
                    room.members.discard(member)
        elif kind == "join" and isinstance(name, str) and name not in joined:
            room = self.rooms.get(name)
            if room is None:
                room = self.rooms[name] = Room()
            joined.add(name)
            room.members.add(sock)
            room.nicks[nick] += 1
            since = command.get("since")
            if isinstance(since, int):
                history = [m for i, m in room.history if i > since]
            else:
                history = [m for _, m in room.history][-HISTORY_ON_JOIN:]
            head = dumps({"type": "joined", "room": name, "members": sorted(room.nicks)})[:-1]
            sock.sendall(frame(0x1, head + b',"history":[' + b",".join(history) + b"]}"))
        else:
            sock.sendall(frame(0x1, b'{"type":"error","code":"unknown_type","message":"not supported"}'))


def main(bind: str) -> None:
    host, _, port = bind.rpartition(":")
    floor = Floor()
    server = StreamServer((host, int(port)), floor.handle)
    server.start()
    print(f"listening on ws://{server.address[0]}:{server.address[1]}/ws", flush=True)
    gevent.signal_handler(signal.SIGTERM, server.stop)
    gevent.signal_handler(signal.SIGINT, server.stop)
    server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.peers.floor_peer", description=__doc__.split("\n")[0])
    parser.add_argument("--bind", default="127.0.0.1:0", help="HOST:PORT (default %(default)s)")
    main(parser.parse_args().bind)
