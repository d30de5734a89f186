"""Params: layering, validation and the errors people see."""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from bentley import config
from bentley.config import MAX_LAYER_BYTES, MAX_LAYER_NODES, ParamsError, load_config


@pytest.fixture()
def project(tmp_path: Path, root: Path) -> Path:
    """A copy of params/ to edit freely."""
    shutil.copytree(root / "params", tmp_path / "params", ignore=shutil.ignore_patterns("local.yaml"))
    return tmp_path


def test_default_carries_the_seed_workflow_settings(project: Path) -> None:
    cfg = load_config(root=project)
    wf = cfg.workflow
    assert wf.timezone == "America/New_York"
    assert (wf.market_hours.open, wf.market_hours.close) == (dt.time(9, 30), dt.time(16, 0))
    assert wf.trading_days == ["MON", "TUE", "WED", "THU", "FRI"]
    assert (wf.retention.raw_days, wf.retention.processed_days, wf.retention.logs_days) == (365, 1095, 30)
    assert wf.max_execution_time_minutes == 30
    assert wf.alert_after_failures == 3
    assert wf.data_freshness_minutes == 60
    assert cfg.universe.tickers is None
    assert {cfg.sources.market.kind, cfg.sources.news.kind, cfg.sources.portfolio.kind} == {"sample"}


def test_layers_apply_in_order(project: Path) -> None:
    (project / "params" / "local.yaml").write_text("sample:\n  n_tickers: 5\nhistory:\n  years: 2\n")
    cfg = load_config("ci", ["history.years=3", "universe.tickers=[nova, QBIT]"], root=project)
    assert cfg.sample.n_tickers == 5  # local.yaml beats the ci profile's 3
    assert cfg.history.years == 3  # --set beats local.yaml
    assert cfg.universe.tickers == ["NOVA", "QBIT"]  # YAML list, normalized
    assert cfg.sample.seed == 42  # untouched keys keep the default


def test_unknown_key_in_a_file_names_file_key_and_line(project: Path) -> None:
    profile = project / "params" / "profiles" / "typo.yaml"
    profile.write_text("history:\n  years: 2\n  yeras: 3\n")
    with pytest.raises(ParamsError) as err:
        load_config("typo", root=project)
    assert str(err.value) == f"{profile}:3: history.yeras: unknown key"


def test_bad_value_in_a_set_override_names_the_key() -> None:
    with pytest.raises(ParamsError, match=r"^--set: workflow\.timezone: unknown timezone 'Mars/Base'"):
        load_config(overrides=["workflow.timezone=Mars/Base"])


def test_missing_profile_lists_the_known_ones(project: Path) -> None:
    with pytest.raises(ParamsError, match=r"no such profile 'nope'; known: ci, large"):
        load_config("nope", root=project)


def test_broken_yaml_gives_file_and_line(project: Path) -> None:
    (project / "params" / "local.yaml").write_text("sample:\n  seed: [1, 2\n")
    with pytest.raises(ParamsError, match=r"local\.yaml:\d+: invalid YAML"):
        load_config(root=project)


def test_passwords_are_refused_as_parameters() -> None:
    with pytest.raises(ParamsError, match="BENTLEY_WAREHOUSE_PASSWORD"):
        load_config(overrides=["warehouse.url=postgresql+psycopg://bot:hunter2@127.0.0.1/db"])


def test_every_default_lives_in_yaml_not_in_code() -> None:
    """No params model field has a default: default.yaml is the one place defaults live."""
    for name in config.SECTION_NAMES:
        model = config.section_model(name)
        stack = [model]
        while stack:
            current = stack.pop()
            for field_name, field in current.model_fields.items():
                assert field.is_required(), f"{current.__name__}.{field_name} has a code default"
                annotation = field.annotation
                if isinstance(annotation, type) and issubclass(annotation, config.Section):
                    stack.append(annotation)


def test_history_window_defaults_to_years_before_the_logical_date() -> None:
    cfg = load_config("ci")
    assert cfg.history.window(dt.date(2025, 6, 2)) == (dt.date(2024, 6, 2), dt.date(2025, 6, 2))


def test_history_end_after_the_logical_date_is_refused() -> None:
    cfg = load_config(overrides=["history.end=2025-07-01"])
    with pytest.raises(ParamsError, match="after the logical date"):
        cfg.history.window(dt.date(2025, 6, 2))


