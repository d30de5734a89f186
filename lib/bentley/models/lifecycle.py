"""The train stage's steps: monitor the champion, train and register, decide, predict.

Order matters and is deliberate. The champion is checked *before* anything is trained, on
data it has not seen: its accuracy on the latest labelled sessions against the holdout
accuracy it was promoted with, and the drift (PSI) of every input between its training
window and the latest sessions. A drop beyond `ml.monitoring.max_degradation` writes
`retraining_required` to `model_monitoring`; the scheduler reacts by running `train` with
`ml.retrain=true`. Training happens when asked (`ml.retrain`) or when there is no champion
yet. Each candidate is cross-validated, fitted, registered as a version; the best mean CV
candidate becomes the challenger. Its holdout score is then put to the test (`Evidence`): its
own class refitted on shuffled training labels `ml.promotion.permutations` times gives the
p-value and the leakage control, a block bootstrap of the holdout the interval, and the
holdout's majority-class rate the accuracy floor; the champion is measured the same way on
the same rows, and `bentley.models.registry.decide` decides. Predictions always come from the
champion after the decision, so the optimize and trade stages read one model's view per run.

Models are point in time. Every version records `data_as_of`, the logical date of the run
that trained it (the last date whose data it could see), and a run for date D only ever
loads versions with `data_as_of <= D` (`usable_champion`). For the latest date that is the
registry's `champion` alias and everything above applies. A backdated run (D before the
champion's date) uses the newest version that was promoted for a date up to D, or trains
its own on data as of D; either way it never moves an alias, which belong to the latest date.

MLflow is reached only through the `ModelStore` passed in (bentley.tracking).

`run_training` is the stage: every step above in that order, its warehouse rows written as
they exist, returned as a `TrainingOutcome` whose `show_*` methods are the report's
sections. The notebook makes that one call and shows the result; whatever branches (a
champion or none, training or not, a decision or not) happens here, where tests reach it.

Cost follows the data (issue 19). The fits are independent, so the walk-forward refits of
every candidate, the shuffled-label refits and the candidates' importances run on a pool
of threads (`workers`), each fit on one OpenMP/BLAS thread: scikit-learn releases the GIL
in its numerical loops, and one thread per fit never oversubscribes the cores the way one
OpenMP pool per fit did. A logistic regression's shuffled-label refits are solved together
(`_logistic_null`): the labels' mean is the same in every permutation, so all the problems
share a starting point and a curvature bound, and one matrix product per iteration steps
them all to their optimum, the model `LogisticRegression` defines, solved more tightly
than its own solver's tolerance. Any other class's refits stop as soon as the test is
decided (`registry.refits_to_decide`: enough refits reached the score that the p-value
exceeds its maximum whatever the rest would score), so a challenger without skill costs
about ten refits instead of `permutations`, with the decision the full count gives.
Registration (serialization, digest, MLflow) runs in the
background while the challenger's evidence is computed (`register_candidates(...,
background=True)`). A long step reports how far it is through `progress` (the stage's
`StageContext.progress`): "refit 3/17 boosted", "shuffled labels 40/100".
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import os
import warnings
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pandas as pd
from sklearn.base import clone

from bentley.models import prediction, registry, splits
from bentley.monitoring import drift

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from sklearn.pipeline import Pipeline

    from bentley.tracking import ModelStore, RegisteredVersion

#: `predictions.kind`: the champion on unlabelled sessions, or out-of-sample CV rows.
LIVE, WALK_FORWARD = "live", "walk_forward"

#: Model-version tags written at registration (besides sha256, candidate and run_id).
FEATURES_TAG = "features"
TRAIN_END_TAG = "train_end"
TRAIN_START_TAG = "train_start"
#: The registering run's logical date: the last date whose data the model could see.
DATA_AS_OF_TAG = "data_as_of"
#: "true" on versions registered by a backdated run (which moves no alias).
BACKDATED_TAG = "backdated"
#: Written when a version becomes the champion for a logical date, backdated or not.
PROMOTED_FOR_TAG = "promoted_for"


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
    features: pd.DataFrame,
    prices: pd.DataFrame,
    sentiment: pd.DataFrame,
    ml: Any,
    benchmark: str,
    tradable: Collection[str] | None = None,
) -> TrainingData:
    """Model frame and splits. Rows are tradable names only (`bentley.inputs.tradable_tickers`;
    None: the `^` convention): the benchmark and every other index are inputs, never rows."""
    frame = prediction.model_frame(
        features, prices, sentiment, horizon=ml.horizon, exclude=[benchmark], tradable=tradable
    )
    labelled = np.sort(frame.loc[frame["label"].notna(), "date"].unique())
    walk_forward = splits.purged_walk_forward(
        labelled,
        refit_every_months=ml.refit_every_months,
        min_folds=ml.min_folds,
        horizon=ml.horizon,
        embargo=ml.embargo,
        holdout_sessions=ml.holdout_sessions,
        min_train_sessions=ml.min_train_sessions,
        max_train_rows=ml.max_train_rows,
        seed=ml.seed,
    )
    return TrainingData(frame=frame, feature_cols=prediction.feature_names(frame), walk_forward=walk_forward)


def dataset_sentence(data: TrainingData) -> str:
    """The dataset in one sentence, ending with the accuracy any model must beat on the holdout."""
    labels = data.frame["label"]
    holdout = data.rows(data.walk_forward.holdout.test)["label"]
    rate, up = prediction.majority_rate(holdout)
    cap = data.walk_forward.holdout.max_train_rows
    thinned = f" Each fit draws at most {cap:,} of its training rows (ml.max_train_rows)." if cap else ""
    return (
        f"{len(data.feature_cols)} inputs, {data.frame['ticker'].nunique()} tickers, {int(labels.notna().sum()):,} "
        f"labelled rows; the label is up on {labels.mean():.1%} of them. On the {len(holdout):,} holdout rows, "
        f"always predicting '{'up' if up else 'down'}' is right {rate:.1%} of the time: the accuracy any model "
        f"must beat.{thinned}"
    )


def split_table(data: TrainingData) -> pd.DataFrame:
    """One row per split: training and test date ranges and row counts, for the report."""
    rows = []
    for split in [*data.walk_forward.folds, data.walk_forward.holdout]:
        train, test = data.rows(split.train), data.rows(split.test)
        rows.append(
            {
                "split": split.name,
                "train_from": split.train.min(),
                "train_to": split.train.max(),
                "test_from": split.test.min(),
                "test_to": split.test.max(),
                "train_rows": len(train) if split.max_train_rows is None else min(len(train), split.max_train_rows),
                "test_rows": len(test),
            }
        )
    frame = pd.DataFrame(rows)
    for column in ("train_from", "train_to", "test_from", "test_to"):
        frame[column] = pd.to_datetime(frame[column]).dt.strftime("%Y-%m-%d")
    return frame


# --------------------------------------------------------------------------- point in time


@dataclass(frozen=True)
class ChampionChoice:
    """The champion a run for `as_of` may use, whether its decision may move aliases, and why."""

    version: RegisteredVersion | None
    as_of: dt.date
    backdated: bool  # a champion exists for a later date: aliases stay, new versions are tagged backdated
    reason: str  # one sentence for the report


def data_as_of(version: RegisteredVersion) -> dt.date:
    """The last date whose data `version` could see.

    A version registered before the tag existed counts as trained on data up to the day it
    was registered: never usable for an earlier date, since nothing says what it saw.
    """
    tagged = version.tags.get(DATA_AS_OF_TAG)
    if tagged:
        return dt.date.fromisoformat(tagged)
    return version.created.date() if version.created is not None else dt.date.max


def window_text(version: RegisteredVersion) -> str:
    """`v3 (data as of 2026-12-02, fitted on 2021-01-04 to 2026-08-20)`, for sentences."""
    return (
        f"{version.label} (data as of {data_as_of(version):%Y-%m-%d}, fitted on "
        f"{version.tags.get(TRAIN_START_TAG, '?')} to {version.tags.get(TRAIN_END_TAG, '?')})"
    )


def usable_champion(store: ModelStore, ml: Any, logical_date: dt.date, run_id: str) -> ChampionChoice:
    """The champion a run for `logical_date` may load: never one that saw later data.

    * The `champion` alias, when its `data_as_of` is not after the date: the run for the
      latest date, with the usual rules (monitoring, retraining, promotion moving aliases).
    * Else, when a champion exists for a later date (a backdated run): the newest version by
      (`data_as_of`, number) up to the date that was promoted for its own date, used read-only;
      or None, and the run trains its own. Nothing it does moves an alias.
    * No champion at all: None, the first-champion rules.

    Crashed versions, and versions registered by this same pipeline run (an earlier attempt
    that died or failed after registering), are never the champion: the champion such a
    version replaced is met instead, as a clean run would have met it.
    """
    versions = {v.version: v for v in store.versions(ml.registered_model)}
    own = {n for n, v in versions.items() if registry.registered_by(v) == run_id}
    alias = store.aliases(ml.registered_model).get(registry.CHAMPION)
    current = registry.champion_before(versions[alias], versions, own) if alias in versions else None
    when = f"{logical_date:%Y-%m-%d}"
    if current is not None and data_as_of(current) <= logical_date:
        return ChampionChoice(
            current,
            logical_date,
            False,
            f"The registry's champion {window_text(current)} saw no data after this run's "
            f"logical date {when}: it is this run's champion.",
        )
    promoted = [v for n, v in versions.items() if n not in own and not registry.is_crashed(v) and _promoted(v)]
    later = [v for v in [current, *promoted] if v is not None and data_as_of(v) > logical_date]
    if not later:
        return ChampionChoice(
            None, logical_date, False, "No champion is registered yet, so there is nothing to monitor."
        )
    newest = current or max(later, key=_recency)
    ahead = (
        f"The registry's champion {newest.label} was trained on data to {data_as_of(newest):%Y-%m-%d}, "
        f"after this run's logical date {when}"
    )
    earlier = [v for v in promoted if data_as_of(v) <= logical_date]
    if not earlier:
        return ChampionChoice(
            None,
            logical_date,
            True,
            f"{ahead}, and no version was promoted for a date up to {when}: this run trains on "
            "its own data and registers backdated versions, moving no alias.",
        )
    chosen = max(earlier, key=_recency)
    return ChampionChoice(
        chosen,
        logical_date,
        True,
        f"{ahead}; using {window_text(chosen)}, the newest version promoted for a date up to "
        f"{when}, read-only: no alias moves in this run.",
    )


def _promoted(version: RegisteredVersion) -> bool:
    """Promoted for its date: `promoted_for`, or the decision tag of versions older than it."""
    return bool(version.tags.get(PROMOTED_FOR_TAG)) or version.tags.get("promotion_decision") == "promoted"


def _recency(version: RegisteredVersion) -> tuple[dt.date, int]:
    return data_as_of(version), int(version.version)


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
    latest = data.rows(np.sort(data.frame["date"].unique())[-settings.recent_sessions :], labelled=False)
    present = [f for f in features if f in data.frame.columns]
    psi = drift.feature_psi(data.frame[trained], latest, columns=present, bins=settings.psi_bins)
    significant = int((psi["status"] == "significant").sum())
    required = bool(missing) or (math.isfinite(degradation) and degradation > settings.max_degradation)
    if missing:
        reason = f"the champion's inputs {', '.join(missing)} are no longer produced: retrain"
    elif required:
        reason = (
            f"accuracy {metrics['accuracy']:.3f} on the last {len(recent_dates)} labelled sessions is "
            f"{degradation:.1%} below its holdout accuracy {holdout_accuracy:.3f} "
            f"(limit {settings.max_degradation:.0%}): retrain"
        )
    else:
        reason = (
            f"accuracy {metrics['accuracy']:.3f} on the last {len(recent_dates)} labelled sessions vs "
            f"{holdout_accuracy:.3f} on its holdout: within the {settings.max_degradation:.0%} limit"
        )
    row = {
        "run_id": run_id,
        "model_name": champion.name,
        "model_version": champion.version,
        "as_of": as_of,
        "holdout_accuracy": holdout_accuracy,
        "recent_accuracy": metrics["accuracy"],
        "degradation": degradation,
        "n_recent": len(recent),
        "max_psi": float(psi["psi"].max()) if psi["psi"].notna().any() else math.nan,
        "drifted_features": significant,
        "retraining_required": required,
        "reason": reason,
    }
    return Monitoring(row=row, drift=psi)


def training_reason(choice: ChampionChoice, retrain: bool, monitoring: Monitoring | None) -> tuple[bool, str]:
    """Whether this run trains, and why, in one sentence for the report."""
    champion = choice.version
    if champion is None and choice.backdated:
        return True, (
            f"No model may be used for {choice.as_of:%Y-%m-%d} yet: this run trains one on data as of "
            "that date, registered as a backdated version that no alias points at."
        )
    if champion is None:
        return True, "No champion is registered yet: this run trains the first one."
    if retrain:
        return True, f"`ml.retrain` is true: a challenger is trained against champion {champion.label}."
    flagged = monitoring is not None and monitoring.retraining_required
    note = " Monitoring asks for retraining; the scheduler (or `--set ml.retrain=true`) starts it." if flagged else ""
    return False, f"Champion {champion.label} is kept without training (`ml.retrain` is false).{note}"


# --------------------------------------------------------------------------- training


def model_specs(ml: Any) -> dict[str, dict[str, Any]]:
    """Candidate name -> `{class, kwargs}` as declared in params."""
    return {name: spec.model_dump(by_alias=True) for name, spec in ml.models.items()}


Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


def default_workers() -> int:
    """Threads for independent fits: the machine's cores (each fit runs on one thread)."""
    return max(1, os.cpu_count() or 1)


