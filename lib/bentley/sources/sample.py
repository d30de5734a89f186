"""Deterministic embedded sample data: prices, news, a household ledger and holdings.

The pipeline runs offline on these sources. Reports flag the data as synthetic
(`synthetic = True`), but it is built to look and behave like the real thing so that every
stage (validation, adjustment, features, budgeting) meets realistic cases.

Price model
    Daily log-returns on NYSE sessions are ``drift_i + beta_i * market + sector + idiosyncratic``.
    The market factor and each idiosyncratic part follow a GARCH(1,1) variance recursion
    (volatility clustering); sector factors scale with the market's conditional volatility,
    so crises hit every name. Parameters are drawn per ticker: beta 0.7-1.4, annual volatility
    about 18-40 %, median compound total return 5-12 % a year, first price 20-300 USD. The
    benchmark (``BBIX`` by default) is the market factor alone (7 % a year, 16 % volatility),
    starting at 1000. Volume is lognormal around a ticker's level, higher on large moves.

    ``close``/``open``/``high``/``low`` and ``volume`` are as traded: quarterly cash dividends
    lower the close on the ex-date and splits divide prices (and multiply volume) on theirs.
    ``adj_close`` follows the Yahoo/CRSP convention: it is back-adjusted for every split and
    dividend after the date *up to the end of the fetch*, so it equals ``close`` on the last
    fetched date and, unlike the other columns, depends on the fetch window's end.

Planted signal (a weekly reversal)
    So that the default run has something real to find, each stock's demeaned log-return gives
    back ``sample.signal``/5 (default 0.6/5) of its own demeaned log-return over the previous
    five sessions (`_weekly_reversal`): a name that fell over a week tends to rebound over the
    next. The model's 5-session return feature sees it; the label (the sign of the 5-session
    forward return) follows it. Over the 2000-2026 quarters of the eight default names, the
    raw score "minus last week's return" alone reaches a median holdout ROC AUC of about 0.62
    (10 % of quarters below 0.55) at 0.6, against 0.52 with the signal off — market and sector
    moves, which no feature predicts, stay in every label. Real stocks show a far weaker
    short-term reversal; this one is a demonstration, documented so no one mistakes the
    sample's backtests for evidence. ``signal: 0`` makes every return unpredictable (the gates
    then reject every model: tests/integration/test_sample_signal.py). The index has no
    planted signal.

Split schedule
    Every splitting ticker splits once per ``SPLIT_PERIOD`` (1197) sessions at its own offset,
    counted from the first session on or after ``epoch``. The eight default tickers all split,
    at offsets 150 sessions apart, so any 150 consecutive sessions of the default universe
    contain at least one split. The ratio depends on the previous as-traded close: 3-for-1 from
    240 USD, 2-for-1 from 100 USD, else 3-for-2 (``split_ratio`` 3.0, 2.0 or 1.5). A fixed
    schedule with fixed 2:1/3:1 ratios would shrink as-traded prices ~50-fold over 27 years;
    these ratios keep them plausible. Other names split when a digit of their CRC-32 says so
    (about one in three); splitters start at 120-300 USD, like the growth names that split.

Determinism
    A ticker's series is a pure function of (seed, epoch, ticker, date): every stream of random
    numbers is seeded by the seed and a CRC-32 of the ticker (never Python's salted ``hash``),
    each stream is drawn as one block of rows per session from the first session on or after
    ``epoch``, and every recursion only looks back. So the rows of a date do not depend on the
    other tickers requested nor on the window (``adj_close`` aside, see above). News follows the
    same rule, and the ledger is generated month by month from streams seeded by (seed, year,
    month). Windows must start on or after ``epoch``.

News
    Per ticker and session, a headline with probability 0.35 (two with 0.08) from tone
    templates (`HEADLINE_TEMPLATES`, `headline_tone`). The tone is a noisy read of the ticker's
    next-session total return, a weak signal: correlation about 0.15.

Household
    Salary on the 15th and last day, rent on the 1st, utilities, subscriptions, weekly
    groceries, discretionary card spending, a monthly card payoff and savings transfer. About
    10 % of expense rows have no category (income and transfers always have one). Holdings are
    positions bought at the first session after the epoch, their share counts split-adjusted.
"""

from __future__ import annotations

import datetime as dt
import difflib
import hashlib
import itertools
import re
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from bentley import schemas
from bentley.calendar import DEFAULT_CALENDAR, is_session, sessions
from bentley.sources.base import FetchRequest, MarketSource, Source

DEFAULT_BENCHMARK = "BBIX"
SECTORS: tuple[str, ...] = ("tech", "health", "energy", "finance", "consumer", "industrials")
#: Sessions between two splits of the same ticker.
SPLIT_PERIOD = 1197

_TRADING_DAYS = 252
_DIVIDEND_PERIOD = 63  # sessions between quarterly ex-dates
_THREE_FOR_ONE_FROM, _TWO_FOR_ONE_FROM = 240.0, 100.0  # previous close (USD); below: 3-for-2
_INDEX_START = 1000.0
_MARKET_VOL, _MARKET_DRIFT = 0.16, 0.07  # annual volatility, median compound annual return
_MARKET_DAILY_VAR = _MARKET_VOL**2 / _TRADING_DAYS
_MARKET_GARCH = (0.09, 0.89)  # (alpha, beta): shock weight and variance persistence
_IDIO_PERSISTENCE = 0.97  # alpha + beta of each ticker's idiosyncratic GARCH
_SECTOR_VOL = 0.08
#: The planted weekly reversal (see "Planted signal"): sessions per look-back week, and the
#: default strength, `sample.signal` in params.
_REVERSAL_SESSIONS = 5
DEFAULT_SIGNAL = 0.6

# Tags that keep the random streams of one (seed, ticker) apart.
_PROFILE_TAG, _NEWS_TAG, _HOLDINGS_TAG, _LEDGER_TAG = 1, 2, 3, 4
# Columns of the per-session shock blocks (standard normals).
_SHOCK, _GAP, _HIGH, _LOW, _VOLUME = range(5)


