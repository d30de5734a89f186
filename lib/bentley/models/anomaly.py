"""Anomaly detection on daily returns, volume and intraday range, per (ticker, date).

Two detectors look at the same three inputs, and a day is flagged when either fires:

* **Robust z-scores** — (x − median) / (1.4826 · MAD) per ticker and input. Median and MAD
  (median absolute deviation) are barely moved by the outliers we are looking for, unlike the
  mean and standard deviation, which a single crash day inflates enough to hide itself.
  1.4826 = 1/Φ⁻¹(0.75) makes 1.4826 · MAD estimate σ for normal data, so a threshold of 4 reads
  as "4 sigma". With a `window`, the statistics come from the ticker's trailing rows only
  (past and current, never later ones), so a flag on day t uses nothing after t and can be
  reproduced on the day. A MAD of 0 (a mostly constant window) gives NaN, never ±inf.
* **IsolationForest** (scikit-learn) — catches days unusual in their *combination* of inputs
  (a big move on big volume with a wide range) even when no single input is extreme. Each
  input is scaled per ticker with RobustScaler's definition (median, interquartile range) so a
  volatile stock's ordinary days do not crowd out a quiet stock's shocks; then one forest is
  fitted on all tickers' scaled rows, so "unusual" means the same thing across the universe.
  It is point in time too: every `refit_sessions` sessions a new forest (and scaling) is
  fitted on the trailing `window` sessions before that refit date and scores the sessions up
  to the next refit, so a score never changes when later prices do. A forest fitted on the
  whole sample lets later prices decide how unusual an earlier day looks, and every new day
  would rewrite past flags.

Inputs come from the feature table (`ret_1d`, the `volume_z_*` column) and prices
(`range_pct` = (adjusted high − adjusted low) / adjusted close, the adjustment being
adj_close / close as in `bentley.features`). Everything is deterministic for a given seed.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view
from sklearn.ensemble import IsolationForest

from bentley.reporting import md_escape

if TYPE_CHECKING:  # matplotlib is imported by the chart helper only, when it is called
    from matplotlib.figure import Figure

#: Scales the MAD to a consistent estimator of σ under normality: 1 / Φ⁻¹(0.75).
MAD_SCALE = 1.4826

#: The detector inputs, in order, and the names of their robust z-score columns.
INPUT_COLUMNS: tuple[str, ...] = ("ret_1d", "volume_z", "range_pct")
Z_COLUMNS: tuple[str, ...] = ("z_ret", "z_volume", "z_range")

#: Columns of `detect_anomalies`, the rows of the warehouse table anomalies(ticker, date).
ANOMALY_COLUMNS: tuple[str, ...] = (
    "ticker",
    "date",
    *INPUT_COLUMNS,
    *Z_COLUMNS,
    "max_abs_z",
    "z_flag",
    "if_score",
    "if_flag",
    "flag",
    "method",
)

_KEY = ["ticker", "date"]


def _floats(series: pd.Series) -> np.ndarray:
    """A column as a float64 array; nullable NA becomes NaN."""
    return series.to_numpy(dtype=np.float64, na_value=np.nan)


# --------------------------------------------------------------------------------------------
# Inputs


def feature_columns(available: Sequence[str]) -> list[str]:
    """The feature-table columns the detectors read, from the table's `available` columns: the
    keys, `ret_1d` and the one `volume_z_*` column (reading only these spares a wide read)."""
    return [*_KEY, "ret_1d", _volume_z_column(available)]


def _volume_z_column(columns: Sequence[str] | pd.DataFrame) -> str:
    """The one `volume_z_<window>` column; its window is a settings value, so it is looked up."""
    columns = columns.columns if isinstance(columns, pd.DataFrame) else columns
    names = [c for c in columns if str(c).startswith("volume_z_")]
    if len(names) != 1:
        raise ValueError(f"features must have exactly one volume_z_* column, found {names}")
    return names[0]


def anomaly_inputs(features: pd.DataFrame, prices: pd.DataFrame) -> pd.DataFrame:
    """`ticker, date, ret_1d, volume_z, range_pct` per (ticker, date), sorted, complete rows only.

    range_pct is the day's adjusted high-low range over the adjusted close. The raw high/low
    are scaled by adj_close / close first, so the ratio is the same before and after a split
    and a dividend does not distort it. Rows with any missing or non-finite input (warm-up
    rows of the features, a zero close) are dropped: the detectors need all three values.
    """
    volume_z = _volume_z_column(features)
    left = features[[*_KEY, "ret_1d", volume_z]].rename(columns={volume_z: "volume_z"})
    right = prices[[*_KEY, "high", "low", "close", "adj_close"]]
    merged = left.merge(right, on=_KEY, how="inner", validate="one_to_one")

    adj_close = _floats(merged["adj_close"])
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = adj_close / _floats(merged["close"])
        range_pct = (_floats(merged["high"]) - _floats(merged["low"])) * factor / adj_close
    out = merged[_KEY].copy()
    out["ret_1d"] = _floats(merged["ret_1d"])
    out["volume_z"] = _floats(merged["volume_z"])
    out["range_pct"] = range_pct
    complete = np.isfinite(out[list(INPUT_COLUMNS)].to_numpy(dtype=np.float64)).all(axis=1)
    return out[complete].sort_values(_KEY, kind="stable").reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# Robust z-scores


def _median_rows(windows: np.ndarray) -> np.ndarray:
    """Median of each row, skipping NaN; the plain (faster) median when there is no NaN."""
    if windows.size == 0:
        return np.empty(windows.shape[0])
    if not np.isnan(windows).any():
        return np.median(windows, axis=1)
    with warnings.catch_warnings():  # an all-NaN row is a warm-up row: NaN is the answer
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(windows, axis=1)


def _rolling_robust_z(values: np.ndarray, window: int, min_periods: int) -> np.ndarray:
    """Robust z of each value against the trailing `window` values ending at it (one ticker).

    The series is front-padded with window − 1 NaN so every row has a window of the same
    length; NaN are skipped, so a warm-up row uses the rows it has. Full windows (the bulk)
    and warm-up windows are reduced separately so the NaN-aware median, which is much slower,
    only runs where it is needed.
    """
    n = values.size
    padded = np.concatenate((np.full(window - 1, np.nan), values))
    windows = sliding_window_view(padded, window)
    warm = min(window - 1, n)
    median = np.concatenate((_median_rows(windows[:warm]), _median_rows(windows[warm:])))
    deviations = np.abs(windows - median[:, None])
    mad = np.concatenate((_median_rows(deviations[:warm]), _median_rows(deviations[warm:])))
    count = np.count_nonzero(~np.isnan(windows), axis=1)
    mad[(mad == 0.0) | (count < min_periods)] = np.nan
    return (values - median) / (MAD_SCALE * mad)


def robust_zscores(
    inputs: pd.DataFrame,
    columns: Sequence[str],
    window: int | None = None,
    min_periods: int | None = None,
) -> pd.DataFrame:
    """Robust z-scores (x − median) / (1.4826 · MAD) of `columns`, per ticker, aligned to inputs.

    The result has the inputs' index and one column per name in `columns` (same names).
    `window=None` measures each row against its ticker's full sample (descriptive, with
    hindsight). With `window`, each row is measured against the trailing `window` rows of its
    ticker by date, itself included and nothing later, so the value at t never changes when
    later rows change. Rows whose window holds fewer than `min_periods` observed values
    (default: `window`, i.e. full windows only) are NaN, as is any row with MAD = 0 — a
    mostly constant history has no spread to measure against, and NaN beats ±inf.
    NaN inputs are skipped by the statistics and give NaN for their own row.
    """
    columns = list(columns)
    out = pd.DataFrame(index=inputs.index, columns=columns, dtype=np.float64)
    if inputs.empty:
        return out
    if window is None:
        data = inputs[columns].astype(np.float64)
        groups = inputs["ticker"].to_numpy()
        median = data.groupby(groups).transform("median")
        mad = (data - median).abs().groupby(groups).transform("median")
        mad = mad.mask(mad == 0.0)
        out[columns] = ((data - median) / (MAD_SCALE * mad)).to_numpy()
        return out

    if window < 2:
        raise ValueError(f"window must be >= 2, got {window}")
    min_periods = window if min_periods is None else min_periods
    if not 1 <= min_periods <= window:
        raise ValueError(f"min_periods must be in [1, window], got {min_periods}")
    codes, _ = pd.factorize(inputs["ticker"], sort=True)
    order = np.lexsort((inputs["date"].to_numpy(), codes))
    codes = codes[order]
    bounds = np.flatnonzero(codes[1:] != codes[:-1]) + 1
    starts, stops = np.concatenate(([0], bounds)), np.concatenate((bounds, [codes.size]))
    for column in columns:
        values = _floats(inputs[column])[order]
        z = np.empty(values.size)
        for start, stop in zip(starts, stops, strict=True):
            z[start:stop] = _rolling_robust_z(values[start:stop], window, min_periods)
        result = np.empty(values.size)
        result[order] = z
        out[column] = result
    return out


# --------------------------------------------------------------------------------------------
# IsolationForest


#: Refit blocks are counted in weekdays from this Monday, so the refit dates stay put whatever
#: the data's first date is: a history window that moves forward a day does not move them.
REFIT_EPOCH = np.datetime64("2000-01-03", "D")

#: Most training rows a forest is fitted on, drawn (seeded) from its window. Each tree samples
#: only 256 rows, and 10,000 rows leave 100 in a 1% tail to set the contamination threshold;
#: scoring all of a large universe's window (126,000 rows) for that threshold at every refit
#: would cost more than scoring every day once.
MAX_FIT_ROWS = 10_000


def _ticker_scale(codes: np.ndarray, values: np.ndarray) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per ticker code: median and interquartile range of each column, RobustScaler's definition.

    Written with groupby instead of one RobustScaler per ticker so it stays vectorized; an
    IQR of 0 scales by 1, as RobustScaler does, so a constant input becomes 0, not NaN.
    """
    grouped = pd.DataFrame(values).groupby(codes)
    iqr = grouped.quantile(0.75) - grouped.quantile(0.25)
    return grouped.median(), iqr.mask(iqr == 0.0, 1.0)


