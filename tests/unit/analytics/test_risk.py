"""Risk metrics: empyrical parity (gaps, late listings, a first-day loss), hand-checked formulas,
edge cases that must not crash, and the portfolio / stress / rolling helpers on tiny inputs."""

from __future__ import annotations

import math
import statistics
import warnings

import empyrical as ep
import matplotlib
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from bentley.analytics import risk
from bentley.analytics.risk import METRICS, WINDOW_COLUMNS, RiskWarning
from bentley.config import MinObservations

matplotlib.use("Agg")

RTOL = 1e-9

# empyrical-reloaded aligns series with pd.concat and trips pandas 3's future-default notice
pytestmark = pytest.mark.filterwarnings("ignore:Sorting by default when concatenating")
RF_ANNUAL = 0.04
RF = (1 + RF_ANNUAL) ** (1 / 252) - 1
#: The defaults of params/default.yaml `risk.min_observations`, spelled out so the tests read alone.
MINIMUMS = MinObservations(annualized=63, var=63, estimate=63, drawdown=2)


# --------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def market() -> tuple[pd.DataFrame, pd.Series]:
    """Five tickers over 750 sessions of fat-tailed returns, with the awkward cases built in.

    GAPS has NaN gaps (single days and a run), FIRSTLOSS opens with -12%, LATE lists after
    300 sessions (shorter than the frame), DELIST stops 100 sessions early. The benchmark has
    gaps of its own and dates the tickers do not have.
    """
    rng = np.random.default_rng(20261127)
    n = 750
    dates = pd.bdate_range("2021-01-04", periods=n, name="date")
    bench = pd.Series(rng.standard_t(4, n) * 0.008 + 0.0003, index=dates, name="BENCH")
    columns = {}
    for k, name in enumerate(["PLAIN", "GAPS", "FIRSTLOSS", "LATE", "DELIST"]):
        noise = rng.standard_t(3 + k, n) * rng.uniform(0.006, 0.02)
        columns[name] = rng.uniform(0.3, 1.5) * bench.to_numpy() + noise + rng.normal(0, 0.0004)
    returns = pd.DataFrame(columns, index=dates)
    returns.columns.name = "ticker"
    returns.iloc[[3, 4, 90, 91, 92, 93, 400, 749], 1] = np.nan
    returns.iloc[0, 2] = -0.12
    returns.iloc[:300, 3] = np.nan
    returns.iloc[-100:, 4] = np.nan
    bench.iloc[[10, 11, 500]] = np.nan
    extra = pd.Series([0.01, -0.02], index=pd.to_datetime(["2020-12-30", "2020-12-31"]))
    bench = pd.concat([extra, bench]).rename("BENCH")
    return returns, bench


@pytest.fixture(scope="module")
def table(market: tuple[pd.DataFrame, pd.Series]) -> pd.DataFrame:
    returns, bench = market
    with warnings.catch_warnings():
        warnings.simplefilter("error", RiskWarning)  # well-behaved data: no warning at all
        return risk.risk_metrics(returns, bench, RF_ANNUAL, garch=False)


def windowed(returns: pd.DataFrame, table: pd.DataFrame, scope: str) -> pd.Series:
    """The scope's returns cut to its window: what empyrical is given as the reference."""
    row = table.loc[scope]
    return returns[scope].loc[row["window_start"] : row["window_end"]]


def empyrical_reference(s: pd.Series, bench: pd.Series) -> dict[str, float]:
    alpha, beta = ep.alpha_beta(s, bench, risk_free=RF)
    observed = s.dropna()  # empyrical's VaR is np.percentile: NaN as soon as one value is NaN
    return {
        "annual_return": ep.annual_return(s),
        "cumulative_return": ep.cum_returns_final(s),
        "annual_volatility": ep.annual_volatility(s),
        "downside_risk": ep.downside_risk(s, required_return=0),
        "max_drawdown": ep.max_drawdown(s),
        "sharpe_ratio": ep.sharpe_ratio(s, risk_free=RF),
        "sortino_ratio": ep.sortino_ratio(s, required_return=0),
        "calmar_ratio": ep.calmar_ratio(s),
        "omega_ratio": ep.omega_ratio(s, risk_free=0.0, required_return=0.0),
        "tail_ratio": ep.tail_ratio(s),
        "var_95_historical": ep.value_at_risk(observed, cutoff=0.05),
        "cvar_95_historical": ep.conditional_value_at_risk(s, cutoff=0.05),
        "var_99_historical": ep.value_at_risk(observed, cutoff=0.01),
        "cvar_99_historical": ep.conditional_value_at_risk(s, cutoff=0.01),
        "beta": beta,
        "alpha": alpha,
    }


EMPYRICAL_METRICS = tuple(empyrical_reference(pd.Series([0.01, -0.01, 0.02]), pd.Series([0.0, 0.01, -0.01])))


# --------------------------------------------------------------------------------------------
# Parity with empyrical


