"""Headline and social-post sentiment: VADER scores, daily aggregates, and their link to next-day returns.

VADER is a lexicon-and-rules scorer built for short social-media text. It reads
headlines well enough but knows nothing about finance: "shares" counts as positive
(+1.2, the verb), while "beats", "downgrade", "bullish", "recall" or "plunge" are
missing. So `score_headlines` takes optional lexicon updates, and
The finance-term adjustments live in params (`sentiment.lexicon`), not in code. Without them,
"Cura Health faces lawsuit, shares plunge after recall" scores as mildly positive.

The analyzer is created once per call: VADER keeps its lexicon on the instance,
so updates made for one call can never leak into another (or into another
notebook cell), and building it costs a few milliseconds.

Headlines are plain text (the `news` contract) and come from third parties, so
`headlines_html` escapes every cell: a headline is never rendered as markup.

Social posts share the `news` table (`source_kind` social; a missing kind is news) and are
scored the same way, since VADER was built for that kind of text. Their tone is reported
beside the headlines' and pooled with it (`tone_by_kind`, `tone_by_kind_chart`), but
`sentiment_daily`, the model's sentiment input, stays the headlines' own: a few posts are
noisier than a headline and would change what the model's `n_headlines` counts. Posts are
untrusted text too and go through the same escaping.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy import stats
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from bentley.reporting import md_escape

#: The VADER score columns `score_headlines` adds, in this order.
SCORE_COLUMNS = ("compound", "pos", "neu", "neg")

#: Standard VADER cutoffs on the compound score (Hutto & Gilbert, 2014).
POSITIVE_THRESHOLD = 0.05
NEGATIVE_THRESHOLD = -0.05

#: Label of the pooled row of `next_day_correlation`.
POOLED = "ALL"

#: The tone charts' smoothing: a rolling mean over about a trading month of sessions, drawn once a
#: line has this many days with text. A reading aid for the report, not a parameter of any result.
TREND_SESSIONS = 20
TREND_MIN_DAYS = 5

#: Finance-term adjustments to VADER's lexicon (valences on VADER's -4..+4 scale).
#: VADER matches lower-case whole tokens and does not stem, so inflections are
#: listed separately. "guidance" and "shares" are set to 0: they are neutral nouns
#: in headlines ("raises guidance", "shares fall"); the verb "shares" is VADER's +1.2.
_KEY = ["ticker", "date"]
_DAILY_COLUMNS = ["ticker", "date", "mean_compound", "n_headlines", "positive_share", "negative_share"]
_EXTREME_COLUMNS = ["ticker", "date", "compound", "headline"]
_EXTREME_POST_COLUMNS = ["ticker", "date", "compound", "author", "headline"]

#: What each kind of text is called in reports; `ALL_KINDS` is both together.
NEWS, SOCIAL, ALL_KINDS = "news", "social", "all"
KIND_LABELS = {NEWS: "news headlines", SOCIAL: "social posts", ALL_KINDS: "news and social together"}
_TONE_COLUMNS = [
    "kind",
    "texts",
    "ticker_days",
    "mean_compound",
    "positive_share",
    "negative_share",
    "next_day_correlation",
    "p_value",
]


def _analyzer(lexicon_updates: Mapping[str, float] | None) -> SentimentIntensityAnalyzer:
    """A fresh analyzer with the updates applied (keys lower-cased, as VADER looks them up)."""
    analyzer = SentimentIntensityAnalyzer()
    if lexicon_updates:
        updates: dict[str, float] = {}
        for term, valence in lexicon_updates.items():
            word = str(term).strip().lower()
            if not word or len(word.split()) != 1:
                # VADER scores whitespace-separated tokens: a phrase would never match.
                raise ValueError(f"lexicon terms must be single words, got {term!r}")
            value = float(valence)
            if not math.isfinite(value):
                raise ValueError(f"lexicon valence for {term!r} must be finite, got {valence!r}")
            updates[word] = value
        analyzer.lexicon.update(updates)
    return analyzer


def score_headlines(news: pd.DataFrame, lexicon_updates: Mapping[str, float] | None = None) -> pd.DataFrame:
    """The news rows with VADER `compound, pos, neu, neg` added (rows and order kept).

    `lexicon_updates` maps words to valences and applies to this call only; pass
    `sentiment.lexicon` from params (or your own mapping) for finance-aware scores. A missing or
    blank headline gets NaN scores rather than VADER's 0.0 for empty text, so it is
    not counted as a neutral headline downstream. Each distinct headline is scored
    once: syndicated headlines repeat across tickers and feeds.
    """
    analyzer = _analyzer(lexicon_updates)
    text = news["headline"].astype("string").str.strip()
    out = news.copy()
    scores = {name: np.full(len(news), np.nan) for name in SCORE_COLUMNS}
    present = text.notna().to_numpy() & (text.str.len() > 0).fillna(False).to_numpy()
    if present.any():
        codes, uniques = pd.factorize(text[present])
        scored = [analyzer.polarity_scores(str(h)) for h in uniques]
        for name in SCORE_COLUMNS:
            per_unique = np.array([s[name] for s in scored], dtype=np.float64)
            scores[name][present] = per_unique[codes]
    for name in SCORE_COLUMNS:
        out[name] = scores[name]
    return out


def daily_sentiment(
    scored: pd.DataFrame,
    positive_threshold: float = POSITIVE_THRESHOLD,
    negative_threshold: float = NEGATIVE_THRESHOLD,
) -> pd.DataFrame:
    """Per (ticker, date): mean compound, headline count and positive/negative shares.

    The shares are the fractions of the day's headlines with compound >= the
    positive threshold and <= the negative threshold (VADER's ±0.05 by default);
    the rest are neutral. Headlines without a score are left out of every column,
    including the count. Sorted by ticker and date: the `sentiment_daily` table.
    """
    if positive_threshold < negative_threshold:
        raise ValueError(f"positive_threshold {positive_threshold} is below negative_threshold {negative_threshold}")
    rows = scored.loc[scored["compound"].notna(), [*_KEY, "compound"]]
    compound = rows["compound"].astype(np.float64)
    frame = rows[_KEY].assign(
        compound=compound,
        positive=(compound >= positive_threshold).astype(np.float64),
        negative=(compound <= negative_threshold).astype(np.float64),
    )
    daily = (
        frame.groupby(_KEY, sort=True, dropna=True)
        .agg(
            mean_compound=("compound", "mean"),
            n_headlines=("compound", "size"),
            positive_share=("positive", "mean"),
            negative_share=("negative", "mean"),
        )
        .reset_index()
    )
    daily["n_headlines"] = daily["n_headlines"].astype(np.int64)
    return daily[_DAILY_COLUMNS]


def _next_session_returns(prices: pd.DataFrame) -> pd.DataFrame:
    """Each price row's simple return from the previous row of the same ticker.

    Rows without an adjusted close are dropped first (as in the features), so the
    "previous row" is the previous session with a price.
    """
    p = prices.loc[prices["adj_close"].notna(), [*_KEY, "adj_close"]]
    p = p.sort_values(_KEY, kind="mergesort").reset_index(drop=True)
    close = p["adj_close"].astype(np.float64)
    previous = close.groupby(p["ticker"], sort=False).shift(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ret = close / previous - 1.0
    return p[_KEY].assign(next_return=ret.replace([np.inf, -np.inf], np.nan))


def _pearson(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Pearson r and two-sided p, NaN (not an error) for fewer than 3 pairs or constant input."""
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan, math.nan
    result = stats.pearsonr(x, y)
    return float(result.statistic), float(result.pvalue)


def sentiment_with_next_return(daily: pd.DataFrame, prices: pd.DataFrame) -> pd.DataFrame:
    """Daily sentiment (ticker, date, mean_compound) with `next_return`, sorted by ticker and date.

    The next session is the first price row of that ticker strictly after the
    sentiment date, and its return is measured from the row before it. For a
    session date that is close(t+1) / close(t) - 1: the move the day's news could
    have predicted. Same-day returns are never used, since a session's headlines
    are partly written about that session's move. Rows without a next session
    (the last date, or tickers without prices) get NaN.
    """
    returns = _next_session_returns(prices)
    returns["date"] = pd.to_datetime(returns["date"]).astype("datetime64[ns]")
    left = daily.loc[daily["date"].notna(), [*_KEY, "mean_compound"]].copy()
    left["date"] = pd.to_datetime(left["date"]).astype("datetime64[ns]")
    merged = pd.merge_asof(
        left.sort_values("date", kind="mergesort"),
        returns.sort_values("date", kind="mergesort"),
        on="date",
        by="ticker",
        direction="forward",
        allow_exact_matches=False,  # the first price row strictly after the sentiment date
    )
    return merged.sort_values(_KEY, kind="mergesort").reset_index(drop=True)


def next_day_correlation(daily: pd.DataFrame, prices: pd.DataFrame) -> pd.DataFrame:
    """Pearson correlation of each day's mean compound with the next session's return.

    One row per ticker (sorted) plus a pooled row `ticker == "ALL"` over every
    pair: columns `ticker, n, correlation, p_value` (two-sided, scipy.stats.pearsonr).
    `n` counts the (sentiment, next return) pairs; with fewer than 3, or with a
    constant series, the correlation and p-value are NaN rather than an error, so
    a thin ticker does not stop the report. The pooled row mixes tickers with
    different volatility: read it as a summary, not as a model.
    """
    pairs = sentiment_with_next_return(daily, prices)
    pairs = pairs[np.isfinite(pairs["mean_compound"]) & np.isfinite(pairs["next_return"])]
    by_ticker = {ticker: frame for ticker, frame in pairs.groupby("ticker", sort=True)}
    tickers = sorted(daily["ticker"].dropna().unique())
    rows: list[dict[str, object]] = []
    for ticker in [*tickers, POOLED]:
        frame = pairs if ticker == POOLED else by_ticker.get(ticker, pairs.iloc[:0])
        x = frame["mean_compound"].to_numpy(dtype=np.float64)
        y = frame["next_return"].to_numpy(dtype=np.float64)
        r, p = _pearson(x, y)
        rows.append({"ticker": ticker, "n": int(x.size), "correlation": r, "p_value": p})
    out = pd.DataFrame(rows, columns=["ticker", "n", "correlation", "p_value"])
    out["n"] = out["n"].astype(np.int64)
    return out


def source_kinds(news: pd.DataFrame) -> pd.Series:
    """Each row's `source_kind`, news where it is missing (rows loaded before social posts,
    or a frame without the column)."""
    if "source_kind" not in news:
        return pd.Series(NEWS, index=news.index, dtype=object)
    kinds = news["source_kind"].astype(object)
    return kinds.where(kinds.notna(), NEWS)


def of_kind(scored: pd.DataFrame, kind: str) -> pd.DataFrame:
    """The rows of one kind (`NEWS` or `SOCIAL`), or every row for `ALL_KINDS`."""
    if kind == ALL_KINDS:
        return scored
    if kind not in (NEWS, SOCIAL):
        raise ValueError(f"unknown kind {kind!r}; one of {NEWS}, {SOCIAL}, {ALL_KINDS}")
    return scored[source_kinds(scored) == kind]


def tone_by_kind(
    scored: pd.DataFrame,
    prices: pd.DataFrame,
    positive_threshold: float = POSITIVE_THRESHOLD,
    negative_threshold: float = NEGATIVE_THRESHOLD,
) -> pd.DataFrame:
    """News tone, social tone and both together: one row each, in that order.

    Columns: `kind` (the `KIND_LABELS` label), `texts` (scored headlines or posts),
    `ticker_days`, `mean_compound` (over texts), the positive and negative shares of texts
    (the `daily_sentiment` thresholds), and the pooled `next_day_correlation` of each
    ticker-day's mean tone with the next session's return, with its `p_value`
    (`next_day_correlation`). A kind without texts has zeros and missing values, not an error.
    """
    rows = []
    for kind in (NEWS, SOCIAL, ALL_KINDS):
        texts = of_kind(scored, kind)
        texts = texts[texts["compound"].notna()]
        daily = daily_sentiment(texts, positive_threshold, negative_threshold)
        pooled = next_day_correlation(daily, prices).set_index("ticker").loc[POOLED]
        compound = texts["compound"].astype(np.float64)
        rows.append(
            {
                "kind": KIND_LABELS[kind],
                "texts": len(texts),
                "ticker_days": len(daily),
                "mean_compound": float(compound.mean()) if len(texts) else math.nan,
                "positive_share": float((compound >= positive_threshold).mean()) if len(texts) else math.nan,
                "negative_share": float((compound <= negative_threshold).mean()) if len(texts) else math.nan,
                "next_day_correlation": float(pooled["correlation"]),
                "p_value": float(pooled["p_value"]),
            }
        )
    return pd.DataFrame(rows, columns=_TONE_COLUMNS).astype({"texts": np.int64, "ticker_days": np.int64})


def _daily_tone(scored: pd.DataFrame) -> pd.Series:
    """Mean compound of each date's texts over every ticker, by date."""
    rows = scored[scored["compound"].notna()]
    dates = pd.to_datetime(rows["date"]).astype("datetime64[ns]")
    return rows["compound"].astype(np.float64).groupby(dates).mean().sort_index()


def tone_by_kind_chart(scored: pd.DataFrame, window: int = TREND_SESSIONS, min_periods: int = TREND_MIN_DAYS) -> Figure:
    """Rolling `window`-session mean of the daily tone of headlines, of posts and of both.

    Each day's tone is the mean compound of that kind's texts over every ticker; days without
    texts of a kind are missing for it, and a line needs `min_periods` days before it is drawn.
    """
    from bentley import charts

    wide = pd.DataFrame({KIND_LABELS[kind]: _daily_tone(of_kind(scored, kind)) for kind in (NEWS, SOCIAL, ALL_KINDS)})
    rolling = wide.sort_index().rolling(window, min_periods=min(min_periods, window)).mean()
    fig, ax = charts.figure(9, 4, left=0.95)
    charts.plot_series(ax, rolling, emphasize=[KIND_LABELS[ALL_KINDS]])
    ax.axhline(0.0, color="grey", linewidth=0.8, linestyle="--")
    ax.set_title(f"News and social tone: rolling {window}-session mean of daily VADER compound, all tickers")
    ax.set_xlabel("Session")
    ax.set_ylabel("Mean compound score (-1 to +1)")
    charts.date_axis(ax)
    charts.legend_outside(ax)
    return fig


def tone_by_kind_sentence(tone: pd.DataFrame) -> str:
    """The tone table in words: how headlines and posts read, apart and together."""
    rows = tone.set_index("kind")
    news, social, both = (rows.loc[KIND_LABELS[k]] for k in (NEWS, SOCIAL, ALL_KINDS))
    if social["texts"] == 0:
        return (
            f"No social posts in the window (`sources.social`); the {int(news['texts']):,} headlines "
            f"average {news['mean_compound']:+.3f}."
        )
    if news["texts"] == 0:
        return f"No headlines in the window; the {int(social['texts']):,} social posts average {social['mean_compound']:+.3f}."
    return (
        f"{int(news['texts']):,} headlines average {news['mean_compound']:+.3f} and {int(social['texts']):,} "
        f"social posts {social['mean_compound']:+.3f} (VADER compound, -1 to +1); together "
        f"{both['mean_compound']:+.3f}. Posts are shorter and more opinionated than headlines, so read a "
        "gap between the two as a difference in voice as much as in view."
    )


def extreme_headlines(
    scored: pd.DataFrame, n: int = 5, columns: Sequence[str] = tuple(_EXTREME_COLUMNS)
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The `n` most positive and `n` most negative headlines: (ticker, date, compound, headline).

    Only headlines on the right side of zero qualify, so a quiet period shows
    fewer rows instead of presenting neutral headlines as "most negative". Ties
    are broken by date (latest first) and then ticker, so the tables are stable.
    `columns` picks what the tables show (they must include ticker, date and compound).
    """
    rows = scored.loc[scored["compound"].notna(), list(columns)]
    ordered = rows.sort_values(["compound", "date", "ticker"], ascending=[False, False, True], kind="mergesort")
    positive = ordered[ordered["compound"] > 0].head(n).reset_index(drop=True)
    ordered = rows.sort_values(["compound", "date", "ticker"], ascending=[True, False, True], kind="mergesort")
    negative = ordered[ordered["compound"] < 0].head(n).reset_index(drop=True)
    return positive, negative


def extreme_posts(scored: pd.DataFrame, n: int = 5) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The `n` most positive and most negative social posts, with their authors: (ticker, date,
    compound, author, post). Like `extreme_headlines`; shown through `headlines_html`."""
    posts = of_kind(scored, SOCIAL)
    if "author" not in posts:
        posts = posts.assign(author=None)
    positive, negative = extreme_headlines(posts, n, _EXTREME_POST_COLUMNS)
    return positive.rename(columns={"headline": "post"}), negative.rename(columns={"headline": "post"})


def _cell(value: object) -> str:
    """Display text of one cell: dates as YYYY-MM-DD, floats to 3 decimals, missing empty."""
    if value is None or (pd.api.types.is_scalar(value) and pd.isna(value)):
        return ""
    if isinstance(value, pd.Timestamp):
        return value.strftime("%Y-%m-%d") if value == value.normalize() else value.isoformat()
    if isinstance(value, float | np.floating):
        return f"{value:.3f}"
    return str(value)


def headlines_html(frame: pd.DataFrame) -> str:
    """An HTML table of the frame in which every header and cell is escaped text.

    Headlines, publishers and URLs come from third-party feeds; anything that
    looks like markup (`<script>`, `<a href>`, entities) is shown as the literal
    text it is, never interpreted, when a notebook displays the table with
    IPython.display.HTML. URLs are therefore not turned into links.
    """
    head = "".join(f"<th>{html.escape(str(c), quote=True)}</th>" for c in frame.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(v), quote=True)}</td>" for v in row) + "</tr>"
        for row in frame.itertuples(index=False, name=None)
    )
    return (
        '<table class="headlines tex2jax_ignore mathjax_ignore">'
        f"<thead><tr>{head}</tr></thead>"
        f"<tbody>{body}</tbody>"
        "</table>"
    )


