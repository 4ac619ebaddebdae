"""Model and hardware profiles: frozen specs, validated on load.

Sources: built-in YAML files (``profiles/models``, ``profiles/hardware``), any YAML file
by path, and Hugging Face ``config.json`` files (read offline) for models.
``yaml`` and ``json`` are imported inside the loaders so that importing this module
(and :mod:`gpt_batchprof.analytic`) stays cheap.
"""

from __future__ import annotations

import difflib
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from gpt_batchprof import files, hf_keys
from gpt_batchprof.errors import ProfileError

if TYPE_CHECKING:  # analytic.efficiency is imported inside the parser (it imports analytic, which imports us)
    from gpt_batchprof.analytic.efficiency import MeasuredTables

# Bytes per element of each storage dtype. int4 is weights only: two values per byte plus,
# as real int4 formats store them (GPTQ, AWQ, bitsandbytes-style group quantisation), one
# fp16 scale per group of INT4_GROUP_SIZE weights: 4 + 16/128 = 4.125 bits per weight.
INT4_GROUP_SIZE = 128
DTYPE_BYTES: dict[str, float] = {
    "fp32": 4.0,
    "fp16": 2.0,
    "bf16": 2.0,
    "fp8": 1.0,
    "int8": 1.0,
    "int4": (4 + 16 / INT4_GROUP_SIZE) / 8,
}
# Quantised weight formats: checkpoints in them quantise only the linear layers of the
# blocks; embeddings, the LM head, norms, MoE routers and biases keep the activation dtype.
QUANTISED_DTYPES = ("int4", "int8", "fp8")
ACT_DTYPES = ("fp32", "fp16", "bf16", "fp8", "int8")
WEIGHT_DTYPES = ("fp32", "fp16", "bf16", "fp8", "int8", "int4")
KV_DTYPES = ("fp32", "fp16", "bf16", "fp8", "int8")
PEAK_DTYPES = ("fp32", "tf32", "fp16", "bf16", "fp8", "int8")

