"""The HTTP API: accounts, sessions, rooms, history and the push API (docs/protocol.md §1, §6, §7).

Every refusal is a :class:`~app.chat.protocol.ChatError` (its code and HTTP
status) or a :class:`~app.chat.store.HistoryError` (503), raised by the
checks the WebSocket shares and answered by this blueprint's one handler as
``{"error": code, "message": text}``.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Any
from urllib.parse import quote

from flask import Blueprint, Flask, current_app, jsonify, request, session
from flask.typing import ResponseReturnValue

from app.chat import events
from app.chat.accounts import Accounts, account_key
from app.chat.auth import Identity, TokenSigner
from app.chat.protocol import ChatError, check_nick, check_room
from app.chat.service import ChatService
from app.chat.store import HistoryError

from .sessions import ws_base

bp = Blueprint("api", __name__, url_prefix="/api")

MAX_HISTORY_PAGE = 1000
MAX_SEARCH_RESULTS = 200


#: Seconds a 503 tells the client to wait before trying again (a client adds jitter: docs/protocol.md §1.2).
UNAVAILABLE_RETRY_AFTER = 5


def error(status: int, code: str, message: str) -> ResponseReturnValue:
    """A JSON error: ``{"error": code, "message": message}``."""
    return jsonify(error=code, message=message), status


@bp.errorhandler(ChatError)
def refused(exc: ChatError) -> ResponseReturnValue:
    """The API's one answer to a refusal: the code, the message, the status (and when to try again)."""
    retry_after = exc.retry_after or (UNAVAILABLE_RETRY_AFTER if exc.status == 503 else 0)
    headers = {"Retry-After": str(retry_after)} if retry_after else {}
    return jsonify(error=exc.code, message=exc.message), exc.status, headers


@bp.errorhandler(HistoryError)
def history_unavailable(exc: HistoryError) -> ResponseReturnValue:
    message = "the history is unavailable, try again"
    return jsonify(error="unavailable", message=message), 503, {"Retry-After": str(UNAVAILABLE_RETRY_AFTER)}


def json_object(example: str) -> dict[str, Any]:
    """The request's JSON object body; else ``invalid_json``, showing ``example``."""
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise ChatError("invalid_json", f"send a JSON object like {example}")
    return data


def chat() -> ChatService:
    return current_app.extensions["chat"]


def ws_url(token: str) -> str:
    """Where this client connects, with its token."""
    return f"{ws_base()}?token={quote(token)}"


def accounts() -> Accounts:
    accounts = chat().accounts
    assert accounts is not None, "the app's chat service has accounts"
    return accounts


def signed_in() -> Identity | None:
    """The account this browser session is signed in as, if its sign-in still holds."""
    identity = Identity.from_claims(dict(session))
    if identity is None or identity.account is None:
        return None
    if not accounts().current(identity.account, identity.generation):
        session.clear()  # signed out everywhere since
        return None
    return identity


def reader() -> str | None:
    """The account name of the browser asking, to decide which private rooms it may see (None: a guest, or no one)."""
    identity = signed_in()
    return identity.nick if identity is not None and identity.account is not None else None


def welcome(identity: Identity, status: int = 200) -> ResponseReturnValue:
    """Keep ``identity`` in the session cookie; answer with a token and the WebSocket URL."""
    session.clear()
    session.permanent = True
    session.update(identity.to_claims())
    signer: TokenSigner = current_app.extensions["chat_tokens"]
    token = signer.issue(identity)
    body = {"nick": identity.nick, "account": identity.account is not None, "token": token, "ws_url": ws_url(token)}
    return jsonify(body), status


@bp.post("/session")
def create_session() -> ResponseReturnValue:
    """A token to connect with: for the signed-in account, else for a guest's nick (and the session cookie)."""
    identity = signed_in()
    if identity is None:
        nick = check_nick(json_object('{"nick": "alice"}').get("nick"))
        if not accounts().guests:
            raise ChatError("guests_disabled", "sign in to chat: guests are not allowed here")
        sid = session.get("sid") if not session.get("acct") else None
        identity = Identity(nick, sid or secrets.token_urlsafe(16))
    refusal = chat().refusal(identity)
    if refusal is not None:
        raise refusal
    if chat().busy():  # its WebSocket would be refused: say so now, and when to come back
        raise ChatError("busy", "the chat is full right now: try again shortly", retry_after=UNAVAILABLE_RETRY_AFTER)
    return welcome(identity)