def test_params_hash_changes_with_any_value() -> None:
    assert load_config().params_hash() == load_config().params_hash()
    assert load_config().params_hash() != load_config(overrides=["sample.seed=7"]).params_hash()


def test_flatten_for_mlflow() -> None:
    flat = config.flatten({"a": {"b": 1, "c": [1, 2]}, "d": None})
    assert flat == {"a.b": 1, "a.c": "[1, 2]", "d": None}


def test_set_needs_key_and_value() -> None:
    with pytest.raises(ParamsError, match="expected key.path=value"):
        load_config(overrides=["history.years"])


def test_each_profile_has_its_own_store_unless_outputs_names_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BENTLEY_OUTPUTS", raising=False)
    assert config.outputs_dir(root=tmp_path) == tmp_path / "outputs"
    assert config.outputs_dir(root=tmp_path, profile="ci") == tmp_path / "outputs" / "profiles" / "ci"
    monkeypatch.setenv("BENTLEY_OUTPUTS", str(tmp_path / "base"))
    assert config.outputs_dir(root=tmp_path) == tmp_path / "base"
    assert config.outputs_dir(root=tmp_path, profile="large") == tmp_path / "base" / "profiles" / "large"
    shared = tmp_path / "shared"
    assert config.outputs_dir(shared, tmp_path, "ci") == config.outputs_dir(shared, tmp_path) == shared
    (tmp_path / "base" / "profiles" / "ci").mkdir(parents=True)
    assert config.profile_stores(None, tmp_path) == [tmp_path / "base", tmp_path / "base" / "profiles" / "ci"]
    assert config.profile_stores(shared, tmp_path) == [shared]


# --------------------------------------------------------------------------- hostile and malformed params

NO_ALIASES = "YAML anchors, aliases and merge keys are not allowed in params"


def billion_laughs(indent: str, as_mapping: bool) -> str:
    """Nine levels of nine aliases: 9**9 (387 million) "lol"s once expanded, under 1 KB as text."""
    lines = []
    for level, name in enumerate("abcdefghi"):
        items = ["lol" if level == 0 else f"*{'abcdefghi'[level - 1]}"] * 9
        body = ", ".join(f"k{n}: {item}" for n, item in enumerate(items)) if as_mapping else ", ".join(items)
        lines.append(f"{indent}{name}: &{name} {{{body}}}" if as_mapping else f"{indent}{name}: &{name} [{body}]")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class CliResult:
    """What one `python -m runner` child did, measured on that child alone."""

    code: int
    stderr: list[str]
    peak_mb: float
    seconds: float


#: Runs the CLI as its own child and reports that child's rusage. The launcher is a fresh,
#: small process: a child forked straight from pytest would count pytest's resident pages
#: (shared at fork time) in its peak RSS.
LAUNCHER = """
import json, os, resource, subprocess, sys, threading, time
start = time.monotonic()
child = subprocess.Popen(sys.argv[1:], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
resource.prlimit(child.pid, resource.RLIMIT_AS, (2 << 30, 2 << 30))
watchdog = threading.Timer(60, child.kill)
watchdog.start()
_, status, usage = os.wait4(child.pid, 0)
watchdog.cancel()
print(json.dumps({"code": os.waitstatus_to_exitcode(status), "peak_mb": usage.ru_maxrss / 1024,
                  "seconds": time.monotonic() - start}))
"""


