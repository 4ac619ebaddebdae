"""Rich tables for the terminal. Values arrive in SI; units are scaled here only."""

from __future__ import annotations

from itertools import groupby
from typing import Sequence

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from gpt_batchprof.analytic.roofline import Prediction
from gpt_batchprof.analytic.serving import Scenario, ServingReport
from gpt_batchprof.profiles import HardwareSpec, ModelSpec
from gpt_batchprof.report.markup import bound_markup
from gpt_batchprof.units import fmt_bytes, fmt_count, fmt_pct, fmt_rate, fmt_ratio, fmt_time


def header(console: Console, model: ModelSpec, hw: HardwareSpec, scenario: Scenario) -> None:
    dt = scenario.dtypes
    peak = hw.peak_flops_per_s.get(dt.act)
    ridge = f", ridge {hw.ridge_point(dt.act):.0f} FLOP/B" if peak else ""
    console.print(
        f"[bold]{escape(model.name)}[/] ({model.n_params / 1e9:.2f} B params, {model.n_layer} layers, "
        f"d_model {model.d_model}, {model.n_head}/{model.n_kv_head} heads"
        f"{f', {model.n_expert_active} of {model.n_expert} experts' if model.is_moe else ''}) on "
        f"[bold]{escape(hw.name)}[/] ({fmt_count(peak, 'FLOP/s')} {dt.act}, "
        f"{fmt_count(hw.memory_bandwidth_bytes_per_s, 'B/s')}{ridge}, {fmt_bytes(hw.memory_bytes)})",
        highlight=False,
    )
    console.print(
        f"prompt {scenario.prompt_len}, generate {scenario.gen_len}, ITL at context {scenario.itl_context}; "
        f"weights {dt.weight}{f', experts {dt.expert}' if dt.expert else ''}"
        f"{' as the checkpoint stores them' if dt.as_checkpoint(model) else ''}, activations {dt.act}, KV {dt.kv}; "
        f"{scenario.attention} attention",
        style="dim", highlight=False,
    )


def parallel_header(console: Console, parallel, hw: HardwareSpec, weights, model: ModelSpec | None = None) -> None:
    """How the model is spread over GPUs, the link that joins them, and what each GPU holds."""
    ic = hw.interconnect
    link = f"{ic.name}, {fmt_count(ic.bandwidth_bytes_per_s, 'B/s')} per direction, {fmt_time(ic.latency_s)} per hop" if ic else "no interconnect"
    pipe = ""
    if parallel.pp > 1:
        pipe = (f"; {parallel.micro_batches} micro-batch{'es' if parallel.micro_batches > 1 else ''}, "
                f"pipeline bubble {fmt_pct(parallel.bubble_fraction)}")
    console.print(f"{parallel.label()} over {link}{pipe}", highlight=False)
    console.print(f"figures per GPU; weights on the fullest GPU: {fmt_bytes(weights.sharded_bytes)} sharded + "
                  f"{fmt_bytes(weights.replicated_bytes)} replicated (norms, row-parallel biases, router, "
                  f"{_replicated_attention(model)})", style="dim", highlight=False)


def _replicated_attention(model: ModelSpec | None) -> str:
    if model is not None and model.is_mla:  # vLLM's MLA keeps the down projections whole on every GPU
        return "latent attention's down projections"
    return "K/V heads when n_kv_head < tp"


def compact_table(title: str, columns: Sequence[tuple[str, str]]) -> Table:
    """A borderless table that fits an 80-column terminal: one rule under the header, no edges."""
    t = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1, 0, 0))
    for name, justify in columns:
        t.add_column(name, justify=justify, no_wrap=True)
    return t


def tables_origin(hw: HardwareSpec) -> str:
    """Where the prediction comes from, in words: the roofline, this machine's calibration, or an imported database."""
    m = hw.measured
    if m is None:
        return "roofline"
    src = m.source
    if src:
        return (f"calibrated from kernels measured on {m.device_name}: {src.get('package')} "
                f"{src.get('package_version')}, {src.get('framework')} {src.get('framework_version')}")
    return f"calibrated from the measured tables ({m.device_name}, {m.date})"


def summary_table(report: ServingReport, hw: HardwareSpec) -> Table:
    """Latency and throughput per batch, against batch 1."""
    has_cost = any(p.cost_per_million_tokens_usd is not None for p in report.points)
    cols = [("batch", "right"), ("TTFT", "right"), ("ITL", "right"), ("e2e", "right"),
            ("tok/s", "right"), ("x tput", "right"), ("x lat", "right")]
    title = f"Latency and throughput per batch ({tables_origin(hw)})"
    t = compact_table(title, cols + ([("$/M tok", "right")] if has_cost else []))
    for p in report.points:
        cells = [str(p.batch), fmt_time(p.ttft_s), fmt_time(p.itl_s), fmt_time(p.e2e_s), fmt_rate(p.tokens_per_s),
                 fmt_ratio(p.speedup), fmt_ratio(p.latency_growth)]
        if has_cost:
            c = p.cost_per_million_tokens_usd
            cells.append("-" if c is None else f"{c:.2f}")
        t.add_row(*cells)
    return t


