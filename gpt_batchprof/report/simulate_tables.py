"""`simulate` output: Rich tables for people, and the plain rows (SI units) behind JSON/CSV."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Sequence

from rich.console import Console

from gpt_batchprof.report.tables import compact_table
from gpt_batchprof.report.units import fmt_bytes, fmt_pct, fmt_rate, fmt_time
from gpt_batchprof.simulate import LoadPoint, RateSearch, SimResult
from gpt_batchprof.simulate.metrics import slo_percentiles


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
        "weight_dtype": c.dtypes.weight, "expert_dtype": c.dtypes.expert_weight, "kv_dtype": c.dtypes.kv, "attention": c.attention,
        "launch": c.launch,
        "prediction": hw.prediction,
        "slo_ttft_s": slo.ttft_s, "slo_itl_s": slo.itl_s, "slo_percentile": slo.percentile,
        "steps": res.steps, "interrupted": res.interrupted,
        "rescale_trace": w.rescale_trace, "prefix_caching": c.prefix_caching, "shared_prefix_len": w.shared_prefix_len,
        "prefix_groups": w.prefix_groups if w.shared_prefix_len else None,
        "speculation": c.speculation.to_dict() if c.speculation is not None else None,
        "replicas": c.replicas, "disagg": c.disagg.label() if c.disagg is not None else None,
        "kv_link_bytes_per_s": c.disagg.link(hw)[0] if c.disagg is not None else None, "gpus": res.gpus,
    } | c.parallel.to_dict()


def pool_dict(res: SimResult) -> dict[str, Any]:
    """A pool's figures per GPU (and the KV hand-over when disaggregated)."""
    return {"gpus": res.gpus, "goodput_per_gpu_rps": res.goodput_per_gpu_rps,
            "throughput_per_gpu_rps": res.summary.throughput_rps / res.gpus,
            "kv_transfer_s_mean": res.kv_transfer_s_mean}


def _is_pool(res: SimResult) -> bool:
    return res.config.replicas > 1 or res.config.disagg is not None


def prefix_dict(res: SimResult) -> dict[str, Any]:
    """What the prefix cache saved (with --prefix-caching): token counts and the hit rate."""
    return {"hit_rate": res.prefix_hit_rate, "prompt_tokens": res.prompt_tokens,
            "hit_tokens": res.prefix_hit_tokens, "prefill_tokens_computed": res.prefill_tokens}


def request_rows(res: SimResult) -> list[dict[str, Any]]:
    return [r.to_dict(res.slo) for r in res.records]


def point_row(p: LoadPoint) -> dict[str, Any]:
    extra = {"prefix_hit_rate": p.result.prefix_hit_rate} if p.result.config.prefix_caching else {}
    if _is_pool(p.result):
        extra |= {"goodput_per_gpu_rps": p.result.goodput_per_gpu_rps}
    return {"rate_rps": p.rate_rps, "meets_slo": p.meets, "ttft_s_at_slo_percentile": p.ttft_at_percentile_s,
            "itl_s_at_slo_percentile": p.itl_at_percentile_s} | asdict(p.result.summary) | extra


def single_json(model, hw, res: SimResult) -> dict[str, Any]:
    extra = {"prefix_cache": prefix_dict(res)} if res.config.prefix_caching else {}
    if _is_pool(res):
        extra["pool"] = pool_dict(res)
    return {"settings": settings_dict(model, hw, res), "summary": asdict(res.summary), **extra,
            "requests": request_rows(res)}


def sweep_json(model, hw, points: Sequence[LoadPoint]) -> dict[str, Any]:
    settings = settings_dict(model, hw, points[0].result) | {"rate_rps": [p.rate_rps for p in points]}
    return {"settings": settings, "points": [point_row(p) for p in points]}


