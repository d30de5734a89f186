"""Target portfolio weights from the champion model's predictions, daily returns and cash.

The `optimize` stage turns three inputs into a table of target weights and share counts:
daily simple returns (wide: index = sessions, one column per ticker), the champion model's
P(up over `horizon` sessions) per ticker, and the investable cash in USD.

* **Expected returns** come from the predictions: the model predicts a direction only, so
  the size of the move is the ticker's own typical `horizon`-session move
  (`expected_returns_from_probabilities`). A coin flip (p = 0.5) expects 0.
* **Risk** is the Ledoit–Wolf shrunk covariance of the daily returns, annualized with 252
  sessions (`shrunk_covariance`). The sample covariance of 500 tickers from 10 years of
  sessions is noisy and close to singular, and a mean-variance optimizer loads onto its
  noise; shrinking towards a scaled identity fixes both with a data-driven intensity.
* **Weights** come from the first method of a list that gives a valid portfolio
  (`optimize_portfolio`): max-Sharpe, min-volatility, hierarchical risk parity (HRP), and
  equal weight as the last resort, which is always feasible. The `attempts` table of the
  result says which methods failed and why; nothing raises for a problem the optimizer
  cannot solve, and no warning escapes (the reports are checked for warning text).
* **Shares** come from a greedy rounding of the weights at the latest prices
  (`discrete_allocation`).
* **What decided the weights** is part of the result (`Freedom`): when the constraints admit
  one portfolio only (n names × the cap = 100%), no method is run and the report says the
  constraints fixed equal weights, whatever the forecasts; otherwise it says whether the
  forecasts, the covariance or a fallback chose, and which names the cap holds down.
* **Only tradable tickers** are optimized: an index (or the benchmark) may have prices and
  even a prediction, but `optimization_universe` leaves it out with the reason.

Why PyPortfolioOpt: its API maps one-to-one onto what this stage needs — Ledoit–Wolf
shrinkage, min-volatility, max-Sharpe, HRP, the efficient frontier and discrete allocation —
on top of cvxpy, and it is much lighter than skfolio's scikit-learn estimator framework,
whose fit/predict machinery we would wrap only to call the same few optimizations. The
solver is fixed (CLARABEL, shipped with cvxpy) so a run does not depend on which optional
solvers happen to be installed.

Conventions: returns and volatilities are annual (252 sessions), the risk-free rate is an
annual rate as in `optimize.risk_free_rate` (the Sharpe ratio is (μ − rf) / σ, as in
PyPortfolioOpt's `portfolio_performance`), and weights sum to 1.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
from pypfopt import EfficientFrontier, HRPOpt
from pypfopt.discrete_allocation import DiscreteAllocation
from pypfopt.risk_models import CovarianceShrinkage

from bentley.features import TRADING_DAYS
from bentley.reporting import md_escape
from bentley.sources.base import tradable_only

if TYPE_CHECKING:  # matplotlib is imported by the chart helper only, when it is called
    from matplotlib.figure import Figure

    from bentley.config import Optimize

log = logging.getLogger(__name__)

#: PyPortfolioOpt's Ledoit-Wolf shrinkage imports scikit-learn's covariance module when first
#: called: the runner imports it into the stage's kernel before the stage starts (runner.execute).
WARM_IMPORTS: tuple[str, ...] = ("sklearn.covariance",)

#: The optimization methods, in the default order of `optimize.methods`.
METHODS: tuple[str, ...] = ("max_sharpe", "min_volatility", "hrp")

#: The last resort when every listed method fails; not a method one can list.
EQUAL_WEIGHT = "equal_weight"

#: Weights below this (in absolute value) are set to 0: a 0.001% position is noise.
MIN_WEIGHT = 1.0e-4

#: cvxpy solver of the mean-variance problems; fixed so every run solves the same way.
SOLVER = "CLARABEL"

#: Tolerance on solver output (sum of weights, bounds) before the weights are cleaned.
_SOLVER_TOLERANCE = 1.0e-6

#: Tolerance on the cleaned weights, which are exact up to rounding.
_CLEAN_TOLERANCE = 1.0e-9

#: Columns of the attempts table, of the allocation table and of the target weights.
ATTEMPT_COLUMNS: tuple[str, ...] = ("method", "status", "reason")
ALLOCATION_COLUMNS: tuple[str, ...] = (
    "ticker",
    "weight",
    "price",
    "shares",
    "value",
    "actual_weight",
)
TARGET_COLUMNS: tuple[str, ...] = (
    "ticker",
    "weight",
    "method",
    "expected_return",
    "shares",
    "price",
    "value",
)

#: Assets labelled by name on the frontier chart; beyond this only the largest holdings are.
_CHART_LABELS = 20


# --------------------------------------------------------------------------------------------
# Universe, expected returns, covariance


#: What a ticker without a prediction is assumed to be: a coin flip, expected return 0.
NEUTRAL_PROBABILITY = 0.5


def probabilities(tickers: Sequence[object], predictions: pd.DataFrame) -> pd.Series:
    """P(up) per ticker from the champion's predictions; a coin flip where there is none.

    Without a champion (no model passed the gates) every ticker is a coin flip, every
    expected return is 0, max-Sharpe has nothing to beat the risk-free rate with and the
    optimizer falls back to a portfolio that needs no forecast (min-volatility, HRP).
    """
    given = predictions.drop_duplicates("ticker", keep="last").set_index("ticker")["proba_up"]
    return given.reindex(pd.Index(list(tickers), name="ticker")).fillna(NEUTRAL_PROBABILITY).astype(np.float64)


def inputs_table(proba_up: pd.Series, expected: pd.Series, cov: pd.DataFrame) -> pd.DataFrame:
    """Per ticker: the model's P(up), the expected return it implies and the annual volatility."""
    return pd.DataFrame(
        {
            "proba_up": proba_up.reindex(expected.index),
            "expected_return": expected,
            "volatility": np.sqrt(np.diag(cov.loc[expected.index, expected.index].to_numpy())),
        }
    ).sort_values("expected_return", ascending=False, kind="stable")


