"""The exchange calendar is built once a day and then loaded from its pickle."""

from __future__ import annotations

from pathlib import Path

import pytest

from bentley import calendar


def test_a_built_calendar_is_cached_and_the_cached_copy_gives_the_same_sessions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(calendar.CACHE_ENV, str(tmp_path))
    calendar._calendar.cache_clear()
    try:
        built = calendar._calendar("XNYS")
        cached_file = calendar._cache_file("XNYS")
        assert cached_file.parent == tmp_path and cached_file.exists()
        assert not list(tmp_path.glob("*.tmp"))  # written atomically, nothing left behind
        calendar._calendar.cache_clear()
        loaded = calendar._calendar("XNYS")
        assert loaded is not built and loaded.sessions.equals(built.sessions)
        assert loaded.schedule.equals(built.schedule)
        cached_file.write_bytes(b"not a pickle")  # a damaged cache is rebuilt, not fatal
        calendar._calendar.cache_clear()
        assert calendar._calendar("XNYS").sessions.equals(built.sessions)
    finally:
        calendar._calendar.cache_clear()
