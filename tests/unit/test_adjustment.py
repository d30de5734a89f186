"""Point-in-time prices: stored as traded, adjusted as of the reader's date."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from bentley import adjustment, etl
from bentley.sources.base import FetchRequest
from bentley.sources.sample import SampleMarketSource

EPOCH = dt.date(2000, 1, 3)
# QBIT splits 3:2 on 2026-03-10; BANQ pays a dividend on 2026-02-10 (sample seed 42).
TICKERS = ("QBIT", "BANQ", "BBIX")
BEFORE, AFTER = dt.date(2026, 1, 23), dt.date(2026, 3, 12)


@pytest.fixture(scope="module")
def source() -> SampleMarketSource:
    return SampleMarketSource(42, 8, EPOCH, "BBIX")


def fetch(source: SampleMarketSource, start: dt.date, end: dt.date) -> pd.DataFrame:
    return etl.clean_prices(source.fetch("prices", FetchRequest(start, end, TICKERS)))


def test_the_window_straddles_a_split_and_a_dividend(source: SampleMarketSource) -> None:
    rows = fetch(source, BEFORE, AFTER)
    later = rows[rows["date"] > pd.Timestamp(BEFORE)]
    assert (later["split_ratio"] != 1.0).any() and (later["dividend"] > 0).any()


def test_actions_that_explain_the_adjustment_are_stored_as_traded(source: SampleMarketSource) -> None:
    stored = adjustment.rows_to_store(fetch(source, dt.date(2025, 1, 2), AFTER))
    assert stored["adj_close"].isna().all()


def test_adjusted_as_of_equals_what_the_source_delivers_on_that_date(source: SampleMarketSource) -> None:
    for end in (BEFORE, AFTER):
        delivered = fetch(source, dt.date(2025, 1, 2), end)
        again = adjustment.adjusted_as_of(adjustment.rows_to_store(delivered))
        np.testing.assert_allclose(again["adj_close"], delivered["adj_close"], rtol=1e-12)


def test_a_later_fetch_stores_the_same_rows_for_earlier_dates(source: SampleMarketSource) -> None:
    early = adjustment.rows_to_store(fetch(source, dt.date(2025, 1, 2), BEFORE))
    late = adjustment.rows_to_store(fetch(source, dt.date(2025, 1, 2), AFTER))
    shared = late[late["date"] <= pd.Timestamp(BEFORE)].reset_index(drop=True)
    pd.testing.assert_frame_equal(early.reset_index(drop=True), shared)


def test_a_reader_before_an_action_never_sees_it(source: SampleMarketSource) -> None:
    """Rows stored by a later fetch, read as of an earlier date: adjusted only for earlier actions."""
    store = adjustment.rows_to_store(fetch(source, dt.date(2025, 1, 2), AFTER))
    as_of_before = adjustment.adjusted_as_of(store[store["date"] <= pd.Timestamp(BEFORE)])
    fresh = fetch(source, dt.date(2025, 1, 2), BEFORE)
    np.testing.assert_allclose(as_of_before["adj_close"], fresh["adj_close"].to_numpy(), rtol=1e-12)
    qbit = as_of_before[as_of_before["ticker"] == "QBIT"]
    assert (qbit["adj_close"] != qbit["close"]).sum() == 0, "no QBIT action before 2026-01-23 in this window"


def test_adjusted_only_sources_are_kept_as_delivered() -> None:
    """A CSV with Adj Close and no actions: the adjustment cannot be redone, so it is stored."""
    rows = pd.DataFrame(
        {
            "ticker": ["ACME"] * 3,
            "date": pd.to_datetime(["2025-01-02", "2025-01-03", "2025-01-06"]),
            "close": [100.0, 101.0, 102.0],
            "adj_close": [98.0, 99.0, 102.0],
            "dividend": [0.0, 0.0, 0.0],
            "split_ratio": [1.0, 1.0, 1.0],
        }
    )
    stored = adjustment.rows_to_store(rows)
    assert stored["adj_close"].tolist() == [98.0, 99.0, 102.0]
    assert adjustment.adjusted_as_of(stored)["adj_close"].tolist() == [98.0, 99.0, 102.0]


def test_a_missing_adjusted_close_means_no_adjustment() -> None:
    rows = pd.DataFrame(
        {
            "ticker": ["ACME", "ACME"],
            "date": pd.to_datetime(["2025-01-02", "2025-01-03"]),
            "close": [100.0, 50.0],
            "adj_close": [100.0, 50.0],
            "dividend": [0.0, 0.0],
            "split_ratio": [1.0, 2.0],
        }
    )
    read = adjustment.adjusted_as_of(adjustment.rows_to_store(rows.assign(adj_close=[50.0, 50.0])))
    assert read["adj_close"].tolist() == [50.0, 50.0]
    kept = adjustment.rows_to_store(rows)  # adj_close = close: the split does not explain it
    assert kept["adj_close"].tolist() == [100.0, 50.0]
