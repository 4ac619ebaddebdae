"""Serving figures per batch size: TTFT, ITL, end-to-end latency, throughput, memory, cost.

A request is ``prompt_len`` tokens in and ``gen_len`` tokens out. The first output token
comes from prefill (TTFT); each of the other ``gen_len - 1`` comes from one decode step,
evaluated at its own cache length (prompt_len, prompt_len + 1, ..., prompt_len + gen_len - 2).
So prompt_len + gen_len - 1 positions are ever embedded or cached: the last token generated
is never fed back. ITL is one decode step at ``context_len`` cached tokens (default: the mean
cache length of the decode steps, prompt_len + gen_len // 2 - 1).

tokens/s = batch x gen_len / e2e, where e2e (TTFT included) is the time from the start of
the prefill to the last token of the batch.

Each forward step (the prefill, every decode step) is the sum of its operators plus, in eager
mode on a profile that measured it, the host time between kernels (``host_time_s``:
n_layer x the measured host time per layer).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from gpt_batchprof.analytic.efficiency import host_time_s
from gpt_batchprof.analytic.gpt import PHASES, Dtypes, attention_ops, enumerate_ops
from gpt_batchprof.analytic.ops import BLOCK_DENSE_OPS, KV_DEPENDENT_OPS, OpCost
from gpt_batchprof.analytic.roofline import kernel_overhead_s, launch_mode, predict, step_time
from gpt_batchprof.analytic.parallel import (
    Parallelism, distinct_stages, micro_batch, micro_batches, pipelined, replica_batch, stage_model, weight_split,
)
from gpt_batchprof.errors import BatchprofError
from gpt_batchprof.profiles import DTYPE_BYTES, HardwareSpec, ModelSpec

CRITICAL_BATCH_LIMIT = 1 << 24  # search no further; beyond it the batch is called "never"
EXACT_STEPS = 64  # decode runs up to this long are summed step by step, longer ones in closed form
SAMPLED_SEGMENTS = 64  # calibrated decode sums: trapezoid segments beyond 4x this many steps


def check_length(model: ModelSpec, positions: int, what: str) -> None:
    """The one length check of every command: ``positions`` token positions must fit the model."""
    if positions > model.max_seq_len:
        raise BatchprofError(
            f"{what} = {positions} positions exceeds {model.name}'s max_seq_len {model.max_seq_len}")


@dataclass(frozen=True, slots=True)
class Scenario:
    """What is analysed: request lengths, dtypes, attention kernel and launch mode.

    Owns the phase -> step mapping: a prefill step feeds ``prompt_len`` new tokens to an empty
    cache; a decode step feeds one token with ``itl_context`` tokens cached.
    ``launch``: ``auto`` (CUDA graphs on a GPU, eager on a CPU), ``eager`` or ``graphs``.
    """

    prompt_len: int = 512
    gen_len: int = 128
    context_len: int | None = None
    dtypes: Dtypes = Dtypes()
    attention: str = "unfused"
    launch: str = "auto"
    mla: str = "auto"  # latent attention's form: naive, absorbed, or auto (naive prefill, absorbed decode)

    def __post_init__(self) -> None:
        for name in ("prompt_len", "gen_len"):
            if getattr(self, name) < 1:
                raise BatchprofError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.context_len is not None and self.context_len < 0:
            raise BatchprofError(f"--context-len must be >= 0, got {self.context_len}")

    @property
    def itl_context(self) -> int:
        """Cached tokens at which ITL is quoted: the mean over the decode steps
        (prompt_len .. prompt_len + gen_len - 2), rounded down, unless given."""
        if self.context_len is not None:
            return self.context_len
        return self.prompt_len + self.gen_len // 2 - 1

    @property
    def positions(self) -> int:
        """Token positions any analysed step embeds or caches: the generation's
        prompt_len + gen_len - 1, or the ITL step's context + 1 when that is longer."""
        return max(self.prompt_len + self.gen_len - 1, self.itl_context + 1)

    def step(self, phase: str) -> tuple[int, int]:
        """(new tokens per sequence, cached tokens) of the step analysed for ``phase``."""
        if phase == "prefill":
            return self.prompt_len, 0
        if phase == "decode":
            return 1, self.itl_context
        raise BatchprofError(f"unknown phase '{phase}' (choose from {', '.join(PHASES)})")

    def ops(self, model: ModelSpec, phase: str, batch: int,
            parallel: Parallelism = Parallelism(), stage: int = 0) -> tuple[OpCost, ...]:
        """The operators `analyze` predicts and `bench` times for one phase and batch
        (across several GPUs: one GPU's of pipeline stage ``stage``, collectives included)."""
        q, kv = self.step(phase)
        return enumerate_ops(model, phase, batch, new_tokens=q, kv_len=kv, dtypes=self.dtypes,
                             attention=self.attention, parallel=parallel, mla=self.mla, stage=stage)

    def launch_for(self, hw: HardwareSpec) -> str:
        return launch_mode(self.launch, hw)

    def check_fits_model(self, model: ModelSpec) -> None:
        if self.dtypes.expert is not None and not model.is_moe:
            raise BatchprofError(f"--expert-dtype {self.dtypes.expert}: {model.name} has no experts")
        gen = self.prompt_len + self.gen_len - 1
        if self.context_len is not None and self.context_len + 1 > gen:
            check_length(model, self.context_len + 1, "--context-len + 1")
        check_length(model, gen, "--prompt-len + --gen-len - 1")


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
    tokens_per_s: float  # batch x gen_len / e2e (TTFT included)
    speedup: float  # tokens/s against batch 1
    latency_growth: float  # end-to-end latency against batch 1
    memory: MemoryUse
    fits: bool
    cost_per_million_tokens_usd: float | None
    # The roofline's figures (equal to the above when the profile has no measured tables).
    roofline_ttft_s: float | None = None
    roofline_itl_s: float | None = None
    roofline_e2e_s: float | None = None
    roofline_tokens_per_s: float | None = None
    engine_step_s: float = 0.0  # the serving engine's share of each step (included in the times above)


