"""Data in report text stays text: Markdown escaping for sentences, HTML escaping for tables.

Markdown is rendered the way nbconvert renders it: mistune through nbconvert's
`markdown2html_mistune` (math-aware parser, raw HTML allowed). In JupyterLab, MathJax then
typesets the page with processEscapes on, so "what a reader sees" below applies MathJax's
escape rule to the HTML text, and a dollar sign MathJax could pair is a failure. The HTML
reports load no MathJax: their template applies the same escape rule (`reporting.tex_escapes`),
so the report's text is what a reader of JupyterLab sees.
"""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib as mpl
import nbformat
import pandas as pd
import pytest
from bs4 import BeautifulSoup
from nbconvert.filters.markdown_mistune import markdown2html_mistune

from bentley import reporting
from bentley.analytics import risk
from bentley.reporting import md_escape

HOSTILE = "<img src=x onerror=alert(1)>"

CASES = [
    "[bold]",
    "[/]",
    "<b>",
    "`",
    "$x$",
    "{}",
    HOSTILE,
    "<IMG SRC=X ONERROR=&#97;&#108;&#101;&#114;&#116;(1)>",
    "<script>alert(1)</script>",
    "**a** __b__ _c_ *d* ~~e~~ |f|",
    "[link](javascript:alert(1))",
    "![image](https://evil.example/x.png)",
    "<https://evil.example>",
    "https://evil.example/x?a=1",
    "www.evil.example",
    "mail me@evil.example",
    "# heading",
    "1. item",
    "- item",
    "+ item",
    "> quote",
    "AT&T &amp; &lt;b&gt; &#60;",
    "$5 and $6",
    "$$x$$",
    "\\$x\\$",
    "a\\b",
    "a\\\\$b$",
    "{{x}} {% raw %}",
    "BRK.B ^GSPC EURUSD=X",
]


def render(markdown: str) -> BeautifulSoup:
    return BeautifulSoup(markdown2html_mistune(markdown), "html.parser")


def seen(text: str) -> str:
    """HTML text as MathJax shows it with processEscapes: "\\\\" is "\\", "\\$" is "$"."""
    return re.sub(r"\\([\\$])", r"\1", text)


def live_dollars(text: str) -> int:
    """Dollar signs MathJax would take as math delimiters (those it does not read as escaped)."""
    return sum(token == "$" for token in re.findall(r"\\[\\$]|\$", text))


@pytest.mark.parametrize("value", CASES)
def test_escaped_values_render_as_their_own_text(value: str) -> None:
    page = render(f"Before **{md_escape(value)}** after.")
    assert [tag.name for tag in page.find_all(True)] == ["p", "strong"]
    strong = page.find("strong")
    assert seen(strong.get_text()) == value
    assert live_dollars(page.get_text()) == 0


def test_no_tag_from_data_survives() -> None:
    html = markdown2html_mistune(" ".join(md_escape(value) for value in CASES))
    assert "<img" not in html.lower() and "<script" not in html.lower() and "<b>" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html


def test_line_breaks_cannot_start_blocks() -> None:
    value = "x\n# heading\n- item\n\n    code\n| a | b |\n|---|---|\n===\n: definition"
    page = render(md_escape(value))
    assert [tag.name for tag in page.find_all(True)] == ["p"]
    assert page.get_text().strip() == " ".join(value.split())


def test_the_lab_report_shows_escaped_text(tmp_path: Path) -> None:
    """The real path: a `say` output in an executed notebook, exported with the lab template."""
    notebook = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("reporting.say(...)")
    sentence = reporting.say(f"Over the window, **{md_escape(HOSTILE)}** gained the most ($1 to $2).")
    cell.outputs = [
        nbformat.v4.new_output("display_data", data={"text/markdown": sentence.data, "text/plain": "<Markdown>"})
    ]
    notebook.cells = [nbformat.v4.new_markdown_cell("# Ingest"), cell]
    path = tmp_path / "report.ipynb"
    nbformat.write(notebook, path)
    body = reporting.export_html(path, tmp_path / "report.html").read_text()
    page = BeautifulSoup(body, "html.parser")
    output = page.select_one(".jp-OutputArea-output")
    assert output is not None and output.find("img") is None and page.find("script") is None
    assert output.get_text().strip() == f"Over the window, {HOSTILE} gained the most ($1 to $2)."


def test_tables_are_html_escaped() -> None:
    frame = pd.DataFrame({"ticker": [HOSTILE], "headline": ["<b>bold</b> $5 and $6"], "x": [1.23456]})
    for shown in (reporting.rounded(frame), reporting.short_table(frame)):
        html = shown._repr_html_()
        assert "<img" not in html and "<b>" not in html and "&lt;img src=x" in html


def test_report_style_escapes_styled_tables_and_keeps_mathjax_off_tables() -> None:
    frame = pd.DataFrame({"category": [HOSTILE], "spent": [12.5], "over_budget": [True]})
    with (
        pd.option_context(
            "display.max_colwidth",
            50,
            "display.html.use_mathjax",
            True,
            "styler.html.mathjax",
            True,
            "styler.format.escape",
            None,
        ),
        mpl.rc_context(),
    ):
        reporting.use_report_style()
        styled = frame.style.apply(lambda row: [""] * len(row), axis=1).format("{:,.2f}", subset=["spent"])
        html = styled.to_html()
        assert "<img" not in html and "&lt;img src=x" in html and "12.50" in html
        assert "tex2jax_ignore" in html and "tex2jax_ignore" in frame._repr_html_()


def test_risk_sentences_escape_scope_names() -> None:
    names = [HOSTILE, "$x$", "NOVA"]
    corr = pd.DataFrame([[1.0, 0.9, 0.1], [0.9, 1.0, 0.2], [0.1, 0.2, 1.0]], index=names, columns=names)
    drawdown = pd.DataFrame(
        {HOSTILE: [0.0, -0.5, -0.2], "$x$": [0.0, -0.1, 0.0]},
        index=pd.date_range("2025-01-02", periods=3),
    )
    for sentence in (risk.correlation_sentence(corr), risk.drawdown_sentence(drawdown)):
        page = render(sentence)
        assert page.find("img") is None and live_dollars(page.get_text()) == 0
        assert HOSTILE in seen(page.get_text())
