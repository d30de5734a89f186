"""Champion and challenger: the promotion rule and the integrity check of model artifacts.

MLflow keeps the versions and aliases (`bentley.tracking.ModelStore` is the only code that
talks to it); this module holds the decisions, which are plain functions so tests can check
them without a server:

* **Promotion** is an A/B comparison on one holdout: the challenger becomes champion only if
  it clears every minimum-metric gate, shows it is not noise (`Evidence`: enough holdout
  rows, a permutation p-value against its own class refitted on shuffled labels, a
  bootstrap interval clear of the no-skill value, accuracy above always predicting the
  common label) *and* beats the champion's value of the promotion metric on the same rows
  by at least the margin. With no champion yet (the first run), the gates and the evidence
  decide: a first champion is not exempt from being told apart from luck. A champion that
  cannot be scored on the holdout (its features no longer exist, or it was trained on
  holdout dates after a backfill) is not a fair opponent: the decision says so instead of
  pretending a comparison happened. Every decision carries a verdict in plain words.
* **Integrity**: the SHA-256 of the saved model folder is recorded as a tag when the version
  is registered and checked before every load. A mismatch raises `ModelIntegrityError`
  before a single byte is deserialized, because a tampered model file is code execution
  (pickle) or out-of-bounds reads (skops-trusted tree predictors).
* **Crashed runs**: a run killed inside `train` can leave versions behind, some maybe already
  aliased by a decision whose report and warehouse rows were never written.
  `mark_crashed_versions` tags them `crashed` and puts the champion back; the resumed run
  (same run id) re-registers and `ModelStore.log_candidate` reuses a version whose artifact
  digest matches, so a resumed run names the versions a clean run would have named.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from bentley.config import Promotion
    from bentley.tracking import ModelStore, RegisteredVersion

#: Model-version tag holding the artifact digest written at registration.
SHA256_TAG = "sha256"
CHAMPION = "champion"
CHALLENGER = "challenger"
#: Model-version tags naming who registered a version: the pipeline run and the candidate.
RUN_ID_TAG = "run_id"
CANDIDATE_TAG = "candidate"
_LEGACY_RUN_ID_TAG = "pipeline_run_id"  # the only run tag of versions registered before `run_id`
#: "true" on every version of a pipeline run that died mid-way; such a version is never used.
CRASHED_TAG = "crashed"
#: On a version promoted by a run for the latest date: the champion it replaced (absent: none).
REPLACED_CHAMPION_TAG = "replaced_champion"
_TOLERANCE = 1e-12


class ModelIntegrityError(RuntimeError):
    """A model artifact whose digest differs from the one recorded at registration."""


def directory_digest(path: Path) -> str:
    """SHA-256 over every file of a model folder: relative path and content, in path order.

    Hashing the folder rather than the serialized model alone also covers `MLmodel`, which
    names the loader and the types a skops file may instantiate.
    """
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"model folder {root} does not exist")
    digest = hashlib.sha256()
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(file.relative_to(root).as_posix().encode())
        digest.update(b"\0")
        digest.update(hashlib.sha256(file.read_bytes()).digest())
    return digest.hexdigest()


def verify_digest(path: Path, expected: str | None, label: str) -> None:
    """Refuse a model folder whose digest is not the registered one (or was never recorded)."""
    if not expected:
        raise ModelIntegrityError(f"{label} has no {SHA256_TAG} tag; refusing to load an unverified model")
    actual = directory_digest(path)
    if actual != expected:
        raise ModelIntegrityError(
            f"{label}: artifact SHA-256 {actual} does not match the {expected} recorded at registration; "
            "the model files were changed after registration, refusing to load them"
        )


#: A promotion metric's value for a model without skill; accuracy's is the majority-class rate.
NO_SKILL: dict[str, float] = {"roc_auc": 0.5, "balanced_accuracy": 0.5, "hit_rate": 0.5, "ic": 0.0, "rank_ic": 0.0}
_WORDS = {
    "roc_auc": "AUC",
    "balanced_accuracy": "balanced accuracy",
    "accuracy": "accuracy",
    "hit_rate": "long-short hit rate",
    "ic": "information coefficient",
    "rank_ic": "rank information coefficient",
}
_PERCENT = frozenset({"accuracy", "balanced_accuracy", "precision", "recall", "hit_rate"})


@dataclass(frozen=True)
class Evidence:
    """One model's record on the holdout rows, and how far it can be trusted.

    `null` holds the promotion metric of the model's own class refitted on shuffled training
    labels (`prediction.shuffled_label_scores`): what skill-less models reach on these rows.
    """

    metric: str  # the promotion metric
    metrics: Mapping[str, float]  # classification_metrics of the holdout rows (`n`: rows scored)
    null: np.ndarray
    ci: tuple[float, float]  # bootstrap percentile interval of the promotion metric
    confidence: float  # its level
    majority_rate: float  # accuracy of always predicting the rows' more common label
    majority_up: bool  # that label is "up"
    model_class: str  # the estimator class behind `null`
    permutations: int = 0  # refits asked for (`ml.promotion.permutations`); more than `null` holds
    # when the test stopped once its outcome was decided (`refits_to_decide`); 0: as many as `null`

    @property
    def stopped_early(self) -> bool:
        """The shuffled-label refits stopped before `permutations`: enough of them had reached the
        value that the p-value exceeds the maximum whatever the rest would have scored."""
        return 0 < self.null.size < self.permutations

    @property
    def value(self) -> float:
        return float(self.metrics.get(self.metric, math.nan))

    @property
    def rows(self) -> int:
        return int(self.metrics.get("n", 0))

    @property
    def reached(self) -> int:
        """Shuffled-label refits scoring at least the model's value (a tie counts as reaching it)."""
        return int(np.sum(reaches(self.null, self.value)))

    @property
    def p_value(self) -> float:
        """(1 + refits reaching the value) / (1 + refits): the permutation p-value, never 0.

        The +1 counts the model itself among the draws, which keeps the test valid with a
        finite number of permutations (Phipson & Smyth 2010). NaN for an undefined value.
        """
        if not math.isfinite(self.value):
            return math.nan
        return (1 + self.reached) / (1 + self.null.size)

    @property
    def p_value_resolution(self) -> float:
        """The smallest p-value the refits done can give, 1 / (1 + refits): a p-value is only known
        to this step (with 100 refits: 0.0099)."""
        return 1.0 / (1 + self.null.size)

    @property
    def no_skill(self) -> float:
        """The promotion metric of a model without skill on these rows."""
        return self.majority_rate if self.metric == "accuracy" else NO_SKILL[self.metric]


