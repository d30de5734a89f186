"""Return-direction models: the dataset, swappable classifiers, honest metrics, importances.

The label is whether a ticker's adjusted close is higher `horizon` rows (sessions) later.
One model is fitted on all tickers, so its inputs must mean the same thing for a 20 USD and
a 300 USD stock and for 2015 and 2025: price-level indicators (moving averages, Bollinger
bands, MACD, ATR) are divided by the day's adjusted close, which also makes them immune to
the back-adjustment of `adj_close` (a later dividend or split multiplies every earlier price
of the ticker by one factor, which cancels in the ratio). OBV is dropped: it is a running
sum of signed volume since the first row loaded, so its level depends on where the history
starts and on the share count, not on anything comparable across tickers or time.

Every model input at date t uses data at or before t only; `fwd_return` and `label` are the
only columns that look ahead, and `bentley.models.splits` keeps those look-ahead windows out
of the training sets. Headline sentiment joins by (ticker, date); a day without headlines
is a neutral day (zeros, `has_news` 0), not a missing one.

Models are named in params by dotted class path, so a candidate can be swapped without code
changes; each is wrapped in a pipeline (median imputation of the warm-up NaN, then
standardisation) so every classifier sees the same inputs and a linear model's coefficients
are comparable. Metrics cover classification quality (accuracy, AUC, log loss) and what a
trader cares about: whether the ranking by predicted probability separates winners from
losers (long-short hit rate, information coefficients).

Two questions decide whether a holdout score means anything. Could a model that learned
nothing have scored as well? `shuffled_label_scores` refits the candidate's own class on
permuted training labels many times and scores each refit on the true holdout labels: the
distribution a no-information model of that class reaches on those very rows (its centre
must sit at the no-skill value, or information leaks in another way than the labels).
How much would the score move on other, similar sessions? `bootstrap_interval` resamples
the holdout in blocks of sessions. `majority_rate` is the accuracy of always predicting
the more common label, the accuracy any model must beat.

Work is done on one float64 matrix per call and boolean row masks; no per-row Python.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.base import clone, is_classifier
from sklearn.impute import SimpleImputer
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    log_loss,
    precision_score,
    recall_score,
)
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from bentley.models.estimators import estimator_class
from bentley.models.splits import Split, WalkForward, rows_in
from bentley.sources.base import tradable_only

#: The look-ahead columns of `model_frame`: never model inputs.
LABEL_COLUMNS: tuple[str, ...] = ("fwd_return", "label")

#: Sentiment columns taken as they are (a day without headlines is 0).
SENTIMENT_COLUMNS: tuple[str, ...] = ("mean_compound", "positive_share", "negative_share")

#: Keys of `classification_metrics`, in order.
METRIC_NAMES: tuple[str, ...] = (
    "accuracy",
    "balanced_accuracy",
    "precision",
    "recall",
    "roc_auc",
    "log_loss",
    "hit_rate",
    "ic",
    "rank_ic",
    "n",
)

#: Columns of `CandidateResult.holdout_predictions`.
PREDICTION_COLUMNS: tuple[str, ...] = ("ticker", "date", "label", "proba", "fwd_return")

_KEY = ["ticker", "date"]
# Price levels turned into distance from the price (level / adj_close - 1) ...
_RELATIVE_LEVEL = re.compile(r"(sma|ema)_\d+|bb_(upper|middle|lower)")
# ... and price differences turned into a share of the price (value / adj_close).
_PRICE_SCALED = re.compile(r"macd|macd_signal|macd_hist|atr_\d+")
_DROPPED = frozenset({"obv"})
_PROBA_EPS = 1e-15  # log loss clips probabilities to [eps, 1 - eps]


def _floats(series: pd.Series) -> np.ndarray:
    """A column as a float64 array; nullable NA becomes NaN."""
    return series.to_numpy(dtype=np.float64, na_value=np.nan)


# --------------------------------------------------------------------------------------------
# Dataset


def _lookup(rows: pd.DataFrame, table: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """`columns` of `table` for each (ticker, date) of `rows`, row-aligned (NaN if absent).

    The table's dates are cast to the rows' date type first: SQL reads may return
    datetime64[ns] or date objects where the features hold datetime64[s].
    """
    right = table[[*_KEY, *columns]].assign(date=pd.to_datetime(table["date"]).astype(rows["date"].dtype))
    merged = rows[_KEY].merge(right, on=_KEY, how="left", validate="one_to_one")
    return merged[columns]


def _forward_return(adj_close: np.ndarray, codes: np.ndarray, horizon: int) -> np.ndarray:
    """adj_close `horizon` rows later / adj_close − 1 within each ticker (rows sorted by it)."""
    future = np.full(adj_close.size, np.nan)
    same = codes[horizon:] == codes[: codes.size - horizon]
    future[: codes.size - horizon][same] = adj_close[horizon:][same]
    with np.errstate(divide="ignore", invalid="ignore"):
        out = future / adj_close - 1.0
    out[~np.isfinite(out)] = np.nan
    return out


def model_frame(
    features: pd.DataFrame,
    prices: pd.DataFrame,
    sentiment: pd.DataFrame,
    *,
    horizon: int,
    exclude: Sequence[str] = (),
    tradable: Collection[str] | None = None,
) -> pd.DataFrame:
    """One row per (ticker, date) of `features` for the tradable tickers only, sorted.

    Rows are kept for tickers in `tradable` (`bentley.inputs.tradable_tickers`; None: by
    the ticker convention alone, `^` symbols being indices) and not in `exclude` (the
    benchmark). An index is never a model row: the model would learn to forecast something
    no order can buy, and its rows would weigh in every metric. Only rows are filtered, so an
    index's prices and features remain available as inputs.

    Columns: ticker, date, the model inputs (`feature_names`), fwd_return, label.

    * sma_*/ema_*/bb_* become `<name>_rel` = level / adj_close − 1; macd, macd_signal,
      macd_hist and atr_* become `<name>_rel` = value / adj_close; obv is dropped (see the
      module docstring); every other feature column is kept as it is.
    * Sentiment: mean_compound, positive_share, negative_share (0 on days without a row),
      n_headlines as log1p(count) (0 without a row) and has_news (1.0 when a row exists).
    * fwd_return = adj_close `horizon` rows later / adj_close − 1 within the ticker (NaN for
      its last `horizon` rows); label = 1.0 when fwd_return > 0, else 0.0, NaN with it.

    Rows are a ticker's rows of `features`, so "`horizon` rows later" is `horizon` sessions
    later when the feature table has no gaps. Inputs are float64, inf replaced by NaN.
    """
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    names = features["ticker"].unique()
    kept = set(names) & set(tradable) if tradable is not None else set(tradable_only(names))
    rows = features.loc[features["ticker"].isin(sorted(kept - set(exclude)))]
    rows = rows.sort_values(_KEY, kind="stable").reset_index(drop=True)
    adj_close = _floats(_lookup(rows, prices, ["adj_close"])["adj_close"])

    # Each input is written straight into one preallocated matrix: on a million rows, a column
    # dict stacked afterwards would hold every input twice.
    kept_features = [name for name in rows.columns.drop(_KEY) if name not in _DROPPED]
    names = [
        f"{name}_rel" if _RELATIVE_LEVEL.fullmatch(name) or _PRICE_SCALED.fullmatch(name) else name
        for name in kept_features
    ]
    names += [*SENTIMENT_COLUMNS, "n_headlines", "has_news"]
    matrix = np.empty((len(rows), len(names)))
    with np.errstate(divide="ignore", invalid="ignore"):
        for column, name in enumerate(kept_features):
            values = _floats(rows[name])
            if _RELATIVE_LEVEL.fullmatch(name):
                np.subtract(values / adj_close, 1.0, out=matrix[:, column])
            elif _PRICE_SCALED.fullmatch(name):
                np.divide(values, adj_close, out=matrix[:, column])
            else:
                matrix[:, column] = values

    news = sentiment[[*_KEY, *SENTIMENT_COLUMNS, "n_headlines"]].assign(has_news=1.0)
    news = _lookup(rows, news, [*SENTIMENT_COLUMNS, "n_headlines", "has_news"])
    column = len(kept_features)
    for name in SENTIMENT_COLUMNS:
        matrix[:, column] = np.nan_to_num(_floats(pd.to_numeric(news[name], errors="coerce")))
        column += 1
    count = np.nan_to_num(_floats(pd.to_numeric(news["n_headlines"], errors="coerce")))
    matrix[:, column] = np.log1p(count)
    matrix[:, column + 1] = np.nan_to_num(_floats(news["has_news"]))

    matrix[~np.isfinite(matrix)] = np.nan
    out = pd.DataFrame(matrix, columns=names, copy=False)
    out.insert(0, "ticker", rows["ticker"])
    out.insert(1, "date", rows["date"])
    codes, _ = pd.factorize(rows["ticker"])
    fwd_return = _forward_return(adj_close, codes, horizon)
    out["fwd_return"] = fwd_return
    out["label"] = np.where(np.isnan(fwd_return), np.nan, (fwd_return > 0.0).astype(np.float64))
    return out


def feature_names(frame: pd.DataFrame) -> list[str]:
    """The model input columns of a `model_frame`, in order (everything but keys and labels)."""
    return [c for c in frame.columns if c not in (*_KEY, *LABEL_COLUMNS)]


def unlabelled_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Each ticker's rows after its last labelled row: the latest rows, still to be predicted.

    These are the last `horizon` rows of each ticker in a `model_frame` (whose rows are
    sorted by ticker and date); a ticker's latest date is always among them. A ticker with
    no labelled row at all contributes every row.
    """
    labelled = np.isfinite(_floats(frame["label"]))[::-1]
    codes, _ = pd.factorize(frame["ticker"])
    later = pd.Series(labelled.astype(np.int64)).groupby(codes[::-1]).cumsum().to_numpy()[::-1]
    return frame[later == 0].reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# Estimators


