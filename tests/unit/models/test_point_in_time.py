"""Point-in-time models and crashed-run versions, on a real local MLflow store.

A run for logical date D may only load versions trained on data up to D; a backdated run
never moves the registry's aliases; versions of a crashed run are never used, and a resumed
run that refits the identical model gets the version its crashed attempt registered.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from bentley.config import load_config
from bentley.models import lifecycle, registry, splits
from bentley.tracking import ModelStore, RegisteredVersion, tracking_uri

MODEL = "direction"
D = dt.date(2025, 6, 2)


@pytest.fixture
def store(tmp_path, monkeypatch) -> ModelStore:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return ModelStore(tracking_uri(None, tmp_path), "test-point-in-time", tmp_path)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny data: OpenMP and BLAS threads only add overhead to these fits on a shared machine."""
    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="module")
def data() -> lifecycle.TrainingData:
    """Four tickers over 300 sessions whose `signal` column predicts the label: models pass the gates.

    Eight inputs of pure noise sit beside it, as in real data: with `signal` and one other
    input only, a model refitted on shuffled labels points at `signal` by chance often enough
    (about one in ten) to make even this strong signal look like luck.
    """
    rng = np.random.default_rng(0)
    dates = pd.bdate_range("2024-01-01", periods=300)
    frame = pd.DataFrame({"ticker": np.repeat([f"T{i}" for i in range(4)], len(dates)), "date": np.tile(dates, 4)})
    frame["label"] = rng.integers(0, 2, len(frame)).astype(float)
    frame["fwd_return"] = np.where(frame["label"] == 1, 0.01, -0.01)
    frame["signal"] = frame["label"] * 0.6 + 0.2 + rng.normal(scale=0.3, size=len(frame))
    inputs = ["signal", "noise", *(f"noise{i}" for i in range(7))]
    for name in inputs[1:]:
        frame[name] = rng.normal(size=len(frame))
    walk_forward = splits.purged_walk_forward(
        np.sort(frame["date"].unique()),
        refit_every_months=3,
        min_folds=2,
        horizon=5,
        embargo=0,
        holdout_sessions=40,
        min_train_sessions=100,
        max_train_rows=None,
        seed=7,
    )
    return lifecycle.TrainingData(frame=frame, feature_cols=inputs, walk_forward=walk_forward)


@pytest.fixture(scope="module")
def ml():
    """The default params, with fewer refits and resamples (19 refits still allow p = 0.05) and
    a holdout-size floor the 160 holdout rows here meet."""
    defaults = load_config().ml
    promotion = defaults.promotion.model_copy(update={"permutations": 19, "bootstrap": 200, "min_holdout_rows": 150})
    return defaults.model_copy(update={"registered_model": MODEL, "promotion": promotion})


def _quick(
    store: ModelStore,
    run_id: str,
    as_of: str,
    *,
    candidate: str = "logistic",
    promoted: bool = False,
    seed: int = 0,
    extra: dict[str, str] | None = None,
) -> RegisteredVersion:
    """A small registered version with the tags a training run writes, trained 'as of' `as_of`."""
    rng = np.random.default_rng(seed)
    x = pd.DataFrame(rng.normal(size=(200, 2)), columns=["signal", "noise"])
    model = LogisticRegression().fit(x, (x["signal"] > 0).astype(float))
    tags = {
        lifecycle.FEATURES_TAG: "signal,noise",
        lifecycle.TRAIN_START_TAG: "2020-01-02",
        lifecycle.TRAIN_END_TAG: as_of,
        **({lifecycle.DATA_AS_OF_TAG: as_of} if as_of else {}),
        **(extra or {}),
    }
    if promoted:
        tags.update({"promotion_decision": "promoted", lifecycle.PROMOTED_FOR_TAG: as_of})
    return store.log_candidate(
        model_name=MODEL,
        candidate=candidate,
        model=model,
        example=x,
        params={"seed": seed},
        fold_metrics=pd.DataFrame({"split": ["fold 1"], "roc_auc": [0.6]}),
        holdout_metrics={"roc_auc": 0.6},
        importances=pd.DataFrame({"feature": ["signal"], "importance": [0.1]}),
        config={},
        pipeline_run_id=run_id,
        version_tags=tags,
        parent_run_id=None,
    )