def test_table_shape(table: pd.DataFrame, market: tuple[pd.DataFrame, pd.Series]) -> None:
    returns, _ = market
    assert list(table.columns) == [*METRICS, *WINDOW_COLUMNS]
    assert list(table.index) == list(returns.columns)
    assert len(METRICS) == 21 and len(set(METRICS)) == 21
    assert set(EMPYRICAL_METRICS) <= set(METRICS)
    assert table["n_obs"].to_dict() == returns.notna().sum().to_dict()
    assert table.loc["LATE", "window_start"] == returns.index[300]
    assert table.loc["DELIST", "window_end"] == returns.index[-101]
    assert table.loc["GAPS", "window_end"] == returns.index[-2]
    assert table["var_95_garch"].isna().all()  # garch=False skips the fits


@pytest.mark.parametrize("metric", EMPYRICAL_METRICS)
def test_matches_empyrical(metric: str, table: pd.DataFrame, market: tuple[pd.DataFrame, pd.Series]) -> None:
    returns, bench = market
    for scope in returns.columns:
        expected = empyrical_reference(windowed(returns, table, scope), bench)[metric]
        assert np.isfinite(expected), (scope, metric)
        np.testing.assert_allclose(table.loc[scope, metric], expected, rtol=RTOL, err_msg=f"{scope} {metric}")


def test_gap_free_columns_match_empyrical_on_the_whole_column(
    table: pd.DataFrame, market: tuple[pd.DataFrame, pd.Series]
) -> None:
    """Internal gaps only (window = whole frame): no cutting needed, empyrical's nan-aware sums agree."""
    returns, bench = market
    s = returns["GAPS"].iloc[:-1]  # the last row is a gap, trimmed by the window
    assert s.isna().any()
    np.testing.assert_allclose(table.loc["GAPS", "sharpe_ratio"], ep.sharpe_ratio(s, risk_free=RF), rtol=RTOL)
    np.testing.assert_allclose(table.loc["GAPS", "annual_return"], ep.annual_return(s), rtol=RTOL)
    np.testing.assert_allclose(table.loc["GAPS", "beta"], ep.beta(s, bench), rtol=RTOL)


def test_var_sign_and_cvar_below_var(table: pd.DataFrame) -> None:
    for level in ("95", "99"):
        var, cvar = table[f"var_{level}_historical"], table[f"cvar_{level}_historical"]
        assert (var < 0).all()
        assert (cvar <= var).all()
    assert (table["var_99_historical"] <= table["var_95_historical"]).all()
    assert (table["var_95_parametric"] < 0).all()
    assert (table["var_95_cornish_fisher"] < 0).all()
    assert (table["max_drawdown"] < 0).all()


def test_first_day_loss_is_in_max_drawdown(table: pd.DataFrame) -> None:
    assert table.loc["FIRSTLOSS", "max_drawdown"] <= -0.12
    tiny = risk.risk_metrics(pd.DataFrame({"X": [-0.1, 0.05]}), pd.Series([0.0, 0.01]), 0.0, garch=False)
    assert tiny.loc["X", "max_drawdown"] == pytest.approx(-0.1, rel=1e-12)
    assert tiny.loc["X", "cumulative_return"] == pytest.approx(0.9 * 1.05 - 1, rel=1e-12)


def test_skew_and_excess_kurtosis_are_scipy_bias_corrected(
    table: pd.DataFrame, market: tuple[pd.DataFrame, pd.Series]
) -> None:
    returns, _ = market
    for scope in returns.columns:
        observed = returns[scope].dropna().to_numpy()
        np.testing.assert_allclose(table.loc[scope, "skew"], stats.skew(observed, bias=False), rtol=RTOL)
        np.testing.assert_allclose(
            table.loc[scope, "kurtosis"], stats.kurtosis(observed, fisher=True, bias=False), rtol=RTOL
        )


def test_parametric_and_cornish_fisher_var_by_hand(table: pd.DataFrame, market: tuple[pd.DataFrame, pd.Series]) -> None:
    returns, _ = market
    z = stats.norm.ppf(0.05)
    for scope in returns.columns:
        r = returns[scope].dropna().to_numpy()
        mu, sd = r.mean(), r.std(ddof=1)
        s, k = stats.skew(r, bias=False), stats.kurtosis(r, bias=False)
        z_cf = z + (z**2 - 1) * s / 6 + (z**3 - 3 * z) * k / 24 - (2 * z**3 - 5 * z) * s**2 / 36
        np.testing.assert_allclose(table.loc[scope, "var_95_parametric"], mu + z * sd, rtol=RTOL)
        np.testing.assert_allclose(table.loc[scope, "var_95_cornish_fisher"], mu + z_cf * sd, rtol=RTOL)


def test_vectorized_equals_one_column_at_a_time(table: pd.DataFrame, market: tuple[pd.DataFrame, pd.Series]) -> None:
    """Scopes never leak into each other: each column alone gives the same row."""
    returns, bench = market
    for scope in returns.columns:
        alone = risk.risk_metrics(returns[[scope]], bench, RF_ANNUAL, garch=False)
        pd.testing.assert_series_equal(
            alone.loc[scope, list(METRICS)].astype(float),
            table.loc[scope, list(METRICS)].astype(float),
            rtol=1e-12,
        )


