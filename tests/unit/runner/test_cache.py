"""Cache keys: every kind of input change is a miss, named; nothing else is."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from bentley.config import load_config
from runner import cache
from runner.dag import Stage

NOW = dt.datetime(2025, 6, 2, 15, 0, tzinfo=dt.UTC)


@pytest.fixture
def package(tmp_path: Path) -> Path:
    """A throwaway `bentley` package: stage.py imports .helpers, which imports bentley.deep."""
    root = tmp_path / "lib" / "bentley"
    (root / "sub").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "stage.py").write_text("from . import helpers\n")
    (root / "helpers.py").write_text("import os\n\ndef f():\n    from bentley.sub import deep\n    return deep\n")
    (root / "sub" / "__init__.py").write_text("")
    (root / "sub" / "deep.py").write_text("VALUE = 1\n")
    (root / "unused.py").write_text("VALUE = 2\n")
    return root


@pytest.fixture
def notebook(tmp_path: Path) -> Path:
    path = tmp_path / "stage.ipynb"
    nb = new_notebook(
        cells=[new_markdown_cell("# Stage"), new_code_cell("%matplotlib inline\nfrom bentley import stage\nx = 1")]
    )
    nbformat.write(nb, path)
    return path


def stage_for(notebook: Path, **extra) -> Stage:
    return Stage(name="s", notebook=notebook, upstream=("u",), sections=(), timeout_s=60, retries=0, **extra)


def key_of(
    notebook: Path, package: Path, params: dict | None = None, upstream: dict | None = None, **extra
) -> cache.StageKey:
    builder = cache.KeyBuilder(notebook.parent, load_config(), package_root=package)
    return builder.key(
        stage_for(notebook, **extra),
        {"run_id": "r1", "logical_date": "2025-06-02", **(params or {})},
        upstream or {"u": "fp1"},
    )


def entry_for(key: cache.StageKey, updated_at: dt.datetime = NOW) -> cache.CacheEntry:
    return cache.CacheEntry(
        "s", key.key, "fp", key.components, {"table:prices": {"rows": 3, "digest": 1}}, "earlier", updated_at
    )


def decide(key: cache.StageKey, entry: cache.CacheEntry | None, notebook: Path, **kwargs) -> cache.Decision:
    options = {"force": False, "now": NOW, "missing_product": None, **kwargs}
    return cache.decide(stage_for(notebook), key, entry, **options)


def test_the_module_closure_follows_relative_and_lazy_imports(notebook: Path, package: Path) -> None:
    modules = key_of(notebook, package).components["modules"]
    assert sorted(modules) == [
        "bentley/__init__.py",
        "bentley/helpers.py",
        "bentley/stage.py",
        "bentley/sub/__init__.py",
        "bentley/sub/deep.py",
    ]


def test_an_unchanged_stage_is_up_to_date(notebook: Path, package: Path) -> None:
    key = key_of(notebook, package)
    assert key_of(notebook, package, params={"run_id": "another run"}).key == key.key, "the run id is not an input"
    decision = decide(key, entry_for(key), notebook)
    assert not decision.run and "up to date" in decision.reason


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ("notebook", "notebook source changed"),
        ("params", "params changed: logical_date"),
        ("module", "module changed: bentley/sub/deep.py"),
        ("upstream", "upstream products changed: u"),
    ],
)
def test_each_kind_of_change_is_a_miss_that_names_it(change: str, reason: str, notebook: Path, package: Path) -> None:
    before = key_of(notebook, package)
    params, upstream = None, None
    if change == "notebook":
        nb = nbformat.read(notebook, as_version=4)
        nb.cells[1].source += "\ny = 2"
        nbformat.write(nb, notebook)
    elif change == "params":
        params = {"logical_date": "2025-06-03"}
    elif change == "module":
        (package / "sub" / "deep.py").write_text("VALUE = 3\n")
    else:
        upstream = {"u": "fp2"}
    after = key_of(notebook, package, params=params, upstream=upstream)
    decision = decide(after, entry_for(before), notebook)
    assert decision.run and decision.reason == reason


def test_outputs_and_unrelated_modules_do_not_change_the_key(notebook: Path, package: Path) -> None:
    before = key_of(notebook, package)
    nb = nbformat.read(notebook, as_version=4)
    nb.cells[1].outputs = [new_output("stream", name="stdout", text="hello")]
    nb.cells[1].execution_count = 7
    nbformat.write(nb, notebook)
    (package / "unused.py").write_text("VALUE = 99\n")
    assert key_of(notebook, package).key == before.key


def test_force_missing_products_and_age(notebook: Path, package: Path) -> None:
    key = key_of(notebook, package)
    entry = entry_for(key)
    assert decide(key, entry, notebook, force=True).reason == "forced (--force)"
    assert decide(key, None, notebook).reason == "no earlier successful run"
    missing = decide(key, entry, notebook, missing_product="table prices is empty or missing")
    assert missing.run and missing.reason == "product missing: table prices is empty or missing"
    aged = cache.decide(
        stage_for(notebook, cache_max_age_s=3600),
        key,
        entry_for(key, NOW - dt.timedelta(hours=2)),
        force=False,
        now=NOW,
        missing_product=None,
    )
    assert aged.run and "120 min old" in aged.reason
    fresh = cache.decide(
        stage_for(notebook, cache_max_age_s=3600),
        key,
        entry_for(key, NOW - dt.timedelta(minutes=5)),
        force=False,
        now=NOW,
        missing_product=None,
    )
    assert not fresh.run
    never = cache.decide(stage_for(notebook, cache=False), key, entry, force=False, now=NOW, missing_product=None)
    assert never.run and "cache: false" in never.reason


def test_live_sources_are_never_cached_and_file_sources_hash_their_content(tmp_path: Path) -> None:
    live = load_config("live")
    digests, reason = cache.source_digests(live, tmp_path)
    assert reason == (
        "market source yahoo is live (fetched on every run); "
        "news source rss is live (fetched on every run): always runs"
    )
    data = tmp_path / "data"
    data.mkdir()
    (data / "prices.csv").write_text("ticker,date,close\nAAA,2025-06-02,1\n")
    files = load_config(overrides=["sources.market.kind=csv", "sources.market.path=prices.csv"])
    first, reason = cache.source_digests(files, tmp_path)
    assert reason is None
    (data / "prices.csv").write_text("ticker,date,close\nAAA,2025-06-02,2\n")
    second, _ = cache.source_digests(files, tmp_path)
    assert first["market"] != second["market"] and first["news"] == second["news"] == "sample"


def test_product_fingerprints_ignore_order_but_not_content() -> None:
    a = {"table:prices": {"rows": 3, "digest": 11}, "lake:raw/x": {"rows": 1, "digest": 5}}
    b = dict(reversed(list(a.items())))
    assert cache.products_fingerprint(a) == cache.products_fingerprint(b)
    assert cache.products_fingerprint(a) != cache.products_fingerprint({**a, "table:prices": {"rows": 3, "digest": 12}})