def build_estimator(name: str, spec: Mapping[str, Any], *, seed: int | None = None) -> Pipeline:
    """Median imputer → standard scaler → the classifier `spec` names, unfitted.

    `spec` is `{"class": "dotted.path.ClassName", "kwargs": {...}}`, as in `ml.models.<name>`.
    The class must be a scikit-learn(-compatible) classifier with `predict_proba` (an SVC
    needs `probability: true`); anything else is a ValueError naming the parameter. With a
    `seed`, `random_state` is set on estimators that take one, unless the kwargs give it.
    """
    where = f"ml.models.{name}.class"
    path = spec.get("class")
    if not isinstance(path, str):
        raise ValueError(f"{where}: expected a dotted class path, got {path!r}")
    try:
        target = estimator_class(path)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    kwargs = dict(spec.get("kwargs") or {})
    try:
        estimator = target(**kwargs)
    except TypeError as exc:
        raise ValueError(f"ml.models.{name}.kwargs: {path} rejects {kwargs} ({exc})") from None
    if not (is_classifier(estimator) and hasattr(estimator, "predict_proba")):
        raise ValueError(f"{where}: {path!r} is not a scikit-learn classifier with predict_proba")
    if seed is not None and "random_state" not in kwargs and "random_state" in estimator.get_params(deep=False):
        estimator.set_params(random_state=seed)
    return Pipeline(
        [
            ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
            ("scale", StandardScaler()),
            ("model", estimator),
        ]
    )


