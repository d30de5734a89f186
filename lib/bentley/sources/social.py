"""Social posts: exported StockTwits/Reddit-style posts and social RSS/Atom feeds.

`sources.social.kind: social` reads the files in `sources.social.files` and the feeds in
`sources.social.feeds`. A file is an export of posts, each with an id, a time, an author, a
body and optionally the symbols it is about:

- ``.json``: an array of post objects, or StockTwits' ``{"messages": [...]}``;
- ``.jsonl`` / ``.ndjson``: one post object per line;
- ``.csv``: columns ``id, created_at, author, body`` and optionally ``symbols`` or
  ``cashtags`` (``MSFT AAPL``, ``$MSFT,$AAPL``) and ``url``.

Keys match StockTwits' and Reddit's exports: ``created_at`` may be ISO 8601 or Unix seconds
(``created_utc``), ``author`` a name or an object with a ``username`` (StockTwits' ``user``),
``body`` may be ``text``, and each symbol a string or an object with a ``symbol``. Feeds go
through the RSS adapter (`bentley.sources.rss.SocialFeedReader`).

A post belongs to every requested ticker it names, in its symbols field or as a cashtag in its
body (`cashtags`: ``$MSFT``, ``$BRK.B``; never ``$100`` or ``$4.50``, which are prices), and is
stored as one `news` row per ticker with `source_kind` social, the platform as `publisher`, the
author, and the body as `headline`. Posts are untrusted text: the body is kept as plain text
(markup stays text and every report escapes it), a post longer than `max_post_kb` refuses its
whole file or feed (recorded in `failures` by name, so nothing of it is written and the rest of
the sources still land), and posts are deduplicated by (platform, post id): `news_id` is derived
from both and the ticker (`social_news_id`), so a post read twice, in two exports or on two
runs, is one row. A post without an id, a readable time or a body is skipped and counted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from bentley import schemas
from bentley.calendar import DEFAULT_CALENDAR
from bentley.sources.base import FetchRequest, Health, Source, SourceError, resolve_inside
from bentley.sources.files import contract_frame, read_bytes, read_table

if TYPE_CHECKING:
    from bentley.config import Http, SocialFeed, SocialFile

log = logging.getLogger(__name__)

#: A cashtag: ``$`` then a symbol that starts with a letter (``$100`` and ``$4.50`` are prices),
#: optionally with a class suffix (``$BRK.B``, ``$BRK-B``), not glued to a word before or after.
CASHTAG = re.compile(r"(?<![\w$])\$([A-Za-z][A-Za-z0-9]{0,9}(?:[.-][A-Za-z0-9]{1,4})?)(?![\w$])")
#: Longest author stored (the warehouse column's width); longer names are cut.
MAX_AUTHOR_CHARS = 128
#: The file suffixes read as JSON arrays, JSON lines and CSV.
JSON_SUFFIXES, JSON_LINES_SUFFIXES, CSV_SUFFIXES = (".json",), (".jsonl", ".ndjson"), (".csv",)
#: Post keys and the other spellings exports use (StockTwits, Reddit).
_KEYS: dict[str, tuple[str, ...]] = {
    "id": ("id", "post_id"),
    "created_at": ("created_at", "created_utc", "timestamp"),
    "author": ("author", "user", "username"),
    "body": ("body", "text"),
    "symbols": ("symbols", "cashtags", "tickers"),
    "url": ("url", "link", "permalink"),
}
_QUOTE_LIMIT = 40


def _key(symbol: str) -> str:
    """The symbol with its class separator written one way (BRK-B and BRK.B are one ticker)."""
    return symbol.replace("-", ".")


def cashtags(text: str) -> list[str]:
    """The cashtags in `text`, upper-cased, each once, in order of appearance."""
    return list(dict.fromkeys(match.upper() for match in CASHTAG.findall(text)))


def cashtag_finder(tickers: Iterable[str]) -> Callable[[str], list[str]]:
    """text -> the `tickers` it names as cashtags, in the order of `tickers`.

    A class suffix may be written with ``.`` or ``-`` (``$BRK.B`` finds ``BRK-B`` and the other
    way round): posts write the dot, Yahoo symbols the dash.
    """
    by_key = {_key(t.upper()): t for t in tickers}
    order = {t: i for i, t in enumerate(by_key.values())}

    def named(text: str) -> list[str]:
        found = {by_key[_key(tag)] for tag in cashtags(text) if _key(tag) in by_key}
        return sorted(found, key=order.__getitem__)

    return named


def social_news_id(platform: str, post_id: str, ticker: str) -> str:
    """The `news_id` of a post's row for one ticker: the post's identity is (platform, id)."""
    return "social:" + hashlib.sha1(f"{platform}\n{post_id}\n{ticker}".encode()).hexdigest()


def post_author(value: object) -> str | None:
    """An author as stored: a name, or the ``username``/``name`` of a user object; at most
    `MAX_AUTHOR_CHARS` characters on one line; None when absent."""
    if isinstance(value, Mapping):
        value = value.get("username") or value.get("name")
    if value is None or isinstance(value, Mapping | list):
        return None
    name = " ".join(str(value).split())
    return name[:MAX_AUTHOR_CHARS] or None


def post_limit_bytes(max_post_kb: float) -> int:
    """`sources.social.max_post_kb` in bytes (1 KB = 1,024 bytes)."""
    return int(max_post_kb * 1024)


def oversize_message(where: str, post_id: object, size: int, limit: int) -> str:
    """The one line that refuses a file or feed for one post over the size limit."""
    shown = str(post_id)
    shown = shown if len(shown) <= _QUOTE_LIMIT else shown[:_QUOTE_LIMIT] + "..."
    return (
        f"{where}: post {shown!r} is {size:,} bytes, over the limit of {limit:,} bytes for one post "
        "(sources.social.max_post_kb); none of its posts were read"
    )


@dataclass(frozen=True)
class Post:
    """One post as read from an export, before it is matched to tickers."""

    post_id: str
    published: pd.Timestamp
    author: str | None
    body: str
    symbols: tuple[str, ...]
    url: str | None


class _Refused(Exception):
    """A file that is not read at all (its reason is the message)."""


def _first(record: Mapping[str, Any], name: str) -> Any:
    """The value of the first spelling of `name` present in the record (None when absent)."""
    for key in _KEYS[name]:
        value = record.get(key)
        if value is not None and value != "":
            return value
    return None


def _symbols(value: Any) -> tuple[str, ...]:
    """A symbols field as upper-case strings: a list of strings or ``{"symbol": ...}`` objects,
    or one string of symbols or cashtags separated by spaces, commas or semicolons."""
    if isinstance(value, str):
        items: list[Any] = re.split(r"[\s,;]+", value)
    elif isinstance(value, list):
        items = value
    else:
        return ()
    out = []
    for item in items:
        symbol = item.get("symbol") if isinstance(item, Mapping) else item
        if isinstance(symbol, str) and symbol.strip():
            out.append(symbol.strip().removeprefix("$").upper())
    return tuple(out)


def _time(value: Any) -> pd.Timestamp | None:
    """ISO 8601 text (no offset: UTC) or Unix seconds; None when it is neither."""
    try:
        if isinstance(value, bool):
            return None
        if isinstance(value, int | float):
            stamp = pd.Timestamp(value, unit="s", tz="UTC")
        elif isinstance(value, str) and re.fullmatch(r"\d+(\.\d+)?", value.strip()):
            stamp = pd.Timestamp(float(value), unit="s", tz="UTC")
        elif isinstance(value, str):
            stamp = pd.to_datetime(value.strip(), utc=True, format="ISO8601")
        else:
            return None
    except (ValueError, OverflowError, pd.errors.OutOfBoundsDatetime):
        return None
    return None if pd.isna(stamp) else stamp


def _post(record: Any, where: str, max_post_bytes: int) -> Post | None:
    """A record as a `Post`, None when it lacks an id, a time or a body.

    A body over `max_post_bytes` raises `_Refused`: the whole file is refused.
    """
    if not isinstance(record, Mapping):
        return None
    post_id, body = _first(record, "id"), _first(record, "body")
    if post_id is None or isinstance(post_id, Mapping | list) or not isinstance(body, str):
        return None
    size = len(body.encode("utf-8"))
    if size > max_post_bytes:
        raise _Refused(oversize_message(where, post_id, size, max_post_bytes))
    published, text = _time(_first(record, "created_at")), " ".join(body.split())
    if published is None or not text:
        return None
    url = _first(record, "url")
    return Post(
        post_id=str(post_id).strip(),
        published=published,
        author=post_author(_first(record, "author")),
        body=text,
        symbols=_symbols(_first(record, "symbols")),
        url=url if isinstance(url, str) else None,
    )


def _json_records(path: Path) -> list[Any]:
    data = read_bytes(path)
    try:
        if path.suffix.lower() in JSON_LINES_SUFFIXES:
            return [json.loads(line) for line in data.decode("utf-8").splitlines() if line.strip()]
        parsed = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise _Refused(f"{path}: not valid JSON ({error})") from error
    if isinstance(parsed, Mapping) and isinstance(parsed.get("messages"), list):
        return parsed["messages"]
    if not isinstance(parsed, list):
        raise _Refused(f'{path}: not a list of posts (a JSON array, or {{"messages": [...]}})')
    return parsed


def _csv_records(path: Path) -> list[dict[str, str]]:
    table = read_table(path)
    accepted = {name: spellings[1:] for name, spellings in _KEYS.items()}
    columns = table.columns(accepted, required=("id", "created_at", "body"))
    texts = {name: column.text.tolist() for name, column in columns.items()}
    return [{name: values[i] for name, values in texts.items()} for i in range(len(table.cells))]


def read_posts(path: Path, max_post_bytes: int) -> tuple[list[Post], int]:
    """The posts of one export file and how many of its records were skipped.

    Raises `SourceError` (one line naming the file, and the post when one is too long) when
    the file cannot be used at all; then nothing of it is returned.
    """
    suffix = path.suffix.lower()
    try:
        if suffix in JSON_SUFFIXES + JSON_LINES_SUFFIXES:
            records: Sequence[Any] = _json_records(path)
        elif suffix in CSV_SUFFIXES:
            records = _csv_records(path)
        else:
            readable = ", ".join(JSON_SUFFIXES + JSON_LINES_SUFFIXES + CSV_SUFFIXES)
            raise _Refused(f"{path}: not a post export this source reads ({readable})")
        posts = [_post(record, str(path), max_post_bytes) for record in records]
    except _Refused as refused:
        raise SourceError(str(refused)) from None
    kept = [p for p in posts if p is not None]
    return kept, len(posts) - len(kept)


class SocialSource(Source):
    """Posts from export files and social RSS/Atom feeds (`sources.social`, kind social).

    After `fetch`: `failures` maps a file or feed to why none of its posts were used (unreadable,
    not an export, a post over the size limit), `skipped` counts posts without an id, time or
    body, `duplicates` posts whose (platform, id) was already read, and `unmatched` posts that
    name no requested ticker.
    """

    name = "social"
    datasets = ("social",)

    def __init__(
        self,
        files: Sequence[SocialFile],
        feeds: Sequence[SocialFeed],
        data_dir: Path,
        http: Http,
        *,
        max_post_bytes: int,
        calendar: str = DEFAULT_CALENDAR,
        fetch: Callable[[str, float], bytes] | None = None,
    ) -> None:
        super().__init__()
        self.files, self.feeds = list(files), list(feeds)
        self.data_dir, self.http = Path(data_dir), http
        self.max_post_bytes, self.calendar, self._fetch = max_post_bytes, calendar, fetch
        self.skipped = self.duplicates = self.unmatched = 0

    def fetch(self, dataset: str, request: FetchRequest) -> pd.DataFrame:
        self._check_dataset(dataset)
        self.failures, self.skipped, self.duplicates, self.unmatched = {}, 0, 0, 0
        tickers = sorted(set(request.tickers))
        rows = self._file_rows(tickers) + self._feed_rows(tickers)
        if self.skipped:
            log.warning("%d social posts skipped: no id, no readable time or no body", self.skipped)
        from bentley.sources.rss import news_frame

        return news_frame(rows, request, self.calendar)

    def health(self) -> Health:
        """Configuration only: export files exist (feeds are not contacted)."""
        problems = []
        for file in self.files:
            try:
                if not resolve_inside(self.data_dir, file.path).is_file():
                    problems.append(f"social export {file.path!r} not found under {self.data_dir}")
            except SourceError as exc:
                problems.append(str(exc))
        detail = "; ".join(problems) or f"{len(self.files)} export files and {len(self.feeds)} feeds configured"
        return Health(component=f"source:{self.name}", ok=not problems, detail=detail)

    def _file_rows(self, tickers: list[str]) -> list[dict[str, Any]]:
        named = cashtag_finder(tickers)
        wanted = set(tickers)
        seen: set[tuple[str, str]] = set()
        rows: list[dict[str, Any]] = []
        for file in self.files:
            path = resolve_inside(self.data_dir, file.path)  # an escaping path is a params mistake: raises
            try:
                posts, skipped = read_posts(path, self.max_post_bytes)
            except SourceError as exc:
                self.failures[str(file.path)] = str(exc)
                log.warning("%s", exc)
                continue
            self.skipped += skipped
            for post in posts:
                if (file.platform, post.post_id) in seen:
                    self.duplicates += 1
                    continue
                seen.add((file.platform, post.post_id))
                listed = [t for t in tickers if t in wanted.intersection(post.symbols)]
                owners = list(dict.fromkeys([*listed, *named(post.body)]))
                if not owners:
                    self.unmatched += 1
                rows += [_row(file.platform, post, ticker) for ticker in owners]
        return rows

    def _feed_rows(self, tickers: list[str]) -> list[dict[str, Any]]:
        if not self.feeds:
            return []
        from bentley.sources.rss import SocialFeedReader  # feedparser only when feeds are configured

        reader = SocialFeedReader(
            self.data_dir, self.http, max_post_bytes=self.max_post_bytes, calendar=self.calendar, fetch=self._fetch
        )
        rows = [row for feed in self.feeds for row in reader.rows(feed, tickers)]
        self.failures.update(reader.failures)
        self.skipped += reader.skipped
        self.unmatched += reader.unmatched
        return rows


def _row(platform: str, post: Post, ticker: str) -> dict[str, Any]:
    return {
        "news_id": social_news_id(platform, post.post_id, ticker),
        "ticker": ticker,
        "published_at": post.published,
        "headline": post.body,
        "publisher": platform,
        "url": post.url,
        "source_kind": "social",
        "author": post.author,
    }


class NoSocialSource(Source):
    """`sources.social.kind: none`: no posts (the live profile's default)."""

    name = "none"
    datasets = ("social",)

    def fetch(self, dataset: str, request: FetchRequest) -> pd.DataFrame:
        self._check_dataset(dataset)
        return contract_frame(schemas.NEWS, {name: [] for name in schemas.NEWS.column_names})
