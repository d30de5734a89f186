"""Social posts: exported JSON / JSON lines / CSV and RSS feeds, cashtags, dedup, size limit; no network."""

from __future__ import annotations

import csv
import datetime as dt
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from bentley import etl, schemas
from bentley.config import Http, SocialFeed, SocialFile, load_config
from bentley.ingest import ingest
from bentley.lake import Lake
from bentley.sources import social_source
from bentley.sources.base import FetchRequest
from bentley.sources.sample import SampleSocialSource
from bentley.sources.social import SocialSource, cashtag_finder, cashtags, social_news_id
from bentley.warehouse import Warehouse

HTTP = Http(timeout_s=9, max_attempts=1, backoff_base_s=0.0, backoff_max_s=0.0, requests_per_second=1e9)
TICKERS = ("BRK-B", "MEDX", "NOVA", "QBIT")
START, END = dt.date(2024, 3, 4), dt.date(2024, 3, 8)
LIMIT = 40 * 1024
#: Exported posts as StockTwits/Reddit write them: ids, times, authors, bodies, symbols.
POSTS: list[dict[str, Any]] = [
    {
        "id": 101,
        "created_at": "2024-03-05T14:30:00Z",
        "author": "tape_reader",
        "body": "Loading up on $NOVA, earnings beat incoming",
        "symbols": ["NOVA"],
    },
    {
        "id": 102,
        "created_at": "2024-03-05T15:00:00Z",
        "author": "quiet",
        "body": "$QBIT and $brk.b both look weak; sold at $100 and $4.50",
    },
    {
        "id": 103,
        "created_at": "2024-03-06T16:00:00Z",
        "author": "macro",
        "body": "Rates, rates, rates. Nothing else matters ($SPX)",
    },
    {
        "id": 104,
        "created_at": "2024-03-07T13:00:00Z",
        "author": "x",
        "body": "<script>alert(1)</script> $MEDX",
        "symbols": [],
    },
]


def write_json(path: Path, posts: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(posts))
    return path


def write_jsonl(path: Path, posts: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(p) + "\n" for p in posts))
    return path


def write_csv(path: Path, posts: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "created_at", "author", "body", "cashtags"])
        for p in posts:
            writer.writerow(
                [p["id"], p["created_at"], p["author"], p["body"], " ".join(f"${s}" for s in p.get("symbols", []))]
            )
    return path


def source(
    data_dir: Path, files: list[tuple[str, str]] = (), feeds: list[SocialFeed] = (), **kwargs: Any
) -> SocialSource:
    return SocialSource(
        [SocialFile(path=path, platform=platform) for path, platform in files],
        list(feeds),
        data_dir,
        HTTP,
        max_post_bytes=kwargs.pop("max_post_bytes", LIMIT),
        **kwargs,
    )


def fetch(src: SocialSource, tickers: tuple[str, ...] = TICKERS) -> pd.DataFrame:
    return src.fetch("social", FetchRequest(START, END, tickers))


# --------------------------------------------------------------------------- cashtags


def test_cashtags_are_symbols_after_a_dollar_sign_never_prices() -> None:
    text = "Long $MSFT and $brk.b, $BRK-B too; not $100, $4.50, US$5 or a$BC. $AAPL's run, $MSFT again"
    assert cashtags(text) == ["MSFT", "BRK.B", "BRK-B", "AAPL"]
    assert cashtags("no tags here: 100$ and $ 5") == []


def test_cashtags_map_to_the_universe_with_either_class_separator() -> None:
    named = cashtag_finder(["BRK-B", "MSFT", "NOVA"])
    assert named("$brk.b and $MSFT and $AAPL") == ["BRK-B", "MSFT"]
    assert named("NOVA without a dollar is not a cashtag") == []


# --------------------------------------------------------------------------- export shapes


