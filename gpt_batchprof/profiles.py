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
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from gpt_batchprof import files, hf_keys
from gpt_batchprof.errors import ProfileError

if TYPE_CHECKING:  # analytic.efficiency is imported inside the parser (it imports analytic, which imports us)
    from gpt_batchprof.analytic.efficiency import MeasuredTables

# Bytes per element of each storage dtype. The 4-bit formats are weights only, each value with
# its share of a block scale:
# - int4: two values per byte plus, as real int4 formats store them (GPTQ, AWQ,
#   bitsandbytes-style group quantisation), one fp16 scale per group of INT4_GROUP_SIZE
#   weights: 4 + 16/128 = 4.125 bits per weight;
# - mxfp4 (OCP Microscaling, gpt-oss's experts): e2m1 values with one 8-bit (e8m0) scale per
#   block of 32: 4 + 8/32 = 4.25 bits;
# - nvfp4 (NVIDIA Blackwell): e2m1 values with one fp8 (e4m3) scale per block of 16:
#   4 + 8/16 = 4.5 bits (its one fp32 scale per tensor is left out: 4 bytes a matrix).
INT4_GROUP_SIZE = 128
MXFP4_BLOCK = 32
NVFP4_BLOCK = 16
DTYPE_BYTES: dict[str, float] = {
    "fp32": 4.0,
    "fp16": 2.0,
    "bf16": 2.0,
    "fp8": 1.0,
    "int8": 1.0,
    "int4": (4 + 16 / INT4_GROUP_SIZE) / 8,
    "mxfp4": (4 + 8 / MXFP4_BLOCK) / 8,
    "nvfp4": (4 + 8 / NVFP4_BLOCK) / 8,
}
# Quantised weight formats: checkpoints in them quantise only the linear layers of the
# blocks; embeddings, the LM head, norms, MoE routers and biases keep the activation dtype.
QUANTISED_DTYPES = ("int4", "int8", "fp8", "mxfp4", "nvfp4")


def unquantised_dtype(weight_dtype: str, act_dtype: str) -> str:
    """Dtype of the weights a quantised checkpoint leaves alone (embeddings, LM head, norms,
    routers, biases): the activation dtype when ``weight_dtype`` is a quantised format, else
    ``weight_dtype`` itself. The one place this rule is written."""
    return act_dtype if weight_dtype in QUANTISED_DTYPES else weight_dtype
ACT_DTYPES = ("fp32", "fp16", "bf16", "fp8", "int8")
WEIGHT_DTYPES = ("fp32", "fp16", "bf16", "fp8", "int8", "int4", "mxfp4", "nvfp4")
KV_DTYPES = ("fp32", "fp16", "bf16", "fp8", "int8")
PEAK_DTYPES = ("fp32", "tf32", "fp16", "bf16", "fp8", "int8")

# number of weight matrices in one FFN: gelu (up, down); gated FFNs (gate, up, down) with SiLU
# (swiglu: llama) or tanh-GELU (geglu: gemma) on the gate
FFN_KINDS = {"gelu": 2, "swiglu": 3, "geglu": 3}
NORM_KINDS = ("layernorm", "rmsnorm")
POSITIONAL_KINDS = ("rope", "learned", "alibi")
HARDWARE_KINDS = ("gpu", "cpu")


