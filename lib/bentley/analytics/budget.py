"""Household budget: categorize the ledger, roll spending up by month, net worth, investable cash.

Functions take tables (the TRANSACTIONS / HOLDINGS / PRICES contracts of `bentley.schemas`)
and settings, and return tables whose columns match the warehouse tables
(`transaction_categories`, `budget_monthly`, `net_worth`, `investable_cash`), so a stage
can upsert them as they are.

Settings (the ``budget`` params section)
----------------------------------------
::

    budget:
      rules:                       # rows without a category; first match wins;
        - {pattern: "PAYROLL", category: income}        # case-insensitive regex on description
        - {pattern: 'PROPERTY MGMT|\\bRENT\\b', category: housing}   # single quotes: no YAML escapes
      classifier:                  # the model that fills what neither the ledger nor a rule did
        estimator: sklearn.linear_model.LogisticRegression   # `class` is accepted as a synonym
        kwargs: {max_iter: 1000}
      holdout_share: 0.25          # labelled rows held out to measure the classifier (0 <= x < 1)
      limits: {groceries: 1250, dining: 550}   # monthly budget per category, USD
      emergency_fund_months: 6
      bills:                       # known bills; those due in (as_of, as_of + horizon] are reserved
        - {description: Rent, amount: 2700, day_of_month: 1}
        - {description: Power, amount: null, match: "POWER & LIGHT", day_of_month: 8}
      horizon_days: 30
      transfer_categories: [transfer, savings]   # moves between own accounts
      opening_balances: {}         # USD per ledger account before its first row; {} = all zero

Every function also accepts the pieces as plain Python values: a rule is a
``(pattern, category)`` pair, a mapping or an object with ``pattern`` and ``category``
attributes (a pydantic model); a bill likewise with ``description``, ``amount``,
``day_of_month`` and optional ``match``; the classifier spec is a dotted path string, a
mapping with ``estimator`` (or ``class``) and ``kwargs``, or an object with ``estimator`` and
``kwargs`` attributes. ``estimator`` is the recommended key because ``class`` is a Python
keyword and would need an alias in a pydantic model.

A bill with ``amount: null`` takes the size of the latest ledger charge (on or before as_of)
whose description matches ``match``, so a rent that rises every year needs no params edit.

Sign conventions
----------------
Amounts are USD, negative for money out. "Spending" is the net outflow of every category
that is neither income nor a transfer: refunds (positive rows in an expense category)
reduce it, because a returned purchase was not spent. Transfers between own accounts
(card payoff, savings top-up) are neither spending nor income: counting both the card
purchases and the card payoff would count the same groceries twice.
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
import warnings
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter
from sklearn.base import BaseEstimator
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from bentley.models.estimators import estimator_class
from bentley.reporting import md_escape

if TYPE_CHECKING:  # jinja2, which Styler needs, is only imported when a table is styled
    from pandas.io.formats.style import Styler

#: Category of rows nobody could label (no given category, no rule, no trainable model).
UNCATEGORIZED = "uncategorized"
#: Categories that are money coming in, not negative spending.
INCOME_CATEGORIES: tuple[str, ...] = ("income",)
#: Default `transfer_categories`.
TRANSFER_CATEGORIES: tuple[str, ...] = ("transfer", "savings")
#: Full months averaged for `monthly_expenses` in `investable_cash`.
EXPENSE_MONTHS = 3

_USD = FuncFormatter(lambda value, _: f"{value:,.0f}")
_MISSING = object()


# --------------------------------------------------------------------------- settings


def _field(item: Any, name: str, default: Any = _MISSING) -> Any:
    """`item[name]` for mappings, `item.name` for objects (pydantic models, namespaces)."""
    value = item.get(name, default) if isinstance(item, Mapping) else getattr(item, name, default)
    if value is _MISSING:
        raise ValueError(f"budget setting {item!r} lacks {name!r}")
    return value


def rule_pairs(rules: Iterable[Any] | None) -> list[tuple[str, str]]:
    """Rules as ``(pattern, category)`` pairs, from pairs, mappings or objects."""
    pairs = []
    for rule in rules or ():
        if isinstance(rule, (tuple, list)) and len(rule) == 2:
            pattern, category = rule
        else:
            pattern, category = _field(rule, "pattern"), _field(rule, "category")
        pairs.append((str(pattern), str(category)))
    return pairs


def classifier_parts(spec: Any) -> tuple[str, dict[str, Any]]:
    """(dotted path, kwargs) of a classifier spec: a string, a mapping or an object."""
    if isinstance(spec, str):
        return spec, {}
    if isinstance(spec, Mapping):
        path = spec.get("estimator", spec.get("class"))
        kwargs = spec.get("kwargs")
    else:
        path = getattr(spec, "estimator", None) or getattr(spec, "class_", None)
        kwargs = getattr(spec, "kwargs", None)
    if not isinstance(path, str):
        raise ValueError(f"classifier spec {spec!r} names no estimator (a dotted sklearn path)")
    return path, dict(kwargs or {})


def build_estimator(spec: Any, seed: int) -> BaseEstimator:
    """The classifier a spec describes; seeded through `random_state` unless kwargs set it."""
    path, kwargs = classifier_parts(spec)
    estimator = estimator_class(path)(**kwargs)
    if "random_state" in estimator.get_params() and "random_state" not in kwargs:
        estimator.set_params(random_state=seed)
    return estimator


# --------------------------------------------------------------------------- categorize


def _given(transactions: pd.DataFrame) -> pd.Series:
    """True where the ledger already carries a non-blank category."""
    category = transactions["category"]
    return (category.notna() & (category.astype("string").str.strip() != "")).fillna(False)


def apply_rules(transactions: pd.DataFrame, rules: Iterable[Any] | None) -> pd.Series:
    """Category from the first rule whose pattern matches the description, else None.

    Patterns are case-insensitive regular expressions searched anywhere in the description
    (bank descriptions carry store numbers and reference codes around the merchant name).
    Rules run in order and the first match wins, so specific rules go before general ones.
    """
    description = transactions["description"].astype("string").fillna("")
    out = pd.Series([None] * len(transactions), index=transactions.index, dtype=object)
    open_ = np.ones(len(transactions), dtype=bool)
    for pattern, category in rule_pairs(rules):
        try:
            regex = re.compile(pattern, re.IGNORECASE)
        except re.error as exc:
            raise ValueError(f"budget rule {pattern!r} -> {category!r}: bad regex ({exc})") from exc
        hit = open_ & description.str.contains(regex, na=False).to_numpy(dtype=bool)
        out[hit] = category
        open_ &= ~hit
    return out


def model_text(frame: pd.DataFrame) -> list[str]:
    """What the classifier reads: the description plus a token for the amount's direction.

    The direction token (``__in__`` or ``__out__``) lets the same merchant words mean
    different things for money in and money out (a transfer *from* savings vs *to* it, a
    payroll vs a payment). Underscores do not occur in bank descriptions, so the token's
    character n-grams do not collide with merchant text. Amounts themselves are left out:
    their size says little about the merchant and would need scaling next to TF-IDF.
    """
    description = frame["description"].astype("string").fillna("").tolist()
    incoming = (pd.to_numeric(frame["amount"], errors="coerce") > 0).tolist()
    return [f"{text} {'__in__' if inflow else '__out__'}" for text, inflow in zip(description, incoming, strict=True)]


def make_pipeline(classifier_spec: Any, seed: int) -> Pipeline:
    """text (`model_text`) -> char n-gram TF-IDF -> the configured classifier.

    Character n-grams within words (2-4) match merchant names through the store numbers,
    truncations and punctuation of bank descriptions ("WHOLEFDS MKT #10234" vs "#10235")
    that would defeat a word vocabulary. The pipeline takes a frame with ``description``
    and ``amount`` columns, so a saved model predicts on ledger rows directly.
    """
    return Pipeline(
        [
            ("text", FunctionTransformer(model_text)),
            ("tfidf", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), lowercase=True)),
            ("classifier", build_estimator(classifier_spec, seed)),
        ]
    )


def _holdout(y: np.ndarray, share: float, seed: int) -> tuple[np.ndarray, np.ndarray, bool]:
    """(train positions, test positions, stratified) for a seeded holdout of `share`.

    Classes seen once cannot be both learnt and tested, so they always train. The rest is
    split stratified by class when the test set can hold every class, else at random.
    """
    positions = np.arange(len(y))
    empty = np.array([], dtype=int)
    if share <= 0:
        return positions, empty, False
    counts = pd.Series(y).value_counts()
    splittable = np.isin(y, counts.index[counts >= 2].to_numpy())
    candidates = positions[splittable]
    n_test = int(round(share * len(candidates)))
    if n_test < 1 or len(candidates) - n_test < 1:
        return positions, empty, False
    n_classes = len(set(y[candidates].tolist()))
    stratified = n_test >= n_classes and len(candidates) - n_test >= n_classes
    train, test = train_test_split(
        candidates,
        test_size=n_test,
        random_state=seed,
        shuffle=True,
        stratify=y[candidates] if stratified else None,
    )
    return np.sort(np.concatenate([positions[~splittable], train])), np.sort(test), stratified


def train_classifier(
    labelled: pd.DataFrame, classifier_spec: Any, holdout_share: float, seed: int
) -> tuple[Pipeline, dict[str, float]]:
    """Fit the category model on labelled rows; report its accuracy on a seeded holdout.

    `labelled` has ``description``, ``amount`` and ``category`` (every row labelled). The
    holdout (`holdout_share` of the rows, stratified where possible) is scored first, then
    the pipeline is refit on every labelled row: the reported accuracy is an estimate for
    the final model, which has seen a little more data.

    Metrics are all numbers (ready for `mlflow.log_metrics`): accuracy and macro_f1 (NaN
    without a holdout), n_labelled, n_train, n_test, n_classes, stratified (1.0 or 0.0).
    Raises ValueError with fewer than two classes: there is nothing to learn.
    """
    if not 0 <= holdout_share < 1:
        raise ValueError(f"holdout_share must be in [0, 1), got {holdout_share}")
    rows = labelled.reset_index(drop=True)
    y = rows["category"].astype(str).to_numpy()
    n_classes = len(set(y.tolist()))
    if n_classes < 2:
        raise ValueError(f"the classifier needs at least two categories, got {n_classes}")
    train, test, stratified = _holdout(y, holdout_share, seed)
    accuracy = macro_f1 = float("nan")
    if len(test) and len(set(y[train].tolist())) >= 2:
        probe = make_pipeline(classifier_spec, seed).fit(rows.iloc[train], y[train])
        predicted = probe.predict(rows.iloc[test])
        accuracy = float(accuracy_score(y[test], predicted))
        macro_f1 = float(f1_score(y[test], predicted, average="macro", zero_division=0))
    else:
        train, test = np.arange(len(y)), np.array([], dtype=int)
    model = make_pipeline(classifier_spec, seed).fit(rows, y)
    metrics = {
        "accuracy": accuracy,
        "macro_f1": macro_f1,
        "n_labelled": float(len(y)),
        "n_train": float(len(train)),
        "n_test": float(len(test)),
        "n_classes": float(n_classes),
        "stratified": float(stratified and len(test) > 0),
    }
    return model, metrics


def categorize(
    transactions: pd.DataFrame,
    rules: Iterable[Any] | None,
    classifier_spec: Any,
    holdout_share: float,
    seed: int,
) -> tuple[pd.DataFrame, dict[str, float]]:
    """The ledger with ``category_final``, ``category_method`` and ``model_confidence``.

    Precedence: a category the ledger gives is kept ("given": the bank or the user knows
    best); rules fill the rest ("rule": explicit and auditable); the model fills what
    remains ("model", with ``model_confidence`` = its highest class probability, NaN for
    other rows or classifiers without ``predict_proba``).

    The model learns from given categories only. Rule hits are not training labels: the
    holdout would then partly score the model against our own regexes and overstate it.
    With fewer than two given categories there is no model; unfilled rows become
    ``"uncategorized"`` with method ``"none"``, so spending totals stay complete.

    Metrics: `train_classifier`'s (NaN when no model) plus n_given, n_rule, n_model, n_none
    and mean_model_confidence.
    """
    out = transactions.copy()
    given = _given(out).to_numpy(dtype=bool)
    by_rule = apply_rules(out, rules)
    ruled = ~given & by_rule.notna().to_numpy(dtype=bool)
    rest = ~given & ~ruled

    final = pd.Series(UNCATEGORIZED, index=out.index, dtype=object)
    final[given] = out.loc[given, "category"].astype(str).str.strip().to_numpy()
    final[ruled] = by_rule[ruled].to_numpy()
    method = pd.Series("none", index=out.index, dtype=object)
    method[given], method[ruled] = "given", "rule"
    confidence = np.full(len(out), np.nan)

    labelled = out.loc[given, ["description", "amount"]].assign(category=final[given])
    metrics: dict[str, float] = {
        "accuracy": float("nan"),
        "macro_f1": float("nan"),
        "n_labelled": float(given.sum()),
        "n_train": 0.0,
        "n_test": 0.0,
        "n_classes": float(labelled["category"].nunique()),
        "stratified": 0.0,
    }
    if labelled["category"].nunique() >= 2:
        model, metrics = train_classifier(labelled, classifier_spec, holdout_share, seed)
        if rest.any():
            unknown = out.loc[rest, ["description", "amount"]]
            if hasattr(model, "predict_proba"):
                proba = model.predict_proba(unknown)
                final[rest] = model.classes_[proba.argmax(axis=1)]
                confidence[rest] = proba.max(axis=1)
            else:
                final[rest] = model.predict(unknown)
            method[rest] = "model"

    out["category_final"] = final.astype(str)
    out["category_method"] = method.astype(str)
    out["model_confidence"] = confidence
    counts = method.value_counts()
    metrics.update(
        {f"n_{m}": float(counts.get(m, 0)) for m in ("given", "rule", "model", "none")},
        mean_model_confidence=(float(np.nanmean(confidence)) if np.isfinite(confidence).any() else float("nan")),
    )
    return out, metrics


def category_table(categorized: pd.DataFrame) -> pd.DataFrame:
    """Rows for the warehouse `transaction_categories` table (txn_id, category, method, ...)."""
    return pd.DataFrame(
        {
            "txn_id": categorized["txn_id"].to_numpy(),
            "category": categorized["category_final"].to_numpy(),
            "method": categorized["category_method"].to_numpy(),
            "model_confidence": categorized["model_confidence"].to_numpy(dtype=float),
        }
    )


# --------------------------------------------------------------------------- monthly roll-ups


def _dates(frame: pd.DataFrame, column: str = "date") -> pd.Series:
    return pd.to_datetime(frame[column]).dt.normalize()


def _months(categorized: pd.DataFrame) -> pd.Series:
    return _dates(categorized).dt.to_period("M")


def _month_range(periods: pd.Series) -> pd.PeriodIndex:
    """Every month from the ledger's first to its last, so quiet months show as zeros."""
    if periods.empty:
        return pd.PeriodIndex([], freq="M")
    return pd.period_range(periods.min(), periods.max(), freq="M")