def trend_chart(
    daily: pd.DataFrame,
    tickers: Iterable[str] | None = None,
    window: int = TREND_SESSIONS,
    min_periods: int = TREND_MIN_DAYS,
) -> Figure:
    """Rolling `window`-session mean of each ticker's daily mean compound.

    The session axis is the dates present in `daily`; a ticker's days without
    headlines are missing, not zero, so the mean is over the days it had news,
    and needs `min_periods` of them before it is drawn (a single headline would
    otherwise dominate the start of the line).
    """
    from bentley import charts

    frame = daily if tickers is None else daily[daily["ticker"].isin(list(tickers))]
    wide = frame.pivot(index="date", columns="ticker", values="mean_compound").sort_index()
    rolling = wide.rolling(window, min_periods=min(min_periods, window)).mean()
    fig, ax = charts.figure(9, 4, left=0.95)
    charts.plot_series(ax, rolling, others="other tickers")
    ax.axhline(0.0, color="grey", linewidth=0.8, linestyle="--")
    ax.set_title(f"Headline sentiment: rolling {window}-session mean of daily VADER compound")
    ax.set_xlabel("Session")
    ax.set_ylabel("Mean compound score (-1 to +1)")
    charts.date_axis(ax)
    charts.legend_outside(ax)
    return fig