FFN_KINDS = {"gelu": 2, "swiglu": 3}  # number of weight matrices in one FFN
NORM_KINDS = ("layernorm", "rmsnorm")
POSITIONAL_KINDS = ("rope", "learned", "alibi")
HARDWARE_KINDS = ("gpu", "cpu")


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A decoder-only GPT. Sizes are per layer unless the name says otherwise."""

    name: str
    n_layer: int
    d_model: int
    n_head: int
    n_kv_head: int
    head_dim: int
    d_ff: int
    ffn: str
    vocab_size: int
    max_seq_len: int
    tied_embeddings: bool = False
    norm: str = "layernorm"
    positional: str = "rope"
    bias: bool = False
    n_expert: int = 1
    n_expert_active: int = 1
    d_ff_shared: int = 0  # MoE shared expert (qwen2_moe): an always-active FFN of this width
    sliding_window: int | None = None  # attention span and KV cache capped at this many tokens
    source: str = ""

    # --- derived sizes (computed from the fields, never stored twice) ---
    @property
    def q_dim(self) -> int:
        return self.n_head * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.n_kv_head * self.head_dim

    @property
    def n_ffn_matrices(self) -> int:
        return FFN_KINDS[self.ffn]

    @property
    def is_moe(self) -> bool:
        return self.n_expert > 1

    @property
    def embedding_params(self) -> int:
        """Token embedding, plus the learned position table where there is one."""
        n = self.vocab_size * self.d_model
        if self.positional == "learned":
            n += self.max_seq_len * self.d_model
        return n

    def _norm_params(self) -> int:
        return (2 if self.norm == "layernorm" else 1) * self.d_model

    @property
    def layer_matrix_params(self) -> int:
        """Weights of one block's linear layers (what a quantised checkpoint quantises):
        QKV, output projection, every expert's FFN and the shared expert's."""
        d, q, kv = self.d_model, self.q_dim, self.kv_dim
        ffn = self.n_ffn_matrices * d * (self.n_expert * self.d_ff + self.d_ff_shared)
        return d * (q + 2 * kv) + q * d + ffn

    @property
    def layer_other_params(self) -> int:
        """Biases, norms, the MoE router and the shared expert's gate of one block."""
        d, q, kv, f = self.d_model, self.q_dim, self.kv_dim, self.d_ff
        n = 2 * self._norm_params()
        if self.bias:
            n += (q + 2 * kv) + d + self.n_expert * ((self.n_ffn_matrices - 1) * f + d)
        if self.is_moe:
            n += d * self.n_expert
        if self.d_ff_shared:
            n += d  # sigmoid gate of the shared expert: d_model -> 1
        return n

    @property
    def layer_params(self) -> int:
        return self.layer_matrix_params + self.layer_other_params

    @property
    def head_params(self) -> int:
        """The LM head's own weights (0 when tied to the token embedding)."""
        return 0 if self.tied_embeddings else self.vocab_size * self.d_model

    def kv_tokens(self, positions: int) -> int:
        """Tokens a sequence keeps in its KV cache after ``positions`` tokens (sliding window caps it)."""
        return positions if self.sliding_window is None else min(positions, self.sliding_window)

    @property
    def n_params(self) -> int:
        """Every weight: embeddings, all layers, final norm, and an untied LM head."""
        return self.embedding_params + self.n_layer * self.layer_params + self._norm_params() + self.head_params

    def weight_bytes(self, weight_dtype: str, act_dtype: str) -> float:
        """Bytes of every weight: the blocks' linear layers at ``weight_dtype``, the rest
        (embeddings, LM head, norms, routers, biases) at ``act_dtype`` when the weight dtype
        is a quantised format, else at ``weight_dtype`` too."""
        matrices = self.n_layer * self.layer_matrix_params
        other_dtype = act_dtype if weight_dtype in QUANTISED_DTYPES else weight_dtype
        return matrices * DTYPE_BYTES[weight_dtype] + (self.n_params - matrices) * DTYPE_BYTES[other_dtype]

    @property
    def n_params_non_embedding(self) -> int:
        """Layers and final norm only (the count that FLOPs per token scale with)."""
        return self.n_layer * self.layer_params + self._norm_params()

    def kv_bytes_per_token(self, kv_dtype: str) -> float:
        """KV cache of one token over all layers: K and V, n_kv_head x head_dim each."""
        return 2.0 * self.n_layer * self.kv_dim * DTYPE_BYTES[kv_dtype]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"n_params": self.n_params}


@dataclass(frozen=True, slots=True)
class Interconnect:
    """The link between the devices of one node (or network): per-device bandwidth per direction.

    ``bandwidth_bytes_per_s`` is what one device can send (and, at the same time, receive)
    through it, e.g. NVLink 4 on H100 SXM: 900 GB/s total = 450 GB/s each way.
    ``latency_s`` is the per-hop (per ring step) latency of a collective.
    """

    name: str
    bandwidth_bytes_per_s: float
    latency_s: float = 0.0


INTERCONNECT_KEYS = ("name", "bandwidth_gb_s", "latency_us")


