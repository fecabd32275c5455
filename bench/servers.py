"""The servers under test, each started pinned to one core and stopped by its PID.

* ``project`` — the chat exactly as the README runs it, ``gunicorn -c
  gunicorn.conf.py wsgi:app``, on ephemeral ports (``--bind 127.0.0.1:0``,
  ``CHAT_WS_BIND=127.0.0.1:0``), history in a temporary ``CHAT_DB``. The
  process measured is gunicorn's one worker (``Booting worker with pid: N``):
  it serves both the web app and the WebSocket server.
* ``websockets``, ``floor`` and ``nodews`` — :mod:`bench.peers`, one process
  each (``nodews`` is Node and the ``ws`` package, ``peers/node_ws_peer.js``).

Every process is started under ``taskset -c CPU`` (gunicorn's worker and its
threads inherit the affinity) with the file-descriptor limit raised to the
hard limit, and logs to a file. :meth:`Running.stop` ends the processes it
started, by PID: SIGTERM, then SIGKILL after a grace period.
"""

from __future__ import annotations

import os
import re
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
KINDS = ("project", "websockets", "floor", "nodews")
#: How each peer is started (``--bind HOST:PORT`` is added).
PEER_COMMANDS = {
    "websockets": [sys.executable, "-m", "bench.peers.websockets_peer"],
    "floor": [sys.executable, "-m", "bench.peers.floor_peer"],
    "nodews": ["node", str(REPO_ROOT / "bench" / "peers" / "node_ws_peer.js")],
}
#: Open files wanted for every process: 100,000 connections (``idle100k``) need as many descriptors on each side.
NOFILE_WANTED = 262_144

_HTTP_LISTENING = re.compile(r"Listening at: http://127\.0\.0\.1:(\d+)")
_WORKER_BOOTED = re.compile(r"Booting worker with pid: (\d+)")
_WS_LISTENING = re.compile(r"listening on ws://127\.0\.0\.1:(\d+)/ws")

START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0


class StartError(RuntimeError):
    """A server did not come up; the message carries its log."""


def raise_nofile() -> None:
    """Raise this process's open-file limit as far as allowed (10,000 sockets need it, idle100k 100,000).

    Beyond the hard limit only with CAP_SYS_RESOURCE (root on a host, seldom in
    a container), and never beyond ``/proc/sys/fs/nr_open``. Used as
    ``preexec_fn`` of every child, and once for the runner itself.
    """
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for wanted in sorted({max(hard, NOFILE_WANTED), max(hard, 131_072), max(hard, 65_536), hard}, reverse=True):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            return
        except (ValueError, OSError):
            continue


def pinned(command: list[str], cpu: int | None) -> list[str]:
    """``command`` under ``taskset -c cpu`` (taskset execs it: the PID stays the command's)."""
    if cpu is None:
        return command
    return ["taskset", "-c", str(cpu), *command]


def can_pin() -> bool:
    """Two cores and taskset: server and load generator each get a core of their own."""
    return shutil.which("taskset") is not None and len(os.sched_getaffinity(0)) >= 2


def process_gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (a zombie counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return stat.rpartition(")")[2].split()[0] in {"Z", "X"}


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not process_gone(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return b""


@dataclass
class Running:
    """One server under test: the process to measure and how the load generator reaches it."""

    kind: str
    process: subprocess.Popen[bytes]
    log_path: Path
    #: the process whose CPU and RSS are measured (gunicorn's worker, or the peer itself)
    pid: int = 0
    ws_url: str = ""
    http_url: str = ""
    #: processes started for this server that are not ``process`` (gunicorn's worker)
    children: list[int] = field(default_factory=list)

    def loadgen_target(self) -> dict[str, Any]:
        """How bench/loadgen.js reaches this server."""
        if self.kind == "project":
            return {"kind": "project", "http": self.http_url}
        return {"kind": "peer", "ws": self.ws_url}

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def affinity(self) -> list[int]:
        """The cores the measured process may run on."""
        try:
            return sorted(os.sched_getaffinity(self.pid))
        except OSError:
            return []

    def stop(self) -> None:
        """SIGTERM to what we started, SIGKILL to whatever of it is still there after the grace period."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STOP_TIMEOUT)
        for pid in self.children:
            if not _wait_gone(pid, STOP_TIMEOUT) and b"gunicorn" in _cmdline(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                _wait_gone(pid, STOP_TIMEOUT)


def _spawn(command: list[str], log_path: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log:
        return subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=raise_nofile,
        )


def _gunicorn() -> list[str]:
    script = Path(sys.executable).parent / "gunicorn"
    return [str(script)] if script.exists() else [sys.executable, "-m", "gunicorn"]


def start_project(workdir: Path, cpu: int | None, **settings: object) -> Running:
    """The chat as the README runs it, persistence on, with ``CHAT_*`` ``settings``."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("CHAT_")}
    env.update(
        PYTHONUNBUFFERED="1",
        CHAT_WS_BIND="127.0.0.1:0",
        CHAT_DB=str(workdir / "chat.db"),
        CHAT_SECRET_KEY=secrets.token_hex(32),
        # The peers limit nothing; fanout's one sender goes far beyond a person's rate.
        CHAT_MESSAGE_RATE="0",
        # 10,000 clients from 127.0.0.1, as the peers allow.
        CHAT_MAX_CONNECTIONS_PER_ADDRESS="0",
    )
    env.update({f"CHAT_{key.upper()}": str(value) for key, value in settings.items()})
    command = [*_gunicorn(), "-c", "gunicorn.conf.py", "wsgi:app", "--bind", "127.0.0.1:0"]
    log_path = workdir / "gunicorn.log"
    running = Running("project", _spawn(pinned(command, cpu), log_path, env), log_path)
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        text = running.logs()
        http, worker, ws = _HTTP_LISTENING.search(text), _WORKER_BOOTED.search(text), _WS_LISTENING.search(text)
        if worker and not running.pid:
            running.pid = int(worker.group(1))
            running.children.append(running.pid)
        if http and worker and ws:
            running.http_url = f"http://127.0.0.1:{http.group(1)}"
            running.ws_url = f"ws://127.0.0.1:{ws.group(1)}/ws"
            return running
        if running.process.poll() is not None or time.monotonic() > deadline:
            running.stop()
            raise StartError(f"the chat did not start:\n{running.logs()[-4000:]}")
        time.sleep(0.05)


def start_peer(kind: str, workdir: Path, cpu: int | None) -> Running:
    """One of :mod:`bench.peers` on an ephemeral port."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    command = [*PEER_COMMANDS[kind], "--bind", "127.0.0.1:0"]
    log_path = workdir / f"{kind}.log"
    running = Running(kind, _spawn(pinned(command, cpu), log_path, env), log_path)
    running.pid = running.process.pid
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        found = _WS_LISTENING.search(running.logs())
        if found:
            running.ws_url = f"ws://127.0.0.1:{found.group(1)}/ws"
            return running
        if running.process.poll() is not None or time.monotonic() > deadline:
            running.stop()
            raise StartError(f"{kind} did not start:\n{running.logs()[-4000:]}")
        time.sleep(0.05)


@contextmanager
def serving(kind: str, workdir: Path, cpu: int | None, **settings: object) -> Iterator[Running]:
    """A fresh server of ``kind`` for one measurement; stopped afterwards, whatever happens."""
    workdir.mkdir(parents=True, exist_ok=True)
    running = start_project(workdir, cpu, **settings) if kind == "project" else start_peer(kind, workdir, cpu)
    try:
        yield running
    finally:
        running.stop()
