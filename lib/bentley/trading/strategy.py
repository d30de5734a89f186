"""The trade stage's strategy: warehouse tables in, scores and target weights out.

One `Strategy` holds what every part of the stage needs, computed once: the session × ticker
grid (tradable tickers only: neither the benchmark nor any other index is ever scored, held
or ordered), close-to-close returns, the three signal components, their weighted
contributions and the score. From there:

* `backtest_targets` — sized by point-in-time inverse volatility. Re-running the optimizer
  for every historical session (a cvxpy solve per day, with the predictions of that day)
  is what the live path does once; the backtest uses the closest thing that needs no
  future data, and says so in the report.
* `live_target` — the logical date, sized by the optimize stage's target weights.
* `sweep_builder` — targets for one configuration of the sweep grid, reusing the
  components (only the weights and the threshold change).
* `LimitedTarget` — the live risk-limits step the paper broker calls after marking the
  book to market, when the weights held and the session's return are known.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from bentley.analytics import risk
from bentley.analytics import technical as technical_lib
from bentley.analytics.risk import returns_from_prices
from bentley.reporting import md_escape
from bentley.sources.base import tradable_only
from bentley.trading import signals
from bentley.trading.limits import Decision, Limits, apply_limits

if TYPE_CHECKING:  # matplotlib is imported by the chart helper only, when it is called
    from matplotlib.figure import Figure

    from bentley.config import Features, MinObservations, Technical, Trade


@dataclass
class Strategy:
    sessions: pd.DatetimeIndex
    tickers: pd.Index
    returns: pd.DataFrame  # close-to-close, sessions x tickers (first session NaN)
    components: dict[str, pd.DataFrame]
    contributions: dict[str, pd.DataFrame]
    scores: pd.DataFrame
    settings: Trade  # the trade params section

    def targets(self, scores: pd.DataFrame, base: pd.DataFrame, entry_threshold: float) -> pd.DataFrame:
        s = self.settings
        return signals.target_weights(
            scores,
            base,
            self.returns,
            entry_threshold=entry_threshold,
            long_only=s.long_only,
            vol_target=s.vol_target,
            vol_window=s.vol_window,
            max_gross=s.limits.max_gross_exposure,
        )

    def backtest_targets(self) -> pd.DataFrame:
        base = signals.inverse_volatility(self.returns, self.settings.vol_window)
        return self.targets(self.scores, base, self.settings.entry_threshold)

    def live_target(self, optimizer_weights: pd.Series, day: Any) -> pd.Series:
        """The logical date's weights before limits: the score gates, the optimizer sizes."""
        base = pd.DataFrame(
            np.broadcast_to(optimizer_weights.reindex(self.tickers).fillna(0.0).to_numpy(), self.scores.shape),
            index=self.sessions,
            columns=self.tickers,
        )
        return self.targets(self.scores, base, self.settings.entry_threshold).loc[pd.Timestamp(day)]

    def sweep_builder(self, start: pd.Timestamp) -> Callable[[Mapping[str, float]], pd.DataFrame]:
        """Targets from `start` on for one sweep configuration (entry_threshold, model_weight)."""
        base = signals.inverse_volatility(self.returns, self.settings.vol_window)

        def build(config: Mapping[str, float]) -> pd.DataFrame:
            return self.targets(self.sweep_scores(config), base, config["entry_threshold"]).loc[start:]

        return build

    def sweep_scores(self, config: Mapping[str, float]) -> pd.DataFrame:
        """The score of one sweep configuration: the model's contribution weighted by its
        model_weight, the other components keeping their ratio."""
        shares = signals.with_model_weight(self.settings.signal_weights.model_dump(), config["model_weight"])
        return signals.score(self.components, shares)

    def today(self, target: pd.Series, decide: LimitedTarget, day: Any) -> pd.DataFrame:
        """The logical date's rows of `signals`: score, contributions, target and limited weight."""
        return signals.signal_rows(self.scores, self.contributions, target, decide.weights, day)


def build_strategy(
    prices: pd.DataFrame,
    features: pd.DataFrame,
    sentiment: pd.DataFrame,
    model_history: pd.DataFrame,
    *,
    trade: Trade,
    feature_settings: Features,
    technical_settings: Technical,
    benchmark: str,
    tradable: Collection[str] | None = None,
) -> Strategy:
    """Components and scores on every session of the prices, for the tradable tickers.

    `tradable` is `bentley.inputs.tradable_tickers` of the run (None: the ticker convention
    alone, `^` symbols being indices); the benchmark is left out either way. An index keeps
    its prices for the benchmark's returns, but gets no column: no score, no target, no order.
    """
    every_session = pd.DatetimeIndex(sorted(pd.to_datetime(prices["date"].unique())), name="date")
    returns = returns_from_prices(prices).reindex(every_session)  # the first session has no return
    allowed = set(tradable_only(returns.columns) if tradable is None else tradable) - {benchmark}
    tickers = pd.Index(sorted(t for t in returns.columns if t in allowed), name="ticker")
    returns = returns[tickers]
    sessions = returns.index
    events = technical_lib.technical_signals(
        features,
        prices,
        feature_settings,
        rsi_overbought=technical_settings.rsi_overbought,
        rsi_oversold=technical_settings.rsi_oversold,
    )
    components = {
        "model": signals.model_component(model_history, sessions, tickers),
        "technical": signals.technical_component(events, sessions, tickers, trade.technical_decay_sessions),
        "sentiment": signals.sentiment_component(sentiment, sessions, tickers, trade.sentiment_halflife_sessions),
    }
    weights = trade.signal_weights.model_dump()
    parts = signals.contributions(components, weights)
    return Strategy(
        sessions=sessions,
        tickers=tickers,
        returns=returns,
        components=components,
        contributions=parts,
        scores=parts["model"] + parts["technical"] + parts["sentiment"],
        settings=trade,
    )


