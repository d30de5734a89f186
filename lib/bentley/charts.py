"""Report charts: every figure has a title and axis labels, and a sentence to go with it.

Functions take tables and return a matplotlib Figure (the notebook shows it) or a short
Markdown sentence that interprets the same numbers, so the text never disagrees with
the plot.

Charts that read, at the cost of a chart (the helpers below, used by every stage's charts):
- `figure`: a plain `Figure` (no pyplot figure manager) with fixed margins, room on the right
  for a legend outside the data, so no tight-layout or tight-bbox pass is needed: one draw.
- `legend_outside`: legends never cover data.
- `pick_series`: at most `MAX_SERIES` coloured lines (the ones that must be there, then the
  most extreme); the rest are thin grey lines under one legend entry.
- `thin`: at most `MAX_POINTS` points per line (a report image is ~800 px wide).
- `date_axis`: few, concise date ticks (date locators are a large part of a chart's cost).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.transforms import Bbox

from bentley.reporting import md_escape

#: Coloured series per chart; more become grey "others".
MAX_SERIES = 6
#: Points per line: beyond this a line is thinned (every k-th point, the last one kept).
MAX_POINTS = 800
#: Ten distinct colours (tab10), in order.
COLOURS: tuple[tuple[float, float, float], ...] = tuple(plt.get_cmap("tab10").colors)  # type: ignore[attr-defined]
OTHERS = "#b8b8b8"


def figure(
    width: float = 9.0,
    height: float = 3.8,
    *,
    rows: int = 1,
    cols: int = 1,
    legend: bool = True,
    left: float = 0.85,
    bottom: float = 0.55,
    top: float = 0.35,
    right: float | None = None,
    **subplots: Any,
) -> tuple[Figure, Any]:
    """A figure with fixed margins in inches (left, bottom, top; right: 1.9 in for a legend, else 0.25).

    Fixed margins replace `tight_layout` and `bbox_inches="tight"`, each of which draws the whole
    figure once more just to measure it.
    """
    fig = Figure(figsize=(width, height), dpi=plt.rcParams["figure.dpi"])
    fig.bentley_fixed_layout = True  # type: ignore[attr-defined]  # `reporting.show`: one draw, no tight bbox
    room = (1.9 if legend else 0.25) if right is None else right
    fig.subplots_adjust(left=left / width, right=1 - room / width, bottom=bottom / height, top=1 - top / height)
    # A title's height fixed just above its axes: left automatic, matplotlib measures the bounding
    # box of every tick label at each draw to lift a title over any that reach above the axes,
    # which these charts never have (no ticks on top); that measuring cost ~0.03 s per axes.
    with plt.rc_context({"axes.titley": 1.0}):
        axes = fig.subplots(rows, cols, **subplots)
    return fig, axes


#: Figures kept for reuse, by kind: drawing a new figure creates its tick objects, which costs
#: about as much as drawing the data; a figure already shown (`reporting.show` marks it) is
#: cleared and drawn again instead.
_POOL: dict[str, tuple[Figure, Any]] = {}


def reused_figure(kind: str, *args: Any, **kwargs: Any) -> tuple[Figure, Any]:
    """`figure(*args, **kwargs)`, or the last figure of this `kind` once it has been shown, cleared
    of its data (lines, areas, markers, texts, legends) with its axes, ticks and margins kept."""
    pooled = _POOL.get(kind)
    if pooled is not None and getattr(pooled[0], "bentley_shown", False):
        fig, axes = pooled
        fig.bentley_shown = False  # type: ignore[attr-defined]
        for ax in fig.get_axes():
            for artist in [*ax.lines, *ax.collections, *ax.texts, *ax.patches, *ax.images]:
                artist.remove()
            if ax.legend_ is not None:
                ax.legend_.remove()
            ax.set_prop_cycle(None)
            ax.dataLim.set_points(Bbox.null().get_points())
            ax.ignore_existing_data_limits = True
            ax.set_autoscale_on(True)
        return fig, axes
    fig, axes = figure(*args, **kwargs)
    _POOL[kind] = (fig, axes)
    return fig, axes


def legend_outside(
    ax, handles: Sequence | None = None, labels: Sequence[str] | None = None, title: str | None = None
) -> None:
    """The axes' legend to the right of its data (nothing drawn when there is nothing to label)."""
    if handles is None:
        handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(
            handles,
            labels,
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            borderaxespad=0.0,
            title=title,
            fontsize=8,
            title_fontsize=8,
        )


