"""Shared fixtures, and how the suite is marked, grouped and ordered (docs/ARCHITECTURE.md §13).

Markers are added here, by location and by name, so test modules carry none of this
bookkeeping (the markers are registered in pyproject.toml):

- `unit` / `integration`: tests/unit/ and tests/integration/.
- `slow`: runs notebooks or whole pipelines, trains models, or starts the CLI in a subprocess.
  Every integration test is slow except the ones in QUICK; unit tests are fast except
  SLOW_UNIT. `make test-fast` runs `not slow and not servers`.
- `servers`: uses the private MariaDB/PostgreSQL servers of tests/servers.py.
- `serial`: timing-sensitive (SERIAL). Under pytest-xdist it runs while no other worker runs
  a test, so a second worker's load cannot make it miss a deadline.

Under pytest-xdist (`make test`: `-n auto --dist loadgroup`) the scheduler below hands out
whole groups: a test's module, so a module-scoped fixture (a whole pipeline run) is built once,
on one worker, and the module's tests keep their order; the SERIAL tests form one more group,
run last. Groups go out longest first (GROUP_COST): the longest-job-first schedule for two
workers. (The scheduler is ours because xdist's own loadgroup reads `xdist_group` markers
through node ids, which pytest 9.2 no longer lets it rewrite: pytest-xdist issue #1386.)

Fast tests get a 300 s timeout, slow ones the 1800 s of pyproject.toml: a hang fails the
test instead of eating CI's 90 minutes.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

# jsonschema (under nbformat, which half the test modules import) loads rfc3987_syntax when it is
# installed (jupyter-events asks for it) for its optional `iri` format checker, and building that
# package's grammar costs about 2.5 s of CPU per process. No schema here uses the format, so the
# test processes skip it.
sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[assignment]

pytest_plugins = ["tests.servers"]  # private MariaDB/PostgreSQL servers for the warehouse tests

ROOT = Path(__file__).resolve().parents[1]

#: (module file, test function) of integration tests that start no kernel and run no pipeline.
QUICK = {
    ("test_readme_commands.py", "test_the_readme_lists_the_commands_this_test_runs"),
    ("test_servers.py", "test_a_missing_server_skips_locally_and_fails_on_ci"),
}

#: Unit tests slower than about 2 s alone on a quiet machine (3 s or more with the machine
#: busy): they train models, replay books, or start the runner's CLI in a subprocess.
SLOW_UNIT = {
    "test_anomaly.py": {"test_detect_anomalies_has_no_lookahead", "test_isolation_forest_is_deterministic_for_a_seed"},
    "test_broker.py": {
        "test_a_backdated_day_books_its_own_book_as_a_fresh_store_would",
        "test_a_failure_mid_write_leaves_nothing_half_written",
        "test_a_rerun_that_would_leave_stale_rows_or_rewrite_history_is_refused",
        "test_a_target_of_zero_closes_the_position",
        "test_rebook_deletes_exactly_the_rows_from_the_date_on_and_a_replay_reproduces_them",
        "test_reconciliation_catches_a_deleted_order",
        "test_reconciliation_catches_changed_cash",
        "test_reruns_change_nothing",
    },
    "test_budget.py": {"test_the_sample_household_is_categorized_accurately"},
    "test_health.py": {"test_a_working_setup_reports_ok_from_the_warehouse_and_tracking"},
    "test_infra.py": {
        "test_a_read_only_run_folder_is_refused",
        "test_an_existing_warehouse_file_that_is_read_only_is_refused",
        "test_an_outputs_folder_that_cannot_be_created_is_refused",
        "test_mlflow_client_timeouts_are_bounded_unless_the_user_chose",
    },
    "test_instruments.py": {"test_an_index_is_never_scored_held_or_ordered"},
    "test_optimize.py": {"test_module_does_not_import_matplotlib"},
    "test_point_in_time.py": {  # tests/unit/models: every test trains and registers models
        "test_a_backdated_date_never_loads_a_version_trained_on_later_data",
        "test_a_backdated_run_trains_registers_and_predicts_without_moving_aliases",
        "test_a_run_never_meets_its_own_earlier_attempt_as_champion",
        "test_mark_crashed_versions_tags_them_and_puts_the_champion_back",
        "test_registered_versions_carry_their_training_window",
        "test_the_first_champion_of_a_crashed_run_leaves_no_champion",
        "test_the_same_run_candidate_and_model_give_the_same_version",
    },
    "test_prediction.py": {
        "test_boosted_importances_are_permutation_auc_drops",
        "test_evaluate_candidate_is_deterministic_for_a_seed",
        "test_shuffled_labels_score_chance_while_real_labels_do_not",
        "test_the_bootstrap_interval_on_known_cases",
        "test_the_sample_pipeline_trains_and_predicts_end_to_end",
    },
    "test_preflight.py": {"test_the_cli_exits_2_with_one_line_and_writes_nothing"},
    "test_promotion.py": {
        "test_pure_noise_is_not_promoted_across_50_seeds",
        "test_the_control_refits_the_winning_candidates_own_class",
    },
    "test_registry.py": {
        "test_a_tampered_artifact_is_refused_before_loading",
        "test_champion_after_reuses_the_verified_model_unless_the_challenger_was_promoted",
        "test_registry_flow_aliases_and_verified_load",
    },
    "test_risk.py": {"test_parallel_garch_fits_equal_one_by_one_fits"},
    "test_schedule.py": {"test_a_tick_that_raises_does_not_end_the_loop"},
    "test_trade_day.py": {"test_prices_after_t_change_nothing_about_t"},
    "test_yahoo.py": {"test_batches_of_fifty"},
}

#: Tests that assert on wall-clock time (a kernel must start within a few seconds, two stages
#: must overlap, a lost lease is noticed within 20 s): they run with no other test beside them.
SERIAL = {
    ("test_runner.py", "test_a_timeout_kills_the_kernel_and_its_children"),
    ("test_runner.py", "test_independent_stages_run_at_the_same_time_and_all_done_runs_after_a_failure"),
    ("test_runner.py", "test_sigterm_while_mlflow_does_not_answer_ends_the_run_at_once"),
    ("test_runner.py", "test_one_active_run_a_busy_lease_and_a_lost_lease"),
    ("test_runner.py", "test_orchestrated_tasks_share_one_run_record_lease_and_mlflow_parent"),
    ("test_pipeline.py", "test_a_stage_over_its_time_limit_is_killed"),
}

#: Seconds a group takes (pytest --junitxml, 2 workers, a machine busy with other work; the README
#: test hit its timeout there). Groups not listed count 60 s per integration test and 0.1 s per
#: unit test. Only the order matters: longest first, the serial group always last (it waits for
#: the other worker's running test, and the tests at the end are short).
GROUP_COST = {
    "tests/integration/test_readme_commands.py": 1800,
    "tests/integration/test_pipeline.py": 1274,
    "tests/integration/test_bad_input.py": 567,
    "tests/integration/test_point_in_time.py": 548,
    "tests/integration/test_runner.py": 429,
    "tests/integration/test_airflow.py": 421,
    "tests/integration/test_servers.py": 150,
    "tests/integration/test_file_sources.py": 120,
    "tests/unit/models/test_point_in_time.py": 79,
    "tests/integration/test_scheduler.py": 61,
    "tests/unit/trading/test_broker.py": 50,
    "tests/unit/models/test_promotion.py": 45,
    "tests/unit/models/test_anomaly.py": 31,
    "tests/unit/runner/test_preflight.py": 27,
    "tests/unit/runner/test_infra.py": 22,
    "tests/unit/test_config.py": 20,
    "tests/unit/models/test_prediction.py": 19,
    "tests/unit/models/test_registry.py": 14,
    "tests/unit/runner/test_schedule.py": 12,
    "tests/unit/test_instruments.py": 12,
    "tests/unit/monitoring/test_health.py": 11,
    "tests/unit/test_validation.py": 9,
    "tests/unit/trading/test_trade_day.py": 9,
    "tests/unit/analytics/test_budget.py": 7,
    "serial": -1,
}
#: A test expected to run longer than this gets the cheapest waiting group as its successor.
LONG_TEST_S = 60

SERVER_FIXTURES = {"mariadb_server", "postgres_server", "mariadb_url", "postgres_url", "warehouse_target"}
FAST_TIMEOUT_S = 300


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def clean_env() -> dict[str, str]:
    """The environment minus anything that would point a run at shared services."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BENTLEY_", "MLFLOW_"))}
    env["MPLBACKEND"] = "Agg"
    return env


