"""Features: TA-Lib parity on adjusted input, hand-checked returns, splits, gaps, isolation."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import talib

from bentley.features import (
    TRADING_DAYS,
    adjusted_ohlcv,
    compute_features,
    feature_columns,
)
from bentley.schemas import PRICES

RTOL = 1e-12


def make_settings(**overrides: object) -> SimpleNamespace:
    """The default feature settings, with attribute access like the pydantic model."""
    values: dict[str, object] = {
        "sma_windows": [10, 20, 50, 200],
        "ema_windows": [10, 20, 50, 200],
        "rsi_period": 14,
        "macd": SimpleNamespace(fast=12, slow=26, signal=9),
        "bollinger": SimpleNamespace(period=20, nbdev=2.0),
        "atr_period": 14,
        "adx_period": 14,
        "stochastic": SimpleNamespace(fastk=14, slowk=3, slowd=3),
        "return_horizons": [1, 5, 21],
        "volatility_windows": [21, 63],
        "volume_zscore_window": 21,
    }
    values.update(overrides)
    return SimpleNamespace(**values)


def make_prices(ticker: str, n: int, seed: int = 0, start: str = "2020-01-02") -> pd.DataFrame:
    """A random-walk ticker in the PRICES contract, with dividends lowering adj_close history."""
    rng = np.random.default_rng(seed)
    close = 40.0 * np.exp(np.cumsum(rng.normal(0.0, 0.02, n)))
    spread = np.abs(rng.normal(0.0, 0.01, n)) * close
    dividend = np.zeros(n)
    dividend[n // 3 :: 63] = 0.25
    # Yahoo convention: each dividend scales all earlier adj_close by (1 - div / prior close).
    step = np.ones(n)
    step[1:] = 1.0 - dividend[1:] / close[:-1]
    factor = np.cumprod(step[::-1])[::-1] / step  # product of the steps after each row
    frame = pd.DataFrame(
        {
            "ticker": ticker,
            "date": pd.bdate_range(start, periods=n),
            "open": close * (1.0 + rng.normal(0.0, 0.005, n)),
            "high": close + spread,
            "low": close - spread,
            "close": close,
            "adj_close": close * factor,
            "volume": rng.integers(100_000, 5_000_000, n),
            "dividend": dividend,
            "split_ratio": 1.0,
        }
    )
    return frame[PRICES.column_names]


def test_feature_columns_follow_settings() -> None:
    settings = make_settings(
        sma_windows=[5],
        ema_windows=[8, 30],
        rsi_period=7,
        atr_period=10,
        adx_period=9,
        return_horizons=[1, 3],
        volatility_windows=[10],
        volume_zscore_window=15,
    )
    assert feature_columns(settings) == [
        "sma_5", "ema_8", "ema_30", "rsi_7",
        "macd", "macd_signal", "macd_hist",
        "bb_upper", "bb_middle", "bb_lower",
        "atr_10", "obv", "adx_9", "stoch_k", "stoch_d",
        "ret_1d", "ret_3d", "vol_10d", "volume_z_15",
    ]  # fmt: skip


def test_default_feature_columns_and_output_shape() -> None:
    settings = make_settings()
    columns = feature_columns(settings)
    assert columns[:8] == [f"{k}_{w}" for k in ("sma", "ema") for w in (10, 20, 50, 200)]
    assert columns[-6:] == ["ret_1d", "ret_5d", "ret_21d", "vol_21d", "vol_63d", "volume_z_21"]
    out = compute_features(make_prices("AAA", 60), settings)
    assert list(out.columns) == ["ticker", "date", *columns]
    assert (out[columns].dtypes == np.float64).all()


def test_adjusted_ohlcv_scales_bars_and_split_volume() -> None:
    prices = pd.DataFrame(
        {
            "ticker": ["A"] * 5,
            "date": pd.bdate_range("2024-01-01", periods=5),
            "open": [10.0, 10.0, 5.0, 5.0, 1.0],
            "high": [11.0, 11.0, 6.0, 6.0, 2.0],
            "low": [9.0, 9.0, 4.0, 4.0, 0.5],
            "close": [10.0, 10.0, 5.0, 5.0, 1.0],
            "adj_close": [1.0, 1.0, 1.0, 0.9, 1.0],
            "volume": [100, 100, 200, 200, 1000],
            "dividend": [0.0, 0.0, 0.0, 0.5, 0.0],
            "split_ratio": [1.0, 1.0, 2.0, 1.0, 5.0],
        }
    ).iloc[[3, 0, 4, 2, 1]]  # any row order

    out = adjusted_ohlcv(prices)

    assert out.index.tolist() == prices.index.tolist()  # rows keep their order
    out = out.sort_values("date")
    np.testing.assert_allclose(out["adj_open"], [1.0, 1.0, 1.0, 0.9, 1.0], rtol=RTOL)
    np.testing.assert_allclose(out["adj_high"], [1.1, 1.1, 1.2, 1.08, 2.0], rtol=RTOL)
    np.testing.assert_allclose(out["adj_low"], [0.9, 0.9, 0.8, 0.72, 0.5], rtol=RTOL)
    # Splits on the 3rd (2:1) and 5th (5:1) rows scale only earlier volume; the dividend does not.
    np.testing.assert_array_equal(out["adj_volume"], [1000.0, 1000.0, 1000.0, 1000.0, 1000.0])


def test_adjusted_volume_does_not_cross_tickers() -> None:
    a = make_prices("A", 5)
    b = make_prices("B", 5, seed=1)
    b.loc[2, "split_ratio"] = 3.0
    out = adjusted_ohlcv(pd.concat([a, b], ignore_index=True))
    np.testing.assert_array_equal(out["adj_volume"].iloc[:5], a["volume"].to_numpy(float))
    np.testing.assert_array_equal(out["adj_volume"].iloc[5:], b["volume"].to_numpy(float) * [3.0, 3.0, 1.0, 1.0, 1.0])


def _talib_reference(prices: pd.DataFrame, settings: SimpleNamespace) -> dict[str, np.ndarray]:
    """TA-Lib called directly on one ticker's adjusted series, computed independently."""
    factor = prices["adj_close"] / prices["close"]
    close = prices["adj_close"].to_numpy(float)
    high = (prices["high"] * factor).to_numpy(float)
    low = (prices["low"] * factor).to_numpy(float)
    later_splits = prices["split_ratio"][::-1].cumprod()[::-1].shift(-1, fill_value=1.0)
    volume = (prices["volume"] * later_splits).to_numpy(float)
    ref: dict[str, np.ndarray] = {}
    for w in settings.sma_windows:
        ref[f"sma_{w}"] = talib.SMA(close, w)
    for w in settings.ema_windows:
        ref[f"ema_{w}"] = talib.EMA(close, w)
    ref["rsi_14"] = talib.RSI(close, 14)
    ref["macd"], ref["macd_signal"], ref["macd_hist"] = talib.MACD(close, 12, 26, 9)
    ref["bb_upper"], ref["bb_middle"], ref["bb_lower"] = talib.BBANDS(close, 20, 2.0, 2.0, 0)
    ref["atr_14"] = talib.ATR(high, low, close, 14)
    ref["obv"] = talib.OBV(close, volume)
    ref["adx_14"] = talib.ADX(high, low, close, 14)
    ref["stoch_k"], ref["stoch_d"] = talib.STOCH(high, low, close, 14, 3, 0, 3, 0)
    return ref