def reaches(scores: np.ndarray, value: float) -> np.ndarray:
    """Which shuffled-label scores match or beat `value` (a tie counts as reaching it)."""
    return np.asarray(scores) >= value - _TOLERANCE


def refits_to_decide(permutations: int, max_p_value: float) -> int | None:
    """How many shuffled-label refits reaching a model's value settle its test: once that many
    have, p = (1 + reached) / (1 + permutations) exceeds `max_p_value` whatever the remaining
    refits score, so they need not be fitted (None: never settled early, as when the maximum
    is 1 and the p-value is recorded, not required).

    This is the sequential Monte Carlo test of Besag & Clifford (1991) with the fixed-count
    test's own decision: it stops only when the fixed test's outcome is already certain, so the
    decision, and so the test's size and power, are exactly those of `permutations` refits. A
    model that passes always gets every refit. With 100 refits and a maximum of 0.05 a model
    fails as soon as 5 refits reach it; a model without skill does so after about 10 refits.
    """
    if max_p_value >= 1:
        return None
    most_reached = math.floor(max_p_value * (1 + permutations) - 1 + 1e-9)  # still passing with this many
    return max(1, most_reached + 1) if most_reached + 1 <= permutations else None


@dataclass(frozen=True)
class Decision:
    promoted: bool
    reason: str  # terse, with the numbers: for the registry and the warehouse
    verdict: str  # the same decision in words for someone who is not a statistician
    margin: float
    challenger: Evidence
    champion: Evidence | None  # None: no champion, or one that could not be scored

    @property
    def metric(self) -> str:
        return self.challenger.metric

    @property
    def challenger_value(self) -> float:
        return self.challenger.value

    @property
    def champion_value(self) -> float | None:
        return None if self.champion is None else self.champion.value

    def as_row(self) -> dict[str, object]:
        """The decision's columns of `model_decisions`."""
        ours, theirs = self.challenger, self.champion
        return {
            "metric": self.metric,
            "challenger_value": self.challenger_value,
            "champion_value": self.champion_value,
            "margin": self.margin,
            "promoted": self.promoted,
            "reason": self.reason,
            "verdict": self.verdict,
            "holdout_rows": ours.rows,
            "p_value": ours.p_value,
            "ci_lower": ours.ci[0],
            "ci_upper": ours.ci[1],
            "accuracy": float(ours.metrics.get("accuracy", math.nan)),
            "majority_rate": ours.majority_rate,
            "champion_p_value": None if theirs is None else theirs.p_value,
            "champion_ci_lower": None if theirs is None else theirs.ci[0],
            "champion_ci_upper": None if theirs is None else theirs.ci[1],
        }


