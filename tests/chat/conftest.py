"""The chat as a real gunicorn process on ephemeral ports, driven by outside clients.

:func:`launch_chat` starts gunicorn exactly as the README does
(``gunicorn -c gunicorn.conf.py wsgi:app``) with ``--bind 127.0.0.1:0``,
``CHAT_WS_BIND=127.0.0.1:0`` and a database in a temporary directory. It
learns the HTTP port, the worker's PID and the WebSocket port from the log,
and :meth:`ChatServer.stop` ends those two processes, by PID, and nothing else.

The clients are outside ones only: ``urllib`` for HTTP, ``websockets`` (sync)
and ``websocket-client`` for WebSocket, raw sockets for what those refuse to
do. docs/protocol.md is the contract every test checks.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import secrets
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

from tests.conftest import end_process, scaled

REPO_ROOT = Path(__file__).resolve().parents[2]

_HTTP_LISTENING = re.compile(r"Listening at: http://127\.0\.0\.1:(\d+)")
_WORKER_BOOTED = re.compile(r"Booting worker with pid: (\d+)")
_WS_LISTENING = re.compile(r"listening on wss?://127\.0\.0\.1:(\d+)/ws")

Message = dict[str, Any]


# -- the server process ---------------------------------------------------------------------------------------------


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
    )
    env.update({key: str(value) for key, value in overrides.items()})
    return env


def spawn_gunicorn(
    log_path: Path, env: dict[str, str], *args: str, nofile: int | None = None
) -> subprocess.Popen[bytes]:
    """gunicorn as the README runs it, on an ephemeral HTTP port, logging to ``log_path``.

    ``nofile`` caps its open files (``prlimit``), to run it out of descriptors.
    """
    limit = ["prlimit", f"--nofile={nofile}:{nofile}", "--"] if nofile else []
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


def process_gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (a zombie left for init counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return stat.rpartition(")")[2].split()[0] in {"Z", "X"}


def is_gunicorn(pid: int) -> bool:
    """``pid`` is still a gunicorn process (so signalling it cannot hit a recycled PID)."""
    try:
        return b"gunicorn" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return False


def wait_gone(pid: int, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for ``pid`` to end; whether it did."""
    deadline = time.monotonic() + timeout
    while not process_gone(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def kill_worker(pid: int, sig: int = signal.SIGKILL) -> None:
    """Signal a worker of ours if it is still a gunicorn process."""
    if not process_gone(pid) and is_gunicorn(pid):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


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
    directory: Path, *, db_path: Path | None = None, nofile: int | None = None, **env_overrides: object
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


@pytest.fixture
def start_chat() -> Iterator[Callable[..., ChatServer]]:
    """``start_chat(tmp_path, **env_overrides)``: a new chat, stopped at the end of the test."""
    servers: list[ChatServer] = []

    def start(
        directory: Path, *, db_path: Path | None = None, nofile: int | None = None, **env_overrides: object
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


# -- names ----------------------------------------------------------------------------------------------------------

_names = itertools.count(1)


def fresh_nick(prefix: str = "user") -> str:
    """A nick no other test uses (1-32 printable characters)."""
    return f"{prefix[:16]}-{next(_names)}-{secrets.token_hex(2)}"


def fresh_room(prefix: str = "room") -> str:
    """A room name no other test uses (``^[\\w.-]{1,64}$``)."""
    return f"{prefix[:32]}-{next(_names)}-{secrets.token_hex(3)}"


# -- HTTP -----------------------------------------------------------------------------------------------------------


def http_opener(*, cookies: bool = False) -> urllib.request.OpenerDirector:
    """An opener that ignores proxy settings and, if asked, keeps cookies like a browser."""
    handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]
    if cookies:
        handlers.append(urllib.request.HTTPCookieProcessor())
    return urllib.request.build_opener(*handlers)


def http_request(
    url: str,
    *,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    opener: urllib.request.OpenerDirector | None = None,
) -> tuple[int, Any, dict[str, str]]:
    """Status, decoded JSON body (or ``None``) and headers of one HTTP request."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    opener = opener or http_opener()
    try:
        with opener.open(request, timeout=scaled(10)) as response:
            status, raw, response_headers = response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as error:
        status, raw, response_headers = error.code, error.read(), dict(error.headers)
        error.close()
    try:
        decoded = json.loads(raw) if raw else None
    except ValueError:
        decoded = None
    return status, decoded, response_headers


def get_json(chat: ChatServer, path: str) -> tuple[int, Any]:
    status, body, _ = http_request(chat.http + path)
    return status, body


def post_session(
    chat: ChatServer, body: bytes | object, opener: urllib.request.OpenerDirector | None = None
) -> tuple[int, Any]:
    """``POST /api/session`` with ``body`` (bytes as they are, anything else as JSON)."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    status, decoded, _ = http_request(
        chat.http + "/api/session",
        method="POST",
        body=raw,
        headers={"Content-Type": "application/json"},
        opener=opener,
    )
    return status, decoded


