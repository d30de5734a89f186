"""Portfolio optimization: constraints hold for every method, each fallback is taken for its
reason without a warning escaping, and the numbers match references (scikit-learn's
Ledoit-Wolf, a scipy max-Sharpe, hand-computed expected returns)."""

from __future__ import annotations

import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import matplotlib
import numpy as np
import pandas as pd
import pytest
from pypfopt import HRPOpt
from scipy.optimize import minimize
from sklearn.covariance import LedoitWolf

from bentley.models import optimize
from bentley.models.optimize import Constraints as _Constraints

matplotlib.use("Agg")


def Constraints(**given: object) -> _Constraints:  # noqa: N802 - reads like the class it builds
    """The class has no defaults (params hold them); tests state only what they vary."""
    base: dict[str, object] = {"long_only": True, "max_weight": 1.0, "min_names": 1, "risk_free_rate": 0.0}
    return _Constraints(**{**base, **given})


TICKERS = ["AAA", "BBB", "CCC", "DDD", "EEE", "FFF"]


# --------------------------------------------------------------------------------------------
# Synthetic inputs


def _returns(n: int = 600, seed: int = 0, tickers: list[str] = TICKERS) -> pd.DataFrame:
    """One market factor plus noise; daily volatility rises from the first ticker to the last,
    so min-volatility and HRP both want to pile into the first one."""
    rng = np.random.default_rng(seed)
    k = len(tickers)
    market = rng.normal(0.0003, 0.008, n)
    beta = np.linspace(0.3, 1.4, k)
    noise = rng.normal(0.0, 1.0, (n, k)) * np.linspace(0.002, 0.02, k)
    return pd.DataFrame(
        market[:, None] * beta + noise,
        index=pd.bdate_range("2022-01-03", periods=n),
        columns=pd.Index(tickers, name="ticker"),
    )


def _expected(values: list[float], tickers: list[str] = TICKERS) -> pd.Series:
    return pd.Series(values, index=tickers, dtype=np.float64, name="expected_return")


MU = _expected([0.02, 0.05, 0.30, 0.08, 0.12, 0.04])  # CCC dominates max-Sharpe


@contextmanager
def _no_warnings() -> Iterator[None]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    assert [str(w.message) for w in caught] == []


def _assert_valid(weights: pd.Series, constraints: Constraints) -> None:
    w = weights.to_numpy()
    assert np.isfinite(w).all()
    assert w.sum() == pytest.approx(1.0, abs=1e-9)
    assert w.max() <= constraints.cap + 1e-9
    assert w.min() >= constraints.lower - 1e-9
    held = w[w != 0.0]
    assert len(held) >= constraints.min_names
    assert (np.abs(held) >= optimize.MIN_WEIGHT).all()


def _statuses(attempts: pd.DataFrame) -> dict[str, str]:
    return dict(zip(attempts["method"], attempts["status"], strict=True))


# --------------------------------------------------------------------------------------------
# Constraints


@pytest.mark.parametrize("method", ["max_sharpe", "min_volatility", "hrp"])
def test_each_method_respects_the_constraints(method: str) -> None:
    returns = _returns()
    cov = optimize.shrunk_covariance(returns)
    constraints = Constraints(long_only=True, max_weight=0.3, min_names=4, risk_free_rate=0.02)
    assert constraints.cap == 0.25  # 1/min_names is tighter than max_weight

    with _no_warnings():
        result = optimize.optimize_portfolio(MU, cov, constraints, [method])

    assert result.method == method
    _assert_valid(result.weights, constraints)
    assert (result.weights >= 0.0).all()
    assert result.weights.max() == pytest.approx(0.25, abs=1e-9)  # the cap binds
    assert list(result.weights.index) == TICKERS
    assert _statuses(result.attempts) == {method: "used", "equal_weight": "not tried"}