@dataclass(frozen=True, slots=True)
class ServingReport:
    points: tuple[ServingPoint, ...]
    critical_batch: int | None
    max_batch: int
    launch: str = "eager"  # the resolved launch mode

    @property
    def critical_batch_reachable(self) -> bool:
        """Whether the critical batch fits in memory (False when there is none)."""
        return self.critical_batch is not None and self.critical_batch <= self.max_batch


def step_activation_bytes(model: ModelSpec, dtypes: Dtypes, attention: str, batch: int, q: int, keys: int) -> float:
    """Peak transient activations of one layer in a step of ``q`` new tokens over ``keys`` keys.

    The residual stream and its normalised copy, plus the widest of: the FFN's inner tensors
    (gate and up for gated FFNs, times the active experts, plus the shared expert's), the QKV
    output and, for unfused attention, the score and probability matrices; plus the fp32
    logits of the last position of each sequence.
    """
    a = DTYPE_BYTES[dtypes.act]
    tokens = batch * q
    inner = tokens * (model.n_ffn_matrices - 1) * (model.d_ff * model.n_expert_active + model.d_ff_shared)
    qkv = tokens * (model.q_dim + 2 * model.kv_dim)
    if model.is_mla:  # prefill decompresses K and V of every key in view (naive); decode does not (absorbed)
        heads = model.n_head * (model.head_dim + model.qk_rope_head_dim)
        qkv = tokens * heads + (batch * keys * model.n_head * (model.head_dim + model.v_head_dim) if q > 1
                                else tokens * model.n_head * (model.kv_lora_rank + model.qk_rope_head_dim))
    scores = 2 * batch * model.n_head * q * keys if attention == "unfused" else 0
    return (2 * tokens * model.d_model + max(inner, qkv, scores)) * a + batch * model.vocab_size * 4.0


