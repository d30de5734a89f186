"""The trade stage in two calls: the trading day, and the signal's backtest on the same strategy.

The trade notebook steers, it does not assemble: `run_trading_day` reads the stage's inputs,
scores the tickers, limits the target, books the paper day and writes what the stage owns;
`backtest_signal` runs the same strategy over history with its parameter sweep. Each returns
a result object whose frames, figures and sentences the notebook displays as they are, so
every decision below is made here, once, and is covered by tests:

* no champion prediction in `inputs.latest_predictions`'s look-back means no model history:
  the model component is 0 for every ticker, and the signals sentence says so;
* the book is funded with `trade.paper.initial_cash`, or (null) the budget stage's investable
  cash, read only then, so a profile with fixed paper cash does not need the budget stage;
* the session booked is the latest exchange session on or before the logical date, so a
  weekend or holiday date books the session before it;
* a backdated run books into its own book (`broker.choose_book`), never over later days.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd

from bentley import calendar, inputs
from bentley.analytics import risk as risk_lib
from bentley.trading import audit, backtest, broker
from bentley.trading import strategy as strategy_lib
from bentley.trading.limits import Limits

if TYPE_CHECKING:  # matplotlib is imported by the chart helpers only, when they are called
    from matplotlib.figure import Figure

    from bentley.config import MinObservations, Trade
    from bentley.stage import Params
    from bentley.warehouse import Warehouse

#: The backtest figures the report shows and the runner logs (as `backtest_<metric>`).
HEADLINE_METRICS: tuple[str, ...] = (
    "annual_return",
    "annual_volatility",
    "sharpe_ratio",
    "sortino_ratio",
    "max_drawdown",
    "beta",
    "var_95_historical",
)


@dataclass(frozen=True)
class TradingDay:
    """What one trade run decided and booked for its session, ready to display."""

    session: pd.Timestamp  # the exchange session booked: the latest on or before the logical date
    prices: pd.DataFrame  # the window's prices, adjusted as of the logical date, benchmark included
    benchmark: str
    model_history: pd.DataFrame  # the champion's point-in-time probabilities (empty: no champion)
    strategy: strategy_lib.Strategy
    limits: Limits
    signals: pd.DataFrame  # the session's rows of `signals` (without the run id)
    limit_events: pd.DataFrame  # the session's rows of `risk_limit_events`
    book: broker.BookChoice
    paper: broker.PaperDay
    paper_returns: pd.Series  # the book's daily returns so far
    paper_benchmark: pd.Series  # the benchmark's returns on the same sessions
    paper_performance: pd.DataFrame  # the book's `risk_metrics` rows (empty before two returns)
    signals_sentence: str
    ledger_sentence: str  # which book this run wrote and why, then the day's fills, orders and equity
    paper_sentence: str

    @property
    def orders(self) -> pd.DataFrame:
        """The day's new orders: side, shares, reference price, value and target weight."""
        return broker.orders_summary(self.paper)

    @property
    def metrics(self) -> dict[str, float]:
        """The numbers the runner logs for the day."""
        return {
            "names_held": float((self.signals["weight"] > 0).sum()),
            "limit_events": float(len(self.limit_events)),
            "orders": float(self.paper.n_orders),
            "fills": float(self.paper.n_fills),
            "paper_equity": self.paper.equity,
        }

    def paper_chart(self) -> Figure | None:
        """Growth of 1 in the book against the benchmark; None until the book has figures."""
        if self.paper_performance.empty:
            return None
        return strategy_lib.paper_chart(self.paper_returns, self.paper_benchmark, self.book.name)