def thin(index: Sequence, values: Sequence, max_points: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """Every k-th point so that at most `max_points` remain, the last point always kept."""
    x, y = np.asarray(index), np.asarray(values)
    if len(x) <= max_points:
        return x, y
    step = int(np.ceil(len(x) / max_points))
    keep = np.arange(0, len(x), step)
    if keep[-1] != len(x) - 1:
        keep = np.append(keep, len(x) - 1)
    return x[keep], y[keep]


def pick_series(frame: pd.DataFrame, keep: Iterable[object] = (), n: int = MAX_SERIES) -> tuple[list, list]:
    """(coloured, grey) columns: `keep` first (those present), then the columns whose last value
    is furthest from the median of last values, up to `n` in all; the rest grey."""
    columns = list(frame.columns)
    chosen = [c for c in keep if c in columns][:n]
    rest = [c for c in columns if c not in chosen]
    if len(chosen) < n and rest:
        last = frame[rest].ffill().iloc[-1] if len(frame) else pd.Series(0.0, index=rest)
        spread = (last - last.median()).abs().fillna(-1.0)
        extreme = set(spread.sort_values(ascending=False, kind="stable").index[: n - len(chosen)])
        chosen += [c for c in rest if c in extreme]  # in the frame's order: colours stay put
    grey = [c for c in columns if c not in chosen]
    return chosen, grey


def plot_series(
    ax,
    frame: pd.DataFrame,
    keep: Iterable[object] = (),
    n: int = MAX_SERIES,
    emphasize: Iterable[object] = (),
    others: str = "others",
) -> list:
    """Lines for the columns of `frame` (index on x): `pick_series` in colour, the rest grey with one
    legend entry ("others (k)"); columns in `emphasize` drawn thicker. Returns the coloured columns."""
    coloured, grey = pick_series(frame, keep, n)
    bold = set(emphasize)
    for column in grey:
        x, y = thin(frame.index, frame[column])
        ax.plot(x, y, color=OTHERS, linewidth=0.7, zorder=1)
    if grey:
        ax.plot([], [], color=OTHERS, linewidth=0.7, label=f"{others} ({len(grey)})")
    for i, column in enumerate(coloured):
        x, y = thin(frame.index, frame[column])
        ax.plot(
            x, y, color=COLOURS[i % len(COLOURS)], linewidth=2.0 if column in bold else 1.1, label=str(column), zorder=3
        )
    return coloured


def date_axis(ax, max_ticks: int = 7) -> None:
    """Concise date ticks, at most `max_ticks`."""
    import matplotlib.dates as mdates

    locator = mdates.AutoDateLocator(minticks=3, maxticks=max_ticks)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, show_offset=False))


def _wide(prices: pd.DataFrame, column: str) -> pd.DataFrame:
    return prices.pivot(index="date", columns="ticker", values=column).sort_index()


def rebased_prices(prices: pd.DataFrame) -> pd.DataFrame:
    """Adjusted closes rebased to 100 on each ticker's first row."""
    wide = _wide(prices, "adj_close")
    return 100 * wide / wide.bfill().iloc[0]