@pytest.mark.parametrize(
    ("name", "write"),
    [("posts.json", write_json), ("posts.jsonl", write_jsonl), ("posts.csv", write_csv)],
)
def test_every_export_shape_gives_the_same_rows(tmp_path: Path, name: str, write) -> None:
    write(tmp_path / "data" / name, POSTS)
    frame = fetch(source(tmp_path / "data", [(name, "stocktwits")]))
    assert list(frame.columns) == schemas.NEWS.column_names
    rows = frame[["ticker", "headline", "author", "publisher", "source_kind"]].values.tolist()
    assert rows == [
        ["BRK-B", "$QBIT and $brk.b both look weak; sold at $100 and $4.50", "quiet", "stocktwits", "social"],
        ["MEDX", "<script>alert(1)</script> $MEDX", "x", "stocktwits", "social"],
        ["NOVA", "Loading up on $NOVA, earnings beat incoming", "tape_reader", "stocktwits", "social"],
        ["QBIT", "$QBIT and $brk.b both look weak; sold at $100 and $4.50", "quiet", "stocktwits", "social"],
    ]
    assert frame["news_id"].tolist()[2] == social_news_id("stocktwits", "101", "NOVA")
    assert frame["date"].dt.strftime("%Y-%m-%d").tolist() == ["2024-03-05", "2024-03-07", "2024-03-05", "2024-03-05"]


def test_stocktwits_api_shape_with_user_objects_and_symbol_objects(tmp_path: Path) -> None:
    export = {
        "messages": [
            {
                "id": 9,
                "body": "Quietly bullish",
                "created_at": "2024-03-05T14:30:00Z",
                "user": {"username": "st_user"},
                "symbols": [{"symbol": "NOVA"}, {"symbol": "ZZZZ"}],
            }
        ]
    }
    (tmp_path / "st.json").write_text(json.dumps(export))
    frame = fetch(source(tmp_path, [("st.json", "stocktwits")]))
    assert frame[["ticker", "author"]].values.tolist() == [["NOVA", "st_user"]]


def test_reddit_unix_times_are_read_and_posts_without_id_time_or_body_are_skipped(tmp_path: Path) -> None:
    posts = [
        {"id": "t3_a", "created_utc": 1709649000, "author": "r1", "body": "$NOVA to the moon"},
        {"created_at": "2024-03-05T14:30:00Z", "body": "$NOVA no id"},
        {"id": "t3_b", "created_at": "yesterday", "body": "$NOVA bad time"},
        {"id": "t3_c", "created_at": "2024-03-05T14:30:00Z", "body": "   "},
    ]
    src = source(tmp_path, [(str(write_jsonl(tmp_path / "r.jsonl", posts)), "reddit")])
    frame = fetch(src)
    assert frame["headline"].tolist() == ["$NOVA to the moon"]
    assert frame["published_at"].iloc[0] == pd.Timestamp("2024-03-05 14:30", tz="UTC")
    assert src.skipped == 3 and not src.failures


# --------------------------------------------------------------------------- dedup


def test_posts_are_deduplicated_by_platform_and_id(tmp_path: Path) -> None:
    write_json(tmp_path / "a.json", POSTS[:2])
    write_json(tmp_path / "b.json", [POSTS[0], {**POSTS[1], "body": "edited later: $QBIT"}, POSTS[0]])
    src = source(tmp_path, [("a.json", "stocktwits"), ("b.json", "stocktwits")])
    frame = fetch(src)
    assert frame["news_id"].is_unique
    assert sorted(frame["ticker"]) == ["BRK-B", "NOVA", "QBIT"]  # the first copy of post 102 wins
    assert src.duplicates == 3
    again = fetch(source(tmp_path, [("b.json", "stocktwits")]))
    assert set(again["news_id"]) <= set(frame["news_id"])  # a later run upserts the same keys

    other_platform = fetch(source(tmp_path, [("a.json", "stocktwits"), ("a.json", "reddit")]))
    assert len(other_platform) == 2 * len(fetch(source(tmp_path, [("a.json", "stocktwits")])))


# --------------------------------------------------------------------------- size limit


def test_a_one_megabyte_post_refuses_its_file_with_one_line_and_keeps_the_rest(tmp_path: Path) -> None:
    huge = {"id": "big-1", "created_at": "2024-03-05T14:30:00Z", "author": "spam", "body": "$NOVA " + "x" * 2**20}
    write_json(tmp_path / "bad.json", [POSTS[0], huge])
    write_json(tmp_path / "good.json", [POSTS[1]])
    src = source(tmp_path, [("bad.json", "stocktwits"), ("good.json", "stocktwits")])
    frame = fetch(src)
    assert sorted(frame["ticker"]) == ["BRK-B", "QBIT"]  # nothing of bad.json, not even post 101
    (reason,) = src.failures.values()
    assert (
        "\n" not in reason and "bad.json" in reason and "'big-1'" in reason and "sources.social.max_post_kb" in reason
    )
    assert "1,048,582 bytes" in reason


