"""Headers every response carries, whatever blueprint made it.

The pages and the admin set their own Content-Security-Policy; everything
else (the JSON API, static files, errors) gets one that allows nothing, since
none of it is a document to render. Under TLS (``Settings.secure``, or
gunicorn's own TLS) browsers are also told to come back over HTTPS only (HSTS,
RFC 6797).
"""

from __future__ import annotations

from flask import Flask, Response, current_app

__all__ = ["init_app"]

HSTS_SECONDS = 180 * 24 * 3600


def security_headers(response: Response) -> Response:
    headers = response.headers
    headers.setdefault("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("Referrer-Policy", "same-origin")
    headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
    headers.setdefault("Cross-Origin-Resource-Policy", "same-origin")
    if current_app.config["SESSION_COOKIE_SECURE"]:
        headers.setdefault("Strict-Transport-Security", f"max-age={HSTS_SECONDS}")
    return response


def init_app(app: Flask) -> None:
    app.after_request(security_headers)
