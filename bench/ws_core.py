"""How fast the sans-I/O WebSocket core parses frames, unmasks payloads and encodes a broadcast.

    python -m bench.ws_core [--seconds 0.5] [--json]

For payloads of 16 B, 1 KiB and 1 MiB it measures:

* frames parsed per second through :class:`app.ws.Connection`
  (``receive_data`` + ``next_event``): masked client text frames, each a
  whole message, handed over in one big buffer;
* unmasking throughput of :func:`app.ws.frames.apply_mask` in MB/s (10**6 bytes);
* for comparison, the per-byte Python loop found in tutorials,
  ``bytes(b ^ mask[i % 4] for i, b in enumerate(data))``, and the ratio.

And for one chat message broadcast to 1000 connections, the time to get each
connection its frame when the message is encoded once (shared by
:attr:`~app.ws.Connection.encoding_key`, as the chat's broadcast does) or
once per connection (:meth:`~app.ws.Connection.encode_message` 1000 times):

* a 150-byte message, uncompressed;
* a 1 KiB message with permessage-deflate and ``server_no_context_takeover``
  (:class:`~app.ws.PerMessageDeflate`): compressed once, or once per client.

Each figure comes from repeating the work for about ``--seconds`` of
``time.perf_counter`` time (at least one run), so the whole command takes a
few seconds. Figures depend on the machine: compare runs on one machine only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from app.ws import Connection, DeflateParams, Opcode, PerMessageDeflate, TextMessage, encode_frame
from app.ws.frames import apply_mask

SIZES = [("16 B", 16), ("1 KiB", 1024), ("1 MiB", 1024 * 1024)]
# roughly 4 MiB of frames per buffer, at least a few frames
BUFFER_BYTES = 4 * 1024 * 1024
MIN_FRAMES = 4
RECIPIENTS = 1000


@dataclass
class Row:
    payload: str
    payload_bytes: int
    frames_per_buffer: int
    frames_parsed_per_s: float
    parse_mb_per_s: float
    apply_mask_mb_per_s: float
    naive_unmask_mb_per_s: float
    apply_mask_speedup: float


@dataclass
class BroadcastRow:
    case: str
    payload_bytes: int
    recipients: int
    frame_bytes: int
    encode_once_us: float
    encode_each_us: float
    speedup: float


def timed(work: Callable[[], object], seconds: float) -> tuple[int, float]:
    """Run ``work`` for about ``seconds`` (at least once); the number of runs and the time they took.

    Runs are timed in batches, grown until a batch is long enough that the
    clock and loop overhead do not count.
    """
    batch = 1
    runs = 0
    elapsed = 0.0
    while True:
        start = time.perf_counter()
        for _ in range(batch):
            work()
        took = time.perf_counter() - start
        runs += batch
        elapsed += took
        if elapsed >= seconds:
            return runs, elapsed
        if took < seconds / 20:
            batch *= 2


def naive_unmask(data: bytes, mask: bytes) -> bytes:
    """The per-byte loop of many tutorials, for comparison."""
    return bytes(b ^ mask[i % 4] for i, b in enumerate(data))


def client_frames(size: int) -> tuple[bytes, int, str]:
    """A buffer of masked text frames of ``size`` bytes, their number, and their text."""
    text = ("abcdefghijklmnopqrstuvwxyz0123456789" * (size // 36 + 1))[:size]
    payload = text.encode()
    count = max(MIN_FRAMES, BUFFER_BYTES // (size + 14))
    frames = b"".join(encode_frame(Opcode.TEXT, payload, mask=os.urandom(4)) for _ in range(count))
    return frames, count, text


def parse_all(buffer: bytes, max_size: int) -> int:
    """Feed ``buffer`` to a fresh connection and pull every event; how many came out."""
    connection = Connection(max_message_size=max_size)
    connection.receive_data(buffer)
    events = 0
    while connection.next_event() is not None:
        events += 1
    return events


def measure(label: str, size: int, seconds: float) -> Row:
    buffer, count, text = client_frames(size)
    max_size = max(size, 1024)
    # check the work before timing it
    connection = Connection(max_message_size=max_size)
    connection.receive_data(buffer)
    events = connection.events()
    assert len(events) == count and events[-1] == TextMessage(text), "parser gave unexpected events"
    runs, took = timed(lambda: parse_all(buffer, max_size), seconds)
    frames_per_s = runs * count / took

    data = os.urandom(size)
    mask = os.urandom(4)
    assert apply_mask(data, mask) == naive_unmask(data, mask), "apply_mask disagrees with the per-byte loop"
    runs, took = timed(lambda: apply_mask(data, mask), seconds)
    fast = runs * size / took / 1e6
    runs, took = timed(lambda: naive_unmask(data, mask), seconds)
    naive = runs * size / took / 1e6
    return Row(
        payload=label,
        payload_bytes=size,
        frames_per_buffer=count,
        frames_parsed_per_s=frames_per_s,
        parse_mb_per_s=frames_per_s * size / 1e6,
        apply_mask_mb_per_s=fast,
        naive_unmask_mb_per_s=naive,
        apply_mask_speedup=fast / naive,
    )


def chat_message(text_bytes: int) -> bytes:
    """A ``message`` event as the chat encodes it, with a text of ``text_bytes``."""
    text = ("the quick brown fox jumps over the lazy dog; " * (text_bytes // 45 + 1))[:text_bytes]
    event = {"type": "message", "room": "lobby", "id": 4242, "from": "alice", "text": text, "ts": 1763712000123}
    return json.dumps(event, separators=(",", ":")).encode()


def frames_encoded_once(connections: list[Connection], payload: bytes) -> list[bytes]:
    """Every connection's frame, encoded once per :attr:`~app.ws.Connection.encoding_key` (the chat's way)."""
    cache: dict[object, bytes] = {}
    frames = []
    for connection in connections:
        key = connection.encoding_key
        frame = cache.get(key)
        if frame is None:
            frame = cache[key] = connection.encode_message(payload)
        frames.append(frame)
    return frames


def frames_encoded_each(connections: list[Connection], payload: bytes) -> list[bytes]:
    """Every connection's frame, encoded for each connection on its own."""
    return [connection.encode_message(payload) for connection in connections]


