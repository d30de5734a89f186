"""Technical-indicator and return features, computed from adjusted prices.

Raw prices jump on splits and ex-dividend dates; an indicator fed those jumps
reports moves that never happened. Every feature here is therefore computed on
the adjusted series (Yahoo convention): open/high/low are scaled by the same
factor as close (adj_close / close), and volume is scaled by the splits that
occur after each row, so share counts are comparable across the whole history.

Indicators come from TA-Lib, called on each ticker's own rows, so the values
equal TA-Lib's on the same input. Rows without an adjusted close are dropped
before computing, so a missing day never poisons the recursive indicators
(EMA, RSI, ATR, ADX); "t-h" in the return features means h available rows back.

TA-Lib is one-dimensional, so the work is a loop over tickers on numpy slices of
one (ticker, date)-sorted copy of the inputs, filling one preallocated float64
matrix. Per-row Python work and per-ticker frames are avoided on purpose: the
pipeline computes features for hundreds of tickers over a decade of sessions.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import talib
from numpy.lib.stride_tricks import sliding_window_view

if TYPE_CHECKING:
    from bentley.config import Features

#: Sessions per year, used to annualize daily return volatility.
TRADING_DAYS = 252

_KEY = ["ticker", "date"]
_RAW_OHL = ("open", "high", "low")


def _unique(values: Iterable[int]) -> list[int]:
    """Settings values in order without repeats, so column names stay unique."""
    return list(dict.fromkeys(int(v) for v in values))


def feature_columns(settings: Features) -> list[str]:
    """Names of the feature columns, in output order, as the settings define them.

    Names carry the period wherever the period is configurable per column (lists)
    or defines a single-period indicator, so a reader of the table knows what a
    column holds without looking up the run's parameters.
    """
    return [
        *(f"sma_{w}" for w in _unique(settings.sma_windows)),
        *(f"ema_{w}" for w in _unique(settings.ema_windows)),
        f"rsi_{settings.rsi_period}",
        "macd",
        "macd_signal",
        "macd_hist",
        "bb_upper",
        "bb_middle",
        "bb_lower",
        f"atr_{settings.atr_period}",
        "obv",
        f"adx_{settings.adx_period}",
        "stoch_k",
        "stoch_d",
        *(f"ret_{h}d" for h in _unique(settings.return_horizons)),
        *(f"vol_{w}d" for w in _unique(settings.volatility_windows)),
        f"volume_z_{settings.volume_zscore_window}",
    ]


def _floats(series: pd.Series) -> np.ndarray:
    """A column as a float64 array; nullable NA becomes NaN."""
    return series.to_numpy(dtype=np.float64, na_value=np.nan)


@dataclass(frozen=True)
class _Sorted:
    """Rows sorted by (ticker, date): the permutation and the ticker codes in that order."""

    order: np.ndarray
    codes: np.ndarray


def _sort_rows(prices: pd.DataFrame) -> _Sorted:
    """Sort by (ticker, date) with integer keys, and reject duplicate keys.

    A duplicated (ticker, date) would make every indicator of that ticker
    ambiguous, so it is an error rather than something to resolve silently.
    """
    codes, _ = pd.factorize(prices["ticker"], sort=True)
    dates = prices["date"].to_numpy()
    order = np.lexsort((dates, codes))
    codes, dates = codes[order], dates[order]
    duplicated = (codes[1:] == codes[:-1]) & (dates[1:] == dates[:-1])
    if duplicated.any():
        examples = prices.iloc[order[1:][duplicated][:5]][_KEY].to_dict("records")
        raise ValueError(f"prices has duplicate (ticker, date) rows, e.g. {examples}")
    return _Sorted(order=order, codes=codes)


def _later_split_factor(split_ratio: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Product of each ticker's split ratios strictly after each row (sorted input).

    Computed as an exclusive cumulative product over the reversed rows, grouped
    by ticker: a 2:1 split multiplies every earlier volume by 2, as Yahoo shows it.
    A missing ratio counts as no split.
    """
    ratios = pd.Series(np.nan_to_num(split_ratio[::-1], nan=1.0))
    groups = codes[::-1]
    after = ratios.groupby(groups).shift(1, fill_value=1.0).groupby(groups).cumprod()
    return after.to_numpy()[::-1]