def _one_thread_per_fit() -> None:
    """Worker-thread initializer: OpenMP (and BLAS) pools of one thread inside each fit."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1)


@contextlib.contextmanager
def _pool(workers: int | None) -> Iterator[ThreadPoolExecutor]:
    """Threads for independent fits, and the warning filters as they were once they are done.

    `warnings.catch_warnings` (which `prediction._fit` uses around `np.nanmedian`) saves and
    restores the process-wide filter list, so two threads using it at once can lose each
    other's filter or leave one behind: while the pool works, the one warning those blocks
    silence is silenced for every thread, and afterwards the filter list is put back exactly
    as it was, so later cells meet the warnings a sequential run would have shown them.
    """
    saved = warnings.filters[:]
    warnings.filterwarnings("ignore", message="All-NaN slice encountered", category=RuntimeWarning)
    try:
        with ThreadPoolExecutor(
            max(1, workers or default_workers()), thread_name_prefix="fit", initializer=_one_thread_per_fit
        ) as pool:
            yield pool
    finally:
        cast("list[Any]", warnings.filters)[:] = saved  # a list at runtime; the stubs say Sequence
        getattr(warnings, "_filters_mutated", lambda: None)()


def train_candidates(
    data: TrainingData, ml: Any, progress: Progress | None = None, workers: int | None = None
) -> dict[str, prediction.CandidateResult]:
    """Every candidate through its walk-forward refits and the holdout fit (see
    `prediction.evaluate_candidate`, which this gives the same results as), the fits of all
    candidates sharing one pool of `workers` threads, each refit reported to `progress`."""
    say = progress or _quiet
    labelled = prediction._labelled(data.frame, data.feature_cols)
    specs = model_specs(ml)
    splits_ = [*data.walk_forward.refits, data.walk_forward.holdout]
    with _pool(workers) as pool:
        planned = {
            name: [
                pool.submit(
                    prediction._fit_and_score,
                    labelled,
                    data.feature_cols,
                    name,
                    prediction.build_estimator(name, spec, seed=ml.seed),
                    split,
                )
                for split in splits_
            ]
            for name, spec in specs.items()
        }
        total, done = sum(map(len, planned.values())), 0
        for name, futures in planned.items():  # results in order; progress as they arrive
            for number, future in enumerate(futures, start=1):
                future.result()
                done += 1
                say(f"training: refit {number}/{len(futures)} of {name} ({done}/{total} fits)")
    return {
        name: _candidate_result(name, specs[name], [f.result() for f in futures], data.walk_forward)
        for name, futures in planned.items()
    }


def _candidate_result(
    name: str,
    spec: Mapping[str, Any],
    fitted: Sequence[Any],
    walk_forward: splits.WalkForward,
) -> prediction.CandidateResult:
    """`prediction.evaluate_candidate`'s result from the fits of its refits and holdout, in that order."""
    out_of_sample = pd.concat([predictions for _, predictions in fitted[:-1]], ignore_index=True)
    predicted_dates = out_of_sample["date"]
    fold_rows = [
        {
            "split": fold.name,
            **prediction.classification_metrics(out_of_sample[splits.rows_in(predicted_dates, fold.test)]),
        }
        for fold in walk_forward.folds
    ]
    model, holdout = fitted[-1]
    train_dates = walk_forward.holdout.train  # the window, whichever of its rows a capped fit drew
    return prediction.CandidateResult(
        name=name,
        spec=spec,
        model=model,
        fold_metrics=pd.DataFrame(fold_rows, columns=["split", *prediction.METRIC_NAMES]),
        holdout_metrics=prediction.classification_metrics(holdout),
        holdout_predictions=holdout,
        out_of_sample=out_of_sample,
        train_start=pd.Timestamp(train_dates.min()),
        train_end=pd.Timestamp(train_dates.max()),
    )