def measure_broadcast(case: str, payload: bytes, deflate: bool, seconds: float) -> BroadcastRow:
    params = DeflateParams(server_no_context_takeover=True)
    connections = [Connection(deflate=PerMessageDeflate(params) if deflate else None) for _ in range(RECIPIENTS)]
    # check the work before timing it: the same bytes either way, one frame for all
    once, each = frames_encoded_once(connections, payload), frames_encoded_each(connections, payload)
    assert once == each and len(set(once)) == 1, "encoding once must give every connection the same frame"
    runs, took = timed(lambda: frames_encoded_once(connections, payload), seconds)
    once_us = took / runs * 1e6
    runs, took = timed(lambda: frames_encoded_each(connections, payload), seconds)
    each_us = took / runs * 1e6
    return BroadcastRow(case, len(payload), RECIPIENTS, len(once[0]), once_us, each_us, each_us / once_us)


def print_table(rows: list[Row], seconds: float) -> None:
    print(f"app.ws core, Python {platform.python_version()} on {platform.machine()}, ~{seconds:g} s per figure")
    print("MB = 10**6 bytes of payload; parse = Connection.receive_data + next_event, masked text frames\n")
    header = ("payload", "frames/buffer", "frames parsed/s", "parse MB/s", "apply_mask MB/s", "naive MB/s", "ratio")
    print("{:<8} {:>13} {:>16} {:>11} {:>16} {:>11} {:>8}".format(*header))
    for row in rows:
        print(
            f"{row.payload:<8} {row.frames_per_buffer:>13,} {row.frames_parsed_per_s:>16,.0f} "
            f"{row.parse_mb_per_s:>11,.1f} {row.apply_mask_mb_per_s:>16,.1f} "
            f"{row.naive_unmask_mb_per_s:>11,.2f} {row.apply_mask_speedup:>7,.0f}x"
        )


def print_broadcast_table(rows: list[BroadcastRow]) -> None:
    print(f"\none message broadcast to {RECIPIENTS} connections: µs to get every connection its frame\n")
    header = ("message", "payload", "frame", "encode once µs", "encode each µs", "ratio")
    width = max(len(header[0]), *(len(row.case) for row in rows))
    print("{:<{w}} {:>8} {:>7} {:>15} {:>15} {:>7}".format(*header, w=width))
    for row in rows:
        print(
            f"{row.case:<{width}} {row.payload_bytes:>6} B {row.frame_bytes:>5} B {row.encode_once_us:>15,.0f} "
            f"{row.encode_each_us:>15,.0f} {row.speedup:>6,.1f}x"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ws_core", description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=0.5, help="time per figure (default %(default)s)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    if args.seconds <= 0:
        parser.error("--seconds must be positive")
    rows = [measure(label, size, args.seconds) for label, size in SIZES]
    broadcast = [
        measure_broadcast("plain text frame", chat_message(64), False, args.seconds),
        measure_broadcast("permessage-deflate, server_no_context_takeover", chat_message(1024), True, args.seconds),
    ]
    if args.json:
        report = {"python": platform.python_version(), "seconds_per_figure": args.seconds}
        report |= {"rows": [asdict(row) for row in rows], "broadcast": [asdict(row) for row in broadcast]}
        json.dump(report, sys.stdout, indent=2)
        print()
    else:
        print_table(rows, args.seconds)
        print_broadcast_table(broadcast)


if __name__ == "__main__":
    main()
