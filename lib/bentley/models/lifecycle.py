"""The train stage's steps: monitor the champion, train and register, decide, predict.

Order matters and is deliberate. The champion is checked *before* anything is trained, on
data it has not seen: its accuracy on the latest labelled sessions against the holdout
accuracy it was promoted with, and the drift (PSI) of every input between its training
window and the latest sessions. A drop beyond `ml.monitoring.max_degradation` writes
`retraining_required` to `model_monitoring`; the scheduler reacts by running `train` with
`ml.retrain=true`. Training happens when asked (`ml.retrain`) or when there is no champion
yet. Each candidate is cross-validated, fitted, registered as a version; the best mean CV
candidate becomes the challenger and meets the champion on the same holdout rows
(`bentley.models.registry.decide`). Predictions always come from the champion after the
decision, so the optimize and trade stages read one model's view per run.

MLflow is reached only through the `ModelStore` passed in (bentley.tracking).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from bentley.models import prediction, registry, splits
from bentley.monitoring import drift

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from bentley.tracking import ModelStore, RegisteredVersion

#: `predictions.kind`: the champion on unlabelled sessions, or out-of-sample CV rows.
LIVE, WALK_FORWARD = "live", "walk_forward"

#: Model-version tags written at registration (besides sha256 and candidate).
FEATURES_TAG = "features"
TRAIN_END_TAG = "train_end"
TRAIN_START_TAG = "train_start"


@dataclass
class TrainingData:
    """The model frame, its input columns and the purged walk-forward splits."""

    frame: pd.DataFrame
    feature_cols: list[str]
    walk_forward: splits.WalkForward

    def rows(self, dates: np.ndarray, labelled: bool = True) -> pd.DataFrame:
        mask = splits.rows_in(self.frame["date"], dates)
        if labelled:
            mask &= self.frame["label"].notna().to_numpy()
        return self.frame[mask]

    @property
    def holdout_start(self) -> pd.Timestamp:
        return pd.Timestamp(self.walk_forward.holdout.test.min())

    @property
    def holdout_end(self) -> pd.Timestamp:
        return pd.Timestamp(self.walk_forward.holdout.test.max())

    def latest_labelled_dates(self, sessions: int) -> np.ndarray:
        labelled = np.sort(self.frame.loc[self.frame["label"].notna(), "date"].unique())
        return labelled[-sessions:]


def training_data(
    features: pd.DataFrame, prices: pd.DataFrame, sentiment: pd.DataFrame, ml: Any, benchmark: str
) -> TrainingData:
    """Model frame (benchmark excluded: it is an index, not something to trade) and splits."""
    frame = prediction.model_frame(features, prices, sentiment, horizon=ml.horizon, exclude=[benchmark])
    labelled = np.sort(frame.loc[frame["label"].notna(), "date"].unique())
    walk_forward = splits.purged_walk_forward(
        labelled, n_folds=ml.n_folds, horizon=ml.horizon, embargo=ml.embargo,
        holdout_sessions=ml.holdout_sessions, min_train_sessions=ml.min_train_sessions,
    )
    return TrainingData(frame=frame, feature_cols=prediction.feature_names(frame), walk_forward=walk_forward)


def split_table(data: TrainingData) -> pd.DataFrame:
    """One row per split: training and test date ranges and row counts, for the report."""
    rows = []
    for split in [*data.walk_forward.folds, data.walk_forward.holdout]:
        train, test = data.rows(split.train), data.rows(split.test)
        rows.append({
            "split": split.name, "train_from": split.train.min(), "train_to": split.train.max(),
            "test_from": split.test.min(), "test_to": split.test.max(),
            "train_rows": len(train), "test_rows": len(test),
        })
    frame = pd.DataFrame(rows)
    for column in ("train_from", "train_to", "test_from", "test_to"):
        frame[column] = pd.to_datetime(frame[column]).dt.strftime("%Y-%m-%d")
    return frame


# --------------------------------------------------------------------------- monitoring


@dataclass
class Monitoring:
    row: dict[str, Any]  # one row of model_monitoring
    drift: pd.DataFrame  # bentley.monitoring.drift.feature_psi of the champion's inputs

    @property
    def retraining_required(self) -> bool:
        return bool(self.row["retraining_required"])

    @property
    def frame(self) -> pd.DataFrame:
        return pd.DataFrame([self.row])


def monitor_champion(
    model: Any, champion: RegisteredVersion, data: TrainingData, ml: Any, run_id: str, as_of: dt.date
) -> Monitoring:
    """The champion on the latest labelled sessions, and its inputs' drift since training."""
    features = champion.tags[FEATURES_TAG].split(",")
    settings = ml.monitoring
    recent_dates = data.latest_labelled_dates(settings.recent_sessions)
    recent = data.rows(recent_dates)
    missing = sorted(set(features) - set(data.frame.columns))
    holdout_accuracy = _float_tag(champion.tags, "holdout_accuracy")
    if missing:
        metrics: dict[str, float] = {"accuracy": math.nan}
    else:
        metrics = prediction.classification_metrics(_scored(model, recent, features))
    degradation = 1.0 - metrics["accuracy"] / holdout_accuracy if holdout_accuracy > 0 else math.nan
    trained = (data.frame["date"] >= pd.Timestamp(champion.tags[TRAIN_START_TAG])) & (
        data.frame["date"] <= pd.Timestamp(champion.tags[TRAIN_END_TAG])
    )
    latest = data.rows(np.sort(data.frame["date"].unique())[-settings.recent_sessions:], labelled=False)
    present = [f for f in features if f in data.frame.columns]
    psi = drift.feature_psi(data.frame[trained], latest, columns=present, bins=settings.psi_bins)
    significant = int((psi["status"] == "significant").sum())
    required = bool(missing) or (math.isfinite(degradation) and degradation > settings.max_degradation)
    if missing:
        reason = f"the champion's inputs {', '.join(missing)} are no longer produced: retrain"
    elif required:
        reason = (f"accuracy {metrics['accuracy']:.3f} on the last {len(recent_dates)} labelled sessions is "
                  f"{degradation:.1%} below its holdout accuracy {holdout_accuracy:.3f} "
                  f"(limit {settings.max_degradation:.0%}): retrain")
    else:
        reason = (f"accuracy {metrics['accuracy']:.3f} on the last {len(recent_dates)} labelled sessions vs "
                  f"{holdout_accuracy:.3f} on its holdout: within the {settings.max_degradation:.0%} limit")
    row = {
        "run_id": run_id, "model_name": champion.name, "model_version": champion.version, "as_of": as_of,
        "holdout_accuracy": holdout_accuracy, "recent_accuracy": metrics["accuracy"], "degradation": degradation,
        "n_recent": len(recent), "max_psi": float(psi["psi"].max()) if psi["psi"].notna().any() else math.nan,
        "drifted_features": significant, "retraining_required": required, "reason": reason,
    }
    return Monitoring(row=row, drift=psi)


