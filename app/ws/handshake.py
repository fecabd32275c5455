"""The server's side of the opening handshake (RFC 6455 §4.2).

:func:`accept` is total: for any request it returns a :class:`Handshake`
holding either the 101 response and what was agreed, or an error response
that says what was wrong (400, 405, 426, 505) and the reason kept for logs.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from http import HTTPStatus

from .deflate import DeflateConfig, DeflateParams, negotiate
from .exceptions import HandshakeRejected
from .http11 import Request, Response, error_response

__all__ = ["GUID", "Handshake", "accept", "accept_key", "parse_extensions", "reject"]

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_EXTENSION_ITEM = re.compile(
    r"""\s*([!#$%&'*+\-.^_`|~0-9A-Za-z]+)          # token
        (?:\s*=\s*(?:([!#$%&'*+\-.^_`|~0-9A-Za-z]+)|"((?:[^"\\]|\\.)*)"))?  # =token / ="quoted"
        \s*(;|,|\Z)""",
    re.VERBOSE,
)


def accept_key(key: str) -> str:
    """``Sec-WebSocket-Accept`` for a ``Sec-WebSocket-Key`` (§4.2.2 step 5.4)."""
    return base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()


def parse_tokens(value: str | None) -> list[str]:
    """A comma-separated token list, lower-cased (RFC 7230 §7, ``#token``)."""
    if value is None:
        return []
    return [item.strip().lower() for item in value.split(",") if item.strip()]


def parse_extensions(value: str) -> list[tuple[str, list[tuple[str, str | None]]]]:
    """``Sec-WebSocket-Extensions`` (RFC 6455 §9.1) as ``[(name, [(param, value)])]``.

    Quoted values are unquoted. Raises :class:`ValueError` on bad syntax.
    """
    extensions: list[tuple[str, list[tuple[str, str | None]]]] = []
    pos = 0
    current: tuple[str, list[tuple[str, str | None]]] | None = None
    value = value.strip()
    if not value:
        return []
    while pos < len(value):
        match = _EXTENSION_ITEM.match(value, pos)
        if match is None or match.end() == pos:
            raise ValueError("malformed extension header")
        name, token, quoted, separator = match.groups()
        if current is None:
            if token is not None or quoted is not None:
                raise ValueError("extension name with a value")
            current = (name.lower(), [])
        else:
            param_value = token if token is not None else None
            if quoted is not None:
                param_value = re.sub(r"\\(.)", r"\1", quoted)
                if not _TOKEN.fullmatch(param_value):
                    raise ValueError("quoted extension parameter is not a token")
            current[1].append((name.lower(), param_value))
        pos = match.end()
        if separator in (",", ""):
            extensions.append(current)
            current = None
            if separator == "," and pos >= len(value):
                raise ValueError("malformed extension header")
    if current is not None:
        raise ValueError("malformed extension header")
    return extensions


@dataclass(frozen=True, slots=True)
class Handshake:
    """The outcome of :func:`accept`: a response to send, and what was agreed."""

    response: Response
    subprotocol: str | None = None
    deflate: DeflateParams | None = None
    error: HandshakeRejected | None = None

    @property
    def accepted(self) -> bool:
        """Whether the response is a 101 and the connection is now a WebSocket."""
        return self.error is None


def reject(status: HTTPStatus, reason: str, headers: list[tuple[str, str]] | None = None) -> Handshake:
    """A refused handshake: an HTTP error response with a short body saying why."""
    error = HandshakeRejected(status, reason, headers)
    return Handshake(error_response(status, reason, headers), error=error)


def rejection(error: HandshakeRejected) -> Handshake:
    """The refused handshake for an exception raised while reading the request."""
    return Handshake(error_response(error.status, error.reason, error.headers), error=error)


def accept(
    request: Request,
    *,
    subprotocols: Sequence[str] = (),
    deflate: DeflateConfig | None = None,
    extra_headers: Sequence[tuple[str, str]] = (),
) -> Handshake:
    """Validate an upgrade request and build the response (RFC 6455 §4.2.1, §4.2.2).

    ``subprotocols`` are the ones this server speaks; the first of the
    client's offer (its order is its preference) that is among them, compared
    exactly, is chosen. ``deflate`` enables permessage-deflate with that configuration.
    """
    try:
        key = _validate(request)
    except HandshakeRejected as error:
        return rejection(error)

    headers = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", accept_key(key)),
    ]
    subprotocol = None
    offered = request.get("Sec-WebSocket-Protocol")
    if offered:
        # §4.2.2: the value is one of the client's, echoed exactly as sent.
        candidates = [item.strip() for item in offered.split(",")]
        subprotocol = next((name for name in candidates if name in subprotocols), None)
        if subprotocol is not None:
            headers.append(("Sec-WebSocket-Protocol", subprotocol))

    agreed = None
    extensions = request.get("Sec-WebSocket-Extensions")
    if extensions is not None:
        try:
            offers = parse_extensions(extensions)
        except ValueError as exc:
            return reject(HTTPStatus.BAD_REQUEST, f"invalid Sec-WebSocket-Extensions: {exc}")
        if deflate is not None:
            agreed = negotiate(offers, deflate)
            if agreed is not None:
                headers.append(("Sec-WebSocket-Extensions", agreed.response_header()))
    headers.extend(extra_headers)
    return Handshake(Response(HTTPStatus.SWITCHING_PROTOCOLS, headers), subprotocol, agreed)


def _validate(request: Request) -> str:
    """The request's ``Sec-WebSocket-Key`` if it is a valid upgrade (§4.2.1)."""
    if request.method != "GET":
        raise HandshakeRejected(HTTPStatus.METHOD_NOT_ALLOWED, "only GET can open a WebSocket", [("Allow", "GET")])
    if request.version < (1, 1):
        raise HandshakeRejected(HTTPStatus.HTTP_VERSION_NOT_SUPPORTED, "HTTP/1.1 or later is required")
    if len(request.get_all("Host")) != 1:
        raise HandshakeRejected(HTTPStatus.BAD_REQUEST, "exactly one Host header is required")
    upgrade_headers = [("Upgrade", "websocket"), ("Connection", "Upgrade")]
    if "websocket" not in parse_tokens(request.get("Upgrade")):
        raise HandshakeRejected(HTTPStatus.UPGRADE_REQUIRED, "expected Upgrade: websocket", upgrade_headers)
    if "upgrade" not in parse_tokens(request.get("Connection")):
        raise HandshakeRejected(HTTPStatus.UPGRADE_REQUIRED, "expected Connection: Upgrade", upgrade_headers)
    versions = request.get_all("Sec-WebSocket-Version")
    if versions != ["13"]:
        raise HandshakeRejected(
            HTTPStatus.UPGRADE_REQUIRED,
            "unsupported Sec-WebSocket-Version" if versions else "missing Sec-WebSocket-Version",
            [*upgrade_headers, ("Sec-WebSocket-Version", "13")],
        )
    keys = request.get_all("Sec-WebSocket-Key")
    if len(keys) != 1:
        raise HandshakeRejected(HTTPStatus.BAD_REQUEST, "exactly one Sec-WebSocket-Key is required")
    key = keys[0]
    try:
        raw = base64.b64decode(key.encode("latin-1"), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 16:
        raise HandshakeRejected(HTTPStatus.BAD_REQUEST, "Sec-WebSocket-Key must be 16 bytes in base64")
    return key
