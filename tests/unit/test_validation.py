"""Data-quality checks: each planted problem is found by name, with counts and examples."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from bentley import calendar, schemas, validation
from bentley.config import load_config
from bentley.etl import clean_prices, validate
from bentley.sources.base import FetchRequest
from bentley.sources.sample import SampleMarketSource

SESSIONS = calendar.sessions("2025-01-02", "2025-01-10")


def good_prices() -> pd.DataFrame:
    rows = []
    for ticker, base in (("NOVA", 100.0), ("QBIT", 50.0)):
        for i, day in enumerate(SESSIONS):
            close = base + i
            rows.append(
                {
                    "ticker": ticker,
                    "date": day,
                    "open": close - 0.5,
                    "high": close + 1,
                    "low": close - 1,
                    "close": close,
                    "adj_close": close,
                    "volume": 1000 + i,
                    "dividend": 0.0,
                    "split_ratio": 1.0,
                    "_lake_file": "run.parquet",
                }
            )
    return pd.DataFrame(rows)


def check(frame: pd.DataFrame) -> dict[str, validation.CheckResult]:
    cleaned = clean_prices(frame)
    checks = validation.price_checks(SESSIONS, 0.5, SESSIONS[-1], max_range_atr=6.0, max_stale_sessions=4)
    return {r.check_name: r for r in validation.run_checks("prices", cleaned, schemas.PRICES, checks)}


def test_clean_data_passes_every_check() -> None:
    results = check(good_prices())
    assert all(r.passed for r in results.values()), [r for r in results.values() if not r.passed]


def with_value(row: int, column: str, value: object):
    def plant(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.astype({column: object}) if isinstance(value, str) else frame
        frame.loc[row, column] = value
        return frame

    return plant


@pytest.mark.parametrize(
    ("plant", "name", "severity"),
    [
        (with_value(3, "close", "n/a"), "not_numeric", "error"),
        (with_value(2, "volume", None), "missing_values", "error"),
        (lambda f: pd.concat([f, f.iloc[[0]]], ignore_index=True), "duplicate_keys", "error"),
        (with_value(1, "low", -1.0), "non_positive_prices", "error"),
        (with_value(4, "high", 1.0), "high_below_low", "error"),
        (with_value(4, "volume", -5), "negative_volume", "error"),
        (with_value(4, "volume", 0), "zero_volume", "error"),
        (lambda f: f.drop(index=3), "missing_sessions", "warning"),
        (lambda f: f[f["date"] < SESSIONS[-1]], "stale", "warning"),
        (with_value(5, "adj_close", 400.0), "jump_without_split", "warning"),
    ],
)
def test_each_planted_problem_is_named(plant, name: str, severity: str) -> None:
    results = check(plant(good_prices()))
    assert not results[name].passed, results[name]
    assert results[name].severity == severity
    assert results[name].examples, "failing rows come with examples"


def test_a_recorded_split_explains_a_jump() -> None:
    frame = good_prices()
    frame.loc[5:, ["open", "high", "low", "close", "adj_close"]] /= 2
    frame.loc[:4, "adj_close"] /= 2
    frame.loc[5, "split_ratio"] = 2.0
    assert check(frame)["jump_without_split"].passed


def test_missing_column_stops_before_other_checks() -> None:
    results = validation.run_checks("prices", good_prices().drop(columns="volume"), schemas.PRICES, [])
    assert [(r.check_name, r.passed, r.detail) for r in results] == [("required_columns", False, "missing ['volume']")]


def test_errors_raise_with_dataset_check_and_example() -> None:
    results = list(check(good_prices().assign(volume=-1)).values())
    with pytest.raises(validation.ValidationFailed, match=r"^etl: prices\.negative_volume: 12 of 12 rows"):
        validation.raise_on_errors("etl", results)
    table = validation.results_table(results, "run-1")
    assert set(table.columns) >= {"run_id", "dataset", "check_name", "severity", "passed", "n_failed", "examples"}
    assert "negative_volume" in validation.summary_sentence(table)


# --------------------------------------------------------------------------- on the sample data
#
# The embedded sample (8 stocks and the BBIX index over 5 years, with splits and dividends) is
# clean, so every check must pass on it; each planted problem must fire on the row it was
# planted in and nowhere else.

SAMPLE_END = dt.date(2026, 11, 27)


@pytest.fixture(scope="module")
def sample() -> pd.DataFrame:
    source = SampleMarketSource(42, 8, dt.date(2000, 1, 3), "BBIX")
    request = FetchRequest(
        SAMPLE_END.replace(year=SAMPLE_END.year - 5), SAMPLE_END, (*source.available_tickers(), "BBIX")
    )
    frame = clean_prices(source.fetch("prices", request).assign(_lake_file="sample.parquet"))
    return frame.sort_values(["ticker", "date"], ignore_index=True)


def sample_check(frame: pd.DataFrame) -> dict[str, validation.CheckResult]:
    sessions = calendar.sessions(frame["date"].min(), frame["date"].max())
    checks = validation.price_checks(sessions, 0.5, frame["date"].max(), max_range_atr=6.0, max_stale_sessions=4)
    return {r.check_name: r for r in validation.run_checks("prices", frame, schemas.PRICES, checks)}


def failed(results: dict[str, validation.CheckResult]) -> dict[str, int]:
    return {name: r.n_failed for name, r in results.items() if not r.passed}


def row_of(frame: pd.DataFrame, ticker: str, nth: int) -> int:
    """The index label of `ticker`'s nth row: a day in the middle of the sample, after a full ATR."""
    return int(frame.index[frame["ticker"] == ticker][nth])


