"""The `analyze` core: resolve profiles and settings, predict every operator, serving figures."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gpt_batchprof.analytic import (
    Parallelism, Prediction, Scenario, ServingReport, WeightSplit, enumerate_ops, predict, serving_report, weight_split,
)
from gpt_batchprof.profiles import HardwareSpec, ModelSpec
from gpt_batchprof.report.rows import op_row, settings_dict, summary_row


@dataclass(frozen=True, slots=True)
class AnalyzeResult:
    model: ModelSpec
    hardware: HardwareSpec
    scenario: Scenario
    phases: tuple[str, ...]
    batches: tuple[int, ...]
    predictions: tuple[Prediction, ...]  # phase-major, then batch, then operator order
    report: ServingReport
    parallel: Parallelism = Parallelism()

    @property
    def weights(self) -> WeightSplit:
        """Weights of the fullest GPU: sharded and replicated parts."""
        return weight_split(self.model, self.parallel, self.scenario.dtypes.weight)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.to_dict(),
            "hardware": self.hardware.to_dict(),
            "settings": settings_dict(self.scenario, self.phases, self.batches, self.parallel),
            "ops": [op_row(p) for p in self.predictions],
            "summary": [summary_row(p) for p in self.report.points],
            "critical_batch": self.report.critical_batch,
            "max_batch": self.report.max_batch,
            "weights_per_gpu": {"sharded_bytes": self.weights.sharded_bytes,
                                "replicated_bytes": self.weights.replicated_bytes},
            "pipeline_bubble_fraction": self.parallel.bubble_fraction,
        }


def phase_ops(model: ModelSpec, scenario: Scenario, phase: str, batch: int, parallel: Parallelism = Parallelism()):
    """The operators `analyze` and `bench` look at for one phase and batch (same shapes in both)."""
    if phase == "prefill":
        return enumerate_ops(model, "prefill", batch, seq_len=scenario.prompt_len,
                             dtypes=scenario.dtypes, attention=scenario.attention, parallel=parallel)
    return enumerate_ops(model, "decode", batch, kv_len=scenario.itl_context,
                         dtypes=scenario.dtypes, attention=scenario.attention, parallel=parallel)


def analyze(
    model: ModelSpec,
    hardware: HardwareSpec,
    scenario: Scenario,
    phases: tuple[str, ...] = ("prefill", "decode"),
    batches: tuple[int, ...] = (1,),
    parallel: Parallelism = Parallelism(),
) -> AnalyzeResult:
    parallel.check(model, hardware)
    report = serving_report(model, hardware, scenario, batches, parallel)
    preds = tuple(
        predict(op, hardware)
        for phase in phases
        for b in batches
        for op in phase_ops(model, scenario, phase, b, parallel)
    )
    return AnalyzeResult(model, hardware, scenario, phases, batches, preds, report, parallel)


__all__ = ["AnalyzeResult", "analyze", "phase_ops"]
