"""Shared fixtures: timeouts scale with CHAT_TEST_TIMEOUT_SCALE on slow machines (see tests/support)."""

from __future__ import annotations

import pytest

from tests.support.timeouts import TIMEOUT_SCALE


@pytest.fixture
def timeout_scale() -> float:
    return TIMEOUT_SCALE
