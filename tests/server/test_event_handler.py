"""The event-driven way to serve clients: an idle client keeps no greenlet, and loses nothing for it.

A :class:`~app.server.server.WebSocketServer` given an
:class:`~app.server.server.EventHandler` runs in a thread of this process
with its own gevent hub (nothing monkey-patched); the clients are the
outside ``websocket-client`` package and raw sockets. The application here
records what it is told and echoes, so each test can check both what the
client saw and what the application was told.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from typing import Any

import gevent
import pytest
import websocket
from greenlet import getcurrent

from app.server.server import ServerConfig, WebSocketServer
from app.server.websocket import Message, ServerWebSocket
from app.ws import TextMessage
from tests.support.timeouts import scaled

pytestmark = pytest.mark.timeout(scaled(60))


class Recorder:
    """An EventHandler that echoes text and records every call, with the greenlet that made it."""

    def __init__(self, on_message: Callable[[ServerWebSocket, str], None] | None = None) -> None:
        self.on_message = on_message
        self.opened_count = 0
        self.texts: list[str] = []
        self.greenlets: set[int] = set()
        self.closes: list[tuple[int, str]] = []
        self.busy = 0
        self.most_busy = 0
        self.connections: list[ServerWebSocket] = []

    def opened(self, ws: ServerWebSocket) -> None:
        self.opened_count += 1
        self.connections.append(ws)

    def received(self, ws: ServerWebSocket, message: Message) -> None:
        assert isinstance(message, TextMessage)
        self.busy += 1
        self.most_busy = max(self.most_busy, self.busy)
        self.greenlets.add(id(getcurrent()))
        try:
            self.texts.append(message.data)
            if self.on_message is not None:
                self.on_message(ws, message.data)
            ws.send_text(message.data)
        finally:
            self.busy -= 1

    def closed(self, ws: ServerWebSocket, code: int, reason: str) -> None:
        self.closes.append((code, reason))


class ServerThread:
    """A WebSocketServer on 127.0.0.1, in a thread with its own hub; ``call`` runs a function there."""

    def __init__(self, app: Recorder) -> None:
        self.app = app
        self.server: WebSocketServer | None = None
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._calls: list[tuple[Callable[[], Any], list[Any], threading.Event]] = []
        self._stop_timeout = 0.5
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self.server = WebSocketServer(("127.0.0.1", 0), self.app, ServerConfig(close_timeout=1.0))
        self.server.start()
        self._ready.set()
        while not self._stop.is_set():
            gevent.sleep(0.01)
            while self._calls:
                function, result, done = self._calls.pop(0)
                result.append(function())
                done.set()
        self.server.stop(timeout=self._stop_timeout)

    @property
    def url(self) -> str:
        assert self.server is not None
        host, port = self.server.address[:2]
        return f"ws://{host}:{port}/"

    def call(self, function: Callable[[], Any]) -> Any:
        """``function()`` on the server's thread, in a greenlet of its hub; its result."""
        result: list[Any] = []
        done = threading.Event()
        self._calls.append((function, result, done))
        assert done.wait(scaled(10))
        return result[0]

    def stop(self, timeout: float = 0.5) -> None:
        self._stop_timeout = timeout
        self._stop.set()
        self.thread.join(scaled(15))


@contextmanager
def serving(app: Recorder) -> Iterator[ServerThread]:
    thread = ServerThread(app)
    thread.thread.start()
    assert thread._ready.wait(scaled(10))
    try:
        yield thread
    finally:
        thread.stop()


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + scaled(timeout)
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_idle_clients_keep_no_greenlet_and_each_is_woken_by_its_next_message() -> None:
    app = Recorder()
    with serving(app) as server:
        assert server.server is not None
        pool = server.server.pool
        clients = [websocket.create_connection(server.url, timeout=scaled(5)) for _ in range(20)]
        try:
            for i, client in enumerate(clients):
                client.send(f"hello {i}")
                assert client.recv() == f"hello {i}"
            wait_until(lambda: pool.parked == 20)
            assert pool.running == 0
            assert len(pool) == 20
            time.sleep(0.3)  # idle for a while: still served at the next message
            for i, client in enumerate(reversed(clients)):
                client.send(f"again {i}")
                assert client.recv() == f"again {i}"
        finally:
            for client in clients:
                client.close()
        wait_until(lambda: len(pool) == 0)
    assert app.opened_count == 20
    assert sorted(app.closes) == [(1000, "")] * 20


