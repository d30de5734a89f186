"""Intraday bars: the contract, and the sources `runner watch` reads them from.

Contract (`BAR_COLUMNS`): `ts` (tz-aware UTC, the bar's *start*, Yahoo's convention: the bar
stamped 10:05 with a 5-minute interval covers 10:05-10:10 and is complete at 10:10), `ticker`
(non-empty text), `open`, `high`, `low`, `close` (finite, > 0, low <= open, close <= high) and
`volume` (finite, >= 0). One row per (ts, ticker). `validate_bars` enforces it and names the
file, ticker, timestamp and field of the first problems it meets, so a bad recording is one
clear line, not a NaN three modules later.

Every source yields *batches*: one frame per bar timestamp, in timestamp order, each already
validated. `batches(day, after=None)` plays the session `day`; `after` skips bars at or before
a timestamp (a restarted watch resumes there).

* `ReplayBarSource`: a CSV or Parquet file, or a folder of them (recursively), played in
  timestamp order at a speed factor (0: as fast as possible; 60: one minute of bars a second).
* `SampleIntradayBars`: deterministic bars consistent with `SampleMarketSource`'s daily bars:
  the first bar opens at the daily open, the last closes at the daily close, highs and lows stay
  inside the daily range and touch it, volumes add up to the daily volume. A pure function of
  (seed, ticker, date): a Brownian bridge drawn from a generator seeded by those three.
* `YahooIntradayBars`: yfinance intraday download (1m, 5m, 15m, 60m) within Yahoo's period
  limits, with the retry and rate-limit rules of the daily adapter (`ThrottledCaller`).
"""

from __future__ import annotations

import datetime as dt
import math
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from bentley.calendar import DEFAULT_CALENDAR, session_hours

if TYPE_CHECKING:
    from bentley.config import Http

BAR_COLUMNS: tuple[str, ...] = ("ts", "ticker", "open", "high", "low", "close", "volume")
PRICE_FIELDS: tuple[str, ...] = ("open", "high", "low", "close")
#: Problems quoted in one error; the rest are counted.
_SHOWN = 3
#: Intervals the sources support, in minutes.
INTERVALS: dict[str, int] = {"1m": 1, "5m": 5, "15m": 15, "60m": 60}


class BarError(ValueError):
    """Bars that break the contract; the message names file, ticker, timestamp and field."""


# --------------------------------------------------------------------------- the contract


def empty_bars() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "ts": pd.Series(dtype="datetime64[ns, UTC]"),
            "ticker": pd.Series(dtype=object),
            **{f: pd.Series(dtype=np.float64) for f in (*PRICE_FIELDS, "volume")},
        }
    )


def _where(origin: str, frame: pd.DataFrame, mask: np.ndarray, field: str, problem: str) -> str:
    rows = frame[mask]
    examples = []
    for ticker, ts in zip(rows["ticker"].head(_SHOWN), rows["ts"].head(_SHOWN), strict=True):
        stamp = ts.isoformat() if isinstance(ts, pd.Timestamp) else str(ts)
        examples.append(f"ticker {ticker} at {stamp}")
    more = f" and {len(rows) - _SHOWN} more" if len(rows) > _SHOWN else ""
    return f"{origin}: field {field}: {problem} ({'; '.join(examples)}{more})"


