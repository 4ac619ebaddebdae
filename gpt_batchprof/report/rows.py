"""Plain rows (dicts of SI values) built from results: the shape JSON / CSV / Markdown share.

The only place results are turned into dicts; the cores return frozen dataclasses.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from gpt_batchprof.analytic import AnalyzeResult, Parallelism, Prediction, Scenario, ServingPoint, ServingReport

TOKENS_PER_S = "batch x gen_len / e2e_s (TTFT included)"


def op_row(p: Prediction) -> dict[str, Any]:
    c = p.cost
    return {
        "phase": c.phase,
        "batch": c.batch,
        "new_tokens": c.new_tokens,
        "kv_len": c.kv_len,
        "op": c.op,
        "group": c.group,
        "flops": c.flops,
        "bytes": c.bytes,
        "weight_bytes": c.weight_bytes,
        "intensity": c.intensity,
        "launches": c.launches,
        "compute_dtype": c.compute_dtype,
        "compute_s": p.compute_s,
        "memory_s": p.memory_s,
        "overhead_s": p.overhead_s,
        "time_s": p.time_s,
        "roofline_time_s": p.roofline_time_s,
        "prediction": p.prediction,
        "extrapolated": p.extrapolated,
        "below_roofline": p.below_roofline or None,  # why a calibrated time beats its ceiling (impossible)
        "bound": p.bound,
        "shape": asdict(c.shape),
    }


def summary_row(p: ServingPoint) -> dict[str, Any]:
    return {
        "batch": p.batch,
        "ttft_s": p.ttft_s,
        "itl_s": p.itl_s,
        "e2e_s": p.e2e_s,
        "tokens_per_s": p.tokens_per_s,
        "roofline_ttft_s": p.roofline_ttft_s,
        "roofline_itl_s": p.roofline_itl_s,
        "roofline_e2e_s": p.roofline_e2e_s,
        "roofline_tokens_per_s": p.roofline_tokens_per_s,
        "engine_step_s": p.engine_step_s,
        "speedup": p.speedup,
        "latency_growth": p.latency_growth,
        "weights_bytes": p.memory.weights_bytes,
        "kv_cache_bytes": p.memory.kv_cache_bytes,
        "activation_bytes": p.memory.activation_bytes,
        "total_memory_bytes": p.memory.total_bytes,
        "fits": p.fits,
        "cost_per_million_tokens_usd": p.cost_per_million_tokens_usd,
    }


def settings_dict(scenario: Scenario, phases: tuple[str, ...], batches: tuple[int, ...],
                  launch: str | None = None, parallel: Parallelism = Parallelism(),
                  prediction: str = "roofline") -> dict[str, Any]:
    dt = scenario.dtypes
    return {
        "phases": list(phases),
        "batches": list(batches),
        "prompt_len": scenario.prompt_len,
        "context_len": scenario.itl_context,
        "gen_len": scenario.gen_len,
        "weight_dtype": dt.weight,
        "expert_dtype": dt.expert_weight,
        "act_dtype": dt.act,
        "kv_dtype": dt.kv,
        "attention": scenario.attention,
        "launch": launch or scenario.launch,
        "tokens_per_s": TOKENS_PER_S,
        "prediction": prediction,  # "calibrated" when the hardware profile has measured tables
    } | parallel.to_dict()


def report_fields(report: ServingReport) -> dict[str, Any]:
    return {
        "critical_batch": report.critical_batch,
        "critical_batch_reachable": report.critical_batch_reachable,
        "max_batch": report.max_batch,
    }


def analyze_dict(result: AnalyzeResult) -> dict[str, Any]:
    return {
        "model": result.model.to_dict(),
        "hardware": result.hardware.to_dict(),
        "settings": settings_dict(result.scenario, result.phases, result.batches, result.report.launch,
                                  result.parallel, result.hardware.prediction),
        "ops": [op_row(p) for p in result.predictions],
        "summary": [summary_row(p) for p in result.report.points],
    } | report_fields(result.report) | {
        "weights_per_gpu": {"sharded_bytes": result.weights.sharded_bytes,
                            "replicated_bytes": result.weights.replicated_bytes},
        "pipeline_bubble_fraction": result.parallel.bubble_fraction,
    } | ({"speculative": speculative_dict(result)} if result.speculation is not None else {})


def speculative_dict(result: AnalyzeResult) -> dict[str, Any]:
    from dataclasses import asdict

    return result.speculation.to_dict() | {"points": [asdict(p) for p in result.speculative]}


def bench_row_dict(row) -> dict[str, Any]:
    """One `bench` row (measure.bench.BenchRow): the prediction's fields, then the measurement."""
    return op_row(row.prediction) | {
        "status": row.status,
        "reason": row.reason,
        "measured_time_s": row.measured_time_s,
        "measured_iqr_s": row.measured_iqr_s,
        "measured_over_predicted": row.measured_over_predicted,
        "roofline_share": row.roofline_share,
        "prediction_error": row.prediction_error,
        "roofline_error": row.roofline_error,
        "achieved_flops_per_s": row.achieved_flops_per_s,
        "achieved_bytes_per_s": row.achieved_bytes_per_s,
        "samples": row.samples,
        "timing_method": row.method,
        "input_sets": row.sets,
        "device": row.device_name,
        "torch_version": row.torch_version,
        "warnings": list(row.warnings),
    }


