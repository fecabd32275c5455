"""The chat in the test's own process: its web app and WebSocket server, on a thread with its own gevent hub.

Nothing is monkey-patched: the server runs in a thread of its own, whose
gevent hub (one per thread) serves the Flask app (``gevent.pywsgi``) and the
chat's :class:`~app.server.chat.ChatServer` on ephemeral ports of 127.0.0.1,
wired as :func:`app.runtime.start_chat` wires them, minus what only a server
process wants (its log format, ``gc.freeze``). Everything the app does runs on
that thread; the tests talk to it only over sockets, from the main thread,
with the same outside clients as against gunicorn (``urllib``,
``websockets``, raw sockets). :meth:`InProcessChat.stop` asks that thread to
stop the chat with its own ``stop(timeout)`` (1012 to every client, the
history committed) and joins it.

Settings come from the same ``CHAT_*`` names as the gunicorn process's
(:func:`tests.support.gunicorn.server_environment`), so a test reads the same
against either.
"""

from __future__ import annotations

import secrets
import threading
from pathlib import Path

import gevent
from gevent.pywsgi import WSGIServer

from app import create_app
from app.config import Settings
from app.runtime import web_origins
from app.server.chat import ChatServer
from app.web.sessions import websocket_authenticator
from tests.support.timeouts import scaled

#: Seconds between two looks of the server's thread at whether it is asked to stop.
_POLL = 0.02


def chat_settings(db_path: Path, **env_overrides: object) -> Settings:
    """The chat's ``Settings`` from ``CHAT_*`` overrides, with the test defaults of a gunicorn chat.

    Ephemeral WebSocket port, a database at ``db_path``, a secret key of its
    own, no rate limit and no per-address limit unless set (many tests send
    faster than a person, and every client comes from 127.0.0.1), no drain
    window unless set (every stop would wait for it).
    """
    environ = {
        "CHAT_WS_BIND": "127.0.0.1:0",
        "CHAT_DB": str(db_path),
        "CHAT_SECRET_KEY": secrets.token_hex(32),
        "CHAT_MESSAGE_RATE": "0",
        "CHAT_MAX_CONNECTIONS_PER_ADDRESS": "0",
        "CHAT_DRAIN_SECONDS": "0",
    }
    environ.update({key: str(value) for key, value in env_overrides.items()})
    return Settings.from_env(environ)


class InProcessChat:
    """A running chat in this process: its URLs and ports, as :class:`tests.support.gunicorn.ChatServer` has."""

    def __init__(self, db_path: Path, settings: Settings) -> None:
        self.db_path = db_path
        self.settings = settings
        self.http_port = 0
        self.ws_port = 0
        #: the running ChatServer, to look at (never to drive) from the test's thread
        self.server: ChatServer | None = None
        self._ready = threading.Event()
        self._stopping = threading.Event()
        self._failure: BaseException | None = None
        self._stop_timeout = 5.0
        self._thread = threading.Thread(target=self._serve, name=f"chat-{db_path.parent.name}", daemon=True)

    @classmethod
    def launch(cls, directory: Path, *, db_path: Path | None = None, **env_overrides: object) -> InProcessChat:
        """Start a chat whose database is ``db_path`` (default ``directory/chat.db``); ready once both ports are."""
        db_path = db_path or directory / "chat.db"
        chat = cls(db_path, chat_settings(db_path, **env_overrides))
        chat.start()
        return chat

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def ws_base(self) -> str:
        return f"ws://127.0.0.1:{self.ws_port}/ws"

    def alive(self) -> bool:
        return self._thread.is_alive() and not self._stopping.is_set()

    def start(self, timeout: float | None = None) -> None:
        self._thread.start()
        if not self._ready.wait(scaled(15) if timeout is None else timeout) or self._failure is not None:
            self.stop()
            raise AssertionError("the in-process chat did not start") from self._failure

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the chat (its ``stop(timeout)``: 1012 to every client, the history committed) and its thread."""
        self._stop_timeout = timeout
        self._stopping.set()
        if self._thread.ident is not None:
            self._thread.join(timeout + scaled(10))
            assert not self._thread.is_alive(), "the in-process chat did not stop"
        if self._failure is not None:
            raise AssertionError("the in-process chat failed") from self._failure

    def _serve(self) -> None:
        """The server's thread: build, serve until asked to stop, stop; everything on this thread's hub."""
        http: WSGIServer | None = None
        chat: ChatServer | None = None
        try:
            app = create_app(self.settings)
            http = WSGIServer(("127.0.0.1", 0), app, log=None)
            http.start()
            self.http_port = http.server_port
            chat = ChatServer(
                app.extensions["chat"],
                self.settings,
                websocket_authenticator(app),
                allowed_origins=self.settings.origins or web_origins([self.http]),
            )
            chat.start()
            self.server = chat
            if not self.settings.ws_public_url:
                app.config["CHAT_WS_URL"] = chat.url
            self.ws_port = chat.address[1]
            self._ready.set()
            while not self._stopping.is_set():
                gevent.sleep(_POLL)
        except BaseException as error:
            self._failure = error
        finally:
            try:
                if chat is not None:
                    chat.stop(timeout=self._stop_timeout)
                if http is not None:
                    http.stop(timeout=self._stop_timeout)
            except BaseException as error:
                self._failure = self._failure or error
            finally:
                self._ready.set()
                gevent.get_hub().destroy(destroy_loop=True)