@dataclass(frozen=True, slots=True)
class HardwareSpec:
    """Datasheet (or calibrated) ceilings of one device. Stored in SI units."""

    name: str
    kind: str
    memory_bytes: float
    memory_bandwidth_bytes_per_s: float
    peak_flops_per_s: Mapping[str, float] = field(default_factory=dict)
    launch_overhead_s: float = 0.0  # per kernel, launched eagerly by the host
    graph_launch_overhead_s: float | None = None  # per kernel inside a CUDA graph (GPUs)
    l2_cache_bytes: float = 0.0
    price_per_hour_usd: float | None = None
    source: str = ""
    interconnect: Interconnect | None = None  # how devices of this kind talk to each other (TP/PP/EP)
    measured: MeasuredTables | None = None  # efficiency tables from `calibrate` (the `measured:` section)

    def peak(self, dtype: str) -> float:
        """Peak FLOP/s for matmuls in ``dtype``."""
        try:
            return self.peak_flops_per_s[dtype]
        except KeyError:
            have = ", ".join(self.peak_flops_per_s) or "none"
            raise ProfileError(
                f"hardware '{self.name}': no {dtype} peak in peak_tflops (has: {have}); "
                f"choose another --dtype or add {dtype} to the profile"
            ) from None

    @property
    def prediction(self) -> str:
        """Where predictions on this device come from: "calibrated" (its measured tables) or "roofline"."""
        return "calibrated" if self.measured is not None else "roofline"

    def ridge_point(self, dtype: str | None = None) -> float:
        """FLOP/byte at which the roofline of ``dtype`` turns compute-bound (the only place
        it is computed). Default: fp16, else the profile's first peak."""
        if dtype is None:
            dtype = "fp16" if "fp16" in self.peak_flops_per_s else next(iter(self.peak_flops_per_s))
        return self.peak(dtype) / self.memory_bandwidth_bytes_per_s

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__ if k not in ("measured", "interconnect")}
        d["peak_flops_per_s"] = dict(self.peak_flops_per_s)
        d["interconnect"] = asdict(self.interconnect) if self.interconnect is not None else None
        if self.measured is not None:
            d["measured"] = self.measured.summary()
        return d


# --------------------------------------------------------------------------- validation


class _Fields:
    """Reads typed fields out of a mapping and names the file and field on every error."""

    def __init__(self, data: Mapping[str, Any], where: str, prefix: str = ""):
        self.data = data
        self.where = where
        self.prefix = prefix  # for nested sections: "interconnect."

    def fail(self, key: str, why: str) -> ProfileError:
        return ProfileError(f"{self.where}: field '{self.prefix}{key}': {why}")

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def int(self, key: str, default: int | None = None, minimum: int = 1) -> int:
        v = self.data.get(key)
        if v is None:
            if default is None:
                raise self.fail(key, "missing (required)")
            return default
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v != int(v):
            raise self.fail(key, f"must be an integer, got {v!r}")
        if v < minimum:
            raise self.fail(key, f"must be >= {minimum}, got {v!r}")
        return int(v)

    def num(self, key: str, default: float | None = None, positive: bool = True) -> float:
        v = self.data.get(key)
        if v is None:
            if default is None:
                raise self.fail(key, "missing (required)")
            return default
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise self.fail(key, f"must be a number, got {v!r}")
        if v < 0 or (positive and v == 0):
            raise self.fail(key, f"must be {'> 0' if positive else '>= 0'}, got {v!r}")
        return float(v)

    def str(self, key: str, default: str | None = None, choices: tuple[str, ...] | None = None) -> str:
        v = self.data.get(key)
        if v is None:
            if default is None:
                raise self.fail(key, "missing (required)")
            return default
        if not isinstance(v, str) or not v.strip():
            raise self.fail(key, f"must be a non-empty string, got {v!r}")
        if choices and v not in choices:
            raise self.fail(key, f"must be one of {', '.join(choices)}, got {v!r}")
        return v

    def bool(self, key: str, default: bool) -> bool:
        v = self.data.get(key)
        if v is None:
            return default
        if not isinstance(v, bool):
            raise self.fail(key, f"must be true or false, got {v!r}")
        return v


