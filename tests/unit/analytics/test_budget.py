"""Budget: categorization precedence, the classifier, monthly roll-ups, net worth, investable cash.

Most checks run on a hand-made three-month ledger whose totals are worked out in the
comments; the classifier's accuracy is measured on two years of the sample household.
"""

from __future__ import annotations

import datetime as dt
import os
import re

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from bentley.analytics import budget
from bentley.sources.base import FetchRequest
from bentley.sources.sample import SamplePortfolioSource

CLASSIFIER = {"estimator": "sklearn.linear_model.LogisticRegression", "kwargs": {"max_iter": 1000}}
RULES = [
    ("PAYROLL", "income"),
    ("PROPERTY MGMT", "housing"),
    ("STARBUCKS", "coffee"),  # the model would say dining: the rule must win
]
LIMITS = {"groceries": 150.0, "dining": 100.0, "housing": 1500.0, "coffee": 25.0}
TRANSFERS = ["transfer", "savings"]

# (txn_id, date, account, amount, description, category)
LEDGER_ROWS = [
    # January: income 3000; spending 1500 + 120 + 45.50 + 80 (model: groceries) = 1745.50
    ("t01", "2024-01-01", "checking", -1500.00, "OAKWOOD PROPERTY MGMT ACH", "housing"),
    ("t02", "2024-01-05", "credit_card", -120.00, "WHOLEFDS MKT #10234", "groceries"),
    ("t03", "2024-01-09", "credit_card", -45.50, "STARBUCKS #2234", "dining"),  # given beats rule
    ("t04", "2024-01-15", "checking", 3000.00, "ACME CORP PAYROLL", "income"),
    ("t05", "2024-01-16", "checking", -400.00, "ONLINE TRANSFER TO SAV XXXX4821", "transfer"),
    ("t06", "2024-01-16", "savings", 400.00, "ONLINE TRANSFER FROM CHK XXXX1937", "transfer"),
    ("t07", "2024-01-20", "credit_card", -80.00, "WHOLEFDS MKT #10299", None),  # model
    ("t08", "2024-01-31", "checking", -245.50, "CHASE CREDIT CRD AUTOPAY", "transfer"),
    ("t09", "2024-01-31", "credit_card", 245.50, "AUTOMATIC PAYMENT - THANK YOU", "transfer"),
    # February: income 3000; spending 1500 (rule) + 210 - 20 (refund) + 30.25 (rule) + 95 = 1815.25
    ("t10", "2024-02-01", "checking", -1500.00, "OAKWOOD PROPERTY MGMT ACH", None),  # rule
    ("t11", "2024-02-06", "credit_card", -210.00, "TRADER JOE'S #552", "groceries"),
    ("t12", "2024-02-10", "credit_card", -30.25, "STARBUCKS #2234", None),  # rule: coffee
    ("t13", "2024-02-14", "credit_card", -95.00, "CHIPOTLE 0871", "dining"),
    ("t14", "2024-02-15", "checking", 3000.00, "ACME CORP PAYROLL", "income"),
    ("t15", "2024-02-20", "credit_card", 20.00, "TRADER JOE'S #552", "groceries"),  # a refund
    # March: income 3000; spending 1500 + 60 + 400 = 1960
    ("t16", "2024-03-01", "checking", -1500.00, "OAKWOOD PROPERTY MGMT ACH", "housing"),
    ("t17", "2024-03-08", "credit_card", -60.00, "WHOLEFDS MKT #10234", "groceries"),
    ("t18", "2024-03-15", "checking", 3000.00, "ACME CORP PAYROLL", "income"),
    ("t19", "2024-03-22", "credit_card", -400.00, "DELTA AIR 0062345678", "travel"),
]
# Every amount summed (transfers net to zero): 9000 - 5520.75 = 3479.25.
CASH_END_OF_MARCH = 3479.25
MEAN_MONTHLY_SPENDING = round((1745.50 + 1815.25 + 1960.00) / 3, 2)  # 1840.25


def make_ledger() -> pd.DataFrame:
    """The hand-made ledger in the TRANSACTIONS contract (category missing as None)."""
    frame = pd.DataFrame(LEDGER_ROWS, columns=["txn_id", "date", "account", "amount", "description", "category"])
    frame["date"] = pd.to_datetime(frame["date"])
    return frame