def test_one_clients_messages_are_handled_one_at_a_time_in_order() -> None:
    app = Recorder(on_message=lambda ws, text: gevent.sleep(0.002))  # each message waits: others could overtake
    with serving(app) as server:
        client = websocket.create_connection(server.url, timeout=scaled(5))
        with closing(client):
            for i in range(100):
                client.send(f"m{i:03d}")
            echoed = [client.recv() for _ in range(100)]
    assert echoed == [f"m{i:03d}" for i in range(100)]
    assert app.texts == echoed
    assert app.most_busy == 1


def test_the_greenlets_that_serve_messages_are_reused() -> None:
    app = Recorder()
    with serving(app) as server:
        client = websocket.create_connection(server.url, timeout=scaled(5))
        with closing(client):
            for i in range(300):
                client.send(str(i))
                assert client.recv() == str(i)  # one at a time: the connection parks between messages
    assert len(app.greenlets) <= 2


def test_closed_is_told_the_clients_close_code_and_reason() -> None:
    app = Recorder()
    with serving(app) as server:
        client = websocket.create_connection(server.url, timeout=scaled(5))
        client.close(status=4001, reason=b"bye now")
        wait_until(lambda: bool(app.closes))
    assert app.closes == [(4001, "bye now")]


def test_a_reset_connection_is_closed_with_1006() -> None:
    app = Recorder()
    with serving(app) as server:
        client = websocket.create_connection(server.url, timeout=scaled(5))
        client.send("hi")
        assert client.recv() == "hi"
        wait_until(lambda: server.server is not None and server.server.pool.parked == 1)
        client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.sock.close()  # an RST, no close frame
        wait_until(lambda: bool(app.closes))
        assert server.server is not None
        wait_until(lambda: len(server.server.pool) == 0)
    assert app.closes == [(1006, "")]


def test_a_failing_application_closes_that_client_with_1011_and_serves_the_others() -> None:
    def fail_on_boom(ws: ServerWebSocket, text: str) -> None:
        if text == "boom":
            raise RuntimeError("the application failed")

    app = Recorder(on_message=fail_on_boom)
    with serving(app) as server:
        failing = websocket.create_connection(server.url, timeout=scaled(5))
        other = websocket.create_connection(server.url, timeout=scaled(5))
        with closing(failing), closing(other):
            failing.send("boom")
            opcode, payload = failing.recv_data(control_frame=True)
            assert opcode == websocket.ABNF.OPCODE_CLOSE
            assert struct.unpack("!H", payload[:2])[0] == 1011
            failing.shutdown()  # recv_data answered the close; close() would not close the socket now
            other.send("still here")
            assert other.recv() == "still here"
        wait_until(lambda: len(app.closes) == 2)
    assert len(app.closes) == 2  # the failing client's too, with the code its answer carried (RFC 6455 §7.1.5)


def test_a_close_started_by_the_server_reaches_a_parked_client() -> None:
    app = Recorder()
    with serving(app) as server:
        client = websocket.create_connection(server.url, timeout=scaled(5))
        with closing(client):
            client.send("hi")
            assert client.recv() == "hi"
            wait_until(lambda: server.server is not None and server.server.pool.parked == 1)
            server.call(lambda: app.connections[0].close_soon(1012, "restarting retry=1000"))
            started = time.monotonic()
            opcode, payload = client.recv_data(control_frame=True)  # which answers with 1000
            assert opcode == websocket.ABNF.OPCODE_CLOSE
            assert struct.unpack("!H", payload[:2])[0] == 1012
            assert payload[2:] == b"restarting retry=1000"
            wait_until(lambda: bool(app.closes))
            told_after = time.monotonic() - started
            client.shutdown()  # recv_data answered the close; close() would not close the socket now
    assert app.closes == [(1000, "")]  # the code of the peer's answer (RFC 6455 §7.1.5)
    assert told_after < 0.5  # at the answer, not once the peer closed TCP or the close timeout (1 s) passed


def test_stopping_the_server_ends_parked_clients_and_tells_the_application() -> None:
    app = Recorder()
    server = ServerThread(app)
    server.thread.start()
    assert server._ready.wait(scaled(10))
    clients = [websocket.create_connection(server.url, timeout=scaled(5)) for _ in range(5)]
    try:
        for client in clients:
            client.send("x")
            assert client.recv() == "x"
        assert server.server is not None
        pool = server.server.pool
        wait_until(lambda: pool.parked == 5)
        server.stop(timeout=0.2)  # nobody closes them: stop kills what is left
        assert not server.thread.is_alive()
        assert len(app.closes) == 5
        assert len(pool) == 0
        for client in clients:
            with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError, OSError)):
                client.recv()
                client.recv()
    finally:
        for client in clients:
            client.close()