def test_hrp_cap_is_clip_and_redistribute() -> None:
    cov = optimize.shrunk_covariance(_returns())
    raw = pd.Series(HRPOpt(cov_matrix=cov).optimize())
    constraints = Constraints(max_weight=0.25)
    assert raw.max() > 0.25  # otherwise this test would not exercise the cap

    result = optimize.optimize_portfolio(MU, cov, constraints, ["hrp"])

    w = result.weights
    capped = w[w >= 0.25 - 1e-12].index
    assert set(raw[raw > 0.25].index) <= set(capped)
    free = w.index.difference(capped)  # the excess was spread in proportion to HRP's weights
    np.testing.assert_allclose(w[free] / w[free].sum(), raw[free] / raw[free].sum(), rtol=1e-9)


def test_shorts_are_bounded_by_the_cap() -> None:
    cov = optimize.shrunk_covariance(_returns())
    mu = _expected([-0.25, 0.05, 0.30, 0.08, -0.20, 0.04])
    constraints = Constraints(long_only=False, max_weight=0.4, min_names=3)

    result = optimize.optimize_portfolio(mu, cov, constraints, ["max_sharpe"])

    assert result.method == "max_sharpe"
    assert (result.weights < 0.0).any()
    _assert_valid(result.weights, constraints)
    assert result.weights.min() >= -constraints.cap - 1e-9


def test_universe_smaller_than_min_names_is_a_named_error() -> None:
    cov = optimize.shrunk_covariance(_returns()[TICKERS[:3]])
    with pytest.raises(ValueError, match=r"optimize\.min_names.*AAA.*BBB.*CCC"):
        optimize.optimize_portfolio(MU[:3], cov, Constraints(min_names=4))


def test_infeasible_max_weight_is_a_named_error() -> None:
    cov = optimize.shrunk_covariance(_returns())
    with pytest.raises(ValueError, match=r"optimize\.max_weight"):
        optimize.optimize_portfolio(MU, cov, Constraints(max_weight=0.15))
    with pytest.raises(ValueError, match=r"optimize\.max_weight"):
        Constraints(max_weight=0.0)


def test_unknown_method_is_an_error() -> None:
    cov = optimize.shrunk_covariance(_returns())
    with pytest.raises(ValueError, match=r"optimize\.methods"):
        optimize.optimize_portfolio(MU, cov, Constraints(), ["max_sharpe", "black_litterman"])


# --------------------------------------------------------------------------------------------
# Fallbacks