@pytest.fixture(scope="module")
def categorized() -> tuple[pd.DataFrame, dict[str, float]]:
    return budget.categorize(make_ledger(), RULES, CLASSIFIER, holdout_share=0.25, seed=0)


def _by_id(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.set_index("txn_id")


# --------------------------------------------------------------------------- categorization


def test_rules_match_case_insensitively_first_rule_wins() -> None:
    ledger = make_ledger()
    rules = [("starbucks", "coffee"), ("STAR", "stars"), ("wholefds mkt", "groceries")]
    got = budget.apply_rules(ledger, rules)
    assert got.index.equals(ledger.index)
    assert got[ledger["txn_id"] == "t03"].item() == "coffee"  # "STAR" also matches: first wins
    assert got[ledger["txn_id"] == "t07"].item() == "groceries"
    assert got[ledger["txn_id"] == "t04"].item() is None  # no rule: None


def test_rules_accept_mappings_and_objects_and_reject_bad_regex() -> None:
    class Rule:
        pattern, category = "CHIPOTLE", "dining"

    ledger = make_ledger()
    got = budget.apply_rules(ledger, [{"pattern": "DELTA AIR", "category": "travel"}, Rule()])
    assert got[ledger["txn_id"] == "t19"].item() == "travel"
    assert got[ledger["txn_id"] == "t13"].item() == "dining"
    with pytest.raises(ValueError, match="bad regex"):
        budget.apply_rules(ledger, [("WHOLEFDS (", "groceries")])


def test_given_categories_are_kept_even_where_a_rule_matches(categorized) -> None:
    rows = _by_id(categorized[0])
    given = make_ledger()["category"].notna().to_numpy()
    assert (categorized[0]["category_method"].to_numpy()[given] == "given").all()
    assert (categorized[0]["category_final"].to_numpy()[given] == make_ledger()["category"].to_numpy()[given]).all()
    assert rows.loc["t03", "category_final"] == "dining"  # the STARBUCKS rule says coffee
    assert np.isnan(rows.loc["t03", "model_confidence"])


def test_rules_take_precedence_over_the_model(categorized) -> None:
    rows = _by_id(categorized[0])
    assert rows.loc["t10", ["category_final", "category_method"]].tolist() == ["housing", "rule"]
    assert rows.loc["t12", ["category_final", "category_method"]].tolist() == ["coffee", "rule"]
    # Without the rule, the model would have called the same row dining.
    model, _ = budget.train_classifier(make_ledger().dropna(subset=["category"]), CLASSIFIER, holdout_share=0.0, seed=0)
    assert model.predict(make_ledger().iloc[[11]])[0] == "dining"


def test_the_model_fills_the_rest_and_reports_its_holdout(categorized) -> None:
    frame, metrics = categorized
    rows = _by_id(frame)
    assert rows.loc["t07", ["category_final", "category_method"]].tolist() == ["groceries", "model"]
    assert 0 < rows.loc["t07", "model_confidence"] <= 1
    assert set(frame["category_method"]) == {"given", "rule", "model"}
    assert frame["category_final"].notna().all()
    assert (metrics["n_given"], metrics["n_rule"], metrics["n_model"], metrics["n_none"]) == (
        16,
        2,
        1,
        0,
    )
    # 16 labelled rows; the single travel row always trains; 25 % of the other 15 is tested.
    assert (metrics["n_labelled"], metrics["n_test"], metrics["n_train"]) == (16, 4, 12)
    assert 0.0 <= metrics["accuracy"] <= 1.0 and 0.0 <= metrics["macro_f1"] <= 1.0
    assert all(isinstance(v, float) for v in metrics.values())  # ready for mlflow.log_metrics
    # The input is left alone.
    assert "category_final" not in make_ledger().columns


def test_the_holdout_is_stratified_and_seeded() -> None:
    labelled = make_ledger().dropna(subset=["category"])
    labelled = pd.concat([labelled] * 4, ignore_index=True)  # 64 rows, 6 classes
    _, first = budget.train_classifier(labelled, CLASSIFIER, holdout_share=0.25, seed=3)
    _, again = budget.train_classifier(labelled, CLASSIFIER, holdout_share=0.25, seed=3)
    assert first == again
    assert first["stratified"] == 1.0
    assert first["n_test"] == 16 and first["n_train"] == 48
    with pytest.raises(ValueError, match="holdout_share"):
        budget.train_classifier(labelled, CLASSIFIER, holdout_share=1.0, seed=0)


def test_without_two_given_categories_nothing_is_guessed() -> None:
    ledger = make_ledger().assign(category=None)
    frame, metrics = budget.categorize(ledger, RULES, CLASSIFIER, holdout_share=0.25, seed=0)
    rows = _by_id(frame)
    assert rows.loc["t04", "category_final"] == "income"  # rules still apply
    assert rows.loc["t07", ["category_final", "category_method"]].tolist() == [
        budget.UNCATEGORIZED,
        "none",
    ]
    assert np.isnan(metrics["accuracy"]) and metrics["n_model"] == 0


def test_the_sample_household_is_categorized_accurately() -> None:
    start, end = dt.date(2000, 1, 3), dt.date(2001, 12, 31)
    source = SamplePortfolioSource(seed=42, epoch=start)
    ledger = source.fetch("transactions", FetchRequest(start, end, ("NOVA",), as_of=end))
    frame, metrics = budget.categorize(ledger, RULES[:2], CLASSIFIER, holdout_share=0.25, seed=0)
    assert metrics["accuracy"] >= 0.8
    assert metrics["macro_f1"] >= 0.6
    assert metrics["stratified"] == 1.0
    assert metrics["n_model"] > 0 and metrics["n_none"] == 0
    assert frame["category_final"].notna().all()
    table = budget.category_table(frame)
    assert list(table.columns) == ["txn_id", "category", "method", "model_confidence"]


class _Calls:
    def __init__(self) -> None:
        self.calls: list[object] = []

    def __call__(self, *args: object) -> int:
        self.calls.append(args)
        return 0


@pytest.mark.parametrize(
    "path",
    [
        "os.system",
        "sklearnx.linear_model.LogisticRegression",
        "sklearn.linear_model.LinearRegression",  # sklearn, but not a classifier
        "sklearn.utils._testing.assert_allclose",  # private
        "sklearn.linear_model.NoSuchModel",
        "sklearn.linear_model.LogisticRegression; import os",
    ],
)
def test_the_estimator_loader_accepts_only_sklearn_classifiers(path: str, monkeypatch) -> None:
    spy = _Calls()
    monkeypatch.setattr(os, "system", spy)
    with pytest.raises(ValueError, match="classifier"):
        budget.estimator_class(path)
    with pytest.raises(ValueError, match="classifier"):
        budget.categorize(make_ledger(), RULES, {"class": path, "kwargs": {}}, 0.25, 0)
    assert spy.calls == []


def test_the_estimator_loader_builds_seeded_classifiers() -> None:
    assert budget.estimator_class("sklearn.linear_model.LogisticRegression") is LogisticRegression
    model = budget.build_estimator({"class": "sklearn.linear_model.LogisticRegression", "kwargs": {"C": 3.0}}, seed=7)
    assert model.get_params()["C"] == 3.0 and model.get_params()["random_state"] == 7
    tree = budget.build_estimator("sklearn.tree.DecisionTreeClassifier", seed=5)
    assert tree.get_params()["random_state"] == 5


# --------------------------------------------------------------------------- monthly roll-ups


def test_monthly_spending_exact_numbers_and_flags(categorized) -> None:
    monthly = budget.monthly_spending(categorized[0], LIMITS, TRANSFERS)
    assert list(monthly.columns) == [
        "month",
        "category",
        "spent",
        "budget_limit",
        "over",
        "over_budget",
    ]
    got = monthly.set_index(["month", "category"])
    expected_spent = {
        ("2024-01", "housing"): 1500.00,
        ("2024-01", "groceries"): 200.00,  # 120 given + 80 filled by the model
        ("2024-01", "dining"): 45.50,
        ("2024-01", "coffee"): 0.00,
        ("2024-01", "travel"): 0.00,
        ("2024-02", "housing"): 1500.00,  # by rule
        ("2024-02", "groceries"): 190.00,  # 210 less a 20 refund
        ("2024-02", "dining"): 95.00,
        ("2024-02", "coffee"): 30.25,  # by rule
        ("2024-02", "travel"): 0.00,
        ("2024-03", "housing"): 1500.00,
        ("2024-03", "groceries"): 60.00,
        ("2024-03", "dining"): 0.00,
        ("2024-03", "coffee"): 0.00,
        ("2024-03", "travel"): 400.00,
    }
    assert len(got) == len(expected_spent)  # income and transfers are not spending
    assert got["spent"].to_dict() == expected_spent
    over = got["over"]
    assert over[("2024-01", "groceries")] == 50.00
    assert over[("2024-02", "groceries")] == 40.00
    assert over[("2024-03", "groceries")] == -90.00
    assert over[("2024-02", "coffee")] == 5.25
    assert over[("2024-01", "housing")] == 0.00
    assert np.isnan(over[("2024-03", "travel")])
    assert np.isnan(got.loc[("2024-03", "travel"), "budget_limit"])
    flagged = sorted(got.index[got["over_budget"]])
    # Spending exactly the limit (housing) is within budget; no limit is never over.
    assert flagged == [("2024-01", "groceries"), ("2024-02", "coffee"), ("2024-02", "groceries")]
    assert got["over_budget"].dtype == bool


def test_monthly_spending_treats_savings_category_as_a_transfer(categorized) -> None:
    frame = categorized[0].copy()
    frame.loc[frame["txn_id"] == "t05", "category_final"] = "savings"
    monthly = budget.monthly_spending(frame, LIMITS, TRANSFERS)
    assert "savings" not in set(monthly["category"])
    with_savings_as_spending = budget.monthly_spending(frame, LIMITS, ["transfer"])
    row = with_savings_as_spending.set_index(["month", "category"]).loc[("2024-01", "savings")]
    assert row["spent"] == 400.00


def test_savings_rate_numbers(categorized) -> None:
    rates = budget.savings_rate(categorized[0], TRANSFERS).set_index("month")
    assert list(rates.index) == ["2024-01", "2024-02", "2024-03"]
    assert rates["income"].tolist() == [3000.00, 3000.00, 3000.00]
    assert rates["spending"].tolist() == [1745.50, 1815.25, 1960.00]
    assert rates["savings"].tolist() == [1254.50, 1184.75, 1040.00]
    np.testing.assert_allclose(rates["savings_rate"], [1254.50 / 3000, 1184.75 / 3000, 1040.00 / 3000], rtol=1e-12)


def test_savings_rate_is_nan_without_income(categorized) -> None:
    frame = categorized[0]
    no_march_pay = frame[frame["txn_id"] != "t18"]
    rates = budget.savings_rate(no_march_pay, TRANSFERS).set_index("month")
    assert rates.loc["2024-03", "income"] == 0.0
    assert rates.loc["2024-03", "savings"] == -1960.00
    assert np.isnan(rates.loc["2024-03", "savings_rate"])


def test_highlight_overruns_colors_only_over_budget_rows(categorized) -> None:
    monthly = budget.monthly_spending(categorized[0], LIMITS, TRANSFERS)
    html = budget.highlight_overruns(monthly).to_html()
    css = html.split("</style>")[0]
    red = {int(row) for row in re.findall(r"_row(\d+)_col\d+", css)}
    assert "#f8d7da" in css
    assert red == set(np.flatnonzero(monthly["over_budget"].to_numpy()).tolist())


# --------------------------------------------------------------------------- investable cash


RENT = {"description": "Rent", "amount": 1500.0, "day_of_month": 1}
GYM = {"description": "Gym", "amount": 30.0, "day_of_month": 15}


def test_investable_cash_arithmetic(categorized) -> None:
    row = budget.investable_cash(categorized[0], dt.date(2024, 3, 31), 1, [RENT, GYM], 30, TRANSFERS).iloc[0]
    assert row["as_of"] == pd.Timestamp("2024-03-31")
    assert row["cash"] == CASH_END_OF_MARCH  # the card's unpaid balance already lowers it
    assert row["monthly_expenses"] == MEAN_MONTHLY_SPENDING == 1840.25
    assert row["emergency_fund"] == 1840.25
    assert row["upcoming_bills"] == 1530.00  # rent on Apr 1, gym on Apr 15
    assert row["investable_cash"] == round(3479.25 - 1840.25 - 1530.00, 2) == 109.00
    assert row["shortfall"] == 0.0


def test_investable_cash_shortfall_and_opening_balances(categorized) -> None:
    short = budget.investable_cash(categorized[0], dt.date(2024, 3, 31), 6, [RENT], 30).iloc[0]
    assert short["emergency_fund"] == 6 * 1840.25
    assert short["investable_cash"] == 0.0
    assert short["shortfall"] == round(6 * 1840.25 + 1500 - 3479.25, 2) == 9062.25
    rich = budget.investable_cash(
        categorized[0], dt.date(2024, 3, 31), 6, [RENT], 30, opening_balances={"checking": 10_000}
    ).iloc[0]
    assert rich["cash"] == 13479.25
    assert rich["investable_cash"] == round(13479.25 - 11041.50 - 1500, 2) == 937.75


def test_investable_cash_uses_only_the_ledger_up_to_as_of(categorized) -> None:
    row = budget.investable_cash(categorized[0], dt.date(2024, 2, 15), 1, [], 30).iloc[0]
    # January's net 1254.50, then Feb 1-15: -1500 - 210 - 30.25 - 95 + 3000.
    assert row["cash"] == 2419.25
    assert row["monthly_expenses"] == 1745.50  # only January is a full month by Feb 15
    assert row["upcoming_bills"] == 0.0
    with pytest.raises(ValueError, match="full month"):
        budget.investable_cash(categorized[0], dt.date(2024, 1, 20), 1, [], 30)


def test_bills_inside_and_outside_the_horizon() -> None:
    as_of = dt.date(2024, 3, 31)
    ten_days = budget.upcoming_bills([RENT, GYM], as_of, 10)
    assert ten_days["description"].tolist() == ["Rent"]  # gym on Apr 15 is beyond Apr 10
    month = budget.upcoming_bills([RENT, GYM], as_of, 30)
    assert month["due"].tolist() == [pd.Timestamp("2024-04-01"), pd.Timestamp("2024-04-15")]
    assert month["amount"].sum() == 1530.00
    # Due on as_of itself is past; day 31 falls on the last day of a 30-day month.
    end_of_month = {"description": "Insurance", "amount": 90.0, "day_of_month": 31}
    assert budget.upcoming_bills([end_of_month], as_of, 30)["due"].tolist() == [pd.Timestamp("2024-04-30")]
    # A long horizon counts each monthly occurrence.
    assert budget.upcoming_bills([RENT], as_of, 61)["amount"].sum() == 3000.00
    assert budget.upcoming_bills([RENT], dt.date(2024, 4, 1), 0).empty


def test_bill_amounts_can_come_from_the_ledger(categorized) -> None:
    rent = {"description": "Rent", "amount": None, "match": "property mgmt", "day_of_month": 1}
    bills = budget.upcoming_bills([rent], dt.date(2024, 3, 31), 30, categorized[0])
    assert bills["amount"].tolist() == [1500.00]
    missing = {"description": "Boat", "amount": None, "day_of_month": 5}
    with pytest.warns(UserWarning, match="Boat.*counted as 0"):
        unknown = budget.upcoming_bills([missing], dt.date(2024, 3, 31), 30, categorized[0])
    assert unknown["amount"].tolist() == [0.0], "an unknown bill must not stop the stage"
    with pytest.raises(ValueError, match="positive"):
        budget.upcoming_bills([{**RENT, "amount": -5}], dt.date(2024, 3, 31), 30)


# --------------------------------------------------------------------------- net worth


def make_prices() -> pd.DataFrame:
    """AAA splits 2-for-1 on Jan 3; BBB has no split. Close is as traded."""
    return pd.DataFrame(
        {
            "ticker": ["AAA", "AAA", "AAA", "BBB", "BBB"],
            "date": pd.to_datetime(["2024-01-02", "2024-01-03", "2024-01-04", "2024-01-02", "2024-01-04"]),
            "close": [100.0, 51.0, 52.0, 10.0, 11.0],
            "adj_close": [50.0, 51.0, 52.0, 9.5, 11.0],
            "split_ratio": [1.0, 2.0, 1.0, 1.0, 1.0],
        }
    )


def test_net_worth_cash_holdings_and_splits() -> None:
    ledger = make_ledger()
    holdings = pd.DataFrame(
        {
            "as_of": pd.to_datetime(["2024-01-04"] * 3),
            "account": ["brokerage", "ira", "brokerage"],
            "ticker": ["AAA", "AAA", "BBB"],
            "quantity": [15.0, 5.0, 100.0],  # 20 AAA after the split, i.e. 10 before it
            "cost_basis": [0.0, 0.0, 0.0],
        }
    )
    nw = budget.net_worth(ledger, holdings, make_prices(), opening_balances={"checking": 500.0})
    assert list(nw.columns) == ["date", "cash", "holdings_value", "net_worth"]
    assert nw["date"].tolist() == list(pd.to_datetime(["2024-01-02", "2024-01-03", "2024-01-04"]))
    # Jan 1 rent is the only row by Jan 4.
    assert nw["cash"].tolist() == [500.0 - 1500.0] * 3
    # Jan 2: 10 AAA x 100 + 100 BBB x 10; Jan 3: 20 x 51 + 100 x BBB's last close 10;
    # Jan 4: 20 x 52 + 100 x 11.
    assert nw["holdings_value"].tolist() == [2000.0, 2020.0, 2140.0]
    assert nw["net_worth"].tolist() == [1000.0, 1020.0, 1140.0]


def test_net_worth_without_split_column_uses_adj_close_and_warns_on_unpriced() -> None:
    holdings = pd.DataFrame(
        {
            "as_of": pd.to_datetime(["2024-01-04", "2024-01-04"]),
            "account": ["brokerage", "brokerage"],
            "ticker": ["AAA", "ZZZ"],
            "quantity": [20.0, 3.0],
            "cost_basis": [0.0, 0.0],
        }
    )
    prices = make_prices().drop(columns="split_ratio")
    with pytest.warns(UserWarning, match="ZZZ"):
        nw = budget.net_worth(make_ledger().iloc[:0], holdings, prices)
    assert nw["holdings_value"].tolist() == [1000.0, 1020.0, 1040.0]
    assert nw["cash"].tolist() == [0.0, 0.0, 0.0]
    assert nw.attrs["unpriced"] == ["ZZZ"]


def test_transfers_between_own_accounts_leave_net_worth_unchanged() -> None:
    ledger = make_ledger()
    transfers = ledger["description"].str.contains("TRANSFER|AUTOPAY|PAYMENT")
    empty = pd.DataFrame(columns=["as_of", "account", "ticker", "quantity", "cost_basis"])
    with_transfers = budget.net_worth(ledger, empty, make_prices().iloc[:0])
    without = budget.net_worth(ledger[~transfers], empty, make_prices().iloc[:0])
    last = lambda nw: nw["net_worth"].iloc[-1]  # noqa: E731
    assert last(with_transfers) == last(without) == CASH_END_OF_MARCH


# --------------------------------------------------------------------------- charts


def test_charts_have_titles_and_axis_labels(categorized) -> None:
    monthly = budget.monthly_spending(categorized[0], LIMITS, TRANSFERS)
    fig = budget.spending_chart(monthly, months=2)
    stack, latest = fig.axes[:2]
    assert stack.get_title() and stack.get_xlabel() and stack.get_ylabel()
    assert [t.get_text() for t in stack.get_xticklabels()] == ["2024-02", "2024-03"]
    assert "2024-03" in latest.get_title()
    plt.close(fig)
    no_holdings = pd.DataFrame(columns=["as_of", "ticker", "quantity"])
    nw = budget.net_worth(make_ledger(), no_holdings, make_prices())
    fig = budget.net_worth_chart(nw)
    ax = fig.axes[0]
    assert ax.get_title() and ax.get_xlabel() and ax.get_ylabel()
    plt.close(fig)


# --------------------------------------------------------------------------- contract


def test_outputs_match_the_warehouse_tables(categorized) -> None:
    """Each output can be upserted as it is: same columns, same order."""
    from bentley import warehouse

    def columns(table: str) -> list[str]:
        return [c.name for c in warehouse.metadata.tables[table].columns]

    frame = categorized[0]
    assert list(budget.category_table(frame).columns) == columns("transaction_categories")
    assert list(budget.monthly_spending(frame, LIMITS, TRANSFERS).columns) == columns("budget_monthly")
    nw = budget.net_worth(frame, pd.DataFrame(columns=["as_of", "ticker", "quantity"]), make_prices())
    assert list(nw.columns) == columns("net_worth")
    cash = budget.investable_cash(frame, dt.date(2024, 3, 31), 6, [RENT], 30)
    assert list(cash.columns) == columns("investable_cash")


# --------------------------------------------------------------------------- report sentences


def overrun_rows(rows: list[tuple[str, str, float, float]]) -> pd.DataFrame:
    """`monthly_spending`-shaped rows from (month, category, spent, limit)."""
    frame = pd.DataFrame(rows, columns=["month", "category", "spent", "budget_limit"])
    frame["over"] = frame["spent"] - frame["budget_limit"]
    frame["over_budget"] = frame["over"] > 0
    return frame


def test_the_most_frequent_offender_is_ranked_and_worded_by_count() -> None:
    """Shopping went over in 5 months (900 USD in all), travel once by 2,387: shopping is the most
    frequent offender, and travel is named for the largest overrun, each with its own numbers."""
    rows = [(f"2025-{m:02d}", "shopping", 880.0, 700.0) for m in range(1, 6)]
    rows += [("2025-03", "travel", 2687.0, 300.0), ("2025-04", "travel", 200.0, 300.0)]
    sentence = budget.spending_sentence(overrun_rows(rows), months=12)
    assert sentence == (
        "In the last 12 months, 6 category-months went over budget, 3,287 USD in all. Shopping is the most frequent "
        "offender: over in 5 months, 900 USD in all. Travel overran by the most: 2,387 USD in 1 month."
    )


def test_one_offender_is_named_once() -> None:
    sentence = budget.spending_sentence(overrun_rows([("2025-01", "dining", 150.0, 100.0)]), months=12)
    assert sentence.endswith("Dining is the most frequent offender: over in 1 month, 50 USD in all.")
    assert "overran by the most" not in sentence


def test_the_savings_sentence_leaves_the_month_in_progress_out(categorized) -> None:
    """On 2024-03-20 March is in progress: the rate covers January and February, and says so."""
    savings = budget.mark_complete(budget.savings_rate(categorized[0], TRANSFERS), dt.date(2024, 3, 20))
    assert savings["complete"].tolist() == [True, True, False]
    assert budget.trailing_savings_rate(savings) == pytest.approx((1254.50 + 1184.75) / 6000)
    sentence = budget.savings_sentence(savings)
    assert sentence == (
        "Over the last 2 months the household earned 6,000 USD, spent 3,561 USD and saved 40.7% of "
        "its income. 2024-03 is still in progress (1,960 USD spent so far) and is left out until it "
        "ends."
    )
    done = budget.mark_complete(budget.savings_rate(categorized[0], TRANSFERS), dt.date(2024, 3, 31))
    assert done["complete"].all() and "in progress" not in budget.savings_sentence(done)


def test_the_savings_table_labels_the_partial_month_instead_of_income_zero() -> None:
    savings = pd.DataFrame(
        {
            "month": ["2026-11", "2026-12"],
            "income": [9242.23, 0.0],
            "spending": [5783.64, 2695.74],
            "savings": [3458.59, -2695.74],
            "savings_rate": [0.374, np.nan],
        }
    )
    shown = budget.savings_table(budget.mark_complete(savings, dt.date(2026, 12, 2)))
    assert shown["month"].tolist() == ["2026-11", "2026-12 (in progress)"]
    assert shown.iloc[1][["income", "savings", "savings_rate"]].tolist() == ["", "", ""]
    assert shown.iloc[1]["spending"] == 2695.74
    from bentley import reporting

    html = reporting.table(shown, money=["income", "spending", "savings"])._repr_html_()
    assert "NaN" not in html and "n/a" not in html and "37.4%" in html


def test_the_investable_sentence_says_what_is_kept_and_what_is_left() -> None:
    cash = pd.DataFrame(
        [
            {
                "as_of": pd.Timestamp("2026-12-02"),
                "cash": 36425.28,
                "monthly_expenses": 6019.3,
                "emergency_fund": 36115.8,
                "upcoming_bills": 3236.17,
                "investable_cash": 0.0,
                "shortfall": 2926.69,
            }
        ]
    )
    text = budget.investable_sentence(cash, 6, 30)
    assert text.startswith("Of 36,425 USD cash, 36,116 USD kept as the emergency fund (6 months of 6,019 USD")
    assert "**2,927 USD** more must be saved first" in text