def _design(x: np.ndarray, columns: Sequence[str]) -> pd.DataFrame:
    """A matrix as a frame with the feature names, so the fitted model records them."""
    return pd.DataFrame(x, columns=list(columns), copy=False)


def _fit(template: Pipeline, x: np.ndarray, y: np.ndarray, columns: Sequence[str], where: str) -> Pipeline:
    """A fresh clone of `template` (a `build_estimator` pipeline) fitted on (x, y), step by step.

    A single-class training set is an error naming `where` (the split and the model).

    The steps end up exactly as `Pipeline.fit` leaves them, faster: SimpleImputer's median
    goes through numpy masked arrays (about 6 s on a million rows of 35 columns, as long as
    the classifier's fit), while np.nanmedian takes under a second. Fitting the imputer on
    the single row of those medians gives it the same statistics_ and feature names (and 0
    for a column without values, from keep_empty_features); scaler and classifier are then
    fitted on the imputed rows as the pipeline would.
    """
    if np.unique(y).size < 2:
        raise ValueError(f"{where}: {y.size} training rows hold fewer than two classes")
    model = clone(template)
    estimator = model[-1]
    estimator.fit(_fit_inputs(model, x, columns), y)
    return model


def _fit_inputs(model: Pipeline, x: np.ndarray, columns: Sequence[str]) -> np.ndarray:
    """Fit the pipeline's imputer and scaler on x (see `_fit`); x as the classifier sees it."""
    impute, scale = model[0], model[1]
    # An all-NaN column has no median (NaN: the imputer gives it 0). It is left out of nanmedian
    # rather than silenced with `warnings.catch_warnings`, which is not thread-safe and the fits
    # run on threads: its "All-NaN slice" warning would leak into a report now and then.
    medians = np.full(x.shape[1], np.nan)
    observed = np.isfinite(x).any(axis=0)
    if observed.any():
        medians[observed] = np.nanmedian(x[:, observed], axis=0)
    impute.fit(_design(medians[np.newaxis, :], columns))
    return scale.fit_transform(impute.transform(_design(x, columns)))


