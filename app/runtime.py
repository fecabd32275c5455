"""Wiring one process: the Flask app and the chat's WebSocket server side by side.

gunicorn's gevent worker calls :func:`start_chat` from ``gunicorn.conf.py``
(so the web app and the WebSocket server share the room state in memory);
``python wsgi.py`` runs both without gunicorn, for development.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterable
from urllib.parse import urlsplit

import gevent
from flask import Flask

from app import logs
from app.server.chat import ChatServer
from app.server.listener import shared_listener
from app.web.sessions import websocket_authenticator

__all__ = ["start_chat", "web_origins"]

log = logging.getLogger(__name__)


def web_origins(urls: Iterable[str]) -> frozenset[str]:
    """The browser origins of the web app's listening URLs (``localhost`` too for loopback)."""
    origins = set()
    for url in urls:
        parts = urlsplit(url)
        if not parts.hostname or parts.port is None:
            continue
        origins.add(f"{parts.scheme}://{parts.netloc}")
        if parts.hostname in ("127.0.0.1", "::1", "0.0.0.0", "::"):
            origins.add(f"{parts.scheme}://localhost:{parts.port}")
            origins.add(f"{parts.scheme}://127.0.0.1:{parts.port}")
    return frozenset(origins)


def start_chat(app: Flask, web_urls: Iterable[str]) -> ChatServer:
    """Start the chat's WebSocket server for ``app``; it serves until :meth:`ChatServer.stop`."""
    settings = app.config["CHAT_SETTINGS"]
    logs.configure(settings.log_format)
    # Spawning greenlets without recording their spawn tree saves memory on
    # each of the thousands of client greenlets; nothing here walks that tree.
    gevent.config.track_greenlet_tree = False
    # With Redis, every worker listens on the same port (SO_REUSEPORT: the
    # kernel spreads connections over them). Without, a second chat on the
    # port would split the rooms: binding fails instead.
    listener = shared_listener(settings.ws_bind) if settings.redis_url else None
    server = ChatServer(
        app.extensions["chat"],
        settings,
        websocket_authenticator(app),
        allowed_origins=settings.origins or web_origins(web_urls),
        listener=listener,
    )
    # What exists now (modules, the app, templates: some 40,000 objects) is
    # never garbage. Frozen, a full collection no longer walks it on every
    # pass: with 2,000 clients such a pass held every message up for 15 to
    # 40 ms on the benchmark's machine.
    gc.freeze()
    server.start()
    if not settings.ws_public_url:
        app.config["CHAT_WS_URL"] = server.url
    log.info("chat: browsers allowed from %s", ", ".join(sorted(server.allowed_origins)) or "nowhere")
    return server
