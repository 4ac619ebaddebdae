"""Every operator of a GPT forward step, with its cost.

One code path for both phases: a step feeds ``q`` new tokens per sequence to the model
while ``kv_len`` tokens per sequence sit in the KV cache (``q`` is an operator's
``new_tokens``). Prefill is ``q`` = the prompt length with an empty cache; decode is ``q = 1`` with ``kv_len`` cached tokens. Attention then spans
``kv_len + q`` keys.

Causal attention in prefill is counted the way each kernel computes it:
- ``unfused`` (QK^T, softmax, x V as separate kernels): the matmuls compute the full
  q x L score matrix and the mask is applied afterwards, so FLOPs cover the full square;
- ``fused`` (FlashAttention-style, no score matrix in memory): masked tiles are skipped,
  so FLOPs cover only the visible (query, key) pairs, about half the square.
The LM head runs on the last position of each sequence only (what generation needs).
Embedding gathers, residual adds, activation functions and rotary embeddings are fused
into their neighbours in serving kernels and are not listed.
"""

from __future__ import annotations

from dataclasses import replace

from gpt_batchprof.analytic.dtypes import Dtypes
from gpt_batchprof.analytic.ops import (
    ATTENTION_OPS, OP_NAMES, OpCost, OpShape, causal_pairs, elementwise_cost, expected_experts_touched, matmul_cost,
)
from gpt_batchprof.analytic.parallel import Parallelism, micro_batch, shard_ops, stage_model
from gpt_batchprof.errors import BatchprofError
from gpt_batchprof.profiles import DTYPE_BYTES, ModelSpec

PHASES = ("prefill", "decode")
ATTENTION_MODES = ("unfused", "fused")


def enumerate_ops(
    model: ModelSpec,
    phase: str,
    batch: int,
    new_tokens: int = 1,
    kv_len: int = 0,
    dtypes: Dtypes = Dtypes(),
    attention: str = "unfused",
    parallel: Parallelism = Parallelism(),
    mla: str = "auto",
    stage: int = 0,
) -> tuple[OpCost, ...]:
    """The operators of one forward step, each totalled over all layers.

    prefill: ``new_tokens`` prompt tokens per sequence, ``kv_len`` already cached (0 unless
    chunked). decode: one new token per sequence, ``kv_len`` cached; ``new_tokens`` is ignored.
    ``parallel``: across several GPUs, the operators of one GPU of pipeline stage ``stage`` (the
    first holds the most layers; ``serving.slowest_stage`` finds the slowest), collectives included
    (see :mod:`gpt_batchprof.analytic.parallel`); on one GPU, the layout is the identity.
    ``mla``: the form of latent attention (``naive``, ``absorbed``; ``auto``: as engines run each phase).
    """
    if phase not in PHASES:
        raise BatchprofError(f"unknown phase '{phase}' (choose from {', '.join(PHASES)})")
    if attention not in ATTENTION_MODES:
        raise BatchprofError(f"unknown attention mode '{attention}' (choose from {', '.join(ATTENTION_MODES)})")
    if mla not in ("auto",) + MLA_FORMS:
        raise BatchprofError(f"--mla-form: unknown form '{mla}' (choose from auto, {', '.join(MLA_FORMS)})")
    q = 1 if phase == "decode" else new_tokens
    if batch < 1 or q < 1 or kv_len < 0:
        raise BatchprofError(f"impossible shape: batch={batch}, new_tokens={q}, kv_len={kv_len}")
    parallel.check(model)  # one GPU's slice of the model, then the layout's transformation (both identities on one)
    local = _device_ops(stage_model(model, parallel, stage), phase, micro_batch(batch, parallel), q, kv_len, dtypes,
                        attention, mla)
    return shard_ops(local, model, phase, batch, q, kv_len, dtypes, parallel, stage)


FFN_OPS = ("moe_router", "ffn_gate", "ffn_up", "ffn_down", "ffn_shared_gate", "ffn_shared_up", "ffn_shared_down")


