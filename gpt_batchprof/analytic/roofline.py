"""Prediction of one operator, or of a group of operators, on one device: the roofline,
and the calibrated time when the profile has measured efficiency tables.

roofline = max(FLOPs / peak FLOP/s, bytes / bandwidth) + launches x per-kernel overhead.
Peaks come from the hardware profile as they are: no efficiency factor is hidden here;
the roofline is the ceiling and decides ``bound``.

When the profile has measured efficiency tables (its ``measured:`` section, written by
``calibrate``), ``time_s`` is the calibrated time instead (see analytic/efficiency.py): the
op's FLOPs at the achieved FLOP/s measured for its shape, its bytes at the achieved
bandwidth for its size, plus the measured per-kernel overhead; ``roofline_time_s`` keeps
the roofline. Operators no table covers (embeddings, activations, collectives) keep the
roofline as their best prediction.

The per-kernel overhead depends on how the model runs (``launch``):
- ``eager``: every kernel is launched by the host; each launch's overhead is added in
  series (the profile's ``launch_overhead_us``). This is what a plain PyTorch loop, or any
  CPU run, does.
- ``graphs``: the step is replayed from a CUDA graph, which leaves only a small gap
  between kernels (the profile's ``graph_launch_overhead_us``). This is how serving
  engines (vLLM, SGLang, TensorRT-LLM) run decode steps. GPUs only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from gpt_batchprof.analytic.efficiency import calibrated_time
from gpt_batchprof.analytic.ops import OpCost, OpShape
from gpt_batchprof.analytic.parallel import collective_terms
from gpt_batchprof.errors import BatchprofError, ProfileError
from gpt_batchprof.profiles import HardwareSpec

TIE = 1 - 1e-9  # a calibrated figure this close to its roofline counterpart equals it (interpolation rounding)

# Bounds a prediction names: compute, memory, overhead; link and latency for collectives.
LAUNCH_MODES = ("eager", "graphs")


def launch_mode(launch: str, hw: HardwareSpec) -> str:
    """Resolve ``auto``: graphs on a GPU whose profile gives the in-graph gap
    (``graph_launch_overhead_us``), else eager. Refuse graphs where they cannot be priced."""
    if launch == "auto":
        return "graphs" if hw.kind == "gpu" and hw.graph_launch_overhead_s is not None else "eager"
    if launch not in LAUNCH_MODES:
        raise BatchprofError(f"--launch: unknown mode '{launch}' (choose from auto, {', '.join(LAUNCH_MODES)})")
    if launch == "graphs" and hw.kind != "gpu":
        raise BatchprofError(f"--launch graphs: CUDA graphs need a GPU, and hardware '{hw.name}' is a {hw.kind}")
    if launch == "graphs" and hw.graph_launch_overhead_s is None:
        raise BatchprofError(f"--launch graphs: hardware '{hw.name}' has no graph_launch_overhead_us "
                             "(the per-kernel gap inside a CUDA graph); add it to the profile or use --launch eager")
    return launch


def attention_mode(attention: str, hw: HardwareSpec) -> str:
    """Resolve ``auto``: fused where the profile's tables were measured on a serving engine's
    fused attention kernels (``attn_prefill``/``attn_decode``, e.g. FlashAttention-3 in vLLM),
    else unfused (the eager PyTorch loop: QK^T, softmax, x V)."""
    if attention != "auto":
        return attention
    kinds = {t.kind for t in hw.measured.tables.values()} if hw.measured is not None else set()
    return "fused" if kinds & {"attn_prefill", "attn_decode"} else "unfused"


def kernel_overhead_s(hw: HardwareSpec, launch: str) -> float:
    """Time charged per kernel for launching it, in the given (resolved) launch mode."""
    if launch == "graphs":
        launch_mode("graphs", hw)  # refuses where graphs cannot be priced
        return hw.graph_launch_overhead_s or 0.0
    return hw.launch_overhead_s


def _bound(compute_s: float, memory_s: float, overhead_s: float) -> str:
    """What limits a kernel: the larger roof, or launch overhead when it exceeds both."""
    if overhead_s > max(compute_s, memory_s):
        return "overhead"
    return "compute" if compute_s >= memory_s else "memory"


@dataclass(frozen=True, slots=True)
class Prediction:
    cost: OpCost
    compute_s: float  # FLOPs at peak (NaN when the profile has no peak for the dtype)
    memory_s: float  # bytes at full bandwidth
    overhead_s: float  # kernel launches
    time_s: float  # the best prediction: calibrated when the profile has tables for this op, else the roofline
    bound: str = ""  # compute | memory | overhead (of the roofline); derived from the three times when not given
    note: str = ""  # why a number is missing (e.g. no peak for the dtype)
    roofline_time_s: float | None = None  # None -> time_s (roofline-only prediction)
    prediction: str = "roofline"  # "calibrated" | "roofline" | "mixed" (a group of both): where time_s comes from
    extrapolated: bool = False  # calibrated outside the measured grid (clamped to its edge)
    tables: tuple[str, ...] = ()  # the measured tables time_s was read from
    # a calibrated time_s below roofline_time_s is impossible for a true ceiling: why it happened
    # (a table rate above the profile's peak, a measured overhead below its launch overhead); "" when not
    below_roofline: str = ""

    def __post_init__(self) -> None:
        if not self.bound:
            object.__setattr__(self, "bound", _bound(self.compute_s, self.memory_s, self.overhead_s))
        if self.roofline_time_s is None:
            object.__setattr__(self, "roofline_time_s", self.time_s)

    @property
    def compute_bound(self) -> bool:
        return self.compute_s >= self.memory_s

    @property
    def intensity(self) -> float:
        return self.cost.intensity


def predict(cost: OpCost, hw: HardwareSpec, launch: str = "eager", strict: bool = True,
            roofline_only: bool = False) -> Prediction:
    """Roofline time of one operator row (all its launches), and the calibrated time when the
    profile's measured tables cover its kernel (unless ``roofline_only``).

    ``strict=False``: a profile without a peak for the operator's dtype gives NaN compute
    and total time with a ``note`` instead of raising (bench still reports the measurement).
    """
    if cost.group == "collective":  # priced by the interconnect, not the roofline
        return predict_collective(cost, hw, roofline_only)
    memory_s = cost.bytes / hw.memory_bandwidth_bytes_per_s
    overhead_s = cost.launches * kernel_overhead_s(hw, launch)
    compute_s = 0.0
    if cost.flops:
        try:
            compute_s = cost.flops / hw.peak(cost.compute_dtype)
        except ProfileError as e:
            if strict:
                raise
            return Prediction(cost, math.nan, memory_s, overhead_s, math.nan, bound="memory",
                              note=f"no prediction: {e}")
    roofline_s = max(compute_s, memory_s) + overhead_s
    cal = None if roofline_only or hw.measured is None else calibrated_time(cost, hw.measured, launch)
    if cal is None:
        return Prediction(cost, compute_s, memory_s, overhead_s, roofline_s)
    below = _below_roofline(cost, hw, cal, compute_s, memory_s, overhead_s) if cal.time_s < roofline_s * TIE \
        else ""
    return Prediction(cost, compute_s, memory_s, overhead_s, cal.time_s, roofline_time_s=roofline_s,
                      prediction="calibrated", extrapolated=cal.extrapolated, tables=cal.tables, below_roofline=below)


def _below_roofline(cost: OpCost, hw: HardwareSpec, cal, compute_s: float, memory_s: float, overhead_s: float) -> str:
    """Why a calibrated time fell below the roofline of the same profile: what the calibrated
    time implies beyond a ceiling. Its work time (calibrated minus overhead) does the op's FLOPs
    faster than the profile's peak, or moves its bytes faster than its bandwidth (inputs still in
    cache from the kernel before, tables from another machine or thread count, peaks set too
    low), or its measured overhead is below the profile's launch overhead. The roofline stays the
    bound it was; this says which number to distrust."""
    causes = []
    work_s = cal.time_s - cal.overhead_s
    if work_s > 0 and cost.flops and cost.flops / work_s > hw.peak(cost.compute_dtype) / TIE:
        causes.append(f"{cal.tables[0]} achieves {cost.flops / work_s / 1e12:.4g} TFLOP/s, above the profile's "
                      f"peak {hw.peak(cost.compute_dtype) / 1e12:.4g}")
    if work_s > 0 and cost.bytes and cost.bytes / work_s > hw.memory_bandwidth_bytes_per_s / TIE:
        causes.append(f"{'/'.join(cal.tables)} implies {cost.bytes / work_s / 1e9:.4g} GB/s, above the profile's "
                      f"{hw.memory_bandwidth_bytes_per_s / 1e9:.4g} GB/s (inputs held in cache?)")
    if cal.overhead_s < overhead_s * TIE:
        per = max(cost.launches, 1)
        causes.append(f"measured overhead {cal.overhead_s / per * 1e6:.3g} us per kernel, below the profile's "
                      f"{overhead_s / per * 1e6:.3g} us")
    return "; ".join(causes) or "the measured tables undercut the roofline"


def below_roofline_causes(preds: Sequence[Prediction]) -> list[str]:
    """The distinct causes among predictions whose calibrated time is below their roofline."""
    return list(dict.fromkeys(c for p in preds if p.below_roofline for c in p.below_roofline.split("; ")))


def predict_collective(cost: OpCost, hw: HardwareSpec, roofline_only: bool = False) -> Prediction:
    """A collective row priced by the interconnect: memory_s holds the bandwidth term, overhead_s the latency.

    A measured link (``measured.interconnect``, e.g. all-reduce fitted from a kernel database)
    prices the row unless ``roofline_only``; the datasheet ``interconnect`` is then its roofline."""
    ic = hw.interconnect
    measured = None if roofline_only or hw.measured is None else hw.measured.link
    if ic is None and measured is None:
        raise ProfileError(f"hardware '{hw.name}': no interconnect section to price {cost.op} "
                           "(add interconnect: name, bandwidth_gb_s, latency_us)")
    per_call = cost.bytes / cost.launches if cost.launches else 0.0
    n = cost.launches
    sheet = (ic.bandwidth_bytes_per_s, ic.latency_s) if ic is not None else measured[1:]
    link, lat = collective_terms(cost.op, per_call, cost.shape.ranks, *sheet)
    if measured is None:
        return Prediction(cost, 0.0, n * link, n * lat, n * (link + lat), bound="link" if link >= lat else "latency")
    m_link, m_lat = collective_terms(cost.op, per_call, cost.shape.ranks, measured[1], measured[2])
    return Prediction(cost, 0.0, n * m_link, n * m_lat, n * (m_link + m_lat),
                      bound="link" if m_link >= m_lat else "latency", roofline_time_s=n * (link + lat),
                      prediction="calibrated", tables=("interconnect",))


def prediction_of(preds: Sequence[Prediction]) -> str:
    """Where a group's time comes from: "calibrated" or "roofline" when all members agree, else "mixed"."""
    sources = {p.prediction for p in preds}
    return sources.pop() if len(sources) == 1 else "mixed"


