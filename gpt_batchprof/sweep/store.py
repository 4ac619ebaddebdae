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
import io
import itertools
import json
import math
import os
import time
from operator import attrgetter
from pathlib import Path
from typing import Any, Mapping, Sequence

from gpt_batchprof.errors import BatchprofError
from gpt_batchprof.files import parse_json, read_text
from gpt_batchprof.sweep.rows import COLUMNS, SweepRow, parse_row

STREAM_FORMATS = (".csv", ".jsonl")
SYNC_EVERY_S = 0.25


def stream_format(path: Path) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in STREAM_FORMATS:
        raise BatchprofError(f"{path}: streaming results must be .csv or .jsonl (got '{suffix or 'no extension'}')")
    return suffix[1:]


def pid_file(path: Path) -> Path:
    """Sidecar naming the sweep that holds ``path`` (for the refusal message only; the lock
    itself is the flock on the results file)."""
    return path.with_name(f".{path.name}.pid")


def _claim(fd: int, path: Path) -> bool:
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            holder = f"pid {int(pid_file(path).read_text().strip())}"
        except (OSError, ValueError):
            holder = "another process"
        raise BatchprofError(f"{path}: in use by another sweep ({holder}); wait for it to finish "
                             "or choose another -o") from None
    try:
        pid_file(path).write_text(f"{os.getpid()}\n", encoding="utf-8")
    except OSError:
        pass  # the lock still holds; only the message would lack the pid
    return True


def _remove_pid_file(path: Path) -> None:
    try:
        p = pid_file(path)
        if p.read_text().strip() == str(os.getpid()):
            p.unlink()
    except (OSError, ValueError):
        pass


def _release(fd: int, path: Path) -> None:
    if fd >= 0:
        _remove_pid_file(path)
        try:
            os.close(fd)
        except OSError:
            pass


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


def read_rows(path: Path) -> list[SweepRow]:
    """Rows of a saved result (.csv, .jsonl, or the .json that ``--format json`` writes).

    A torn last line is ignored (the file may come from a killed sweep); any other row that
    does not read back as a :class:`SweepRow` is refused with its line number.
    """
    path = Path(path)
    text = read_text(path)
    suffix = path.suffix.lower()
    if suffix == ".json":
        data = parse_json(text, str(path))
        rows = data.get("rows") if isinstance(data, dict) else data
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise BatchprofError(f"{path}: expected a list of rows or an object with 'rows'")
        return [parse_row(r, f"{path}: row {i}") for i, r in enumerate(rows, 1)]
    if not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]  # torn last line
    if suffix == ".jsonl":
        out = []
        for i, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            row = parse_json(line, f"{path}: line {i}")
            if not isinstance(row, dict):
                raise BatchprofError(f"{path}: line {i}: expected a JSON object, got {type(row).__name__}")
            out.append(parse_row(row, f"{path}: line {i}"))
        return out
    if suffix == ".csv":
        reader = csv.reader(io.StringIO(text))
        try:
            header = next(reader, None)
            if header is None:
                return []
            if "workload" not in header:
                raise BatchprofError(f"{path}: not a sweep result (no 'workload' column)")
            out = []
            for cells in reader:
                where = f"{path}: line {reader.line_num}"
                if not cells:
                    continue
                if len(cells) != len(header):
                    raise BatchprofError(f"{where}: {len(cells)} fields, the header has {len(header)}")
                out.append(parse_row(dict(zip(header, cells)), where))
            return out
        except csv.Error as e:
            raise BatchprofError(f"{path}: line {reader.line_num}: malformed CSV ({e})") from None
    raise BatchprofError(f"{path}: unknown results format '{suffix}' (expected .csv, .jsonl or .json)")


def _plain_columns(text: str) -> dict[str, list] | None:
    """Columns of CSV ``text`` (whole lines) that holds no quote and no carriage return, or
    None when it does, or when a line has the wrong number of cells (then the csv module
    reads it and names the line).

    Without quotes and CRs the csv module splits each line at every comma and nothing else,
    so one ``str.split`` of the whole body gives the same cells, and slicing every
    ``width``-th cell gives each column: three times faster than csv.reader and a transpose
    on a 350k-row file (1.2 s against 3.4 s), which is most of reading it.
    """
    if not text or '"' in text or "\r" in text:
        return None
    lines = text.split("\n")
    lines.pop()  # the '' after the last newline
    header = lines[0].split(",")
    width = len(header)
    body = lines[1:]
    if not body:
        return {n: [] for n in header}
    if set(map(str.count, body, itertools.repeat(","))) != {width - 1}:
        return None  # a ragged (or blank) line: the csv path below refuses it with its number
    cells = ",".join(body).split(",")
    return {n: cells[j::width] for j, n in enumerate(header)}


