"""The one retry helper: how many tries, which waits, and what propagates."""

from __future__ import annotations

import random

import pytest

from bentley.retry import Backoff, retry_call


class Flaky:
    """Fails with `errors` in order, then returns "ok"."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def test_waits_grow_exponentially_up_to_the_cap_with_full_jitter() -> None:
    backoff = Backoff(base_s=0.5, cap_s=3.0)
    assert [backoff.ceiling(k) for k in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert backoff.ceiling(10_000) == 3.0
    rng = random.Random(7)
    draws = [backoff.delay(3, rng) for _ in range(2000)]
    assert 0.0 <= min(draws) < 0.1 and 1.9 < max(draws) <= 2.0  # the whole of U(0, 2.0)


def test_transient_failures_are_retried_until_success_with_the_drawn_waits() -> None:
    flaky = Flaky(TimeoutError("t1"), TimeoutError("t2"))
    slept: list[float] = []
    told: list[tuple[int, str, float]] = []
    result = retry_call(
        flaky,
        attempts=3,
        backoff=Backoff(1.0, 10.0),
        retryable=lambda e: isinstance(e, TimeoutError),
        on_retry=lambda k, e, w: told.append((k, str(e), w)),
        sleep=slept.append,
        rng=random.Random(1),
    )
    assert result == "ok" and flaky.calls == 3
    expected = random.Random(1)
    assert slept == [expected.uniform(0, 1.0), expected.uniform(0, 2.0)]
    assert [(k, e) for k, e, _ in told] == [(1, "t1"), (2, "t2")] and [w for *_, w in told] == slept


def test_the_last_failure_propagates_unchanged_after_the_allowed_attempts() -> None:
    flaky = Flaky(TimeoutError("a"), TimeoutError("b"), TimeoutError("c"))
    with pytest.raises(TimeoutError, match="^b$"):
        retry_call(flaky, attempts=2, backoff=Backoff(1, 1), retryable=lambda e: True, sleep=lambda s: None)
    assert flaky.calls == 2


def test_a_failure_that_cannot_heal_is_raised_at_once() -> None:
    flaky = Flaky(ValueError("bad ticker"))
    slept: list[float] = []
    with pytest.raises(ValueError, match="bad ticker"):
        retry_call(
            flaky,
            attempts=5,
            backoff=Backoff(1, 1),
            retryable=lambda e: isinstance(e, TimeoutError),
            sleep=slept.append,
        )
    assert flaky.calls == 1 and slept == []


def test_a_floor_such_as_retry_after_raises_the_wait() -> None:
    slept: list[float] = []
    retry_call(
        Flaky(TimeoutError()),
        attempts=2,
        backoff=Backoff(0.1, 0.1),
        retryable=lambda e: True,
        at_least=lambda e: 7.0,
        sleep=slept.append,
    )
    assert slept == [7.0]


def test_zero_attempts_is_a_caller_error() -> None:
    with pytest.raises(ValueError, match="attempts must be at least 1"):
        retry_call(lambda: 1, attempts=0, backoff=Backoff(1, 1), retryable=lambda e: True)