def importances(result: prediction.CandidateResult, data: TrainingData, ml: Any) -> pd.DataFrame:
    """Importances measured on the holdout, which the final model has not seen."""
    holdout = data.rows(data.walk_forward.holdout.test)
    return prediction.feature_importances(
        result.model,
        holdout[data.feature_cols],
        holdout["label"].to_numpy(),
        seed=ml.seed,
        n_repeats=ml.importance.n_repeats,
        max_rows=ml.importance.max_rows,
    )


def all_importances(
    results: Mapping[str, prediction.CandidateResult], data: TrainingData, ml: Any, workers: int | None = None
) -> dict[str, pd.DataFrame]:
    """`importances` of every candidate, side by side on a pool of threads."""
    with _pool(workers) as pool:
        futures = {name: pool.submit(importances, result, data, ml) for name, result in results.items()}
        return {name: future.result() for name, future in futures.items()}


def cv_summary(results: Mapping[str, prediction.CandidateResult]) -> pd.DataFrame:
    """Mean and standard deviation over the folds, and the holdout value, per candidate and metric."""
    rows = []
    for name, result in results.items():
        folds = result.fold_metrics.drop(columns=["split"])
        for metric in folds.columns:
            if metric == "n":
                continue
            values = pd.to_numeric(folds[metric], errors="coerce")
            rows.append(
                {
                    "candidate": name,
                    "metric": metric,
                    "cv_mean": values.mean(),
                    "cv_std": values.std(ddof=1),
                    "holdout": result.holdout_metrics.get(metric, math.nan),
                }
            )
    table = pd.DataFrame(rows)
    return table.pivot(index="metric", columns="candidate", values=["cv_mean", "cv_std", "holdout"])


def version_tags(
    result: prediction.CandidateResult, data: TrainingData, ml: Any, run_id: str, choice: ChampionChoice
) -> dict[str, str]:
    """What a later run needs to score, monitor, compare and date this version without guessing."""
    tags = {
        FEATURES_TAG: ",".join(data.feature_cols),
        "horizon": str(ml.horizon),
        DATA_AS_OF_TAG: f"{choice.as_of:%Y-%m-%d}",
        TRAIN_START_TAG: f"{result.train_start:%Y-%m-%d}",
        TRAIN_END_TAG: f"{result.train_end:%Y-%m-%d}",
        "holdout_start": f"{data.holdout_start:%Y-%m-%d}",
        "holdout_end": f"{data.holdout_end:%Y-%m-%d}",
        "pipeline_run_id": run_id,
    }
    if choice.backdated:
        tags[BACKDATED_TAG] = "true"
    tags.update({f"holdout_{k}": f"{v:.6g}" for k, v in result.holdout_metrics.items() if _finite(v)})
    return tags


