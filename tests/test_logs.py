"""The chat's log lines: the text format's time, as logging's own formatter writes it."""

from __future__ import annotations

import logging

from app.logs import TEXT_FORMAT, _TextFormatter


def record_at(created: float) -> logging.LogRecord:
    record = logging.LogRecord("app.server.chat", logging.INFO, __file__, 1, "connect %s", ("x.c1",), None)
    record.created, record.msecs = created, (created - int(created)) * 1000
    record.conn = "x.c1"
    return record


def test_text_lines_carry_the_same_time_as_the_standard_formatter_within_and_across_seconds() -> None:
    ours, standard = _TextFormatter(TEXT_FORMAT), logging.Formatter(TEXT_FORMAT)
    for created in (1_795_273_821.004, 1_795_273_821.999, 1_795_273_822.5, 1_795_273_821.25, 1_800_000_000.0):
        record = record_at(created)
        assert ours.format(record) == standard.format(record) + " [conn=x.c1]"
