"""Retries only on transient failures, capped jittered backoff, rate limiting; no network."""

from __future__ import annotations

import random
import threading
from types import SimpleNamespace

import pytest
import requests
from curl_cffi.requests import exceptions as curl_errors
from yfinance.exceptions import YFPricesMissingError, YFRateLimitError

from bentley.config import Http
from bentley.sources import http
from bentley.sources.base import TransientSourceError
from bentley.sources.http import (
    RateLimiter,
    RetryPolicy,
    ThrottledCaller,
    call_with_retries,
    fetch_url,
    is_transient,
)


def http_error(status: int) -> requests.HTTPError:
    response = requests.Response()
    response.status_code = status
    return requests.HTTPError(f"{status} error", response=response)


def curl_http_error(status: int) -> curl_errors.HTTPError:
    return curl_errors.HTTPError(f"HTTP Error {status}", 0, SimpleNamespace(status_code=status))


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (http_error(429), True),
        (http_error(500), True),
        (http_error(503), True),
        (http_error(404), False),
        (http_error(401), False),
        (curl_http_error(429), True),
        (curl_http_error(502), True),
        (curl_http_error(404), False),
        (YFRateLimitError(), True),
        (TransientSourceError("later"), True),
        (TimeoutError(), True),
        (requests.Timeout(), True),
        (requests.ReadTimeout(), True),
        (curl_errors.Timeout("curl: (28) Operation timed out"), True),
        (ConnectionResetError(), True),
        (ConnectionError(), True),
        (requests.ConnectionError(), True),
        (curl_errors.ConnectionError("curl: (7) Failed to connect"), True),
        (requests.exceptions.SSLError("certificate verify failed"), False),
        (curl_errors.CertificateVerifyError("curl: (60) SSL certificate problem"), False),
        (YFPricesMissingError("ZZZZ", ""), False),
        (FileNotFoundError("feed.xml"), False),
        (ValueError("bad"), False),
        (KeyError("close"), False),
    ],
    ids=lambda value: repr(value)[:60] if isinstance(value, BaseException) else None,
)
def test_transient_classification(error: BaseException, transient: bool) -> None:
    assert is_transient(error) is transient


class Flaky:
    """A callable failing with `errors` in turn, then returning "ok"."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def test_backoff_is_capped_full_jitter() -> None:
    policy = RetryPolicy(max_attempts=7, base=1.0, cap=5.0)
    delays: list[float] = []
    with pytest.raises(TransientSourceError):
        call_with_retries(
            Flaky(*[TimeoutError()] * 7),
            policy,
            what="x",
            sleep=delays.append,
            rng=random.Random(3),
        )
    ceilings = [min(5.0, 1.0 * 2**k) for k in range(6)]
    assert ceilings == [1.0, 2.0, 4.0, 5.0, 5.0, 5.0]
    assert len(delays) == 6  # between 7 attempts
    assert all(0.0 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    expected = random.Random(3)
    assert delays == [expected.uniform(0.0, c) for c in ceilings]
    assert len(set(delays)) == len(delays)  # jittered, not a fixed schedule


def test_retries_then_succeeds() -> None:
    flaky, delays = Flaky(http_error(503), YFRateLimitError()), []
    result = call_with_retries(flaky, RetryPolicy(4, 0.5, 10.0), what="x", sleep=delays.append, rng=random.Random(0))
    assert (result, flaky.calls, len(delays)) == ("ok", 3, 2)


def test_gives_up_naming_what_and_the_last_error() -> None:
    last = http_error(429)
    flaky = Flaky(TimeoutError("first"), last)
    with pytest.raises(TransientSourceError) as caught:
        call_with_retries(flaky, RetryPolicy(2, 0.0, 0.0), what="feed https://x/rss", sleep=lambda _: None)
    assert flaky.calls == 2
    assert str(caught.value) == "feed https://x/rss: gave up after 2 attempts: 429 error"
    assert caught.value.__cause__ is last


def test_non_transient_error_raises_at_once_unchanged() -> None:
    error = http_error(404)
    flaky, delays = Flaky(error), []
    with pytest.raises(requests.HTTPError) as caught:
        call_with_retries(flaky, RetryPolicy(5, 1.0, 10.0), what="x", sleep=delays.append)
    assert caught.value is error
    assert (flaky.calls, delays) == (1, [])


def test_policy_from_settings() -> None:
    settings = Http(timeout_s=3, max_attempts=4, backoff_base_s=0.5, backoff_max_s=8, requests_per_second=2)
    assert RetryPolicy.from_settings(settings) == RetryPolicy(max_attempts=4, base=0.5, cap=8.0)


def test_delay_of_a_late_retry_takes_the_cap() -> None:
    assert RetryPolicy(3000, 1.0, 7.0).delay(2999, random.Random(1)) <= 7.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_rate_limiter_spaces_calls() -> None:
    clock = FakeClock()
    limiter = RateLimiter(2.0, clock=clock, sleep=clock.sleep)
    limiter.wait()  # the first call goes at once
    limiter.wait()
    limiter.wait()
    assert clock.slept == [0.5, 0.5]
    clock.now += 0.2
    limiter.wait()  # only the rest of the interval
    assert clock.slept[-1] == pytest.approx(0.3)
    clock.now += 10
    limiter.wait()  # idle long enough: no wait
    assert len(clock.slept) == 3


def test_rate_limiter_books_the_cost_of_a_batch() -> None:
    clock = FakeClock()
    limiter = RateLimiter(4.0, clock=clock, sleep=clock.sleep)
    limiter.wait(cost=10)  # ten requests at 4/s
    limiter.wait()
    assert clock.slept == [2.5]


def test_rate_limiter_queues_threads() -> None:
    clock = FakeClock()
    limiter = RateLimiter(10.0, clock=clock, sleep=clock.sleep)
    threads = [threading.Thread(target=limiter.wait) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert clock.slept == pytest.approx([0.1] * 7)  # one at once, then one per interval


def test_rate_limiter_rejects_zero_rate() -> None:
    with pytest.raises(ValueError, match="positive"):
        RateLimiter(0)


def test_throttled_caller_waits_before_every_attempt() -> None:
    settings = Http(timeout_s=1, max_attempts=3, backoff_base_s=0, backoff_max_s=0, requests_per_second=1e9)
    caller = ThrottledCaller(settings, sleep=lambda _: None)
    waits: list[float] = []
    caller.limiter.wait = lambda cost=1.0: waits.append(cost)  # type: ignore[method-assign]
    assert caller.call(Flaky(TimeoutError()), what="x") == "ok"
    assert waits == [1.0, 1.0]
    assert caller.retry(Flaky(TimeoutError()), what="x") == "ok"
    assert waits == [1.0, 1.0]  # `retry` leaves the limiter to its caller


def test_fetch_url_sends_a_user_agent_and_raises_http_errors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: dict[str, object] = {}

    def fake_get(url: str, timeout: float, headers: dict[str, str]) -> requests.Response:
        seen.update(url=url, timeout=timeout, agent=headers["User-Agent"])
        response = requests.Response()
        response.status_code = 404 if url.endswith("missing") else 200
        response._content = b"<rss/>"
        response.url = url
        return response

    monkeypatch.setattr(http.requests, "get", fake_get)
    assert fetch_url("https://news.example/rss", 7.5) == b"<rss/>"
    assert seen == {"url": "https://news.example/rss", "timeout": 7.5, "agent": http.USER_AGENT}
    assert "bentley-budget-bot/" in http.USER_AGENT
    with pytest.raises(requests.HTTPError) as caught:
        fetch_url("https://news.example/missing", 1)
    assert not is_transient(caught.value)
