"""Purged walk-forward splits on a calendar schedule: a hand-checked example, refits on the
first session of scheduled months, the purge gap, no test date in any training set, folds cut
before the holdout, the holdout at the end, stable refits when data grows, thinned training
rows, and the errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bentley.models.splits import Split, WalkForward, purged_walk_forward, refit_starts, rows_in

PARAMS = {
    "refit_every_months": 1,
    "min_folds": 3,
    "horizon": 5,
    "embargo": 3,
    "holdout_sessions": 40,
    "min_train_sessions": 60,
    "max_train_rows": None,
    "seed": 7,
}


def _sessions(n: int, start: str = "2021-01-04") -> np.ndarray:
    return pd.bdate_range(start, periods=n).to_numpy()


def _all_splits(wf: WalkForward) -> list[Split]:
    return [*wf.folds, *wf.refits, wf.holdout]


def test_small_example_has_the_exact_dates():
    days = _sessions(100)  # 2021-01-04 .. 2021-05-21: months start at indices 0, 20, 40, 63, 85
    wf = purged_walk_forward(
        days,
        refit_every_months=1,
        min_folds=2,
        horizon=2,
        embargo=1,
        holdout_sessions=10,
        min_train_sessions=15,
        max_train_rows=None,
        seed=7,
    )
    # gap 3; holdout = the last 10 dates (90..99), trained on 0..86; CV ends at 87. The February
    # refit (index 20) trains on 0..16 (17 >= 15 dates); January's (index 0) has none.
    assert [s.name for s in wf.refits] == [
        "refit 2021-02-01",
        "refit 2021-03-01",
        "refit 2021-04-01",
        "refit 2021-05-03",
    ]
    np.testing.assert_array_equal(wf.refits[0].train, days[0:17])
    np.testing.assert_array_equal(wf.refits[0].test, days[20:40])
    np.testing.assert_array_equal(wf.refits[2].train, days[0:60])
    np.testing.assert_array_equal(wf.refits[3].test, days[85:100])  # the last refit predicts to the end
    assert [s.name for s in wf.folds] == ["fold 1", "fold 2", "fold 3", "fold 4"]
    np.testing.assert_array_equal(wf.folds[2].test, days[63:85])
    np.testing.assert_array_equal(wf.folds[3].train, days[0:82])
    np.testing.assert_array_equal(wf.folds[3].test, days[85:87])  # cut where the CV region ends
    assert wf.holdout.name == "holdout"
    np.testing.assert_array_equal(wf.holdout.train, days[0:87])
    np.testing.assert_array_equal(wf.holdout.test, days[90:100])


@pytest.mark.parametrize(("every", "months"), [(1, list(range(1, 13))), (3, [1, 4, 7, 10]), (6, [1, 7]), (12, [1])])
def test_refits_fall_on_the_first_session_of_scheduled_months(every, months):
    days = _sessions(600, start="2020-06-15")
    starts = refit_starts(days, every)
    stamps = pd.DatetimeIndex(days[starts])
    assert sorted(set(stamps.month)) == months
    for stamp, index in zip(stamps, starts, strict=True):
        assert index == 0 or pd.Timestamp(days[index - 1]).month != stamp.month  # the month's first session


def test_dates_are_deduplicated_and_sorted_first():
    days = _sessions(300)
    shuffled = np.random.default_rng(0).permutation(np.concatenate([days, days[::3]]))
    expected = purged_walk_forward(days, **PARAMS)
    actual = purged_walk_forward(pd.Series(shuffled), **PARAMS)
    for a, b in zip(_all_splits(actual), _all_splits(expected), strict=True):
        np.testing.assert_array_equal(a.train, b.train)
        np.testing.assert_array_equal(a.test, b.test)


@pytest.mark.parametrize("n", [183, 250, 1000])
def test_no_test_date_is_in_any_training_set_and_the_gap_holds(n):
    days = _sessions(n)
    wf = purged_walk_forward(days, **PARAMS)
    index = {d: i for i, d in enumerate(days)}
    gap = PARAMS["horizon"] + PARAMS["embargo"]
    for split in _all_splits(wf):
        assert split.train.size >= PARAMS["min_train_sessions"] and split.test.size > 0
        assert not np.isin(split.test, split.train).any(), split.name
        # a label at i uses prices to i + horizon: the last one must end before the embargo
        last_train, first_test = index[split.train.max()], index[split.test.min()]
        assert first_test - last_train - 1 == gap, split.name
    # and no CV fold trains (or tests) on a holdout date, or within the gap before it
    holdout_first = index[wf.holdout.test.min()]
    for fold in wf.folds:
        assert index[fold.test.max()] <= holdout_first - gap - 1
        assert not np.isin(wf.holdout.test, fold.train).any()


def test_folds_are_the_refits_cut_before_the_holdout():
    days = _sessions(400)
    wf = purged_walk_forward(days, **PARAMS)
    for fold, refit in zip(wf.folds, wf.refits, strict=False):
        np.testing.assert_array_equal(fold.train, refit.train)  # the same fitted model
        np.testing.assert_array_equal(fold.test, refit.test[refit.test <= wf.holdout.train.max()])
    joined = np.concatenate([refit.test for refit in wf.refits])
    index = {d: i for i, d in enumerate(days)}
    positions = np.array([index[d] for d in joined])
    assert np.all(np.diff(positions) == 1)  # consecutive, disjoint, and ...
    assert joined[-1] == days[-1]  # ... through the last date, the holdout's included


def test_training_windows_expand_from_the_first_date():
    wf = purged_walk_forward(_sessions(500), **PARAMS)
    trains = [refit.train for refit in wf.refits]
    assert trains[0].size >= PARAMS["min_train_sessions"]
    for earlier, later in zip(trains, trains[1:], strict=False):
        assert later.size > earlier.size
        np.testing.assert_array_equal(later[: earlier.size], earlier)


def test_holdout_is_the_most_recent_dates():
    days = _sessions(321)
    wf = purged_walk_forward(days, **PARAMS)
    np.testing.assert_array_equal(wf.holdout.test, days[-PARAMS["holdout_sessions"] :])
    gap = PARAMS["horizon"] + PARAMS["embargo"]
    np.testing.assert_array_equal(wf.holdout.train, days[: -PARAMS["holdout_sessions"] - gap])


def test_refits_do_not_move_when_a_session_is_added():
    """Blocks are calendar months, not a share of the data: one more day changes no earlier refit."""
    days = _sessions(401)
    before = purged_walk_forward(days[:-1], **PARAMS)
    after = purged_walk_forward(days, **PARAMS)
    assert [r.name for r in after.refits[: len(before.refits)]] == [r.name for r in before.refits]
    for old, new in zip(before.refits, after.refits, strict=False):
        np.testing.assert_array_equal(old.train, new.train)
        np.testing.assert_array_equal(old.test, new.test[: old.test.size])
    assert after.refits[len(before.refits) - 1].test.size == before.refits[-1].test.size + 1
    # A later start (a rolling history window) moves no boundary either.
    later_start = purged_walk_forward(days[20:], **PARAMS)
    assert {r.name for r in later_start.refits} <= {r.name for r in after.refits}


def test_too_few_folds_is_an_error_with_the_numbers():
    days = _sessions(200)
    with pytest.raises(ValueError) as error:
        purged_walk_forward(days, **{**PARAMS, "min_folds": 10})
    message = str(error.value)
    for part in (
        "at least 10 folds",
        "200 labelled sessions give 4",
        "every 1 month",
        "at least 60 training",
        "horizon 5",
        "embargo 3",
        "holdout 40",
    ):
        assert part in message
    with pytest.raises(ValueError, match="give 0"):
        purged_walk_forward(days[:50], **PARAMS)


@pytest.mark.parametrize("field", ["refit_every_months", "min_folds", "holdout_sessions", "min_train_sessions"])
def test_non_positive_counts_are_rejected(field):
    with pytest.raises(ValueError, match=field):
        purged_walk_forward(_sessions(500), **{**PARAMS, field: 0})


def test_rows_in_masks_the_rows_of_the_given_dates():
    days = _sessions(5)
    column = pd.Series(np.repeat(days, 2))  # two tickers per date
    mask = rows_in(column, days[[1, 3]])
    assert mask.dtype == bool
    np.testing.assert_array_equal(mask, [False, False, True, True, False, False, True, True, False, False])


def test_a_split_draws_at_most_max_train_rows_of_its_training_rows():
    """A uniform draw among the training dates' rows only, the same on every call and when later
    rows arrive (rows sorted by ticker, then date), every training date still in play; a cap
    the rows do not reach, or none, keeps them all."""
    days = _sessions(300)
    wf = purged_walk_forward(days, **{**PARAMS, "max_train_rows": 4_000})
    split = wf.holdout
    tickers = [f"T{k:02d}" for k in range(40)]

    def column(n_days: int) -> pd.Series:
        return pd.DataFrame([(t, d) for t in tickers for d in days[:n_days]], columns=["ticker", "date"])["date"]

    rows = column(280)
    drawn = split.train_rows(rows)
    assert drawn.sum() == 4_000
    assert not (drawn & ~rows_in(rows, split.train)).any()
    np.testing.assert_array_equal(drawn, split.train_rows(rows))
    np.testing.assert_array_equal(np.unique(rows[drawn].to_numpy()), split.train)  # ~16 of 40 a date: none left out

    grown = column(300)
    same_rows = pd.MultiIndex.from_arrays([np.repeat(tickers, 280), rows])[drawn]
    grown_drawn = split.train_rows(grown)
    assert pd.MultiIndex.from_arrays([np.repeat(tickers, 300), grown])[grown_drawn].equals(same_rows)

    roomy = purged_walk_forward(days, **{**PARAMS, "max_train_rows": 10**6}).holdout
    np.testing.assert_array_equal(roomy.train_rows(rows), rows_in(rows, split.train))
    np.testing.assert_array_equal(
        purged_walk_forward(days, **PARAMS).holdout.train_rows(rows), rows_in(rows, split.train)
    )
    other_seed = purged_walk_forward(days, **{**PARAMS, "max_train_rows": 4_000, "seed": 8}).holdout
    assert not np.array_equal(other_seed.train_rows(rows), drawn)
    with pytest.raises(ValueError, match="max_train_rows"):
        purged_walk_forward(days, **{**PARAMS, "max_train_rows": 0})
