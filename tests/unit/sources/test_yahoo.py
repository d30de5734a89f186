"""The yahoo sources on fakes of yfinance in its exact output shapes; never the network.

`fixtures/yfinance_download.csv` is what yfinance 1.7.0's own `download` returned for canned
Yahoo chart responses (see `fixtures/record_yfinance_download.py`): columns ("Price",
"Ticker"), Price sorted, index "Date"; AAA pays 0.5 on 2020-08-28 and splits 2:1 on
2020-08-31, BBB is plain, ZZZZ is unknown to Yahoo and padded with NaN columns.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
import requests
from yfinance.exceptions import YFRateLimitError

from bentley import schemas
from bentley.config import Http
from bentley.sources import yahoo
from bentley.sources.base import FetchRequest, SourceError
from bentley.sources.yahoo import YahooMarketSource, YahooNewsSource

FIXTURES = Path(__file__).parent / "fixtures"
HTTP = Http(timeout_s=12, max_attempts=3, backoff_base_s=1.0, backoff_max_s=4.0, requests_per_second=1e9)
WINDOW = (dt.date(2020, 8, 27), dt.date(2020, 9, 1))
MISSING_REASON = "possibly delisted; no timezone found"


def recorded() -> pd.DataFrame:
    frame = pd.read_csv(FIXTURES / "yfinance_download.csv", header=[0, 1], index_col=0, parse_dates=True)
    assert frame.columns.names == ["Price", "Ticker"] and frame.index.name == "Date"
    return frame


def columns_of(frame: pd.DataFrame, tickers: list[str]) -> pd.DataFrame:
    """The recorded frame restricted to `tickers`, as yfinance returns a download of them."""
    return frame.loc[:, frame.columns.get_level_values("Ticker").isin(tickers)]


def yf_shape(blocks: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Per-ticker frames assembled like yfinance's multi.py: concat, swap levels, sort."""
    data = pd.concat(blocks, axis=1, sort=True, names=["Ticker", "Price"])
    data.columns = data.columns.swaplevel(0, 1)
    return data.sort_index(level=0, axis=1)


def with_failed(loaded: list[str], failed: str) -> pd.DataFrame:
    """A download where `failed` got nothing: yfinance pads it with `utils.empty_df()` columns."""
    frame = recorded()
    blocks = {t: frame.xs(t, axis=1, level="Ticker") for t in loaded}
    blocks[failed] = pd.DataFrame(
        np.nan, index=frame.index, columns=["Open", "High", "Low", "Close", "Adj Close", "Volume"]
    )
    return yf_shape(blocks)


def bbb_like(tickers: list[str]) -> pd.DataFrame:
    block = recorded().xs("BBB", axis=1, level="Ticker")
    return yf_shape({t: block for t in tickers})


class FakeDownload:
    """`yfinance.download` replaced: records each call's kwargs, then plays `steps` in turn.

    A step is a frame, an exception to raise, or a callable of the requested tickers. `logged`
    maps a ticker to an error that yfinance 1.x would log for that call.
    """

    def __init__(self, *steps: Any, logged: list[dict[str, str]] | None = None) -> None:
        self.steps = list(steps)
        self.logged = list(logged or [])
        self.calls: list[dict[str, Any]] = []

    def __call__(self, **kwargs: Any) -> pd.DataFrame:
        self.calls.append(kwargs)
        step = self.steps.pop(0) if len(self.steps) > 1 else self.steps[0]
        errors = self.logged.pop(0) if self.logged else {}
        if errors:  # the summary lines of yfinance 1.7 multi.py: f"{syms}: " + err
            logging.getLogger("yfinance").error("\n%d Failed download:", len(errors))
            for ticker, reason in errors.items():
                logging.getLogger("yfinance").error(f"{[ticker]}: " + reason)
        if isinstance(step, BaseException):
            raise step
        return step(kwargs["tickers"]) if callable(step) else step

    @property
    def tickers(self) -> list[list[str]]:
        return [call["tickers"] for call in self.calls]