@files.checked_keys(ProfileError)
def model_from_mapping(data: Mapping[str, Any], where: str, source: str = "") -> ModelSpec:
    """Validate a model profile mapping (YAML schema) and build the spec."""
    if not isinstance(data, Mapping):
        raise ProfileError(f"{where}: expected a mapping of fields, got {type(data).__name__}")
    f = _Fields(data, where)
    n_head = f.int("n_head")
    d_model = f.int("d_model")
    if f.has("head_dim"):
        head_dim = f.int("head_dim")
    else:
        if d_model % n_head:
            raise f.fail("d_model", f"{d_model} is not divisible by n_head={n_head}; give head_dim")
        head_dim = d_model // n_head
    n_kv_head = f.int("n_kv_head", default=n_head)
    if n_kv_head > n_head or n_head % n_kv_head:
        raise f.fail("n_kv_head", f"{n_kv_head} does not divide n_head={n_head}")
    n_expert = f.int("n_expert", default=1)
    n_expert_active = f.int("n_expert_active", default=min(2, n_expert) if n_expert > 1 else 1)
    if n_expert_active > n_expert:
        raise f.fail("n_expert_active", f"{n_expert_active} is more than n_expert={n_expert}")
    d_ff_shared = f.int("d_ff_shared", default=0, minimum=0)
    if d_ff_shared and n_expert == 1:
        raise f.fail("d_ff_shared", "a shared expert needs a mixture of experts (n_expert > 1)")
    sliding_window = f.int("sliding_window") if f.has("sliding_window") else None
    return ModelSpec(
        name=f.str("name"),
        n_layer=f.int("n_layer"),
        d_model=d_model,
        n_head=n_head,
        n_kv_head=n_kv_head,
        head_dim=head_dim,
        d_ff=f.int("d_ff"),
        ffn=f.str("ffn", choices=tuple(FFN_KINDS)),
        vocab_size=f.int("vocab_size"),
        max_seq_len=f.int("max_seq_len"),
        tied_embeddings=f.bool("tied_embeddings", False),
        norm=f.str("norm", default="layernorm", choices=NORM_KINDS),
        positional=f.str("positional", default="rope", choices=POSITIONAL_KINDS),
        bias=f.bool("bias", False),
        n_expert=n_expert,
        n_expert_active=n_expert_active,
        d_ff_shared=d_ff_shared,
        sliding_window=sliding_window,
        source=source,
    )


# Ways to give device memory, and their unit in bytes. HBM and GPU memory are binary
# (an "80 GB" H100 reports 81,559 MiB); DDR system memory is sold in decimal GB.
MEMORY_FIELDS = {"memory_bytes": 1.0, "memory_mib": 2.0**20, "memory_gib": 2.0**30, "memory_gb": 1e9}


def _memory_bytes(f: "_Fields") -> float:
    given = [k for k in MEMORY_FIELDS if f.has(k)]
    if len(given) != 1:
        why = "missing (required)" if not given else f"given {len(given)} times ({', '.join(given)}); keep one"
        raise f.fail("memory_bytes", f"{why}: one of {', '.join(MEMORY_FIELDS)}")
    return f.num(given[0]) * MEMORY_FIELDS[given[0]]


@files.checked_keys(ProfileError)
def hardware_from_mapping(data: Mapping[str, Any], where: str, source: str = "") -> HardwareSpec:
    """Validate a hardware profile mapping (datasheet units) and convert it to SI."""
    if not isinstance(data, Mapping):
        raise ProfileError(f"{where}: expected a mapping of fields, got {type(data).__name__}")
    f = _Fields(data, where)
    name = f.str("name")
    kind = f.str("kind", choices=HARDWARE_KINDS)
    memory_bytes = _memory_bytes(f)
    bandwidth = f.num("memory_bandwidth_gb_s") * 1e9
    peaks_raw = data.get("peak_tflops")
    if not isinstance(peaks_raw, Mapping) or not peaks_raw:
        raise f.fail("peak_tflops", "missing or not a mapping of dtype: TFLOP/s (e.g. fp16: 312)")
    peaks: dict[str, float] = {}
    pf = _Fields(peaks_raw, where)
    for key in peaks_raw:
        if key not in PEAK_DTYPES:
            raise ProfileError(
                f"{where}: field 'peak_tflops.{key}': unknown dtype (known: {', '.join(PEAK_DTYPES)})"
            )
        try:
            peaks[key] = pf.num(key) * 1e12
        except ProfileError:
            raise ProfileError(
                f"{where}: field 'peak_tflops.{key}': must be a number > 0, got {peaks_raw[key]!r}"
            ) from None
    price = f.num("price_per_hour_usd", default=0.0, positive=False) if f.has("price_per_hour_usd") else None
    interconnect = interconnect_from_mapping(data["interconnect"], where) if f.has("interconnect") else None
    return HardwareSpec(
        name=name,
        kind=kind,
        memory_bytes=memory_bytes,
        memory_bandwidth_bytes_per_s=bandwidth,
        peak_flops_per_s=peaks,
        launch_overhead_s=f.num("launch_overhead_us", default=0.0, positive=False) * 1e-6,
        graph_launch_overhead_s=(f.num("graph_launch_overhead_us", positive=False) * 1e-6
                                 if f.has("graph_launch_overhead_us") else None),
        l2_cache_bytes=f.num("l2_cache_mb", default=0.0, positive=False) * 1e6,
        price_per_hour_usd=price,
        source=source,
        interconnect=interconnect,
        measured=measured_from_mapping(data["measured"], where) if data.get("measured") is not None else None,
    )


