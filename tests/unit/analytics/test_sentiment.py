"""Sentiment: VADER polarity with finance terms, no lexicon leaks, daily shares, the next-day lag,
and HTML escaping of third-party headlines."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from bentley.analytics.sentiment import (
    daily_sentiment,
    extreme_headlines,
    headlines_html,
    next_day_correlation,
    score_headlines,
    sentiment_with_next_return,
    trend_chart,
)
from bentley.config import load_config

FINANCE_LEXICON = load_config().sentiment.lexicon  # the params defaults

POSITIVE = "Nova Systems beats estimates and raises guidance, shares soar"
NEGATIVE = "Cura Health faces lawsuit, shares plunge after recall"
NEUTRAL = "Orion Corp to hold annual meeting on Tuesday"


def make_news(headlines: list[str | None], tickers: list[str] | None = None) -> pd.DataFrame:
    """Rows in the news contract, one per headline, all on one session."""
    n = len(headlines)
    return pd.DataFrame(
        {
            "news_id": [f"n{i}" for i in range(n)],
            "ticker": tickers or ["NOVA"] * n,
            "date": pd.to_datetime(["2024-03-04"] * n),
            "headline": headlines,
            "published_at": pd.to_datetime(["2024-03-04 14:00"] * n, utc=True),
            "publisher": ["Ticker Times"] * n,
            "url": [f"https://news.example/{i}" for i in range(n)],
        }
    )


def make_scored(rows: list[tuple[str, str, float]]) -> pd.DataFrame:
    """A scored frame from (ticker, date, compound) rows; the other columns do not matter here."""
    frame = pd.DataFrame(rows, columns=["ticker", "date", "compound"])
    frame["date"] = pd.to_datetime(frame["date"])
    frame["headline"] = [f"headline {i}" for i in range(len(frame))]
    return frame


def make_prices(ticker: str, dates: pd.DatetimeIndex, returns: np.ndarray) -> pd.DataFrame:
    """adj_close starting at 100 with the given returns on the dates after the first."""
    close = 100.0 * np.cumprod(np.concatenate(([1.0], 1.0 + np.asarray(returns))))
    return pd.DataFrame({"ticker": ticker, "date": dates, "adj_close": close})


# ------------------------------------------------------------------------------------ scoring


def test_finance_lexicon_reads_known_polarity() -> None:
    news = make_news([POSITIVE, NEGATIVE, NEUTRAL], ["NOVA", "CURA", "ORIO"])
    scored = score_headlines(news, FINANCE_LEXICON)

    compound = scored.set_index("ticker")["compound"]
    assert compound["NOVA"] >= 0.05
    assert compound["CURA"] <= -0.05
    assert abs(compound["ORIO"]) < 0.05
    parts = scored[["pos", "neu", "neg"]].sum(axis=1)
    np.testing.assert_allclose(parts, 1.0, atol=2e-3)  # VADER rounds each part to 3 decimals
    # Rows and columns are kept, and the input is left alone.
    assert list(scored.columns) == [*news.columns, "compound", "pos", "neu", "neg"]
    assert scored["news_id"].tolist() == news["news_id"].tolist()
    assert "compound" not in news.columns


def test_plain_vader_misreads_the_negative_headline() -> None:
    """Why the finance lexicon exists: VADER alone reads "shares" as positive and misses "plunge"."""
    plain = score_headlines(make_news([NEGATIVE]))
    assert plain["compound"].iloc[0] > -0.05


def test_lexicon_updates_change_scores_and_do_not_leak() -> None:
    news = make_news([POSITIVE, NEUTRAL])
    before = score_headlines(news)
    updated = score_headlines(news, {"BEATS": 3.0, "Tuesday": -2.0})  # keys match case-insensitively
    after = score_headlines(news)

    assert updated["compound"].iloc[0] > before["compound"].iloc[0]
    assert updated["compound"].iloc[1] < 0 == before["compound"].iloc[1]
    pd.testing.assert_frame_equal(after, before)


def test_bad_lexicon_terms_are_rejected() -> None:
    news = make_news([POSITIVE])
    with pytest.raises(ValueError, match="single words"):
        score_headlines(news, {"beats estimates": 2.0})
    with pytest.raises(ValueError, match="finite"):
        score_headlines(news, {"beats": float("nan")})


def test_missing_headline_has_no_score_and_repeats_score_alike() -> None:
    scored = score_headlines(make_news([POSITIVE, None, "  ", POSITIVE]), FINANCE_LEXICON)
    assert scored["compound"].isna().tolist() == [False, True, True, False]
    assert scored["compound"].iloc[0] == scored["compound"].iloc[3]


# ---------------------------------------------------------------------------- daily aggregates


def test_daily_sentiment_counts_shares_and_mean() -> None:
    scored = make_scored(
        [
            ("BBB", "2024-03-05", 0.2),
            ("AAA", "2024-03-05", 0.5),
            ("AAA", "2024-03-04", -0.5),
            ("AAA", "2024-03-04", 0.05),  # exactly the positive cutoff: positive
            ("AAA", "2024-03-04", -0.05),  # exactly the negative cutoff: negative
            ("AAA", "2024-03-04", 0.0),
            ("AAA", "2024-03-04", 0.6),
            ("AAA", "2024-03-04", np.nan),  # unscored: left out of every column
        ]
    )
    daily = daily_sentiment(scored)

    assert list(daily.columns) == [
        "ticker",
        "date",
        "mean_compound",
        "n_headlines",
        "positive_share",
        "negative_share",
    ]
    assert daily[["ticker", "date"]].astype(str).values.tolist() == [
        ["AAA", "2024-03-04"],
        ["AAA", "2024-03-05"],
        ["BBB", "2024-03-05"],
    ]
    first = daily.iloc[0]
    assert first["n_headlines"] == 5
    assert first["mean_compound"] == pytest.approx((-0.5 + 0.05 - 0.05 + 0.0 + 0.6) / 5)
    assert first["positive_share"] == pytest.approx(2 / 5)
    assert first["negative_share"] == pytest.approx(2 / 5)
    assert daily["n_headlines"].tolist() == [5, 1, 1]
    assert daily["n_headlines"].dtype == np.int64
    # Custom thresholds move the cutoffs.
    strict = daily_sentiment(scored, positive_threshold=0.5, negative_threshold=-0.5)
    assert strict.iloc[0]["positive_share"] == pytest.approx(1 / 5)
    assert strict.iloc[0]["negative_share"] == pytest.approx(1 / 5)


# -------------------------------------------------------------------------- next-day correlation


def daily_from(ticker: str, dates: pd.DatetimeIndex, compound: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "ticker": ticker,
            "date": dates,
            "mean_compound": compound,
            "n_headlines": 1,
            "positive_share": 0.0,
            "negative_share": 0.0,
        }
    )


def test_sentiment_that_anticipates_the_next_return_correlates_fully() -> None:
    rng = np.random.default_rng(3)
    dates = pd.bdate_range("2024-01-01", periods=60)
    signs = rng.choice([-1.0, 1.0], size=len(dates) - 1)
    prices = make_prices("AAA", dates, 0.01 * signs)
    # Day t's sentiment is the sign of day t+1's return; the last day has no next session.
    daily = daily_from("AAA", dates[:-1], 0.6 * signs)

    result = next_day_correlation(daily, prices).set_index("ticker")

    assert result.loc["AAA", "n"] == len(dates) - 1
    assert result.loc["AAA", "correlation"] == pytest.approx(1.0)
    assert result.loc["AAA", "p_value"] < 1e-10
    assert result.loc["ALL", "correlation"] == pytest.approx(1.0)


def test_next_session_return_is_used_not_the_same_day() -> None:
    """Sentiment equals the same-day return (corr +1) and returns alternate, so the next
    session's return is minus the same-day one: only a lag of one session gives -1."""
    dates = pd.bdate_range("2024-01-01", periods=41)
    returns = 0.01 * (-1.0) ** np.arange(40)  # +1 %, -1 %, +1 %, ...
    prices = make_prices("AAA", dates, returns)
    same_day = np.concatenate(([np.nan], returns))  # return of each date vs the previous one
    daily = daily_from("AAA", dates[1:], 50.0 * same_day[1:])

    assert np.corrcoef(daily["mean_compound"], same_day[1:])[0, 1] == pytest.approx(1.0)
    result = next_day_correlation(daily, prices).set_index("ticker")
    assert result.loc["AAA", "correlation"] == pytest.approx(-1.0)
    assert result.loc["AAA", "n"] == 39  # the last date has no next session


