"""The admin area: a live page and a JSON API for operators (docs/admin.md).

Everything under ``/admin`` is 404 while ``CHAT_ADMIN_PASSWORD`` is empty.

Who is the admin:

- a browser logs in with the form at ``/admin/login``; the session then holds
  ``admin``, a keyed fingerprint of the password (so changing the password
  logs every browser out), and ``admin_csrf``, a random token;
- a script sends HTTP Basic credentials (user ``admin``) to ``/admin/api/``.

Cross-site request forgery: a state-changing request authenticated by the
session must carry the token (form field ``csrf_token`` or header
``X-CSRF-Token``), else 403. Basic-authenticated requests need none; but since
browsers replay cached Basic credentials, every state-changing request a
browser marks as cross-site (``Sec-Fetch-Site``, ``Origin``) is refused (403),
and the API reads JSON bodies only, which a cross-site form cannot send.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from typing import Any
from urllib.parse import urlsplit

import gevent
from flask import Blueprint, Flask, abort, current_app, jsonify, redirect, render_template, request, session, url_for
from flask.typing import ResponseReturnValue
from werkzeug.wrappers import Response

from app.chat.limits import RateLimiter
from app.chat.protocol import ChatError, check_nick, check_text, valid_room
from app.chat.service import ChatService

from .api import error

__all__ = ["init_app"]

log = logging.getLogger(__name__)

bp = Blueprint("admin", __name__, url_prefix="/admin")
api = Blueprint("api", __name__, url_prefix="/api")

#: The Basic auth user name; the password is ``CHAT_ADMIN_PASSWORD``.
ADMIN_USER = "admin"
CHALLENGE = 'Basic realm="chat admin"'
#: Seconds a wrong password waits before its answer: friction for guessing.
FAILED_LOGIN_DELAY = 0.5
#: Wrong passwords an address may try at once, then one per FAILURE_INTERVAL seconds (429 meanwhile).
FAILURE_BURST = 5
FAILURE_INTERVAL = 12.0
#: The longest ban, in seconds (a year).
MAX_BAN_SECONDS = 365 * 24 * 3600
KICK_REASON = "disconnected by an admin"
#: The largest API request body, in bytes (larger: 413).
MAX_BODY = 64 * 1024
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: The fields of a client in ``GET /admin/api/clients``, in order.
CLIENT_FIELDS = (
    "id",
    "node",
    "nick",
    "addr",
    "user_agent",
    "rooms",
    "private_rooms",
    "connected_at",
    "msgs_in",
    "msgs_out",
    "bytes_in",
    "bytes_out",
    "buffered",
    "rtt_ms",
)
#: The admin pages run only their own static script and styles.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def chat() -> ChatService:
    return current_app.extensions["chat"]


def _password() -> str:
    return current_app.config["CHAT_SETTINGS"].admin_password


def _same(given: str, expected: str) -> bool:
    """Constant-time equality of two strings (any characters, unlike ``compare_digest`` on str)."""
    return hmac.compare_digest(given.encode(), expected.encode())


def _fingerprint() -> str:
    """What the session holds for a logged-in admin: the password, keyed with the secret key."""
    key = current_app.config["CHAT_SETTINGS"].secret_key.encode()
    return hmac.new(key, b"chat admin\0" + _password().encode(), hashlib.sha256).hexdigest()


def _session_is_admin() -> bool:
    mark = session.get("admin")
    return isinstance(mark, str) and _same(mark, _fingerprint())


def _basic_credentials() -> bool | None:
    """None without Basic credentials; else whether they are the admin's."""
    auth = request.authorization
    if auth is None or auth.type != "basic":
        return None
    return _same(auth.username or "", ADMIN_USER) and _same(auth.password or "", _password())


def csrf_token() -> str:
    """This session's CSRF token, created on first use."""
    token = session.get("admin_csrf")
    if not isinstance(token, str) or not token:
        token = session["admin_csrf"] = secrets.token_urlsafe(32)
    return token


def _csrf_ok(given: str | None) -> bool:
    expected = session.get("admin_csrf")
    return isinstance(given, str) and isinstance(expected, str) and bool(expected) and _same(given, expected)


