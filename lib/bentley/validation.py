"""Data-quality checks with names, severities, counts and example rows.

A check looks at a whole table and returns the rows that fail it; pandera runs the checks
lazily (every failing row of every check is collected, not just the first). Errors stop the
stage before any warehouse write; warnings are reported and the stage goes on. Each
result becomes one row of `data_quality(run_id, dataset, check_name)` and a line of the
`etl` report, so "what was wrong with the data" is answered by a table, not a log.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd
import pandera.pandas as pa

from bentley.schemas import TableContract

Severity = Literal["error", "warning"]
_EXAMPLES = 5


@dataclass(frozen=True)
class CheckResult:
    dataset: str
    check_name: str
    severity: Severity
    n_rows: int
    n_failed: int
    detail: str = ""
    examples: list[dict] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.n_failed == 0


class ValidationFailed(Exception):
    """At least one error-severity check failed; nothing may be written."""

    def __init__(self, origin: str, failures: Sequence[CheckResult]) -> None:
        self.failures = list(failures)
        lines = [
            f"{origin}: {r.dataset}.{r.check_name}: {r.n_failed} of {r.n_rows} rows"
            + (f" ({r.detail})" if r.detail else "")
            + (f"; e.g. {json.dumps(r.examples[:2], default=str)}" if r.examples else "")
            for r in self.failures
        ]
        more = f" (and {len(lines) - 1} more check(s) failed)" if len(lines) > 1 else ""
        # The first line is what the runner prints: it names the data, the check and the rows.
        super().__init__(lines[0] + more + "".join(f"\n  {line}" for line in lines[1:]))


@dataclass(frozen=True)
class Check:
    """A named rule over a whole table: `failing_rows` marks the rows that break it."""

    name: str
    severity: Severity
    failing_rows: Callable[[pd.DataFrame], pd.Series | np.ndarray]
    detail: str | Callable[[pd.DataFrame], str] = ""


def run_checks(
    dataset: str, frame: pd.DataFrame, contract: TableContract, checks: Iterable[Check]
) -> list[CheckResult]:
    """Validate with pandera: column presence and types first, then every named check.

    pandera does the bookkeeping (lazy validation collects every failing row of every
    check); this function turns its failure cases into one `CheckResult` per check.
    """
    checks = list(checks)
    presence = _presence_schema(contract)
    failures = _failure_cases(presence, frame)
    missing = sorted(failures.loc[failures["check"] == "column_in_dataframe", "failure_case"].astype(str))
    results = [
        CheckResult(
            dataset,
            "required_columns",
            "error",
            len(frame),
            len(missing),
            detail=f"missing {missing}" if missing else "",
        )
    ]
    if missing:
        return results
    typed = _typed_schema(contract, frame, checks)
    failures = _failure_cases(typed, frame)
    bad_columns = sorted(set(failures.loc[failures["check"] == "column_types", "column"].dropna().astype(str)))
    results.append(
        CheckResult(
            dataset,
            "column_types",
            "error",
            len(frame),
            len(bad_columns),
            detail=f"wrong type in {bad_columns}" if bad_columns else "",
        )
    )
    if bad_columns:
        return results
    for check in checks:
        rows = failures.loc[failures["check"] == check.name, "index"].dropna().unique()
        failed = frame.loc[frame.index.isin(rows)]
        detail = check.detail(failed) if callable(check.detail) else check.detail
        results.append(
            CheckResult(
                dataset,
                check.name,
                check.severity,
                len(frame),
                len(failed),
                detail=detail if len(failed) else "",
                examples=_examples(failed),
            )
        )
    return results


def _presence_schema(contract: TableContract) -> pa.DataFrameSchema:
    return pa.DataFrameSchema(
        {c: pa.Column(required=not _optional(contract, c), nullable=True) for c in contract.columns},
        strict=False,
    )


_TYPE_CHECKS: dict[str, Callable[[pd.Series], bool]] = {
    "float": pd.api.types.is_numeric_dtype,
    "int": pd.api.types.is_numeric_dtype,
    "date": pd.api.types.is_datetime64_any_dtype,
    "timestamp": pd.api.types.is_datetime64_any_dtype,
}


def _typed_schema(contract: TableContract, frame: pd.DataFrame, checks: list[Check]) -> pa.DataFrameSchema:
    columns = {
        name: pa.Column(
            nullable=True,
            required=False,
            checks=[pa.Check(_TYPE_CHECKS[kind], name="column_types")] if kind in _TYPE_CHECKS else [],
        )
        for name, kind in contract.columns.items()
        if name in frame.columns
    }
    frame_checks = [pa.Check(_passing(check), name=check.name) for check in checks]
    return pa.DataFrameSchema(columns, checks=frame_checks, strict=False)


def _passing(check: Check) -> Callable[[pd.DataFrame], pd.Series]:
    """pandera wants True for rows that pass; our checks mark the rows that fail."""

    def passes(frame: pd.DataFrame) -> pd.Series:
        failing = pd.Series(check.failing_rows(frame), index=frame.index)
        return ~failing.fillna(False).astype(bool)

    return passes


def _failure_cases(schema: pa.DataFrameSchema, frame: pd.DataFrame) -> pd.DataFrame:
    try:
        schema.validate(frame, lazy=True)
    except pa.errors.SchemaErrors as err:
        return err.failure_cases
    return pd.DataFrame(columns=["check", "column", "failure_case", "index"])


def raise_on_errors(origin: str, results: Sequence[CheckResult]) -> None:
    failures = [r for r in results if r.severity == "error" and not r.passed]
    if failures:
        raise ValidationFailed(origin, failures)


def results_table(results: Sequence[CheckResult], run_id: str) -> pd.DataFrame:
    """Rows for `data_quality` (and the report)."""
    return pd.DataFrame(
        [
            {
                "run_id": run_id,
                "dataset": r.dataset,
                "check_name": r.check_name,
                "severity": r.severity,
                "passed": r.passed,
                "n_failed": r.n_failed,
                "n_rows": r.n_rows,
                "examples": json.dumps(r.examples, default=str),
                "detail": r.detail,
            }
            for r in results
        ],
        columns=["run_id", "dataset", "check_name", "severity", "passed", "n_failed", "n_rows", "examples", "detail"],
    )


# --------------------------------------------------------------------------- check sets

PRICE_COLUMNS = ["open", "high", "low", "close", "adj_close"]


#: Sessions of true range averaged into the ATR a day's range is measured against (Wilder's 14).
ATR_SESSIONS = 14
#: Fewest preceding sessions an ATR is taken from. Checks see only the rows of one load, and an
#: incremental load re-reads `sources.market.overlap_sessions` (5) sessions before its new ones,
#: so with 5 its first new session still has a baseline; a full 14 would skip every daily load.
ATR_MIN_SESSIONS = 5


def price_checks(
    sessions: pd.DatetimeIndex,
    max_abs_return_without_split: float,
    expected_last_session: pd.Timestamp,
    *,
    max_range_atr: float,
    max_stale_sessions: int,
) -> list[Check]:
    """Checks for daily OHLCV against the exchange calendar.

    Checks that compare a row with its ticker's earlier rows (jumps, ATR, repeated bars) see
    only the rows of this load: a daily load holds the overlap sessions plus the new ones, so a
    problem reaching further back than that is left to the anomalies stage.
    """
    numeric = [*PRICE_COLUMNS, "volume"]
    return [
        Check(
            "not_numeric",
            "error",
            lambda f: f[numeric].isna().any(axis=1) & f["_raw_not_null"],
            "text where a number belongs",
        ),
        Check(
            "missing_values",
            "error",
            lambda f: f[numeric].isna().any(axis=1) & ~f["_raw_not_null"],
            "empty price or volume",
        ),
        Check("infinite_values", "error", lambda f: np.isinf(f[numeric].to_numpy(dtype=float)).any(axis=1)),
        Check(
            "duplicate_keys",
            "error",
            lambda f: f.duplicated(["_lake_file", "ticker", "date"], keep=False),
            "one file has the same (ticker, date) twice",
        ),
        Check("non_positive_prices", "error", lambda f: (f[PRICE_COLUMNS] <= 0).any(axis=1)),
        Check("high_below_low", "error", lambda f: f["high"] < f["low"]),
        Check(
            "ohlc_outside_range",
            "error",
            lambda f: (
                (f[["open", "close"]].max(axis=1) > f["high"] * (1 + 1e-9))
                | (f[["open", "close"]].min(axis=1) < f["low"] * (1 - 1e-9))
            ),
            "open or close outside [low, high]",
        ),
        Check("negative_volume", "error", lambda f: f["volume"] < 0),
        Check(
            "zero_volume",
            "error",
            lambda f: (f["volume"] == 0) & _traded_bar(f),
            "no shares traded, yet the prices moved and the ticker reports volume on other sessions",
        ),
        Check(
            "no_volume",
            "warning",
            lambda f: (f["volume"] == 0) & ~_traded_bar(f),
            "volume 0 on a flat bar (a halted session) or for a ticker that reports no volume (an index)",
        ),
        Check(
            "range_beyond_atr",
            "warning",
            lambda f: _range_beyond_atr(f, max_range_atr),
            f"true range (high-low, or the gap from the previous close) over {max_range_atr:g} x ATR"
            f"({ATR_SESSIONS}) of the preceding sessions",
        ),
        Check(
            "repeated_bars",
            "warning",
            lambda f: _repeated_bars(f, max_stale_sessions),
            f"open, high, low and close unchanged for more than {max_stale_sessions} sessions in a row",
        ),
        Check("not_a_session", "warning", lambda f: ~f["date"].isin(sessions), "date is not an exchange session"),
        Check(
            "jump_without_split",
            "warning",
            lambda f: _unexplained_jumps(f, max_abs_return_without_split),
            f"adjusted move over {max_abs_return_without_split:.0%} with no split recorded",
        ),
        Check(
            "missing_sessions",
            "warning",
            lambda f: _rows_before_gaps(f, sessions),
            "the next session of this ticker is missing",
        ),
        Check(
            "stale",
            "warning",
            lambda f: _stale_tickers(f, expected_last_session),
            f"last row before the expected session {expected_last_session.date()}",
        ),
    ]


def news_checks(universe: Iterable[str], source_kind: str) -> list[Check]:
    """Checks of headlines (`source_kind` news) or social posts (`source_kind` social), which share a contract.

    `wrong_source_kind` keeps the two apart in the `news` table: a headline source may leave
    `source_kind` out (it reads as news), a post must say social.
    """
    tickers = set(universe)
    what = "headlines" if source_kind == "news" else "posts"
    return [
        Check("duplicate_keys", "error", lambda f: f.duplicated(["_lake_file", "news_id"], keep=False)),
        Check("missing_values", "error", lambda f: f[["news_id", "ticker", "date", "headline"]].isna().any(axis=1)),
        Check(
            "wrong_source_kind",
            "error",
            lambda f: f["source_kind"].astype(object).where(f["source_kind"].notna(), "news") != source_kind,
            f"every row of this dataset must have source_kind {source_kind}",
        ),
        Check(
            "ticker_outside_universe",
            "warning",
            lambda f: ~f["ticker"].isin(tickers),
            lambda failed: f"{what} for tickers outside the universe: " + ", ".join(sorted(set(failed["ticker"]))),
        ),
    ]


def transaction_checks() -> list[Check]:
    return [
        Check("duplicate_keys", "error", lambda f: f.duplicated(["_lake_file", "txn_id"], keep=False)),
        Check("missing_values", "error", lambda f: f[["txn_id", "date", "account", "amount"]].isna().any(axis=1)),
        Check("uncategorized", "warning", lambda f: f["category"].isna(), "left for the budget stage to classify"),
    ]


def holding_checks(universe: Iterable[str]) -> list[Check]:
    tickers = set(universe)
    return [
        Check(
            "duplicate_keys", "error", lambda f: f.duplicated(["_lake_file", "as_of", "account", "ticker"], keep=False)
        ),
        Check("missing_values", "error", lambda f: f[["as_of", "account", "ticker", "quantity"]].isna().any(axis=1)),
        Check("negative_quantity", "error", lambda f: f["quantity"] < 0),
        Check(
            "ticker_outside_universe",
            "warning",
            lambda f: ~f["ticker"].isin(tickers),
            lambda failed: "holdings of tickers outside the universe: " + ", ".join(sorted(set(failed["ticker"]))),
        ),
    ]


# --------------------------------------------------------------------------- helpers


def _optional(contract: TableContract, column: str) -> bool:
    """Columns a source may omit (ETL fills them): adj_close, dividend, split_ratio, category,
    and the news columns a headline file written before social posts lacks."""
    return column in {"adj_close", "dividend", "split_ratio", "category", "publisher", "url", "source_kind", "author"}


def _examples(failed: pd.DataFrame) -> list[dict]:
    shown = failed.drop(columns=[c for c in failed.columns if c.startswith("_")], errors="ignore").head(_EXAMPLES)
    return json.loads(shown.to_json(orient="records", date_format="iso"))


def _ordered(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(["ticker", "date"], kind="stable")


def _unexplained_jumps(frame: pd.DataFrame, threshold: float) -> pd.Series:
    """An adjusted day-over-day move beyond the threshold on a day with no split recorded."""
    ordered = _ordered(frame)
    change = ordered.groupby("ticker", sort=False)["adj_close"].pct_change()
    no_split = ordered["split_ratio"].fillna(1.0) == 1.0
    return ((change.abs() > threshold) & no_split).reindex(frame.index)


def _rows_before_gaps(frame: pd.DataFrame, sessions: pd.DatetimeIndex) -> pd.Series:
    """Flag a row when the ticker's next row skips at least one exchange session."""
    if len(sessions) == 0:
        return pd.Series(False, index=frame.index)
    position = pd.Series(sessions.get_indexer(frame["date"]), index=frame.index)
    ordered = position.loc[_ordered(frame).index]
    tickers = frame.loc[ordered.index, "ticker"]
    gap = ordered.groupby(tickers, sort=False).diff(-1).abs()
    return ((gap > 1) & (ordered >= 0)).reindex(frame.index)