def _stack(model: ModelSpec, per_part) -> tuple[OpCost, ...]:
    """The rows of a stack of layer kinds: ``per_part(part, last)`` for each uniform part, then rows of
    the same operator and kernel shape added up (one row, launched by the layers of every part).

    Where the parts' attention (or FFN) differs, its rows carry the layer kind in ``shape.variant``
    ("window 128", "full"; "dense 18432", "8 of 256 x 2048 + shared 2048"), so that rows of
    different kernels never merge, even when their shapes happen to agree at this step.
    """
    groups = model.layer_groups
    label_attention = len({g.attention_kind for g in groups}) > 1
    label_ffn = len({g.ffn_kind for g in groups}) > 1
    rows: list[OpCost] = []
    for i, (part, g) in enumerate(zip(model.parts(), groups)):
        for o in per_part(part, i == len(groups) - 1):
            if label_attention and o.op in ATTENTION_OPS:
                o = replace(o, shape=replace(o.shape, variant=g.attention_kind))
            elif label_ffn and o.op in FFN_OPS:
                o = replace(o, shape=replace(o.shape, variant=g.ffn_kind))
            rows.append(o)
    merged: dict[tuple, OpCost] = {}
    for o in rows:
        key = (o.op, o.shape, o.compute_dtype)
        m = merged.get(key)
        merged[key] = o if m is None else replace(
            m, flops=m.flops + o.flops, bytes=m.bytes + o.bytes, weight_bytes=m.weight_bytes + o.weight_bytes,
            launches=m.launches + o.launches)
    return tuple(sorted(merged.values(), key=lambda o: OP_NAMES.index(o.op)))  # stable: parts keep their order


def _device_ops(model: ModelSpec, phase: str, batch: int, q: int, kv_len: int, dtypes: Dtypes,
                attention: str, mla: str = "auto") -> tuple[OpCost, ...]:
    """The operators of one step on one device holding all of ``model`` (``q`` new tokens per sequence)."""
    if model.layer_groups:
        return _stack(model, lambda part, last: _uniform_ops(part, phase, batch, q, kv_len, dtypes, attention, last,
                                                             mla))
    return _uniform_ops(model, phase, batch, q, kv_len, dtypes, attention, True, mla)


def _uniform_ops(model: ModelSpec, phase: str, batch: int, q: int, kv_len: int, dtypes: Dtypes,
                 attention: str, head: bool, mla: str = "auto") -> tuple[OpCost, ...]:
    """The operators of ``model``'s layers, all of one kind; with ``head``, the final norm and LM head too."""
    T = batch * q  # tokens through the dense layers
    w, a = DTYPE_BYTES[dtypes.weight], DTYPE_BYTES[dtypes.act]
    w_other = DTYPE_BYTES[dtypes.unquantised]  # norms, router, LM head
    cd = dtypes.act
    nl, d = model.n_layer, model.d_model
    ctx = (phase, batch, q, kv_len)
    mm = dict(w_bytes=w, a_bytes=a, launches=nl, compute_dtype=cd, ctx=ctx)

    norm_weights = model.norm_params * w_other
    ops: list[OpCost] = [
        elementwise_cost(
            "norm", rows=T, width=d, a_bytes=a, launches=model.norms_per_layer * nl + (1 if head else 0), compute_dtype=cd, ctx=ctx,
            weight_bytes=norm_weights, variant=model.norm,
        ),
    ]
    if model.is_mla:
        ops += _mla_ops(model, phase, batch, q, kv_len, dtypes, attention, mm, mla)
    else:
        ops.append(matmul_cost("qkv_proj", tokens=T, k=d, n=model.q_dim + 2 * model.kv_dim, **mm))
        ops += _uniform_attention(model, phase, batch, q, kv_len, dtypes, attention)
        ops.append(matmul_cost("out_proj", tokens=T, k=model.q_dim, n=d, **mm))

    if model.is_moe:
        ops.append(matmul_cost("moe_router", tokens=T, k=d, n=model.n_expert, **(mm | {"w_bytes": w_other})))
        moe = dict(
            experts_touched=expected_experts_touched(model.n_expert, model.n_expert_active, T),
            routes=model.n_expert_active,
            w_bytes=DTYPE_BYTES[dtypes.expert_weight],
        )
    else:
        moe = {}
    ffn = mm | moe
    if model.n_ffn_matrices == 3:  # gated: swiglu, geglu
        ops.append(matmul_cost("ffn_gate", tokens=T, k=d, n=model.d_ff, **ffn))
    ops.append(matmul_cost("ffn_up", tokens=T, k=d, n=model.d_ff, **ffn))
    ops.append(matmul_cost("ffn_down", tokens=T, k=model.d_ff, n=d, **ffn))
    if model.d_ff_shared:  # qwen2_moe: an always-active shared expert (gated FFN) next to the routed ones
        ops.append(matmul_cost("ffn_shared_gate", tokens=T, k=d, n=model.d_ff_shared, **mm))
        ops.append(matmul_cost("ffn_shared_up", tokens=T, k=d, n=model.d_ff_shared, **mm))
        ops.append(matmul_cost("ffn_shared_down", tokens=T, k=model.d_ff_shared, n=d, **mm))

    if head:
        ops.append(
            matmul_cost("lm_head", tokens=batch, k=d, n=model.vocab_size, w_bytes=w_other, a_bytes=a,
                        launches=1, compute_dtype=cd, ctx=ctx)
        )
    return tuple(ops)


