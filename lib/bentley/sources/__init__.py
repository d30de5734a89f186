"""Source adapters, chosen per kind of data by `sources.<market|news|portfolio>.kind`."""

from __future__ import annotations

from types import SimpleNamespace

from bentley.sources.base import FetchRequest, Health, MarketSource, Source

__all__ = ["FetchRequest", "Health", "MarketSource", "Source", "market_source", "news_source", "portfolio_source"]


def market_source(params: SimpleNamespace) -> MarketSource:
    """The market source for `params.sources.market` (needs sections sources, sample, universe, workflow)."""
    kind = params.sources.market.kind
    if kind == "sample":
        from bentley.sources.sample import SampleMarketSource

        sample = params.sample
        return SampleMarketSource(
            seed=sample.seed,
            n_tickers=sample.n_tickers,
            epoch=sample.epoch,
            benchmark=params.universe.benchmark,
            calendar=params.workflow.calendar,
        )
    raise ValueError(f"sources.market.kind: unknown source kind {kind!r}")


def news_source(params: SimpleNamespace) -> Source:
    kind = params.sources.news.kind
    if kind == "sample":
        from bentley.sources.sample import SampleNewsSource

        return SampleNewsSource(seed=params.sample.seed, epoch=params.sample.epoch, calendar=params.workflow.calendar)
    raise ValueError(f"sources.news.kind: unknown source kind {kind!r}")


def portfolio_source(params: SimpleNamespace) -> Source:
    kind = params.sources.portfolio.kind
    if kind == "sample":
        from bentley.sources.sample import SamplePortfolioSource

        return SamplePortfolioSource(
            seed=params.sample.seed, epoch=params.sample.epoch, calendar=params.workflow.calendar
        )
    raise ValueError(f"sources.portfolio.kind: unknown source kind {kind!r}")
