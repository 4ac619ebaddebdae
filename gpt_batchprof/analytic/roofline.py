"""Roofline prediction of one operator on one device.

time = max(FLOPs / peak FLOP/s, bytes / bandwidth) + launches x launch overhead.
Peaks come from the hardware profile as they are: no efficiency factor is hidden here;
measured / predicted is an output of `bench`.
"""

from __future__ import annotations

from dataclasses import dataclass

from gpt_batchprof.analytic.ops import OpCost
from gpt_batchprof.profiles import HardwareSpec

BOUNDS = ("compute", "memory", "overhead", "link", "latency")  # the last two: collectives


@dataclass(frozen=True, slots=True)
class Prediction:
    cost: OpCost
    compute_s: float  # FLOPs at peak
    memory_s: float  # bytes at full bandwidth
    overhead_s: float  # kernel launches
    time_s: float

    @property
    def bound(self) -> str:
        """What limits the kernel: the larger roof, or launch overhead when it exceeds both."""
        if self.cost.group == "collective":  # memory_s: bytes over the link; overhead_s: hop latencies
            return "link" if self.memory_s >= self.overhead_s else "latency"
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


def predict(cost: OpCost, hw: HardwareSpec) -> Prediction:
    if cost.group == "collective":  # priced by the interconnect, not the roofline
        from gpt_batchprof.analytic.parallel import predict_collective

        return predict_collective(cost, hw)
    compute_s = cost.flops / hw.peak(cost.compute_dtype) if cost.flops else 0.0
    memory_s = cost.bytes / hw.memory_bandwidth_bytes_per_s
    overhead_s = cost.launches * hw.launch_overhead_s
    return Prediction(cost, compute_s, memory_s, overhead_s, max(compute_s, memory_s) + overhead_s)


def step_time(costs: tuple[OpCost, ...], hw: HardwareSpec) -> float:
    """Predicted time of one forward step: its operators run one after another."""
    return sum(predict(c, hw).time_s for c in costs)