MLA_FORMS = ("naive", "absorbed")


def mla_form(phase: str, mla: str = "auto") -> str:
    """How latent attention runs: ``mla`` unless ``auto``, which is what serving engines do (vLLM,
    SGLang): prefill decompresses K and V once (naive: many queries share them, compute-bound anyway);
    decode attends in the latent space (absorbed: reads only the cached latent, never materialising
    K and V per step)."""
    if mla != "auto":
        return mla
    return "naive" if phase == "prefill" else "absorbed"


def _mla_ops(model: ModelSpec, phase: str, batch: int, q: int, kv_len: int, dtypes: Dtypes, attention: str,
             mm: dict, mla: str = "auto") -> list[OpCost]:
    """Projections and attention of a latent-attention layer (all layers of ``model``), in ``mla_form(phase)``.

    Projections: ``mla_q_down`` (d -> q_lora_rank, when there is one), ``mla_q_up`` (-> heads x
    (head_dim + rope)), ``mla_kv_down`` (d -> kv_lora_rank + rope: the latent and rotary key the cache
    holds), then either ``mla_kv_up`` (naive: every key in view decompressed into K and V, heads x
    (head_dim + v_head_dim)) or ``mla_q_absorb`` / ``mla_v_absorb`` (absorbed: each head's query
    taken into the latent space before attention, and its latent output back to v_head_dim after;
    the same weights as ``mla_kv_up``, applied to the new tokens only), and ``out_proj``.
    The RMSNorms of the compressed query and latent (q_lora_rank + kv_lora_rank wide) are left out:
    a few KB per token. See :func:`_mla_attention` for the attention rows.
    """
    T, d, nh = batch * q, model.d_model, model.n_head
    mats = model.mla_matrices
    ops = [matmul_cost(name, tokens=T, k=mats[name][0], n=mats[name][1], **mm)
           for name in ("mla_q_down", "mla_q_up", "mla_kv_down") if name in mats]
    form = mla_form(phase, mla)
    kvl, nope, v = model.kv_lora_rank, model.head_dim, model.v_head_dim
    per_head = dict(mm, experts_touched=nh, routes=nh)  # one small matrix per head, applied to every token
    if form == "absorbed":
        ops.append(matmul_cost("mla_q_absorb", tokens=T, k=nope, n=kvl, **per_head))
    ops += _mla_attention(model, phase, batch, q, kv_len, dtypes, attention, form)  # naive: mla_kv_up first
    if form == "absorbed":
        ops.append(matmul_cost("mla_v_absorb", tokens=T, k=kvl, n=v, **per_head))
    ops.append(matmul_cost("out_proj", tokens=T, k=mats["out_proj"][0], n=d, **mm))
    return ops


