"""The embedded sample sources: contracts, determinism and the realism the stages rely on."""

from __future__ import annotations

import datetime as dt
import zlib

import numpy as np
import pandas as pd
import pytest

from bentley import schemas
from bentley.calendar import sessions
from bentley.sources import sample
from bentley.sources.base import FetchRequest
from bentley.sources.sample import (
    COMPANY_NAMES,
    HEADLINE_TEMPLATES,
    SECTORS,
    SampleMarketSource,
    SampleNewsSource,
    SamplePortfolioSource,
    headline_tone,
)

SEED = 7
EPOCH = dt.date(2010, 1, 4)
BENCHMARK = "BBIX"
DEFAULT = tuple(COMPANY_NAMES)  # the eight built-in tickers
PRICE_FIELDS = ["open", "high", "low", "close", "volume", "dividend", "split_ratio"]


def market(seed: int = SEED, n_tickers: int = 50) -> SampleMarketSource:
    """50 names: X0009..X0050 are known too, the names whose traits come from their hash."""
    return SampleMarketSource(seed=seed, n_tickers=n_tickers, epoch=EPOCH, benchmark=BENCHMARK)


def prices(
    start: str,
    end: str,
    tickers: tuple[str, ...] = DEFAULT,
    source: SampleMarketSource | None = None,
) -> pd.DataFrame:
    request = FetchRequest(dt.date.fromisoformat(start), dt.date.fromisoformat(end), tickers)
    return (source or market()).fetch("prices", request)


def one(frame: pd.DataFrame, ticker: str) -> pd.DataFrame:
    return frame[frame["ticker"] == ticker].set_index("date")


def assert_contract(frame: pd.DataFrame, contract: schemas.TableContract) -> None:
    assert list(frame.columns) == contract.column_names
    for name, kind in contract.columns.items():
        dtype = frame[name].dtype
        if kind == "str":
            assert pd.api.types.is_object_dtype(dtype) or pd.api.types.is_string_dtype(dtype), (
                name,
                dtype,
            )
        elif kind == "date":
            assert pd.api.types.is_datetime64_dtype(dtype) and getattr(dtype, "tz", None) is None, (
                name,
                dtype,
            )
            assert (frame[name] == frame[name].dt.normalize()).all()
        elif kind == "timestamp":
            assert isinstance(dtype, pd.DatetimeTZDtype) and str(dtype.tz) == "UTC", (name, dtype)
        elif kind == "float":
            assert dtype == np.float64, (name, dtype)
        else:
            assert dtype == np.int64, (name, dtype)


# --------------------------------------------------------------------------- contracts


def test_prices_contract() -> None:
    assert_contract(prices("2020-01-01", "2020-03-31", (*DEFAULT, BENCHMARK)), schemas.PRICES)


def test_news_contract() -> None:
    news = SampleNewsSource(SEED, EPOCH).fetch("news", FetchRequest(dt.date(2020, 1, 1), dt.date(2020, 3, 31), DEFAULT))
    assert len(news) > 0
    assert_contract(news, schemas.NEWS)


def test_transactions_contract() -> None:
    ledger = SamplePortfolioSource(SEED, EPOCH).fetch(
        "transactions", FetchRequest(dt.date(2020, 1, 1), dt.date(2020, 3, 31))
    )
    assert len(ledger) > 0
    assert_contract(ledger, schemas.TRANSACTIONS)


def test_holdings_contract() -> None:
    request = FetchRequest(dt.date(2020, 1, 1), dt.date(2020, 3, 31), DEFAULT, as_of=dt.date(2020, 3, 31))
    holdings = SamplePortfolioSource(SEED, EPOCH).fetch("holdings", request)
    assert len(holdings) > 0
    assert_contract(holdings, schemas.HOLDINGS)


@pytest.mark.parametrize("tickers", [(), ("NOVA",)])
def test_empty_results_keep_the_contract(tickers: tuple[str, ...]) -> None:
    weekend = FetchRequest(dt.date(2020, 1, 4), dt.date(2020, 1, 5), tickers)
    assert_contract(market().fetch("prices", weekend), schemas.PRICES)
    assert_contract(SampleNewsSource(SEED, EPOCH).fetch("news", weekend), schemas.NEWS)