def interconnect_from_mapping(data: Any, where: str) -> Interconnect:
    """The optional ``interconnect:`` section (GB/s per direction, microseconds); unknown keys refused."""
    if not isinstance(data, Mapping):
        raise ProfileError(f"{where}: field 'interconnect': expected a mapping (name, bandwidth_gb_s, latency_us)")
    unknown = [k for k in data if k not in INTERCONNECT_KEYS]
    if unknown:
        raise ProfileError(f"{where}: field 'interconnect.{unknown[0]}': unknown key "
                           f"(known: {', '.join(INTERCONNECT_KEYS)})")
    f = _Fields(data, where, prefix="interconnect.")
    return Interconnect(
        name=f.str("name"),
        bandwidth_bytes_per_s=f.num("bandwidth_gb_s") * 1e9,
        latency_s=f.num("latency_us", default=0.0, positive=False) * 1e-6,
    )


def hardware_to_yaml_mapping(hw: HardwareSpec) -> dict[str, Any]:
    """The inverse of :func:`hardware_from_mapping`: datasheet units, ready for YAML."""
    d: dict[str, Any] = {
        "name": hw.name,
        "kind": hw.kind,
        "memory_bytes": int(hw.memory_bytes),
        "memory_bandwidth_gb_s": round(hw.memory_bandwidth_bytes_per_s / 1e9, 3),
        "peak_tflops": {k: round(v / 1e12, 4) for k, v in hw.peak_flops_per_s.items()},
        "launch_overhead_us": round(hw.launch_overhead_s * 1e6, 3),
    }
    if hw.graph_launch_overhead_s is not None:
        d["graph_launch_overhead_us"] = round(hw.graph_launch_overhead_s * 1e6, 3)
    if hw.l2_cache_bytes:
        d["l2_cache_mb"] = round(hw.l2_cache_bytes / 1e6, 3)
    if hw.price_per_hour_usd is not None:
        d["price_per_hour_usd"] = hw.price_per_hour_usd
    if hw.measured is not None:
        d["measured"] = measured_to_yaml_mapping(hw.measured)
    if hw.interconnect is not None:
        ic = hw.interconnect
        d["interconnect"] = {"name": ic.name, "bandwidth_gb_s": round(ic.bandwidth_bytes_per_s / 1e9, 3),
                             "latency_us": round(ic.latency_s * 1e6, 3)}
    return d