def session(chat: ChatServer, nick: str, opener: urllib.request.OpenerDirector | None = None) -> dict[str, Any]:
    """A new session for ``nick``: ``{"nick", "token", "ws_url"}``."""
    status, body = post_session(chat, {"nick": nick}, opener)
    assert status == 200, (status, body)
    assert isinstance(body, dict)
    return body


# -- WebSocket clients ----------------------------------------------------------------------------------------------


def open_ws(url: str, **options: Any) -> ClientConnection:
    """A ``websockets`` client with bounded waits that buffers whatever arrives (never a slow reader)."""
    settings: dict[str, Any] = {
        "proxy": None,
        "open_timeout": scaled(10),
        "close_timeout": scaled(5),
        "ping_interval": None,
        "max_queue": None,
        "legacy": True,  # returns the connection; the callers close it (or use it in a with block)
    }
    settings.update(options)
    return ws_connect(url, **settings)


def recv_json(ws: ClientConnection, timeout: float | None = None) -> Message:
    """The next message as a JSON object, waiting at most ``timeout`` seconds (default 5, scaled)."""
    raw = ws.recv(timeout=scaled(5) if timeout is None else timeout)
    assert isinstance(raw, str), f"expected a text message, got {raw!r}"
    message = json.loads(raw)
    assert isinstance(message, dict), message
    return message


def recv_until(
    ws: ClientConnection,
    predicate: Callable[[Message], bool],
    timeout: float | None = None,
    skipped: list[Message] | None = None,
) -> Message:
    """The first message matching ``predicate`` within ``timeout`` seconds; the others go to ``skipped``."""
    deadline = time.monotonic() + (scaled(5) if timeout is None else timeout)
    seen: list[Message] = [] if skipped is None else skipped
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"no matching message in time; got {seen[-20:]}")
        try:
            message = recv_json(ws, remaining)
        except TimeoutError:
            raise AssertionError(f"no matching message in time; got {seen[-20:]}") from None
        if predicate(message):
            return message
        seen.append(message)


def send_json(ws: ClientConnection, payload: object) -> None:
    ws.send(json.dumps(payload))


def connect(chat: ChatServer, nick: str, **options: Any) -> tuple[ClientConnection, Message]:
    """A new session for ``nick`` and its WebSocket, past the ``hello``: ``(ws, hello)``."""
    url = session(chat, nick)["ws_url"]
    ws = open_ws(url, **options)
    try:
        hello = recv_json(ws)
    except BaseException:
        ws.close()
        raise
    assert hello.get("type") == "hello", hello
    return ws, hello


def join(
    ws: ClientConnection, room: str, since: int | None = None, timeout: float | None = None, epoch: str | None = None
) -> Message:
    """Join ``room`` (optionally ``since`` an id, of ``epoch``); the ``joined`` reply."""
    request: dict[str, Any] = {"type": "join", "room": room}
    if since is not None:
        request["since"] = since
    if epoch is not None:
        request["epoch"] = epoch
    send_json(ws, request)
    return recv_until(ws, lambda m: m.get("type") in {"joined", "error"} and m.get("room", room) == room, timeout)


def say(
    ws: ClientConnection, room: str, text: str, ref: str | int | None = None, timeout: float | None = None
) -> Message:
    """Say ``text`` in ``room`` and wait for it to come back (the ack): that ``message``."""
    ref = secrets.token_hex(8) if ref is None else ref
    send_json(ws, {"type": "say", "room": room, "text": text, "ref": ref})
    reply = recv_until(
        ws, lambda m: (m.get("type") == "message" or m.get("type") == "error") and m.get("ref") == ref, timeout
    )
    assert reply["type"] == "message", reply
    return reply


def rooms(ws: ClientConnection, timeout: float | None = None) -> Message:
    """Ask for the room list; the ``rooms`` reply (which also proves the connection is open)."""
    send_json(ws, {"type": "rooms"})
    return recv_until(ws, lambda m: m.get("type") == "rooms", timeout)


def is_message(room: str) -> Callable[[Message], bool]:
    return lambda m: m.get("type") == "message" and m.get("room") == room


def is_presence(room: str, nick: str, event: str) -> Callable[[Message], bool]:
    return lambda m: (
        m.get("type") == "presence" and m.get("room") == room and m.get("nick") == nick and m.get("event") == event
    )


