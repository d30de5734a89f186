"""Report charts: every figure has a title and axis labels, and a sentence to go with it.

Functions take tables and return a matplotlib Figure (the notebook shows it) or a short
Markdown sentence that interprets the same numbers, so the text never disagrees with
the plot.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

from bentley.reporting import md_escape


def _wide(prices: pd.DataFrame, column: str) -> pd.DataFrame:
    return prices.pivot(index="date", columns="ticker", values=column).sort_index()


def rebased_prices(prices: pd.DataFrame) -> pd.DataFrame:
    """Adjusted closes rebased to 100 on each ticker's first row."""
    wide = _wide(prices, "adj_close")
    return 100 * wide / wide.bfill().iloc[0]


def rebased_prices_chart(prices: pd.DataFrame, benchmark: str) -> Figure:
    rebased = rebased_prices(prices)
    fig, ax = plt.subplots(figsize=(9, 4))
    for ticker in rebased.columns:
        style = {"color": "black", "linewidth": 2.2} if ticker == benchmark else {"linewidth": 1.0}
        ax.plot(rebased.index, rebased[ticker], label=ticker, **style)
    ax.set_title("Adjusted close, rebased to 100 at the start of the window")
    ax.set_xlabel("Session")
    ax.set_ylabel("Index (first session = 100)")
    ax.legend(ncol=5, loc="upper left")
    fig.tight_layout()
    return fig


def performance_sentence(prices: pd.DataFrame, benchmark: str) -> str:
    last = rebased_prices(prices).ffill().iloc[-1] - 100
    stocks = last.drop(labels=[benchmark], errors="ignore")
    if stocks.empty:
        return "No stock prices arrived."
    best, worst = stocks.idxmax(), stocks.idxmin()
    bench = f" against {last[benchmark]:+.1f}% for the benchmark {md_escape(benchmark)}" if benchmark in last else ""
    return (
        f"Over the window, **{md_escape(best)}** gained the most ({stocks[best]:+.1f}%) and **{md_escape(worst)}** the least "
        f"({stocks[worst]:+.1f}%){bench}."
    )


def split_chart(prices: pd.DataFrame) -> Figure | None:
    """Raw and adjusted close around the latest split: why adjusted prices matter."""
    splits = prices[prices["split_ratio"] != 1.0].sort_values("date")
    if splits.empty:
        return None
    split = splits.iloc[-1]
    series = prices[prices["ticker"] == split["ticker"]].set_index("date").sort_index()
    position = series.index.get_loc(split["date"])
    window = series.iloc[max(position - 40, 0) : position + 40]
    fig, ax = plt.subplots(figsize=(9, 3.4))
    ax.plot(window.index, window["close"], label="close (as traded)")
    ax.plot(window.index, window["adj_close"], label="adj_close (split and dividend adjusted)")
    ax.axvline(split["date"], color="grey", linestyle="--", linewidth=1)
    ax.set_title(f"{split['ticker']}: {split['split_ratio']:g}-for-1 split on {split['date']:%Y-%m-%d}")
    ax.set_xlabel("Session")
    ax.set_ylabel("Price (USD)")
    ax.legend(loc="best")
    fig.tight_layout()
    return fig


def rows_chart(loaded: pd.DataFrame) -> Figure:
    """Rows upserted by this run against rows now in each warehouse table."""
    fig, ax = plt.subplots(figsize=(9, 3))
    positions = range(len(loaded))
    ax.barh([p + 0.2 for p in positions], loaded["rows_in_table"], height=0.4, label="rows in table")
    ax.barh([p - 0.2 for p in positions], loaded["rows_upserted"], height=0.4, label="rows upserted by this run")
    ax.set_yticks(list(positions), loaded["table"])
    ax.set_xscale("log")
    ax.set_title("Warehouse load")
    ax.set_xlabel("Rows (log scale)")
    ax.set_ylabel("Table")
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def latest_sentence(features: pd.DataFrame, prices: pd.DataFrame, settings) -> str:  # noqa: ANN001
    """Which tickers look overbought or oversold, and how many trade above their long average."""
    last_date = features["date"].max()
    last = features[features["date"] == last_date].set_index("ticker")
    close = prices[prices["date"] == last_date].set_index("ticker")["adj_close"]
    rsi = last[f"rsi_{settings.rsi_period}"]
    hot, cold = sorted(rsi[rsi > 70].index), sorted(rsi[rsi < 30].index)
    long_sma = f"sma_{max(settings.sma_windows)}"
    above = (close.reindex(last.index) > last[long_sma]).sum()
    return (
        f"On {last_date:%Y-%m-%d}, RSI is above 70 (overbought) for {', '.join(map(md_escape, hot)) or 'no ticker'} and "
        f"below 30 (oversold) for {', '.join(map(md_escape, cold)) or 'no ticker'}; {above} of {len(last)} tickers close "
        f"above their {max(settings.sma_windows)}-day average."
    )