# --------------------------------------------------------------------------------------------
# GARCH


def test_garch_var_on_500_days_is_finite_and_negative() -> None:
    rng = np.random.default_rng(3)
    dates = pd.bdate_range("2022-01-03", periods=500)
    returns = pd.DataFrame({"G": rng.standard_t(5, 500) * 0.01}, index=dates)
    bench = pd.Series(rng.normal(0, 0.01, 500), index=dates)
    out = risk.risk_metrics(returns, bench, RF_ANNUAL, garch=True)
    value = out.loc["G", "var_95_garch"]
    assert np.isfinite(value) and value < 0
    assert value == pytest.approx(risk.garch_var(returns["G"]), rel=1e-12)


def test_garch_var_short_series_is_nan_with_a_warning() -> None:
    dates = pd.bdate_range("2022-01-03", periods=20)
    returns = pd.DataFrame({"SHORTY": np.linspace(-0.02, 0.02, 20)}, index=dates)
    with pytest.warns(RiskWarning, match="SHORTY"):
        out = risk.risk_metrics(returns, pd.Series(np.linspace(0.01, -0.01, 20), index=dates), 0.0, garch=True)
    assert np.isnan(out.loc["SHORTY", "var_95_garch"])
    with pytest.warns(RiskWarning, match="SHORTY"):
        assert np.isnan(risk.garch_var(returns["SHORTY"]))


def test_garch_fit_failure_is_nan_with_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(values: np.ndarray) -> float:
        raise RuntimeError("optimizer did not converge (flag 4)")

    monkeypatch.setattr(risk, "_garch_fit", broken)
    rng = np.random.default_rng(5)
    dates = pd.bdate_range("2022-01-03", periods=150)
    returns = pd.DataFrame({"FAILS": rng.normal(0, 0.01, 150)}, index=dates)
    with pytest.warns(RiskWarning, match="GARCH fit failed.*FAILS"):
        out = risk.risk_metrics(returns, pd.Series(rng.normal(0, 0.01, 150), index=dates), 0.0, garch=True)
    assert np.isnan(out.loc["FAILS", "var_95_garch"])


# --------------------------------------------------------------------------------------------
# Edge cases: never crash, NaN (not inf) with a warning naming the scope


def _no_inf(frame: pd.DataFrame) -> None:
    values = frame[list(METRICS)].to_numpy(dtype=float)
    assert not np.isinf(values).any()


def test_zero_variance_gives_nan_and_names_the_scope() -> None:
    dates = pd.bdate_range("2024-01-01", periods=30)
    rng = np.random.default_rng(1)
    returns = pd.DataFrame({"FLAT": 0.001, "MOVES": rng.normal(0, 0.01, 30)}, index=dates)
    bench = pd.Series(rng.normal(0, 0.01, 30), index=dates)
    with pytest.warns(RiskWarning) as record:
        out = risk.risk_metrics(returns, bench, RF_ANNUAL, garch=False)
    messages = [str(w.message) for w in record]
    assert any("zero variance" in m and "FLAT" in m and "MOVES" not in m for m in messages), messages
    assert any("no losing day" in m and "FLAT" in m for m in messages), messages  # sortino: 0 downside
    for metric in ("sharpe_ratio", "skew", "kurtosis", "var_95_cornish_fisher", "sortino_ratio"):
        assert np.isnan(out.loc["FLAT", metric]), metric
    assert out.loc["FLAT", "annual_volatility"] == pytest.approx(0.0, abs=1e-15)
    assert np.isfinite(out.loc["MOVES", "sharpe_ratio"])
    _no_inf(out)


def test_constant_benchmark_gives_nan_beta_with_a_warning() -> None:
    dates = pd.bdate_range("2024-01-01", periods=10)
    returns = pd.DataFrame({"A": np.linspace(-0.01, 0.01, 10)}, index=dates)
    with pytest.warns(RiskWarning, match="benchmark has zero variance.*A"):
        out = risk.risk_metrics(returns, pd.Series(0.002, index=dates), 0.0, garch=False)
    assert np.isnan(out.loc["A", "beta"]) and np.isnan(out.loc["A", "alpha"])