def register_candidates(
    store: ModelStore,
    results: Mapping[str, prediction.CandidateResult],
    importance: Mapping[str, pd.DataFrame],
    data: TrainingData,
    ml: Any,
    choice: ChampionChoice,
    *,
    run_id: str,
    config: Mapping[str, Any],
    parent_run_id: str | None,
    background: bool = False,
) -> Any:
    """Every trained candidate becomes a version of `ml.registered_model` (the same one again
    when this pipeline run already registered that identical model: see `ModelStore.log_candidate`).

    `background=True` returns at once with a `Future` of the versions: serializing, hashing and
    logging the models then overlaps the challenger's evidence, and `promote` waits for it
    before it tags anything (the store is not used by anything else meanwhile).
    """
    if background:
        executor = ThreadPoolExecutor(1, thread_name_prefix="register")
        future = executor.submit(
            register_candidates,
            store,
            results,
            importance,
            data,
            ml,
            choice,
            run_id=run_id,
            config=config,
            parent_run_id=parent_run_id,
        )
        executor.shutdown(wait=False)
        return future
    example = data.rows(data.walk_forward.holdout.test)[data.feature_cols]
    versions = {}
    for name, result in results.items():
        versions[name] = store.log_candidate(
            model_name=ml.registered_model,
            candidate=name,
            model=result.model,
            example=example,
            params={
                "candidate": name,
                "model": result.spec,
                "ml": config["ml"],
                "features": data.feature_cols,
                "train_start": f"{result.train_start:%Y-%m-%d}",
                "train_end": f"{result.train_end:%Y-%m-%d}",
            },
            fold_metrics=result.fold_metrics,
            holdout_metrics=result.holdout_metrics,
            importances=importance[name],
            config=config,
            pipeline_run_id=run_id,
            version_tags=version_tags(result, data, ml, run_id, choice),
            parent_run_id=parent_run_id,
        )
    return versions


def score_on_holdout(
    model: Any, champion: RegisteredVersion, data: TrainingData
) -> tuple[pd.DataFrame | None, str | None]:
    """The champion's predictions on this run's holdout rows, or why it cannot be fairly scored."""
    features = champion.tags[FEATURES_TAG].split(",")
    missing = sorted(set(features) - set(data.frame.columns))
    if missing:
        return None, f"champion {champion.label} needs inputs this run does not produce ({', '.join(missing)})"
    trained_until = pd.Timestamp(champion.tags[TRAIN_END_TAG])
    if trained_until >= data.holdout_start:
        return None, (
            f"champion {champion.label} was trained on data up to {trained_until:%Y-%m-%d}, inside this "
            f"holdout (from {data.holdout_start:%Y-%m-%d}); a backfill cannot judge it fairly"
        )
    return _scored(model, data.rows(data.walk_forward.holdout.test), features), None


def holdout_evidence(
    template: Pipeline,
    features: list[str],
    scored: pd.DataFrame,
    data: TrainingData,
    ml: Any,
    progress: Progress | None = None,
    workers: int | None = None,
) -> registry.Evidence:
    """A model's holdout predictions `scored`, and what it takes to believe them.

    `template` is the model's unfitted pipeline (its class, hyperparameters and seed): it is
    refitted on this run's holdout training rows with shuffled labels, so the p-value
    compares the model with no-information models of its own class on the same rows. Only
    the final training window is refitted, not every fold: that is the window the holdout
    is scored from, and it keeps the refits affordable.
    """
    settings = ml.promotion
    rate, up = prediction.majority_rate(scored["label"])
    metrics = prediction.classification_metrics(scored)
    value = metrics.get(settings.metric, math.nan)
    return registry.Evidence(
        metric=settings.metric,
        metrics=metrics,
        null=shuffled_label_null(
            data.frame,
            features,
            template,
            data.walk_forward.holdout,
            settings.metric,
            permutations=settings.permutations,
            seed=ml.seed,
            progress=progress,
            workers=workers,
            value=value,
            stop_after=registry.refits_to_decide(settings.permutations, settings.max_p_value)
            if math.isfinite(value)
            else None,
        ),
        ci=prediction.bootstrap_interval(
            scored,
            settings.metric,
            block_sessions=ml.horizon,
            resamples=settings.bootstrap,
            confidence=settings.confidence,
            seed=ml.seed,
        ),
        confidence=settings.confidence,
        majority_rate=rate,
        majority_up=up,
        model_class=type(template[-1]).__name__,
        permutations=settings.permutations,
    )