def memory_use(model: ModelSpec, scenario: Scenario, batch: int, parallel: Parallelism = Parallelism()) -> MemoryUse:
    """Weights, the KV cache at the longest context any analysed step uses, and the peak
    transient activations over the analysed steps (prefill, and decode at the ITL context).

    Those of the fullest GPU (on one GPU, the model's): its weights (``parallel.weight_split``), the
    KV cache of its group's sequences for its stage's layers and K/V heads, and the transient
    activations of one micro-batch at its shapes; each at its largest over the pipeline stages
    (one stage for a uniform stack cut evenly).
    """
    parallel.check(model)
    dt, attn = scenario.dtypes, scenario.attention
    seqs, micro = replica_batch(batch, parallel), micro_batch(batch, parallel)
    kv = acts = 0.0
    for i in distinct_stages(model, parallel):
        parts = stage_model(model, parallel, i).parts()  # a stack of layer kinds: each kind's cache, its widest layer
        acts = max(acts, max(max(
            step_activation_bytes(p, dt, attn, micro, scenario.prompt_len, scenario.prompt_len),
            step_activation_bytes(p, dt, attn, micro, 1, p.keys_in_view(scenario.itl_context, 1)),
        ) for p in parts))
        kv = max(kv, sum(seqs * p.kv_tokens(scenario.positions) * p.kv_bytes_per_token(dt.kv) for p in parts))
    return MemoryUse(weights_bytes=weight_split(model, parallel, dt).total_bytes, kv_cache_bytes=kv,
                     activation_bytes=acts)


def max_batch(model: ModelSpec, hw: HardwareSpec, scenario: Scenario, parallel: Parallelism = Parallelism()) -> int:
    """Largest batch whose weights, KV cache and activations fit in device memory.

    Everything but the weights grows in proportion to the batch. Across several GPUs: what
    fits on the fullest one, over all expert-parallel groups.
    """
    one = memory_use(model, scenario, 1, parallel)
    per_sequence = one.kv_cache_bytes + one.activation_bytes
    free = hw.memory_bytes - one.weights_bytes
    return max(0, math.floor(free / per_sequence)) * parallel.ep if free > 0 else 0


def critical_batch(model: ModelSpec, hw: HardwareSpec, scenario: Scenario,
                   parallel: Parallelism = Parallelism()) -> int | None:
    """Smallest batch at which every dense layer of a block is compute-bound in decode.

    Below it, adding sequences to a decode step costs almost no time ("free" batching);
    above it, time grows with the batch. None if that never happens below 2**24.
    """

    stages = distinct_stages(model, parallel)

    def all_compute_bound(b: int) -> bool:
        return all(predict(o, hw).compute_bound for i in stages for o in scenario.ops(model, "decode", b, parallel, i)
                   if o.op in BLOCK_DENSE_OPS)

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


def _sum_linear(c0: float, c1: float, lo: float, hi: float) -> float:
    """sum of c0 + c1 * L over the integers L = lo .. hi (empty when hi < lo)."""
    n = hi - lo + 1
    return 0.0 if n <= 0 else n * c0 + c1 * (lo + hi) * n / 2


def _sum_roofline(flops: tuple[float, float], nbytes: tuple[float, float], peak: float, bw: float,
                  lo: int, hi: int) -> float:
    """sum over the integers L = lo .. hi of max(flops(L) / peak, bytes(L) / bw), both linear in L.

    Two lines cross at most once: split the range there and sum each part as an arithmetic series.
    """
    u = (flops[0] / peak, flops[1] / peak)  # compute time = u0 + u1 L
    v = (nbytes[0] / bw, nbytes[1] / bw)  # memory time = v0 + v1 L
    if hi < lo:
        return 0.0

    def bigger(L: float) -> tuple[float, float]:
        return u if u[0] + u[1] * L >= v[0] + v[1] * L else v

    if u[1] == v[1]:
        return _sum_linear(*bigger(lo), lo, hi)
    cross = (v[0] - u[0]) / (u[1] - v[1])  # compute == memory
    split = min(hi, max(lo - 1, math.floor(cross)))  # lo..split on one side, split+1..hi on the other
    return _sum_linear(*bigger(lo), lo, split) + _sum_linear(*bigger(hi), split + 1, hi)


