"""Browser sessions and the identities they carry to the WebSocket server.

The web app keeps the session id and nick in Flask's signed session cookie;
the WebSocket handshake (another port, same host, so the browser sends the
cookie too) accepts either that cookie or the token from ``POST /api/session``.
"""

from __future__ import annotations

from collections.abc import Callable
from http.cookies import CookieError, SimpleCookie

from flask import Flask, current_app, request
from itsdangerous import BadSignature

from app.chat.auth import Identity, TokenSigner
from app.ws import Request

__all__ = ["websocket_authenticator", "ws_base"]

#: Bind addresses that mean "every interface": the browser reaches them by the host it used.
WILDCARD_HOSTS = ("0.0.0.0", "[::]")


def ws_base() -> str:
    """The WebSocket endpoint's URL (no query) as the browser of this request reaches it.

    ``CHAT_WS_PUBLIC_URL`` when set: a full URL, or a path such as ``/ws``
    meaning this page's own host behind a proxy (``wss`` when the page came
    over HTTPS, as the proxy's ``X-Forwarded-Proto`` says). Else the URL the
    WebSocket server bound, a wildcard address replaced by the host the
    browser used.
    """
    settings = current_app.config["CHAT_SETTINGS"]
    public = settings.ws_public_url
    if public.startswith("/"):
        scheme = request.headers.get("X-Forwarded-Proto", request.scheme).split(",")[0].strip()
        return f"{'wss' if scheme == 'https' else 'ws'}://{request.host}{public}"
    base = public or current_app.config.get("CHAT_WS_URL") or f"ws://{settings.ws_bind}/ws"
    for wildcard in WILDCARD_HOSTS:
        if f"//{wildcard}:" in base:
            base = base.replace(wildcard, request.host.rsplit(":", 1)[0], 1)
    return base


def websocket_authenticator(app: Flask) -> Callable[[Request], Identity | None]:
    """Who is opening a WebSocket: from ``?token=``, else from the session cookie."""
    signer: TokenSigner = app.extensions["chat_tokens"]
    cookie_name = app.config["SESSION_COOKIE_NAME"]
    max_age = int(app.permanent_session_lifetime.total_seconds())
    serializer = app.session_interface.get_signing_serializer(app)  # type: ignore[attr-defined]

    def authenticate(request: Request) -> Identity | None:
        tokens = request.query.get("token")
        if tokens:
            return signer.verify(tokens[0])
        header = request.get("Cookie")
        if not header or serializer is None:
            return None
        try:
            morsel = SimpleCookie(header).get(cookie_name)
        except CookieError:
            return None
        if morsel is None:
            return None
        try:
            data = serializer.loads(morsel.value, max_age=max_age)
        except BadSignature:
            return None
        return Identity.from_claims(data)

    return authenticate