def _is_expense(
    categorized: pd.DataFrame, transfer_categories: Iterable[str], income_categories: Iterable[str]
) -> np.ndarray:
    excluded = set(transfer_categories) | set(income_categories)
    return (~categorized["category_final"].isin(excluded)).to_numpy(dtype=bool)


def monthly_spending(
    categorized: pd.DataFrame,
    limits: Mapping[str, float] | None,
    transfer_categories: Iterable[str] = TRANSFER_CATEGORIES,
    income_categories: Iterable[str] = INCOME_CATEGORIES,
) -> pd.DataFrame:
    """Spending per month and category against the monthly limits.

    Columns (the warehouse `budget_monthly` table): month ('YYYY-MM'), category, spent (net
    outflow in USD, positive), budget_limit (NaN without a limit; named so because LIMIT is
    an SQL keyword), over (spent - budget_limit, NaN without a limit; negative is headroom)
    and over_budget (spent > budget_limit; False without a limit).

    Every month of the ledger appears for every expense category and every limited
    category, with spent 0 where nothing happened: a budget met by spending nothing is
    still a budget met, and charts get a regular grid.
    """
    limits = dict(limits or {})
    periods = _months(categorized)
    expense = _is_expense(categorized, transfer_categories, income_categories)
    spent = (
        (-categorized.loc[expense, "amount"].astype(float))
        .groupby([periods[expense], categorized.loc[expense, "category_final"]])
        .sum()
    )
    categories = sorted(set(categorized.loc[expense, "category_final"]) | set(limits))
    grid = pd.MultiIndex.from_product([_month_range(periods), categories], names=["month", "category"])
    frame = spent.reindex(grid, fill_value=0.0).round(2).rename("spent").reset_index()
    frame["month"] = frame["month"].astype(str)
    frame["budget_limit"] = frame["category"].map(lambda c: float(limits.get(c, np.nan)))
    frame["over"] = (frame["spent"] - frame["budget_limit"]).round(2)
    frame["over_budget"] = (frame["over"] > 0).astype(bool)
    return frame[["month", "category", "spent", "budget_limit", "over", "over_budget"]]


