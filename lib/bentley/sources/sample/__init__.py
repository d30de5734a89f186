"""Deterministic embedded sample data: prices, news, social posts, a household ledger and holdings.

The pipeline runs offline on these sources. Reports flag the data as synthetic
(`synthetic = True`), but it is built to look and behave like the real thing so that every
stage (validation, adjustment, features, sentiment, budgeting) meets realistic cases.

One module per generator, each documented there: `prices` (the factor model, the planted
weekly reversal, splits and dividends; `SampleMarketSource`), `news` (headlines whose tone
weakly anticipates the next session; `SampleNewsSource`), `social` (a few posts with cashtags;
`SampleSocialSource`) and `portfolio` (the household ledger and holdings;
`SamplePortfolioSource`). `_common` holds what they share: the fictional companies, the random
stream tags and the row helpers. Every public name is importable from this package.

Determinism
    A ticker's series is a pure function of (seed, epoch, ticker, date): every stream of random
    numbers is seeded by the seed and a CRC-32 of the ticker (never Python's salted ``hash``),
    each stream is drawn as one block of rows per session from the first session on or after
    ``epoch``, and every recursion only looks back. So the rows of a date do not depend on the
    other tickers requested nor on the window (``adj_close`` aside, see `prices`). News and
    social posts follow the same rule, each from its own stream, and the ledger is generated
    month by month from streams seeded by (seed, year, month). Windows must start on or after
    ``epoch``.
"""

from __future__ import annotations

from bentley.sources.sample._common import (
    COMPANY_NAMES,
    DEFAULT_BENCHMARK,
    SECTORS,
    SPLIT_PERIOD,
    company_name,
    sector_of,
)
from bentley.sources.sample.news import HEADLINE_TEMPLATES, SampleNewsSource, headline_tone
from bentley.sources.sample.portfolio import SamplePortfolioSource
from bentley.sources.sample.prices import DEFAULT_SIGNAL, SampleMarketSource
from bentley.sources.sample.social import POST_TEMPLATES, SampleSocialSource

__all__ = [
    "COMPANY_NAMES",
    "DEFAULT_BENCHMARK",
    "DEFAULT_SIGNAL",
    "HEADLINE_TEMPLATES",
    "POST_TEMPLATES",
    "SECTORS",
    "SPLIT_PERIOD",
    "SampleMarketSource",
    "SampleNewsSource",
    "SamplePortfolioSource",
    "SampleSocialSource",
    "company_name",
    "headline_tone",
    "sector_of",
]
