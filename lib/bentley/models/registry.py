"""Champion and challenger: the promotion rule and the integrity check of model artifacts.

MLflow keeps the versions and aliases (`bentley.tracking.ModelStore` is the only code that
talks to it); this module holds the decisions, which are plain functions so tests can check
them without a server:

* **Promotion** is an A/B comparison on one holdout: the challenger becomes champion only if
  it clears every minimum-metric gate *and* beats the champion's value of the promotion
  metric on the same rows by at least the margin. With no champion yet (the first run), the
  gates alone decide. A champion that cannot be scored on the holdout (its features no longer
  exist, or it was trained on holdout dates after a backfill) is not a fair opponent: the
  decision says so instead of pretending a comparison happened.
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

import pandas as pd

if TYPE_CHECKING:
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


@dataclass(frozen=True)
class Decision:
    promoted: bool
    reason: str
    metric: str
    challenger_value: float
    champion_value: float | None
    margin: float

    def as_row(self) -> dict[str, object]:
        return {
            "metric": self.metric,
            "challenger_value": self.challenger_value,
            "champion_value": self.champion_value,
            "margin": self.margin,
            "promoted": self.promoted,
            "reason": self.reason,
        }


def failed_gates(metrics: Mapping[str, float], gates: Mapping[str, float]) -> list[str]:
    """`metric value < minimum` for every gate the metrics miss (a missing or NaN value misses)."""
    failed = []
    for name, minimum in gates.items():
        value = metrics.get(name, math.nan)
        if not (isinstance(value, int | float) and math.isfinite(value) and value >= minimum):
            failed.append(f"{name} {_fmt(value)} < {minimum:g}")
    return failed


def decide(
    challenger: Mapping[str, float],
    champion: Mapping[str, float] | None,
    *,
    metric: str,
    margin: float,
    gates: Mapping[str, float],
    champion_unfit: str | None = None,
) -> Decision:
    """Whether the challenger replaces the champion, with the numbers and the reason.

    `challenger` and `champion` are holdout metrics on the same rows; `champion` is None on
    the first run. `champion_unfit` explains why an existing champion could not be scored.
    """
    value = float(challenger.get(metric, math.nan))
    champion_value = None if champion is None else float(champion.get(metric, math.nan))
    failed = failed_gates(challenger, gates)
    if failed:
        return Decision(False, "challenger fails the gates: " + "; ".join(failed), metric, value,
                        champion_value, margin)
    if champion_unfit is not None:
        return Decision(False, f"champion kept: {champion_unfit}", metric, value, champion_value, margin)
    if champion is None:
        return Decision(True, f"first champion: passes every gate ({_gates_text(challenger, gates)})",
                        metric, value, None, margin)
    if not math.isfinite(value):
        return Decision(False, f"challenger {metric} is undefined on the holdout", metric, value,
                        champion_value, margin)
    if champion_value is None or not math.isfinite(champion_value):
        return Decision(True, f"champion {metric} is undefined on the holdout; challenger passes the gates",
                        metric, value, champion_value, margin)
    lift = value - champion_value
    if lift >= margin - _TOLERANCE:  # 0.57 - 0.56 is 0.00999... in binary; a tie with the margin passes
        return Decision(True, f"challenger {metric} {value:.4f} beats champion {champion_value:.4f} "
                              f"by {lift:+.4f} (margin {margin:g})", metric, value, champion_value, margin)
    return Decision(False, f"challenger {metric} {value:.4f} vs champion {champion_value:.4f}: "
                           f"{lift:+.4f} is below the margin {margin:g}", metric, value, champion_value, margin)


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


def champion_before(version: RegisteredVersion, versions: Mapping[str, RegisteredVersion],
                    excluded: set[str]) -> RegisteredVersion | None:
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


def _gates_text(metrics: Mapping[str, float], gates: Mapping[str, float]) -> str:
    return ", ".join(f"{name} {_fmt(metrics.get(name, math.nan))} >= {minimum:g}" for name, minimum in gates.items())


def _fmt(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, int | float) and math.isfinite(value) else "n/a"