def test_awkward_columns_do_not_crash() -> None:
    dates = pd.bdate_range("2024-01-01", periods=8)
    returns = pd.DataFrame(
        {
            "EMPTY": np.nan,
            "ONE": [np.nan] * 5 + [0.02, np.nan, np.nan],
            "TWO": [np.nan] * 6 + [0.01, -0.03],
            "ALLUP": [0.01, 0.02, 0.01, 0.03, 0.02, 0.01, 0.02, 0.01],
        },
        index=dates,
    )
    bench = pd.Series([0.01, -0.01, 0.02, -0.02, 0.01, 0.0, 0.01, -0.01], index=dates)
    with pytest.warns(RiskWarning) as record:
        out = risk.risk_metrics(returns, bench, RF_ANNUAL, garch=True)
    messages = " | ".join(str(w.message) for w in record)
    assert "no returns" in messages and "EMPTY" in messages
    assert "no losing day" in messages and "ALLUP" in messages
    _no_inf(out)
    assert out.loc["EMPTY", list(METRICS)].isna().all()
    assert out.loc["EMPTY", "n_obs"] == 0 and pd.isna(out.loc["EMPTY", "window_start"])
    one = out.loc["ONE"]
    assert one["n_obs"] == 1 and one["window_start"] == one["window_end"] == dates[5]
    assert one["cumulative_return"] == pytest.approx(0.02)
    assert np.isnan(one["annual_volatility"]) and np.isnan(one["sharpe_ratio"]) and np.isnan(one["beta"])
    assert one["max_drawdown"] == 0.0
    two = out.loc["TWO"]
    assert two["max_drawdown"] == pytest.approx(1.01 * 0.97 / 1.01 - 1)
    assert two["annual_volatility"] == pytest.approx(np.std([0.01, -0.03], ddof=1) * np.sqrt(252))
    assert np.isnan(two["skew"]) and np.isnan(two["kurtosis"])
    assert out.loc["ALLUP", "max_drawdown"] == 0.0
    assert np.isnan(out.loc["ALLUP", "calmar_ratio"]) and np.isnan(out.loc["ALLUP", "omega_ratio"])
    assert out["var_95_garch"].isna().all()  # all shorter than 100 returns


def test_empty_frame_and_unordered_dates() -> None:
    with pytest.warns(RiskWarning, match="no returns.*A"):
        empty = risk.risk_metrics(
            pd.DataFrame({"A": pd.Series([], dtype=float)}), pd.Series([], dtype=float), 0.0, garch=False
        )
    assert empty.loc["A", list(METRICS)].isna().all()
    dates = pd.bdate_range("2024-01-01", periods=3)
    shuffled = pd.DataFrame({"A": [0.05, -0.1, 0.02]}, index=dates[[2, 0, 1]])
    out = risk.risk_metrics(shuffled, pd.Series([0.01, 0.0, 0.02], index=dates), 0.0, garch=False)
    assert out.loc["A", "max_drawdown"] == pytest.approx(-0.1)  # date order, not row order
    with pytest.raises(ValueError, match="no date"):
        risk.risk_metrics(shuffled, pd.Series([0.01, 0.0], index=[0, 1]), 0.0, garch=False)


def test_rf_per_period() -> None:
    assert risk.per_period_rate(RF_ANNUAL) == pytest.approx(RF, rel=1e-15)
    assert (1 + risk.per_period_rate(0.05)) ** 252 == pytest.approx(1.05, rel=1e-12)


# --------------------------------------------------------------------------------------------
# Inputs and outputs


def test_returns_from_prices_keeps_gaps_and_window() -> None:
    prices = pd.DataFrame(
        {
            "ticker": ["A"] * 5 + ["B"] * 4,
            "date": pd.to_datetime(
                [
                    "2024-01-01",
                    "2024-01-02",
                    "2024-01-03",
                    "2024-01-04",
                    "2024-01-05",
                    "2024-01-01",
                    "2024-01-02",
                    "2024-01-04",
                    "2024-01-05",
                ]
            ),
            "adj_close": [100.0, 110.0, 99.0, 99.0, 108.9, 50.0, 55.0, 60.0, 66.0],
        }
    )
    wide = risk.returns_from_prices(prices)
    assert list(wide.columns) == ["A", "B"]
    assert list(wide.index) == list(pd.to_datetime(["2024-01-02", "2024-01-03", "2024-01-04", "2024-01-05"]))
    np.testing.assert_allclose(wide["A"], [0.1, -0.1, 0.0, 0.1])
    np.testing.assert_allclose(wide["B"], [0.1, np.nan, np.nan, 0.1])  # B has no 01-03 close: not filled
    cut = risk.returns_from_prices(prices, start="2024-01-03", end="2024-01-05")
    np.testing.assert_allclose(cut["A"], [0.0, 0.1])
    with pytest.raises(ValueError, match="duplicate"):
        risk.returns_from_prices(pd.concat([prices, prices.iloc[[0]]]))


def test_long_metrics_rows(table: pd.DataFrame) -> None:
    long = risk.long_metrics(table, "run-1", MINIMUMS)
    assert list(long.columns) == ["run_id", "scope", "metric", "value", "window_start", "window_end", "n_obs", "note"]
    assert long["note"].isna().all(), "every scope has hundreds of returns: everything is published"
    assert len(long) == len(table) * len(METRICS)
    assert not long.duplicated(["run_id", "scope", "metric"]).any()
    assert list(long["metric"].iloc[: len(METRICS)]) == list(METRICS)
    row = long[(long["scope"] == "LATE") & (long["metric"] == "sharpe_ratio")].iloc[0]
    assert row["value"] == table.loc["LATE", "sharpe_ratio"]
    assert row["window_start"] == table.loc["LATE", "window_start"]
    assert row["n_obs"] == table.loc["LATE", "n_obs"]
    assert long.loc[long["metric"] == "var_95_garch", "value"].isna().all()  # NaN values are kept
    with pytest.raises(ValueError, match="lacks"):
        risk.long_metrics(table.drop(columns="beta"), "run-1", MINIMUMS)


