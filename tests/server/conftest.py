"""Fixtures of the chat served in the test's own process (:mod:`tests.support.inprocess`), no gunicorn.

The same names as tests/chat's fixtures, so a test reads the same against
either: ``chat`` (one chat shared by a module), ``client``, ``start_chat``.
The clients are outside ones only, over real sockets of 127.0.0.1.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from websockets.sync.client import ClientConnection

from tests.support.clients import Message, clients_of
from tests.support.inprocess import InProcessChat


@pytest.fixture
def start_chat() -> Iterator[Callable[..., InProcessChat]]:
    """``start_chat(tmp_path, **env_overrides)``: a new chat with ``CHAT_*`` settings, stopped at the end."""
    servers: list[InProcessChat] = []

    def start(directory: Path, *, db_path: Path | None = None, **env_overrides: object) -> InProcessChat:
        server = InProcessChat.launch(directory, db_path=db_path, **env_overrides)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def chat_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessChat]:
    """One chat with the default settings, shared by the tests of a module."""
    server = InProcessChat.launch(tmp_path_factory.mktemp("chat"))
    yield server
    server.stop()


@pytest.fixture
def chat(chat_server: InProcessChat) -> InProcessChat:
    """The module's chat, checked to be still running."""
    assert chat_server.alive(), "the in-process chat stopped"
    return chat_server


@pytest.fixture
def client(chat: InProcessChat) -> Iterator[Callable[..., tuple[ClientConnection, Message]]]:
    """``client(nick=None, **options)``: a connected client of the module's chat, closed at the end."""
    with clients_of(chat) as make:
        yield make
