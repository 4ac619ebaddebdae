"""Timers collect raw per-call times; `Measurement` derives the statistics. Nothing prints.

Modelled on torch.utils.benchmark (Timer collects, Measurement summarises) and
triton.testing.do_bench (warm-up and repetitions are time budgets; the L2 cache is flushed
before every timed call; CUDA events time the GPU). ``torch`` is imported inside functions.

A kernel is handed to a timer as ``fn(i)``: call it on input set ``i % sets``. Rotating
several input copies keeps small shapes from being flattered by warm caches.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

from gpt_batchprof.stats import median, quantiles

NOISY_IQR_FRACTION = 0.10  # IQR / median above this is flagged as noisy
REPEATS = 3  # a measurement's samples, in the order they were timed, split into this many runs


@dataclass(frozen=True, slots=True)
class Measurement:
    """Raw seconds per call of one kernel, and what follows from them."""

    times_s: tuple[float, ...]
    warmup_calls: int = 0
    method: str = ""  # "cpu-clock" | "cuda-events" | "cuda-graph" | "fake"
    # CPU time this process got over the timed calls / (wall time x torch threads): about 1 when
    # its threads had their cores to themselves, 0.5 when each shared a core with another
    # runnable process. None where it says nothing (CUDA events, fakes that do not set it).
    cpu_share: float | None = None

    def __post_init__(self) -> None:
        if not self.times_s:
            raise ValueError("a Measurement needs at least one sample")

    @property
    def median_s(self) -> float:
        return median(self.times_s)

    @property
    def iqr_s(self) -> float:
        q1, q3 = quantiles(self.times_s, (0.25, 0.75))
        return q3 - q1

    @property
    def min_s(self) -> float:
        return min(self.times_s)

    def repeat_medians(self, repeats: int = REPEATS) -> tuple[float, ...]:
        """Medians of ``repeats`` consecutive runs of the samples, in the order they were timed
        (fewer when there are fewer samples): a burst of load shows as one slow run."""
        n = len(self.times_s)
        r = max(1, min(repeats, n))
        return tuple(median(self.times_s[i * n // r:(i + 1) * n // r]) for i in range(r))

    @property
    def best_s(self) -> float:
        """The best (lowest) of the repeats' medians: what the kernel takes when nothing else runs."""
        return min(self.repeat_medians())

    @property
    def spread(self) -> float:
        """How far the repeats disagree: slowest repeat median / fastest - 1 (0 for one repeat)."""
        meds = self.repeat_medians()
        return max(meds) / min(meds) - 1.0 if min(meds) > 0 else math.inf

    @property
    def noisy(self) -> bool:
        return self.iqr_s > NOISY_IQR_FRACTION * self.median_s

    def warnings(self, rep_s: float | None = None) -> tuple[str, ...]:
        """Problems worth a second look, as data; each message suggests the fix."""
        out: list[str] = []
        if self.noisy:
            frac = self.iqr_s / self.median_s if self.median_s else math.inf
            hint = f"; consider --rep-ms {max(200, int(4 * (rep_s or 0.05) * 1e3))}" if rep_s is not None else ""
            out.append(f"noisy: IQR/median {100 * frac:.0f}% > {100 * NOISY_IQR_FRACTION:.0f}%{hint}")
        if len(self.times_s) < 5:
            out.append(f"few samples: {len(self.times_s)} timed calls; consider a larger --rep-ms")
        return tuple(out)


class Timer(Protocol):
    """Times ``fn(i)`` within time budgets (seconds) and returns the raw samples."""

    method: str

    def measure(self, fn: Callable[[int], object], *, warmup_s: float, rep_s: float,
                label: str = "") -> Measurement: ...


def call_counts(estimate_s: float, warmup_s: float, rep_s: float,
                min_reps: int = 5, max_reps: int = 2000) -> tuple[int, int]:
    """Warm-up and timed call counts that fit the budgets, given one call's estimated time."""
    est = max(estimate_s, 1e-9)
    warm = max(1, min(int(warmup_s / est), max_reps))
    reps = max(min_reps, min(int(rep_s / est), max_reps))
    return warm, reps


def _torch_threads() -> int:
    try:
        import torch

        return max(1, torch.get_num_threads())
    except ImportError:
        return 1


@dataclass
class CpuTimer:
    """A monotonic clock around every call (``time.perf_counter_ns``); threads fixed by the caller."""

    min_reps: int = 5
    max_reps: int = 2000
    method: str = "cpu-clock"

    def measure(self, fn, *, warmup_s: float, rep_s: float, label: str = "") -> Measurement:
        clock = time.perf_counter_ns
        fn(0)  # first call: allocations, lazy initialisation
        t0 = clock()
        fn(1)
        est = (clock() - t0) * 1e-9
        warm, reps = call_counts(est, warmup_s, rep_s, self.min_reps, self.max_reps)
        for i in range(warm):
            fn(i + 2)
        times = []
        cpu0, wall0 = time.process_time(), clock()
        for i in range(reps):
            t0 = clock()
            fn(i)
            times.append((clock() - t0) * 1e-9)
        cpu, wall = time.process_time() - cpu0, (clock() - wall0) * 1e-9
        share = cpu / (wall * _torch_threads()) if wall > 0 else None
        return Measurement(tuple(times), warm, self.method, cpu_share=share)


