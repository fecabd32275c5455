"""Shared fixtures: timeouts scale with CHAT_TEST_TIMEOUT_SCALE on slow machines (see tests/support)."""

from __future__ import annotations

import pytest

from tests.support.timeouts import TIMEOUT_SCALE, scaled

# tests/chat/test_history.py and test_service.py still import ``scaled`` from
# here; it lives in tests.support.timeouts, where they should take it from.
__all__ = ["scaled"]


@pytest.fixture
def timeout_scale() -> float:
    return TIMEOUT_SCALE
