"""Champion/challenger decisions and the SHA-256 guard, on a real local MLflow store."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression

from bentley import warehouse
from bentley.config import load_config
from bentley.models import registry
from bentley.tracking import ModelStore, tracking_uri

PROMOTION = load_config().ml.promotion.model_copy(update={"margin": 0.01})  # the default gates and evidence


def _evidence(
    auc: float = 0.62,
    *,
    balanced: float = 0.56,
    accuracy: float = 0.60,
    majority: float = 0.55,
    reached: int = 0,
    refits: int = 100,
    ci: tuple[float, float] = (0.56, 0.68),
    rows: int = 500,
    up: bool = True,
) -> registry.Evidence:
    """A holdout record whose p-value is (1 + reached) / (1 + refits)."""
    null = np.r_[np.full(reached, auc + 0.01), np.full(refits - reached, 0.5)]
    return registry.Evidence(
        metric="roc_auc",
        metrics={"roc_auc": auc, "balanced_accuracy": balanced, "accuracy": accuracy, "n": rows},
        null=null,
        ci=ci,
        confidence=0.9,
        majority_rate=majority,
        majority_up=up,
        model_class="LogisticRegression",
    )


def test_first_run_promotes_a_challenger_that_passes_the_gates_and_the_evidence():
    decision = registry.decide(_evidence(), None, promotion=PROMOTION)
    assert decision.promoted
    assert decision.champion_value is None and decision.challenger_value == 0.62
    assert decision.reason.startswith("first champion: passes every gate (roc_auc 0.6200 >= 0.5")
    assert "p-value 0.0099 <= 0.05 (100 shuffled-label refits)" in decision.reason
    assert decision.verdict == (
        "Promoted as the first champion: its AUC of 0.620 on 500 holdout rows is matched or beaten by 0% of 100 "
        "models of its class trained on shuffled labels (p = 0.0099 ≤ 0.05); resampling the holdout puts its AUC "
        "between 0.560 and 0.680 (90% of the time), above the 0.500 of a coin flip; its accuracy 60.0% beats always "
        "predicting 'up' (55.0%)."
    )


def test_first_run_keeps_no_champion_when_a_gate_fails():
    decision = registry.decide(_evidence(balanced=0.49), None, promotion=PROMOTION)
    assert not decision.promoted
    assert "balanced_accuracy 0.4900 < 0.5" in decision.reason
    assert decision.verdict == "Not promoted: its balanced accuracy 49.0% is below the minimum 50.0%."


def test_a_nan_metric_fails_its_gate_and_has_no_p_value():
    evidence = _evidence(auc=math.nan, ci=(math.nan, math.nan))
    assert math.isnan(evidence.p_value)
    decision = registry.decide(evidence, None, promotion=PROMOTION)
    assert not decision.promoted
    assert "roc_auc n/a < 0.5" in decision.reason and "roc_auc undefined on the holdout" in decision.reason
    assert "its AUC cannot be computed on the holdout rows" in decision.verdict


def test_the_real_data_case_is_noise_and_the_verdict_says_why_in_words():
    """Issue 16: AUC 0.606 on 189 rows, reached by 11 of 100 shuffled-label refits; accuracy 127/189
    is exactly the always-up rate. The old gates (AUC and balanced accuracy >= 0.5) promoted it."""
    rate = 127 / 189
    evidence = _evidence(0.606, balanced=0.52, accuracy=rate, majority=rate, reached=11, ci=(0.49, 0.70), rows=189)
    decision = registry.decide(evidence, None, promotion=PROMOTION)
    assert not decision.promoted
    assert decision.verdict == (
        "Not promoted: 189 holdout rows are too few to tell skill from luck (at least 300 are required); its AUC of "
        "0.606 on 189 holdout rows is matched or beaten by 11% of 100 models of its class trained on shuffled labels "
        "(p = 0.12 > 0.05); resampling the holdout puts its AUC between 0.490 and 0.700 (90% of the time), not "
        "clearly above the 0.500 of a coin flip; its accuracy 67.2% equals always predicting 'up' (67.2%)."
    )
    for part in (
        "189 holdout rows < 300",
        "p-value 0.12 > 0.05",
        "90% CI of roc_auc [0.4900, 0.7000] not above",
        "accuracy 0.6720 <= majority-class rate 0.6720",
    ):
        assert part in decision.reason
    relaxed = PROMOTION.model_copy(
        update={
            "gates": {"roc_auc": 0.5, "balanced_accuracy": 0.5},
            "min_holdout_rows": 1,
            "max_p_value": 1.0,
            "ci_lower_above_no_skill": False,
            "beat_majority": False,
        }
    )
    flow = registry.decide(evidence, None, promotion=relaxed)  # the ci profile: measured, not required
    assert flow.promoted
    assert (
        "(p = 0.12, not required here)" in flow.verdict
        and "p-value 0.12 <= 1 (100 shuffled-label refits) (not required)" in flow.reason
    )
    assert "not clearly above the 0.500 of a coin flip (not required here)" in flow.verdict
    assert "equals always predicting 'up' (67.2%) (not required here)" in flow.verdict


@pytest.mark.parametrize(
    ("refits", "reached", "p"), [(100, 0, 1 / 101), (100, 11, 12 / 101), (19, 19, 1.0), (4, 2, 0.6)]
)
def test_the_permutation_p_value_counts_the_model_among_the_draws(refits, reached, p):
    evidence = _evidence(reached=reached, refits=refits)
    assert evidence.reached == reached
    assert evidence.p_value == pytest.approx(p)


@pytest.mark.parametrize("max_p", [0.01, 0.05, 0.1, 0.2])
@pytest.mark.parametrize("permutations", [1, 9, 19, 20, 39, 99, 100, 500])
def test_stopping_the_refits_early_never_changes_the_decision(permutations, max_p):
    """Once `refits_to_decide` refits reached the value, every way the remaining refits could
    score gives a p-value above the maximum; one fewer could still pass when that is possible."""
    settle = registry.refits_to_decide(permutations, max_p)
    outcomes = [(1 + reached) / (1 + permutations) <= max_p for reached in range(permutations + 1)]
    if settle is None:
        assert all(outcomes[: permutations + 1]) or not any(outcomes)  # nothing to stop for early
        return
    assert 1 <= settle <= permutations
    assert not any(outcomes[settle:])
    assert settle == 1 or outcomes[settle - 1]


def test_a_p_value_that_is_only_recorded_never_stops_the_refits():
    assert registry.refits_to_decide(100, 1.0) is None
    assert registry.refits_to_decide(100, 0.05) == 5 and registry.refits_to_decide(19, 0.05) == 1


def test_an_early_stop_is_said_in_the_reason_and_the_verdict():
    stopped = dataclasses.replace(_evidence(reached=5, refits=12), permutations=100)
    assert stopped.stopped_early and stopped.p_value == pytest.approx(6 / 13)
    decision = registry.decide(stopped, None, promotion=PROMOTION)
    assert not decision.promoted
    assert "(12 shuffled-label refits of 100 planned, stopped once 5 reached it)" in decision.reason
    assert "the 100 planned stopped there" in decision.verdict
    assert not _evidence(reached=5, refits=100).stopped_early


def test_a_shuffled_label_score_tying_the_model_counts_as_reaching_it():
    evidence = registry.Evidence(
        metric="roc_auc",
        metrics={"roc_auc": 0.6, "n": 400},
        null=np.array([0.6, 0.1 + 0.5, 0.59999, 0.4]),
        ci=(0.5, 0.7),
        confidence=0.9,
        majority_rate=0.5,
        majority_up=True,
        model_class="X",
    )
    assert evidence.reached == 2 and evidence.p_value == pytest.approx(3 / 5)


def test_accuracy_as_the_metric_has_the_majority_rate_as_no_skill():
    evidence = registry.Evidence(
        metric="accuracy",
        metrics={"accuracy": 0.66, "roc_auc": 0.6, "balanced_accuracy": 0.6, "n": 400},
        null=np.full(50, 0.6),
        ci=(0.62, 0.7),
        confidence=0.9,
        majority_rate=0.64,
        majority_up=False,
        model_class="X",
    )
    assert evidence.no_skill == 0.64
    decision = registry.decide(evidence, None, promotion=PROMOTION.model_copy(update={"metric": "accuracy"}))
    assert not decision.promoted
    assert "not clearly above always predicting 'down' (64.0%)" in decision.verdict


@pytest.mark.parametrize(
    ("challenger", "champion", "promoted"),
    [(0.571, 0.560, True), (0.565, 0.560, False), (0.570, 0.560, True), (0.55, 0.56, False)],
)
def test_challenger_must_beat_the_champion_by_the_margin(challenger, champion, promoted):
    decision = registry.decide(_evidence(challenger), _evidence(champion, reached=40), promotion=PROMOTION)
    assert decision.promoted is promoted
    assert decision.champion_value == champion
    assert ("beats" in decision.reason) is promoted
    assert decision.verdict.startswith("Promoted: " if promoted else "Not promoted: it passes every check, but")
    row = decision.as_row()
    assert row["champion_p_value"] == pytest.approx(41 / 101) and row["p_value"] == pytest.approx(1 / 101)


def test_an_unfit_champion_is_not_compared():
    decision = registry.decide(
        _evidence(0.9), None, promotion=PROMOTION, champion_unfit="it was trained on holdout dates"
    )
    assert not decision.promoted
    assert "trained on holdout dates" in decision.reason and "trained on holdout dates" in decision.verdict


def test_a_decision_row_has_the_model_decisions_columns():
    row = registry.decide(_evidence(), _evidence(0.6), promotion=PROMOTION).as_row()
    key = {"run_id", "model_name", "challenger_version", "champion_version", "decided_at"}
    assert set(row) == {c.name for c in warehouse.metadata.tables["model_decisions"].columns} - key
    assert row["holdout_rows"] == 500 and row["ci_lower"] == 0.56 and row["majority_rate"] == 0.55


def test_pick_challenger_takes_the_best_mean_cv_metric():
    folds = {
        "logistic": pd.DataFrame({"roc_auc": [0.52, 0.54]}),
        "boosted": pd.DataFrame({"roc_auc": [0.55, np.nan]}),
    }
    assert registry.pick_challenger(folds, "roc_auc") == "boosted"


def test_directory_digest_covers_names_and_contents(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "model.bin").write_bytes(b"weights")
    (tmp_path / "a" / "MLmodel").write_text("flavors: {}")
    first = registry.directory_digest(tmp_path / "a")
    assert first == registry.directory_digest(tmp_path / "a")
    (tmp_path / "a" / "MLmodel").write_text("flavors: {x: 1}")
    assert registry.directory_digest(tmp_path / "a") != first
    with pytest.raises(registry.ModelIntegrityError, match="no sha256 tag"):
        registry.verify_digest(tmp_path / "a", None, "m v1")


# --------------------------------------------------------------------------- ModelStore


def _fitted(model, seed: int):
    rng = np.random.default_rng(seed)
    x = pd.DataFrame(rng.normal(size=(300, 3)), columns=["f1", "f2", "f3"])
    y = (x["f1"] + 0.5 * rng.normal(size=300) > 0).astype(int)
    return model.fit(x, y), x


def _register(store: ModelStore, model, example, candidate: str):
    return store.log_candidate(
        model_name="direction",
        candidate=candidate,
        model=model,
        example=example,
        params={"ml": {"horizon": 5}},
        fold_metrics=pd.DataFrame({"split": ["fold 1"], "roc_auc": [0.6]}),
        holdout_metrics={"roc_auc": 0.6, "accuracy": 0.55},
        importances=pd.DataFrame({"feature": ["f1"], "importance": [0.1]}),
        config={"ml": {"horizon": 5}},
        pipeline_run_id="r1",
        version_tags={"horizon": "5"},
        parent_run_id=None,
    )


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return ModelStore(tracking_uri(None, tmp_path), "test-registry", tmp_path)


def test_registry_flow_aliases_and_verified_load(store, tmp_path):
    assert store.alias_version("direction", registry.CHAMPION) is None

    first_model, x = _fitted(LogisticRegression(), 1)
    first = _register(store, first_model, x, "logistic")
    assert first.version == "1"
    assert len(first.tags[registry.SHA256_TAG]) == 64
    store.set_alias("direction", registry.CHAMPION, first.version)

    second_model, _ = _fitted(HistGradientBoostingClassifier(max_iter=10), 2)
    second = _register(store, second_model, x, "boosted")
    store.set_alias("direction", registry.CHALLENGER, second.version)
    store.tag_version(second, {"promotion_decision": "kept"})

    assert store.alias_version("direction", registry.CHAMPION).version == "1"
    challenger = store.alias_version("direction", registry.CHALLENGER)
    assert challenger.version == "2"
    assert challenger.tags["promotion_decision"] == "kept"
    loaded = store.load(challenger)  # skops-trusted tree predictors load once the digest matches
    np.testing.assert_array_equal(loaded.predict_proba(x), second_model.predict_proba(x))


def test_a_tampered_artifact_is_refused_before_loading(store, tmp_path):
    model, x = _fitted(LogisticRegression(), 3)
    version = _register(store, model, x, "logistic")
    [stored] = (tmp_path / "mlflow" / "artifacts").rglob("model/model.skops")
    stored.write_bytes(stored.read_bytes() + b"\0")
    with pytest.raises(registry.ModelIntegrityError, match=r"direction v1: artifact SHA-256 .* does not match"):
        store.load(version)


def test_champion_after_reuses_the_verified_model_unless_the_challenger_was_promoted(store):
    import datetime as dt
    from types import SimpleNamespace

    from bentley.models import lifecycle

    model, x = _fitted(LogisticRegression(), 4)
    first = _register(store, model, x, "logistic")
    choice = lifecycle.ChampionChoice(first, dt.date(2025, 1, 2), backdated=False, reason="")
    kept_model = object()
    rejected = SimpleNamespace(decision=SimpleNamespace(promoted=False), challenger=None)
    assert lifecycle.champion_after(store, rejected, choice, kept_model) == (first, kept_model)
    assert lifecycle.champion_after(store, None, choice, kept_model) == (first, kept_model)
    promoted = SimpleNamespace(decision=SimpleNamespace(promoted=True), challenger=first)
    champion, loaded = lifecycle.champion_after(store, promoted, choice, None)  # promoted this run: load and verify
    assert champion == first
    np.testing.assert_array_equal(loaded.predict_proba(x), model.predict_proba(x))
