"""Serving figures per batch size: TTFT, ITL, end-to-end latency, throughput, memory, cost.

A request is ``prompt_len`` tokens in and ``gen_len`` tokens out. The first output token
comes from prefill (TTFT); each of the other ``gen_len - 1`` comes from one decode step,
evaluated at its own cache length (prompt_len, prompt_len + 1, ...). ITL is one decode
step at ``context_len`` cached tokens (default: the mean cache length of the generation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from gpt_batchprof.analytic.gpt import Dtypes, attention_ops, enumerate_ops
from gpt_batchprof.analytic.ops import ATTENTION_OPS, BLOCK_DENSE_OPS
from gpt_batchprof.analytic.parallel import Parallelism
from gpt_batchprof.analytic.roofline import predict, step_time
from gpt_batchprof.errors import BatchprofError
from gpt_batchprof.profiles import DTYPE_BYTES, HardwareSpec, ModelSpec

CRITICAL_BATCH_LIMIT = 1 << 24  # search no further; beyond it the batch is called "never"


@dataclass(frozen=True, slots=True)
class Scenario:
    prompt_len: int = 512
    gen_len: int = 128
    context_len: int | None = None
    dtypes: Dtypes = Dtypes()
    attention: str = "unfused"

    def __post_init__(self) -> None:
        for name in ("prompt_len", "gen_len"):
            if getattr(self, name) < 1:
                raise BatchprofError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.context_len is not None and self.context_len < 0:
            raise BatchprofError(f"--context-len must be >= 0, got {self.context_len}")

    @property
    def itl_context(self) -> int:
        """Cached tokens at which ITL is quoted."""
        return self.context_len if self.context_len is not None else self.prompt_len + self.gen_len // 2

    @property
    def total_len(self) -> int:
        return self.prompt_len + self.gen_len

    def check_fits_model(self, model: ModelSpec) -> None:
        longest = max(self.total_len, self.itl_context + 1)
        if longest > model.max_seq_len:
            raise BatchprofError(
                f"prompt + generation = {longest} tokens exceeds {model.name}'s max_seq_len "
                f"{model.max_seq_len}; lower --prompt-len / --gen-len / --context-len"
            )


@dataclass(frozen=True, slots=True)
class MemoryUse:
    weights_bytes: float
    kv_cache_bytes: float
    activation_bytes: float

    @property
    def total_bytes(self) -> float:
        return self.weights_bytes + self.kv_cache_bytes + self.activation_bytes


@dataclass(frozen=True, slots=True)
class ServingPoint:
    batch: int
    ttft_s: float
    itl_s: float
    e2e_s: float
    tokens_per_s: float
    speedup: float  # tokens/s against batch 1
    latency_growth: float  # end-to-end latency against batch 1
    memory: MemoryUse
    fits: bool
    cost_per_million_tokens_usd: float | None


@dataclass(frozen=True, slots=True)
class ServingReport:
    points: tuple[ServingPoint, ...]
    critical_batch: int | None
    max_batch: int


def memory_use(model: ModelSpec, scenario: Scenario, batch: int, parallel: Parallelism = Parallelism()) -> MemoryUse:
    """Weights, the KV cache at the end of generation, and the peak transient activations.

    Across several GPUs (``parallel``): those of the fullest GPU (see ``analytic.parallel``).

    Activations: the largest live set of one layer during prefill: the residual stream and
    its normalised copy, plus the wider of the FFN's inner tensors (gate and up for gated
    FFNs, times the active experts) and, for unfused attention, the score and probability
    matrices; plus fp32 logits of the last position.
    """
    if not parallel.is_single:
        from gpt_batchprof.analytic.parallel import parallel_memory_use

        return parallel_memory_use(model, scenario, batch, parallel)
    dt = scenario.dtypes
    a = DTYPE_BYTES[dt.act]
    s = scenario.prompt_len
    tokens = batch * s
    inner = tokens * model.d_ff * (model.n_ffn_matrices - 1) * model.n_expert_active
    qkv = tokens * (model.q_dim + 2 * model.kv_dim)
    scores = 2 * batch * model.n_head * s * s if scenario.attention == "unfused" else 0
    activations = (2 * tokens * model.d_model + max(inner, qkv, scores)) * a + batch * model.vocab_size * 4.0
    return MemoryUse(
        weights_bytes=model.n_params * DTYPE_BYTES[dt.weight],
        kv_cache_bytes=batch * scenario.total_len * model.kv_bytes_per_token(dt.kv),
        activation_bytes=activations,
    )


def max_batch(model: ModelSpec, hw: HardwareSpec, scenario: Scenario, parallel: Parallelism = Parallelism()) -> int:
    """Largest batch whose weights, KV cache and activations fit in device memory.

    Everything but the weights grows in proportion to the batch. Across several GPUs: what
    fits on the fullest one, over all expert-parallel groups.
    """
    if not parallel.is_single:
        from gpt_batchprof.analytic.parallel import parallel_max_batch

        return parallel_max_batch(model, hw, scenario, parallel)
    one = memory_use(model, scenario, 1)
    per_sequence = one.kv_cache_bytes + one.activation_bytes
    free = hw.memory_bytes - one.weights_bytes
    return max(0, math.floor(free / per_sequence)) if free > 0 else 0


def critical_batch(model: ModelSpec, hw: HardwareSpec, scenario: Scenario,
                   parallel: Parallelism = Parallelism()) -> int | None:
    """Smallest batch at which every dense layer of a block is compute-bound in decode.

    Below it, adding sequences to a decode step costs almost no time ("free" batching);
    above it, time grows with the batch. None if that never happens below 2**24.
    """

    def all_compute_bound(b: int) -> bool:
        ops = enumerate_ops(model, "decode", b, kv_len=scenario.itl_context, dtypes=scenario.dtypes,
                            attention=scenario.attention, parallel=parallel)
        return all(predict(o, hw).compute_bound for o in ops if o.op in BLOCK_DENSE_OPS)

    if not all_compute_bound(CRITICAL_BATCH_LIMIT):
        return None
    lo, hi = 1, CRITICAL_BATCH_LIMIT  # smallest b in [lo, hi] that is compute-bound
    while lo < hi:
        mid = (lo + hi) // 2
        if all_compute_bound(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


def latencies(model: ModelSpec, hw: HardwareSpec, scenario: Scenario, batch: int,
              parallel: Parallelism = Parallelism()) -> tuple[float, float, float]:
    """(TTFT, ITL, end-to-end) in seconds for one batch."""
    if not parallel.is_single:
        from gpt_batchprof.analytic.parallel import parallel_latencies

        return parallel_latencies(model, hw, scenario, batch, parallel)
    dt, attn = scenario.dtypes, scenario.attention
    prefill = enumerate_ops(model, "prefill", batch, seq_len=scenario.prompt_len, dtypes=dt, attention=attn)
    ttft = step_time(prefill, hw)
    decode = enumerate_ops(model, "decode", batch, kv_len=scenario.itl_context, dtypes=dt, attention=attn)
    itl = step_time(decode, hw)
    # Only attention depends on the cache length: the rest of a decode step is the same every step.
    fixed = step_time(tuple(o for o in decode if o.op not in ATTENTION_OPS), hw)
    e2e = ttft
    for i in range(scenario.gen_len - 1):
        kv = scenario.prompt_len + i
        e2e += fixed + step_time(tuple(attention_ops(model, "decode", batch, 1, kv, dt, attn)), hw)
    return ttft, itl, e2e


def serving_report(
    model: ModelSpec, hw: HardwareSpec, scenario: Scenario, batches: tuple[int, ...],
    parallel: Parallelism = Parallelism(),
) -> ServingReport:
    """Per batch: latencies, throughput, memory (per GPU) and cost (of all ``parallel.world`` GPUs)."""
    if not batches or min(batches) < 1:
        raise BatchprofError(f"--batch sizes must be >= 1, got {list(batches)}")
    scenario.check_fits_model(model)
    parallel.check(model, hw)
    base_ttft, base_itl, base_e2e = latencies(model, hw, scenario, 1, parallel)
    base_tps = scenario.gen_len / base_e2e
    points = []
    for b in batches:
        ttft, itl, e2e = (base_ttft, base_itl, base_e2e) if b == 1 else latencies(model, hw, scenario, b, parallel)
        tps = b * scenario.gen_len / e2e
        mem = memory_use(model, scenario, b, parallel)
        cost = None
        if hw.price_per_hour_usd is not None:
            cost = parallel.world * hw.price_per_hour_usd / 3600.0 / tps * 1e6
        points.append(
            ServingPoint(
                batch=b, ttft_s=ttft, itl_s=itl, e2e_s=e2e, tokens_per_s=tps,
                speedup=tps / base_tps, latency_growth=e2e / base_e2e, memory=mem,
                fits=mem.total_bytes <= hw.memory_bytes, cost_per_million_tokens_usd=cost,
            )
        )
    return ServingReport(tuple(points), critical_batch(model, hw, scenario, parallel),
                         max_batch(model, hw, scenario, parallel))