def savings_rate(
    categorized: pd.DataFrame,
    transfer_categories: Iterable[str] = TRANSFER_CATEGORIES,
    income_categories: Iterable[str] = INCOME_CATEGORIES,
) -> pd.DataFrame:
    """Per month: income, spending, savings = income - spending, savings_rate = savings / income.

    Transfers to savings or the brokerage are not spending, so they show up as savings.
    savings_rate is NaN in months without positive income (a rate of nothing is undefined).
    """
    periods = _months(categorized)
    amount = categorized["amount"].astype(float)
    income_rows = categorized["category_final"].isin(set(income_categories)).to_numpy(dtype=bool)
    expense = _is_expense(categorized, transfer_categories, income_categories)
    months = _month_range(periods)
    income = amount[income_rows].groupby(periods[income_rows]).sum().reindex(months, fill_value=0.0)
    spending = (-amount[expense]).groupby(periods[expense]).sum().reindex(months, fill_value=0.0)
    frame = pd.DataFrame(
        {
            "month": months.astype(str),
            "income": income.round(2).to_numpy(),
            "spending": spending.round(2).to_numpy(),
        }
    )
    frame["savings"] = (frame["income"] - frame["spending"]).round(2)
    frame["savings_rate"] = np.where(
        frame["income"] > 0, frame["savings"] / frame["income"].where(frame["income"] > 0), np.nan
    )
    return frame


