"""The pages people see: the landing page, the chat page and the health check.

The pages are static HTML plus plain JavaScript modules (``static/``); what
the scripts need from the server travels in ``data-*`` attributes, never in
inline scripts, so the Content-Security-Policy can forbid those. Every page
response carries that policy: scripts, styles and connections to this origin
only, plus the WebSocket server's origin (another port, or a public URL).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Blueprint, Flask, Response, current_app, jsonify, redirect, render_template, request, session, url_for
from flask.typing import ResponseReturnValue

from app.chat.protocol import valid_room

from .sessions import ws_base

__all__ = ["content_security_policy", "init_app", "ws_origin"]

bp = Blueprint("pages", __name__)


def ws_origin() -> str:
    """The WebSocket server's origin (scheme, host, port) as this request's browser reaches it."""
    parts = urlsplit(ws_base())
    return f"{parts.scheme}://{parts.netloc}"


def content_security_policy() -> str:
    """This app's scripts and styles only, no inline code, connections to itself and the WebSocket server."""
    return "; ".join(
        (
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data:",
            f"connect-src 'self' {ws_origin()}",
            "frame-ancestors 'none'",
            "base-uri 'none'",
            "form-action 'self'",
        )
    )


@bp.after_request
def security_headers(response: Response) -> Response:
    """The CSP and ``nosniff`` on every page."""
    response.headers["Content-Security-Policy"] = content_security_policy()
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers.setdefault("Referrer-Policy", "same-origin")
    return response


def requested_room() -> str:
    """The ``?room=`` of this request if it is a valid room name, else ``""``."""
    room = request.args.get("room", "")
    return room if valid_room(room) else ""


@bp.get("/")
def index() -> ResponseReturnValue:
    """The landing page: pick a nick, see the rooms, join one."""
    chat_service = current_app.extensions["chat"]
    account = bool(session.get("acct"))
    if account and not chat_service.accounts.current(session["acct"], session.get("gen", 0)):
        session.clear()  # signed out everywhere since
        account = False
    return render_template(
        "index.html",
        nick=session.get("nick", ""),
        room=requested_room() or "lobby",
        account=account,
        guests=chat_service.accounts.guests,
    )


@bp.get("/chat")
def chat() -> ResponseReturnValue:
    """The chat page, for a browser whose session has a nick; others pick one first."""
    nick = session.get("nick")
    room = requested_room()
    if not isinstance(nick, str) or not nick:
        return redirect(url_for("pages.index", room=room or None))
    settings = current_app.config["CHAT_SETTINGS"]
    return render_template("chat.html", nick=nick, room=room, ws_origin=ws_origin(), max_text=settings.max_text)


@bp.get("/healthz")
def healthz() -> ResponseReturnValue:
    """Liveness: the web app answers."""
    return jsonify(status="ok")


def init_app(app: Flask) -> None:
    """Register the pages on ``app``."""
    app.register_blueprint(bp)
