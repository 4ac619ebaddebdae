"""The `analyze` use case: predict every operator of the analysed steps, and the serving figures."""

from __future__ import annotations

from dataclasses import dataclass

from gpt_batchprof.analytic.parallel import Parallelism, WeightSplit, weight_split
from gpt_batchprof.analytic.roofline import Prediction, predict
from gpt_batchprof.analytic.serving import Scenario, ServingReport, serving_report, slowest_stage
from gpt_batchprof.analytic.speculative import Speculation, SpecPoint, speculative_points
from gpt_batchprof.errors import BatchprofError
from gpt_batchprof.profiles import HardwareSpec, ModelSpec


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
    speculation: Speculation | None = None
    speculative: tuple[SpecPoint, ...] = ()  # per batch, plain vs speculative decoding

    @property
    def weights(self) -> WeightSplit:
        """Weights of the fullest GPU: sharded and replicated parts."""
        return weight_split(self.model, self.parallel, self.scenario.dtypes)


def analyze(
    model: ModelSpec,
    hardware: HardwareSpec,
    scenario: Scenario,
    phases: tuple[str, ...] = ("prefill", "decode"),
    batches: tuple[int, ...] = (1,),
    parallel: Parallelism = Parallelism(),
    speculation: Speculation | None = None,
) -> AnalyzeResult:
    """``parallel``: figures per GPU across tp x pp x ep GPUs (see ``analytic.parallel``);
    ``speculation``: speculative decoding beside plain decoding, per batch (one GPU)."""
    parallel.check(model, hardware)
    spec: tuple[SpecPoint, ...] = ()
    if speculation is not None:
        if not parallel.is_single:
            raise BatchprofError("--speculate is modelled on one GPU; drop --tp/--pp/--ep")
        kv = scenario.itl_context
        spec = speculative_points(model, hardware, speculation, batches, kv, scenario.dtypes, scenario.attention,
                                  scenario.launch_for(hardware))
    report = serving_report(model, hardware, scenario, batches, parallel)
    preds = tuple(
        predict(op, hardware, report.launch)
        for phase in phases
        for b in batches
        for op in scenario.ops(model, phase, b, parallel, slowest_stage(model, hardware, scenario, phase, b, parallel))
    )
    return AnalyzeResult(model, hardware, scenario, phases, batches, preds, report, parallel, speculation, spec)
