"""Operator costs: the one place FLOPs and bytes are counted.

Conventions (see MISSION_NOTES.md):
- FLOPs count matrix multiply-adds, 2 per multiply-add: (m x k) @ (k x n) is 2*m*n*k.
  Softmax, normalisation and activation functions count zero FLOPs, as
  ``torch.utils.flop_counter.FlopCounterMode`` counts them; they are charged by bytes.
- Bytes are the minimum traffic to device memory: every input read once, every output
  written once, each at its own dtype (weights, activations, KV cache).
- A row stands for ``launches`` identical kernels (one per layer); its FLOPs and bytes
  are totals over all of them.
"""

from __future__ import annotations

from dataclasses import dataclass

# Operator names, in the order a forward pass runs them. Used by tables, JSON and `bench`.
OP_NAMES = (
    "norm",
    "qkv_proj",
    "mla_q_down",
    "mla_q_up",
    "mla_kv_down",
    "mla_kv_up",
    "mla_q_absorb",
    "attn_score",
    "attn_softmax",
    "attn_context",
    "attn_fused",
    "mla_v_absorb",
    "out_proj",
    "moe_router",
    "ffn_gate",
    "ffn_up",
    "ffn_down",
    "ffn_shared_gate",
    "ffn_shared_up",
    "ffn_shared_down",
    "lm_head",
    "tp_allreduce",
    "ep_alltoall",
    "pp_sendrecv",
)
SHARED_EXPERT_OPS = ("ffn_shared_gate", "ffn_shared_up", "ffn_shared_down")  # qwen2_moe's shared expert
# Multi-head latent attention's projections (DeepSeek-V3): query down/up, the latent (cached) and its
# decompression into K and V (naive form), or the decompression absorbed into the query and output (absorbed).
MLA_OPS = ("mla_q_down", "mla_q_up", "mla_kv_down", "mla_kv_up", "mla_q_absorb", "mla_v_absorb")
# Operator groups (sweep's --op accepts these too).
DENSE_OPS = ("qkv_proj",) + MLA_OPS + ("out_proj", "moe_router", "ffn_gate", "ffn_up", "ffn_down") + SHARED_EXPERT_OPS \
    + ("lm_head",)
ATTENTION_OPS = ("attn_score", "attn_softmax", "attn_context", "attn_fused")
# Operators whose cost grows with the keys each sequence has in view (the cache length): attention, and
# latent attention's decompression of every key (naive form). The rest of a step does not depend on it.
KV_DEPENDENT_OPS = ATTENTION_OPS + ("mla_kv_up",)
# Dense layers of a transformer block: the ones whose decode boundness defines the critical batch.
BLOCK_DENSE_OPS = ("qkv_proj",) + MLA_OPS + ("out_proj", "ffn_gate", "ffn_up", "ffn_down") + SHARED_EXPERT_OPS
# Collectives between GPUs (tensor, expert and pipeline parallelism), priced by the interconnect.
COLLECTIVE_OPS = ("tp_allreduce", "ep_alltoall", "pp_sendrecv")
# Composite rows of `bench`: one whole transformer block, and seed 002's plain MLP.
COMPOSITE_OPS = ("block", "mlp")
OP_GROUPS = {"dense": DENSE_OPS, "attention": ATTENTION_OPS, "other": ("norm",), "collective": COLLECTIVE_OPS,
             "composite": COMPOSITE_OPS}


def op_group(op: str) -> str:
    for group, names in OP_GROUPS.items():
        if op in names:
            return group
    raise KeyError(op)


@dataclass(frozen=True, slots=True)
class OpShape:
    """The kernel's problem size, per launch.

    Matmul view: ``batch`` independent (m x k) @ (k x n) products. For attention kernels
    m is query rows per problem, n key length, k head_dim, with ``heads`` query heads
    and ``kv_heads`` key/value heads per sequence; for softmax and norm m is rows and n
    the row length (k = 0); for collectives m is token rows and n d_model (the message is
    m x n activations), over ``ranks`` devices.
    """

    m: int
    n: int
    k: int
    batch: int = 1
    heads: int = 0
    kv_heads: int = 0
    causal: bool = False
    ranks: int = 1  # devices a collective spans (1 for compute kernels)
    variant: str = ""  # kernel flavour where the op name does not say it (norm: layernorm | rmsnorm)


