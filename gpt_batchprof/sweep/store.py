"""Results on disk: a streaming writer (CSV or JSON Lines) and readers for saved results.

Save as you go (hyperfine's habit): every finished point is appended to the file at once.
The file is flushed and fsync'd after every slow point (live timing) and at least every
``SYNC_EVERY_S`` seconds otherwise, so a crash or ``kill -9`` leaves every point that
finished before the last sync readable. A torn last line (the process died mid-write) is
cut off when the file is opened again with ``resume=True``; ``done_keys`` then tells the
runner which points to skip, so none is written twice.
"""

from __future__ import annotations

import csv
import gc
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from gpt_batchprof.errors import BatchprofError
from gpt_batchprof.sweep.evaluate import COLUMNS, FLOAT_COLUMNS, INT_COLUMNS
from gpt_batchprof.sweep.grid import IDENTITY

STREAM_FORMATS = (".csv", ".jsonl")
SYNC_EVERY_S = 0.25


def stream_format(path: Path) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in STREAM_FORMATS:
        raise BatchprofError(f"{path}: streaming results must be .csv or .jsonl (got '{suffix or 'no extension'}')")
    return suffix[1:]


def row_key(row: dict[str, Any]) -> tuple[str, ...]:
    return tuple("" if row.get(k) is None else str(row[k]) for k in IDENTITY)


def _cut_torn_tail(path: Path) -> None:
    """Drop a last line that has no newline (a write the process did not finish)."""
    with open(path, "rb+") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        if size == 0:
            return
        fh.seek(-1, os.SEEK_END)
        if fh.read(1) == b"\n":
            return
        step, pos = 4096, size
        while pos > 0:
            start = max(0, pos - step)
            fh.seek(start)
            chunk = fh.read(pos - start)
            nl = chunk.rfind(b"\n")
            if nl >= 0:
                fh.truncate(start + nl + 1)
                return
            pos = start
        fh.truncate(0)


def _converter(column: str):
    """CSV cell -> value for one column: ints and floats parsed, text kept ('' is None, below)."""
    if column in INT_COLUMNS:
        return lambda v: int(v) if v.isdigit() else int(float(v))
    if column in FLOAT_COLUMNS:
        return float
    return str


def _complete_lines(fh):
    """The file's lines, without a last one that has no newline (a torn write of a killed sweep)."""
    prev = None
    for line in fh:
        if prev is not None:
            yield prev
        prev = line
    if prev is not None and prev.endswith("\n"):
        yield prev


def _csv_rows(path: Path, fh) -> Iterator[dict[str, Any]]:
    reader = csv.reader(_complete_lines(fh))
    header = next(reader, None)
    if header is None:
        return
    if "workload" not in header:
        raise BatchprofError(f"{path}: not a sweep result (no 'workload' column)")
    convert = [_converter(c) for c in header]
    for cells in reader:
        try:
            yield {c: (None if v == "" else f(v)) for c, f, v in zip(header, convert, cells)}
        except ValueError as e:
            raise BatchprofError(f"{path}: line {reader.line_num}: unreadable value ({e})") from None


