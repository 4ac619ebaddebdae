"""Tensor, pipeline and expert parallelism: per-GPU operators, collectives, memory, pipeline time.

A layout is a transformation: of the model into the slice one GPU of a pipeline stage computes
(:func:`stage_model`), and of that slice's operator list into the GPU's rows with expert-parallel
FFN rows and collectives (:func:`shard_ops`). On one GPU both are the identity, so every figure
has one code path for 1 and N GPUs. Layouts follow the layer stack: each layer kind (attention:
full, windowed or latent; FFN: dense or MoE) is cut by its own rule below.

Layout (Megatron-LM style; the same one vLLM and TensorRT-LLM use for inference):

- **Tensor parallel (tp)**. QKV and the FFN's up / gate projections are column-parallel
  (each GPU computes ``1/tp`` of the output features: ``n_head/tp`` query heads,
  ``d_ff/tp`` FFN columns); the attention output projection and the FFN down projection are
  row-parallel (each GPU multiplies its slice and the partial sums are all-reduced). That
  is two all-reduces of the ``tokens x d_model`` activations per layer (after attention,
  after the FFN), plus one after the vocabulary-parallel embedding lookup. K/V heads are
  split like the query heads when ``tp`` divides ``n_kv_head``; when ``n_kv_head < tp``
  each GPU keeps ``ceil(n_kv_head / tp) = 1`` K/V head, i.e. every K/V head is replicated on
  ``tp / n_kv_head`` GPUs (vLLM's ``num_kv_head_replicas``), so K/V weights and the KV
  cache do not shrink past one head per GPU. The LM head and the embedding are split over
  the vocabulary, padded to a multiple of ``tp`` (``ceil(vocab / tp)`` rows per GPU, as
  Megatron pads ``make_vocab_size_divisible_by``). Norm weights, biases of row-parallel
  layers and the MoE router are replicated. Each layer kind of a stack splits its own FFN (dense
  columns, each expert's width, the shared expert's). Multi-head latent attention splits its heads
  (q_up, kv_up, out_proj) while the latent stays whole: its down projections run replicated and
  every GPU caches the full kv_lora_rank + qk_rope_head_dim per token and layer (vLLM's deepseek_v2).
- **Pipeline parallel (pp)**. Layers are cut into ``pp`` stages of whole layers, in the order
  the stack runs them (``ModelSpec.layer_sequence``: DeepSeek-V3's dense layers come first,
  gpt-oss alternates windowed and full ones; the first ``n_layer % pp`` stages take one layer
  more); the embedding sits on the first stage, the final norm and the LM head on the last.
  Each stage's operators are its own layers, charged the LM head and one hand-off as well; the
  slowest stage sets the step (``serving.slowest_stage``). For a uniform stack that is
  ``ceil(n_layer / pp)`` layers and the LM head (exact when ``pp`` divides ``n_layer``).
  A batch is cut into ``micro_batches`` micro-batches that flow through the stages
  (GPipe's forward schedule; for inference there is no backward, so 1F1B is the same schedule).
  Each stage hands its activations to the next (``pp_sendrecv``). One step takes
  ``(m + pp - 1)`` stage-times of one micro-batch: the first micro-batch needs ``pp``
  stage-times to leave the pipeline, each later one a stage-time more. Stages are idle for
  the bubble fraction ``(pp - 1) / (m + pp - 1)``.
- **Expert parallel (ep)**, MoE only. ``n_expert / ep`` experts per GPU in each MoE layer
  (each expert also split over ``tp``; a stack's dense FFN layers are not split by ep).
  Attention and the other dense layers are data-parallel over the ``ep`` groups
  (DeepSeek-V3 / vLLM "DP attention + EP"): each group serves ``ceil(batch / ep)`` sequences
  (the busiest group sets the step time), and tokens are sent to their experts' GPUs and
  back (``ep_alltoall``, dispatch and combine: two per MoE layer).
  Under uniform routing every GPU receives, on average, as many token-rows as its own
  group routes: ``tokens x n_expert_active``. GPUs in all: ``tp x pp x ep``.

Collectives are ordinary operator rows (FLOPs 0; ``bytes`` = the message each GPU
contributes, totalled over launches; ``shape.ranks`` = devices in the group) priced by the
hardware profile's ``interconnect`` (bandwidth ``B`` per direction, per-hop latency ``a``):

- ring all-reduce of ``S`` bytes over ``N``: ``2 (N-1)/N * S / B + 2 (N-1) * a``
  (reduce-scatter then all-gather, ``N - 1`` steps each, every step moving ``S/N``);
- all-to-all: ``(N-1)/N * S / B + (N-1) * a`` (each GPU keeps ``1/N`` and sends the rest);
- send/recv between neighbouring stages: ``S / B + a``.

Pure Python, like the rest of ``analytic``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from gpt_batchprof.analytic.dtypes import Dtypes
from gpt_batchprof.analytic.ops import OpCost, OpShape, expected_experts_touched, matmul_cost
from gpt_batchprof.errors import BatchprofError
from gpt_batchprof.profiles import DTYPE_BYTES, HardwareSpec, LayerGroup, ModelSpec, Weights


@dataclass(frozen=True, slots=True)
class Parallelism:
    """How one model instance is spread over GPUs: ``tp x pp x ep`` of them."""

    tp: int = 1
    pp: int = 1
    ep: int = 1
    micro_batches: int = 1  # pipeline micro-batches per step (only with pp > 1)

    def __post_init__(self) -> None:
        for name in ("tp", "pp", "ep", "micro_batches"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise BatchprofError(f"--{name.replace('_', '-')} must be an integer >= 1, got {v!r}")
        if self.micro_batches > 1 and self.pp == 1:
            raise BatchprofError(f"--micro-batches {self.micro_batches} needs --pp > 1 (micro-batches fill a pipeline)")

    @property
    def world(self) -> int:
        """GPUs that hold one copy of the model."""
        return self.tp * self.pp * self.ep

    @property
    def is_single(self) -> bool:
        return self.world == 1

    @property
    def bubble_fraction(self) -> float:
        """Share of a step each stage sits idle: (pp - 1) / (m + pp - 1) (batches of at least m)."""
        return (self.pp - 1) / (self.micro_batches + self.pp - 1)

    def label(self) -> str:
        return f"TP {self.tp} x PP {self.pp} x EP {self.ep} = {self.world} GPU{'s' if self.world > 1 else ''}"

    def to_dict(self) -> dict[str, int]:
        return {"tp": self.tp, "pp": self.pp, "ep": self.ep, "micro_batches": self.micro_batches,
                "gpus": self.world}

    def check(self, model: ModelSpec, hw: HardwareSpec | None = None) -> "Parallelism":
        """Refuse layouts the model cannot be cut into (and, given ``hw``, multi-GPU without a link)."""
        tp, m = self.tp, model
        for g in m.layer_groups:
            if g.d_ff % tp or g.d_ff_shared % tp:
                raise BatchprofError(f"--tp {tp} does not divide the FFN width of {m.name}'s {g.ffn_kind} layers")
        if m.n_head % tp:
            raise BatchprofError(f"--tp {tp} does not divide {m.name}'s {m.n_head} query heads")
        if m.n_kv_head % tp and tp % m.n_kv_head:
            raise BatchprofError(
                f"--tp {tp}: {m.name}'s {m.n_kv_head} K/V heads can be neither split evenly over {tp} GPUs "
                f"nor replicated evenly (tp must divide n_kv_head, or n_kv_head divide tp)")
        if m.d_ff % tp:
            raise BatchprofError(f"--tp {tp} does not divide {m.name}'s d_ff {m.d_ff} (FFN columns per GPU)")
        if m.d_ff_shared % tp:
            raise BatchprofError(f"--tp {tp} does not divide {m.name}'s shared expert width {m.d_ff_shared}")
        if self.pp > m.n_layer:
            raise BatchprofError(f"--pp {self.pp} is more stages than {m.name}'s {m.n_layer} layers")
        if self.ep > 1 and not m.is_moe:
            raise BatchprofError(f"--ep {self.ep}: {m.name} is a dense model (no experts to split)")
        if m.n_expert % self.ep:
            raise BatchprofError(f"--ep {self.ep} does not divide {m.name}'s {m.n_expert} experts")
        for g in m.layer_groups:
            if g.n_expert > 1 and g.n_expert % self.ep:
                raise BatchprofError(f"--ep {self.ep} does not divide the {g.n_expert} experts of {m.name}'s "
                                     f"{g.ffn_kind} layers")
        if hw is not None and not self.is_single and hw.interconnect is None:
            raise BatchprofError(
                f"hardware '{hw.name}' has no interconnect section, needed for {self.label()}; add one "
                "(interconnect: name, bandwidth_gb_s, latency_us) or measure it with `gpt-batchprof calibrate --tp N`")
        return self


# --------------------------------------------------------------------------- per-GPU sizes


def stage_layers(n_layer: int, pp: int) -> tuple[int, ...]:
    """Layers on each pipeline stage: as even as possible, the first stages take the extra ones."""
    base, extra = divmod(n_layer, pp)
    return tuple(base + (1 if i < extra else 0) for i in range(pp))


def kv_heads_per_gpu(model: ModelSpec, tp: int) -> int:
    """n_kv_head / tp when tp divides it; else ceil(n_kv_head / tp) = 1 head, replicated."""
    return max(1, model.n_kv_head // tp)


def padded_vocab_per_gpu(model: ModelSpec, tp: int) -> int:
    """Vocabulary rows of the embedding / LM head on each GPU (vocab padded to a multiple of tp)."""
    return math.ceil(model.vocab_size / tp)


def layer_groups_of(model: ModelSpec) -> tuple[LayerGroup, ...]:
    """The model's layer groups; a uniform model as one group of all its layers."""
    m = model
    return m.layer_groups or (LayerGroup(m.n_layer, m.sliding_window, m.d_ff, m.n_expert, m.n_expert_active,
                                         m.d_ff_shared, m.attention_chunk),)