@dataclass(frozen=True, slots=True)
class LayerGroup:
    """``count`` layers of one kind: their attention (full, or a sliding window of
    ``sliding_window`` tokens) and their FFN (dense of width ``d_ff`` when ``n_expert`` is 1,
    else ``n_expert_active`` of ``n_expert`` experts of width ``d_ff`` plus a shared expert of
    ``d_ff_shared``). Everything else (heads, widths, norms, biases) is the model's."""

    count: int
    sliding_window: int | None
    d_ff: int
    n_expert: int = 1
    n_expert_active: int = 1
    d_ff_shared: int = 0

    @property
    def attention_kind(self) -> str:
        return "full" if self.sliding_window is None else f"window {self.sliding_window}"

    @property
    def ffn_kind(self) -> str:
        if self.n_expert == 1:
            return f"dense {self.d_ff}"
        shared = f" + shared {self.d_ff_shared}" if self.d_ff_shared else ""
        return f"{self.n_expert_active} of {self.n_expert} x {self.d_ff}{shared}"


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A decoder-only GPT. Sizes are per layer unless the name says otherwise.

    A model is a stack of layer kinds: with ``layer_groups`` empty every layer is the one the
    fields describe; otherwise each group's attention and FFN fields replace the model-level
    ones for its ``count`` layers (gpt-oss alternates sliding and full attention, DeepSeek-V3
    starts with dense layers before MoE ones). :meth:`parts` gives each group as a uniform
    model of its own, which is how every figure follows the stack.
    """

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
    bias: bool = False  # a bias on every projection: q, k, v, o and the FFN's
    qkv_bias: bool = False  # qwen2 family: biases on the q, k and v projections only
    n_expert: int = 1
    n_expert_active: int = 1
    d_ff_shared: int = 0  # MoE shared expert (qwen2_moe): an always-active FFN of this width
    sliding_window: int | None = None  # attention span and KV cache capped at this many tokens
    # Multi-head latent attention (DeepSeek-V2/V3, Kimi-K2) when kv_lora_rank > 0: K and V are
    # decompressed from a per-token latent of kv_lora_rank values plus a rotary key of
    # qk_rope_head_dim shared by all heads (what the cache holds); head_dim is the non-rotary part
    # of each query/key head, v_head_dim the value head; q_lora_rank > 0 compresses the queries too.
    kv_lora_rank: int = 0
    q_lora_rank: int = 0
    qk_rope_head_dim: int = 0
    v_head_dim: int = 0
    shared_expert_gate: bool = True  # qwen2_moe scales its shared expert by a sigmoid gate; DeepSeek's has none
    norms_per_layer: int = 2  # before attention and FFN; gemma 2/3 also normalise each one's output (4)
    attention_sinks: bool = False  # gpt-oss: one learned logit per query head joins every softmax
    qk_norm: bool = False  # qwen3, gemma3: an RMSNorm (head_dim weights) over each query and key head
    router_bias: bool = False  # gpt-oss: the MoE router has a bias per expert
    layer_groups: tuple[LayerGroup, ...] = ()  # empty: every layer as above
    source: str = ""

    def parts(self) -> tuple["ModelSpec", ...]:
        """The stack as uniform models, one per layer group (just ``(self,)`` when uniform).

        Each part has the group's layers and attention / FFN fields; embeddings, final norm and
        LM head belong to the whole model (callers count them once)."""
        if not self.layer_groups:
            return (self,)
        return tuple(
            replace(self, n_layer=g.count, sliding_window=g.sliding_window, d_ff=g.d_ff, n_expert=g.n_expert,
                    n_expert_active=g.n_expert_active, d_ff_shared=g.d_ff_shared, layer_groups=())
            for g in self.layer_groups
        )

    def layer_specs(self) -> tuple["ModelSpec", ...]:
        """One uniform model per layer, in the order the stack runs them."""
        return tuple(p for p in self.parts() for _ in range(p.n_layer))

    @property
    def is_stack(self) -> bool:
        """Whether layers differ (more than one layer group)."""
        return len(self.layer_groups) > 1

    # --- derived sizes (computed from the fields, never stored twice) ---
    @property
    def q_dim(self) -> int:
        return self.n_head * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.n_kv_head * self.head_dim

    @property
    def is_mla(self) -> bool:
        return self.kv_lora_rank > 0

    @property
    def mla_matrices(self) -> dict[str, tuple[int, int]]:
        """(in, out) of each projection of a latent-attention layer, by operator name."""
        d, nh, r = self.d_model, self.n_head, self.qk_rope_head_dim
        q_in = self.q_lora_rank or d
        mats = {"mla_q_down": (d, self.q_lora_rank)} if self.q_lora_rank else {}
        return mats | {
            "mla_q_up": (q_in, nh * (self.head_dim + r)),
            "mla_kv_down": (d, self.kv_lora_rank + r),  # the latent and the rotary key: what is cached
            "mla_kv_up": (self.kv_lora_rank, nh * (self.head_dim + self.v_head_dim)),  # K (non-rotary) and V
            "out_proj": (nh * self.v_head_dim, d),
        }

    @property
    def n_ffn_matrices(self) -> int:
        return FFN_KINDS[self.ffn]

    @property
    def is_moe(self) -> bool:
        """Whether any layer has experts."""
        return any(p.n_expert > 1 for p in self.parts())

    @property
    def embedding_params(self) -> int:
        """Token embedding, plus the learned position table where there is one."""
        n = self.vocab_size * self.d_model
        if self.positional == "learned":
            n += self.max_seq_len * self.d_model
        return n

    @property
    def norm_params(self) -> int:
        """Weights of one norm (scale, plus a shift for layernorm): the one place they are counted."""
        return (2 if self.norm == "layernorm" else 1) * self.d_model

    @property
    def layer_matrix_params(self) -> int:
        """Weights of one block's linear layers (what a quantised checkpoint quantises):
        QKV, output projection, every expert's FFN and the shared expert's."""
        d, q, kv = self.d_model, self.q_dim, self.kv_dim
        ffn = self.n_ffn_matrices * d * (self.n_expert * self.d_ff + self.d_ff_shared)
        if self.is_mla:
            return sum(i * o for i, o in self.mla_matrices.values()) + ffn
        return d * (q + 2 * kv) + q * d + ffn

    @property
    def layer_other_params(self) -> int:
        """Biases, norms, the MoE router and the shared expert's gate of one block."""
        d, q, kv, f = self.d_model, self.q_dim, self.kv_dim, self.d_ff
        n = self.norms_per_layer * self.norm_params
        if self.bias:
            n += (q + 2 * kv) + d + self.n_expert * ((self.n_ffn_matrices - 1) * f + d)
        elif self.qkv_bias:
            n += q + 2 * kv
        if self.n_expert > 1:
            n += d * self.n_expert + (self.n_expert if self.router_bias else 0)
        if self.d_ff_shared and self.shared_expert_gate:
            n += d  # sigmoid gate of the shared expert: d_model -> 1
        if self.is_mla:  # RMSNorms of the compressed query and of the latent
            n += self.q_lora_rank + self.kv_lora_rank
        if self.attention_sinks:
            n += self.n_head
        if self.qk_norm:  # one weight vector for all query heads and one for all key heads
            n += 2 * self.head_dim
        return n

    @property
    def expert_params(self) -> int:
        """Weights of one routed expert of a layer (its matrices, and biases where the model has them)."""
        f, n_mat = self.d_ff, self.n_ffn_matrices
        return n_mat * self.d_model * f + (((n_mat - 1) * f + self.d_model) if self.bias else 0)

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
    def stack_params(self) -> int:
        """Weights of every layer of the stack (no embeddings, final norm or head)."""
        return sum(p.n_layer * p.layer_params for p in self.parts())

    @property
    def n_params(self) -> int:
        """Every weight: embeddings, all layers, final norm, and an untied LM head."""
        return self.embedding_params + self.stack_params + self.norm_params + self.head_params

    @property
    def n_params_active(self) -> int:
        """Weights one token uses: all of them but the routed experts it is not sent to
        (``n_expert - n_expert_active`` per MoE layer). Embeddings and head included, as the
        Qwen and Llama 4 model cards count them; gpt-oss's card leaves the token embedding out
        (``n_params_active - embedding_params``)."""
        idle = sum(p.n_layer * (p.n_expert - p.n_expert_active) * p.expert_params for p in self.parts())
        return self.n_params - idle

    @property
    def routed_expert_matrix_params(self) -> int:
        """Weights of the routed experts' matrices over all layers (what ``expert_dtype`` stores)."""
        return sum(p.n_layer * p.n_expert * p.n_ffn_matrices * p.d_model * p.d_ff
                   for p in self.parts() if p.n_expert > 1)

    def weight_bytes(self, weight_dtype: str, act_dtype: str, expert_dtype: str | None = None) -> float:
        """Bytes of every weight: the blocks' linear layers at ``weight_dtype`` (the routed experts'
        matrices at ``expert_dtype`` when given: gpt-oss ships only its experts in MXFP4), the rest
        (embeddings, LM head, norms, routers, biases) at ``act_dtype`` when the weight dtype is a
        quantised format, else at ``weight_dtype`` too."""
        matrices = sum(p.n_layer * p.layer_matrix_params for p in self.parts())
        other_dtype = unquantised_dtype(weight_dtype, act_dtype)
        total = matrices * DTYPE_BYTES[weight_dtype] + (self.n_params - matrices) * DTYPE_BYTES[other_dtype]
        if expert_dtype is not None and expert_dtype != weight_dtype:
            total += self.routed_expert_matrix_params * (DTYPE_BYTES[expert_dtype] - DTYPE_BYTES[weight_dtype])
        return total

    @property
    def n_params_non_embedding(self) -> int:
        """Layers and final norm only (the count that FLOPs per token scale with)."""
        return self.stack_params + self.norm_params

    def kv_bytes_per_token(self, kv_dtype: str) -> float:
        """KV cache of one token over all layers: K and V, n_kv_head x head_dim each (MLA: the latent)."""
        if self.is_mla:  # the latent and the shared rotary key, one each per token and layer
            return self.n_layer * (self.kv_lora_rank + self.qk_rope_head_dim) * DTYPE_BYTES[kv_dtype]
        return 2.0 * self.n_layer * self.kv_dim * DTYPE_BYTES[kv_dtype]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"n_params": self.n_params, "n_params_active": self.n_params_active}


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
ENGINE_KEYS = ("name", "per_step_us", "per_layer_us", "per_request_us", "source")


