"""The chat's log lines: one per event that matters, as text or as JSON lines.

Every module logs through ``logging.getLogger(__name__)`` (so under ``app``);
:func:`configure` gives the ``app`` logger its one handler, on stderr, where
gunicorn's own log goes too. ``CHAT_LOG_FORMAT=json`` writes one JSON object
per line, for log shippers: the message, the level, the logger, the time,
and the event's fields (``conn``, ``code`` …) passed as ``extra``.

gunicorn's own lines follow the same setting: :func:`gunicorn_logconfig` is
the ``logconfig_dict`` gunicorn.conf.py hands it, which in JSON sends
``gunicorn.error`` (stderr) and ``gunicorn.access`` (stdout) through the same
formatter, an access line's request as fields of its own (:class:`AccessJsonFormatter`).
In text, gunicorn keeps its own format.

What is never logged: message text, tokens, cookies, passwords, the secret key.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Mapping
from typing import Any

__all__ = ["FORMATS", "AccessJsonFormatter", "JsonFormatter", "configure", "formatter", "gunicorn_logconfig"]

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: The attributes every LogRecord has; anything else came in ``extra`` and is the event's.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``ts``, ``level``, ``logger``, ``msg``, then the ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class AccessJsonFormatter(JsonFormatter):
    """gunicorn's access lines as JSON: the line as ``msg``, and the request's fields as keys of their own.

    gunicorn logs each request with its "atoms" as the record's arguments (a
    mapping: ``m`` the method, ``U`` the path, ``s`` the status …); the
    query string, headers and cookies are not copied out.
    """

    #: Our key for each gunicorn atom (gunicorn's ``access_log_format`` letters).
    FIELDS = {
        "m": "method",
        "U": "path",
        "H": "protocol",
        "s": "status",
        "B": "bytes",
        "h": "remote_addr",
        "a": "user_agent",
        "f": "referer",
    }

    def format(self, record: logging.LogRecord) -> str:
        atoms = record.args
        if isinstance(atoms, Mapping):
            for atom, key in self.FIELDS.items():
                value = atoms.get(atom)
                if isinstance(value, str):  # gunicorn escapes quotes for its text line
                    value = int(value) if key == "status" and value.isdigit() else value.replace('\\"', '"')
                setattr(record, key, value)
            microseconds = atoms.get("D")
            if isinstance(microseconds, int):
                record.duration_ms = microseconds / 1000
        return super().format(record)


class _TextFormatter(logging.Formatter):
    """The text line, with the event's fields appended as ``key=value``."""

    def __init__(self, fmt: str) -> None:
        super().__init__(fmt)
        self._second: int | None = None
        self._second_text = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """``logging``'s default time, ``2026-11-21 15:07:52,123``, formatted once per second, not per line."""
        second = int(record.created)
        if second != self._second:
            self._second, self._second_text = second, time.strftime("%Y-%m-%d %H:%M:%S", self.converter(second))
        return f"{self._second_text},{int(record.msecs):03d}"

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = [f"{k}={v}" for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")]
        return f"{line} [{' '.join(fields)}]" if fields else line


def _check(log_format: str) -> None:
    if log_format not in FORMATS:
        raise ValueError(f"CHAT_LOG_FORMAT must be one of {FORMATS}, not {log_format!r}")


def formatter(log_format: str) -> logging.Formatter:
    """The formatter of ``log_format``'s lines: JSON objects, or text with the event's fields appended."""
    _check(log_format)
    return JsonFormatter() if log_format == "json" else _TextFormatter(TEXT_FORMAT)


def gunicorn_logconfig(log_format: str) -> dict[str, Any]:
    """gunicorn's ``logconfig_dict`` for ``log_format``: ``{}`` (gunicorn's own format) for text.

    For JSON: ``gunicorn.error`` to stderr and ``gunicorn.access`` to stdout,
    where gunicorn writes them in text, and any other library's records
    (the root logger) to stderr, all as JSON lines. ``gunicorn.error`` keeps
    the level of gunicorn's ``--log-level``.
    """
    _check(log_format)
    if log_format == "text":
        return {}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "json": {"()": f"{__name__}.JsonFormatter"},
            "access_json": {"()": f"{__name__}.AccessJsonFormatter"},
        },
        "handlers": {
            "error_console": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"},
            "console": {"class": "logging.StreamHandler", "formatter": "access_json", "stream": "ext://sys.stdout"},
        },
        "root": {"level": "INFO", "handlers": ["error_console"]},
        "loggers": {
            "gunicorn.error": {"handlers": ["error_console"], "propagate": False},
            "gunicorn.access": {"level": "INFO", "handlers": ["console"], "propagate": False},
        },
    }


def configure(log_format: str = "text", level: int = logging.INFO) -> None:
    """Send the ``app`` loggers' records to stderr in ``log_format``; idempotent."""
    _check(log_format)
    # A record asks for its thread's name; under gevent every client greenlet
    # would then get a threading object of its own, kept while it waits.
    logging.logThreads = False
    # Nor are a record's source line and process name shown: not collecting
    # them (the logging HOWTO's "Optimization") halves what a line costs, and
    # a server logs two per connection.
    logging._srcfile = None
    logging.logMultiprocessing = False
    logger = logging.getLogger("app")
    for handler in list(logger.handlers):
        if getattr(handler, "_chat", False):
            logger.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler._chat = True  # type: ignore[attr-defined]
    handler.setFormatter(formatter(log_format))
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