def highlight_overruns(frame: pd.DataFrame) -> Styler:
    """The monthly table styled for a report: over-budget rows in red, money in USD."""

    def row_style(row: pd.Series) -> list[str]:
        style = "background-color: #f8d7da; color: #842029" if bool(row.get("over_budget")) else ""
        return [style] * len(row)

    money = [c for c in ("spent", "budget_limit", "over") if c in frame.columns]
    return frame.style.apply(row_style, axis=1).format("{:,.2f}", subset=money, na_rep="", escape="html")


# --------------------------------------------------------------------------- net worth


def _opening(opening_balances: Mapping[str, float] | None) -> float:
    return float(sum((opening_balances or {}).values()))


def _holdings_snapshot(holdings: pd.DataFrame) -> tuple[pd.Timestamp | None, pd.Series]:
    """(as_of, quantity per ticker) of the latest snapshot, accounts summed."""
    if holdings.empty:
        return None, pd.Series(dtype=float)
    as_of = _dates(holdings, "as_of")
    latest = as_of.max()
    rows = holdings[(as_of == latest).to_numpy()]
    return latest, rows.groupby("ticker")["quantity"].sum().astype(float)


def net_worth(
    transactions: pd.DataFrame,
    holdings: pd.DataFrame,
    prices: pd.DataFrame,
    opening_balances: Mapping[str, float] | None = None,
) -> pd.DataFrame:
    """Per session date: cash, holdings_value and net_worth = cash + holdings_value.

    cash is the opening balances (USD per account, default 0) plus the running sum of every
    ledger amount dated on or before the session, across all ledger accounts. Transfers
    between own accounts (card payoff, savings top-up) appear as a pair of opposite rows and
    net to zero, so they move money between accounts without changing the total. A card
    account's balance is negative while money is owed: it is a liability and lowers cash.

    holdings_value uses the latest holdings snapshot for every date (a simplification: past
    trades are unknown, so the current positions are taken as held all along). Quantities
    are share counts as of the snapshot, so on each earlier date they are converted to the
    share count of the time through the splits in between (``split_ratio``) and valued at
    the as-traded ``close``: the value the position had that day, with no jump on split
    dates. Without a ``split_ratio`` column, ``adj_close`` (split-consistent, but also
    lowered for later dividends) is used instead. Dividends are not added: they were paid
    to the brokerage, which is not in the ledger. A held ticker is valued at its last close
    on days without a row, and not at all before its first row; held tickers with no prices
    are left out with a warning (listed in ``frame.attrs["unpriced"]``).
    """
    ledger = (
        pd.Series(transactions["amount"].astype(float).to_numpy(), index=_dates(transactions))
        .groupby(level=0)
        .sum()
        .sort_index()
    )
    if not prices.empty:
        dates = pd.DatetimeIndex(sorted(_dates(prices).unique()))
    else:
        dates = pd.DatetimeIndex(ledger.index)
    running = ledger.cumsum()
    position = np.searchsorted(running.index.to_numpy(), dates.to_numpy(), side="right") - 1
    before_first = position < 0  # sessions before the ledger's first row hold the opening balance
    cash = np.zeros(len(dates)) if running.empty else running.to_numpy()[np.maximum(position, 0)]
    cash = np.where(before_first, 0.0, cash)
    cash = cash + _opening(opening_balances)

    as_of, quantity = _holdings_snapshot(holdings)
    value = np.zeros(len(dates))
    unpriced = []
    if len(quantity):
        prices = prices.assign(date=_dates(prices))
        for ticker, shares in quantity.items():
            rows = prices[prices["ticker"] == ticker].sort_values("date")
            if rows.empty:
                unpriced.append(ticker)
                continue
            if "split_ratio" in rows.columns:
                splits = rows["split_ratio"].astype(float).fillna(1.0).cumprod().to_numpy()
                before = rows["date"].to_numpy() <= np.datetime64(as_of)
                at_snapshot = splits[before][-1] if before.any() else 1.0
                daily = shares * splits / at_snapshot * rows["close"].astype(float).to_numpy()
            else:
                daily = shares * rows["adj_close"].astype(float).to_numpy()
            series = pd.Series(daily, index=pd.DatetimeIndex(rows["date"]))
            series = series[~series.index.duplicated(keep="last")]
            value += series.reindex(dates, method="ffill").fillna(0.0).to_numpy()
    if unpriced:
        warnings.warn(f"net worth leaves out holdings without prices: {sorted(unpriced)}", stacklevel=2)

    frame = pd.DataFrame({"date": dates, "cash": np.round(cash, 2), "holdings_value": np.round(value, 2)})
    frame["net_worth"] = (frame["cash"] + frame["holdings_value"]).round(2)
    frame.attrs["unpriced"] = sorted(unpriced)
    return frame


