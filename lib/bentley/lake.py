"""The raw data lake and the run folder's files: the only code that writes them.

Layout (ARCHITECTURE §5): `<lake>/raw/<source>/<dataset>/ingest_date=YYYY-MM-DD/<name>.parquet`.
The lake is append-only: a file is never edited, only written whole. Every write goes to a
temporary file in the same folder and is then `os.replace`d into place, so a crash leaves
either the old state or the new one, never half a file.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

#: mkstemp creates 0600 files; reports and lake files are meant to be shared and served.
_FILE_MODE = 0o644
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write `data` to `path` through a same-folder temp file and `os.replace`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, _FILE_MODE)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, payload: Any) -> Path:
    return atomic_write_text(path, json.dumps(payload, indent=2, default=str) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def orphaned_temp_files(folder: Path) -> Iterator[Path]:
    """Temp files our atomic writes leave only when the writer was killed mid-write.

    Only meaningful while holding the run lease: then no other writer can own one.
    """
    if folder.is_dir():
        yield from (p for p in folder.rglob(".*.tmp") if p.is_file())


def remove_path(path: Path) -> None:
    """Delete a file or a folder tree (retention); a missing path is already gone."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


@dataclass(frozen=True)
class Partition:
    source: str
    dataset: str
    ingest_date: dt.date
    path: Path


class Lake:
    """Parquet files under `<outputs>/lake`, partitioned by source, dataset and ingest date."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        #: Called with (partition folder, frame) after each raw write: stages fingerprint what they wrote.
        self.on_write: Callable[[Path, pd.DataFrame], None] | None = None

    def partition(self, source: str, dataset: str, ingest_date: dt.date) -> Path:
        for label, value in (("source", source), ("dataset", dataset)):
            if not _SAFE_NAME.match(value):
                raise ValueError(f"lake {label} name {value!r} is not a plain folder name")
        return self.root / "raw" / source / dataset / f"ingest_date={ingest_date.isoformat()}"

    def write_raw(self, frame: pd.DataFrame, *, source: str, dataset: str, ingest_date: dt.date, name: str) -> Path:
        """Write one raw file atomically; `name` (the run id) keeps reruns from colliding."""
        if not _SAFE_NAME.match(name):
            raise ValueError(f"lake file name {name!r} is not a plain file name")
        path = self.partition(source, dataset, ingest_date) / f"{name}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        try:
            os.chmod(tmp, _FILE_MODE)
            frame.to_parquet(tmp, index=False)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        if self.on_write is not None:
            self.on_write(path.parent, frame)
        return path

    def raw_partitions(self) -> list[Partition]:
        """Every `raw/<source>/<dataset>/ingest_date=...` folder in the lake."""
        found = []
        for folder in sorted(self.root.glob("raw/*/*/ingest_date=*")):
            try:
                day = dt.date.fromisoformat(folder.name.removeprefix("ingest_date="))
            except ValueError:
                continue  # not ours: never delete what we cannot date
            found.append(Partition(folder.parent.parent.name, folder.parent.name, day, folder))
        return found

    def raw_files(self, source: str, dataset: str, ingest_date: dt.date) -> list[Path]:
        """The partition's files in write order (names start with the run id's timestamp)."""
        folder = self.partition(source, dataset, ingest_date)
        return sorted(p for p in folder.glob("*.parquet") if not p.name.startswith("."))

    def read_raw(self, source: str, dataset: str, ingest_date: dt.date, *, with_file: bool = False) -> pd.DataFrame:
        """All files of one partition, concatenated in write order (later rows win on upsert).

        `with_file` adds `_lake_file`, so checks can tell a duplicate inside one file (bad
        data) from the same row landed by two runs (expected, resolved by the upsert).
        """
        files = self.raw_files(source, dataset, ingest_date)
        if not files:
            raise FileNotFoundError(
                f"no lake files for {source}/{dataset} on ingest_date={ingest_date}; run the ingest stage first"
            )
        frames = []
        for path in files:
            frame = pd.read_parquet(path)
            if with_file:
                frame["_lake_file"] = path.name
            frames.append(frame)
        return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