def test_next_session_after_a_non_session_date() -> None:
    """A sentiment date without a price row maps to the first session after it."""
    dates = pd.DatetimeIndex(["2024-03-01", "2024-03-04", "2024-03-05"])  # Fri, Mon, Tue
    prices = make_prices("AAA", dates, np.array([0.02, -0.01]))
    daily = daily_from("AAA", pd.DatetimeIndex(["2024-03-01", "2024-03-02", "2024-03-05"]), np.zeros(3))

    paired = sentiment_with_next_return(daily, prices)

    np.testing.assert_allclose(paired["next_return"].to_numpy(), [0.02, 0.02, np.nan])


def test_thin_tickers_give_nan_not_errors() -> None:
    dates = pd.bdate_range("2024-01-01", periods=10)
    rng = np.random.default_rng(0)
    prices = pd.concat(
        [
            make_prices("AAA", dates, rng.normal(0, 0.01, 9)),
            make_prices("BBB", dates, rng.normal(0, 0.01, 9)),
        ]
    )
    daily = pd.concat(
        [
            daily_from("AAA", dates[:2], np.array([0.1, -0.2])),  # two pairs only
            daily_from("BBB", dates[:5], np.full(5, 0.3)),  # constant sentiment
            daily_from("CCC", dates[:5], rng.normal(size=5)),  # no prices at all
        ]
    )

    result = next_day_correlation(daily, prices).set_index("ticker")

    assert result.index.tolist() == ["AAA", "BBB", "CCC", "ALL"]
    assert result["n"].tolist() == [2, 5, 0, 7]
    assert result.loc[["AAA", "BBB", "CCC"], ["correlation", "p_value"]].isna().all().all()
    assert np.isfinite(result.loc["ALL", "correlation"])


