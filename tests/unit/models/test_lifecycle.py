"""The train stage's decisions that need no MLflow: monitoring, when to train, fair comparisons."""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import pandas as pd
import pytest

from bentley.config import load_config
from bentley.models import lifecycle, prediction, splits
from bentley.tracking import RegisteredVersion

FEATURES = ["signal", "noise"]


class ColumnModel:
    """P(up) read straight from the `signal` column: a model whose accuracy a test controls."""

    classes_ = np.array([0.0, 1.0])

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        p = frame["signal"].to_numpy(dtype=float)
        return np.column_stack([1 - p, p])


def _data(recent_hits: float, sessions: int = 300, tickers: int = 4) -> lifecycle.TrainingData:
    """Labelled rows whose `signal` is right everywhere except on the last 21 sessions."""
    rng = np.random.default_rng(0)
    dates = pd.bdate_range("2024-01-01", periods=sessions)
    frame = pd.DataFrame(
        {
            "ticker": np.repeat([f"T{i}" for i in range(tickers)], sessions),
            "date": np.tile(dates, tickers),
        }
    )
    frame["label"] = rng.integers(0, 2, len(frame)).astype(float)
    frame["fwd_return"] = np.where(frame["label"] == 1, 0.01, -0.01)
    right = np.ones(len(frame), dtype=bool)
    recent = frame["date"] >= dates[-21]
    right[recent.to_numpy()] = rng.random(int(recent.sum())) < recent_hits
    frame["signal"] = np.where(right, frame["label"], 1 - frame["label"]) * 0.6 + 0.2
    frame["noise"] = rng.normal(size=len(frame))
    walk_forward = splits.purged_walk_forward(
        np.sort(frame["date"].unique()),
        refit_every_months=1,
        min_folds=2,
        horizon=5,
        embargo=0,
        holdout_sessions=40,
        min_train_sessions=100,
        max_train_rows=None,
        seed=7,
    )
    return lifecycle.TrainingData(frame=frame, feature_cols=FEATURES, walk_forward=walk_forward)


def _champion(train_end: str, holdout_accuracy: float = 1.0, features: list[str] = FEATURES) -> RegisteredVersion:
    return RegisteredVersion(
        name="direction",
        version="3",
        run_id="r",
        source="runs:/r/model",
        tags={
            "features": ",".join(features),
            "train_start": "2024-01-01",
            "train_end": train_end,
            "holdout_accuracy": str(holdout_accuracy),
            "sha256": "0" * 64,
        },
    )


@pytest.mark.parametrize(("recent_hits", "required"), [(1.0, False), (0.5, True)])
def test_monitoring_flags_retraining_when_accuracy_drops_beyond_the_limit(recent_hits, required):
    ml = load_config().ml  # max_degradation 0.10, recent_sessions 21
    data = _data(recent_hits)
    monitoring = lifecycle.monitor_champion(
        ColumnModel(), _champion("2024-06-28"), data, ml, "run", dt.date(2025, 1, 1)
    )
    row = monitoring.row
    assert row["n_recent"] == 4 * 21
    assert row["retraining_required"] is required
    assert row["degradation"] == pytest.approx(1 - row["recent_accuracy"] / 1.0)
    assert ("retrain" in row["reason"]) is required
    assert set(monitoring.drift["feature"]) == set(FEATURES)
    assert monitoring.frame.shape == (1, len(row))


def test_monitoring_requires_retraining_when_an_input_disappears():
    ml = load_config().ml
    champion = _champion("2024-06-28", features=[*FEATURES, "gone"])
    row = lifecycle.monitor_champion(ColumnModel(), champion, _data(1.0), ml, "run", dt.date(2025, 1, 1)).row
    assert row["retraining_required"] and "gone" in row["reason"]