def _sum_sampled(f, lo: int, hi: int, kinks: tuple[int, ...] = ()) -> float:
    """sum of f(x) over the integers x = lo .. hi, for f smooth between ``kinks``.

    Up to 4 x SAMPLED_SEGMENTS terms: term by term. Longer: the trapezoid rule over
    SAMPLED_SEGMENTS equal segments (the kinks added as segment ends), plus the end correction
    (f(lo) + f(hi)) / 2 that turns the integral into the sum (Euler-Maclaurin's first term).
    """
    n = hi - lo + 1
    if n <= 0:
        return 0.0
    if n <= 4 * SAMPLED_SEGMENTS:
        return sum(f(x) for x in range(lo, hi + 1))
    xs = sorted({lo + round(j * (hi - lo) / SAMPLED_SEGMENTS) for j in range(SAMPLED_SEGMENTS + 1)}
                | {k for k in kinks if lo < k < hi})
    ys = [f(x) for x in xs]
    integral = sum((b - a) * (ya + yb) / 2 for a, b, ya, yb in zip(xs, xs[1:], ys, ys[1:]))
    return integral + (ys[0] + ys[-1]) / 2


def decode_attention_time(model: ModelSpec, hw: HardwareSpec, scenario: Scenario, batch: int, launch: str,
                          roofline_only: bool = False) -> float:
    """Attention time summed over the decode steps, cached tokens prompt_len .. prompt_len + gen_len - 2.

    O(1) in gen_len. Roofline: each attention operator's FLOPs and bytes are linear in the keys
    it reads (L = cached + 1, capped by a sliding window), so its time is the max of two lines,
    summed in closed form; short generations (<= EXACT_STEPS steps) are summed step by step.
    Calibrated (the profile has measured tables): the tables' time is smooth but not linear in
    L, so it is summed by :func:`_sum_sampled` (term by term up to 256 steps; beyond, 64
    trapezoid segments: 4e-6 off the step-by-step sum on a test model, held under 1e-4 by a test).
    """
    if model.layer_groups:  # a stack of layer kinds: each kind's attention, summed on its own
        return sum(decode_attention_time(p, hw, scenario, batch, launch, roofline_only) for p in model.parts())
    if model.attention_chunk is not None:
        return _chunked_decode_attention_time(model, hw, scenario, batch, launch, roofline_only)
    dt, attn = scenario.dtypes, scenario.attention
    first, steps = scenario.prompt_len, scenario.gen_len - 1
    window = model.sliding_window

    def step(kv: int) -> float:  # the attention of the decode step with kv cached tokens
        return step_time(attention_ops(model, "decode", batch, 1, kv, dt, attn, scenario.mla), hw, launch,
                         roofline_only)

    if (hw.measured is not None and not roofline_only) or steps <= EXACT_STEPS:
        return _sum_sampled(step, first, first + steps - 1, kinks=(window - 1,) if window else ())
    # keys read by the step with kv cached tokens: L = min(kv + 1, window)
    lo, hi = first + 1, first + steps
    flat = 0
    if window is not None and hi > window:
        flat = hi - max(lo - 1, window)  # steps that read exactly `window` keys
        hi = max(lo - 1, window)
    ops1 = attention_ops(model, "decode", batch, 1, 0, dt, attn, scenario.mla)  # L = 1
    ops2 = attention_ops(model, "decode", batch, 1, 1, dt, attn, scenario.mla)  # L = 2
    total = 0.0
    for o1, o2 in zip(ops1, ops2):
        per_key_flops, per_key_bytes = o2.flops - o1.flops, o2.bytes - o1.bytes
        flops = (o1.flops - per_key_flops, per_key_flops)  # value at L = 0, slope
        nbytes = (o1.bytes - per_key_bytes, per_key_bytes)
        peak = hw.peak(o1.compute_dtype) if o1.flops else 1.0
        total += _sum_roofline(flops, nbytes, peak, hw.memory_bandwidth_bytes_per_s, lo, hi)
        total += (steps - flat) * o1.launches * kernel_overhead_s(hw, launch)
    if flat:
        total += flat * step(window - 1)
    return total