def _traded_bar(frame: pd.DataFrame) -> pd.Series:
    """Rows whose bar says trading happened: the prices moved (high > low) and the ticker reports
    volume on some row of the load. Zero volume on such a row contradicts its own prices.

    Not traded: a flat bar (a halt: open = high = low = close, often at the previous close) and
    a ticker with no volume on any row, which is how vendors deliver many indices (the yahoo
    source turns a missing volume into 0). Those may legitimately have volume 0.
    """
    reports_volume = frame.groupby("ticker")["volume"].transform("max") > 0
    return (frame["high"] > frame["low"]) & reports_volume


def _previous_close(ordered: pd.DataFrame) -> pd.Series:
    """The ticker's previous close on this row's basis: less this row's dividend, over its split.

    On an ex-date or split date the open is expected near this, not near the raw previous close,
    so a corporate action is not mistaken for a gap.
    """
    previous = ordered.groupby("ticker", sort=False)["close"].shift()
    return (previous - ordered["dividend"].fillna(0.0)) / ordered["split_ratio"].fillna(1.0)


def _range_beyond_atr(frame: pd.DataFrame, max_range_atr: float) -> pd.Series:
    """A true range over `max_range_atr` times the mean true range of the ticker's preceding
    `ATR_SESSIONS` rows (at least `ATR_MIN_SESSIONS`).

    The true range (max(high, previous close) - min(low, previous close)) covers both a wide
    day and an open gap, since open and close lie within [low, high] (checked above). It is
    taken as a share of the previous close (of the close on a ticker's first row), so ranges
    before and after a split compare. The day itself is not in its own baseline: a bad print
    cannot raise the bar it is measured against.
    """
    ordered = _ordered(frame)
    previous = _previous_close(ordered).to_numpy(dtype=float)
    high, low = ordered["high"].to_numpy(dtype=float), ordered["low"].to_numpy(dtype=float)
    base = np.where(np.isnan(previous), ordered["close"].to_numpy(dtype=float), previous)
    with np.errstate(divide="ignore", invalid="ignore"):  # non-positive prices are errors of their own
        true_range = pd.Series((np.fmax(high, previous) - np.fmin(low, previous)) / base, index=ordered.index)
    tickers = ordered["ticker"].to_numpy()
    preceding = true_range.groupby(tickers, sort=False).shift()
    atr = preceding.groupby(tickers, sort=False).rolling(ATR_SESSIONS, min_periods=ATR_MIN_SESSIONS).mean().droplevel(0)
    return (true_range > max_range_atr * atr).reindex(frame.index)