def _scaled(codes: np.ndarray, values: np.ndarray, scale: tuple[pd.DataFrame, pd.DataFrame]) -> np.ndarray:
    """(x − median) / IQR with each row's ticker statistics; NaN for a ticker the scale lacks."""
    median, iqr = scale
    return (values - median.reindex(codes).to_numpy()) / iqr.reindex(codes).to_numpy()


def isolation_forest_scores(
    inputs: pd.DataFrame,
    columns: Sequence[str],
    contamination: float,
    seed: int,
    *,
    window: int | None,
    refit_sessions: int,
    n_estimators: int = 100,
) -> pd.DataFrame:
    """`if_score` (higher = more anomalous) and `if_flag` per row, point in time.

    The sessions (the inputs' distinct dates) are cut into blocks of `refit_sessions`
    weekdays counted from `REFIT_EPOCH`. Each block gets its own forest, fitted on the complete
    rows of the `window` sessions before the block's first session (every earlier session when
    `window` is None): the per-ticker scaling (see the module docstring) comes from those rows,
    then one IsolationForest with `random_state=seed` on all tickers' scaled rows (at most
    `MAX_FIT_ROWS`, drawn with `seed`). The block's rows are scored with it: if_score is the
    negated `score_samples`, if_flag is the forest's `predict == -1` (a score beyond the
    `contamination` share of its training rows). A score on day t therefore uses nothing after
    t, and appending or changing later rows leaves it bit-identical.

    100 trees (scikit-learn's and the original paper's default; path lengths settle well
    before) because there is one forest per block: building a tree costs about 2 ms of Python
    whatever the data size, which would dominate a small universe's run at 200.

    Unscored (NaN, False): rows with a missing input, rows of a block with fewer than `window`
    sessions of history before it (the warm-up) or fewer than two training rows, and rows of a
    ticker with no training rows in its block's window (nothing to scale it by).
    """
    if refit_sessions < 1:
        raise ValueError(f"refit_sessions must be >= 1, got {refit_sessions}")
    if window is not None and window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    score, flag = np.full(len(inputs), np.nan), np.zeros(len(inputs), dtype=bool)
    if inputs.empty:
        return pd.DataFrame({"if_score": score, "if_flag": flag}, index=inputs.index)
    values = np.column_stack([_floats(inputs[c]) for c in columns])
    dates = inputs["date"].to_numpy(dtype="datetime64[D]")
    codes, _ = pd.factorize(inputs["ticker"], sort=True)
    order = np.lexsort((codes, dates))  # by date, then ticker: a window or a block is one slice
    complete = np.isfinite(values).all(axis=1)[order]
    sessions = np.unique(dates)
    bounds = np.append(np.searchsorted(dates[order], sessions), len(order))  # rows of session i: bounds[i:i+2]
    blocks = np.busday_count(REFIT_EPOCH, sessions) // refit_sessions
    firsts = np.flatnonzero(np.r_[True, blocks[1:] != blocks[:-1]])
    for first, stop in zip(firsts, np.append(firsts[1:], len(sessions)), strict=True):
        if first == 0 or (window is not None and first < window):
            continue  # the warm-up: no full window of history before this block
        lo, mid, hi = bounds[0 if window is None else first - window], bounds[first], bounds[stop]
        train = order[lo:mid][complete[lo:mid]]
        if train.size < 2:
            continue
        scale = _ticker_scale(codes[train], values[train])
        x_train = _scaled(codes[train], values[train], scale)
        if len(x_train) > MAX_FIT_ROWS:
            drawn = np.random.default_rng(seed).choice(len(x_train), MAX_FIT_ROWS, replace=False)
            x_train = x_train[np.sort(drawn)]
        forest = IsolationForest(n_estimators=n_estimators, contamination=contamination, random_state=seed)
        forest.fit(x_train)
        rows = order[mid:hi][complete[mid:hi]]
        x = _scaled(codes[rows], values[rows], scale)
        scaled = np.isfinite(x).all(axis=1)  # False for a ticker absent from the training window
        if scaled.any():
            raw = forest.score_samples(x[scaled])
            score[rows[scaled]] = -raw
            flag[rows[scaled]] = raw - forest.offset_ < 0  # IsolationForest.predict's rule, one scoring pass
    return pd.DataFrame({"if_score": score, "if_flag": flag}, index=inputs.index)


