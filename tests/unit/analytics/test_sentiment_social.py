"""News and social tone apart and together; posts shown as text, never markup."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from bs4 import BeautifulSoup

from bentley.analytics.sentiment import (
    KIND_LABELS,
    extreme_posts,
    headlines_html,
    of_kind,
    score_headlines,
    source_kinds,
    tone_by_kind,
    tone_by_kind_chart,
    tone_by_kind_sentence,
)
from bentley.config import load_config

LEXICON = load_config().sentiment.lexicon
DATES = pd.bdate_range("2024-03-04", periods=8)


def texts(rows: list[tuple[str | None, str, str, str | None]]) -> pd.DataFrame:
    """News rows from (source_kind, date, headline, author); source_kind None is an old row (news)."""
    frame = pd.DataFrame(rows, columns=["source_kind", "date", "headline", "author"])
    frame["date"] = pd.to_datetime(frame["date"])
    frame["ticker"] = "NOVA"
    frame["news_id"] = [f"n{i}" for i in range(len(frame))]
    return frame


def rising_prices() -> pd.DataFrame:
    """NOVA up 1 % on odd sessions and down 1 % on even ones."""
    returns = np.where(np.arange(len(DATES) - 1) % 2 == 0, 0.01, -0.01)
    close = 100.0 * np.cumprod(np.concatenate(([1.0], 1.0 + returns)))
    return pd.DataFrame({"ticker": "NOVA", "date": DATES, "adj_close": close})


@pytest.fixture
def scored() -> pd.DataFrame:
    rows = [
        ("news", "2024-03-04", "Nova Systems beats estimates, shares soar", None),
        (None, "2024-03-05", "Nova Systems faces lawsuit after recall", None),
        ("news", "2024-03-06", "Nova Systems holds annual meeting", None),
        ("social", "2024-03-04", "$NOVA is awesome, great buy", "ann"),
        ("social", "2024-03-04", "$NOVA love it", "bob"),
        ("social", "2024-03-05", "$NOVA terrible, awful, sold everything", "cy"),
    ]
    return score_headlines(texts(rows), LEXICON)


def test_a_missing_source_kind_reads_as_news(scored: pd.DataFrame) -> None:
    assert source_kinds(scored).tolist() == ["news"] * 3 + ["social"] * 3
    assert source_kinds(scored.drop(columns="source_kind")).eq("news").all()
    assert len(of_kind(scored, "news")) == 3 and len(of_kind(scored, "social")) == 3
    assert len(of_kind(scored, "all")) == 6
    with pytest.raises(ValueError, match="unknown kind 'tweets'"):
        of_kind(scored, "tweets")


def test_tone_is_shown_for_news_social_and_both(scored: pd.DataFrame) -> None:
    tone = tone_by_kind(scored, rising_prices()).set_index("kind")
    news, social, both = (tone.loc[KIND_LABELS[k]] for k in ("news", "social", "all"))
    compound = scored["compound"]
    assert news["texts"] == 3 and social["texts"] == 3 and both["texts"] == 6
    assert news["mean_compound"] == pytest.approx(compound[:3].mean())
    assert social["mean_compound"] == pytest.approx(compound[3:].mean())
    assert both["mean_compound"] == pytest.approx(compound.mean())
    assert (news["ticker_days"], social["ticker_days"], both["ticker_days"]) == (3, 2, 3)
    assert social["positive_share"] == pytest.approx(2 / 3) and social["negative_share"] == pytest.approx(1 / 3)
    assert news["next_day_correlation"] == pytest.approx(
        np.corrcoef(scored["compound"][:3], [0.01, -0.01, 0.01])[0, 1]  # next sessions: up, down, up
    )
    assert np.isnan(social["next_day_correlation"])  # two ticker-days: too few to measure


def test_no_posts_is_a_row_of_zeros_and_a_sentence_that_says_so(scored: pd.DataFrame) -> None:
    tone = tone_by_kind(of_kind(scored, "news"), rising_prices())
    social = tone.set_index("kind").loc[KIND_LABELS["social"]]
    assert social["texts"] == 0 and np.isnan(social["mean_compound"])
    assert tone_by_kind_sentence(tone).startswith("No social posts in the window")
    sentence = tone_by_kind_sentence(tone_by_kind(scored, rising_prices()))
    assert "3 headlines average" in sentence and "3 social posts" in sentence and "together" in sentence


def test_the_chart_labels_each_kind(scored: pd.DataFrame) -> None:
    fig = tone_by_kind_chart(scored, window=2, min_periods=1)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "news headlines",
        "social posts",
        "news and social together",
    ]
    assert "News and social tone" in ax.get_title()
    plt.close(fig)


def test_a_script_post_is_shown_as_text() -> None:
    hostile = "<script>alert(1)</script> $NOVA is great <img src=x onerror=alert(1)>"
    scored = score_headlines(texts([("social", "2024-03-04", hostile, "<b>mallory</b>")]), LEXICON)
    positive, negative = extreme_posts(scored)
    assert positive["post"].tolist() == [hostile] and negative.empty
    page = BeautifulSoup(headlines_html(positive), "html.parser")
    assert page.find("script") is None and page.find("img") is None and page.find("b") is None
    cells = [td.get_text() for td in page.find_all("td")]
    assert hostile in cells and "<b>mallory</b>" in cells  # the reader sees the literal text