def validate_bars(frame: pd.DataFrame, origin: str = "bars") -> pd.DataFrame:
    """The bars in the contract, sorted by (ts, ticker); BarError naming what is wrong.

    `ts` may arrive as tz-aware datetimes or as ISO text with an offset; naive timestamps are
    refused (a recording without a zone cannot be placed in a session). Extra columns are dropped.
    """
    missing = [c for c in BAR_COLUMNS if c not in frame.columns]
    if missing:
        raise BarError(f"{origin}: missing column(s) {', '.join(missing)}; bars need {', '.join(BAR_COLUMNS)}")
    out = frame.loc[:, list(BAR_COLUMNS)].copy()
    ticker = out["ticker"]
    blank = ticker.isna().to_numpy() | (ticker.astype(str).str.strip() == "").to_numpy()
    if blank.any():
        rows = np.flatnonzero(blank)[:_SHOWN] + 1
        raise BarError(f"{origin}: field ticker: empty in row(s) {', '.join(map(str, rows))}")
    out["ticker"] = ticker.astype(str).str.strip().astype(object)
    out["ts"] = _utc_stamps(out, origin)
    for field in (*PRICE_FIELDS, "volume"):
        values = pd.to_numeric(out[field], errors="coerce").astype(np.float64)
        bad = ~np.isfinite(values.to_numpy())
        if bad.any():
            raise BarError(_where(origin, out, bad, field, "not a finite number"))
        out[field] = values
    for field in PRICE_FIELDS:
        bad = (out[field] <= 0).to_numpy()
        if bad.any():
            raise BarError(_where(origin, out, bad, field, "not a positive price"))
    bad = (out["volume"] < 0).to_numpy()
    if bad.any():
        raise BarError(_where(origin, out, bad, "volume", "negative"))
    top = out[["open", "close", "low"]].max(axis=1)
    bad = (out["high"] < top).to_numpy()
    if bad.any():
        raise BarError(_where(origin, out, bad, "high", "below the open, close or low"))
    bottom = out[["open", "close"]].min(axis=1)
    bad = (out["low"] > bottom).to_numpy()
    if bad.any():
        raise BarError(_where(origin, out, bad, "low", "above the open or close"))
    twice = out.duplicated(["ts", "ticker"], keep=False).to_numpy()
    if twice.any():
        raise BarError(_where(origin, out, twice, "ts", "the same (ts, ticker) appears more than once"))
    return out.sort_values(["ts", "ticker"], kind="stable").reset_index(drop=True)


def _utc_stamps(out: pd.DataFrame, origin: str) -> pd.Series:
    raw = out["ts"]
    if isinstance(raw.dtype, pd.DatetimeTZDtype):
        return raw.dt.tz_convert("UTC").astype("datetime64[ns, UTC]")
    if pd.api.types.is_datetime64_dtype(raw.dtype):
        raise BarError(_where(origin, out, np.ones(len(out), bool), "ts", "naive timestamps; give a UTC offset"))
    text = raw.astype(str)
    try:
        parsed = pd.to_datetime(text, format="ISO8601", utc=False)
    except (ValueError, TypeError):
        parsed = None
    if parsed is None or not isinstance(parsed.dtype, pd.DatetimeTZDtype):
        # Mixed offsets, naive text or garbage: look at each value to name the culprits.
        stamps = [_one_stamp(v) for v in text]
        bad = np.array([s is None for s in stamps])
        if bad.any():
            raise BarError(_where(origin, out.assign(ts=text), bad, "ts", "not an ISO timestamp with a UTC offset"))
        return pd.Series(pd.DatetimeIndex(stamps).tz_convert("UTC"), index=out.index).astype("datetime64[ns, UTC]")
    return parsed.dt.tz_convert("UTC").astype("datetime64[ns, UTC]")


def _one_stamp(value: str) -> pd.Timestamp | None:
    try:
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError):
        return None
    if pd.isna(stamp) or stamp.tzinfo is None:
        return None
    return stamp.tz_convert("UTC")


def split_batches(bars: pd.DataFrame) -> Iterator[pd.DataFrame]:
    """One frame per timestamp, in order (bars already validated and sorted)."""
    if bars.empty:
        return
    stamps = bars["ts"].to_numpy()
    cuts = np.flatnonzero(stamps[1:] != stamps[:-1]) + 1
    for start, stop in zip(np.r_[0, cuts], np.r_[cuts, len(bars)], strict=True):
        yield bars.iloc[start:stop].reset_index(drop=True)


def session_window(day: dt.date, calendar: str = DEFAULT_CALENDAR) -> tuple[pd.Timestamp, pd.Timestamp] | None:
    """(open, close) of the session on `day` as UTC Timestamps; None on a holiday or weekend."""
    hours = session_hours(day, calendar)
    if hours is None:
        return None
    return pd.Timestamp(hours[0]), pd.Timestamp(hours[1])