# --------------------------------------------------------------------------- markers and groups


def _key(item: pytest.Item) -> tuple[str, str]:
    return item.path.name, getattr(item, "originalname", item.name)


def group_of(nodeid: str) -> str:
    """The xdist work unit of a test: `serial`, or its module's path (`tests/unit/test_dag.py`)."""
    path, _, rest = nodeid.partition("::")
    name = rest.split("::")[-1].split("[")[0]
    return "serial" if (Path(path).name, name) in SERIAL else path


def pytest_configure(config: pytest.Config) -> None:
    if not config.pluginmanager.hasplugin("timeout"):  # without pytest-timeout, --strict-markers still passes
        config.addinivalue_line("markers", "timeout(seconds): pytest-timeout's limit (unused without it)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    groups: dict[str, list[pytest.Item]] = {}
    for item in items:
        key = _key(item)
        parts = item.path.parts
        if "unit" in parts:
            item.add_marker(pytest.mark.unit)
        if ("integration" in parts and key not in QUICK) or key[1] in SLOW_UNIT.get(key[0], ()):
            item.add_marker(pytest.mark.slow)
        elif item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(FAST_TIMEOUT_S))
        if key in SERIAL:
            item.add_marker(pytest.mark.serial)
        if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.servers)
        groups.setdefault(group_of(item.nodeid), []).append(item)
    _warn_about_stale_names(items)
    # Longest groups first; Python's sort is stable, so each group keeps its own order.
    order = sorted(groups, key=lambda g: -group_cost(g, len(groups[g])))
    items[:] = [item for group in order for item in groups[group]]