# --------------------------------------------------------------------------- the `measured:` section
# measured:
#   device_name: AMD EPYC (2 threads)     # provenance, all required
#   torch_version: 2.13.0+cpu
#   threads: 2
#   date: 2026-11-23T14:00:00Z
#   overhead_us: {eager: 1.9}              # per kernel call; `graphs` too on CUDA
#   warnings: []                           # e.g. written with --force on a busy machine
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
    from gpt_batchprof.analytic.efficiency import FLOP_KINDS, KIND_AXES, LAUNCH_MODES, UNTYPED_KINDS, MeasuredTables, Table

    def fail(key: str, why: str) -> ProfileError:
        return ProfileError(f"{where}: field 'measured.{key}': {why}")

    if not isinstance(data, Mapping):
        raise ProfileError(f"{where}: field 'measured': must be a mapping (see docs/bench.md), got {data!r:.60}")
    f = _Fields(data, where)
    f.fail = lambda key, why: fail(key, why)  # type: ignore[method-assign]
    over = data.get("overhead_us")
    if not isinstance(over, Mapping) or "eager" not in over:
        raise fail("overhead_us", "missing or not a mapping with at least 'eager: MICROSECONDS'")
    overhead: dict[str, float] = {}
    for mode, v in over.items():
        if mode not in LAUNCH_MODES:
            raise fail(f"overhead_us.{mode}", f"unknown launch mode (known: {', '.join(LAUNCH_MODES)})")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise fail(f"overhead_us.{mode}", f"must be a number >= 0, got {v!r}")
        overhead[mode] = float(v) * 1e-6
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
    from gpt_batchprof.analytic.efficiency import HOST_STYLES

    host = data.get("host_us_per_layer") or {}
    if not isinstance(host, Mapping):
        raise fail("host_us_per_layer", f"must be a mapping of block style: MICROSECONDS, got {host!r:.60}")
    host_s: dict[str, float] = {}
    for style, v in host.items():
        if style not in HOST_STYLES:
            raise fail(f"host_us_per_layer.{style}", f"unknown block style (known: {', '.join(HOST_STYLES)})")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise fail(f"host_us_per_layer.{style}", f"must be a number >= 0, got {v!r}")
        host_s[str(style)] = float(v) * 1e-6
    quality = data.get("quality") or {}
    if not isinstance(quality, Mapping) or not all(
            isinstance(q, Mapping) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in q.values())
            for q in quality.values()):
        raise fail("quality", f"must be a mapping of table name: {{figure: number}}, got {quality!r:.60}")
    return MeasuredTables(
        device_name=f.str("device_name"), torch_version=str(f.str("torch_version")), threads=f.int("threads"),
        date=str(data.get("date") or "") or f.str("date"), overhead_s=overhead, tables=tables,
        warnings=tuple(warnings), quality={str(k): dict(v) for k, v in quality.items()}, host_s_per_layer=host_s,
    )


def measured_to_yaml_mapping(m: MeasuredTables) -> dict[str, Any]:
    """The inverse of :func:`measured_from_mapping`: GFLOP/s and GB/s, nested lists, 4 significant digits."""
    tables: dict[str, Any] = {}
    for name, t in m.tables.items():
        from gpt_batchprof.analytic.efficiency import FLOP_KINDS

        entry: dict[str, Any] = {"unit": "GFLOP/s" if t.kind in FLOP_KINDS else "GB/s"}
        for ax_name, ax in zip(t.axis_names, t.axes):
            entry[ax_name] = [int(v) if v == int(v) else v for v in ax]
        vals = [None if v is None else float(f"{v / 1e9:.4g}") for v in t.values]
        for ax in reversed(t.axes[1:]):
            vals = [vals[i:i + len(ax)] for i in range(0, len(vals), len(ax))]
        entry["values"] = vals
        tables[name] = entry
    d: dict[str, Any] = {
        "device_name": str(m.device_name), "torch_version": str(m.torch_version), "threads": m.threads, "date": m.date,
        "overhead_us": {k: round(v * 1e6, 3) for k, v in m.overhead_s.items()},
        "warnings": list(m.warnings),
    }
    if m.host_s_per_layer:
        d["host_us_per_layer"] = {k: round(v * 1e6, 1) for k, v in m.host_s_per_layer.items()}
    if m.quality:
        d["quality"] = {k: dict(v) for k, v in m.quality.items()}
    d["tables"] = tables
    return d