def test_an_epoch_on_a_weekend_has_no_rows_until_the_first_session() -> None:
    saturday = dt.date(2010, 1, 2)
    source = SampleMarketSource(SEED, 8, saturday, BENCHMARK)
    assert source.fetch("prices", FetchRequest(saturday, saturday, ("NOVA", BENCHMARK))).empty
    first = source.fetch("prices", FetchRequest(saturday, dt.date(2010, 1, 4), ("NOVA",)))
    assert list(first["date"]) == [pd.Timestamp("2010-01-04")]


def test_sources_are_flagged_synthetic() -> None:
    for source in (market(), SampleNewsSource(SEED, EPOCH), SamplePortfolioSource(SEED, EPOCH)):
        assert source.name == "sample" and source.synthetic


def test_unsupported_dataset_raises() -> None:
    request = FetchRequest(dt.date(2020, 1, 1), dt.date(2020, 1, 31), DEFAULT)
    with pytest.raises(ValueError, match="no dataset"):
        market().fetch("news", request)
    with pytest.raises(ValueError, match="no dataset"):
        SampleNewsSource(SEED, EPOCH).fetch("prices", request)
    with pytest.raises(ValueError, match="no dataset"):
        SamplePortfolioSource(SEED, EPOCH).fetch("prices", request)


def test_windows_before_the_epoch_raise() -> None:
    early = FetchRequest(dt.date(2009, 12, 1), dt.date(2010, 3, 1), DEFAULT, as_of=dt.date(2009, 12, 31))
    with pytest.raises(ValueError, match="epoch"):
        market().fetch("prices", early)
    with pytest.raises(ValueError, match="epoch"):
        SampleNewsSource(SEED, EPOCH).fetch("news", early)
    with pytest.raises(ValueError, match="epoch"):
        SamplePortfolioSource(SEED, EPOCH).fetch("transactions", early)
    with pytest.raises(ValueError, match="epoch"):
        SamplePortfolioSource(SEED, EPOCH).fetch("holdings", early)


# --------------------------------------------------------------------------- universe


def test_available_tickers() -> None:
    tickers = market(n_tickers=12).available_tickers()
    assert tickers == [*DEFAULT, "X0009", "X0010", "X0011", "X0012"]
    assert DEFAULT == ("NOVA", "QBIT", "MEDX", "CURA", "PTRL", "SOLR", "BANQ", "LEDG")
    assert market(n_tickers=3).available_tickers() == ["NOVA", "QBIT", "MEDX"]
    clash = SampleMarketSource(SEED, 10, EPOCH, benchmark="X0009").available_tickers()
    assert "X0009" not in clash and len(clash) == 10


def test_known_tickers_cover_every_builtin_name_and_the_benchmark() -> None:
    small = SampleMarketSource(SEED, 3, EPOCH, benchmark="SPY")
    assert small.known_tickers() == [*DEFAULT, "SPY"]
    frame = small.fetch("prices", FetchRequest(EPOCH, dt.date(2010, 3, 31), ("CURA", "SPY")))
    assert set(frame["ticker"]) == {"CURA", "SPY"}
    assert one(frame, "SPY")["close"].iloc[0] == 1000.0  # the benchmark is the index, whatever its name
    assert market(n_tickers=12).known_tickers() == [*DEFAULT, "X0009", "X0010", "X0011", "X0012", BENCHMARK]


def test_fetch_refuses_unknown_tickers_with_the_closest_names() -> None:
    request = FetchRequest(dt.date(2021, 1, 4), dt.date(2021, 1, 29), ("NOVA", "NOVAA"))
    with pytest.raises(ValueError) as refused:
        market(n_tickers=12).fetch("prices", request)
    assert str(refused.value) == (
        "NOVAA is not a sample ticker (did you mean NOVA?); sample tickers: NOVA, QBIT, MEDX, CURA, "
        "PTRL, SOLR, BANQ, LEDG, X0009..X0012 and the benchmark BBIX"
    )
    several = FetchRequest(dt.date(2021, 1, 4), dt.date(2021, 1, 29), ("APPL", "X0051", "NOVA"))
    with pytest.raises(ValueError, match=r"^APPL, X0051 \(did you mean X0050 or .*\) are not sample tickers; "):
        market().fetch("prices", several)