def _repeated_bars(frame: pd.DataFrame, max_stale_sessions: int) -> pd.Series:
    """Rows repeating the previous row's open, high, low and close, in a run of more than
    `max_stale_sessions` such rows: a feed that stopped updating and copies its last bar.

    The first row of the run is the real observation and is not flagged. A ticker's first row
    compares with nothing, so a run never spans two tickers.
    """
    ordered = _ordered(frame)
    bars = ordered[["open", "high", "low", "close"]]
    repeats = (bars == bars.groupby(ordered["ticker"], sort=False).shift()).all(axis=1)
    run = (~repeats).cumsum()
    run_length = repeats.groupby(run).transform("sum")
    return (repeats & (run_length > max_stale_sessions)).reindex(frame.index)


def _stale_tickers(frame: pd.DataFrame, expected_last_session: pd.Timestamp) -> pd.Series:
    last = frame.groupby("ticker")["date"].transform("max")
    return (last < expected_last_session) & (frame["date"] == last)


def summary_sentence(checks: pd.DataFrame) -> str:
    """One sentence for the report: how many checks ran, which failed and how badly."""
    failed = checks[~checks["passed"]]
    if failed.empty:
        return f"All {len(checks)} checks passed."
    named = ", ".join(
        f"{r.dataset}.{r.check_name} ({r.severity}, {r.n_failed} of {r.n_rows} rows)" for r in failed.itertuples()
    )
    errors = int((failed["severity"] == "error").sum())
    verdict = "The load was stopped." if errors else "Only warnings: the load went ahead."
    return f"{len(checks) - len(failed)} of {len(checks)} checks passed; failed: {named}. {verdict}"
