"""A reference chat on the ``websockets`` package (asyncio): the protocol subset the bench uses.

    python -m bench.peers.websockets_peer --bind 127.0.0.1:0

Serves ``ws://HOST:PORT/<any path>?nick=NAME`` without authentication:
``hello`` on connect; ``join`` (with ``since``) answered by ``joined`` with
the room's nicks and its history; ``say`` broadcast as ``message`` with ids
increasing by one per room, through :func:`websockets.broadcast` (one
``write`` per member, framing per connection). Compression is off. History
is the last 1000 messages per room, in memory. Prints ``listening on
ws://HOST:PORT/ws`` once bound; stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import signal
import time
from collections import Counter, deque
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets import broadcast
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

HISTORY = 1000
HISTORY_ON_JOIN = 50


def dumps(event: dict[str, Any]) -> str:
    return json.dumps(event, ensure_ascii=False, separators=(",", ":"))


class Room:
    __slots__ = ("history", "last_id", "members", "nicks")

    def __init__(self) -> None:
        self.members: set[ServerConnection] = set()
        self.nicks: Counter[str] = Counter()
        self.history: deque[dict[str, Any]] = deque(maxlen=HISTORY)
        self.last_id = 0


class Chat:
    def __init__(self) -> None:
        self.rooms: dict[str, Room] = {}
        self.ids = itertools.count(1)

    async def handler(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        nick = parse_qs(urlsplit(ws.request.path).query).get("nick", ["anon"])[0]
        joined: set[str] = set()
        await ws.send(dumps({"type": "hello", "nick": nick, "conn": f"c{next(self.ids)}"}))
        try:
            async for raw in ws:
                try:
                    command = json.loads(raw)
                    kind = command["type"]
                    name = command["room"]
                except (ValueError, TypeError, KeyError):
                    await ws.send(dumps({"type": "error", "code": "invalid_json", "message": "bad command"}))
                    continue
                if kind == "say" and name in joined:
                    self.say(name, nick, command)
                elif kind == "join" and name not in joined:
                    joined.add(name)
                    await ws.send(self.join(ws, name, nick, command.get("since")))
                else:
                    await ws.send(dumps({"type": "error", "code": "unknown_type", "message": "not supported"}))
        except ConnectionClosed:
            pass
        finally:
            for name in joined:
                room = self.rooms[name]
                room.members.discard(ws)
                room.nicks[nick] -= 1
                if room.nicks[nick] <= 0:
                    del room.nicks[nick]

    def join(self, ws: ServerConnection, name: str, nick: str, since: object) -> str:
        room = self.rooms.get(name)
        if room is None:
            room = self.rooms[name] = Room()
        room.members.add(ws)
        room.nicks[nick] += 1
        if isinstance(since, int):
            history = [m for m in room.history if m["id"] > since]
        else:
            history = list(room.history)[-HISTORY_ON_JOIN:]
        return dumps({"type": "joined", "room": name, "members": sorted(room.nicks), "history": history})

    def say(self, name: str, nick: str, command: dict[str, Any]) -> None:
        room = self.rooms[name]
        room.last_id += 1
        event: dict[str, Any] = {
            "type": "message",
            "room": name,
            "id": room.last_id,
            "from": nick,
            "text": command.get("text", ""),
            "ts": int(time.time() * 1000),
        }
        if "ref" in command:
            event["ref"] = command["ref"]
        room.history.append(event)
        broadcast(room.members, dumps(event))


async def main(bind: str) -> None:
    host, _, port = bind.rpartition(":")
    chat = Chat()
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    async with serve(chat.handler, host, int(port), compression=None) as server:
        address = server.sockets[0].getsockname()
        print(f"listening on ws://{address[0]}:{address[1]}/ws", flush=True)
        await stop


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.peers.websockets_peer", description=__doc__.split("\n")[0])
    parser.add_argument("--bind", default="127.0.0.1:0", help="HOST:PORT (default %(default)s)")
    asyncio.run(main(parser.parse_args().bind))
