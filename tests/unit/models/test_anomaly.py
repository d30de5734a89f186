"""Anomaly detection: robust z-scores checked by hand, no lookahead in the rolling window, the
IsolationForest finding a planted outlier deterministically, and the combined table's shape."""

from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd
import pytest

from bentley.models import anomaly
from bentley.models.anomaly import ANOMALY_COLUMNS, MAD_SCALE

matplotlib.use("Agg")

COLUMNS = ["ret_1d", "volume_z", "range_pct"]
#: detect_anomalies' settings (params/default.yaml `anomaly`), with a 60-session window for short series.
DETECT = {"z_threshold": 4.0, "contamination": 0.01, "seed": 0, "window": 60, "refit_sessions": 126}


# --------------------------------------------------------------------------------------------
# Synthetic inputs


def _inputs(values: dict[str, list[float] | np.ndarray], ticker: str = "AAA") -> pd.DataFrame:
    n = len(next(iter(values.values())))
    frame = pd.DataFrame({"ticker": ticker, "date": pd.bdate_range("2024-01-01", periods=n)})
    for name, column in values.items():
        frame[name] = np.asarray(column, dtype=np.float64)
    return frame


def _normal_inputs(n: int, rng: np.random.Generator, ticker: str = "AAA") -> pd.DataFrame:
    return _inputs(
        {
            "ret_1d": rng.normal(0.0, 0.01, n),
            "volume_z": rng.normal(0.0, 1.0, n),
            "range_pct": np.abs(rng.normal(0.02, 0.005, n)),
        },
        ticker,
    )


def _market(n: int = 300, seed: int = 1, outlier: tuple[str, int] | None = ("BBB", 250)):
    """(features, prices) for two tickers; `outlier` plants a crash day with huge volume/range."""
    rng = np.random.default_rng(seed)
    features, prices = [], []
    dates = pd.bdate_range("2023-01-02", periods=n)
    for ticker in ("AAA", "BBB"):
        ret = rng.normal(0.0, 0.01, n)
        volume_z = rng.normal(0.0, 1.0, n)
        range_pct = np.abs(rng.normal(0.02, 0.004, n))
        if outlier is not None and ticker == outlier[0]:
            ret[outlier[1]], volume_z[outlier[1]], range_pct[outlier[1]] = -0.30, 15.0, 0.35
        ret[0] = np.nan  # the first return of a ticker is a warm-up NaN
        volume_z[:3] = np.nan
        adj_close = 100.0 * np.cumprod(1.0 + np.nan_to_num(ret))
        close = adj_close * 1.25  # a dividend-style adjustment factor of 0.8
        features.append(
            pd.DataFrame({"ticker": ticker, "date": dates, "ret_1d": ret, "ret_5d": 0.0, "volume_z_21": volume_z})
        )
        prices.append(
            pd.DataFrame(
                {
                    "ticker": ticker,
                    "date": dates,
                    "high": close * (1.0 + range_pct / 2),
                    "low": close * (1.0 - range_pct / 2),
                    "close": close,
                    "adj_close": adj_close,
                }
            )
        )
    return pd.concat(features, ignore_index=True), pd.concat(prices, ignore_index=True)


# --------------------------------------------------------------------------------------------
# anomaly_inputs


def test_anomaly_inputs_range_is_adjusted_and_incomplete_rows_dropped() -> None:
    dates = pd.to_datetime(["2024-01-02", "2024-01-03", "2024-01-04"])
    features = pd.DataFrame(
        {"ticker": "AAA", "date": dates, "ret_1d": [np.nan, 0.01, 0.02], "volume_z_21": [0.5, 1.0, 2.0]}
    )
    prices = pd.DataFrame(
        {
            "ticker": "AAA",
            "date": dates,
            "high": [110.0, 110.0, 104.0],
            "low": [90.0, 90.0, 100.0],
            "close": [100.0, 100.0, 0.0],  # a zero close has no adjustment factor: dropped
            "adj_close": [50.0, 50.0, 51.0],
        }
    )
    out = anomaly.anomaly_inputs(features, prices)
    assert list(out.columns) == ["ticker", "date", "ret_1d", "volume_z", "range_pct"]
    assert len(out) == 1
    row = out.iloc[0]
    assert row["date"] == dates[1]
    assert row["volume_z"] == 1.0
    assert row["range_pct"] == pytest.approx((55.0 - 45.0) / 50.0)