@dataclass(frozen=True)
class SignalBacktest:
    """The signal over history, the benchmark on the same sessions, and the sweep around it."""

    start: pd.Timestamp  # the first session with an out-of-sample model probability
    result: backtest.BacktestResult
    benchmark_returns: pd.Series
    metrics: pd.DataFrame  # `backtest_metrics` rows of the signal and the benchmark
    cost_drag: float | None  # annual return lost to costs; None while too few returns to publish it
    sweep: pd.DataFrame  # `backtest_sweep` rows as published (figures on too few returns are NULL)
    swept: pd.DataFrame  # the raw sweep, every configuration's figures
    summary_sentence: str
    notes: dict[str, str]  # the tearsheet's sentences: drawdown, monthly, exposure, costs
    overfitting_note: str
    risk_free_rate: float  # annual, for the charts that compare with cash
    minimums: MinObservations  # returns a figure needs before it is published

    @property
    def headline(self) -> pd.DataFrame:
        """HEADLINE_METRICS of the signal and the benchmark, metric × strategy, n/a where unpublished."""
        return risk_lib.published_table(self.metrics, "strategy", HEADLINE_METRICS).T

    @property
    def limit_actions(self) -> pd.DataFrame:
        """How often each rule changed a target over the backtest (empty: no limit bound)."""
        return self.result.limit_events.groupby("rule").size().rename("actions").to_frame()

    @property
    def figures(self) -> dict[str, float]:
        """The numbers the runner logs for the backtest and the sweep (NaN where unpublished)."""
        signal = self.metrics[self.metrics["strategy"] == backtest.SIGNAL_STRATEGY].set_index("metric")["value"]
        return {
            **{f"backtest_{name}": float(signal[name]) for name in HEADLINE_METRICS},
            "backtest_cost_drag": float("nan") if self.cost_drag is None else self.cost_drag,
            "sweep_configurations": float(len(self.sweep)),
            "sweep_best_sharpe": float(self.sweep["sharpe_ratio"].max()),
        }

    def sweep_chart(self) -> Figure | None:
        """Sharpe ratio over the grid; None when no configuration has one yet."""
        if not self.sweep["sharpe_ratio"].notna().any():
            return None
        return backtest.sweep_heatmap(self.sweep, "entry_threshold", "model_weight")


def run_trading_day(warehouse: Warehouse, params: Params, logical_date: dt.date, run_id: str) -> TradingDay:
    """Score, limit and book the logical date's session; write `signals`, `risk_limit_events`
    and the paper book's `risk_metrics` rows (the broker writes the ledger).

    `params` holds the trade stage's sections (universe, history, features, technical, risk,
    trade, workflow). Raises ValueError naming the missing input when an upstream stage has
    not run: prices (etl), target weights of this run (optimize), investable cash (budget,
    only when `trade.paper.initial_cash` is null).
    """
    settings = params.trade
    benchmark = params.universe.benchmark
    prices = inputs.load_prices(warehouse, params, logical_date)
    model_history = champion_history(warehouse, params, logical_date)
    plan = strategy_lib.build_strategy(
        prices,
        inputs.load_window(warehouse, params, logical_date, "features"),
        inputs.load_window(warehouse, params, logical_date, "sentiment_daily"),
        model_history,
        trade=settings,
        feature_settings=params.features,
        technical_settings=params.technical,
        benchmark=benchmark,
        tradable=inputs.tradable_tickers(warehouse, params),
    )
    session = pd.Timestamp(calendar.latest_session_on_or_before(logical_date, params.workflow.calendar))
    limits = Limits.from_params(settings.limits)
    target = plan.live_target(inputs.target_weights(warehouse, run_id), session)
    decide = strategy_lib.LimitedTarget(target, limits)
    book = broker.choose_book(warehouse, settings.paper.portfolio, session)
    paper = broker.run_paper_day(
        warehouse,
        decide,
        portfolio=book.name,
        as_of=session,
        initial_cash=paper_cash(warehouse, settings, logical_date),
        costs=settings.costs,
        execution=settings.execution,
        run_id=run_id,
    )
    today = plan.today(target, decide, session)
    warehouse.upsert("signals", inputs.with_run_id(today, run_id, list(today.columns)))
    events = decide.events(run_id, session)
    warehouse.upsert("risk_limit_events", events)
    paper_returns = broker.paper_returns(warehouse, book.name)
    paper_benchmark = strategy_lib.benchmark_returns(prices, benchmark, paper_returns.index)
    performance = strategy_lib.paper_metrics(
        paper_returns, paper_benchmark, params.risk.risk_free_rate, run_id, book.name, params.risk.min_observations
    )
    if len(performance):
        warehouse.upsert("risk_metrics", performance)
    return TradingDay(
        session=session,
        prices=prices,
        benchmark=benchmark,
        model_history=model_history,
        strategy=plan,
        limits=limits,
        signals=today,
        limit_events=events,
        book=book,
        paper=paper,
        paper_returns=paper_returns,
        paper_benchmark=paper_benchmark,
        paper_performance=performance,
        signals_sentence=strategy_lib.signals_sentence(today, settings.entry_threshold, model_history),
        ledger_sentence=f"{book.reason}\n\n{broker.ledger_sentence(paper)}",
        paper_sentence=strategy_lib.paper_sentence(paper_returns, performance, book.name),
    )