def _chunked_decode_attention_time(model: ModelSpec, hw: HardwareSpec, scenario: Scenario, batch: int, launch: str,
                                   roofline_only: bool) -> float:
    """:func:`decode_attention_time` of chunked-attention layers (chunks of C): the step with kv cached
    tokens reads (kv mod C) + 1 keys, as a full-attention layer with kv mod C cached does. The decode
    steps are cut at the chunk boundaries and each piece summed as full attention's; whole chunks are
    all alike (kv mod C = 0 .. C - 1), summed once."""
    C, dt, attn = model.attention_chunk, scenario.dtypes, scenario.attention
    full = replace(model, attention_chunk=None)

    def piece(lo: int, hi: int) -> float:  # the steps whose kv mod C runs lo .. hi (0 <= lo <= hi < C)
        t = 0.0
        if lo == 0:  # a scenario has at least one cached token: the chunk's first step on its own
            t += step_time(attention_ops(full, "decode", batch, 1, 0, dt, attn, scenario.mla), hw, launch,
                           roofline_only)
            lo = 1
        if hi >= lo:
            t += decode_attention_time(full, hw, replace(scenario, prompt_len=lo, gen_len=hi - lo + 2), batch, launch,
                                       roofline_only)
        return t

    first, last = scenario.prompt_len, scenario.prompt_len + scenario.gen_len - 2
    if last < first:
        return 0.0
    c_first, c_last = first // C, last // C
    if c_first == c_last:
        return piece(first % C, last % C)
    whole = c_last - c_first - 1
    return piece(first % C, C - 1) + piece(0, last % C) + (whole * piece(0, C - 1) if whole else 0.0)


def engine_step_s(model: ModelSpec, hw: HardwareSpec, sequences: int) -> float:
    """What the profile's serving engine adds to one forward step over ``sequences`` sequences,
    beyond its kernels (``engine:`` in the hardware profile; 0 without one): once per step, per
    layer (every layer's glue is on the token's path, whatever the pipeline), per sequence."""
    return 0.0 if hw.engine is None else hw.engine.step_s(model.n_layer, sequences)


def latencies(model: ModelSpec, hw: HardwareSpec, scenario: Scenario, batch: int,
              parallel: Parallelism = Parallelism(), roofline_only: bool = False) -> tuple[float, float, float]:
    """(TTFT, ITL, end-to-end) in seconds for one batch (best predictions, or the roofline's),
    each step charged the serving engine's overhead (:func:`engine_step_s`) on top of its kernels."""
    eng = engine_step_s(model, hw, batch)
    ttft, itl, e2e = kernel_latencies(model, hw, scenario, batch, parallel, roofline_only)
    return ttft + eng, itl + eng, e2e + scenario.gen_len * eng  # gen_len steps: the prefill and gen_len - 1 decodes


@dataclass(frozen=True, slots=True)
class StageTimes:
    """One GPU of one pipeline stage, kernels and host time: its prefill step, its decode step at the
    ITL context, and its decode steps summed over the generation (the part that does not depend on the
    cache length, and attention); each over the stage's micro-batches, before pipelining."""

    stage: int
    prefill_s: float
    decode_s: float
    decode_fixed_s: float  # gen_len - 1 decode steps without attention
    decode_attention_s: float  # attention of the gen_len - 1 decode steps, each at its own length


