"""Measure the efficiency tables of profiles/measured.py on this device.

Every cell is one kernel timed through measure.timing's timers (``CpuTimer`` / ``CudaTimer``),
its kernel built by measure.kernels' ``build_kernel`` from an ``OpCost`` at the cell's shape
(so calibration and `bench` run the same kernels with the same input rotation), except the
dense matmul grid: there one weight buffer per dtype is drawn once and sliced per cell,
because drawing a fresh 1 GiB random weight for every M would take longer than timing it.

The grid is generic and log-spaced (``GridSpec``), not taken from any model. Cells whose one
call would exceed ``max_call_flops`` / ``max_call_bytes`` are left unmeasured (null; see the
fill rule in profiles/measured.py). Rates are stored net of the measured per-call overhead.

Robustness (a shared machine must still yield usable tables, and a noisy one must not write
silent nonsense):
- every cell is the best of its repeats (``Measurement.best_s``: the samples split into
  ``REPEATS`` runs in the order they were timed; the lowest run median), and is timed again
  at once when its repeats disagree by more than ``REPEAT_TOLERANCE``;
- the cells themselves are checked against their neighbours (``implausible_cells``): along
  any axis a smaller call may not take ``SLOWER_TOLERANCE`` x longer than the next bigger one,
  nor achieve a rate ``DROP_TOLERANCE`` x below the next smaller one's. Such cells, and those
  whose repeats still disagree, are re-measured in up to three rounds, after a short pause each;
- a cell still out of line after ``MAX_ATTEMPTS`` timings is dropped (null: the fill rule of
  profiles/measured.py applies); a table losing more than ``DROP_LIMIT`` of its cells (and more than
  one) is refused: ``measure_tables`` raises one line (or, with ``force``, records a warning);
- the CPU timer records the share of CPU time the process got while timing a cell
  (``Measurement.cpu_share``); a cell under ``CPU_SHARE_MIN`` was descheduled and is
  re-measured, and a table whose cells stay under it (median) is refused as busy: on an
  oversubscribed machine every cell is slowed alike, which neither repeats nor neighbours see;
- each table's quality (cells, median and p90 spread of the repeats, cells re-measured,
  cells dropped, median CPU share) goes into the YAML (``measured.quality``);
- two reference cells (a mid-size matmul and a copy) are timed at the start and at the end;
  when they still differ by more than ``BUSY_TOLERANCE`` after up to two more timings, the
  machine got busy and the calibration is refused the same way.

Weights and inputs rotate past the last-level cache (detected: ``device.last_level_cache_bytes``):
the dense matmul grid cycles through enough weight slices to fill twice the cache, so a
decode-shaped (small m) call streams its weights from memory, as each layer of a real model
does. ``host_per_layer`` measures the host time between kernels (Python, dispatch, glue) per
layer of the reference engine; predictions charge it in eager mode (efficiency.host_time_s).
"""

from __future__ import annotations

import datetime as _dt
import math
import time
from dataclasses import dataclass, replace
from types import SimpleNamespace
from typing import Callable

from gpt_batchprof.analytic.gpt import Dtypes
from gpt_batchprof.analytic.ops import OpCost, OpShape, causal_pairs, elementwise_cost
from gpt_batchprof.errors import BatchprofError
from gpt_batchprof.measure.device import DEFAULT_LLC_BYTES
from gpt_batchprof.profiles import DTYPE_BYTES
from gpt_batchprof.profiles.measured import HOST_STYLES, MeasuredTables, Table
from gpt_batchprof.stats import median, quantile

BUSY_TOLERANCE = 0.20  # reference kernels at the start and the end may differ by this much
REPEAT_TOLERANCE = 0.25  # a cell's repeats (slowest run median / fastest - 1) may differ by this much
SLOWER_TOLERANCE = 2.0  # a cell may take at most this x the time of its neighbour doing more work,
DIP_TOLERANCE = 2.5  # achieve a rate at most this x below both neighbours along an axis,
DROP_TOLERANCE = 16.0  # and one at most this x below its smaller neighbour's (see implausible_cells)
MAX_ATTEMPTS = 4  # timings of one cell at most: the first and up to three re-measurements
REMEASURE_PAUSE_S = (0.2, 0.5, 1.0)  # before each round of re-measurements: a burst of load may pass
DROP_LIMIT = 0.10  # a table losing more of its cells than this (and more than one) is refused
CPU_SHARE_MIN = 0.85  # a cell whose process got less CPU time than this x wall x threads was descheduled


