"""Measured efficiency tables, and the operator times they predict. Pure Python.

`calibrate` times kernels over log-spaced grids of shapes and stores what they achieved:

- ``matmul.<dtype>``: dense (m x k) @ (k x n), FLOP/s over (m, n, k);
- ``bmm.<dtype>``: batched matmul (attention QK^T / x V, MoE experts), FLOP/s over (batch, m, n, k);
- ``sdpa_prefill.<dtype>`` / ``sdpa_decode.<dtype>``: fused attention (torch SDPA), FLOP/s over
  (batch x heads, seq_len, head_dim) causal with q = seq_len, and (batch x heads, kv_len, head_dim) with q = 1;
- ``attn_prefill.<dtype>`` / ``attn_decode.<dtype>``: fused attention with the head layout as an
  axis (imported GPU kernel databases, e.g. FlashAttention-3 in vLLM), FLOP/s over
  (batch x K/V heads, seq_len or kv_len, query heads per K/V head, head_dim); preferred over
  ``sdpa_*`` when a profile has both. FLOPs are counted as ``enumerate_ops`` counts them
  (4 x head_dim per visible query-key pair);
- ``moe.<dtype>``: a fused MoE kernel (all routed experts' GEMMs in one grouped launch, e.g. vLLM's
  fused_moe), FLOP/s of the whole layer's expert GEMMs over (rows per touched expert, elements of one
  expert weight matrix); each expert-GEMM row of a step is charged its own FLOPs at that rate, so
  the rows of one layer add up to the kernel's time. Preferred over ``bmm`` for expert GEMMs;
- ``layernorm.<dtype>``, ``rmsnorm.<dtype>``, ``softmax.<dtype>``: bytes/s over bytes moved per call;
- ``copy``: bytes/s of a device copy over bytes moved (read + write) per call;
- ``overhead_s``: seconds per kernel call on top of its work ("eager"; "graphs" on CUDA).

Rates are stored net of the per-call overhead: a call measured at t seconds doing W units of
work is stored as W / (t - overhead) (as W / (t / 2) when t < 2 x overhead), so that the
prediction at a grid point, W / rate + overhead, gives back the measured t.

Prediction of one launch: max(FLOPs / table rate at its shape, bytes / kernel-table rate at
its size, bytes / copy rate at its size) + overhead; times ``launches``. No other factor.

Interpolation: multilinear in the logarithms of the coordinates, of the logarithm of the
rate (piecewise power laws). Why: achieved throughput follows power laws between regimes
(memory-bound matrix-vector products: FLOP/s proportional to m; compute-bound: flat), which
this reproduces exactly; it returns every grid entry unchanged; and it never overshoots
between neighbours (unlike splines), while nearest-neighbour would jump by the whole grid
step (x4 in m) at cell edges. Outside the grid a coordinate is clamped to the edge (the
edge cell's efficiency is used) and the result is flagged ``extrapolated``.

Host time between kernels (Python, dispatch, the glue kernels no operator lists: residual
adds, rotary, activations, cache writes) is not in any table: ``calibrate`` measures it per
layer of the reference engine (``host_us_per_layer``, by block style) and
:func:`host_time_s` charges n_layer x that figure once per forward step, in eager mode only.

Cells too large to time within the budget are stored as null; such a cell takes the rate of
the measured cell, at or below it on every axis, with the most work (the product of its
coordinates): the closest measured point of the compute-bound plateau. A prediction that
leans on a filled cell is flagged ``extrapolated`` too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import product
from typing import Callable, Mapping

from gpt_batchprof.analytic.ops import DENSE_OPS, OpCost

# kind -> axis names. FLOP_KINDS store FLOP/s, the others bytes/s.
KIND_AXES: dict[str, tuple[str, ...]] = {
    "matmul": ("m", "n", "k"),
    "bmm": ("batch", "m", "n", "k"),
    "sdpa_prefill": ("batch_heads", "seq_len", "head_dim"),
    "sdpa_decode": ("batch_heads", "kv_len", "head_dim"),
    "attn_prefill": ("batch_kv_heads", "seq_len", "gqa", "head_dim"),
    "attn_decode": ("batch_kv_heads", "kv_len", "gqa", "head_dim"),
    "moe": ("rows_per_expert", "expert_weights"),
    "layernorm": ("bytes",),
    "rmsnorm": ("bytes",),
    "softmax": ("bytes",),
    "copy": ("bytes",),
}
FLOP_KINDS = ("matmul", "bmm", "sdpa_prefill", "sdpa_decode", "attn_prefill", "attn_decode", "moe")
UNTYPED_KINDS = ("copy",)  # one table for every dtype (bytes are bytes)
LAUNCH_MODES = ("eager", "graphs")
# Operators whose kernel is a plain (or, for MoE experts, grouped) matmul: every dense operator of
# the model (ops.DENSE_OPS, shared-expert FFNs included) and seed 002's MLP. Derived, never hand-copied.
_DENSE = DENSE_OPS + ("mlp",)
# Host time per layer is measured on three reference blocks (measure.tables.host_per_layer):
# gpt2 (layernorm, learned positions, GELU), llama (rmsnorm, rotary, SwiGLU, GQA), moe (llama
# with 8 experts, 2 active). A style not in a profile falls back along these lists.
HOST_STYLES = ("gpt2", "llama", "moe")
HOST_FALLBACK = {"gpt2": ("gpt2", "llama", "moe"), "llama": ("llama", "gpt2", "moe"), "moe": ("moe", "llama", "gpt2")}


def table_name(kind: str, dtype: str = "") -> str:
    return kind if kind in UNTYPED_KINDS else f"{kind}.{dtype}"


def unit(kind: str) -> str:
    return "FLOP/s" if kind in FLOP_KINDS else "B/s"


@dataclass(frozen=True, slots=True)
class Lookup:
    rate: float  # per second, net of overhead
    extrapolated: bool  # clamped at an edge, or a filled (not measured) cell was used


@dataclass(frozen=True, slots=True)
class Table:
    """One measured grid. ``values`` are row-major over ``axes`` (last axis fastest); None = not measured."""

    kind: str
    dtype: str  # "" for untyped kinds
    axes: tuple[tuple[float, ...], ...]
    values: tuple[float | None, ...]
    _filled: tuple[tuple[float, bool], ...] = field(init=False, repr=False, compare=False, default=())

    def __post_init__(self) -> None:
        if self.kind not in KIND_AXES:
            raise ValueError(f"unknown table kind {self.kind!r}")
        if len(self.axes) != len(KIND_AXES[self.kind]):
            raise ValueError(f"{self.name}: needs axes {KIND_AXES[self.kind]}")
        for ax in self.axes:
            if not ax or any(v <= 0 for v in ax) or any(b <= a for a, b in zip(ax, ax[1:])):
                raise ValueError(f"{self.name}: axis values must be positive and increasing, got {ax}")
        if len(self.values) != math.prod(len(a) for a in self.axes):
            raise ValueError(f"{self.name}: {len(self.values)} values for a {'x'.join(str(len(a)) for a in self.axes)} grid")
        if all(v is None for v in self.values):
            raise ValueError(f"{self.name}: no measured value")
        object.__setattr__(self, "_filled", self._fill())

    @property
    def name(self) -> str:
        return table_name(self.kind, self.dtype)

    @property
    def axis_names(self) -> tuple[str, ...]:
        return KIND_AXES[self.kind]

    def _index(self, idx: tuple[int, ...]) -> int:
        flat = 0
        for i, ax in zip(idx, self.axes):
            flat = flat * len(ax) + i
        return flat

    def _fill(self) -> tuple[tuple[float, bool], ...]:
        """(rate, filled?) per cell: null cells take the dominated measured cell with the most work."""
        cells = list(product(*(range(len(a)) for a in self.axes)))
        measured = [(c, self.values[self._index(c)]) for c in cells if self.values[self._index(c)] is not None]
        out = []
        for c in cells:
            v = self.values[self._index(c)]
            if v is not None:
                out.append((float(v), False))
                continue
            below = [(m, mv) for m, mv in measured if all(mi <= ci for mi, ci in zip(m, c))]
            pool = below or measured  # nothing below: the nearest in grid steps
            key = ((lambda m: math.prod(ax[i] for ax, i in zip(self.axes, m[0]))) if below
                   else (lambda m: -sum(abs(mi - ci) for mi, ci in zip(m[0], c))))
            out.append((float(max(pool, key=key)[1]), True))
        return tuple(out)

    def lookup(self, coords: tuple[float, ...]) -> Lookup:
        """The rate at ``coords``: multilinear in log coordinates of log rate; clamped at the edges."""
        extrapolated = False
        spans: list[tuple[tuple[int, float], ...]] = []  # per axis: (index, weight) pairs
        for x, ax in zip(coords, self.axes):
            if x < ax[0] or x > ax[-1]:
                extrapolated = True
                x = min(max(x, ax[0]), ax[-1])
            if len(ax) == 1:
                spans.append(((0, 1.0),))
                continue
            i = 0
            while i < len(ax) - 2 and x > ax[i + 1]:
                i += 1
            t = (math.log(x) - math.log(ax[i])) / (math.log(ax[i + 1]) - math.log(ax[i]))
            spans.append(((i, 1.0 - t), (i + 1, t)))
        log_rate = 0.0
        for corner in product(*spans):
            w = math.prod(wt for _, wt in corner)
            if w == 0.0:
                continue
            rate, filled = self._filled[self._index(tuple(i for i, _ in corner))]
            extrapolated |= filled
            log_rate += w * math.log(rate)
        return Lookup(math.exp(log_rate), extrapolated)


@dataclass(frozen=True, slots=True)
class MeasuredTables:
    """Everything `calibrate` measured (or imported) for one device, with its provenance."""

    device_name: str
    torch_version: str
    threads: int
    date: str
    overhead_s: Mapping[str, float]  # launch mode -> seconds per kernel call
    tables: Mapping[str, Table]  # by table_name
    warnings: tuple[str, ...] = ()  # e.g. written with --force on a busy machine
    # dtype -> dtype whose tables stand for it (GPU tensor cores run fp16 and bf16 at one rate)
    dtype_aliases: Mapping[str, str] = field(default_factory=dict)
    # where imported tables come from (package, version, framework, kernels, ...); empty when measured here
    source: Mapping[str, object] = field(default_factory=dict)
    # a measured collective link (e.g. all-reduce fitted from a kernel database): name, bytes/s, seconds
    # per ring step; priced instead of the profile's datasheet interconnect, which stays the roofline
    link: tuple[str, float, float] | None = None
    # Optional (older profiles have neither):
    quality: Mapping[str, Mapping[str, float]] = field(default_factory=dict)  # table -> cells, spread_pct, ...
    host_s_per_layer: Mapping[str, float] = field(default_factory=dict)  # block style (HOST_STYLES) -> seconds

    def table(self, kind: str, dtype: str) -> Table | None:
        found = self.tables.get(table_name(kind, dtype))
        if found is None and dtype in self.dtype_aliases:
            found = self.tables.get(table_name(kind, self.dtype_aliases[dtype]))
        return found

    def overhead(self, launch: str = "eager") -> float:
        return self.overhead_s.get(launch, self.overhead_s.get("eager", 0.0))

    def host_per_layer(self, style: str) -> float:
        """Host seconds per layer for a block of ``style`` (0 when not measured); a style not
        measured takes the closest one that was: moe -> llama -> gpt2, or the reverse."""
        for s in HOST_FALLBACK.get(style, (style,)):
            if s in self.host_s_per_layer:
                return self.host_s_per_layer[s]
        return 0.0

    def summary(self) -> dict:
        """Provenance and table names (for JSON output; the grids stay in the YAML)."""
        out = {"device_name": self.device_name, "torch_version": self.torch_version, "threads": self.threads,
               "date": self.date, "overhead_s": dict(self.overhead_s), "tables": sorted(self.tables),
               "warnings": list(self.warnings)}
        if self.dtype_aliases:
            out["dtype_aliases"] = dict(self.dtype_aliases)
        if self.source:
            out["source"] = dict(self.source)
        if self.link is not None:
            out["interconnect"] = {"name": self.link[0], "bandwidth_bytes_per_s": self.link[1], "latency_s": self.link[2]}
        if self.quality:
            out["quality"] = {k: dict(v) for k, v in self.quality.items()}
        if self.host_s_per_layer:
            out["host_s_per_layer"] = dict(self.host_s_per_layer)
        return out


# How far a measured rate may exceed the profile's ceiling before the table is refused as not
# this device's. FLOP/s: a kernel never beats its device's peak, but the stored rates are net of
# the per-call overhead and the profile's peak may come from a few square shapes (bmm reaches
# 1.5x calibrate's peak on the development CPU), so 4x. Bytes/s: small copies run from cache,
# which on a CPU is several times DRAM (5.8x measured on the development CPU; L1 more), so 50x.
MAX_OVER_PEAK = 4.0
MAX_OVER_BANDWIDTH = 50.0


def best_flop_rate(measured: MeasuredTables, dtype: str) -> float:
    """The highest FLOP/s any of the tables measured for ``dtype`` (0 when none)."""
    return max((v for t in measured.tables.values() if t.kind in FLOP_KINDS and t.dtype == dtype
                for v in t.values if v is not None), default=0.0)


def implausible_rate(measured: MeasuredTables, peak_of: Callable[[str], float | None],
                     bandwidth_bytes_per_s: float) -> tuple[str, str] | None:
    """The first table rate too far above the profile's peaks for the two to describe one device
    (``peak_of(dtype)``: the profile's peak FLOP/s, None when it has none), as
    ``(table name, why)``; None when every rate is plausible. Rates above the ceiling but within the
    margins stay, and predictions that lean on them say so (``Prediction.below_roofline``)."""
    for name, t in measured.tables.items():
        values = [v for v in t.values if v is not None]
        if not values:
            continue
        top = max(values)
        if t.kind in FLOP_KINDS:
            ceiling, limit, what = peak_of(t.dtype), MAX_OVER_PEAK, f"the profile's peak {t.dtype}"
            shown = f"{top / 1e9:.4g} GFLOP/s"
            ceiling_shown = f"{(ceiling or 0) / 1e12:.4g} TFLOP/s"
        else:
            ceiling, limit, what = bandwidth_bytes_per_s, MAX_OVER_BANDWIDTH, "the profile's memory bandwidth"
            shown, ceiling_shown = f"{top / 1e9:.4g} GB/s", f"{bandwidth_bytes_per_s / 1e9:.4g} GB/s"
        if ceiling and top > limit * ceiling:
            return name, (f"{shown} is {top / ceiling:.3g}x {what} ({ceiling_shown}); no device beats its ceiling "
                          f"by more than {limit:g}x (tables from another device, or a unit slip?)")
    return None


@dataclass(frozen=True, slots=True)
class Calibrated:
    """The table-based time of one operator row (all its launches)."""

    time_s: float
    compute_s: float  # FLOPs at the interpolated achieved FLOP/s (all launches)
    memory_s: float  # bytes at the achieved bandwidth (all launches)
    overhead_s: float  # measured per-call overhead x launches
    extrapolated: bool
    tables: tuple[str, ...]  # which tables the number comes from


def kernel_tables(cost: OpCost) -> tuple[tuple[str, tuple[float, ...]], ...]:
    """The tables that can describe this operator's kernel, best first, each with the
    operator's coordinates there (empty: no table)."""
    s = cost.shape
    per = max(cost.launches, 1)
    if cost.op in _DENSE:
        if s.batch > 1:  # a batch of expert GEMMs (a fused MoE kernel runs them grouped: no matmul stand-in)
            return ("moe", (s.m, s.n * s.k)), ("bmm", (s.batch, s.m, s.n, s.k))
        return (("matmul", (s.m, s.n, s.k)),)
    if cost.op in ("attn_score", "attn_context"):
        return (("bmm", (s.batch, s.m, s.n, s.k)),)
    if cost.op == "attn_fused":
        bh = s.batch * (s.heads or 1)
        kvh = s.batch * (s.kv_heads or s.heads or 1)
        gqa = (s.heads or 1) / (s.kv_heads or s.heads or 1)
        if s.m == 1:
            return ("attn_decode", (kvh, s.n, gqa, s.k)), ("sdpa_decode", (bh, s.n, s.k))
        # a chunk of q new queries over n keys (chunked prefill, a speculative verify): read the square
        # causal prefill doing as many query-key pairs, sqrt(2 x pairs) long, not the q-long one
        pairs = s.m * (s.n - s.m) + s.m * (s.m + 1) / 2
        length = s.m if s.n <= s.m else math.sqrt(2 * pairs)
        return ("attn_prefill", (kvh, length, gqa, s.k)), ("sdpa_prefill", (bh, s.m, s.k))
    if cost.op == "attn_softmax":
        return (("softmax", (cost.bytes / per,)),)
    if cost.op == "norm":
        return (((s.variant or "layernorm"), (cost.bytes / per,)),)
    return ()


def kernel_table(cost: OpCost) -> tuple[str, tuple[float, ...]] | None:
    """The preferred table for this operator's kernel and its coordinates (None: no table)."""
    found = kernel_tables(cost)
    return found[0] if found else None


def calibrated_time(cost: OpCost, measured: MeasuredTables, launch: str = "eager") -> Calibrated | None:
    """Time of ``cost`` from the tables, or None when no table covers its kernel at its dtype."""
    for kind, coords in kernel_tables(cost):
        table = measured.table(kind, cost.compute_dtype)
        if table is not None:
            break
    else:
        return None
    copy = measured.table("copy", "")
    per = max(cost.launches, 1)
    flops1, bytes1 = cost.flops / per, cost.bytes / per
    hit = table.lookup(coords)
    extrapolated = hit.extrapolated
    if kind in ("sdpa_prefill", "attn_prefill") and cost.shape.n != cost.shape.m:  # chunked prefill: q < kv_len
        extrapolated = True
    used = [table.name]
    compute1 = flops1 / hit.rate if kind in FLOP_KINDS else 0.0
    memory1 = bytes1 / hit.rate if kind not in FLOP_KINDS else 0.0
    if copy is not None and bytes1 > 0:
        c = copy.lookup((bytes1,))
        floor = bytes1 / c.rate
        if floor > max(compute1, memory1):
            extrapolated |= c.extrapolated
        memory1 = max(memory1, floor)
        used.append(copy.name)
    overhead1 = measured.overhead(launch)
    total = per * (max(compute1, memory1) + overhead1)
    return Calibrated(total, per * compute1, per * memory1, per * overhead1, extrapolated, tuple(used))


def host_style(model) -> str:
    """Which measured block a model's host time per layer is read from (see HOST_STYLES)."""
    if model.is_moe:
        return "moe"
    return "llama" if model.positional == "rope" else "gpt2"


def host_time_s(model, hw, launch: str, roofline_only: bool = False) -> float:
    """Host time (Python, dispatch, the glue kernels no operator row lists) of one forward step
    of ``model`` (each of its layers once), charged in eager mode only, from the profile's
    measured ``host_us_per_layer``: n_layer x the figure of the model's block style. 0 for the
    roofline, under CUDA graphs (one replay, no host between kernels), and for profiles
    without the figure (datasheet profiles, older calibrations)."""
    m = hw.measured
    if roofline_only or launch != "eager" or m is None or not m.host_s_per_layer:
        return 0.0
    return model.n_layer * m.host_per_layer(host_style(model))