def _jsonl_rows(path: Path, fh) -> Iterator[dict[str, Any]]:
    for i, line in enumerate(_complete_lines(fh), 1):
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError:
            raise BatchprofError(f"{path}: line {i} is not JSON") from None


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a saved result (.csv, .jsonl, or the .json that ``--format json`` writes).

    .csv and .jsonl are read line by line (a results file can hold hundreds of thousands of
    points); a torn last line is ignored (the file may come from a killed sweep).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".jsonl", ".json"):
        raise BatchprofError(f"{path}: unknown results format '{suffix}' (expected .csv, .jsonl or .json)")
    try:
        with open(path, encoding="utf-8", newline="" if suffix == ".csv" else None) as fh:
            if suffix == ".csv":
                return list(_csv_rows(path, fh))
            if suffix == ".jsonl":
                return list(_jsonl_rows(path, fh))
            text = fh.read()
    except OSError as e:
        raise BatchprofError(f"{path}: cannot read ({e.strerror or e})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise BatchprofError(f"{path}: malformed JSON at line {e.lineno}: {e.msg}") from None
    rows = data.get("rows") if isinstance(data, dict) else data
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise BatchprofError(f"{path}: expected a list of rows or an object with 'rows'")
    return rows


def read_columns(path: Path) -> dict[str, list]:
    """A saved result as columns ({name: values}), for readers of every row such as ``plot``.

    A .csv is transposed as read, with no dict per row (hundreds of thousands of points read
    in about a second); cells stay text ('' for a missing value) and the reader parses the
    columns it uses. Other formats go through :func:`read_rows`.
    """
    path = Path(path)
    if path.suffix.lower() != ".csv":
        rows = read_rows(path)
        names = list(dict.fromkeys(k for r in rows[:1] for k in r)) or list(COLUMNS)
        return {n: [r.get(n) for r in rows] for n in names}
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            reader = csv.reader(_complete_lines(fh))
            header = next(reader, None)
            if header is None:
                return {}
            if "workload" not in header:
                raise BatchprofError(f"{path}: not a sweep result (no 'workload' column)")
            # millions of short-lived lists: the cyclic GC would rescan them over and over (4x slower)
            was_enabled = gc.isenabled()
            gc.disable()
            try:
                cells = list(reader)
                width = len(header)
                for i, row in enumerate(cells):
                    if len(row) != width:
                        raise BatchprofError(f"{path}: line {i + 2} has {len(row)} cells, the header {width}")
                return dict(zip(header, map(list, zip(*cells)))) if cells else {n: [] for n in header}
            finally:
                if was_enabled:
                    gc.enable()
    except OSError as e:
        raise BatchprofError(f"{path}: cannot read ({e.strerror or e})") from None


def _clean(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v


class StreamWriter:
    """Appends rows to a .csv (header once) or .jsonl file as points finish."""

    def __init__(self, path: Path, resume: bool = False, columns: Sequence[str] = COLUMNS):
        self.path = Path(path)
        self.columns = tuple(columns)
        self.fmt = stream_format(self.path)
        self.previous: list[dict[str, Any]] = []
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if resume and self.path.exists():
                _cut_torn_tail(self.path)
                self.previous = read_rows(self.path)
                if self.fmt == "csv" and self.previous and list(self.previous[0]) != list(self.columns):
                    raise BatchprofError(f"{self.path}: its columns differ from this version's; "
                                         "resume into a new file")
            self._fh = open(self.path, "a" if resume else "w", encoding="utf-8", newline="")
        except OSError as e:
            raise BatchprofError(f"{self.path}: cannot write ({e.strerror or e})") from None
        self._csv = csv.writer(self._fh, lineterminator="\n") if self.fmt == "csv" else None
        if self._csv is not None and self._fh.tell() == 0:
            self._csv.writerow(self.columns)
            self.sync()
        self._last_sync = time.monotonic()

    @property
    def done_keys(self) -> set[tuple[str, ...]]:
        return {row_key(r) for r in self.previous}

    def write(self, row: dict[str, Any], sync: bool = False) -> None:
        if self._csv is not None:
            self._csv.writerow(["" if (v := _clean(row.get(c))) is None else v for c in self.columns])
        else:
            self._fh.write(json.dumps({c: _clean(row.get(c)) for c in self.columns}) + "\n")
        if sync or time.monotonic() - self._last_sync >= SYNC_EVERY_S:
            self.sync()

    def sync(self) -> None:
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._last_sync = time.monotonic()

    def close(self) -> None:
        if not self._fh.closed:
            self.sync()
            self._fh.close()

    def __enter__(self) -> "StreamWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def rows_in_grid(rows: Iterable[dict[str, Any]], keys: set[tuple[str, ...]]) -> list[dict[str, Any]]:
    return [r for r in rows if row_key(r) in keys]


def columns_present(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The columns that hold a value in at least one row (exports leave all-empty ones out)."""
    return [c for c in COLUMNS if any(r.get(c) is not None for r in rows)]