@dataclass(frozen=True)
class _Check:
    """One promotion requirement applied to the challenger."""

    passed: bool | None  # None: measured, but not required by the params
    reason: str  # terse, with the numbers
    plain: str  # in words; "" when there is nothing to add in a verdict


def _gate_checks(metrics: Mapping[str, float], gates: Mapping[str, float]) -> list[_Check]:
    checks = []
    for name, minimum in gates.items():
        value = metrics.get(name, math.nan)
        passed = isinstance(value, int | float) and math.isfinite(value) and value >= minimum
        plain = (
            "" if passed else f"its {_word(name)} {_plain(name, value)} is below the minimum {_plain(name, minimum)}"
        )
        checks.append(_Check(passed, f"{name} {_fmt(value)} {'>=' if passed else '<'} {minimum:g}", plain))
    return checks


def _evidence_checks(evidence: Evidence, promotion: Promotion) -> list[_Check]:
    """Enough rows, a small p-value, an interval clear of no skill, accuracy above the majority."""
    metric, word, rows = evidence.metric, _word(evidence.metric), evidence.rows
    checks = [
        _Check(
            rows >= promotion.min_holdout_rows,
            f"{rows} holdout rows {'>=' if rows >= promotion.min_holdout_rows else '<'} {promotion.min_holdout_rows}",
            ""
            if rows >= promotion.min_holdout_rows
            else f"{rows} holdout rows are too few to tell skill from luck (at least {promotion.min_holdout_rows} are required)",
        )
    ]

    p, refits, most = evidence.p_value, evidence.null.size, promotion.max_p_value
    if math.isfinite(p):
        passed, required = p <= most, most < 1  # a maximum of 1 records the p-value without requiring it
        stopped = (
            f" of {evidence.permutations} planned, stopped once {evidence.reached} reached it"
            if evidence.stopped_early
            else ""
        )
        checks.append(
            _Check(
                passed if required else None,
                f"p-value {p:.2g} {'<=' if passed else '>'} {most:g} ({refits} shuffled-label refits{stopped})"
                f"{'' if required else ' (not required)'}",
                f"its {word} of {_plain(metric, evidence.value)} on {rows} holdout rows is matched or beaten by "
                f"{evidence.reached / refits:.0%} of {refits} models of its class trained on shuffled labels "
                + (
                    f"(the {evidence.permutations} planned stopped there: no later one could change the outcome) "
                    if evidence.stopped_early
                    else ""
                )
                + (
                    f"(p = {p:.2g} {'≤' if passed else '>'} {most:g})"
                    if required
                    else f"(p = {p:.2g}, not required here)"
                ),
            )
        )
    else:
        checks.append(
            _Check(False, f"{metric} undefined on the holdout", f"its {word} cannot be computed on the holdout rows")
        )

    low, high = evidence.ci
    clear = math.isfinite(low) and low > evidence.no_skill
    required = promotion.ci_lower_above_no_skill
    checks.append(
        _Check(
            clear if required else None,
            f"{evidence.confidence:.0%} CI of {metric} [{_fmt(low)}, {_fmt(high)}] {'above' if clear else 'not above'} "
            f"no skill {evidence.no_skill:.4g}{'' if required else ' (not required)'}",
            f"resampling the holdout puts its {word} between {_plain(metric, low)} and {_plain(metric, high)} "
            f"({evidence.confidence:.0%} of the time), {'above' if clear else 'not clearly above'} "
            f"{_no_skill_words(evidence)}{'' if required else ' (not required here)'}",
        )
    )

    accuracy, majority = float(evidence.metrics.get("accuracy", math.nan)), evidence.majority_rate
    beats = math.isfinite(accuracy) and accuracy > majority + _TOLERANCE
    verb = "beats" if beats else ("equals" if abs(accuracy - majority) <= _TOLERANCE else "is below")
    required = promotion.beat_majority
    checks.append(
        _Check(
            beats if required else None,
            f"accuracy {_fmt(accuracy)} {'>' if beats else '<='} majority-class rate {_fmt(majority)}"
            f"{'' if required else ' (not required)'}",
            f"its accuracy {_plain('accuracy', accuracy)} {verb} always predicting {_direction(evidence)} "
            f"({_plain('accuracy', majority)}){'' if required else ' (not required here)'}",
        )
    )
    return checks