def test_indicators_equal_talib_on_adjusted_input() -> None:
    settings = make_settings()
    prices = make_prices("AAA", 400, seed=3)
    prices.loc[250, "split_ratio"] = 2.0  # adjusted volume must feed OBV
    out = compute_features(prices.sample(frac=1.0, random_state=0), settings)

    ref = _talib_reference(prices, settings)
    assert len(out) == len(prices)
    for name, expected in ref.items():
        np.testing.assert_allclose(out[name], expected, rtol=RTOL, equal_nan=True, err_msg=name)
        assert out[name].notna().any(), name


def test_returns_and_volatility_by_hand() -> None:
    close = [100.0, 110.0, 99.0, 99.0, 108.9]
    prices = pd.DataFrame(
        {
            "ticker": "H",
            "date": pd.bdate_range("2024-01-01", periods=5),
            "open": close,
            "high": close,
            "low": close,
            "close": close,
            "adj_close": close,
            "volume": [10, 20, 30, 50, 20],
            "dividend": 0.0,
            "split_ratio": 1.0,
        }
    )
    settings = make_settings(return_horizons=[1, 2], volatility_windows=[3], volume_zscore_window=3)
    out = compute_features(prices, settings)

    nan = np.nan
    # Float division: 110 / 100 - 1 is not exactly 0.1, hence a tolerance.
    close_enough = {"rtol": 1e-9, "atol": 1e-15, "equal_nan": True}
    np.testing.assert_allclose(out["ret_1d"], [nan, 0.1, -0.1, 0.0, 0.1], **close_enough)
    np.testing.assert_allclose(out["ret_2d"], [nan, nan, -0.01, -0.1, 0.1], **close_enough)
    daily = np.array([0.1, -0.1, 0.0, 0.1])
    vol = [np.std(daily[i - 3 : i], ddof=1) * np.sqrt(TRADING_DAYS) for i in (3, 4)]
    np.testing.assert_allclose(out["vol_3d"], [nan, nan, nan, *vol], **close_enough)
    # Volume windows [10, 20, 30], [20, 30, 50] and [30, 50, 20], each z-scoring its last value.
    z = [(window[-1] - np.mean(window)) / np.std(window, ddof=1)
         for window in ([10, 20, 30], [20, 30, 50], [30, 50, 20])]  # fmt: skip
    assert z[0] == pytest.approx(1.0)
    np.testing.assert_allclose(out["volume_z_3"], [nan, nan, *z], rtol=RTOL, equal_nan=True)


