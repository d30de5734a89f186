"""Sample social posts: a little chatter with cashtags, so the default run shows social tone.

Per ticker and session, a post with probability 0.15 from tone templates (`POST_TEMPLATES`)
that name the ticker as a cashtag (``$NOVA``), by one of a few fictional handles, on the
platform ``sample``. The tone is drawn at random, independent of prices: sample chatter carries
no signal, so the sentiment report's social tone demonstrates the plumbing, not an edge. Posts
are drawn from their own stream (seed, ticker, social tag) over every session since the epoch,
so a date's posts do not depend on the window, and prices, headlines and the ledger are the
same with or without them. Rows follow the news contract with `source_kind` social, like the
posts of `bentley.sources.social`, and their ids are derived the same way (`social_news_id`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bentley import schemas
from bentley.sources.base import FetchRequest
from bentley.sources.sample._common import _SOCIAL_TAG, _company, _crc, _digest, _frame, _tickers, _window
from bentley.sources.sample.news import _DRIVERS
from bentley.sources.sample.prices import _SampleCompanion
from bentley.sources.social import social_news_id

#: Post templates by tone (+1 positive, -1 negative, 0 neutral); `{tag}` is the cashtag.
POST_TEMPLATES: dict[int, tuple[str, ...]] = {
    1: (
        "{tag} looking strong into the close, adding more",
        "Loaded up on {tag} this morning, {driver} is going to surprise",
        "{tag} breakout confirmed, very bullish here",
        "Love what {company} is doing, long {tag}",
    ),
    -1: (
        "{tag} chart looks ugly, trimming my position",
        "Bearish on {tag} until {driver} turns around",
        "Sold all my {tag}, this one keeps losing money",
        "{tag} guidance was a disaster, staying away",
    ),
    0: (
        "Anyone holding {tag} into earnings?",
        "Watching {tag} today, volume is picking up",
        "What do you all think about {company} at these levels? {tag}",
        "{tag} trading flat so far this week",
    ),
}
PLATFORM = "sample"
_AUTHORS = ("quietcompounder", "tape_reader_42", "dividend_dave", "bull_market_betty", "macro_mike", "valuehunter")
_POST_CHANCE = 0.15  # per ticker and session
_TONE_CUTS = (0.4, 0.7)  # a draw below the first is positive, below the second negative, else neutral
_POST_DRAWS = 5  # per session: post or not, tone, template, author, minute


class SampleSocialSource(_SampleCompanion):
    """Deterministic posts for any ticker name, in the news contract (`source_kind` social)."""

    datasets = ("social",)

    def fetch(self, dataset: str, request: FetchRequest) -> pd.DataFrame:
        self._check_dataset(dataset)
        days, first = _window(self.epoch, request, self.calendar)
        parts = [self._posts(ticker, days, first) for ticker in _tickers(request)]
        columns = {
            name: np.concatenate([p[name] for p in parts]) if parts else np.array([], dtype=object)
            for name in schemas.NEWS.column_names
        }
        columns["published_at"] = pd.DatetimeIndex(columns["published_at"]).tz_localize("UTC")
        return _frame(schemas.NEWS, columns)

    def _posts(self, ticker: str, days: pd.DatetimeIndex, first: int) -> dict[str, np.ndarray]:
        """One ticker's posts in the window (published_at still naive UTC)."""
        u = np.random.default_rng([self.seed, _crc(ticker), _SOCIAL_TAG]).random((len(days), _POST_DRAWS))[first:]
        rows = np.flatnonzero(u[:, 0] < _POST_CHANCE)
        draw = u[rows]
        tone = np.where(draw[:, 1] < _TONE_CUTS[0], 1, np.where(draw[:, 1] < _TONE_CUTS[1], -1, 0))
        company = _company(ticker)
        fill = {"tag": f"${ticker}", "company": company.name, "driver": _DRIVERS[company.sector]}
        body = [
            POST_TEMPLATES[k][int(x * len(POST_TEMPLATES[k]))].format(**fill)
            for k, x in zip(tone.tolist(), draw[:, 2].tolist(), strict=True)
        ]
        dates = days[first:][rows]
        post_ids = [_digest("post", ticker, d) for d in dates.strftime("%Y-%m-%d")]
        minutes = (draw[:, 4] * 420).astype(int)  # 13:00-20:00 UTC on the session date
        n = len(rows)
        return {
            "news_id": np.array([social_news_id(PLATFORM, i, ticker) for i in post_ids], dtype=object),
            "ticker": np.full(n, ticker, dtype=object),
            "published_at": (dates + pd.Timedelta(hours=13) + pd.to_timedelta(minutes, unit="min")).to_numpy(),
            "date": dates.to_numpy(),
            "headline": np.array(body, dtype=object),
            "publisher": np.full(n, PLATFORM, dtype=object),
            "url": np.array([f"https://social.example/sample/{i}" for i in post_ids], dtype=object),
            "source_kind": np.full(n, "social", dtype=object),
            "author": np.array(_AUTHORS, dtype=object)[(draw[:, 3] * len(_AUTHORS)).astype(int)],
        }