def test_names_and_sectors() -> None:
    assert sample.company_name("NOVA") == "Nova Systems"
    assert [sample.sector_of(t) for t in DEFAULT] == [
        "tech",
        "tech",
        "health",
        "health",
        "energy",
        "energy",
        "finance",
        "finance",
    ]
    # Unknown names: the sector comes from a CRC-32 (stable across processes), not hash().
    for name in ("X0042", "ACME", "zz-9"):
        assert sample.sector_of(name) == SECTORS[zlib.crc32(name.encode()) % len(SECTORS)]
        assert sample.company_name(name).startswith(f"{name} ")


# --------------------------------------------------------------------------- determinism


def test_fetches_are_deterministic() -> None:
    request = FetchRequest(
        dt.date(2021, 1, 1),
        dt.date(2021, 6, 30),
        (*DEFAULT, "X0042", BENCHMARK),
        as_of=dt.date(2021, 6, 30),
    )
    pd.testing.assert_frame_equal(market().fetch("prices", request), market().fetch("prices", request))
    pd.testing.assert_frame_equal(
        SampleNewsSource(SEED, EPOCH).fetch("news", request),
        SampleNewsSource(SEED, EPOCH).fetch("news", request),
    )
    for dataset in ("transactions", "holdings"):
        pd.testing.assert_frame_equal(
            SamplePortfolioSource(SEED, EPOCH).fetch(dataset, request),
            SamplePortfolioSource(SEED, EPOCH).fetch(dataset, request),
        )


def test_seed_changes_the_data() -> None:
    a = prices("2021-01-01", "2021-03-31", ("NOVA",), market(seed=1))
    b = prices("2021-01-01", "2021-03-31", ("NOVA",), market(seed=2))
    assert not np.allclose(a["close"].to_numpy(), b["close"].to_numpy())


def test_a_tickers_series_ignores_the_other_tickers() -> None:
    alone = one(prices("2018-01-01", "2019-12-31", ("MEDX",)), "MEDX")
    crowd = prices("2018-01-01", "2019-12-31", (*DEFAULT, "X0042", "X0043", "X0049", BENCHMARK))
    pd.testing.assert_frame_equal(alone, one(crowd, "MEDX"))
    generated_alone = one(prices("2018-01-01", "2019-12-31", ("X0049",)), "X0049")
    pd.testing.assert_frame_equal(generated_alone, one(crowd, "X0049"))


def test_prices_do_not_depend_on_the_window() -> None:
    end = sessions("2019-01-01", "2019-06-28")[-1]
    later_end = sessions(end, "2020-12-31")[60]  # 60 sessions further
    short = prices("2018-01-01", end.date().isoformat(), (*DEFAULT, BENCHMARK))
    long = prices("2018-01-01", later_end.date().isoformat(), (*DEFAULT, BENCHMARK))
    late_start = prices("2019-03-01", end.date().isoformat(), (*DEFAULT, BENCHMARK))
    long = long[long["date"] <= end].reset_index(drop=True)
    pd.testing.assert_frame_equal(short[PRICE_FIELDS], long[PRICE_FIELDS])
    recent = short[short["date"] >= "2019-03-01"].reset_index(drop=True)
    pd.testing.assert_frame_equal(recent[PRICE_FIELDS], late_start[PRICE_FIELDS])
    # adj_close is back-adjusted up to the fetch end: per ticker it differs by one constant factor.
    ratio = (short["adj_close"] / long["adj_close"]).groupby(short["ticker"])
    assert (ratio.max() / ratio.min() - 1).abs().max() < 1e-9


def test_sessions_match_the_calendar() -> None:
    frame = prices("2019-12-20", "2021-01-10", (*DEFAULT, "X0042", BENCHMARK))
    expected = sessions("2019-12-20", "2021-01-10")
    assert len(frame) == 10 * len(expected)
    assert not frame.duplicated(["ticker", "date"]).any()
    for _, group in frame.groupby("ticker"):
        assert pd.DatetimeIndex(group["date"]).equals(pd.DatetimeIndex(expected, name="date"))
    assert list(frame["ticker"].unique()) == sorted((*DEFAULT, "X0042", BENCHMARK))