@dataclass
class CudaTimer:
    """CUDA events around each call, with the L2 cache flushed before it (as triton's do_bench).

    ``cuda_graphs``: capture ``graph_calls`` calls (rotating input sets) into one CUDA graph
    and time its replays, so that tiny decode kernels are not measured as CPU launch
    overhead; each sample is one replay divided by the calls in it (no L2 flush inside the
    graph: the rotated input sets are what keeps the caches cold).
    """

    flush_bytes: int = 256 * 2**20
    cuda_graphs: bool = False
    graph_calls: int = 10
    min_reps: int = 5
    max_reps: int = 1000
    method: str = "cuda-events"
    _flush: object = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.cuda_graphs:
            self.method = "cuda-graph"

    def _flush_buffer(self):
        import torch

        if self._flush is None:
            self._flush = torch.empty(int(self.flush_bytes) // 4, dtype=torch.int32, device="cuda")
        return self._flush

    def measure(self, fn, *, warmup_s: float, rep_s: float, label: str = "") -> Measurement:
        import torch

        if self.cuda_graphs:
            return self._measure_graph(fn, warmup_s=warmup_s, rep_s=rep_s)
        cache = self._flush_buffer()
        fn(0)
        torch.cuda.synchronize()
        # estimate: 5 calls, each after a flush (the flush is inside the estimate; fine for budgets)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for i in range(5):
            cache.zero_()
            fn(i)
        end.record()
        torch.cuda.synchronize()
        est = start.elapsed_time(end) * 1e-3 / 5
        warm, reps = call_counts(est, warmup_s, rep_s, self.min_reps, self.max_reps)
        for i in range(warm):
            fn(i)
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
        for i in range(reps):
            cache.zero_()  # evict the previous call's data from L2
            starts[i].record()
            fn(i)
            ends[i].record()
        torch.cuda.synchronize()
        times = tuple(s.elapsed_time(e) * 1e-3 for s, e in zip(starts, ends))
        return Measurement(times, warm, self.method)

    def _measure_graph(self, fn, *, warmup_s: float, rep_s: float) -> Measurement:
        import torch

        n = self.graph_calls
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):  # warm up on a side stream before capture (CUDA-graph rule)
            for i in range(3):
                fn(i)
        torch.cuda.current_stream().wait_stream(stream)
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for i in range(n):
                fn(i)
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        torch.cuda.synchronize()
        est = start.elapsed_time(end) * 1e-3
        warm, reps = call_counts(est, warmup_s, rep_s, self.min_reps, self.max_reps)
        for _ in range(warm):
            graph.replay()
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
        for i in range(reps):
            starts[i].record()
            graph.replay()
            ends[i].record()
        torch.cuda.synchronize()
        times = tuple(s.elapsed_time(e) * 1e-3 / n for s, e in zip(starts, ends))
        del graph
        return Measurement(times, warm, self.method)


@dataclass
class FakeTimer:
    """Seeded stand-in for tests: never calls ``fn``; samples ``base_s(label)`` with noise.

    ``base_s``: seconds per call, or a function of the label (``"<phase>/<batch>/<op>"``).
    ``disturb(label, attempt)``: injected load, a factor on the samples of the ``attempt``-th
    measurement (0, 1, ...) of ``label``: one number for all of them, or one per sample (a
    burst in the middle of a measurement makes its repeats disagree). ``cpu_share(label,
    attempt)``: the injected ``Measurement.cpu_share`` (a process that lost its core).
    """

    base_s: float | Callable[[str], float] = 1e-3
    noise: float = 0.02
    samples: int = 21
    seed: int = 0
    calls: list[str] = field(default_factory=list)
    method: str = "fake"
    disturb: Callable[[str, int], float | Sequence[float]] | None = None
    cpu_share: Callable[[str, int], float | None] | None = None  # injected Measurement.cpu_share

    def measure(self, fn, *, warmup_s: float, rep_s: float, label: str = "") -> Measurement:
        attempt = self.calls.count(label)
        self.calls.append(label)
        rng = random.Random(f"{self.seed}/{label}")
        base = self.base_s(label) if callable(self.base_s) else self.base_s
        times = [base * (1.0 + self.noise * rng.uniform(-1.0, 1.0)) for _ in range(self.samples)]
        if self.disturb is not None:
            f = self.disturb(label, attempt)
            factors = [float(f)] * len(times) if isinstance(f, (int, float)) else [float(x) for x in f]
            times = [t * x for t, x in zip(times, factors)]
        share = self.cpu_share(label, attempt) if self.cpu_share is not None else None
        return Measurement(tuple(times), 0, self.method, cpu_share=share)


def measure_launch_overhead(device: str, budget_s: float) -> float:
    """Seconds per tiny kernel. On CUDA: back-to-back launches (throughput), as a sequence sees it.
    (Here, below both `calibrate` and the efficiency tables, which each measure it.)"""
    import torch

    x = torch.ones(1, device=device)
    if device == "cuda":
        n = 200
        torch.cuda.synchronize()
        best = float("inf")
        for _ in range(5):
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            for _ in range(n):
                x.add_(1.0)
            e.record()
            e.synchronize()
            best = min(best, s.elapsed_time(e) * 1e-3 / n)
        return best
    reps = 2000
    times = []
    for _ in range(reps):
        t0 = time.perf_counter_ns()
        x.add_(1.0)
        times.append((time.perf_counter_ns() - t0) * 1e-9)
    return median(times)


def default_timer(device: str, *, l2_cache_bytes: float = 0.0, cuda_graphs: bool = False) -> Timer:
    if device == "cuda":
        flush = int(max(256 * 2**20, 2 * l2_cache_bytes))
        return CudaTimer(flush_bytes=flush, cuda_graphs=cuda_graphs)
    return CpuTimer()