def test_nothing_beats_the_risk_free_rate_falls_back_to_min_volatility(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cov = optimize.shrunk_covariance(_returns())
    constraints = Constraints(max_weight=0.5, risk_free_rate=0.05)
    mu = _expected([0.01, 0.02, 0.03, 0.04, 0.045, 0.0])

    with _no_warnings():
        result = optimize.optimize_portfolio(mu, cov, constraints)

    assert result.method == "min_volatility"
    attempts = result.attempts.set_index("method")
    assert list(attempts.index) == ["max_sharpe", "min_volatility", "hrp", "equal_weight"]
    assert attempts.loc["max_sharpe", "status"] == "failed"
    assert "risk-free rate" in attempts.loc["max_sharpe", "reason"]
    assert list(attempts["status"].iloc[1:]) == ["used", "not tried", "not tried"]
    assert "max_sharpe failed" in caplog.text
    assert "Warning" not in result.attempts.to_string()
    _assert_valid(result.weights, constraints)


def test_cap_can_make_the_risk_free_rate_unbeatable() -> None:
    # One asset beats rf, but a cap of 0.25 forces three more names into the portfolio.
    cov = optimize.shrunk_covariance(_returns())
    mu = _expected([0.20, 0.0, 0.0, 0.0, 0.0, 0.0])
    result = optimize.optimize_portfolio(mu, cov, Constraints(min_names=4, risk_free_rate=0.06))
    assert result.method == "min_volatility"
    assert "best attainable 0.0500" in result.attempts.loc[0, "reason"]


def test_singular_covariance_gives_a_valid_portfolio() -> None:
    returns = _returns(tickers=["AAA", "BBB", "CCC", "DDD"])
    returns["AAA2"] = returns["AAA"]  # a duplicate: the covariance is singular
    returns["CASH"] = 0.0  # constant: zero variance
    mu = _expected([0.10, 0.05, 0.15, 0.08, 0.10, 0.0], list(returns.columns))
    constraints = Constraints(max_weight=0.4, min_names=3, risk_free_rate=0.01)
    sample = returns.cov() * 252
    assert np.linalg.matrix_rank(sample.to_numpy()) < len(sample)

    for cov in (sample, optimize.shrunk_covariance(returns)):
        with _no_warnings():
            result = optimize.optimize_portfolio(mu, cov, constraints)
        assert result.method == "max_sharpe"
        _assert_valid(result.weights, constraints)

    with _no_warnings():  # HRP divides by the zero variance: it fails, equal weight is used
        result = optimize.optimize_portfolio(mu, sample, constraints, ["hrp"])
    assert result.method == "equal_weight"
    assert result.attempts.loc[0, "status"] == "failed"
    assert "finite" in result.attempts.loc[0, "reason"]
    np.testing.assert_allclose(result.weights, 1.0 / 6.0)


def test_non_psd_covariance_skips_the_mean_variance_methods() -> None:
    cov = optimize.shrunk_covariance(_returns())
    cov.loc["AAA", "BBB"] = cov.loc["BBB", "AAA"] = 1.0  # correlation far above 1
    assert np.linalg.eigvalsh(cov.to_numpy())[0] < 0

    with _no_warnings():
        result = optimize.optimize_portfolio(MU, cov, Constraints(max_weight=0.5))

    attempts = result.attempts.set_index("method")
    for method in ("max_sharpe", "min_volatility"):
        assert attempts.loc[method, "status"] == "failed"
        assert "not positive semidefinite" in attempts.loc[method, "reason"]
    assert result.method == "hrp"


def test_equal_expected_returns_give_the_min_volatility_portfolio() -> None:
    cov = optimize.shrunk_covariance(_returns())
    constraints = Constraints(max_weight=0.35)
    flat = _expected([0.1] * 6)

    sharpe = optimize.optimize_portfolio(flat, cov, constraints, ["max_sharpe"])
    least = optimize.optimize_portfolio(flat, cov, constraints, ["min_volatility"])

    assert sharpe.method == "max_sharpe"
    _assert_valid(sharpe.weights, constraints)
    np.testing.assert_allclose(sharpe.weights, least.weights, atol=1e-4)

    zero = optimize.optimize_portfolio(_expected([0.0] * 6), cov, constraints)  # p = 0.5 everywhere
    assert zero.method == "min_volatility"
    _assert_valid(zero.weights, constraints)


def _failing(message: str) -> Callable[..., np.ndarray]:
    def solve(*_: object) -> np.ndarray:
        raise RuntimeError(message)

    return solve


def test_every_method_failing_gives_equal_weight(monkeypatch: pytest.MonkeyPatch) -> None:
    for method in optimize.METHODS:
        monkeypatch.setitem(optimize._SOLVERS, method, _failing(f"{method} is broken"))
    cov = optimize.shrunk_covariance(_returns())
    constraints = Constraints(max_weight=0.2)

    result = optimize.optimize_portfolio(MU, cov, constraints)

    assert result.method == "equal_weight"
    np.testing.assert_allclose(result.weights, 1.0 / 6.0)
    assert list(result.attempts["status"]) == ["failed", "failed", "failed", "used"]
    assert result.attempts.loc[2, "reason"] == "RuntimeError: hrp is broken"
    w = result.weights.to_numpy()
    assert result.expected_return == pytest.approx(w @ MU.to_numpy())
    assert result.volatility == pytest.approx(np.sqrt(w @ cov.to_numpy() @ w))
    assert result.sharpe == pytest.approx(result.expected_return / result.volatility)


def test_result_breaking_a_constraint_is_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    half = np.array([0.3, 0.3, 0.3, 0.0, 0.0, 0.0])  # sums to 0.9
    monkeypatch.setitem(optimize._SOLVERS, "max_sharpe", lambda *_: half)
    cov = optimize.shrunk_covariance(_returns())
    result = optimize.optimize_portfolio(MU, cov, Constraints(max_weight=0.5))
    assert result.method == "min_volatility"
    assert "sum to 0.900000" in result.attempts.loc[0, "reason"]


def test_tiny_weights_are_cleaned_without_breaking_the_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    raw = np.array([0.25, 0.25, 0.2, 0.2, 0.09995, 0.00005])
    monkeypatch.setitem(optimize._SOLVERS, "max_sharpe", lambda *_: raw)
    cov = optimize.shrunk_covariance(_returns())
    constraints = Constraints(min_names=4)

    result = optimize.optimize_portfolio(MU, cov, constraints)

    assert result.method == "max_sharpe"
    assert result.weights["FFF"] == 0.0
    _assert_valid(result.weights, constraints)
    assert result.weights["AAA"] == 0.25  # rescaling would have pushed it to 0.2500125


# --------------------------------------------------------------------------------------------
# Inputs: universe, expected returns, covariance


def test_expected_return_of_a_coin_flip_is_zero() -> None:
    returns = _returns()
    proba = pd.Series(0.5, index=TICKERS)
    expected = optimize.expected_returns_from_probabilities(proba, returns, horizon=5)
    np.testing.assert_array_equal(expected.to_numpy(), 0.0)


def test_expected_return_by_hand() -> None:
    returns = pd.DataFrame({"AAA": [0.1, -0.1, 0.2], "BBB": [0.0, 0.0, 0.0], "CCC": [0.1, 0.1, 0.1]})
    proba = pd.Series({"AAA": 0.75, "BBB": 0.9, "ZZZ": 0.6})  # CCC unpredicted, ZZZ has no returns
    expected = optimize.expected_returns_from_probabilities(proba, returns, horizon=2)
    # AAA's 2-session moves: 1.1·0.9 − 1 = −0.01 and 0.9·1.2 − 1 = 0.08 → mean |move| 0.045
    assert list(expected.index) == ["AAA", "BBB"]
    assert expected["AAA"] == pytest.approx((2 * 0.75 - 1) * 0.045 * 252 / 2, rel=1e-12)
    assert expected["BBB"] == 0.0
    down = optimize.expected_returns_from_probabilities(1.0 - proba, returns, horizon=2)
    assert down["AAA"] == pytest.approx(-expected["AAA"])


def test_expected_return_needs_a_full_window() -> None:
    returns = pd.DataFrame({"AAA": [0.1, np.nan, 0.2]})
    with pytest.raises(ValueError, match="min_history > horizon"):
        optimize.expected_returns_from_probabilities(pd.Series({"AAA": 0.6}), returns, horizon=2)


def test_universe_records_why_tickers_are_left_out() -> None:
    returns = _returns(n=300)
    returns.loc[returns.index[:250], "EEE"] = np.nan  # listed late: 50 returns
    returns.loc[returns.index[:120], "DDD"] = np.nan  # 180 returns: enough alone...
    returns.loc[returns.index[150:200], "CCC"] = np.nan  # ...but with CCC's gap only 130 shared
    proba = pd.Series(0.6, index=["AAA", "BBB", "CCC", "DDD", "EEE", "ZZZ"])  # FFF unpredicted

    kept, excluded = optimize.optimization_universe(returns, proba, min_history=150)

    reasons = excluded.set_index("ticker")["reason"]
    assert set(reasons.index) == {"DDD", "EEE", "FFF", "ZZZ"}
    assert reasons["FFF"] == "no prediction from the champion model"
    assert "only 50 daily returns" in reasons["EEE"]
    assert "shares only 130 sessions" in reasons["DDD"]
    assert "no returns" in reasons["ZZZ"]
    assert list(kept.columns) == ["AAA", "BBB", "CCC"]
    assert len(kept) == 250 and not kept.isna().any().any()


def test_only_tradable_tickers_enter_the_universe() -> None:
    """An index is left out with its reason even when predicted: given as a list, or by `^`."""
    returns = _returns(n=300, tickers=["AAA", "BBB", "CCC", "^IDX"])
    proba = pd.Series(0.9, index=["AAA", "BBB", "CCC", "^IDX", "SPX"])

    kept, excluded = optimize.optimization_universe(returns, proba, min_history=150, tradable=["AAA", "CCC"])
    assert list(kept.columns) == ["AAA", "CCC"]
    assert excluded.set_index("ticker")["reason"].to_dict() == {
        "BBB": optimize.NOT_TRADABLE,
        "^IDX": optimize.NOT_TRADABLE,
        "SPX": optimize.NOT_TRADABLE,
    }
    kept, excluded = optimize.optimization_universe(returns, proba, min_history=150)  # the convention alone
    assert list(kept.columns) == ["AAA", "BBB", "CCC"]
    reasons = excluded.set_index("ticker")["reason"]
    assert reasons["^IDX"] == optimize.NOT_TRADABLE and "no returns" in reasons["SPX"]


def test_ledoit_wolf_matches_scikit_learn() -> None:
    returns = _returns(n=400)
    cov = optimize.shrunk_covariance(returns)
    reference = LedoitWolf().fit(returns.to_numpy()).covariance_ * 252
    np.testing.assert_allclose(cov.to_numpy(), reference, rtol=1e-10, atol=1e-14)
    assert list(cov.index) == list(cov.columns) == TICKERS


def test_covariance_refuses_missing_returns() -> None:
    returns = _returns()
    returns.iloc[3, 1] = np.nan
    with pytest.raises(ValueError, match="optimization_universe"):
        optimize.shrunk_covariance(returns)


def test_max_sharpe_matches_a_direct_scipy_solution() -> None:
    tickers = ["AAA", "BBB", "CCC"]
    cov = optimize.shrunk_covariance(_returns(n=500, seed=3, tickers=tickers))
    mu = _expected([0.06, 0.10, 0.16], tickers)
    constraints = Constraints(max_weight=0.6, risk_free_rate=0.02)

    result = optimize.optimize_portfolio(mu, cov, constraints, ["max_sharpe"])

    sigma, m = cov.to_numpy(), mu.to_numpy()

    def negative_sharpe(w: np.ndarray) -> float:
        return -(w @ m - 0.02) / np.sqrt(w @ sigma @ w)

    reference = minimize(
        negative_sharpe,
        np.full(3, 1 / 3),
        method="SLSQP",
        bounds=[(0.0, 0.6)] * 3,
        constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0}],
        options={"ftol": 1e-14, "maxiter": 500},
    )
    assert reference.success
    np.testing.assert_allclose(result.weights.to_numpy(), reference.x, atol=1e-4)
    assert result.sharpe == pytest.approx(-reference.fun, rel=1e-6)