def test_benchmark_only_when_requested() -> None:
    without = prices("2020-01-01", "2020-01-31")
    assert BENCHMARK not in set(without["ticker"])
    index = one(prices(EPOCH.isoformat(), "2012-12-31", (BENCHMARK,)), BENCHMARK)
    assert index["close"].iloc[0] == 1000.0
    assert (index["dividend"] == 0).all() and (index["split_ratio"] == 1).all()
    assert (index["adj_close"] == index["close"]).all()
    assert index["volume"].min() > 1e8


# --------------------------------------------------------------------------- realism


def test_ohlc_is_consistent() -> None:
    frame = prices("2010-01-04", "2019-12-31", (*DEFAULT, "X0042", "X0043", "X0049", BENCHMARK))
    assert (frame["high"] >= frame[["open", "close"]].max(axis=1)).all()
    assert (frame["low"] <= frame[["open", "close"]].min(axis=1)).all()
    assert (frame[["open", "high", "low", "close", "adj_close"]] > 0).all().all()
    assert (frame["volume"] >= 0).all() and (frame["dividend"] >= 0).all() and (frame["split_ratio"] > 0).all()


def test_magnitudes_are_realistic() -> None:
    frame = prices("2010-01-04", "2019-12-31", (*DEFAULT, BENCHMARK))
    log_returns = np.log(frame["adj_close"]).groupby(frame["ticker"]).diff()
    vol = log_returns.groupby(frame["ticker"]).std() * np.sqrt(252)
    assert vol.between(0.10, 0.50).all(), vol
    first_close = frame.groupby("ticker")["close"].first().drop(BENCHMARK)
    assert first_close.between(20, 300).all(), first_close
    # Opens sit near the previous close on ordinary days.
    ordinary = (frame["split_ratio"] == 1) & (frame["dividend"] == 0)
    gap = (frame["open"] / frame.groupby("ticker")["close"].shift()).where(ordinary) - 1
    assert gap.abs().median() < 0.01


def test_volume_is_higher_on_big_moves() -> None:
    frame = prices("2010-01-04", "2019-12-31")
    move = np.log(frame["adj_close"]).groupby(frame["ticker"]).diff().abs()
    big = move > move.groupby(frame["ticker"]).transform(lambda s: s.quantile(0.9))
    turnover = frame["volume"] / frame.groupby("ticker")["volume"].transform("median")
    assert turnover[big].median() > 1.2 * turnover[~big].median()


def test_every_150_sessions_of_the_default_universe_hold_a_split() -> None:
    frame = prices("2010-01-04", "2016-12-30")
    days = pd.DatetimeIndex(frame["date"].unique())
    split_rows = days.get_indexer(pd.DatetimeIndex(frame.loc[frame["split_ratio"] != 1, "date"].unique()).sort_values())
    gaps = np.diff(np.concatenate([[-1], split_rows, [len(days)]]))
    assert gaps.max() <= 150
    assert set(frame.loc[frame["split_ratio"] != 1, "split_ratio"]) <= {1.5, 2.0, 3.0}


def test_split_days_show_in_raw_not_in_adjusted_returns() -> None:
    frame = prices("2023-01-01", "2023-12-31")
    frame["raw"] = frame.groupby("ticker")["close"].pct_change()
    frame["adjusted"] = frame.groupby("ticker")["adj_close"].pct_change()
    splits = frame[frame["split_ratio"] != 1]
    assert len(splits) >= 1
    for _, row in splits.iterrows():
        assert row["raw"] == pytest.approx(1 / row["split_ratio"] - 1, abs=0.15)  # -33 %, -50 % or -67 %
        assert abs(row["adjusted"]) < 0.2


def test_dividends_are_quarterly_and_plausible() -> None:
    frame = prices("2015-01-01", "2019-12-31")
    paid = frame[frame["dividend"] > 0]
    payers = set(paid["ticker"])
    assert {"CURA", "PTRL", "BANQ", "LEDG"} <= payers and "NOVA" not in payers
    per_year = paid.groupby(["ticker", paid["date"].dt.year]).size()
    assert per_year.between(3, 5).all()
    annual_yield = (paid["dividend"] / paid["close"]).groupby(paid["ticker"]).mean() * 4
    assert annual_yield.between(0.005, 0.04).all(), annual_yield
    assert not ((frame["dividend"] > 0) & (frame["split_ratio"] != 1)).any()