@dataclass(frozen=True, slots=True)
class OpCost:
    """One operator of the model at one phase and batch, totalled over its launches."""

    op: str
    phase: str  # "prefill" | "decode"
    batch: int  # sequences
    new_tokens: int  # tokens per sequence this step feeds in (the prompt in prefill, 1 in decode)
    kv_len: int  # cached tokens per sequence before this step (0 in prefill)
    flops: float
    bytes: float
    weight_bytes: float  # the part of `bytes` that is weights (does not grow with batch)
    launches: int
    compute_dtype: str  # which peak of the hardware profile applies
    shape: OpShape

    @property
    def group(self) -> str:
        return op_group(self.op)

    @property
    def label(self) -> str:
        """The row's name on screen: the operator, and its layer kind where a stack of layer kinds
        has rows of the same operator for different kinds ("attn_score (window 128)")."""
        v = self.shape.variant
        return f"{self.op} ({v})" if v and self.op != "norm" else self.op

    @property
    def intensity(self) -> float:
        """FLOP per byte of memory traffic."""
        return self.flops / self.bytes if self.bytes else 0.0


def matmul_cost(
    op: str,
    *,
    tokens: int,
    k: int,
    n: int,
    w_bytes: float,
    a_bytes: float,
    launches: int,
    compute_dtype: str,
    ctx: tuple[str, int, int, int],
    experts_touched: float = 1.0,
    routes: int = 1,
) -> OpCost:
    """tokens x k activations times a k x n weight (per expert for MoE).

    ``routes``: experts each token is sent to (MoE top-k); ``experts_touched``: distinct
    expert weight matrices read (1 for a dense layer).
    """
    phase, batch, new_tokens, kv_len = ctx
    rows = tokens * routes
    weights = experts_touched * k * n * w_bytes
    per_launch = rows * k * a_bytes + weights + rows * n * a_bytes
    if experts_touched == 1.0:
        shape = OpShape(m=tokens, n=n, k=k)
    else:  # MoE: the mean rows per touched expert (the kernel's view is grouped GEMMs)
        groups = max(1, round(experts_touched))
        shape = OpShape(m=max(1, round(rows / experts_touched)), n=n, k=k, batch=groups)
    return OpCost(
        op=op,
        phase=phase,
        batch=batch,
        new_tokens=new_tokens,
        kv_len=kv_len,
        flops=launches * 2.0 * rows * k * n,
        bytes=launches * per_launch,
        weight_bytes=launches * weights,
        launches=launches,
        compute_dtype=compute_dtype,
        shape=shape,
    )


def elementwise_cost(
    op: str,
    *,
    rows: int,
    width: int,
    a_bytes: float,
    launches: int,
    compute_dtype: str,
    ctx: tuple[str, int, int, int],
    weight_bytes: float = 0.0,
    variant: str = "",
) -> OpCost:
    """Reads rows x width activations and writes as many (softmax, norm)."""
    phase, batch, new_tokens, kv_len = ctx
    per_launch = 2.0 * rows * width * a_bytes + weight_bytes
    return OpCost(
        op=op,
        phase=phase,
        batch=batch,
        new_tokens=new_tokens,
        kv_len=kv_len,
        flops=0.0,
        bytes=launches * per_launch,
        weight_bytes=launches * weight_bytes,
        launches=launches,
        compute_dtype=compute_dtype,
        shape=OpShape(m=rows, n=width, k=0, variant=variant),
    )


def expected_experts_touched(n_expert: int, n_active: int, tokens: int) -> float:
    """Distinct experts a batch of ``tokens`` routes to, on average, under uniform routing.

    Each token picks ``n_active`` of ``n_expert``; an expert is missed by one token with
    probability 1 - n_active/n_expert, so by all of them with that to the power ``tokens``.
    """
    return n_expert * (1.0 - (1.0 - n_active / n_expert) ** tokens)


def causal_pairs(q_len: int, kv_len: int, window: int | None = None, chunk: int | None = None) -> int:
    """(query, key) pairs a causal kernel that skips masked work computes.

    Queries are the last ``q_len`` of ``kv_len`` positions; query i sees keys 0..i, or only
    the last ``window`` of them with sliding-window attention, or (chunked attention, chunks of
    ``chunk`` positions from position 0) only those of its own chunk: position p sees (p mod chunk) + 1.
    """
    lo, hi = kv_len - q_len + 1, kv_len
    if chunk is not None:
        # keys seen by positions 0 .. n-1: whole chunks of 1 + 2 + ... + chunk, then the partial one
        def seen(n: int) -> int:
            full, part = divmod(n, chunk)
            return full * chunk * (chunk + 1) // 2 + part * (part + 1) // 2
        return seen(kv_len) - seen(kv_len - q_len)
    # Query at position p (0-based) sees min(p + 1, window) keys; sum j = p + 1 over
    # kv_len - q_len + 1 .. kv_len, the part below the window as an arithmetic series.
    if window is None or hi <= window:
        return (lo + hi) * q_len // 2
    below = max(0, window - lo + 1)  # j = lo .. window-1 count themselves; the rest count `window`
    return (lo + lo + below - 1) * below // 2 + (q_len - below) * window
