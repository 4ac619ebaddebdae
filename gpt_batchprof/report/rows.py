"""Plain rows (dicts of SI values) built from results: the shape JSON / CSV / Markdown share."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from gpt_batchprof.analytic.parallel import Parallelism
from gpt_batchprof.analytic.roofline import Prediction
from gpt_batchprof.analytic.serving import Scenario, ServingPoint


def op_row(p: Prediction) -> dict[str, Any]:
    c = p.cost
    return {
        "phase": c.phase,
        "batch": c.batch,
        "seq_len": c.seq_len,
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
                  parallel: Parallelism = Parallelism()) -> dict[str, Any]:
    dt = scenario.dtypes
    return {
        "phases": list(phases),
        "batches": list(batches),
        "prompt_len": scenario.prompt_len,
        "context_len": scenario.itl_context,
        "gen_len": scenario.gen_len,
        "weight_dtype": dt.weight,
        "act_dtype": dt.act,
        "kv_dtype": dt.kv,
        "attention": scenario.attention,
    } | parallel.to_dict()
