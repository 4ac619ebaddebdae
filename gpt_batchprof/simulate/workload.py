"""What arrives at the server: requests with a prompt and an output length, and when.

Open loop: Poisson arrivals at ``rate`` requests/s (exponential gaps drawn from a seeded
``random.Random``; gaps are drawn at rate 1 and divided by the rate, so every rate sees the
same pattern, only faster or slower, which keeps a bisection over rates monotone). Closed
loop: ``concurrency`` clients, each sending its next request the moment the previous one
finishes. A trace (CSV or JSON Lines with ``arrival_s``, ``prompt_len``, ``gen_len``) gives
both arrivals and lengths, or only lengths when a rate or a concurrency is given.
"""

from __future__ import annotations

import csv
import heapq
import json
import math
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from gpt_batchprof.errors import BatchprofError

TRACE_COLUMNS = ("arrival_s", "prompt_len", "gen_len")
DEFAULT_REQUESTS = 1000
_UNITS_S = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6}


@dataclass(frozen=True, slots=True)
class Request:
    arrival_s: float
    prompt_len: int
    gen_len: int


@dataclass(frozen=True, slots=True)
class Lengths:
    """A fixed length (lo == hi) or integers drawn uniformly from lo..hi."""

    lo: int
    hi: int

    def draw(self, rng: random.Random) -> int:
        return self.lo if self.lo == self.hi else rng.randint(self.lo, self.hi)

    def __str__(self) -> str:
        return str(self.lo) if self.lo == self.hi else f"{self.lo}..{self.hi}"


def parse_lengths(text: str, option: str) -> Lengths:
    """'512' or '128..2048' (uniform, both ends included)."""
    parts = str(text).strip().split("..")
    try:
        lo, hi = (int(parts[0]), int(parts[-1])) if len(parts) <= 2 else (0, -1)
    except ValueError:
        raise BatchprofError(f"{option}: cannot read '{text}' (expected a length like 512 or a range 128..2048)") from None
    if lo < 1 or hi < lo:
        raise BatchprofError(f"{option}: '{text}' must be >= 1 (and a range low..high with low <= high)")
    return Lengths(lo, hi)


def parse_duration(text: str, option: str) -> float:
    """'500ms', '0.5s', '50 ms', '200us' to seconds; a number without a unit is refused."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([a-zµ]*)\s*", str(text))
    if not m:
        raise BatchprofError(f"{option}: cannot read '{text}' (expected a time with its unit, like 500ms or 0.5s)")
    value, unit = float(m.group(1)), m.group(2)
    if not unit:
        raise BatchprofError(f"{option}: '{text}' has no unit (write e.g. {text}ms or {text}s)")
    if unit not in _UNITS_S:
        raise BatchprofError(f"{option}: unknown unit '{unit}' in '{text}' (use s, ms or us)")
    if value <= 0:
        raise BatchprofError(f"{option}: '{text}' must be > 0")
    return value * _UNITS_S[unit]


def _trace_value(raw: object, column: str, where: str) -> float:
    kind = "a number" if column == "arrival_s" else "an integer"
    try:
        if isinstance(raw, bool):
            raise ValueError
        value = float(raw) if column == "arrival_s" else int(str(raw).strip())
    except (TypeError, ValueError):
        raise BatchprofError(f"{where}: {column} '{raw}' is not {kind}") from None
    if column == "arrival_s" and not (math.isfinite(value) and value >= 0):
        raise BatchprofError(f"{where}: arrival_s must be a finite time >= 0, got {raw}")
    if column != "arrival_s" and value < 1:
        raise BatchprofError(f"{where}: {column} must be >= 1, got {raw}")
    return value


def read_trace(path: Path) -> tuple[Request, ...]:
    """Requests of a CSV or JSON Lines trace, sorted by arrival (stable)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".jsonl"):
        raise BatchprofError(f"{path}: a trace must be .csv or .jsonl (got '{suffix or 'no extension'}')")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise BatchprofError(f"{path}: cannot read ({getattr(e, 'strerror', None) or e})") from None
    rows: list[tuple[str, dict]] = []
    if suffix == ".csv":
        reader = csv.DictReader(text.splitlines())
        missing = [c for c in TRACE_COLUMNS if c not in (reader.fieldnames or ())]
        if missing:
            raise BatchprofError(f"{path}: missing column {', '.join(repr(c) for c in missing)} "
                                 f"(a trace needs {', '.join(TRACE_COLUMNS)})")
        rows = [(f"{path} line {i}", r) for i, r in enumerate(reader, 2)]
    else:
        for i, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                raise BatchprofError(f"{path} line {i}: not JSON") from None
            if not isinstance(obj, dict):
                raise BatchprofError(f"{path} line {i}: expected an object with {', '.join(TRACE_COLUMNS)}")
            missing = [c for c in TRACE_COLUMNS if c not in obj]
            if missing:
                raise BatchprofError(f"{path} line {i}: missing {', '.join(repr(c) for c in missing)}")
            rows.append((f"{path} line {i}", obj))
    if not rows:
        raise BatchprofError(f"{path}: no requests in the trace")
    reqs = [Request(*(_trace_value(r.get(c), c, where) for c in TRACE_COLUMNS)) for where, r in rows]
    return tuple(sorted(reqs, key=lambda q: q.arrival_s))


TIME_RESOLUTION_S = 1e-9  # arrivals must be told apart to 1 ns: steps of small models take microseconds