# --------------------------------------------------------------------------------------------
# Both detectors


def detect_anomalies(
    features: pd.DataFrame,
    prices: pd.DataFrame,
    *,
    z_threshold: float,
    contamination: float,
    seed: int,
    window: int | None,
    refit_sessions: int,
) -> pd.DataFrame:
    """Both detectors on every complete (ticker, date): one row per row of `anomaly_inputs`.

    Columns are `ANOMALY_COLUMNS`. max_abs_z is the largest |z| of the inputs that have one
    (NaN when none has: warm-up rows, MAD 0); z_flag is max_abs_z >= z_threshold; flag is
    z_flag or if_flag and `method` names which fired ("both", "robust_z",
    "isolation_forest", "none"). With the default window, a ticker's first window − 1 rows
    have no z-score: its z-flags start once a full trailing year is available; the forest
    scores from the first refit block with `window` sessions before it (see
    `isolation_forest_scores`). With a window, every column of a row depends only on data up
    to its date.
    """
    inputs = anomaly_inputs(features, prices)
    z = robust_zscores(inputs, INPUT_COLUMNS, window=window)
    z.columns = list(Z_COLUMNS)
    out = pd.concat([inputs, z], axis=1)
    out["max_abs_z"] = z.abs().max(axis=1, skipna=True)
    out["z_flag"] = (out["max_abs_z"] >= z_threshold).to_numpy(dtype=bool)
    forest = isolation_forest_scores(
        inputs, INPUT_COLUMNS, contamination, seed, window=window, refit_sessions=refit_sessions
    )
    out["if_score"] = forest["if_score"]
    out["if_flag"] = forest["if_flag"].to_numpy(dtype=bool)
    out["flag"] = out["z_flag"] | out["if_flag"]
    out["method"] = np.select(
        [out["z_flag"] & out["if_flag"], out["z_flag"], out["if_flag"]],
        ["both", "robust_z", "isolation_forest"],
        default="none",
    )
    return out[list(ANOMALY_COLUMNS)]


