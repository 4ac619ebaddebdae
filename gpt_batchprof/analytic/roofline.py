"""Prediction of one operator on one device: the roofline, and the calibrated time.

roofline = max(FLOPs / peak FLOP/s, bytes / bandwidth) + launches x launch overhead.
Peaks come from the hardware profile as they are: no efficiency factor is hidden here;
the roofline is the ceiling and decides ``bound``.
When the profile has measured efficiency tables (its `measured:` section, written by
`calibrate`), ``time_s`` is the calibrated time instead (see analytic/efficiency.py): the
op's FLOPs at the achieved FLOP/s measured for its shape, its bytes at the achieved
bandwidth for its size, plus the measured per-kernel overhead; ``roofline_time_s`` keeps
the roofline.
"""

from __future__ import annotations

from dataclasses import dataclass

from gpt_batchprof.analytic.efficiency import calibrated_time

from gpt_batchprof.analytic.ops import OpCost
from gpt_batchprof.profiles import HardwareSpec

BOUNDS = ("compute", "memory", "overhead")


@dataclass(frozen=True, slots=True)
class Prediction:
    cost: OpCost
    compute_s: float  # FLOPs at peak
    memory_s: float  # bytes at full bandwidth
    overhead_s: float  # kernel launches
    time_s: float  # the best prediction: calibrated when the profile has tables for this op, else the roofline
    roofline_time_s: float | None = None  # None -> time_s (roofline-only prediction)
    prediction: str = "roofline"  # "calibrated" | "roofline": where time_s comes from
    extrapolated: bool = False  # calibrated outside the measured grid (clamped to its edge)
    tables: tuple[str, ...] = ()  # the measured tables time_s was read from

    def __post_init__(self) -> None:
        if self.roofline_time_s is None:
            object.__setattr__(self, "roofline_time_s", self.time_s)

    @property
    def bound(self) -> str:
        """What limits the kernel: the larger roof, or launch overhead when it exceeds both."""
        roof = max(self.compute_s, self.memory_s)
        if self.overhead_s > roof:
            return "overhead"
        return "compute" if self.compute_s >= self.memory_s else "memory"

    @property
    def compute_bound(self) -> bool:
        return self.compute_s >= self.memory_s

    @property
    def intensity(self) -> float:
        return self.cost.intensity


def predict(cost: OpCost, hw: HardwareSpec, roofline_only: bool = False) -> Prediction:
    """The roofline, and (unless ``roofline_only``) the calibrated time when ``hw.measured`` covers the op."""
    compute_s = cost.flops / hw.peak(cost.compute_dtype) if cost.flops else 0.0
    memory_s = cost.bytes / hw.memory_bandwidth_bytes_per_s
    overhead_s = cost.launches * hw.launch_overhead_s
    roofline_s = max(compute_s, memory_s) + overhead_s
    cal = None if roofline_only or hw.measured is None else calibrated_time(cost, hw.measured)
    if cal is None:
        return Prediction(cost, compute_s, memory_s, overhead_s, roofline_s)
    return Prediction(cost, compute_s, memory_s, overhead_s, cal.time_s, roofline_s, "calibrated",
                      cal.extrapolated, cal.tables)


def step_time(costs: tuple[OpCost, ...], hw: HardwareSpec, roofline_only: bool = False) -> float:
    """Predicted time of one forward step: its operators run one after another (best predictions)."""
    return sum(predict(c, hw, roofline_only).time_s for c in costs)