def champion_history(warehouse: Warehouse, params: Params, logical_date: dt.date) -> pd.DataFrame:
    """The probabilities of the model that predicted last, over the history window: its
    out-of-sample rows then its live ones. Empty when no champion predicted recently, which
    makes the model component 0 (a coin flip) for every ticker and session."""
    live = inputs.latest_predictions(warehouse, logical_date)
    if live.empty:
        return live
    start, end = params.history.window(logical_date)
    return inputs.model_history(warehouse, live["model_name"].iloc[0], live["model_version"].iloc[0], start, end)


def paper_cash(warehouse: Warehouse, settings: Trade, logical_date: dt.date) -> float:
    """The cash a new paper book starts with: `trade.paper.initial_cash`, or the budget's
    investable cash when that is null (read only then: fixed paper cash needs no budget)."""
    fixed = settings.paper.initial_cash
    return float(fixed) if fixed is not None else inputs.investable_cash(warehouse, logical_date)


def backtest_signal(warehouse: Warehouse, params: Params, day: TradingDay, run_id: str) -> SignalBacktest:
    """Backtest the day's strategy and sweep `trade.sweep` around it; write `backtest_metrics`,
    `backtest_sweep` and the audit tables (`backtest_positions`, `backtest_equity`).

    The backtest starts at the model's first out-of-sample session and sizes by trailing
    inverse volatility (the optimizer runs for the logical date only); it trades the
    tradable tickers, never the benchmark. Figures resting on fewer returns than
    `risk.min_observations` are stored NULL with the reason.
    """
    settings = params.trade
    rf, minimums = params.risk.risk_free_rate, params.risk.min_observations
    plan = day.strategy
    start = strategy_lib.backtest_start(day.model_history, plan.sessions)
    market = backtest.Market.from_prices(day.prices[day.prices["ticker"] != day.benchmark])
    run: dict[str, Any] = {
        "execution": settings.execution,
        "costs": settings.costs,
        "limits": day.limits,
        "risk_free_rate": rf,
        "capital": settings.capital,
    }
    targets = plan.backtest_targets().loc[start:]
    result = backtest.run_backtest(targets, market, **run)
    bench = strategy_lib.benchmark_returns(day.prices, day.benchmark, result.returns.index)
    metrics = backtest.backtest_metrics(
        result, bench, rf, run_id, backtest.SIGNAL_STRATEGY, minimums=minimums, garch=False
    )
    warehouse.upsert("backtest_metrics", metrics)
    grid = settings.sweep.model_dump()
    swept = backtest.sweep(plan.sweep_builder(start), grid, market, **run)
    table = backtest.published_sweep(swept, minimums)
    warehouse.upsert("backtest_sweep", inputs.with_run_id(table, run_id, ["config", *grid, *backtest.SWEEP_METRICS]))
    warehouse.upsert(
        "backtest_metrics",
        backtest.selection_metrics(result, swept, rf, run_id, backtest.SIGNAL_STRATEGY, minimums),
    )
    audit.store(warehouse, run_id, audit.backtest_audit(run_id, plan, targets, result, bench, swept, market, **run))
    drag, _ = backtest.published_cost_drag(result, minimums)
    return SignalBacktest(
        start=start,
        result=result,
        benchmark_returns=bench,
        metrics=metrics,
        cost_drag=drag,
        sweep=table,
        swept=swept,
        summary_sentence=backtest.summary_sentence(result, bench, rf, minimums),
        notes=backtest.tearsheet_sentences(result, bench, minimums),
        overfitting_note=backtest.overfitting_note(swept, minimums, params.risk.dsr_confidence),
        risk_free_rate=rf,
        minimums=minimums,
    )