def _adjusted_sorted(prices: pd.DataFrame, rows: _Sorted) -> dict[str, np.ndarray]:
    """adj_close, adj_open/high/low and adj_volume as float64, in (ticker, date) order."""
    adj_close = _floats(prices["adj_close"])[rows.order]
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = adj_close / _floats(prices["close"])[rows.order]
    factor[~np.isfinite(factor)] = np.nan  # a zero close has no meaningful factor
    adjusted = {f"adj_{c}": _floats(prices[c])[rows.order] * factor for c in _RAW_OHL}
    adjusted["adj_close"] = adj_close
    split_ratio = _floats(prices["split_ratio"])[rows.order]
    adjusted["adj_volume"] = _floats(prices["volume"])[rows.order] * _later_split_factor(split_ratio, rows.codes)
    return adjusted


def adjusted_ohlcv(prices: pd.DataFrame) -> pd.DataFrame:
    """Prices with adj_open, adj_high, adj_low and adj_volume added (rows keep their order).

    open/high/low are scaled by adj_close / close, the factor the source already
    applied to close for splits and dividends, so bars stay internally consistent.
    Volume is multiplied by the splits after each row only: a dividend changes
    the price, not the number of shares traded.
    """
    rows = _sort_rows(prices)
    adjusted = _adjusted_sorted(prices, rows)
    out = prices.copy()
    for name in (*(f"adj_{c}" for c in _RAW_OHL), "adj_volume"):
        values = np.empty_like(adjusted[name])
        values[rows.order] = adjusted[name]
        out[name] = values
    return out


def _check_settings(settings: Features) -> None:
    """Reject windows the return statistics cannot use (TA-Lib checks its own periods)."""
    if min(settings.return_horizons, default=1) < 1:
        raise ValueError(f"return_horizons must be >= 1, got {settings.return_horizons}")
    windows = [*settings.volatility_windows, settings.volume_zscore_window]
    if min(windows) < 2:
        raise ValueError(f"volatility and volume z-score windows must be >= 2, got {windows}")


