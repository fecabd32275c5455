"""The ``rolling`` scenario: a rolling restart under load, with no message lost and no reconnect storm.

    python -m bench.rolling [--clients 5000] [--drain 10] [--rate 1] [--json out.json] [--keep DIR]
    python -m bench.run --scenarios rolling [--quick]          (the same, from the suite's runner)

The project alone (no peers): ``gunicorn -w 2`` sharing rooms through the
machine's Redis (``redis://127.0.0.1:6379/0``, a key prefix of its own,
deleted afterwards), both workers on one WebSocket port (``SO_REUSEPORT``).
``bench/rolling.js`` connects the clients in rooms of 10, one sender per room
keeps sending, then sends SIGHUP to gunicorn's master: gunicorn starts two
new workers and sends SIGTERM to the two old ones, which drain their clients
over ``CHAT_DRAIN_SECONDS`` (1012 with a retry hint, docs/protocol.md §5).
The clients come back as the browser client does and resume with ``since``.
bench/README.md explains the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.servers import REPO_ROOT, can_pin, pinned, raise_nofile

ROLLING_JS = REPO_ROOT / "bench" / "rolling.js"
REDIS_URL = "redis://127.0.0.1:6379/0"
START_TIMEOUT = 60.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def two_workers(workdir: Path, drain: float, cpu: int | None) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``gunicorn -w 2`` on fixed ports (a reload keeps them), sharing Redis; ``(master, http URL)``."""
    prefix = f"bench-rolling-{secrets.token_hex(4)}"
    http_port, ws_port = _free_port(), _free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("CHAT_")}
    env.update(
        PYTHONUNBUFFERED="1",
        CHAT_SECRET_KEY=secrets.token_hex(32),
        CHAT_REDIS_URL=REDIS_URL,
        CHAT_REDIS_PREFIX=prefix,
        CHAT_WS_BIND=f"127.0.0.1:{ws_port}",
        CHAT_DB=str(workdir / "chat.db"),
        CHAT_DRAIN_SECONDS=str(drain),
        CHAT_MESSAGE_RATE="0",
        CHAT_MAX_CONNECTIONS_PER_ADDRESS="0",
    )
    script = Path(sys.executable).parent / "gunicorn"
    gunicorn = [str(script)] if script.exists() else [sys.executable, "-m", "gunicorn"]
    command = [*gunicorn, "-c", "gunicorn.conf.py", "wsgi:app", "--bind", f"127.0.0.1:{http_port}", "-w", "2"]
    log_path = workdir / "gunicorn.log"
    with log_path.open("wb") as log:
        master = subprocess.Popen(
            pinned(command, cpu),
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=raise_nofile,
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while log_path.read_text(errors="replace").count("listening on ws://") < 2:
            if master.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the chat did not start:\n{log_path.read_text(errors='replace')[-4000:]}")
            time.sleep(0.1)
        yield master, f"http://127.0.0.1:{http_port}"
    finally:
        _stop(master, log_path, drain)
        _forget(prefix)


def _stop(master: subprocess.Popen[bytes], log_path: Path, drain: float) -> None:
    """SIGTERM to the master (it stops its workers), SIGKILL to whatever of it outlives the grace period."""
    grace = drain + 20
    if master.poll() is None:
        master.send_signal(signal.SIGTERM)
        try:
            master.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            master.kill()
            master.wait(timeout=grace)
    for pid in map(int, re.findall(r"Booting worker with pid: (\d+)", log_path.read_text(errors="replace"))):
        try:
            if b"gunicorn" in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(pid, signal.SIGKILL)
        except (FileNotFoundError, ProcessLookupError):
            pass


def _forget(prefix: str) -> None:
    """Delete the run's keys from the shared Redis."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def run(clients: int, drain: float, rate: float, workdir: Path) -> dict[str, Any]:
    """One rolling restart under load; the load generator's figures (``error`` set if it failed)."""
    pin = can_pin()
    workdir.mkdir(parents=True, exist_ok=True)
    deadline = 240 + clients / 50 + drain
    try:
        with two_workers(workdir, drain, 0 if pin else None) as (master, http):
            config = {"http": http, "masterPid": master.pid, "clients": clients, "drain": drain, "rate": rate}
            config["deadline"] = deadline
            command = pinned(["node", str(ROLLING_JS), json.dumps(config)], 1 if pin else None)
            with (workdir / "rolling.log").open("wb") as log:
                try:
                    done = subprocess.run(
                        command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=log, timeout=deadline + 30
                    )
                except subprocess.TimeoutExpired:
                    return {"error": "the load generator ran over its deadline and was killed"}
            lines = done.stdout.decode(errors="replace").strip().splitlines()
            try:
                result: dict[str, Any] = json.loads(lines[-1])
            except (IndexError, ValueError):
                result = {"error": f"no result from the load generator (exit status {done.returncode})"}
            return result
    except RuntimeError as error:
        return {"error": str(error)}


def report(result: dict[str, Any]) -> str:
    """The figures, a line each."""
    if "error" in result:
        return f"rolling restart FAILED: {result['error'][:2000]}"
    lines = [
        f"rolling restart — {result['clients']:,} clients in {result['rooms']} rooms, 2 workers, "
        f"CHAT_DRAIN_SECONDS={result['drainSeconds']:g}",
        f"  messages acknowledged          {result['acked']:,}",
        f"  lost (some member never saw)   {result['lost']}  ({result['missingDeliveries']} deliveries missing)",
        f"  every client back after        {result['allReconnectedSeconds'] or float('nan'):.1f} s"
        f"  ({result['notBack']} not back)",
    ]
    for name, key in (("1012 closes", "closes1012"), ("reconnections", "reconnects")):
        spread = result.get(key)
        if spread:
            lines.append(
                f"  {name:<15} per 100 ms    max {spread['maxPerBucket']}, mean {spread['meanPerBucket']:.1f} "
                f"(max/mean {spread['maxOverMean']:.1f}) from {spread['firstSeconds']:.1f} s "
                f"to {spread['lastSeconds']:.1f} s"
            )
    lines.append(f"  other closes, failed attempts  {result['otherCloses']}, {result['failedAttempts']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None, *, quick: bool = False) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.rolling", description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=500 if quick else 5000)
    parser.add_argument("--drain", type=float, default=10.0, help="CHAT_DRAIN_SECONDS (default 10)")
    parser.add_argument("--rate", type=float, default=1.0, help="messages per second from each room's sender")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the figures as JSON to PATH")
    parser.add_argument("--keep", type=Path, metavar="DIR", help="keep gunicorn's and the load generator's logs")
    args = parser.parse_args(argv)
    from bench.run import ensure_loadgen  # bench.run imports this module

    raise_nofile()
    ensure_loadgen()
    with tempfile.TemporaryDirectory(prefix="chat-rolling-") as scratch:
        result = run(args.clients, args.drain, args.rate, (args.keep or Path(scratch)) / "rolling")
    print(report(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    failed = "error" in result or result.get("lost") or not result.get("allReconnected")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