def _train_and_register(store, data, ml, choice, run_id):
    results = lifecycle.train_candidates(data, ml)
    importance = {name: lifecycle.importances(result, data, ml) for name, result in results.items()}
    versions = lifecycle.register_candidates(
        store,
        results,
        importance,
        data,
        ml,
        choice,
        run_id=run_id,
        config={"ml": {"seed": ml.seed}},
        parent_run_id=None,
    )
    return results, versions


def test_registered_versions_carry_their_training_window(store, data, ml):
    as_of = dt.date(2025, 2, 24)
    choice = lifecycle.usable_champion(store, ml, as_of, "run-a")
    assert choice.version is None and not choice.backdated
    results, versions = _train_and_register(store, data, ml, choice, "run-a")
    for name, version in versions.items():
        tags = version.tags
        assert tags[lifecycle.DATA_AS_OF_TAG] == "2025-02-24"
        assert tags[lifecycle.TRAIN_START_TAG] == f"{results[name].train_start:%Y-%m-%d}"
        assert tags[lifecycle.TRAIN_END_TAG] == f"{results[name].train_end:%Y-%m-%d}"
        assert tags[registry.RUN_ID_TAG] == tags["pipeline_run_id"] == "run-a"
        assert tags[registry.CANDIDATE_TAG] == name
        assert len(tags[registry.SHA256_TAG]) == 64 and tags[lifecycle.FEATURES_TAG] == ",".join(data.feature_cols)
        assert lifecycle.BACKDATED_TAG not in tags
    outcome = lifecycle.promote(store, results, versions, choice, None, data, ml, "run-a")
    assert outcome.decision.promoted
    champion = store.alias_version(MODEL, registry.CHAMPION)
    assert champion.version == outcome.challenger.version
    assert champion.tags[lifecycle.PROMOTED_FOR_TAG] == "2025-02-24"


def test_a_backdated_date_never_loads_a_version_trained_on_later_data(store, ml):
    early = _quick(store, "r1", "2025-05-30", promoted=True)
    late = _quick(store, "r2", "2026-12-02", promoted=True, extra={registry.REPLACED_CHAMPION_TAG: early.version})
    store.set_alias(MODEL, registry.CHAMPION, late.version)
    _quick(store, "r3", "2025-06-01")  # rejected: never a champion for any date
    legacy = _quick(store, "r4", "", promoted=True)  # registered before data_as_of existed
    assert lifecycle.data_as_of(legacy) == legacy.created.date()

    choice = lifecycle.usable_champion(store, ml, D, "r9")
    assert choice.backdated and choice.version.version == early.version
    assert "trained on data to 2026-12-02, after this run's logical date 2025-06-02" in choice.reason
    assert f"using {MODEL} v{early.version} (data as of 2025-05-30" in choice.reason

    none = lifecycle.usable_champion(store, ml, dt.date(2025, 5, 1), "r9")
    assert none.version is None and none.backdated and "trains on its own data" in none.reason

    latest = lifecycle.usable_champion(store, ml, dt.date(2026, 12, 2), "r9")
    assert latest.version.version == late.version and not latest.backdated


def test_a_backdated_run_trains_registers_and_predicts_without_moving_aliases(store, data, ml):
    later = _quick(store, "r-late", "2026-12-02", promoted=True)
    store.set_alias(MODEL, registry.CHAMPION, later.version)
    store.set_alias(MODEL, registry.CHALLENGER, later.version)
    as_of = dt.date(2025, 2, 24)

    choice = lifecycle.usable_champion(store, ml, as_of, "run-b")
    assert choice.version is None and choice.backdated
    assert lifecycle.training_reason(choice, False, None)[0]
    results, versions = _train_and_register(store, data, ml, choice, "run-b")
    outcome = lifecycle.promote(store, results, versions, choice, None, data, ml, "run-b")

    assert store.aliases(MODEL) == {registry.CHAMPION: later.version, registry.CHALLENGER: later.version}
    assert outcome.decision.promoted
    tagged = {v.version: v for v in store.versions(MODEL)}
    for version in versions.values():
        assert tagged[version.version].tags[lifecycle.BACKDATED_TAG] == "true"
        assert tagged[version.version].tags[lifecycle.DATA_AS_OF_TAG] == "2025-02-24"
    assert tagged[outcome.challenger.version].tags[lifecycle.PROMOTED_FOR_TAG] == "2025-02-24"
    assert registry.REPLACED_CHAMPION_TAG not in tagged[outcome.challenger.version].tags

    predictor, model = lifecycle.champion_after(store, outcome, choice, None)
    assert predictor.version == outcome.challenger.version
    predicted = lifecycle.latest_predictions(model, predictor, data, ml, "run-b")
    sentence = lifecycle.predictions_sentence(predicted, predictor, choice, outcome, ml)
    assert "predicts for 2025-02-24" in sentence and "backdated: no alias moved" in sentence

    # A later backdated date uses that version; an earlier one still may not.
    assert lifecycle.usable_champion(store, ml, dt.date(2025, 3, 3), "run-c").version.version == predictor.version
    assert lifecycle.usable_champion(store, ml, dt.date(2025, 2, 21), "run-c").version is None


