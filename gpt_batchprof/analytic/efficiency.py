"""Measured efficiency tables, and the operator times they predict. Pure Python.

`calibrate` times kernels over log-spaced grids of shapes and stores what they achieved:

- ``matmul.<dtype>``: dense (m x k) @ (k x n), FLOP/s over (m, n, k);
- ``bmm.<dtype>``: batched matmul (attention QK^T / x V, MoE experts), FLOP/s over (batch, m, n, k);
- ``sdpa_prefill.<dtype>`` / ``sdpa_decode.<dtype>``: fused attention (torch SDPA), FLOP/s over
  (batch x heads, seq_len, head_dim) causal with q = seq_len, and (batch x heads, kv_len, head_dim) with q = 1;
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
from typing import Mapping

from gpt_batchprof.analytic.ops import OpCost

# kind -> axis names. FLOP_KINDS store FLOP/s, the others bytes/s.
KIND_AXES: dict[str, tuple[str, ...]] = {
    "matmul": ("m", "n", "k"),
    "bmm": ("batch", "m", "n", "k"),
    "sdpa_prefill": ("batch_heads", "seq_len", "head_dim"),
    "sdpa_decode": ("batch_heads", "kv_len", "head_dim"),
    "layernorm": ("bytes",),
    "rmsnorm": ("bytes",),
    "softmax": ("bytes",),
    "copy": ("bytes",),
}
FLOP_KINDS = ("matmul", "bmm", "sdpa_prefill", "sdpa_decode")
UNTYPED_KINDS = ("copy",)  # one table for every dtype (bytes are bytes)
LAUNCH_MODES = ("eager", "graphs")
# Host time per layer is measured on three reference blocks (measure.tables.host_per_layer):
# gpt2 (layernorm, learned positions, GELU), llama (rmsnorm, rotary, SwiGLU, GQA), moe (llama
# with 8 experts, 2 active). A style not in a profile falls back along these lists.
HOST_STYLES = ("gpt2", "llama", "moe")
HOST_FALLBACK = {"gpt2": ("gpt2", "llama", "moe"), "llama": ("llama", "gpt2", "moe"), "moe": ("moe", "llama", "gpt2")}
_DENSE = ("qkv_proj", "out_proj", "moe_router", "ffn_gate", "ffn_up", "ffn_down", "lm_head", "mlp")


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
    """Everything `calibrate` measured on one device, with its provenance."""

    device_name: str
    torch_version: str
    threads: int
    date: str
    overhead_s: Mapping[str, float]  # launch mode -> seconds per kernel call
    tables: Mapping[str, Table]  # by table_name
    warnings: tuple[str, ...] = ()  # e.g. written with --force on a busy machine
    # Optional (older profiles have neither):
    quality: Mapping[str, Mapping[str, float]] = field(default_factory=dict)  # table -> cells, spread_pct, ...
    host_s_per_layer: Mapping[str, float] = field(default_factory=dict)  # block style (HOST_STYLES) -> seconds

    def table(self, kind: str, dtype: str) -> Table | None:
        return self.tables.get(table_name(kind, dtype))

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
        d = {"device_name": self.device_name, "torch_version": self.torch_version, "threads": self.threads,
             "date": self.date, "overhead_s": dict(self.overhead_s), "tables": sorted(self.tables),
             "warnings": list(self.warnings)}
        if self.quality:
            d["quality"] = {k: dict(v) for k, v in self.quality.items()}
        if self.host_s_per_layer:
            d["host_s_per_layer"] = dict(self.host_s_per_layer)
        return d


@dataclass(frozen=True, slots=True)
class Calibrated:
    """The table-based time of one operator row (all its launches)."""

    time_s: float
    compute_s: float  # FLOPs at the interpolated achieved FLOP/s (all launches)
    memory_s: float  # bytes at the achieved bandwidth (all launches)
    overhead_s: float  # measured per-call overhead x launches
    extrapolated: bool
    tables: tuple[str, ...]  # which tables the number comes from


def kernel_table(cost: OpCost) -> tuple[str, tuple[float, ...]] | None:
    """Which table describes this operator's kernel, and its coordinates there (None: no table)."""
    s = cost.shape
    per = max(cost.launches, 1)
    if cost.op in _DENSE:
        if s.batch > 1:
            return "bmm", (s.batch, s.m, s.n, s.k)
        return "matmul", (s.m, s.n, s.k)
    if cost.op in ("attn_score", "attn_context"):
        return "bmm", (s.batch, s.m, s.n, s.k)
    if cost.op == "attn_fused":
        bh = s.batch * (s.heads or 1)
        if s.m == 1:
            return "sdpa_decode", (bh, s.n, s.k)
        return "sdpa_prefill", (bh, s.m, s.k)
    if cost.op == "attn_softmax":
        return "softmax", (cost.bytes / per,)
    if cost.op == "norm":
        return (s.variant or "layernorm"), (cost.bytes / per,)
    return None


def calibrated_time(cost: OpCost, measured: MeasuredTables, launch: str = "eager") -> Calibrated | None:
    """Time of ``cost`` from the tables, or None when no table covers its kernel at its dtype."""
    found = kernel_table(cost)
    if found is None:
        return None
    kind, coords = found
    table = measured.table(kind, cost.compute_dtype)
    copy = measured.table("copy", "")
    if table is None:
        return None
    per = max(cost.launches, 1)
    flops1, bytes1 = cost.flops / per, cost.bytes / per
    hit = table.lookup(coords)
    extrapolated = hit.extrapolated
    if kind == "sdpa_prefill" and cost.shape.n != cost.shape.m:  # chunked prefill: q < kv_len
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
