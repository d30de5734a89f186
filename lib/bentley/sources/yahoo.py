"""Yahoo Finance through yfinance: daily prices and headlines.

Prices are downloaded in batches with `auto_adjust=False` and `actions=True`, so both the
as-traded Close and the Adj Close arrive, with Dividends and Stock Splits. yfinance returns
(checked on 1.7.0 by running its own `download` on canned Yahoo chart responses, see
tests/unit/sources/fixtures/record_yfinance_download.py):

* columns: a MultiIndex with levels ("Price", "Ticker"), Price sorted alphabetically among
  Adj Close, Close, Dividends, High, Low, Open, Stock Splits, Volume (and Capital Gains for
  funds) — also for a single ticker; with `multi_level_index=False` one ticker's columns are flat;
* index: a tz-naive DatetimeIndex named "Date" holding the exchange's local session dates
  (datetime64[s] under pandas 3; tz-aware if a caller asks for `ignore_tz=False`);
* a ticker without data (delisted, typo): NaN Open/High/Low/Close/Adj Close/Volume columns and
  no Dividends/Stock Splits columns; its Volume turns float.

yfinance catches every per-ticker error itself, including rate limits, so `download` rarely
raises. It reports them in `yfinance.shared._ERRORS` (0.2.x) or only in its log (1.x:
"['AAA', 'BBB']: reason"); both are read. Tickers whose reason is a rate limit, timeout or
dropped connection are downloaded again (only they) with backoff, like a failed call.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import random
import re
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NamedTuple

import pandas as pd

from bentley import schemas
from bentley.calendar import DEFAULT_CALENDAR
from bentley.sources.base import (
    FetchRequest,
    Health,
    MarketSource,
    Source,
    SourceError,
    TransientSourceError,
)
from bentley.sources.http import ThrottledCaller
from bentley.sources.rss import news_frame, plain_text

if TYPE_CHECKING:
    from bentley.config import Http

#: Tickers per `yfinance.download` call; one call makes about one request per ticker.
BATCH_SIZE = 50

#: yfinance column -> PRICES column.
_PRICE_COLUMNS = {
    "Open": "open",
    "High": "high",
    "Low": "low",
    "Close": "close",
    "Adj Close": "adj_close",
    "Volume": "volume",
    "Dividends": "dividend",
    "Stock Splits": "split_ratio",
}
_OHLC = ["Open", "High", "Low", "Close"]
_PRICE_DTYPES = {
    name: {"str": object, "date": "datetime64[ns]", "float": "float64", "int": "int64"}[kind]
    for name, kind in schemas.PRICES.columns.items()
}
#: What yfinance's per-ticker error text says when waiting may help (exception reprs and messages).
_TRANSIENT_REASON = re.compile(
    r"YFRateLimitError|Too Many Requests|Timeout|timed out|ConnectionError|Connection reset",
    re.IGNORECASE,
)
_LOGGED_ERROR = re.compile(r"\[([^\]]*)\]:\s*(.+)", re.DOTALL)


def _reason(exc: BaseException) -> str:
    """A failure as one line for `failures`: our own errors by message, others with their type."""
    return str(exc) if isinstance(exc, (SourceError, TransientSourceError)) else f"{type(exc).__name__}: {exc}"


# --------------------------------------------------------------------------- yfinance errors


class _ErrorLog(logging.Handler):
    """Collects yfinance's summary lines of failed downloads: "['AAA', 'BBB']: reason"."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.errors: dict[str, str] = {}

    def emit(self, record: logging.LogRecord) -> None:
        match = _LOGGED_ERROR.search(record.getMessage())
        if match:
            for ticker in re.findall(r"'([^']+)'", match.group(1)):
                self.errors[ticker] = match.group(2).strip()


@contextmanager
def _logged_yfinance_errors() -> Iterator[dict[str, str]]:
    """Ticker -> reason, for the errors yfinance logs inside the block."""
    handler, logger = _ErrorLog(), logging.getLogger("yfinance")
    logger.addHandler(handler)
    try:
        yield handler.errors
    finally:
        logger.removeHandler(handler)