# --------------------------------------------------------------------------- investable cash


def _due_dates(day_of_month: int, after: dt.date, until: dt.date) -> list[dt.date]:
    """Dates in (after, until] that fall on `day_of_month` (the last day in shorter months)."""
    dates = []
    year, month = after.year, after.month
    while dt.date(year, month, 1) <= until:
        last = calendar.monthrange(year, month)[1]
        due = dt.date(year, month, min(day_of_month, last))
        if after < due <= until:
            dates.append(due)
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return dates


def _latest_charge(categorized: pd.DataFrame | None, pattern: str, as_of: dt.date) -> float:
    """Size (USD, positive) of the latest outflow on or before as_of matching `pattern`."""
    if categorized is None:
        raise ValueError(f"bill matching {pattern!r} has no amount and no ledger to look it up in")
    dates = _dates(categorized)
    description = categorized["description"].astype("string").fillna("")
    hit = (
        description.str.contains(re.compile(pattern, re.IGNORECASE), na=False).to_numpy(dtype=bool)
        & (categorized["amount"].astype(float) < 0).to_numpy()
        & (dates <= pd.Timestamp(as_of)).to_numpy()
    )
    if not hit.any():
        # Another household's ledger need not have this payee: the bill is unknown, not an error.
        warnings.warn(
            f"bill matching {pattern!r} has no amount and no such charge in the ledger up to {as_of}; "
            "counted as 0 (set its amount in budget.bills)",
            stacklevel=2,
        )
        return 0.0
    rows = categorized[hit].assign(_date=dates[hit]).sort_values("_date", kind="stable")
    return float(-rows["amount"].iloc[-1])


