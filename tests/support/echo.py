"""The echo server (``python -m app.server.echo``) as a real process on an ephemeral port.

:func:`run_echo_server` starts it from the repository's root with
``--bind 127.0.0.1:0``, learns the port from the line it prints once
listening, and stops that process (by its PID: SIGTERM, then SIGKILL) on exit.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.processes import REPO_ROOT, first_line, stop_process
from tests.support.timeouts import scaled

#: The ``--max-size`` of the small echo server: 1 MiB.
SMALL_MAX_SIZE = 1024 * 1024
_LISTENING = re.compile(r"listening on (ws://127\.0\.0\.1:(\d+)/)")


@dataclass(frozen=True)
class EchoServer:
    """A running echo server: its URL, port and process."""

    url: str
    port: int
    process: subprocess.Popen[str]


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
        line = first_line(process, scaled(15))
        match = _LISTENING.search(line)
        if match is None:
            stop_process(process, scaled(5))
            pytest.fail(f"echo server did not start: {line!r}\n{log_path.read_text()}")
        yield EchoServer(match.group(1), int(match.group(2)), process)
    finally:
        stop_process(process, scaled(10))
