"""Return-direction models: a causal, stationary dataset from sample market data; estimators
built by dotted path and refused when unfit; metrics equal to sklearn/scipy; walk-forward
evaluation; the shuffled-label refits, the block bootstrap and the majority rate; importances;
predictions."""

from __future__ import annotations

import datetime as dt
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn import metrics as skm
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from bentley.analytics.sentiment import daily_sentiment, score_headlines
from bentley.config import load_config
from bentley.features import compute_features
from bentley.models.prediction import (
    METRIC_NAMES,
    bootstrap_interval,
    build_estimator,
    classification_metrics,
    evaluate_candidate,
    feature_importances,
    feature_names,
    majority_rate,
    metric_value,
    model_frame,
    predict,
    shuffled_label_scores,
    unlabelled_rows,
)
from bentley.models.splits import purged_walk_forward
from bentley.sources.base import FetchRequest
from bentley.sources.sample import SampleMarketSource, SampleNewsSource

SEED, EPOCH, BENCHMARK = 42, dt.date(2015, 1, 2), "BBIX"
TICKERS = ("MEDX", "NOVA", "QBIT")
WINDOW = (dt.date(2019, 1, 2), dt.date(2020, 12, 31))
HORIZON = 5
LOGISTIC = {"class": "sklearn.linear_model.LogisticRegression", "kwargs": {"max_iter": 1000}}
BOOSTED = {
    "class": "sklearn.ensemble.HistGradientBoostingClassifier",
    "kwargs": {"max_iter": 40, "early_stopping": False},
}


# --------------------------------------------------------------------------------------------
# Data


@pytest.fixture(autouse=True, scope="module")
def _one_openmp_thread():
    """The data here is tiny: OpenMP threads (HistGradientBoosting) only add overhead, and on
    a busy machine their spin-waiting made these tests ten times slower."""
    with threadpool_limits(limits=1, user_api="openmp"):
        yield


@pytest.fixture(scope="module")
def settings():
    return load_config("ci").features


@pytest.fixture(scope="module")
def prices() -> pd.DataFrame:
    source = SampleMarketSource(seed=SEED, n_tickers=3, epoch=EPOCH, benchmark=BENCHMARK)
    return source.fetch("prices", FetchRequest(*WINDOW, (*TICKERS, BENCHMARK)))


@pytest.fixture(scope="module")
def sentiment() -> pd.DataFrame:
    """Daily sentiment of the sample news, with n_headlines as objects, as SQL may return it."""
    news = SampleNewsSource(seed=SEED, epoch=EPOCH).fetch("news", FetchRequest(*WINDOW, TICKERS))
    daily = daily_sentiment(score_headlines(news))
    return daily.assign(n_headlines=daily["n_headlines"].astype(object))


@pytest.fixture(scope="module")
def frame(prices, sentiment, settings) -> pd.DataFrame:
    features = compute_features(prices, settings)
    return model_frame(features, prices, sentiment, horizon=HORIZON, exclude=[BENCHMARK])