def trend_sentence(daily: pd.DataFrame, window: int = TREND_SESSIONS, min_periods: int = TREND_MIN_DAYS) -> str:
    """Which ticker's headlines read most positive and most negative lately (the chart's last values)."""
    wide = daily.pivot(index="date", columns="ticker", values="mean_compound").sort_index()
    last = (
        wide.rolling(window, min_periods=min(min_periods, window)).mean().ffill().iloc[-1:].T.iloc[:, 0].dropna()
        if len(wide)
        else pd.Series(dtype=float)
    )
    if last.empty:
        return f"Too few headline days for a {window}-session mean yet."
    best, worst = last.idxmax(), last.idxmin()
    if best == worst:
        return f"Lately the headlines on {md_escape(best)} average {last[best]:+.2f} (-1 to +1)."
    return (
        f"Over the last {window} sessions with news, headlines on {md_escape(best)} read the most positive "
        f"({last[best]:+.2f}) and on {md_escape(worst)} the most negative ({last[worst]:+.2f}), on a scale "
        "from -1 to +1 where |0.05| and below is neutral."
    )


def correlation_sentence(correlation: pd.DataFrame, alpha: float = 0.05) -> str:
    """Read the pooled next-day correlation in words, with its significance."""
    pooled = correlation[correlation["ticker"] == "ALL"]
    if pooled.empty or pd.isna(pooled["correlation"].iloc[0]):
        return "Too few headline days to measure a next-day relation."
    row = pooled.iloc[0]
    verdict = "statistically significant" if row["p_value"] < alpha else "not statistically significant"
    strength = "weak" if abs(row["correlation"]) < 0.3 else "moderate" if abs(row["correlation"]) < 0.6 else "strong"
    return (
        f"Pooled over {int(row['n']):,} ticker-days, tone and the next session's return correlate at "
        f"{row['correlation']:+.3f} (p = {row['p_value']:.3g}): a {strength} relation, {verdict} at {alpha:.0%}. "
        "A correlation this size explains little of any single day's move."
    )