def _cross_site() -> bool:
    """Whether a browser says this request comes from another site."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site not in ("same-origin", "none"):
        return True
    origin = request.headers.get("Origin")
    if origin is None:
        return False  # not a browser, or a same-origin GET
    allowed = current_app.config["CHAT_SETTINGS"].origins
    return origin.rstrip("/") not in allowed and urlsplit(origin).netloc != request.host


def _slow_down() -> None:
    """A wrong password: count it against the address, and answer late."""
    log.warning("admin: wrong password from %s", request.remote_addr)
    _failures().check(request.remote_addr or "")
    gevent.sleep(FAILED_LOGIN_DELAY)


def _failures() -> RateLimiter:
    """Wrong passwords per remote address: a few at once, then one per :data:`FAILURE_INTERVAL`."""
    limiter = current_app.extensions.get("admin_failures")
    if limiter is None:
        limiter = current_app.extensions["admin_failures"] = RateLimiter(1 / FAILURE_INTERVAL, FAILURE_BURST)
    return limiter


def _locked_out() -> ResponseReturnValue | None:
    """429 while this address has used up its wrong passwords (checked before the password is)."""
    wait = _failures().wait(request.remote_addr or "")
    if wait <= 0:
        return None
    retry = {"Retry-After": str(int(wait) + 1)}
    if request.blueprint == "admin.api":
        return (
            jsonify(error="too_many_attempts", message="too many wrong passwords from this address; wait"),
            429,
            retry,
        )
    message = "Too many wrong passwords from this address. Wait a minute and try again.\n"
    return message, 429, {**retry, "Content-Type": "text/plain; charset=utf-8"}


# -- the whole tree ---------------------------------------------------------------------------------------------------


@bp.before_request
def _gate() -> ResponseReturnValue | None:
    """No password: nothing here (404). A state-changing request from another site: 403."""
    if not _password():
        if request.blueprint == "admin.api":
            return error(404, "not_found", "the admin API is disabled (set CHAT_ADMIN_PASSWORD)")
        abort(404)
    if request.method not in SAFE_METHODS and _cross_site():
        if request.blueprint == "admin.api":
            return error(403, "cross_site", "requests from other sites are refused")
        return _text(403, "Requests from other sites are refused.")
    return None


@bp.after_request
def _headers(response: Response) -> Response:
    """Nothing here may be cached, framed by another site, or run inline code."""
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    response.headers.setdefault("Referrer-Policy", "same-origin")
    return response


def _text(status: int, message: str) -> ResponseReturnValue:
    return message + "\n", status, {"Content-Type": "text/plain; charset=utf-8"}


# -- the pages --------------------------------------------------------------------------------------------------------


@bp.get("/")
@bp.get("")
def index() -> ResponseReturnValue:
    """The live page; the login form for a browser that is not logged in."""
    if not _session_is_admin():
        return redirect(url_for(".login"))
    return render_template("admin.html", csrf_token=csrf_token())


def _login_form(message: str | None = None, status: int = 200) -> ResponseReturnValue:
    return render_template("admin_login.html", error=message, csrf_token=csrf_token()), status


@bp.route("/login", methods=["GET", "POST"])
def login() -> ResponseReturnValue:
    """The login form; a right password sets the session's admin flag and a fresh CSRF token."""
    if request.method == "GET":
        return redirect(url_for(".index")) if _session_is_admin() else _login_form()
    if not _csrf_ok(request.form.get("csrf_token")):
        return _login_form("The form had expired. Please try again.", 403)
    locked = _locked_out()
    if locked is not None:
        return locked
    if not _same(request.form.get("password", ""), _password()):
        _slow_down()
        return _login_form("Wrong password.", 401)
    session["admin"] = _fingerprint()
    session["admin_csrf"] = secrets.token_urlsafe(32)  # a new privilege, a new token
    log.warning("admin: logged in from %s", request.remote_addr)
    return redirect(url_for(".index"), 303)


@bp.post("/logout")
def logout() -> ResponseReturnValue:
    """Forget the admin flag and the token (the chat session, if any, stays)."""
    if _session_is_admin() and not _csrf_ok(request.form.get("csrf_token") or request.headers.get("X-CSRF-Token")):
        return _text(403, "Missing or wrong CSRF token: reload the admin page and try again.")
    session.pop("admin", None)
    session.pop("admin_csrf", None)
    return redirect(url_for(".login"), 303)


# -- the API ----------------------------------------------------------------------------------------------------------


def _unauthorized(message: str) -> ResponseReturnValue:
    response = jsonify(error="unauthorized", message=message)
    # admin.js says who it is, so that an expired session sends it to the login
    # form instead of making the browser pop up its Basic auth dialog.
    if request.headers.get("X-Requested-With") != "XMLHttpRequest":
        response.headers["WWW-Authenticate"] = CHALLENGE
    return response, 401