# --------------------------------------------------------------------------------------------
# Frontier and chart


def test_frontier_rises_in_volatility_from_the_min_volatility_portfolio() -> None:
    cov = optimize.shrunk_covariance(_returns())
    constraints = Constraints(max_weight=0.4, min_names=3)
    least = optimize.optimize_portfolio(MU, cov, constraints, ["min_volatility"])

    with _no_warnings():
        frontier = optimize.efficient_frontier(MU, cov, constraints, points=15)

    assert len(frontier) >= 12
    assert frontier["expected_return"].is_monotonic_increasing
    assert (frontier["volatility"].diff().dropna() >= -1e-8).all()
    assert frontier["volatility"].iloc[0] == pytest.approx(least.volatility, abs=1e-9)
    assert frontier["expected_return"].iloc[0] == pytest.approx(least.expected_return, abs=1e-9)
    assert frontier["volatility"].min() >= least.volatility - 1e-9
    best = (0.30 + 0.12 + 0.08) / 3  # the cap, 1/min_names, filled with the best names
    assert frontier["expected_return"].iloc[-1] == pytest.approx(best, abs=1e-5)


def test_frontier_chart_shows_the_chosen_method() -> None:
    cov = optimize.shrunk_covariance(_returns())
    constraints = Constraints(max_weight=0.4)
    result = optimize.optimize_portfolio(MU, cov, constraints)
    frontier = optimize.efficient_frontier(MU, cov, constraints, points=5)

    fig = optimize.frontier_chart(frontier, MU, cov, result)

    ax = fig.axes[0]
    assert ax.get_xlabel() == "Annual volatility"
    assert ax.get_ylabel() == "Expected annual return"
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert f"Chosen portfolio ({result.method})" in legend
    assert {t.get_text() for t in ax.texts} == set(TICKERS)