def stage_groups(model: ModelSpec, pp: int) -> tuple[tuple[LayerGroup, ...], ...]:
    """Per pipeline stage, the layer groups it holds with their count there (stages hold whole layers
    in the order the stack runs them, ``ModelSpec.layer_sequence``; groups it holds none of left out)."""
    groups, seq = layer_groups_of(model), model.layer_sequence()
    out, start = [], 0
    for n in stage_layers(model.n_layer, pp):
        mine = seq[start:start + n]
        start += n
        out.append(tuple(replace(g, count=mine.count(i)) for i, g in enumerate(groups) if i in mine))
    return tuple(out)


def distinct_stages(model: ModelSpec, par: Parallelism) -> tuple[int, ...]:
    """The first stage of each distinct layer composition (one per kind of stage: the slowest stage is
    among them). A uniform stack cut evenly has one; cut unevenly, two."""
    seen: dict[tuple, int] = {}
    for i, groups in enumerate(stage_groups(model, par.pp)):
        seen.setdefault(groups, i)
    return tuple(seen.values())


def stage_model(model: ModelSpec, par: Parallelism, stage: int = 0) -> ModelSpec:
    """The slice of the model one GPU of pipeline stage ``stage`` computes, as a model of its own: the
    stage's layers (each layer kind with its count there), split over ``tp`` (query heads, K/V heads
    down to one, FFN columns, each expert's width, the shared expert's, the vocabulary). Experts keep
    their count (expert parallelism is applied to the MoE rows, :func:`shard_ops`). Multi-head latent
    attention splits its heads while the latent every head reads stays whole: the KV cache per token
    (kv_lora_rank + qk_rope_head_dim per layer) is replicated on every GPU, and the down projections
    into it (and into the compressed query) run replicated, as vLLM's DeepseekV2MLAAttention
    (vllm/model_executor/models/deepseek_v2.py) builds them: q_a_proj and kv_a_proj_with_mqa
    ReplicatedLinear, q_b_proj and kv_b_proj ColumnParallelLinear, o_proj RowParallelLinear.

    The single-GPU layout is the identity: the model itself."""
    if par.world == 1:
        return model
    if not 0 <= stage < par.pp:
        raise BatchprofError(f"pipeline stage {stage} does not exist in {par.label()} (stages 0 to {par.pp - 1})")
    tp = par.tp
    groups = stage_groups(model, par.pp)[stage]
    split = tuple(replace(g, d_ff=g.d_ff // tp, d_ff_shared=g.d_ff_shared // tp) for g in groups)
    return replace(
        model,
        name=f"{model.name}/{par.label()}",
        n_layer=sum(g.count for g in groups),
        n_head=model.n_head // tp,
        n_kv_head=kv_heads_per_gpu(model, tp),
        d_ff=model.d_ff // tp,
        d_ff_shared=model.d_ff_shared // tp,
        vocab_size=padded_vocab_per_gpu(model, tp),
        layer_groups=split if model.layer_groups else (),
        layer_order=(),  # the stage's layers, group after group (no figure of one stage depends on their order)
    )


def local_model(model: ModelSpec, par: Parallelism) -> ModelSpec:
    """One GPU's slice of the first pipeline stage (it holds the most layers): :func:`stage_model`."""
    return stage_model(model, par, 0)


def replica_batch(batch: int, par: Parallelism) -> int:
    """Sequences one data-parallel attention group serves (the busiest one, with ep groups)."""
    return math.ceil(batch / par.ep)


def micro_batches(batch: int, par: Parallelism) -> int:
    """Micro-batches a step really has: no more than the group's sequences (a sequence is not split)."""
    return min(par.micro_batches, replica_batch(batch, par))


def micro_batch(batch: int, par: Parallelism) -> int:
    """Sequences in one pipeline micro-batch of the busiest group."""
    return math.ceil(replica_batch(batch, par) / micro_batches(batch, par))


@dataclass(frozen=True, slots=True)
class WeightSplit:
    """Weight bytes on the fullest GPU: the part split over GPUs and the part every GPU keeps whole."""

    sharded_bytes: float  # 1/tp of the matrices, embedding and head; experts also 1/ep
    replicated_bytes: float  # norms, row-parallel biases, the router, K/V heads when n_kv_head < tp,
    # latent attention's down projections

    @property
    def total_bytes(self) -> float:
        return self.sharded_bytes + self.replicated_bytes


def gpu_share(weights: Weights, part: ModelSpec, par: Parallelism) -> tuple[int, bool]:
    """Of one set of a layer's weights (``ModelSpec.layer_weights``), how many one GPU holds, and
    whether every GPU holds them whole (replicated: ``whole`` weights, and K/V heads when there are
    fewer than tp). Per-expert weights: ``n_expert / ep`` experts' worth."""
    n, tp = weights.params, par.tp
    if weights.per_expert:
        n = n // part.n_expert * (part.n_expert // par.ep)
    if weights.split == "heads":
        return n // part.n_head * (part.n_head // tp), False
    if weights.split == "kv_heads":
        return n // part.n_kv_head * kv_heads_per_gpu(part, tp), part.n_kv_head < tp
    if weights.split == "columns":
        return n // tp, False
    return n, True


def layer_weight_bytes(part: ModelSpec, par: Parallelism, dtypes: Dtypes) -> tuple[float, float]:
    """(sharded, replicated) weight bytes of one layer of ``part`` (a uniform model: one layer kind)
    on one GPU, summed from the model's one inventory of a layer's weights (so on one GPU their sum
    is what ``ModelSpec.weight_bytes`` counts for the layer)."""
    per = dtypes.store_bytes
    sharded = replicated = 0.0
    for w in part.layer_weights():
        n, whole = gpu_share(w, part, par)
        if whole:
            replicated += n * per[w.store]
        else:
            sharded += n * per[w.store]
    return sharded, replicated


def weight_split(model: ModelSpec, par: Parallelism, dtypes: Dtypes) -> WeightSplit:
    """Weights of the fullest GPU (over the pipeline stages), split into sharded and replicated.

    As ``ModelSpec.weight_bytes``: the blocks' linear layers at the weight dtype, everything else
    (embeddings, LM head, norms, router, biases) at the activation dtype when the weights are a
    quantised format. Each stage holds its own layers (:func:`stage_groups`); the embedding sits on
    the first stage, the final norm and the LM head on the last.
    """
    m, tp = model, par.tp
    wo = dtypes.store_bytes["other"]
    d, norm = m.d_model, m.norm_params
    per_kind = {replace(g, count=0): layer_weight_bytes(p, par, dtypes) for g, p in zip(layer_groups_of(m), m.parts())}
    vocab = padded_vocab_per_gpu(m, tp) * d * wo
    positions = m.max_seq_len * d * wo if m.positional == "learned" else 0
    stages = stage_groups(m, par.pp)
    best: tuple[float, float] = (0.0, 0.0)
    for i, groups in enumerate(stages):
        first, last = i == 0, i == len(stages) - 1
        s = r = 0.0
        for g in groups:
            gs, gr = per_kind[replace(g, count=0)]
            s, r = s + g.count * gs, r + g.count * gr
        if first:
            s += vocab
            r += positions + m.vision_params * wo  # a vision tower: whole on the first stage (a data-parallel encoder)
        if last:
            r += norm * wo
            if not m.tied_embeddings or not first:  # a tied head is the embedding itself on a 1-stage model
                s += vocab
        if s + r > sum(best):
            best = (s, r)
    return WeightSplit(*best)


# --------------------------------------------------------------------------- operators


def _repeat(cost: OpCost, times: int, batch: int) -> OpCost:
    """``cost`` run ``times`` times (once per micro-batch), labelled with the whole step's batch."""
    if times == 1 and cost.batch == batch:
        return cost
    return replace(cost, batch=batch, flops=cost.flops * times, bytes=cost.bytes * times,
                   weight_bytes=cost.weight_bytes * times, launches=cost.launches * times)


def collective_cost(op: str, *, message_bytes: float, launches: int, ranks: int, rows: int, width: int,
                    compute_dtype: str, ctx: tuple[str, int, int, int]) -> OpCost:
    """A collective row: ``launches`` calls, each moving a ``message_bytes`` message per GPU."""
    phase, batch, new_tokens, kv_len = ctx
    return OpCost(op, phase, batch, new_tokens, kv_len, flops=0.0, bytes=launches * message_bytes,
                  weight_bytes=0.0, launches=launches, compute_dtype=compute_dtype,
                  shape=OpShape(m=rows, n=width, k=0, ranks=ranks))


FFN_EXPERT_OPS = ("ffn_gate", "ffn_up", "ffn_down")  # the routed experts' rows (shared experts stay whole)


def shard_ops(local: tuple[OpCost, ...], model: ModelSpec, phase: str, batch: int, q: int, kv_len: int,
              dtypes: Dtypes, par: Parallelism, stage: int = 0) -> tuple[OpCost, ...]:
    """The layout as a transformation of an operator list: ``local`` (the operators of one GPU's
    slice of stage ``stage``, :func:`stage_model`, for one micro-batch) becomes the per-GPU operators
    of that stage for a step of ``batch`` sequences, expert-parallel FFN rows and collectives
    included. On one GPU it is the identity.

    Every row totals the stage's ``micro_batches`` micro-batches; the step time follows
    from them with :func:`pipelined`. Expert parallelism touches the MoE layers' routed experts
    only (a stack's dense FFN layers are data-parallel like attention).
    """
    loc = stage_model(model, par, stage)
    b = micro_batch(batch, par)
    ops = list(local)
    a, nl, d, cd = DTYPE_BYTES[dtypes.act], loc.n_layer, model.d_model, dtypes.act
    ctx = (phase, b, q, kv_len)
    tokens = b * q
    groups = layer_groups_of(loc)
    by_kind = {g.ffn_kind: g for g in groups}  # a stack labels its FFN rows with their kind where kinds differ
    moe_layers: dict[int, int] = {}  # layers of the stage per top-k
    for g in groups:
        if g.n_expert > 1:
            moe_layers[g.n_expert_active] = moe_layers.get(g.n_expert_active, 0) + g.count
    if moe_layers and par.ep > 1:
        for i, c in enumerate(ops):
            g = by_kind[c.shape.variant] if c.shape.variant in by_kind else groups[0]
            if c.op not in FFN_EXPERT_OPS or g.n_expert == 1:
                continue
            # Every GPU holds n_expert/ep experts and receives (uniform routing) as many token-rows as
            # its own group routes, tokens x k; the experts it touches are hit by all ep groups' tokens.
            k = g.n_expert_active
            touched = expected_experts_touched(g.n_expert, k, tokens * par.ep) / par.ep
            row = matmul_cost(c.op, tokens=tokens, k=c.shape.k, n=c.shape.n, w_bytes=DTYPE_BYTES[dtypes.expert_weight],
                              a_bytes=a, launches=c.launches, compute_dtype=cd, ctx=ctx, experts_touched=touched,
                              routes=k)
            ops[i] = replace(row, shape=replace(row.shape, variant=c.shape.variant))
    row = dict(rows=tokens, width=d, compute_dtype=cd, ctx=ctx)
    if par.tp > 1:  # two per layer; one more after the vocabulary-parallel embedding (first stage)
        ops.append(collective_cost("tp_allreduce", message_bytes=tokens * d * a,
                                   launches=2 * nl + (1 if par.pp == 1 else 0), ranks=par.tp, **row))
    if par.ep > 1:  # dispatch and combine in each MoE layer: each token-row goes to k experts and comes back
        for k, n in moe_layers.items():
            ops.append(collective_cost("ep_alltoall", message_bytes=tokens * k * d * a, launches=2 * n,
                                       ranks=par.ep, **row))
    if par.pp > 1:  # the stage's output activations to the next stage
        ops.append(collective_cost("pp_sendrecv", message_bytes=tokens * d * a, launches=1, ranks=2, **row))
    return tuple(_repeat(c, micro_batches(batch, par), batch) for c in ops)


# --------------------------------------------------------------------------- collective pricing


def ring_allreduce_time(nbytes: float, ranks: int, bandwidth: float, latency: float) -> float:
    """2 (N-1)/N * S / B + 2 (N-1) * latency: reduce-scatter then all-gather around a ring."""
    if ranks <= 1:
        return 0.0
    return 2.0 * (ranks - 1) / ranks * nbytes / bandwidth + 2.0 * (ranks - 1) * latency


def alltoall_time(nbytes: float, ranks: int, bandwidth: float, latency: float) -> float:
    """(N-1)/N * S / B + (N-1) * latency: each GPU keeps 1/N of its message and sends the rest."""
    if ranks <= 1:
        return 0.0
    return (ranks - 1) / ranks * nbytes / bandwidth + (ranks - 1) * latency


def sendrecv_time(nbytes: float, bandwidth: float, latency: float) -> float:
    """S / B + latency: one message to the neighbouring stage."""
    return nbytes / bandwidth + latency


def collective_terms(op: str, nbytes: float, ranks: int, bandwidth: float, latency: float) -> tuple[float, float]:
    """(bandwidth term, latency term) of one collective call, seconds."""
    if op == "tp_allreduce":
        t, lat = ring_allreduce_time(nbytes, ranks, bandwidth, latency), ring_allreduce_time(0.0, ranks, 1.0, latency)
    elif op == "ep_alltoall":
        t, lat = alltoall_time(nbytes, ranks, bandwidth, latency), alltoall_time(0.0, ranks, 1.0, latency)
    elif op == "pp_sendrecv":
        t, lat = sendrecv_time(nbytes, bandwidth, latency), latency
    else:
        raise KeyError(op)
    return t - lat, lat


# --------------------------------------------------------------------------- time and memory


def pipelined(stage_s: float, par: Parallelism, batch: int) -> float:
    """One step of the pipeline: ``stage_s`` covers the stage's m micro-batches; the step
    takes (m + pp - 1) micro-batch stage-times."""
    m = micro_batches(batch, par)
    return stage_s * (m + par.pp - 1) / m
