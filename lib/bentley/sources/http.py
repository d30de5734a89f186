"""What the network sources (yahoo, rss) share: retries on transient failures and a rate limit.

Only failures that can heal by waiting are retried (HTTP 429 and 5xx, timeouts, dropped
connections). Anything else, a 404 or a parse error, is a fact about the request and is
raised at once, so a typo in a ticker or a URL costs one request, not `max_attempts`.

The waits are those of every retry in the project (`bentley.retry`: capped exponential
backoff with full jitter), so clients that failed together do not retry together.
"""

from __future__ import annotations

import random
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import requests

from bentley import __version__
from bentley.retry import Backoff, retry_call
from bentley.sources.base import TransientSourceError

if TYPE_CHECKING:
    from bentley.config import Http

T = TypeVar("T")

#: Sent with every request we make ourselves: feed hosts may block anonymous clients.
USER_AGENT = f"bentley-budget-bot/{__version__} (personal finance research pipeline; news feed reader)"

_TRANSIENT_STATUS = 429
_CURL = "curl_cffi.requests.exceptions"


def _loaded_types(module: str, names: tuple[str, ...]) -> tuple[type[BaseException], ...]:
    """Exception classes of an optional library, looked up only if it is already imported.

    An instance of one of them can only exist once its module is loaded, so there is no need
    to pay for importing yfinance (most of a second) or to fail when a library is missing.
    """
    loaded = sys.modules.get(module)
    return tuple(getattr(loaded, name) for name in names if hasattr(loaded, name))


def _status_code(exc: BaseException) -> int | None:
    """The HTTP status an error carries (requests and curl_cffi attach the response)."""
    status = getattr(getattr(exc, "response", None), "status_code", None)
    return status if isinstance(status, int) else None


def is_transient(exc: BaseException) -> bool:
    """True for failures worth retrying: HTTP 429/5xx, rate limits, timeouts, dropped connections.

    A status code decides first: a requests/curl_cffi HTTP 404 is also an OSError, and must not
    be retried. TLS certificate errors are connection errors in both libraries, but waiting
    does not fix them.
    """
    status = _status_code(exc)
    if status is not None:
        return status == _TRANSIENT_STATUS or 500 <= status <= 599
    if isinstance(exc, (requests.exceptions.SSLError, *_loaded_types(_CURL, ("SSLError",)))):
        return False
    retryable: tuple[type[BaseException], ...] = (
        TransientSourceError,
        TimeoutError,
        ConnectionError,
        requests.Timeout,
        requests.ConnectionError,
        *_loaded_types("yfinance.exceptions", ("YFRateLimitError",)),
        *_loaded_types(_CURL, ("Timeout", "ConnectionError")),
    )
    return isinstance(exc, retryable)


@dataclass(frozen=True)
class RetryPolicy:
    """How often to try and how long to wait in between (seconds): `params.sources.http`."""

    max_attempts: int
    base: float
    cap: float

    @classmethod
    def from_settings(cls, http: Http) -> RetryPolicy:
        return cls(max_attempts=http.max_attempts, base=http.backoff_base_s, cap=http.backoff_max_s)

    @property
    def backoff(self) -> Backoff:
        """The waits, as every retry in the project draws them (`bentley.retry.Backoff`)."""
        return Backoff(base_s=self.base, cap_s=self.cap)

    def delay(self, retry: int, rng: random.Random) -> float:
        """The wait before retry number `retry` (0 for the first retry), full jitter."""
        return self.backoff.delay(retry + 1, rng)


def call_with_retries(
    fn: Callable[[], T],
    policy: RetryPolicy,
    *,
    what: str,
    sleep: Callable[[float], object] = time.sleep,
    rng: random.Random | None = None,
) -> T:
    """`fn()`, retried on transient failures (`bentley.retry.retry_call`); other errors propagate unchanged at once.

    After `policy.max_attempts` transient failures, raise TransientSourceError naming `what`
    and the last error (chained), so a caller can record it as one ticker's or feed's failure.
    """
    try:
        return retry_call(
            fn,
            attempts=policy.max_attempts,
            backoff=policy.backoff,
            retryable=is_transient,
            sleep=sleep,
            rng=rng or random.Random(),
        )
    except Exception as exc:
        if not is_transient(exc):
            raise
        # retry_call gives up on a transient failure only after the last attempt
        raise TransientSourceError(f"{what}: gave up after {policy.max_attempts} attempts: {exc}") from exc


class RateLimiter:
    """Spaces calls at least `1 / requests_per_second` apart, across threads.

    `wait(cost)` books `cost` request slots: a call that makes several requests (a yfinance
    batch downloads one ticker per request) delays the next call accordingly.
    """

    def __init__(
        self,
        requests_per_second: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        if requests_per_second <= 0:
            raise ValueError(f"requests_per_second must be positive, got {requests_per_second}")
        self._interval = 1.0 / requests_per_second
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next_at: float | None = None

    def wait(self, cost: float = 1.0) -> None:
        """Block until the next call may start, then book `cost` slots after it.

        The lock is held while sleeping, so concurrent callers queue and go one at a time.
        """
        with self._lock:
            now = self._clock()
            if self._next_at is not None and now < self._next_at:
                self._sleep(self._next_at - now)
                now = self._next_at
            self._next_at = now + cost * self._interval


class ThrottledCaller:
    """How a network source makes its requests: rate-limited, and retried if transient."""

    def __init__(
        self,
        http: Http,
        *,
        sleep: Callable[[float], object] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.policy = RetryPolicy.from_settings(http)
        self.limiter = RateLimiter(http.requests_per_second, sleep=sleep)
        self._sleep = sleep
        self._rng = rng or random.Random()

    def call(self, fn: Callable[[], T], *, what: str) -> T:
        """`fn()` as one request: rate-limited before every attempt, retried if transient."""

        def attempt() -> T:
            self.limiter.wait()
            return fn()

        return self.retry(attempt, what=what)

    def retry(self, fn: Callable[[], T], *, what: str) -> T:
        """`fn()` retried if transient; for callers that book the rate limiter themselves."""
        return call_with_retries(fn, self.policy, what=what, sleep=self._sleep, rng=self._rng)


def fetch_url(url: str, timeout_s: float) -> bytes:
    """The body of a GET; HTTP errors raise `requests.HTTPError` (which `is_transient` reads)."""
    response = requests.get(url, timeout=timeout_s, headers={"User-Agent": USER_AGENT})
    response.raise_for_status()
    return response.content
