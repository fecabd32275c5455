"""The rate limiter on a clock the test moves: bursts, steady rates, floods, forgetting."""

from __future__ import annotations

from app.chat.limits import RateLimiter, Verdict


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_passes_and_the_next_message_is_refused() -> None:
    limiter = RateLimiter(rate=2, burst=5, clock=Clock())
    assert [limiter.check("c1") for _ in range(5)] == [Verdict.ALLOW] * 5
    assert limiter.check("c1") is Verdict.REFUSE


def test_the_rate_refills_over_time() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=2, burst=5, clock=clock)
    for _ in range(5):
        limiter.check("c1")
    clock.now += 0.5  # one message's worth at 2 per second
    assert limiter.check("c1") is Verdict.ALLOW
    assert limiter.check("c1") is Verdict.REFUSE


def test_a_steady_sender_at_the_rate_is_never_refused() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=10, burst=1, clock=clock)
    for _ in range(1000):
        assert limiter.check("c1") is Verdict.ALLOW
        clock.now += 0.1


def test_clients_have_separate_limits() -> None:
    limiter = RateLimiter(rate=1, burst=1, clock=Clock())
    assert limiter.check("c1") is Verdict.ALLOW
    assert limiter.check("c1") is Verdict.REFUSE
    assert limiter.check("c2") is Verdict.ALLOW


def test_going_on_after_refusals_is_a_flood() -> None:
    limiter = RateLimiter(rate=1, burst=3, clock=Clock())
    verdicts = [limiter.check("c1") for _ in range(3 + 3 + 1)]
    assert verdicts == [Verdict.ALLOW] * 3 + [Verdict.REFUSE] * 3 + [Verdict.CLOSE]


def test_an_accepted_message_clears_the_refusals() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=1, burst=2, clock=clock)
    for _ in range(2 + 2):
        limiter.check("c1")
    clock.now += 1.0
    assert limiter.check("c1") is Verdict.ALLOW
    assert [limiter.check("c1") for _ in range(3)] == [Verdict.REFUSE, Verdict.REFUSE, Verdict.CLOSE]


def test_idle_clients_hold_no_state_after_a_sweep() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=10, burst=5, clock=clock)
    for n in range(1000):
        limiter.check(f"c{n}")
    assert len(limiter) == 1000
    clock.now += RateLimiter.SWEEP_EVERY + 0.2
    limiter.check("late")
    assert len(limiter) == 1


def test_rate_zero_turns_limiting_off() -> None:
    limiter = RateLimiter(rate=0, burst=1, clock=Clock())
    assert not limiter.enabled
    assert all(limiter.check("c1") is Verdict.ALLOW for _ in range(10_000))
    assert len(limiter) == 0