def training_reason(champion: RegisteredVersion | None, retrain: bool, monitoring: Monitoring | None) -> tuple[bool, str]:
    """Whether this run trains, and why, in one sentence for the report."""
    if champion is None:
        return True, "No champion is registered yet: this run trains the first one."
    if retrain:
        return True, f"`ml.retrain` is true: a challenger is trained against champion {champion.label}."
    flagged = monitoring is not None and monitoring.retraining_required
    note = (" Monitoring asks for retraining; the scheduler (or `--set ml.retrain=true`) starts it."
            if flagged else "")
    return False, f"Champion {champion.label} is kept without training (`ml.retrain` is false).{note}"


# --------------------------------------------------------------------------- training


def model_specs(ml: Any) -> dict[str, dict[str, Any]]:
    """Candidate name -> `{class, kwargs}` as declared in params."""
    return {name: spec.model_dump(by_alias=True) for name, spec in ml.models.items()}


def train_candidates(data: TrainingData, ml: Any) -> dict[str, prediction.CandidateResult]:
    return {
        name: prediction.evaluate_candidate(data.frame, data.feature_cols, name, spec, data.walk_forward, seed=ml.seed)
        for name, spec in model_specs(ml).items()
    }


def importances(result: prediction.CandidateResult, data: TrainingData, ml: Any) -> pd.DataFrame:
    """Importances measured on the holdout, which the final model has not seen."""
    holdout = data.rows(data.walk_forward.holdout.test)
    return prediction.feature_importances(
        result.model, holdout[data.feature_cols], holdout["label"].to_numpy(), seed=ml.seed,
        n_repeats=ml.importance.n_repeats, max_rows=ml.importance.max_rows,
    )