def search_json(model, hw, search: RateSearch) -> dict[str, Any]:
    out = single_json(model, hw, search.best.result)
    extra = {k: out[k] for k in ("prefix_cache", "pool") if k in out}
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
    dt = c.dtypes
    weights = "" if dt.weight == dt.act and dt.expert_weight == dt.weight else (
        f" (weights {dt.weight}{f', experts {dt.expert_weight}' if dt.expert_weight != dt.weight else ''})")
    out.print(f"[bold]{model.name}[/] on [bold]{hw.name}[/], {dt.act}{weights}, {c.attention} attention, {launch}: "
              f"{load}; {lengths}", highlight=False)
    out.print(f"{sched}; KV cache {cap.kv_blocks:,} blocks x {cap.block_size} tokens "
              f"({cap.kv_blocks * cap.block_size:,} tokens); SLO {_slo_text(res)} at p{res.slo.percentile:g}",
              style="dim", highlight=False)
    if c.disagg is not None:
        bw, lat = c.disagg.link(hw)
        pre, dec = c.disagg.layouts(c.parallel)
        out.print(f"disaggregated: {c.disagg.prefill} prefill (x{pre.world} GPUs) + {c.disagg.decode} decode "
                  f"(x{dec.world} GPUs) instance(s), {res.gpus} GPUs; "
                  f"KV caches cross a {fmt_rate(bw / 1e9)} GB/s link ({fmt_time(lat)} latency)",
                  style="dim", highlight=False)
    elif c.replicas > 1:
        out.print(f"aggregated: {c.replicas} replicas, {res.gpus} GPUs, arrivals dealt round-robin",
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
    if _is_pool(res):
        hand = (f"; KV transfer {fmt_time(res.kv_transfer_s_mean)} on average (in TTFT)"
                if res.kv_transfer_s_mean is not None else "")
        out.print(f"per GPU ({res.gpus}): goodput {fmt_rate(res.goodput_per_gpu_rps)} req/s, throughput "
                  f"{fmt_rate(s.throughput_rps / res.gpus)} req/s{hand}", highlight=False)
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


# ----------------------------------------------------------------------------- aggregated vs disaggregated


def compare_row(name: str, res: SimResult, max_rate: float | None) -> dict[str, Any]:
    s = res.summary
    ttft, itl = slo_percentiles(res.records, res.slo)
    return {"mode": name, "layout": res.config.disagg.label() if res.config.disagg else f"{res.config.replicas}x",
            "gpus": res.gpus, "max_rate_rps": max_rate,
            "max_rate_per_gpu_rps": max_rate / res.gpus if max_rate is not None else None,
            "throughput_rps": s.throughput_rps, "goodput_rps": s.goodput_rps,
            "goodput_per_gpu_rps": res.goodput_per_gpu_rps, "ttft_s_at_slo_percentile": ttft,
            "itl_s_at_slo_percentile": itl, "ttft_s_p50": s.ttft_s_p50, "itl_s_p50": s.itl_s_p50,
            "kv_transfer_s_mean": res.kv_transfer_s_mean,
            "meets_slo": ttft <= res.slo.ttft_s and itl <= res.slo.itl_s}


def compare_json(model, hw, results) -> dict[str, Any]:
    return {"settings": settings_dict(model, hw, results[-1][1]),
            "compare": [compare_row(name, res, rate) for name, res, rate in results]}


def print_compare(out: Console, model, hw, results) -> None:
    res = results[-1][1]
    header(out, model, hw, res)
    pct = res.slo.percentile
    search = results[0][2] is not None
    cols = [("", "left"), ("GPUs", "right")] + ([("max req/s", "right"), ("per GPU", "right")] if search else []) + [
        ("goodput", "right"), ("per GPU", "right"), (f"TTFT p{pct:g}", "right"), (f"ITL p{pct:g}", "right"),
        ("KV transfer", "right"), ("SLO", "left")]
    t = compact_table("Aggregated vs disaggregated at equal GPU count" + (" (each at its highest rate meeting the SLO)"
                                                                           if search else ""), cols)
    for name, r, rate in results:
        row = compare_row(name, r, rate)
        t.add_row(f"{name} ({row['layout']})", str(r.gpus),
                  *([fmt_rate(rate), fmt_rate(rate / r.gpus)] if search else []),
                  fmt_rate(row["goodput_rps"]), fmt_rate(row["goodput_per_gpu_rps"]),
                  fmt_time(row["ttft_s_at_slo_percentile"]), fmt_time(row["itl_s_at_slo_percentile"]),
                  fmt_time(r.kv_transfer_s_mean) if r.kv_transfer_s_mean is not None else "-",
                  "[green]met[/]" if row["meets_slo"] else "[red]missed[/]")
    out.print()
    out.print(t)
    out.print(f"SLO {_slo_text(res)} at p{pct:g}", style="dim", highlight=False)
