"""The analytic roofline model: pure Python, never imports torch, rich, typer or yaml."""

from gpt_batchprof.analytic.analyze import AnalyzeResult, analyze
from gpt_batchprof.analytic.gpt import ATTENTION_MODES, PHASES, Dtypes, enumerate_ops
from gpt_batchprof.analytic.ops import OP_GROUPS, OP_NAMES, OpCost, OpShape
from gpt_batchprof.analytic.parallel import Parallelism, WeightSplit, weight_split
from gpt_batchprof.analytic.roofline import LAUNCH_MODES, Prediction, combine, launch_mode, predict, step_time
from gpt_batchprof.analytic.serving import (
    MemoryUse,
    Scenario,
    ServingPoint,
    ServingReport,
    check_length,
    critical_batch,
    max_batch,
    memory_use,
    serving_report,
)

__all__ = [
    "AnalyzeResult", "analyze", "ATTENTION_MODES", "PHASES", "Dtypes", "enumerate_ops", "OP_GROUPS",
    "OP_NAMES", "OpCost", "OpShape", "Parallelism", "WeightSplit", "weight_split", "LAUNCH_MODES", "Prediction",
    "combine", "launch_mode", "predict", "step_time", "MemoryUse", "Scenario", "ServingPoint", "ServingReport",
    "check_length", "critical_batch", "max_batch", "memory_use", "serving_report",
]