def _in_session(bars: pd.DataFrame, day: dt.date, calendar: str, after: pd.Timestamp | None) -> pd.DataFrame:
    window = session_window(day, calendar)
    if window is None:
        return bars.iloc[0:0]
    keep = (bars["ts"] >= window[0]) & (bars["ts"] < window[1])
    if after is not None:
        keep &= bars["ts"] > after
    return bars[keep].reset_index(drop=True)


# --------------------------------------------------------------------------- replay


class ReplayBarSource:
    """Recorded bars (CSV or Parquet; a file or a folder of them) played in timestamp order.

    `speed`: 0 plays as fast as the consumer takes batches; s > 0 waits (Δts / s) between two
    batches, so 60 plays an hour of bars in a minute. Files are read and validated once, each
    under its own name, on first use.
    """

    name = "replay"

    def __init__(
        self,
        path: str | Path,
        *,
        speed: float,
        calendar: str = DEFAULT_CALENDAR,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        if speed < 0:
            raise ValueError(f"replay speed must be >= 0, got {speed}")
        self.path = Path(path)
        self.speed = float(speed)
        self.calendar = calendar
        self._sleep = sleep
        self._bars: pd.DataFrame | None = None

    def files(self) -> list[Path]:
        if self.path.is_file():
            return [self.path]
        if not self.path.is_dir():
            raise BarError(f"{self.path}: no such file or folder of bars")
        found = sorted(p for p in self.path.rglob("*") if p.is_file() and p.suffix.lower() in (".csv", ".parquet"))
        if not found:
            raise BarError(f"{self.path}: no .csv or .parquet bar files")
        return found

    def bars(self) -> pd.DataFrame:
        """Every recorded bar, validated, sorted by (ts, ticker); a (ts, ticker) in two files is an error."""
        if self._bars is None:
            parts = [validate_bars(read_bar_file(f), str(f)) for f in self.files()]
            frame = pd.concat(parts, ignore_index=True) if parts else empty_bars()
            self._bars = validate_bars(frame, str(self.path))
        return self._bars

    def session_bars(self, day: dt.date, after: pd.Timestamp | None = None) -> pd.DataFrame:
        return _in_session(self.bars(), day, self.calendar, after)

    def batches(self, day: dt.date, after: pd.Timestamp | None = None) -> Iterator[pd.DataFrame]:
        previous: pd.Timestamp | None = None
        for batch in split_batches(self.session_bars(day, after)):
            stamp = batch["ts"].iloc[0]
            if self.speed > 0 and previous is not None:
                self._sleep((stamp - previous).total_seconds() / self.speed)
            previous = stamp
            yield batch


def read_bar_file(path: Path) -> pd.DataFrame:
    """A CSV (timestamps kept as text, validated later) or Parquet file of bars."""
    if path.suffix.lower() == ".parquet":
        return pd.read_parquet(path)
    return pd.read_csv(path, dtype={"ts": str, "ticker": str})


def write_bars(bars: pd.DataFrame, folder: Path, timezone: str) -> list[Path]:
    """Bars as the lake keeps them: one Parquet file per session date,
    `<folder>/ingest_date=YYYY-MM-DD/bars.parquet` (the lake's partition naming, so retention
    prunes them), each written whole and atomically. `ReplayBarSource(folder, speed)` plays them back.
    """
    import io

    from bentley.lake import atomic_write_bytes

    bars = validate_bars(bars, "bars to write")
    written = []
    dates = bars["ts"].dt.tz_convert(timezone).dt.date
    for day, part in bars.groupby(dates, sort=True):
        buffer = io.BytesIO()
        part.reset_index(drop=True).to_parquet(buffer, index=False)
        written.append(atomic_write_bytes(folder / f"ingest_date={day:%Y-%m-%d}" / "bars.parquet", buffer.getvalue()))
    return written


# --------------------------------------------------------------------------- sample


def _seed_for(seed: int, ticker: str, day: dt.date) -> np.random.Generator:
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(ticker.encode()), day.toordinal()])