def read_columns(path: Path) -> dict[str, list]:
    """A saved result as columns ({name: values}), for readers of every row such as ``plot``.

    A .csv is transposed as read, with no dict per row (hundreds of thousands of points read
    in about a second); cells stay text ('' for a missing value) and the reader parses the
    columns it uses (refusing a cell that is not a number with its point). A row with the
    wrong number of cells is refused with its line; a torn last line is ignored. Other
    formats go through :func:`read_rows`.
    """
    path = Path(path)
    if path.suffix.lower() != ".csv":
        rows = read_rows(path)
        return {n: [getattr(r, n) for r in rows] for n in COLUMNS}
    text = read_text(path)  # one line for a binary, non-UTF-8 or unreadable file
    if not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]  # torn last line
    plain = _plain_columns(text)
    if plain is not None:
        if "workload" not in plain:
            raise BatchprofError(f"{path}: not a sweep result (no 'workload' column)")
        return plain
    reader = csv.reader(io.StringIO(text))
    try:
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
        finally:
            if was_enabled:
                gc.enable()
    except csv.Error as e:
        raise BatchprofError(f"{path}: line {reader.line_num}: malformed CSV ({e})") from None
    width = len(header)
    for i, row in enumerate(cells):
        if len(row) != width:
            raise BatchprofError(f"{path}: line {i + 2}: {len(row)} fields, the header has {width}")
    return dict(zip(header, map(list, zip(*cells)))) if cells else {n: [] for n in header}


def _csv_header(path: Path) -> list[str] | None:
    """The column names on a .csv's first line; None when there is no whole first line or it
    is not UTF-8 text (read_rows then says what is wrong)."""
    with open(path, "rb") as fh:
        first = fh.readline()
    if not first.endswith(b"\n"):
        return None
    try:
        return next(csv.reader([first.decode("utf-8")]), [])
    except (UnicodeDecodeError, csv.Error):
        return None


def _clean(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v


class StreamWriter:
    """Appends rows to a .csv (header once) or .jsonl file as points finish: SweepRows (the
    default ``columns`` are its fields), or mappings holding other ``columns``.

    The file is locked (``fcntl.flock``, non-blocking) while the writer is open, so a second
    sweep on the same file stops at once naming the first one's pid instead of interleaving
    rows. A file that already holds results is only appended to with ``resume=True`` and only
    started again with ``overwrite=True``; otherwise it is refused, untouched.
    """

    RESUMABLE = "--resume to finish them, --overwrite to start again, or choose another -o"

    def __init__(self, path: Path, resume: bool = False, overwrite: bool = False,
                 columns: Sequence[str] = COLUMNS, existing_hint: str = RESUMABLE):
        self.path = Path(path)
        self.columns = tuple(columns)
        self._fields = attrgetter(*self.columns)  # a SweepRow's values, in column order
        self.fmt = stream_format(self.path)
        self.previous: list[SweepRow] = []
        if resume and overwrite:
            raise BatchprofError("--resume and --overwrite: choose one")
        if self.path.is_dir():
            raise BatchprofError(f"{self.path}: is a directory, not a results file")
        fd = -1
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o666)
            self._lock = _claim(fd, self.path)
            size = os.fstat(fd).st_size
            if size and not resume and not overwrite:
                raise BatchprofError(f"{self.path}: already holds results; {existing_hint}")
            if overwrite:
                os.ftruncate(fd, 0)
            elif resume and size:
                header = _csv_header(self.path) if self.fmt == "csv" else None
                if header and header != list(self.columns):  # before the rows: a column this version lacks
                    raise BatchprofError(f"{self.path}: its columns differ from this version's; "
                                         "resume into a new file")
                self.previous = read_rows(self.path)  # strict: text, every whole row valid
                if b"\n" not in self.path.read_bytes():
                    raise BatchprofError(f"{self.path}: not a results file (no complete line); "
                                         "--overwrite to start again")
                _cut_torn_tail(self.path)
            self._fh = os.fdopen(fd, "a", encoding="utf-8", newline="")
        except OSError as e:
            _release(fd, self.path)
            raise BatchprofError(f"{self.path}: cannot write ({e.strerror or e})") from None
        except BaseException:
            _release(fd, self.path)
            raise
        self._csv = csv.writer(self._fh, lineterminator="\n") if self.fmt == "csv" else None
        if self._csv is not None and os.fstat(fd).st_size == 0:
            self._csv.writerow(self.columns)
            self.sync()
        self._last_sync = time.monotonic()

    @property
    def done_keys(self) -> set[tuple[str, ...]]:
        return {r.key() for r in self.previous}

    def write(self, row: SweepRow | Mapping[str, Any], sync: bool = False) -> None:
        values = [row.get(c) for c in self.columns] if isinstance(row, Mapping) else self._fields(row)
        if self._csv is not None:
            self._csv.writerow(["" if (v := _clean(x)) is None else v for x in values])
        else:
            self._fh.write(json.dumps({c: _clean(x) for c, x in zip(self.columns, values)}) + "\n")
        if sync or time.monotonic() - self._last_sync >= SYNC_EVERY_S:
            self.sync()

    def sync(self) -> None:
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._last_sync = time.monotonic()

    def close(self) -> None:
        if not self._fh.closed:
            try:
                self.sync()
            finally:
                _remove_pid_file(self.path)
                self._fh.close()  # closing the descriptor releases the lock

    def __enter__(self) -> "StreamWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def columns_present(rows: Sequence[SweepRow]) -> list[str]:
    """The columns that hold a value in at least one row (exports leave all-empty ones out)."""
    return [c for c in COLUMNS if any(getattr(r, c) is not None for r in rows)]