# ----------------------------------------------------------------------------- display helpers


def test_extreme_headlines_rank_and_keep_signs_apart() -> None:
    scored = make_scored(
        [
            ("AAA", "2024-03-04", 0.9),
            ("BBB", "2024-03-04", 0.3),
            ("CCC", "2024-03-05", -0.7),
            ("DDD", "2024-03-05", 0.0),
            ("EEE", "2024-03-06", 0.6),
        ]
    )
    positive, negative = extreme_headlines(scored, n=2)

    assert list(positive.columns) == ["ticker", "date", "compound", "headline"]
    assert positive["ticker"].tolist() == ["AAA", "EEE"]
    assert negative["ticker"].tolist() == ["CCC"]  # a neutral headline is not "negative"


def test_headlines_html_escapes_every_cell() -> None:
    frame = pd.DataFrame(
        {
            "ticker": ["NOVA", "CURA"],
            "date": pd.to_datetime(["2024-03-04", "2024-03-05"]),
            "compound": [0.5, np.nan],
            "headline": ["<script>alert(1)</script>", 'Q&A: "why" <b>now</b>'],
            "<th>": ["x", "y"],
        }
    )
    out = headlines_html(frame)

    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in out
    assert "<script" not in out and "<b>" not in out
    assert "Q&amp;A: &quot;why&quot; &lt;b&gt;now&lt;/b&gt;" in out
    assert "<th>&lt;th&gt;</th>" in out
    assert "<td>2024-03-04</td>" in out and "<td>0.500</td>" in out
    assert out.count("<tr>") == 3


def test_trend_chart_is_titled_and_labelled() -> None:
    dates = pd.bdate_range("2024-01-01", periods=40)
    rng = np.random.default_rng(1)
    daily = pd.concat([daily_from(t, dates, rng.uniform(-1, 1, len(dates))) for t in ("AAA", "BBB", "CCC")])
    fig = trend_chart(daily, tickers=["AAA", "BBB"])
    try:
        ax = fig.axes[0]
        assert "20-session" in ax.get_title()
        assert ax.get_xlabel() and ax.get_ylabel()
        assert [line.get_label() for line in ax.get_lines() if not line.get_label().startswith("_")] == [
            "AAA",
            "BBB",
        ]
    finally:
        plt.close(fig)