def decide(
    challenger: Evidence,
    champion: Evidence | None,
    *,
    promotion: Promotion,
    champion_unfit: str | None = None,
) -> Decision:
    """Whether the challenger replaces the champion, with the numbers, the reason and a verdict.

    `challenger` and `champion` are records on the same holdout rows; `champion` is None on
    the first run or when it could not be scored (`champion_unfit` then says why). The
    challenger must clear every gate and every evidence check first, the first champion
    included: a score that shuffled-label models reach, an interval that reaches the
    no-skill value, an accuracy no better than always predicting the common label, or too
    few rows, is noise until shown otherwise. Only then does it meet the champion.
    """
    metric, margin = promotion.metric, promotion.margin
    gates, evidence = _gate_checks(challenger.metrics, promotion.gates), _evidence_checks(challenger, promotion)
    failed = [check for check in (*gates, *evidence) if check.passed is False]
    shown = "; ".join(check.plain for check in evidence if check.plain)

    def decision(promoted: bool, reason: str, verdict: str) -> Decision:
        return Decision(promoted, reason, verdict, margin, challenger, champion)

    if failed:
        return decision(
            False,
            "challenger fails the gates: " + "; ".join(c.reason for c in failed),
            "Not promoted: " + "; ".join(c.plain for c in failed) + ".",
        )
    if champion_unfit is not None:
        return decision(
            False,
            f"champion kept: {champion_unfit}",
            f"Not promoted: it passes every check, but the champion is kept because {champion_unfit}.",
        )
    if champion is None:
        return decision(
            True,
            "first champion: passes every gate (" + ", ".join(c.reason for c in (*gates, *evidence)) + ")",
            f"Promoted as the first champion: {shown}.",
        )
    value, champion_value = challenger.value, champion.value
    word = _word(metric)
    if not math.isfinite(champion_value):
        return decision(
            True,
            f"champion {metric} is undefined on the holdout; challenger passes the gates",
            f"Promoted: {shown}; the champion's {word} cannot be computed on these rows.",
        )
    lift = value - champion_value
    if lift >= margin - _TOLERANCE:  # 0.57 - 0.56 is 0.00999... in binary; a tie with the margin passes
        return decision(
            True,
            f"challenger {metric} {value:.4f} beats champion {champion_value:.4f} by {lift:+.4f} (margin {margin:g})",
            f"Promoted: {shown}; it beats the champion's {word} of {_plain(metric, champion_value)} "
            f"by {lift:+.3f} (margin {margin:g}).",
        )
    return decision(
        False,
        f"challenger {metric} {value:.4f} vs champion {champion_value:.4f}: {lift:+.4f} is below the margin {margin:g}",
        f"Not promoted: it passes every check, but its {word} of {_plain(metric, value)} does not beat "
        f"the champion's {_plain(metric, champion_value)} by the required margin {margin:g}.",
    )


