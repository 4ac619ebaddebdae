"""Time of one server step (one forward over a mixed batch), from analyze's operator model.

A step feeds some sequences one decode token each (``n`` of them, caches of mean length
``kv``) and others a prefill chunk of ``q`` tokens on top of ``kv`` already cached. It costs
the dense operators over all of its tokens (norm, projections, FFN: they only see a token
matrix), the LM head over the sequences that emit a token, and attention per sequence at
its own length. Decode attention of ``n`` sequences is costed as one batched kernel at the
mean cache length: its FLOPs and bytes are linear in the length, so this equals the sum over
sequences up to rounding of the mean to a whole token. Prefill chunks of equal shape share
one kernel; chunks of different shapes are separate kernels.

Every time comes from ``gpt_batchprof.analytic.step_time`` (``predict`` per operator), plus the
host time of one forward (``analytic.efficiency.host_time_s``: eager mode, calibrated profiles
that measured it; once per micro-batch), so a calibrated profile changes the simulation the
way it changes ``analyze``. Times are memoised
per shape. Decode attention, the one term evaluated at every cache length, is predicted
exactly at multiples of ``kv_grid`` tokens and interpolated linearly in between: under the
roofline it is linear in the cache length (FLOPs and bytes both are), so this is exact but
for the one grid cell where the bound flips; on the benchmark workloads it moves summary
figures by ~1e-12 relative (``benchmarks/simulate_speed.py`` measures it; a test holds it
under 0.5% on a compute-bound CPU profile too), and it makes a mixed-length run ~1.6x faster. ``kv_grid=1``: every
length predicted.

Across several GPUs (``parallel``: ``--tp/--pp/--ep``) a step is that of the sharded group,
built from ``analytic.parallel`` as ``analyze --tp`` builds its own: the dense operators and
the collectives (``tp_allreduce``, ``ep_alltoall``, ``pp_sendrecv``) are the per-GPU rows of
``enumerate_ops(..., parallel=)``; the LM head and attention are those of one GPU's slice
(``stage_model``; a stack whose pipeline stages hold different layers times each stage, and the
slowest sets the step). A step of ``S`` sequences is cut into ``m = micro_batches(S)``
micro-batches; its tokens are shared evenly among the ``min(ep x m, S)`` (group,
micro-batch) slots (as a prompt chunk can be split in a pipeline); each expert-parallel
group attends to ``1/ep`` of the sequences (rounded up), spread over its micro-batches as
analyze spreads a batch (rounded up, one kernel per micro-batch); the slowest stage runs
its ``m`` micro-batches, and the step takes ``pipelined(stage time)``: ``(m + pp - 1)``
micro-batch stage-times. A decode-only step of ``n`` sequences is exactly analyze's ``--tp/--pp/--ep``
decode step at batch ``n`` (its rows, padding of uneven micro-batches included); a lone
prompt is exactly its prefill at batch 1, and so is a batch of equal prompts that the
micro-batches and groups divide evenly at that batch. On one GPU all of this reduces to the
step above.
"""

from __future__ import annotations

import math

from gpt_batchprof.analytic import Dtypes, Parallelism, enumerate_ops, launch_mode, step_time
from gpt_batchprof.analytic.efficiency import host_time_s
from gpt_batchprof.analytic.serving import engine_step_s
from gpt_batchprof.analytic.gpt import attention_ops
from gpt_batchprof.analytic.ops import KV_DEPENDENT_OPS
from gpt_batchprof.analytic.parallel import distinct_stages, micro_batch, micro_batches, pipelined, stage_model
from gpt_batchprof.analytic.speculative import Speculation, spec_step
from gpt_batchprof.profiles import HardwareSpec, ModelSpec

_ATTENTION = frozenset(KV_DEPENDENT_OPS)  # attention, and latent attention's decompression of every key
KV_GRID = 16