def _bridge(rng: np.random.Generator, n: int) -> np.ndarray:
    """A standard Brownian bridge on n + 1 points, 0 at both ends."""
    walk = np.concatenate([[0.0], np.cumsum(rng.standard_normal(n))])
    return walk - np.linspace(0.0, 1.0, n + 1) * walk[-1]


def _round(x: np.ndarray) -> np.ndarray:
    return np.round(x, 2)


def intraday_path(
    rng: np.random.Generator,
    n: int,
    day_open: float,
    day_high: float,
    day_low: float,
    day_close: float,
    day_volume: float,
) -> dict[str, np.ndarray]:
    """n bars whose OHLCV agree with one daily bar (see the module docstring)."""
    lo, hi = math.log(day_low), math.log(day_high)
    start, end = math.log(day_open), math.log(day_close)
    line = np.linspace(start, end, n + 1)
    bridge = _bridge(rng, n) * (hi - lo) / max(math.sqrt(n), 1.0)
    scale = 1.0
    up, down = bridge > 1e-15, bridge < -1e-15
    if up.any():
        scale = min(scale, float(np.min((hi - line[up]) / bridge[up])))
    if down.any():
        scale = min(scale, float(np.min((lo - line[down]) / bridge[down])))
    points = np.exp(line + max(scale, 0.0) * bridge)
    points = np.clip(_round(points), day_low, day_high)
    points[0], points[-1] = day_open, day_close
    opens, closes = points[:-1], points[1:]
    wick = np.abs(rng.standard_normal((2, n))) * (day_high - day_low) * 0.05
    highs = np.minimum(np.maximum(opens, closes) + _round(wick[0]), day_high)
    lows = np.maximum(np.minimum(opens, closes) - _round(wick[1]), day_low)
    highs[int(np.argmax(highs))] = day_high  # the day's range is reached inside some bar
    lows[int(np.argmin(lows))] = day_low
    # U-shaped activity (busy open and close), integer shares adding up to the daily volume
    u = np.linspace(-1.0, 1.0, n)
    weights = (1.0 + 1.5 * u**2) * rng.uniform(0.6, 1.4, n)
    share = weights / weights.sum() * float(day_volume)
    volume = np.floor(share)
    remainder = int(round(float(day_volume) - volume.sum()))
    if remainder > 0:
        volume[np.argsort(-(share - volume), kind="stable")[:remainder]] += 1
    return {"open": opens, "high": highs, "low": lows, "close": closes, "volume": volume}


class SampleIntradayBars:
    """Deterministic intraday bars for the sample universe, consistent with its daily bars."""

    name = "sample"

    def __init__(
        self,
        market: Any,
        tickers: Sequence[str],
        *,
        interval: str,
        calendar: str = DEFAULT_CALENDAR,
        seed: int | None = None,
    ) -> None:
        if interval not in INTERVALS:
            raise ValueError(f"interval must be one of {', '.join(INTERVALS)}, got {interval!r}")
        self.market = market  # a bentley.sources.sample.SampleMarketSource
        self.tickers = sorted(set(tickers))
        self.interval = interval
        self.calendar = calendar
        self.seed = int(market.seed if seed is None else seed)

    def daily(self, day: dt.date) -> pd.DataFrame:
        from bentley.sources.base import FetchRequest

        return self.market.fetch("prices", FetchRequest(day, day, tuple(self.tickers)))

    def session_bars(self, day: dt.date, after: pd.Timestamp | None = None) -> pd.DataFrame:
        window = session_window(day, self.calendar)
        if window is None or not self.tickers:
            return empty_bars()
        step = pd.Timedelta(minutes=INTERVALS[self.interval])
        n = max(1, math.ceil((window[1] - window[0]) / step))
        stamps = pd.date_range(window[0], periods=n, freq=step)
        parts = []
        for row in self.daily(day).itertuples():
            path = intraday_path(
                _seed_for(self.seed, row.ticker, day),
                n,
                float(row.open),
                float(row.high),
                float(row.low),
                float(row.close),
                float(row.volume),
            )
            parts.append(pd.DataFrame({"ts": stamps, "ticker": row.ticker, **path}))
        bars = validate_bars(pd.concat(parts, ignore_index=True), f"sample intraday {day}") if parts else empty_bars()
        return bars if after is None else bars[bars["ts"] > after].reset_index(drop=True)

    def batches(self, day: dt.date, after: pd.Timestamp | None = None) -> Iterator[pd.DataFrame]:
        yield from split_batches(self.session_bars(day, after))


