"""A real-time, multi-room chat server on gevent.

:func:`create_app` builds the Flask application (pages, admin, HTTP API). It
starts no servers and does no network I/O: the WebSocket server is started by
the process that serves the app (``gunicorn.conf.py`` or ``python -m app``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # Flask is imported when an app is made: see create_app
    from flask import Flask

from .config import Settings

__all__ = ["create_app"]


def create_app(settings: Settings | None = None, **overrides: Any) -> Flask:
    """The Flask application, configured from ``settings`` (default: the environment)."""
    # Not at the top: gunicorn's master imports app.config and app.logs, and
    # must not import Flask. Its worker monkey-patches with gevent and only
    # then makes the app; a Flask imported before that outlives gevent at the
    # worker's exit, and freeing its logging handler then prints
    # "Exception ignored in: <function _removeHandlerRef>" (gunicorn.conf.py).
    from flask import Flask

    settings = settings or Settings.from_env(**overrides)
    app = Flask(__name__, template_folder="../templates", static_folder="../static")
    app.config.update(
        SECRET_KEY=settings.secret_key,
        CHAT_SETTINGS=settings,
        PERMANENT_SESSION_LIFETIME=settings.token_ttl,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SECURE=settings.secure,
    )

    from .chat import build_service
    from .chat.auth import TokenSigner
    from .web import admin, api, ops, pages, security

    app.extensions["chat"] = build_service(settings)
    app.extensions["chat_tokens"] = TokenSigner(settings.secret_key, settings.token_ttl)
    pages.init_app(app)
    api.init_app(app)
    admin.init_app(app)
    ops.init_app(app)
    security.init_app(app)
    return app
