"""Operator times from the measured efficiency tables (``profiles/measured.py``: the tables, their
interpolation and their YAML). Pure Python.

Prediction of one launch: max(FLOPs / table rate at its shape, bytes / kernel-table rate at
its size, bytes / copy rate at its size) + overhead; times ``launches``. No other factor.

Host time between kernels (Python, dispatch, the glue kernels no operator lists: residual
adds, rotary, activations, cache writes) is not in any table: ``calibrate`` measures it per
layer of the reference engine (``host_us_per_layer``, by block style) and
:func:`host_time_s` charges n_layer x that figure once per forward step, in eager mode only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from gpt_batchprof.analytic.ops import DENSE_OPS, OpCost
from gpt_batchprof.profiles.measured import FLOP_KINDS, MeasuredTables

# Operators whose kernel is a plain (or, for MoE experts, grouped) matmul: every dense operator of
# the model (ops.DENSE_OPS, shared-expert FFNs included) and seed 002's MLP. Derived, never hand-copied.
_DENSE = DENSE_OPS + ("mlp",)


@dataclass(frozen=True, slots=True)
class Calibrated:
    """The table-based time of one operator row (all its launches)."""

    time_s: float
    compute_s: float  # FLOPs at the interpolated achieved FLOP/s (all launches)
    memory_s: float  # bytes at the achieved bandwidth (all launches)
    overhead_s: float  # measured per-call overhead x launches
    extrapolated: bool
    tables: tuple[str, ...]  # which tables the number comes from


def kernel_tables(cost: OpCost) -> tuple[tuple[str, tuple[float, ...]], ...]:
    """The tables that can describe this operator's kernel, best first, each with the
    operator's coordinates there (empty: no table)."""
    s = cost.shape
    per = max(cost.launches, 1)
    if cost.op in _DENSE:
        if s.batch > 1:  # a batch of expert GEMMs (a fused MoE kernel runs them grouped: no matmul stand-in)
            return ("moe", (s.m, s.n * s.k)), ("bmm", (s.batch, s.m, s.n, s.k))
        return (("matmul", (s.m, s.n, s.k)),)
    if cost.op in ("attn_score", "attn_context"):
        return (("bmm", (s.batch, s.m, s.n, s.k)),)
    if cost.op == "attn_fused":
        bh = s.batch * (s.heads or 1)
        kvh = s.batch * (s.kv_heads or s.heads or 1)
        gqa = (s.heads or 1) / (s.kv_heads or s.heads or 1)
        if s.m == 1:
            return ("attn_decode", (kvh, s.n, gqa, s.k)), ("sdpa_decode", (bh, s.n, s.k))
        # a chunk of q new queries over n keys (chunked prefill, a speculative verify): read the square
        # causal prefill doing as many query-key pairs, sqrt(2 x pairs) long, not the q-long one
        pairs = s.m * (s.n - s.m) + s.m * (s.m + 1) / 2
        length = s.m if s.n <= s.m else math.sqrt(2 * pairs)
        return ("attn_prefill", (kvh, length, gqa, s.k)), ("sdpa_prefill", (bh, s.m, s.k))
    if cost.op == "attn_softmax":
        return (("softmax", (cost.bytes / per,)),)
    if cost.op == "norm":
        return (((s.variant or "layernorm"), (cost.bytes / per,)),)
    return ()


def kernel_table(cost: OpCost) -> tuple[str, tuple[float, ...]] | None:
    """The preferred table for this operator's kernel and its coordinates (None: no table)."""
    found = kernel_tables(cost)
    return found[0] if found else None


def calibrated_time(cost: OpCost, measured: MeasuredTables, launch: str = "eager") -> Calibrated | None:
    """Time of ``cost`` from the tables, or None when no table covers its kernel at its dtype."""
    for kind, coords in kernel_tables(cost):
        table = measured.table(kind, cost.compute_dtype)
        if table is not None:
            break
    else:
        return None
    copy = measured.table("copy", "")
    per = max(cost.launches, 1)
    flops1, bytes1 = cost.flops / per, cost.bytes / per
    hit = table.lookup(coords)
    extrapolated = hit.extrapolated
    if kind in ("sdpa_prefill", "attn_prefill") and cost.shape.n != cost.shape.m:  # chunked prefill: q < kv_len
        extrapolated = True
    used = [table.name]
    compute1 = flops1 / hit.rate if kind in FLOP_KINDS else 0.0
    memory1 = bytes1 / hit.rate if kind not in FLOP_KINDS else 0.0
    if copy is not None and bytes1 > 0:
        c = copy.lookup((bytes1,))
        floor = bytes1 / c.rate
        if floor > max(compute1, memory1):
            extrapolated |= c.extrapolated
        memory1 = max(memory1, floor)
        used.append(copy.name)
    overhead1 = measured.overhead(launch)
    total = per * (max(compute1, memory1) + overhead1)
    return Calibrated(total, per * compute1, per * memory1, per * overhead1, extrapolated, tuple(used))


def host_style(model) -> str:
    """Which measured block a model's host time per layer is read from (see HOST_STYLES)."""
    if model.is_moe:
        return "moe"
    return "llama" if model.positional == "rope" else "gpt2"


def host_time_s(model, hw, launch: str, roofline_only: bool = False) -> float:
    """Host time (Python, dispatch, the glue kernels no operator row lists) of one forward step
    of ``model`` (each of its layers once), charged in eager mode only, from the profile's
    measured ``host_us_per_layer``: n_layer x the figure of the model's block style. 0 for the
    roofline, under CUDA graphs (one replay, no host between kernels), and for profiles
    without the figure (datasheet profiles, older calibrations)."""
    m = hw.measured
    if roofline_only or launch != "eager" or m is None or not m.host_s_per_layer:
        return 0.0
    return model.n_layer * m.host_per_layer(host_style(model))