def rebased_prices_chart(prices: pd.DataFrame, benchmark: str) -> Figure:
    rebased = rebased_prices(prices)
    fig, ax = figure(9, 4)
    plot_series(ax, rebased, keep=[benchmark], emphasize=[benchmark], others="other tickers")
    ax.set_title("Adjusted close, rebased to 100 at the start of the window")
    ax.set_xlabel("Session")
    ax.set_ylabel("Index (first session = 100)")
    date_axis(ax)
    legend_outside(ax)
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
    fig, ax = figure(9, 3.4)
    ax.plot(window.index, window["close"], label="close (as traded)")
    ax.plot(window.index, window["adj_close"], label="adj_close (split and\ndividend adjusted)")
    ax.axvline(split["date"], color="grey", linestyle="--", linewidth=1)
    ax.set_title(f"{split['ticker']}: {split['split_ratio']:g}-for-1 split on {split['date']:%Y-%m-%d}")
    ax.set_xlabel("Session")
    ax.set_ylabel("Price (USD)")
    date_axis(ax)
    legend_outside(ax)
    return fig


def split_sentence(prices: pd.DataFrame) -> str:
    """What the split chart shows, and how many splits the window holds."""
    splits = prices[prices["split_ratio"] != 1.0].sort_values("date")
    if splits.empty:
        return "No split in this window."
    split = splits.iloc[-1]
    return (
        f"{len(splits)} split(s) in this window across {splits['ticker'].nunique()} ticker(s). On the latest, "
        f"{md_escape(str(split['ticker']))}'s traded close drops by a factor of {split['split_ratio']:g} "
        "while adj_close runs on: every return, indicator and model input uses the adjusted series."
    )


def rows_chart(loaded: pd.DataFrame) -> Figure:
    """Rows upserted by this run against rows now in each warehouse table."""
    fig, ax = figure(9, 0.6 + 0.45 * max(len(loaded), 2), left=1.1, bottom=0.5, top=0.35)
    positions = np.arange(len(loaded))
    ax.barh(positions + 0.2, loaded["rows_in_table"], height=0.4, label="rows in table", color=COLOURS[0])
    ax.barh(positions - 0.2, loaded["rows_upserted"], height=0.4, label="rows upserted\nby this run", color=COLOURS[1])
    ax.set_yticks(positions, loaded["table"])
    if (loaded[["rows_in_table", "rows_upserted"]] > 0).any().any():
        ax.set_xscale("log")
    ax.set_title("Warehouse load")
    ax.set_xlabel("Rows (log scale)")
    legend_outside(ax)
    return fig


def rows_sentence(loaded: pd.DataFrame) -> str:
    """What the load did, table by table, in one sentence (table names are ours, not data)."""
    if loaded.empty:
        return "Nothing was loaded."
    new = int(loaded["rows_upserted"].sum())
    parts = ", ".join(
        f"{int(r.rows_upserted):,} of {int(r.rows_in_table):,} `{r.table}` rows" for r in loaded.itertuples()
    )
    return (
        f"This run upserted {new:,} rows: {parts}. Upserts replace rows on their keys, so rows already "
        "in a table from earlier runs are counted once."
    )


def latest_sentence(features: pd.DataFrame, prices: pd.DataFrame, settings) -> str:
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


def flagged_days_sentence(scored: pd.DataFrame, ticker: object) -> str:
    """What an anomaly price chart shows for `ticker`: how many days are flagged, the latest and the
    largest, and by which detector (Markdown; the ticker is escaped data)."""
    mine = scored[(scored["ticker"] == ticker) & scored["flag"].astype(bool)]
    if mine.empty:
        return f"No day of {md_escape(ticker)} is flagged in the window."
    latest = mine.sort_values("date").iloc[-1]
    extreme = mine.sort_values(["max_abs_z", "if_score"], ascending=False, na_position="last").iloc[0]
    text = (
        f"{len(mine)} flagged day(s) for {md_escape(ticker)}; the latest on {pd.Timestamp(latest['date']):%Y-%m-%d} "
        f"({str(latest['method']).replace('_', ' ')}, a {latest['ret_1d']:+.1%} day)"
    )
    if extreme["date"] != latest["date"]:
        text += (
            f", the most extreme on {pd.Timestamp(extreme['date']):%Y-%m-%d} (|z| {extreme['max_abs_z']:.1f}, "
            f"a {extreme['ret_1d']:+.1%} day)"
        )
    return text + ". A red dot on a quiet stretch of the line is worth a look at the news of that day."