def shuffled_label_null(
    frame: pd.DataFrame,
    feature_cols: Sequence[str],
    template: Pipeline,
    split: splits.Split,
    metric: str,
    *,
    permutations: int,
    seed: int,
    progress: Progress | None = None,
    workers: int | None = None,
    value: float | None = None,
    stop_after: int | None = None,
) -> np.ndarray:
    """`prediction.shuffled_label_scores`, computed faster: the same permutations (the same
    generator, seed and order), the same refits of the template's class on the split's
    training rows, scored on its test rows.

    A plain L2 logistic regression (`_is_plain_logistic`) has all its refits solved together
    (`_logistic_null`), all of them, since they cost little more than one. Any other class
    is refitted once per permutation on a pool of threads, and with `value` (the model's own
    score) and `stop_after` (`registry.refits_to_decide`) the refits stop at the first
    permutation, in order, at which `stop_after` of them have reached `value`: the test's
    outcome is settled then (module docstring of `registry`), and the scores up to there are
    returned. The cut depends on the permutations only, never on which thread finished first.
    """
    say = progress or _quiet
    data = prediction._labelled(frame, feature_cols)
    dates = data.rows["date"]
    train, test = split.train_rows(dates), splits.rows_in(dates, split.test)
    y_train = data.y[train]
    if np.unique(y_train).size < 2:
        raise ValueError(f"{split.name} (shuffled labels): {y_train.size} training rows hold fewer than two classes")
    inputs = clone(template)
    z_train = prediction._fit_inputs(inputs, data.x[train], feature_cols)
    z_test = inputs[:-1].transform(prediction._design(data.x[test], feature_cols))
    rows = data.rows.loc[test, ["date", "label", "fwd_return"]].reset_index(drop=True)
    rng = np.random.default_rng(seed)
    shuffled = [rng.permutation(y_train) for _ in range(permutations)]

    def score(proba: np.ndarray) -> float:
        return prediction.metric_value(rows.assign(proba=proba), metric)

    classifier = template[-1]
    if _is_plain_logistic(classifier):
        say(f"shuffled labels: {permutations} logistic refits solved together")
        proba = _logistic_null(z_train, np.column_stack(shuffled), z_test, c=float(classifier.C))
        return np.array([score(proba[:, k]) for k in range(permutations)])

    def refit(labels: np.ndarray) -> float:
        fitted = clone(classifier).fit(z_train, labels)
        return score(fitted.predict_proba(z_test)[:, list(fitted.classes_).index(1.0)])

    scores = np.empty(permutations)
    reached = 0
    with _pool(workers) as pool:
        futures = [pool.submit(refit, labels) for labels in shuffled]
        step = max(1, permutations // 10)
        for i, future in enumerate(futures):
            scores[i] = future.result()
            if (i + 1) % step == 0 or i + 1 == permutations:
                say(f"shuffled labels: refit {i + 1}/{permutations} of {type(classifier).__name__}")
            if value is None or stop_after is None:
                continue
            reached += int(registry.reaches(scores[i : i + 1], value)[0])
            if reached >= stop_after:
                for pending in futures[i + 1 :]:
                    pending.cancel()
                say(f"shuffled labels: {reached} of {i + 1} refits reached the model's score, the test is decided")
                return scores[: i + 1]
    return scores


def _is_plain_logistic(classifier: Any) -> bool:
    """An L2-penalised binary logistic regression with an intercept and no class weights, which
    every solver but liblinear (it penalises the intercept too) fits to one optimum."""
    from sklearn.linear_model import LogisticRegression

    if type(classifier) is not LogisticRegression:
        return False
    params = classifier.get_params()
    penalty, ratio = params.get("penalty", "l2"), params.get("l1_ratio")
    l2 = (penalty == "l2" and ratio in (None, 0, 0.0)) or (penalty == "deprecated" and ratio in (None, 0, 0.0))
    c = params.get("C", 1.0)
    return bool(
        l2
        and params.get("fit_intercept", True)
        and params.get("class_weight") is None
        and not params.get("dual", False)
        and params.get("solver") != "liblinear"
        and isinstance(c, int | float)
        and math.isfinite(c)
        and c > 0
    )


def _logistic_null(
    z_train: np.ndarray,
    labels: np.ndarray,
    z_test: np.ndarray,
    *,
    c: float,
    tolerance: float = 1e-10,
    max_iter: int = 200,
) -> np.ndarray:
    """P(up) on `z_test` of L2 logistic regressions fitted on `z_train` with each column of `labels`.

    Each column k solves LogisticRegression's problem, min over (w, b) of
    `c` * sum_i log(1 + exp(-s_ik (z_i . w + b))) + |w|^2 / 2, the problem its lbfgs solver
    stops within `tol` (1e-4) of. All columns step together: Böhning's bound
    B = c X'X / 4 + diag(1, .., 1, 0) (X = [z, 1]) is at least the Hessian everywhere, so
    `theta -= B^-1 gradient` never increases an objective and converges to its optimum (a
    majorize-minimize step; with labels carrying no information the fitted probabilities stay
    near the mean label, where the bound is nearly the Hessian, so it takes a few steps). One
    Cholesky factor serves every step and column; columns are solved in blocks that keep
    the n x block matrices small. A column whose gradient (scaled as lbfgs scales it) is not
    below `tolerance` after `max_iter` steps is refitted by LogisticRegression itself.
    """
    from scipy.linalg import cho_factor, cho_solve
    from scipy.special import expit, logit

    n, p = z_train.shape
    x = np.hstack([z_train, np.ones((n, 1))])
    x_test = np.hstack([z_test, np.ones((z_test.shape[0], 1))])
    penalty = np.ones(p + 1)
    penalty[-1] = 0.0  # the intercept is not penalised
    factor = cho_factor(0.25 * c * (x.T @ x) + np.diag(penalty))
    out = np.empty((z_test.shape[0], labels.shape[1]))
    block = max(1, min(labels.shape[1], 4_000_000 // max(n, 1)))
    for start in range(0, labels.shape[1], block):
        y = labels[:, start : start + block].astype(np.float64)
        theta = np.zeros((p + 1, y.shape[1]))
        theta[-1] = logit(np.clip(y.mean(axis=0), 1e-12, 1 - 1e-12))
        active = np.ones(y.shape[1], dtype=bool)
        for _ in range(max_iter):
            gradient = c * (x.T @ (expit(x @ theta[:, active]) - y[:, active])) + penalty[:, None] * theta[:, active]
            done = np.abs(gradient).max(axis=0) / (c * n) <= tolerance
            columns = np.flatnonzero(active)
            theta[:, columns[~done]] -= cho_solve(factor, gradient[:, ~done])
            active[columns[done]] = False
            if not active.any():
                break
        for k in np.flatnonzero(active):  # did not converge: the class's own solver decides
            from sklearn.linear_model import LogisticRegression

            fitted = LogisticRegression(C=c, max_iter=10_000, tol=1e-10).fit(z_train, y[:, k])
            theta[:-1, k], theta[-1, k] = fitted.coef_[0], fitted.intercept_[0]
        out[:, start : start + block] = expit(x_test @ theta)
    return out


@dataclass
class Outcome:
    """The A/B decision of one training run, in the shapes the report and warehouse need."""

    decision: registry.Decision  # with both models' evidence
    candidate: str  # the challenger's name in ml.models
    challenger: RegisteredVersion
    champion: RegisteredVersion | None  # this run's champion, before the decision
    table: pd.DataFrame  # both models' holdout metrics, evidence and what promotion requires
    row: pd.DataFrame  # one row of model_decisions


def promote(
    store: ModelStore,
    results: Mapping[str, prediction.CandidateResult],
    versions: Mapping[str, RegisteredVersion] | Future[dict[str, RegisteredVersion]],
    choice: ChampionChoice,
    champion_model: Any,
    data: TrainingData,
    ml: Any,
    run_id: str,
    progress: Progress | None = None,
    workers: int | None = None,
) -> Outcome:
    """Best CV candidate vs this run's champion on the same holdout, each with its evidence;
    tags (and aliases, for the latest date) follow the decision. `versions` may still be
    registering (`register_candidates(..., background=True)`): it is waited for before any tag."""
    champion = choice.version
    name = registry.pick_challenger({n: r.fold_metrics for n, r in results.items()}, ml.promotion.metric)
    result = results[name]
    say = progress or _quiet
    evidence = holdout_evidence(
        prediction.build_estimator(name, result.spec, seed=ml.seed),
        data.feature_cols,
        result.holdout_predictions,
        data,
        ml,
        progress=lambda text: say(f"challenger {name}: {text}"),
        workers=workers,
    )
    champion_evidence, unfit = None, None
    if champion is not None:
        scored, unfit = score_on_holdout(champion_model, champion, data)
        if scored is not None:
            champion_evidence = holdout_evidence(
                clone(champion_model),
                champion.tags[FEATURES_TAG].split(","),
                scored,
                data,
                ml,
                workers=workers,
                progress=lambda text: say(f"champion {champion.label}: {text}"),
            )
    if isinstance(versions, Future):
        say("waiting for the candidates' registration")
        versions = versions.result()
    challenger = versions[name]
    decision = registry.decide(evidence, champion_evidence, promotion=ml.promotion, champion_unfit=unfit)
    apply_decision(store, decision, ml.registered_model, challenger, choice)
    row = pd.DataFrame(
        [
            {
                "run_id": run_id,
                "model_name": ml.registered_model,
                "challenger_version": challenger.version,
                "champion_version": None if champion is None else champion.version,
                **decision.as_row(),
                "decided_at": dt.datetime.now(dt.UTC),
            }
        ]
    )
    table = decision_table(decision, challenger, champion, ml.promotion)
    return Outcome(decision=decision, candidate=name, challenger=challenger, champion=champion, table=table, row=row)


def apply_decision(
    store: ModelStore,
    decision: registry.Decision,
    model_name: str,
    challenger: RegisteredVersion,
    choice: ChampionChoice,
) -> None:
    """The decision tags on the challenger's version, then its aliases unless the run is backdated.

    A promoted version gets `promoted_for` (the run's logical date), which is what a backdated
    run later looks for. Tags go first and name the champion being replaced, so
    `registry.mark_crashed_versions` can put it back if the run dies before its outputs exist.
    The evidence goes with them: whoever loads the version can see how far its score was
    from luck.
    """
    evidence = decision.challenger
    tags = {
        "promotion_decision": "promoted" if decision.promoted else "rejected",
        "promotion_reason": decision.reason,
        "promotion_verdict": decision.verdict,
        "promotion_metric": decision.metric,
        "promotion_champion_value": "" if decision.champion_value is None else f"{decision.champion_value:.6g}",
        "promotion_holdout_rows": str(evidence.rows),
        "promotion_p_value": f"{evidence.p_value:.6g}",
        "promotion_permutations": str(evidence.null.size),
        "promotion_ci_lower": f"{evidence.ci[0]:.6g}",
        "promotion_ci_upper": f"{evidence.ci[1]:.6g}",
        "promotion_confidence": f"{evidence.confidence:g}",
        "promotion_majority_rate": f"{evidence.majority_rate:.6g}",
    }
    if decision.promoted:
        tags[PROMOTED_FOR_TAG] = f"{choice.as_of:%Y-%m-%d}"
        if choice.version is not None and not choice.backdated:
            tags[registry.REPLACED_CHAMPION_TAG] = choice.version.version
    store.tag_version(challenger, tags)
    if choice.backdated:
        return
    store.set_alias(model_name, registry.CHALLENGER, challenger.version)
    if decision.promoted:
        store.set_alias(model_name, registry.CHAMPION, challenger.version)


#: Rows `decision_table` adds below the metrics: the evidence, named as in `model_decisions`.
EVIDENCE_ROWS: tuple[str, ...] = ("holdout_rows", "p_value", "ci_lower", "ci_upper", "majority_rate")


def decision_table(
    decision: registry.Decision, challenger: RegisteredVersion, champion: RegisteredVersion | None, promotion: Any
) -> pd.DataFrame:
    """Side by side on the same holdout: both models' metrics and evidence, and what promotion requires."""
    metrics = [m for m in prediction.METRIC_NAMES if m != "n"]

    def column(evidence: registry.Evidence | None) -> list[float]:
        if evidence is None:
            return [math.nan] * (len(metrics) + len(EVIDENCE_ROWS))
        return [
            *(evidence.metrics.get(m, math.nan) for m in metrics),
            float(evidence.rows),
            evidence.p_value,
            *evidence.ci,
            evidence.majority_rate,
        ]

    no_skill = decision.challenger.no_skill
    required = {m: f">= {minimum:g}" for m, minimum in promotion.gates.items()}
    if promotion.beat_majority:
        required["accuracy"] = " and ".join(filter(None, [required.get("accuracy"), "> majority_rate"]))
    required.update(
        {
            "holdout_rows": f">= {promotion.min_holdout_rows}",
            "p_value": f"<= {promotion.max_p_value:g}",
            "ci_lower": f"> {no_skill:.4g}" if promotion.ci_lower_above_no_skill else "",
        }
    )
    return pd.DataFrame(
        {
            f"challenger {challenger.label}": column(decision.challenger),
            ("champion " + champion.label) if champion is not None else "champion (none)": column(decision.champion),
            "required": [required.get(m, "") for m in [*metrics, *EVIDENCE_ROWS]],
        },
        index=pd.Index([*metrics, *EVIDENCE_ROWS], name="metric"),
    )


def control_sentence(outcome: Outcome) -> str:
    """The shuffled-label control of the challenger's own class, for the report."""
    evidence = outcome.decision.challenger
    low, high = np.percentile(evidence.null, [5, 95])
    metric = evidence.metric
    stopped = (
        f" (of the {evidence.permutations} planned: the test was decided once {evidence.reached} of them had "
        "reached the challenger's score, so the rest were not fitted)"
        if evidence.stopped_early
        else ""
    )
    return (
        f"{evidence.model_class} (the class of the challenger, `{outcome.candidate}`) refitted "
        f"{evidence.null.size} times{stopped} on shuffled training labels: mean holdout {metric} "
        f"{evidence.null.mean():.3f}, 5–95% of the refits between {low:.3f} and {high:.3f}; no information "
        f"scores {evidence.no_skill:.3f}. A mean clearly above that means information reaches the model "
        f"another way than through the labels. The challenger's {evidence.value:.3f} is matched or beaten by "
        f"{evidence.reached} of them (p = {evidence.p_value:.2g})."
    )


# --------------------------------------------------------------------------- predictions


def champion_after(
    store: ModelStore, outcome: Outcome | None, choice: ChampionChoice, model_before: Any
) -> tuple[RegisteredVersion | None, Any]:
    """The model this run predicts with and the version: the challenger if promoted (loaded through
    the checksum check), else this run's champion (already loaded).

    Taken from the decision, not re-read from the alias, so a backdated run (which moves no
    alias) predicts with its own point-in-time model and never with a later one.
    """
    if outcome is not None and outcome.decision.promoted:
        return outcome.challenger, store.load(outcome.challenger)
    return choice.version, model_before


def latest_predictions(
    model: Any, champion: RegisteredVersion, data: TrainingData, ml: Any, run_id: str
) -> pd.DataFrame:
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
    """A candidate's walk-forward probabilities (every calendar refit's block, through the
    holdout) under its registered version.

    The trade stage backtests the champion's signal on these: each row comes from a model
    that never saw that session, so the backtest does not grade the model on its homework,
    and from a refit on a calendar date, so the row is the same whichever later day the
    stage runs for.
    """
    rows = result.out_of_sample
    return pd.DataFrame(
        {
            "run_id": run_id,
            "ticker": rows["ticker"].to_numpy(),
            "date": rows["date"].to_numpy(),
            "proba_up": rows["proba"].to_numpy(),
            "predicted_up": rows["proba"].to_numpy() >= 0.5,
            "horizon": ml.horizon,
            "model_name": version.name,
            "model_version": version.version,
            "predicted_at": dt.datetime.now(dt.UTC),
            "kind": WALK_FORWARD,
        }
    )


def latest_view(predicted: pd.DataFrame) -> pd.DataFrame:
    """The newest session's predictions, most confident "up" first, for the report."""
    latest = predicted[predicted["date"] == predicted["date"].max()]
    columns = ["ticker", "date", "proba_up", "predicted_up", "model_name", "model_version"]
    return latest.sort_values("proba_up", ascending=False, kind="stable")[columns].reset_index(drop=True)


def predictions_sentence(
    predicted: pd.DataFrame | None,
    version: RegisteredVersion | None,
    choice: ChampionChoice,
    outcome: Outcome | None,
    ml: Any,
) -> str:
    """Which version predicts for this run's date, its training window and why, then what it expects."""
    when = f"{choice.as_of:%Y-%m-%d}"
    if predicted is None or version is None:
        unusable = "no version promoted for a date up to it exists and " if choice.backdated else ""
        return (
            f"No model predicts for {when}: {unusable}none trained in this run passed the gates "
            f"{dict(ml.promotion.gates)}, so there are no predictions. The optimize stage then treats every "
            "ticker as a coin flip (expected return 0) and falls back to portfolios that need no forecast."
        )
    if outcome is not None and outcome.decision.promoted:
        why = (
            "it was promoted in this run for this date only (backdated: no alias moved)"
            if choice.backdated
            else "it was promoted in this run and is now the registry's champion"
        )
    elif choice.backdated:
        why = f"the registry's champion saw data after {when}; this is the newest version promoted for a date up to it"
    else:
        why = "it is the registry's champion and saw no data after this date"
    latest = latest_view(predicted)
    return (
        f"{window_text(version)} predicts for {when}: {why}. It expects {int(latest['predicted_up'].sum())} of "
        f"{len(latest)} tickers to be higher in {ml.horizon} sessions; probabilities range from "
        f"{latest['proba_up'].min():.2f} to {latest['proba_up'].max():.2f}."
    )


def _scored(model: Any, rows: pd.DataFrame, features: list[str]) -> pd.DataFrame:
    """Rows in the shape `classification_metrics` reads: date, label, proba, fwd_return."""
    predicted = prediction.predict(model, rows, features)
    return pd.DataFrame(
        {
            "date": rows["date"].to_numpy(),
            "label": rows["label"].to_numpy(),
            "proba": predicted["proba_up"].to_numpy(),
            "fwd_return": rows["fwd_return"].to_numpy(),
        }
    )


def _float_tag(tags: Mapping[str, str], key: str) -> float:
    try:
        return float(tags[key])
    except (KeyError, ValueError):
        return math.nan


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


# --------------------------------------------------------------------------- the stage


@dataclass
class TrainingOutcome:
    """What one run of the train stage did, in the order it did it, and how to show it.

    `run_training` fills it; the notebook only displays it, section by section (`show_*`),
    so the lifecycle's branches (a champion or none, training or not, a decision or not,
    predictions or not) live here, each display saying what happened when a step did not run.
    """

    ml: Any
    data: TrainingData
    choice: ChampionChoice  # this run's champion before anything was trained, and why
    monitoring: Monitoring | None  # None: no champion to monitor
    trains: bool
    training_reason: str
    results: dict[str, prediction.CandidateResult]  # empty when nothing was trained
    importance: dict[str, pd.DataFrame]
    decision: Outcome | None  # None when nothing was trained
    predictor: RegisteredVersion | None  # the version that predicts for this date after the decision
    predicted: pd.DataFrame | None  # its predictions (None: no model may predict)

    @property
    def metrics(self) -> dict[str, float]:
        """The numbers the runner logs to MLflow for this stage."""
        frame = self.data.frame
        numbers: dict[str, float] = {
            "rows": len(frame),
            "labelled_rows": int(frame["label"].notna().sum()),
            "inputs": len(self.data.feature_cols),
            "backdated": self.choice.backdated,
            "candidates_trained": len(self.results),
        }
        if self.monitoring is not None:
            numbers["champion_recent_accuracy"] = self.monitoring.row["recent_accuracy"]
            numbers["retraining_required"] = self.monitoring.retraining_required
        if self.decision is not None:
            evidence = self.decision.decision.challenger
            numbers["promoted"] = self.decision.decision.promoted
            numbers.update({f"challenger_holdout_{k}": v for k, v in self.decision.table.iloc[:, 0].items()})
            numbers[f"shuffled_label_{evidence.metric}"] = float(evidence.null.mean())
            numbers["shuffled_label_refits"] = evidence.null.size
        if self.predicted is not None and self.predictor is not None:
            numbers["predictions"] = len(self.predicted)
            numbers["champion_version"] = float(self.predictor.version)
        return {name: float(value) for name, value in numbers.items()}

    def show_dataset(self) -> None:
        """The splits table and the dataset in one sentence."""
        from bentley import reporting

        _display(split_table(self.data))
        reporting.say(dataset_sentence(self.data))

    def show_monitoring(self) -> None:
        """The champion's input drift (when there is a champion) and what monitoring concluded."""
        from bentley import reporting
        from bentley.monitoring import drift

        if self.monitoring is not None:
            reporting.show(drift.drift_chart(self.monitoring.drift.head(15)))
        note = f" Monitoring: {self.monitoring.row['reason']}." if self.monitoring is not None else ""
        reporting.say(self.choice.reason + note)

    def show_training(self) -> None:
        """Why this run trains or not; the candidates' CV summary, fold chart and importances."""
        from bentley import reporting

        reporting.say(self.training_reason)
        if not self.results:
            reporting.say("No candidate was trained in this run.")
            return
        _display(reporting.rounded(cv_summary(self.results), 4))
        reporting.show(fold_chart(self.results, self.ml.promotion.metric))
        for name, table in self.importance.items():
            reporting.show(importance_chart(table, name))

    def show_decision(self) -> None:
        """Both models' holdout record side by side, and the decision in words."""
        from bentley import reporting

        if self.decision is None:
            champion = self.choice.version
            kept = f"Champion {reporting.md_escape(champion.label)} stays." if champion is not None else ""
            reporting.say(" ".join(filter(None, ["No challenger this run.", kept])))
            return
        _display(reporting.rounded(self.decision.table, 4))
        reporting.say(
            f"**{reporting.md_escape(self.decision.challenger.label)}** — "
            f"{reporting.md_escape(self.decision.decision.verdict)}"
        )

    def show_control(self) -> None:
        """The shuffled-label refits against the challenger (and champion), and what they say."""
        from bentley import reporting

        if self.decision is None:
            reporting.say("No training, no control.")
            return
        reporting.show(noise_chart(self.decision))
        reporting.say(control_sentence(self.decision))

    def show_predictions(self) -> None:
        """The newest session's predictions, and which version made them and why."""
        from bentley import reporting

        if self.predicted is not None:
            _display(reporting.rounded(latest_view(self.predicted), 3))
        reporting.say(predictions_sentence(self.predicted, self.predictor, self.choice, self.decision, self.ml))


def _display(frame: pd.DataFrame) -> None:
    """A table in the report, through the report's table style (`reporting.use_report_style`)."""
    from IPython.display import display

    display(frame)


def run_training(
    ctx: Any, store: ModelStore, progress: Progress | None = None, workers: int | None = None
) -> TrainingOutcome:
    """The train stage for `ctx` (a `bentley.stage.StageContext`): every step, in the order of
    the module docstring, with its warehouse rows written as soon as they exist.

    1. The model frame and purged splits from the run's features, prices and sentiment.
    2. This run's champion (`usable_champion`), loaded through the checksum check, and its
       monitoring (`model_monitoring`).
    3. Training when `ml.retrain` asks for it or no champion may be used: every candidate's
       walk-forward refits, importances, registration (in the background) and the decision
       against the champion (`model_decisions`, and the challenger's walk-forward rows in
       `predictions`).
    4. The model that predicts after the decision scores the unlabelled sessions (`predictions`).
    """
    from bentley import inputs

    ml = ctx.params.ml
    warehouse = ctx.warehouse
    prices = inputs.load_prices(warehouse, ctx.params, ctx.logical_date)
    features = inputs.load_window(warehouse, ctx.params, ctx.logical_date, "features")
    sentiment = inputs.load_window(warehouse, ctx.params, ctx.logical_date, "sentiment_daily")
    tradable = inputs.tradable_tickers(warehouse, ctx.params)
    data = training_data(features, prices, sentiment, ml, ctx.params.universe.benchmark, tradable)
    del features, prices, sentiment  # the model frame holds what training needs; free the rest before fitting

    choice = usable_champion(store, ml, ctx.logical_date, ctx.run_id)
    model_before = store.load(choice.version) if choice.version is not None else None
    monitoring = None
    if choice.version is not None:
        monitoring = monitor_champion(model_before, choice.version, data, ml, ctx.run_id, ctx.logical_date)
        warehouse.upsert("model_monitoring", monitoring.frame)

    trains, reason = training_reason(choice, ml.retrain, monitoring)
    results: dict[str, prediction.CandidateResult] = {}
    importance: dict[str, pd.DataFrame] = {}
    outcome = None
    if trains:
        results = train_candidates(data, ml, progress=progress, workers=workers)
        importance = all_importances(results, data, ml, workers=workers)
        versions = register_candidates(  # serialization, SHA-256 and MLflow overlap the evidence below
            store,
            results,
            importance,
            data,
            ml,
            choice,
            run_id=ctx.run_id,
            config=ctx.resolved_params(),
            parent_run_id=ctx.mlflow_parent_run_id,
            background=True,
        )
        outcome = promote(
            store, results, versions, choice, model_before, data, ml, ctx.run_id, progress=progress, workers=workers
        )
        warehouse.upsert("model_decisions", outcome.row)
        warehouse.upsert(
            "predictions", walk_forward_predictions(results[outcome.candidate], outcome.challenger, ml, ctx.run_id)
        )

    predictor, model = champion_after(store, outcome, choice, model_before)
    predicted = None
    if predictor is not None:
        predicted = latest_predictions(model, predictor, data, ml, ctx.run_id)
        warehouse.upsert("predictions", predicted)
    return TrainingOutcome(
        ml=ml,
        data=data,
        choice=choice,
        monitoring=monitoring,
        trains=trains,
        training_reason=reason,
        results=results,
        importance=importance,
        decision=outcome,
        predictor=predictor,
        predicted=predicted,
    )


# --------------------------------------------------------------------------- charts


def fold_chart(results: Mapping[str, prediction.CandidateResult], metric: str) -> Figure:
    """`metric` per walk-forward fold for each candidate, the holdout as the last point."""
    from bentley import charts

    fig, ax = charts.figure(8.5, 3.6)
    for name, result in results.items():
        labels = [*result.fold_metrics["split"], "holdout"]
        values = [*pd.to_numeric(result.fold_metrics[metric], errors="coerce"), result.holdout_metrics.get(metric)]
        ax.plot(labels, values, marker="o", label=name)
    ax.axhline(0.5, color="grey", linewidth=0.8, linestyle="--", label="coin flip")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} per purged walk-forward fold and on the holdout")
    labels = ax.get_xticklabels()
    if len(labels) > 8:  # "fold 12": keep every label, turned so they do not overlap
        ax.tick_params(axis="x", labelrotation=45, labelsize=7)
        fig.subplots_adjust(bottom=0.3)
    charts.legend_outside(ax)
    return fig


def noise_chart(outcome: Outcome) -> Figure:
    """The shuffled-label refits' holdout metric as a histogram, with the challenger's (and the
    champion's) value on it: how far from no-information models each one stands."""
    from bentley import charts

    evidence, champion = outcome.decision.challenger, outcome.decision.champion
    fig, ax = charts.figure(8.0, 3.2)
    ax.hist(
        evidence.null,
        bins=min(30, max(5, evidence.null.size // 4)),
        color="lightgrey",
        edgecolor="grey",
        label=f"{evidence.model_class} on shuffled labels",
    )
    ax.axvline(evidence.value, color="tab:blue", linewidth=2, label=f"challenger {outcome.challenger.label}")
    if champion is not None and outcome.champion is not None:
        ax.axvline(
            champion.value, color="tab:orange", linewidth=2, linestyle="--", label=f"champion {outcome.champion.label}"
        )
    ax.set_xlabel(f"holdout {evidence.metric}")
    ax.set_ylabel("refits")
    ax.set_title(f"Holdout {evidence.metric} against models that learned nothing (p = {evidence.p_value:.2g})")
    charts.legend_outside(ax)
    return fig


def importance_chart(importance: pd.DataFrame, candidate: str, top: int = 12) -> Figure:
    """The `top` inputs of one candidate by importance, largest at the top."""
    from bentley import charts

    rows = importance.dropna(subset=["importance"]).head(top).iloc[::-1]
    fig, ax = charts.figure(7.5, max(2.5, 0.3 * len(rows) + 1.2), legend=False, left=1.6)
    ax.barh(rows["feature"], rows["importance"], xerr=rows["std"].fillna(0).to_numpy(), color="tab:blue")
    method = importance["method"].iloc[0] if len(importance) else ""
    label = {
        "abs_coefficient": "|coefficient| (standardized inputs)",
        "permutation_auc": "drop in ROC AUC when shuffled",
    }.get(method, method)
    ax.set_xlabel(label)
    ax.set_title(f"{candidate}: most important inputs")
    return fig
