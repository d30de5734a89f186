"""Sample news: headlines whose tone weakly anticipates the next session's return.

Per ticker and session, a headline with probability 0.35 (two with 0.08) from tone templates
(`HEADLINE_TEMPLATES`, `headline_tone`). The tone is a noisy read of the ticker's next-session
total return, a weak signal: correlation about 0.15.
"""

from __future__ import annotations

import datetime as dt
import re

import numpy as np
import pandas as pd

from bentley import schemas
from bentley.calendar import is_session
from bentley.sources.base import FetchRequest
from bentley.sources.sample._common import (
    _NEWS_TAG,
    _TRADING_DAYS,
    _company,
    _crc,
    _digest,
    _frame,
    _tickers,
    _window,
)
from bentley.sources.sample.prices import _profile, _SampleCompanion

#: Headline templates by tone (+1 positive, -1 negative, 0 neutral).
HEADLINE_TEMPLATES: dict[int, tuple[str, ...]] = {
    1: (
        "{company} beats quarterly estimates as {driver} jumps",
        "{company} raises full-year guidance on strong {driver}",
        "{company} shares climb after analyst upgrade",
        "{company} announces $2 billion share buyback",
        "{company} wins major multi-year contract",
        "{company} reports record {driver}",
        "{company} lifts payout as profits surge",
        "Analysts see upside for {company} after strong {driver}",
        "{company} expands margins, topping forecasts",
        "{company} secures regulatory approval for key product",
        "Investors cheer {company} as {driver} accelerates",
        "{company} unveils new product line to strong early demand",
    ),
    -1: (
        "{company} misses estimates as {driver} slows",
        "{company} cuts outlook, citing weak {driver}",
        "{company} shares slide after analyst downgrade",
        "{company} faces regulatory probe over accounting practices",
        "{company} loses key customer to rival",
        "{company} warns of margin pressure as costs rise",
        "{company} CFO departs unexpectedly",
        "Short sellers target {company} over {driver} concerns",
        "{company} recalls products after quality complaints",
        "{company} delays product launch amid supply problems",
        "{company} hit by lawsuit in patent dispute",
        "Weak {driver} weighs on {company}",
    ),
    0: (
        "{company} to present at industry conference next week",
        "{company} schedules quarterly earnings call",
        "{company} appoints new board member",
        "{company} completes previously announced reorganization",
        "{company} files annual report with regulators",
        "{company} reaffirms guidance for {driver}",
        "{company} opens new regional office",
        "{company} holds annual shareholder meeting",
        "What to watch in {company}'s {driver} this quarter",
        "{company} names new head of investor relations",
        "{company} updates investors on {driver} strategy",
        "{company} prices senior notes offering",
    ),
}
_DRIVERS = {
    "tech": "cloud revenue",
    "health": "drug sales",
    "energy": "production volumes",
    "finance": "loan growth",
    "consumer": "same-store sales",
    "industrials": "order backlog",
}
_PUBLISHERS = (
    "Marketwire Daily",
    "Capital Courier",
    "The Ledger Street Journal",
    "Ticker Times",
    "Bentley Newswire",
)
_TEMPLATE_PATTERNS = [
    (tone, re.compile(re.escape(t).replace(r"\{company\}", "(.+)").replace(r"\{driver\}", "(.+)")))
    for tone, templates in HEADLINE_TEMPLATES.items()
    for t in templates
]
_NEWS_CHANCE, _TWO_HEADLINES_CHANCE = 0.35, 0.08  # per ticker and session
_TONE_LOADING, _TONE_CUT = 0.3, 0.8  # tone score = loading * next move (in sigmas) + logistic noise
_NEWS_DRAWS = 9  # per session: count, then (tone, template, publisher, minute) for two slots


def headline_tone(headline: str) -> int:
    """Tone (+1, 0, -1) of a sample headline, recovered from its template."""
    for tone, pattern in _TEMPLATE_PATTERNS:
        if pattern.fullmatch(headline):
            return tone
    raise ValueError(f"not a sample headline: {headline!r}")


def _next_session(day: dt.date, calendar: str) -> dt.date | None:
    """The session after `day`, or None when it lies beyond the calendar's coverage."""
    for offset in range(1, 15):
        candidate = day + dt.timedelta(days=offset)
        try:
            if is_session(candidate, calendar):
                return candidate
        except ValueError:  # exchange_calendars: date out of bounds
            return None
    return None