def upcoming_bills(
    bills: Iterable[Any] | None,
    as_of: dt.date,
    horizon_days: int,
    categorized: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Bills due in (as_of, as_of + horizon_days]: description, due, amount (USD, positive).

    A bill recurs monthly on ``day_of_month`` (31 means the last day of shorter months) and
    is listed once per due date in the horizon. ``amount: null`` takes the latest matching
    ledger charge (``match``, a case-insensitive regex; default: the description).
    A bill due on as_of itself is excluded: it has been paid or is already in the ledger.
    """
    if horizon_days < 0:
        raise ValueError(f"horizon_days must be >= 0, got {horizon_days}")
    as_of = pd.Timestamp(as_of).date()
    until = as_of + dt.timedelta(days=int(horizon_days))
    rows = []
    for bill in bills or ():
        description = str(_field(bill, "description"))
        day = int(_field(bill, "day_of_month"))
        if not 1 <= day <= 31:
            raise ValueError(f"bill {description!r}: day_of_month must be 1-31, got {day}")
        amount = _field(bill, "amount", None)
        dues = _due_dates(day, as_of, until)
        if dues and amount is None:
            pattern = _field(bill, "match", None) or re.escape(description)
            amount = _latest_charge(categorized, str(pattern), as_of)
        if amount is not None and float(amount) < 0:
            raise ValueError(f"bill {description!r}: amount is a positive USD figure, got {amount}")
        rows += [(description, pd.Timestamp(due), round(float(amount), 2)) for due in dues]
    frame = pd.DataFrame(rows, columns=["description", "due", "amount"])
    frame["due"] = pd.to_datetime(frame["due"])
    frame["amount"] = frame["amount"].astype(float)
    return frame.sort_values(["due", "description"], kind="stable").reset_index(drop=True)


def _full_months(categorized: pd.DataFrame, as_of: pd.Timestamp, count: int) -> list[pd.Period]:
    """The last `count` calendar months that end by as_of and start on or after the ledger's
    first row: a month the ledger only partly covers would understate spending."""
    month = as_of.to_period("M")
    last_full = month if as_of == month.end_time.normalize() else month - 1
    first = _dates(categorized).min()
    return [p for p in (last_full - k for k in range(count)) if p.start_time >= first][::-1]


def investable_cash(
    categorized: pd.DataFrame,
    as_of: dt.date,
    emergency_fund_months: float,
    bills: Iterable[Any] | None,
    horizon_days: int,
    transfer_categories: Iterable[str] = TRANSFER_CATEGORIES,
    opening_balances: Mapping[str, float] | None = None,
    income_categories: Iterable[str] = INCOME_CATEGORIES,
) -> pd.DataFrame:
    """One row: how much cash could go to investments on as_of without risking the household.

    - cash: opening balances plus every ledger amount up to as_of, all ledger accounts. The
      ledger holds bank (checking, savings) and card accounts; a card balance is negative
      while owed, a liability that will be paid from the bank, so it lowers cash.
    - monthly_expenses: mean spending (see `savings_rate`) over the last 3 full months up to
      as_of that the ledger covers; fewer if the ledger is shorter. ValueError if none.
    - emergency_fund = emergency_fund_months x monthly_expenses: kept aside for job loss or
      repairs, never invested.
    - upcoming_bills: sum of `upcoming_bills` in (as_of, as_of + horizon_days]. They are
      reserved on top of the fund: the fund is for the unexpected, bills are certain.
    - investable_cash = max(cash - emergency_fund - upcoming_bills, 0) and shortfall = how
      far below zero that was before clipping (0 if none): the amount to save first.
    """
    as_of_ts = pd.Timestamp(as_of).normalize()
    dates = _dates(categorized)
    upto = (dates <= as_of_ts).to_numpy()
    cash = float(categorized.loc[upto, "amount"].astype(float).sum()) + _opening(opening_balances)

    months = _full_months(categorized[upto], as_of_ts, EXPENSE_MONTHS) if upto.any() else []
    if not months:
        raise ValueError(f"investable cash needs at least one full month of ledger up to {as_of_ts.date()}")
    rates = savings_rate(categorized[upto], transfer_categories, income_categories)
    spending = rates.set_index("month")["spending"].reindex([str(p) for p in months], fill_value=0.0)
    monthly_expenses = round(float(spending.mean()), 2)

    emergency_fund = round(float(emergency_fund_months) * monthly_expenses, 2)
    due = upcoming_bills(bills, as_of_ts.date(), horizon_days, categorized[upto])
    bills_due = round(float(due["amount"].sum()), 2)
    free = round(cash - emergency_fund - bills_due, 2)
    return pd.DataFrame(
        {
            "as_of": [as_of_ts],
            "cash": [round(cash, 2)],
            "monthly_expenses": [monthly_expenses],
            "emergency_fund": [emergency_fund],
            "upcoming_bills": [bills_due],
            "investable_cash": [max(free, 0.0)],
            "shortfall": [max(-free, 0.0)],
        }
    )


# --------------------------------------------------------------------------- charts


def spending_chart(monthly: pd.DataFrame, months: int = 12, as_of: dt.date | None = None) -> Figure:
    """Left: the last `months` months stacked by category (the largest `charts.MAX_SERIES`
    categories, the rest as "other"). Right: the latest month by category against its limit
    (black marks), over-budget bars in red; a month still in progress on `as_of` says so."""
    from bentley import charts

    recent = sorted(monthly["month"].unique())[-months:]
    frame = monthly[monthly["month"].isin(recent)]
    wide = frame.pivot_table(index="month", columns="category", values="spent", aggfunc="sum").fillna(0.0)
    wide = wide.loc[:, wide.sum() > 0] if not wide.empty else wide
    if wide.shape[1] > charts.MAX_SERIES + 1:
        order = wide.sum().sort_values(ascending=False).index
        top = list(order[: charts.MAX_SERIES])
        wide = wide[top].assign(other=wide[list(order[charts.MAX_SERIES :])].sum(axis=1))
    fig, (ax_stack, ax_latest) = charts.figure(
        10.6,
        4.8,
        cols=2,
        gridspec_kw={"width_ratios": [2, 1], "wspace": 0.95},
        left=0.85,
        bottom=0.95,
        top=0.6,
        right=0.3,
    )
    bottom = np.zeros(len(wide))
    for i, category in enumerate(wide.columns):
        colour = charts.OTHERS if category == "other" else charts.COLOURS[i % len(charts.COLOURS)]
        ax_stack.bar(wide.index, wide[category], bottom=bottom, label=category, color=colour)
        bottom += wide[category].to_numpy()
    ax_stack.set_title(f"Monthly spending by category, last {len(wide)} months")
    ax_stack.set_xlabel("Month")
    ax_stack.set_ylabel("Spent (USD)")
    ax_stack.tick_params(axis="x", labelrotation=45)
    ax_stack.yaxis.set_major_formatter(_USD)
    if len(wide.columns):
        handles, labels = ax_stack.get_legend_handles_labels()
        # top of the stack first, like the bars; outside the data, between the two panels
        charts.legend_outside(ax_stack, handles[::-1], labels[::-1])

    last = frame[frame["month"] == recent[-1]].sort_values("category") if recent else frame
    positions = np.arange(len(last))
    ax_latest.barh(
        positions,
        last["spent"],
        color=np.where(last["over_budget"], "#d9534f", "#5b8db8"),
    )
    limited = last["budget_limit"].notna().to_numpy()
    ax_latest.scatter(
        last["budget_limit"][limited],
        positions[limited],
        marker="|",
        s=300,
        color="black",
        linewidths=2,
        label="monthly limit",
        zorder=3,
    )
    ax_latest.set_yticks(positions, last["category"])
    in_progress = bool(recent) and as_of is not None and not month_is_complete(recent[-1], as_of)
    month_label = (f"{recent[-1]} so far" if in_progress else recent[-1]) if recent else "No month"
    ax_latest.set_title(f"{month_label}: spent (red: over)\nagainst the limit (|)")
    ax_latest.set_xlabel("USD")
    ax_latest.xaxis.set_major_formatter(_USD)
    ax_latest.grid(axis="y", visible=False)
    return fig


def net_worth_chart(nw: pd.DataFrame) -> Figure:
    """Net worth over time, with its cash and holdings parts (legend outside the data)."""
    from bentley import charts

    fig, ax = charts.figure(9, 4, left=1.0)
    ax.plot(*charts.thin(nw["date"], nw["net_worth"]), color="black", linewidth=2, label="net worth")
    ax.plot(
        *charts.thin(nw["date"], nw["holdings_value"]),
        linewidth=1.2,
        color=charts.COLOURS[0],
        label="holdings\n(latest positions)",
    )
    ax.plot(
        *charts.thin(nw["date"], nw["cash"]),
        linewidth=1.2,
        color=charts.COLOURS[1],
        label="cash (bank and\ncard accounts)",
    )
    ax.set_title("Net worth: cash plus the market value of holdings")
    ax.set_xlabel("Session")
    ax.set_ylabel("USD")
    ax.yaxis.set_major_formatter(_USD)
    charts.date_axis(ax)
    charts.legend_outside(ax)
    return fig


__all__ = [
    "UNCATEGORIZED",
    "apply_rules",
    "build_estimator",
    "categorize",
    "category_table",
    "classifier_parts",
    "estimator_class",
    "highlight_overruns",
    "investable_cash",
    "investable_sentence",
    "mark_complete",
    "make_pipeline",
    "model_text",
    "monthly_spending",
    "net_worth",
    "net_worth_chart",
    "rule_pairs",
    "savings_rate",
    "savings_table",
    "spending_chart",
    "train_classifier",
    "upcoming_bills",
]


def classifier_sentence(categorized: pd.DataFrame, metrics: Mapping[str, float]) -> str:
    """How categories were assigned, and how well the model did on held-out labelled rows."""
    methods = categorized["category_method"].value_counts()
    parts = ", ".join(
        f"{int(methods.get(m, 0)):,} {label}"
        for m, label in (("given", "from the bank"), ("rule", "by rules"), ("model", "by the classifier"))
    )
    if "accuracy" not in metrics:
        return f"Of {len(categorized):,} transactions: {parts}. Too few labelled rows to train a classifier."
    return (
        f"Of {len(categorized):,} transactions: {parts}. On {int(metrics['n_test']):,} labelled rows it never saw, "
        f"the classifier is {metrics['accuracy']:.1%} accurate (macro F1 {metrics['macro_f1']:.2f})."
    )


def recent_overruns(monthly: pd.DataFrame, months: int = 12) -> pd.DataFrame:
    """Over-budget rows of the last `months` months, largest overrun first."""
    recent = monthly[monthly["month"].isin(sorted(monthly["month"].unique())[-months:])]
    return recent[recent["over_budget"]].sort_values("over", ascending=False).reset_index(drop=True)


def month_is_complete(month: str, as_of: dt.date | pd.Timestamp) -> bool:
    """Has the calendar month 'YYYY-MM' ended by `as_of` (its last day included)?"""
    return pd.Period(month, freq="M").end_time.normalize() <= pd.Timestamp(as_of).normalize()


def mark_complete(savings: pd.DataFrame, as_of: dt.date | pd.Timestamp) -> pd.DataFrame:
    """`savings_rate` rows with `complete`: False for the month `as_of` falls in, before its end.

    A month in progress has its spending so far but usually not its pay yet, so its income,
    savings and rate say nothing about the month; `trailing_savings_rate` leaves it out and the
    report labels it.
    """
    out = savings.copy()
    out["complete"] = [month_is_complete(m, as_of) for m in out["month"]]
    return out


def _complete(savings: pd.DataFrame) -> pd.DataFrame:
    return savings[savings["complete"].astype(bool)] if "complete" in savings.columns else savings


def trailing_savings_rate(savings: pd.DataFrame, months: int = 12) -> float:
    """Savings over income across the last `months` complete months (not an average of monthly
    rates); a month still in progress (`mark_complete`) is left out."""
    recent = _complete(savings).tail(months)
    income = recent["income"].sum()
    return float(recent["savings"].sum() / income) if income > 0 else float("nan")


def savings_sentence(savings: pd.DataFrame, months: int = 12) -> str:
    """The trailing savings rate in one sentence, over complete months, naming a month in progress."""
    rate = trailing_savings_rate(savings, months)
    recent = _complete(savings).tail(months)
    partial = savings[~savings["complete"].astype(bool)] if "complete" in savings.columns else savings.iloc[0:0]
    note = ""
    if len(partial):
        month = partial["month"].iloc[-1]
        note = (
            f" {month} is still in progress ({partial['spending'].iloc[-1]:,.0f} USD spent so far) and is "
            "left out until it ends."
        )
    if np.isnan(rate):
        return f"No income in the last {len(recent)} complete months: no savings rate.{note}"
    span = "month" if len(recent) == 1 else f"{len(recent)} months"
    return (
        f"Over the last {span} the household earned {recent['income'].sum():,.0f} USD, spent "
        f"{recent['spending'].sum():,.0f} USD and saved {rate:.1%} of its income.{note}"
    )


def savings_table(savings: pd.DataFrame, months: int = 12) -> pd.DataFrame:
    """The last `months` months for a report: a month in progress is labelled "(in progress)" and
    its savings and rate are left blank (its income is usually not in yet), not shown as 0 / NaN."""
    recent = savings.tail(months).copy()
    complete = recent["complete"].astype(bool) if "complete" in recent.columns else pd.Series(True, index=recent.index)
    recent["month"] = [m if done else f"{m} (in progress)" for m, done in zip(recent["month"], complete, strict=True)]
    for column in ("income", "savings", "savings_rate"):
        recent[column] = recent[column].astype(object).where(complete, "")
    return recent[["month", "income", "spending", "savings", "savings_rate"]].reset_index(drop=True)


def _capital(text: object) -> str:
    """A category name starting a sentence."""
    value = str(text)
    return value[:1].upper() + value[1:]


def _months_text(n: int) -> str:
    return "1 month" if n == 1 else f"{n} months"


def spending_sentence(monthly: pd.DataFrame, months: int = 12) -> str:
    """Overruns over the recent months, by category (Markdown; the category is escaped data).

    The most frequent offender is the category over budget in the most months (ties: the larger
    total overrun); when another category overran by more in total, it is named too.
    """
    overruns = recent_overruns(monthly, months)
    if overruns.empty:
        return f"No category went over its limit in the last {months} months."
    by_category = overruns.groupby("category")["over"].agg(["count", "sum"])
    frequent = by_category.sort_values(["count", "sum"], ascending=False, kind="stable").index[0]
    largest = by_category.sort_values(["sum", "count"], ascending=False, kind="stable").index[0]
    count, total = int(by_category.loc[frequent, "count"]), float(by_category.loc[frequent, "sum"])
    sentence = (
        f"In the last {months} months, {len(overruns)} category-months went over budget, "
        f"{overruns['over'].sum():,.0f} USD in all. {md_escape(_capital(frequent))} is the most frequent offender: "
        f"over in {_months_text(count)}, {total:,.0f} USD in all."
    )
    if largest != frequent:
        sentence += (
            f" {md_escape(_capital(largest))} overran by the most: {by_category.loc[largest, 'sum']:,.0f} USD "
            f"in {_months_text(int(by_category.loc[largest, 'count']))}."
        )
    return sentence


def investable_sentence(cash: pd.DataFrame, emergency_fund_months: float, horizon_days: int) -> str:
    """The `investable_cash` row in words: what is kept aside and what is left to invest (or to save first)."""
    row = cash.iloc[0]
    kept = (
        f"{row['emergency_fund']:,.0f} USD kept as the emergency fund ({emergency_fund_months:g} months of "
        f"{row['monthly_expenses']:,.0f} USD average spending) and {row['upcoming_bills']:,.0f} USD for bills "
        f"due in the next {horizon_days} days"
    )
    if row["investable_cash"] > 0:
        return (
            f"Of {row['cash']:,.0f} USD cash, {kept} leave **{row['investable_cash']:,.0f} USD** that may be "
            "invested; the optimizer invests at most this."
        )
    return (
        f"Of {row['cash']:,.0f} USD cash, {kept} leave nothing to invest: **{row['shortfall']:,.0f} USD** more "
        "must be saved first, and the optimizer invests no new cash."
    )


def net_worth_sentence(nw: pd.DataFrame) -> str:
    first, last = nw.iloc[0], nw.iloc[-1]
    change = last["net_worth"] - first["net_worth"]
    return (
        f"Net worth went from {first['net_worth']:,.0f} to {last['net_worth']:,.0f} USD ({change:+,.0f}); "
        f"{last['holdings_value'] / last['net_worth']:.0%} of it is invested in the brokerage holdings."
        if last["net_worth"]
        else "Net worth is zero."
    )