@dataclass(frozen=True)
class EngineOverhead:
    """What a serving engine adds to the kernels of each forward step, beyond the operators priced:

    ``per_step_s`` once per step (scheduling, input preparation, sampling launch); ``per_layer_s``
    per layer of the step (glue kernels between the big ones: rotary, KV-cache write, activation);
    ``per_request_s`` per sequence in the step (sampling, detokenisation, output processing)."""

    name: str
    per_step_s: float
    per_layer_s: float
    per_request_s: float
    source: str = ""

    def step_s(self, layers: int, sequences: int) -> float:
        return self.per_step_s + layers * self.per_layer_s + sequences * self.per_request_s


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
    engine: EngineOverhead | None = None  # a serving engine's per-step costs beyond the kernels (`engine:`)

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
        d = {k: getattr(self, k) for k in self.__dataclass_fields__ if k not in ("measured", "interconnect", "engine")}
        d["peak_flops_per_s"] = dict(self.peak_flops_per_s)
        d["engine"] = asdict(self.engine) if self.engine is not None else None
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
    n_layer, d_ff = f.int("n_layer"), f.int("d_ff")
    kv_lora = f.int("kv_lora_rank", default=0, minimum=0)
    norms_per_layer = f.int("norms_per_layer", default=2)
    if norms_per_layer not in (2, 4):
        raise f.fail("norms_per_layer", f"must be 2 (pre-norm) or 4 (pre- and post-norm, gemma), got {norms_per_layer}")
    if kv_lora and (sliding_window or f.has("layers") and any("sliding_window" in g for g in data.get("layers") or ()
                                                             if isinstance(g, Mapping))):
        raise f.fail("kv_lora_rank", "latent attention with a sliding window is not modelled")
    groups = _layer_groups(data.get("layers"), where, n_layer, LayerGroup(
        n_layer, sliding_window, d_ff, n_expert, n_expert_active, d_ff_shared))
    return ModelSpec(
        name=f.str("name"),
        n_layer=n_layer,
        d_model=d_model,
        n_head=n_head,
        n_kv_head=n_kv_head,
        head_dim=head_dim,
        d_ff=d_ff,
        ffn=f.str("ffn", choices=tuple(FFN_KINDS)),
        vocab_size=f.int("vocab_size"),
        max_seq_len=f.int("max_seq_len"),
        tied_embeddings=f.bool("tied_embeddings", False),
        norm=f.str("norm", default="layernorm", choices=NORM_KINDS),
        positional=f.str("positional", default="rope", choices=POSITIONAL_KINDS),
        bias=f.bool("bias", False),
        qkv_bias=f.bool("qkv_bias", False),
        n_expert=n_expert,
        n_expert_active=n_expert_active,
        d_ff_shared=d_ff_shared,
        sliding_window=sliding_window,
        kv_lora_rank=kv_lora,
        q_lora_rank=f.int("q_lora_rank", default=0, minimum=0),
        qk_rope_head_dim=f.int("qk_rope_head_dim", default=0 if not kv_lora else None, minimum=0 if not kv_lora else 1),
        v_head_dim=f.int("v_head_dim", default=0 if not kv_lora else head_dim, minimum=0),
        shared_expert_gate=f.bool("shared_expert_gate", True),
        norms_per_layer=norms_per_layer,
        attention_sinks=f.bool("attention_sinks", False),
        qk_norm=f.bool("qk_norm", False),
        router_bias=f.bool("router_bias", False),
        layer_groups=groups,
        source=source,
    )


