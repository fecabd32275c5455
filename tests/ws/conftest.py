"""The echo server as a real process on an ephemeral port, for outside clients.

Each fixture starts ``python -m app.server.echo --bind 127.0.0.1:0`` from the
repository root, learns the port from the line it prints once listening, and
stops that process (by its PID: SIGTERM, then SIGKILL) at the end.
"""

from __future__ import annotations

import queue
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import scaled

REPO_ROOT = Path(__file__).resolve().parents[2]
SMALL_MAX_SIZE = 1024 * 1024
_LISTENING = re.compile(r"listening on (ws://127\.0\.0\.1:(\d+)/)")


@dataclass(frozen=True)
class EchoServer:
    """A running echo server: its URL, port and process."""

    url: str
    port: int
    process: subprocess.Popen[str]


def _first_line(process: subprocess.Popen[str], timeout: float) -> str:
    """The first line the process prints, waiting at most ``timeout`` seconds."""
    lines: queue.Queue[str] = queue.Queue()
    assert process.stdout is not None
    reader = threading.Thread(target=lambda: lines.put(process.stdout.readline()), daemon=True)
    reader.start()
    try:
        return lines.get(timeout=timeout)
    except queue.Empty:
        return ""


def stop_process(process: subprocess.Popen[str], timeout: float) -> int:
    """SIGTERM the process we started, SIGKILL it if it lingers; its exit status."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout)
    if process.stdout is not None:
        process.stdout.close()
    return process.returncode


@contextmanager
def run_echo_server(log_dir: Path, *args: str) -> Iterator[EchoServer]:
    """Start the echo server with extra ``args``; stop it on exit."""
    log_path = log_dir / "echo-server.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "app.server.echo", "--bind", "127.0.0.1:0", *args],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
    try:
        line = _first_line(process, scaled(15))
        match = _LISTENING.search(line)
        if match is None:
            stop_process(process, scaled(5))
            pytest.fail(f"echo server did not start: {line!r}\n{log_path.read_text()}")
        yield EchoServer(match.group(1), int(match.group(2)), process)
    finally:
        stop_process(process, scaled(10))


@pytest.fixture(scope="session")
def echo_server_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EchoServer]:
    """The echo server with its defaults (16 MiB messages, permessage-deflate)."""
    with run_echo_server(tmp_path_factory.mktemp("echo")) as server:
        yield server


@pytest.fixture
def echo_server(echo_server_process: EchoServer) -> str:
    """The URL of the shared echo server, checked to be still running."""
    assert echo_server_process.process.poll() is None, "the echo server died"
    return echo_server_process.url


@pytest.fixture
def echo_port(echo_server_process: EchoServer) -> int:
    """The port of the shared echo server, for raw-socket tests."""
    assert echo_server_process.process.poll() is None, "the echo server died"
    return echo_server_process.port


@pytest.fixture(scope="session")
def small_echo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of an echo server started with ``--max-size`` 1 MiB."""
    with run_echo_server(tmp_path_factory.mktemp("echo-small"), "--max-size", str(SMALL_MAX_SIZE)) as server:
        yield server.url
