"""News headlines and social posts from RSS and Atom feeds, and the news helpers the yahoo source shares.

Feeds come from `sources.news.feeds`. A url is fetched over HTTP(S) (rate-limited, transient
failures retried) or, if it is not http(s), read as a file under `sources.data_dir`. A url
containing `{ticker}` is read once per requested ticker and its items belong to that ticker; a
feed with a `ticker` gives all its items to it; any other feed gives each item to every
requested ticker named in its title (the symbol as a whole word, case-sensitive, or the
company name, case-insensitive).

Headlines are stored as plain text and never rendered. feedparser reports the content type of
each title: a text/plain title is kept exactly as written (a literal ``<script>`` in it stays
text: unescaping it again would corrupt it), while a text/html title, which feedparser has
already sanitized, is converted to its text: tags dropped and character references decoded
once, as a browser would display it (``AT&amp;T`` becomes ``AT&T``).

A headline belongs to the first session whose close is after it was published (`session_for`):
news after the close or on a holiday can only move the next session's prices.

Social feeds (Reddit, StockTwits) go through the same reader (`SocialFeedReader`, used by
`bentley.sources.social`): their items are posts, matched to tickers by cashtags (`$MSFT`) in
the title and summary instead of bare symbols, stored with `source_kind` social, the author and
an id derived from the platform and the entry's id, and a feed with a post over the size limit
is refused whole.
"""

from __future__ import annotations

import hashlib
import logging
import random
import re
import time
from calendar import timegm
from collections.abc import Callable, Iterable, Mapping, Sequence
from html.parser import HTMLParser
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import feedparser
import pandas as pd
import requests

from bentley import schemas
from bentley.calendar import DEFAULT_CALENDAR, session_for
from bentley.sources.base import (
    FetchRequest,
    Health,
    Source,
    SourceError,
    TransientSourceError,
    resolve_inside,
    validate_ticker,
)
from bentley.sources.files import check_size
from bentley.sources.http import ThrottledCaller, fetch_url
from bentley.sources.social import cashtag_finder, oversize_message, post_author, social_news_id

if TYPE_CHECKING:
    from bentley.config import Feed, Http, SocialFeed

log = logging.getLogger(__name__)

TICKER_PLACEHOLDER = "{ticker}"

_NEWS_DTYPES = {
    name: {"str": object, "timestamp": "datetime64[ns, UTC]", "date": "datetime64[ns]"}[kind]
    for name, kind in schemas.NEWS.columns.items()
}


# --------------------------------------------------------------------------- shared news helpers


def news_frame(rows: Iterable[Mapping[str, Any]], request: FetchRequest, calendar: str) -> pd.DataFrame:
    """Headline rows in the NEWS contract, for the request's tickers and session window.

    `rows` carry every NEWS column but `date`, which is the session of `published_at`; a row
    without `source_kind` is a headline (news) and one without `author` has none. One row per
    `news_id` (two feeds may carry the same item), sorted by ticker and publication time.
    """
    columns = [name for name in schemas.NEWS.column_names if name != "date"]
    frame = pd.DataFrame(list(rows), columns=columns)
    frame["source_kind"] = frame["source_kind"].astype(object).where(frame["source_kind"].notna(), "news")
    frame["author"] = frame["author"].astype(object).where(frame["author"].notna(), None)
    frame["published_at"] = pd.to_datetime(frame["published_at"], utc=True)
    frame["date"] = session_for(frame["published_at"], calendar)
    inside = frame["date"].between(pd.Timestamp(request.start), pd.Timestamp(request.end))
    frame = frame[inside & frame["ticker"].isin(request.tickers)]
    frame = frame.drop_duplicates("news_id").sort_values(["ticker", "published_at", "news_id"])
    return frame[schemas.NEWS.column_names].reset_index(drop=True).astype(_NEWS_DTYPES)