def market(download: Callable[..., Any], tickers: list[str] | None = None, **kwargs: Any) -> YahooMarketSource:
    return YahooMarketSource(tickers, HTTP, download=download, sleep=lambda _: None, rng=random.Random(0), **kwargs)


def fetch_prices(source: YahooMarketSource, *tickers: str, window: tuple[dt.date, dt.date] = WINDOW) -> pd.DataFrame:
    return source.fetch("prices", FetchRequest(window[0], window[1], tickers))


def assert_contract(frame: pd.DataFrame, contract: schemas.TableContract) -> None:
    assert list(frame.columns) == contract.column_names
    kinds = {
        "str": lambda d: pd.api.types.is_object_dtype(d) or pd.api.types.is_string_dtype(d),
        "date": lambda d: d == np.dtype("datetime64[ns]"),
        "timestamp": lambda d: isinstance(d, pd.DatetimeTZDtype) and str(d.tz) == "UTC" and d.unit == "ns",
        "float": lambda d: d == np.float64,
        "int": lambda d: d == np.int64,
    }
    for name, kind in contract.columns.items():
        assert kinds[kind](frame[name].dtype), (name, frame[name].dtype)
    for name in (n for n, kind in contract.columns.items() if kind == "date"):
        assert (frame[name] == frame[name].dt.normalize()).all()


# --------------------------------------------------------------------------- prices


def test_the_fakes_build_the_recorded_shape() -> None:
    assert with_failed(["AAA", "BBB"], "ZZZZ").columns.equals(recorded().columns)


def test_single_ticker_keeps_close_and_adj_close_splits_and_dividends() -> None:
    download = FakeDownload(columns_of(recorded(), ["AAA"]))
    prices = fetch_prices(market(download), "AAA")
    assert_contract(prices, schemas.PRICES)
    assert prices["date"].dt.strftime("%Y-%m-%d").tolist() == [
        "2020-08-27",
        "2020-08-28",
        "2020-08-31",
        "2020-09-01",
    ]
    assert prices["close"].tolist() == [100.0, 101.0, 102.0, 103.0]
    assert prices["adj_close"].tolist() == [90.0, 90.9, 91.8, 92.7]
    assert prices["open"].tolist() == [99.5, 100.5, 101.5, 102.5]
    assert prices["volume"].tolist() == [1000, 2000, 3000, 4000]
    assert prices["split_ratio"].tolist() == [1.0, 1.0, 2.0, 1.0]  # Stock Splits 0 means none
    assert prices["dividend"].tolist() == [0.0, 0.5, 0.0, 0.0]
    assert download.tickers == [["AAA"]]


def test_download_arguments() -> None:
    download = FakeDownload(columns_of(recorded(), ["AAA"]))
    fetch_prices(market(download), "AAA")
    assert download.calls == [
        {
            "tickers": ["AAA"],
            "start": "2020-08-27",
            "end": "2020-09-02",  # exclusive: the request's end plus one day
            "interval": "1d",
            "auto_adjust": False,
            "actions": True,
            "group_by": "column",
            "multi_level_index": True,
            "progress": False,
            "threads": False,
            "timeout": 12,
            "keepna": False,
        }
    ]


def test_several_tickers_with_one_unknown_to_yahoo() -> None:
    download = FakeDownload(recorded(), logged=[{"ZZZZ": MISSING_REASON}])
    source = market(download)
    prices = fetch_prices(source, "ZZZZ", "BBB", "AAA")
    assert_contract(prices, schemas.PRICES)
    assert prices.groupby("ticker").size().to_dict() == {"AAA": 4, "BBB": 4}
    assert prices[["ticker", "date"]].equals(prices[["ticker", "date"]].sort_values(["ticker", "date"]))
    assert source.failures == {"ZZZZ": MISSING_REASON}
    assert download.tickers == [["AAA", "BBB", "ZZZZ"]]


