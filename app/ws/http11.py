"""Just enough HTTP/1.1 for the opening handshake (RFC 7230 §3, RFC 6455 §4).

:class:`RequestReader` reads a request head that may arrive in pieces and
refuses heads over :data:`MAX_HEAD_SIZE` (431, RFC 6585 §5). Requests are
values; :class:`Response` serializes itself. Header values are decoded as
ISO-8859-1, the only charset RFC 7230 §3.2.4 lets through.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

from .exceptions import HandshakeRejected

__all__ = ["MAX_HEAD_SIZE", "Request", "RequestReader", "Response", "error_response"]

MAX_HEAD_SIZE = 8 * 1024

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_REQUEST_LINE = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+) (\S+) HTTP/([0-9])\.([0-9])\Z")
_FIELD_VALUE = re.compile(rb"[\x20-\x7e\x80-\xff\t]*\Z")


@dataclass(frozen=True, slots=True)
class Request:
    """A parsed request head."""

    method: str
    target: str
    version: tuple[int, int]
    headers: tuple[tuple[str, str], ...]

    @property
    def path(self) -> str:
        """The target's path, without the query."""
        return urlsplit(self.target).path

    @property
    def query(self) -> dict[str, list[str]]:
        """The target's query parameters."""
        return parse_qs(urlsplit(self.target).query)

    def get_all(self, name: str) -> list[str]:
        """Every value of the header ``name`` (case-insensitive), in order."""
        name = name.lower()
        return [value for key, value in self.headers if key.lower() == name]

    def get(self, name: str) -> str | None:
        """The header's values joined by commas (RFC 7230 §3.2.2), or ``None``."""
        values = self.get_all(name)
        return ", ".join(values) if values else None


@dataclass(slots=True)
class Response:
    """An HTTP/1.1 response head and a short body."""

    status: HTTPStatus
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    def serialize(self) -> bytes:
        """The response's bytes, ready for the socket."""
        lines = [f"HTTP/1.1 {self.status.value} {self.status.phrase}"]
        lines.extend(f"{name}: {value}" for name, value in self.headers)
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + self.body


def error_response(status: HTTPStatus, reason: str, headers: list[tuple[str, str]] | None = None) -> Response:
    """A plain-text error response that says why, and closes the connection."""
    body = f"{status.value} {status.phrase}: {reason}\n".encode()
    return Response(
        status,
        [
            *(headers or []),
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
            ("Connection", "close"),
        ],
        body,
    )


class RequestReader:
    """Accumulates bytes until a whole request head is there.

    :meth:`feed` returns ``None`` while the head is incomplete, then the
    :class:`Request`; bytes after the head stay in :attr:`leftover`. Malformed
    or oversized heads raise :class:`HandshakeRejected` (400 or 431).
    """

    __slots__ = ("_buffer", "leftover", "max_size")

    def __init__(self, max_size: int = MAX_HEAD_SIZE) -> None:
        self._buffer = bytearray()
        self.leftover = b""
        self.max_size = max_size

    def feed(self, data: bytes) -> Request | None:
        """Add received bytes; the request once its head is complete."""
        start = max(0, len(self._buffer) - 3)
        self._buffer += data
        end = self._buffer.find(b"\r\n\r\n", start)
        if end < 0:
            if len(self._buffer) > self.max_size:
                raise HandshakeRejected(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "request head too large")
            return None
        if end + 4 > self.max_size:
            raise HandshakeRejected(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "request head too large")
        head = bytes(self._buffer[:end])
        self.leftover = bytes(self._buffer[end + 4 :])
        self._buffer.clear()
        return parse_request_head(head)


def _bad(reason: str) -> HandshakeRejected:
    return HandshakeRejected(HTTPStatus.BAD_REQUEST, reason)


def parse_request_head(head: bytes) -> Request:
    """Parse a request line and header fields (RFC 7230 §3.1.1, §3.2)."""
    request_line, *field_lines = head.split(b"\r\n")
    match = _REQUEST_LINE.match(request_line)
    if match is None:
        raise _bad("malformed request line")
    method, target, major, minor = match.groups()
    try:
        # Request.path and .query split the target again: refuse one that cannot be split
        # (an unclosed "[", a bracketed host that is no IP address) here, with a 400.
        urlsplit(target.decode("latin-1"))
    except ValueError:
        raise _bad("malformed request target") from None
    headers: list[tuple[str, str]] = []
    for line in field_lines:
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN.match(name):
            # also rejects obsolete line folding and space before the colon (§3.2.4)
            raise _bad("malformed header field")
        value = value.strip(b" \t")
        if not _FIELD_VALUE.match(value):
            raise _bad("invalid character in header field")
        headers.append((name.decode("ascii"), value.decode("latin-1")))
    return Request(
        method.decode("ascii"),
        target.decode("latin-1"),
        (int(major), int(minor)),
        tuple(headers),
    )