def backtest_start(model_history: pd.DataFrame, sessions: pd.DatetimeIndex) -> pd.Timestamp:
    """The first session the model has an out-of-sample probability for (all sessions without one)."""
    if model_history.empty:
        return sessions[0]
    return max(sessions[0], pd.Timestamp(model_history["date"].min()))


class LimitedTarget:
    """The broker's decision step: today's target through the risk limits, events kept."""

    def __init__(self, target: pd.Series, limits: Limits) -> None:
        self.target = target
        self.limits = limits
        self.universe = list(target.index)
        self.decision: Decision | None = None
        self.tickers: list[Any] = []

    def __call__(self, held: pd.Series, session_return: float) -> pd.Series:
        self.tickers = sorted(set(self.universe) | set(held.index))
        previous = held.reindex(self.tickers).fillna(0.0).to_numpy()
        wanted = self.target.reindex(self.tickers).fillna(0.0).to_numpy()
        self.decision = apply_limits(previous, wanted, session_return, self.limits)
        return pd.Series(self.decision.weights, index=self.tickers)

    @property
    def weights(self) -> pd.Series:
        if self.decision is None:
            raise RuntimeError("the broker has not asked for today's decision yet")
        return pd.Series(self.decision.weights, index=self.tickers)

    def events(self, run_id: str, day: Any) -> pd.DataFrame:
        if self.decision is None:
            raise RuntimeError("the broker has not asked for today's decision yet")
        frame = self.decision.events_frame(self.tickers)
        frame.insert(0, "run_id", run_id)
        frame.insert(1, "date", pd.Timestamp(day))
        return frame


def benchmark_returns(prices: pd.DataFrame, benchmark: str, index: pd.Index) -> pd.Series:
    """The benchmark's close-to-close returns on `index` (a backtest's or the paper book's sessions)."""
    returns = returns_from_prices(prices[prices["ticker"] == benchmark])
    if benchmark not in returns:
        raise ValueError(f"universe.benchmark {benchmark!r} has no prices in the window")
    return returns[benchmark].reindex(pd.DatetimeIndex(index)).rename(benchmark)


def paper_metrics(
    returns: pd.Series,
    benchmark: pd.Series,
    risk_free_rate: float,
    run_id: str,
    portfolio: str,
    minimums: MinObservations,
) -> pd.DataFrame:
    """risk_metrics rows for scope `portfolio:<name>` from the paper book's daily returns (empty before two).

    A young book has few returns: its Sharpe ratio and the other annualized figures are
    stored as NULL with the reason (`risk.published`) until it has `minimums` of them.
    """
    if returns.dropna().size < 2:
        return pd.DataFrame()
    frame = returns.rename(f"portfolio:{portfolio}").to_frame()
    table = risk.risk_metrics(frame, benchmark.reindex(frame.index), risk_free_rate, garch=False)
    return risk.long_metrics(table, run_id, minimums)


def signals_sentence(today: pd.DataFrame, entry_threshold: float, model_history: pd.DataFrame) -> str:
    """Today's book and its top score (Markdown; the ticker is escaped data)."""
    held = today[today["weight"] != 0]
    leader = today.sort_values("score", ascending=False).iloc[0]
    drivers = {name: float(leader[name]) for name in signals.COMPONENTS}
    main = max(drivers, key=lambda name: abs(drivers[name]))
    model_note = (
        "" if len(model_history) else (" No champion has predicted yet, so the model component is 0 for every ticker.")
    )
    return (
        f"{len(held)} of {len(today)} tickers clear the entry threshold {entry_threshold:g} and are held, "
        f"{held['weight'].sum():.0%} of equity in total. "
        f"The top score is {md_escape(leader['ticker'])} at {leader['score']:+.3f}, "
        f"driven mostly by its {main} component ({drivers[main]:+.3f}).{model_note}"
    )


def paper_sentence(returns: pd.Series, performance: pd.DataFrame, portfolio: str) -> str:
    """The paper book's performance so far (Markdown; the scope is escaped text, not code: a code
    span shows backslashes as written, and math is parsed before code spans)."""
    if performance.empty:
        return (
            f"The paper portfolio has {returns.dropna().size} daily return(s) so far; its figures appear in "
            f"`risk_metrics` (scope {md_escape(f'portfolio:{portfolio}')}) once it has two, each with a value "
            "once it rests on enough returns (until then the row's note says how many it needs)."
        )
    n = int(performance["n_obs"].iloc[0])
    return (
        f"Over {n} daily returns the paper portfolio returned {risk.row_text(performance, 'cumulative_return', '+.2%')}, "
        f"with a max drawdown of {risk.row_text(performance, 'max_drawdown', '.2%')}; its Sharpe ratio is "
        f"{risk.row_text(performance, 'sharpe_ratio', '.2f')}."
    )


def paper_chart(returns: pd.Series, benchmark: pd.Series, portfolio: str) -> Figure:
    """Growth of 1 in the paper book against the benchmark over the booked sessions."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 3.6))
    ax.plot((1 + returns.fillna(0)).cumprod(), label=f"paper portfolio '{portfolio}'", linewidth=1.4)
    ax.plot(
        (1 + benchmark.reindex(returns.index).fillna(0)).cumprod(),
        label=str(benchmark.name),
        color="black",
        linewidth=1.0,
    )
    ax.set_title("Paper portfolio: growth of 1 since its first booked session")
    ax.set_ylabel("Growth of 1")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    return fig