# --------------------------------------------------------------------------------------------
# Publishing: figures only where they mean something


FOUR_DAYS = pd.DataFrame(
    {"portfolio:paper": [0.011, 0.009, 0.012, 0.010]}, index=pd.bdate_range("2025-06-02", periods=4, name="date")
)


def test_published_holds_back_a_figure_below_its_minimum_and_says_why() -> None:
    assert risk.published(14.03, 4, "sharpe_ratio", MINIMUMS) == (
        None,
        "4 daily returns: too few for a Sharpe ratio; 63 needed",
    )
    assert risk.published(1.2, 63, "sharpe_ratio", MINIMUMS) == (1.2, None)
    assert risk.published(-0.05, 1, "max_drawdown", MINIMUMS) == (
        None,
        "1 daily return: too few for a maximum drawdown; 2 needed",
    )
    assert risk.published(-0.01, 62, "var_95_historical", MINIMUMS)[0] is None
    assert (
        risk.published(0.3, 62, "dsr", MINIMUMS)[1]
        == "62 daily returns: too few for a deflated Sharpe ratio; 63 needed"
    )
    assert risk.published(0.042, 4, "cumulative_return", MINIMUMS) == (0.042, None), "a realized return is a fact"
    assert risk.published(16.0, 4, "trials", MINIMUMS) == (16.0, None)
    assert risk.published(math.nan, 500, "sharpe_ratio", MINIMUMS) == (None, None), "undefined, not too short"
    assert risk.text(*risk.published(14.03, 4, "sharpe_ratio", MINIMUMS), ".2f") == (
        "n/a (4 daily returns: too few for a Sharpe ratio; 63 needed)"
    )
    assert risk.text(1.234, None, ".2f") == "1.23" and risk.text(None, None, ".2f") == "n/a"
    assert set(risk.PUBLISHED) >= set(METRICS) - {"cumulative_return"}, "every other metric has a minimum"


def test_a_four_day_sharpe_is_computed_but_not_published() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RiskWarning)
        table = risk.risk_metrics(FOUR_DAYS, pd.Series(0.001, index=FOUR_DAYS.index), RF_ANNUAL, garch=False)
    assert table.loc["portfolio:paper", "sharpe_ratio"] > 10, "the absurd figure the issue saw"
    rows = risk.long_metrics(table, "r", MINIMUMS).set_index("metric")
    sharpe = rows.loc["sharpe_ratio"]
    assert math.isnan(sharpe["value"]) and sharpe["n_obs"] == 4
    assert sharpe["note"] == "4 daily returns: too few for a Sharpe ratio; 63 needed"
    assert rows.loc["annual_return", "note"].endswith("too few for an annual return; 63 needed")
    assert rows.loc["cumulative_return", "value"] == pytest.approx(np.prod(1 + FOUR_DAYS.iloc[:, 0]) - 1)
    assert rows.loc["max_drawdown", "value"] == 0.0 and pd.isna(rows.loc["max_drawdown", "note"])
    published = rows["value"].notna()
    assert set(rows.index[published]) == {"cumulative_return", "max_drawdown"}
    assert rows.loc[~published, "note"].notna().all(), "every missing figure says why"


def test_report_sentence_and_table_say_na_with_the_reason() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RiskWarning)
        frame = FOUR_DAYS.rename(columns={"portfolio:paper": risk.HOLDINGS_SCOPE}).assign(BENCH=0.001 * np.arange(1, 5))
        table = risk.risk_metrics(frame, frame["BENCH"], RF_ANNUAL, garch=False)
    rows = risk.long_metrics(table, "r", MINIMUMS)
    sentence = risk.risk_sentence(rows, "BENCH")
    assert "Sharpe n/a (4 daily returns: too few for a Sharpe ratio; 63 needed)" in sentence
    assert "returned n/a (4 daily returns: too few for an annual return; 63 needed) a year" in sentence
    assert "max drawdown 0.0%" in sentence
    headline = risk.headline_table(rows)
    assert list(headline.index) == [risk.HOLDINGS_SCOPE, "BENCH"]
    assert (headline.loc[risk.HOLDINGS_SCOPE, "sharpe_ratio"], headline.loc["BENCH", "annual_return"]) == ("n/a", "n/a")
    assert headline.loc[risk.HOLDINGS_SCOPE, "max_drawdown"] == 0.0


# --------------------------------------------------------------------------------------------
# PSR and DSR against an independent reference written from the papers' formulas

EULER_MASCHERONI = 0.57721566490153286  # literal: the reference does not borrow numpy's constant
PHI = statistics.NormalDist()  # the standard library's normal, not scipy's


def reference_psr(sr: float, n: int, skew: float, kurtosis: float, sr_star: float) -> float:
    """Bailey & López de Prado (2012): Φ((SR−SR*)·√(n−1)/√(1−γ3·SR+(γ4−1)/4·SR²))."""
    return PHI.cdf((sr - sr_star) * math.sqrt(n - 1) / math.sqrt(1 - skew * sr + (kurtosis - 1) / 4 * sr**2))


