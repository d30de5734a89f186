"""Champion/challenger decisions and the SHA-256 guard, on a real local MLflow store."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression

from bentley.models import registry
from bentley.tracking import ModelStore, tracking_uri

GATES = {"roc_auc": 0.5, "balanced_accuracy": 0.5}


def test_first_run_promotes_a_challenger_that_passes_the_gates():
    decision = registry.decide({"roc_auc": 0.56, "balanced_accuracy": 0.53}, None,
                               metric="roc_auc", margin=0.01, gates=GATES)
    assert decision.promoted
    assert decision.champion_value is None
    assert decision.reason.startswith("first champion")


def test_first_run_keeps_no_champion_when_a_gate_fails():
    decision = registry.decide({"roc_auc": 0.56, "balanced_accuracy": 0.49}, None,
                               metric="roc_auc", margin=0.01, gates=GATES)
    assert not decision.promoted
    assert "balanced_accuracy 0.4900 < 0.5" in decision.reason


def test_a_nan_metric_fails_its_gate():
    assert registry.failed_gates({"roc_auc": math.nan}, {"roc_auc": 0.5}) == ["roc_auc n/a < 0.5"]


@pytest.mark.parametrize(
    ("challenger", "champion", "promoted"),
    [(0.571, 0.560, True), (0.565, 0.560, False), (0.570, 0.560, True), (0.55, 0.56, False)],
)
def test_challenger_must_beat_the_champion_by_the_margin(challenger, champion, promoted):
    decision = registry.decide(
        {"roc_auc": challenger, "balanced_accuracy": 0.6}, {"roc_auc": champion, "balanced_accuracy": 0.6},
        metric="roc_auc", margin=0.01, gates=GATES,
    )
    assert decision.promoted is promoted
    assert decision.champion_value == champion
    assert ("beats" in decision.reason) is promoted


def test_an_unfit_champion_is_not_compared():
    decision = registry.decide({"roc_auc": 0.9, "balanced_accuracy": 0.9}, None, metric="roc_auc", margin=0.0,
                               gates=GATES, champion_unfit="it was trained on holdout dates")
    assert not decision.promoted
    assert "trained on holdout dates" in decision.reason


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
        model_name="direction", candidate=candidate, model=model, example=example,
        params={"ml": {"horizon": 5}}, fold_metrics=pd.DataFrame({"split": ["fold 1"], "roc_auc": [0.6]}),
        holdout_metrics={"roc_auc": 0.6, "accuracy": 0.55},
        importances=pd.DataFrame({"feature": ["f1"], "importance": [0.1]}),
        config={"ml": {"horizon": 5}}, pipeline_run_id="r1", version_tags={"horizon": "5"},
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