def _pow(lo: int, hi: int, step: int) -> tuple[int, ...]:
    out, v = [], lo
    while v <= hi:
        out.append(v)
        v *= step
    return tuple(out)


@dataclass(frozen=True, slots=True)
class GridSpec:
    """Which shapes to time. Axes are log-spaced; see ``CPU_FULL`` and friends."""

    dtypes: tuple[str, ...]
    matmul_m: tuple[int, ...]
    matmul_nk: tuple[int, ...]  # used for both N and K
    bmm_batch: tuple[int, ...]
    bmm_m: tuple[int, ...]
    bmm_nk: tuple[int, ...]
    sdpa_bh: tuple[int, ...]
    sdpa_len: tuple[int, ...]
    sdpa_hd: tuple[int, ...]
    nbytes: tuple[int, ...]  # bytes moved per call, for copy / norms / softmax
    max_call_flops: float
    max_call_bytes: float
    warmup_s: float
    rep_s: float


CPU_FULL = GridSpec(
    dtypes=("fp32", "bf16"),
    matmul_m=_pow(1, 4096, 4), matmul_nk=_pow(256, 16384, 2),
    bmm_batch=(1, 16, 256), bmm_m=_pow(1, 1024, 4), bmm_nk=(64, 128, 512, 2048, 8192),
    sdpa_bh=(1, 16, 256), sdpa_len=_pow(64, 4096, 4), sdpa_hd=(64, 128),
    nbytes=_pow(4096, 256 * 2**20, 4),
    max_call_flops=4e9, max_call_bytes=1.2 * 2**30, warmup_s=0.004, rep_s=0.02,
)
CPU_QUICK = GridSpec(
    dtypes=("fp32",),
    matmul_m=_pow(1, 1024, 4), matmul_nk=_pow(256, 16384, 4),
    bmm_batch=(1, 64), bmm_m=(1, 16, 256), bmm_nk=(64, 512, 4096),
    sdpa_bh=(1, 64), sdpa_len=(64, 1024), sdpa_hd=(64, 128),
    nbytes=_pow(4096, 64 * 2**20, 16),
    max_call_flops=1e9, max_call_bytes=2**28, warmup_s=0.002, rep_s=0.008,
)
CUDA_FULL = GridSpec(
    dtypes=("fp16", "bf16", "fp32"),
    matmul_m=_pow(1, 16384, 4), matmul_nk=_pow(256, 32768, 2),
    bmm_batch=(1, 16, 256, 4096), bmm_m=_pow(1, 4096, 4), bmm_nk=(64, 128, 512, 2048, 8192, 32768),
    sdpa_bh=(1, 32, 1024), sdpa_len=_pow(64, 16384, 4), sdpa_hd=(64, 128),
    nbytes=_pow(4096, 2**30, 4),
    max_call_flops=2e13, max_call_bytes=8 * 2**30, warmup_s=0.005, rep_s=0.02,
)
CUDA_QUICK = replace(CUDA_FULL, dtypes=("fp16",), matmul_m=_pow(1, 16384, 16), matmul_nk=_pow(256, 32768, 8),
                     bmm_batch=(1, 256), bmm_m=(1, 64, 4096), bmm_nk=(64, 512, 8192), sdpa_len=(64, 1024, 16384),
                     nbytes=_pow(4096, 2**30, 16), warmup_s=0.002, rep_s=0.008)


def default_grid(device: str, quick: bool) -> GridSpec:
    if device == "cuda":
        return CUDA_QUICK if quick else CUDA_FULL
    return CPU_QUICK if quick else CPU_FULL


# --------------------------------------------------------------------------- timing one cell


@dataclass(eq=False)
class Cell:
    """One grid cell to time: its kernel is built by ``build`` (again for every re-measurement,
    so that no table keeps every cell's tensors alive)."""

    label: str
    work: float  # FLOPs or bytes of one call: what the table's rate counts
    build: Callable[[], Callable[[int], object]]
    seconds: float | None = None  # best repeat median over every attempt (None: torch cannot run it)
    spread: float = 0.0  # how far the repeats disagreed, in the steadiest attempt
    share: float | None = None  # the best CPU share of an attempt (Measurement.cpu_share; None: unknown)
    attempts: int = 0

    @property
    def unsteady(self) -> bool:
        return self.spread > REPEAT_TOLERANCE or (self.share is not None and self.share < CPU_SHARE_MIN)