def reference_sr0(n_trials: int, variance: float) -> float:
    """Bailey & López de Prado (2014): √V[SR_n]·((1−γ)Φ⁻¹(1−1/N) + γΦ⁻¹(1−1/(N·e)))."""
    g = EULER_MASCHERONI
    return math.sqrt(variance) * (
        (1 - g) * PHI.inv_cdf(1 - 1 / n_trials) + g * PHI.inv_cdf(1 - 1 / (n_trials * math.e))
    )


@pytest.mark.parametrize(
    ("sr", "n", "skew", "kurtosis", "sr_star"),
    [
        (0.1, 252, 0.0, 3.0, 0.0),
        (0.05, 1250, -1.2, 8.5, 0.0),
        (-0.03, 63, 0.4, 4.2, 0.0),
        (0.2, 500, -0.8, 6.0, 0.05),
        (0.08, 100, 1.5, 12.0, 0.1),
    ],
)
def test_psr_equals_the_reference(sr: float, n: int, skew: float, kurtosis: float, sr_star: float) -> None:
    ours = risk.probabilistic_sharpe_ratio(sr, n, skew, kurtosis, sr_star)
    assert ours == pytest.approx(reference_psr(sr, n, skew, kurtosis, sr_star), rel=1e-12, abs=1e-15)


@pytest.mark.parametrize(("n_trials", "variance"), [(2, 1e-3), (16, 4e-4), (100, 0.5 / 250), (1000, 2.5e-3)])
def test_dsr_equals_the_reference(n_trials: int, variance: float) -> None:
    sr, n, skew, kurtosis = 0.09, 756, -0.6, 5.5
    assert risk.expected_max_sharpe(n_trials, variance) == pytest.approx(reference_sr0(n_trials, variance), rel=1e-12)
    expected = reference_psr(sr, n, skew, kurtosis, reference_sr0(n_trials, variance))
    assert risk.deflated_sharpe_ratio(sr, n, skew, kurtosis, n_trials, variance) == pytest.approx(expected, rel=1e-12)


def test_dsr_reproduces_the_papers_numerical_example() -> None:
    """Bailey & López de Prado (2014), "The Deflated Sharpe Ratio", numerical example: the best of
    N = 100 trials, annualized SR 2.5 over 5 years of daily returns (T = 1250, 250 a year),
    V[SR_n] = 1/2 annualized, skewness −3, kurtosis 10: SR0 ≈ 0.1132 (per day), DSR ≈ 0.9004."""
    per_day = math.sqrt(250)
    assert risk.expected_max_sharpe(100, 0.5 / 250) == pytest.approx(0.1132, abs=5e-5)
    assert risk.deflated_sharpe_ratio(2.5 / per_day, 1250, -3.0, 10.0, 100, 0.5 / 250) == pytest.approx(
        0.9004, abs=5e-5
    )


def test_psr_dsr_edge_cases_and_arrays() -> None:
    assert risk.expected_max_sharpe(1, 0.01) == 0.0, "one trial: no selection, the DSR is the PSR against 0"
    assert risk.deflated_sharpe_ratio(0.1, 252, 0.0, 3.0, 1, math.nan) == risk.probabilistic_sharpe_ratio(
        0.1, 252, 0.0, 3.0
    )
    with pytest.raises(ValueError, match="at least one trial"):
        risk.expected_max_sharpe(0, 0.01)
    assert math.isnan(risk.probabilistic_sharpe_ratio(0.1, 1, 0.0, 3.0)), "one return: no PSR"
    assert math.isnan(risk.probabilistic_sharpe_ratio(0.5, 252, 10.0, 3.0)), "1 − γ3·SR + ... <= 0: undefined"
    assert risk.probabilistic_sharpe_ratio(0.0, 252, 0.0, 3.0) == pytest.approx(0.5)
    many = risk.probabilistic_sharpe_ratio(np.array([0.1, -0.1]), np.array([252, 252]), np.zeros(2), np.full(2, 3.0))
    np.testing.assert_allclose(many, [reference_psr(0.1, 252, 0, 3, 0), reference_psr(-0.1, 252, 0, 3, 0)], rtol=1e-12)


def test_sharpe_statistics_are_the_risk_tables_moments(
    table: pd.DataFrame, market: tuple[pd.DataFrame, pd.Series]
) -> None:
    returns, _ = market
    ours = risk.sharpe_statistics(returns, RF_ANNUAL)
    for scope in ("PLAIN", "GAPS", "LATE"):
        observed = returns[scope].dropna()
        assert ours.loc[scope, "n_obs"] == len(observed) == table.loc[scope, "n_obs"]
        excess = observed - RF
        assert ours.loc[scope, "sharpe"] == pytest.approx(excess.mean() / excess.std(ddof=1), rel=1e-12)
        assert ours.loc[scope, "sharpe"] * math.sqrt(252) == pytest.approx(table.loc[scope, "sharpe_ratio"], rel=1e-10)
        assert ours.loc[scope, "skew"] == pytest.approx(table.loc[scope, "skew"], rel=1e-9)
        assert ours.loc[scope, "kurtosis"] == pytest.approx(table.loc[scope, "kurtosis"] + 3.0, rel=1e-9)
    flat = risk.sharpe_statistics(pd.DataFrame({"flat": [0.0] * 10, "three": [0.01, 0.02, np.nan] + [np.nan] * 7}), 0.0)
    assert flat.loc["flat"].drop("n_obs").isna().all() and flat.loc["flat", "n_obs"] == 10
    assert flat.loc["three", "n_obs"] == 2 and math.isnan(flat.loc["three", "skew"])


