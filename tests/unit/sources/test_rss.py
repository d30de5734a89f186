"""RSS/Atom news on fixture feeds, files under a tmp data folder and fake fetches; no network."""

from __future__ import annotations

import datetime as dt
import hashlib
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import requests

from bentley import schemas
from bentley.config import Feed, Http
from bentley.sources import files
from bentley.sources.base import FetchRequest, SourceError
from bentley.sources.rss import RssNewsSource, plain_text, session_for

FIXTURES = Path(__file__).parent / "fixtures"
HTTP = Http(timeout_s=9, max_attempts=3, backoff_base_s=0.5, backoff_max_s=2.0, requests_per_second=1e9)
NAMES = {
    "NOVA": "Nova Systems",
    "QBIT": "Qubit Labs",
    "MEDX": "Medix Pharmaceuticals",
    "LEDG": "Ledger Trust",
}
TICKERS = ("NOVA", "QBIT", "MEDX")
START, END = dt.date(2020, 3, 9), dt.date(2020, 3, 16)
SCRIPT_HEADLINE = "QBIT jumps after hours <script>alert(1)</script>"


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    feeds = tmp_path / "data" / "feeds"
    feeds.mkdir(parents=True)
    for name in ("feed_rss.xml", "feed_atom.xml"):
        shutil.copy(FIXTURES / name, feeds / name)
    return tmp_path / "data"


class FakeFetch:
    """`fetch_url` replaced: records the urls, plays a body or an exception per call."""

    def __init__(self, *responses: bytes | BaseException | None) -> None:
        self.responses = list(responses)
        self.urls: list[str] = []
        self.timeouts: list[float] = []

    def __call__(self, url: str, timeout_s: float) -> bytes:
        self.urls.append(url)
        self.timeouts.append(timeout_s)
        response = self.responses.pop(0) if len(self.responses) > 1 else self.responses[0]
        if isinstance(response, BaseException):
            raise response
        return response if response is not None else one_item_feed(url)


def one_item_feed(url: str) -> bytes:
    """A feed whose single generic title names no ticker (only the url tells whose it is)."""
    return f"""<?xml version="1.0"?><rss version="2.0"><channel><title>Per-ticker wire</title>
    <item><title>Quarterly results</title><link>{url}#q</link><guid>{url}#q</guid>
    <pubDate>Thu, 12 Mar 2020 12:00:00 GMT</pubDate></item></channel></rss>""".encode()


def source(feeds: list[Feed], data_dir: Path, **kwargs: Any) -> RssNewsSource:
    kwargs.setdefault("company_names", NAMES)
    return RssNewsSource(feeds, data_dir, HTTP, sleep=lambda _: None, rng=random.Random(0), **kwargs)


def fetch(
    src: RssNewsSource,
    tickers: tuple[str, ...] = TICKERS,
    start: dt.date = START,
    end: dt.date = END,
) -> pd.DataFrame:
    return src.fetch("news", FetchRequest(start, end, tickers))


def assert_news_contract(frame: pd.DataFrame) -> None:
    assert list(frame.columns) == schemas.NEWS.column_names
    assert frame["published_at"].dtype == pd.DatetimeTZDtype("ns", "UTC")
    assert frame["date"].dtype == np.dtype("datetime64[ns]")
    assert (frame["date"] == frame["date"].dt.normalize()).all()
    for name in ("news_id", "ticker", "headline", "publisher", "url"):
        assert pd.api.types.is_object_dtype(frame[name].dtype), name
    assert frame["news_id"].is_unique


def by_headline(frame: pd.DataFrame) -> dict[str, tuple[str, str]]:
    return {
        h: (t, d.strftime("%Y-%m-%d"))
        for h, t, d in zip(frame["headline"], frame["ticker"], frame["date"], strict=True)
    }


# ----------------------------------------------------------------- local feeds and matching