def pick_challenger(fold_metrics: Mapping[str, pd.DataFrame], metric: str) -> str:
    """The candidate with the best mean cross-validated `metric` (NaN folds ignored; ties: first)."""
    means = {name: float(pd.to_numeric(frame[metric], errors="coerce").mean()) for name, frame in fold_metrics.items()}
    ranked = sorted(means, key=lambda name: -means[name] if math.isfinite(means[name]) else math.inf)
    return ranked[0]


def registered_by(version: RegisteredVersion) -> str | None:
    """The pipeline run that registered `version` (older versions carry only `pipeline_run_id`)."""
    return version.tags.get(RUN_ID_TAG) or version.tags.get(_LEGACY_RUN_ID_TAG)


def is_crashed(version: RegisteredVersion) -> bool:
    return version.tags.get(CRASHED_TAG) == "true"


def champion_before(
    version: RegisteredVersion, versions: Mapping[str, RegisteredVersion], excluded: set[str]
) -> RegisteredVersion | None:
    """The newest champion along `replaced_champion` links that is not crashed or in `excluded`.

    Starts at `version` itself; `versions` maps version numbers to versions. None when the
    chain ends (the first champion replaced nothing) or loops.
    """
    seen: set[str] = set()
    current: RegisteredVersion | None = version
    while current is not None and current.version not in seen:
        if current.version not in excluded and not is_crashed(current):
            return current
        seen.add(current.version)
        current = versions.get(current.tags.get(REPLACED_CHAMPION_TAG, ""))
    return None


def mark_crashed_versions(store: ModelStore, model_name: str, run_id: str) -> list[str]:
    """Tag every version pipeline run `run_id` registered `crashed=true`; no alias stays on one.

    For the runner, when it takes over the lease of a run that died inside `train`: that run's
    versions may be half-registered, or promoted by a decision whose report and warehouse rows
    were never written, so none of them may be champion, challenger or predict. The champion
    alias goes back to the champion the crashed version replaced (`replaced_champion`), so the
    resumed run meets the opponent a clean run met; with none, and for the challenger alias,
    the alias is removed (the resumed run sets it again). Returns the tagged version numbers.
    """
    versions = {v.version: v for v in store.versions(model_name)}
    crashed = [v for v in versions.values() if registered_by(v) == run_id]
    for version in crashed:
        store.tag_version(version, {CRASHED_TAG: "true"})
    numbers = {v.version for v in crashed}
    for alias, number in store.aliases(model_name).items():
        if number not in numbers:
            continue
        before = champion_before(versions[number], versions, numbers) if alias == CHAMPION else None
        if before is None:
            store.delete_alias(model_name, alias)
        else:
            store.set_alias(model_name, alias, before.version)
    return sorted(numbers, key=int)


def _fmt(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, int | float) and math.isfinite(value) else "n/a"


def _word(metric: str) -> str:
    return _WORDS.get(metric, metric.replace("_", " "))


def _plain(metric: str, value: object) -> str:
    """A value as a person reads it: shares as percentages, the rest with three decimals."""
    if not (isinstance(value, int | float) and math.isfinite(value)):
        return "n/a"
    return f"{value:.1%}" if metric in _PERCENT else f"{value:.3f}"


def _direction(evidence: Evidence) -> str:
    return "'up'" if evidence.majority_up else "'down'"


def _no_skill_words(evidence: Evidence) -> str:
    if evidence.metric == "accuracy":
        return f"always predicting {_direction(evidence)} ({_plain('accuracy', evidence.majority_rate)})"
    if evidence.metric in ("ic", "rank_ic"):
        return "0, no relation at all"
    return f"the {_plain(evidence.metric, evidence.no_skill)} of a coin flip"
