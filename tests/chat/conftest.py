"""Fixtures of the chat under gunicorn, driven by outside clients (helpers: :mod:`tests.support`).

``start_chat`` and ``chat`` start gunicorn exactly as the README does
(:func:`tests.support.gunicorn.launch_chat`); the clients are outside ones
only: ``urllib`` for HTTP, ``websockets`` (sync) and ``websocket-client`` for
WebSocket, raw sockets for what those refuse to do. docs/protocol.md is the
contract every test checks. ``prefix`` and ``own_redis`` give a test Redis of
its own; ``start_node`` starts the processes of a cluster sharing one.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from websockets.sync.client import ClientConnection

from tests.support.clients import Message, clients_of
from tests.support.gunicorn import ChatServer, launch_chat
from tests.support.redis import ADMIN_PASSWORD, API_TOKEN, RedisServer, shared_prefix


@pytest.fixture
def start_chat() -> Iterator[Callable[..., ChatServer]]:
    """``start_chat(tmp_path, **env_overrides)``: a new chat, stopped at the end of the test."""
    servers: list[ChatServer] = []

    def start(
        directory: Path,
        *,
        db_path: Path | None = None,
        nofile: int | tuple[int, int] | None = None,
        **env_overrides: object,
    ) -> ChatServer:
        server = launch_chat(directory, db_path=db_path, nofile=nofile, **env_overrides)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def chat_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChatServer]:
    """One chat with the default settings, shared by the tests of a module."""
    server = launch_chat(tmp_path_factory.mktemp("chat"))
    yield server
    server.stop()


@pytest.fixture
def chat(chat_server: ChatServer) -> ChatServer:
    """The module's chat, checked to be still running."""
    assert chat_server.alive(), f"the chat died:\n{chat_server.logs()}"
    return chat_server


@pytest.fixture
def client(chat: ChatServer) -> Iterator[Callable[..., tuple[ClientConnection, Message]]]:
    """``client(nick=None, **options)``: a connected client of the module's chat, closed at the end."""
    with clients_of(chat) as make:
        yield make


@pytest.fixture
def prefix() -> Iterator[str]:
    """A key prefix of this test's own on the shared Redis, deleted afterwards."""
    with shared_prefix() as name:
        yield name


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of the test's own (appending every write to disk), stopped afterwards."""
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def start_node(tmp_path: Path) -> Iterator[Callable[..., ChatServer]]:
    """``start_node(redis_url, prefix)``: a chat process of the cluster (same secret key for all)."""
    servers: list[ChatServer] = []
    secret = secrets.token_hex(32)

    def start(redis_url: str, prefix: str, **env: object) -> ChatServer:
        directory = tmp_path / f"node-{len(servers) + 1}"
        directory.mkdir()
        server = launch_chat(
            directory,
            CHAT_REDIS_URL=redis_url,
            CHAT_REDIS_PREFIX=prefix,
            CHAT_SECRET_KEY=secret,
            CHAT_ADMIN_PASSWORD=ADMIN_PASSWORD,
            CHAT_API_TOKEN=API_TOKEN,
            **env,
        )
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