def _mla_attention(model: ModelSpec, phase: str, batch: int, q: int, kv_len: int, dtypes: Dtypes, attention: str,
                   form: str) -> list[OpCost]:
    """Attention of latent-attention layers over L = kv_len + q keys.

    naive: every head has its own decompressed key of head_dim + rope and value of v_head_dim
    (activations written by ``mla_kv_up``). absorbed: all heads attend to the one cached latent
    (kv_lora_rank + rope for the scores, its kv_lora_rank part as the values): an MQA of wide heads.
    """
    L = kv_len + q
    a, kvb, cd = DTYPE_BYTES[dtypes.act], DTYPE_BYTES[dtypes.kv], dtypes.act
    nl, nh, r, kvl = model.n_layer, model.n_head, model.qk_rope_head_dim, model.kv_lora_rank
    ctx = (phase, batch, q, kv_len)
    decompress: list[OpCost] = []
    if form == "naive":  # every key in view decompressed into K (non-rotary part) and V: grows with the cache
        w = DTYPE_BYTES[dtypes.weight]
        decompress = [matmul_cost("mla_kv_up", tokens=batch * L, k=kvl, n=nh * (model.head_dim + model.v_head_dim),
                                  w_bytes=w, a_bytes=a, launches=nl, compute_dtype=cd, ctx=ctx)]
    if form == "naive":
        dk, dv, kv_heads = model.head_dim + r, model.v_head_dim, nh
        k_read, v_read = batch * nh * L * dk * a, batch * nh * L * dv * a  # decompressed, at the activation dtype
    else:
        dk, dv, kv_heads = kvl + r, kvl, 1
        k_read, v_read = batch * L * dk * kvb, batch * L * dv * kvb  # the cache itself
    q_in, out = batch * nh * q * dk * a, batch * nh * q * dv * a
    g = nh // kv_heads
    attn_shape = dict(heads=nh, kv_heads=kv_heads, causal=q > 1)
    if attention == "fused":
        pairs = batch * nh * causal_pairs(q, L)
        return decompress + [OpCost("attn_fused", phase, batch, q, kv_len, flops=nl * 2.0 * (dk + dv) * pairs,
                       bytes=nl * (q_in + out + k_read + (v_read if form == "naive" else 0)),
                       weight_bytes=0.0, launches=nl, compute_dtype=cd,
                       shape=OpShape(m=q, n=L, k=dk, batch=batch, **attn_shape))]
    scores = batch * nh * q * L  # the full rectangle: the mask comes after the matmul
    return decompress + [
        OpCost("attn_score", phase, batch, q, kv_len, flops=nl * 2.0 * dk * scores,
               bytes=nl * (q_in + k_read + scores * a), weight_bytes=0.0, launches=nl, compute_dtype=cd,
               shape=OpShape(m=g * q, n=L, k=dk, batch=batch * kv_heads, **attn_shape)),
        elementwise_cost("attn_softmax", rows=batch * nh * q, width=L, a_bytes=a, launches=nl, compute_dtype=cd,
                         ctx=ctx),
        OpCost("attn_context", phase, batch, q, kv_len, flops=nl * 2.0 * dv * scores,
               bytes=nl * (scores * a + v_read + out), weight_bytes=0.0, launches=nl, compute_dtype=cd,
               shape=OpShape(m=g * q, n=dv, k=L, batch=batch * kv_heads, **attn_shape)),
    ]