def _shared_errors() -> Mapping[str, str]:
    """yfinance 0.2.x's module-level record of the last download's errors (absent in 1.x)."""
    return getattr(sys.modules.get("yfinance.shared"), "_ERRORS", None) or {}


# --------------------------------------------------------------------------- frame shapes


def _by_ticker(raw: pd.DataFrame | None, tickers: Sequence[str]) -> pd.DataFrame:
    """yfinance's frame with a column level named "Ticker", whichever shape it came in."""
    if raw is None:
        return pd.DataFrame()
    if isinstance(raw.columns, pd.MultiIndex):
        if "Ticker" in raw.columns.names:
            return raw
        return raw.set_axis(raw.columns.set_names(["Price", "Ticker"]), axis=1)  # group_by="column" order
    if raw.columns.empty:
        return raw
    if len(tickers) != 1:
        raise SourceError(f"yfinance returned single-level columns for {len(tickers)} tickers: {list(tickers)}")
    return pd.concat({tickers[0]: raw}, axis=1, names=["Ticker", "Price"])


def _ticker_prices(raw: pd.DataFrame, ticker: str) -> pd.DataFrame:
    """One ticker's rows in the PRICES contract; empty if yfinance had none for it.

    Rows without any of Open/High/Low/Close are padding from other tickers' dates. A Stock
    Splits value of 0 (or missing) means no split, so the ratio is 1.
    """
    if not isinstance(raw.columns, pd.MultiIndex) or ticker not in raw.columns.get_level_values("Ticker"):
        return _empty_prices()
    block = raw.xs(ticker, axis=1, level="Ticker").reindex(columns=list(_PRICE_COLUMNS))
    block = block.dropna(subset=_OHLC, how="all")
    dates = pd.DatetimeIndex(block.index)
    if dates.tz is not None:
        dates = dates.tz_localize(None)  # keep the exchange's local date, which is the session
    frame = block.rename(columns=_PRICE_COLUMNS).reset_index(drop=True)
    frame["ticker"] = ticker
    frame["date"] = dates.normalize().as_unit("ns")
    frame["volume"] = frame["volume"].fillna(0)
    frame["dividend"] = frame["dividend"].fillna(0.0)
    frame["split_ratio"] = frame["split_ratio"].where(frame["split_ratio"] > 0, 1.0)
    return frame[schemas.PRICES.column_names].astype(_PRICE_DTYPES)


def _empty_prices() -> pd.DataFrame:
    return pd.DataFrame(columns=schemas.PRICES.column_names).astype(_PRICE_DTYPES)


class _Download(NamedTuple):
    """One `download` call's frame, its per-ticker errors, and the tickers it settled."""

    raw: pd.DataFrame
    errors: Mapping[str, str]
    settled: list[str]


# --------------------------------------------------------------------------- market