@api.before_request
def _authenticate() -> ResponseReturnValue | None:
    """Basic credentials, or the admin session plus its CSRF token for state changes."""
    if request.authorization is not None:
        locked = _locked_out()
        if locked is not None:
            return locked
    basic = _basic_credentials()
    if basic is False:
        _slow_down()
        return _unauthorized("wrong user or password")
    if basic:
        return None
    if not _session_is_admin():
        return _unauthorized("log in at /admin/login, or use HTTP Basic auth (user admin)")
    if request.method not in SAFE_METHODS and not _csrf_ok(request.headers.get("X-CSRF-Token")):
        return error(403, "csrf", "missing or wrong X-CSRF-Token header: reload the admin page")
    return None


@api.errorhandler(ChatError)
def _refused(exc: ChatError) -> ResponseReturnValue:
    """The admin API's one answer to a refusal: the code, the message, the status."""
    return error(exc.status, exc.code, exc.message)


def _json_object() -> dict[str, Any]:
    """The request's JSON object; anything else is refused."""
    if (request.content_length or 0) > MAX_BODY:
        raise ChatError("too_large", f"the body is over {MAX_BODY} bytes")
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise ChatError("invalid_json", "send a JSON object (Content-Type: application/json)")
    return data


@api.get("/clients")
def clients() -> ResponseReturnValue:
    """Every connected client, of every process, with its counters (as of its last heartbeat if remote)."""
    return jsonify(clients=[{key: info.get(key) for key in CLIENT_FIELDS} for info in chat().clients()])


@api.get("/rooms")
def rooms() -> ResponseReturnValue:
    """Every room with its member count; totals over the connected clients, and this process's headline figures."""
    room_list = chat().room_list()
    connected = chat().clients()
    totals: dict[str, Any] = {"clients": len(connected), "rooms": len(room_list)}
    for key in ("bytes_in", "bytes_out", "buffered"):
        totals[key] = sum(int(info.get(key) or 0) for info in connected)
    stats = chat().stats()
    totals["messages_stored"] = stats["messages_stored"]  # by this process: the page derives a rate
    totals["fanout_p99_ms"] = stats["fanout_p99_ms"]  # over its last 1000 messages, None before any
    return jsonify(rooms=room_list, totals=totals)


@api.get("/moderation")
def moderation() -> ResponseReturnValue:
    """The room moderators' latest actions (mutes, slow mode, invitations …), newest first."""
    return jsonify(actions=chat().moderation_log())


@api.get("/bans")
def bans() -> ResponseReturnValue:
    """The bans in force: nick and when each ends (epoch seconds)."""
    return jsonify(bans=chat().bans())


@api.post("/clients/<conn_id>/kick")
def kick(conn_id: str) -> ResponseReturnValue:
    """Close one connection with 4001."""
    if not chat().kick(conn_id, KICK_REASON):
        raise ChatError("not_found", f"no connected client {conn_id!r}")
    log.warning("admin: kicked %s (from %s)", conn_id, request.remote_addr)
    return jsonify(kicked=conn_id)


@api.post("/bans")
def ban() -> ResponseReturnValue:
    """Ban a nick for ``seconds``: its connections close with 4003, new ones are refused."""
    data = _json_object()
    nick, seconds = check_nick(data.get("nick")), data.get("seconds")
    if isinstance(seconds, bool) or not isinstance(seconds, int) or not 1 <= seconds <= MAX_BAN_SECONDS:
        raise ChatError("invalid_seconds", f"seconds must be an integer from 1 to {MAX_BAN_SECONDS}")
    closed = chat().ban(nick, seconds)
    until = next(entry["until"] for entry in chat().bans() if entry["nick"] == nick)
    log.warning(
        "admin: banned %r for %d s, %d connection(s) closed (from %s)", nick, seconds, closed, request.remote_addr
    )
    return jsonify(nick=nick, until=until, closed=closed), 201


@api.post("/broadcast")
def broadcast() -> ResponseReturnValue:
    """A system message to one room's members, or to every connected client."""
    data = _json_object()
    text, room = check_text(data.get("text"), chat().max_text), data.get("room")
    if not text.strip():  # an announcement of spaces says nothing
        raise ChatError("empty_text", "text is empty")
    if room is not None and not valid_room(room):
        raise ChatError("invalid_room", "room is optional; room names are 1-64 letters, digits, '_', '.' or '-'")
    chat().system(text, room)
    log.warning("admin: system message to %s (from %s)", room or "everyone", request.remote_addr)
    return jsonify({}), 202


bp.register_blueprint(api)


def init_app(app: Flask) -> None:
    """Register the admin page and API on ``app``."""
    app.register_blueprint(bp)
