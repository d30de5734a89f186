"""The Yahoo intraday adapter, on what yfinance 1.7.0's own `download` returned for canned responses
(fixtures/record_yfinance_intraday.py); no network."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from bentley.live.bars import YahooIntradayBars, check_yahoo_window, yahoo_intraday_frame

FIXTURE = Path(__file__).parent / "fixtures" / "yfinance_intraday.csv"
DAY = dt.date(2024, 6, 3)
HTTP = SimpleNamespace(timeout_s=5.0, max_attempts=3, backoff_base_s=0.0, backoff_max_s=0.0, requests_per_second=1000.0)


def recorded() -> pd.DataFrame:
    frame = pd.read_csv(FIXTURE, header=[0, 1], index_col=0)
    frame.index = pd.to_datetime(frame.index, utc=True).tz_convert("America/New_York").rename("Datetime")
    frame.columns = frame.columns.set_names(["Price", "Ticker"])
    return frame


def test_the_recorded_frame_becomes_bars_in_the_contract() -> None:
    bars = yahoo_intraday_frame(recorded(), ["AAA", "BBB", "ZZZZ"])
    assert list(bars.columns) == ["ts", "ticker", "open", "high", "low", "close", "volume"]
    assert str(bars["ts"].dtype) == "datetime64[ns, UTC]"
    assert bars["ts"].min() == pd.Timestamp("2024-06-03 13:30", tz="UTC")  # 09:30 EDT, the bar's start
    assert bars.groupby("ticker").size().to_dict() == {"AAA": 6, "BBB": 5}  # BBB's missing bar is not padded; ZZZZ none
    first = bars[(bars["ticker"] == "AAA")].iloc[0]
    assert (first["open"], first["high"], first["low"], first["close"], first["volume"]) == (
        99.95,
        100.1,
        99.9,
        100.0,
        100.0,
    )


def test_polling_hands_out_complete_bars_once() -> None:
    calls: list[dict] = []
    clock = {"now": dt.datetime(2024, 6, 3, 13, 45, tzinfo=dt.UTC)}  # 09:45 EDT: three bars complete

    def download(**kwargs: object) -> pd.DataFrame:
        calls.append(kwargs)
        return recorded()

    def sleep(_s: float) -> None:
        clock["now"] += dt.timedelta(minutes=15)

    source = YahooIntradayBars(
        ["AAA", "BBB"],
        HTTP,
        interval="5m",
        poll_s=30.0,
        download=download,
        now=lambda: clock["now"],
        sleep=sleep,
        stop=lambda: clock["now"] > dt.datetime(2024, 6, 3, 14, 30, tzinfo=dt.UTC),
    )
    stamps = [b["ts"].iloc[0] for b in source.batches(DAY)]
    assert stamps == sorted(set(stamps)) and len(stamps) == 6  # each bar once, in order, over several polls
    assert calls[0]["interval"] == "5m" and calls[0]["start"] == "2024-06-03" and calls[0]["end"] == "2024-06-04"
    assert len(calls) >= 2


@pytest.mark.parametrize(
    ("interval", "start", "end", "problem"),
    [
        ("1m", dt.date(2024, 6, 1), dt.date(2024, 6, 10), "at most 7 days of 1m"),
        ("1m", dt.date(2024, 4, 1), dt.date(2024, 4, 2), "last 30 days only"),
        ("5m", dt.date(2024, 3, 1), dt.date(2024, 3, 2), "last 60 days only"),
        ("2m", DAY, DAY, "interval must be one of"),
    ],
)
def test_yahoo_period_limits_are_refused_before_a_request(
    interval: str, start: dt.date, end: dt.date, problem: str
) -> None:
    with pytest.raises(ValueError, match=problem):
        check_yahoo_window(interval, start, end, today=dt.date(2024, 6, 10))
    check_yahoo_window("60m", dt.date(2023, 1, 2), dt.date(2024, 6, 10), today=dt.date(2024, 6, 10))