# --------------------------------------------------------------------------------------------
# Portfolios and stress


def test_portfolio_returns_by_hand() -> None:
    dates = pd.bdate_range("2024-01-01", periods=4)
    returns = pd.DataFrame(
        {"A": [0.10, np.nan, 0.02, np.nan], "B": [-0.05, 0.04, np.nan, np.nan], "C": 1.0}, index=dates
    )
    out = risk.portfolio_returns(returns, pd.Series({"A": 3.0, "B": 1.0}))  # normalized to 0.75 / 0.25
    np.testing.assert_allclose(out.to_numpy(), [0.75 * 0.10 - 0.25 * 0.05, 0.25 * 0.04, 0.75 * 0.02, np.nan])
    with pytest.raises(ValueError, match="Z"):
        risk.portfolio_returns(returns, pd.Series({"A": 1.0, "Z": 1.0}))
    with pytest.raises(ValueError, match="sum"):
        risk.portfolio_returns(returns, pd.Series({"A": 1.0, "B": -1.0}))


def test_holdings_weights_by_hand() -> None:
    holdings = pd.DataFrame(
        {
            "as_of": pd.to_datetime(["2024-01-31"] * 3 + ["2023-12-31"]),
            "account": ["broker", "ira", "broker", "broker"],
            "ticker": ["A", "A", "B", "C"],
            "quantity": [10.0, 5.0, 20.0, 100.0],
            "cost_basis": [900.0, 400.0, 1000.0, 50.0],
        }
    )
    weights = risk.holdings_weights(holdings, pd.Series({"A": 20.0, "B": 30.0, "C": 1.0}))
    # A: 15 x 20 = 300, B: 20 x 30 = 600 (C is in an older snapshot only)
    assert weights.to_dict() == pytest.approx({"A": 1 / 3, "B": 2 / 3})
    with pytest.raises(ValueError, match="B"):
        risk.holdings_weights(holdings, pd.Series({"A": 20.0}))


def test_stress_table_by_hand() -> None:
    dates = pd.bdate_range("2024-01-01", periods=8)
    bench = pd.Series([0.01, -0.02, -0.03, 0.01, -0.01, -0.02, 0.03, 0.02], index=dates)
    returns = pd.DataFrame({"TWICE": 2 * bench, "HALF": 0.5 * bench + 0.001}, index=dates)
    returns.iloc[3, 1] = np.nan  # a gap inside the worst week counts as flat
    out = risk.stress_table(returns, bench, pd.Series({"TWICE": 1.0, "HALF": 3.0}), -0.10, portfolio_value=1000.0)
    assert list(out.index) == ["TWICE", "HALF", "portfolio"]
    assert out.loc["TWICE", "beta"] == pytest.approx(2.0)
    assert out.loc["HALF", "beta"] == pytest.approx(0.5)
    assert out.loc["TWICE", "held_value"] == pytest.approx(250.0)
    assert out.loc["TWICE", "shock_return"] == pytest.approx(-0.2)
    assert out.loc["TWICE", "shock_value"] == pytest.approx(-50.0)
    assert out.loc["HALF", "shock_value"] == pytest.approx(-0.05 * 750.0)
    assert out.loc["portfolio", "shock_value"] == pytest.approx(-50.0 - 37.5)
    assert out.loc["portfolio", "beta"] == pytest.approx(0.25 * 2 + 0.75 * 0.5)
    # 5-session windows of the benchmark: the worst starts on day 1 (-0.02, -0.03, 0.01, -0.01, -0.02)
    worst = np.prod(1 + bench.iloc[1:6].to_numpy()) - 1
    assert out.loc["portfolio", "worst_week_start"] == dates[1]
    assert out.loc["portfolio", "worst_week_end"] == dates[5]
    assert out.loc["TWICE", "benchmark_worst_week"] == pytest.approx(worst)
    twice = np.prod(1 + 2 * bench.iloc[1:6].to_numpy()) - 1
    half = np.prod(1 + (0.5 * bench.iloc[[1, 2, 4, 5]].to_numpy() + 0.001)) - 1
    assert out.loc["TWICE", "worst_week_return"] == pytest.approx(twice)
    assert out.loc["HALF", "worst_week_value"] == pytest.approx(half * 750.0)
    assert out.loc["portfolio", "worst_week_value"] == pytest.approx(twice * 250 + half * 750)
    assert out.loc["portfolio", "worst_week_return"] == pytest.approx((twice * 250 + half * 750) / 1000)


