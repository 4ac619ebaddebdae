"""Request traces as they are published, read into :class:`Request` tuples.

One reader per format, picked by the file's columns (CSV) or keys (JSON Lines):

- ``native`` (CSV or JSONL): ``arrival_s`` (seconds), ``prompt_len``, ``gen_len``.
- ``azure`` (Azure LLM inference traces 2023/2024, CSV): ``TIMESTAMP`` (a date and time,
  ``2023-11-16 18:15:46.6805900`` or ``2024-05-10 00:00:00.009930+00:00``),
  ``ContextTokens``, ``GeneratedTokens``.
- ``burstgpt`` (BurstGPT, CSV): ``Timestamp`` (seconds), ``Request tokens``,
  ``Response tokens`` (and ``Model``, ``Total tokens``, ``Log Type``, not used). Failed
  requests are published with 0 response tokens: they are skipped and counted.
- ``mooncake`` (Mooncake / FAST'25, JSONL): ``timestamp`` (milliseconds),
  ``input_length``, ``output_length``, and ``hash_ids``: one key per 512-token block of the
  prompt, equal keys meaning equal blocks (what prefix caching reuses).

The public formats' times are shifted so that the first request arrives at 0; a native
trace in absolute (epoch) seconds is rebased the same way, and one whose span no float
resolves to 1 ns (a column in ms or ns read as seconds, an arrival at 1e300 s) is refused
(``workload.rebase_trace``): such times would turn every rate into a meaningless 1e-300. A
file saved with a byte-order mark (as spreadsheet programs do) reads like one without. Every
bad row is refused with its line number.
"""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

from gpt_batchprof.errors import BatchprofError
from gpt_batchprof.simulate.workload import Request, rebase_trace

TRACE_COLUMNS = ("arrival_s", "prompt_len", "gen_len")
MOONCAKE_BLOCK_TOKENS = 512  # tokens behind one of Mooncake's hash_ids


@dataclass(frozen=True, slots=True)
class Format:
    name: str
    columns: tuple[str, str, str]  # arrival, prompt, output
    time: str  # how the arrival column reads: seconds, milliseconds or datetime
    shift: bool  # first arrival at 0


FORMATS = (
    Format("native", TRACE_COLUMNS, "seconds", False),
    Format("azure", ("TIMESTAMP", "ContextTokens", "GeneratedTokens"), "datetime", True),
    Format("burstgpt", ("Timestamp", "Request tokens", "Response tokens"), "seconds", True),
    Format("mooncake", ("timestamp", "input_length", "output_length"), "milliseconds", True),
)
_CSV_FORMATS = FORMATS[:3]
_JSONL_FORMATS = (FORMATS[0], FORMATS[3])


@dataclass(frozen=True, slots=True)
class Trace:
    requests: tuple[Request, ...]  # sorted by arrival
    format: str
    skipped: int = 0  # rows left out (BurstGPT's failed requests)
    time_scale: float = 1.0  # arrivals as read x this
    shift_s: float = 0.0  # subtracted from absolute (epoch) arrivals of a native trace

    @property
    def span_s(self) -> float:
        return self.requests[-1].arrival_s - self.requests[0].arrival_s

    @property
    def rate_rps(self) -> float:
        """The trace's own mean arrival rate (NaN when all arrive at once)."""
        return (len(self.requests) - 1) / self.span_s if self.span_s > 0 else math.nan


_DATETIME = re.compile(r"\s*(\d{4})-(\d{2})-(\d{2})[ T](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?"
                       r"\s*(Z|[+-]\d{2}:?\d{2})?\s*")


def _datetime_s(raw: str) -> float:
    """Seconds since the epoch of an Azure TIMESTAMP (any number of fractional digits)."""
    m = _DATETIME.fullmatch(raw)
    if not m:
        return float(raw)  # a plain number of seconds also reads
    y, mo, d, h, mi, s = (int(g) for g in m.groups()[:6])
    tz = timezone.utc
    if m.group(8) and m.group(8) != "Z":
        off = m.group(8).replace(":", "")
        sign = -1 if off[0] == "-" else 1
        tz = timezone(sign * timedelta(hours=int(off[1:3]), minutes=int(off[3:5])))
    base = datetime(y, mo, d, h, mi, s, tzinfo=tz).timestamp()
    frac = m.group(7)
    return base + (int(frac) / 10 ** len(frac) if frac else 0.0)


def _arrival(raw: object, fmt: Format, where: str) -> float:
    col = fmt.columns[0]
    try:
        if isinstance(raw, bool) or raw is None:
            raise ValueError
        value = _datetime_s(str(raw)) if fmt.time == "datetime" else float(raw)
    except (TypeError, ValueError, OverflowError):
        kind = "a date and time" if fmt.time == "datetime" else "a number"
        raise BatchprofError(f"{where}: {col} '{raw}' is not {kind}") from None
    if fmt.time == "milliseconds":
        value /= 1e3
    if not math.isfinite(value) or (value < 0 and fmt.time != "datetime"):
        raise BatchprofError(f"{where}: {col} must be a finite time >= 0, got {raw}")
    return value