def test_the_limit_applies_to_csv_exports_too(tmp_path: Path) -> None:
    huge = {"id": 7, "created_at": "2024-03-05T14:30:00Z", "author": "spam", "body": "y" * 2**20, "symbols": ["NOVA"]}
    write_csv(tmp_path / "posts.csv", [POSTS[0], huge])
    src = source(tmp_path, [("posts.csv", "reddit")])
    assert fetch(src).empty
    assert "post '7' is 1,048,576 bytes" in src.failures["posts.csv"]


def test_an_oversize_post_writes_nothing_to_the_lake_or_the_warehouse(tmp_path: Path) -> None:
    """Through ingest and etl: the refused file lands nowhere, and the failure is one line in the report."""
    huge = {"id": "big-1", "created_at": "2024-12-02T14:30:00Z", "author": "spam", "body": "$NOVA " + "x" * 2**20}
    write_json(tmp_path / "data" / "bad.json", [{**POSTS[0], "created_at": "2024-12-02T14:00:00Z"}, huge])
    params = load_config(
        "default",
        [
            "universe.tickers=[NOVA, QBIT]",
            "history.years=1",
            "sources.social.kind=social",
            "sources.social.files=[{path: bad.json, platform: stocktwits}]",
        ],
    )
    warehouse = Warehouse(f"sqlite:///{tmp_path / 'warehouse.db'}")
    lake = Lake(tmp_path / "lake")
    try:
        result = ingest(params, lake, warehouse, dt.date(2024, 12, 31), "run-1", tmp_path)
        assert result.summary.loc["social", "rows"] == 0
        assert result.summary.loc["social", "lake_file"] == "(empty response: nothing written)"
        (failure,) = result.failures[result.failures["source"] == "social:social"].itertuples()
        assert failure.item == "bad.json" and "'big-1'" in failure.reason
        assert not (tmp_path / "lake" / "raw" / "social").exists()
        frames = etl.read_lake(params, lake, dt.date(2024, 12, 31))
        cleaned, results = etl.validate(params, frames, dt.date(2024, 12, 31))
        etl.load(params, warehouse, cleaned, results, "run-1")
        kinds = warehouse.read("news")["source_kind"]
        assert len(kinds) > 0 and set(kinds) == {"news"}  # the sample headlines, no post
    finally:
        warehouse.dispose()


def test_sample_posts_and_file_posts_load_into_news_told_apart_by_source_kind(tmp_path: Path) -> None:
    params = load_config("default", ["universe.tickers=[NOVA, QBIT]", "history.years=1"])
    warehouse = Warehouse(f"sqlite:///{tmp_path / 'warehouse.db'}")
    lake = Lake(tmp_path / "lake")
    day = dt.date(2024, 12, 31)
    try:
        ingest(params, lake, warehouse, day, "run-1", tmp_path)
        cleaned, results = etl.validate(params, etl.read_lake(params, lake, day), day)
        loaded = etl.load(params, warehouse, cleaned, results, "run-1").loaded
        news = warehouse.read("news")
        assert loaded["table"].tolist() == ["prices", "news", "transactions", "holdings"]
        assert set(news["source_kind"]) == {"news", "social"}
        posts = news[news["source_kind"] == "social"]
        assert posts["author"].notna().all() and (posts["publisher"] == "sample").all()
        assert news.loc[news["source_kind"] == "news", "author"].isna().all()
        assert all(f"${t}" in h for t, h in zip(posts["ticker"], posts["headline"], strict=True))
        assert {r.check_name for r in results if r.dataset == "social"} >= {"wrong_source_kind", "duplicate_keys"}
    finally:
        warehouse.dispose()


# --------------------------------------------------------------------------- RSS feeds

FEED = """<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom">
  <title>r/stocks</title>
  <entry>
    <id>t3_aaa</id><title>$NOVA earnings thread</title><author><name>/u/holder</name></author>
    <link href="https://www.reddit.com/r/stocks/comments/aaa/"/>
    <updated>2024-03-05T15:00:00+00:00</updated>
    <content type="html">&lt;p&gt;What do you expect?&lt;/p&gt;</content>
  </entry>
  <entry>
    <id>t3_bbb</id><title>Which chip stock?</title><author><name>/u/asker</name></author>
    <updated>2024-03-06T15:00:00+00:00</updated>
    <content type="html">&lt;p&gt;Thinking of $QBIT, paid $100 for a course&lt;/p&gt;</content>
  </entry>
  <entry>
    <id>t3_ccc</id><title>Rates talk, no tickers</title><author><name>/u/macro</name></author>
    <updated>2024-03-06T16:00:00+00:00</updated>
  </entry>
</feed>
"""