class StepModel:
    """Memoised step times for one model, device, dtype set, attention kind and GPU layout."""

    def __init__(self, model: ModelSpec, hw: HardwareSpec, dtypes: Dtypes = Dtypes(), attention: str = "unfused",
                 kv_grid: int = KV_GRID, launch: str = "auto", parallel: Parallelism = Parallelism(),
                 speculation: Speculation | None = None, stage: int | None = None):
        self.model, self.hw, self.dtypes, self.attention = model, hw, dtypes, attention
        self.launch = launch_mode(launch, hw)  # per-kernel overhead as analyze charges it
        # chunked attention's cost restarts at every chunk boundary: grid points fall on them, and the
        # cells that end on one are interpolated within their own chunk (see _decode_attention_s)
        self._chunks = tuple(p.attention_chunk for p in model.parts() if p.attention_chunk)
        self.kv_grid = math.gcd(max(1, kv_grid), *self._chunks)
        self.parallel = parallel.check(model, hw)
        stages = distinct_stages(model, parallel)
        self.stage = stages[0] if stage is None else stage
        # one GPU's slice of its pipeline stage (the model itself on one GPU): its attention and LM head
        self.local = stage_model(model, parallel, self.stage)
        # a stack whose pipeline stages hold different layers: each stage timed on its own, and the
        # slowest sets each step (the step time is increasing in the stage time, so the max of the steps)
        self._stages = tuple(StepModel(model, hw, dtypes, attention, kv_grid, self.launch, parallel, speculation, i)
                             for i in stages) if stage is None and len(stages) > 1 else ()
        # host time between kernels of one forward of the stage's layers (eager, calibrated profiles)
        self.host_s = host_time_s(self.local, hw, self.launch)
        self._decode_attn: dict[tuple[int, int], float] = {}
        self._decode: dict[tuple[int, int], float] = {}
        self._decode_dense: dict[int, float] = {}
        self._dense: dict[int, float] = {}
        self._head: dict[int, float] = {}
        self._prefill_attn: dict[tuple[int, int, int], float] = {}
        self.speculation = speculation
        self._spec: dict[tuple[int, int], float] = {}

    def _ops(self, phase: str, batch: int, new_tokens: int = 1, kv_len: int = 0):
        return enumerate_ops(self.model, phase, batch, new_tokens=new_tokens, kv_len=kv_len,
                             dtypes=self.dtypes, attention=self.attention, parallel=self.parallel, stage=self.stage)

    def _attention(self, phase: str, batch: int, q: int, kv: int) -> float:
        ops = attention_ops(self.local, phase, batch, q, kv, self.dtypes, self.attention)
        return step_time(tuple(ops), self.hw, self.launch)

    def _pipelined(self, stage_s: float, sequences: int) -> float:
        return stage_s if self.parallel.pp == 1 else pipelined(stage_s, self.parallel, sequences)

    def decode_step_s(self, n: int, kv: int) -> float:
        """A step of ``n`` decode tokens at ``kv`` cached tokens each: analyze's decode step."""
        if self._stages:
            return max(s.decode_step_s(n, kv) for s in self._stages)
        t = self._decode.get((n, kv))
        if t is None and self.speculation is not None:
            t = self._decode[(n, kv)] = self._speculative_s(n, kv)
        if t is None:
            dense = self._decode_dense.get(n)
            if dense is None:
                ops = self._ops("decode", n)
                dense = step_time(tuple(o for o in ops if o.op not in _ATTENTION), self.hw, self.launch)
                self._decode_dense[n] = dense
            host = micro_batches(n, self.parallel) * self.host_s
            t = self._decode[(n, kv)] = (self._pipelined(dense + host + self._decode_attention_s(n, kv), n)
                                         + engine_step_s(self.model, self.hw, n))
        return t

    def _speculative_s(self, n: int, kv: int) -> float:
        """With speculative decoding, the mean time per token of a decode-only step: a verify
        of k + 1 tokens and k draft steps over the tokens they yield (analytic.speculative);
        linear in the cache length but for bound flips, so interpolated like decode attention."""
        g = self.kv_grid
        lo = kv - kv % g

        def at(c: int) -> float:
            t = self._spec.get((n, c))
            if t is None:
                t = self._spec[(n, c)] = spec_step(self.model, self.hw, self.speculation, n, c, self.dtypes,
                                                   self.attention, self.launch).time_per_token_s
            return t

        t = at(lo)
        if lo == kv:
            return t
        hi = lo + g - (1 if any((lo + g) % c == 0 for c in self._chunks) else 0)  # within one chunk
        return t + (at(hi) - t) * (kv - lo) / (hi - lo)

    def _decode_attention_s(self, n: int, kv: int) -> float:
        """Decode attention of ``n`` sequences at ``kv`` cached tokens on the slowest stage,
        interpolated between multiples of ``kv_grid``."""
        g = self.kv_grid
        lo = kv - kv % g
        attn = self._decode_attention_at(n, lo)
        if lo != kv:
            hi = lo + g
            if any(hi % c == 0 for c in self._chunks):
                hi -= 1  # the next grid point starts a chunk (its keys restart at 1): stay within this one
            attn += (self._decode_attention_at(n, hi) - attn) * (kv - lo) / (hi - lo)
        return attn

    def _decode_attention_at(self, n: int, kv: int) -> float:
        t = self._decode_attn.get((n, kv))
        if t is None:
            # analyze's rows: the busiest group's micro-batches of micro_batch(n) sequences (on one GPU: n, once)
            par = self.parallel
            t = micro_batches(n, par) * self._attention("decode", micro_batch(n, par), 1, kv)
            self._decode_attn[(n, kv)] = t
        return t

    def _dense_s(self, tokens: int) -> float:
        """Dense operators and collectives over ``tokens`` tokens of one micro-batch, without
        the LM head."""
        t = self._dense.get(tokens)
        if t is None:
            ops = self._ops("prefill", 1, new_tokens=tokens)
            t = self._dense[tokens] = step_time(
                tuple(o for o in ops if o.op not in _ATTENTION and o.op != "lm_head"), self.hw, self.launch)
        return t

    def _head_s(self, n: int) -> float:
        """The LM head (one GPU's vocabulary slice) over ``n`` sequences of one micro-batch."""
        t = self._head.get(n)
        if t is None:
            head = tuple(o for o in enumerate_ops(self.local, "decode", n, dtypes=self.dtypes,
                                                  attention=self.attention) if o.op == "lm_head")
            t = self._head[n] = step_time(head, self.hw, self.launch)
        return t

    def _prefill_attention_s(self, q: int, kv: int, count: int) -> float:
        key = (q, kv, count)
        t = self._prefill_attn.get(key)
        if t is None:
            t = self._prefill_attn[key] = self._attention("prefill", count, q, kv)
        return t

    def mixed_step_s(self, n_decode: int, kv_mean: int, chunks: list[tuple[int, int]], n_out: int) -> float:
        """A step with ``n_decode`` decode tokens and prefill ``chunks`` (q, kv) of which
        ``n_out - n_decode`` finish their prompt (and so need the LM head)."""
        if self._stages:
            return max(s.mixed_step_s(n_decode, kv_mean, chunks, n_out) for s in self._stages)
        if not chunks:
            return self.decode_step_s(n_decode, kv_mean)
        par = self.parallel
        seqs = n_decode + len(chunks)
        tokens = n_decode + sum(q for q, _ in chunks)
        m = micro_batches(seqs, par)
        slots = min(par.ep * m, seqs)  # (group, micro-batch) pairs sharing the tokens; 1 on one GPU
        t = m * (self._dense_s(-(-tokens // slots)) + self.host_s) + (m * self._head_s(-(-n_out // slots)) if n_out else 0.0)
        if n_decode:
            t += self._decode_attention_s(n_decode, kv_mean)
        shapes: dict[tuple[int, int], int] = {}
        for c in chunks:
            shapes[c] = shapes.get(c, 0) + 1
        for (q, kv), count in shapes.items():
            # the busiest group's chunks of this shape, spread over the micro-batches: one kernel in each
            count = -(-count // par.ep)
            k = min(m, count)
            t += k * self._prefill_attention_s(q, kv, -(-count // k))
        return self._pipelined(t, seqs) + engine_step_s(self.model, self.hw, seqs)