def _proba_up(model: Pipeline, x: np.ndarray, columns: Sequence[str]) -> np.ndarray:
    """P(label = 1) for each row of x (empty for no rows)."""
    if x.shape[0] == 0:
        return np.empty(0)
    column = list(model.classes_).index(1.0)
    return model.predict_proba(_design(x, columns))[:, column]


# --------------------------------------------------------------------------------------------
# Metrics


def _long_short_hit_rate(dates: np.ndarray, proba: np.ndarray, fwd_return: np.ndarray) -> float:
    """Share of dates with >= 2 rows whose top half by proba out-returned the bottom half.

    Each date's rows are ranked by proba (ties by row order); with m rows, the top and
    bottom m // 2 are compared (the middle row of an odd m sits out). Both halves hold the
    same number of rows, so comparing sums compares means.
    """
    day, _ = pd.factorize(dates)
    order = np.lexsort((proba, day))
    day, fwd_return = day[order], fwd_return[order]
    size = np.bincount(day)
    first = np.concatenate(([0], np.cumsum(size)[:-1]))
    rank = np.arange(day.size) - first[day]
    half = (size // 2)[day]
    bottom, top = rank < half, rank >= size[day] - half
    top_sum = np.bincount(day[top], fwd_return[top], minlength=size.size)
    bottom_sum = np.bincount(day[bottom], fwd_return[bottom], minlength=size.size)
    qualifies = size >= 2
    if not qualifies.any():
        return float("nan")
    return float(np.mean(top_sum[qualifies] > bottom_sum[qualifies]))


def _correlation(x: np.ndarray, y: np.ndarray, method: Any) -> float:
    """scipy's correlation statistic, NaN when it is undefined (fewer than 2 rows, a constant)."""
    if x.size < 2 or np.ptp(x) == 0.0 or np.ptp(y) == 0.0:
        return float("nan")
    return float(method(x, y).statistic)


@dataclass(frozen=True)
class _Scored:
    """The rows a metric can use (label, proba and fwd_return all known), as arrays."""

    y: np.ndarray  # int64 labels
    proba: np.ndarray
    fwd_return: np.ndarray
    dates: np.ndarray

    @classmethod
    def of(cls, frame: pd.DataFrame) -> _Scored:
        label, proba = _floats(frame["label"]), _floats(frame["proba"])
        fwd_return = _floats(frame["fwd_return"])
        keep = np.isfinite(label) & np.isfinite(proba) & np.isfinite(fwd_return)
        return cls(label[keep].astype(np.int64), proba[keep], fwd_return[keep], frame["date"].to_numpy()[keep])

    def take(self, index: np.ndarray) -> _Scored:
        return _Scored(self.y[index], self.proba[index], self.fwd_return[index], self.dates[index])

    @property
    def predicted(self) -> np.ndarray:
        return (self.proba >= 0.5).astype(np.int64)

    @property
    def some(self) -> bool:
        return self.y.size > 0

    @property
    def both(self) -> bool:
        return np.unique(self.y).size == 2


_NAN = float("nan")


def _roc_auc(scored: _Scored) -> float:
    """ROC AUC as the Mann-Whitney statistic on ranks: sklearn's `roc_auc_score` value (a tie
    counts half), without its input checks, which cost milliseconds a call and this runs
    thousands of times in the permutation and bootstrap loops."""
    if not scored.both:
        return _NAN
    ranks = stats.rankdata(scored.proba)
    up = scored.y == 1
    n_up = int(up.sum())
    n_down = scored.y.size - n_up
    return float((ranks[up].sum() - n_up * (n_up + 1) / 2) / (n_up * n_down))


#: How each of `METRIC_NAMES` is computed; NaN where the rows cannot define it.
_METRICS: dict[str, Callable[[_Scored], float]] = {
    "accuracy": lambda s: float(accuracy_score(s.y, s.predicted)) if s.some else _NAN,
    "balanced_accuracy": lambda s: float(balanced_accuracy_score(s.y, s.predicted)) if s.both else _NAN,
    "precision": lambda s: float(precision_score(s.y, s.predicted, zero_division=np.nan)) if s.some else _NAN,
    "recall": lambda s: float(recall_score(s.y, s.predicted, zero_division=np.nan)) if s.some else _NAN,
    "roc_auc": _roc_auc,
    "log_loss": lambda s: (
        float(log_loss(s.y, np.clip(s.proba, _PROBA_EPS, 1.0 - _PROBA_EPS), labels=[0, 1])) if s.some else _NAN
    ),
    "hit_rate": lambda s: _long_short_hit_rate(s.dates, s.proba, s.fwd_return),
    "ic": lambda s: _correlation(s.proba, s.fwd_return, stats.pearsonr),
    "rank_ic": lambda s: _correlation(s.proba, s.fwd_return, stats.spearmanr),
    "n": lambda s: float(s.y.size),
}


def classification_metrics(frame: pd.DataFrame) -> dict[str, float]:
    """Quality of predicted probabilities `proba` against `label` and `fwd_return`, by `date`.

    Keys are `METRIC_NAMES`. The predicted class is proba >= 0.5. hit_rate is the long-short
    hit rate (see `_long_short_hit_rate`); ic and rank_ic are the pooled Pearson and
    Spearman correlations of proba with fwd_return. Rows missing label, proba or
    fwd_return are left out; `n` counts the rest. A metric the data cannot define (AUC or
    balanced accuracy with one class, precision without a positive prediction, anything on
    no rows) is NaN.
    """
    scored = _Scored.of(frame)
    return {name: _METRICS[name](scored) for name in METRIC_NAMES}


def metric_value(frame: pd.DataFrame, metric: str) -> float:
    """One of `classification_metrics`, computed alone (the permutation and bootstrap loops)."""
    return _METRICS[metric](_Scored.of(frame))


# --------------------------------------------------------------------------------------------
# Walk-forward evaluation


@dataclass(frozen=True)
class CandidateResult:
    """One candidate's CV metrics per fold, its final model and its holdout test."""

    name: str
    spec: Mapping[str, Any]
    model: Pipeline  # fitted on the holdout's training dates
    fold_metrics: pd.DataFrame  # one row per fold: split, then METRIC_NAMES
    holdout_metrics: dict[str, float]
    holdout_predictions: pd.DataFrame  # PREDICTION_COLUMNS
    # Every session from the first calendar refit on (the holdout's included), each predicted
    # by the refit before it, trained only on earlier, purged sessions: the point-in-time
    # record a backtest of the model can use, unchanged when later data arrives.
    out_of_sample: pd.DataFrame  # PREDICTION_COLUMNS
    train_start: pd.Timestamp  # first and last date of the final model's training window
    train_end: pd.Timestamp


@dataclass(frozen=True)
class _Labelled:
    """The labelled rows of a model frame, and their inputs as one float64 matrix."""

    rows: pd.DataFrame
    x: np.ndarray
    y: np.ndarray


def _labelled(frame: pd.DataFrame, feature_cols: Sequence[str]) -> _Labelled:
    """The labelled rows: their keys and labels as a frame, their inputs as one matrix (the inputs
    are not kept twice: a wide frame of a million rows is hundreds of megabytes)."""
    labelled = np.isfinite(_floats(frame["label"]))
    rows = frame.loc[labelled, [*_KEY, *LABEL_COLUMNS]].reset_index(drop=True)
    x = frame.loc[labelled, list(feature_cols)].to_numpy(dtype=np.float64, na_value=np.nan)
    return _Labelled(rows=rows, x=x, y=_floats(rows["label"]))


def _fit_and_score(
    data: _Labelled, feature_cols: Sequence[str], name: str, template: Pipeline, split: Split
) -> tuple[Pipeline, pd.DataFrame]:
    """Fit on the split's training rows (`Split.train_rows`); predictions on its test dates."""
    dates = data.rows["date"]
    train, test = split.train_rows(dates), rows_in(dates, split.test)
    model = _fit(template, data.x[train], data.y[train], feature_cols, f"{split.name} of model {name!r}")
    predictions = data.rows.loc[test, ["ticker", "date", "label", "fwd_return"]]
    predictions.insert(3, "proba", _proba_up(model, data.x[test], feature_cols))
    return model, predictions.reset_index(drop=True)


def evaluate_candidate(
    frame: pd.DataFrame,
    feature_cols: Sequence[str],
    name: str,
    spec: Mapping[str, Any],
    walk_forward: WalkForward,
    *,
    seed: int,
) -> CandidateResult:
    """Walk-forward predictions and CV metrics of one candidate, then its final fit and holdout test.

    Each calendar refit fits a fresh pipeline on the labelled rows of its training dates and
    predicts its block of sessions; a fold is a refit cut at the end of the CV region (same
    training dates, so the same model), so its metrics are those predictions on the fold's
    test dates. The final model is fitted on the holdout's training dates (the whole CV
    region) and scored once on the holdout. Rows without a label are never used.
    """
    data = _labelled(frame, feature_cols)
    template = build_estimator(name, spec, seed=seed)
    out_of_sample = pd.concat(
        [_fit_and_score(data, feature_cols, name, template, refit)[1] for refit in walk_forward.refits],
        ignore_index=True,
    )
    predicted_dates = out_of_sample["date"]
    fold_rows = [
        {"split": fold.name, **classification_metrics(out_of_sample[rows_in(predicted_dates, fold.test)])}
        for fold in walk_forward.folds
    ]
    model, holdout = _fit_and_score(data, feature_cols, name, template, walk_forward.holdout)
    train_dates = walk_forward.holdout.train  # the window, whichever of its rows a capped fit drew
    return CandidateResult(
        name=name,
        spec=spec,
        model=model,
        fold_metrics=pd.DataFrame(fold_rows, columns=["split", *METRIC_NAMES]),
        holdout_metrics=classification_metrics(holdout),
        holdout_predictions=holdout,
        out_of_sample=out_of_sample,
        train_start=pd.Timestamp(train_dates.min()),
        train_end=pd.Timestamp(train_dates.max()),
    )


# --------------------------------------------------------------------------------------------
# How far a holdout score can be trusted


def shuffled_label_scores(
    frame: pd.DataFrame,
    feature_cols: Sequence[str],
    template: Pipeline,
    split: Split,
    metric: str,
    *,
    permutations: int,
    seed: int,
) -> np.ndarray:
    """`metric` on the split's test rows of `template` refitted on shuffled training labels.

    Each of the `permutations` refits (labels permuted with a generator seeded by `seed`,
    features kept) has every link between inputs and labels destroyed, yet keeps the class,
    its hyperparameters and seed, the training rows and the true test labels: the scores
    are what a model of this class that learned nothing reaches on these very rows. Their
    centre must sit at the no-skill value, or information reaches the model another way
    than through the labels (a leaking feature, overlapping windows); the share of them at
    or above a model's own score is its permutation p-value.

    Only the training labels are shuffled: sklearn's `permutation_test_score` shuffles the
    test labels too, and scipy's `permutation_test` tests the statistic of its own refit
    on the true labels, while the value under test may come from a model fitted on another
    window (a champion).

    The imputer and scaler never see a label, so they are fitted once and only the
    classifier is refitted per permutation: the same models `_fit` would give, at the cost
    of the classifier alone.
    """
    data = _labelled(frame, feature_cols)
    dates = data.rows["date"]
    train, test = split.train_rows(dates), rows_in(dates, split.test)
    y_train = data.y[train]
    if np.unique(y_train).size < 2:
        raise ValueError(f"{split.name} (shuffled labels): {y_train.size} training rows hold fewer than two classes")
    inputs = clone(template)
    z_train = _fit_inputs(inputs, data.x[train], feature_cols)
    z_test = inputs[:-1].transform(_design(data.x[test], feature_cols))
    rows = data.rows.loc[test, ["date", "label", "fwd_return"]].reset_index(drop=True)
    rng = np.random.default_rng(seed)
    scores = np.empty(permutations)
    for i in range(permutations):
        classifier = clone(template[-1]).fit(z_train, rng.permutation(y_train))
        proba = classifier.predict_proba(z_test)[:, list(classifier.classes_).index(1.0)]
        scores[i] = metric_value(rows.assign(proba=proba), metric)
    return scores


def bootstrap_interval(
    frame: pd.DataFrame, metric: str, *, block_sessions: int, resamples: int, confidence: float, seed: int
) -> tuple[float, float]:
    """Percentile interval of `metric` over the scored rows resampled in blocks of sessions.

    Rows are not independent draws: the tickers of one session share the market's move, and
    a label over `horizon` sessions overlaps its neighbours'. So whole blocks of
    `block_sessions` consecutive sessions (pass the horizon), all tickers together, are
    drawn with replacement (scipy.stats.bootstrap over the block numbers). NaN when fewer
    than two blocks exist, or when a resample cannot define the metric (one class only):
    then nothing trustworthy can be said.
    """
    scored = _Scored.of(frame)
    sessions, _ = pd.factorize(scored.dates, sort=True)
    blocks = sessions // block_sessions
    members = [np.flatnonzero(blocks == b) for b in range(int(blocks.max(initial=-1)) + 1)]
    if len(members) < 2:
        return _NAN, _NAN

    def statistic(chosen: np.ndarray) -> float:
        return _METRICS[metric](scored.take(np.concatenate([members[int(b)] for b in chosen])))

    # ROC AUC (the default promotion metric) is computed for every resample at once from the
    # blocks' counts; scipy draws the same block numbers either way, so the interval is the same.
    vectorized = metric == "roc_auc"
    with warnings.catch_warnings():  # a NaN resample makes the interval NaN, which is the answer
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        result = stats.bootstrap(
            (np.arange(len(members)),),
            _BlockAuc(scored, blocks, len(members)) if vectorized else statistic,
            n_resamples=resamples,
            confidence_level=confidence,
            method="percentile",
            vectorized=vectorized,
            rng=np.random.default_rng(seed),
        )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


class _BlockAuc:
    """ROC AUC of many block resamples at once: scipy.stats.bootstrap's vectorized statistic.

    A resample is a multiset of blocks, so a row counts as often as its block was drawn. The
    Mann-Whitney count of a resample (up rows scored above down rows, a tie counting half) is
    then a sum over pairs of blocks: `pairs[m, k]` is that count for the up rows of block m
    against the down rows of block k, and a resample drawing block m c_m times counts
    sum over m, k of c_m c_k pairs[m, k]. The table is built once (a sorted search per block);
    each resample costs a (blocks x blocks) product instead of ranking its rows. The counts
    are whole or half numbers, exact in floating point: the value is `_roc_auc`'s.
    """

    def __init__(self, scored: _Scored, blocks: np.ndarray, n_blocks: int) -> None:
        up = scored.y == 1
        self.n_blocks = n_blocks
        self.pairs = np.zeros((n_blocks, n_blocks))
        up_scores, up_blocks = scored.proba[up], blocks[up]
        for block in range(n_blocks):
            down = np.sort(scored.proba[~up & (blocks == block)])
            below = np.searchsorted(down, up_scores, side="left")
            ties = np.searchsorted(down, up_scores, side="right") - below
            self.pairs[:, block] = np.bincount(up_blocks, weights=below + 0.5 * ties, minlength=n_blocks)
        self.n_up = np.bincount(blocks[up], minlength=n_blocks).astype(np.float64)
        self.n_down = np.bincount(blocks[~up], minlength=n_blocks).astype(np.float64)

    def __call__(self, chosen: np.ndarray, axis: int = -1) -> np.ndarray:
        chosen = np.moveaxis(np.asarray(chosen, dtype=np.int64), axis, -1)
        counts = (chosen[..., None] == np.arange(self.n_blocks)).sum(axis=-2).astype(np.float64)
        pairs = np.einsum("...m,mk,...k->...", counts, self.pairs, counts)
        n_up, n_down = counts @ self.n_up, counts @ self.n_down
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where((n_up > 0) & (n_down > 0), pairs / (n_up * n_down), np.nan)


def majority_rate(labels: np.ndarray | pd.Series) -> tuple[float, bool]:
    """The accuracy of always predicting the more common label, and whether that label is up.

    The floor for accuracy: on rows that are up two times in three, a model that says "up"
    every day is right 67% of the time without knowing anything. NaN for no labels.
    """
    y = _floats(pd.Series(labels))
    y = y[np.isfinite(y)]
    if y.size == 0:
        return _NAN, True
    up = float(y.mean())
    return max(up, 1.0 - up), up >= 0.5


# --------------------------------------------------------------------------------------------
# Importances and predictions


def feature_importances(
    model: Pipeline,
    X: pd.DataFrame,
    y: np.ndarray | pd.Series,
    *,
    seed: int,
    n_repeats: int,
    max_rows: int,
) -> pd.DataFrame:
    """How much each input matters to a fitted pipeline: feature, importance, std, method.

    A linear model (its estimator has `coef_`) reports |coefficient|: the inputs are
    standardised by the pipeline, so a coefficient is the log-odds change per standard
    deviation (method "abs_coefficient", std NaN). Other models get permutation importance:
    the drop in ROC AUC when one column is shuffled, `n_repeats` times, on at most
    `max_rows` rows sampled with `seed` (method "permutation_auc"; NaN when y holds one
    class). Pass out-of-sample rows (the holdout), with X's columns as the model was fitted.
    Sorted by importance, largest first.
    """
    estimator = model[-1]
    if hasattr(estimator, "coef_"):
        importance = np.abs(np.ravel(estimator.coef_))
        std, method = np.full(importance.size, np.nan), "abs_coefficient"
    else:
        y = np.asarray(y, dtype=np.float64)
        if len(X) > max_rows:
            sample = np.sort(np.random.default_rng(seed).choice(len(X), max_rows, replace=False))
            X, y = X.iloc[sample], y[sample]
        method = "permutation_auc"
        if np.unique(y).size < 2:
            importance = std = np.full(X.shape[1], np.nan)
        else:
            importance, std = _permutation_auc(model, X, y, seed=seed, n_repeats=n_repeats)
    table = pd.DataFrame({"feature": list(X.columns), "importance": importance, "std": std, "method": method})
    return table.sort_values("importance", ascending=False, kind="stable", na_position="last").reset_index(drop=True)


#: Rows per `predict_proba` call when scoring permuted copies (bounds the stacked matrix's memory).
_PERMUTED_ROWS_PER_CALL = 200_000


def _permutation_auc(
    model: Pipeline, X: pd.DataFrame, y: np.ndarray, *, seed: int, n_repeats: int
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of the drop in ROC AUC when each column is shuffled: the numbers
    `sklearn.inspection.permutation_importance(model, X, y, scoring="roc_auc", n_repeats,
    random_state=seed)` gives, at a fraction of its cost.

    The shuffles are sklearn's, draw for draw (one seed drawn from `seed`, a RandomState per
    column, each repeat shuffling the already shuffled column again), so a table does not
    change with the implementation. What differs is the scoring: sklearn predicts each
    permuted copy on its own, and a boosted model's `predict_proba` costs about the same for
    500 rows as for 50,000 (a Python step per tree), so 90 calls of one holdout took ~1 s
    where one call on the 90 copies stacked takes ~0.1 s. AUC is computed on ranks
    (`_roc_auc`), the value sklearn's scorer gives.
    """
    x = X.to_numpy(dtype=np.float64, na_value=np.nan)
    rows, columns = x.shape
    labels = np.asarray(y, dtype=np.float64).astype(np.int64)
    dates = np.zeros(rows)

    def auc(proba: np.ndarray) -> float:
        return _roc_auc(_Scored(labels, proba, np.zeros(rows), dates))

    baseline = auc(_proba_up(model, x, X.columns))
    seed_all = np.random.RandomState(seed).randint(np.iinfo(np.int32).max + 1)
    copies = []
    for column in range(columns):
        state, order, values = np.random.RandomState(seed_all), np.arange(rows), x[:, column].copy()
        for _ in range(n_repeats):
            state.shuffle(order)
            values = values[order]
            permuted = x.copy()
            permuted[:, column] = values
            copies.append(permuted)
    per_call = max(1, _PERMUTED_ROWS_PER_CALL // max(rows, 1))
    proba = np.concatenate(
        [_proba_up(model, np.vstack(copies[i : i + per_call]), X.columns) for i in range(0, len(copies), per_call)]
    )
    scores = np.array([auc(block) for block in proba.reshape(len(copies), rows)]).reshape(columns, n_repeats)
    drops = baseline - scores
    return drops.mean(axis=1), drops.std(axis=1)


def predict(model: Pipeline, frame: pd.DataFrame, feature_cols: Sequence[str]) -> pd.DataFrame:
    """ticker, date, proba_up (P(forward return > 0)) and predicted_up (proba_up >= 0.5)."""
    x = frame[list(feature_cols)].to_numpy(dtype=np.float64, na_value=np.nan)
    out = frame[_KEY].reset_index(drop=True)
    out["proba_up"] = _proba_up(model, x, feature_cols)
    out["predicted_up"] = out["proba_up"].to_numpy() >= 0.5
    return out