def test_an_empty_ticker_without_a_logged_reason() -> None:
    source = market(FakeDownload(recorded()))
    fetch_prices(source, "AAA", "ZZZZ")
    assert source.failures == {"ZZZZ": "no rows returned"}


def test_reads_yfinance_0_2_shared_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "yfinance.shared", SimpleNamespace(_ERRORS={"ZZZZ": "delisted (0.2)"}))
    source = market(FakeDownload(recorded()))
    fetch_prices(source, "AAA", "ZZZZ")
    assert source.failures == {"ZZZZ": "delisted (0.2)"}


def test_a_requested_ticker_absent_from_the_frame_fails_alone() -> None:
    source = market(FakeDownload(columns_of(recorded(), ["AAA"])))
    prices = fetch_prices(source, "AAA", "QQQQ")
    assert set(prices["ticker"]) == {"AAA"}
    assert source.failures == {"QQQQ": "no rows returned"}


def test_flat_single_level_columns() -> None:
    flat = columns_of(recorded(), ["AAA"]).droplevel("Ticker", axis=1)  # multi_level_index=False
    prices = fetch_prices(market(FakeDownload(flat)), "AAA")
    assert prices["split_ratio"].tolist() == [1.0, 1.0, 2.0, 1.0]
    assert prices["close"].tolist() == [100.0, 101.0, 102.0, 103.0]


def test_flat_columns_for_several_tickers_fail_the_batch() -> None:
    flat = columns_of(recorded(), ["AAA"]).droplevel("Ticker", axis=1)
    source = market(FakeDownload(flat))
    assert fetch_prices(source, "AAA", "BBB").empty
    assert set(source.failures) == {"AAA", "BBB"}
    assert "single-level columns" in source.failures["AAA"]


@pytest.mark.parametrize("tz", ["America/New_York", "Asia/Tokyo", "UTC"])
def test_tz_aware_index_keeps_the_exchange_date(tz: str) -> None:
    frame = columns_of(recorded(), ["AAA"])
    frame.index = frame.index.tz_localize(tz)
    prices = fetch_prices(market(FakeDownload(frame)), "AAA")
    assert_contract(prices, schemas.PRICES)
    assert prices["date"].dt.strftime("%Y-%m-%d").tolist() == [
        "2020-08-27",
        "2020-08-28",
        "2020-08-31",
        "2020-09-01",
    ]


def test_padding_rows_dropped_and_missing_actions_filled() -> None:
    """A ticker that did not trade on a date another ticker did: NaN row, float Volume."""
    frame = recorded()
    frame.loc[
        pd.Timestamp("2020-08-28"),
        [(c, "BBB") for c in ["Open", "High", "Low", "Close", "Adj Close", "Volume"]],
    ] = np.nan
    frame.loc[pd.Timestamp("2020-08-31"), ("Stock Splits", "BBB")] = np.nan
    source = market(FakeDownload(frame))
    prices = fetch_prices(source, "AAA", "BBB")
    bbb = prices[prices["ticker"] == "BBB"]
    assert bbb["date"].dt.strftime("%m-%d").tolist() == ["08-27", "08-31", "09-01"]
    assert bbb["split_ratio"].tolist() == [1.0, 1.0, 1.0]
    assert prices["volume"].dtype == np.int64


def test_rows_outside_the_window_are_dropped() -> None:
    prices = fetch_prices(market(FakeDownload(recorded())), "AAA", window=(dt.date(2020, 8, 28), dt.date(2020, 8, 31)))
    assert prices["date"].dt.strftime("%m-%d").tolist() == ["08-28", "08-31"]


