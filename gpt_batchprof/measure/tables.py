"""Measure the efficiency tables of analytic/efficiency.py on this device.

Every cell is one kernel timed through measure.timing's timers (``CpuTimer`` / ``CudaTimer``),
its kernel built by measure.kernels' ``build_kernel`` from an ``OpCost`` at the cell's shape
(so calibration and `bench` run the same kernels with the same input rotation), except the
dense matmul grid: there one weight buffer per dtype is drawn once and sliced per cell,
because drawing a fresh 1 GiB random weight for every M would take longer than timing it.

The grid is generic and log-spaced (``GridSpec``), not taken from any model. Cells whose one
call would exceed ``max_call_flops`` / ``max_call_bytes`` are left unmeasured (null; see the
fill rule in efficiency.py). Rates are stored net of the measured per-call overhead.

Busy check: two reference cells (a mid-size matmul and a copy) are timed at the start and
again at the end; when either differs by more than ``BUSY_TOLERANCE`` the machine is busy and
``measure_tables`` raises (or, with ``force``, records a warning in the tables).
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, replace
from types import SimpleNamespace
from typing import Callable

from gpt_batchprof.analytic.efficiency import MeasuredTables, Table
from gpt_batchprof.analytic.gpt import Dtypes
from gpt_batchprof.analytic.ops import OpCost, OpShape, causal_pairs, elementwise_cost
from gpt_batchprof.errors import BatchprofError
from gpt_batchprof.profiles import DTYPE_BYTES

BUSY_TOLERANCE = 0.20
CACHE_BYTES_CPU = 32e6  # what bench assumes for a CPU profile without l2_cache_mb: rotate inputs past it


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


class _Cells:
    """Times cells through one timer; remembers nothing but the overhead."""

    def __init__(self, device: str, grid: GridSpec, timer, overhead_s: float):
        self.device, self.grid, self.timer, self.overhead_s = device, grid, timer, overhead_s

    def seconds(self, fn: Callable[[int], object], label: str) -> float:
        m = self.timer.measure(fn, warmup_s=self.grid.warmup_s, rep_s=self.grid.rep_s, label=label)
        return m.median_s

    def rate(self, work: float, t: float) -> float:
        """Work per second net of the per-call overhead (see efficiency.py)."""
        net = t - self.overhead_s if t >= 2 * self.overhead_s else t / 2
        return work / net

    def sets(self, set_bytes: float) -> int:
        from gpt_batchprof.measure.bench import input_sets

        if self.device == "cuda":
            return 1  # CudaTimer flushes the L2 before every call
        return input_sets(set_bytes, CACHE_BYTES_CPU)


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


def _matmul_table(cells: _Cells, dtype: str, say) -> Table | None:
    """Dense (m x k) @ (k x n): slices of two buffers drawn once (rotated offsets = input sets)."""
    import torch

    from gpt_batchprof.measure.kernels import torch_dtype

    g = cells.grid
    ms, nks = g.matmul_m, g.matmul_nk
    tdt, esize = torch_dtype(dtype), DTYPE_BYTES[dtype]
    w_elems = min(max(nks) ** 2, int(g.max_call_bytes / esize))
    x_elems = min(max(ms) * max(nks), int(g.max_call_bytes / esize))
    try:
        wbuf = torch.randn(w_elems, device=cells.device).to(tdt)
        xbuf = torch.randn(x_elems, device=cells.device).to(tdt)
    except Exception as e:  # noqa: BLE001
        from gpt_batchprof.measure.bench import is_oom

        if is_oom(e):
            return None
        raise
    values: list[float | None] = []
    for m in ms:
        say(f"matmul {dtype} m={m}")
        for n in nks:
            for k in nks:
                flops = 2.0 * m * n * k
                per_set = (k * n + m * k) * esize
                if flops > g.max_call_flops or k * n > w_elems or m * k > x_elems:
                    values.append(None)
                    continue
                sets = max(1, min(cells.sets(per_set + m * n * esize), w_elems // (k * n), x_elems // (m * k)))
                ws = [wbuf[i * k * n:(i + 1) * k * n].view(k, n) for i in range(sets)]  # (k, n)
                xs = [xbuf[i * m * k:(i + 1) * m * k].view(m, k) for i in range(sets)]  # (m, k)
                out = torch.empty((m, n), dtype=tdt, device=cells.device)

                def run(fn=lambda i: torch.mm(xs[i % sets], ws[i % sets], out=out)) -> float:
                    return cells.rate(flops, cells.seconds(fn, f"matmul/{dtype}/{m}x{n}x{k}"))

                values.append(_safe(run))
    del wbuf, xbuf
    if all(v is None for v in values):
        return None
    return Table("matmul", dtype, (ms, nks, nks), tuple(values))


def _kernel_rate(cells: _Cells, cost: OpCost, dtype: str, work: float, norm: str = "layernorm") -> float | None:
    from gpt_batchprof.measure.kernels import build_kernel, per_launch_bytes

    def run() -> float:
        k = build_kernel(cost, SimpleNamespace(norm=norm), Dtypes.of(dtype), cells.device,
                         cells.sets(per_launch_bytes(cost)))
        return cells.rate(work, cells.seconds(k.fn, f"{cost.op}/{dtype}/{cost.shape}"))

    return _safe(run)


def _bmm_table(cells: _Cells, dtype: str, say) -> Table | None:
    g = cells.grid
    e = DTYPE_BYTES[dtype]
    values: list[float | None] = []
    for b in g.bmm_batch:
        say(f"batched matmul {dtype} batch={b}")
        for m in g.bmm_m:
            for n in g.bmm_nk:
                for k in g.bmm_nk:
                    flops = 2.0 * b * m * n * k
                    nbytes = b * (m * k + k * n + m * n) * e
                    if flops > g.max_call_flops or nbytes > g.max_call_bytes:
                        values.append(None)
                        continue
                    cost = OpCost("attn_score", "prefill", 1, 1, 0, flops, nbytes, 0.0, 1, dtype,
                                  OpShape(m=m, n=n, k=k, batch=b))
                    values.append(_kernel_rate(cells, cost, dtype, flops))
    if all(v is None for v in values):
        return None
    return Table("bmm", dtype, (g.bmm_batch, g.bmm_m, g.bmm_nk, g.bmm_nk), tuple(values))


def _sdpa_table(cells: _Cells, dtype: str, decode: bool, say) -> Table | None:
    g = cells.grid
    e = DTYPE_BYTES[dtype]
    values: list[float | None] = []
    say(f"attention (SDPA) {dtype} {'decode' if decode else 'prefill'}")
    for bh in g.sdpa_bh:
        for L in g.sdpa_len:
            for hd in g.sdpa_hd:
                q = 1 if decode else L
                flops = 4.0 * hd * bh * causal_pairs(q, L)
                nbytes = bh * (2 * q * hd + 2 * L * hd) * e
                if flops > g.max_call_flops or nbytes > g.max_call_bytes:
                    values.append(None)
                    continue
                cost = OpCost("attn_fused", "decode" if decode else "prefill", bh, q, L - q, flops, nbytes, 0.0,
                              1, dtype, OpShape(m=q, n=L, k=hd, batch=bh, heads=1, kv_heads=1, causal=q > 1))
                values.append(_kernel_rate(cells, cost, dtype, flops))
    if all(v is None for v in values):
        return None
    kind = "sdpa_decode" if decode else "sdpa_prefill"
    return Table(kind, dtype, (g.sdpa_bh, g.sdpa_len, g.sdpa_hd), tuple(values))


def _bytes_table(cells: _Cells, kind: str, dtype: str, say) -> Table | None:
    """copy / layernorm / rmsnorm / softmax: achieved bytes/s against the bytes one call moves."""
    import torch

    g = cells.grid
    e = DTYPE_BYTES[dtype]
    say(f"{kind} {dtype}")
    axis: list[float] = []
    values: list[float | None] = []
    for target in g.nbytes:
        if target > g.max_call_bytes:
            continue
        elems = max(1, int(target / (2 * e)))  # elements read (and as many written)
        width = min(1024, elems)
        rows = max(1, elems // width)
        if kind == "copy":
            nbytes = 2.0 * rows * width * e
            sets = cells.sets(nbytes)
            srcs = [torch.randn(rows * width, device=cells.device) for _ in range(sets)]
            dst = torch.empty_like(srcs[0])
            rate = _safe(lambda: cells.rate(nbytes, cells.seconds(lambda i: dst.copy_(srcs[i % sets]),
                                                                  f"copy/{nbytes}")))
        else:
            op = "attn_softmax" if kind == "softmax" else "norm"
            weight = (2 if kind == "layernorm" else 1) * width * e if op == "norm" else 0.0
            cost = elementwise_cost(op, rows=rows, width=width, a_bytes=e, launches=1, compute_dtype=dtype,
                                    ctx=("prefill", 1, 1, 0), weight_bytes=weight, variant=kind if op == "norm" else "")
            nbytes = cost.bytes
            rate = _kernel_rate(cells, cost, dtype, nbytes, norm=kind)
        if axis and nbytes <= axis[-1]:
            continue
        axis.append(nbytes)
        values.append(rate)
    if not values or all(v is None for v in values):
        return None
    return Table(kind, "" if kind == "copy" else dtype, (tuple(axis),), tuple(values))


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


def measure_tables(device: str, grid: GridSpec, *, force: bool = False, timer=None,
                   progress: Callable[[str], None] | None = None) -> MeasuredTables:
    """Time every cell of ``grid`` on ``device``; torch threads are the caller's."""
    from gpt_batchprof.measure.calibrate import measure_launch_overhead
    from gpt_batchprof.measure.device import device_name, require_torch
    from gpt_batchprof.measure.kernels import unsupported_reason
    from gpt_batchprof.measure.timing import CpuTimer, CudaTimer

    torch = require_torch()
    say = progress or (lambda s: None)
    if timer is None:
        timer = CudaTimer(min_reps=3, max_reps=200) if device == "cuda" else CpuTimer(min_reps=3, max_reps=200)
    dtypes = [d for d in grid.dtypes if unsupported_reason("qkv_proj", Dtypes.of(d), device, 32, 32, 32) is None]
    if not dtypes:
        raise BatchprofError(f"calibrate: none of the dtypes {', '.join(grid.dtypes)} can be timed on {device}")
    tables: dict[str, Table] = {}
    with torch.inference_mode():
        torch.manual_seed(0)
        say("launch overhead")
        overhead = {"eager": measure_launch_overhead(device, 0.05)}
        if device == "cuda":
            x = torch.ones(1, device="cuda")
            overhead["graphs"] = CudaTimer(cuda_graphs=True, graph_calls=50).measure(
                lambda i: x.add_(1.0), warmup_s=0.01, rep_s=0.05).median_s
        cells = _Cells(device, grid, timer, overhead["eager"])
        before = _reference(cells, dtypes[0])
        found = [_bytes_table(cells, "copy", "fp32", say)]
        for dt in dtypes:
            found.append(_matmul_table(cells, dt, say))
            found.append(_bmm_table(cells, dt, say))
            found.append(_sdpa_table(cells, dt, False, say))
            found.append(_sdpa_table(cells, dt, True, say))
            for kind in ("layernorm", "rmsnorm", "softmax"):
                found.append(_bytes_table(cells, kind, dt, say))
        after = _reference(cells, dtypes[0])
    for t in found:
        if t is not None:
            tables[t.name] = t
    warnings = []
    busy = busy_warning(before, after)
    if busy and not force:
        raise BatchprofError(busy)
    if busy:
        warnings.append(busy + " (written anyway: --force)")
    return MeasuredTables(
        device_name=device_name(device), torch_version=str(torch.__version__), threads=torch.get_num_threads(),
        date=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), overhead_s=overhead,
        tables=tables, warnings=tuple(warnings),
    )


def table_counts(m: MeasuredTables) -> dict[str, tuple[int, int]]:
    """Per table: (measured cells, cells)."""
    return {name: (sum(v is not None for v in t.values), len(t.values)) for name, t in m.tables.items()}