def test_adj_close_follows_the_yahoo_convention() -> None:
    frame = prices("2016-01-01", "2019-12-31")
    for _, group in frame.groupby("ticker"):
        close, dividend, ratio = (group[c].to_numpy() for c in ("close", "dividend", "split_ratio"))
        factor, expected = 1.0, np.empty_like(close)
        for t in range(len(close) - 1, -1, -1):
            expected[t] = close[t] * factor
            factor *= (1 - dividend[t] / close[t - 1]) / ratio[t] if t > 0 else 1.0
        np.testing.assert_allclose(group["adj_close"].to_numpy(), expected, rtol=1e-10)
        assert group["adj_close"].iloc[-1] == group["close"].iloc[-1]


def test_adj_close_equals_close_on_the_last_date() -> None:
    frame = prices("2010-01-04", "2024-06-28", (*DEFAULT, "X0042", BENCHMARK))
    last = frame.groupby("ticker").tail(1)
    assert (last["adj_close"] == last["close"]).all()


def test_fifty_tickers_over_ten_years() -> None:
    source = market(n_tickers=50)
    frame = prices("2014-01-01", "2023-12-29", tuple(source.available_tickers()), source)
    assert frame["ticker"].nunique() == 50
    assert len(frame) == 50 * len(sessions("2014-01-01", "2023-12-29"))


# --------------------------------------------------------------------------- news


def test_every_template_maps_back_to_its_tone() -> None:
    for tone, templates in HEADLINE_TEMPLATES.items():
        assert len(templates) >= 10
        for template in templates:
            headline = template.format(company="Nova Systems", driver="cloud revenue")
            assert headline_tone(headline) == tone, headline
    with pytest.raises(ValueError):
        headline_tone("Completely unrelated text")


def test_news_shape() -> None:
    start, end = dt.date(2020, 1, 1), dt.date(2020, 12, 31)
    news = SampleNewsSource(SEED, EPOCH).fetch("news", FetchRequest(start, end, DEFAULT))
    n_sessions = len(sessions(start, end))
    assert 0.3 < len(news) / (8 * n_sessions) < 0.55
    assert news["news_id"].is_unique
    assert news["date"].isin(sessions(start, end)).all()
    assert set(news["ticker"]) == set(DEFAULT)
    hours = (news["published_at"].dt.tz_convert(None) - news["date"]) / pd.Timedelta(hours=1)
    assert hours.between(12, 20).all()
    assert (news["url"] == "https://news.example/sample/" + news["news_id"]).all()
    nova = news[news["ticker"] == "NOVA"]
    assert nova["headline"].str.contains("Nova Systems").all()
    assert news["headline"].map(headline_tone).isin([-1, 0, 1]).all()
    assert news["publisher"].nunique() > 1


def test_news_does_not_depend_on_the_window_or_other_tickers() -> None:
    source = SampleNewsSource(SEED, EPOCH)
    year = source.fetch("news", FetchRequest(dt.date(2020, 1, 1), dt.date(2020, 12, 31), DEFAULT))
    march = source.fetch("news", FetchRequest(dt.date(2020, 3, 1), dt.date(2020, 3, 31), ("CURA",)))
    expected = year[(year["ticker"] == "CURA") & (year["date"].dt.month == 3)].reset_index(drop=True)
    pd.testing.assert_frame_equal(march, expected)


def test_news_tone_anticipates_the_next_return() -> None:
    start, end = dt.date(2015, 1, 1), dt.date(2019, 12, 31)
    news = SampleNewsSource(SEED, EPOCH).fetch("news", FetchRequest(start, end, DEFAULT))
    bars = prices("2015-01-01", "2020-01-10")
    bars["next_return"] = bars.groupby("ticker")["adj_close"].shift(-1) / bars["adj_close"] - 1
    merged = news.merge(bars[["ticker", "date", "next_return"]], on=["ticker", "date"])
    assert len(merged) == len(news)
    correlation = np.corrcoef(merged["headline"].map(headline_tone), merged["next_return"])[0, 1]
    assert 0.05 < correlation < 0.3


# --------------------------------------------------------------------------- household ledger


def ledger(start: str, end: str) -> pd.DataFrame:
    request = FetchRequest(dt.date.fromisoformat(start), dt.date.fromisoformat(end))
    return SamplePortfolioSource(SEED, EPOCH).fetch("transactions", request)