# --------------------------------------------------------------------------------------------
# Time series tables


def test_rolling_volatility_and_beta_by_hand() -> None:
    rng = np.random.default_rng(11)
    dates = pd.bdate_range("2024-01-01", periods=12)
    bench = pd.Series(rng.normal(0, 0.01, 12), index=dates)
    returns = pd.DataFrame({"A": 1.5 * bench + rng.normal(0, 0.002, 12), "B": rng.normal(0, 0.01, 12)}, index=dates)
    returns.iloc[7, 1] = np.nan
    vol = risk.rolling_volatility(returns, window=5)
    assert vol["A"].iloc[:4].isna().all()
    assert vol["A"].iloc[6] == pytest.approx(returns["A"].iloc[2:7].std(ddof=1) * np.sqrt(252), rel=1e-12)
    assert vol["B"].iloc[7:12].isna().all() and np.isfinite(vol["B"].iloc[4])
    beta = risk.rolling_beta(returns, bench, window=5)
    y, x = returns["A"].iloc[4:9].to_numpy(), bench.iloc[4:9].to_numpy()
    assert beta["A"].iloc[8] == pytest.approx(np.cov(y, x)[0, 1] / np.var(x, ddof=1), rel=1e-9)
    loose = risk.rolling_beta(returns, bench, window=5, min_periods=4)
    keep = np.r_[4:7, 8]  # B's window 4..8 without the gap on day 7
    y, x = returns["B"].iloc[keep].to_numpy(), bench.iloc[keep].to_numpy()
    assert loose["B"].iloc[8] == pytest.approx(np.cov(y, x)[0, 1] / np.var(x, ddof=1), rel=1e-9)
    flat = risk.rolling_beta(returns, pd.Series(0.001, index=dates), window=5)
    assert flat.isna().all().all()


def test_drawdowns_by_hand() -> None:
    dates = pd.bdate_range("2024-01-01", periods=5)
    returns = pd.DataFrame(
        {"A": [-0.1, 0.05, np.nan, 0.1, -0.2], "B": [np.nan, 0.1, -0.1, np.nan, np.nan]}, index=dates
    )
    dd = risk.drawdowns(returns)
    np.testing.assert_allclose(dd["A"], [-0.1, 0.945 - 1, 0.945 - 1, 0.0, -0.2], atol=1e-15)
    np.testing.assert_allclose(dd["B"], [np.nan, 0.0, -0.1, np.nan, np.nan], atol=1e-15)
    np.testing.assert_allclose(dd.min().to_numpy(), ep.max_drawdown(returns.fillna(0)).to_numpy(), rtol=1e-12)


def test_worst_days_and_correlation() -> None:
    dates = pd.bdate_range("2024-01-01", periods=4)
    returns = pd.DataFrame({"A": [0.01, -0.03, -0.02, 0.0], "B": [np.nan, 0.02, -0.05, 0.01]}, index=dates)
    worst = risk.worst_days(returns, n=2)
    assert list(worst.columns) == ["scope", "date", "return"]
    assert worst["scope"].tolist() == ["A", "A", "B", "B"]
    assert worst["date"].tolist() == [dates[1], dates[2], dates[2], dates[3]]
    np.testing.assert_allclose(worst["return"], [-0.03, -0.02, -0.05, 0.01])
    corr = risk.correlation(returns, min_periods=3)
    assert corr.loc["A", "A"] == pytest.approx(1.0)
    assert corr.loc["A", "B"] == pytest.approx(np.corrcoef(returns["A"].iloc[1:], returns["B"].iloc[1:])[0, 1])
    assert np.isnan(risk.correlation(returns).loc["A", "B"])  # 3 shared days < the default 20


def test_charts_have_titles_and_labels(table: pd.DataFrame, market: tuple[pd.DataFrame, pd.Series]) -> None:
    import matplotlib.pyplot as plt

    returns, bench = market
    figures = [
        risk.correlation_heatmap(risk.correlation(returns)),
        risk.rolling_chart(
            risk.rolling_volatility(returns, 63), "Rolling 63-session volatility", "Annualized volatility"
        ),
        risk.drawdown_chart(risk.drawdowns(returns[["PLAIN"]])),
    ]
    try:
        for fig in figures:
            ax = fig.axes[0]
            assert ax.get_title() and ax.get_xlabel() and ax.get_ylabel()
    finally:
        for fig in figures:
            plt.close(fig)


def test_parallel_garch_fits_equal_one_by_one_fits() -> None:
    """Enough series to fork workers: each estimate equals its own single fit."""
    rng = np.random.default_rng(11)
    returns = pd.DataFrame(
        rng.standard_t(5, size=(300, 70)) * 0.01,
        index=pd.bdate_range("2024-01-02", periods=300),
        columns=[f"T{i:02d}" for i in range(70)],
    )
    table = risk.risk_metrics(returns, returns.mean(axis=1), 0.0, garch=True)
    for scope in ("T00", "T35", "T69"):
        assert table.loc[scope, "var_95_garch"] == pytest.approx(risk.garch_var(returns[scope]), rel=1e-12)