@dataclass(frozen=True)
class _Company:
    """What a ticker is, independent of the seed."""

    name: str
    sector: str
    split_offset: int | None  # session index of the first split, None if it never splits
    pays_dividend: bool


# Split offsets are 1 + SPLIT_PERIOD * (0, 1/2, 1/4, 3/4, 1/8, 5/8, 3/8, 7/8): any leading
# part of the list (small universes take the first n names) spreads its splits evenly.
_DEFAULT_COMPANIES: dict[str, _Company] = {
    "NOVA": _Company("Nova Systems", "tech", 1, False),
    "QBIT": _Company("Qubit Labs", "tech", 599, False),
    "MEDX": _Company("Medix Pharmaceuticals", "health", 300, False),
    "CURA": _Company("Cura Health", "health", 899, True),
    "PTRL": _Company("Petrolux Energy", "energy", 151, True),
    "SOLR": _Company("Solaris Power", "energy", 749, False),
    "BANQ": _Company("Banque Federal", "finance", 450, True),
    "LEDG": _Company("Ledger Trust", "finance", 1048, True),
}
#: Company names of the built-in tickers; `company_name` also covers generated ones.
COMPANY_NAMES: dict[str, str] = {t: c.name for t, c in _DEFAULT_COMPANIES.items()}

_NAME_SUFFIX = {
    "tech": "Technologies",
    "health": "Therapeutics",
    "energy": "Energy",
    "finance": "Financial",
    "consumer": "Brands",
    "industrials": "Industries",
}


def _crc(text: str) -> int:
    """Stable 32-bit hash of a name (Python's `hash` is salted per process)."""
    return zlib.crc32(text.encode())


def _company(ticker: str) -> _Company:
    """Static traits of a ticker; unknown names get theirs from digits of their CRC-32."""
    if ticker in _DEFAULT_COMPANIES:
        return _DEFAULT_COMPANIES[ticker]
    crc = _crc(ticker)
    sector = SECTORS[crc % len(SECTORS)]
    crc //= len(SECTORS)
    splits = crc % 3 == 0
    crc //= 3
    pays = crc % 2 == 0
    crc //= 2
    return _Company(
        name=f"{ticker} {_NAME_SUFFIX[sector]}",
        sector=sector,
        split_offset=1 + crc % SPLIT_PERIOD if splits else None,
        pays_dividend=pays,
    )


def company_name(ticker: str) -> str:
    """The company's display name, e.g. "Nova Systems" for NOVA, "X0009 Energy" otherwise."""
    return _company(ticker).name


def sector_of(ticker: str) -> str:
    """The ticker's sector, one of `SECTORS`."""
    return _company(ticker).sector


# --------------------------------------------------------------------------- prices


@dataclass(frozen=True)
class _Profile:
    """Per-ticker model parameters (annual units; drift is the median compound total return)."""

    beta: float
    idio_vol: float
    drift: float
    start_price: float
    volume_level: float
    dividend_yield: float
    dividend_offset: int
    garch_alpha: float
    split_offset: int | None
    sector: str

    @property
    def total_vol(self) -> float:
        """Unconditional annual volatility of the ticker's daily log-return."""
        return float(np.sqrt((self.beta * _MARKET_VOL) ** 2 + _SECTOR_VOL**2 + self.idio_vol**2))


def _profile(seed: int, ticker: str) -> _Profile:
    """Draw a ticker's parameters from their own stream, apart from its daily shocks."""
    company = _company(ticker)
    u = np.random.default_rng([seed, _crc(ticker), _PROFILE_TAG]).random(8)
    low, high = (120.0, 300.0) if company.split_offset is not None else (20.0, 150.0)
    return _Profile(
        beta=0.7 + 0.7 * u[0],
        idio_vol=0.12 + 0.20 * u[1],
        drift=0.05 + 0.07 * u[2],
        start_price=low * (high / low) ** u[3],
        volume_level=2e5 * 100 ** u[4],
        dividend_yield=0.01 + 0.02 * u[5] if company.pays_dividend else 0.0,
        dividend_offset=1 + int(u[6] * _DIVIDEND_PERIOD),
        garch_alpha=0.04 + 0.04 * u[7],
        split_offset=company.split_offset,
        sector=company.sector,
    )


@dataclass(frozen=True)
class _Bars:
    """As-traded daily bars: one row per series, one column per session (ticker-major)."""

    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    dividend: np.ndarray
    split_ratio: np.ndarray


_BAR_FIELDS = tuple(_Bars.__dataclass_fields__)


@dataclass(frozen=True)
class _Market:
    """The market factor: innovations, conditional variance and its stream's extra shocks."""

    eps: np.ndarray  # (n,) zero-mean daily log-return innovation
    var: np.ndarray  # (n,) conditional variance of eps
    shocks: np.ndarray  # (n, 5) standard normals, columns _SHOCK.._VOLUME


