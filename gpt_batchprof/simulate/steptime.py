"""Time of one server step (one forward over a mixed batch), from analyze's operator model.

A step feeds some sequences one decode token each (``n`` of them, caches of mean length
``kv``) and others a prefill chunk of ``q`` tokens on top of ``kv`` already cached. It costs
the dense operators over all of its tokens (norm, projections, FFN: they only see a token
matrix), the LM head over the sequences that emit a token, and attention per sequence at
its own length. Decode attention of ``n`` sequences is costed as one batched kernel at the
mean cache length: its FLOPs and bytes are linear in the length, so this equals the sum over
sequences up to rounding of the mean to a whole token. Prefill chunks of equal shape share
one kernel; chunks of different shapes are separate kernels.

Every time comes from ``gpt_batchprof.analytic.step_time`` (``predict`` per operator), so a
calibrated profile changes the simulation the way it changes ``analyze``. Times are memoised
per shape. Decode attention, the one term evaluated at every cache length, is predicted
exactly at multiples of ``kv_grid`` tokens and interpolated linearly in between: under the
roofline it is linear in the cache length (FLOPs and bytes both are), so this is exact but
for the one grid cell where the bound flips; on the benchmark workloads it moves summary
figures by ~1e-12 relative (``benchmarks/simulate_speed.py`` measures it; a test holds it
under 0.5% on a compute-bound CPU profile too), and it makes a mixed-length run ~1.6x faster. ``kv_grid=1``: every
length predicted.
"""

from __future__ import annotations

from gpt_batchprof.analytic import OP_GROUPS, Dtypes, enumerate_ops, launch_mode, step_time
from gpt_batchprof.analytic.gpt import attention_ops
from gpt_batchprof.profiles import HardwareSpec, ModelSpec

_ATTENTION = frozenset(OP_GROUPS["attention"])
KV_GRID = 16


class StepModel:
    """Memoised step times for one model, device, dtype set and attention kind."""

    def __init__(self, model: ModelSpec, hw: HardwareSpec, dtypes: Dtypes = Dtypes(), attention: str = "unfused",
                 kv_grid: int = KV_GRID, launch: str = "auto"):
        self.model, self.hw, self.dtypes, self.attention = model, hw, dtypes, attention
        self.launch = launch_mode(launch, hw)  # per-kernel overhead as analyze charges it
        self.kv_grid = max(1, kv_grid)
        self._decode_attn: dict[tuple[int, int], float] = {}
        self._decode: dict[tuple[int, int], float] = {}
        self._decode_dense: dict[int, float] = {}
        self._dense: dict[int, float] = {}
        self._head: dict[int, float] = {}
        self._prefill_attn: dict[tuple[int, int, int], float] = {}

    def _ops(self, phase: str, batch: int, new_tokens: int = 1, kv_len: int = 0):
        return enumerate_ops(self.model, phase, batch, new_tokens=new_tokens, kv_len=kv_len,
                             dtypes=self.dtypes, attention=self.attention)

    def _attention(self, phase: str, batch: int, q: int, kv: int) -> float:
        ops = attention_ops(self.model, phase, batch, q, kv, self.dtypes, self.attention)
        return step_time(tuple(ops), self.hw, self.launch)

    def decode_step_s(self, n: int, kv: int) -> float:
        """A step of ``n`` decode tokens at ``kv`` cached tokens each: analyze's decode step."""
        t = self._decode.get((n, kv))
        if t is None:
            dense = self._decode_dense.get(n)
            if dense is None:
                ops = self._ops("decode", n)
                dense = step_time(tuple(o for o in ops if o.op not in _ATTENTION), self.hw, self.launch)
                self._decode_dense[n] = dense
            g = self.kv_grid
            lo = kv - kv % g
            attn = self._decode_attention_at(n, lo)
            if lo != kv:
                attn += (self._decode_attention_at(n, lo + g) - attn) * (kv - lo) / g
            t = self._decode[(n, kv)] = dense + attn
        return t

    def _decode_attention_at(self, n: int, kv: int) -> float:
        t = self._decode_attn.get((n, kv))
        if t is None:
            t = self._decode_attn[(n, kv)] = self._attention("decode", n, 1, kv)
        return t

    def _dense_s(self, tokens: int) -> float:
        """Dense operators over ``tokens`` tokens, without the LM head."""
        t = self._dense.get(tokens)
        if t is None:
            ops = self._ops("prefill", 1, new_tokens=tokens)
            t = self._dense[tokens] = step_time(
                tuple(o for o in ops if o.op not in _ATTENTION and o.op != "lm_head"), self.hw, self.launch)
        return t

    def _head_s(self, n: int) -> float:
        t = self._head.get(n)
        if t is None:
            head = tuple(o for o in self._ops("decode", n) if o.op == "lm_head")
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
        if not chunks:
            return self.decode_step_s(n_decode, kv_mean)
        tokens = n_decode + sum(q for q, _ in chunks)
        t = self._dense_s(tokens) + (self._head_s(n_out) if n_out else 0.0)
        if n_decode:
            t += self._attention_decode_s(n_decode, kv_mean)
        shapes: dict[tuple[int, int], int] = {}
        for c in chunks:
            shapes[c] = shapes.get(c, 0) + 1
        for (q, kv), count in shapes.items():
            t += self._prefill_attention_s(q, kv, count)
        return t

    def _attention_decode_s(self, n: int, kv: int) -> float:
        return self.decode_step_s(n, kv) - self._decode_dense[n]
