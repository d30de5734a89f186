"""The bar contract, the replay source and the sample intraday bars."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest

from bentley.live.bars import (
    BarError,
    ReplayBarSource,
    SampleIntradayBars,
    split_batches,
    validate_bars,
    write_bars,
)
from bentley.sources.sample import SampleMarketSource

from .conftest import DAY, OPEN_UTC, crafted_bars


def _csv(frame: pd.DataFrame, path: Path) -> Path:
    frame.assign(ts=frame["ts"].map(lambda t: t.isoformat())).to_csv(path, index=False)
    return path


def test_replay_plays_files_of_a_folder_in_timestamp_order(tmp_path: Path) -> None:
    bars = crafted_bars({"AAA": [100, 101, 102, 103], "BBB": [50, 49, 48, 47]})
    late, early = (
        bars[bars["ts"] >= OPEN_UTC + pd.Timedelta(minutes=2)],
        bars[bars["ts"] < OPEN_UTC + pd.Timedelta(minutes=2)],
    )
    _csv(late, tmp_path / "a_late.csv")  # read first, plays last
    (tmp_path / "sub").mkdir()
    early.iloc[::-1].to_parquet(tmp_path / "sub" / "z_early.parquet")  # rows shuffled inside the file too
    source = ReplayBarSource(tmp_path, speed=0)
    batches = list(source.batches(DAY))
    assert [b["ts"].iloc[0] for b in batches] == [OPEN_UTC + pd.Timedelta(minutes=i) for i in range(4)]
    assert all(list(b["ticker"]) == ["AAA", "BBB"] for b in batches)
    assert str(batches[0]["ts"].dtype) == "datetime64[ns, UTC]"
    after = list(source.batches(DAY, after=OPEN_UTC + pd.Timedelta(minutes=1)))
    assert len(after) == 2
    assert list(source.batches(dt.date(2024, 6, 4))) == []  # another session


def test_replay_speed_factor_waits_between_batches(tmp_path: Path) -> None:
    bars = crafted_bars({"AAA": [100, 101, 102]}, minutes=5)
    waits: list[float] = []
    source = ReplayBarSource(_csv(bars, tmp_path / "bars.csv"), speed=60, sleep=waits.append)
    assert len(list(source.batches(DAY))) == 3
    assert waits == [5.0, 5.0]  # 300 s of bars at 60x


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda f: f.drop(columns="volume"), "missing column(s) volume"),
        (
            lambda f: f.assign(ts=f["ts"].dt.tz_localize(None).astype(str)),
            "field ts: not an ISO timestamp with a UTC offset",
        ),
        (lambda f: f.assign(high=f["low"] - 1), "field high: below the open, close or low"),
        (lambda f: f.assign(volume=-1.0), "field volume: negative"),
        (lambda f: f.assign(close="abc"), "field close: not a finite number"),
        (lambda f: f.assign(open=0.0, low=0.0), "field open: not a positive price"),
        (lambda f: f.assign(ticker=["", *f["ticker"][1:]]), "field ticker: empty in row(s) 1"),
        (lambda f: pd.concat([f, f.head(1)]), "field ts: the same (ts, ticker) appears more than once"),
    ],
)
def test_a_bad_file_is_named_with_its_ticker_and_field(tmp_path: Path, change, expected: str) -> None:
    bars = change(crafted_bars({"AAA": [100, 101]}))
    path = tmp_path / "day.csv"
    bars.to_csv(path, index=False)
    with pytest.raises(BarError) as caught:
        ReplayBarSource(path, speed=0).bars()
    message = str(caught.value)
    assert message.startswith(str(path)) and expected in message
    if "ticker AAA" not in expected and "row(s)" not in expected and "missing" not in expected:
        assert "ticker AAA at" in message


def test_naive_datetimes_are_refused_in_memory_too() -> None:
    bars = crafted_bars({"AAA": [100, 101]})
    with pytest.raises(BarError, match="naive timestamps"):
        validate_bars(bars.assign(ts=bars["ts"].dt.tz_localize(None)), "frame")


def test_written_bars_replay_identically(tmp_path: Path) -> None:
    bars = crafted_bars({"AAA": [100, 101, 99], "BBB": [50, 51, 52]})
    files = write_bars(bars, tmp_path / "lake", "America/New_York")
    assert [f.parent.name for f in files] == ["ingest_date=2024-06-03"]
    replayed = ReplayBarSource(tmp_path / "lake", speed=0).bars()
    pd.testing.assert_frame_equal(replayed, validate_bars(bars))


@pytest.fixture(scope="module")
def sample() -> SampleIntradayBars:
    market = SampleMarketSource(42, 8, dt.date(2000, 1, 3), "BBIX")
    return SampleIntradayBars(market, ["NOVA", "QBIT", "BBIX"], interval="5m")


@pytest.mark.parametrize("day", [dt.date(2024, 6, 3), dt.date(2024, 11, 29)])  # a normal day, a half day
def test_sample_intraday_bars_agree_with_the_daily_bars(sample: SampleIntradayBars, day: dt.date) -> None:
    bars = sample.session_bars(day)
    daily = sample.daily(day).set_index("ticker")
    per = bars.groupby("ticker").agg(
        open=("open", "first"),
        high=("high", "max"),
        low=("low", "min"),
        close=("close", "last"),
        volume=("volume", "sum"),
    )
    for field in ("open", "high", "low", "close", "volume"):
        assert per[field].to_dict() == pytest.approx(daily[field].astype(float).to_dict(), abs=1e-9), field
    assert (bars["high"] <= bars["ticker"].map(daily["high"]) + 1e-12).all()
    assert (bars["low"] >= bars["ticker"].map(daily["low"]) - 1e-12).all()
    last = bars["ts"].max().tz_convert("America/New_York")
    assert last.strftime("%H:%M") == ("12:55" if day == dt.date(2024, 11, 29) else "15:55")  # early close
    assert len(bars) == 3 * (42 if day == dt.date(2024, 11, 29) else 78)


def test_sample_intraday_bars_are_deterministic_per_ticker_and_day(sample: SampleIntradayBars) -> None:
    market = SampleMarketSource(42, 8, dt.date(2000, 1, 3), "BBIX")
    alone = SampleIntradayBars(market, ["QBIT"], interval="5m").session_bars(DAY)
    together = sample.session_bars(DAY)
    pd.testing.assert_frame_equal(alone, together[together["ticker"] == "QBIT"].reset_index(drop=True))
    assert sample.session_bars(dt.date(2024, 6, 1)).empty  # a Saturday
    assert len(list(split_batches(together))) == 78