def cv_summary(results: Mapping[str, prediction.CandidateResult]) -> pd.DataFrame:
    """Mean and standard deviation over the folds, and the holdout value, per candidate and metric."""
    rows = []
    for name, result in results.items():
        folds = result.fold_metrics.drop(columns=["split"])
        for metric in folds.columns:
            if metric == "n":
                continue
            values = pd.to_numeric(folds[metric], errors="coerce")
            rows.append({"candidate": name, "metric": metric, "cv_mean": values.mean(), "cv_std": values.std(ddof=1),
                         "holdout": result.holdout_metrics.get(metric, math.nan)})
    table = pd.DataFrame(rows)
    return table.pivot(index="metric", columns="candidate", values=["cv_mean", "cv_std", "holdout"])


def version_tags(result: prediction.CandidateResult, data: TrainingData, ml: Any, run_id: str) -> dict[str, str]:
    """What a later run needs to score, monitor and compare this version without guessing."""
    tags = {
        FEATURES_TAG: ",".join(data.feature_cols),
        "horizon": str(ml.horizon),
        TRAIN_START_TAG: f"{result.train_start:%Y-%m-%d}",
        TRAIN_END_TAG: f"{result.train_end:%Y-%m-%d}",
        "holdout_start": f"{data.holdout_start:%Y-%m-%d}",
        "holdout_end": f"{data.holdout_end:%Y-%m-%d}",
        "pipeline_run_id": run_id,
    }
    tags.update({f"holdout_{k}": f"{v:.6g}" for k, v in result.holdout_metrics.items() if _finite(v)})
    return tags


def register_candidates(
    store: ModelStore, results: Mapping[str, prediction.CandidateResult], importance: Mapping[str, pd.DataFrame],
    data: TrainingData, ml: Any, *, run_id: str, config: Mapping[str, Any], parent_run_id: str | None,
) -> dict[str, RegisteredVersion]:
    """Every trained candidate becomes a new version of `ml.registered_model`."""
    example = data.rows(data.walk_forward.holdout.test)[data.feature_cols]
    versions = {}
    for name, result in results.items():
        versions[name] = store.log_candidate(
            model_name=ml.registered_model, candidate=name, model=result.model, example=example,
            params={"candidate": name, "model": result.spec, "ml": config["ml"], "features": data.feature_cols,
                    "train_start": f"{result.train_start:%Y-%m-%d}", "train_end": f"{result.train_end:%Y-%m-%d}"},
            fold_metrics=result.fold_metrics, holdout_metrics=result.holdout_metrics,
            importances=importance[name], config=config, run_tags={"run_id": run_id},
            version_tags=version_tags(result, data, ml, run_id), parent_run_id=parent_run_id,
        )
    return versions


def score_on_holdout(model: Any, champion: RegisteredVersion, data: TrainingData) -> tuple[dict[str, float] | None, str | None]:
    """The champion's metrics on this run's holdout rows, or why it cannot be fairly scored."""
    features = champion.tags[FEATURES_TAG].split(",")
    missing = sorted(set(features) - set(data.frame.columns))
    if missing:
        return None, f"champion {champion.label} needs inputs this run does not produce ({', '.join(missing)})"
    trained_until = pd.Timestamp(champion.tags[TRAIN_END_TAG])
    if trained_until >= data.holdout_start:
        return None, (f"champion {champion.label} was trained on data up to {trained_until:%Y-%m-%d}, inside this "
                      f"holdout (from {data.holdout_start:%Y-%m-%d}); a backfill cannot judge it fairly")
    return prediction.classification_metrics(_scored(model, data.rows(data.walk_forward.holdout.test), features)), None


@dataclass
class Outcome:
    """The A/B decision of one training run, in the shapes the report and warehouse need."""

    decision: registry.Decision
    candidate: str  # the challenger's name in ml.models
    challenger: RegisteredVersion
    champion: RegisteredVersion | None  # before the decision
    table: pd.DataFrame  # both models' holdout metrics and the gates
    row: pd.DataFrame  # one row of model_decisions