def test_module_does_not_import_matplotlib() -> None:
    code = "import sys, bentley.models.optimize; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --------------------------------------------------------------------------------------------
# Shares and the target table


PRICES = pd.Series([12.5, 230.0, 47.3, 99.99, 8.1, 1500.0], index=TICKERS)


def test_discrete_allocation_spends_the_cash_in_whole_shares() -> None:
    weights = pd.Series([0.25, 0.25, 0.2, 0.15, 0.15, 0.0], index=TICKERS)
    table, leftover = optimize.discrete_allocation(weights, PRICES, 10_000.0)

    assert list(table.columns) == list(optimize.ALLOCATION_COLUMNS)
    assert list(table["ticker"]) == TICKERS
    assert table["shares"].dtype == np.int64 and (table["shares"] >= 0).all()
    assert table["value"].sum() + leftover == pytest.approx(10_000.0, abs=1e-9)
    np.testing.assert_allclose(table["value"], table["shares"] * table["price"])
    assert 0.0 <= leftover < PRICES[weights > 0].max()
    assert table.loc[5, "shares"] == 0
    np.testing.assert_allclose(table["actual_weight"], weights, atol=0.025)


def test_discrete_allocation_with_no_cash_buys_nothing() -> None:
    weights = pd.Series([0.5, 0.5, 0.0, 0.0, 0.0, 0.0], index=TICKERS)
    for cash in (0.0, -50.0, 5.0):  # 5 USD buys no share at these prices
        with _no_warnings():
            table, leftover = optimize.discrete_allocation(weights, PRICES, cash)
        assert (table["shares"] == 0).all()
        assert leftover == cash


