"""Model and hardware specs: frozen, in SI units, with the size maths every figure reads
(parameters, weight bytes, KV-cache bytes per token)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Mapping

from gpt_batchprof.errors import ProfileError
from gpt_batchprof.profiles.dtypes import DTYPE_BYTES, store_bytes
from gpt_batchprof.profiles.measured import MeasuredTables

# number of weight matrices in one FFN: gelu (up, down); gated FFNs (gate, up, down) with SiLU
# (swiglu: llama) or tanh-GELU (geglu: gemma) on the gate
FFN_KINDS = {"gelu": 2, "swiglu": 3, "geglu": 3}
NORM_KINDS = ("layernorm", "rmsnorm")
POSITIONAL_KINDS = ("rope", "learned", "alibi")
HARDWARE_KINDS = ("gpu", "cpu")


@dataclass(frozen=True, slots=True)
class LayerGroup:
    """``count`` layers of one kind: their attention (full, a sliding window of
    ``sliding_window`` tokens, or chunks of ``attention_chunk`` tokens) and their FFN (dense of width ``d_ff`` when ``n_expert`` is 1,
    else ``n_expert_active`` of ``n_expert`` experts of width ``d_ff`` plus a shared expert of
    ``d_ff_shared``). Everything else (heads, widths, norms, biases) is the model's."""

    count: int
    sliding_window: int | None
    d_ff: int
    n_expert: int = 1
    n_expert_active: int = 1
    d_ff_shared: int = 0
    attention_chunk: int | None = None

    @property
    def attention_kind(self) -> str:
        if self.attention_chunk is not None:
            return f"chunk {self.attention_chunk}"
        return "full" if self.sliding_window is None else f"window {self.sliding_window}"

    @property
    def ffn_kind(self) -> str:
        if self.n_expert == 1:
            return f"dense {self.d_ff}"
        shared = f" + shared {self.d_ff_shared}" if self.d_ff_shared else ""
        return f"{self.n_expert_active} of {self.n_expert} x {self.d_ff}{shared}"


WEIGHT_SPLITS = ("heads", "kv_heads", "columns", "whole")  # how tensor parallelism cuts a set of weights