def run_cli(project: Path, env: dict[str, str], *args: str) -> CliResult:
    """Run the real CLI on a copied project and measure that child alone (see `LAUNCHER`).

    The child gets 2 GiB of address space and 60 s, so a regression fails the test instead of
    growing for minutes as the original alias bomb did (7.3 GB, 11 minutes, exit 137).
    """
    launched = subprocess.run(
        [sys.executable, "-c", LAUNCHER, sys.executable, "-m", "runner", "--root", str(project), *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    measured = json.loads(launched.stdout.strip().splitlines()[-1])
    return CliResult(measured["code"], launched.stderr.splitlines(), measured["peak_mb"], measured["seconds"])


def test_an_alias_bomb_is_refused_at_its_first_anchor_in_bounded_time_and_memory(
    project: Path, clean_env: dict[str, str]
) -> None:
    """The bomb that grew a runner to 7.3 GB: now one line and exit 2 before anything runs."""
    local = project / "params" / "local.yaml"
    local.write_text(
        "ml:\n  models:\n    big:\n      class: sklearn.linear_model.LogisticRegression\n"
        "      kwargs:\n" + billion_laughs("        ", as_mapping=False)
    )
    outputs = project / "outputs"
    result = run_cli(project, clean_env, "run", "--profile", "ci", "--outputs", str(outputs))
    print(f"alias bomb refused in {result.seconds:.2f} s, child peak RSS {result.peak_mb:.0f} MB")
    assert result.stderr == [f"error: {local}:6: ml.models.big.kwargs.a: {NO_ALIASES} (found '&a')"]
    assert result.code == 2
    assert result.seconds < 10, f"{result.seconds:.1f} s"
    assert result.peak_mb < 300, f"{result.peak_mb:.0f} MB"
    assert not outputs.exists()  # the run never started


DEEP = "[" * 60 + "]" * 60


@pytest.mark.parametrize(
    ("local_yaml", "overrides", "expected"),
    [
        pytest.param(
            "sample:\n  lol:\n" + billion_laughs("    ", as_mapping=True),
            [],
            f"{{local}}:3: sample.lol.a: {NO_ALIASES} (found '&a')",
            id="bomb-under-an-unknown-key",
        ),
        pytest.param(
            None,
            ["ml.models.big.kwargs={a: &x [1, 2], b: *x}"],
            f"--set: ml.models.big.kwargs.a: {NO_ALIASES} (found '&x')",
            id="anchor-in-set",
        ),
        pytest.param(None, ["sample.seed=*x"], f"--set: sample.seed: {NO_ALIASES} (found '*x')", id="alias-in-set"),
        pytest.param(
            "sample:\n  <<: {seed: 7}\n", [], f"{{local}}:2: sample.<<: {NO_ALIASES} (found '<<')", id="merge-key"
        ),
        pytest.param(
            f"sample:\n  bogus: {DEEP}\n",
            [],
            "{local}:2: sample.bogus." + ".".join(["0"] * 49) + ": nested more than 50 levels deep, "
            "the limit for params",
            id="too-deep",
        ),
        pytest.param(
            "# " + "x" * MAX_LAYER_BYTES + "\n",
            [],
            "{local}: larger than 1048576 bytes (1 MiB), the limit for one params layer",
            id="oversize",
        ),
    ],
)
def test_hostile_params_stop_the_cli_with_one_line_and_exit_2(
    project: Path, clean_env: dict[str, str], local_yaml: str | None, overrides: list[str], expected: str
) -> None:
    local = project / "params" / "local.yaml"
    if local_yaml is not None:
        local.write_text(local_yaml)
    outputs = project / "outputs"
    sets = [arg for value in overrides for arg in ("--set", value)]
    result = run_cli(project, clean_env, "run", "--profile", "ci", "--outputs", str(outputs), *sets)
    assert result.stderr == [f"error: {expected.format(local=local)}"]
    assert result.code == 2
    assert not outputs.exists()


@pytest.mark.parametrize(
    ("local_yaml", "expected"),
    [
        ("- 1\n- 2\n", "{local}:1: expected a mapping of sections, got list"),
        ("sample:\n  bogus:\n    deep: {a: [1, {b: 2}]}\n", "{local}:2: sample.bogus: unknown key"),
        ("sample:\n  seed: {a: 1}\n", "{local}:2: sample.seed: Input should be a valid integer"),
        (
            "sentiment:\n  lexicon:\n    yes: 1.5\n",
            "{local}:3: sentiment.lexicon.yes: YAML reads this key as !!bool; quote it to use it as a name",
        ),
        (
            "ml:\n  models:\n    x:\n      kwargs: {a: {1: 2}}\n",
            "{local}:4: ml.models.x.kwargs.a.1: YAML reads this key as !!int; quote it to use it as a name",
        ),
        ("sample:\n  ? [a, b]\n  : 1\n", "{local}:2: sample: a mapping key must be a string, not a list or mapping"),
        ("sample:\n  seed: 1\n  seed: 2\n", "{local}:3: sample.seed: duplicate key"),
        (
            "sample:\n  seed: !!set {a, b}\n",
            "{local}:2: sample.seed: YAML tag !!set is not allowed in params "
            "(write plain values; only !!str, to force text, is accepted)",
        ),
        (
            "history:\n  start: 2025-13-45\n",
            "{local}:2: history.start: cannot read '2025-13-45' as !!timestamp (month must be in 1..12)",
        ),
        (
            "sample:\n  seed: 1\n---\nsample:\n  seed: 2\n",
            "{local}:3: a second YAML document ('---'); a params layer is one mapping",
        ),
        ('sample:\n  "a\\nb": 1\n', "{local}:2: sample.a\\nb: unknown key"),
        (
            'warehouse:\n  url: "::"\n',
            "{local}:2: warehouse.url: not a database URL (Could not parse SQLAlchemy URL from given URL string)",
        ),
        (
            "sample:\n  bogus: [" + "1, " * MAX_LAYER_NODES + "]\n",
            f"{{local}}:2: sample.bogus.{MAX_LAYER_NODES - 5}: more than {MAX_LAYER_NODES} YAML nodes, "
            "the limit for one params layer",
        ),
    ],
    ids=[
        "list",
        "unknown-key-holding-a-mapping",
        "mapping-for-a-scalar",
        "bool-key",
        "int-key",
        "complex-key",
        "duplicate-key",
        "explicit-tag",
        "impossible-date",
        "two-documents",
        "newline-in-a-key",
        "bad-database-url",
        "too-many-nodes",
    ],
)
def test_malformed_params_end_as_one_line_naming_file_and_key(project: Path, local_yaml: str, expected: str) -> None:
    local = project / "params" / "local.yaml"
    local.write_text(local_yaml)
    with pytest.raises(ParamsError) as err:
        load_config(root=project)
    assert str(err.value) == expected.format(local=local)


def test_bytes_that_are_not_utf8_name_their_line(project: Path) -> None:
    local = project / "params" / "local.yaml"
    local.write_bytes(b"sample:\n  seed: \xff\n")
    with pytest.raises(ParamsError) as err:
        load_config(root=project)
    assert str(err.value) == f"{local}:2: not UTF-8 text (byte 17)"


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["sample.seed=[1"], r"--set: sample\.seed: invalid YAML \(.+\)$"),
        (["sample.seed=\udcff"], r"--set: sample\.seed: not UTF-8 text \(character 1\)$"),
        (
            ["sample.seed=" + "9" * MAX_LAYER_BYTES],
            r"--set: the values total \d+ bytes, more than the limit for one params layer \(1048576 bytes, 1 MiB\)$",
        ),
        (
            [f"sample.a=[{'1, ' * 60_000}]", f"sample.b=[{'1, ' * 60_000}]"],
            rf"--set: sample\.b\.\d+: more than {MAX_LAYER_NODES} YAML nodes, the limit for one params layer$",
        ),
        (["a." * 50 + "b=1"], r"--set: (a\.){50}b: nested more than 50 levels deep, the limit for params$"),
        (["workflow.timezone=" + "x" * 5000], r"--set: workflow\.timezone: unknown timezone 'x+\u2026$"),
    ],
    ids=["invalid-yaml", "lone-surrogate", "oversize", "node-budget-is-shared", "too-deep", "overlong-message"],
)
def test_malformed_set_values_end_as_one_line(overrides: list[str], expected: str) -> None:
    with pytest.raises(ParamsError) as err:
        load_config(overrides=overrides)
    message = str(err.value)
    assert "\n" not in message and len(message) <= config.MAX_MESSAGE_CHARS
    assert re.match(expected, message), message


def test_history_years_past_year_one_is_a_params_error() -> None:
    cfg = load_config(overrides=["history.years=3000"])
    with pytest.raises(ParamsError, match=r"^history\.years 3000 reaches back past year 1 from 2025-06-02$"):
        cfg.history.window(dt.date(2025, 6, 2))


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["sources.social.kind=social"], "kind social needs at least one file or feed"),
        (
            ["sources.social.kind=social", "sources.social.files=[{path: p.json, platform: '<b>x</b>'}]"],
            "sources.social.files.0.platform",
        ),
        (["sources.social.kind=tweets"], "sources.social.kind"),
        (["sources.social.max_post_kb=1024"], "sources.social.max_post_kb"),  # over news.headline's 64 KB
    ],
)
def test_social_settings_are_checked(overrides: list[str], expected: str) -> None:
    with pytest.raises(ParamsError, match=re.escape(expected)):
        load_config("default", overrides)


def test_the_default_profile_has_sample_posts_and_live_none() -> None:
    assert load_config().sources.social.kind == "sample"
    assert load_config("live").sources.social.kind == "none"