def test_discrete_allocation_ignores_shorts() -> None:
    weights = pd.Series([0.6, 0.4, -0.2, 0.2, 0.0, 0.0], index=TICKERS)
    table, leftover = optimize.discrete_allocation(weights, PRICES, 5_000.0)
    assert table.loc[2, "shares"] == 0
    assert table["value"].sum() + leftover == pytest.approx(5_000.0, abs=1e-9)
    assert table["value"].sum() > 4_700.0  # the long weights (1.2) were rescaled to 1


def test_discrete_allocation_needs_prices_of_long_names() -> None:
    weights = pd.Series([0.5, 0.5], index=["AAA", "ZZZ"])
    with pytest.raises(ValueError, match="ZZZ"):
        optimize.discrete_allocation(weights, PRICES, 1_000.0)


def test_target_weights_table_has_every_ticker() -> None:
    cov = optimize.shrunk_covariance(_returns())
    result = optimize.optimize_portfolio(MU, cov, Constraints(max_weight=0.5))
    allocation, _ = optimize.discrete_allocation(result.weights, PRICES, 25_000.0)

    table = optimize.target_weights_table(result, MU, allocation)

    assert list(table.columns) == list(optimize.TARGET_COLUMNS)
    assert list(table["ticker"]) == TICKERS
    assert (table["weight"] == 0.0).any()  # unheld names keep their row
    assert (table["method"] == result.method).all()
    np.testing.assert_allclose(table["expected_return"], MU)
    np.testing.assert_array_equal(table["shares"], allocation["shares"])


# --------------------------------------------------------------------------------------------
# What decided the weights


