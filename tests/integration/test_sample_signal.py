"""The sample's planted signal is learnable through the honest gates; without it nothing is.

Issue 16: `make pipeline` on the default profile must promote a champion through the gates
that reject noise, and a sample with the signal switched off (`sample.signal: 0`) must not.
Built from the library as the stages build it: the default profile's eight names over five
years, the feature stage's indicators, the train stage's model frame and calendar-anchored
splits, the default logistic candidate, and the default promotion rules with fewer
shuffled-label refits (39: the smallest p-value is then 1/40 = 0.025, below the 0.05 gate).
"""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest
from threadpoolctl import threadpool_limits

from bentley.config import load_config
from bentley.features import compute_features
from bentley.models import lifecycle, prediction, registry
from bentley.sources.base import FetchRequest
from bentley.sources.sample import SampleMarketSource

LOGICAL_DATE = dt.date(2026, 11, 30)


def _decision(signal: float) -> registry.Decision:
    params = load_config()
    ml = params.ml.model_copy(update={"promotion": params.ml.promotion.model_copy(update={"permutations": 39})})
    source = SampleMarketSource(
        params.sample.seed,
        params.sample.n_tickers,
        params.sample.epoch,
        params.universe.benchmark,
        params.workflow.calendar,
        signal,
    )
    start, end = params.history.window(LOGICAL_DATE)
    tickers = (*source.available_tickers(), params.universe.benchmark)
    prices = source.fetch("prices", FetchRequest(start, end, tickers))
    features = compute_features(prices, params.features)
    no_news = pd.DataFrame(columns=["ticker", "date", *prediction.SENTIMENT_COLUMNS, "n_headlines"])
    data = lifecycle.training_data(features, prices, no_news, ml, params.universe.benchmark)
    spec = lifecycle.model_specs(ml)["logistic"]
    with threadpool_limits(limits=1):  # ~10k rows: BLAS threads only add overhead
        result = prediction.evaluate_candidate(
            data.frame, data.feature_cols, "logistic", spec, data.walk_forward, seed=ml.seed
        )
        template = prediction.build_estimator("logistic", spec, seed=ml.seed)
        evidence = lifecycle.holdout_evidence(template, data.feature_cols, result.holdout_predictions, data, ml)
    return registry.decide(evidence, None, promotion=ml.promotion)


@pytest.mark.parametrize(("signal", "promoted"), [(0.6, True), (0.0, False)])
def test_the_default_sample_promotes_only_with_its_planted_signal(signal: float, promoted: bool):
    decision = _decision(signal)
    evidence = decision.challenger
    assert evidence.rows >= 300  # the default min_holdout_rows: the statistics decide, not the size
    assert decision.promoted is promoted, decision.verdict
    if promoted:
        assert evidence.p_value <= 0.05 and evidence.ci[0] > 0.5
        assert evidence.metrics["accuracy"] > evidence.majority_rate
    else:
        assert decision.verdict.startswith("Not promoted: ")
