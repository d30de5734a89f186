"""The same logical date gives the same results, whatever ran before (issue 14).

Two dates that straddle BANQ's dividend on 2026-02-10 and QBIT's 3:2 split on 2026-03-10
(sample seed 42). Sequence A runs in one outputs base: D2, a default-profile run, D1
(backdated: later prices, a later model and a later paper book already exist), D2 again.
Sequence B is a fresh store per date (A's first run is B's D2: a fresh store). Every
date's digests (tests/point_in_time.py says what they cover and exclude) must match.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from bentley.warehouse import Warehouse
from tests.point_in_time import date_digests

pytestmark = pytest.mark.integration

D1, D2 = "2026-01-23", "2026-03-12"
CI = ["--profile", "ci", "--set", "universe.tickers=[QBIT, BANQ, MEDX]"]


def runner(args: list[str], env: dict[str, str], root: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "runner", *args], cwd=root, env=env, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def test_a_dates_results_do_not_depend_on_what_ran_before(
    tmp_path: Path, root: Path, clean_env: dict[str, str]
) -> None:
    base = tmp_path / "base"
    env = {**clean_env, "BENTLEY_OUTPUTS": str(base)}
    ci_store = base / "profiles" / "ci"

    fresh_d1 = tmp_path / "fresh-d1"
    runner(["run", *CI, "--logical-date", D1, "--run-id", "b-d1", "--outputs", str(fresh_d1)], clean_env, root)
    expected_d1 = date_digests(fresh_d1, "b-d1")

    runner(["run", *CI, "--logical-date", D2, "--run-id", "a-d2"], env, root)
    expected_d2 = date_digests(ci_store, "a-d2")  # a fresh store for D2: sequence B's D2

    # Another profile in the same outputs base trains and registers its own model ...
    runner(
        [
            "run",
            "--profile",
            "default",
            "--to",
            "train",
            "--logical-date",
            D2,
            "--run-id",
            "other-profile",
            "--set",
            "history.years=3",
            "--set",
            "sample.n_tickers=4",
        ],
        env,
        root,
    )
    assert (base / "runs" / "other-profile").is_dir() and not (ci_store / "runs" / "other-profile").exists()
    assert date_digests(ci_store, "a-d2") == expected_d2, "a default-profile run changed the ci store"

    backdated = runner(["run", *CI, "--logical-date", D1, "--run-id", "a-d1"], env, root)
    assert "paper@2026-01-23" in (ci_store / "runs" / "a-d1" / "reports" / "trade.html").read_text()
    assert _diff(date_digests(ci_store, "a-d1"), expected_d1) == {}, backdated.stdout[-2000:]

    again = runner(["run", *CI, "--logical-date", D2, "--run-id", "a-d2-again"], env, root)
    assert _diff(date_digests(ci_store, "a-d2-again"), expected_d2) == {}, again.stdout[-2000:]

    warehouse = Warehouse(f"sqlite:///{ci_store / 'warehouse.db'}")
    try:
        prices = warehouse.read("prices", tickers=["QBIT", "BANQ"])
        assert prices["adj_close"].isna().all(), "the store keeps prices as traded"
        books = set(warehouse.read("portfolio_values")["portfolio"])
        assert books == {"paper", "paper@2026-01-23"}, books
        used = warehouse.read("predictions", where={"run_id": "a-d1", "kind": "live"})
    finally:
        warehouse.dispose()
    _assert_trained_on_or_before(ci_store, used, D1)
    _assert_refused_without_a_write(ci_store, env, root)


def _assert_trained_on_or_before(store: Path, predictions: pd.DataFrame, day: str) -> None:
    """The backdated run predicted with a version whose data ended on or before its date."""
    assert not predictions.empty, "the backdated run trained its own model and predicted"
    client = MlflowClient(f"sqlite:///{store / 'mlflow' / 'mlflow.db'}")
    name, version = predictions["model_name"].iloc[0], predictions["model_version"].iloc[0]
    tags = client.get_model_version(name, str(version)).tags
    assert tags["data_as_of"] <= day and tags["train_end"] <= day, tags
    later = [v for v in client.search_model_versions(f"name='{name}'") if v.tags.get("data_as_of", "") > day]
    assert later, "a later version exists, and was not used"


def _assert_refused_without_a_write(store: Path, env: dict[str, str], root: Path) -> None:
    """Dates and params that cannot work: exit 2, one line, the store byte for byte as it was."""
    before = _files(store)
    for extra in (
        ["--logical-date", "2026-11-26"],
        ["--logical-date", "2027-01-04"],
        ["--logical-date", "2000-06-01"],
        ["--set", "universe.tickers=[APPL, QBIT, MEDX]"],
        ["--set", "universe.tickers=[QBIT, MEDX]", "--set", "optimize.min_names=3"],
        ["--stages", ""],
    ):
        result = subprocess.run(
            [sys.executable, "-m", "runner", "run", "--profile", "ci", *extra],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 2, (extra, result.stdout, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr, result.stderr
    assert _files(store) == before


def _files(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _diff(got: dict[str, str], expected: dict[str, str]) -> dict[str, tuple[str | None, str | None]]:
    return {
        k: (got.get(k), expected.get(k)) for k in sorted(got.keys() | expected.keys()) if got.get(k) != expected.get(k)
    }