def test_rss_file_matched_by_symbol_and_company_name(data_dir: Path) -> None:
    src = source([Feed(url="feeds/feed_rss.xml", ticker=None)], data_dir)
    news = fetch(src)
    assert_news_contract(news)
    assert by_headline(news) == {
        # by company name, published before the close
        "Nova Systems beats estimates": ("NOVA", "2020-03-10"),
        # by symbol, after the close: the next session
        SCRIPT_HEADLINE: ("QBIT", "2020-03-11"),
        # by company name in capitals, on a Saturday: Monday ("qbit" is not the symbol)
        "Weekend notes on MEDIX PHARMACEUTICALS and qbit": ("MEDX", "2020-03-16"),
    }
    assert src.unmatched == 1  # "NOVAX" is not NOVA as a whole word
    assert src.skipped == 1  # the undated item
    assert src.failures == {}
    assert set(news["publisher"]) == {"Market Wire"}


def test_script_headline_stays_literal_text(data_dir: Path) -> None:
    news = fetch(source([Feed(url="feeds/feed_rss.xml", ticker=None)], data_dir))
    row = news[news["ticker"] == "QBIT"].iloc[0]
    assert isinstance(row["headline"], str) and "script" in row["headline"]
    assert row["headline"] == SCRIPT_HEADLINE
    assert row["news_id"] == "rss:" + hashlib.sha1(b"QBIT\nmw-1002").hexdigest()
    assert row["date"] == pd.Timestamp("2020-03-11")
    assert row["published_at"] == pd.Timestamp("2020-03-10T21:30:00Z")
    assert row["url"] == "https://news.example/qbit-jumps"


def test_atom_file_html_title_becomes_text(data_dir: Path) -> None:
    src = source([Feed(url="feeds/feed_atom.xml", ticker=None)], data_dir)
    news = fetch(src, ("LEDG", "BANQ"))
    assert_news_contract(news)
    assert by_headline(news) == {
        "Ledger Trust & partners merge": ("LEDG", "2020-03-12"),
        # only an update time, 12:00 in New York: before the close
        "BANQ raises its dividend": ("BANQ", "2020-03-13"),
    }
    assert set(news["publisher"]) == {"Atom Desk"}
    assert news.loc[news["ticker"] == "LEDG", "published_at"].item() == pd.Timestamp("2020-03-12T15:00:00Z")


def test_feed_with_a_ticker_owns_all_its_dated_items(data_dir: Path) -> None:
    src = source([Feed(url="feeds/feed_rss.xml", ticker="medx")], data_dir)
    news = fetch(src)
    assert set(news["ticker"]) == {"MEDX"} and len(news) == 4
    assert src.unmatched == 0 and src.skipped == 1


def test_a_feed_ticker_must_be_a_ticker(data_dir: Path) -> None:
    src = source([Feed(url="feeds/feed_rss.xml", ticker="MED X")], data_dir)
    with pytest.raises(SourceError, match=r"^feed 'feeds/feed_rss.xml': ticker: 'MED X' is not a ticker symbol"):
        fetch(src)