class _TextOf(HTMLParser):
    """The text of an HTML fragment: tags dropped, character references decoded once."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def plain_text(value: str, content_type: str = "text/plain") -> str:
    """A title as one line of plain text (see the module docstring for why HTML is decoded)."""
    if "html" in content_type:
        parser = _TextOf()
        parser.feed(value)
        parser.close()
        value = "".join(parser.parts)
    return " ".join(value.split())


# --------------------------------------------------------------------------- RSS / Atom


def _is_remote(url: str) -> bool:
    return urlsplit(url).scheme.lower() in ("http", "https")


def _read_local(path: Path) -> bytes:
    """A feed file's bytes. A missing or unreadable file raises OSError, a failure of this feed
    like an unreachable URL; a file over `MAX_FILE_BYTES` is a configuration mistake and raises
    `SourceError` before it is read (`check_size`)."""
    if path.is_file():
        check_size(path)
    return path.read_bytes()


def _text_construct(container: Mapping[str, Any], key: str) -> str:
    """Field `key` of a feedparser entry or feed as plain text ("" when absent)."""
    detail = container.get(f"{key}_detail") or {}
    return plain_text(container.get(key) or "", detail.get("type", "text/plain"))


def _entry_time(entry: Mapping[str, Any]) -> pd.Timestamp | None:
    """Publication (else update) time; feedparser gives it as a UTC struct_time."""
    parsed = entry.get("published_parsed") or entry.get("updated_parsed")
    return None if parsed is None else pd.Timestamp(timegm(parsed), unit="s", tz="UTC")


def _news_id(ticker: str, identity: str) -> str:
    """Stable id of an item for one ticker: the NEWS key is `news_id`, and an item naming two
    tickers is two rows."""
    return "rss:" + hashlib.sha1(f"{ticker}\n{identity}".encode()).hexdigest()


def _word(text: str, flags: int = 0) -> re.Pattern[str]:
    """`text` as a whole word: not preceded or followed by a letter, digit or underscore."""
    return re.compile(rf"(?<!\w){re.escape(text)}(?!\w)", flags)


class RssNewsSource(Source):
    """Headlines from RSS/Atom feeds over HTTP(S) or from files under the data folder.

    After `fetch`: `failures` maps a feed url (expanded per ticker) to why it was unusable,
    `skipped` counts entries without a date or a title, and `unmatched` the entries of
    ticker-less feeds whose title names no requested ticker.
    """

    name = "rss"
    datasets = ("news",)

    def __init__(
        self,
        feeds: Sequence[Feed],
        data_dir: Path,
        http: Http,
        *,
        company_names: Mapping[str, str] | None = None,
        fetch: Callable[[str, float], bytes] | None = None,
        sleep: Callable[[float], object] = time.sleep,
        rng: random.Random | None = None,
        calendar: str = DEFAULT_CALENDAR,
    ) -> None:
        super().__init__()
        self.feeds = list(feeds)
        self.data_dir = Path(data_dir)
        self.company_names = dict(company_names or {})
        self.calendar = calendar
        self.skipped = 0
        self.unmatched = 0
        self._get = fetch or fetch_url
        self._timeout_s = http.timeout_s
        self._calls = ThrottledCaller(http, sleep=sleep, rng=rng)

    def fetch(self, dataset: str, request: FetchRequest) -> pd.DataFrame:
        self._check_dataset(dataset)
        self.failures, self.skipped, self.unmatched = {}, 0, 0
        tickers = sorted(set(request.tickers))
        named = self._ticker_finder(tickers)
        rows = [
            row
            for feed in self.feeds
            for location, owner in self._locations(feed, tickers)
            for row in self._read(location, [owner] if owner else None, named)
        ]
        return news_frame(rows, request, self.calendar)

    def health(self) -> Health:
        """Configuration only: local feed files exist. Remote feeds are not contacted here;
        a live check is a `fetch` over a recent window."""
        problems = []
        for feed in self.feeds:
            if _is_remote(feed.url) or TICKER_PLACEHOLDER in feed.url:
                continue
            try:
                if not resolve_inside(self.data_dir, feed.url).is_file():
                    problems.append(f"feed file {feed.url!r} not found under {self.data_dir}")
            except SourceError as exc:
                problems.append(str(exc))
        detail = "; ".join(problems) or f"{len(self.feeds)} feeds configured; remote feeds not contacted"
        return Health(component=f"source:{self.name}", ok=not problems, detail=detail)

    # ---------------------------------------------------------------- internals

    def _ticker_finder(self, tickers: list[str]) -> Callable[[str], list[str]]:
        """headline -> the requested tickers it names, by symbol or company name."""
        patterns = {
            ticker: [_word(ticker)]
            + ([_word(self.company_names[ticker], re.IGNORECASE)] if ticker in self.company_names else [])
            for ticker in tickers
        }
        return lambda headline: [t for t, found in patterns.items() if any(p.search(headline) for p in found)]

    @staticmethod
    def _locations(feed: Feed | SocialFeed, tickers: list[str]) -> list[tuple[str, str | None]]:
        """(url or path, the ticker its items belong to, or None to match each title).

        A feed's own `ticker` must be a ticker symbol (`TICKER_PATTERN`): it is stored with
        every item of the feed.
        """
        if TICKER_PLACEHOLDER in feed.url:
            remote = _is_remote(feed.url)
            return [(feed.url.replace(TICKER_PLACEHOLDER, quote(t, safe="") if remote else t), t) for t in tickers]
        if not feed.ticker:
            return [(feed.url, None)]
        return [(feed.url, validate_ticker(feed.ticker.strip(), f"feed {feed.url!r}: ticker"))]

    def _read(self, location: str, owners: list[str] | None, named: Callable[[str], list[str]]) -> list[dict[str, Any]]:
        """Rows of one feed; an unreachable or unreadable feed is recorded in `failures`."""
        path = None if _is_remote(location) else resolve_inside(self.data_dir, location)  # escapes raise
        try:
            content = self._download(location) if path is None else _read_local(path)
        except (TransientSourceError, requests.RequestException, OSError) as exc:
            self.failures[location] = f"cannot read the feed: {exc}"
            return []
        parsed = feedparser.parse(content)
        if parsed.bozo and not parsed.entries:
            self.failures[location] = f"not an RSS or Atom feed: {parsed.get('bozo_exception')}"
            return []
        if parsed.bozo:
            log.warning(
                "feed %s is malformed (%s); using its %d entries",
                location,
                parsed.get("bozo_exception"),
                len(parsed.entries),
            )
        publisher = _text_construct(parsed.feed, "title") or location
        return [row for entry in parsed.entries for row in self._entry_rows(entry, publisher, owners, named)]

    def _download(self, url: str) -> bytes:
        return self._calls.call(lambda: self._get(url, self._timeout_s), what=f"feed {url}")

    def _entry_rows(
        self,
        entry: Mapping[str, Any],
        publisher: str,
        owners: list[str] | None,
        named: Callable[[str], list[str]],
    ) -> list[dict[str, Any]]:
        published, headline = _entry_time(entry), _text_construct(entry, "title")
        if published is None or not headline:
            self.skipped += 1
            return []
        tickers = owners if owners is not None else named(self._match_text(entry, headline))
        if not tickers:
            self.unmatched += 1
        identity = entry.get("id") or entry.get("link") or f"{headline}\n{published.isoformat()}"
        return [self._row(entry, ticker, identity, published, headline, publisher) for ticker in tickers]

    def _match_text(self, entry: Mapping[str, Any], headline: str) -> str:
        """What a ticker-less feed's item is matched on: its headline."""
        return headline

    def _row(
        self,
        entry: Mapping[str, Any],
        ticker: str,
        identity: str,
        published: pd.Timestamp,
        headline: str,
        publisher: str,
    ) -> dict[str, Any]:
        """One NEWS row of an item for one ticker (`date` is added by `news_frame`)."""
        return {
            "news_id": _news_id(ticker, identity),
            "ticker": ticker,
            "published_at": published,
            "headline": headline,
            "publisher": publisher,
            "url": entry.get("link") or None,
            "source_kind": "news",
            "author": None,
        }


