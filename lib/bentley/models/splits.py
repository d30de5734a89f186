"""Purged walk-forward cross-validation over session dates.

A label at session i is the sign of the return from i to i + horizon, so it is known only
`horizon` sessions later. Ordinary k-fold would train on the future and score on the past;
a plain time split still leaks, because the last training labels are computed from prices
inside the test window. Walk-forward keeps time's arrow (each fold trains on everything
before its test block, an expanding window), and the purge removes the training dates whose
label windows reach into the test block: the last training date is at least
`horizon + embargo` sessions before the first test date. The extra `embargo` sessions also
absorb serial correlation in the features (a 21-day return overlaps its neighbours).

The most recent `holdout_sessions` dates are the holdout: never a CV test date and never
in a fold's training set, behind the same gap, so model selection on the folds does not
touch the final out-of-sample test. Splits are over dates, not rows: every ticker of a date
is on the same side, so no cross-sectional information leaks between train and test.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Split:
    """One train/test pair of sorted session dates; `name` is "fold k" or "holdout"."""

    name: str
    train: np.ndarray
    test: np.ndarray


@dataclass(frozen=True)
class WalkForward:
    """The CV folds (oldest test block first) and the final holdout split."""

    folds: list[Split]
    holdout: Split


def purged_walk_forward(
    dates: np.ndarray | pd.Series | pd.Index,
    *,
    n_folds: int,
    horizon: int,
    embargo: int,
    holdout_sessions: int,
    min_train_sessions: int,
) -> WalkForward:
    """Expanding-window folds and a holdout over the unique labelled session `dates`.

    With the unique dates sorted and gap = horizon + embargo, a test block starting at
    session index s trains on the indices 0 .. s − gap − 1. The holdout is the last
    `holdout_sessions` dates; the CV region is everything before it minus the gap. The
    first fold trains on exactly `min_train_sessions` dates, so its test block starts at
    index min_train_sessions + gap; the rest of the CV region is cut into `n_folds`
    consecutive blocks whose sizes differ by at most one (earlier blocks take the extra
    dates). Raises ValueError, with the numbers, when there are too few dates for every
    block to hold at least one date.
    """
    for label, value, least in (
        ("n_folds", n_folds, 1),
        ("holdout_sessions", holdout_sessions, 1),
        ("min_train_sessions", min_train_sessions, 1),
        ("horizon", horizon, 0),
        ("embargo", embargo, 0),
    ):
        if value < least:
            raise ValueError(f"{label} must be >= {least}, got {value}")
    values = np.unique(np.asarray(dates))
    values = values[~pd.isna(values)]
    gap = horizon + embargo
    needed = min_train_sessions + gap + n_folds + gap + holdout_sessions
    if values.size < needed:
        raise ValueError(
            f"purged walk-forward needs at least {needed} labelled sessions for {n_folds} folds, "
            f"horizon {horizon}, embargo {embargo}, holdout {holdout_sessions}, "
            f"min_train {min_train_sessions}; have {values.size}"
        )

    holdout_start = values.size - holdout_sessions
    cv_end = holdout_start - gap
    blocks = np.array_split(np.arange(min_train_sessions + gap, cv_end), n_folds)
    folds = [
        Split(f"fold {k}", values[: block[0] - gap], values[block])
        for k, block in enumerate(blocks, start=1)
    ]
    holdout = Split("holdout", values[:cv_end], values[holdout_start:])
    return WalkForward(folds=folds, holdout=holdout)


def rows_in(date_column: pd.Series, dates: np.ndarray) -> np.ndarray:
    """Boolean mask of the rows whose date is one of `dates` (e.g. a split's train or test)."""
    return np.isin(date_column.to_numpy(), dates)