# --------------------------------------------------------------------------- HF config.json


def _hf_get(cfg: Mapping[str, Any], where: str, *keys: str, default: Any = None) -> Any:
    for k in keys:
        if cfg.get(k) is not None:
            return cfg[k]
    if default is not None:
        return default
    raise ProfileError(f"{where}: field '{keys[0]}': missing (required for this model_type)")


@hf_keys.checked
def model_from_hf_config(cfg: Mapping[str, Any], where: str, name: str) -> ModelSpec:
    """Map a Hugging Face ``config.json`` to the profile schema, then validate it."""
    if not isinstance(cfg, Mapping):
        raise ProfileError(f"{where}: expected a JSON object")
    mt = cfg.get("model_type")
    g = lambda *keys, default=None: _hf_get(cfg, where, *keys, default=default)  # noqa: E731
    out: dict[str, Any] = {"name": name}
    if mt in ("llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3"):
        n_head = g("num_attention_heads")
        out |= {
            "n_layer": g("num_hidden_layers"),
            "d_model": g("hidden_size"),
            "n_head": n_head,
            "n_kv_head": g("num_key_value_heads", default=n_head),
            "d_ff": g("intermediate_size"),
            "ffn": "swiglu",
            "vocab_size": g("vocab_size"),
            "max_seq_len": g("max_position_embeddings"),
            "tied_embeddings": bool(cfg.get("tie_word_embeddings", False)),
            "norm": "rmsnorm",
            "positional": "rope",
            "bias": mt.startswith("qwen2"),
        }
        if cfg.get("head_dim"):
            out["head_dim"] = cfg["head_dim"]
        # Sliding-window attention: mistral/mixtral apply `sliding_window` when set; qwen2/3
        # only with `use_sliding_window: true` (then to every layer here: a documented upper
        # bound when `max_window_layers` limits it to some).
        window = cfg.get("sliding_window")
        if window and (mt in ("mistral", "mixtral") or cfg.get("use_sliding_window")):
            out["sliding_window"] = window
        if mt == "mixtral":
            out |= {"n_expert": g("num_local_experts"), "n_expert_active": g("num_experts_per_tok")}
        if mt == "qwen2_moe":
            out |= {
                "n_expert": g("num_experts"),
                "n_expert_active": g("num_experts_per_tok"),
                "d_ff": g("moe_intermediate_size"),
                "d_ff_shared": cfg.get("shared_expert_intermediate_size") or 0,
            }
    elif mt == "gpt2":
        d = g("n_embd", "hidden_size")
        out |= {
            "n_layer": g("n_layer", "num_hidden_layers"),
            "d_model": d,
            "n_head": g("n_head", "num_attention_heads"),
            "d_ff": cfg.get("n_inner") or 4 * d,
            "ffn": "gelu",
            "vocab_size": g("vocab_size"),
            "max_seq_len": g("n_positions", "n_ctx", "max_position_embeddings"),
            "tied_embeddings": bool(cfg.get("tie_word_embeddings", True)),
            "norm": "layernorm",
            "positional": "learned",
            "bias": True,
        }
    elif mt == "opt":
        proj = cfg.get("word_embed_proj_dim")
        if proj is not None and proj != g("hidden_size"):
            raise ProfileError(
                f"{where}: field 'word_embed_proj_dim': {proj} differs from hidden_size {g('hidden_size')}; "
                "OPT's project_in/project_out layers (opt-350m) are not modelled")
        out |= {
            "n_layer": g("num_hidden_layers"),
            "d_model": g("hidden_size"),
            "n_head": g("num_attention_heads"),
            "d_ff": g("ffn_dim"),
            "ffn": "gelu",
            "vocab_size": g("vocab_size"),
            "max_seq_len": g("max_position_embeddings"),
            "tied_embeddings": bool(cfg.get("tie_word_embeddings", True)),
            "norm": "layernorm",
            "positional": "learned",
            "bias": bool(cfg.get("enable_bias", True)),
        }
    elif mt == "gpt_neox":
        out |= {
            "n_layer": g("num_hidden_layers"),
            "d_model": g("hidden_size"),
            "n_head": g("num_attention_heads"),
            "d_ff": g("intermediate_size"),
            "ffn": "gelu",
            "vocab_size": g("vocab_size"),
            "max_seq_len": g("max_position_embeddings"),
            "tied_embeddings": bool(cfg.get("tie_word_embeddings", False)),
            "norm": "layernorm",
            "positional": "rope",
            "bias": True,
        }
    else:
        known = "llama, mistral, mixtral, qwen2, qwen2_moe, qwen3, gpt2, opt, gpt_neox"
        raise ProfileError(f"{where}: field 'model_type': unsupported {mt!r} (supported: {known})")
    return model_from_mapping(out, where, source=where)


