"""When a draining server closes each client, and what it tells it (app/server/drain.py)."""

from __future__ import annotations

import random
import re

from app.server.drain import RETRY_MAX_MS, RETRY_MIN_MS, moments, restart_reason, retry_hint


def test_moments_fall_one_in_each_slice_of_the_window() -> None:
    window, count = 10.0, 1000
    found = moments(count, window, random.Random(17))
    assert len(found) == count
    assert found == sorted(found)
    for i, moment in enumerate(found):
        assert window * i / count <= moment < window * (i + 1) / count


def test_a_window_of_zero_closes_everyone_at_once() -> None:
    assert moments(5, 0.0) == [0.0] * 5
    assert moments(0, 10.0) == []


def test_retry_hints_are_jittered_within_their_bounds() -> None:
    rng = random.Random(17)
    hints = [retry_hint(rng) for _ in range(1000)]
    assert min(hints) >= RETRY_MIN_MS and max(hints) <= RETRY_MAX_MS
    assert len(set(hints)) > 500


def test_the_reason_says_restarting_and_the_hint_in_milliseconds() -> None:
    reason = restart_reason(3200)
    assert reason == "restarting retry=3200"
    assert len(reason.encode()) <= 123  # a close frame's reason (RFC 6455 §5.5.1)
    match = re.search(r"(?:^| )retry=(\d+)(?: |$)", reason)
    assert match and int(match.group(1)) == 3200