@pytest.fixture
def client(chat: ChatServer) -> Iterator[Callable[..., tuple[ClientConnection, Message]]]:
    """``client(nick=None, **options)``: a connected client of the module's chat, closed at the end."""
    opened: list[ClientConnection] = []

    def make(nick: str | None = None, **options: Any) -> tuple[ClientConnection, Message]:
        ws, hello = connect(chat, nick or fresh_nick(), **options)
        opened.append(ws)
        return ws, hello

    yield make
    for ws in opened:
        ws.close()


# -- raw sockets ----------------------------------------------------------------------------------------------------

#: The sample key of RFC 6455 §1.3 and the accept value it yields.
SAMPLE_KEY = "dGhlIHNhbXBsZSBub25jZQ=="
SAMPLE_ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def handshake_request(path: str, *, host: str = "127.0.0.1", extra: str = "") -> bytes:
    """A client opening handshake (RFC 6455 §4.1) written by hand."""
    return (
        f"GET {path} HTTP/1.1\r\n"
        f"Host: {host}\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {SAMPLE_KEY}\r\n"
        "Sec-WebSocket-Version: 13\r\n"
        f"{extra}\r\n"
    ).encode()


def read_response_head(sock: socket.socket, timeout: float | None = None) -> tuple[int, bytes, bytes]:
    """Status code, head and leftover bytes of an HTTP response (``0`` if the server closed first)."""
    sock.settimeout(scaled(10) if timeout is None else timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            return 0, data, b""
        data += chunk
        assert len(data) < 65536, data[:200]
    head, _, rest = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), head, rest


def raw_status(port: int, request: bytes) -> int:
    """The status the WebSocket port answers ``request`` with, over a plain socket."""
    with socket.create_connection(("127.0.0.1", port), timeout=scaled(10)) as sock:
        sock.sendall(request)
        status, _, _ = read_response_head(sock)
        return status


def client_frame(opcode: int, payload: bytes) -> bytes:
    """A final, masked client frame (RFC 6455 §5.2), independent of the project's encoder."""
    n = len(payload)
    if n < 126:
        head = bytes([0x80 | opcode, 0x80 | n])
    elif n < 0x10000:
        head = bytes([0x80 | opcode, 0x80 | 126]) + struct.pack("!H", n)
    else:
        head = bytes([0x80 | opcode, 0x80 | 127]) + struct.pack("!Q", n)
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


@dataclass
class RawClient:
    """A WebSocket client on a bare socket: it reads frames only when told, and never answers pings."""

    sock: socket.socket
    buffer: bytes = b""

    @classmethod
    def open(cls, ws_url: str, *, rcvbuf: int | None = None) -> RawClient:
        """Connect to ``ws_url`` (``ws://127.0.0.1:PORT/ws?token=…``) and complete the handshake."""
        rest = ws_url.removeprefix("ws://")
        hostport, _, path = rest.partition("/")
        port = int(hostport.rpartition(":")[2])
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        try:
            sock.settimeout(scaled(10))
            sock.connect(("127.0.0.1", port))
            sock.sendall(handshake_request("/" + path))
            status, head, rest_bytes = read_response_head(sock)
            assert status == 101, head
            assert SAMPLE_ACCEPT.encode() in head, head
        except BaseException:
            sock.close()
            raise
        return cls(sock, rest_bytes)

    def send(self, opcode: int, payload: bytes) -> None:
        self.sock.sendall(client_frame(opcode, payload))

    def send_json(self, payload: object) -> None:
        self.send(0x1, json.dumps(payload).encode())

    def _fill(self, n: int, deadline: float) -> bool:
        """Read until ``n`` bytes are buffered; False on EOF or a reset."""
        while len(self.buffer) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no complete frame in time")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                return False
            if not chunk:
                return False
            self.buffer += chunk
        return True

    def recv_frame(self, timeout: float | None = None) -> tuple[int, bytes] | None:
        """The next server frame as ``(opcode, payload)``; ``None`` once the server closed TCP."""
        deadline = time.monotonic() + (scaled(10) if timeout is None else timeout)
        if not self._fill(2, deadline):
            return None
        opcode, length = self.buffer[0] & 0x0F, self.buffer[1] & 0x7F
        assert not self.buffer[1] & 0x80, "a server frame must not be masked (RFC 6455 §5.1)"
        offset = 2
        if length == 126:
            if not self._fill(4, deadline):
                return None
            (length,) = struct.unpack("!H", self.buffer[2:4])
            offset = 4
        elif length == 127:
            if not self._fill(10, deadline):
                return None
            (length,) = struct.unpack("!Q", self.buffer[2:10])
            offset = 10
        if not self._fill(offset + length, deadline):
            return None
        payload = self.buffer[offset : offset + length]
        self.buffer = self.buffer[offset + length :]
        return opcode, payload

    def close(self) -> None:
        self.sock.close()


def close_code(payload: bytes) -> int | None:
    """The status code of a close frame's payload (RFC 6455 §5.5.1)."""
    return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