def top_anomalies(table: pd.DataFrame, n: int = 10) -> pd.DataFrame:
    """The `n` most anomalous flagged rows: by max_abs_z, then if_score, both descending.

    Missing scores sort last, so a row flagged by the forest alone (a warm-up row without a
    z-score) still appears, after the rows both measures rank.
    """
    flagged = table[table["flag"].to_numpy(dtype=bool)]
    ranked = flagged.sort_values(["max_abs_z", "if_score"], ascending=False, na_position="last", kind="stable")
    columns = [
        "ticker",
        "date",
        "method",
        *INPUT_COLUMNS,
        *Z_COLUMNS,
        "max_abs_z",
        "if_score",
    ]
    return ranked[columns].head(n).reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# Chart


def anomaly_chart(prices: pd.DataFrame, table: pd.DataFrame, ticker: Any) -> Figure:
    """One ticker's adjusted close over sessions, its flagged days marked in red."""
    from bentley import charts

    series = prices.loc[prices["ticker"] == ticker, ["date", "adj_close"]].dropna().sort_values("date")
    flagged = table.loc[(table["ticker"] == ticker) & table["flag"].astype(bool), ["date"]]
    marks = flagged.merge(series, on="date", how="inner")

    fig, ax = charts.figure(9, 4)
    ax.plot(series["date"], series["adj_close"], linewidth=1.0, label="Adjusted close")
    ax.scatter(
        marks["date"],
        marks["adj_close"],
        color="red",
        s=25,
        zorder=3,
        label=f"Flagged anomaly ({len(marks)})",
    )
    ax.set_title(f"{ticker}: adjusted close and flagged anomalies")
    ax.set_xlabel("Session")
    ax.set_ylabel("Adjusted close")
    charts.legend_outside(ax)
    return fig


