"""The `analyze` core: resolve profiles and settings, predict every operator, serving figures."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gpt_batchprof.analytic import Prediction, Scenario, ServingReport, enumerate_ops, predict, serving_report
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

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.to_dict(),
            "hardware": self.hardware.to_dict(),
            "settings": settings_dict(self.scenario, self.phases, self.batches),
            "ops": [op_row(p) for p in self.predictions],
            "summary": [summary_row(p) for p in self.report.points],
            "critical_batch": self.report.critical_batch,
            "max_batch": self.report.max_batch,
        }


def phase_ops(model: ModelSpec, scenario: Scenario, phase: str, batch: int):
    """The operators `analyze` and `bench` look at for one phase and batch (same shapes in both)."""
    if phase == "prefill":
        return enumerate_ops(model, "prefill", batch, seq_len=scenario.prompt_len,
                             dtypes=scenario.dtypes, attention=scenario.attention)
    return enumerate_ops(model, "decode", batch, kv_len=scenario.itl_context,
                         dtypes=scenario.dtypes, attention=scenario.attention)


def analyze(
    model: ModelSpec,
    hardware: HardwareSpec,
    scenario: Scenario,
    phases: tuple[str, ...] = ("prefill", "decode"),
    batches: tuple[int, ...] = (1,),
) -> AnalyzeResult:
    report = serving_report(model, hardware, scenario, batches)
    preds = tuple(
        predict(op, hardware)
        for phase in phases
        for b in batches
        for op in phase_ops(model, scenario, phase, b)
    )
    return AnalyzeResult(model, hardware, scenario, phases, batches, preds, report)


__all__ = ["AnalyzeResult", "analyze", "phase_ops"]