def _simple_return(close: np.ndarray, horizon: int) -> np.ndarray:
    """close_t / close_{t-horizon} - 1, NaN for the first `horizon` rows."""
    out = np.full(close.shape, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        out[horizon:] = close[horizon:] / close[: close.size - horizon] - 1.0
    return out


def _trailing(values: np.ndarray, window: int) -> np.ndarray | None:
    """Trailing windows of `values` (one row per full window), or None if there is none."""
    return sliding_window_view(values, window) if values.size >= window else None


def _pad(stat: np.ndarray, size: int) -> np.ndarray:
    """Right-align a per-window statistic to the series, NaN during warm-up."""
    out = np.full(size, np.nan)
    out[size - stat.size :] = stat
    return out


def _rolling_std(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing sample standard deviation (ddof=1); a window holding NaN gives NaN.

    Two-pass per window (as np.std does) instead of running sums, which lose
    precision on large, near-constant series such as volume.
    """
    windows = _trailing(values, window)
    if windows is None:
        return np.full(values.shape, np.nan)
    return _pad(windows.std(axis=1, ddof=1), values.size)


def _annualized_vol(daily_return: np.ndarray, window: int) -> np.ndarray:
    """Rolling std of 1-day returns scaled to a year of sessions."""
    return _rolling_std(daily_return, window) * np.sqrt(TRADING_DAYS)


def _zscore(values: np.ndarray, window: int) -> np.ndarray:
    """(x - trailing mean) / trailing std (ddof=1), NaN where the window is constant.

    A constant window has no spread to measure against, so its z-score is
    undefined (NaN) rather than infinite; constancy is tested exactly (max == min)
    so floating-point noise in the mean cannot turn it into a large finite value.
    """
    windows = _trailing(values, window)
    if windows is None:
        return np.full(values.shape, np.nan)
    std = windows.std(axis=1, ddof=1)
    std[windows.max(axis=1) == windows.min(axis=1)] = np.nan
    z = (values[window - 1 :] - windows.mean(axis=1)) / std
    return _pad(z, values.size)


def _ticker_features(
    close: np.ndarray, high: np.ndarray, low: np.ndarray, volume: np.ndarray, settings: Features
) -> dict[str, np.ndarray]:
    """All features of one ticker, keyed by column name, from its adjusted series."""
    features: dict[str, np.ndarray] = {}
    for w in _unique(settings.sma_windows):
        features[f"sma_{w}"] = talib.SMA(close, timeperiod=w)
    for w in _unique(settings.ema_windows):
        features[f"ema_{w}"] = talib.EMA(close, timeperiod=w)
    features[f"rsi_{settings.rsi_period}"] = talib.RSI(close, timeperiod=settings.rsi_period)
    macd = settings.macd
    features["macd"], features["macd_signal"], features["macd_hist"] = talib.MACD(
        close, fastperiod=macd.fast, slowperiod=macd.slow, signalperiod=macd.signal
    )
    bands = settings.bollinger
    features["bb_upper"], features["bb_middle"], features["bb_lower"] = talib.BBANDS(
        close, timeperiod=bands.period, nbdevup=bands.nbdev, nbdevdn=bands.nbdev, matype=talib.MA_Type.SMA
    )
    atr, adx = settings.atr_period, settings.adx_period
    features[f"atr_{atr}"] = talib.ATR(high, low, close, timeperiod=atr)
    features["obv"] = talib.OBV(close, volume)
    features[f"adx_{adx}"] = talib.ADX(high, low, close, timeperiod=adx)
    stoch = settings.stochastic
    features["stoch_k"], features["stoch_d"] = talib.STOCH(
        high,
        low,
        close,
        fastk_period=stoch.fastk,
        slowk_period=stoch.slowk,
        slowk_matype=talib.MA_Type.SMA,
        slowd_period=stoch.slowd,
        slowd_matype=talib.MA_Type.SMA,
    )
    for h in _unique(settings.return_horizons):
        features[f"ret_{h}d"] = _simple_return(close, h)
    daily_return = _simple_return(close, 1)
    for w in _unique(settings.volatility_windows):
        features[f"vol_{w}d"] = _annualized_vol(daily_return, w)
    window = settings.volume_zscore_window
    features[f"volume_z_{window}"] = _zscore(volume, window)
    return features


def _ticker_slices(codes: np.ndarray) -> Iterator[slice]:
    """Row ranges of each ticker in an array of sorted ticker codes."""
    bounds = np.flatnonzero(codes[1:] != codes[:-1]) + 1
    starts = np.concatenate(([0], bounds))
    stops = np.concatenate((bounds, [codes.size]))
    for start, stop in zip(starts, stops, strict=True):
        if stop > start:
            yield slice(int(start), int(stop))


def compute_features(prices: pd.DataFrame, settings: Features) -> pd.DataFrame:
    """Indicator, return and volatility features per (ticker, date), from adjusted prices.

    One output row per input row with an adjusted close, sorted by ticker and
    date: columns `ticker`, `date`, then `feature_columns(settings)` as float64.
    Warm-up values are NaN and no value is infinite. Each ticker is computed on
    its own rows only, so tickers never leak into each other.
    """
    _check_settings(settings)
    columns = feature_columns(settings)
    rows = _sort_rows(prices)
    adjusted = _adjusted_sorted(prices, rows)
    valid = ~np.isnan(adjusted["adj_close"])
    series = {name: values[valid] for name, values in adjusted.items()}
    codes = rows.codes[valid]

    matrix = np.empty((codes.size, len(columns)), order="F")
    for rows_of_ticker in _ticker_slices(codes):
        features = _ticker_features(
            series["adj_close"][rows_of_ticker],
            series["adj_high"][rows_of_ticker],
            series["adj_low"][rows_of_ticker],
            series["adj_volume"][rows_of_ticker],
            settings,
        )
        for j, name in enumerate(columns):
            matrix[rows_of_ticker, j] = features[name]
    matrix[np.isinf(matrix)] = np.nan

    kept = rows.order[valid]
    out = pd.DataFrame(matrix, columns=columns, copy=False)
    for position, key in enumerate(_KEY):
        out.insert(position, key, prices[key].take(kept).reset_index(drop=True))
    return out


def latest_summary(features: pd.DataFrame, settings: Features) -> pd.DataFrame:
    """The last session's headline features per ticker, rounded for a report table."""
    columns = [
        f"rsi_{settings.rsi_period}",
        "macd_hist",
        f"adx_{settings.adx_period}",
        "stoch_k",
        *(f"ret_{h}d" for h in _unique(settings.return_horizons)),
        *(f"vol_{w}d" for w in _unique(settings.volatility_windows)),
        f"volume_z_{settings.volume_zscore_window}",
    ]
    last = features.sort_values(_KEY).groupby("ticker").tail(1).set_index("ticker")
    return last[["date", *columns]].round({column: 3 for column in columns})


def showcase_ticker(features: pd.DataFrame, benchmark: str) -> str:
    """The first stock (not the benchmark) alphabetically: a stable choice for the report chart."""
    tickers = sorted(set(features["ticker"]) - {benchmark})
    return tickers[0] if tickers else benchmark