LAYER_GROUP_KEYS = ("count", "sliding_window", "d_ff", "n_expert", "n_expert_active", "d_ff_shared")


def _layer_groups(raw: Any, where: str, n_layer: int, model_level: LayerGroup) -> tuple[LayerGroup, ...]:
    """The ``layers:`` list: groups of ``count`` layers, each key replacing the model-level one
    (``sliding_window: null``: full attention; ``n_expert: 1``: a dense FFN, whose ``d_ff`` is then
    required). Groups of the same kind are merged (the order of layers changes no figure on one
    device)."""
    if raw is None:
        return ()
    if not isinstance(raw, list) or not raw:
        raise ProfileError(f"{where}: field 'layers': must be a list of layer groups (count: N, ...), got {raw!r:.60}")
    groups: dict[tuple, LayerGroup] = {}
    for i, g in enumerate(raw):
        key = f"layers[{i}]"
        if not isinstance(g, Mapping):
            raise ProfileError(f"{where}: field '{key}': must be a mapping (count: N, ...), got {g!r:.60}")
        for k in g:
            if k not in LAYER_GROUP_KEYS:
                near = difflib.get_close_matches(str(k), LAYER_GROUP_KEYS, n=1)
                hint = f"; did you mean '{near[0]}'?" if near else f" (known: {', '.join(LAYER_GROUP_KEYS)})"
                raise ProfileError(f"{where}: unknown field '{key}.{k}'{hint}")
        f = _Fields(g, where, prefix=f"{key}.")
        n_expert = f.int("n_expert", default=model_level.n_expert)
        dense = n_expert == 1
        active = f.int("n_expert_active", default=1 if dense else model_level.n_expert_active)
        if active > n_expert:
            raise f.fail("n_expert_active", f"{active} is more than n_expert={n_expert}")
        shared = f.int("d_ff_shared", default=0 if dense else model_level.d_ff_shared, minimum=0)
        if shared and dense:
            raise f.fail("d_ff_shared", "a shared expert needs a mixture of experts (n_expert > 1)")
        window = (f.int("sliding_window") if f.has("sliding_window") else None) if "sliding_window" in g \
            else model_level.sliding_window
        d_ff = f.int("d_ff", default=model_level.d_ff if n_expert == model_level.n_expert else None)
        kind = (window, d_ff, n_expert, active, shared)
        count = f.int("count") + (groups[kind].count if kind in groups else 0)
        groups[kind] = LayerGroup(count, *kind)
    total = sum(g.count for g in groups.values())
    if total != n_layer:
        raise ProfileError(f"{where}: field 'layers': the groups' counts add up to {total}, not n_layer={n_layer}")
    return tuple(groups.values())


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
    engine = engine_from_mapping(data["engine"], where) if f.has("engine") else None
    hw = HardwareSpec(
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
        engine=engine,
    )
    if hw.measured is not None:  # tables that cannot be this device's (issue 19): refused, not priced
        from gpt_batchprof.analytic.efficiency import implausible_rate

        bad = implausible_rate(hw.measured, hw.peak_flops_per_s.get, hw.memory_bandwidth_bytes_per_s)
        if bad:
            raise ProfileError(f"{where}: field 'measured.tables.{bad[0]}': {bad[1]}")
    return hw


