"""How fast the sans-I/O WebSocket core parses frames and unmasks payloads.

    python -m bench.ws_core [--seconds 0.5] [--json]

For payloads of 16 B, 1 KiB and 1 MiB it measures:

* frames parsed per second through :class:`app.ws.Connection`
  (``receive_data`` + ``next_event``): masked client text frames, each a
  whole message, handed over in one big buffer;
* unmasking throughput of :func:`app.ws.frames.apply_mask` in MB/s (10**6 bytes);
* for comparison, the per-byte Python loop found in tutorials,
  ``bytes(b ^ mask[i % 4] for i, b in enumerate(data))``, and the ratio.

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

from app.ws import Connection, Opcode, TextMessage, encode_frame
from app.ws.frames import apply_mask

SIZES = [("16 B", 16), ("1 KiB", 1024), ("1 MiB", 1024 * 1024)]
# roughly 4 MiB of frames per buffer, at least a few frames
BUFFER_BYTES = 4 * 1024 * 1024
MIN_FRAMES = 4


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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ws_core", description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=0.5, help="time per figure (default %(default)s)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    if args.seconds <= 0:
        parser.error("--seconds must be positive")
    rows = [measure(label, size, args.seconds) for label, size in SIZES]
    if args.json:
        report = {"python": platform.python_version(), "seconds_per_figure": args.seconds}
        json.dump(report | {"rows": [asdict(row) for row in rows]}, sys.stdout, indent=2)
        print()
    else:
        print_table(rows, args.seconds)


if __name__ == "__main__":
    main()