def test_anomaly_inputs_needs_one_volume_z_column() -> None:
    features = pd.DataFrame({"ticker": ["A"], "date": [pd.Timestamp("2024-01-02")], "ret_1d": [0.0]})
    with pytest.raises(ValueError, match="volume_z"):
        anomaly.anomaly_inputs(features, pd.DataFrame())


# --------------------------------------------------------------------------------------------
# Robust z-scores


def test_robust_z_known_median_and_mad() -> None:
    # median 3, |x - 3| = [2, 1, 0, 1, 97] -> MAD 1
    inputs = _inputs({"x": [1.0, 2.0, 3.0, 4.0, 100.0]})
    z = anomaly.robust_zscores(inputs, ["x"])["x"].to_numpy()
    expected = (np.array([1.0, 2.0, 3.0, 4.0, 100.0]) - 3.0) / (MAD_SCALE * 1.0)
    np.testing.assert_allclose(z, expected, rtol=1e-12)


def test_robust_z_is_per_ticker() -> None:
    a = _inputs({"x": [1.0, 2.0, 3.0, 4.0, 100.0]}, "AAA")
    b = _inputs({"x": [10.0, 20.0, 30.0, 40.0, 50.0]}, "BBB")  # median 30, MAD 10
    inputs = pd.concat([b, a], ignore_index=True).sample(frac=1.0, random_state=3)
    z = anomaly.robust_zscores(inputs, ["x"])
    assert z.index.equals(inputs.index)
    by_b = inputs["ticker"] == "BBB"
    np.testing.assert_allclose(z.loc[by_b, "x"], (inputs.loc[by_b, "x"] - 30.0) / (MAD_SCALE * 10.0), rtol=1e-12)


def test_planted_outlier_gets_a_large_robust_z() -> None:
    rng = np.random.default_rng(0)
    ret = rng.choice([-0.01, 0.01], size=200) * rng.uniform(0.5, 1.0, size=200)
    ret[120] = 0.25
    z = anomaly.robust_zscores(_inputs({"ret_1d": ret}), ["ret_1d"])["ret_1d"]
    assert z.iloc[120] > 10.0
    others = z.drop(index=120).abs()
    assert others.max() < 4.0


def test_mad_zero_gives_nan_not_inf() -> None:
    values = [0.0] * 10 + [5.0]
    inputs = _inputs({"x": values})
    full = anomaly.robust_zscores(inputs, ["x"])["x"]
    rolling = anomaly.robust_zscores(inputs, ["x"], window=5)["x"]
    for z in (full, rolling):
        assert not np.isinf(z.to_numpy()).any()
    assert full.isna().all()
    assert rolling.isna().all()


def test_rolling_window_matches_a_hand_computation() -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(size=40)
    z = anomaly.robust_zscores(_inputs({"x": x}), ["x"], window=10)["x"].to_numpy()
    assert np.isnan(z[:9]).all()  # full windows only by default
    for t in (9, 20, 39):
        past = x[t - 9 : t + 1]
        median = np.median(past)
        mad = np.median(np.abs(past - median))
        assert z[t] == pytest.approx((x[t] - median) / (MAD_SCALE * mad), rel=1e-12)


def test_rolling_min_periods_uses_the_rows_available() -> None:
    x = np.array([1.0, 2.0, 4.0, 7.0, 11.0, 16.0])
    z = anomaly.robust_zscores(_inputs({"x": x}), ["x"], window=4, min_periods=3)["x"].to_numpy()
    assert np.isnan(z[:2]).all()
    past = x[:3]
    median, mad = np.median(past), np.median(np.abs(past - np.median(past)))
    assert z[2] == pytest.approx((x[2] - median) / (MAD_SCALE * mad))


