"""One table style, offline report pages, sentences that show, and charts drawn once."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")

import nbformat
import numpy as np
import pandas as pd
import pytest
from bs4 import BeautifulSoup

from bentley import charts, reporting

# --------------------------------------------------------------------------- numbers


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (-3.608858e07, "-36,088,580"),
        (1234.5678, "1,235"),
        (12.345, "12.3"),
        (1.2345, "1.23"),
        (0.01234, "0.012"),
        (0.000123, "0.00012"),
        (1e-9, "0"),
        (0.0, "0"),
        (np.nan, "n/a"),
        (None, "n/a"),
        (pd.NA, "n/a"),
    ],
)
def test_numbers_never_use_scientific_notation(value, shown) -> None:
    assert reporting.fmt_number(value) == shown
    assert "e+" not in reporting.fmt_number(value) and "e-" not in reporting.fmt_number(value)


def test_percentages_money_and_p_values() -> None:
    assert reporting.fmt_pct(0.1234) == "12.3%" and reporting.fmt_pct(-0.0004) == "0.0%"
    assert reporting.fmt_pct(0.05, signed=True) == "+5.0%" and reporting.fmt_pct(np.nan) == "n/a"
    assert reporting.fmt_money(1234567.8) == "1,234,568" and reporting.fmt_money(12.5, 2, currency="USD") == "12.50 USD"
    assert reporting.fmt_p_value(0.00002) == "< 0.001" and reporting.fmt_p_value(0.0486) == "0.049"
    assert reporting.fmt_date(pd.Timestamp("2026-12-02")) == "2026-12-02"
    assert reporting.fmt_date(pd.Timestamp("2026-12-02 14:46", tz="UTC")) == "2026-12-02 14:46 UTC"


@pytest.mark.parametrize(
    ("name", "percent"),
    [
        ("annual_return", True),
        ("max_drawdown", True),
        ("weight", True),
        ("var_95_historical", True),
        ("flagged_share", True),
        ("ret_5d", True),
        ("vol_21d", True),
        ("savings_rate", True),
        ("atr_pct", True),
        ("sharpe_ratio", False),
        ("beta", False),
        ("n_signals", False),
        ("volume_z_21", False),
        ("shock_value", False),
        ("days", False),
        ("correlation", False),
    ],
)
def test_fractions_are_recognised_by_their_names(name: str, percent: bool) -> None:
    assert reporting.is_percent_column(name) is percent


# --------------------------------------------------------------------------- tables


def cells(table: reporting.Table) -> list[list[str]]:
    soup = BeautifulSoup(table.html, "html.parser")
    return [[td.get_text() for td in tr.find_all("td")] for tr in soup.select("table > tbody > tr")]


def headers(table: reporting.Table) -> list[str]:
    soup = BeautifulSoup(table.html, "html.parser")
    return [th.get_text() for th in soup.select("table")[0].select("thead th")]


def test_no_index_column_and_a_named_index_becomes_data() -> None:
    positional = pd.DataFrame({"x": [1.5, 2.5]}, index=[7, 3])
    assert headers(reporting.table(positional)) == ["x"]
    named = pd.DataFrame({"annual_return": [0.1, -0.2]}, index=pd.Index(["NOVA", "QBIT"], name="scope"))
    assert headers(reporting.table(named)) == ["scope", "annual_return"]
    assert cells(reporting.table(named)) == [["NOVA", "10.0%"], ["QBIT", "-20.0%"]]


def test_missing_values_read_na_with_their_reason_and_empty_columns_are_left_out() -> None:
    frame = pd.DataFrame(
        {
            "rule": ["a", "b"],
            "mean_strength": [0.5, np.nan],
            "last_date": [pd.Timestamp("2026-11-30"), pd.NaT],
            "never": [np.nan, np.nan],
            "flag": pd.array([True, pd.NA], dtype="boolean"),
        }
    )
    table = reporting.table(frame, reasons={"mean_strength": "the rule did not fire"})
    assert headers(table) == ["rule", "mean_strength", "last_date", "flag"]
    assert cells(table) == [["a", "0.50", "2026-11-30", "yes"], ["b", "n/a", "n/a", "n/a"]]
    text = BeautifulSoup(table.html, "html.parser").get_text()
    assert "n/a in mean_strength: the rule did not fire." in text and "no value in any row: never" in text
    assert not re.search(r"\bNaN\b|<NA>|\bNaT\b|\bNone\b|\binf\b", table.html)


def test_long_tables_show_failing_rows_first_and_fold_the_rest(tmp_path: Path) -> None:
    checks = pd.DataFrame(
        {
            "check_name": [f"c{i}" for i in range(30)],
            "passed": [i not in (4, 20) for i in range(30)],
            "severity": ["error" if i == 20 else "warning" for i in range(30)],
        }
    )
    failing = ~checks["passed"]
    saved = {}
    ctx = SimpleNamespace(stage="etl", save_artifact=lambda name, frame: saved.setdefault(name, frame))
    table = reporting.table(
        checks,
        bad=failing & checks["severity"].eq("error"),
        warn=failing & checks["severity"].eq("warning"),
        max_rows=int(failing.sum()),
        more="checks passed",
        csv=(ctx, "checks.csv"),
    )
    soup = BeautifulSoup(table.html, "html.parser")
    shown = soup.select("div > table > tbody > tr")
    assert [tr.td.get_text() for tr in shown] == ["c20", "c4"], "errors, then warnings, in view"
    assert shown[0]["class"] == ["bad"] and shown[1]["class"] == ["warn"]
    assert soup.select_one("details summary").get_text() == "28 checks passed"
    assert len(soup.select("details tbody tr")) == 28
    assert soup.find("a")["href"] == "../artifacts/etl/checks.csv" and len(saved["checks.csv"]) == 30


def test_one_number_of_decimals_per_column() -> None:
    table = reporting.table(pd.DataFrame({"mean_strength": [0.023, 0.38, 0.0551], "rsi_14": [51.5, 45.44, 9.0]}))
    assert cells(table) == [["0.023", "51.5"], ["0.380", "45.4"], ["0.055", "9.0"]]


def test_every_dataframe_a_report_shows_gets_the_table_style() -> None:
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    reporting.use_report_style()
    frame = pd.DataFrame({"obv_change": [-9.406627e09, np.nan]}, index=pd.Index(["BBIX", "NOVA"], name="ticker"))
    data, _ = shell.display_formatter.format(frame)
    assert "-9,406,627,000" in data["text/html"] and "n/a" in data["text/html"]
    assert "dataframe" not in data["text/html"] and "e+09" not in data["text/html"]


# --------------------------------------------------------------------------- sentences and figures


def test_say_shows_the_sentence_where_it_is_called_and_only_once(capsys: pytest.CaptureFixture[str]) -> None:
    shown = []
    import IPython.display

    original = IPython.display.display
    IPython.display.display = lambda *objects, **kwargs: shown.extend(objects)
    try:
        said = reporting.say("The savings rate is **35%**.")
        said._ipython_display_()  # as a cell's last value: nothing more
    finally:
        IPython.display.display = original
    assert len(shown) == 1 and shown[0].data == "The savings rate is **35%**." and said.data == shown[0].data


def test_a_fixed_layout_figure_is_drawn_at_its_size_with_its_title() -> None:
    from PIL import Image

    fig, ax = charts.figure(6, 3)
    ax.plot([0, 1], [0, 1], label="a line with a long label")
    charts.legend_outside(ax)
    ax.set_title("Title of the chart")
    png = reporting.figure_png(fig)
    import io

    assert Image.open(io.BytesIO(png)).size == (round(6 * fig.dpi), round(3 * fig.dpi))
    assert reporting.figure_title(fig) == "Title of the chart"


def test_at_most_max_series_coloured_lines_the_rest_grey() -> None:
    frame = pd.DataFrame(
        np.random.default_rng(1).normal(size=(50, 11)).cumsum(axis=0),
        columns=[f"T{i}" for i in range(10)] + ["portfolio:holdings"],
    )
    fig, ax = charts.figure()
    coloured = charts.plot_series(ax, frame, keep=["portfolio:holdings"])
    labels = [line.get_label() for line in ax.get_lines() if not line.get_label().startswith("_")]
    assert len(coloured) == charts.MAX_SERIES and coloured[0] == "portfolio:holdings"
    assert labels[0] == "others (5)" and len(labels) == charts.MAX_SERIES + 1
    colours = [line.get_color() for line in ax.get_lines() if line.get_label() in coloured]
    assert len(set(colours)) == len(colours), "distinct colours"


def test_thin_keeps_the_last_point() -> None:
    x, y = charts.thin(np.arange(2000), np.arange(2000) * 2.0, max_points=700)
    assert len(x) <= 701 and x[-1] == 1999 and y[-1] == 3998.0


# --------------------------------------------------------------------------- the HTML page


def test_a_report_loads_nothing_from_a_network_and_shows_dollars_as_text(tmp_path: Path) -> None:
    notebook = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("reporting.say(...)")
    dollars, backslash = reporting.md_escape("$5 and $6"), reporting.md_escape("a\\b")
    sentence = reporting.say(f"Spent {dollars} on {backslash}.")
    fig, ax = charts.figure(4, 2, legend=False)
    ax.set_title("A small chart")
    import base64

    cell.outputs = [
        nbformat.v4.new_output("display_data", data={"text/markdown": sentence.data, "text/plain": ""}),
        nbformat.v4.new_output(
            "display_data",
            data={"image/png": base64.b64encode(reporting.figure_png(fig)).decode(), "text/plain": ""},
            metadata={"image/png": {"alt": "A small chart"}},
        ),
    ]
    notebook.cells = [nbformat.v4.new_markdown_cell("# Budget\n\nCosts in `$` and **bold**."), cell]
    path = tmp_path / "budget.ipynb"
    nbformat.write(notebook, path)
    report = reporting.export_html(path, tmp_path / "runs" / "r1" / "reports" / "budget.html")
    body = report.read_text()
    soup = BeautifulSoup(body, "html.parser")
    assert not soup.find_all("script"), "no script at all: nothing to load, nothing to run"
    for tag in soup.find_all(["link", "img", "iframe"]):
        assert not re.match(r"(https?:)?//", tag.get("src") or tag.get("href") or ""), tag
    assert "mathjax" not in body.lower() and "require.js" not in body
    assert soup.select_one(".jp-OutputArea-output").get_text().strip() == "Spent $5 and $6 on a\\b."
    assert soup.find("img")["alt"] == "A small chart" and soup.find("img")["title"] == "A small chart"
    assert [a["href"] for a in soup.select("nav a")] == ["../../../index.html", "../index.html"]
    assert len(body) < 40_000, "a small stylesheet, not JupyterLab's theme"


def test_reports_rendered_one_after_another_keep_their_own_title_links_and_cells(tmp_path: Path) -> None:
    """One exporter renders every report of a process: nothing of one report leaks into the next."""

    def notebook(title: str, text: str) -> Path:
        nb = nbformat.v4.new_notebook()
        cell = nbformat.v4.new_code_cell("x")
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=text)]
        nb.cells = [nbformat.v4.new_markdown_cell(f"# {title}"), cell]
        path = tmp_path / f"{title}.ipynb"
        nbformat.write(nb, path)
        return path

    def read(report: Path) -> tuple[str, list[str], str]:
        soup = BeautifulSoup(report.read_text(), "html.parser")
        return soup.title.get_text(), [a["href"] for a in soup.select("nav a")], soup.select_one("pre").get_text()

    risk, budget = notebook("Risk", "risk output"), notebook("Budget", "budget output")
    first = reporting.export_html(risk, tmp_path / "runs" / "r1" / "reports" / "risk.html")
    kept = first.read_text()
    assert read(first) == ("Risk", ["../../../index.html", "../index.html"], "risk output")
    assert read(reporting.export_html(budget, tmp_path / "budget.html")) == ("Budget", [], "budget output")
    assert reporting.export_html(risk, tmp_path / "runs" / "r1" / "reports" / "risk.html").read_text() == kept


def test_tex_escapes_apply_mathjax_escape_rule() -> None:
    assert reporting.tex_escapes("a \\$ b") == "a $ b"
    assert reporting.tex_escapes("\\\\\\$x") == "\\$x"
    assert reporting.tex_escapes("C:\\dir") == "C:\\dir"


def test_the_split_chart_comes_with_a_sentence_naming_the_latest_split() -> None:
    from bentley import charts

    days = pd.bdate_range("2024-01-02", periods=6)
    prices = pd.DataFrame(
        {
            "ticker": ["A"] * 6,
            "date": days,
            "close": [100, 101, 50, 51, 52, 53.0],
            "adj_close": [50, 50.5, 50, 51, 52, 53.0],
            "split_ratio": [1, 1, 2, 1, 1, 1.0],
        }
    )
    assert charts.split_chart(prices) is not None
    sentence = charts.split_sentence(prices)
    assert sentence.startswith("1 split(s) in this window across 1 ticker(s).") and "factor of 2" in sentence
    assert charts.split_sentence(prices.assign(split_ratio=1.0)) == "No split in this window."