# --------------------------------------------------------------------------- yahoo

#: How far back Yahoo serves each interval (days before today), and the longest single request.
YAHOO_LOOKBACK_DAYS: dict[str, int] = {"1m": 30, "5m": 60, "15m": 60, "60m": 730}
YAHOO_MAX_SPAN_DAYS: dict[str, int] = {"1m": 7, "5m": 60, "15m": 60, "60m": 730}
_YAHOO_FIELDS = {"Open": "open", "High": "high", "Low": "low", "Close": "close", "Volume": "volume"}


def check_yahoo_window(interval: str, start: dt.date, end: dt.date, today: dt.date) -> None:
    """Raise ValueError when Yahoo would refuse (or silently truncate) an intraday request."""
    if interval not in YAHOO_LOOKBACK_DAYS:
        raise ValueError(f"yahoo intraday interval must be one of {', '.join(YAHOO_LOOKBACK_DAYS)}, got {interval!r}")
    if end < start:
        raise ValueError(f"yahoo intraday window ends before it starts: {start}..{end}")
    span = (end - start).days + 1
    if span > YAHOO_MAX_SPAN_DAYS[interval]:
        raise ValueError(
            f"yahoo serves at most {YAHOO_MAX_SPAN_DAYS[interval]} days of {interval} bars per request; "
            f"{start}..{end} is {span} days"
        )
    oldest = today - dt.timedelta(days=YAHOO_LOOKBACK_DAYS[interval])
    if start < oldest:
        raise ValueError(
            f"yahoo keeps {interval} bars for the last {YAHOO_LOOKBACK_DAYS[interval]} days only "
            f"(from {oldest}); {start} is too old"
        )


def yahoo_intraday_frame(raw: pd.DataFrame | None, tickers: Sequence[str]) -> pd.DataFrame:
    """yfinance's intraday `download` frame -> bars in the contract.

    yfinance gives columns ("Price", "Ticker") and a "Datetime" index in the exchange's zone
    (bar start); rows padded with NaN for another ticker's timestamps are dropped, and a
    zero-volume last bar (still forming) is kept: `YahooIntradayBars` drops incomplete bars by time.
    """
    if raw is None or raw.empty:
        return empty_bars()
    frame = raw
    if not isinstance(frame.columns, pd.MultiIndex):
        if len(tickers) != 1:
            raise BarError(f"yfinance returned single-level columns for {len(tickers)} tickers")
        frame = pd.concat({tickers[0]: frame}, axis=1, names=["Ticker", "Price"])
    names = list(frame.columns.names)
    level = "Ticker" if "Ticker" in names else names[1]
    index = pd.DatetimeIndex(frame.index)
    if index.tz is None:
        raise BarError("yfinance intraday frame has naive timestamps; expected the exchange's zone")
    parts = []
    for ticker in sorted(set(frame.columns.get_level_values(level))):
        if ticker not in tickers:
            continue
        block = frame.xs(ticker, axis=1, level=level).reindex(columns=list(_YAHOO_FIELDS))
        block = block.set_axis(index, axis=0).dropna(subset=["Open", "High", "Low", "Close"], how="any")
        if block.empty:
            continue
        part = block.rename(columns=_YAHOO_FIELDS).rename_axis("ts").reset_index()
        part["ticker"] = ticker
        part["volume"] = part["volume"].fillna(0.0)
        parts.append(part)
    if not parts:
        return empty_bars()
    bars = pd.concat(parts, ignore_index=True)
    # Yahoo's intraday bars may carry a high/low a hair inside open/close after its own rounding.
    bars["high"] = bars[["open", "high", "low", "close"]].max(axis=1)
    bars["low"] = bars[["open", "high", "low", "close"]].min(axis=1)
    return validate_bars(bars, "yahoo intraday")


