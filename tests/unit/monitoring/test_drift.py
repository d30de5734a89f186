"""PSI on known distributions, feature_psi's table, and the train/recent windows."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from bentley.monitoring.drift import drift_chart, feature_psi, psi, psi_status, windows

N = 50_000


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20240611)


def test_identical_distributions_are_stable(rng):
    expected = rng.normal(size=N)
    actual = rng.normal(size=N)
    assert psi(expected, actual) < 0.02
    assert psi(expected, expected) == pytest.approx(0.0, abs=1e-12)


def test_one_sd_mean_shift_is_significant(rng):
    assert psi(rng.normal(size=N), rng.normal(loc=1.0, size=N)) > 0.25


def test_tenth_sd_mean_shift_is_stable(rng):
    assert psi(rng.normal(size=N), rng.normal(loc=0.1, size=N)) < 0.1


def test_hand_computed_four_bins():
    # Expected: 400 evenly spaced points on (0, 4), so quartile edges are ~1, 2, 3 and
    # each bin holds exactly a quarter. Actual: 40/30/20/10 values in the bin middles.
    expected = (np.arange(400) + 0.5) / 100
    actual = np.repeat([0.5, 1.5, 2.5, 3.5], [40, 30, 20, 10])
    e = [0.25, 0.25, 0.25, 0.25]
    a = [0.4, 0.3, 0.2, 0.1]
    by_hand = sum((ai - ei) * math.log(ai / ei) for ai, ei in zip(a, e, strict=True))
    assert by_hand == pytest.approx(0.228217, abs=1e-6)
    assert psi(expected, actual, bins=4) == pytest.approx(by_hand, rel=1e-12)
    # Swapping the roles gives a different number in general, but here both are >= 0.
    assert psi(actual, expected, bins=4) >= 0


def test_psi_is_never_negative(rng):
    for _ in range(20):
        loc, scale = rng.normal(), rng.uniform(0.2, 3)
        size_e, size_a = rng.integers(20, 500, size=2)
        value = psi(rng.normal(size=size_e), rng.normal(loc, scale, size=size_a), bins=10)
        assert value >= 0


def test_empty_bins_stay_finite_thanks_to_epsilon(rng):
    expected = rng.normal(size=1_000)
    actual = np.full(200, 100.0)  # everything in the top bin, nine bins empty
    value = psi(expected, actual)
    assert np.isfinite(value)
    assert value > 0.25
    # A larger floor makes the empty-bin terms smaller.
    assert psi(expected, actual, epsilon=1e-3) < value


def test_no_reference_distribution_gives_nan(rng):
    assert math.isnan(psi(np.full(100, 3.0), rng.normal(size=100)))  # constant expected
    assert math.isnan(psi(rng.normal(size=9), rng.normal(size=100), bins=10))  # too few
    assert math.isnan(psi(rng.normal(size=100), np.array([np.nan, np.nan])))  # no actual


def test_nans_are_dropped(rng):
    expected = rng.normal(size=2_000)
    actual = rng.normal(size=2_000)
    with_nans_e = np.concatenate([expected, np.full(50, np.nan)])
    with_nans_a = pd.Series(np.concatenate([np.full(30, np.nan), actual]))
    assert psi(with_nans_e, with_nans_a) == pytest.approx(psi(expected, actual), rel=1e-12)
    # Only 5 real values left for 10 bins: insufficient.
    sparse = np.concatenate([rng.normal(size=5), np.full(100, np.nan)])
    assert math.isnan(psi(sparse, actual))


def test_values_outside_the_reference_range_land_in_outer_bins():
    expected = np.arange(100, dtype=float)
    inside = psi(expected, np.array([0.0, 99.0]), bins=2)
    outside = psi(expected, np.array([-1e9, 1e9]), bins=2)
    assert inside == pytest.approx(outside)


def test_discrete_feature_uses_unique_edges():
    expected = np.repeat([0.0, 1.0], [800, 200])  # deciles collapse to a single inner edge
    assert psi(expected, expected.copy()) == pytest.approx(0.0, abs=1e-12)
    shifted = np.repeat([0.0, 1.0], [500, 500])
    assert psi(expected, shifted) > 0.25


@pytest.mark.parametrize(
    ("value", "status"),
    [
        (0.0, "stable"),
        (0.099, "stable"),
        (0.1, "moderate"),
        (0.25, "moderate"),
        (0.2501, "significant"),
        (float("nan"), "insufficient data"),
    ],
)
def test_psi_status(value, status):
    assert psi_status(value) == status


def _frames(rng) -> tuple[pd.DataFrame, pd.DataFrame]:
    n = 5_000
    train = pd.DataFrame(
        {
            "ticker": rng.choice(["AAA", "BBB"], size=n),
            "steady": rng.normal(size=n),
            "drifting": rng.normal(size=n),
            "nudged": rng.normal(size=n),
            "constant": np.ones(n),
            "flag": rng.random(n) > 0.5,
        }
    )
    recent = pd.DataFrame(
        {
            "ticker": rng.choice(["AAA", "BBB"], size=n),
            "steady": rng.normal(size=n),
            "drifting": rng.normal(loc=1.5, size=n),
            "nudged": rng.normal(loc=0.45, size=n),
            "constant": np.ones(n),
            "flag": rng.random(n) > 0.5,
        }
    )
    recent.loc[:99, "steady"] = np.nan
    return train, recent


def test_feature_psi_statuses_and_order(rng):
    train, recent = _frames(rng)
    table = feature_psi(train, recent)
    assert list(table.columns) == ["feature", "psi", "status", "n_train", "n_recent"]
    # Numeric, non-bool columns only; sorted by PSI descending, NaN last.
    assert list(table["feature"]) == ["drifting", "nudged", "steady", "constant"]
    assert list(table["status"]) == ["significant", "moderate", "stable", "insufficient data"]
    psis = table["psi"].to_numpy()
    assert np.all(np.diff(psis[:3]) <= 0)
    assert math.isnan(psis[3])
    steady = table.set_index("feature").loc["steady"]
    assert steady["n_train"] == 5_000
    assert steady["n_recent"] == 4_900


def test_feature_psi_explicit_columns(rng):
    train, recent = _frames(rng)
    table = feature_psi(train, recent, columns=["steady", "drifting"])
    assert list(table["feature"]) == ["drifting", "steady"]
    with pytest.raises(KeyError):
        feature_psi(train, recent, columns=["nope"])
    with pytest.raises(TypeError):
        feature_psi(train, recent, columns=["ticker"])


def test_feature_psi_with_no_columns_is_empty_but_shaped():
    table = feature_psi(pd.DataFrame({"a": ["x"]}), pd.DataFrame({"a": ["y"]}))
    assert table.empty
    assert list(table.columns) == ["feature", "psi", "status", "n_train", "n_recent"]


def _long_frame() -> pd.DataFrame:
    dates = pd.bdate_range("2024-01-01", periods=30)
    rows = [{"ticker": t, "date": d, "x": float(i)} for i, d in enumerate(dates) for t in ("BBB", "AAA")]
    frame = pd.DataFrame(rows)
    return frame.sample(frac=1.0, random_state=7).reset_index(drop=True)  # shuffled


def test_windows_respects_train_end_and_does_not_overlap():
    frame = _long_frame()
    dates = np.sort(frame["date"].unique())
    train_end = dates[19]
    train, recent = windows(frame, "date", train_end, recent_sessions=5)

    assert train["date"].max() == train_end
    assert (train["date"] <= train_end).all()
    assert (recent["date"] > train_end).all()
    assert recent["date"].min() > train["date"].max()
    assert set(train["date"]).isdisjoint(set(recent["date"]))
    # The last 5 sessions, both tickers each; the 5 sessions in between are left out.
    assert sorted(recent["date"].unique()) == list(dates[-5:])
    assert len(recent) == 10
    assert len(train) == 40
    assert train["date"].is_monotonic_increasing
    assert recent["date"].is_monotonic_increasing


def test_windows_accepts_strings_and_short_tails():
    frame = _long_frame()
    train, recent = windows(frame, "date", "2024-02-05", recent_sessions=100)
    assert (train["date"] <= pd.Timestamp("2024-02-05")).all()
    assert len(train) + len(recent) == len(frame)  # fewer than 100 later sessions: all of them
    _, none = windows(frame, "date", "2030-01-01", recent_sessions=3)
    assert none.empty
    with pytest.raises(ValueError):
        windows(frame, "date", "2024-02-05", recent_sessions=0)


def test_windows_with_python_dates():
    frame = _long_frame()
    frame["date"] = frame["date"].dt.date
    train, recent = windows(frame, "date", frame["date"].sort_values().iloc[39], recent_sessions=2)
    assert len(train) == 40
    assert len(recent) == 4
    assert min(recent["date"]) > max(train["date"])


def test_drift_chart(rng):
    train, recent = _frames(rng)
    fig = drift_chart(feature_psi(train, recent))
    ax = fig.axes[0]
    assert ax.get_title()
    assert ax.get_xlabel()
    assert ax.get_ylabel()
    vlines = sorted(line.get_xdata()[0] for line in ax.get_lines())
    assert vlines == [0.1, 0.25]
    assert [t.get_text() for t in ax.get_yticklabels()][-1] == "drifting"  # largest at top
    plt.close(fig)
