"""Feature drift: Population Stability Index (PSI) between a training and a recent window.

PSI compares how a feature's values fall into bins fixed on a reference ("expected")
sample, usually the training window, against a later ("actual") sample:

    PSI = sum_i (a_i - e_i) * ln(a_i / e_i)

where e_i and a_i are the shares of the expected and actual samples in bin i. The bins
are the quantiles of the expected sample (deciles by default), so each holds about the
same share of it; the outer bins are open to -inf/+inf so every actual value lands
somewhere. Each term is >= 0 (a_i - e_i and ln(a_i / e_i) have the same sign), so PSI
is >= 0 and is 0 only when the shares match.

The usual reading (a rule of thumb, not a test with a p-value):

* PSI < 0.1 -- stable, no meaningful shift;
* 0.1 <= PSI <= 0.25 -- moderate shift, worth a look;
* PSI > 0.25 -- significant shift, the model sees inputs unlike its training data.

PSI grows with the number of bins and, for small samples, with sampling noise alone;
compare values computed with the same `bins` and similar sample sizes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

__all__ = [
    "MODERATE",
    "SIGNIFICANT",
    "drift_chart",
    "feature_psi",
    "psi",
    "psi_status",
    "windows",
]

MODERATE = 0.1  # PSI from here up is a moderate shift
SIGNIFICANT = 0.25  # PSI above this is a significant shift

_COLUMNS = ["feature", "psi", "status", "n_train", "n_recent"]
_COLOURS = {
    "stable": "tab:green",
    "moderate": "tab:orange",
    "significant": "tab:red",
    "insufficient data": "tab:gray",
}


def _finite(values: np.ndarray | pd.Series) -> np.ndarray:
    """Values as float64 with NaN/NA and +-inf dropped."""
    if isinstance(values, pd.Series):
        array = values.to_numpy(dtype="float64", na_value=np.nan)
    else:
        array = np.asarray(values, dtype="float64").ravel()
    return array[np.isfinite(array)]


def psi(
    expected: np.ndarray | pd.Series,
    actual: np.ndarray | pd.Series,
    bins: int = 10,
    epsilon: float = 1e-6,
) -> float:
    """Population Stability Index of `actual` against the reference sample `expected`.

    Bin edges are the `bins`-quantiles of `expected` (unique edges only, so ties in a
    discrete feature merge bins rather than leave empty ones); the lowest and highest
    edges are replaced by -inf and +inf. Bins are right-closed: (edge_{i-1}, edge_i].
    Shares below `epsilon` are floored at `epsilon` (without renormalising), so a bin
    that is empty in either sample adds a large but finite term.

    NaN (and +-inf) values are dropped from both samples. The result is NaN -- there is
    no reference distribution to compare against -- when `expected` has fewer than
    `bins` values left, or is constant, or when `actual` is empty.

    Reading: < 0.1 stable, 0.1-0.25 moderate shift, > 0.25 significant shift.
    """
    if int(bins) != bins or bins < 2:
        raise ValueError(f"bins must be an integer >= 2, got {bins!r}")
    if not epsilon > 0:
        raise ValueError(f"epsilon must be > 0, got {epsilon!r}")
    bins = int(bins)
    reference = _finite(expected)
    recent = _finite(actual)
    if reference.size < bins or recent.size == 0 or reference.min() == reference.max():
        return float("nan")

    quantiles = np.quantile(reference, np.linspace(0.0, 1.0, bins + 1))
    inner = np.unique(quantiles[1:-1])  # sorted, unique; the outer edges become +-inf
    # searchsorted(side="left") gives i with inner[i-1] < x <= inner[i]: right-closed bins.
    n_bins = inner.size + 1
    e = np.bincount(np.searchsorted(inner, reference, side="left"), minlength=n_bins)
    a = np.bincount(np.searchsorted(inner, recent, side="left"), minlength=n_bins)
    e_share = np.maximum(e / reference.size, epsilon)
    a_share = np.maximum(a / recent.size, epsilon)
    return float(np.sum((a_share - e_share) * np.log(a_share / e_share)))


def psi_status(value: float) -> str:
    """ "stable" (< 0.1), "moderate" (0.1-0.25), "significant" (> 0.25) or "insufficient data" (NaN)."""
    if value is None or not np.isfinite(value):
        return "insufficient data"
    if value < MODERATE:
        return "stable"
    if value <= SIGNIFICANT:
        return "moderate"
    return "significant"


def feature_psi(
    train: pd.DataFrame,
    recent: pd.DataFrame,
    columns: Sequence[str] | None = None,
    bins: int = 10,
) -> pd.DataFrame:
    """PSI of each numeric feature, training window as the reference.

    `columns` defaults to the numeric (not bool) columns of `train` that `recent` also
    has, in `train`'s order. Returns one row per feature with columns `feature, psi,
    status, n_train, n_recent` (n_* count the finite values used), sorted by `psi`
    descending with NaN ("insufficient data") last.
    """
    if columns is None:
        numeric = train.select_dtypes(include="number").columns
        columns = [c for c in numeric if c in recent.columns]
    else:
        columns = list(columns)
        missing = [c for c in columns if c not in train.columns or c not in recent.columns]
        if missing:
            raise KeyError(f"columns missing from train or recent: {missing}")
        not_numeric = [
            c
            for c in columns
            if not (pd.api.types.is_numeric_dtype(train[c]) and not pd.api.types.is_bool_dtype(train[c]))
        ]
        if not_numeric:
            raise TypeError(f"PSI needs numeric columns, got: {not_numeric}")

    rows = []
    for column in columns:
        value = psi(train[column], recent[column], bins=bins)
        rows.append(
            {
                "feature": column,
                "psi": value,
                "status": psi_status(value),
                "n_train": int(_finite(train[column]).size),
                "n_recent": int(_finite(recent[column]).size),
            }
        )
    table = pd.DataFrame(rows, columns=_COLUMNS)
    table = table.astype({"psi": "float64", "n_train": "int64", "n_recent": "int64"})
    table = table.sort_values("psi", ascending=False, na_position="last", kind="stable")
    return table.reset_index(drop=True)


def windows(
    frame: pd.DataFrame,
    date_column: str,
    train_end: Any,
    recent_sessions: int,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split a long (ticker, date, features...) frame into (training window, recent window).

    The training window is every row dated on or before `train_end`; the recent window
    is every row on the last `recent_sessions` distinct dates after `train_end` (fewer
    if fewer exist, empty if none). Dates between the two are left out, so the windows
    never overlap and the recent one is strictly later. Rows with a missing date are in
    neither. Both frames come back sorted by date (stable, so ties keep their order) with
    a fresh index.
    """
    if int(recent_sessions) != recent_sessions or recent_sessions < 1:
        raise ValueError(f"recent_sessions must be a positive integer, got {recent_sessions!r}")
    keys = pd.to_datetime(frame[date_column])
    cutoff = pd.Timestamp(train_end)
    tz = getattr(keys.dt, "tz", None)
    if tz is not None and cutoff.tzinfo is None:
        cutoff = cutoff.tz_localize(tz)
    elif tz is None and cutoff.tzinfo is not None:
        raise ValueError("train_end is timezone-aware but the date column is not")

    train_mask = (keys <= cutoff).to_numpy(dtype=bool, na_value=False)
    later = keys[keys > cutoff].dropna().unique()
    last_dates = np.sort(np.asarray(later))[-int(recent_sessions) :]
    recent_mask = keys.isin(last_dates).to_numpy(dtype=bool)

    def _ordered(mask: np.ndarray) -> pd.DataFrame:
        part = frame.loc[mask]
        order = np.argsort(keys[mask].to_numpy(), kind="stable")
        return part.iloc[order].reset_index(drop=True)

    return _ordered(train_mask), _ordered(recent_mask)


def drift_chart(table: pd.DataFrame) -> Figure:
    """Horizontal bars of PSI per feature (from `feature_psi`), with the 0.1 and 0.25 lines.

    Bars are coloured by status; features with insufficient data are listed with an
    "n/a" mark instead of a bar. The largest PSI is at the top.
    """
    rows = table.iloc[::-1]  # barh draws bottom-up; keep the table's order top-down
    values = rows["psi"].to_numpy(dtype="float64")
    status = rows["status"] if "status" in rows else pd.Series([psi_status(v) for v in values])
    positions = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(8, max(2.5, 0.35 * len(rows) + 1.5)))
    ax.barh(
        positions,
        np.nan_to_num(values, nan=0.0),
        color=[_COLOURS.get(s, "tab:blue") for s in status],
    )
    for y, v in zip(positions, values, strict=True):
        if not np.isfinite(v):
            ax.text(0.0, float(y), " n/a", va="center", ha="left", fontsize=8, color="tab:gray")
    ax.axvline(MODERATE, color="tab:orange", linestyle="--", linewidth=1, label=f"{MODERATE} moderate")
    ax.axvline(SIGNIFICANT, color="tab:red", linestyle="--", linewidth=1, label=f"{SIGNIFICANT} significant")
    ax.set_yticks(positions, [str(f) for f in rows["feature"]])
    ax.set_xlabel("Population Stability Index (PSI)")
    ax.set_ylabel("Feature")
    ax.set_title("Feature drift: recent window vs training window")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig
