"""Shared fixtures: timeouts scale with CHAT_TEST_TIMEOUT_SCALE on slow machines."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from typing import Any

import pytest

TIMEOUT_SCALE = float(os.environ.get("CHAT_TEST_TIMEOUT_SCALE", "1"))


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on (for a server that must be told its port)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def end_process(process: subprocess.Popen[Any], timeout: float, sig: int = signal.SIGTERM) -> None:
    """Send ``sig`` to a process we started, if it still runs; SIGKILL it after ``timeout`` seconds."""
    if process.poll() is None:
        process.send_signal(sig)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)


def scaled(seconds: float) -> float:
    """A timeout, scaled for slow or loaded machines."""
    return seconds * TIMEOUT_SCALE


@pytest.fixture
def timeout_scale() -> float:
    return TIMEOUT_SCALE