class YahooIntradayBars:
    """Intraday bars of `tickers` from Yahoo, polled during the session.

    `download` defaults to `yfinance.download` (tests pass a recorded one); `now` to the wall
    clock. A bar is handed out once complete (its start + interval <= now), each bar once.
    """

    name = "yahoo"

    def __init__(
        self,
        tickers: Sequence[str],
        http: Http,
        *,
        interval: str,
        poll_s: float,
        calendar: str = DEFAULT_CALENDAR,
        download: Callable[..., pd.DataFrame | None] | None = None,
        now: Callable[[], dt.datetime] | None = None,
        sleep: Callable[[float], object] = time.sleep,
        stop: Callable[[], bool] | None = None,
    ) -> None:
        from bentley.sources.http import ThrottledCaller

        if interval not in YAHOO_LOOKBACK_DAYS:
            raise ValueError(f"yahoo intraday interval must be one of {', '.join(YAHOO_LOOKBACK_DAYS)}")
        self.tickers = sorted(set(tickers))
        self.interval, self.poll_s, self.calendar = interval, poll_s, calendar
        self._download = download
        self._timeout_s = http.timeout_s
        self._calls = ThrottledCaller(http, sleep=sleep)
        self._now = now or (lambda: dt.datetime.now(dt.UTC))
        self._sleep = sleep
        self._stop = stop or (lambda: False)

    def fetch(self, start: dt.date, end: dt.date) -> pd.DataFrame:
        """Bars of [start, end] (exchange dates), in the contract."""
        check_yahoo_window(self.interval, start, end, self._now().date())
        download = self._download or _yfinance_download

        def call() -> pd.DataFrame | None:
            return download(
                tickers=list(self.tickers),
                start=start.isoformat(),
                end=(end + dt.timedelta(days=1)).isoformat(),
                interval=self.interval,
                auto_adjust=False,
                actions=False,
                group_by="column",
                multi_level_index=True,
                progress=False,
                threads=False,
                timeout=self._timeout_s,
                prepost=False,
            )

        self._calls.limiter.wait(cost=len(self.tickers))
        raw = self._calls.retry(call, what=f"yahoo {self.interval} bars {start}..{end}")
        return yahoo_intraday_frame(raw, self.tickers)

    def complete_bars(self, day: dt.date, after: pd.Timestamp | None) -> pd.DataFrame:
        bars = _in_session(self.fetch(day, day), day, self.calendar, after)
        done = bars["ts"] + pd.Timedelta(minutes=INTERVALS[self.interval]) <= pd.Timestamp(self._now())
        return bars[done].reset_index(drop=True)

    def session_bars(self, day: dt.date, after: pd.Timestamp | None = None) -> pd.DataFrame:
        return self.complete_bars(day, after)

    def batches(self, day: dt.date, after: pd.Timestamp | None = None) -> Iterator[pd.DataFrame]:
        """Poll every `poll_s` until the session's last bar is out (or `stop`)."""
        window = session_window(day, self.calendar)
        if window is None:
            return
        step = pd.Timedelta(minutes=INTERVALS[self.interval])
        last_start = window[0] + step * (math.ceil((window[1] - window[0]) / step) - 1)
        while not self._stop():
            new = self.complete_bars(day, after)
            for batch in split_batches(new):
                yield batch
                after = batch["ts"].iloc[0]
            if after is not None and after >= last_start:
                return
            if pd.Timestamp(self._now()) >= window[1] + step:
                return  # the session is over and Yahoo has no more bars for it
            self._sleep(self.poll_s)


def _yfinance_download(**kwargs: Any) -> pd.DataFrame | None:
    import yfinance

    return yfinance.download(**kwargs)