def _garch(z: np.ndarray, omega: np.ndarray, alpha: np.ndarray, beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """GARCH(1,1) innovations and conditional variances for standard normals z (series x sessions).

    The only loop over sessions, vectorized across series on a session-major copy. Starts at
    the unconditional variance so the first sessions are not special.
    """
    by_session = np.ascontiguousarray(z.T)
    eps, var = np.empty_like(by_session), np.empty_like(by_session)
    omega, alpha, beta = np.ravel(omega), np.ravel(alpha), np.ravel(beta)  # one value per series
    v = omega / (1.0 - alpha - beta)
    for t in range(by_session.shape[0]):
        var[t] = v
        e = np.sqrt(v) * by_session[t]
        eps[t] = e
        v = omega + alpha * e * e + beta * v
    return np.ascontiguousarray(eps.T), np.ascontiguousarray(var.T)


def _market(seed: int, n: int) -> _Market:
    """The market factor over n sessions, from its own stream (seed, 0)."""
    shocks = np.random.default_rng([seed, 0]).standard_normal((n, 5))
    alpha, beta = _MARKET_GARCH
    omega = _MARKET_DAILY_VAR * (1.0 - alpha - beta)
    eps, var = _garch(shocks[None, :, _SHOCK], np.array([omega]), np.array([alpha]), np.array([beta]))
    return _Market(eps=eps[0], var=var[0], shocks=shocks)


def _round_price(x: np.ndarray) -> np.ndarray:
    """Quote precision: cents, or 1/100 cent below a dollar; never zero, so lows stay > 0."""
    out = np.round(x, 2)
    below_a_dollar = x < 1.0
    out[below_a_dollar] = np.maximum(np.round(x[below_a_dollar], 4), 1e-4)
    return out


def _ohlc(close: np.ndarray, ret: np.ndarray, sigma: np.ndarray, shocks: np.ndarray) -> tuple[np.ndarray, ...]:
    """Open, high, low around a close path (unrounded, same shape as close).

    The open is the close undone by the day's model return plus an overnight gap, so it sits
    near the previous close (after any split or dividend). Wicks extend beyond open and close.
    """
    open_ = close * np.exp(0.35 * sigma * shocks[..., _GAP] - ret)
    high = np.maximum(open_, close) * np.exp(0.4 * sigma * np.abs(shocks[..., _HIGH]))
    low = np.minimum(open_, close) * np.exp(-0.4 * sigma * np.abs(shocks[..., _LOW]))
    return open_, high, low


def _activity(ret: np.ndarray, sigma: np.ndarray, shocks: np.ndarray) -> np.ndarray:
    """Lognormal volume multiplier, higher on days with large moves relative to volatility."""
    return np.exp(0.35 * shocks[..., _VOLUME] + 0.3 * (np.abs(ret) / sigma - 0.8) - 0.06)


def _index_bars(market: _Market) -> _Bars:
    """The benchmark (one row): the market factor alone, no splits or dividends, index volume."""
    ret = np.log1p(_MARKET_DRIFT) / _TRADING_DAYS + market.eps
    ret[:1] = 0.0  # the first session anchors the start level
    close = _INDEX_START * np.exp(np.cumsum(ret))
    sigma = np.sqrt(market.var)
    open_, high, low = _ohlc(close, ret, sigma, market.shocks)
    volume = np.round(3e9 * _activity(ret, sigma, market.shocks)).astype(np.int64)
    return _Bars(
        open=_round_price(open_)[None],
        high=_round_price(high)[None],
        low=_round_price(low)[None],
        close=_round_price(close)[None],
        volume=volume[None],
        dividend=np.zeros((1, close.size)),
        split_ratio=np.ones((1, close.size)),
    )


def _ticker_shocks(seed: int, tickers: Sequence[str], n: int) -> np.ndarray:
    """(m, n, 5) standard normals: one prefix-stable block of 5 per session for each ticker."""
    out = np.empty((len(tickers), n, 5))
    for j, ticker in enumerate(tickers):
        np.random.default_rng([seed, _crc(ticker)]).standard_normal((n, 5), out=out[j])
    return out


def _sector_factors(seed: int, market: _Market, sectors: Sequence[str]) -> np.ndarray:
    """(m, n) sector return of each ticker; one stream per sector, scaled by market stress."""
    stress = np.sqrt(market.var / _MARKET_DAILY_VAR)
    daily = _SECTOR_VOL / np.sqrt(_TRADING_DAYS)

    def factor(sector: str) -> np.ndarray:
        rng = np.random.default_rng([seed, 0, SECTORS.index(sector) + 1])
        return daily * stress * rng.standard_normal(stress.size)

    by_sector = {s: factor(s) for s in dict.fromkeys(sectors)}
    return np.array([by_sector[s] for s in sectors]).reshape(len(sectors), stress.size)


def _schedule(n: int, offsets: np.ndarray, period: int) -> np.ndarray:
    """(m, n) mask of sessions t >= 1 with t = offset (mod period); offset < 0 means never."""
    t = np.arange(n)
    offsets = offsets[:, None]
    return (t >= 1) & (offsets >= 0) & ((t - offsets) % period == 0)


def _split_ratios(log_price: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """(m, n) split ratios on the scheduled dates, 1 elsewhere.

    The ratio depends on the as-traded previous close, so splits are settled one round at a
    time (a handful of rounds over decades), each vectorized across tickers.
    """
    m, n = log_price.shape
    ratios = np.ones((m, n))
    tickers = np.flatnonzero(offsets >= 0)
    applied = np.zeros(m)  # log of the splits so far
    for k in range(n // SPLIT_PERIOD + 1):
        days = offsets[tickers] + k * SPLIT_PERIOD
        live = days < n
        j, t = tickers[live], days[live]
        previous_close = np.exp(log_price[j, t - 1] - applied[j])
        ratio = np.select(
            [previous_close >= _THREE_FOR_ONE_FROM, previous_close >= _TWO_FOR_ONE_FROM],
            [3.0, 2.0],
            1.5,
        )
        ratios[j, t] = ratio
        applied[j] += np.log(ratio)
    return ratios


def _weekly_reversal(shock: np.ndarray, strength: float) -> np.ndarray:
    """The planted signal: z_t = shock_t - strength / 5 x (z_{t-5} + ... + z_{t-1}).

    Each session gives back `strength`/5 of the ticker's demeaned log-return over the five
    sessions before it, so a week's move is expected to reverse by about `strength` over the
    next week. Demeaned, so the drift (median compound return) stays what the profile says;
    strength 0 returns the shocks unchanged. One pass over sessions, vectorized across tickers,
    looking back only (a date's value never depends on later sessions).
    """
    if strength == 0.0:
        return shock
    by_session = np.ascontiguousarray(shock.T)
    out = np.empty_like(by_session)
    week = np.zeros(by_session.shape[1])  # z_{t-5} + ... + z_{t-1}
    give_back = strength / _REVERSAL_SESSIONS
    for t in range(by_session.shape[0]):
        out[t] = by_session[t] - give_back * week
        week += out[t]
        if t >= _REVERSAL_SESSIONS:
            week -= out[t - _REVERSAL_SESSIONS]
    return np.ascontiguousarray(out.T)


def _stock_bars(seed: int, market: _Market, tickers: Sequence[str], signal: float) -> _Bars:
    """As-traded bars of the given stocks: factor model, dividends, then splits."""
    n = market.eps.size
    profiles = [_profile(seed, t) for t in tickers]

    def param(field: str) -> np.ndarray:
        """One parameter across tickers, as a column against the session axis."""
        return np.array([getattr(p, field) for p in profiles], dtype=float)[:, None]

    beta, idio_vol, alpha = param("beta"), param("idio_vol"), param("garch_alpha")
    shocks = _ticker_shocks(seed, tickers, n)
    idio_var = idio_vol**2 / _TRADING_DAYS
    eps, var = _garch(shocks[..., _SHOCK], idio_var * (1.0 - _IDIO_PERSISTENCE), alpha, _IDIO_PERSISTENCE - alpha)
    sector = _sector_factors(seed, market, [p.sector for p in profiles])
    shock = beta * market.eps + sector + eps
    shock[:, :1] = 0.0  # the first session anchors the start price
    ret = np.log1p(param("drift")) / _TRADING_DAYS + _weekly_reversal(shock, signal)
    ret[:, :1] = 0.0

    split_offsets = np.array([-1 if p.split_offset is None else p.split_offset for p in profiles], dtype=int)
    split_days = _schedule(n, split_offsets, SPLIT_PERIOD)
    dividend_days = _schedule(n, param("dividend_offset")[:, 0].astype(int), _DIVIDEND_PERIOD) & ~split_days
    quarterly = np.where(dividend_days, param("dividend_yield") / 4, 0.0)
    # P_t = P_{t-1} * (e^r - q) on an ex-date: the holder's total return stays e^r.
    log_price = np.log(param("start_price")) + np.cumsum(ret + np.log1p(-quarterly * np.exp(-ret)), axis=1)
    ratios = _split_ratios(log_price, split_offsets)
    cumulative_split = np.exp(np.cumsum(np.log(ratios), axis=1))
    close = np.exp(log_price) / cumulative_split

    dividend = np.round(quarterly * _previous(close), 4)
    sector_var = _SECTOR_VOL**2 / _TRADING_DAYS * market.var / _MARKET_DAILY_VAR
    sigma = np.sqrt(beta**2 * market.var + sector_var + var)
    open_, high, low = _ohlc(close, ret, sigma, shocks)
    volume = np.round(param("volume_level") * _activity(ret, sigma, shocks) * cumulative_split).astype(np.int64)
    return _Bars(
        open=_round_price(open_),
        high=_round_price(high),
        low=_round_price(low),
        close=_round_price(close),
        volume=volume,
        dividend=dividend,
        split_ratio=ratios,
    )


def _previous(x: np.ndarray) -> np.ndarray:
    """The previous session's value along the last axis; the first session repeats itself."""
    return np.concatenate([x[..., :1], x[..., :-1]], axis=-1)


def _simulate(seed: int, n: int, tickers: Sequence[str], benchmark: str, signal: float) -> _Bars:
    """Bars of the first n sessions after the epoch, one row per ticker in the given order.

    The benchmark's row (if requested) is the index; every other name is a stock.
    """
    market = _market(seed, n)
    stocks = [t for t in tickers if t != benchmark]
    bars = _stock_bars(seed, market, stocks, signal)
    if benchmark not in tickers:
        return bars
    index, at = _index_bars(market), list(tickers).index(benchmark)
    return _Bars(**{f: np.insert(getattr(bars, f), at, getattr(index, f)[0], axis=0) for f in _BAR_FIELDS})


def _adjusted_close(close: np.ndarray, dividend: np.ndarray, split_ratio: np.ndarray) -> np.ndarray:
    """Yahoo/CRSP back-adjustment for every event after each session, up to the last one.

    A dividend D on ex-date t with previous close C scales earlier sessions by (1 - D/C); a
    split of ratio r scales them by 1/r. The last session keeps factor 1 exactly.
    """
    log_factor = np.log1p(-dividend / _previous(close)) - np.log(split_ratio)
    from_here = np.cumsum(log_factor[:, ::-1], axis=1)[:, ::-1]  # sum over events at sessions >= t
    return close * np.exp(from_here - log_factor)


# --------------------------------------------------------------------------- shared helpers

_DTYPES: dict[str, str | type] = {
    "date": "datetime64[ns]",
    "timestamp": "datetime64[ns, UTC]",
    "float": "float64",
    "int": "int64",
}


def _frame(contract: schemas.TableContract, columns: Mapping[str, Any]) -> pd.DataFrame:
    """A frame with exactly the contract's columns, in its order, with its dtypes."""
    frame = pd.DataFrame({name: columns[name] for name in contract.column_names})
    dtypes = {name: _DTYPES[kind] for name, kind in contract.columns.items() if kind in _DTYPES}
    if frame.empty:  # nothing to infer text columns from: pandas would pick float64
        dtypes |= {name: object for name, kind in contract.columns.items() if kind == "str"}
    return frame.astype(dtypes)


def _require_epoch(epoch: dt.date, day: dt.date, what: str) -> None:
    """Sample data begins at the epoch: an earlier date is a configuration error, not "no data"."""
    if day < epoch:
        raise ValueError(f"sample data starts at its epoch {epoch}; {what} is {day}")


def _window(epoch: dt.date, request: FetchRequest, calendar: str) -> tuple[pd.DatetimeIndex, int]:
    """Sessions from the first one on or after `epoch` to the request's end, and the window's start.

    Series are always generated from the epoch so that a date's values never depend on the window.
    """
    _require_epoch(epoch, request.start, "the request's start")
    days = sessions(epoch, request.end, calendar)
    return days, int(days.searchsorted(pd.Timestamp(request.start)))


def _tickers(request: FetchRequest) -> list[str]:
    """Requested tickers, deduplicated and sorted: the output order of every frame."""
    return sorted(set(request.tickers))


def _digest(*parts: object) -> str:
    """Stable identifier of a row from its natural coordinates."""
    return hashlib.sha1("|".join(map(str, parts)).encode()).hexdigest()


def _prices(
    seed: int, epoch: dt.date, calendar: str, benchmark: str, signal: float, request: FetchRequest
) -> pd.DataFrame:
    """Bars of whatever names `request` lists (traits by hash for names without a company).

    No check on the names: the news and portfolio companions follow a universe that may come
    from another market source (a csv folder, Yahoo), so they need a series for any name.
    """
    days, first = _window(epoch, request, calendar)
    tickers = _tickers(request)
    bars = _simulate(seed, len(days), tickers, benchmark, signal)
    adj_close = _adjusted_close(bars.close, bars.dividend, bars.split_ratio)

    def long(matrix: np.ndarray) -> np.ndarray:
        return matrix[:, first:].ravel()  # ticker-major: sorted by ticker, then date

    columns = {f: long(getattr(bars, f)) for f in _BAR_FIELDS}
    return _frame(
        schemas.PRICES,
        {
            "ticker": np.repeat(np.array(tickers, dtype=object), len(days) - first),
            "date": np.tile(days[first:].to_numpy(), len(tickers)),
            "adj_close": long(adj_close),
            **columns,
        },
    )


#: Unknown names quoted in one refusal; the rest are counted, so the message stays one line.
_UNKNOWN_SHOWN = 5


class SampleMarketSource(MarketSource):
    """Daily bars of fictional stocks and a benchmark index, deterministic in (seed, epoch).

    `fetch("prices", ...)` returns the requested tickers; the benchmark only when it is one of
    them. Only `known_tickers()` are served: any other name would get a plausible series made
    up from its hash, so a typo (APPL) would run through every stage unnoticed.
    """

    name = "sample"
    datasets = ("prices",)
    synthetic = True

    def __init__(
        self,
        seed: int,
        n_tickers: int,
        epoch: dt.date,
        benchmark: str,
        calendar: str = DEFAULT_CALENDAR,
        signal: float = DEFAULT_SIGNAL,
    ) -> None:
        if seed < 0 or n_tickers < 0:
            raise ValueError(f"seed and n_tickers must be non-negative, got {seed} and {n_tickers}")
        super().__init__()
        self.seed, self.n_tickers, self.epoch = seed, n_tickers, epoch
        self.benchmark, self.calendar, self.signal = benchmark, calendar, signal

    def available_tickers(self) -> list[str]:
        """The eight built-in names, then X0009, X0010, ... up to `n_tickers` names."""
        generated = (f"X{i:04d}" for i in itertools.count(len(_DEFAULT_COMPANIES) + 1))
        names = (t for t in itertools.chain(_DEFAULT_COMPANIES, generated) if t != self.benchmark)
        return list(itertools.islice(names, self.n_tickers))

    def known_tickers(self) -> list[str]:
        """Every name `fetch` serves: the built-in companies (whatever `n_tickers` is, so a small
        universe can still pick any of them), the generated names of `available_tickers()` and
        the benchmark (the index goes by whatever name `universe.benchmark` gives it)."""
        return list(dict.fromkeys([*_DEFAULT_COMPANIES, *self.available_tickers(), self.benchmark]))

    def instrument_types(self, tickers: Iterable[str]) -> dict[str, str]:
        """The benchmark is the market index; every other sample name is a stock."""
        return {t: "index" if t == self.benchmark else "equity" for t in tickers}

    def unknown_tickers_message(self, tickers: Iterable[str]) -> str | None:
        """One line naming the `tickers` this source does not have, with the closest known names
        and the known ones in short; None when every name is known.

        The runner's preflight puts it behind the params key, `fetch` raises it, so a notebook
        run outside the runner cannot invent a series either.
        """
        known = self.known_tickers()
        unknown = sorted(set(tickers) - set(known))
        if not unknown:
            return None
        listing = f"sample tickers: {self._known_in_short()}"
        if len(unknown) == 1:
            return f"{unknown[0]} is not a sample ticker{_did_you_mean(unknown[0], known)}; {listing}"
        named = ", ".join(f"{t}{_did_you_mean(t, known)}" for t in unknown[:_UNKNOWN_SHOWN])
        if len(unknown) > _UNKNOWN_SHOWN:
            named += f" ({len(unknown)} in all)"
        return f"{named} are not sample tickers; {listing}"

    def _known_in_short(self) -> str:
        """`NOVA, ..., LEDG, X0009..X0500 and the benchmark BBIX`: generated names as a range."""
        generated = [t for t in self.available_tickers() if t not in _DEFAULT_COMPANIES]
        parts = [t for t in _DEFAULT_COMPANIES if t != self.benchmark]
        if generated:
            parts.append(generated[0] if len(generated) == 1 else f"{generated[0]}..{generated[-1]}")
        return f"{', '.join(parts)} and the benchmark {self.benchmark}"

    def fetch(self, dataset: str, request: FetchRequest) -> pd.DataFrame:
        self._check_dataset(dataset)
        problem = self.unknown_tickers_message(request.tickers)
        if problem:
            raise ValueError(problem)
        return _prices(self.seed, self.epoch, self.calendar, self.benchmark, self.signal, request)


def _did_you_mean(ticker: str, known: Sequence[str]) -> str:
    """` (did you mean NOVA?)` for the closest known names, or "" when none is close."""
    close = difflib.get_close_matches(ticker, known, n=3, cutoff=0.6)
    return f" (did you mean {' or '.join(close)}?)" if close else ""


# --------------------------------------------------------------------------- news

#: Headline templates by tone (+1 positive, -1 negative, 0 neutral).
HEADLINE_TEMPLATES: dict[int, tuple[str, ...]] = {
    1: (
        "{company} beats quarterly estimates as {driver} jumps",
        "{company} raises full-year guidance on strong {driver}",
        "{company} shares climb after analyst upgrade",
        "{company} announces $2 billion share buyback",
        "{company} wins major multi-year contract",
        "{company} reports record {driver}",
        "{company} lifts payout as profits surge",
        "Analysts see upside for {company} after strong {driver}",
        "{company} expands margins, topping forecasts",
        "{company} secures regulatory approval for key product",
        "Investors cheer {company} as {driver} accelerates",
        "{company} unveils new product line to strong early demand",
    ),
    -1: (
        "{company} misses estimates as {driver} slows",
        "{company} cuts outlook, citing weak {driver}",
        "{company} shares slide after analyst downgrade",
        "{company} faces regulatory probe over accounting practices",
        "{company} loses key customer to rival",
        "{company} warns of margin pressure as costs rise",
        "{company} CFO departs unexpectedly",
        "Short sellers target {company} over {driver} concerns",
        "{company} recalls products after quality complaints",
        "{company} delays product launch amid supply problems",
        "{company} hit by lawsuit in patent dispute",
        "Weak {driver} weighs on {company}",
    ),
    0: (
        "{company} to present at industry conference next week",
        "{company} schedules quarterly earnings call",
        "{company} appoints new board member",
        "{company} completes previously announced reorganization",
        "{company} files annual report with regulators",
        "{company} reaffirms guidance for {driver}",
        "{company} opens new regional office",
        "{company} holds annual shareholder meeting",
        "What to watch in {company}'s {driver} this quarter",
        "{company} names new head of investor relations",
        "{company} updates investors on {driver} strategy",
        "{company} prices senior notes offering",
    ),
}
_DRIVERS = {
    "tech": "cloud revenue",
    "health": "drug sales",
    "energy": "production volumes",
    "finance": "loan growth",
    "consumer": "same-store sales",
    "industrials": "order backlog",
}
_PUBLISHERS = (
    "Marketwire Daily",
    "Capital Courier",
    "The Ledger Street Journal",
    "Ticker Times",
    "Bentley Newswire",
)
_TEMPLATE_PATTERNS = [
    (tone, re.compile(re.escape(t).replace(r"\{company\}", "(.+)").replace(r"\{driver\}", "(.+)")))
    for tone, templates in HEADLINE_TEMPLATES.items()
    for t in templates
]
_NEWS_CHANCE, _TWO_HEADLINES_CHANCE = 0.35, 0.08  # per ticker and session
_TONE_LOADING, _TONE_CUT = 0.3, 0.8  # tone score = loading * next move (in sigmas) + logistic noise
_NEWS_DRAWS = 9  # per session: count, then (tone, template, publisher, minute) for two slots


def headline_tone(headline: str) -> int:
    """Tone (+1, 0, -1) of a sample headline, recovered from its template."""
    for tone, pattern in _TEMPLATE_PATTERNS:
        if pattern.fullmatch(headline):
            return tone
    raise ValueError(f"not a sample headline: {headline!r}")


def _next_session(day: dt.date, calendar: str) -> dt.date | None:
    """The session after `day`, or None when it lies beyond the calendar's coverage."""
    for offset in range(1, 15):
        candidate = day + dt.timedelta(days=offset)
        try:
            if is_session(candidate, calendar):
                return candidate
        except ValueError:  # exchange_calendars: date out of bounds
            return None
    return None


class _SampleCompanion(Source):
    """News and portfolio sources that follow the sample market of the same seed and epoch.

    They serve any ticker name, unlike `SampleMarketSource`: their universe may come from
    another market source (sample headlines and holdings for a csv folder's tickers).
    """

    name = "sample"
    synthetic = True

    def __init__(
        self, seed: int, epoch: dt.date, calendar: str = DEFAULT_CALENDAR, signal: float = DEFAULT_SIGNAL
    ) -> None:
        super().__init__()
        self.seed, self.epoch, self.calendar, self.signal = seed, epoch, calendar, signal

    def _prices(self, request: FetchRequest) -> pd.DataFrame:
        """The sample market's bars for any name: the universe may come from another market source."""
        return _prices(self.seed, self.epoch, self.calendar, DEFAULT_BENCHMARK, self.signal, request)


class SampleNewsSource(_SampleCompanion):
    """Headlines whose tone weakly anticipates the ticker's next-session return (corr ~0.15).

    Prices come from a `SampleMarketSource` with the same seed and epoch, so news and prices
    of one configuration agree.
    """

    datasets = ("news",)

    def fetch(self, dataset: str, request: FetchRequest) -> pd.DataFrame:
        self._check_dataset(dataset)
        days, first = _window(self.epoch, request, self.calendar)
        tickers = _tickers(request)
        moves = self._next_moves(request, tickers, days[first:])
        parts = [self._headlines(t, days, first, moves[:, j]) for j, t in enumerate(tickers)]
        columns = {
            name: np.concatenate([p[name] for p in parts]) if parts else np.array([], dtype=object)
            for name in schemas.NEWS.column_names
        }
        columns["published_at"] = pd.DatetimeIndex(columns["published_at"]).tz_localize("UTC")
        return _frame(schemas.NEWS, columns)

    def _next_moves(self, request: FetchRequest, tickers: list[str], window: pd.DatetimeIndex) -> np.ndarray:
        """(sessions, tickers) next-session total log-return in units of the ticker's daily vol.

        Built from as-traded close, dividend and split (not adj_close, which depends on the
        fetch end), so the move of a date is window-independent. 0 past the calendar's end.
        """
        if not tickers or window.empty:
            return np.zeros((len(window), len(tickers)))
        following = _next_session(request.end, self.calendar) or request.end
        prices = self._prices(FetchRequest(request.start, following, tuple(tickers)))
        later = prices.groupby("ticker")[["close", "dividend", "split_ratio"]].shift(-1)
        prices["move"] = np.log((later["close"] + later["dividend"]) * later["split_ratio"] / prices["close"])
        moves = prices.pivot(index="date", columns="ticker", values="move").reindex(index=window, columns=tickers)
        annual_vol = np.array([_profile(self.seed, t).total_vol for t in tickers])
        return moves.fillna(0.0).to_numpy() / (annual_vol / np.sqrt(_TRADING_DAYS))

    def _headlines(self, ticker: str, days: pd.DatetimeIndex, first: int, move: np.ndarray) -> dict[str, np.ndarray]:
        """One ticker's headlines in the window (published_at still naive UTC).

        The random draws cover every session since the epoch, so a date's news is window-free.
        """
        u = np.random.default_rng([self.seed, _crc(ticker), _NEWS_TAG]).random((len(days), _NEWS_DRAWS))[first:]
        count = (u[:, 0] < _NEWS_CHANCE).astype(int) + (u[:, 0] < _TWO_HEADLINES_CHANCE)
        rows, slot = np.nonzero(np.arange(2) < count[:, None])
        draw = u[rows[:, None], 1 + 4 * slot[:, None] + np.arange(4)]  # (headlines, 4)
        score = _TONE_LOADING * move[rows] + np.log(draw[:, 0] / (1.0 - draw[:, 0]))
        tone = np.where(score > _TONE_CUT, 1, np.where(score < -_TONE_CUT, -1, 0))
        company = _company(ticker)
        rendered = {
            k: [t.format(company=company.name, driver=_DRIVERS[company.sector]) for t in templates]
            for k, templates in HEADLINE_TEMPLATES.items()
        }
        headline = [
            rendered[k][int(x * len(rendered[k]))] for k, x in zip(tone.tolist(), draw[:, 1].tolist(), strict=True)
        ]
        dates = days[first:][rows]
        ids = [_digest(ticker, d, s) for d, s in zip(dates.strftime("%Y-%m-%d"), slot.tolist(), strict=True)]
        minutes = (draw[:, 3] * 480).astype(int)  # 12:00-20:00 UTC on the session date
        return {
            "news_id": np.array(ids, dtype=object),
            "ticker": np.full(len(rows), ticker, dtype=object),
            "published_at": (dates + pd.Timedelta(hours=12) + pd.to_timedelta(minutes, unit="min")).to_numpy(),
            "date": dates.to_numpy(),
            "headline": np.array(headline, dtype=object),
            "publisher": np.array(_PUBLISHERS, dtype=object)[(draw[:, 2] * len(_PUBLISHERS)).astype(int)],
            "url": np.array([f"https://news.example/sample/{i}" for i in ids], dtype=object),
        }


# --------------------------------------------------------------------------- household ledger


@dataclass(frozen=True)
class _Bill:
    """A charge on a fixed day of every month (USD at 2000 prices)."""

    day: int
    description: str
    category: str
    account: str
    low: float
    high: float


@dataclass(frozen=True)
class _Spend:
    """Discretionary spending: a number of charges per month at random merchants and days."""

    category: str
    merchants: tuple[str, ...]
    low: float
    high: float
    count: tuple[int, int]  # inclusive range of charges in a month that has any
    chance: float = 1.0  # probability that a month has any


_BILLS = (
    _Bill(1, "OAKWOOD PROPERTY MGMT ACH", "housing", "checking", 1250.0, 1250.0),
    _Bill(3, "NETFLIX.COM", "subscriptions", "credit_card", 12.99, 12.99),
    _Bill(8, "CITY POWER & LIGHT", "utilities", "checking", 45.0, 130.0),
    _Bill(9, "SPOTIFY USA", "subscriptions", "credit_card", 9.99, 9.99),
    _Bill(12, "COMCAST CABLE COMM", "utilities", "checking", 59.99, 59.99),
    _Bill(17, "PLANET FITNESS CLUB 0412", "subscriptions", "credit_card", 24.99, 24.99),
    _Bill(20, "VERIZON WIRELESS", "utilities", "checking", 70.0, 90.0),
)
_GROCERS = ("WHOLEFDS MKT #10234", "TRADER JOE'S #552", "SAFEWAY #1793", "KROGER #0412")
_SPENDING = (
    _Spend(
        "dining",
        (
            "STARBUCKS #2234",
            "CHIPOTLE 0871",
            "SQ *BLUE BOTTLE COFFEE",
            "DOORDASH*THAI BASIL",
            "PANERA BREAD #6021",
        ),
        6.0,
        60.0,
        (4, 10),
    ),
    _Spend(
        "transport",
        ("SHELL OIL 5744", "CHEVRON 0093117", "UBER *TRIP", "MTA*NYCT PAYGO"),
        8.0,
        55.0,
        (2, 6),
    ),
    _Spend(
        "shopping",
        ("AMAZON.COM*MK1AB2C3", "TARGET 00012345", "BEST BUY 00004721", "HOME DEPOT #6512"),
        12.0,
        180.0,
        (1, 4),
    ),
    _Spend(
        "healthcare",
        ("CVS/PHARMACY #04321", "WALGREENS #1129", "CITYMD URGENT CARE"),
        10.0,
        150.0,
        (1, 2),
        0.4,
    ),
    _Spend(
        "travel",
        ("DELTA AIR 0062345678", "MARRIOTT HOTELS", "AIRBNB * HM4KX2"),
        120.0,
        700.0,
        (1, 3),
        0.1,
    ),
)
_PAYCHECK = 1900.0  # net, per payday, in 2000; grows with _SALARY_GROWTH a year
_SALARY_GROWTH, _INFLATION = 0.035, 0.03
_SAVINGS = 400.0
_UNCATEGORIZED_SHARE = 0.10  # of expense rows, left for the budget stage to classify


def _payday(day: dt.date) -> dt.date:
    """Payroll lands on the Friday before a weekend date."""
    return day - dt.timedelta(days=max(0, day.weekday() - 4))


def _month_ledger(seed: int, year: int, month: int) -> list[tuple[dt.date, str, float, str, str | None]]:
    """All rows (date, account, amount, description, category) of one month, by date.

    Seeded by (seed, year, month) alone, so a month never depends on the requested window.
    The card is paid off and savings topped up from checking, as transfer pairs.
    """
    rng = np.random.default_rng([seed, _LEDGER_TAG, year, month])
    last = (dt.date(year + month // 12, month % 12 + 1, 1) - dt.timedelta(days=1)).day
    prices = (1 + _INFLATION) ** (year - 2000)
    paycheck = _PAYCHECK * (1 + _SALARY_GROWTH) ** (year - 2000)

    def on(day: int) -> dt.date:
        return dt.date(year, month, min(day, last))

    def cost(low: float, high: float) -> float:
        return -round(float(rng.uniform(low, high)) * prices, 2)

    rows: list[tuple[dt.date, str, float, str, str | None]] = [
        (
            _payday(on(d)),
            "checking",
            round(paycheck * (1 + 0.01 * rng.standard_normal()), 2),
            "ACME CORP PAYROLL",
            "income",
        )
        for d in (15, last)
    ]
    rows += [(on(b.day), b.account, cost(b.low, b.high), b.description, b.category) for b in _BILLS]
    rows += [
        (
            on(week + int(rng.integers(7))),
            "credit_card",
            cost(55.0, 190.0),
            str(rng.choice(_GROCERS)),
            "groceries",
        )
        for week in (1, 8, 15, 22, 29)
        if week <= last
    ]
    for spend in _SPENDING:
        count = int(rng.integers(spend.count[0], spend.count[1] + 1)) if rng.random() < spend.chance else 0
        rows += [
            (
                on(int(rng.integers(1, last + 1))),
                "credit_card",
                cost(spend.low, spend.high),
                str(rng.choice(spend.merchants)),
                spend.category,
            )
            for _ in range(count)
        ]
    missing = rng.random(len(rows)) < _UNCATEGORIZED_SHARE
    rows = [
        (d, a, x, s, None if miss and c != "income" else c) for (d, a, x, s, c), miss in zip(rows, missing, strict=True)
    ]

    card = -round(sum(x for _, a, x, _, _ in rows if a == "credit_card"), 2)
    saved = round(_SAVINGS * prices, -1)
    rows += [
        (on(last), "checking", -card, "CHASE CREDIT CRD AUTOPAY", "transfer"),
        (on(last), "credit_card", card, "AUTOMATIC PAYMENT - THANK YOU", "transfer"),
        (on(16), "checking", -saved, "ONLINE TRANSFER TO SAV XXXX4821", "transfer"),
        (on(16), "savings", saved, "ONLINE TRANSFER FROM CHK XXXX1937", "transfer"),
    ]
    return sorted(rows, key=lambda row: row[0])


def _months(start: dt.date, end: dt.date) -> Iterable[tuple[int, int]]:
    """(year, month) pairs overlapping [start, end]."""
    for index in range(start.year * 12 + start.month - 1, end.year * 12 + end.month):
        yield index // 12, index % 12 + 1


class SamplePortfolioSource(_SampleCompanion):
    """A household's bank and card ledger and its brokerage holdings, deterministic in the seed."""

    datasets = ("transactions", "holdings")

    def fetch(self, dataset: str, request: FetchRequest) -> pd.DataFrame:
        self._check_dataset(dataset)
        if dataset == "transactions":
            return self._transactions(request)
        return self._holdings(request)

    def _transactions(self, request: FetchRequest) -> pd.DataFrame:
        _require_epoch(self.epoch, request.start, "the request's start")
        rows = [
            (_digest("txn", self.seed, f"{year:04d}-{month:02d}", i), *row)
            for year, month in _months(request.start, request.end)
            for i, row in enumerate(_month_ledger(self.seed, year, month))
            if request.start <= row[0] <= request.end
        ]
        names = schemas.TRANSACTIONS.column_names
        return _frame(schemas.TRANSACTIONS, {name: [row[k] for row in rows] for k, name in enumerate(names)})

    def _holdings(self, request: FetchRequest) -> pd.DataFrame:
        """Positions bought at the first sample session, in shares as of `as_of` (after splits)."""
        as_of = request.as_of
        if as_of is None:
            raise ValueError("holdings are a snapshot: the request needs as_of")
        _require_epoch(self.epoch, as_of, "as_of")
        tickers = _tickers(request)
        prices = self._prices(FetchRequest(self.epoch, as_of, tuple(tickers)))
        if tickers and prices.empty:
            raise ValueError(f"no sample session between the epoch {self.epoch} and as_of {as_of}")
        bought = prices.groupby("ticker").agg(price=("close", "first"), splits=("split_ratio", "prod"))
        rows = []
        for ticker in tickers:
            u = np.random.default_rng([self.seed, _crc(ticker), _HOLDINGS_TAG]).random(5)
            accounts = ("brokerage",) if u[0] < 0.5 else ("ira",) if u[0] < 0.75 else ("brokerage", "ira")
            for i, account in enumerate(accounts):
                shares = 10 + round(290 * u[1 + i])
                cost = shares * bought.at[ticker, "price"] * (0.8 + 0.45 * u[3 + i])
                held = np.floor(shares * bought.at[ticker, "splits"])  # fractions were paid in cash
                rows.append((as_of, account, ticker, float(held), round(cost, 2)))
        rows.sort(key=lambda row: (row[1], row[2]))
        names = schemas.HOLDINGS.column_names
        return _frame(schemas.HOLDINGS, {name: [row[k] for row in rows] for k, name in enumerate(names)})
