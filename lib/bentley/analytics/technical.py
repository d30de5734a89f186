"""Rule-based technical signals from the features table: events, not opinions.

Each rule in `RULES` fires on the session a condition starts to hold, so a
signal is an event with a date ("RSI entered overbought on 2024-03-07"), not a
state repeated every day the condition lasts. Every event of the history is
kept; `current_signals` picks the recent ones for a report, so a backtest and a
report read the same table.

Conditions compare a session with the previous row of the same ticker only
(grouped shift and forward fill), so a signal on date t depends on data up to t
and never changes when later rows arrive: no lookahead. The whole table is
evaluated column-wise, one vectorized pass per rule, never a Python loop per row.

Directions follow the usual reading: +1 bullish, -1 bearish. RSI zones are read
as mean reversion (overbought is -1), Bollinger breakouts as momentum (a close
above the upper band is +1). Strength is a number in [0, 1] whose definition is
given per rule in `RULES`; it ranks events of the same rule, and is not a
probability and not comparable across rules.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from bentley.calendar import DEFAULT_CALENDAR, latest_session_on_or_before, sessions_before
from bentley.reporting import md_escape

if TYPE_CHECKING:
    from bentley.config import Features

#: Wilder's RSI guide levels, drawn by `price_panel_chart` when it is not given the technical
#: stage's thresholds (the features report has no `technical` section); signals always take them.
RSI_OVERBOUGHT = 70.0
RSI_OVERSOLD = 30.0

#: Moving-average crosses use windows of at least this many sessions (50/200 by default).
MIN_CROSS_WINDOW = 50

#: Gap between the SMAs, as a fraction of the long SMA, at which cross strength reaches 1.
SMA_GAP_FULL = 0.01

#: Gap between MACD and its signal line, as a fraction of adj_close, at which strength reaches 1.
MACD_GAP_FULL = 0.002

_KEY = ["ticker", "date"]


@dataclass(frozen=True)
class Rule:
    """One signal rule: its direction and what its columns mean, for docs and reports."""

    direction: int
    fires_when: str
    strength: str
    value: str
    reference: str


#: Every rule `technical_signals` evaluates, in report order. "Previous" is the
#: previous row of the same ticker; short/long are the smallest and largest SMA
#: windows >= 50 in `settings.sma_windows`; ob/os are the RSI thresholds.
RULES: Mapping[str, Rule] = MappingProxyType(
    {
        "golden_cross": Rule(
            +1,
            "SMA short moves above SMA long (the previous strict ordering was below)",
            f"|short - long| / long / {SMA_GAP_FULL}, clipped to 1 (a {SMA_GAP_FULL:.0%} gap is full strength)",
            "SMA short",
            "SMA long",
        ),
        "death_cross": Rule(
            -1,
            "SMA short moves below SMA long (the previous strict ordering was above)",
            f"|short - long| / long / {SMA_GAP_FULL}, clipped to 1",
            "SMA short",
            "SMA long",
        ),
        "rsi_overbought": Rule(
            -1,
            "RSI rises above ob (previous RSI <= ob)",
            "(RSI - ob) / (100 - ob): 0 at the threshold, 1 at RSI 100",
            "RSI",
            "ob",
        ),
        "rsi_oversold": Rule(
            +1,
            "RSI falls below os (previous RSI >= os)",
            "(os - RSI) / os: 0 at the threshold, 1 at RSI 0",
            "RSI",
            "os",
        ),
        "macd_bullish_cross": Rule(
            +1,
            "MACD moves above its signal line (the previous strict ordering was below)",
            f"|macd - macd_signal| / adj_close / {MACD_GAP_FULL}, clipped to 1",
            "macd",
            "macd_signal",
        ),
        "macd_bearish_cross": Rule(
            -1,
            "MACD moves below its signal line (the previous strict ordering was above)",
            f"|macd - macd_signal| / adj_close / {MACD_GAP_FULL}, clipped to 1",
            "macd",
            "macd_signal",
        ),
        "bollinger_breakout_up": Rule(
            +1,
            "adj_close closes above bb_upper (previous close <= previous bb_upper)",
            "(adj_close - bb_upper) / (bb_upper - bb_lower): band widths beyond the band, clipped to 1",
            "adj_close",
            "bb_upper",
        ),
        "bollinger_breakout_down": Rule(
            -1,
            "adj_close closes below bb_lower (previous close >= previous bb_lower)",
            "(bb_lower - adj_close) / (bb_upper - bb_lower), clipped to 1",
            "adj_close",
            "bb_lower",
        ),
    }
)

SIGNAL_COLUMNS = ["ticker", "date", "rule", "direction", "strength", "value", "reference"]


def rules_frame() -> pd.DataFrame:
    """`RULES` as a table, for the methods section of a report."""
    return pd.DataFrame(
        [{"rule": name, **vars(rule)} for name, rule in RULES.items()],
        columns=["rule", "direction", "fires_when", "strength", "value", "reference"],
    )


def cross_windows(settings: Features) -> tuple[int, int] | None:
    """(short, long) SMA windows for golden/death crosses: the smallest and largest >= 50.

    Shorter averages cross every few weeks and mean something else (swing
    trading); the classic cross is 50/200. None when fewer than two distinct
    windows qualify: the cross rules are then skipped.
    """
    eligible = sorted({int(w) for w in settings.sma_windows if int(w) >= MIN_CROSS_WINDOW})
    if len(eligible) < 2:
        return None
    return eligible[0], eligible[-1]


def rsi_thresholds(overbought: float | None, oversold: float | None) -> tuple[float, float]:
    """(overbought, oversold), checked; a missing one is Wilder's guide level (70/30)."""
    ob = RSI_OVERBOUGHT if overbought is None else float(overbought)
    os_ = RSI_OVERSOLD if oversold is None else float(oversold)
    if not 0.0 < os_ < ob < 100.0:
        raise ValueError(f"RSI thresholds need 0 < oversold < overbought < 100, got {os_} and {ob}")
    return ob, os_


