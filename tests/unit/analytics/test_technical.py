"""Technical signals: each rule fires on the session its condition starts, with the documented
strength, per ticker, and never looks ahead."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from bentley.analytics.technical import (
    MACD_GAP_FULL,
    RULES,
    SIGNAL_COLUMNS,
    SMA_GAP_FULL,
    cross_windows,
    current_signals,
    price_panel_chart,
    rules_frame,
    signal_summary,
    technical_signals,
)
from bentley.config import load_config

SETTINGS = load_config().features.model_copy(update={"sma_windows": [10, 20, 50, 200], "rsi_period": 14})
#: The technical stage's RSI thresholds (params/default.yaml `technical`).
RSI = {"rsi_overbought": 70.0, "rsi_oversold": 30.0}


def neutral(ticker: str = "AAA", n: int = 30, start: str = "2024-01-02") -> tuple[pd.DataFrame, pd.DataFrame]:
    """(features, prices) where no rule fires: SMA 50 below 200, RSI 50, MACD above its
    signal line, adj_close inside the band. Tests change one column to make one rule fire."""
    dates = pd.bdate_range(start, periods=n)
    features = pd.DataFrame(
        {
            "ticker": ticker,
            "date": dates,
            # Short windows cross every other day: the cross rules must ignore them.
            "sma_10": np.where(np.arange(n) % 2 == 0, 90.0, 110.0),
            "sma_20": 100.0,
            "sma_50": 95.0,
            "sma_200": 100.0,
            "rsi_14": 50.0,
            "macd": 0.5,
            "macd_signal": 0.2,
            "macd_hist": 0.3,
            "bb_upper": 110.0,
            "bb_middle": 100.0,
            "bb_lower": 90.0,
        }
    )
    prices = pd.DataFrame({"ticker": ticker, "date": dates, "adj_close": 100.0})
    return features, prices


def fired(signals: pd.DataFrame, rule: str) -> pd.DataFrame:
    return signals[signals["rule"] == rule].reset_index(drop=True)


def test_neutral_features_fire_nothing() -> None:
    features, prices = neutral()
    signals = technical_signals(features, prices, SETTINGS, **RSI)
    assert signals.empty
    assert list(signals.columns) == SIGNAL_COLUMNS


def test_golden_cross_fires_on_the_crossing_date_only() -> None:
    features, prices = neutral()
    sma_50 = np.full(30, 99.0)
    sma_50[10:] = 100.5  # crosses above the 200-day (100) on row 10
    sma_50[15] = 100.0  # touches the line and bounces: not a cross either way
    sma_50[22:] = 99.8  # crosses back below on row 22
    features["sma_50"] = sma_50
    features.loc[:2, ["sma_50", "sma_200"]] = [[101.0, np.nan]] * 3  # warm-up: no signal on row 3
    dates = features["date"]

    signals = technical_signals(features, prices, SETTINGS, **RSI)

    golden, death = fired(signals, "golden_cross"), fired(signals, "death_cross")
    assert golden["date"].tolist() == [dates[10]]
    assert death["date"].tolist() == [dates[22]]
    assert golden.loc[0, "direction"] == 1 and death.loc[0, "direction"] == -1
    assert golden.loc[0, "strength"] == pytest.approx(0.5 / 100 / SMA_GAP_FULL)
    assert death.loc[0, "strength"] == pytest.approx(0.2 / 100 / SMA_GAP_FULL)
    assert (golden.loc[0, "value"], golden.loc[0, "reference"]) == (100.5, 100.0)
    assert set(signals["rule"]) == {"golden_cross", "death_cross"}  # sma_10/sma_20 ignored


def test_cross_strength_is_clipped_to_one() -> None:
    features, prices = neutral()
    features.loc[5:, "sma_50"] = 150.0
    signals = technical_signals(features, prices, SETTINGS, **RSI)
    assert fired(signals, "golden_cross")["strength"].tolist() == [1.0]


def test_cross_windows_are_the_smallest_and_largest_from_50() -> None:
    assert cross_windows(SETTINGS) == (50, 200)
    assert cross_windows(SETTINGS.model_copy(update={"sma_windows": [20, 100, 60, 250, 10]})) == (60, 250)
    assert cross_windows(SETTINGS.model_copy(update={"sma_windows": [10, 20, 50]})) is None


def test_crosses_do_not_leak_between_tickers() -> None:
    """AAA ends with SMA 50 below SMA 200 and BBB starts above it: no cross on BBB's first row."""
    a_features, a_prices = neutral("AAA")
    b_features, b_prices = neutral("BBB")
    b_features["sma_50"] = 105.0
    b_features["rsi_14"] = 80.0  # overbought from its first row: not an entry either
    b_prices["adj_close"] = 120.0  # above the band from its first row
    features = pd.concat([b_features, a_features], ignore_index=True)  # unsorted input
    prices = pd.concat([a_prices, b_prices], ignore_index=True)

    assert technical_signals(features, prices, SETTINGS, **RSI).empty