def _assert_nan_only_in_warmup(frame: pd.DataFrame, columns: list[str]) -> None:
    """Each column is NaN for a leading run of rows and finite afterwards."""
    values = frame[columns].to_numpy()
    assert not np.isinf(values).any()
    for j, name in enumerate(columns):
        finite = np.isfinite(values[:, j])
        assert finite.any(), name
        assert finite[finite.argmax() :].all(), name


def test_split_day_is_invisible_in_adjusted_returns() -> None:
    prices = make_prices("SPL", 300, seed=5)
    split = 150
    # A 2:1 split: raw prices halve and raw volume doubles from the ex-date; adj_close is
    # continuous, on the post-split scale as Yahoo reports it.
    prices["adj_close"] = prices["adj_close"] / 2.0
    for column in ("open", "high", "low", "close"):
        prices.loc[split:, column] = prices.loc[split:, column] / 2.0
    raw_volume_before = prices.loc[: split - 1, "volume"].to_numpy(float)
    prices.loc[split:, "volume"] = prices.loc[split:, "volume"] * 2
    prices.loc[split, "split_ratio"] = 2.0

    adjusted = adjusted_ohlcv(prices)
    out = compute_features(prices, make_settings())

    np.testing.assert_array_equal(adjusted.loc[: split - 1, "adj_volume"], raw_volume_before * 2.0)
    assert abs(out.loc[split, "ret_1d"]) < 0.1  # a raw return would be about -50%
    assert abs(prices.loc[split, "close"] / prices.loc[split - 1, "close"] - 1.0) > 0.4
    reference = _talib_reference(prices, make_settings())
    np.testing.assert_allclose(out["atr_14"], reference["atr_14"], rtol=RTOL, equal_nan=True)
    _assert_nan_only_in_warmup(out, feature_columns(make_settings()))


def test_tickers_are_computed_independently_of_each_other() -> None:
    settings = make_settings()
    parts = [
        make_prices("MSFT", 300, seed=1),
        make_prices("AAPL", 120, seed=2, start="2020-06-01"),
        make_prices("ZZZ", 40, seed=3),  # shorter than most windows: NaN, no crash
    ]
    mixed = pd.concat(parts, ignore_index=True).sample(frac=1.0, random_state=7)

    out = compute_features(mixed, settings)

    assert out["ticker"].tolist() == ["AAPL"] * 120 + ["MSFT"] * 300 + ["ZZZ"] * 40
    assert out.groupby("ticker")["date"].is_monotonic_increasing.all()
    for part in parts:
        ticker = part["ticker"].iloc[0]
        alone = compute_features(part, settings)
        together = out[out["ticker"] == ticker].reset_index(drop=True)
        pd.testing.assert_frame_equal(together, alone, check_exact=True)
    assert out.loc[out["ticker"] == "ZZZ", "sma_200"].isna().all()


def test_nan_adjusted_close_rows_are_dropped_not_propagated() -> None:
    settings = make_settings()
    prices = make_prices("GAP", 260, seed=4)
    gap = [100, 101, 102, 180]
    with_gap = prices.copy()
    with_gap.loc[gap, "adj_close"] = np.nan

    out = compute_features(with_gap, settings)

    assert len(out) == len(prices) - len(gap)
    assert not out["date"].isin(prices.loc[gap, "date"]).any()
    expected = compute_features(prices.drop(index=gap), settings)
    pd.testing.assert_frame_equal(out, expected, check_exact=True)
    _assert_nan_only_in_warmup(out, feature_columns(settings))


def test_constant_volume_window_gives_nan_zscore_not_inf() -> None:
    prices = make_prices("FLAT", 60, seed=6)
    prices.loc[:39, "volume"] = 1_234_567
    out = compute_features(prices, make_settings(volume_zscore_window=5))
    z = out["volume_z_5"].to_numpy()
    assert np.isnan(z[:40]).all()
    assert np.isfinite(z[44:]).all()


def test_zero_close_gives_nan_not_inf() -> None:
    prices = make_prices("ZERO", 80, seed=8)
    prices.loc[30, "close"] = 0.0
    out = compute_features(prices, make_settings())
    assert not np.isinf(out[feature_columns(make_settings())].to_numpy()).any()
    assert np.isnan(adjusted_ohlcv(prices).loc[30, "adj_high"])


def test_duplicate_ticker_date_is_rejected() -> None:
    prices = make_prices("DUP", 10)
    with pytest.raises(ValueError, match="duplicate"):
        compute_features(pd.concat([prices, prices.iloc[[3]]]), make_settings())


def test_empty_prices_give_empty_features() -> None:
    settings = make_settings()
    out = compute_features(make_prices("NONE", 0), settings)
    assert out.empty
    assert list(out.columns) == ["ticker", "date", *feature_columns(settings)]