def _aligned(features: pd.DataFrame, prices: pd.DataFrame) -> pd.DataFrame:
    """Features sorted by (ticker, date) with the session's adj_close joined from prices.

    A duplicated (ticker, date) makes "the previous row" ambiguous, so it is an error.
    """
    if features.duplicated(_KEY).any():
        examples = features.loc[features.duplicated(_KEY), _KEY].head(5).to_dict("records")
        raise ValueError(f"features has duplicate (ticker, date) rows, e.g. {examples}")
    close = prices.loc[prices["adj_close"].notna(), [*_KEY, "adj_close"]].copy()
    if close.duplicated(_KEY).any():
        examples = close.loc[close.duplicated(_KEY), _KEY].head(5).to_dict("records")
        raise ValueError(f"prices has duplicate (ticker, date) rows, e.g. {examples}")
    close["date"] = close["date"].astype(features["date"].dtype)
    frame = features.drop(columns=["adj_close"], errors="ignore").merge(
        close, on=_KEY, how="left", validate="one_to_one"
    )
    return frame.sort_values(_KEY, kind="mergesort").reset_index(drop=True)


def _floats(frame: pd.DataFrame, column: str) -> pd.Series:
    return frame[column].astype(np.float64)


def _line_state(diff: pd.Series, ticker: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Which side of the reference line each row is on (+1/-1), now and on the previous row.

    A row exactly on the line (or missing) keeps the side of the last row off it,
    so touching the line and bouncing back is not a cross, and crosses of one
    ticker alternate strictly between up and down.
    """
    side = pd.Series(np.sign(diff.to_numpy()), index=diff.index).replace(0.0, np.nan)
    side = side.groupby(ticker, sort=False).ffill()
    return side, side.groupby(ticker, sort=False).shift(1)


def _clip01(values: pd.Series) -> pd.Series:
    return values.replace([np.inf, -np.inf], 1.0).clip(0.0, 1.0)


def _events(
    frame: pd.DataFrame,
    rule: str,
    fired: pd.Series,
    strength: pd.Series,
    value: pd.Series,
    reference: pd.Series | float,
) -> pd.DataFrame:
    """The rows where `fired`, in the signal columns (ticker and date keep their dtypes)."""
    mask = fired.fillna(False).to_numpy(dtype=bool)
    ref = np.full(mask.sum(), reference) if isinstance(reference, float) else reference.to_numpy()[mask]
    events = frame.loc[mask, _KEY].reset_index(drop=True)
    events["rule"] = rule
    events["direction"] = np.int64(RULES[rule].direction)
    events["strength"] = _clip01(strength).to_numpy(dtype=np.float64)[mask]
    events["value"] = value.to_numpy(dtype=np.float64)[mask]
    events["reference"] = ref.astype(np.float64)
    return events


def _cross_events(
    frame: pd.DataFrame,
    line: pd.Series,
    reference: pd.Series,
    scale: pd.Series,
    full: float,
    up: str,
    down: str,
) -> list[pd.DataFrame]:
    """Up and down crosses of `line` through `reference`, strength |gap| / scale / full."""
    diff = line - reference
    side, previous = _line_state(diff, frame["ticker"])
    with np.errstate(divide="ignore", invalid="ignore"):
        strength = (diff.abs() / scale.abs()) / full
    crossed_up = (side == 1.0) & (previous == -1.0) & (diff > 0)
    crossed_down = (side == -1.0) & (previous == 1.0) & (diff < 0)
    return [
        _events(frame, up, crossed_up, strength, line, reference),
        _events(frame, down, crossed_down, strength, line, reference),
    ]


def technical_signals(
    features: pd.DataFrame,
    prices: pd.DataFrame,
    settings: Features,
    *,
    rsi_overbought: float,
    rsi_oversold: float,
) -> pd.DataFrame:
    """Every rule event in the history: `ticker, date, rule, direction, strength, value, reference`.

    `features` is the features table (`compute_features` output), `prices` gives
    adj_close for the Bollinger rules and the MACD strength scale, and `settings`
    the features settings (`sma_windows`, `rsi_period`); the RSI thresholds are the
    technical stage's (`technical.rsi_overbought`/`rsi_oversold`).
    `value` is the indicator that fired and `reference` the level it crossed
    (see `RULES`). Sorted by ticker, date and rule in `RULES` order.
    """
    ob, os_ = rsi_thresholds(rsi_overbought, rsi_oversold)
    frame = _aligned(features, prices)
    ticker = frame["ticker"]
    close = _floats(frame, "adj_close")
    events: list[pd.DataFrame] = []

    windows = cross_windows(settings)
    if windows is not None:
        short, long = (_floats(frame, f"sma_{w}") for w in windows)
        events += _cross_events(frame, short, long, long, SMA_GAP_FULL, "golden_cross", "death_cross")

    rsi = _floats(frame, f"rsi_{settings.rsi_period}")
    previous_rsi = rsi.groupby(ticker, sort=False).shift(1)
    entered_overbought = (rsi > ob) & (previous_rsi <= ob)
    entered_oversold = (rsi < os_) & (previous_rsi >= os_)
    events.append(_events(frame, "rsi_overbought", entered_overbought, (rsi - ob) / (100.0 - ob), rsi, ob))
    events.append(_events(frame, "rsi_oversold", entered_oversold, (os_ - rsi) / os_, rsi, os_))

    events += _cross_events(
        frame,
        _floats(frame, "macd"),
        _floats(frame, "macd_signal"),
        close,
        MACD_GAP_FULL,
        "macd_bullish_cross",
        "macd_bearish_cross",
    )

    upper, lower = _floats(frame, "bb_upper"), _floats(frame, "bb_lower")
    previous_close = close.groupby(ticker, sort=False).shift(1)
    previous_upper = upper.groupby(ticker, sort=False).shift(1)
    previous_lower = lower.groupby(ticker, sort=False).shift(1)
    width = upper - lower
    with np.errstate(divide="ignore", invalid="ignore"):
        above = (close - upper) / width
        below = (lower - close) / width
    broke_up = (close > upper) & (previous_close <= previous_upper)
    broke_down = (close < lower) & (previous_close >= previous_lower)
    events.append(_events(frame, "bollinger_breakout_up", broke_up, above, close, upper))
    events.append(_events(frame, "bollinger_breakout_down", broke_down, below, close, lower))

    signals = pd.concat(events, ignore_index=True)
    order = signals["rule"].map({name: i for i, name in enumerate(RULES)})
    signals = (
        signals.assign(_order=order)
        .sort_values(["ticker", "date", "_order"], kind="mergesort")
        .drop(columns="_order")
        .reset_index(drop=True)
    )
    signals["direction"] = signals["direction"].astype(np.int64)
    for column in ("strength", "value", "reference"):
        signals[column] = signals[column].astype(np.float64)
    return signals


def current_signals(
    signals: pd.DataFrame,
    as_of: dt.date | str | pd.Timestamp,
    lookback_sessions: int,
    calendar: str = DEFAULT_CALENDAR,
) -> pd.DataFrame:
    """Signals from the last `lookback_sessions` exchange sessions up to `as_of` (inclusive).

    Sessions come from the exchange calendar, not from the signal dates (which
    are sparse), so "5 sessions" means a trading week whatever fired. Events after
    `as_of` are excluded, so a report for a past date shows what was known then.
    Sorted newest first, then strongest first.
    """
    if lookback_sessions < 1:
        raise ValueError(f"lookback_sessions must be >= 1, got {lookback_sessions}")
    last = pd.Timestamp(latest_session_on_or_before(pd.Timestamp(as_of).date(), calendar))
    before = pd.Timestamp(sessions_before(last.date(), lookback_sessions, calendar))
    dates = pd.to_datetime(signals["date"])
    recent = signals[(dates > before) & (dates <= last)]
    return recent.sort_values(
        ["date", "strength", "ticker"], ascending=[False, False, True], kind="mergesort"
    ).reset_index(drop=True)


def signal_summary(signals: pd.DataFrame) -> pd.DataFrame:
    """Per rule (all of `RULES`, zero when it never fired): events, tickers, mean strength, last date.

    Listing rules that never fired makes "no death crosses" visible in a report
    instead of silently absent.
    """
    grouped = signals.groupby("rule", sort=False)
    counts = pd.DataFrame(
        {
            "n_signals": grouped.size(),
            "n_tickers": grouped["ticker"].nunique(),
            "mean_strength": grouped["strength"].mean(),
            "last_date": grouped["date"].max(),
        }
    )
    rules = rules_frame()[["rule", "direction"]]
    out = rules.merge(counts, left_on="rule", right_index=True, how="left")
    out["n_signals"] = out["n_signals"].fillna(0).astype(np.int64)
    out["n_tickers"] = out["n_tickers"].fillna(0).astype(np.int64)
    out["direction"] = out["direction"].astype(np.int64)
    return out.reset_index(drop=True)


_PANEL = {
    "golden_cross": "price",
    "death_cross": "price",
    "bollinger_breakout_up": "price",
    "bollinger_breakout_down": "price",
    "rsi_overbought": "rsi",
    "rsi_oversold": "rsi",
    "macd_bullish_cross": "macd",
    "macd_bearish_cross": "macd",
}


def price_panel_chart(
    features: pd.DataFrame,
    prices: pd.DataFrame,
    ticker: str,
    settings: Features,
    signals: pd.DataFrame | None = None,
    *,
    rsi_overbought: float | None = None,
    rsi_oversold: float | None = None,
) -> Figure:
    """Adjusted close with SMAs and Bollinger band, RSI and MACD panels, and signal markers.

    Each signal is marked on the panel of its indicator, at the value that fired:
    an up triangle for +1 and a down triangle for -1, one colour per rule. Legends sit to
    the right of the panels. Drawn in one pass (`bentley.charts.figure`: fixed margins, lines
    thinned to `charts.MAX_POINTS`, the MACD histogram as one filled area, not a bar per session).
    """
    from matplotlib.ticker import MaxNLocator

    from bentley import charts

    ob, os_ = rsi_thresholds(rsi_overbought, rsi_oversold)
    f = features[features["ticker"] == ticker].set_index("date").sort_index()
    p = prices[prices["ticker"] == ticker].set_index("date").sort_index()
    fig, (ax_price, ax_rsi, ax_macd) = charts.reused_figure(
        "price_panel", 9, 7.2, rows=3, sharex=True, gridspec_kw={"height_ratios": [3, 1, 1], "hspace": 0.12}, left=0.9
    )
    axes = {"price": ax_price, "rsi": ax_rsi, "macd": ax_macd}
    colours = charts.COLOURS

    ax_price.plot(*charts.thin(p.index, p["adj_close"]), color="black", linewidth=1.1, label="adj_close")
    windows = cross_windows(settings) or tuple(sorted(set(settings.sma_windows))[-2:])
    for i, window in enumerate(windows):
        ax_price.plot(*charts.thin(f.index, f[f"sma_{window}"]), linewidth=1, color=colours[i], label=f"SMA {window}")
    ax_price.fill_between(
        *charts.thin(f.index, f["bb_lower"]),
        charts.thin(f.index, f["bb_upper"])[1],
        alpha=0.15,
        color=colours[2],
        linewidth=0,
        label="Bollinger band",
    )
    ax_price.set_title(f"{ticker}: adjusted close, moving averages, Bollinger band and signals")
    ax_price.set_ylabel("Price (USD, adjusted)")

    rsi = f"rsi_{settings.rsi_period}"
    ax_rsi.plot(*charts.thin(f.index, f[rsi]), color="purple", linewidth=1)
    ax_rsi.axhline(ob, color="red", linewidth=0.8, linestyle="--")
    ax_rsi.axhline(os_, color="green", linewidth=0.8, linestyle="--")
    ax_rsi.set_ylabel(f"RSI {settings.rsi_period}")
    ax_rsi.set_ylim(0, 100)
    ax_rsi.set_yticks([0, os_, ob, 100])

    ax_macd.plot(*charts.thin(f.index, f["macd"]), linewidth=1, color=colours[0], label="MACD")
    ax_macd.plot(*charts.thin(f.index, f["macd_signal"]), linewidth=1, color=colours[1], label="signal")
    hist_x, hist_y = charts.thin(f.index, f["macd_hist"].astype(float))
    ax_macd.fill_between(hist_x, 0.0, hist_y, step="mid", color="grey", alpha=0.45, linewidth=0, label="histogram")
    ax_macd.set_ylabel("MACD")
    ax_macd.set_xlabel("Session")
    ax_macd.yaxis.set_major_locator(MaxNLocator(4))
    ax_price.yaxis.set_major_locator(MaxNLocator(6))
    charts.date_axis(ax_macd)

    if signals is not None:
        mine = signals[signals["ticker"] == ticker]
        rules, dates, values = mine["rule"].astype(str).to_numpy(), mine["date"].to_numpy(), mine["value"].to_numpy()
        palette = plt.get_cmap("tab10")
        for position, (rule, spec) in enumerate(RULES.items()):  # one colour per rule in every chart
            fired = rules == rule
            if not fired.any():
                continue
            # Markers on a line without a line: one artist drawn in one call, where a scatter
            # builds a collection with a path and colour per point (~15 ms each, 8 per chart).
            axes[_PANEL[rule]].plot(
                dates[fired],
                values[fired],
                linestyle="none",
                marker="^" if spec.direction > 0 else "v",
                markersize=6.7,  # the area of the scatter's s=45
                markerfacecolor=palette(position % 10),
                markeredgecolor="black",
                markeredgewidth=0.4,
                zorder=5,
                label=rule.replace("_", " "),
            )

    for ax in (ax_price, ax_rsi, ax_macd):  # labels placed, not measured against every tick label at each draw
        ax.yaxis.set_label_coords(-0.075, 0.5)  # and the three panels' labels aligned
        ax.xaxis.set_label_coords(0.5, -0.3)
        charts.legend_outside(ax)
    return fig


def chart_sentence(
    features: pd.DataFrame, prices: pd.DataFrame, signals: pd.DataFrame, ticker: str, settings: Features
) -> str:
    """What one ticker's panel shows, in a sentence: the close against its averages, RSI, and the
    latest signal (Markdown; the ticker is escaped data)."""
    frame = _aligned(features[features["ticker"] == ticker], prices[prices["ticker"] == ticker])
    if frame.empty:
        return f"No features for {md_escape(ticker)}."
    last = frame.iloc[-1]
    windows = cross_windows(settings) or tuple(sorted(set(settings.sma_windows))[-2:])
    sides = []
    for window in windows:
        average = last.get(f"sma_{window}")
        if pd.notna(average) and pd.notna(last["adj_close"]):
            sides.append(
                f"{'above' if last['adj_close'] > average else 'below'} its {window}-day average ({average:,.2f})"
            )
    position = f" closed at {last['adj_close']:,.2f}, " + " and ".join(sides) if sides else " has no averages yet"
    rsi = last.get(f"rsi_{settings.rsi_period}")
    rsi_text = f"; RSI {rsi:.0f}" if pd.notna(rsi) else ""
    mine = signals[signals["ticker"] == ticker]
    if mine.empty:
        latest = "; no rule fired in the window"
    else:
        event = mine.sort_values("date").iloc[-1]
        kind = "bullish" if event["direction"] > 0 else "bearish"
        latest = (
            f"; its latest signal is {str(event['rule']).replace('_', ' ')} ({kind}) on "
            f"{pd.Timestamp(event['date']):%Y-%m-%d}, one of {len(mine)} in the window"
        )
    return f"On {pd.Timestamp(last['date']):%Y-%m-%d}, {md_escape(ticker)}{position}{rsi_text}{latest}."


def chart_tickers(current: pd.DataFrame, signals: pd.DataFrame, n: int, benchmark: str) -> list[str]:
    """Which tickers the report charts: those with current signals first (strongest first),
    then the most active over the window; never the benchmark index."""
    ranked = list(dict.fromkeys(current["ticker"])) if len(current) else []
    busiest = signals["ticker"].value_counts().index.tolist() if len(signals) else []
    chosen = [t for t in dict.fromkeys([*ranked, *busiest]) if t != benchmark]
    return chosen[:n]


def current_sentence(current: pd.DataFrame, lookback_sessions: int) -> str:
    """One sentence on what fired in the last sessions (Markdown; the ticker is escaped data)."""
    if current.empty:
        return f"No rule fired in the last {lookback_sessions} sessions."
    bullish = current[current["direction"] > 0]
    bearish = current[current["direction"] < 0]
    strongest = current.sort_values("strength", ascending=False).iloc[0]
    return (
        f"In the last {lookback_sessions} sessions {len(current)} signal(s) fired: {len(bullish)} bullish and "
        f"{len(bearish)} bearish. The strongest is {strongest['rule'].replace('_', ' ')} "
        f"on {md_escape(strongest['ticker'])} "
        f"({strongest['date']:%Y-%m-%d}, strength {strongest['strength']:.2f})."
    )


def latest_readings(features: pd.DataFrame, prices: pd.DataFrame, settings: Features) -> pd.DataFrame:
    """The last session's reading per ticker across the four families of indicators.

    Trend: close against the 50/200-day averages and ADX (above 25 reads as a trending
    market); momentum: RSI, MACD histogram, stochastic %K/%D; volatility: ATR as a share of
    the price and Bollinger %B (0 at the lower band, 1 at the upper); volume: the change of
    OBV over 21 sessions (split-adjusted shares; positive means volume on up days dominated).
    """
    frame = _aligned(features, prices).sort_values(["ticker", "date"])
    frame["obv_change"] = frame.groupby("ticker")["obv"].diff(21)
    last = frame.groupby("ticker").tail(1).set_index("ticker")
    windows = cross_windows(settings) or (min(settings.sma_windows), max(settings.sma_windows))
    band = (last["bb_upper"] - last["bb_lower"]).where(lambda width: width > 0)
    return pd.DataFrame(
        {
            "date": last["date"],
            f"above_sma_{windows[0]}": last["adj_close"] > last[f"sma_{windows[0]}"],
            f"above_sma_{windows[1]}": last["adj_close"] > last[f"sma_{windows[1]}"],
            f"adx_{settings.adx_period}": last[f"adx_{settings.adx_period}"].round(1),
            f"rsi_{settings.rsi_period}": last[f"rsi_{settings.rsi_period}"].round(1),
            "macd_hist": last["macd_hist"].round(3),
            "stoch_k": last["stoch_k"].round(1),
            "stoch_d": last["stoch_d"].round(1),
            "atr_pct": (last[f"atr_{settings.atr_period}"] / last["adj_close"]).round(4),
            "bollinger_pct_b": ((last["adj_close"] - last["bb_lower"]) / band).round(2),
            "obv_change_21d": last["obv_change"].round(0),
        }
    )