@dataclass(frozen=True, slots=True)
class TableQuality:
    """How trustworthy one table's cells are (recorded in the YAML, printed by calibrate)."""

    cells: int  # measured cells written
    spread: float  # median over cells of (slowest repeat / fastest - 1)
    spread_p90: float
    remeasured: int  # cells timed more than once (repeats disagreed, out of line, or descheduled)
    dropped: int  # cells still out of line after MAX_ATTEMPTS timings: written as null
    cpu_share: float | None = None  # median over cells of the CPU share they got (None: not known)

    def to_dict(self) -> dict:
        d = {"cells": self.cells, "spread_pct": round(100 * self.spread, 1),
             "spread_p90_pct": round(100 * self.spread_p90, 1), "remeasured": self.remeasured,
             "dropped": self.dropped}
        if self.cpu_share is not None:
            d["cpu_share_pct"] = round(100 * self.cpu_share, 1)
        return d


def _coords(axes: tuple[tuple[float, ...], ...], names: tuple[str, ...], flat: int) -> str:
    idx = []
    for ax in reversed(axes):
        idx.append(flat % len(ax))
        flat //= len(ax)
    return ", ".join(f"{n}={ax[i]:g}" for n, ax, i in zip(names, axes, reversed(idx)))


def implausible_cells(axes: tuple[tuple[float, ...], ...], seconds: list[float | None],
                      work: list[float]) -> dict[int, tuple[int, str]]:
    """Cells out of line with their neighbours along some axis: flat index -> (a neighbour, rule).

    Every axis of every table grows the work of one call (m, n, k, batch, length, head_dim,
    bytes). Along an axis, with ``a`` a cell and ``b`` the next measured one (more work):
    - "slower": ``a`` may not take more than ``SLOWER_TOLERANCE`` x the time of ``b``;
    - "dip": a cell between two measured neighbours may not achieve a rate (work per second)
      ``DIP_TOLERANCE`` x below both of them (a V, where real cliffs are steps);
    - "collapse": ``b``'s rate may not fall below ``a``'s by more than ``DROP_TOLERANCE``
      (a step larger than any cache or blocking change: the largest seen on a quiet CPU is 10x,
      a 64 MiB norm paying page faults for its temporaries).
    The cell on the slow side is named: load only ever makes a cell slow.
    """
    out: dict[int, tuple[int, str]] = {}
    stride = 1
    for ax in reversed(axes):
        n = len(ax)

        def nxt(i: int) -> int | None:
            j = i
            while (j // stride) % n < n - 1:
                j += stride
                if seconds[j] is not None:
                    return j
            return None

        for i, t in enumerate(seconds):
            if t is None:
                continue
            j = nxt(i)
            if j is None:
                continue
            tj = seconds[j]
            rate_i, rate_j = work[i] / t, work[j] / tj
            if t > SLOWER_TOLERANCE * tj:
                out.setdefault(i, (j, "slower"))
            elif rate_j < rate_i / DROP_TOLERANCE:
                out.setdefault(j, (i, "collapse"))
            k = nxt(j)
            if k is not None and rate_j * DIP_TOLERANCE < min(rate_i, work[k] / seconds[k]):
                out.setdefault(j, (k, "dip"))
        stride *= n
    return out


class _Cells:
    """Times cells through one timer: best of repeats, re-measuring what disagrees; keeps each
    table's quality and the tables that stayed implausible."""

    def __init__(self, device: str, grid: GridSpec, timer, overhead_s: float, cache_bytes: float = 0.0,
                 pause: bool = True):
        self.device, self.grid, self.timer, self.overhead_s = device, grid, timer, overhead_s
        self.cache_bytes = cache_bytes or DEFAULT_LLC_BYTES
        self.pause = pause  # sleep between re-measurement rounds so that a burst of load can pass
        self.quality: dict[str, TableQuality] = {}
        self.refused: list[str] = []  # one line per table that stayed implausible

    def measure(self, fn: Callable[[int], object], label: str, warmup_s: float | None = None,
                rep_s: float | None = None):
        return self.timer.measure(fn, warmup_s=self.grid.warmup_s if warmup_s is None else warmup_s,
                                  rep_s=self.grid.rep_s if rep_s is None else rep_s, label=label)

    def seconds(self, fn: Callable[[int], object], label: str, **budgets) -> float:
        """Best repeat median of ``fn``, timed again (up to MAX_ATTEMPTS) while its repeats disagree
        or it did not get its cores."""
        best = None
        for _ in range(MAX_ATTEMPTS):
            m = self.measure(fn, label, **budgets)
            best = m.best_s if best is None else min(best, m.best_s)
            if not _disturbed(m):
                break
        return best

    def rate(self, work: float, t: float) -> float:
        """Work per second net of the per-call overhead (see profiles/measured.py)."""
        net = t - self.overhead_s if t >= 2 * self.overhead_s else t / 2
        return work / net

    def sets(self, set_bytes: float) -> int:
        from gpt_batchprof.measure.bench import input_sets

        if self.device == "cuda":
            return 1  # CudaTimer flushes the L2 before every call
        return input_sets(set_bytes, self.cache_bytes)

    def _time(self, cell: Cell, attempts: int) -> None:
        """Up to ``attempts`` more timings of ``cell``, stopping once its repeats agree."""

        def run() -> bool:
            fn = cell.build()
            for _ in range(attempts):
                m = self.measure(fn, cell.label)
                cell.spread = m.spread if cell.attempts == 0 else min(cell.spread, m.spread)
                cell.seconds = m.best_s if cell.seconds is None else min(cell.seconds, m.best_s)
                if m.cpu_share is not None:
                    cell.share = m.cpu_share if cell.share is None else max(cell.share, m.cpu_share)
                cell.attempts += 1
                if not _disturbed(m):
                    break
            return True

        if _safe(run) is None and cell.seconds is None:
            cell.attempts = MAX_ATTEMPTS  # torch cannot run it: not measured, never retried

    def table(self, kind: str, dtype: str, axes: tuple[tuple[float, ...], ...],
              cells: list[Cell | None]) -> Table | None:
        """Time every cell (None: over budget), re-measure the unsteady and the implausible,
        drop (null) what stays implausible, and record the table's quality."""
        from gpt_batchprof.profiles.measured import KIND_AXES, table_name

        name = table_name(kind, dtype)
        for c in cells:
            if c is not None:
                self._time(c, 2)  # a second timing at once when the repeats disagree
        work = [c.work if c is not None else 0.0 for c in cells]

        def secs() -> list[float | None]:
            return [c.seconds if c is not None else None for c in cells]

        for pause_s in REMEASURE_PAUSE_S:
            suspects = set(implausible_cells(axes, secs(), work))
            suspects |= {i for i, c in enumerate(cells) if c is not None and c.seconds is not None and c.unsteady}
            todo = [i for i in sorted(suspects) if cells[i].attempts < MAX_ATTEMPTS]
            if not todo:
                break
            if self.pause:
                time.sleep(pause_s)
            for i in todo:
                self._time(cells[i], 1)
        bad = implausible_cells(axes, secs(), work)
        values: list[float | None] = []
        for i, c in enumerate(cells):
            values.append(None if c is None or c.seconds is None or i in bad else self.rate(c.work, c.seconds))
        measured = [c for i, c in enumerate(cells) if c is not None and c.seconds is not None and i not in bad]
        if not measured:
            return None
        spreads = [c.spread for c in measured]
        shares = [c.share for c in measured if c.share is not None]
        share = median(shares) if shares else None
        self.quality[name] = TableQuality(
            cells=len(measured), spread=median(spreads), spread_p90=quantile(spreads, 0.9),
            remeasured=sum(c.attempts > 1 for c in cells if c is not None and c.seconds is not None),
            dropped=len(bad), cpu_share=share)
        if share is not None and share < CPU_SHARE_MIN:
            self.refused.append(
                f"machine busy: the cells of {name} got {100 * share:.0f}% of the CPU time of their "
                f"{_threads()} thread(s) (median; under {100 * CPU_SHARE_MIN:.0f}% after re-measuring): other "
                "processes took the cores (fewer --threads may help)")
        elif len(bad) > max(1, DROP_LIMIT * (len(measured) + len(bad))):
            i, (j, rule) = next(iter(sorted(bad.items())))
            names = KIND_AXES[kind]
            ri, rj = cells[i].work / cells[i].seconds, cells[j].work / cells[j].seconds
            unit = "FLOP/s" if kind in ("matmul", "bmm", "sdpa_prefill", "sdpa_decode") else "B/s"
            how = (f"{cells[i].seconds * 1e6:.0f} us, slower than {cells[j].seconds * 1e6:.0f} us for more work at "
                   f"{_coords(axes, names, j)}" if rule == "slower" else
                   f"{ri / 1e9:.3g} G{unit} against {rj / 1e9:.3g} G{unit} at {_coords(axes, names, j)} ({rule})")
            self.refused.append(
                f"machine busy or unsteady: {len(bad)} of {len(measured) + len(bad)} cells of {name} stayed out of "
                f"line with their neighbours after {MAX_ATTEMPTS} timings (e.g. {_coords(axes, names, i)}: {how})")
        return Table(kind, dtype, axes, tuple(values))


def _disturbed(m) -> bool:
    """Repeats that disagree, or a process that lost its cores while timing."""
    return m.spread > REPEAT_TOLERANCE or (m.cpu_share is not None and m.cpu_share < CPU_SHARE_MIN)


def _threads() -> int:
    from gpt_batchprof.measure.timing import _torch_threads

    return _torch_threads()


def _safe(fn: Callable[[], float | None]) -> float | None:
    """A cell torch cannot run (dtype, memory) stays unmeasured."""
    from gpt_batchprof.measure.bench import free_memory, is_oom
    from gpt_batchprof.measure.kernels import Unsupported

    try:
        return fn()
    except Unsupported:
        return None
    except Exception as e:  # noqa: BLE001 - torch raises RuntimeError for OOM and missing kernels
        if is_oom(e):
            free_memory("cpu")
            return None
        if isinstance(e, (RuntimeError, NotImplementedError, TypeError)):
            return None
        raise


def weight_sets(weight_bytes: float, cache_bytes: float, available: int) -> int:
    """Weight slices to rotate so that together they are at least twice the last-level cache:
    each call then reads its weights from memory, as a model's layers do (never more than
    ``available`` slices, at least 1)."""
    if weight_bytes <= 0 or cache_bytes <= 0:
        return 1
    return max(1, min(available, math.ceil(2 * cache_bytes / weight_bytes)))


def matmul_kernel(xbuf, wbuf, m: int, n: int, k: int, wsets: int, xsets: int, out):
    """One (m x k) @ (k x n) per call, each call on the next of ``wsets`` weight slices of
    ``wbuf`` (and ``xsets`` activation slices of ``xbuf``), whatever the timer's index.
    Weights are stored (n, k), as ``nn.Linear`` keeps them (x @ W^T): on CPUs the two layouts
    differ by up to 40% for matrix-vector shapes, in either direction."""
    import itertools

    import torch

    ws = [wbuf[i * k * n:(i + 1) * k * n].view(n, k).t() for i in range(wsets)]  # (k, n), column-major
    xs = [xbuf[i * m * k:(i + 1) * m * k].view(m, k) for i in range(xsets)]  # (m, k)
    turn = itertools.count()

    def fn(i: int) -> object:
        c = next(turn)
        return torch.mm(xs[c % xsets], ws[c % wsets], out=out)

    return fn


def _matmul_table(cells: _Cells, dtype: str, say) -> Table | None:
    """Dense (m x k) @ (k x n): slices of two buffers drawn once. The weight slices rotate past
    the last-level cache (``weight_sets``): decode-shaped calls stream their weights from memory."""
    import torch

    from gpt_batchprof.measure.kernels import torch_dtype

    g = cells.grid
    ms, nks = g.matmul_m, g.matmul_nk
    tdt, esize = torch_dtype(dtype), DTYPE_BYTES[dtype]
    w_elems = min(max(max(nks) ** 2, int(2.5 * cells.cache_bytes / esize)), int(g.max_call_bytes / esize))
    x_elems = min(max(ms) * max(nks), int(g.max_call_bytes / esize))
    try:
        wbuf = torch.randn(w_elems, device=cells.device).to(tdt)
        xbuf = torch.randn(x_elems, device=cells.device).to(tdt)
    except Exception as e:  # noqa: BLE001
        from gpt_batchprof.measure.bench import is_oom

        if is_oom(e):
            return None
        raise
    jobs: list[Cell | None] = []
    for m in ms:
        for n in nks:
            for k in nks:
                flops = 2.0 * m * n * k
                if flops > g.max_call_flops or k * n > w_elems or m * k > x_elems:
                    jobs.append(None)
                    continue
                wsets = 1 if cells.device == "cuda" else weight_sets(k * n * esize, cells.cache_bytes, w_elems // (k * n))
                xsets = max(1, min(cells.sets(m * k * esize + m * n * esize), x_elems // (m * k)))

                def build(m=m, n=n, k=k, wsets=wsets, xsets=xsets):
                    out = torch.empty((m, n), dtype=tdt, device=cells.device)
                    return matmul_kernel(xbuf, wbuf, m, n, k, wsets, xsets, out)

                jobs.append(Cell(f"matmul/{dtype}/{m}x{n}x{k}", flops, build))
    say(f"matmul {dtype}")
    table = cells.table("matmul", dtype, (ms, nks, nks), jobs)
    del wbuf, xbuf
    return table


def _kernel_cell(cells: _Cells, cost: OpCost, dtype: str, work: float, norm: str = "layernorm") -> Cell:
    from gpt_batchprof.measure.kernels import build_kernel, per_launch_bytes

    def build():
        return build_kernel(cost, SimpleNamespace(norm=norm), Dtypes.of(dtype), cells.device,
                            cells.sets(per_launch_bytes(cost))).fn

    return Cell(f"{cost.op}/{dtype}/{cost.shape}", work, build)


def _bmm_table(cells: _Cells, dtype: str, say) -> Table | None:
    g = cells.grid
    e = DTYPE_BYTES[dtype]
    jobs: list[Cell | None] = []
    for b in g.bmm_batch:
        for m in g.bmm_m:
            for n in g.bmm_nk:
                for k in g.bmm_nk:
                    flops = 2.0 * b * m * n * k
                    nbytes = b * (m * k + k * n + m * n) * e
                    if flops > g.max_call_flops or nbytes > g.max_call_bytes:
                        jobs.append(None)
                        continue
                    cost = OpCost("attn_score", "prefill", 1, 1, 0, flops, nbytes, 0.0, 1, dtype,
                                  OpShape(m=m, n=n, k=k, batch=b))
                    jobs.append(_kernel_cell(cells, cost, dtype, flops))
    say(f"batched matmul {dtype}")
    return cells.table("bmm", dtype, (g.bmm_batch, g.bmm_m, g.bmm_nk, g.bmm_nk), jobs)


def _sdpa_table(cells: _Cells, dtype: str, decode: bool, say) -> Table | None:
    g = cells.grid
    e = DTYPE_BYTES[dtype]
    jobs: list[Cell | None] = []
    say(f"attention (SDPA) {dtype} {'decode' if decode else 'prefill'}")
    for bh in g.sdpa_bh:
        for L in g.sdpa_len:
            for hd in g.sdpa_hd:
                q = 1 if decode else L
                flops = 4.0 * hd * bh * causal_pairs(q, L)
                nbytes = bh * (2 * q * hd + 2 * L * hd) * e
                if flops > g.max_call_flops or nbytes > g.max_call_bytes:
                    jobs.append(None)
                    continue
                cost = OpCost("attn_fused", "decode" if decode else "prefill", bh, q, L - q, flops, nbytes, 0.0,
                              1, dtype, OpShape(m=q, n=L, k=hd, batch=bh, heads=1, kv_heads=1, causal=q > 1))
                jobs.append(_kernel_cell(cells, cost, dtype, flops))
    kind = "sdpa_decode" if decode else "sdpa_prefill"
    return cells.table(kind, dtype, (g.sdpa_bh, g.sdpa_len, g.sdpa_hd), jobs)


def _bytes_table(cells: _Cells, kind: str, dtype: str, say) -> Table | None:
    """copy / layernorm / rmsnorm / softmax: achieved bytes/s against the bytes one call moves."""
    import torch

    g = cells.grid
    e = DTYPE_BYTES[dtype]
    say(f"{kind} {dtype}")
    axis: list[float] = []
    jobs: list[Cell | None] = []
    for target in g.nbytes:
        if target > g.max_call_bytes:
            continue
        elems = max(1, int(target / (2 * e)))  # elements read (and as many written)
        width = min(1024, elems)
        rows = max(1, elems // width)
        if kind == "copy":
            nbytes = 2.0 * rows * width * e

            def build(rows=rows, width=width, nbytes=nbytes):
                sets = cells.sets(nbytes)
                srcs = [torch.randn(rows * width, device=cells.device) for _ in range(sets)]
                dst = torch.empty_like(srcs[0])
                return lambda i: dst.copy_(srcs[i % sets])

            cell = Cell(f"copy/{nbytes:g}", nbytes, build)
        else:
            op = "attn_softmax" if kind == "softmax" else "norm"
            weight = (2 if kind == "layernorm" else 1) * width * e if op == "norm" else 0.0
            cost = elementwise_cost(op, rows=rows, width=width, a_bytes=e, launches=1, compute_dtype=dtype,
                                    ctx=("prefill", 1, 1, 0), weight_bytes=weight, variant=kind if op == "norm" else "")
            nbytes = cost.bytes
            cell = _kernel_cell(cells, cost, dtype, nbytes, norm=kind)
        if axis and nbytes <= axis[-1]:
            continue
        axis.append(nbytes)
        jobs.append(cell)
    if not jobs:
        return None
    return cells.table(kind, "" if kind == "copy" else dtype, (tuple(axis),), jobs)


# --------------------------------------------------------------------------- host time between kernels

HOST_LAYERS = (1, 5)  # the per-layer cost is the slope between these depths


def _host_spec(style: str, n_layer: int):
    from gpt_batchprof.profiles import model_from_mapping

    base = {"name": f"host-{style}", "n_layer": n_layer, "d_model": 64, "n_head": 4, "d_ff": 128,
            "vocab_size": 128, "max_seq_len": 128}
    if style == "gpt2":
        base.update(n_kv_head=4, ffn="gelu", norm="layernorm", positional="learned", bias=True)
    else:
        base.update(n_kv_head=2, ffn="swiglu", norm="rmsnorm", positional="rope", bias=False)
    if style == "moe":
        base.update(n_expert=8, n_expert_active=2)
    return model_from_mapping(base, "calibrate")


def host_per_layer(cells: _Cells, style: str) -> float:
    """Seconds of host work (Python, dispatch, the glue kernels analyze does not list) per layer
    of one decode step of the reference engine at batch 1, beyond the listed kernels' overhead.

    A model of ``style`` with tiny widths (d_model 64: every kernel is launch-bound) is built
    at HOST_LAYERS depths; the slope of the decode step time over the depth is one layer, and
    its listed kernels (``enumerate_ops``) each already carry the per-call overhead.
    """
    import torch

    from gpt_batchprof.analytic.gpt import enumerate_ops
    from gpt_batchprof.measure.model import build_model

    times, launches = [], []
    for n_layer in HOST_LAYERS:
        spec = _host_spec(style, n_layer)
        ops = enumerate_ops(spec, "decode", 1, new_tokens=1, kv_len=16, dtypes=Dtypes.of("fp32"), attention="unfused")
        launches.append(sum(o.launches for o in ops))

        def build(spec=spec):
            model = build_model(spec, torch.float32, cells.device, max_len=spec.max_seq_len)
            cache = model.new_cache(1, spec.max_seq_len)
            model(torch.zeros(1, 16, dtype=torch.long, device=cells.device), cache, 0)
            tok = torch.zeros(1, 1, dtype=torch.long, device=cells.device)
            return lambda i: model(tok, cache, 16 + i % 64)

        times.append(cells.seconds(build(), f"host/{style}/{n_layer}", warmup_s=0.02, rep_s=0.1))
    depth = HOST_LAYERS[1] - HOST_LAYERS[0]
    per_layer = (times[1] - times[0]) / depth
    kernels = (launches[1] - launches[0]) / depth
    return max(0.0, per_layer - kernels * cells.overhead_s)


# --------------------------------------------------------------------------- the whole calibration


def _reference(cells: _Cells, dtype: str) -> tuple[float, float]:
    """(matmul seconds, copy seconds) of two fixed mid-size cells: the busy check compares them."""
    import torch

    from gpt_batchprof.measure.kernels import torch_dtype

    a = torch.randn(64, 1024, device=cells.device).to(torch_dtype(dtype))
    b = torch.randn(1024, 1024, device=cells.device).to(torch_dtype(dtype))
    src = torch.randn(4 * 2**20, device=cells.device)
    dst = torch.empty_like(src)
    return (cells.seconds(lambda i: torch.mm(a, b), "reference/matmul"),
            cells.seconds(lambda i: dst.copy_(src), "reference/copy"))


def busy_warning(before: tuple[float, float], after: tuple[float, float]) -> str | None:
    """A message when the same reference shape took more than BUSY_TOLERANCE longer or shorter."""
    worst = max(abs(a / b - 1.0) for a, b in zip(after, before))
    if worst <= BUSY_TOLERANCE:
        return None
    return (f"machine busy: the same reference kernels took {before[0] * 1e6:.0f}/{before[1] * 1e6:.0f} us "
            f"before and {after[0] * 1e6:.0f}/{after[1] * 1e6:.0f} us after calibrating (matmul/copy; "
            f"{100 * worst:.0f}% apart > {100 * BUSY_TOLERANCE:.0f}%); calibrate on a quiet machine, or --force")


def _settle_reference(cells: _Cells, dtype: str, before: tuple[float, float],
                      after: tuple[float, float]) -> tuple[tuple[float, float], tuple[float, float]]:
    """Time the reference kernels again (up to twice) while start and end disagree; each new
    timing improves the slower side: a start disturbed by a burst of load is not a busy machine
    (its tables' cells were checked one by one), an end that stays slow is."""
    for pause_s in REMEASURE_PAUSE_S[:2]:
        if busy_warning(before, after) is None:
            break
        if cells.pause:
            time.sleep(pause_s)
        again = _reference(cells, dtype)
        start, end = list(before), list(after)
        for i, x in enumerate(again):
            if start[i] > end[i]:
                start[i] = min(start[i], x)  # the start was the slower: disturbed
            else:
                end[i] = min(end[i], x)
        before, after = (start[0], start[1]), (end[0], end[1])
    return before, after


def measure_tables(device: str, grid: GridSpec, *, force: bool = False, timer=None,
                   progress: Callable[[str], None] | None = None, cache_bytes: float | None = None,
                   host: bool = True) -> MeasuredTables:
    """Time every cell of ``grid`` on ``device``; torch threads are the caller's.

    ``timer``: what times each cell (default: the device's real timer; tests pass a FakeTimer).
    ``cache_bytes``: the last-level cache to rotate weights and inputs past (default: detected).
    ``host``: also measure the host time per layer (CPU only).
    Raises BatchprofError (one line) when a table stays implausible or the reference kernels
    say the machine got busy, unless ``force`` (then the tables carry a warning).
    """
    from gpt_batchprof.measure.device import device_name, last_level_cache_bytes, require_torch
    from gpt_batchprof.measure.kernels import unsupported_reason
    from gpt_batchprof.measure.timing import CpuTimer, CudaTimer, measure_launch_overhead

    torch = require_torch()
    say = progress or (lambda s: None)
    real = timer is None
    if timer is None:
        timer = CudaTimer(min_reps=3, max_reps=200) if device == "cuda" else CpuTimer(min_reps=3, max_reps=200)
    if cache_bytes is None:
        cache_bytes = last_level_cache_bytes()[0] if device == "cpu" else 0.0
    dtypes = [d for d in grid.dtypes if unsupported_reason("qkv_proj", Dtypes.of(d), device, 32, 32, 32) is None]
    if not dtypes:
        raise BatchprofError(f"calibrate: none of the dtypes {', '.join(grid.dtypes)} can be timed on {device}")
    tables: dict[str, Table] = {}
    warnings: list[str] = []
    hosts: dict[str, float] = {}

    def refuse(msg: str) -> None:
        if not force:
            raise BatchprofError(msg + "; calibrate on a quieter machine, or --force")
        warnings.append(msg + " (written anyway: --force)")

    with torch.inference_mode():
        torch.manual_seed(0)
        say("launch overhead")
        overhead = {"eager": measure_launch_overhead(device, 0.05)}
        if device == "cuda":
            x = torch.ones(1, device="cuda")
            overhead["graphs"] = CudaTimer(cuda_graphs=True, graph_calls=50).measure(
                lambda i: x.add_(1.0), warmup_s=0.01, rep_s=0.05).median_s
        cells = _Cells(device, grid, timer, overhead["eager"], cache_bytes, pause=real)
        before = _reference(cells, dtypes[0])
        plan: list[Callable[[], Table | None]] = [lambda: _bytes_table(cells, "copy", "fp32", say)]
        for dt in dtypes:
            plan += [lambda dt=dt: _matmul_table(cells, dt, say), lambda dt=dt: _bmm_table(cells, dt, say),
                     lambda dt=dt: _sdpa_table(cells, dt, False, say), lambda dt=dt: _sdpa_table(cells, dt, True, say)]
            plan += [lambda dt=dt, kind=kind: _bytes_table(cells, kind, dt, say)
                     for kind in ("layernorm", "rmsnorm", "softmax")]
        for step in plan:
            t = step()
            if t is not None:
                tables[t.name] = t
            while cells.refused:
                refuse(cells.refused.pop(0))
        if host and device == "cpu":
            for style in HOST_STYLES:
                say(f"host time per layer ({style})")
                v = _safe(lambda: host_per_layer(cells, style))
                if v is not None:
                    hosts[style] = v
        after = _reference(cells, dtypes[0])
        before, after = _settle_reference(cells, dtypes[0], before, after)
    busy = busy_warning(before, after)
    if busy:
        refuse(busy.removesuffix("; calibrate on a quiet machine, or --force"))
    return MeasuredTables(
        device_name=device_name(device), torch_version=str(torch.__version__), threads=torch.get_num_threads(),
        date=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), overhead_s=overhead,
        tables=tables, warnings=tuple(warnings),
        quality={name: q.to_dict() for name, q in cells.quality.items() if name in tables},
        host_s_per_layer=hosts,
    )


def table_counts(m: MeasuredTables) -> dict[str, tuple[int, int]]:
    """Per table: (measured cells, cells)."""
    return {name: (sum(v is not None for v in t.values), len(t.values)) for name, t in m.tables.items()}