def promote(
    store: ModelStore, results: Mapping[str, prediction.CandidateResult], versions: Mapping[str, RegisteredVersion],
    champion: RegisteredVersion | None, champion_model: Any, data: TrainingData, ml: Any, run_id: str,
) -> Outcome:
    """Best CV candidate vs the champion on the same holdout; aliases and tags follow the decision."""
    name = registry.pick_challenger({n: r.fold_metrics for n, r in results.items()}, ml.promotion.metric)
    challenger, challenger_metrics = versions[name], results[name].holdout_metrics
    champion_metrics, unfit = (None, None) if champion is None else score_on_holdout(champion_model, champion, data)
    decision = registry.decide(
        challenger_metrics, champion_metrics, metric=ml.promotion.metric, margin=ml.promotion.margin,
        gates=ml.promotion.gates, champion_unfit=unfit,
    )
    apply_decision(store, decision, ml.registered_model, challenger)
    row = pd.DataFrame([{
        "run_id": run_id, "model_name": ml.registered_model, "challenger_version": challenger.version,
        "champion_version": None if champion is None else champion.version, **decision.as_row(),
        "decided_at": dt.datetime.now(dt.UTC),
    }])
    table = decision_table(challenger, champion, challenger_metrics, champion_metrics, ml.promotion.gates)
    return Outcome(decision=decision, candidate=name, challenger=challenger, champion=champion, table=table, row=row)


def apply_decision(store: ModelStore, decision: registry.Decision, model_name: str,
                   challenger: RegisteredVersion) -> None:
    """Aliases and the decision tags on the challenger's version."""
    store.set_alias(model_name, registry.CHALLENGER, challenger.version)
    store.tag_version(challenger, {
        "promotion_decision": "promoted" if decision.promoted else "rejected",
        "promotion_reason": decision.reason,
        "promotion_metric": decision.metric,
        "promotion_champion_value": "" if decision.champion_value is None else f"{decision.champion_value:.6g}",
    })
    if decision.promoted:
        store.set_alias(model_name, registry.CHAMPION, challenger.version)


def decision_table(challenger: RegisteredVersion, champion: RegisteredVersion | None,
                   challenger_metrics: Mapping[str, float], champion_metrics: Mapping[str, float] | None,
                   gates: Mapping[str, float]) -> pd.DataFrame:
    """Side by side on the same holdout: both models' metrics and the gates."""
    metrics = [m for m in prediction.METRIC_NAMES if m != "n"]
    return pd.DataFrame({
        f"challenger {challenger.label}": [challenger_metrics.get(m, math.nan) for m in metrics],
        ("champion " + champion.label) if champion is not None else "champion (none)": [
            (champion_metrics or {}).get(m, math.nan) for m in metrics],
        "gate (minimum)": [gates.get(m, math.nan) for m in metrics],
    }, index=pd.Index(metrics, name="metric"))


# --------------------------------------------------------------------------- predictions


def champion_after(
    store: ModelStore, ml: Any, before: RegisteredVersion | None, model_before: Any
) -> tuple[RegisteredVersion | None, Any]:
    """The champion after the decision and its model: the one loaded (and verified) before it, unless replaced."""
    now = store.alias_version(ml.registered_model, registry.CHAMPION)
    if now is None:
        return None, None
    if before is not None and now.version == before.version:
        return now, model_before
    return now, store.load(now)


def latest_predictions(model: Any, champion: RegisteredVersion, data: TrainingData, ml: Any, run_id: str) -> pd.DataFrame:
    """The champion's P(up) for every row whose label is not known yet (the latest sessions)."""
    features = champion.tags[FEATURES_TAG].split(",")
    rows = prediction.unlabelled_rows(data.frame)
    out = prediction.predict(model, rows, features)
    out.insert(0, "run_id", run_id)
    out["horizon"] = ml.horizon
    out["model_name"] = champion.name
    out["model_version"] = champion.version
    out["predicted_at"] = dt.datetime.now(dt.UTC)
    out["kind"] = LIVE
    return out