def test_rolling_window_has_no_lookahead() -> None:
    rng = np.random.default_rng(7)
    inputs = pd.concat([_normal_inputs(120, rng, "AAA"), _normal_inputs(120, rng, "BBB")], ignore_index=True)
    before = anomaly.robust_zscores(inputs, COLUMNS, window=30)
    cut = inputs["date"].iloc[80]
    changed = inputs.copy()
    later = changed["date"] > cut
    changed.loc[later, COLUMNS] = rng.normal(50.0, 30.0, size=(int(later.sum()), 3))
    after = anomaly.robust_zscores(changed, COLUMNS, window=30)
    pd.testing.assert_frame_equal(before[~later], after[~later])
    assert not before[later].equals(after[later])  # the change did reach the later rows


def test_rolling_ignores_row_order() -> None:
    rng = np.random.default_rng(8)
    inputs = _normal_inputs(80, rng)
    shuffled = inputs.sample(frac=1.0, random_state=1)
    z = anomaly.robust_zscores(inputs, COLUMNS, window=20)
    z_shuffled = anomaly.robust_zscores(shuffled, COLUMNS, window=20)
    pd.testing.assert_frame_equal(z, z_shuffled.loc[z.index])


# --------------------------------------------------------------------------------------------
# IsolationForest


#: Small forests for quick tests: 25 trees, a new forest every 42 weekdays on the 100 sessions before.
FOREST = {"window": 100, "refit_sessions": 42, "n_estimators": 25}


def _forest(inputs: pd.DataFrame, seed: int = 0, **settings: int | None) -> pd.DataFrame:
    return anomaly.isolation_forest_scores(inputs, COLUMNS, contamination=0.01, seed=seed, **{**FOREST, **settings})


def _block_starts(dates: pd.Series, refit_sessions: int) -> np.ndarray:
    """Whether each date opens a refit block (weekdays counted from the module's epoch)."""
    days = np.busday_count(anomaly.REFIT_EPOCH, dates.to_numpy(dtype="datetime64[D]"))
    return days % refit_sessions == 0


def _with_planted_outlier() -> tuple[pd.DataFrame, int]:
    rng = np.random.default_rng(11)
    inputs = _normal_inputs(501, rng)
    planted = 321
    inputs.loc[planted, COLUMNS] = [0.25, 12.0, 0.30]
    return inputs, planted


def test_isolation_forest_flags_a_planted_outlier() -> None:
    inputs, planted = _with_planted_outlier()
    scores = _forest(inputs)
    assert list(scores.columns) == ["if_score", "if_flag"]
    assert scores.index.equals(inputs.index)
    assert scores["if_flag"].dtype == bool
    assert scores["if_flag"].iloc[planted]
    assert scores["if_score"].idxmax() == planted
    scored = int(scores["if_score"].notna().sum())
    assert scores["if_flag"].sum() <= 0.03 * scored  # about 1%, each block judged by the threshold of its past


def test_isolation_forest_is_deterministic_for_a_seed() -> None:
    inputs, _ = _with_planted_outlier()
    pd.testing.assert_frame_equal(_forest(inputs, seed=42), _forest(inputs, seed=42), check_exact=True)


def test_isolation_forest_warm_up_and_incomplete_rows_are_unscored() -> None:
    inputs, _ = _with_planted_outlier()
    inputs.loc[400, "volume_z"] = np.nan
    scores = _forest(inputs)
    assert np.isnan(scores.loc[400, "if_score"]) and not scores.loc[400, "if_flag"]
    first = int(scores["if_score"].first_valid_index())
    assert first >= FOREST["window"]  # a full window of sessions before the first forest
    assert _block_starts(inputs["date"], FOREST["refit_sessions"])[first]  # scoring starts at a refit
    assert scores.loc[: first - 1, "if_score"].isna().all() and not scores.loc[: first - 1, "if_flag"].any()
    assert scores.loc[first:].drop(index=400)["if_score"].notna().all()


def test_isolation_forest_without_window_uses_every_earlier_session() -> None:
    inputs, planted = _with_planted_outlier()
    scores = _forest(inputs, window=None)
    starts = np.flatnonzero(_block_starts(inputs["date"], FOREST["refit_sessions"]))
    assert scores.loc[: starts[0] - 1, "if_score"].isna().all()  # nothing before the first refit date
    assert scores.loc[starts[0] :, "if_score"].notna().all()
    assert scores["if_flag"].iloc[planted]


