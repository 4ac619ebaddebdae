"""`simulate` output: Rich tables for people, and the plain rows (SI units) behind JSON/CSV."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Sequence

from rich.console import Console

from gpt_batchprof.report.tables import compact_table
from gpt_batchprof.report.units import fmt_bytes, fmt_pct, fmt_rate, fmt_time
from gpt_batchprof.simulate import LoadPoint, RateSearch, SimResult


def settings_dict(model, hw, res: SimResult) -> dict[str, Any]:
    w, c, slo = res.workload, res.config, res.slo
    return {
        "model": model.name, "hardware": hw.name,
        "arrivals": "closed-loop" if w.concurrency else "poisson" if w.rate_rps else "trace",
        "rate_rps": w.rate_rps, "concurrency": w.concurrency, "requests": len(res.records),
        "duration_s": w.duration_s, "prompt_len": None if w.trace else str(w.prompt),
        "gen_len": None if w.trace else str(w.gen), "trace_requests": len(w.trace) if w.trace else None,
        "seed": w.seed, "scheduler": c.scheduler, "max_batch": c.max_batch,
        "max_tokens_per_step": res.tokens_per_step, "chunked_prefill": c.chunked_prefill,
        "batch_timeout_s": c.batch_timeout_s, "block_size": c.block_size, "kv_blocks": res.capacity.kv_blocks,
        "kv_capacity_tokens": res.capacity.kv_blocks * c.block_size, "dtype": c.dtypes.act,
        "weight_dtype": c.dtypes.weight, "kv_dtype": c.dtypes.kv, "attention": c.attention,
        "launch": c.launch,
        "prediction": hw.prediction,
        "slo_ttft_s": slo.ttft_s, "slo_itl_s": slo.itl_s, "slo_percentile": slo.percentile,
        "steps": res.steps, "interrupted": res.interrupted,
        "prefix_caching": c.prefix_caching, "shared_prefix_len": w.shared_prefix_len,
        "prefix_groups": w.prefix_groups if w.shared_prefix_len else None,
        "speculation": c.speculation.to_dict() if c.speculation is not None else None,
    } | c.parallel.to_dict()


def prefix_dict(res: SimResult) -> dict[str, Any]:
    """What the prefix cache saved (with --prefix-caching): token counts and the hit rate."""
    return {"hit_rate": res.prefix_hit_rate, "prompt_tokens": res.prompt_tokens,
            "hit_tokens": res.prefix_hit_tokens, "prefill_tokens_computed": res.prefill_tokens}


def request_rows(res: SimResult) -> list[dict[str, Any]]:
    return [r.to_dict(res.slo) for r in res.records]


def point_row(p: LoadPoint) -> dict[str, Any]:
    extra = {"prefix_hit_rate": p.result.prefix_hit_rate} if p.result.config.prefix_caching else {}
    return {"rate_rps": p.rate_rps, "meets_slo": p.meets, "ttft_s_at_slo_percentile": p.ttft_at_percentile_s,
            "itl_s_at_slo_percentile": p.itl_at_percentile_s} | asdict(p.result.summary) | extra


def single_json(model, hw, res: SimResult) -> dict[str, Any]:
    extra = {"prefix_cache": prefix_dict(res)} if res.config.prefix_caching else {}
    return {"settings": settings_dict(model, hw, res), "summary": asdict(res.summary), **extra,
            "requests": request_rows(res)}


def sweep_json(model, hw, points: Sequence[LoadPoint]) -> dict[str, Any]:
    settings = settings_dict(model, hw, points[0].result) | {"rate_rps": [p.rate_rps for p in points]}
    return {"settings": settings, "points": [point_row(p) for p in points]}


def search_json(model, hw, search: RateSearch) -> dict[str, Any]:
    out = single_json(model, hw, search.best.result)
    extra = {"prefix_cache": out["prefix_cache"]} if "prefix_cache" in out else {}
    return {"settings": out["settings"], "max_rate_rps": search.max_rate_rps, "summary": out["summary"], **extra,
            "search": [point_row(p) for p in search.points], "requests": out["requests"]}


# ----------------------------------------------------------------------------- tables


def _slo_text(res: SimResult) -> str:
    s = res.slo
    return f"TTFT ≤ {fmt_time(s.ttft_s)}, ITL ≤ {fmt_time(s.itl_s)}"


def header(out: Console, model, hw, res: SimResult, sweep: bool = False) -> None:
    w, c = res.workload, res.config
    if sweep:
        load = "Poisson arrivals at the rates below"
    elif w.concurrency:
        load = f"{w.concurrency} concurrent clients (closed loop)"
    elif w.rate_rps:
        load = f"Poisson arrivals at {fmt_rate(w.rate_rps)} req/s"
    else:
        load = "arrivals from the trace"
    lengths = f"{len(w.trace)}-request trace" if w.trace else f"prompt {w.prompt}, output {w.gen} tokens"
    sched = (f"continuous batching, ≤ {c.max_batch} sequences and ≤ {res.tokens_per_step} tokens per step, "
             f"chunked prefill {'on' if c.chunked_prefill else 'off'}" if c.scheduler == "continuous" else
             f"static batching, batches of ≤ {c.max_batch}, timeout {fmt_time(c.batch_timeout_s)}")
    cap = res.capacity
    from gpt_batchprof.analytic import launch_mode

    launch = "CUDA graphs" if launch_mode(c.launch, hw) == "graphs" else "eager launches"
    out.print(f"[bold]{model.name}[/] on [bold]{hw.name}[/], {c.dtypes.act}, {c.attention} attention, {launch}: "
              f"{load}; {lengths}", highlight=False)
    out.print(f"{sched}; KV cache {cap.kv_blocks:,} blocks x {cap.block_size} tokens "
              f"({cap.kv_blocks * cap.block_size:,} tokens); SLO {_slo_text(res)} at p{res.slo.percentile:g}",
              style="dim", highlight=False)
    if c.speculation is not None:
        sp = c.speculation
        out.print(f"speculative decoding: {sp.k} tokens drafted by {sp.draft.name}, acceptance {sp.acceptance:g}, "
                  f"{sp.tokens_per_step:.3g} tokens per verify step (decode-only steps; draft weights and cache "
                  f"included in memory)", style="dim", highlight=False)
    if not c.parallel.is_single:
        out.print(f"one server over {c.parallel.label()} ({hw.interconnect.name}); {fmt_bytes(cap.weights_bytes)} of weights "
                  f"on the fullest GPU", style="dim", highlight=False)


def latency_table(res: SimResult):
    s = res.summary
    t = compact_table(f"Latency over {len(res.records):,} requests", [("", "left"), ("mean", "right"),
                      ("p50", "right"), ("p90", "right"), ("p99", "right")])
    for name, key in (("TTFT (arrival to first token)", "ttft"), ("ITL (mean gap between tokens)", "itl"),
                      ("E2E (arrival to last token)", "e2e")):
        t.add_row(name, *(fmt_time(getattr(s, f"{key}_s_{q}")) for q in ("mean", "p50", "p90", "p99")))
    return t


def figures(out: Console, res: SimResult) -> None:
    s = res.summary
    out.print(f"throughput {fmt_rate(s.throughput_rps)} req/s, {fmt_rate(s.output_tokens_per_s)} output tokens/s; "
              f"goodput {fmt_rate(s.goodput_rps)} req/s meeting {_slo_text(res)}", highlight=False)
    out.print(f"mean batch {s.mean_batch:.1f} sequences; KV cache {fmt_pct(s.kv_utilisation)} used on average; "
              f"{s.preemptions} preemption(s)", highlight=False)
    if res.config.prefix_caching:
        out.print(f"prefix cache: {fmt_pct(res.prefix_hit_rate)} of {res.prompt_tokens:,} prompt tokens found cached; "
                  f"{res.prefill_tokens:,} prompt tokens computed", highlight=False)


def print_single(out: Console, model, hw, res: SimResult) -> None:
    header(out, model, hw, res)
    out.print()
    out.print(latency_table(res))
    out.print()
    figures(out, res)
    if res.interrupted:
        out.print(f"interrupted: {len(res.records)} request(s) finished", style="yellow")


def load_table(points: Sequence[LoadPoint], title: str):
    pct = points[0].result.slo.percentile
    t = compact_table(title, [("offered", "right"), ("req/s", "right"), ("goodput", "right"), ("tok/s", "right"),
                              ("TTFT p50", "right"), (f"TTFT p{pct:g}", "right"), ("ITL p50", "right"),
                              (f"ITL p{pct:g}", "right"), ("batch", "right"), ("KV", "right"),
                              ("preempt", "right"), ("SLO", "left")])
    for p in points:
        s = p.result.summary
        t.add_row(fmt_rate(p.rate_rps), fmt_rate(s.throughput_rps), fmt_rate(s.goodput_rps),
                  fmt_rate(s.output_tokens_per_s), fmt_time(s.ttft_s_p50), fmt_time(p.ttft_at_percentile_s),
                  fmt_time(s.itl_s_p50), fmt_time(p.itl_at_percentile_s), f"{s.mean_batch:.1f}",
                  fmt_pct(s.kv_utilisation), str(s.preemptions),
                  "[green]met[/]" if p.meets else "[red]missed[/]")
    return t


def print_sweep(out: Console, model, hw, points: Sequence[LoadPoint]) -> None:
    header(out, model, hw, points[0].result, sweep=True)
    out.print()
    out.print(load_table(points, "Offered load (req/s) against what the server delivers"))


def print_search(out: Console, model, hw, search: RateSearch) -> None:
    res = search.best.result
    pct = res.slo.percentile
    print_single(out, model, hw, res)
    out.print()
    out.print(load_table(sorted(search.points, key=lambda p: p.rate_rps), "Rates tried"))
    out.print(f"[bold]highest rate meeting the SLO[/] ({_slo_text(res)} at p{pct:g}): "
              f"[bold]{fmt_rate(search.max_rate_rps)} req/s[/] (the table above is that run)", highlight=False)
