"""The preflight: dates and params that cannot work stop a run with one line before anything exists.

Every rule runs with a pinned clock: Thursday 2026-12-03 15:00 UTC (10:00 in New York, the
session open) unless a case needs another. Three cases also go through the real CLI.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from bentley.config import PARAMS_DIR, PIPELINE_FILE, Config, ParamsError, load_config, load_pipeline
from runner.dag import DagError, Stage, build_dag
from runner.preflight import check_run

UTC = dt.UTC
NOW = dt.datetime(2026, 12, 3, 15, 0, tzinfo=UTC)
LATEST_CLOSED = dt.date(2026, 12, 2)


@pytest.fixture(scope="module")
def dag(root: Path) -> list[Stage]:
    return build_dag(load_pipeline(root / PARAMS_DIR / PIPELINE_FILE), root, 30, PIPELINE_FILE)


def params(root: Path, *overrides: str, profile: str = "default") -> Config:
    return load_config(profile, overrides, root)


def check(
    config: Config,
    root: Path,
    dag: Sequence[Stage],
    day: dt.date = LATEST_CLOSED,
    *,
    given: bool = True,
    stages_arg: list[str] | None = None,
    selected: Sequence[str] | None = None,
    run_id: str | None = None,
    now: dt.datetime = NOW,
) -> None:
    chosen = [s for s in dag if selected is None or s.name in selected]
    check_run(
        config, day, logical_date_given=given, stages_arg=stages_arg, selected=chosen, run_id=run_id, root=root, now=now
    )


def refusal(
    error: type[Exception], config: Config, root: Path, dag: Sequence[Stage], *args: dt.date, **kwargs: Any
) -> str:
    """The one-line message `check` refuses with."""
    with pytest.raises(error) as refused:
        check(config, root, dag, *args, **kwargs)
    message = str(refused.value)
    assert "\n" not in message
    return message


def test_the_default_params_pass(config: Config, root: Path, dag: list[Stage]) -> None:
    check(config, root, dag)
    check(config, root, dag, given=False)
    check(params(root, profile="ci"), root, dag)


# --------------------------------------------------------------------------- the logical date


def test_a_holiday_names_the_nearest_sessions(config: Config, root: Path, dag: list[Stage]) -> None:
    expected = (
        "logical date 2026-11-26 is not an XNYS session; the nearest sessions are 2026-11-25 and "
        "2026-11-27: pass one of them as --logical-date"
    )
    assert refusal(ParamsError, config, root, dag, dt.date(2026, 11, 26)) == expected
    # On the holiday itself it is still "no session", not "not closed yet".
    on_the_day = dt.datetime(2026, 11, 26, 18, 0, tzinfo=UTC)
    assert refusal(ParamsError, config, root, dag, dt.date(2026, 11, 26), now=on_the_day) == expected
    weekend = refusal(ParamsError, config, root, dag, dt.date(2026, 11, 29))
    assert "2026-11-29 is not an XNYS session; the nearest sessions are 2026-11-27 and 2026-11-30" in weekend


def test_a_future_date_has_not_closed(config: Config, root: Path, dag: list[Stage]) -> None:
    assert refusal(ParamsError, config, root, dag, dt.date(2027, 1, 4)) == (
        "logical date 2027-01-04 has not closed yet (now 2026-12-03 15:00 UTC); the latest closed session is "
        "2026-12-02: pass --logical-date 2026-12-02 or leave it out"
    )
    assert "has not closed yet" in refusal(ParamsError, config, root, dag, dt.date(2027, 1, 2))  # a future Saturday


def test_today_counts_once_the_exchange_has_closed_it(config: Config, root: Path, dag: list[Stage]) -> None:
    today = dt.date(2026, 12, 3)
    assert "2026-12-03 has not closed yet" in refusal(ParamsError, config, root, dag, today)
    check(config, root, dag, today, now=dt.datetime(2026, 12, 3, 21, 0, tzinfo=UTC))  # 16:00 New York
    # The day after Thanksgiving closes at 13:00 New York (18:00 UTC): the early close counts.
    half_day = dt.date(2026, 11, 27)
    before = dt.datetime(2026, 11, 27, 17, 30, tzinfo=UTC)
    assert "2026-11-27 has not closed yet" in refusal(ParamsError, config, root, dag, half_day, now=before)
    check(config, root, dag, half_day, now=dt.datetime(2026, 11, 27, 18, 30, tzinfo=UTC))


def test_a_scheduled_tick_runs_for_its_own_open_session(config: Config, root: Path, dag: list[Stage]) -> None:
    """`runner schedule` and `runner gate` run ticks during the session they refresh."""
    tick, today = "sched-20261203T1505Z", dt.date(2026, 12, 3)  # 10:05 New York
    fired = dt.datetime(2026, 12, 3, 15, 6, tzinfo=UTC)
    check(config, root, dag, today, run_id=tick, now=fired)
    assert "has not closed yet" in refusal(ParamsError, config, root, dag, dt.date(2026, 12, 4), run_id=tick, now=fired)
    assert "has not closed yet" in refusal(ParamsError, config, root, dag, today, run_id=tick, now=NOW)  # not fired
    off_grid = "sched-20261203T1507Z"
    assert "has not closed yet" in refusal(ParamsError, config, root, dag, today, run_id=off_grid, now=fired)


def test_a_date_before_the_calendar(config: Config, root: Path, dag: list[Stage]) -> None:
    assert refusal(ParamsError, config, root, dag, dt.date(1990, 1, 2)) == (
        "logical date 1990-01-02 is before 1995-01-01, where the XNYS calendar starts: pass a later --logical-date"
    )


# --------------------------------------------------------------------------- the data window


def test_a_window_before_the_sample_epoch_names_both_dates(config: Config, root: Path, dag: list[Stage]) -> None:
    assert refusal(ParamsError, config, root, dag, dt.date(2004, 6, 1)) == (
        "the history window 1999-06-01..2004-06-01 (history.years 5) starts before sample.epoch 2000-01-03, where "
        "the sample data starts: use history.years 4 or fewer, --logical-date on or after 2005-01-03 or an "
        "earlier sample.epoch"
    )
    late_epoch = params(root, "sample.epoch=2024-01-02")
    assert refusal(ParamsError, late_epoch, root, dag, given=False) == (
        "the history window 2021-12-02..2026-12-02 (history.years 5) starts before sample.epoch 2024-01-02, where "
        "the sample data starts: use history.years 2 or fewer or an earlier sample.epoch"
    )
    no_years_fit = params(root, "sample.epoch=2026-06-01")
    assert refusal(ParamsError, no_years_fit, root, dag, given=False).endswith(
        "where the sample data starts: use an earlier sample.epoch"
    )
    explicit = params(root, "history.start=1999-01-04")
    assert refusal(ParamsError, explicit, root, dag).startswith(
        "history.start 1999-01-04 is before sample.epoch 2000-01-03, where the sample data starts"
    )
    check(params(root, "history.years=1"), root, dag, dt.date(2004, 6, 1))


def test_a_csv_source_leaves_the_start_of_its_data_to_the_ingest(root: Path, dag: list[Stage], tmp_path: Path) -> None:
    folder = exports(tmp_path, "NOVA", "QBIT", "MEDX", "BBIX")
    check(params(root, "sources.market.kind=csv", f"sources.market.path={folder}"), root, dag, dt.date(2004, 6, 1))


def test_a_window_before_the_calendar(root: Path, dag: list[Stage], tmp_path: Path) -> None:
    folder = exports(tmp_path, "NOVA", "QBIT", "MEDX", "BBIX")
    csv = params(root, "sources.market.kind=csv", f"sources.market.path={folder}", "history.years=40")
    assert refusal(ParamsError, csv, root, dag).startswith(
        "the history window 1986-12-02..2026-12-02 starts before 1995-01-01, where the XNYS calendar starts"
    )


# --------------------------------------------------------------------------- stages and universe


def test_an_empty_stage_list_is_refused(config: Config, root: Path, dag: list[Stage]) -> None:
    message = refusal(DagError, config, root, dag, stages_arg=[])
    assert message.startswith("--stages names no stage")
    check(config, root, dag, stages_arg=["ingest"], selected=["ingest"])


def test_too_few_tickers_for_min_names(root: Path, dag: list[Stage]) -> None:
    two = params(root, "history.years=2", "universe.tickers=[NOVA, QBIT]")
    assert refusal(ParamsError, two, root, dag) == (
        "optimize.min_names is 3 but the universe has 2 ticker(s) besides the benchmark BBIX (NOVA, QBIT; from "
        "universe.tickers): list more tickers in universe.tickers or lower optimize.min_names"
    )
    check(two, root, dag, selected=["ingest", "etl"])  # no selected stage reads `optimize`
    small_sample = params(root, "sample.n_tickers=2")
    assert "(NOVA, QBIT; from sample.n_tickers 2): raise sample.n_tickers" in refusal(
        ParamsError, small_sample, root, dag
    )
    with_benchmark = params(root, "universe.tickers=[NOVA, QBIT, BBIX]")
    assert "the universe has 2 ticker(s) besides the benchmark BBIX" in refusal(ParamsError, with_benchmark, root, dag)


def test_an_empty_universe_is_refused(root: Path, dag: list[Stage]) -> None:
    only_benchmark = params(root, "universe.tickers=[BBIX]")
    assert refusal(ParamsError, only_benchmark, root, dag, selected=["ingest"]) == (
        "the universe has no ticker besides the benchmark BBIX (universe.tickers): list more tickers in "
        "universe.tickers"
    )
    with pytest.raises(ParamsError, match="an empty ticker list"):  # `[]` never gets this far
        params(root, "universe.tickers=[]")


def test_unknown_sample_tickers_are_refused_with_suggestions(root: Path, dag: list[Stage]) -> None:
    typo = params(root, "universe.tickers=[NOVA, QBIT, MEDX, APPL]")
    assert refusal(ParamsError, typo, root, dag) == (
        "universe.tickers: APPL is not a sample ticker; sample tickers: NOVA, QBIT, MEDX, CURA, PTRL, SOLR, "
        "BANQ, LEDG and the benchmark BBIX"
    )
    close = params(root, "universe.tickers=[NOVA, QBIT, MEDX, NOVAA]", "sample.n_tickers=12")
    assert refusal(ParamsError, close, root, dag) == (
        "universe.tickers: NOVAA is not a sample ticker (did you mean NOVA?); sample tickers: NOVA, QBIT, MEDX, "
        "CURA, PTRL, SOLR, BANQ, LEDG, X0009..X0012 and the benchmark BBIX"
    )
    # Every built-in company, the generated names up to n_tickers and any benchmark name are known.
    check(
        params(root, "universe.tickers=[CURA, LEDG, X0012]", "sample.n_tickers=12", "universe.benchmark=SPY"), root, dag
    )


def exports(folder: Path, *tickers: str) -> Path:
    """A csv market folder: the preflight only lists it, so the files may be empty."""
    folder.mkdir(parents=True, exist_ok=True)
    for ticker in tickers:
        (folder / f"{ticker}.csv").touch()
    return folder


def test_a_csv_folder_needs_the_benchmark_and_enough_files(root: Path, dag: list[Stage], tmp_path: Path) -> None:
    no_index = exports(tmp_path / "no-index", "NOVA", "QBIT", "MEDX")
    csv = ("sources.market.kind=csv", f"sources.market.path={no_index}")
    assert refusal(ParamsError, params(root, *csv), root, dag) == (
        f"universe.benchmark: {no_index} has no BBIX.csv or BBIX.parquet: add the benchmark's export there, or "
        "set universe.benchmark to the index among its files (MEDX, NOVA, QBIT)"
    )
    two = exports(tmp_path / "two", "NOVA", "QBIT", "BBIX")
    assert refusal(ParamsError, params(root, "sources.market.kind=csv", f"sources.market.path={two}"), root, dag) == (
        "optimize.min_names is 3 but the universe has 2 ticker(s) besides the benchmark BBIX (NOVA, QBIT; from "
        f"the files in {two}): add TICKER.csv exports to {two} or lower optimize.min_names"
    )
    only_index = exports(tmp_path / "only-index", "BBIX")
    empty = params(root, "sources.market.kind=csv", f"sources.market.path={only_index}")
    assert refusal(ParamsError, empty, root, dag, selected=["ingest"]).startswith(
        f"the universe has no ticker besides the benchmark BBIX (the files in {only_index})"
    )
    # A long file is read by the ingest, not here; nor is a folder that is not there.
    long = tmp_path / "prices.csv"
    long.touch()
    for path in (long, tmp_path / "missing"):
        check(params(root, "sources.market.kind=csv", f"sources.market.path={path}"), root, dag)


# --------------------------------------------------------------------------- through the CLI


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--logical-date", "2026-11-26"], "logical date 2026-11-26 is not an XNYS session"),
        (["--stages", ""], "--stages names no stage"),
        (["--set", "universe.tickers=[NOVA, QBIT]", "--set", "optimize.min_names=3"], "optimize.min_names is 3"),
    ],
)
def test_the_cli_exits_2_with_one_line_and_writes_nothing(
    args: list[str], expected: str, root: Path, clean_env: dict[str, str], tmp_path: Path
) -> None:
    outputs = tmp_path / "outputs"
    result = subprocess.run(
        [sys.executable, "-m", "runner", "run", "--profile", "ci", "--outputs", str(outputs), *args],
        cwd=root,
        env=clean_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1 and expected in result.stderr, result.stderr
    assert result.stdout == ""
    assert not outputs.exists()