def _two_tickers(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.concat([_normal_inputs(n, rng, "AAA"), _normal_inputs(n, rng, "BBB")], ignore_index=True)


def test_isolation_forest_has_no_lookahead() -> None:
    """Scores up to a date are bit-identical whether later rows are changed, appended or absent."""
    full = _two_tickers(400, seed=7)
    cut = full["date"].iloc[260]
    later = full["date"] > cut
    before = _forest(full)
    assert before.loc[~later, "if_score"].notna().sum() > 200  # the comparison covers scored rows

    changed = full.copy()
    changed.loc[later, COLUMNS] = np.random.default_rng(1).normal(50.0, 30.0, size=(int(later.sum()), 3))
    after = _forest(changed)
    pd.testing.assert_frame_equal(before[~later], after[~later], check_exact=True)
    assert not before[later].equals(after[later])  # the change did reach the later rows

    truncated = _forest(full[~later])  # the same history, run on the day of the cut
    pd.testing.assert_frame_equal(before[~later], truncated, check_exact=True)


def test_isolation_forest_ignores_row_order_and_a_later_window_start() -> None:
    full = _two_tickers(400, seed=9)
    scores = _forest(full)
    shuffled = full.sample(frac=1.0, random_state=2)
    pd.testing.assert_frame_equal(scores, _forest(shuffled).loc[scores.index], check_exact=True)

    # A history window that starts 30 sessions later keeps the refit dates (they are counted from
    # a fixed epoch), so every block that still has a full window before it scores the same.
    start = full["date"].drop_duplicates().iloc[30]
    moved = _forest(full[full["date"] >= start])
    both = moved["if_score"].notna()
    assert both.sum() > 300
    pd.testing.assert_frame_equal(moved[both], scores.loc[moved.index[both]], check_exact=True)


def test_isolation_forest_scores_a_new_ticker_once_it_has_history() -> None:
    inputs = _two_tickers(400, seed=3)
    dates = inputs["date"].drop_duplicates().reset_index(drop=True)
    listed = dates.iloc[250]
    newcomer = _normal_inputs(int((dates >= listed).sum()), np.random.default_rng(4), "CCC")
    newcomer["date"] = dates[dates >= listed].to_numpy()
    scores = _forest(pd.concat([inputs, newcomer], ignore_index=True))
    ccc = scores.iloc[len(inputs) :]
    next_refit = dates[(dates > listed) & _block_starts(dates, FOREST["refit_sessions"])].iloc[0]
    first_scored = newcomer.loc[ccc["if_score"].first_valid_index() - len(inputs), "date"]
    assert first_scored == next_refit  # no past to scale it by until the first forest that saw it


# --------------------------------------------------------------------------------------------
# Combined table


def detect(features: pd.DataFrame, prices: pd.DataFrame, **overrides: object) -> pd.DataFrame:
    return anomaly.detect_anomalies(features, prices, **{**DETECT, **overrides})  # type: ignore[arg-type]


def test_detect_anomalies_table() -> None:
    features, prices = _market()
    table = detect(features, prices)
    inputs = anomaly.anomaly_inputs(features, prices)
    assert list(table.columns) == list(ANOMALY_COLUMNS)
    assert len(table) == len(inputs) == 2 * (300 - 3)
    assert not table.duplicated(["ticker", "date"]).any()

    pd.testing.assert_series_equal(table["flag"], table["z_flag"] | table["if_flag"], check_names=False)
    expected_method = np.where(
        table["z_flag"] & table["if_flag"],
        "both",
        np.where(table["z_flag"], "robust_z", np.where(table["if_flag"], "isolation_forest", "none")),
    )
    assert (table["method"].to_numpy() == expected_method).all()
    with np.errstate(invalid="ignore"):
        assert (table["z_flag"] == (table["max_abs_z"] >= 4.0)).all()
    assert not np.isinf(table[["z_ret", "z_volume", "z_range", "max_abs_z"]].to_numpy()).any()

    crash = table[(table["ticker"] == "BBB") & (table["date"] == features["date"].iloc[250])]
    assert len(crash) == 1
    assert crash["method"].iloc[0] == "both"
    assert crash["max_abs_z"].iloc[0] > 10.0

    again = detect(features, prices)
    pd.testing.assert_frame_equal(table, again)


def test_detect_anomalies_warm_up_has_no_z_flag() -> None:
    features, prices = _market()
    table = detect(features, prices)
    first = table.groupby("ticker").head(59)
    assert first[["z_ret", "z_volume", "z_range", "max_abs_z"]].isna().all().all()
    assert not first["z_flag"].any()


def test_top_anomalies_ordering() -> None:
    features, prices = _market()
    table = detect(features, prices, contamination=0.02)
    top = anomaly.top_anomalies(table, n=5)
    assert 0 < len(top) <= 5
    assert {"ticker", "date", "ret_1d", "volume_z", "range_pct", "max_abs_z", "if_score"} <= set(top.columns)
    assert top["ticker"].iloc[0] == "BBB"
    assert top["date"].iloc[0] == features["date"].iloc[250]
    z = top["max_abs_z"].dropna().to_numpy()
    assert (np.diff(z) <= 0).all()
    flagged_keys = set(map(tuple, table.loc[table["flag"], ["ticker", "date"]].to_numpy()))
    assert set(map(tuple, top[["ticker", "date"]].to_numpy())) <= flagged_keys


def test_top_anomalies_breaks_ties_by_if_score() -> None:
    table = pd.DataFrame(
        {
            "ticker": ["A", "B", "C", "D"],
            "date": pd.to_datetime(["2024-01-02"] * 4),
            "ret_1d": 0.0,
            "volume_z": 0.0,
            "range_pct": 0.0,
            "z_ret": 0.0,
            "z_volume": 0.0,
            "z_range": 0.0,
            "max_abs_z": [5.0, 5.0, np.nan, 9.0],
            "if_score": [0.4, 0.7, 0.9, 0.1],
            "flag": [True, True, True, False],
            "method": ["robust_z", "both", "isolation_forest", "none"],
        }
    )
    top = anomaly.top_anomalies(table)
    assert top["ticker"].tolist() == ["B", "A", "C"]


def test_anomaly_chart_marks_flagged_days() -> None:
    import matplotlib.pyplot as plt

    features, prices = _market()
    table = detect(features, prices)
    fig = anomaly.anomaly_chart(prices, table, "BBB")
    ax = fig.axes[0]
    assert "BBB" in ax.get_title()
    assert ax.get_xlabel() and ax.get_ylabel()
    markers = ax.collections[0]
    n_flagged = int(table.loc[table["ticker"] == "BBB", "flag"].sum())
    assert len(markers.get_offsets()) == n_flagged >= 1
    plt.close(fig)


def test_detect_anomalies_has_no_lookahead() -> None:
    """Every column of a row, both detectors included, ignores prices and features after its date."""
    features, prices = _market(n=300)
    settings = {"window": 60, "refit_sessions": 42, "contamination": 0.02, "seed": 3}
    cut = features["date"].iloc[200]
    before = detect(features, prices, **settings)

    rng = np.random.default_rng(5)
    changed_features, changed_prices = features.copy(), prices.copy()
    later_f, later_p = features["date"] > cut, prices["date"] > cut
    changed_features.loc[later_f, "ret_1d"] = rng.normal(0.0, 0.2, int(later_f.sum()))
    changed_features.loc[later_f, "volume_z_21"] = rng.normal(0.0, 5.0, int(later_f.sum()))
    changed_prices.loc[later_p, "high"] *= 1.5
    after = detect(changed_features, changed_prices, **settings)

    earlier = before["date"] <= cut
    assert before.loc[earlier, "if_score"].notna().sum() > 100
    pd.testing.assert_frame_equal(before[earlier], after[earlier], check_exact=True)
    assert not before[~earlier].equals(after[~earlier])  # the change did reach the later rows


def test_the_stage_reads_only_the_feature_columns_the_detectors_use():
    available = ["ticker", "date", "ret_1d", "rsi_14", "volume_z_21", "sma_20", "obv"]
    assert anomaly.feature_columns(available) == ["ticker", "date", "ret_1d", "volume_z_21"]
    with pytest.raises(ValueError, match="exactly one volume_z"):
        anomaly.feature_columns([*available, "volume_z_63"])