def test_a_social_feed_goes_through_the_rss_adapter_with_cashtags(tmp_path: Path) -> None:
    (tmp_path / "feeds").mkdir()
    (tmp_path / "feeds" / "stocks.atom").write_text(FEED)
    feed = SocialFeed(url="feeds/stocks.atom", ticker=None, platform="reddit")
    src = source(tmp_path, feeds=[feed])
    frame = fetch(src)
    assert frame[["ticker", "headline", "author", "publisher", "source_kind"]].values.tolist() == [
        ["NOVA", "$NOVA earnings thread", "/u/holder", "reddit", "social"],
        ["QBIT", "Which chip stock?", "/u/asker", "reddit", "social"],  # the cashtag is in the body
    ]
    assert frame["news_id"].tolist() == [
        social_news_id("reddit", "t3_aaa", "NOVA"),
        social_news_id("reddit", "t3_bbb", "QBIT"),
    ]
    assert src.unmatched == 1 and not src.failures


def test_a_feed_with_an_oversize_post_is_refused_whole(tmp_path: Path) -> None:
    big = FEED.replace("Which chip stock?", "Which chip stock? " + "z" * 5000)
    (tmp_path / "big.atom").write_text(big)
    src = source(tmp_path, feeds=[SocialFeed(url="big.atom", ticker=None, platform="reddit")], max_post_bytes=4096)
    assert fetch(src).empty
    assert "post 't3_bbb' is 5,018 bytes" in src.failures["big.atom"]


def test_feeds_and_exports_of_one_platform_share_ids(tmp_path: Path) -> None:
    (tmp_path / "stocks.atom").write_text(FEED)
    write_json(
        tmp_path / "export.json",
        [{"id": "t3_aaa", "created_at": "2024-03-05T15:00:00Z", "body": "$NOVA earnings thread"}],
    )
    feed = SocialFeed(url="stocks.atom", ticker=None, platform="reddit")
    frame = fetch(source(tmp_path, [("export.json", "reddit")], feeds=[feed]))
    assert frame["ticker"].tolist() == ["NOVA", "QBIT"]  # t3_aaa once


# --------------------------------------------------------------------------- sample posts and the factory


def test_sample_posts_are_deterministic_window_free_and_name_their_ticker() -> None:
    src = SampleSocialSource(seed=42, epoch=dt.date(2000, 1, 3))
    year = src.fetch("social", FetchRequest(dt.date(2024, 1, 2), dt.date(2024, 12, 31), ("NOVA", "QBIT")))
    march = src.fetch("social", FetchRequest(dt.date(2024, 3, 1), dt.date(2024, 3, 29), ("QBIT",)))
    in_march = year[(year["ticker"] == "QBIT") & year["date"].between("2024-03-01", "2024-03-29")]
    pd.testing.assert_frame_equal(in_march.reset_index(drop=True), march)
    assert list(year.columns) == schemas.NEWS.column_names and (year["source_kind"] == "social").all()
    assert 40 < len(year) < 120  # about 0.15 a session per ticker: modest
    named = cashtag_finder(["NOVA", "QBIT"])
    assert [named(h) for h in year["headline"]] == [[t] for t in year["ticker"]]


def test_the_factory_builds_each_kind(tmp_path: Path) -> None:
    base = ["universe.tickers=[NOVA]"]
    assert type(social_source(load_config("default", base), tmp_path)).__name__ == "SampleSocialSource"
    none = social_source(load_config("default", [*base, "sources.social.kind=none"]), tmp_path)
    assert none.fetch("social", FetchRequest(START, END, ("NOVA",))).empty
    files = load_config(
        "default", [*base, "sources.social.kind=social", "sources.social.files=[{path: p.json, platform: x}]"]
    )
    built = social_source(files, tmp_path)
    assert isinstance(built, SocialSource) and built.max_post_bytes == 40 * 1024