def test_transient_call_failures_are_retried() -> None:
    download = FakeDownload(TimeoutError("read timed out"), requests.ConnectionError("reset"), recorded())
    slept: list[float] = []
    source = YahooMarketSource(None, HTTP, download=download, sleep=slept.append, rng=random.Random(0))
    prices = fetch_prices(source, "AAA", "BBB")
    assert len(download.calls) == 3
    assert set(prices["ticker"]) == {"AAA", "BBB"} and source.failures == {}
    backoffs = [s for s in slept if s > 1e-6]  # the rate limiter's waits are nanoseconds here
    assert len(backoffs) == 2 and backoffs[0] <= 1.0 and backoffs[1] <= 2.0


def test_a_batch_that_keeps_failing_fails_its_tickers_only() -> None:
    download = FakeDownload(YFRateLimitError())
    source = market(download)
    assert fetch_prices(source, "AAA", "BBB").empty
    assert len(download.calls) == HTTP.max_attempts
    assert set(source.failures) == {"AAA", "BBB"}
    assert source.failures["AAA"].startswith("yahoo prices AAA..BBB: gave up after 3 attempts: Too Many Requests")


def test_a_non_transient_call_error_is_not_retried() -> None:
    download = FakeDownload(KeyError("chart"))
    source = market(download)
    assert fetch_prices(source, "AAA", "BBB").empty
    assert len(download.calls) == 1
    assert source.failures == {"AAA": "KeyError: 'chart'", "BBB": "KeyError: 'chart'"}


def test_tickers_yfinance_reports_rate_limited_are_downloaded_again_alone() -> None:
    """yfinance 1.x catches a rate limit per ticker and only logs it; the others loaded."""
    limited = "YFRateLimitError('Too Many Requests. Rate limited. Try after a while.')"
    download = FakeDownload(
        with_failed(["AAA"], "BBB"),
        lambda tickers: columns_of(recorded(), tickers),
        logged=[{"BBB": limited}],
    )
    source = market(download)
    booked: list[float] = []
    source._calls.limiter.wait = lambda cost=1.0: booked.append(cost)  # type: ignore[method-assign]
    prices = fetch_prices(source, "AAA", "BBB")
    assert download.tickers == [["AAA", "BBB"], ["BBB"]]
    assert booked == [2, 1]  # a rate-limit slot per ticker downloaded
    assert prices.groupby("ticker").size().to_dict() == {"AAA": 4, "BBB": 4}
    assert source.failures == {}


def test_a_ticker_rate_limited_every_time_fails_with_the_give_up_message() -> None:
    limited = "YFRateLimitError('Too Many Requests. Rate limited. Try after a while.')"
    download = FakeDownload(with_failed(["AAA"], "BBB"), logged=[{"BBB": limited}] * 3)
    source = market(download)
    prices = fetch_prices(source, "AAA", "BBB")
    assert set(prices["ticker"]) == {"AAA"}
    assert download.tickers == [["AAA", "BBB"], ["BBB"], ["BBB"]]
    assert source.failures["BBB"] == f"yahoo prices AAA..BBB: gave up after 3 attempts: BBB: {limited}"


def test_batches_of_fifty() -> None:
    tickers = [f"T{i:03d}" for i in range(120)]
    download = FakeDownload(bbb_like)
    prices = fetch_prices(market(download), *tickers)
    assert [len(t) for t in download.tickers] == [50, 50, 20]
    assert prices["ticker"].nunique() == 120 and len(prices) == 480


def test_empty_request() -> None:
    download = FakeDownload(recorded())
    prices = fetch_prices(market(download), window=WINDOW)
    assert prices.empty and download.calls == []
    assert_contract(prices, schemas.PRICES)


def test_fetch_resets_failures() -> None:
    source = market(FakeDownload(recorded()))
    fetch_prices(source, "AAA", "ZZZZ")
    fetch_prices(source, "AAA")
    assert source.failures == {}


def test_available_tickers_and_health_stay_offline() -> None:
    download = FakeDownload(recorded())
    listed = market(download, ["AAA", "BBB"])
    assert listed.available_tickers() == ["AAA", "BBB"]
    assert listed.health().ok and listed.health().component == "source:yahoo"
    unlisted = market(download)
    with pytest.raises(SourceError, match="universe.tickers must list the tickers for the yahoo source"):
        unlisted.available_tickers()
    assert not unlisted.health().ok
    assert download.calls == []