def engine_from_mapping(data: Any, where: str) -> EngineOverhead:
    """The optional ``engine:`` section (microseconds); unknown keys refused."""
    if not isinstance(data, Mapping):
        raise ProfileError(f"{where}: field 'engine': expected a mapping ({', '.join(ENGINE_KEYS)})")
    unknown = [k for k in data if k not in ENGINE_KEYS]
    if unknown:
        raise ProfileError(f"{where}: field 'engine.{unknown[0]}': unknown key (known: {', '.join(ENGINE_KEYS)})")
    f = _Fields(data, where, prefix="engine.")
    return EngineOverhead(
        name=f.str("name"),
        per_step_s=f.num("per_step_us", default=0.0, positive=False) * 1e-6,
        per_layer_s=f.num("per_layer_us", default=0.0, positive=False) * 1e-6,
        per_request_s=f.num("per_request_us", default=0.0, positive=False) * 1e-6,
        source=f.str("source", default="") if f.has("source") else "",
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
    if hw.engine is not None:
        e = hw.engine
        d["engine"] = {"name": e.name, "per_step_us": round(e.per_step_s * 1e6, 3),
                       "per_layer_us": round(e.per_layer_s * 1e6, 3), "per_request_us": round(e.per_request_s * 1e6, 3)}
        if e.source:
            d["engine"]["source"] = e.source
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
    from gpt_batchprof.analytic.efficiency import (
        FLOP_KINDS, HOST_STYLES, KIND_AXES, LAUNCH_MODES, UNTYPED_KINDS, MeasuredTables, Table,
    )

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
        link=(lambda ic: (ic.name, ic.bandwidth_bytes_per_s, ic.latency_s))(
            interconnect_from_mapping(data["interconnect"], f"{where}: measured"))
        if data.get("interconnect") is not None else None,
        quality={str(k): dict(v) for k, v in quality.items()}, host_s_per_layer=host_s,
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


# --------------------------------------------------------------------------- HF config.json


def _hf_get(cfg: Mapping[str, Any], where: str, *keys: str, default: Any = None) -> Any:
    for k in keys:
        if cfg.get(k) is not None:
            return cfg[k]
    if default is not None:
        return default
    raise ProfileError(f"{where}: field '{keys[0]}': missing (required for this model_type)")


def _projection_biases(cfg: Mapping[str, Any], where: str, mt: str) -> bool:
    """llama-style ``attention_bias`` and ``mlp_bias``: both true is a model with a bias on every
    projection (the schema's ``bias``); one without the other is refused (one flag cannot say it)."""
    attn, mlp = cfg.get("attention_bias") is True, cfg.get("mlp_bias") is True
    if attn != mlp:
        key = "attention_bias" if attn else "mlp_bias"
        raise ProfileError(f"{where}: field '{key}': biases on only the "
                           f"{'attention' if attn else 'FFN'} projections are not modelled (model_type {mt})")
    return attn


def _qwen_moe_layers(cfg: Mapping[str, Any], g: Callable, n_layer: int) -> dict[str, Any]:
    """qwen2_moe / qwen3_moe: layer i is MoE unless it is in ``mlp_only_layers`` or (i + 1) is not a
    multiple of ``decoder_sparse_step`` (as transformers builds them); the others are dense FFNs of
    ``intermediate_size``."""
    step = cfg.get("decoder_sparse_step") or 1
    dense_only = set(cfg.get("mlp_only_layers") or ())
    moe = {
        "n_expert": g("num_experts"),
        "n_expert_active": g("num_experts_per_tok"),
        "d_ff": g("moe_intermediate_size"),
        "d_ff_shared": cfg.get("shared_expert_intermediate_size") or 0,
    }
    n_dense = sum(1 for i in range(n_layer) if i in dense_only or (i + 1) % step)
    if n_dense:
        moe["layers"] = [{"count": n_layer - n_dense}, {"count": n_dense, "n_expert": 1, "d_ff": g("intermediate_size")}]
    return moe


def _attention_layers(cfg: Mapping[str, Any], where: str, n_layer: int, window: int) -> list[dict[str, Any]]:
    """``layer_types`` ("sliding_attention" / "full_attention" per layer) as layer groups."""
    types = cfg.get("layer_types")
    if not isinstance(types, list) or len(types) != n_layer:
        raise ProfileError(f"{where}: field 'layer_types': must list the attention of each of the "
                           f"{n_layer} layers, got {types!r:.60}")
    unknown = sorted({t for t in types if t not in ("sliding_attention", "full_attention")})
    if unknown:
        raise ProfileError(f"{where}: field 'layer_types': {unknown[0]!r} is not modelled "
                           "(known: sliding_attention, full_attention)")
    sliding = types.count("sliding_attention")
    groups = [{"count": sliding, "sliding_window": window}, {"count": n_layer - sliding, "sliding_window": None}]
    return [grp for grp in groups if grp["count"]]
def _windowed_layers(cfg: Mapping[str, Any], where: str, mt: str, n_layer: Any) -> int:
    """How many layers a config's sliding window applies to (a stack of windowed and full layers
    when not all or none).

    As transformers builds them: an explicit ``layer_types`` list says it per layer; mistral,
    mixtral and phi3 window every layer; qwen2/qwen3 only with ``use_sliding_window: true``, and then
    only the layers from ``max_window_layers`` on (default 28), so Qwen2-7B (28 layers) has none."""
    types = cfg.get("layer_types")
    if isinstance(types, list) and types:
        return sum(t == "sliding_attention" for t in types)
    if not isinstance(n_layer, int) or isinstance(n_layer, bool):
        return 0  # the field checks name the bad value
    if mt in ("mistral", "mixtral", "phi3"):
        return n_layer
    if not cfg.get("use_sliding_window"):
        return 0
    first = cfg.get("max_window_layers", 28)
    if not isinstance(first, int) or isinstance(first, bool):
        return n_layer  # the field checks name the bad value
    return min(n_layer, max(0, n_layer - max(0, first)))


def _rope_decoder_fields(cfg: Mapping[str, Any], g: Callable[..., Any]) -> dict[str, Any]:
    """The fields every rotary, RMSNorm, gated-FFN decoder's config.json states the same way
    (llama, mistral, qwen, phi3, gpt_oss): read in one place."""
    n_head = g("num_attention_heads")
    return {
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
    }


@hf_keys.checked
def model_from_hf_config(cfg: Mapping[str, Any], where: str, name: str) -> ModelSpec:
    """Map a Hugging Face ``config.json`` to the profile schema, then validate it."""
    if not isinstance(cfg, Mapping):
        raise ProfileError(f"{where}: expected a JSON object")
    mt = cfg.get("model_type")
    g = lambda *keys, default=None: _hf_get(cfg, where, *keys, default=default)  # noqa: E731
    out: dict[str, Any] = {"name": name}
    if mt in ("llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "phi3"):
        if mt.startswith("qwen2"):  # Qwen2Attention: q, k, v with biases, o_proj and the FFN without (no config key)
            out |= _rope_decoder_fields(cfg, g) | {"bias": False, "qkv_bias": True}
        else:
            out |= _rope_decoder_fields(cfg, g) | {"bias": _projection_biases(cfg, where, mt)}
        if mt in ("qwen3", "qwen3_moe"):  # Qwen3Attention normalises each query and key head (q_norm, k_norm)
            out["qk_norm"] = True
        if cfg.get("head_dim"):
            out["head_dim"] = cfg["head_dim"]
        window = cfg.get("sliding_window")
        if window and mt == "llama":  # LlamaConfig has no window: e.g. a Gemma-2 config labelled llama
            raise ProfileError(f"{where}: field 'sliding_window': {window} would be dropped (model_type llama "
                               "has no sliding window); label the config with its own model_type")
        n_window = _windowed_layers(cfg, where, mt, out["n_layer"]) if window else 0
        if n_window and n_window >= out["n_layer"]:
            out["sliding_window"] = window
        if mt == "mixtral":
            out |= {"n_expert": g("num_local_experts"), "n_expert_active": g("num_experts_per_tok")}
        if mt in ("qwen2_moe", "qwen3_moe"):
            out |= _qwen_moe_layers(cfg, g, out["n_layer"])
        if n_window and n_window < out["n_layer"]:  # some layers windowed, the rest full: a stack
            if "layers" in out:
                raise ProfileError(f"{where}: field 'sliding_window': windowed layers in a stack of dense and MoE "
                                   f"layers are not modelled (model_type {mt})")
            out["layers"] = [{"count": n_window, "sliding_window": window},
                             {"count": out["n_layer"] - n_window, "sliding_window": None}]
    elif mt == "gpt_oss":
        n_head, n_layer = g("num_attention_heads"), g("num_hidden_layers")
        if cfg.get("attention_bias") is False:
            raise ProfileError(f"{where}: field 'attention_bias': false is not modelled for gpt_oss "
                               "(its experts keep their biases)")
        out |= _rope_decoder_fields(cfg, g) | {
            "head_dim": g("head_dim"),
            "bias": True,  # q, k, v, o and every expert's projections
            "attention_sinks": True,
            "router_bias": True,
            "n_expert": g("num_local_experts"),
            "n_expert_active": g("num_experts_per_tok", "experts_per_token"),
        }
        out["layers"] = _attention_layers(cfg, where, n_layer, g("sliding_window"))
    elif mt == "gemma3":  # the multimodal wrapper: the language model is its text_config (the vision tower is not modelled)
        text = cfg.get("text_config")
        if not isinstance(text, Mapping):
            raise ProfileError(f"{where}: field 'text_config': missing or not an object (gemma3 keeps its language model there)")
        return model_from_hf_config(dict(text) | {"model_type": "gemma3_text"}, f"{where}: text_config", name)
    elif mt == "gemma3_text":
        # Gemma3TextConfig's defaults where the published configs leave keys out (gemma-3-27b-it's text_config
        # gives only the sizes): vocab 262208, 131072 positions, one full-attention layer in 6, tied embeddings
        n_layer = g("num_hidden_layers")
        pattern = cfg.get("sliding_window_pattern") or 6
        out |= {
            "n_layer": n_layer,
            "d_model": g("hidden_size"),
            "n_head": g("num_attention_heads"),
            "n_kv_head": g("num_key_value_heads"),
            "head_dim": g("head_dim"),
            "d_ff": g("intermediate_size"),
            "ffn": "geglu",
            "vocab_size": g("vocab_size", default=262208),
            "max_seq_len": g("max_position_embeddings", default=131072),
            "tied_embeddings": bool(cfg.get("tie_word_embeddings", True)),
            "norm": "rmsnorm",
            "positional": "rope",
            "bias": bool(cfg.get("attention_bias")),
            "norms_per_layer": 4,
            "qk_norm": True,  # Gemma3Attention's q_norm and k_norm
        }
        if cfg.get("layer_types") is not None:
            out["layers"] = _attention_layers(cfg, where, n_layer, g("sliding_window"))
        else:  # layer i is global when (i + 1) is a multiple of the pattern, as transformers builds it
            n_full = n_layer // pattern
            out["layers"] = [grp for grp in ({"count": n_layer - n_full, "sliding_window": g("sliding_window")},
                                            {"count": n_full, "sliding_window": None}) if grp["count"]]
    elif mt in ("deepseek_v3", "kimi_k2"):
        n_layer, n_head = g("num_hidden_layers"), g("num_attention_heads")
        n_kv = g("num_key_value_heads", default=n_head)
        if n_kv != n_head:
            raise ProfileError(f"{where}: field 'num_key_value_heads': {n_kv} differs from num_attention_heads "
                               f"{n_head}; latent attention has one K/V per query head")
        first_dense = cfg.get("first_k_dense_replace") or 0
        freq = cfg.get("moe_layer_freq") or 1
        # as transformers builds them: MoE where i >= first_k_dense_replace and i % moe_layer_freq == 0
        n_moe = sum(1 for i in range(n_layer) if i >= first_dense and i % freq == 0)
        out |= _rope_decoder_fields(cfg, g) | {
            "head_dim": g("qk_nope_head_dim"),
            "kv_lora_rank": g("kv_lora_rank"),
            "q_lora_rank": cfg.get("q_lora_rank") or 0,
            "qk_rope_head_dim": g("qk_rope_head_dim"),
            "v_head_dim": g("v_head_dim"),
            "d_ff": g("moe_intermediate_size"),  # the routed experts' width (dense layers: intermediate_size)
            "bias": bool(cfg.get("attention_bias")),
            "n_expert": g("n_routed_experts"),
            "n_expert_active": g("num_experts_per_tok"),
            "d_ff_shared": (cfg.get("n_shared_experts") or 0) * g("moe_intermediate_size"),
            "shared_expert_gate": False,
            # noaux_tc routing adds a per-expert score correction (e_score_correction_bias)
            "router_bias": cfg.get("topk_method") == "noaux_tc",
        }
        if n_moe < n_layer:
            out["layers"] = [{"count": n_moe}, {"count": n_layer - n_moe, "n_expert": 1, "d_ff": g("intermediate_size")}]
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
        known = ("llama, mistral, mixtral, qwen2, qwen2_moe, qwen3, qwen3_moe, phi3, gpt_oss, gemma3, gemma3_text, "
                 "deepseek_v3, kimi_k2, gpt2, opt, gpt_neox")
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


def hardware_path(ref: str) -> Path:
    """The file a hardware reference (built-in name or path) resolves to."""
    return _resolve("hardware", ref)


def load_hardware(ref: str) -> HardwareSpec:
    path = _resolve("hardware", ref)
    return hardware_from_mapping(_parse_yaml(path), str(path), source=str(path))


def _load_all(kind: str, loader: Callable[[str], Any]) -> list[Any]:
    return [loader(n) for n in builtin_names(kind)]


def all_models() -> list[ModelSpec]:
    return _load_all("models", load_model)


def all_hardware() -> list[HardwareSpec]:
    return _load_all("hardware", load_hardware)