def test_rsi_overbought_and_oversold_with_documented_strength() -> None:
    features, prices = neutral(n=10)
    features["rsi_14"] = [50, 65, 69, 76, 80, 72, 68, 71, 45, 25]
    dates = features["date"]

    signals = technical_signals(features, prices, SETTINGS, **RSI)

    overbought = fired(signals, "rsi_overbought")
    assert overbought["date"].tolist() == [dates[3], dates[7]]  # entries only, not the stay
    np.testing.assert_allclose(overbought["strength"], [(76 - 70) / 30, (71 - 70) / 30])
    np.testing.assert_allclose(overbought["value"], [76, 71])
    assert overbought["reference"].tolist() == [70.0, 70.0]
    assert overbought["direction"].tolist() == [-1, -1]
    oversold = fired(signals, "rsi_oversold")
    assert oversold["date"].tolist() == [dates[9]]
    assert oversold.loc[0, "strength"] == pytest.approx((30 - 25) / 30)
    assert oversold.loc[0, "direction"] == 1


def test_rsi_thresholds_are_the_arguments() -> None:
    features, prices = neutral(n=10)
    features["rsi_14"] = [50, 65, 69, 76, 80, 72, 68, 71, 45, 25]
    dates = features["date"]

    by_argument = technical_signals(features, prices, SETTINGS, rsi_overbought=75, rsi_oversold=20)
    overbought = fired(by_argument, "rsi_overbought")
    assert overbought["date"].tolist() == [dates[3]]
    assert overbought.loc[0, "strength"] == pytest.approx((76 - 75) / 25)
    assert fired(by_argument, "rsi_oversold").empty
    with pytest.raises(ValueError, match="oversold < overbought"):
        technical_signals(features, prices, SETTINGS, rsi_overbought=20, rsi_oversold=30)


def test_macd_crosses_both_ways() -> None:
    features, prices = neutral(n=8)
    features["macd"] = [0.5, 0.4, 0.1, -0.2, -0.1, 0.3, 0.3, 0.6]
    features["macd_signal"] = [0.2, 0.2, 0.2, 0.0, -0.1, 0.0, 0.1, 0.2]  # row 4: on the line
    prices["adj_close"] = 50.0
    dates = features["date"]

    signals = technical_signals(features, prices, SETTINGS, **RSI)

    bearish, bullish = fired(signals, "macd_bearish_cross"), fired(signals, "macd_bullish_cross")
    assert bearish["date"].tolist() == [dates[2]]
    assert bullish["date"].tolist() == [dates[5]]
    assert bearish.loc[0, "strength"] == pytest.approx(0.1 / 50 / MACD_GAP_FULL)
    assert bullish.loc[0, "strength"] == pytest.approx(min(0.3 / 50 / MACD_GAP_FULL, 1.0))
    assert (bullish.loc[0, "value"], bullish.loc[0, "reference"]) == (0.3, 0.0)
    assert (bearish.loc[0, "direction"], bullish.loc[0, "direction"]) == (-1, 1)