def rebase_trace(reqs: tuple[Request, ...], where: str) -> tuple[tuple[Request, ...], float]:
    """The trace with its clock checked: ``(requests, shift_s)``.

    Arrival times are floats; at absolute (epoch) timestamps, ~1.7e9 s, a float resolves only
    0.24 us, and a column of epoch milliseconds or nanoseconds read as seconds resolves 0.24 ms
    or minutes, so latencies come out as multiples of that (0 ns). Arrivals whose largest value
    cannot be resolved to 1 ns are shifted so the first one is at 0 (``shift_s`` says by how
    much); a trace whose span still cannot be resolved (an arrival_s column in ms or ns?) is
    refused."""
    if not reqs:
        return reqs, 0.0
    first, last = reqs[0].arrival_s, reqs[-1].arrival_s
    if math.ulp(last) <= TIME_RESOLUTION_S:
        return reqs, 0.0
    span = last - first
    if math.ulp(span) > TIME_RESOLUTION_S:
        raise BatchprofError(f"{where}: arrival_s spans {span:.4g} s ({span / 86400:.3g} days), too long to resolve "
                             f"steps to 1 ns (a float of that size resolves {math.ulp(span):.2g} s); arrival_s is "
                             "in seconds: is the column in ms or ns?")
    return tuple(Request(r.arrival_s - first, r.prompt_len, r.gen_len) for r in reqs), first


@dataclass(frozen=True, slots=True)
class Workload:
    """Who sends what. Exactly one of rate / concurrency, or neither with a trace (its arrivals)."""

    prompt: Lengths = Lengths(512, 512)
    gen: Lengths = Lengths(128, 128)
    rate_rps: float | None = None
    concurrency: int | None = None
    requests: int | None = None
    duration_s: float | None = None
    trace: tuple[Request, ...] | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.rate_rps is not None and not (math.isfinite(self.rate_rps) and self.rate_rps > 0):
            raise BatchprofError(f"--rate must be a finite number > 0, got {self.rate_rps}")
        if self.concurrency is not None and self.concurrency < 1:
            raise BatchprofError(f"--concurrency must be >= 1, got {self.concurrency}")
        if self.rate_rps is not None and self.concurrency is not None:
            raise BatchprofError("give --rate or --concurrency, not both")
        if self.rate_rps is None and self.concurrency is None and self.trace is None:
            raise BatchprofError("give --rate R, --concurrency C or --trace FILE")
        if self.requests is not None and self.requests < 1:
            raise BatchprofError(f"--requests must be >= 1, got {self.requests}")
        if self.duration_s is not None and not (math.isfinite(self.duration_s) and self.duration_s > 0):
            raise BatchprofError(f"--duration must be > 0 seconds, got {self.duration_s}")

    @property
    def limit(self) -> int | None:
        """Requests to send (None: as many as --duration lets in)."""
        if self.requests is None and self.duration_s is None:
            return len(self.trace) if self.trace is not None and self.rate_rps is None and self.concurrency is None \
                else DEFAULT_REQUESTS
        return self.requests

    @property
    def longest(self) -> int:
        """Most tokens one request ever holds: prompt + output."""
        if self.trace is not None:
            return max(r.prompt_len + r.gen_len for r in self.trace)
        return self.prompt.hi + self.gen.hi

    @property
    def longest_prompt(self) -> int:
        return max(r.prompt_len for r in self.trace) if self.trace is not None else self.prompt.hi

    def with_rate(self, rate_rps: float) -> "Workload":
        from dataclasses import replace

        return replace(self, rate_rps=rate_rps, concurrency=None)

    def lengths(self) -> Iterator[tuple[int, int]]:
        """(prompt_len, gen_len) per request: the trace's in order (cycled), or drawn."""
        if self.trace is not None:
            while True:
                for r in self.trace:
                    yield r.prompt_len, r.gen_len
        rng = random.Random(f"{self.seed}:lengths")
        while True:
            yield self.prompt.draw(rng), self.gen.draw(rng)

    def arrivals(self) -> "Arrivals":
        return Arrivals(self)


class Arrivals:
    """The arrival process the simulator pulls from: next time, next request, and, for a
    closed loop, a new request when one finishes."""

    def __init__(self, w: Workload):
        self._heap: list[tuple[float, int, int, int]] = []  # (time, index, prompt, gen)
        self._lengths = w.lengths()
        self._limit = w.limit
        self._duration = w.duration_s
        self._closed = w.concurrency is not None
        self.issued = 0
        if self._closed:
            for _ in range(w.concurrency):
                self._issue(0.0)
        elif w.rate_rps is None:  # the trace's own arrivals (up to --duration when given)
            for r in w.trace[: self._limit]:
                if self._duration is not None and r.arrival_s > self._duration:
                    break
                self._push(r.arrival_s, r.prompt_len, r.gen_len)
        else:
            rng, t = random.Random(f"{w.seed}:arrivals"), 0.0
            while self._limit is None or self.issued < self._limit:
                t += rng.expovariate(1.0) / w.rate_rps
                if self._duration is not None and t > self._duration:
                    break
                self._issue(t)

    def _push(self, t: float, p: int, g: int) -> None:
        heapq.heappush(self._heap, (t, self.issued, p, g))
        self.issued += 1

    def _issue(self, t: float) -> None:
        if self._limit is not None and self.issued >= self._limit:
            return
        if self._duration is not None and t > self._duration:
            return
        p, g = next(self._lengths)
        self._push(t, p, g)

    def next_time(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def pop(self) -> tuple[float, int, int, int]:
        return heapq.heappop(self._heap)

    def finished(self, t: float) -> None:
        if self._closed:
            self._issue(t)