@pytest.mark.parametrize(
    ("given", "params", "advice"),
    [
        ({"max_weight": 0.35, "min_names": 4}, ("optimize.min_names",), "lower optimize.min_names below 4"),
        ({"max_weight": 0.25, "min_names": 1}, ("optimize.max_weight",), "raise optimize.max_weight above 25%"),
        (
            {"max_weight": 0.25, "min_names": 4, "long_only": False},
            ("optimize.max_weight", "optimize.min_names"),
            "raise optimize.max_weight above 25% or lower optimize.min_names below 4",
        ),
    ],
)
def test_constraints_that_leave_one_portfolio_are_reported_not_credited_to_a_method(
    given: dict[str, object], params: tuple[str, ...], advice: str
) -> None:
    """n × min(max_weight, 1/min_names) = 100%: equal weights whatever the forecasts, no method run."""
    tickers = TICKERS[:4]
    cov = optimize.shrunk_covariance(_returns(tickers=tickers))
    mu = _expected([-0.337, 0.71, 0.05, 0.02], tickers)  # wild forecasts that change nothing
    constraints = Constraints(**given)

    result = optimize.optimize_portfolio(mu, cov, constraints)

    np.testing.assert_allclose(result.weights, 0.25)
    assert result.method == "equal_weight"
    assert _statuses(result.attempts) == {
        "max_sharpe": "not tried",
        "min_volatility": "not tried",
        "hrp": "not tried",
        "equal_weight": "used",
    }
    assert result.attempts["reason"].str.contains("one portfolio only").all()
    freedom = result.freedom
    assert freedom.unique and freedom.decided_by == "constraints"
    assert freedom.binding == params and set(freedom.at_cap) == set(tickers)
    assert (freedom.low, freedom.high) == pytest.approx((0.25, 0.25))
    assert "The constraints left no choice" in freedom.sentence
    assert "the expected returns played no part" in freedom.sentence and freedom.sentence.endswith(f"{advice}.")
    table = optimize.freedom_table(result, constraints).set_index("constraint")
    assert table.loc["weight range per name", "effect"] == "one portfolio only: equal weights"
    assert table.loc["decided by", "setting"] == "constraints"
    said = optimize.result_sentence(result, constraints, 10_000.0, 100.0)
    assert said.startswith("**Equal weights fixed by the constraints** hold 4 names at 25% each")


def test_one_name_has_no_choice_and_the_advice_is_more_names() -> None:
    cov = optimize.shrunk_covariance(_returns(tickers=["AAA"]))
    result = optimize.optimize_portfolio(_expected([0.3], ["AAA"]), cov, Constraints())
    assert result.freedom.unique and result.weights.tolist() == [1.0]
    assert "1 name × 100% = 100%" in result.freedom.sentence
    assert result.freedom.sentence.endswith("To let the forecasts decide, add tradable names to the universe.")


def test_a_free_choice_names_the_method_and_the_names_the_cap_holds() -> None:
    cov = optimize.shrunk_covariance(_returns())
    constraints = Constraints(max_weight=0.4, min_names=2, risk_free_rate=0.0)
    assert not optimize.has_one_portfolio(len(MU), constraints)

    result = optimize.optimize_portfolio(MU, cov, constraints)

    freedom = result.freedom
    assert result.method == "max_sharpe" and not freedom.unique
    assert freedom.decided_by == "expected returns and covariance"
    at_cap = tuple(result.weights.index[result.weights >= 0.4 - 1e-6])
    assert at_cap and set(freedom.at_cap) == set(at_cap) and freedom.binding == ("optimize.max_weight",)
    assert (freedom.low, freedom.high) == pytest.approx((0.0, 0.4))
    assert freedom.sentence.startswith("Each of the 6 names could hold between 0% and 40%. max_sharpe chose")
    assert "at the cap of 40% (optimize.max_weight)" in freedom.sentence
    table = optimize.freedom_table(result, constraints).set_index("constraint")["effect"]
    assert table["optimize.max_weight"] == f"sets the cap, held by {len(at_cap)} of 6 names"
    assert table["optimize.min_names"] == "looser than max_weight"


def test_a_method_that_ignores_the_forecasts_says_so() -> None:
    cov = optimize.shrunk_covariance(_returns())
    constraints = Constraints(max_weight=0.5)
    flat = optimize.optimize_portfolio(_expected([0.0] * 6), cov, constraints)  # coin flips: nothing beats rf

    assert flat.method == "min_volatility" and flat.freedom.decided_by == "covariance"
    assert "from the covariance alone: the expected returns played no part" in flat.freedom.sentence


def test_equal_weight_after_every_failure_is_a_fallback_not_a_constraint(monkeypatch: pytest.MonkeyPatch) -> None:
    for method in optimize.METHODS:
        monkeypatch.setitem(optimize._SOLVERS, method, _failing(f"{method} is broken"))
    result = optimize.optimize_portfolio(MU, optimize.shrunk_covariance(_returns()), Constraints(max_weight=0.2))

    assert not result.freedom.unique and result.freedom.decided_by == "fallback"
    assert "Every listed method failed" in result.freedom.sentence
    assert result.freedom.at_cap == ()  # 1/6 is below the cap of 20%
    assert result.freedom.sentence.endswith("No name reached the cap.")