def group_cost(group: str, size: int) -> float:
    return GROUP_COST.get(group, (60.0 if group.startswith("tests/integration/") else 0.1) * size)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object | None:
    """`--dist loadgroup`: whole groups (`group_of`), longest first, in collection order.

    xdist's scope scheduler, with one change: a worker starts a test only once it holds the
    next one, so when its last pending test is a long one (the README test runs for minutes),
    the group sent to it waits that long. xdist sends the next group in line; we send the
    cheapest, so no long group sits idle behind a long test while the other worker runs dry.
    """
    if config.getvalue("dist") != "loadgroup":
        return None
    from collections import Counter

    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):
        sizes: Counter[str] = Counter()

        def _split_scope(self, nodeid: str) -> str:
            return group_of(nodeid)

        def schedule(self) -> None:
            if self.collection is None and self.collection_is_completed:
                self.sizes = Counter(group_of(nodeid) for nodeid in next(iter(self.registered_collections.values())))
            super().schedule()

        def _reschedule(self, node) -> None:
            if node.shutting_down:
                return
            if not self.workqueue:
                node.shutdown()
                return
            pending = [
                nodeid for unit in self.assigned_work[node].values() for nodeid, done in unit.items() if not done
            ]
            if len(pending) > 1:
                return
            if pending:
                group = group_of(pending[0])
                if group_cost(group, self.sizes[group]) / max(self.sizes[group], 1) >= LONG_TEST_S:
                    cheapest = next((g for g in reversed(self.workqueue) if g != "serial"), None)
                    if cheapest is not None:
                        self.workqueue.move_to_end(cheapest, last=False)
            self._assign_work_unit(node)

    config.option.loadscopereorder = False  # keep our order (xdist would sort by test count)
    return GroupScheduling(config, log)


def _warn_about_stale_names(items: list[pytest.Item]) -> None:
    """A renamed test silently drops out of QUICK/SERIAL/SLOW_UNIT: say so when its module ran."""
    modules = {item.path.name for item in items}
    names = {_key(item) for item in items}
    listed = QUICK | SERIAL | {(module, name) for module, tests in SLOW_UNIT.items() for name in tests}
    stale = sorted(k for k in listed if k[0] in modules and k not in names)
    if stale and len(items) > 100:  # a -k or single-test selection proves nothing
        warnings.warn(f"tests/conftest.py names tests that were not collected: {stale}", stacklevel=1)


# --------------------------------------------------------------------------- serial tests under xdist
# A readers-writer lock across the xdist workers of one run, on two files:
# every test holds LOCK_SH on `main` while it runs (set-up and tear-down included, so a
# module-scoped pipeline run counts); a run of consecutive serial tests holds LOCK_EX on
# `gate` (new tests wait) and then LOCK_EX on `main` (running tests finish first).


class _Lock:
    def __init__(self, run_uid: str) -> None:
        folder = Path(tempfile.gettempdir())
        self.paths = [folder / f"bentley-pytest-{run_uid}.gate", folder / f"bentley-pytest-{run_uid}.main"]
        self.gate: IO[bytes] = self.paths[0].open("ab")
        self.main: IO[bytes] = self.paths[1].open("ab")
        self.exclusive = False

    def shared(self) -> None:
        fcntl.flock(self.gate, fcntl.LOCK_SH)
        fcntl.flock(self.main, fcntl.LOCK_SH)
        fcntl.flock(self.gate, fcntl.LOCK_UN)

    def take_exclusive(self) -> None:
        fcntl.flock(self.gate, fcntl.LOCK_EX)
        fcntl.flock(self.main, fcntl.LOCK_EX)
        self.exclusive = True

    def release(self) -> None:
        fcntl.flock(self.main, fcntl.LOCK_UN)
        fcntl.flock(self.gate, fcntl.LOCK_UN)
        self.exclusive = False

    def close(self) -> None:
        for handle in (self.gate, self.main):
            handle.close()
        for path in self.paths:
            with contextlib.suppress(OSError):
                path.unlink()


_lock: _Lock | None = None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    global _lock
    workerinput = getattr(item.config, "workerinput", None)
    if workerinput is None:  # not under xdist: nothing runs beside us
        return (yield)
    if _lock is None:
        _lock = _Lock(workerinput["testrunuid"])
    serial = item.get_closest_marker("serial") is not None
    if serial and not _lock.exclusive:
        _lock.take_exclusive()
    elif not serial:
        _lock.shared()
    try:
        return (yield)
    finally:
        keep = serial and nextitem is not None and nextitem.get_closest_marker("serial") is not None
        if not keep:
            _lock.release()


def pytest_unconfigure(config: pytest.Config) -> None:
    if _lock is not None:
        _lock.close()