class SampleNewsSource(_SampleCompanion):
    """Headlines whose tone weakly anticipates the ticker's next-session return (corr ~0.15).

    Prices come from a `SampleMarketSource` with the same seed and epoch, so news and prices
    of one configuration agree.
    """

    datasets = ("news",)

    def fetch(self, dataset: str, request: FetchRequest) -> pd.DataFrame:
        self._check_dataset(dataset)
        days, first = _window(self.epoch, request, self.calendar)
        tickers = _tickers(request)
        moves = self._next_moves(request, tickers, days[first:])
        parts = [self._headlines(t, days, first, moves[:, j]) for j, t in enumerate(tickers)]
        columns = {
            name: np.concatenate([p[name] for p in parts]) if parts else np.array([], dtype=object)
            for name in schemas.NEWS.column_names
        }
        columns["published_at"] = pd.DatetimeIndex(columns["published_at"]).tz_localize("UTC")
        return _frame(schemas.NEWS, columns)

    def _next_moves(self, request: FetchRequest, tickers: list[str], window: pd.DatetimeIndex) -> np.ndarray:
        """(sessions, tickers) next-session total log-return in units of the ticker's daily vol.

        Built from as-traded close, dividend and split (not adj_close, which depends on the
        fetch end), so the move of a date is window-independent. 0 past the calendar's end.
        """
        if not tickers or window.empty:
            return np.zeros((len(window), len(tickers)))
        following = _next_session(request.end, self.calendar) or request.end
        prices = self._prices(FetchRequest(request.start, following, tuple(tickers)))
        later = prices.groupby("ticker")[["close", "dividend", "split_ratio"]].shift(-1)
        prices["move"] = np.log((later["close"] + later["dividend"]) * later["split_ratio"] / prices["close"])
        moves = prices.pivot(index="date", columns="ticker", values="move").reindex(index=window, columns=tickers)
        annual_vol = np.array([_profile(self.seed, t).total_vol for t in tickers])
        return moves.fillna(0.0).to_numpy() / (annual_vol / np.sqrt(_TRADING_DAYS))

    def _headlines(self, ticker: str, days: pd.DatetimeIndex, first: int, move: np.ndarray) -> dict[str, np.ndarray]:
        """One ticker's headlines in the window (published_at still naive UTC).

        The random draws cover every session since the epoch, so a date's news is window-free.
        """
        u = np.random.default_rng([self.seed, _crc(ticker), _NEWS_TAG]).random((len(days), _NEWS_DRAWS))[first:]
        count = (u[:, 0] < _NEWS_CHANCE).astype(int) + (u[:, 0] < _TWO_HEADLINES_CHANCE)
        rows, slot = np.nonzero(np.arange(2) < count[:, None])
        draw = u[rows[:, None], 1 + 4 * slot[:, None] + np.arange(4)]  # (headlines, 4)
        score = _TONE_LOADING * move[rows] + np.log(draw[:, 0] / (1.0 - draw[:, 0]))
        tone = np.where(score > _TONE_CUT, 1, np.where(score < -_TONE_CUT, -1, 0))
        company = _company(ticker)
        rendered = {
            k: [t.format(company=company.name, driver=_DRIVERS[company.sector]) for t in templates]
            for k, templates in HEADLINE_TEMPLATES.items()
        }
        headline = [
            rendered[k][int(x * len(rendered[k]))] for k, x in zip(tone.tolist(), draw[:, 1].tolist(), strict=True)
        ]
        dates = days[first:][rows]
        ids = [_digest(ticker, d, s) for d, s in zip(dates.strftime("%Y-%m-%d"), slot.tolist(), strict=True)]
        minutes = (draw[:, 3] * 480).astype(int)  # 12:00-20:00 UTC on the session date
        return {
            "news_id": np.array(ids, dtype=object),
            "ticker": np.full(len(rows), ticker, dtype=object),
            "published_at": (dates + pd.Timedelta(hours=12) + pd.to_timedelta(minutes, unit="min")).to_numpy(),
            "date": dates.to_numpy(),
            "headline": np.array(headline, dtype=object),
            "publisher": np.array(_PUBLISHERS, dtype=object)[(draw[:, 2] * len(_PUBLISHERS)).astype(int)],
            "url": np.array([f"https://news.example/sample/{i}" for i in ids], dtype=object),
            "source_kind": np.full(len(rows), "news", dtype=object),
            "author": np.full(len(rows), None, dtype=object),
        }