def stage_times(model: ModelSpec, hw: HardwareSpec, scenario: Scenario, batch: int,
                parallel: Parallelism = Parallelism(), roofline_only: bool = False) -> tuple[StageTimes, ...]:
    """:class:`StageTimes` of each distinct pipeline stage (one on one GPU).

    Only attention depends on the cache length: the rest of a decode step is the same every step.
    A pipelined step is linear in its stage time and each micro-batch repeats the same kernels, so
    the decode sum reuses :func:`decode_attention_time` (closed form, or sampled when calibrated)
    on one GPU's slice of the stage.
    """
    launch, ro, par = scenario.launch_for(hw), roofline_only, parallel
    b, m = micro_batch(batch, par), micro_batches(batch, par)
    out = []
    for i in distinct_stages(model, par):
        loc = stage_model(model, par, i)
        host = m * host_time_s(loc, hw, launch, ro)  # the stage's layers, once per micro-batch (eager only)
        decode = scenario.ops(model, "decode", batch, par, i)
        fixed = step_time(tuple(o for o in decode if o.op not in KV_DEPENDENT_OPS), hw, launch, ro) + host
        out.append(StageTimes(
            i, step_time(scenario.ops(model, "prefill", batch, par, i), hw, launch, ro) + host,
            step_time(decode, hw, launch, ro) + host, (scenario.gen_len - 1) * fixed,
            m * decode_attention_time(loc, hw, scenario, b, launch, ro)))
    return tuple(out)


def slowest_stage(model: ModelSpec, hw: HardwareSpec, scenario: Scenario, phase: str, batch: int,
                  parallel: Parallelism = Parallelism()) -> int:
    """The pipeline stage whose step of ``phase`` takes longest (the one the step waits for; its
    operators are the ones `analyze` lists). 0 when every stage holds the same layers."""
    stages = distinct_stages(model, parallel)
    if len(stages) == 1:
        return stages[0]
    times = stage_times(model, hw, scenario, batch, parallel)
    return max(times, key=lambda t: t.prefill_s if phase == "prefill" else t.decode_s).stage


def kernel_latencies(model: ModelSpec, hw: HardwareSpec, scenario: Scenario, batch: int,
                     parallel: Parallelism = Parallelism(), roofline_only: bool = False) -> tuple[float, float, float]:
    """(TTFT, ITL, end-to-end) of the kernels alone, each step pipelined (on one GPU: as it is).

    The slowest stage sets each step (the LM head and one hand-off to the next stage are charged to
    it, whichever it is: exact when the last stage is the slowest); the generation's decode steps
    are those of the stage slowest over all of them.
    """
    par = parallel
    stages = stage_times(model, hw, scenario, batch, par, roofline_only)
    ttft = pipelined(max(t.prefill_s for t in stages), par, batch)
    itl = pipelined(max(t.decode_s for t in stages), par, batch)
    gen = max(stages, key=lambda t: t.decode_fixed_s + t.decode_attention_s)
    e2e = ttft + pipelined(gen.decode_fixed_s, par, batch) + pipelined(gen.decode_attention_s, par, batch)
    return ttft, itl, e2e


def roofline_latencies(model: ModelSpec, hw: HardwareSpec, scenario: Scenario, batch: int, parallel: Parallelism,
                       best: tuple[float, float, float]) -> tuple[float, float, float]:
    """The roofline's (TTFT, ITL, e2e) beside ``best`` (what :func:`latencies` gave): the same
    figures unless the profile's measured tables made ``best`` a calibrated prediction."""
    return best if hw.measured is None else latencies(model, hw, scenario, batch, parallel, roofline_only=True)


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
        roof = roofline_latencies(model, hw, scenario, b, parallel, (ttft, itl, e2e))
        mem = memory_use(model, scenario, b, parallel)
        cost = None
        if hw.price_per_hour_usd is not None:
            cost = parallel.world * hw.price_per_hour_usd / 3600.0 / tps * 1e6
        points.append(
            ServingPoint(
                batch=b, ttft_s=ttft, itl_s=itl, e2e_s=e2e, tokens_per_s=tps,
                speedup=tps / base_tps, latency_growth=e2e / base_e2e, memory=mem,
                fits=mem.total_bytes <= hw.memory_bytes, cost_per_million_tokens_usd=cost,
                roofline_ttft_s=roof[0], roofline_itl_s=roof[1], roofline_e2e_s=roof[2],
                roofline_tokens_per_s=b * scenario.gen_len / roof[2], engine_step_s=engine_step_s(model, hw, b),
            )
        )
    return ServingReport(tuple(points), critical_batch(model, hw, scenario, parallel),
                         max_batch(model, hw, scenario, parallel), scenario.launch_for(hw))
