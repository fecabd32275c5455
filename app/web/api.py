"""The HTTP API: sessions, rooms and history (docs/protocol.md §1, §6)."""

from __future__ import annotations

import hmac
import secrets
from typing import Any
from urllib.parse import quote

from flask import Blueprint, Flask, current_app, jsonify, request, session
from flask.typing import ResponseReturnValue

from app.chat.auth import Identity, TokenSigner
from app.chat.history import HistoryError
from app.chat.protocol import ChatError, valid_nick, valid_room
from app.chat.service import ChatService

from .sessions import ws_base

bp = Blueprint("api", __name__, url_prefix="/api")

MAX_HISTORY_PAGE = 1000


def error(status: int, code: str, message: str) -> ResponseReturnValue:
    """A JSON error: ``{"error": code, "message": message}``."""
    return jsonify(error=code, message=message), status


def chat() -> ChatService:
    return current_app.extensions["chat"]


def ws_url(token: str) -> str:
    """Where this client connects, with its token."""
    return f"{ws_base()}?token={quote(token)}"


@bp.post("/session")
def create_session() -> ResponseReturnValue:
    """Pick a nick: a signed token and the WebSocket URL (and the session cookie)."""
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        return error(400, "invalid_json", 'send a JSON object like {"nick": "alice"}')
    nick = data.get("nick")
    if not isinstance(nick, str) or not valid_nick(nick):
        return error(400, "invalid_nick", "nicks are 1-32 printable characters, without leading or trailing spaces")
    if chat().is_banned(nick):
        return error(403, "banned", f"{nick!r} is banned for now")
    sid = session.get("sid") or secrets.token_urlsafe(16)
    identity = Identity(nick, sid)
    if chat().nick_taken(identity):
        return error(409, "nick_taken", f"{nick!r} is in use by someone else")
    session.permanent = True
    session["sid"], session["nick"] = sid, nick
    signer: TokenSigner = current_app.extensions["chat_tokens"]
    token = signer.issue(identity)
    return jsonify(nick=nick, token=token, ws_url=ws_url(token))


@bp.get("/rooms")
def rooms() -> ResponseReturnValue:
    """Every room with members or history."""
    return jsonify(rooms=chat().room_list())


def _int_arg(name: str, default: int | None, maximum: int | None = None) -> int | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit():
        raise ValueError(f"{name} must be a non-negative integer")
    value = int(raw)
    if maximum is not None and not 1 <= value <= maximum:
        raise ValueError(f"{name} must be between 1 and {maximum}")
    return value


@bp.get("/rooms/<room>/messages")
def messages(room: str) -> ResponseReturnValue:
    """A room's history: after ``since``, or the last ``limit`` messages."""
    if not valid_room(room):
        return error(400, "invalid_room", "room names are 1-64 letters, digits, '_', '.' or '-'")
    try:
        since = _int_arg("since", None)
        limit = _int_arg("limit", 50, MAX_HISTORY_PAGE)
    except ValueError as exc:
        return error(400, "invalid_query", str(exc))
    assert limit is not None
    try:
        found = chat().messages(room, since, limit)
        # Read after the messages: should the history restart in between, the
        # page is labelled with the new epoch, which the caller then refuses.
        epoch = chat().epoch(room)
    except HistoryError:
        return error(503, "unavailable", "history is unavailable, try again")
    payload: dict[str, Any] = {"room": room, "epoch": epoch, "messages": [m.to_json() for m in found]}
    return jsonify(payload)


#: The largest push request body, in bytes (larger: 413).
MAX_PUSH_BODY = 64 * 1024


@bp.post("/rooms/<room>/messages")
def push(room: str) -> ResponseReturnValue:
    """A backend's message into a room: stored, then delivered like any other (202)."""
    token = current_app.config["CHAT_SETTINGS"].api_token
    if not token:
        return error(404, "not_found", "the push API is disabled (set CHAT_API_TOKEN)")
    scheme, _, given = (request.headers.get("Authorization") or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        response = jsonify(error="unauthorized", message="Authorization: Bearer <CHAT_API_TOKEN> is required")
        return response, 401, {"WWW-Authenticate": 'Bearer realm="chat"'}
    if (request.content_length or 0) > MAX_PUSH_BODY:
        return error(413, "too_large", f"the body is over {MAX_PUSH_BODY} bytes")
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        return error(400, "invalid_json", 'send a JSON object like {"text": "hello", "from": "bot"}')
    text, nick = data.get("text"), data.get("from", "api")
    if not isinstance(text, str):
        return error(400, "invalid_field", "text is required and must be a string")
    if not isinstance(nick, str):
        return error(400, "invalid_field", "from must be a string")
    try:
        stored = chat().post(room, text, nick)
    except ChatError as exc:
        status = 413 if exc.code == "text_too_long" else 400
        return error(status, exc.code, exc.message)
    except HistoryError:
        return error(503, "unavailable", "the message could not be stored, try again")
    return jsonify(id=stored.id), 202


def init_app(app: Flask) -> None:
    """Register the API on ``app``."""
    app.register_blueprint(bp)
