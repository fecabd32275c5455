"""The server's client greenlets: the connection limit and stopping, over real sockets.

Each test runs :class:`~app.server.server.WebSocketServer` with the echo
handler in a process of its own (a few lines below, with a small
``max_connections`` and stop timeout) and drives it with ``websockets``
clients.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from tests.support.processes import REPO_ROOT, first_line, stop_process
from tests.support.timeouts import scaled

pytestmark = pytest.mark.timeout(scaled(60))

LIMIT = 2
STOP_TIMEOUT = 0.5
SERVER = f"""
import sys
from app.server.echo import echo  # monkey-patches, as the echo server does
from app.server.server import ServerConfig, WebSocketServer, wait_for_shutdown

server = WebSocketServer(("127.0.0.1", 0), echo, ServerConfig(max_connections={LIMIT}))
server.start()
print(server.address[1], flush=True)
wait_for_shutdown()
server.stop(timeout={STOP_TIMEOUT})
print("stopped", flush=True)
"""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """The server process and its URL; stopped (by its PID) at the end."""
    with (tmp_path / "server.log").open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-c", SERVER], cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=log, text=True
        )
    try:
        port = first_line(process, scaled(15)).strip()
        if not port.isdigit():
            pytest.fail(f"server did not start: {port!r}\n{(tmp_path / 'server.log').read_text()}")
        yield process, f"ws://127.0.0.1:{port}/"
    finally:
        stop_process(process, scaled(10))


def open_client(url: str, timeout: float) -> ClientConnection:
    return connect(url, open_timeout=timeout, close_timeout=scaled(5), proxy=None, ping_interval=None)


def echoes(ws: ClientConnection) -> bool:
    ws.send("ping?")
    return ws.recv(timeout=scaled(5)) == "ping?"


def test_a_client_over_the_limit_gets_503_and_is_served_once_another_leaves(
    server: tuple[subprocess.Popen[str], str],
) -> None:
    _, url = server
    with open_client(url, scaled(10)) as first, open_client(url, scaled(10)) as second:
        assert echoes(first) and echoes(second)
        with pytest.raises(InvalidStatus) as refused:
            open_client(url, scaled(10))
        assert refused.value.response.status_code == 503
        assert refused.value.response.headers["Retry-After"] == "5"
        assert b"too many connections" in refused.value.response.body
        first.close()
        deadline = time.monotonic() + scaled(10)
        while True:  # the server sees the first one go a moment later
            try:
                third = open_client(url, scaled(10))
                break
            except InvalidStatus:
                assert time.monotonic() < deadline, "still refused after a client left"
                time.sleep(0.05)
        with third:
            assert echoes(third) and echoes(second)


def test_stop_closes_idle_clients_after_the_grace_period(server: tuple[subprocess.Popen[str], str]) -> None:
    process, url = server
    with ExitStack() as stack:
        clients = [stack.enter_context(open_client(url, scaled(10))) for _ in range(LIMIT)]
        assert all(echoes(ws) for ws in clients)
        started = time.monotonic()
        process.terminate()
        for ws in clients:
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=scaled(10))
            assert ws.close_code == 1000
        assert time.monotonic() - started < scaled(STOP_TIMEOUT + 5)
    assert process.wait(timeout=scaled(10)) == 0