def combine(preds: Sequence[Prediction], op: str, launches: int, shape: OpShape | None = None,
            scale: Sequence[float] | None = None) -> Prediction:
    """A group of kernels run one after another, as one row named ``op``.

    FLOPs, bytes and every time (best and roofline) add up (``scale[i]`` multiplies member
    i, e.g. 2 norms per layer of a block); the group's bound is that of the member taking
    the most time.
    """
    if not preds:
        raise BatchprofError(f"{op}: empty group of operators")
    scale = scale or [1.0] * len(preds)
    c0 = preds[0].cost

    def total(get) -> float:
        return sum(get(p) * s for p, s in zip(preds, scale))

    cost = OpCost(op, c0.phase, c0.batch, c0.new_tokens, c0.kv_len,
                  flops=total(lambda p: p.cost.flops), bytes=total(lambda p: p.cost.bytes),
                  weight_bytes=total(lambda p: p.cost.weight_bytes), launches=launches,
                  compute_dtype=c0.compute_dtype, shape=shape or c0.shape)
    dominant = max(zip(preds, scale), key=lambda ps: ps[0].time_s * ps[1] if not math.isnan(ps[0].time_s) else -1)[0]
    notes = "; ".join(dict.fromkeys(p.note for p in preds if p.note))
    return Prediction(cost, total(lambda p: p.compute_s), total(lambda p: p.memory_s),
                      total(lambda p: p.overhead_s), total(lambda p: p.time_s), bound=dominant.bound, note=notes,
                      roofline_time_s=total(lambda p: p.roofline_time_s), prediction=prediction_of(preds),
                      extrapolated=any(p.extrapolated for p in preds),
                      tables=tuple(dict.fromkeys(t for p in preds for t in p.tables)),
                      below_roofline="; ".join(below_roofline_causes(preds)))


def step_time(costs: Sequence[OpCost], hw: HardwareSpec, launch: str = "eager", roofline_only: bool = False) -> float:
    """Predicted time of one forward step: its operators run one after another (best
    predictions, or the roofline's with ``roofline_only``)."""
    return sum(predict(c, hw, launch, roofline_only=roofline_only).time_s for c in costs)
