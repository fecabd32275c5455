"""Timeouts that scale with ``CHAT_TEST_TIMEOUT_SCALE`` on slow or loaded machines."""

from __future__ import annotations

import os

TIMEOUT_SCALE = float(os.environ.get("CHAT_TEST_TIMEOUT_SCALE", "1"))


def scaled(seconds: float) -> float:
    """A timeout, scaled for slow or loaded machines."""
    return seconds * TIMEOUT_SCALE