def walk_forward_predictions(
    result: prediction.CandidateResult, version: RegisteredVersion, ml: Any, run_id: str
) -> pd.DataFrame:
    """A candidate's out-of-sample probabilities (CV folds and holdout) under its registered version.

    The trade stage backtests the champion's signal on these: each row comes from a model
    that never saw that session, so the backtest does not grade the model on its homework.
    """
    rows = result.out_of_sample
    return pd.DataFrame({
        "run_id": run_id, "ticker": rows["ticker"].to_numpy(), "date": rows["date"].to_numpy(),
        "proba_up": rows["proba"].to_numpy(), "predicted_up": rows["proba"].to_numpy() >= 0.5,
        "horizon": ml.horizon, "model_name": version.name, "model_version": version.version,
        "predicted_at": dt.datetime.now(dt.UTC), "kind": WALK_FORWARD,
    })


def latest_view(predicted: pd.DataFrame) -> pd.DataFrame:
    """The newest session's predictions, most confident "up" first, for the report."""
    latest = predicted[predicted["date"] == predicted["date"].max()]
    columns = ["ticker", "date", "proba_up", "predicted_up", "model_name", "model_version"]
    return latest.sort_values("proba_up", ascending=False, kind="stable")[columns].reset_index(drop=True)


def predictions_sentence(predicted: pd.DataFrame | None, champion: RegisteredVersion | None, ml: Any) -> str:
    if predicted is None or champion is None:
        return (f"No model has passed the gates {dict(ml.promotion.gates)} yet, so there are no predictions. "
                "The optimize stage then treats every ticker as a coin flip (expected return 0) and falls back "
                "to portfolios that need no forecast.")
    latest = latest_view(predicted)
    return (f"Champion {champion.label} expects {int(latest['predicted_up'].sum())} of {len(latest)} tickers to be "
            f"higher in {ml.horizon} sessions; probabilities range from {latest['proba_up'].min():.2f} to "
            f"{latest['proba_up'].max():.2f}.")


def _scored(model: Any, rows: pd.DataFrame, features: list[str]) -> pd.DataFrame:
    """Rows in the shape `classification_metrics` reads: date, label, proba, fwd_return."""
    predicted = prediction.predict(model, rows, features)
    return pd.DataFrame({
        "date": rows["date"].to_numpy(), "label": rows["label"].to_numpy(),
        "proba": predicted["proba_up"].to_numpy(), "fwd_return": rows["fwd_return"].to_numpy(),
    })


def _float_tag(tags: Mapping[str, str], key: str) -> float:
    try:
        return float(tags[key])
    except (KeyError, ValueError):
        return math.nan


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


# --------------------------------------------------------------------------- charts


def fold_chart(results: Mapping[str, prediction.CandidateResult], metric: str) -> Figure:
    """`metric` per walk-forward fold for each candidate, the holdout as the last point."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.6))
    for name, result in results.items():
        labels = [*result.fold_metrics["split"], "holdout"]
        values = [*pd.to_numeric(result.fold_metrics[metric], errors="coerce"), result.holdout_metrics.get(metric)]
        ax.plot(labels, values, marker="o", label=name)
    ax.axhline(0.5, color="grey", linewidth=0.8, linestyle="--", label="coin flip")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} per purged walk-forward fold and on the holdout")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    return fig


def importance_chart(importance: pd.DataFrame, candidate: str, top: int = 12) -> Figure:
    """The `top` inputs of one candidate by importance, largest at the top."""
    import matplotlib.pyplot as plt

    rows = importance.dropna(subset=["importance"]).head(top).iloc[::-1]
    fig, ax = plt.subplots(figsize=(7, max(2.5, 0.3 * len(rows) + 1.2)))
    ax.barh(rows["feature"], rows["importance"], xerr=rows["std"].fillna(0).to_numpy(), color="tab:blue")
    method = importance["method"].iloc[0] if len(importance) else ""
    label = {"abs_coefficient": "|coefficient| (standardized inputs)",
             "permutation_auc": "drop in ROC AUC when shuffled"}.get(method, method)
    ax.set_xlabel(label)
    ax.set_title(f"{candidate}: most important inputs")
    fig.tight_layout()
    return fig
