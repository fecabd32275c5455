"""The chat's log lines: one per event that matters, as text or as JSON lines.

Every module logs through ``logging.getLogger(__name__)`` (so under ``app``);
:func:`configure` gives the ``app`` logger its one handler, on stderr, where
gunicorn's own log goes too. ``CHAT_LOG_FORMAT=json`` writes one JSON object
per line, for log shippers: the message, the level, the logger, the time,
and the event's fields (``conn``, ``code`` …) passed as ``extra``.

What is never logged: message text, tokens, cookies, passwords, the secret key.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

__all__ = ["FORMATS", "JsonFormatter", "configure"]

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


def configure(log_format: str = "text", level: int = logging.INFO) -> None:
    """Send the ``app`` loggers' records to stderr in ``log_format``; idempotent."""
    if log_format not in FORMATS:
        raise ValueError(f"CHAT_LOG_FORMAT must be one of {FORMATS}, not {log_format!r}")
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
    handler.setFormatter(JsonFormatter() if log_format == "json" else _TextFormatter(TEXT_FORMAT))
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