def result_sentence(result: OptimizationResult, constraints: Constraints, cash: float, leftover: float) -> str:
    """What the report says under the weights: who chose them, their numbers and the money.

    Weights the constraints fixed are not credited to a method: the forecasts' expected
    return of them is a consequence, not a reason.
    """
    held = int((result.weights.abs() > 0).sum())
    if result.freedom.unique:
        chosen = f"**Equal weights fixed by the constraints** hold {held} names at {constraints.cap:.0%} each"
    else:
        failed = result.attempts.loc[result.attempts["status"] == "failed", "method"]
        fallback = f" ({failed.iloc[0]} could not be used; see the attempts table)" if len(failed) else ""
        chosen = f"**{result.method}**{fallback} holds {held} names with at most {constraints.cap:.0%} each"
    return (
        f"{chosen}: expected return {result.expected_return:+.1%} a year at {result.volatility:.1%} volatility "
        f"(Sharpe {result.sharpe:.2f} over a {constraints.risk_free_rate:.1%} risk-free rate). Of {cash:,.0f} USD "
        f"investable, {cash - leftover:,.0f} USD buys whole shares and {leftover:,.0f} USD stays in cash."
    )


#: Why a ticker that is not tradable is left out of the optimization.
NOT_TRADABLE = "not a tradable instrument (an index or the benchmark): never held"


