"""Purged walk-forward cross-validation over session dates, refitted on a calendar schedule.

A label at session i is the sign of the return from i to i + horizon, so it is known only
`horizon` sessions later. Ordinary k-fold would train on the future and score on the past;
a plain time split still leaks, because the last training labels are computed from prices
inside the test window. Walk-forward keeps time's arrow (each refit trains on everything
before its test block, an expanding window), and the purge removes the training dates whose
label windows reach into the test block: the last training date is at least
`horizon + embargo` sessions before the first test date. The extra `embargo` sessions also
absorb serial correlation in the features (a 21-day return overlaps its neighbours).

Refit dates come from the calendar, not from the data's length: the model is refitted at
the first session of every `refit_every_months`-th month (months counted from January 1970,
so 3 means January, April, July and October) and predicts the sessions up to the next
refit. Cutting the data into blocks counted back from its last date would move every block
boundary, and so every past out-of-sample prediction, whenever one more day arrives; with
calendar refits a session's prediction comes from the same training sessions whatever the
data's end, which is what a backtest of these predictions needs to be reproducible.

The most recent `holdout_sessions` dates are the holdout: never a CV test date and never
in a fold's training set, behind the same gap, so model selection on the folds does not
touch the final out-of-sample test. The holdout moves with the data's end (it is the
freshest test there is); the refits, and the walk-forward predictions they make, do not.
Splits are over dates, not rows: every ticker of a date is on the same side, so no
cross-sectional information leaks between train and test.

A fit may use fewer rows than its training dates hold (`max_train_rows`): a uniform draw
without replacement among them, seeded. Rows of one date share the market's move, so a
wide cross-section adds far fewer independent observations than rows, while thinning it
keeps every training date in play (a rolling window would drop the early years instead).
The draw depends only on the seed and the split's own training rows, so a refit's rows,
like its dates, do not change when later data arrives; and every fit of a split (the model,
its shuffled-label refits) uses the same rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Split:
    """One train/test pair of sorted session dates; `name` is "fold k", "refit <date>" or "holdout"."""

    name: str
    train: np.ndarray
    test: np.ndarray
    max_train_rows: int | None = None  # a fit draws at most this many of the training dates' rows
    seed: int = 0  # seeds that draw

    def train_rows(self, date_column: pd.Series) -> np.ndarray:
        """Boolean mask of the rows a model of this split is fitted on.

        The rows of its training dates; when they are more than `max_train_rows`, that many
        of them drawn uniformly without replacement by a generator seeded with `seed` (see
        the module docstring). `date_column` must list the rows in the same order on every
        call (a model frame's rows are sorted by ticker and date) for the draw to repeat.
        """
        mask = rows_in(date_column, self.train)
        if self.max_train_rows is None:
            return mask
        positions = np.flatnonzero(mask)
        if positions.size <= self.max_train_rows:
            return mask
        kept = np.random.default_rng(self.seed).choice(positions.size, self.max_train_rows, replace=False)
        thinned = np.zeros_like(mask)
        thinned[positions[kept]] = True
        return thinned


@dataclass(frozen=True)
class WalkForward:
    """The calendar refits, the CV folds cut from them, and the final holdout split.

    `refits` cover every labelled session from the first refit on, the holdout's included:
    the walk-forward predictions a backtest reads. `folds` are the refits that start before
    the CV region ends, cut at its end (same training sessions, so the same fitted model):
    model selection sees nothing within `horizon + embargo` sessions of the holdout.
    """

    folds: list[Split]
    holdout: Split
    refits: list[Split]


def refit_starts(dates: np.ndarray, every_months: int) -> np.ndarray:
    """Indices into sorted unique `dates` of the first session of each scheduled month.

    A month is scheduled when its number since January 1970 is a multiple of
    `every_months`; its first session is the first date in it. Only the calendar decides,
    so the indices of earlier refits never change when later dates are added.
    """
    months = np.asarray(dates).astype("datetime64[M]").astype(np.int64)
    first_of_month = np.diff(months, prepend=months[:1] - 1) != 0
    return np.flatnonzero(first_of_month & (months % every_months == 0))


def purged_walk_forward(
    dates: np.ndarray | pd.Series | pd.Index,
    *,
    refit_every_months: int,
    min_folds: int,
    horizon: int,
    embargo: int,
    holdout_sessions: int,
    min_train_sessions: int,
    max_train_rows: int | None,
    seed: int,
) -> WalkForward:
    """Calendar refits, the CV folds among them and a holdout, over the unique labelled `dates`.

    With the unique dates sorted and gap = horizon + embargo, a refit at session index s
    trains on the indices 0 .. s − gap − 1 and tests s up to the next refit (the last one to
    the final date). Refits fall on the first session of scheduled months (`refit_starts`);
    a refit with fewer than `min_train_sessions` training dates is skipped. The holdout is
    the last `holdout_sessions` dates and trains on everything up to gap sessions before
    it; the CV region ends there too, so a fold is a refit starting before that end, with
    its test block cut at it. Every split carries `max_train_rows` and `seed`, which thin
    its fits' rows (`Split.train_rows`). Raises ValueError, with the numbers, when fewer
    than `min_folds` folds fit.
    """
    for label, value, least in (
        ("refit_every_months", refit_every_months, 1),
        ("min_folds", min_folds, 1),
        ("holdout_sessions", holdout_sessions, 1),
        ("min_train_sessions", min_train_sessions, 1),
        ("horizon", horizon, 0),
        ("embargo", embargo, 0),
        ("max_train_rows", 1 if max_train_rows is None else max_train_rows, 1),
    ):
        if value < least:
            raise ValueError(f"{label} must be >= {least}, got {value}")
    values = np.unique(np.asarray(dates))
    values = values[~pd.isna(values)]
    gap = horizon + embargo
    holdout_start = values.size - holdout_sessions
    cv_end = holdout_start - gap
    starts = refit_starts(values, refit_every_months)
    starts = starts[starts - gap >= min_train_sessions]
    ends = np.append(starts[1:], values.size)[: starts.size]  # each refit predicts up to the next
    refits = [
        Split(
            f"refit {pd.Timestamp(values[start]):%Y-%m-%d}",
            values[: start - gap],
            values[start:end],
            max_train_rows,
            seed,
        )
        for start, end in zip(starts, ends, strict=True)
    ]
    folds = [
        Split(f"fold {k}", values[: start - gap], values[start : min(end, cv_end)], max_train_rows, seed)
        for k, (start, end) in enumerate(((s, e) for s, e in zip(starts, ends, strict=True) if s < cv_end), start=1)
    ]
    if len(folds) < min_folds:
        raise ValueError(
            f"purged walk-forward needs at least {min_folds} folds before the holdout; {values.size} labelled "
            f"sessions give {len(folds)} (a refit every {refit_every_months} month(s) with at least "
            f"{min_train_sessions} training sessions, horizon {horizon}, embargo {embargo}, "
            f"holdout {holdout_sessions})"
        )
    holdout = Split("holdout", values[:cv_end], values[holdout_start:], max_train_rows, seed)
    return WalkForward(folds=folds, holdout=holdout, refits=refits)


def rows_in(date_column: pd.Series, dates: np.ndarray) -> np.ndarray:
    """Boolean mask of the rows whose date is one of `dates` (e.g. a split's train or test)."""
    return np.isin(date_column.to_numpy(), dates)