class YahooMarketSource(MarketSource):
    """Daily bars of the configured tickers from Yahoo Finance.

    `failures` gets each ticker that loaded nothing: yfinance's reason, "no rows returned", or
    the give-up message after retries. One failing ticker never fails the fetch.

    Instrument types follow Yahoo's own symbol convention (`MarketSource.instrument_types`):
    a `^` symbol is an index, anything else an equity. `download` returns no quoteType (the
    chart response's `instrumentType` stays inside yfinance), and asking Yahoo's quote
    endpoint would cost a request per ticker per run; an ETF or a fund is therefore named in
    `universe.instrument_types`, which wins over the source.
    """

    name = "yahoo"
    datasets = ("prices",)

    def __init__(
        self,
        tickers: list[str] | None,
        http: Http,
        *,
        download: Callable[..., pd.DataFrame | None] | None = None,
        sleep: Callable[[float], object] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__()
        self.tickers = None if tickers is None else list(tickers)
        self._download = download
        self._timeout_s = http.timeout_s
        self._rate = http.requests_per_second
        self._calls = ThrottledCaller(http, sleep=sleep, rng=rng)

    def available_tickers(self) -> list[str]:
        if self.tickers is None:
            raise SourceError(
                "universe.tickers must list the tickers for the yahoo source: Yahoo cannot enumerate a universe"
            )
        return list(self.tickers)

    def fetch(self, dataset: str, request: FetchRequest) -> pd.DataFrame:
        self._check_dataset(dataset)
        self.failures = {}
        tickers = sorted(set(request.tickers))
        parts = [_empty_prices()]
        for start in range(0, len(tickers), BATCH_SIZE):
            for call in self._download_batch(tickers[start : start + BATCH_SIZE], request):
                for ticker in call.settled:
                    prices = _ticker_prices(call.raw, ticker)
                    if prices.empty:
                        self.failures[ticker] = call.errors.get(ticker) or "no rows returned"
                    parts.append(prices)
        frame = pd.concat(parts, ignore_index=True)
        inside = frame["date"].between(pd.Timestamp(request.start), pd.Timestamp(request.end))
        return frame[inside].sort_values(["ticker", "date"]).reset_index(drop=True)

    def health(self) -> Health:
        """Configuration only, never the network: a live check is `fetch("prices", ...)` of one
        ticker over a recent window."""
        if self.tickers is None:
            return Health(
                f"source:{self.name}",
                False,
                "universe.tickers is null: Yahoo cannot enumerate a universe",
            )
        detail = (
            f"{len(self.tickers)} tickers configured, at most {self._rate:g} requests/s; "
            "Yahoo is not contacted by this check"
        )
        return Health(f"source:{self.name}", True, detail)

    # ---------------------------------------------------------------- internals

    def _download_batch(self, batch: list[str], request: FetchRequest) -> list[_Download]:
        """Download `batch`, again for the tickers that failed transiently, up to max_attempts.

        If the call itself keeps failing, or fails for a non-transient reason, every ticker
        still pending goes to `failures`.
        """
        pending, done = list(batch), []

        def attempt() -> None:
            nonlocal pending
            self._calls.limiter.wait(cost=len(pending))  # yfinance makes a request per ticker
            call = self._download_once(pending, request)
            retry = [t for t in pending if _TRANSIENT_REASON.search(call.errors.get(t, ""))]
            done.append(call._replace(settled=[t for t in pending if t not in retry]))
            pending = retry
            if retry:
                raise TransientSourceError(f"{', '.join(retry)}: {call.errors[retry[0]]}")

        try:
            self._calls.retry(attempt, what=f"yahoo prices {batch[0]}..{batch[-1]}")
        except Exception as exc:  # noqa: BLE001 - yfinance raises many types; each is this batch's failure only
            self.failures.update(dict.fromkeys(pending, _reason(exc)))
        return done

    def _download_once(self, tickers: list[str], request: FetchRequest) -> _Download:
        download = self._download or _yfinance().download
        with _logged_yfinance_errors() as logged:
            raw = download(
                tickers=list(tickers),
                start=request.start.isoformat(),
                end=(request.end + dt.timedelta(days=1)).isoformat(),  # yfinance's end is exclusive
                interval="1d",
                auto_adjust=False,  # keep both Close (as traded) and Adj Close
                actions=True,  # Dividends and Stock Splits
                group_by="column",
                multi_level_index=True,
                progress=False,
                threads=False,
                timeout=self._timeout_s,
                keepna=False,
            )
        shared = _shared_errors()
        errors = {t: reason for t in tickers if (reason := logged.get(t) or shared.get(t))}
        return _Download(_by_ticker(raw, tickers), errors, list(tickers))


def _yfinance() -> Any:
    """yfinance, imported on first use: it takes most of a second and sample runs never need it."""
    import yfinance

    return yfinance


# --------------------------------------------------------------------------- news


def _utc(value: Any, unit: str | None = None) -> pd.Timestamp | None:
    """A timestamp as UTC (naive ones are taken as UTC), or None if it is not one."""
    try:
        stamp = pd.to_datetime(value, utc=True, unit=unit)
    except (ValueError, TypeError, OverflowError):
        return None
    return None if pd.isna(stamp) else stamp


def _article(item: Mapping[str, Any]) -> tuple[Any, str, pd.Timestamp | None, Any, Any]:
    """(id, title, published, publisher, url) of a yfinance news item, in either shape.

    yfinance >= 0.2.5x: {"id", "content": {"title", "pubDate" (ISO 8601), "provider":
    {"displayName"}, "canonicalUrl": {"url"}, "clickThroughUrl": {"url"}, ...}}; before:
    {"uuid", "title", "providerPublishTime" (epoch s), "publisher", "link"}.
    """
    content = item.get("content")
    if isinstance(content, Mapping):
        links = (content.get("canonicalUrl") or {}, content.get("clickThroughUrl") or {})
        return (
            item.get("id") or content.get("id"),
            content.get("title") or "",
            _utc(content.get("pubDate")),
            (content.get("provider") or {}).get("displayName"),
            next((link["url"] for link in links if link.get("url")), None),
        )
    published = item.get("providerPublishTime")
    return (
        item.get("uuid"),
        item.get("title") or "",
        None if published is None else _utc(published, unit="s"),
        item.get("publisher"),
        item.get("link"),
    )


class YahooNewsSource(Source):
    """Recent headlines per ticker from Yahoo Finance (`yfinance.Ticker(t).news`).

    Yahoo serves only the latest few headlines per ticker, so history accumulates run by run.
    After `fetch`: `failures` maps a ticker to why its news could not be read, `skipped`
    counts items without an id, title or publication time.
    """

    name = "yahoo"
    datasets = ("news",)

    def __init__(
        self,
        http: Http,
        *,
        ticker_factory: Callable[[str], Any] | None = None,
        sleep: Callable[[float], object] = time.sleep,
        rng: random.Random | None = None,
        calendar: str = DEFAULT_CALENDAR,
    ) -> None:
        super().__init__()
        self.calendar = calendar
        self.skipped = 0
        self._ticker_factory = ticker_factory
        self._calls = ThrottledCaller(http, sleep=sleep, rng=rng)

    def fetch(self, dataset: str, request: FetchRequest) -> pd.DataFrame:
        self._check_dataset(dataset)
        self.failures, self.skipped = {}, 0
        factory = self._ticker_factory or _yfinance().Ticker
        rows: list[dict[str, Any]] = []

        def news_of(ticker: str) -> Any:
            return factory(ticker).news

        for ticker in sorted(set(request.tickers)):
            try:
                items = self._calls.call(functools.partial(news_of, ticker), what=f"yahoo news {ticker}")
            except Exception as exc:  # noqa: BLE001 - yfinance raises many types; each is this ticker's failure only
                self.failures[ticker] = _reason(exc)
                continue
            rows += self._rows(ticker, items or [])
        return news_frame(rows, request, self.calendar)

    def health(self) -> Health:
        """Configuration only: a live check is `fetch("news", ...)` of one ticker."""
        return Health(f"source:{self.name}", True, "Yahoo is not contacted by this check")

    def _rows(self, ticker: str, items: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        rows = []
        for item in items:
            article_id, title, published, publisher, url = _article(item)
            headline = plain_text(title)
            if not (article_id and headline and published is not None):
                self.skipped += 1
                continue
            rows.append(
                {
                    # The NEWS key is news_id alone and Yahoo files one story under many tickers.
                    "news_id": f"yahoo:{ticker}:{article_id}",
                    "ticker": ticker,
                    "published_at": published,
                    "headline": headline,
                    "publisher": publisher,
                    "url": url,
                }
            )
        return rows