def optimization_universe(
    returns: pd.DataFrame,
    proba_up: pd.Series,
    min_history: int,
    tradable: Collection[str] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The returns the optimizer can use, and why the other tickers are left out.

    Returns `(universe_returns, excluded)`. Only `tradable` tickers are candidates
    (`bentley.inputs.tradable_tickers`; None: by the ticker convention alone, `^` symbols
    being indices): an index may be priced and even predicted, but it is never held.
    universe_returns keeps the tradable tickers that have a
    prediction and at least `min_history` daily returns, cut to the sessions where every one
    of them has a return: the covariance needs one window for all names, and filling a gap
    with 0 (what PyPortfolioOpt does) would invent flat days. A recent listing therefore
    shortens everyone's window; when the shared window falls below `min_history`, the
    tickers with the fewest returns are dropped one by one until it does not.
    `excluded` has one row per left-out ticker: `ticker, reason`. ±inf returns (a zero
    price) count as missing.
    """
    if min_history < 2:
        raise ValueError(f"optimize.min_history must be >= 2, got {min_history}")
    predicted = proba_up.dropna()
    clean = returns.astype(np.float64).replace([np.inf, -np.inf], np.nan)
    observed = clean.notna().sum()
    candidates = [*clean.columns, *predicted.index]
    allowed = set(tradable) if tradable is not None else set(tradable_only(candidates))
    reasons: dict[object, str] = {}
    for ticker in clean.columns:
        if ticker not in allowed:
            reasons[ticker] = NOT_TRADABLE
        elif ticker not in predicted.index:
            reasons[ticker] = "no prediction from the champion model"
        elif observed[ticker] < min_history:
            reasons[ticker] = f"only {observed[ticker]} daily returns, fewer than min_history={min_history}"
    for ticker in predicted.index.difference(clean.columns):
        reasons[ticker] = NOT_TRADABLE if ticker not in allowed else "predicted but has no returns in the window"

    kept = [t for t in clean.columns if t not in reasons]
    shared = clean[kept].dropna(how="any")
    while kept and len(shared) < min_history:
        shortest = min(kept, key=lambda t: observed[t])
        reasons[shortest] = (
            f"only {observed[shortest]} daily returns; with it the universe shares only "
            f"{len(shared)} sessions, fewer than min_history={min_history}"
        )
        kept.remove(shortest)
        shared = clean[kept].dropna(how="any")
    excluded = pd.DataFrame({"ticker": list(reasons), "reason": list(reasons.values())}, columns=["ticker", "reason"])
    return shared, excluded


def expected_returns_from_probabilities(proba_up: pd.Series, returns: pd.DataFrame, horizon: int) -> pd.Series:
    """Annual expected return per ticker: (2p − 1) × mean |horizon-session return| × 252 / horizon.

    The model predicts the direction only (p = P(up over `horizon` sessions)); the magnitude
    is the ticker's own typical move: the mean absolute compounded return over every
    `horizon`-session window of its history (overlapping windows; windows with a missing
    return are skipped). 2p − 1 is the expected sign, so a coin flip (p = 0.5) expects 0,
    p = 1 expects the full typical move up, and p = 0 the full move down. The result is
    annualized by the number of horizons in a year.

    The result is indexed by the tickers of `returns` (in that order) that have a
    prediction: tickers without one are dropped, as are predictions for tickers absent
    from `returns` (`optimization_universe` records both). A predicted ticker with no full
    window is an error: the universe should require min_history > horizon.
    """
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    if proba_up.index.has_duplicates:
        raise ValueError("proba_up has duplicated tickers")
    proba = proba_up.dropna().astype(np.float64)
    outside = proba[(proba < 0.0) | (proba > 1.0)]
    if len(outside):
        raise ValueError(f"probabilities must lie in [0, 1], got {outside.head(5).to_dict()}")
    tickers = [t for t in returns.columns if t in proba.index]
    with np.errstate(divide="ignore"):  # a return of −100% is log(0) = −inf, a −100% move
        growth = np.log1p(returns[tickers].astype(np.float64))
    moves = np.expm1(growth.rolling(horizon, min_periods=horizon).sum())
    magnitude = moves.abs().mean()
    short = magnitude.index[magnitude.isna()]
    if len(short):
        raise ValueError(
            f"no full {horizon}-session window of returns for {list(short)}; "
            "require min_history > horizon in optimization_universe"
        )
    direction = 2.0 * proba.reindex(tickers) - 1.0
    expected = direction * magnitude * (TRADING_DAYS / horizon)
    expected.name = "expected_return"
    return expected


def shrunk_covariance(returns: pd.DataFrame) -> pd.DataFrame:
    """Annual Ledoit–Wolf covariance (shrunk towards a scaled identity) of daily returns.

    PyPortfolioOpt's `CovarianceShrinkage(returns, returns_data=True).ledoit_wolf()` with
    frequency 252: scikit-learn's Ledoit–Wolf estimate times 252. A missing return is an
    error, not a 0 (which is what PyPortfolioOpt would substitute): pass the output of
    `optimization_universe`, which decides which tickers have enough history and records
    why the others are out.
    """
    gaps = returns.columns[returns.isna().any().to_numpy()]
    if len(gaps):
        raise ValueError(f"returns has missing values for {list(gaps)[:10]}; cut them with optimization_universe first")
    if len(returns) < 2:
        raise ValueError(f"need at least 2 sessions of returns, got {len(returns)}")
    with warnings.catch_warnings():
        # PyPortfolioOpt re-checks positive semi-definiteness and clips eigenvalues that
        # rounding pushed below 0 (spectral fix), with a warning; that fix is wanted here.
        warnings.simplefilter("ignore")
        cov = CovarianceShrinkage(returns.astype(np.float64), returns_data=True, frequency=TRADING_DAYS).ledoit_wolf()
    return cov


# --------------------------------------------------------------------------------------------
# Constraints


@dataclass(frozen=True)
class Constraints:
    """Weight constraints of the optimization, from the `optimize` params.

    * long_only: weights in [0, cap]; otherwise [−cap, cap] for the mean-variance methods
      (HRP is long-only by construction, so it stays long-only either way).
    * max_weight: the largest weight of one name, in (0, 1].
    * min_names: the fewest names with a non-zero weight, >= 1.
    * risk_free_rate: annual, the rate max-Sharpe must beat and the Sharpe ratio subtracts.

    The effective cap is min(max_weight, 1/min_names). Capping every weight at 1/min_names
    is what guarantees min_names names: positive weights summing to at least 1 (exactly 1
    long-only; 1 plus the shorts otherwise), none above 1/min_names, need at least min_names
    names to get there. A universe of n names can then be invested only if n × cap >= 1,
    which `check_universe` tests before anything is solved.
    """

    long_only: bool
    max_weight: float
    min_names: int
    risk_free_rate: float

    @classmethod
    def from_params(cls, settings: Optimize) -> Constraints:
        """From the `optimize` params section (the only place their defaults live)."""
        return cls(
            long_only=settings.long_only,
            max_weight=settings.max_weight,
            min_names=settings.min_names,
            risk_free_rate=settings.risk_free_rate,
        )

    def __post_init__(self) -> None:
        if not 0.0 < self.max_weight <= 1.0:
            raise ValueError(f"optimize.max_weight must be in (0, 1], got {self.max_weight}")
        if self.min_names < 1:
            raise ValueError(f"optimize.min_names must be >= 1, got {self.min_names}")

    @property
    def cap(self) -> float:
        """The effective largest weight: min(max_weight, 1/min_names)."""
        return min(self.max_weight, 1.0 / self.min_names)

    @property
    def lower(self) -> float:
        """The lowest weight of the mean-variance methods: 0 long-only, −cap otherwise."""
        return 0.0 if self.long_only else -self.cap

    @property
    def cap_params(self) -> tuple[str, ...]:
        """The params the cap comes from: the tighter of max_weight and 1/min_names (both if equal)."""
        by_names = 1.0 / self.min_names
        if abs(self.max_weight - by_names) <= _CLEAN_TOLERANCE:
            return ("optimize.max_weight", "optimize.min_names")
        return ("optimize.min_names",) if by_names < self.max_weight else ("optimize.max_weight",)

    def cap_text(self) -> str:
        """The cap and where it comes from, for the report: "25% (1/optimize.min_names = 1/4)"."""
        if self.cap_params == ("optimize.max_weight",):
            return f"{self.cap:.0%} (optimize.max_weight)"
        return f"{self.cap:.0%} (1/optimize.min_names = 1/{self.min_names})"

    def check_universe(self, tickers: Sequence[object]) -> None:
        """Raise a ValueError naming the param when no portfolio of `tickers` can comply."""
        n = len(tickers)
        if n < self.min_names:
            raise ValueError(
                f"optimize.min_names = {self.min_names} but only {n} tickers can be optimized: {list(tickers)}"
            )
        if self.max_weight * n < 1.0:
            raise ValueError(
                f"optimize.max_weight = {self.max_weight} is infeasible for {n} tickers: "
                f"weights summing to 1 need max_weight >= 1/{n} = {1.0 / n:.4f}"
            )


# --------------------------------------------------------------------------------------------
# Weights: enforcing the cap, cleaning, validating


def _enforce_cap(weights: np.ndarray, cap: float) -> np.ndarray:
    """Non-negative weights with none above `cap` and the same total (when n × cap allows).

    Each round clips the names above the cap and spreads the excess over the names below
    it in proportion to their weights (equally if those are all 0); every round caps at
    least one more name, so it ends within n rounds.
    """
    w = weights.astype(np.float64, copy=True)
    for _ in range(w.size):
        over = w > cap
        if not over.any():
            break
        excess = float((w[over] - cap).sum())
        w[over] = cap
        free = w < cap
        if not free.any():
            break  # n × cap < total: the sum check of the caller reports it
        room = float(w[free].sum())
        w[free] += excess * (w[free] / room if room > 0.0 else 1.0 / free.sum())
    return w


def _clean(raw: np.ndarray, constraints: Constraints) -> np.ndarray:
    """Weights below MIN_WEIGHT set to 0, the long side rescaled so the sum is 1, capped.

    Shorts are only clipped at −cap (solver rounding); the long side absorbs the weight of
    the zeroed names, and `_enforce_cap` keeps the rescaling from pushing a name over the cap.
    """
    w = np.where(np.abs(raw) < MIN_WEIGHT, 0.0, raw)
    w = np.maximum(w, -constraints.cap)
    longs = w > 0.0
    total = float(w[longs].sum())
    if total > 0.0:
        w[longs] *= (1.0 - float(w[~longs].sum())) / total
        w[longs] = _enforce_cap(w[longs], constraints.cap)
    return w + 0.0  # no signed zeros


def _violations(w: np.ndarray, constraints: Constraints, tolerance: float, count_names: bool) -> list[str]:
    """What is wrong with the weights, in words (empty: they satisfy the constraints).

    Names are counted on cleaned weights only: solver output has near-zero noise.
    """
    if not np.isfinite(w).all():
        return ["weights are not finite"]
    problems = []
    if abs(w.sum() - 1.0) > tolerance:
        problems.append(f"weights sum to {w.sum():.6f}, not 1")
    if w.max() > constraints.cap + tolerance:
        problems.append(f"largest weight {w.max():.6f} is above the cap {constraints.cap:.6f}")
    if w.min() < constraints.lower - tolerance:
        problems.append(f"smallest weight {w.min():.6f} is below {constraints.lower:.6f}")
    names = int((np.abs(w) >= MIN_WEIGHT).sum())
    if count_names and names < constraints.min_names:
        problems.append(f"{names} names hold a weight, fewer than min_names={constraints.min_names}")
    return problems


# --------------------------------------------------------------------------------------------
# Methods: each returns raw weights in the order of `expected`, or raises


def _require_psd(cov: pd.DataFrame) -> None:
    """Raise unless the covariance is positive semi-definite (up to rounding).

    PyPortfolioOpt hands the solver the covariance as PSD without checking (cvxpy's
    `assume_PSD=True`), and a non-convex problem then comes back "optimal" with meaningless
    weights; singular but PSD matrices (duplicated or constant columns) are fine.
    """
    eigenvalues = np.linalg.eigvalsh(cov.to_numpy(dtype=np.float64))
    if eigenvalues[0] < -1.0e-10 * max(float(np.abs(eigenvalues).max()), 1.0e-300):
        raise ValueError(f"covariance is not positive semidefinite (smallest eigenvalue {eigenvalues[0]:.3g})")


def _max_attainable_return(expected: pd.Series, constraints: Constraints) -> float:
    """The highest expected return under the bounds: every name at the lower bound, then
    the remaining weight poured into the best names up to the cap (a fractional knapsack)."""
    values = np.sort(expected.to_numpy(dtype=np.float64))[::-1]
    w = np.full(values.size, constraints.lower)
    budget = 1.0 - w.sum()
    for i in range(values.size):
        step = min(constraints.cap - w[i], budget)
        w[i] += step
        budget -= step
    return float(w @ values)


def _frontier(expected: pd.Series, cov: pd.DataFrame, constraints: Constraints) -> EfficientFrontier:
    return EfficientFrontier(expected, cov, weight_bounds=(constraints.lower, constraints.cap), solver=SOLVER)


def _max_sharpe(expected: pd.Series, cov: pd.DataFrame, constraints: Constraints) -> np.ndarray:
    """The tangency portfolio. It exists only if some portfolio within the bounds expects
    more than the risk-free rate: with a cap, beating it with one asset is not enough."""
    rf = constraints.risk_free_rate
    best = _max_attainable_return(expected, constraints)
    if best <= rf:
        raise ValueError(
            f"no portfolio within the bounds beats the risk-free rate {rf:.4f} (best "
            f"attainable {best:.4f}; best asset {expected.idxmax()} at {expected.max():.4f})"
        )
    _require_psd(cov)
    frontier = _frontier(expected, cov, constraints)
    frontier.max_sharpe(risk_free_rate=rf)
    return np.asarray(frontier.weights, dtype=np.float64)


def _min_volatility(expected: pd.Series, cov: pd.DataFrame, constraints: Constraints) -> np.ndarray:
    _require_psd(cov)
    frontier = _frontier(expected, cov, constraints)
    frontier.min_volatility()
    return np.asarray(frontier.weights, dtype=np.float64)


def _hrp(expected: pd.Series, cov: pd.DataFrame, constraints: Constraints) -> np.ndarray:
    """HRP on the shrunk covariance, then the cap enforced by clip-and-redistribute.

    HRPOpt is given the covariance only: given returns as well, it would cluster and
    allocate on their sample covariance and ignore the shrunk one. HRP weights are
    positive by construction, so HRP is long-only even when shorts are allowed.
    """
    weights = HRPOpt(cov_matrix=cov).optimize()
    raw = np.array([weights[t] for t in expected.index], dtype=np.float64)
    return _enforce_cap(raw, constraints.cap)  # NaN passes through to the validation


#: The methods by name; tests replace entries to simulate failures.
_SOLVERS: dict[str, Callable[[pd.Series, pd.DataFrame, Constraints], np.ndarray]] = {
    "max_sharpe": _max_sharpe,
    "min_volatility": _min_volatility,
    "hrp": _hrp,
}


#: The attempts' reason when n × cap = 1 leaves equal weights as the only portfolio.
_ONE_PORTFOLIO = "the constraints admit one portfolio only (names × cap = 100%): equal weights"


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _attempt(
    method: str, expected: pd.Series, cov: pd.DataFrame, constraints: Constraints
) -> tuple[np.ndarray | None, str]:
    """(clean weights, notes) when the method gives a valid portfolio, else (None, why not).

    Every warning raised while solving is captured and reported in the notes or the
    reason, never shown.
    """
    with warnings.catch_warnings(record=True) as caught, np.errstate(all="ignore"):
        warnings.simplefilter("always")
        try:
            raw = _SOLVERS[method](expected, cov, constraints)
        except Exception as error:  # noqa: BLE001 - any solver failure means "next method"
            message = " ".join(str(arg) for arg in error.args) or repr(error.__cause__)
            failure: str | None = f"{type(error).__name__}: {_one_line(message)}"
        else:
            failure = None
    notes = "; ".join(dict.fromkeys(_one_line(str(w.message)) for w in caught))
    if failure is None:
        problems = _violations(raw, constraints, _SOLVER_TOLERANCE, count_names=False)
        if not problems:
            weights = _clean(raw, constraints)
            problems = _violations(weights, constraints, _CLEAN_TOLERANCE, count_names=True)
        if not problems:
            return weights, f"solver notes: {notes}" if notes else ""
        failure = "result violates the constraints: " + "; ".join(problems)
    return None, f"{failure} (solver notes: {notes})" if notes else failure


# --------------------------------------------------------------------------------------------
# What decided the weights


#: What decided a portfolio's weights (`Freedom.decided_by`).
DecidedBy = Literal["constraints", "expected returns and covariance", "covariance", "fallback"]

#: `Freedom.decided_by` by method: what each one looks at.
_DECIDED_BY: dict[str, DecidedBy] = {
    "max_sharpe": "expected returns and covariance",
    "min_volatility": "covariance",
    "hrp": "covariance",
    EQUAL_WEIGHT: "fallback",
}


@dataclass(frozen=True)
class Freedom:
    """How much choice the constraints left, and what decided the weights.

    * unique: the constraints admit one portfolio only. With n names and the cap c, weights
      summing to 1 need n × c >= 1; at n × c = 1 every name must sit at c, so the weights
      are equal whatever the forecasts say, and no method is run.
    * decided_by: "constraints" (unique), "expected returns and covariance" (max-Sharpe),
      "covariance" (min-volatility, HRP: the forecasts played no part) or "fallback" (equal
      weight because every listed method failed).
    * binding: the params whose cap holds at least one weight (`Constraints.cap_params`);
      empty when no name reached the cap.
    * at_cap: the names at the cap, largest expected return first.
    * low, high: the range the constraints leave one name's weight, [max(lower bound,
      1 − (n − 1) × cap), cap]: a narrow range means little was left to choose.
    * sentence: all of it in plain English, for the report (Markdown; tickers are escaped).
    """

    unique: bool
    decided_by: DecidedBy
    binding: tuple[str, ...]
    at_cap: tuple[object, ...]
    low: float
    high: float
    sentence: str


def weight_range(n: int, constraints: Constraints) -> tuple[float, float]:
    """The lowest and highest weight one of `n` names can hold in a portfolio summing to 1."""
    return max(constraints.lower, 1.0 - (n - 1) * constraints.cap), constraints.cap


def has_one_portfolio(n: int, constraints: Constraints) -> bool:
    """True when n names under the cap admit one portfolio only: n × cap = 1, all at the cap."""
    return n * constraints.cap <= 1.0 + _CLEAN_TOLERANCE


def freedom(weights: pd.Series, expected: pd.Series, method: str, constraints: Constraints) -> Freedom:
    """What decided `weights` (a result of `optimize_portfolio` with `method`), see `Freedom`."""
    n = len(weights)
    low, high = weight_range(n, constraints)
    unique = has_one_portfolio(n, constraints)
    capped = weights.index[(weights >= constraints.cap - _SOLVER_TOLERANCE).to_numpy()]
    at_cap = tuple(expected.reindex(capped).sort_values(ascending=False, kind="stable").index)
    binding = constraints.cap_params if len(at_cap) else ()
    cap = constraints.cap_text()
    if unique:
        fixes = [
            f"lower optimize.min_names below {n}"
            if param == "optimize.min_names"
            else f"raise optimize.max_weight above {constraints.cap:.0%}"
            for param in constraints.cap_params
            if (constraints.min_names > 1 if param == "optimize.min_names" else constraints.max_weight < 1.0)
        ]
        loosen = " or ".join(fixes) or "add tradable names to the universe"
        sentence = (
            f"The constraints left no choice: the cap is {cap} and {n} name{'s' if n > 1 else ''} × "
            f"{constraints.cap:.0%} = 100%, so "
            f"every name must hold exactly {constraints.cap:.0%}. These equal weights were fixed by the cap, not "
            f"chosen: the expected returns played no part in them. To let the forecasts decide, {loosen}."
        )
        return Freedom(True, "constraints", binding, at_cap, low, high, sentence)
    decided_by = _DECIDED_BY[method]
    room = f"Each of the {n} names could hold between {low:.0%} and {high:.0%}. "
    if method == EQUAL_WEIGHT:
        why = (
            "Every listed method failed, so the weights are equal by default: neither the forecasts nor the "
            "covariance decided them."
        )
    elif decided_by == "covariance":
        why = f"{method} chose the weights from the covariance alone: the expected returns played no part."
    else:
        why = f"{method} chose the weights from the expected returns and the covariance."
    names = ", ".join(map(md_escape, at_cap[:5])) + (f" and {len(at_cap) - 5} more" if len(at_cap) > 5 else "")
    if at_cap and len(at_cap) == int((weights.abs() >= MIN_WEIGHT).sum()):
        held = (
            f" Every name held ({names}) sits at the cap of {cap}: the method only chose which names to "
            "hold, the cap sized every one of them."
        )
    elif at_cap:
        verb, which = ("sits", "that one") if len(at_cap) == 1 else ("sit", "those")
        held = f" {len(at_cap)} of them ({names}) {verb} at the cap of {cap}: the cap, not the method, sized {which}."
    else:
        held = " No name reached the cap."
    return Freedom(False, decided_by, binding, at_cap, low, high, room + why + held)


def freedom_table(result: OptimizationResult, constraints: Constraints) -> pd.DataFrame:
    """The constraints beside what they did to the weights: `constraint, setting, effect`."""
    n = len(result.weights)
    f = result.freedom

    def cap_effect(param: str, looser: str) -> str:
        if param in f.binding:
            return f"sets the cap, held by {len(f.at_cap)} of {n} names"
        return "sets the cap, held by no name" if param in constraints.cap_params else looser

    rows = [
        (
            "optimize.max_weight",
            f"{constraints.max_weight:.0%}",
            cap_effect("optimize.max_weight", "looser than 1/min_names"),
        ),
        (
            "optimize.min_names",
            f"{constraints.min_names} (at most {1.0 / constraints.min_names:.0%} each)",
            cap_effect("optimize.min_names", "looser than max_weight"),
        ),
        (
            "optimize.long_only",
            str(constraints.long_only).lower(),
            "no short positions" if constraints.long_only else f"shorts down to -{constraints.cap:.0%}",
        ),
        (
            "names optimized",
            str(n),
            f"{n} × the cap = {n * constraints.cap:.0%}: "
            + ("exactly 100%, no room to choose" if f.unique else "more than 100%, room to choose"),
        ),
        (
            "weight range per name",
            f"{f.low:.0%} to {f.high:.0%}",
            "one portfolio only: equal weights" if f.unique else "the method chose within it",
        ),
        ("decided by", f.decided_by, result.method),
    ]
    return pd.DataFrame(rows, columns=["constraint", "setting", "effect"])


# --------------------------------------------------------------------------------------------
# The optimization


@dataclass(frozen=True)
class OptimizationResult:
    """The chosen portfolio and how it was found.

    * weights: per ticker of the universe (in `expected`'s order), sum 1, names below
      MIN_WEIGHT at exactly 0.
    * method: "max_sharpe", "min_volatility", "hrp" or "equal_weight".
    * attempts: `method, status, reason` per listed method, then equal_weight; status is
      "used", "failed" or "not tried"; reason says why a method failed (or solver notes).
    * expected_return, volatility, sharpe: annual, from `expected` and the covariance;
      sharpe = (expected_return − risk_free_rate) / volatility, NaN at zero volatility.
    * freedom: what decided the weights (`Freedom`): the constraints alone, the forecasts,
      the covariance or a fallback, and which names the cap holds.
    """

    weights: pd.Series
    method: str
    attempts: pd.DataFrame
    expected_return: float
    volatility: float
    sharpe: float
    freedom: Freedom


def _aligned(expected: pd.Series, cov: pd.DataFrame) -> pd.DataFrame:
    """The covariance in `expected`'s order; mismatched tickers or NaN are errors."""
    if expected.index.has_duplicates:
        raise ValueError("expected returns have duplicated tickers")
    if set(expected.index) != set(cov.index) or set(cov.index) != set(cov.columns):
        missing = sorted(map(str, set(expected.index) ^ set(cov.index)))
        raise ValueError(f"expected returns and covariance cover different tickers: {missing}")
    cov = cov.loc[expected.index, expected.index].astype(np.float64)
    bad = expected.index[expected.isna().to_numpy() | cov.isna().any().to_numpy()]
    if len(bad):
        raise ValueError(f"expected returns or covariance are NaN for {list(bad)}")
    return cov


def _performance(
    weights: np.ndarray, expected: pd.Series, cov: pd.DataFrame, risk_free_rate: float
) -> tuple[float, float, float]:
    """(annual expected return, annual volatility, Sharpe ratio) of the weights."""
    ret = float(weights @ expected.to_numpy(dtype=np.float64))
    variance = float(weights @ cov.to_numpy(dtype=np.float64) @ weights)
    vol = float(np.sqrt(max(variance, 0.0)))
    sharpe = (ret - risk_free_rate) / vol if vol > 0.0 else np.nan
    return ret, vol, float(sharpe)


def optimize_portfolio(
    expected: pd.Series,
    cov: pd.DataFrame,
    constraints: Constraints,
    methods: Sequence[str] = METHODS,
) -> OptimizationResult:
    """Weights from the first of `methods` that gives a valid portfolio, else equal weight.

    The universe is `expected`'s index (the covariance must cover the same tickers).
    Methods, from {"max_sharpe", "min_volatility", "hrp"}, are tried in the given order:

    * max_sharpe: the tangency portfolio for `constraints.risk_free_rate`.
    * min_volatility: the least volatile portfolio (ignores expected returns).
    * hrp: hierarchical risk parity on the covariance, capped (see `_hrp`), long-only.

    Mean-variance weights lie in [0, cap] long-only and [−cap, cap] otherwise. A method
    fails — logged, recorded in `attempts`, and the next one tried — when it raises (no
    portfolio within the bounds beats the risk-free rate, a covariance that is not positive semi-definite, a
    solver error or an infeasible status) or when its weights break a constraint (not
    finite, sum ≠ 1, out of bounds, fewer than min_names names of at least MIN_WEIGHT).
    Equal weight over the universe is the last resort; it always complies because
    `constraints.check_universe` (run first, raising ValueError for a universe no portfolio
    can fit) guarantees n × cap >= 1. Singular but positive semi-definite covariances
    (duplicated or constant series) are solved normally.

    At n × cap = 1 the constraints admit equal weights only: no method is run (each is "not
    tried" for that reason), the method is equal_weight and `freedom.unique` is True, so the
    report never credits a forecast with weights it could not change.
    """
    unknown = [m for m in methods if m not in _SOLVERS]
    if unknown or len(set(methods)) != len(methods):
        raise ValueError(f"optimize.methods must list distinct methods from {list(METHODS)}, got {list(methods)}")
    cov = _aligned(expected, cov)
    tickers = list(expected.index)
    constraints.check_universe(tickers)

    rows: list[dict[str, str]] = []
    weights: np.ndarray | None = None
    used = EQUAL_WEIGHT
    fixed = has_one_portfolio(len(tickers), constraints)
    for position, method in enumerate(methods):
        if fixed:
            rows.append({"method": method, "status": "not tried", "reason": _ONE_PORTFOLIO})
            continue
        if weights is not None:
            rows.append({"method": method, "status": "not tried", "reason": f"{used} succeeded"})
            continue
        weights, reason = _attempt(method, expected, cov, constraints)
        if weights is not None:
            used = method
            rows.append({"method": method, "status": "used", "reason": reason})
            continue
        rows.append({"method": method, "status": "failed", "reason": reason})
        following = methods[position + 1] if position + 1 < len(methods) else EQUAL_WEIGHT
        log.warning("optimize: %s failed (%s); falling back to %s", method, reason, following)
    if weights is None:
        weights = np.full(len(tickers), 1.0 / len(tickers))
        reason = _ONE_PORTFOLIO if fixed else "every listed method failed" if methods else "no method listed"
        rows.append({"method": EQUAL_WEIGHT, "status": "used", "reason": reason})
    else:
        rows.append({"method": EQUAL_WEIGHT, "status": "not tried", "reason": f"{used} succeeded"})

    ret, vol, sharpe = _performance(weights, expected, cov, constraints.risk_free_rate)
    series = pd.Series(weights, index=expected.index, name="weight")
    return OptimizationResult(
        weights=series,
        method=used,
        attempts=pd.DataFrame(rows, columns=list(ATTEMPT_COLUMNS)),
        expected_return=ret,
        volatility=vol,
        sharpe=sharpe,
        freedom=freedom(series, expected, used, constraints),
    )


# --------------------------------------------------------------------------------------------
# Efficient frontier


def efficient_frontier(
    expected: pd.Series, cov: pd.DataFrame, constraints: Constraints, points: int = 30
) -> pd.DataFrame:
    """The constrained efficient frontier: `volatility, expected_return`, by rising return.

    The first row is the min-volatility portfolio; the others minimize volatility for
    target returns evenly spaced from its return up to (just inside) the highest return the
    bounds allow, with `EfficientFrontier.efficient_return` under the same bounds as
    `optimize_portfolio`. Targets the solver cannot meet are skipped; an empty frame means
    not even the min-volatility portfolio could be solved (e.g. a covariance that is not
    positive semi-definite). One cvxpy problem is compiled and re-solved with a new target.
    """
    cov = _aligned(expected, cov)
    constraints.check_universe(list(expected.index))
    rows: list[tuple[float, float]] = []
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")  # a point that fails is skipped, its warning too
        try:
            lowest = _min_volatility(expected, cov, constraints)
        except Exception:  # noqa: BLE001 - no frontier at all; the caller gets an empty frame
            return pd.DataFrame(columns=["volatility", "expected_return"], dtype=np.float64)
        low_return, low_vol, _ = _performance(lowest, expected, cov, 0.0)
        rows.append((low_vol, low_return))
        high_return = _max_attainable_return(expected, constraints)
        top = high_return - 1.0e-6 * max(high_return - low_return, 1.0e-12)
        frontier = _frontier(expected, cov, constraints)
        for target in np.linspace(low_return, top, points)[1:]:
            if target <= low_return:
                continue  # every name expects the same: the frontier is one point
            try:
                frontier.efficient_return(float(target))
            except Exception:  # noqa: BLE001 - an infeasible target is not on the frontier
                continue
            w = np.asarray(frontier.weights, dtype=np.float64)
            if np.isfinite(w).all():
                ret, vol, _ = _performance(w, expected, cov, 0.0)
                rows.append((vol, ret))
    return pd.DataFrame(rows, columns=["volatility", "expected_return"])


def frontier_chart(
    frontier: pd.DataFrame, expected: pd.Series, cov: pd.DataFrame, result: OptimizationResult
) -> Figure:
    """The frontier, each asset as a dot, and the chosen portfolio as a star.

    Assets are labelled by ticker when there are at most 20; beyond that only the 20
    largest holdings are, so the chart stays readable for a 500-name universe.
    """
    import matplotlib.pyplot as plt
    from matplotlib.ticker import PercentFormatter

    cov = _aligned(expected, cov)
    asset_vol = np.sqrt(np.clip(np.diag(cov.to_numpy(dtype=np.float64)), 0.0, None))
    fig, ax = plt.subplots(figsize=(8, 5))
    if len(frontier):
        ax.plot(
            frontier["volatility"],
            frontier["expected_return"],
            linewidth=1.5,
            label="Efficient frontier (constrained)",
        )
    ax.scatter(asset_vol, expected.to_numpy(), s=18, color="grey", zorder=2, label="Assets")
    if len(expected) <= _CHART_LABELS:
        labelled = list(expected.index)
    else:
        held = result.weights.abs().sort_values(ascending=False, kind="stable")
        labelled = list(held[held > 0].index[:_CHART_LABELS])
    position = {t: i for i, t in enumerate(expected.index)}
    for ticker in labelled:
        i = position[ticker]
        ax.annotate(
            str(ticker),
            (asset_vol[i], expected.iloc[i]),
            xytext=(3, 3),
            textcoords="offset points",
            fontsize=7,
        )
    ax.scatter(
        [result.volatility],
        [result.expected_return],
        marker="*",
        s=220,
        color="red",
        zorder=3,
        label=f"Chosen portfolio ({result.method})",
    )
    ax.set_xlabel("Annual volatility")
    ax.set_ylabel("Expected annual return")
    ax.xaxis.set_major_formatter(PercentFormatter(1.0))
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_title("Efficient frontier and target portfolio")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------
# Shares and the target table


def discrete_allocation(weights: pd.Series, latest_prices: pd.Series, cash: float) -> tuple[pd.DataFrame, float]:
    """Whole shares to buy with `cash`: (table, leftover cash), with Σ value + leftover = cash.

    The table has one row per ticker of `weights`, columns `ALLOCATION_COLUMNS`: the target
    weight, the price, the shares (non-negative integers), their value and actual_weight =
    value / cash (so the actual weights and the leftover share add up to 1). Shares come
    from PyPortfolioOpt's `greedy_portfolio` — deterministic and solver-free: round every
    position down, then buy one share at a time of the name furthest below its weight.

    Only long weights are bought: short weights (long_only = false) are ignored and get 0
    shares, and the long weights are rescaled to sum to 1, so the cash buys the long book.
    Cash <= 0 buys nothing and is returned as the leftover. A long ticker without a
    positive price is an error.
    """
    if not np.isfinite(cash):
        raise ValueError(f"cash must be a finite amount, got {cash}")
    weights = weights.astype(np.float64)
    price = latest_prices.reindex(weights.index).astype(np.float64)
    longs = weights[weights > 0.0]
    unpriced = longs.index[~(price.reindex(longs.index) > 0.0).to_numpy()]
    if len(unpriced):
        raise ValueError(f"no positive latest price for {list(unpriced)}")

    shares = pd.Series(0, index=weights.index, dtype=np.int64)
    if cash > 0.0 and len(longs):
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            # pypfopt divides by the value bought so far, 0 before the first share
            warnings.simplefilter("ignore")
            bought, _ = DiscreteAllocation(
                (longs / longs.sum()).to_dict(),
                price.reindex(longs.index),
                total_portfolio_value=float(cash),
            ).greedy_portfolio()
        for ticker, count in bought.items():
            shares[ticker] = int(count)
    value = shares * price.fillna(0.0)
    table = pd.DataFrame(
        {
            "ticker": weights.index,
            "weight": weights.to_numpy(),
            "price": price.to_numpy(),
            "shares": shares.to_numpy(),
            "value": value.to_numpy(),
            "actual_weight": (value / cash).to_numpy() if cash > 0.0 else 0.0,
        },
        columns=list(ALLOCATION_COLUMNS),
    )
    return table, float(cash - table["value"].sum())


def target_weights_table(result: OptimizationResult, expected: pd.Series, allocation: pd.DataFrame) -> pd.DataFrame:
    """The rows of the warehouse table target_weights(run_id, ticker), without the run_id.

    One row per ticker of the optimized universe (weight 0 included), columns
    `TARGET_COLUMNS`: weight and method from the result, the annual expected return, and
    the shares, price and value from `discrete_allocation` of the same weights.
    """
    table = pd.DataFrame(
        {
            "ticker": result.weights.index,
            "weight": result.weights.to_numpy(),
            "method": result.method,
            "expected_return": expected.reindex(result.weights.index).to_numpy(),
        }
    )
    shares = allocation[["ticker", "shares", "price", "value"]]
    missing = set(table["ticker"]) - set(shares["ticker"])
    if missing:
        raise ValueError(f"allocation lacks tickers {sorted(map(str, missing))}")
    table = table.merge(shares, on="ticker", how="left", validate="one_to_one")
    return table[list(TARGET_COLUMNS)]