def test_mark_crashed_versions_tags_them_and_puts_the_champion_back(store, ml):
    first = _quick(store, "r1", "2025-05-30", promoted=True)
    store.set_alias(MODEL, registry.CHAMPION, first.version)
    crashed = _quick(store, "r2", "2025-06-02", promoted=True, extra={registry.REPLACED_CHAMPION_TAG: first.version})
    other = _quick(store, "r2", "2025-06-02", candidate="boosted", seed=1)
    store.set_alias(MODEL, registry.CHALLENGER, crashed.version)
    store.set_alias(MODEL, registry.CHAMPION, crashed.version)

    assert registry.mark_crashed_versions(store, MODEL, "r2") == [crashed.version, other.version]
    tags = {v.version: v.tags for v in store.versions(MODEL)}
    assert tags[crashed.version][registry.CRASHED_TAG] == tags[other.version][registry.CRASHED_TAG] == "true"
    assert registry.CRASHED_TAG not in tags[first.version]
    assert store.aliases(MODEL) == {registry.CHAMPION: first.version}

    # A crashed version is never picked, even as the newest promoted one for a backdated date.
    later = _quick(store, "r3", "2026-12-02", promoted=True)
    store.set_alias(MODEL, registry.CHAMPION, later.version)
    assert lifecycle.usable_champion(store, ml, D, "r9").version.version == first.version


def test_the_first_champion_of_a_crashed_run_leaves_no_champion(store, ml):
    version = _quick(store, "r1", "2025-06-02", promoted=True)
    store.set_alias(MODEL, registry.CHAMPION, version.version)
    assert registry.mark_crashed_versions(store, MODEL, "r1") == [version.version]
    assert store.aliases(MODEL) == {}
    assert lifecycle.usable_champion(store, ml, D, "r1").version is None
    assert registry.mark_crashed_versions(store, MODEL, "no-such-run") == []


def test_a_run_never_meets_its_own_earlier_attempt_as_champion(store, ml):
    first = _quick(store, "r1", "2025-05-30", promoted=True)
    mine = _quick(store, "r2", "2025-06-02", promoted=True, extra={registry.REPLACED_CHAMPION_TAG: first.version})
    store.set_alias(MODEL, registry.CHAMPION, mine.version)  # the attempt failed after promoting; retried
    assert lifecycle.usable_champion(store, ml, D, "r2").version.version == first.version
    assert lifecycle.usable_champion(store, ml, D, "r3").version.version == mine.version


def test_the_same_run_candidate_and_model_give_the_same_version(store, data, ml):
    choice = lifecycle.usable_champion(store, ml, D, "run-r")
    results, first = _train_and_register(store, data, ml, choice, "run-r")
    lifecycle.promote(store, results, first, choice, None, data, ml, "run-r")
    registry.mark_crashed_versions(store, MODEL, "run-r")  # the runner, taking over the lease

    resumed = lifecycle.usable_champion(store, ml, D, "run-r")
    assert resumed.version is None  # the crashed attempt's promotion does not count
    _, again = _train_and_register(store, data, ml, resumed, "run-r")  # refitted: same data, same seeds
    assert {n: v.version for n, v in again.items()} == {n: v.version for n, v in first.items()}
    for name, version in again.items():
        assert version.tags[registry.SHA256_TAG] == first[name].tags[registry.SHA256_TAG]
        assert registry.CRASHED_TAG not in version.tags and "promotion_decision" not in version.tags
    assert len(store.versions(MODEL)) == len(first)
    store.load(again["boosted"])  # the reused artifact still passes its checksum

    _, other_run = _train_and_register(store, data, ml, resumed, "run-s")
    assert {v.version for v in other_run.values()}.isdisjoint(v.version for v in first.values())