def test_the_sample_data_passes_every_check(sample: pd.DataFrame) -> None:
    assert (sample["split_ratio"] != 1.0).any() and (sample["dividend"] > 0).any(), "the sample has actions"
    assert failed(sample_check(sample)) == {}


def test_a_bad_print_high_is_a_range_warning(sample: pd.DataFrame) -> None:
    frame = sample.copy()
    row = row_of(frame, "NOVA", 600)
    frame.loc[row, "high"] = frame.loc[row, "close"] * 1.168  # the high 16.8% above the close
    results = sample_check(frame.sample(frac=1.0, random_state=0))  # row order does not matter
    assert failed(results) == {"range_beyond_atr": 1}
    assert results["range_beyond_atr"].severity == "warning"
    assert results["range_beyond_atr"].examples[0]["date"].startswith(str(frame.loc[row, "date"].date()))


@pytest.mark.parametrize(("rows", "flagged"), [(6, 1), (5, 0)])
def test_a_daily_load_checks_its_new_session_against_the_overlap(sample: pd.DataFrame, rows: int, flagged: int) -> None:
    """An incremental load re-reads 5 sessions: enough ATR baseline (ATR_MIN_SESSIONS) for the new one."""
    frame = sample[sample["ticker"] == "NOVA"].tail(rows).copy()
    frame.loc[frame.index[-1], "high"] = frame["close"].iloc[-1] * 1.168
    assert failed(sample_check(frame)).get("range_beyond_atr", 0) == flagged


def test_an_open_gap_is_a_range_warning(sample: pd.DataFrame) -> None:
    frame = sample.copy()
    row = row_of(frame, "QBIT", 900)
    gapped = frame.loc[row - 1, "close"] * 1.25
    frame.loc[row, ["open", "high"]] = gapped, max(gapped, frame.loc[row, "high"])
    assert failed(sample_check(frame)) == {"range_beyond_atr": 1}


def test_zero_volume_on_a_moving_bar_is_an_error(sample: pd.DataFrame) -> None:
    frame = sample.copy()
    frame.loc[row_of(frame, "LEDG", 300), "volume"] = 0
    results = sample_check(frame)
    assert failed(results) == {"zero_volume": 1}
    assert results["zero_volume"].severity == "error"


