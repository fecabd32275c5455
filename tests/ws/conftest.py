"""The echo server as a real process on an ephemeral port, for outside clients.

Each fixture starts ``python -m app.server.echo --bind 127.0.0.1:0``
(:func:`tests.support.echo.run_echo_server`) and stops that process, by its
PID, at the end.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.echo import SMALL_MAX_SIZE, EchoServer, run_echo_server


@pytest.fixture(scope="session", params=["events", "greenlet"])
def echo_server_process(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[EchoServer]:
    """The echo server with its defaults (16 MiB messages, permessage-deflate), in each of its two modes.

    ``events``: as the chat serves, an idle client keeps no greenlet; ``greenlet``
    (``--greenlet``): a handler in the client's greenlet for its whole life.
    """
    args = ["--greenlet"] if request.param == "greenlet" else []
    with run_echo_server(tmp_path_factory.mktemp(f"echo-{request.param}"), *args) as server:
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
