"""`python -m bench.train`: the train stage's work on 500 tickers x 10 years, timed and sized.

Each repetition runs in a fresh process (so peak RSS is that run's own) and does what the
train notebook does after loading its tables, with the params of `--profile` (`large`, the
500 tickers x 10 years profile, by default):

1. `lifecycle.training_data`: model frame (stationary inputs, labels) and purged splits;
2. `lifecycle.train_candidates`: every candidate in `ml.models` through the walk-forward
   folds and the holdout;
3. `lifecycle.importances` per candidate (permutation importance for the boosted model);
4. `lifecycle.register_candidates` into a throwaway local MLflow store (skops save, SHA-256,
   a model version per candidate), in the background as the notebook does, while
5. the promotion evidence of the winning candidate (its class refitted on shuffled labels,
   stopping once the test is decided, `registry.refits_to_decide`; bootstrap) is computed.

Inputs: sample prices through `compute_features`, and a sparse synthetic `sentiment_daily`
(a third of ticker-days with headlines), so the frame has the stage's exact columns.
Target: at most 60 s on 2 cores (issue 19; the timed part is steps 1-5; building the inputs is not).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile

TARGET_SECONDS = 60.0  # issue 19 (was 120)

CHILD = """
import json, resource, sys, time
from pathlib import Path
import numpy as np, pandas as pd
from bentley.config import load_config
from bentley.features import compute_features
from bentley.models import lifecycle, prediction, registry
from bench.sample import sample_prices
from bentley.tracking import ModelStore, tracking_uri

tickers, years, outputs, profile = int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
config = load_config(profile)
prices = sample_prices(tickers, years)
features = compute_features(prices, config.features)
rng = np.random.default_rng(7)
news = features[["ticker", "date"]].sample(frac=1 / 3, random_state=7).reset_index(drop=True)
news["mean_compound"] = rng.uniform(-1, 1, len(news))
news["n_headlines"] = rng.integers(1, 3, len(news))
news["positive_share"] = (news["mean_compound"] > 0.05).astype(float)
news["negative_share"] = (news["mean_compound"] < -0.05).astype(float)
ml = config.ml
timings = {}
start = time.perf_counter()
data = lifecycle.training_data(features, prices, news, ml, "BBIX")
timings["dataset"] = time.perf_counter() - start
mark = time.perf_counter()
results = lifecycle.train_candidates(data, ml)
timings["cross_validation_and_holdout"] = time.perf_counter() - mark
mark = time.perf_counter()
importance = lifecycle.all_importances(results, data, ml)
timings["importances"] = time.perf_counter() - mark
store = ModelStore(tracking_uri(None, outputs), "bench", outputs)  # the stage's store exists: not timed
as_of = pd.Timestamp(prices["date"].max()).date()
no_champion = lifecycle.ChampionChoice(version=None, as_of=as_of, backdated=False, reason="bench")
mark = time.perf_counter()
# As the notebook does: registration in the background while the challenger's evidence is computed.
versions = lifecycle.register_candidates(store, results, importance, data, ml, no_champion, run_id="bench",
                                         config={"ml": config.section("ml")}, parent_run_id=None, background=True)
winner = registry.pick_challenger({n: r.fold_metrics for n, r in results.items()}, ml.promotion.metric)
won = results[winner]
template = prediction.build_estimator(winner, won.spec, seed=ml.seed)
evidence = lifecycle.holdout_evidence(template, data.feature_cols, won.holdout_predictions, data, ml)
control = float(evidence.null.mean())
timings["shuffled_label_control"] = time.perf_counter() - mark
versions.result()
timings["register_after_control"] = time.perf_counter() - mark - timings["shuffled_label_control"]
total = time.perf_counter() - start
print(json.dumps({
    "seconds": total, "timings": timings, "rows": len(data.frame), "inputs": len(data.feature_cols),
    "folds": len(data.walk_forward.folds), "candidates": list(results),
    "holdout_roc_auc": {n: r.holdout_metrics["roc_auc"] for n, r in results.items()},
    "shuffled_label_auc": control, "shuffled_label_refits": int(evidence.null.size), "winner": winner,
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
}))
"""


def bench_train(tickers: int, years: int, repeats: int, profile: str = "large") -> dict:
    runs = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as outputs:
            child = subprocess.run(
                [sys.executable, "-c", CHILD, str(tickers), str(years), outputs, profile],
                check=True,
                capture_output=True,
                text=True,
            )
        runs.append(json.loads(child.stdout.strip().splitlines()[-1]))
    seconds = statistics.median(r["seconds"] for r in runs)
    return {
        "tickers": tickers,
        "years": years,
        "profile": profile,
        "repeats": repeats,
        "rows": runs[0]["rows"],
        "inputs": runs[0]["inputs"],
        "folds": runs[0]["folds"],
        "candidates": runs[0]["candidates"],
        "seconds_median": seconds,
        "seconds_all": [r["seconds"] for r in runs],
        "step_seconds_median": {
            step: statistics.median(r["timings"][step] for r in runs) for step in runs[0]["timings"]
        },
        "peak_rss_mb_median": statistics.median(r["peak_rss_mb"] for r in runs),
        "holdout_roc_auc": runs[0]["holdout_roc_auc"],
        "shuffled_label_auc": runs[0]["shuffled_label_auc"],
        "shuffled_label_refits": runs[0]["shuffled_label_refits"],  # fewer than planned: stopped once decided
        "challenger": runs[0]["winner"],
        "target_seconds": TARGET_SECONDS,
        "meets_target": seconds <= TARGET_SECONDS,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tickers", type=int, default=500)
    parser.add_argument("--years", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--profile", default="large", help="params profile whose `ml` section is used")
    args = parser.parse_args()  # the default profile: --tickers 8 --years 5 --profile default
    result = bench_train(args.tickers, args.years, args.repeats, args.profile)
    print(json.dumps(result, indent=2))
    return 0 if result["meets_target"] else 1


if __name__ == "__main__":
    sys.exit(main())
