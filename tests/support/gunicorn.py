"""The chat as a real gunicorn process on ephemeral ports, as the README runs it.

:func:`launch_chat` starts ``gunicorn -c gunicorn.conf.py wsgi:app`` with
``--bind 127.0.0.1:0``, ``CHAT_WS_BIND=127.0.0.1:0`` and a database in a
temporary directory. It learns the HTTP port, the worker's PID and the
WebSocket port from the log, and :meth:`ChatServer.stop` ends those two
processes, by PID, and nothing else.
"""

from __future__ import annotations

import itertools
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.processes import REPO_ROOT, end_process, free_port, kill_worker, process_gone, wait_gone
from tests.support.redis import SHARED_REDIS
from tests.support.timeouts import scaled

_HTTP_LISTENING = re.compile(r"Listening at: http://127\.0\.0\.1:(\d+)")
_WORKER_BOOTED = re.compile(r"Booting worker with pid: (\d+)")
_WS_LISTENING = re.compile(r"listening on wss?://127\.0\.0\.1:(\d+)/ws")


def gunicorn_command() -> list[str]:
    """The gunicorn beside this interpreter, or ``python -m gunicorn``."""
    script = Path(sys.executable).parent / "gunicorn"
    return [str(script)] if script.exists() else [sys.executable, "-m", "gunicorn"]


def server_environment(db_path: Path, **overrides: object) -> dict[str, str]:
    """This environment without any ``CHAT_*`` variable, then the test's settings (no rate limit unless set)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("CHAT_")}
    env.update(
        PYTHONUNBUFFERED="1",
        CHAT_WS_BIND="127.0.0.1:0",
        CHAT_DB=str(db_path),
        CHAT_SECRET_KEY=secrets.token_hex(32),
        # Many tests send far faster than a person, on purpose; the rate
        # limit's own tests (test_chat_limits.py) turn it back on.
        CHAT_MESSAGE_RATE="0",
        # Every test client comes from 127.0.0.1; the per-address limit's own tests set it.
        CHAT_MAX_CONNECTIONS_PER_ADDRESS="0",
        # Stopping closes every client at once unless a test spreads it (test_drain.py).
        CHAT_DRAIN_SECONDS="0",
    )
    env.update({key: str(value) for key, value in overrides.items()})
    return env


def spawn_gunicorn(
    log_path: Path, env: dict[str, str], *args: str, nofile: int | tuple[int, int] | None = None
) -> subprocess.Popen[bytes]:
    """gunicorn as the README runs it, on an ephemeral HTTP port, logging to ``log_path``.

    ``nofile`` caps its open files (``prlimit``), to run it out of descriptors: a number (soft and hard
    limits both), or ``(soft, hard)``.
    """
    soft, hard = nofile if isinstance(nofile, tuple) else (nofile, nofile)
    limit = ["prlimit", f"--nofile={soft}:{hard}", "--"] if nofile else []
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [*limit, *gunicorn_command(), "-c", "gunicorn.conf.py", "wsgi:app", "--bind", "127.0.0.1:0", *args],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


@dataclass
class ChatServer:
    """A running chat: gunicorn's master and its one worker, with their ports."""

    process: subprocess.Popen[bytes]
    log_path: Path
    db_path: Path
    http_port: int = 0
    ws_port: int = 0
    worker_pid: int = 0
    returncode: int | None = field(default=None)

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def ws_base(self) -> str:
        return f"ws://127.0.0.1:{self.ws_port}/ws"

    @property
    def master_pid(self) -> int:
        return self.process.pid

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None and not process_gone(self.worker_pid)

    def stop(self, sig: int = signal.SIGTERM, timeout: float | None = None) -> int | None:
        """Send ``sig`` to the master (SIGKILL goes to the worker too); make sure both end.

        Waits ``timeout`` seconds (default: gunicorn's graceful timeout and a
        margin) before SIGKILL. Returns the master's exit status.
        """
        timeout = scaled(15) if timeout is None else timeout
        if sig == signal.SIGKILL and self.worker_pid and self.process.poll() is None:
            kill_worker(self.worker_pid)
        end_process(self.process, timeout, sig)
        if self.worker_pid and not wait_gone(self.worker_pid, timeout):
            kill_worker(self.worker_pid)
            wait_gone(self.worker_pid, timeout)
        self.returncode = self.process.returncode
        return self.returncode


_server_numbers = itertools.count(1)


def launch_chat(
    directory: Path,
    *,
    db_path: Path | None = None,
    nofile: int | tuple[int, int] | None = None,
    **env_overrides: object,
) -> ChatServer:
    """Start a chat whose logs go to ``directory``; ready once both ports are open.

    ``db_path`` (default: ``directory/chat.db``) lets a second server reopen
    the database of a first one. ``env_overrides`` are ``CHAT_*`` settings.
    """
    log_dir = directory / f"server-{next(_server_numbers)}"
    log_dir.mkdir(parents=True)
    db_path = db_path or directory / "chat.db"
    log_path = log_dir / "gunicorn.log"
    environment = server_environment(db_path, **env_overrides)
    server = ChatServer(spawn_gunicorn(log_path, environment, nofile=nofile), log_path, db_path)
    deadline = time.monotonic() + scaled(30)
    while True:
        text = server.logs()
        http, worker, ws = _HTTP_LISTENING.search(text), _WORKER_BOOTED.search(text), _WS_LISTENING.search(text)
        if worker and not server.worker_pid:
            server.worker_pid = int(worker.group(1))
        if http and worker and ws:
            server.http_port, server.ws_port = int(http.group(1)), int(ws.group(1))
            return server
        if server.process.poll() is not None or time.monotonic() > deadline:
            server.stop(timeout=scaled(5))
            pytest.fail(f"the chat did not start (exit status {server.returncode}):\n{server.logs()}")
        time.sleep(0.05)


def worker_rss(chat: ChatServer) -> int:
    """The worker's resident memory in bytes."""
    for line in Path(f"/proc/{chat.worker_pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@contextmanager
def two_workers(directory: Path, prefix: str) -> Iterator[ChatServer]:
    """``gunicorn -w 2`` sharing rooms through the shared Redis, both workers on one WebSocket port."""
    ws_port = free_port()
    log_path = directory / "gunicorn.log"
    env = server_environment(
        directory / "chat.db",
        CHAT_REDIS_URL=SHARED_REDIS,
        CHAT_REDIS_PREFIX=prefix,
        CHAT_WS_BIND=f"127.0.0.1:{ws_port}",
    )
    process = spawn_gunicorn(log_path, env, "-w", "2")
    node = ChatServer(process, log_path, directory / "chat.db", ws_port=ws_port)  # worker_pid: two of them, below
    try:
        deadline = time.monotonic() + scaled(30)
        while True:
            text = log_path.read_text(errors="replace")
            http = re.search(r"Listening at: http://127\.0\.0\.1:(\d+)", text)
            if http and text.count("listening on ws://") >= 2:
                break
            assert process.poll() is None and time.monotonic() < deadline, text
            time.sleep(0.05)
        node.http_port = int(http.group(1))
        yield node
    finally:
        node.stop(timeout=scaled(20))
        for line in log_path.read_text(errors="replace").splitlines():
            if "Booting worker with pid: " in line:
                pid = int(line.rsplit(":", 1)[1].split()[0])
                if not wait_gone(pid, scaled(5)):
                    kill_worker(pid)
