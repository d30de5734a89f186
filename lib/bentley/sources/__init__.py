"""Source adapters, chosen per kind of data by `sources.<market|news|social|portfolio>.kind`.

Adapters are imported lazily: a run on sample data never imports yfinance or feedparser.
A source's `name` is its kind, which is also its folder in the lake and its key in
`sync_state`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from bentley.sources.base import (
    TICKER_PATTERN,
    FetchRequest,
    Health,
    MarketSource,
    Source,
    SourceError,
    TransientSourceError,
    validate_ticker,
)

if TYPE_CHECKING:
    from bentley.config import Config
    from bentley.stage import Params

__all__ = [
    "TICKER_PATTERN",
    "FetchRequest",
    "Health",
    "MarketSource",
    "Source",
    "SourceError",
    "TransientSourceError",
    "market_source",
    "news_source",
    "portfolio_source",
    "resolve_universe",
    "social_source",
    "validate_ticker",
    "with_resolved_universe",
]


def market_source(params: Params, data_dir: Path) -> MarketSource:
    """The market source (needs params sections sources, sample, universe, workflow)."""
    _apply_file_limits(params)
    settings = params.sources.market
    if settings.kind == "sample":
        from bentley.sources.sample import SampleMarketSource

        return SampleMarketSource(
            seed=params.sample.seed,
            n_tickers=params.sample.n_tickers,
            epoch=params.sample.epoch,
            benchmark=params.universe.benchmark,
            calendar=params.workflow.calendar,
            signal=params.sample.signal,
        )
    if settings.kind == "csv":
        from bentley.sources.base import resolve_inside
        from bentley.sources.files import CsvMarketSource

        assert settings.path is not None, "the settings validator requires a path for kind csv"
        return CsvMarketSource(
            resolve_inside(data_dir, settings.path),
            benchmark=params.universe.benchmark,
            calendar=params.workflow.calendar,
        )
    from bentley.sources.yahoo import YahooMarketSource

    tickers = None if params.universe.tickers is None else [*params.universe.tickers]
    return YahooMarketSource(tickers, params.sources.http)


def news_source(params: Params, data_dir: Path) -> Source:
    _apply_file_limits(params)
    settings = params.sources.news
    if settings.kind == "sample":
        from bentley.sources.sample import SampleNewsSource

        return SampleNewsSource(
            seed=params.sample.seed,
            epoch=params.sample.epoch,
            calendar=params.workflow.calendar,
            signal=params.sample.signal,
        )
    if settings.kind == "csv":
        from bentley.sources.base import resolve_inside
        from bentley.sources.files import CsvNewsSource

        assert settings.path is not None, "the settings validator requires a path for kind csv"
        return CsvNewsSource(resolve_inside(data_dir, settings.path))
    if settings.kind == "rss":
        from bentley.sources.rss import RssNewsSource

        return RssNewsSource(settings.feeds, data_dir, params.sources.http, calendar=params.workflow.calendar)
    from bentley.sources.yahoo import YahooNewsSource

    return YahooNewsSource(params.sources.http, calendar=params.workflow.calendar)


def social_source(params: Params, data_dir: Path) -> Source:
    """Social posts (dataset `social`, loaded into `news` with `source_kind` social)."""
    _apply_file_limits(params)
    settings = params.sources.social
    if settings.kind == "sample":
        from bentley.sources.sample import SampleSocialSource

        return SampleSocialSource(
            seed=params.sample.seed,
            epoch=params.sample.epoch,
            calendar=params.workflow.calendar,
            signal=params.sample.signal,
        )
    from bentley.sources.social import NoSocialSource, SocialSource, post_limit_bytes

    if settings.kind == "none":
        return NoSocialSource()
    return SocialSource(
        settings.files,
        settings.feeds,
        data_dir,
        params.sources.http,
        max_post_bytes=post_limit_bytes(settings.max_post_kb),
        calendar=params.workflow.calendar,
    )


def portfolio_source(params: Params, data_dir: Path) -> Source:
    _apply_file_limits(params)
    settings = params.sources.portfolio
    if settings.kind == "sample":
        from bentley.sources.sample import SamplePortfolioSource

        return SamplePortfolioSource(
            seed=params.sample.seed,
            epoch=params.sample.epoch,
            calendar=params.workflow.calendar,
            signal=params.sample.signal,
        )
    from bentley.sources.bank import FilePortfolioSource
    from bentley.sources.base import resolve_inside

    return FilePortfolioSource(
        transactions=resolve_inside(data_dir, settings.transactions) if settings.transactions else None,
        holdings=resolve_inside(data_dir, settings.holdings) if settings.holdings else None,
    )


def _apply_file_limits(params: Params) -> None:
    """Every file a source reads is bounded by `sources.file_limits` (bentley.sources.files)."""
    from bentley.sources.files import apply_limits

    apply_limits(params.sources.file_limits)


def resolve_universe(tickers: list[str] | None, market: MarketSource) -> list[str]:
    """`universe.tickers`, or every ticker the market source provides when it is null."""
    return list(tickers) if tickers is not None else market.available_tickers()


def with_resolved_universe(config: Config, root: Path) -> Config:
    """The params with `universe.tickers: null` replaced by the market source's tickers.

    The runner resolves the universe once, before any stage runs, so every stage reads the
    same explicit list: a profile's stages never pick up tickers another profile (or an
    older universe) left in a shared warehouse, and a changed file folder changes the
    params, hence the cache keys.
    """
    from bentley.config import ParamsError

    if config.universe.tickers is not None:
        return config
    try:
        tickers = market_source(config, root / config.sources.data_dir).available_tickers()
    except (SourceError, OSError, ValueError) as exc:
        raise ParamsError(f"universe.tickers: null, and the market source cannot list its tickers: {exc}") from None
    universe = config.universe.model_copy(update={"tickers": tickers})
    return config.model_copy(update={"universe": universe})
