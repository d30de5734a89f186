"""One way to wait and try again, for every retry in the project.

Network sources, the alert webhook, the warehouse's table creation and the runner's stage
retries all wait with capped exponential backoff and full jitter:
the wait before retry k (k = 1 for the first retry) is drawn from U(0, min(cap, base * 2**(k-1))),
so clients that failed together do not retry together (the "full jitter" of AWS's
"Exponential Backoff And Jitter"). What counts as retryable stays with the caller: only it
knows which failures can heal by waiting.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

#: The exponent is bounded so that 2**k stays a float; min() then takes the cap.
_MAX_EXPONENT = 1000


@dataclass(frozen=True)
class Backoff:
    """How long to wait between tries (seconds): capped exponential, full jitter."""

    base_s: float
    cap_s: float

    def ceiling(self, retry: int) -> float:
        """The longest wait before retry number `retry` (1 for the first retry)."""
        return min(self.cap_s, self.base_s * 2.0 ** min(max(retry - 1, 0), _MAX_EXPONENT))

    def delay(self, retry: int, rng: random.Random | None = None) -> float:
        """The wait before retry number `retry` (1 for the first retry), drawn with full jitter."""
        return (rng or random).uniform(0.0, self.ceiling(retry))


def retry_call(
    fn: Callable[[], T],
    *,
    attempts: int,
    backoff: Backoff,
    retryable: Callable[[BaseException], bool],
    at_least: Callable[[BaseException], float] | None = None,
    on_retry: Callable[[int, BaseException, float], object] | None = None,
    sleep: Callable[[float], object] = time.sleep,
    rng: random.Random | None = None,
) -> T:
    """`fn()`, tried up to `attempts` times while its failures are `retryable`.

    A failure that is not retryable, or the last one, propagates unchanged, so the caller
    decides how to name it. `at_least(error)` can raise a wait's floor (a server's
    Retry-After); `on_retry(retry, error, wait)` is told before each wait (a log line).
    """
    if attempts < 1:
        raise ValueError(f"attempts must be at least 1, not {attempts}")
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except Exception as error:
            if attempt == attempts or not retryable(error):
                raise
            wait = backoff.delay(attempt, rng)
            if at_least is not None:
                wait = max(wait, at_least(error))
            if on_retry is not None:
                on_retry(attempt, error, wait)
            sleep(wait)
    raise AssertionError("unreachable: the last attempt returns or raises")