def _count(raw: object, column: str, where: str, least: int = 1) -> int:
    try:
        if isinstance(raw, bool) or raw is None or (isinstance(raw, float) and not raw.is_integer()):
            raise ValueError
        value = int(raw) if isinstance(raw, (int, float)) else int(str(raw).strip())
    except (TypeError, ValueError, OverflowError):
        raise BatchprofError(f"{where}: {column} '{raw}' is not an integer") from None
    if value < least:
        raise BatchprofError(f"{where}: {column} must be >= {least}, got {raw}")
    return value


def _prefix(raw: object, where: str) -> tuple[int, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(k, int) and not isinstance(k, bool) for k in raw):
        raise BatchprofError(f"{where}: hash_ids must be a list of integers")
    return tuple(raw)


def _pick(names: list[str], formats: tuple[Format, ...], where: str, column: str) -> Format:
    """The format whose columns ``names`` has; else name what is missing from the closest one."""
    for f in formats:
        if all(c in names for c in f.columns):
            return f
    near = max(formats, key=lambda f: sum(c in names for c in f.columns))  # ties: the native format
    missing = ", ".join(repr(c) for c in near.columns if c not in names)
    known = "; ".join(f"{f.name}: {', '.join(f.columns)}" for f in formats)
    raise BatchprofError(f"{where}: missing {column}{missing} (a trace has the columns of one format: {known})")


def _csv_rows(f, path: Path):
    """(where, row, format) of each CSV row; the format from the header."""
    reader = csv.DictReader(f)
    try:
        names = [n.strip() for n in (reader.fieldnames or ())]
        reader.fieldnames = names
        fmt = _pick(names, _CSV_FORMATS, str(path), "column ")
        for row in reader:
            yield f"{path} line {reader.line_num}", row, fmt
    except csv.Error as e:
        raise BatchprofError(f"{path} line {reader.line_num}: not CSV ({e})") from None


def _jsonl_rows(f, path: Path):
    """(where, object, format) of each JSON Lines object; the format from the first one."""
    fmt = None
    for i, line in enumerate(f, 1):
        if not line.strip():
            continue
        where = f"{path} line {i}"
        try:
            obj = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            raise BatchprofError(f"{where}: not JSON") from None
        if not isinstance(obj, dict):
            raise BatchprofError(f"{where}: expected an object with {', '.join(TRACE_COLUMNS)}")
        if fmt is None:
            fmt = _pick(list(obj), _JSONL_FORMATS, where, "")
        missing = [c for c in fmt.columns if c not in obj]
        if missing:
            raise BatchprofError(f"{where}: missing {', '.join(repr(c) for c in missing)}")
        yield where, obj, fmt


def load_trace(path: Path, time_scale: float = 1.0) -> Trace:
    """Requests of a trace file in any of :data:`FORMATS`, arrivals x ``time_scale``, sorted
    by arrival (stable)."""
    path = Path(path)
    if not (math.isfinite(time_scale) and time_scale > 0):
        raise BatchprofError(f"--time-scale must be a finite number > 0, got {time_scale:g}")
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".jsonl"):
        raise BatchprofError(f"{path}: a trace must be .csv or .jsonl (got '{suffix or 'no extension'}')")
    reqs: list[Request] = []
    skipped, fmt = 0, None
    try:
        # read as a stream (a published trace can hold millions of rows); a byte-order mark is dropped
        with path.open(encoding="utf-8-sig", newline="") as f:
            for where, row, fmt in (_csv_rows(f, path) if suffix == ".csv" else _jsonl_rows(f, path)):
                a_col, p_col, g_col = fmt.columns
                t = _arrival(row.get(a_col), fmt, where)
                p = _count(row.get(p_col), p_col, where)
                if fmt.name == "burstgpt":
                    g = _count(row.get(g_col), g_col, where, least=0)
                    if g == 0:  # a failed request, as BurstGPT publishes them
                        skipped += 1
                        continue
                else:
                    g = _count(row.get(g_col), g_col, where)
                prefix = _prefix(row.get("hash_ids"), where) if fmt.name == "mooncake" else ()
                reqs.append(Request(t, p, g, prefix, MOONCAKE_BLOCK_TOKENS if prefix else 0))
    except (OSError, UnicodeDecodeError) as e:
        raise BatchprofError(f"{path}: cannot read ({getattr(e, 'strerror', None) or e})") from None
    if not reqs and not skipped:
        raise BatchprofError(f"{path}: no requests in the trace")
    if not reqs:
        raise BatchprofError(f"{path}: no requests in the trace ({skipped} failed request(s) skipped)")
    reqs.sort(key=lambda q: q.arrival_s)
    t0 = reqs[0].arrival_s if fmt.shift else 0.0
    if t0:
        reqs = [replace(q, arrival_s=q.arrival_s - t0) for q in reqs]
    # the clock check: absolute (epoch) seconds are rebased to the first arrival, a span no float
    # resolves to 1 ns (a column in ms or ns read as s, an arrival at 1e300) is refused
    out, shift = rebase_trace(tuple(reqs), str(path))
    if time_scale != 1.0:
        out = tuple(replace(q, arrival_s=q.arrival_s * time_scale) for q in out)
    return Trace(out, fmt.name, skipped, time_scale, shift)


def read_trace(path: Path, time_scale: float = 1.0) -> tuple[Request, ...]:
    """Requests of a trace, sorted by arrival (see :func:`load_trace`)."""
    return load_trace(path, time_scale).requests