def test_instrument_types_follow_yahoos_caret_convention_offline() -> None:
    """`^GSPC` is an index, anything else an equity; asking costs no download."""
    download = FakeDownload(recorded())
    source = market(download, ["AAA", "^GSPC"])
    assert source.instrument_types(["AAA", "^GSPC", "^VIX"]) == {
        "AAA": "equity",
        "^GSPC": "index",
        "^VIX": "index",
    }
    assert download.calls == []


def test_unknown_dataset() -> None:
    with pytest.raises(ValueError, match="no dataset 'news'"):
        market(FakeDownload(recorded())).fetch("news", FetchRequest(*WINDOW, ("AAA",)))


# --------------------------------------------------------------------------- news

NEW_SHAPE = {
    "id": "5d0c5a8e-1111",
    "content": {
        "id": "5d0c5a8e-1111",
        "contentType": "STORY",
        "title": "  Acme beats estimates\n",
        "summary": "Acme earned more.",
        "pubDate": "2024-03-08T22:15:00Z",  # Friday after the 16:00 New York close
        "provider": {"displayName": "Reuters", "url": "https://www.reuters.com/"},
        "canonicalUrl": {
            "url": "https://finance.yahoo.com/news/acme-beats.html",
            "site": "finance",
        },
        "clickThroughUrl": None,
    },
}
OLD_SHAPE = {
    "uuid": "a1b2c3",
    "title": "Acme <b>unveils</b> a product",  # plain text in the JSON: kept as written
    "publisher": "Business Wire",
    "link": "https://finance.yahoo.com/news/acme-unveils.html",
    "providerPublishTime": int(pd.Timestamp("2024-03-09T15:00:00Z").timestamp()),  # Saturday
    "type": "STORY",
}
BEFORE_CLOSE = {
    "id": "early",
    "content": {
        "title": "Acme opens higher",
        "pubDate": "2024-03-08T14:45:00Z",
        "provider": {"displayName": "Yahoo Finance"},
        "canonicalUrl": None,
        "clickThroughUrl": {"url": "https://finance.yahoo.com/m/early"},
    },
}


class FakeTicker:
    def __init__(self, news: Any) -> None:
        self._news = news

    @property
    def news(self) -> Any:
        if isinstance(self._news, BaseException):
            raise self._news
        return self._news


def news_source(by_ticker: dict[str, Any], calls: list[str] | None = None) -> YahooNewsSource:
    def factory(ticker: str) -> FakeTicker:
        if calls is not None:
            calls.append(ticker)
        return FakeTicker(by_ticker[ticker])

    return YahooNewsSource(HTTP, ticker_factory=factory, sleep=lambda _: None, rng=random.Random(0))


def fetch_news(
    source: YahooNewsSource, *tickers: str, start: str = "2024-03-01", end: str = "2024-03-15"
) -> pd.DataFrame:
    return source.fetch("news", FetchRequest(dt.date.fromisoformat(start), dt.date.fromisoformat(end), tickers))


def test_news_in_both_json_shapes() -> None:
    news = fetch_news(news_source({"ACME": [NEW_SHAPE, OLD_SHAPE, BEFORE_CLOSE]}), "ACME")
    assert_contract(news, schemas.NEWS)
    rows = news.set_index("news_id")
    new, old, early = (
        rows.loc["yahoo:ACME:5d0c5a8e-1111"],
        rows.loc["yahoo:ACME:a1b2c3"],
        rows.loc["yahoo:ACME:early"],
    )
    assert new["headline"] == "Acme beats estimates"
    assert (new["publisher"], new["url"]) == (
        "Reuters",
        "https://finance.yahoo.com/news/acme-beats.html",
    )
    assert new["published_at"] == pd.Timestamp("2024-03-08T22:15:00Z")
    assert old["headline"] == "Acme <b>unveils</b> a product"
    assert (old["publisher"], old["url"]) == (
        "Business Wire",
        "https://finance.yahoo.com/news/acme-unveils.html",
    )
    assert old["published_at"] == pd.Timestamp("2024-03-09T15:00:00Z")
    assert early["url"] == "https://finance.yahoo.com/m/early"
    assert set(news["ticker"]) == {"ACME"}