def test_zero_volume_on_a_halted_session_is_a_warning(sample: pd.DataFrame) -> None:
    frame = sample.copy()
    row = row_of(frame, "LEDG", 300)
    frame.loc[row, ["open", "high", "low", "close"]] = frame.loc[row - 1, "close"]  # flat at the last price
    frame.loc[row, ["adj_close", "volume"]] = frame.loc[row - 1, "adj_close"], 0
    results = sample_check(frame)
    assert failed(results) == {"no_volume": 1}
    assert results["no_volume"].severity == "warning"


def test_an_index_without_volume_is_a_warning_not_an_error(sample: pd.DataFrame) -> None:
    frame = sample.copy()
    index_rows = frame["ticker"] == "BBIX"
    frame.loc[index_rows, "volume"] = 0
    assert failed(sample_check(frame)) == {"no_volume": int(index_rows.sum())}


@pytest.mark.parametrize(("copies", "flagged"), [(4, 0), (5, 5), (8, 8)])
def test_a_bar_repeated_too_long_is_stale(sample: pd.DataFrame, copies: int, flagged: int) -> None:
    frame = sample.copy()
    row = row_of(frame, "MEDX", 700)
    bar = ["open", "high", "low", "close", "adj_close"]
    frame.loc[row + 1 : row + copies, bar] = frame.loc[row, bar].to_numpy()
    assert failed(sample_check(frame)) == ({"repeated_bars": flagged} if flagged else {})


def test_the_etl_stage_runs_the_new_checks_with_its_params(sample: pd.DataFrame) -> None:
    """etl.validate wires `etl.max_range_atr` and `etl.max_stale_sessions` into the price checks."""
    raw = sample.drop(columns=["_raw_not_null"])
    raw.loc[row_of(raw, "LEDG", 300), "volume"] = 0
    frames = {
        dataset: pd.DataFrame(columns=[*contract.column_names, "_lake_file"])
        for dataset, contract in schemas.RAW_DATASETS.items()
    }
    frames["prices"] = raw
    _, results = validate(load_config(), frames, SAMPLE_END)
    names = {r.check_name for r in results if r.dataset == "prices"}
    assert {"zero_volume", "no_volume", "range_beyond_atr", "repeated_bars"} <= names
    assert [(r.dataset, r.check_name) for r in results if not r.passed] == [("prices", "zero_volume")]
    with pytest.raises(validation.ValidationFailed, match=r"prices\.zero_volume: 1 of"):
        validation.raise_on_errors("etl", results)


def test_headlines_and_posts_are_kept_apart_by_source_kind() -> None:
    """A post that says news (or a headline that says social) would be scored as the wrong kind."""
    rows = pd.DataFrame(
        {
            "news_id": ["a", "b", "c"],
            "ticker": ["NOVA"] * 3,
            "published_at": pd.to_datetime(["2024-03-04 14:00"] * 3, utc=True),
            "date": pd.to_datetime(["2024-03-04"] * 3),
            "headline": ["x", "y", "z"],
            "publisher": ["p"] * 3,
            "url": [None] * 3,
            "source_kind": [None, "news", "social"],
            "author": [None, None, "ann"],
            "_lake_file": ["f"] * 3,
        }
    )
    checks = {
        kind: {
            r.check_name: r.n_failed
            for r in validation.run_checks(kind, rows, schemas.NEWS, validation.news_checks(["NOVA"], kind))
        }
        for kind in ("news", "social")
    }
    assert checks["news"]["wrong_source_kind"] == 1  # the missing kind is news; "social" is not
    assert checks["social"]["wrong_source_kind"] == 2
    old = rows.drop(columns=["source_kind", "author"])  # a lake file from before social posts
    results = validation.run_checks("news", old, schemas.NEWS, validation.news_checks(["NOVA"], "news"))
    assert all(r.passed for r in results)