@bp.post("/accounts")
def register() -> ResponseReturnValue:
    """Register a name with a password, and sign in (201)."""
    data = json_object('{"name": "alice", "password": "…"}')
    name = check_nick(data.get("name"), "name")
    if chat().nick_taken(Identity(name, "")):  # a guest chats under it now: not taken from under them
        raise ChatError("nick_taken", f"{name!r} is in use right now")
    account = accounts().register(name, data.get("password"), request.remote_addr or "")
    return welcome(Identity.of_account(account.name, account_key(account.name), account.generation), 201)


@bp.post("/login")
def login() -> ResponseReturnValue:
    """Sign in with a name and a password."""
    data = json_object('{"name": "alice", "password": "…"}')
    account = accounts().sign_in(data.get("name"), data.get("password"), request.remote_addr or "")
    return welcome(Identity.of_account(account.name, account_key(account.name), account.generation))


@bp.get("/me")
def me() -> ResponseReturnValue:
    """Who this browser session is: an account, a guest's nick, or nobody yet."""
    identity = signed_in()
    if identity is not None:
        return jsonify(nick=identity.nick, account=True)
    nick = session.get("nick") if not session.get("acct") else None
    return jsonify(nick=nick, account=False, guests=accounts().guests)


@bp.post("/logout")
def logout() -> ResponseReturnValue:
    """Forget this browser's sign-in (its open connections stay until they close)."""
    session.clear()
    return jsonify(signed_out=True)


@bp.post("/logout-everywhere")
def logout_everywhere() -> ResponseReturnValue:
    """Revoke every sign-in of this account, on every browser, and close its connections (4002)."""
    identity = signed_in()
    if identity is None or identity.account is None:
        raise ChatError("unauthorized", "sign in first")
    closed = chat().sign_out_everywhere(identity.account)
    session.clear()
    return jsonify(signed_out=True, closed=closed)


@bp.get("/rooms")
def rooms() -> ResponseReturnValue:
    """Every public room with members or history, and the private rooms of the browser's account."""
    return jsonify(rooms=chat().room_list(reader()))


def _int_arg(name: str, default: int | None, maximum: int | None = None) -> int | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit():
        raise ChatError("invalid_query", f"{name} must be a non-negative integer")
    value = int(raw)
    if maximum is not None and not 1 <= value <= maximum:
        raise ChatError("invalid_query", f"{name} must be between 1 and {maximum}")
    return value


@bp.get("/search")
def search() -> ResponseReturnValue:
    """Full-text search of the history (docs/protocol.md §6), for a browser session that chats."""
    if not session.get("nick"):
        raise ChatError("unauthorized", "pick a nick or sign in first")
    room = request.args.get("room") or None
    if room is not None:
        check_room(room)
    limit = _int_arg("limit", 50, MAX_SEARCH_RESULTS)
    assert limit is not None
    found = chat().search(request.args.get("q", ""), room, limit, reader())
    return jsonify(query=request.args.get("q", ""), results=[events.message_fields(m) for m in found])


@bp.get("/rooms/<room>/messages")
def messages(room: str) -> ResponseReturnValue:
    """A room's history: after ``since``, or the last ``limit`` messages."""
    check_room(room)
    since = _int_arg("since", None)
    limit = _int_arg("limit", 50, MAX_HISTORY_PAGE)
    assert limit is not None
    chat().check_readable(room, reader())  # a private room, to anyone but its members: 404, as no room
    found = chat().messages(room, since, limit)
    # Read after the messages: should the history restart in between, the
    # page is labelled with the new epoch, which the caller then refuses.
    epoch = chat().epoch(room)
    return jsonify(room=room, epoch=epoch, messages=found)


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
        raise ChatError("too_large", f"the body is over {MAX_PUSH_BODY} bytes")
    data = json_object('{"text": "hello", "from": "bot"}')
    stored = chat().post(room, data.get("text"), data.get("from", "api"))  # it checks room, text and sender
    return jsonify(id=stored.id), 202


def init_app(app: Flask) -> None:
    """Register the API on ``app``."""
    app.register_blueprint(bp)
