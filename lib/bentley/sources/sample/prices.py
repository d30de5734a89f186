"""Sample prices: daily bars of fictional stocks and a benchmark index.

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
"""

from __future__ import annotations

import datetime as dt
import difflib
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bentley import schemas
from bentley.calendar import DEFAULT_CALENDAR
from bentley.sources.base import FetchRequest, MarketSource, Source
from bentley.sources.sample._common import (
    _DEFAULT_COMPANIES,
    _PROFILE_TAG,
    _TRADING_DAYS,
    DEFAULT_BENCHMARK,
    SECTORS,
    SPLIT_PERIOD,
    _company,
    _crc,
    _frame,
    _tickers,
    _window,
)

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

# Columns of the per-session shock blocks (standard normals).
_SHOCK, _GAP, _HIGH, _LOW, _VOLUME = range(5)


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