def test_news_session_dates() -> None:
    news = fetch_news(news_source({"ACME": [NEW_SHAPE, OLD_SHAPE, BEFORE_CLOSE]}), "ACME").set_index("news_id")
    dates = news["date"].dt.strftime("%Y-%m-%d").to_dict()
    assert dates == {
        "yahoo:ACME:early": "2024-03-08",  # before the close: that session
        "yahoo:ACME:5d0c5a8e-1111": "2024-03-11",  # Friday after the close: Monday
        "yahoo:ACME:a1b2c3": "2024-03-11",  # Saturday: Monday
    }


def test_news_window_is_by_session_date() -> None:
    news = fetch_news(news_source({"ACME": [NEW_SHAPE, OLD_SHAPE, BEFORE_CLOSE]}), "ACME", end="2024-03-08")
    assert news["news_id"].tolist() == ["yahoo:ACME:early"]


def test_one_story_under_two_tickers_is_two_rows() -> None:
    news = fetch_news(news_source({"ACME": [NEW_SHAPE], "BOLT": [NEW_SHAPE]}), "BOLT", "ACME")
    assert news["news_id"].tolist() == ["yahoo:ACME:5d0c5a8e-1111", "yahoo:BOLT:5d0c5a8e-1111"]


def test_news_failures_are_per_ticker_and_transient_ones_retried() -> None:
    calls: list[str] = []
    flaky = iter([TimeoutError("slow"), [BEFORE_CLOSE]])

    class Flaky:
        @property
        def news(self) -> Any:
            item = next(flaky)
            if isinstance(item, BaseException):
                raise item
            return item

    tickers = {"BAD": ValueError("unexpected payload"), "ACME": [NEW_SHAPE]}

    def factory(ticker: str) -> Any:
        calls.append(ticker)
        return Flaky() if ticker == "FLKY" else FakeTicker(tickers[ticker])

    source = YahooNewsSource(HTTP, ticker_factory=factory, sleep=lambda _: None)
    news = fetch_news(source, "ACME", "BAD", "FLKY")
    assert calls == ["ACME", "BAD", "FLKY", "FLKY"]
    assert source.failures == {"BAD": "ValueError: unexpected payload"}
    assert sorted(news["ticker"]) == ["ACME", "FLKY"]


def test_malformed_items_are_skipped_and_counted() -> None:
    items = [
        {"id": "x", "content": {"title": "No date", "pubDate": None}},
        {"id": "y", "content": {"title": "Bad date", "pubDate": "not a date"}},
        {"content": {"title": "No id", "pubDate": "2024-03-08T14:45:00Z"}},
        {"uuid": "z", "title": "   ", "providerPublishTime": 1709900000},
        BEFORE_CLOSE,
    ]
    source = news_source({"ACME": items})
    news = fetch_news(source, "ACME")
    assert news["news_id"].tolist() == ["yahoo:ACME:early"]
    assert source.skipped == 4


def test_no_news() -> None:
    source = news_source({"ACME": [], "BOLT": None})
    news = fetch_news(source, "ACME", "BOLT")
    assert news.empty and source.failures == {}
    assert_contract(news, schemas.NEWS)


def test_news_health_is_offline() -> None:
    calls: list[str] = []
    assert news_source({}, calls).health().ok and calls == []


def test_yfinance_is_imported_lazily() -> None:
    assert callable(yahoo._yfinance().download)