def attention_ops(
    model: ModelSpec, phase: str, batch: int, new_tokens: int, kv_len: int, dtypes: Dtypes, attention: str,
    mla: str = "auto",
) -> list[OpCost]:
    """The attention operators of a step with ``new_tokens`` new (the queries, ``q`` below) and
    ``kv_len`` cached tokens per sequence.

    The only operators whose cost depends on ``kv_len`` (``ops.KV_DEPENDENT_OPS``: latent
    attention's naive form adds the decompression of every key); `serving` sums just these over the
    decode steps. With a sliding window the cache holds at most ``window`` tokens: decode
    reads those only; unfused prefill computes the scores of every new key and of the cached
    ones within the window (the window is a mask applied afterwards), fused prefill only the
    pairs inside the window. Chunked attention alike: the cached keys of the first new query's
    chunk (kv_len mod C of them) and the new ones, the full rectangle unfused (chunk boundaries are a
    mask), only the pairs inside each chunk fused. A stack of layer kinds gives each kind's rows (see
    :func:`_stack`).
    """
    if model.layer_groups:
        return list(_stack(model, lambda part, last: _uniform_attention(part, phase, batch, new_tokens, kv_len,
                                                                       dtypes, attention, mla)))
    return _uniform_attention(model, phase, batch, new_tokens, kv_len, dtypes, attention, mla)


def _uniform_attention(model: ModelSpec, phase: str, batch: int, new_tokens: int, kv_len: int, dtypes: Dtypes,
                       attention: str, mla: str = "auto") -> list[OpCost]:
    if model.is_mla:
        return _mla_attention(model, phase, batch, new_tokens, kv_len, dtypes, attention, mla_form(phase, mla))
    q = new_tokens
    window, chunk = model.sliding_window, model.attention_chunk
    # Keys in view: every cached one, those within the window of the first new query, or those of its chunk.
    L = model.keys_in_view(kv_len, q)
    a, kvb, cd = DTYPE_BYTES[dtypes.act], DTYPE_BYTES[dtypes.kv], dtypes.act
    nl, hd, nh, nkv = model.n_layer, model.head_dim, model.n_head, model.n_kv_head
    g = nh // nkv  # query heads per K/V head
    ctx = (phase, batch, q, kv_len)
    q_bytes = batch * nh * q * hd * a  # queries in, or context out
    kv_read = batch * nkv * L * hd * kvb  # K (or V) of every sequence, read once per layer
    attn_shape = dict(heads=nh, kv_heads=nkv, causal=q > 1)
    if attention == "fused":
        pairs = batch * nh * causal_pairs(q, L, window, chunk)
        return [
            OpCost("attn_fused", phase, batch, q, kv_len,
                   flops=nl * 4.0 * hd * pairs,
                   bytes=nl * (2 * q_bytes + 2 * kv_read),
                   weight_bytes=0.0, launches=nl, compute_dtype=cd,
                   shape=OpShape(m=q, n=L, k=hd, batch=batch, **attn_shape)),
        ]
    scores = batch * nh * q * L  # full rectangle: the mask is applied after the matmul
    return [
        OpCost("attn_score", phase, batch, q, kv_len,
               flops=nl * 2.0 * hd * scores,
               bytes=nl * (q_bytes + kv_read + scores * a),
               weight_bytes=0.0, launches=nl, compute_dtype=cd,
               # (B*nkv, g*q, hd) @ (B*nkv, hd, L): the g query heads sharing a K head stacked
               shape=OpShape(m=g * q, n=L, k=hd, batch=batch * nkv, **attn_shape)),
        elementwise_cost("attn_softmax", rows=batch * nh * q, width=L, a_bytes=a, launches=nl,
                         compute_dtype=cd, ctx=ctx),
        OpCost("attn_context", phase, batch, q, kv_len,
               flops=nl * 2.0 * hd * scores,
               bytes=nl * (scores * a + kv_read + q_bytes),
               weight_bytes=0.0, launches=nl, compute_dtype=cd,
               # (B*nkv, g*q, L) @ (B*nkv, L, hd)
               shape=OpShape(m=g * q, n=hd, k=L, batch=batch * nkv, **attn_shape)),
    ]
