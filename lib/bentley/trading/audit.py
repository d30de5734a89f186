"""The trade stage's backtests, session by session, in the warehouse: figures a reader can rebuild.

backtest_metrics publishes figures of three strategies: the signal's backtest
(SIGNAL_STRATEGY), the benchmark (BENCHMARK_STRATEGY) and the sweep's best configuration
(SWEEP_BEST). A figure is only auditable if what it rests on is stored beside it, so each of
the three gets its rows in backtest_positions (per session and ticker: score, target,
weights around the execution and at the close, USD traded) and backtest_equity (per session:
gross and net return, cost, equity, turnover, gross exposure), under the same run id and
strategy name. From those rows alone, SQL rebuilds the equity curve, the annual return, the
Sharpe ratio and the turnover to float precision (tests/unit/trading/test_audit.py does).

The sweep stores one row per configuration, not its paths, so the best configuration is run
again here: the backtest is deterministic, and the rerun is the run the sweep scored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from bentley.trading import backtest
from bentley.trading.backtest import BacktestResult, Market
from bentley.trading.strategy import Strategy
from bentley.warehouse import Warehouse

#: The audit tables, in the order `store` writes them.
TABLES: tuple[str, ...] = ("backtest_positions", "backtest_equity")


@dataclass(frozen=True)
class Audit:
    """One run's rows of backtest_positions and backtest_equity, every strategy together."""

    positions: pd.DataFrame
    equity: pd.DataFrame


def backtest_audit(
    run_id: str,
    strategy: Strategy,
    targets: pd.DataFrame,
    result: BacktestResult,
    benchmark_returns: pd.Series,
    sweep_table: pd.DataFrame,
    market: Market,
    **backtest_kwargs: Any,
) -> Audit:
    """The audit rows of the signal's backtest, the benchmark and the sweep's best.

    `result` is `targets` (the signal's, from `strategy`) run through `run_backtest` with
    `backtest_kwargs` on `market`; `benchmark_returns` the benchmark's returns named after its
    ticker; `sweep_table` the raw `sweep` on the same sessions. The sweep's best
    (`backtest.best_configuration`, the row backtest_metrics names) is run again from the
    signal's first session with the same arguments; no best (no configuration has a Sharpe
    ratio, so backtest_metrics has no SWEEP_BEST rows either) means no rows for it.
    """
    runs: list[tuple[str, BacktestResult, pd.DataFrame, pd.DataFrame | None]] = [
        (backtest.SIGNAL_STRATEGY, result, targets, strategy.scores),
    ]
    bench = backtest.benchmark_result(result, benchmark_returns)
    runs.append((backtest.BENCHMARK_STRATEGY, bench, bench.weights, None))
    best = backtest.best_configuration(sweep_table)
    if best is not None:
        config = backtest.sweep_parameters(sweep_table, best)
        best_targets = strategy.sweep_builder(targets.index.min())(config)
        runs.append(
            (
                backtest.SWEEP_BEST,
                backtest.run_backtest(best_targets, market, **backtest_kwargs),
                best_targets,
                strategy.sweep_scores(config),
            )
        )
    return Audit(
        positions=pd.concat(
            [backtest.position_rows(run, aimed, scores, run_id, name) for name, run, aimed, scores in runs],
            ignore_index=True,
        ),
        equity=pd.concat([backtest.equity_rows(run, run_id, name) for name, run, _, _ in runs], ignore_index=True),
    )


def store(warehouse: Warehouse, run_id: str, audit: Audit) -> int:
    """Make `audit` the run's rows of the audit tables; returns the rows written.

    Each table's rows of the run are replaced in one transaction (`Warehouse.replace_where`):
    a rerun of the stage under the same run id (resume, --force) whose sessions, holdings or
    best configuration changed must not leave old rows beside the new, which would break every
    SQL sum, and a crash never leaves a table's rows of the run half-written.
    """
    frames = dict(zip(TABLES, (audit.positions, audit.equity), strict=True))
    for name, frame in frames.items():
        if (frame["run_id"] != run_id).any():
            raise ValueError(f"{name}: rows of another run than {run_id!r}")
    return sum(warehouse.replace_where(name, frame, run_id=run_id) for name, frame in frames.items())