def bench_dict(result) -> dict[str, Any]:
    """A whole `bench` run (measure.bench.BenchResult)."""
    return {
        "model": result.model.to_dict(),
        "hardware": result.hardware.to_dict(),
        "settings": settings_dict(result.scenario, result.phases, result.batches, result.launch,
                                  result.parallel, result.hardware.prediction)
        | asdict(result.settings) | {"ops": list(result.settings.ops)},
        "complete": result.complete,
        "rows": [bench_row_dict(r) for r in result.rows],
    }


def generate_row_dict(row) -> dict[str, Any]:
    """One `generate` batch (measure.generate.GenerateRow): measured next to predicted, then
    roofline_* when the prediction is calibrated, then status and methods."""
    r, p = row.run, row.predicted
    d: dict[str, Any] = {
        "batch": row.batch,
        "measured_ttft_s": r.ttft_s if r else None,
        "measured_itl_s": r.itl_s if r else None,
        "measured_itl_p90_s": r.itl_p90_s if r else None,
        "measured_e2e_s": r.e2e_s if r else None,
        "measured_tokens_per_s": r.tokens_per_s if r else None,
        "predicted_ttft_s": p.ttft_s,
        "predicted_itl_s": p.itl_s,
        "predicted_e2e_s": p.e2e_s,
        "predicted_tokens_per_s": p.tokens_per_s,
        "peak_memory_bytes": r.peak_memory_bytes if r else None,
    }
    if row.calibrated:
        d |= {"roofline_ttft_s": p.roofline_ttft_s, "roofline_itl_s": p.roofline_itl_s,
              "roofline_e2e_s": p.roofline_e2e_s, "roofline_tokens_per_s": p.roofline_tokens_per_s}
    return d | {"predicted_memory_bytes": p.memory.total_bytes, "peak_memory_method": row.memory_method,
                "status": row.status, "reason": row.reason, "timing_method": r.timing_method if r else None}


def generate_dict(result) -> dict[str, Any]:
    """A whole `generate` run (measure.generate.GenerateResult); rows carry their provenance."""
    s = result.settings
    provenance = {"device": s.device_name, "torch_version": s.torch_version, "threads": s.threads, "engine": s.engine}
    return {
        "model": result.model.to_dict(),
        "hardware": result.hardware.to_dict(),
        "settings": settings_dict(result.scenario, ("prefill", "decode"), result.batches,
                                  prediction=result.hardware.prediction) | asdict(s),
        "complete": result.complete,
        "notes": list(result.notes),
        "rows": [generate_row_dict(r) | provenance for r in result.rows],
    }