# --------------------------------------------------------------------------------------------
# Report helpers


def anomaly_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per ticker: days scored, days flagged (by which detector) and the latest flagged day."""
    flagged = table[table["flag"].to_numpy(dtype=bool)]
    counts = pd.crosstab(flagged["ticker"], flagged["method"]) if not flagged.empty else pd.DataFrame()
    out = pd.DataFrame({"days": table.groupby("ticker").size()})
    out["flagged"] = flagged.groupby("ticker").size().reindex(out.index, fill_value=0)
    for method in ("both", "robust_z", "isolation_forest"):
        column = counts[method] if method in counts else pd.Series(dtype="int64")
        out[method] = column.reindex(out.index, fill_value=0).astype("int64")
    out["flagged_share"] = out["flagged"] / out["days"]
    out["latest_flag"] = flagged.groupby("ticker")["date"].max().reindex(out.index)
    return out.sort_values(["flagged", "days"], ascending=False, kind="stable")


def chart_tickers(table: pd.DataFrame, n: int, exclude: Sequence[str] = ()) -> list[Any]:
    """The `n` tickers with the most flagged days (ties: alphabetical), skipping `exclude`."""
    summary = anomaly_summary(table)
    summary = summary[~summary.index.isin(list(exclude))]
    ranked = summary.reset_index().sort_values(["flagged", "ticker"], ascending=[False, True], kind="stable")
    return list(ranked["ticker"].head(n))


def anomaly_sentence(table: pd.DataFrame, z_threshold: float) -> str:
    """One sentence: how many days each detector flagged, and the most extreme one (Markdown;
    the ticker is escaped data)."""
    if table.empty:
        return "No complete (ticker, date) rows to score yet: features need their warm-up sessions first."
    flagged = table[table["flag"].to_numpy(dtype=bool)]
    both = int((table["method"] == "both").sum())
    text = (
        f"{len(flagged):,} of {len(table):,} ticker-days ({len(flagged) / len(table):.1%}) are flagged: "
        f"{int(table['z_flag'].sum()):,} by the robust z-score (|z| ≥ {z_threshold:g}), "
        f"{int(table['if_flag'].sum()):,} by the IsolationForest, {both:,} by both."
    )
    top = top_anomalies(table, 1)
    if not top.empty and np.isfinite(top.loc[0, "max_abs_z"]):
        row = top.iloc[0]
        text += (
            f" The most extreme is {md_escape(row['ticker'])} on {pd.Timestamp(row['date']):%Y-%m-%d}: return "
            f"{row['ret_1d']:+.1%}, volume z {row['volume_z']:+.1f}, range {row['range_pct']:.1%} "
            f"(largest |z| {row['max_abs_z']:.1f})."
        )
    return text