def test_an_oversized_feed_file_is_a_configuration_error(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not a failure of one feed: the settings point at the wrong file."""
    monkeypatch.setattr(files, "MAX_FILE_BYTES", 100)
    with pytest.raises(SourceError, match=r"bytes, over the limit of 100 bytes for one source file"):
        fetch(source([Feed(url="feeds/feed_rss.xml", ticker=None)], data_dir))


def test_only_requested_tickers_and_window(data_dir: Path) -> None:
    feeds = [
        Feed(url="feeds/feed_rss.xml", ticker=None),
        Feed(url="feeds/feed_rss.xml", ticker="LEDG"),
    ]
    news = fetch(source(feeds, data_dir), ("QBIT", "MEDX"), end=dt.date(2020, 3, 13))
    assert by_headline(news) == {SCRIPT_HEADLINE: ("QBIT", "2020-03-11")}


def test_without_company_names_only_symbols_match(data_dir: Path) -> None:
    news = fetch(
        source([Feed(url="feeds/feed_rss.xml", ticker=None)], data_dir, company_names={}),
        ("QBIT", "MEDX"),
    )
    assert by_headline(news) == {SCRIPT_HEADLINE: ("QBIT", "2020-03-11")}


def test_an_item_naming_two_tickers_is_a_row_each() -> None:
    both = one_item_feed("x").replace(b"Quarterly results", b"QBIT and MEDX sign a deal")
    news = fetch(
        source([Feed(url="https://wire.example/rss", ticker=None)], Path("."), fetch=FakeFetch(both)),
        ("QBIT", "MEDX"),
    )
    assert news["ticker"].tolist() == ["MEDX", "QBIT"] and news["news_id"].is_unique


def test_the_same_item_in_two_feeds_is_one_row(data_dir: Path) -> None:
    feed = Feed(url="feeds/feed_rss.xml", ticker=None)
    assert len(fetch(source([feed, feed], data_dir))) == 3


def test_absolute_local_path(data_dir: Path) -> None:
    absolute = str((data_dir / "feeds" / "feed_atom.xml").resolve())
    assert len(fetch(source([Feed(url=absolute, ticker="BANQ")], data_dir), ("BANQ",))) == 2


# ---------------------------------------------------------------- expansion and the network


def test_ticker_placeholder_expands_per_requested_ticker() -> None:
    fake = FakeFetch(None)
    src = source(
        [Feed(url="https://wire.example/rss?s={ticker}&region=US", ticker=None)],
        Path("."),
        fetch=fake,
    )
    news = fetch(src, ("QBIT", "NOVA", "BRK.B"))
    assert fake.urls == [
        "https://wire.example/rss?s=BRK.B&region=US",
        "https://wire.example/rss?s=NOVA&region=US",
        "https://wire.example/rss?s=QBIT&region=US",
    ]
    assert fake.timeouts == [9, 9, 9]
    # the titles name nobody: the url decides
    assert news["ticker"].tolist() == ["BRK.B", "NOVA", "QBIT"]
    assert set(news["date"]) == {pd.Timestamp("2020-03-12")}


def test_ticker_placeholder_in_a_local_path(data_dir: Path) -> None:
    shutil.copy(data_dir / "feeds" / "feed_atom.xml", data_dir / "feeds" / "BANQ.xml")
    src = source([Feed(url="feeds/{ticker}.xml", ticker=None)], data_dir)
    news = fetch(src, ("BANQ", "LEDG"))
    assert set(news["ticker"]) == {"BANQ"} and len(news) == 2
    assert list(src.failures) == ["feeds/LEDG.xml"]
    assert "cannot read the feed" in src.failures["feeds/LEDG.xml"]


def test_transient_feed_errors_are_retried() -> None:
    response = requests.Response()
    response.status_code = 503
    fake = FakeFetch(requests.HTTPError("503", response=response), TimeoutError("slow"), None)
    src = source([Feed(url="https://wire.example/rss", ticker="NOVA")], Path("."), fetch=fake)
    assert len(fetch(src)) == 1
    assert len(fake.urls) == 3 and src.failures == {}


def test_unreachable_feeds_are_failures_not_exceptions() -> None:
    missing = requests.Response()
    missing.status_code = 404
    fake = FakeFetch(requests.HTTPError("404 Not Found", response=missing), TimeoutError("slow"))
    feeds = [
        Feed(url="https://gone.example/rss", ticker="NOVA"),
        Feed(url="https://slow.example/rss", ticker="NOVA"),
    ]
    src = source(feeds, Path("."), fetch=fake)
    assert fetch(src).empty
    assert fake.urls == ["https://gone.example/rss"] + ["https://slow.example/rss"] * HTTP.max_attempts
    assert src.failures["https://gone.example/rss"] == "cannot read the feed: 404 Not Found"
    assert "gave up after 3 attempts" in src.failures["https://slow.example/rss"]


def test_a_broken_feed_is_recorded_and_the_others_load(data_dir: Path) -> None:
    (data_dir / "feeds" / "broken.xml").write_bytes(b"\x00\xff not a feed <<<")
    feeds = [Feed(url="feeds/broken.xml", ticker=None), Feed(url="feeds/feed_rss.xml", ticker=None)]
    src = source(feeds, data_dir)
    news = fetch(src)
    assert len(news) == 3
    assert list(src.failures) == ["feeds/broken.xml"]
    assert src.failures["feeds/broken.xml"].startswith("not an RSS or Atom feed:")


def test_a_malformed_feed_with_entries_is_used(data_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    truncated = (FIXTURES / "feed_rss.xml").read_bytes().replace(b"</channel>\n</rss>", b"")
    (data_dir / "feeds" / "truncated.xml").write_bytes(truncated)
    src = source([Feed(url="feeds/truncated.xml", ticker=None)], data_dir)
    with caplog.at_level("WARNING", logger="bentley.sources.rss"):
        news = fetch(src)
    assert len(news) == 3 and src.failures == {}
    assert "malformed" in caplog.text


def test_escaping_the_data_folder_raises(data_dir: Path) -> None:
    src = source([Feed(url="../secrets/feed.xml", ticker=None)], data_dir)
    with pytest.raises(SourceError, match=r"'\.\./secrets/feed\.xml' escapes the data folder"):
        fetch(src)


def test_fetch_resets_its_counters(data_dir: Path) -> None:
    src = source([Feed(url="feeds/feed_rss.xml", ticker=None)], data_dir)
    fetch(src)
    fetch(src)
    assert (src.skipped, src.unmatched) == (1, 1)


def test_health_checks_local_files_only(data_dir: Path) -> None:
    fake = FakeFetch(None)
    ok = source(
        [
            Feed(url="feeds/feed_rss.xml", ticker=None),
            Feed(url="https://x.example/{ticker}", ticker=None),
        ],
        data_dir,
        fetch=fake,
    )
    assert ok.health().ok and fake.urls == []
    bad = source([Feed(url="feeds/nope.xml", ticker=None), Feed(url="../out.xml", ticker=None)], data_dir)
    health = bad.health()
    assert not health.ok and "nope.xml" in health.detail and "escapes" in health.detail


# --------------------------------------------------------------------------- helpers


def test_session_for() -> None:
    published = pd.Series(
        pd.to_datetime(
            [
                "2024-03-08T20:59:59Z",  # Friday, a second before the 16:00 EST close
                "2024-03-08T21:00:00Z",  # at the close: the next session
                "2024-03-10T12:00:00Z",  # Sunday
                "2024-11-29T18:30:00Z",  # after a 13:00 early close
                "2024-12-25T15:00:00Z",  # a holiday
                "1990-01-02T15:00:00Z",  # before the calendar
            ],
            utc=True,
        ),
        index=[10, 11, 12, 13, 14, 15],
    )
    dates = session_for(published)
    assert dates.index.tolist() == [10, 11, 12, 13, 14, 15]
    assert dates.dtype == np.dtype("datetime64[ns]")
    assert dates.dt.strftime("%Y-%m-%d").tolist()[:5] == [
        "2024-03-08",
        "2024-03-11",
        "2024-03-11",
        "2024-12-02",
        "2024-12-26",
    ]
    assert pd.isna(dates.iloc[5])


@pytest.mark.parametrize(
    ("value", "content_type", "text"),
    [
        ("  Acme <script>x</script>\n beats ", "text/plain", "Acme <script>x</script> beats"),
        ("AT&amp;T <b>bold</b> 5 < 6", "text/html", "AT&T bold 5 < 6"),
        ("&lt;b&gt; is a tag", "text/html", "<b> is a tag"),
        ("Fish &amp; chips", "text/plain", "Fish &amp; chips"),
    ],
)
def test_plain_text(value: str, content_type: str, text: str) -> None:
    assert plain_text(value, content_type) == text