@dataclass(frozen=True, slots=True)
class Weights:
    """One set of weights of a layer: how many, how tensor parallelism cuts them (``heads``: with the
    query heads; ``kv_heads``: with the K/V heads, down to one per GPU; ``columns``: with the FFN
    columns; ``whole``: every GPU keeps all of them), whether there is one per routed expert (expert
    parallelism divides those), and which dtype stores them (``matrix``: the weight dtype; ``expert``:
    the routed experts' own; ``other``: what a quantised checkpoint leaves alone, see ``store_bytes``)."""

    what: str
    params: int
    split: str = "whole"
    per_expert: bool = False
    store: str = "other"


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
    # Chunked ("local") attention (Llama 4's attention_chunk_size): positions are cut into chunks of this
    # many tokens and a query at position p sees only the keys of its own chunk, floor(p / C) * C .. p.
    attention_chunk: int | None = None
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
    # The weight format the published checkpoint stores (what analyze prices unless told otherwise):
    # ``checkpoint_dtype`` for the linear layers (DeepSeek-V3: fp8), ``checkpoint_expert_dtype`` for the
    # routed experts only (gpt-oss: mxfp4, attention left at bf16). None: the run's --dtype.
    checkpoint_dtype: str | None = None
    checkpoint_expert_dtype: str | None = None
    layer_groups: tuple[LayerGroup, ...] = ()  # empty: every layer as above
    # per layer, in the order the stack runs them, the index of its group in layer_groups (DeepSeek-V3's
    # first 3 layers dense, gpt-oss alternating); empty: the groups run one after another, as listed.
    # No single-device figure depends on it; pipeline stages (whole layers, in order) do.
    layer_order: tuple[int, ...] = ()
    # Weights outside the decoder that the checkpoint holds (a multimodal model's vision tower and
    # projector): in the weight memory and the total count, never in a text token's FLOPs or active count.
    vision_params: int = 0
    source: str = ""

    def parts(self) -> tuple["ModelSpec", ...]:
        """The stack as uniform models, one per layer group (just ``(self,)`` when uniform).

        Each part has the group's layers and attention / FFN fields; embeddings, final norm and
        LM head belong to the whole model (callers count them once)."""
        if not self.layer_groups:
            return (self,)
        return tuple(
            replace(self, n_layer=g.count, sliding_window=g.sliding_window, d_ff=g.d_ff, n_expert=g.n_expert,
                    n_expert_active=g.n_expert_active, d_ff_shared=g.d_ff_shared, attention_chunk=g.attention_chunk,
                    layer_groups=())
            for g in self.layer_groups
        )

    def layer_sequence(self) -> tuple[int, ...]:
        """Per layer, in the order the stack runs them, the index of its layer group (all 0 when uniform).

        ``layer_order`` when it places each group's count of layers (the schema checks it; a spec
        rebuilt with other groups and the old order falls back to the groups one after another)."""
        contiguous = tuple(i for i, g in enumerate(self.layer_groups) for _ in range(g.count))
        if not self.layer_groups:
            return (0,) * self.n_layer
        if self.layer_order and sorted(self.layer_order) == list(contiguous):
            return self.layer_order
        return contiguous

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

    def layer_weights(self) -> tuple[Weights, ...]:
        """Every weight of one layer (of a uniform model; ``parts()`` gives each kind of a stack): the
        one inventory that parameter counts, weight bytes and each GPU's share
        (``analytic.parallel.weight_split``) are summed from."""
        d, q, kv, nh, n_mat = self.d_model, self.q_dim, self.kv_dim, self.n_head, self.n_ffn_matrices
        moe = self.n_expert > 1
        if self.is_mla:  # the down projections into the compressed query and the latent are not per head
            out = [Weights(name, i * o, "whole" if name in ("mla_q_down", "mla_kv_down") else "heads", store="matrix")
                   for name, (i, o) in self.mla_matrices.items()]
        else:
            out = [Weights("q_proj", d * q, "heads", store="matrix"), Weights("kv_proj", 2 * d * kv, "kv_heads",
                                                                              store="matrix"),
                   Weights("out_proj", q * d, "heads", store="matrix")]
        out.append(Weights("ffn", n_mat * d * self.n_expert * self.d_ff, "columns", moe, "expert" if moe else "matrix"))
        if self.d_ff_shared:
            out.append(Weights("ffn_shared", n_mat * d * self.d_ff_shared, "columns", store="matrix"))
        out.append(Weights("norms", self.norms_per_layer * self.norm_params))
        if self.bias or self.qkv_bias:
            out += [Weights("q_bias", q, "heads"), Weights("kv_bias", 2 * kv, "kv_heads")]
        if self.bias:  # column-parallel biases are cut like their matrix; row-parallel ones are added whole
            out += [Weights("out_bias", d),
                    Weights("ffn_bias", self.n_expert * (n_mat - 1) * self.d_ff, "columns", moe),
                    Weights("ffn_down_bias", self.n_expert * d, per_expert=moe)]
        if moe:
            out.append(Weights("router", d * self.n_expert + (self.n_expert if self.router_bias else 0)))
        if self.d_ff_shared and self.shared_expert_gate:
            out.append(Weights("shared_expert_gate", d))  # sigmoid gate of the shared expert: d_model -> 1
        if self.is_mla:  # RMSNorms of the compressed query and of the latent
            out.append(Weights("latent_norms", self.q_lora_rank + self.kv_lora_rank))
        if self.attention_sinks:
            out.append(Weights("sinks", nh, "heads"))  # one logit per query head
        if self.qk_norm:  # one weight vector for all query heads and one for all key heads
            out.append(Weights("qk_norm", 2 * self.head_dim))
        return tuple(out)

    @property
    def layer_matrix_params(self) -> int:
        """Weights of one block's linear layers (what a quantised checkpoint quantises):
        QKV, output projection, every expert's FFN and the shared expert's."""
        return sum(w.params for w in self.layer_weights() if w.store != "other")

    @property
    def layer_other_params(self) -> int:
        """Biases, norms, the MoE router and the shared expert's gate of one block."""
        return sum(w.params for w in self.layer_weights() if w.store == "other")

    @property
    def expert_params(self) -> int:
        """Weights of one routed expert of a layer (its matrices, and biases where the model has them;
        0 for a dense layer)."""
        return sum(w.params for w in self.layer_weights() if w.per_expert) // self.n_expert

    @property
    def layer_params(self) -> int:
        return self.layer_matrix_params + self.layer_other_params

    @property
    def head_params(self) -> int:
        """The LM head's own weights (0 when tied to the token embedding)."""
        return 0 if self.tied_embeddings else self.vocab_size * self.d_model

    def kv_tokens(self, positions: int) -> int:
        """Tokens a sequence keeps in its KV cache after ``positions`` tokens (sliding window caps it).

        Chunked attention needs only the keys of the current chunk ((positions - 1) mod C + 1 of
        them), but engines (vLLM's chunked local attention) reserve room for a whole chunk per
        sequence: modelled as at most C tokens, as a window of C would be."""
        if self.attention_chunk is not None:
            return min(positions, self.attention_chunk)
        return positions if self.sliding_window is None else min(positions, self.sliding_window)

    def keys_in_view(self, kv_len: int, new_tokens: int) -> int:
        """Keys the attention of a step spans when ``new_tokens`` queries follow ``kv_len`` cached tokens:
        every cached key the first query can see, plus the new ones. Full: kv_len + q; a window of W:
        min(kv_len, W - 1) + q; chunks of C: (kv_len mod C) + q (the first query, at position kv_len,
        sees its chunk's kv_len mod C earlier keys; decode at kv_len cached reads (kv_len mod C) + 1)."""
        if self.attention_chunk is not None:
            return kv_len % self.attention_chunk + new_tokens
        window = self.sliding_window
        return (min(kv_len, window - 1) if window else kv_len) + new_tokens

    @property
    def stack_params(self) -> int:
        """Weights of every layer of the stack (no embeddings, final norm or head)."""
        return sum(p.n_layer * p.layer_params for p in self.parts())

    @property
    def n_params(self) -> int:
        """Every weight: embeddings, all layers, final norm, an untied LM head, and a vision tower's."""
        return self.embedding_params + self.stack_params + self.norm_params + self.head_params + self.vision_params

    @property
    def n_params_active(self) -> int:
        """Weights one token uses: all of them but the routed experts it is not sent to
        (``n_expert - n_expert_active`` per MoE layer). Embeddings and head included, as the
        Qwen and Llama 4 model cards count them; gpt-oss's card leaves the token embedding out
        (``n_params_active - embedding_params``). A vision tower is not active for a text token."""
        idle = sum(p.n_layer * (p.n_expert - p.n_expert_active) * p.expert_params for p in self.parts())
        return self.n_params - idle - self.vision_params

    @property
    def routed_expert_matrix_params(self) -> int:
        """Weights of the routed experts' matrices over all layers (what ``expert_dtype`` stores)."""
        return sum(p.n_layer * w.params for p in self.parts() for w in p.layer_weights() if w.store == "expert")

    def weight_bytes(self, weight_dtype: str, act_dtype: str, expert_dtype: str | None = None) -> float:
        """Bytes of every weight: the blocks' linear layers at ``weight_dtype`` (the routed experts'
        matrices at ``expert_dtype`` when given: gpt-oss ships only its experts in MXFP4), the rest
        (embeddings, LM head, norms, routers, biases) at ``act_dtype`` when the weight dtype is a
        quantised format, else at ``weight_dtype`` too (``store_bytes``)."""
        per = store_bytes(weight_dtype, act_dtype, expert_dtype)
        layers = sum(p.n_layer * w.params * per[w.store] for p in self.parts() for w in p.layer_weights())
        return layers + (self.n_params - self.stack_params) * per["other"]

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

