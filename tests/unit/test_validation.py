"""Data-quality checks: each planted problem is found by name, with counts and examples."""

from __future__ import annotations

import pandas as pd
import pytest

from bentley import calendar, schemas, validation
from bentley.etl import clean_prices

SESSIONS = calendar.sessions("2025-01-02", "2025-01-10")


def good_prices() -> pd.DataFrame:
    rows = []
    for ticker, base in (("NOVA", 100.0), ("QBIT", 50.0)):
        for i, day in enumerate(SESSIONS):
            close = base + i
            rows.append({"ticker": ticker, "date": day, "open": close - 0.5, "high": close + 1, "low": close - 1,
                         "close": close, "adj_close": close, "volume": 1000 + i, "dividend": 0.0,
                         "split_ratio": 1.0, "_lake_file": "run.parquet"})
    return pd.DataFrame(rows)


def check(frame: pd.DataFrame) -> dict[str, validation.CheckResult]:
    cleaned = clean_prices(frame)
    checks = validation.price_checks(SESSIONS, 0.5, SESSIONS[-1])
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
    assert [(r.check_name, r.passed, r.detail) for r in results] == [
        ("required_columns", False, "missing ['volume']")
    ]


def test_errors_raise_with_dataset_check_and_example() -> None:
    results = list(check(good_prices().assign(volume=-1)).values())
    with pytest.raises(validation.ValidationFailed, match=r"^etl: prices\.negative_volume: 12 of 12 rows"):
        validation.raise_on_errors("etl", results)
    table = validation.results_table(results, "run-1")
    assert set(table.columns) >= {"run_id", "dataset", "check_name", "severity", "passed", "n_failed", "examples"}
    assert "negative_volume" in validation.summary_sentence(table)