def test_transactions_look_like_a_household() -> None:
    rows = ledger("2022-01-01", "2022-12-31")
    categories = set(rows["category"].dropna())
    assert {
        "income",
        "housing",
        "groceries",
        "utilities",
        "dining",
        "subscriptions",
        "transfer",
    } <= categories
    assert set(rows["account"]) == {"checking", "credit_card", "savings"}
    assert rows["date"].between("2022-01-01", "2022-12-31").all()
    assert rows["txn_id"].is_unique
    assert (rows["amount"].round(2) == rows["amount"]).all()
    income = rows[rows["category"] == "income"]
    assert len(income) == 24 and (income["amount"] > 0).all() and (income["account"] == "checking").all()
    rent = rows[rows["category"] == "housing"]
    assert (rent["date"].dt.day == 1).all() and (rent["amount"] < 0).all()
    assert rows["description"].str.contains("WHOLEFDS|TRADER JOE|SAFEWAY|KROGER").any()
    missing = rows["category"].isna()
    assert 0.03 < missing[rows["category"] != "income"].mean() < 0.2
    assert not (missing & (rows["amount"] > 0) & (rows["account"] == "checking")).any()


def test_the_card_is_paid_off_every_month() -> None:
    rows = ledger("2022-01-01", "2022-06-30")
    card = rows[rows["account"] == "credit_card"]
    assert card.groupby(card["date"].dt.month)["amount"].sum().abs().max() < 0.005
    assert (rows[rows["description"] == "CHASE CREDIT CRD AUTOPAY"]["category"] == "transfer").all()


def test_a_month_does_not_depend_on_the_window() -> None:
    quarter = ledger("2022-01-01", "2022-03-31")
    february = ledger("2022-02-01", "2022-02-28")
    expected = quarter[quarter["date"].dt.month == 2].reset_index(drop=True)
    pd.testing.assert_frame_equal(february, expected)
    partial = ledger("2022-02-10", "2022-02-20")
    assert set(partial["txn_id"]) <= set(february["txn_id"]) and len(partial) > 0


# --------------------------------------------------------------------------- holdings


def holdings(tickers: tuple[str, ...], as_of: dt.date) -> pd.DataFrame:
    request = FetchRequest(as_of, as_of, tickers, as_of=as_of)
    return SamplePortfolioSource(SEED, EPOCH).fetch("holdings", request)


def test_holdings_follow_the_requested_tickers() -> None:
    tickers = ("NOVA", "BANQ", "ZZZ", BENCHMARK)  # any name: the universe may come from a csv folder
    snapshot = holdings(tickers, dt.date(2022, 6, 30))
    assert set(snapshot["ticker"]) == set(tickers)
    assert set(snapshot["account"]) <= {"brokerage", "ira"}
    assert (snapshot["as_of"] == pd.Timestamp("2022-06-30")).all()
    assert (snapshot["quantity"] > 0).all() and (snapshot["cost_basis"] > 0).all()
    assert not snapshot.duplicated(["as_of", "account", "ticker"]).any()
    assert holdings((), dt.date(2022, 6, 30)).empty


def test_holdings_are_plausible_and_follow_splits() -> None:
    early, late = holdings(DEFAULT, dt.date(2010, 3, 1)), holdings(DEFAULT, dt.date(2024, 6, 28))
    history = prices(EPOCH.isoformat(), "2024-06-28").groupby("ticker")
    bought_at = history["close"].first().reindex(late["ticker"]).to_numpy()
    splits_since = history["split_ratio"].prod().reindex(late["ticker"]).to_numpy()
    paid_per_original_share = late["cost_basis"] / (late["quantity"] / splits_since)
    assert (paid_per_original_share / bought_at).between(0.75, 1.3).all()
    merged = early.merge(late, on=["account", "ticker"], suffixes=("_early", "_late"))
    assert (merged["cost_basis_early"] == merged["cost_basis_late"]).all()
    assert (merged["quantity_late"] > merged["quantity_early"]).all()  # every default ticker has split since


def test_holdings_need_as_of() -> None:
    with pytest.raises(ValueError, match="as_of"):
        SamplePortfolioSource(SEED, EPOCH).fetch(
            "holdings", FetchRequest(dt.date(2022, 1, 1), dt.date(2022, 1, 31), DEFAULT)
        )