def test_bollinger_breakouts() -> None:
    features, prices = neutral(n=9)
    prices["adj_close"] = [100, 105, 112, 115, 100, 85, 80, 100, 200]
    dates = features["date"]

    signals = technical_signals(features, prices, SETTINGS, **RSI)

    up, down = fired(signals, "bollinger_breakout_up"), fired(signals, "bollinger_breakout_down")
    assert up["date"].tolist() == [dates[2], dates[8]]
    np.testing.assert_allclose(up["strength"], [(112 - 110) / 20, 1.0])  # 4.5 widths, clipped
    assert up.loc[0, "value"] == 112 and up.loc[0, "reference"] == 110
    assert down["date"].tolist() == [dates[5]]
    assert down.loc[0, "strength"] == pytest.approx((90 - 85) / 20)
    assert (up.loc[0, "direction"], down.loc[0, "direction"]) == (1, -1)


def random_market(n: int = 400, seed: int = 11) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two tickers of wandering indicators: every rule fires many times."""
    rng = np.random.default_rng(seed)
    features, prices = [], []
    for ticker in ("AAA", "BBB"):
        f, p = neutral(ticker, n)
        walk = lambda scale: np.cumsum(rng.normal(0, scale, n))  # noqa: E731
        f["sma_200"] = 100 + walk(0.2)
        f["sma_50"] = f["sma_200"] + walk(0.3)
        f["rsi_14"] = np.clip(50 + 30 * np.sin(np.arange(n) / 9) + rng.normal(0, 8, n), 0, 100)
        f["macd"] = walk(0.2)
        f["macd_signal"] = f["macd"].ewm(span=9).mean() + rng.normal(0, 0.05, n)
        p["adj_close"] = 100 + walk(1.0)
        f["bb_middle"] = p["adj_close"].rolling(5, min_periods=1).mean()
        f["bb_upper"], f["bb_lower"] = f["bb_middle"] + 2, f["bb_middle"] - 2
        f.loc[:19, ["sma_50", "rsi_14", "macd", "macd_signal", "bb_upper", "bb_lower"]] = np.nan
        features.append(f)
        prices.append(p)
    return pd.concat(features, ignore_index=True), pd.concat(prices, ignore_index=True)


def test_no_lookahead_signals_do_not_change_when_later_rows_are_removed() -> None:
    features, prices = random_market()
    full = technical_signals(features, prices, SETTINGS, **RSI)
    assert set(full["rule"]) == set(RULES)  # the check covers every rule
    assert full["strength"].between(0, 1).all()

    for cutoff in features["date"].drop_duplicates().iloc[[25, 100, 217, 399]]:
        truncated = technical_signals(
            features[features["date"] <= cutoff], prices[prices["date"] <= cutoff], SETTINGS, **RSI
        )
        pd.testing.assert_frame_equal(truncated, full[full["date"] <= cutoff].reset_index(drop=True))


def test_crosses_alternate_per_ticker() -> None:
    features, prices = random_market()
    signals = technical_signals(features, prices, SETTINGS, **RSI)
    for up, down in (("golden_cross", "death_cross"), ("macd_bullish_cross", "macd_bearish_cross")):
        crosses = signals[signals["rule"].isin([up, down])]
        for _, events in crosses.groupby("ticker"):
            directions = events["direction"].to_numpy()
            assert (directions[1:] != directions[:-1]).all()


def test_duplicate_keys_are_rejected() -> None:
    features, prices = neutral()
    with pytest.raises(ValueError, match="features has duplicate"):
        technical_signals(pd.concat([features, features.iloc[[3]]]), prices, SETTINGS, **RSI)
    with pytest.raises(ValueError, match="prices has duplicate"):
        technical_signals(features, pd.concat([prices, prices.iloc[[3]]]), SETTINGS, **RSI)


def test_current_signals_use_exchange_sessions() -> None:
    signals = pd.DataFrame(
        {
            "ticker": ["AAA", "AAA", "BBB", "BBB", "CCC"],
            # 2024-03-29 is Good Friday: the last session on or before it is 03-28, and the
            # five sessions are 03-22 and 03-25..28.
            "date": pd.to_datetime(["2024-03-21", "2024-03-22", "2024-03-28", "2024-04-01", "2024-03-28"]),
            "rule": ["golden_cross", "rsi_oversold", "death_cross", "rsi_oversold", "rsi_overbought"],
            "direction": [1, 1, -1, 1, -1],
            "strength": [0.5, 0.1, 0.2, 0.3, 0.9],
            "value": 0.0,
            "reference": 0.0,
        }
    )
    current = current_signals(signals, "2024-03-29", lookback_sessions=5)
    assert current[["ticker", "date"]].astype(str).values.tolist() == [
        ["CCC", "2024-03-28"],
        ["BBB", "2024-03-28"],
        ["AAA", "2024-03-22"],
    ]
    assert current_signals(signals, "2024-03-28", lookback_sessions=1)["ticker"].tolist() == ["CCC", "BBB"]
    with pytest.raises(ValueError):
        current_signals(signals, "2024-03-28", lookback_sessions=0)


def test_signal_summary_lists_every_rule() -> None:
    features, prices = neutral(n=10)
    features["rsi_14"] = [50, 65, 69, 76, 80, 72, 68, 71, 45, 25]
    summary = signal_summary(technical_signals(features, prices, SETTINGS, **RSI)).set_index("rule")

    assert summary.index.tolist() == list(RULES)
    assert summary.loc["rsi_overbought", "n_signals"] == 2
    assert summary.loc["rsi_overbought", "direction"] == -1
    assert summary.loc["rsi_oversold", "n_signals"] == 1
    assert summary.loc["golden_cross", "n_signals"] == 0
    assert summary["n_signals"].sum() == 3
    assert rules_frame()["rule"].tolist() == list(RULES)


def test_price_panel_chart_has_titles_labels_and_markers() -> None:
    features, prices = random_market(n=120)
    signals = technical_signals(features, prices, SETTINGS, **RSI)
    fig = price_panel_chart(features, prices, "AAA", SETTINGS, signals)
    try:
        ax_price, ax_rsi, ax_macd = fig.axes
        assert "AAA" in ax_price.get_title()
        assert ax_price.get_ylabel() and ax_rsi.get_ylabel() and ax_macd.get_ylabel()
        assert ax_macd.get_xlabel() == "Session"
        labels = {t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()}
        assert {"SMA 50", "SMA 200", "Bollinger band"} <= labels
        assert any(label.startswith("rsi") for label in labels)
        rule_labels = {rule.replace("_", " ") for rule in RULES}
        markers = [line for ax in fig.axes for line in ax.lines if line.get_label() in rule_labels]
        assert all(line.get_linestyle() == "None" and line.get_marker() in ("^", "v") for line in markers)
        assert sum(len(line.get_xdata()) for line in markers) == (signals["ticker"] == "AAA").sum()
    finally:
        plt.close(fig)


def test_a_reused_panel_draws_exactly_what_a_new_one_draws() -> None:
    """`charts.reused_figure`: after a figure was shown, the next chart clears and reuses it (its tick
    objects are the costly part of a first draw); the image is the same as a new figure's."""
    from bentley import charts, reporting

    features, prices = random_market(n=300)
    signals = technical_signals(features, prices, SETTINGS, **RSI)
    charts._POOL.clear()
    fresh_bbb = reporting.figure_png(price_panel_chart(features, prices, "BBB", SETTINGS, signals))
    charts._POOL.clear()
    first = price_panel_chart(features, prices, "AAA", SETTINGS, signals)
    reporting.figure_png(first)
    assert price_panel_chart(features, prices, "BBB", SETTINGS, signals) is not first, "not shown yet: a new figure"
    first = charts._POOL["price_panel"][0]
    first.bentley_shown = True  # what reporting.show does
    again = price_panel_chart(features, prices, "BBB", SETTINGS, signals)
    assert again is first and reporting.figure_png(again) == fresh_bbb
    assert getattr(again, "bentley_fixed_layout", False), "drawn once: fixed margins, no tight-bbox pass"


def test_chart_sentence_reads_the_panel() -> None:
    from bentley.analytics.technical import chart_sentence

    features, prices = random_market(n=300)
    signals = technical_signals(features, prices, SETTINGS, **RSI)
    text = chart_sentence(features, prices, signals, "AAA", SETTINGS)
    assert text.startswith("On ") and "AAA closed at" in text and "50-day average" in text and "RSI" in text
    assert "latest signal is" in text and "in the window" in text
