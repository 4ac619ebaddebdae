"""Measured efficiency tables (the `measured:` section of a hardware profile): their data, how a
rate is read between grid points, and the YAML they are stored as. Pure Python.
(``analytic/efficiency.py`` prices operators with them.)

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

Interpolation: multilinear in the logarithms of the coordinates, of the logarithm of the
rate (piecewise power laws). Why: achieved throughput follows power laws between regimes
(memory-bound matrix-vector products: FLOP/s proportional to m; compute-bound: flat), which
this reproduces exactly; it returns every grid entry unchanged; and it never overshoots
between neighbours (unlike splines), while nearest-neighbour would jump by the whole grid
step (x4 in m) at cell edges. Outside the grid a coordinate is clamped to the edge (the
edge cell's efficiency is used) and the result is flagged ``extrapolated``.

Cells too large to time within the budget are stored as null; such a cell takes the rate of
the measured cell, at or below it on every axis, with the most work (the product of its
coordinates): the closest measured point of the compute-bound plateau. A prediction that
leans on a filled cell is flagged ``extrapolated`` too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import product
from typing import Any, Callable, Mapping

from gpt_batchprof.errors import ProfileError
from gpt_batchprof.profiles.dtypes import PEAK_DTYPES
from gpt_batchprof.profiles.fields import _Fields, link_fields

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




# --------------------------------------------------------------------------- the `measured:` section
# measured:
#   device_name: AMD EPYC (2 threads)     # provenance, all required
#   torch_version: 2.13.0+cpu
#   threads: 2
#   date: 2026-11-23T14:00:00Z
#   overhead_us: {eager: 1.9}              # per kernel call; `graphs` too on CUDA
#   warnings: []                           # e.g. written with --force on a busy machine
#   source: {package: aiconfigurator-core, ...}  # optional: where imported tables come from
#   dtype_aliases: {fp16: bf16}            # optional: fp16 predictions read the bf16 tables
#   interconnect: {name: .., bandwidth_gb_s: .., latency_us: ..}  # optional: a measured link priced
#                                          # instead of the datasheet `interconnect` (kept as the roofline)
#   host_us_per_layer: {gpt2: 150, llama: 260, moe: 700}  # optional: host time per layer (eager)
#   quality:                               # optional: how each table was measured
#     matmul.fp32: {cells: 290, spread_pct: 1.5, spread_p90_pct: 6.0, remeasured: 4, dropped: 0}
#   tables:
#     matmul.fp32:                         # kind.dtype (copy: no dtype)
#       unit: GFLOP/s                      # GFLOP/s for matmul, bmm, sdpa_*; GB/s for copy, norms, softmax
#       m: [1, 4, 16]                      # one list per axis of the kind, increasing
#       n: [256, 1024]
#       k: [256, 1024]
#       values: [[[..], [..]], ...]        # nested like the axes; null = not measured (over budget)


def measured_from_mapping(data: Any, where: str) -> MeasuredTables:
    """Validate a `measured:` section (datasheet units) into MeasuredTables (SI)."""
    def fail(key: str, why: str) -> ProfileError:
        return ProfileError(f"{where}: field 'measured.{key}': {why}")

    if not isinstance(data, Mapping):
        raise ProfileError(f"{where}: field 'measured': must be a mapping (see docs/bench.md), got {data!r:.60}")
    f = _Fields(data, where)
    f.fail = lambda key, why: fail(key, why)  # type: ignore[method-assign]
    def microseconds(key: str, node: Mapping, known: tuple[str, ...], what: str) -> dict[str, float]:
        """A mapping of name: microseconds (names from ``known``), in seconds."""
        out: dict[str, float] = {}
        for name, v in node.items():
            if name not in known:
                raise fail(f"{key}.{name}", f"unknown {what} (known: {', '.join(known)})")
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise fail(f"{key}.{name}", f"must be a number >= 0, got {v!r}")
            out[str(name)] = float(v) * 1e-6
        return out

    over = data.get("overhead_us")
    if not isinstance(over, Mapping) or "eager" not in over:
        raise fail("overhead_us", "missing or not a mapping with at least 'eager: MICROSECONDS'")
    overhead = microseconds("overhead_us", over, LAUNCH_MODES, "launch mode")
    raw_tables = data.get("tables")
    if not isinstance(raw_tables, Mapping) or not raw_tables:
        raise fail("tables", "missing or not a mapping of table name: grid")
    tables = {}
    for name, t in raw_tables.items():
        kind, _, dtype = str(name).partition(".")
        key = f"tables.{name}"
        if kind not in KIND_AXES:
            raise fail(key, f"unknown kind '{kind}' (known: {', '.join(KIND_AXES)})")
        if (kind in UNTYPED_KINDS) != (dtype == "") or (dtype and dtype not in PEAK_DTYPES):
            want = "no dtype" if kind in UNTYPED_KINDS else f"a dtype ({', '.join(PEAK_DTYPES)})"
            raise fail(key, f"'{kind}' tables take {want}: e.g. {kind if kind in UNTYPED_KINDS else kind + '.fp32'}")
        if not isinstance(t, Mapping):
            raise fail(key, "must be a mapping of unit, axes and values")
        scale = 1e9
        want_unit = "GFLOP/s" if kind in FLOP_KINDS else "GB/s"
        if t.get("unit") != want_unit:
            raise fail(f"{key}.unit", f"must be {want_unit}, got {t.get('unit')!r}")
        axes = []
        for ax in KIND_AXES[kind]:
            vals = t.get(ax)
            if (not isinstance(vals, list) or not vals
                    or any(isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0 for v in vals)
                    or any(b <= a for a, b in zip(vals, vals[1:]))):
                raise fail(f"{key}.{ax}", f"must be a non-empty increasing list of positive numbers, got {vals!r:.80}")
            axes.append(tuple(float(v) for v in vals))
        flat: list[float | None] = []

        def walk(node: Any, depth: int, path: str) -> None:
            if depth == len(axes):
                if node is None:
                    flat.append(None)
                elif isinstance(node, bool) or not isinstance(node, (int, float)) or not math.isfinite(node) or node <= 0:
                    raise fail(f"{key}.values{path}", f"must be a number > 0 (or null: not measured), got {node!r}")
                else:
                    flat.append(float(node) * scale)
                return
            n = len(axes[depth])
            if not isinstance(node, list) or len(node) != n:
                got = f"{len(node)} entries" if isinstance(node, list) else repr(node)[:40]
                raise fail(f"{key}.values{path}", f"must be a list of {n} entries (axis '{KIND_AXES[kind][depth]}'), got {got}")
            for i, child in enumerate(node):
                walk(child, depth + 1, f"{path}[{i}]")

        walk(t.get("values"), 0, "")
        if all(v is None for v in flat):
            raise fail(f"{key}.values", "no measured value (all null)")
        tables[str(name)] = Table(kind, dtype, tuple(axes), tuple(flat))
    warnings = data.get("warnings") or []
    if not isinstance(warnings, list) or not all(isinstance(w, str) for w in warnings):
        raise fail("warnings", f"must be a list of strings, got {warnings!r:.60}")
    aliases = data.get("dtype_aliases") or {}
    if not isinstance(aliases, Mapping) or any(k not in PEAK_DTYPES or v not in PEAK_DTYPES for k, v in aliases.items()):
        raise fail("dtype_aliases", f"must map a dtype to the dtype whose tables stand for it ({', '.join(PEAK_DTYPES)}), "
                                    f"got {aliases!r:.60}")
    source = data.get("source") or {}
    if not isinstance(source, Mapping):
        raise fail("source", f"must be a mapping (package, version, framework, ...), got {source!r:.60}")
    host = data.get("host_us_per_layer") or {}
    if not isinstance(host, Mapping):
        raise fail("host_us_per_layer", f"must be a mapping of block style: MICROSECONDS, got {host!r:.60}")
    host_s = microseconds("host_us_per_layer", host, HOST_STYLES, "block style")
    quality = data.get("quality") or {}
    if not isinstance(quality, Mapping) or not all(
            isinstance(q, Mapping) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in q.values())
            for q in quality.values()):
        raise fail("quality", f"must be a mapping of table name: {{figure: number}}, got {quality!r:.60}")
    return MeasuredTables(
        device_name=f.str("device_name"), torch_version=str(f.str("torch_version")),
        threads=f.int("threads", minimum=0),  # 0: not applicable (a GPU)
        date=str(data.get("date") or "") or f.str("date"), overhead_s=overhead, tables=tables,
        warnings=tuple(warnings), dtype_aliases={str(k): str(v) for k, v in aliases.items()}, source=dict(source),
        link=link_fields(data["interconnect"], f"{where}: measured") if data.get("interconnect") is not None else None,
        quality={str(k): dict(v) for k, v in quality.items()}, host_s_per_layer=host_s,
    )


def measured_to_yaml_mapping(m: MeasuredTables) -> dict[str, Any]:
    """The inverse of :func:`measured_from_mapping`: GFLOP/s and GB/s, nested lists, 4 significant digits."""
    tables: dict[str, Any] = {}
    for name, t in m.tables.items():
        entry: dict[str, Any] = {"unit": "GFLOP/s" if t.kind in FLOP_KINDS else "GB/s"}
        for ax_name, ax in zip(t.axis_names, t.axes):
            entry[ax_name] = [int(v) if v == int(v) else v for v in ax]
        vals = [None if v is None else float(f"{v / 1e9:.4g}") for v in t.values]
        for ax in reversed(t.axes[1:]):
            vals = [vals[i:i + len(ax)] for i in range(0, len(vals), len(ax))]
        entry["values"] = vals
        tables[name] = entry
    out: dict[str, Any] = {
        "device_name": str(m.device_name), "torch_version": str(m.torch_version), "threads": m.threads, "date": m.date,
        "overhead_us": {k: round(v * 1e6, 3) for k, v in m.overhead_s.items()},
        "warnings": list(m.warnings),
    }
    if m.host_s_per_layer:
        out["host_us_per_layer"] = {k: round(v * 1e6, 1) for k, v in m.host_s_per_layer.items()}
    if m.quality:
        out["quality"] = {k: dict(v) for k, v in m.quality.items()}
    if m.source:
        out["source"] = dict(m.source)
    if m.dtype_aliases:
        out["dtype_aliases"] = dict(m.dtype_aliases)
    if m.link is not None:
        out["interconnect"] = {"name": m.link[0], "bandwidth_gb_s": float(f"{m.link[1] / 1e9:.4g}"),
                               "latency_us": float(f"{m.link[2] * 1e6:.4g}")}
    out["tables"] = tables
    return out

