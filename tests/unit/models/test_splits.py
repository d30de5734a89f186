"""Purged walk-forward splits: a hand-checked example, the purge gap, no test date in any
training set, ordered disjoint blocks, the holdout at the end, and the too-few-dates error."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bentley.models.splits import Split, WalkForward, purged_walk_forward, rows_in

PARAMS = {"n_folds": 4, "horizon": 5, "embargo": 3, "holdout_sessions": 40, "min_train_sessions": 60}


def _sessions(n: int) -> np.ndarray:
    return pd.bdate_range("2021-01-04", periods=n).to_numpy()


def _all_splits(wf: WalkForward) -> list[Split]:
    return [*wf.folds, wf.holdout]


def test_small_example_has_the_exact_dates():
    days = _sessions(30)
    wf = purged_walk_forward(
        days, n_folds=2, horizon=2, embargo=1, holdout_sessions=5, min_train_sessions=8
    )
    # gap 3; holdout = the last 5 dates (25..29); CV region ends 3 sessions before it (0..21);
    # tests start after 8 training dates and the gap: 11..21, cut into 11..16 and 17..21.
    assert [s.name for s in wf.folds] == ["fold 1", "fold 2"]
    np.testing.assert_array_equal(wf.folds[0].train, days[0:8])
    np.testing.assert_array_equal(wf.folds[0].test, days[11:17])
    np.testing.assert_array_equal(wf.folds[1].train, days[0:14])
    np.testing.assert_array_equal(wf.folds[1].test, days[17:22])
    assert wf.holdout.name == "holdout"
    np.testing.assert_array_equal(wf.holdout.train, days[0:22])
    np.testing.assert_array_equal(wf.holdout.test, days[25:30])


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
        assert split.train.size > 0 and split.test.size > 0
        assert not np.isin(split.test, split.train).any(), split.name
        # a label at i uses prices to i + horizon: the last one must end before the embargo
        last_train, first_test = index[split.train.max()], index[split.test.min()]
        assert first_test - last_train - 1 == gap, split.name
        assert split.train.max() < split.test.min()
    # and no CV fold trains (or tests) on a holdout date, or within the gap before it
    holdout_first = index[wf.holdout.test.min()]
    for fold in wf.folds:
        assert index[fold.test.max()] <= holdout_first - gap - 1
        assert not np.isin(wf.holdout.test, fold.train).any()


def test_test_blocks_are_consecutive_disjoint_and_near_equal():
    days = _sessions(400)
    wf = purged_walk_forward(days, **PARAMS)
    blocks = [fold.test for fold in wf.folds]
    joined = np.concatenate(blocks)
    assert np.all(joined[1:] > joined[:-1])  # ordered, no overlap
    index = {d: i for i, d in enumerate(days)}
    positions = np.array([index[d] for d in joined])
    assert np.all(np.diff(positions) == 1)  # no date skipped between blocks
    assert positions[0] == PARAMS["min_train_sessions"] + PARAMS["horizon"] + PARAMS["embargo"]
    sizes = [b.size for b in blocks]
    assert max(sizes) - min(sizes) <= 1


def test_training_windows_expand_from_the_first_date():
    wf = purged_walk_forward(_sessions(500), **PARAMS)
    trains = [fold.train for fold in wf.folds] + [wf.holdout.train]
    assert trains[0].size == PARAMS["min_train_sessions"]
    for earlier, later in zip(trains, trains[1:], strict=False):
        assert later.size > earlier.size
        np.testing.assert_array_equal(later[: earlier.size], earlier)


def test_holdout_is_the_most_recent_dates():
    days = _sessions(321)
    wf = purged_walk_forward(days, **PARAMS)
    np.testing.assert_array_equal(wf.holdout.test, days[-PARAMS["holdout_sessions"] :])
    gap = PARAMS["horizon"] + PARAMS["embargo"]
    np.testing.assert_array_equal(wf.holdout.train, days[: -PARAMS["holdout_sessions"] - gap])


def test_too_few_dates_is_an_error_with_the_numbers():
    needed = 60 + 8 + 4 + 8 + 40
    purged_walk_forward(_sessions(needed), **PARAMS)  # exactly enough: one date per block
    with pytest.raises(ValueError) as error:
        purged_walk_forward(_sessions(needed - 1), **PARAMS)
    message = str(error.value)
    assert f"at least {needed} labelled sessions" in message
    for part in ("4 folds", "horizon 5", "embargo 3", "holdout 40", "min_train 60", f"have {needed - 1}"):
        assert part in message


@pytest.mark.parametrize("field", ["n_folds", "holdout_sessions", "min_train_sessions"])
def test_non_positive_counts_are_rejected(field):
    with pytest.raises(ValueError, match=field):
        purged_walk_forward(_sessions(500), **{**PARAMS, field: 0})


def test_rows_in_masks_the_rows_of_the_given_dates():
    days = _sessions(5)
    column = pd.Series(np.repeat(days, 2))  # two tickers per date
    mask = rows_in(column, days[[1, 3]])
    assert mask.dtype == bool
    np.testing.assert_array_equal(mask, [False, False, True, True, False, False, True, True, False, False])