class SocialFeedReader(RssNewsSource):
    """Posts from Reddit/StockTwits-style RSS/Atom feeds, for `bentley.sources.social`.

    Differs from headlines in four ways: an item of a ticker-less feed belongs to the requested
    tickers its title or summary names as cashtags (`$MSFT`, `$BRK.B`; `$100` is a price, not
    a ticker); `news_id` comes from the feed's platform and the entry's id, so the same post
    read twice is one row; `publisher` is the platform and `author` the entry's author; and a
    feed in which a post for the requested tickers is longer than `max_post_bytes` is refused
    whole (one line in `failures`, nothing of it returned). `rows` returns the rows of one feed; `SocialSource` frames them.
    """

    def __init__(self, data_dir: Path, http: Http, *, max_post_bytes: int, **kwargs: Any) -> None:
        super().__init__([], data_dir, http, **kwargs)
        self.max_post_bytes = max_post_bytes
        self._platform = ""

    def rows(self, feed: SocialFeed, tickers: list[str]) -> list[dict[str, Any]]:
        """The rows of `feed` for the requested `tickers` (sorted); problems go to `failures`."""
        self._platform = feed.platform
        named = self._ticker_finder(tickers)
        return [
            row
            for location, owner in self._locations(feed, tickers)
            for row in self._read(location, [owner] if owner else None, named)
        ]

    def _ticker_finder(self, tickers: list[str]) -> Callable[[str], list[str]]:
        return cashtag_finder(tickers)

    def _match_text(self, entry: Mapping[str, Any], headline: str) -> str:
        return f"{headline} {_text_construct(entry, 'summary')}"

    def _read(self, location: str, owners: list[str] | None, named: Callable[[str], list[str]]) -> list[dict[str, Any]]:
        rows = super()._read(location, owners, named)
        for row in rows:
            size = len(row["headline"].encode("utf-8"))
            if size > self.max_post_bytes:
                self.failures[location] = oversize_message(
                    f"feed {location}", row["_post_id"], size, self.max_post_bytes
                )
                log.warning("%s", self.failures[location])
                return []
        return rows

    def _row(
        self,
        entry: Mapping[str, Any],
        ticker: str,
        identity: str,
        published: pd.Timestamp,
        headline: str,
        publisher: str,
    ) -> dict[str, Any]:
        """A headline's row, as a post: its id, platform, kind and author (and the post id, for dedup)."""
        return super()._row(entry, ticker, identity, published, headline, publisher) | {
            "news_id": social_news_id(self._platform, identity, ticker),
            "publisher": self._platform,
            "source_kind": "social",
            "author": post_author(entry.get("author")),
            "_post_id": identity,
        }