def test_a_champion_trained_on_holdout_dates_is_not_a_fair_opponent():
    data = _data(1.0)
    scored, unfit = lifecycle.score_on_holdout(ColumnModel(), _champion(f"{data.holdout_end:%Y-%m-%d}"), data)
    assert scored is None and "inside this holdout" in unfit
    scored, unfit = lifecycle.score_on_holdout(ColumnModel(), _champion("2024-03-01"), data)
    assert unfit is None
    metrics = prediction.classification_metrics(scored)
    assert metrics["accuracy"] == 1.0 and metrics["n"] == len(data.rows(data.walk_forward.holdout.test))


def test_a_champion_needing_inputs_the_run_lacks_is_not_scored():
    scored, unfit = lifecycle.score_on_holdout(ColumnModel(), _champion("2024-03-01", features=["gone"]), _data(1.0))
    assert scored is None and "gone" in unfit


def test_the_dataset_sentence_names_the_accuracy_to_beat():
    data = _data(1.0)
    holdout = data.rows(data.walk_forward.holdout.test)["label"]
    up = holdout.mean()
    sentence = lifecycle.dataset_sentence(data)
    assert (
        f"On the {len(holdout)} holdout rows, always predicting '{'up' if up >= 0.5 else 'down'}' is right "
        f"{max(up, 1 - up):.1%} of the time: the accuracy any model must beat." in sentence
    )
    assert "baseline" not in sentence and "draws" not in sentence
    capped = dataclasses.replace(
        data,
        walk_forward=dataclasses.replace(
            data.walk_forward, holdout=dataclasses.replace(data.walk_forward.holdout, max_train_rows=5_000)
        ),
    )
    assert lifecycle.dataset_sentence(capped).endswith(
        "Each fit draws at most 5,000 of its training rows (ml.max_train_rows)."
    )


@pytest.mark.parametrize(
    ("champion", "retrain", "flagged", "trains", "phrase"),
    [
        (None, False, False, True, "No champion"),
        ("c", True, False, True, "ml.retrain"),
        ("c", False, False, False, "kept without training"),
        ("c", False, True, False, "asks for retraining"),
    ],
)
def test_training_reason(champion, retrain, flagged, trains, phrase):
    version = _champion("2024-06-28") if champion else None
    choice = lifecycle.ChampionChoice(version, dt.date(2025, 1, 2), backdated=False, reason="")
    monitoring = lifecycle.Monitoring(row={"retraining_required": flagged}, drift=pd.DataFrame()) if champion else None
    train_now, why = lifecycle.training_reason(choice, retrain, monitoring)
    assert train_now is trains and phrase in why


def test_a_backdated_run_without_a_usable_model_trains_its_own():
    choice = lifecycle.ChampionChoice(None, dt.date(2025, 6, 2), backdated=True, reason="")
    train_now, why = lifecycle.training_reason(choice, False, None)
    assert train_now and "2025-06-02" in why and "backdated" in why


def test_the_train_notebook_only_displays_what_the_lifecycle_decided():
    """Issue 18: the champion/challenger lifecycle is `lifecycle.run_training`; the notebook makes
    that one call and shows its result, with no branching of its own (a branch there would be
    logic no test of the library covers)."""
    import ast
    import json
    from pathlib import Path

    notebook = Path(__file__).resolve().parents[3] / "notebooks" / "09_train.ipynb"
    cells = [c for c in json.loads(notebook.read_text())["cells"] if c["cell_type"] == "code"]
    trees = [ast.parse("".join(c["source"])) for c in cells]
    branches = [
        type(node).__name__ for tree in trees for node in ast.walk(tree) if isinstance(node, ast.If | ast.IfExp)
    ]
    assert branches == []
    calls = [ast.unparse(node.func) for tree in trees for node in ast.walk(tree) if isinstance(node, ast.Call)]
    assert calls.count("lifecycle.run_training") == 1
    assert {
        f"training.show_{part}" for part in ("dataset", "monitoring", "training", "decision", "control", "predictions")
    } <= set(calls)