# --------------------------------------------------------------------------- files and names


def builtin_dir() -> Path:
    """Where the built-in profiles are: inside the installed package, else the source tree."""
    env = os.environ.get("GPT_BATCHPROF_PROFILES")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parent
    for cand in (here / "_profiles", here.parent / "profiles"):
        if (cand / "models").is_dir():
            return cand
    return here.parent / "profiles"


def builtin_names(kind: str) -> list[str]:
    d = builtin_dir() / kind
    return sorted(p.stem for p in d.glob("*.yaml")) if d.is_dir() else []


def _parse_yaml(path: Path) -> Any:
    return files.load_yaml(path, ProfileError)


def _parse_json(path: Path) -> Any:
    return files.load_json(path, ProfileError)


def _resolve(kind: str, ref: str) -> Path:
    """A built-in name or a path to a file; unknown names get the closest suggestions."""
    p = Path(ref).expanduser()
    if p.is_file():
        return p
    if p.is_dir():
        hint = f" (use {p / 'config.json'})" if (p / "config.json").is_file() else ""
        raise ProfileError(f"{ref}: is a directory, not a {kind.rstrip('s')} profile file{hint}")
    looks_like_path = os.sep in ref or ref.endswith((".yaml", ".yml", ".json"))
    if looks_like_path:
        raise ProfileError(f"{ref}: no such file")
    builtin = builtin_dir() / kind / f"{ref}.yaml"
    if builtin.is_file():
        return builtin
    names = builtin_names(kind)
    prefixed = [n for n in names if n.startswith(ref)]
    close = (prefixed + [n for n in difflib.get_close_matches(ref, names, n=3, cutoff=0.5) if n not in prefixed])[:3]
    hint = f"; did you mean {', '.join(close)}?" if close else f"; built-in: {', '.join(names)}"
    raise ProfileError(f"unknown {kind.rstrip('s')} '{ref}' (not a built-in name or an existing file){hint}")


def load_model(ref: str) -> ModelSpec:
    """``ref``: built-in name, model YAML path, or Hugging Face config.json path."""
    path = _resolve("models", ref)
    if path.suffix == ".json":
        name = path.parent.name if path.name == "config.json" else path.stem
        return model_from_hf_config(_parse_json(path), str(path), name or "hf-model")
    data = _parse_yaml(path)
    if isinstance(data, Mapping) and "model_type" in data and "n_layer" not in data:
        return model_from_hf_config(data, str(path), path.stem)
    return model_from_mapping(data, str(path), source=str(path))


def load_hardware(ref: str) -> HardwareSpec:
    path = _resolve("hardware", ref)
    return hardware_from_mapping(_parse_yaml(path), str(path), source=str(path))


def _load_all(kind: str, loader: Callable[[str], Any]) -> list[Any]:
    return [loader(n) for n in builtin_names(kind)]


def all_models() -> list[ModelSpec]:
    return _load_all("models", load_model)


def all_hardware() -> list[HardwareSpec]:
    return _load_all("hardware", load_hardware)