def roofline_table(report: ServingReport, below_roofline: Sequence[str] = ()) -> Table:
    """The roofline's figures (the ceiling) beside a calibrated prediction, and how far below it
    the calibrated one lands (roofline tokens/s / calibrated tokens/s). ``below_roofline``: why
    operators were calibrated faster than their ceiling (``roofline.below_roofline_causes``); a
    ratio under 1x is then explained in the caption, not left to look like a result."""
    t = compact_table("The roofline (ceiling) per batch",
                      [("batch", "right"), ("TTFT", "right"), ("ITL", "right"), ("e2e", "right"),
                       ("tok/s", "right"), ("roofline / calibrated tok/s", "right")])
    for p in report.points:
        t.add_row(str(p.batch), fmt_time(p.roofline_ttft_s), fmt_time(p.roofline_itl_s), fmt_time(p.roofline_e2e_s),
                  fmt_rate(p.roofline_tokens_per_s), fmt_ratio(p.roofline_tokens_per_s / p.tokens_per_s))
    if below_roofline or any(p.roofline_tokens_per_s < p.tokens_per_s for p in report.points):
        shown = f"e.g. {below_roofline[0]}" if below_roofline else ""
        t.caption = ("note: some calibrated times are below their roofline"
                     + (f" ({escape(shown)}; every cause: below_roofline in --format json --per-op)" if shown else "")
                     + ": the measured tables beat this profile's ceilings (cache-resident data, tables from "
                     "another machine, or peaks set too low); the roofline is no bound for those operators")
        t.caption_style = "yellow"
        t.caption_justify = "left"
    return t


def memory_table(report: ServingReport, hw: HardwareSpec, parallel=None) -> Table:
    where = "" if parallel is None or parallel.is_single else f", per GPU of {parallel.world}"
    t = compact_table(f"Memory per batch (device: {fmt_bytes(hw.memory_bytes)}{where})",
               [("batch", "right"), ("weights", "right"), ("KV cache", "right"), ("activations", "right"),
                ("total", "right"), ("fits", "left")])
    for p in report.points:
        m = p.memory
        t.add_row(str(p.batch), fmt_bytes(m.weights_bytes), fmt_bytes(m.kv_cache_bytes),
                  fmt_bytes(m.activation_bytes), fmt_bytes(m.total_bytes),
                  "[green]yes[/]" if p.fits else "[red]no[/]")
    return t


def engine_line(console: Console, report: ServingReport, hw: HardwareSpec, n_layer: int) -> None:
    """The serving engine's share of each step, apart from the kernels (included in every time above)."""
    e = hw.engine
    if e is None:
        return
    per = ", ".join(f"batch {p.batch}: {fmt_time(p.engine_step_s)}" for p in report.points[:6])
    console.print(
        f"engine ({escape(e.name)}), included in every step above: {fmt_time(e.per_step_s)} per step + {n_layer} layers "
        f"x {fmt_time(e.per_layer_s)} + batch x {fmt_time(e.per_request_s)} = {per}"
        + (" ..." if len(report.points) > 6 else "") + " (the profile's engine: section)",
        highlight=False, soft_wrap=False,
    )


def summary_footer(console: Console, report: ServingReport) -> None:
    cb = report.critical_batch
    unreachable = "" if report.critical_batch_reachable or cb is None else \
        f" [yellow]- not reachable: only {report.max_batch} sequences fit in memory[/]"
    console.print(
        f"critical batch: [bold]{cb if cb is not None else 'never'}[/] "
        f"(decode dense layers turn compute-bound; below it batching is nearly free){unreachable}",
        highlight=False,
    )
    console.print(f"largest batch that fits: [bold]{report.max_batch}[/]", highlight=False)
    console.print(f"tokens/s = batch x gen-len / e2e (TTFT included); launch overhead: {report.launch}",
                  style="dim", highlight=False)


def ops_table(preds: Sequence[Prediction], title: str) -> Table:
    """Operators grouped by batch; each op's bound is coloured so it reads at a glance."""
    calibrated = any(p.prediction != "roofline" for p in preds)
    cols = [("batch", "right"), ("op", "left"), ("FLOPs", "right"), ("bytes", "right"), ("FLOP/B", "right"),
            ("time", "right")] + ([("roofline", "right")] if calibrated else []) + [("share", "right"), ("bound", "left")]
    t = compact_table(title, cols)
    if calibrated:
        t.caption = ("time: calibrated from the measured tables (* = outside the measured grid, clamped; ! = below "
                     "the roofline, impossible: see below_roofline in --format json); roofline: the ceiling")
    for batch, group in groupby(preds, key=lambda p: p.cost.batch):
        rows = list(group)
        total = sum(p.time_s for p in rows)
        for i, p in enumerate(rows):
            c = p.cost
            cells = [str(batch) if i == 0 else "", c.label, fmt_count(c.flops), fmt_bytes(c.bytes),
                     f"{c.intensity:.1f}",
                     fmt_time(p.time_s) + ("*" if p.extrapolated else "") + ("!" if p.below_roofline else "")]
            if calibrated:
                cells.append(fmt_time(p.roofline_time_s))
            cells += [fmt_pct(p.time_s / total if total else 0), bound_markup(p.bound)]
            t.add_row(*cells, end_section=(i == len(rows) - 1))
    return t


def speculative_table(points, spec) -> Table:
    """Plain decoding against speculative decoding, per batch."""
    t = compact_table(f"Speculative decoding: {spec.k} drafted by {escape(spec.draft.name)}, acceptance "
                      f"{spec.acceptance:g}, {spec.tokens_per_step:.3g} tokens per verify step",
                      [("batch", "right"), ("ITL plain", "right"), ("verify", "right"), ("draft x k", "right"),
                       ("ITL spec", "right"), ("speed-up", "right"), ("tok/s spec", "right")])
    for p in points:
        t.add_row(str(p.batch), fmt_time(p.itl_s), fmt_time(p.verify_s), fmt_time(p.draft_s), fmt_time(p.spec_itl_s),
                  f"{p.speedup:.2f}x", fmt_rate(p.tokens_per_s))
    return t