def _planted(kind: str, n_tickers: int = 40, n_dates: int = 200, n_features: int = 8, seed: int = 0):
    """A model frame of noise features, with fwd_return driven by f0 (linearly, or by |f0|)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_tickers * n_dates, n_features))
    signal = 0.5 * x[:, 0] if kind == "linear" else 0.6 * (np.abs(x[:, 0]) - 0.6745)
    fwd_return = 0.01 * (signal + rng.normal(size=x.shape[0]))
    out = pd.DataFrame(x, columns=[f"f{j}" for j in range(n_features)])
    out.insert(0, "ticker", np.repeat([f"T{i:02d}" for i in range(n_tickers)], n_dates))
    dates = pd.bdate_range("2022-01-03", periods=n_dates).to_numpy().astype("datetime64[s]")
    out.insert(1, "date", np.tile(dates, n_tickers))
    out["fwd_return"] = fwd_return
    out["label"] = (fwd_return > 0).astype(np.float64)
    return out


def _walk_forward(frame: pd.DataFrame):
    labelled = frame.loc[frame["label"].notna(), "date"]
    return purged_walk_forward(
        labelled,
        refit_every_months=1,
        min_folds=3,
        horizon=HORIZON,
        embargo=2,
        holdout_sessions=60,
        min_train_sessions=50,
        max_train_rows=None,
        seed=7,
    )


@pytest.fixture(scope="module")
def linear() -> pd.DataFrame:
    return _planted("linear")


@pytest.fixture(scope="module")
def nonlinear() -> pd.DataFrame:
    return _planted("abs")


# --------------------------------------------------------------------------------------------
# model_frame


def test_model_frame_inputs_are_stationary_float_columns(frame, prices):
    names = feature_names(frame)
    assert list(frame.columns) == ["ticker", "date", *names, "fwd_return", "label"]
    assert names == [
        "sma_10_rel", "sma_20_rel", "sma_50_rel", "sma_200_rel",
        "ema_10_rel", "ema_20_rel", "ema_50_rel", "ema_200_rel", "rsi_14",
        "macd_rel", "macd_signal_rel", "macd_hist_rel", "bb_upper_rel", "bb_middle_rel",
        "bb_lower_rel", "atr_14_rel", "adx_14", "stoch_k", "stoch_d",
        "ret_1d", "ret_5d", "ret_21d", "vol_21d", "vol_63d", "volume_z_21",
        "mean_compound", "positive_share", "negative_share", "n_headlines", "has_news",
    ]  # fmt: skip
    assert (frame[[*names, "fwd_return", "label"]].dtypes == np.float64).all()
    assert sorted(frame["ticker"].unique()) == list(TICKERS)  # the benchmark is excluded
    assert frame.equals(frame.sort_values(["ticker", "date"]).reset_index(drop=True))
    assert not np.isinf(frame[names].to_numpy()).any()


def test_price_levels_are_relative_to_the_adjusted_close(prices, settings, sentiment, frame):
    features = compute_features(prices, settings).set_index(["ticker", "date"])
    row = frame.dropna().iloc[100]
    key = (row["ticker"], row["date"])
    adj_close = prices.set_index(["ticker", "date"]).loc[key, "adj_close"]
    assert row["sma_50_rel"] == pytest.approx(features.loc[key, "sma_50"] / adj_close - 1.0)
    assert row["bb_lower_rel"] == pytest.approx(features.loc[key, "bb_lower"] / adj_close - 1.0)
    assert row["macd_hist_rel"] == pytest.approx(features.loc[key, "macd_hist"] / adj_close)
    assert row["atr_14_rel"] == pytest.approx(features.loc[key, "atr_14"] / adj_close)
    assert row["rsi_14"] == features.loc[key, "rsi_14"]


def test_inputs_do_not_depend_on_a_tickers_price_level(prices, sentiment, settings, frame):
    scaled = prices.copy()
    is_nova = scaled["ticker"] == "NOVA"
    for column in ("open", "high", "low", "close", "adj_close"):
        scaled.loc[is_nova, column] *= 37.0
    again = model_frame(compute_features(scaled, settings), scaled, sentiment, horizon=HORIZON, exclude=[BENCHMARK])
    names = feature_names(frame)
    np.testing.assert_allclose(again[names], frame[names], rtol=1e-7, atol=1e-10)


def test_sentiment_is_merged_and_filled(frame, sentiment):
    merged = frame.merge(
        sentiment.assign(date=sentiment["date"].astype(frame["date"].dtype)),
        on=["ticker", "date"],
        how="left",
        suffixes=("", "_raw"),
        indicator=True,
    )
    with_news = (merged["_merge"] == "both").to_numpy()
    assert 0 < with_news.sum() < len(frame)  # sparse: most days have no headline
    np.testing.assert_array_equal(frame["has_news"], with_news.astype(float))
    np.testing.assert_allclose(
        frame["n_headlines"][with_news], np.log1p(merged["n_headlines_raw"][with_news].astype(float))
    )
    np.testing.assert_allclose(frame["mean_compound"][with_news], merged["mean_compound_raw"][with_news])
    for name in ("mean_compound", "positive_share", "negative_share", "n_headlines", "has_news"):
        assert (frame.loc[~with_news, name] == 0.0).all()


def test_forward_return_and_label_by_hand():
    days = pd.bdate_range("2024-01-01", periods=4).to_numpy().astype("datetime64[s]")
    tickers = np.repeat(["A", "B", "IDX"], 4)
    features = pd.DataFrame({"ticker": tickers, "date": np.tile(days, 3), "rsi_14": 50.0})
    prices = pd.DataFrame(
        {
            "ticker": tickers,
            "date": np.tile(days, 3).astype("datetime64[ns]"),  # another unit than the features
            "adj_close": [10, 11, 12, 9, 5, 5, 5, 6, 100, 100, 100, 100],
        }
    )
    sentiment = pd.DataFrame(
        {
            "ticker": ["B"],
            "date": [days[1]],
            "mean_compound": ["0.5"],
            "n_headlines": [3],
            "positive_share": [1.0],
            "negative_share": [0.0],
        }
    )
    out = model_frame(features.iloc[::-1], prices.iloc[::-1], sentiment, horizon=2, exclude=["IDX"])  # any row order
    assert out["ticker"].tolist() == ["A"] * 4 + ["B"] * 4
    assert out["date"].tolist() == [*days, *days]
    # two rows later within the ticker, never across tickers; a flat return is "not up"
    expected = [12 / 10 - 1, 9 / 11 - 1, np.nan, np.nan, 0.0, 6 / 5 - 1, np.nan, np.nan]
    np.testing.assert_allclose(out["fwd_return"], expected)
    np.testing.assert_array_equal(out["label"], [1, 0, np.nan, np.nan, 0, 1, np.nan, np.nan])
    b = out[out["ticker"] == "B"].reset_index(drop=True)
    np.testing.assert_allclose(b["mean_compound"], [0, 0.5, 0, 0])
    np.testing.assert_allclose(b["n_headlines"], [0, np.log1p(3), 0, 0])
    np.testing.assert_array_equal(b["has_news"], [0, 1, 0, 0])


def test_features_at_t_do_not_change_when_later_prices_change(prices, sentiment, settings, frame):
    """Leakage guard (a): shock every price after T; inputs up to T must be identical."""
    t = np.sort(prices["date"].unique())[300]
    later = prices["date"] > t
    shocked = prices.copy()
    for column in ("open", "high", "low", "close", "adj_close"):
        shocked.loc[later, column] *= 1.5
    shocked.loc[later, "volume"] *= 3
    again = model_frame(compute_features(shocked, settings), shocked, sentiment, horizon=HORIZON, exclude=[BENCHMARK])
    names = feature_names(frame)
    upto = (frame["date"] <= t).to_numpy()
    assert again[["ticker", "date"]].equals(frame[["ticker", "date"]])
    np.testing.assert_array_equal(again.loc[upto, names], frame.loc[upto, names])
    # the shock is real: later inputs move, and so do the labels whose horizon crosses T ...
    assert not np.allclose(again.loc[~upto, "sma_200_rel"], frame.loc[~upto, "sma_200_rel"])
    session = frame.groupby("ticker").cumcount().to_numpy()
    last_session = frame.loc[upto].groupby("ticker")["date"].size()
    crosses = upto & (session + HORIZON > frame["ticker"].map(last_session).to_numpy() - 1)
    assert not np.allclose(again.loc[crosses, "fwd_return"], frame.loc[crosses, "fwd_return"])
    # ... while labels that end on or before T do not
    np.testing.assert_array_equal(again.loc[upto & ~crosses, "label"], frame.loc[upto & ~crosses, "label"])


def test_unlabelled_rows_are_each_tickers_latest(frame):
    rows = unlabelled_rows(frame)
    assert rows["label"].isna().all()
    assert rows.groupby("ticker").size().to_dict() == dict.fromkeys(TICKERS, HORIZON)
    latest = frame.groupby("ticker")["date"].max()
    assert rows.groupby("ticker")["date"].max().equals(latest)
    assert rows.groupby("ticker")["date"].min().gt(frame.dropna(subset=["label"]).groupby("ticker")["date"].max()).all()


# --------------------------------------------------------------------------------------------
# build_estimator


def test_build_estimator_wraps_the_named_classifier():
    pipeline = build_estimator("boosted", BOOSTED, seed=11)
    assert isinstance(pipeline, Pipeline)
    impute, scale, model = (step for _, step in pipeline.steps)
    assert isinstance(impute, SimpleImputer) and impute.strategy == "median"
    assert impute.keep_empty_features
    assert isinstance(scale, StandardScaler)
    assert isinstance(model, HistGradientBoostingClassifier)
    assert model.max_iter == 40 and model.random_state == 11
    pinned = {**BOOSTED, "kwargs": {**BOOSTED["kwargs"], "random_state": 3}}
    assert build_estimator("boosted", pinned, seed=11)[-1].random_state == 3  # kwargs win
    logistic = build_estimator("logistic", LOGISTIC)[-1]
    assert isinstance(logistic, LogisticRegression) and logistic.max_iter == 1000
    assert logistic.random_state is None  # no seed: left as the class default
    svc = {"class": "sklearn.svm.SVC", "kwargs": {"probability": True}}
    assert build_estimator("svc", svc)[-1].probability


@pytest.mark.parametrize(
    ("path", "kwargs", "message"),
    [
        ("sklearn.linear_model.LinearRegression", {}, "not a scikit-learn classifier"),
        ("sklearn.svm.SVC", {}, "not a scikit-learn classifier with predict_proba"),
        ("sklearn.linear_model.NoSuchModel", {}, "not a scikit-learn classifier class"),
        ("nosuch_package.models.Model", {}, "only scikit-learn classes"),
        ("LogisticRegression", {}, "only scikit-learn classes"),
        ("os.path.join", {}, "only scikit-learn classes"),  # params never import arbitrary modules
    ],
)
def test_build_estimator_refuses_what_is_not_a_probabilistic_classifier(path, kwargs, message):
    with pytest.raises(ValueError, match=message) as error:
        build_estimator("candidate", {"class": path, "kwargs": kwargs})
    assert "ml.models.candidate.class" in str(error.value)
    assert path in str(error.value)


def test_build_estimator_names_bad_kwargs():
    with pytest.raises(ValueError, match=r"ml\.models\.logistic\.kwargs.*no_such_option"):
        build_estimator("logistic", {**LOGISTIC, "kwargs": {"no_such_option": 1}})


# --------------------------------------------------------------------------------------------
# Metrics


def test_metrics_equal_sklearn_and_scipy():
    rng = np.random.default_rng(5)
    n = 600
    fwd_return = rng.normal(0.0, 0.02, n)
    proba = np.clip(0.5 + 8 * fwd_return + rng.normal(0.0, 0.15, n), 0.0, 1.0)
    frame = pd.DataFrame(
        {
            "date": np.repeat(pd.bdate_range("2024-01-01", periods=60), 10),
            "proba": proba,
            "fwd_return": fwd_return,
            "label": (fwd_return > 0).astype(float),
        }
    )
    y, predicted = frame["label"].astype(int), (proba >= 0.5).astype(int)
    got = classification_metrics(frame)
    assert list(got) == list(METRIC_NAMES)
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(y, predicted))
    assert got["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, predicted))
    assert got["precision"] == pytest.approx(skm.precision_score(y, predicted))
    assert got["recall"] == pytest.approx(skm.recall_score(y, predicted))
    assert got["roc_auc"] == pytest.approx(skm.roc_auc_score(y, proba))
    assert got["log_loss"] == pytest.approx(skm.log_loss(y, np.clip(proba, 1e-15, 1 - 1e-15)))
    assert np.isfinite(got["log_loss"])  # probabilities of exactly 0 and 1 are clipped
    assert got["ic"] == pytest.approx(stats.pearsonr(proba, fwd_return).statistic)
    assert got["rank_ic"] == pytest.approx(stats.spearmanr(proba, fwd_return).statistic)
    assert got["n"] == n
    assert got["hit_rate"] > 0.8  # a ranking this informative wins on most days


def test_long_short_hit_rate_by_hand():
    frame = pd.DataFrame(
        {
            "date": pd.to_datetime(["2024-01-02"] * 4 + ["2024-01-03"] * 3 + ["2024-01-04"]),
            "proba": [0.9, 0.1, 0.8, 0.2, 0.3, 0.7, 0.5, 0.6],
            "fwd_return": [0.05, 0.0, 0.01, -0.02, 0.02, -0.01, 0.5, 0.1],
        }
    )
    frame["label"] = (frame["fwd_return"] > 0).astype(float)
    # day 1: top {0.9, 0.8} mean 0.03 beats bottom {0.1, 0.2} mean -0.01 (a hit);
    # day 2: top {0.7} -0.01 loses to bottom {0.3} 0.02, the middle row sits out (a miss);
    # day 3 has a single ticker and does not count.
    assert classification_metrics(frame)["hit_rate"] == 0.5


def test_undefined_metrics_are_nan_without_warnings():
    one_class = pd.DataFrame(
        {
            "date": pd.to_datetime(["2024-01-02"] * 3),
            "label": [1.0, 1.0, 1.0],
            "proba": [0.5, 0.5, 0.5],
            "fwd_return": [0.01, 0.02, 0.03],
        }
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = classification_metrics(one_class)
        empty = classification_metrics(one_class.iloc[:0])
    assert got["accuracy"] == 1.0 and got["n"] == 3
    for name in ("balanced_accuracy", "roc_auc", "ic", "rank_ic"):
        assert np.isnan(got[name]), name
    assert all(np.isnan(v) for k, v in empty.items() if k != "n") and empty["n"] == 0


# --------------------------------------------------------------------------------------------
# Walk-forward evaluation and the leakage control


def test_evaluate_candidate_scores_each_fold_and_the_holdout(linear):
    frame = pd.concat(  # unlabelled rows (the latest) must be ignored
        [linear, linear.tail(3).assign(date=np.datetime64("2030-01-02", "s"), label=np.nan)],
        ignore_index=True,
    )
    wf = _walk_forward(frame)
    names = feature_names(frame)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = evaluate_candidate(frame, names, "logistic", LOGISTIC, wf, seed=7)
    assert result.name == "logistic" and result.spec == LOGISTIC
    assert list(result.fold_metrics.columns) == ["split", *METRIC_NAMES]
    assert result.fold_metrics["split"].tolist() == [fold.name for fold in wf.folds]
    for fold, row in zip(wf.folds, result.fold_metrics.itertuples(), strict=True):
        assert row.n == frame["date"].isin(fold.test).sum()  # scored on its test dates only
        assert row.roc_auc > 0.6
    # the walk-forward record: every session from the first refit on, each from the refit before it
    labelled_dates = np.sort(linear["date"].unique())
    first = wf.refits[0].test.min()
    assert result.out_of_sample["date"].unique().tolist() == labelled_dates[labelled_dates >= first].tolist()
    for fold, row in zip(wf.folds, result.fold_metrics.to_dict("records"), strict=True):
        rows = result.out_of_sample[result.out_of_sample["date"].isin(fold.test)]
        assert classification_metrics(rows) == {k: row[k] for k in METRIC_NAMES}
    predictions = result.holdout_predictions
    assert list(predictions.columns) == ["ticker", "date", "label", "proba", "fwd_return"]
    assert set(predictions["date"]) == set(wf.holdout.test)
    assert len(predictions) == 40 * 60
    assert result.holdout_metrics == classification_metrics(predictions)
    assert result.holdout_metrics["roc_auc"] > 0.6
    assert result.train_start == pd.Timestamp(wf.holdout.train.min())
    assert result.train_end == pd.Timestamp(wf.holdout.train.max())
    assert list(result.model.feature_names_in_) == names
    np.testing.assert_allclose(
        predictions["proba"], result.model.predict_proba(linear.loc[linear["date"].isin(wf.holdout.test), names])[:, 1]
    )


def test_evaluate_candidate_is_deterministic_for_a_seed(nonlinear):
    wf, names = _walk_forward(nonlinear), feature_names(nonlinear)
    spec = {"class": "sklearn.ensemble.RandomForestClassifier", "kwargs": {"n_estimators": 5, "max_depth": 4}}
    first = evaluate_candidate(nonlinear, names, "forest", spec, wf, seed=3)
    second = evaluate_candidate(nonlinear, names, "forest", spec, wf, seed=3)
    other = evaluate_candidate(nonlinear, names, "forest", spec, wf, seed=4)
    pd.testing.assert_frame_equal(first.fold_metrics, second.fold_metrics)
    assert first.holdout_predictions["proba"].equals(second.holdout_predictions["proba"])
    assert not first.holdout_predictions["proba"].equals(other.holdout_predictions["proba"])


def test_shuffled_labels_score_chance_while_real_labels_do_not(nonlinear):
    """Leakage guard (b): the same model on permuted training labels has holdout AUC ~0.5."""
    wf, names = _walk_forward(nonlinear), feature_names(nonlinear)
    real = evaluate_candidate(nonlinear, names, "boosted", BOOSTED, wf, seed=7)
    assert real.holdout_metrics["n"] >= 2000
    assert real.holdout_metrics["roc_auc"] > 0.58
    boosted = build_estimator("boosted", BOOSTED, seed=7)
    control = shuffled_label_scores(nonlinear, names, boosted, wf.holdout, "roc_auc", permutations=4, seed=7)
    assert control.shape == (4,) and abs(control.mean() - 0.5) < 0.03
    assert real.holdout_metrics["roc_auc"] - control.max() > 0.05
    logistic = build_estimator("logistic", LOGISTIC, seed=7)
    again = shuffled_label_scores(nonlinear, names, logistic, wf.holdout, "roc_auc", permutations=4, seed=7)
    assert abs(again.mean() - 0.5) < 0.03
    np.testing.assert_array_equal(  # seeded
        again, shuffled_label_scores(nonlinear, names, logistic, wf.holdout, "roc_auc", permutations=4, seed=7)
    )


def _scored(n_sessions: int, per_session: int, right: np.ndarray, seed: int = 0) -> pd.DataFrame:
    """Scored rows: on session d every row is predicted right when right[d], else wrong."""
    rng = np.random.default_rng(seed)
    dates = np.repeat(pd.bdate_range("2024-01-01", periods=n_sessions).to_numpy(), per_session)
    label = rng.integers(0, 2, dates.size).astype(float)
    hit = np.repeat(right, per_session)
    proba = np.where(hit, label, 1 - label) * 0.5 + 0.25 + rng.uniform(-0.2, 0.2, dates.size)
    return pd.DataFrame({"date": dates, "label": label, "proba": proba, "fwd_return": label - 0.5})


def test_the_bootstrap_interval_on_known_cases():
    perfect = _scored(50, 4, np.ones(50, dtype=bool))
    assert bootstrap_interval(perfect, "roc_auc", block_sessions=5, resamples=200, confidence=0.9, seed=1) == (
        pytest.approx(1.0),
        pytest.approx(1.0),
    )
    mixed = _scored(100, 10, np.arange(100) % 2 == 0)  # half the sessions right, half wrong: accuracy 0.5
    low, high = bootstrap_interval(mixed, "accuracy", block_sessions=1, resamples=500, confidence=0.9, seed=1)
    assert low < 0.5 < high
    # Sessions are the unit: 100 of them with sd sqrt(.25 / 100) = 0.05 give about ±0.08, where
    # 1000 independent rows would give ±0.026.
    assert 0.12 < high - low < 0.2
    wider = bootstrap_interval(mixed, "accuracy", block_sessions=10, resamples=500, confidence=0.9, seed=1)
    assert wider == bootstrap_interval(mixed, "accuracy", block_sessions=10, resamples=500, confidence=0.9, seed=1)
    assert wider[1] - wider[0] < high - low  # ten-session blocks alternate right/wrong: less spread
    assert np.isnan(
        bootstrap_interval(mixed.head(30), "accuracy", block_sessions=5, resamples=50, confidence=0.9, seed=1)
    ).all()  # three sessions: one block, nothing to resample


@pytest.mark.parametrize("seed", range(6))
def test_the_auc_interval_equals_sklearns_auc_on_every_drawn_resample(seed: int) -> None:
    """The vectorized AUC bootstrap gives the interval of sklearn's roc_auc_score computed on each
    resample scipy draws (ties in the scores, one-class resamples and uneven blocks included)."""
    rng = np.random.default_rng(seed)
    sessions, per_session, block = int(rng.integers(8, 60)), int(rng.integers(1, 9)), int(rng.integers(1, 6))
    dates = np.repeat(pd.bdate_range("2024-01-01", periods=sessions), per_session)
    frame = pd.DataFrame(
        {
            "date": dates,
            "proba": np.round(rng.random(dates.size), int(rng.integers(1, 4))),  # rounded: many ties
            "label": (rng.random(dates.size) < rng.uniform(0.2, 0.8)).astype(float),
            "fwd_return": rng.normal(size=dates.size),
        }
    )
    blocks = pd.factorize(frame["date"], sort=True)[0] // block
    members = [np.flatnonzero(blocks == b) for b in range(blocks.max() + 1)]

    def sklearn_auc(chosen: np.ndarray) -> float:
        rows = frame.iloc[np.concatenate([members[int(b)] for b in chosen])]
        return skm.roc_auc_score(rows["label"], rows["proba"]) if rows["label"].nunique() == 2 else np.nan

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        expected = stats.bootstrap(
            (np.arange(len(members)),),
            sklearn_auc,
            n_resamples=200,
            confidence_level=0.9,
            method="percentile",
            vectorized=False,
            rng=np.random.default_rng(seed),
        ).confidence_interval
    got = bootstrap_interval(frame, "roc_auc", block_sessions=block, resamples=200, confidence=0.9, seed=seed)
    np.testing.assert_allclose(got, (expected.low, expected.high), rtol=0, atol=1e-12)


def test_majority_rate_and_metric_value():
    assert majority_rate(np.array([1.0, 1.0, 0.0])) == (pytest.approx(2 / 3), True)
    assert majority_rate(pd.Series([0.0, 0.0, 1.0, np.nan])) == (pytest.approx(2 / 3), False)
    assert np.isnan(majority_rate(np.array([]))[0])
    frame = _scored(20, 3, np.arange(20) < 15)
    assert metric_value(frame, "accuracy") == classification_metrics(frame)["accuracy"] == 0.75


# --------------------------------------------------------------------------------------------
# Importances and predictions


def _holdout(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["date"].isin(_walk_forward(frame).holdout.test)]


def test_logistic_importances_are_absolute_standardized_coefficients(linear):
    wf, names = _walk_forward(linear), feature_names(linear)
    model = evaluate_candidate(linear, names, "logistic", LOGISTIC, wf, seed=7).model
    holdout = _holdout(linear)
    table = feature_importances(model, holdout[names], holdout["label"], seed=1, n_repeats=2, max_rows=500)
    assert list(table.columns) == ["feature", "importance", "std", "method"]
    assert (table["method"] == "abs_coefficient").all() and table["std"].isna().all()
    assert table["feature"].iloc[0] == "f0"  # the planted signal
    coefficients = dict(zip(names, np.abs(model[-1].coef_[0]), strict=True))
    assert table.set_index("feature")["importance"].to_dict() == pytest.approx(coefficients)
    assert table["importance"].is_monotonic_decreasing


def test_boosted_importances_are_permutation_auc_drops(nonlinear):
    wf, names = _walk_forward(nonlinear), feature_names(nonlinear)
    model = evaluate_candidate(nonlinear, names, "boosted", BOOSTED, wf, seed=7).model
    holdout = _holdout(nonlinear)
    x, y = holdout[names], holdout["label"]
    table = feature_importances(model, x, y, seed=1, n_repeats=3, max_rows=1000)
    assert (table["method"] == "permutation_auc").all()
    assert sorted(table["feature"]) == sorted(names)
    assert table["feature"].iloc[0] == "f0" and table["importance"].iloc[0] > 0.05
    assert table["std"].notna().all() and table["importance"].is_monotonic_decreasing
    again = feature_importances(model, x, y, seed=1, n_repeats=3, max_rows=1000)
    pd.testing.assert_frame_equal(table, again)  # the row sample is seeded
    other = feature_importances(model, x, y, seed=2, n_repeats=3, max_rows=1000)
    assert not table.set_index("feature")["importance"].equals(other.set_index("feature")["importance"])


def test_permutation_importances_are_sklearns_numbers(nonlinear):
    """The batched scoring gives what `sklearn.inspection.permutation_importance` gives: the same
    shuffles, the same AUC drops, so a table does not depend on how it was computed."""
    from sklearn.inspection import permutation_importance

    wf, names = _walk_forward(nonlinear), feature_names(nonlinear)
    model = evaluate_candidate(nonlinear, names, "boosted", BOOSTED, wf, seed=7).model
    holdout = _holdout(nonlinear)
    x, y = holdout[names], holdout["label"].to_numpy()
    table = feature_importances(model, x, y, seed=3, n_repeats=4, max_rows=len(x)).set_index("feature")
    theirs = permutation_importance(model, x, y, scoring="roc_auc", n_repeats=4, random_state=3)
    np.testing.assert_allclose(table.loc[names, "importance"], theirs.importances_mean, atol=1e-12)
    np.testing.assert_allclose(table.loc[names, "std"], theirs.importances_std, atol=1e-12)


def test_predict_gives_probability_and_direction(linear):
    wf, names = _walk_forward(linear), feature_names(linear)
    model = evaluate_candidate(linear, names, "logistic", LOGISTIC, wf, seed=7).model
    rows = linear.tail(50)
    out = predict(model, rows, names)
    assert list(out.columns) == ["ticker", "date", "proba_up", "predicted_up"]
    np.testing.assert_allclose(out["proba_up"], model.predict_proba(rows[names])[:, 1])
    np.testing.assert_array_equal(out["predicted_up"], out["proba_up"] >= 0.5)
    assert out["predicted_up"].dtype == bool


def test_the_sample_pipeline_trains_and_predicts_end_to_end(frame):
    names = feature_names(frame)
    labelled = frame.loc[frame["label"].notna(), "date"]
    wf = purged_walk_forward(
        labelled,
        refit_every_months=1,
        min_folds=3,
        horizon=HORIZON,
        embargo=2,
        holdout_sessions=60,
        min_train_sessions=120,
        max_train_rows=None,
        seed=7,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = evaluate_candidate(frame, names, "boosted", BOOSTED, wf, seed=7)
        latest = predict(result.model, unlabelled_rows(frame), names)
    assert len(result.fold_metrics) == len(wf.folds) >= 3 and result.holdout_metrics["n"] == 60 * len(TICKERS)
    assert len(latest) == HORIZON * len(TICKERS) and latest["proba_up"].between(0, 1).all()


def test_the_fitted_model_equals_a_plain_pipeline_fit(linear):
    """The imputer is fitted from np.nanmedian for speed: same state as Pipeline.fit."""
    wf, names = _walk_forward(linear), feature_names(linear)
    holey = linear.copy()
    holey.loc[holey.index % 7 == 0, "f1"] = np.nan  # missing values to impute
    holey.loc[holey["date"] <= wf.holdout.train.max(), "f2"] = np.nan  # never seen in training
    ours = evaluate_candidate(holey, names, "logistic", LOGISTIC, wf, seed=7)
    train = holey[holey["date"].isin(wf.holdout.train)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "Skipping features without any observed values"
        reference = build_estimator("logistic", LOGISTIC, seed=7).fit(train[names], train["label"])
    # the same medians, up to how the two middle values of an even count are averaged
    np.testing.assert_allclose(ours.model[0].statistics_, reference[0].statistics_, rtol=1e-12)
    assert ours.model[0].statistics_[names.index("f2")] == 0.0
    np.testing.assert_allclose(ours.model[1].scale_, reference[1].scale_, rtol=1e-12)
    test = holey[holey["date"].isin(wf.holdout.test)]
    np.testing.assert_allclose(ours.holdout_predictions["proba"], reference.predict_proba(test[names])[:, 1], rtol=1e-9)
