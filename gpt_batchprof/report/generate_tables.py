"""Rich rendering of `generate` results: measured next to predicted, per batch. SI in, units out here."""

from __future__ import annotations

from typing import Sequence

from rich.console import Console
from rich.table import Table

from gpt_batchprof.report.tables import compact_table
from gpt_batchprof.units import fmt_bytes, fmt_count, fmt_rate, fmt_ratio, fmt_time


def fmt_error(x: float | None) -> str:
    """Signed relative error of a prediction, coloured by size (within 25% green, 2x yellow, else red)."""
    if x is None:
        return "-"
    style = "green" if abs(x) <= 0.25 else "yellow" if abs(x) <= 1.0 else "red"
    return f"[{style}]{100 * x:+.0f}%[/]"


def generate_header(out: Console, result) -> None:
    s, hw, sc, m = result.settings, result.hardware, result.scenario, result.model
    dt = sc.dtypes
    graphs = ", decode from CUDA graphs" if s.device == "cuda" and s.cuda_graphs and s.engine == "reference" else ""
    out.print(
        f"[bold]{m.name}[/] ({m.n_params / 1e9:.2f} B params, {s.engine} engine) generating on "
        f"[bold]{s.device_name}[/] (torch {s.torch_version}{graphs}); predicted with [bold]{hw.name}[/] "
        f"({fmt_count(hw.peak_flops_per_s.get(dt.act), 'FLOP/s')} {dt.act}, "
        f"{fmt_count(hw.memory_bandwidth_bytes_per_s, 'B/s')})", highlight=False)
    out.print(
        f"prompt {sc.prompt_len}, generate {sc.gen_len} (1 prefill + {sc.gen_len - 1} decode steps); {dt.act}; "
        f"{sc.attention} attention; {s.warmup_runs} warm-up run(s), median of {s.runs}. ITL: median over the "
        f"decode steps (predicted at context {sc.itl_context}); tok/s = batch x gen_len / e2e; "
        "error = (predicted - measured) / measured.", style="dim", highlight=False)


def generate_table(rows: Sequence) -> Table:
    """Measured next to predicted per batch; with a calibrated profile the roofline and its error too."""
    roof = any(r.calibrated for r in rows)
    cols = [("batch", "right"), ("metric", "left"), ("measured", "right"), ("predicted", "right"), ("error", "right")]
    t = compact_table("Measured vs predicted per batch" + (" (calibrated; roofline alongside)" if roof else ""),
                      cols + ([("roofline", "right"), ("error", "right")] if roof else []))
    for r in rows:
        p, run, err = r.predicted, r.run, r.errors
        if run is None:
            t.add_row(str(r.batch), f"[{'red' if r.status == 'oom' else 'dim'}]{r.status}[/]", "-",
                      fmt_time(p.e2e_s), r.reason[:40], *(["", ""] if roof else []), end_section=True)
            continue

        def roofline(get, fmt, measured) -> list[str]:
            if not roof:
                return []
            return [fmt(get(p)), fmt_error(None if measured is None else (get(p) - measured) / measured)]

        lines = [
            ["TTFT", fmt_time(run.ttft_s), fmt_time(p.ttft_s), fmt_error(err["ttft"]),
             *roofline(lambda x: x.roofline_ttft_s, fmt_time, run.ttft_s)],
            ["ITL", fmt_time(run.itl_s), fmt_time(p.itl_s), fmt_error(err["itl"]),
             *roofline(lambda x: x.roofline_itl_s, fmt_time, run.itl_s)],
            ["ITL p90", fmt_time(run.itl_p90_s), "", "", *(["", ""] if roof else [])],
            ["e2e", fmt_time(run.e2e_s), fmt_time(p.e2e_s), fmt_error(err["e2e"]),
             *roofline(lambda x: x.roofline_e2e_s, fmt_time, run.e2e_s)],
            ["tok/s", fmt_rate(run.tokens_per_s), fmt_rate(p.tokens_per_s), fmt_error(err["tokens_per_s"]),
             *roofline(lambda x: x.roofline_tokens_per_s, fmt_rate, run.tokens_per_s)],
            ["memory", fmt_bytes(run.peak_memory_bytes), fmt_bytes(p.memory.total_bytes), "",
             *(["", ""] if roof else [])],
        ]
        for i, cells in enumerate(lines):
            t.add_row(str(r.batch) if i == 0 else "", *cells, end_section=i == len(lines) - 1)
    return t


def batching_table(rows: Sequence) -> Table | None:
    """Seed 000's table: what batching buys (tokens/s) and costs (end-to-end latency) against the first batch."""
    ok = [r for r in rows if r.run is not None]
    if len(ok) < 2:
        return None
    b0 = ok[0]
    t = compact_table(f"Batching vs batch {b0.batch}: x tput = tokens/s, x lat = e2e",
                      [("batch", "right"), ("tok/s", "right"), ("x tput", "right"), ("pred", "right"),
                       ("x lat", "right"), ("pred", "right")])
    for r in ok:
        t.add_row(str(r.batch), fmt_rate(r.run.tokens_per_s),
                  fmt_ratio(r.run.tokens_per_s / b0.run.tokens_per_s),
                  fmt_ratio(r.predicted.tokens_per_s / b0.predicted.tokens_per_s),
                  fmt_ratio(r.run.e2e_s / b0.run.e2e_s), fmt_ratio(r.predicted.e2e_s / b0.predicted.e2e_s))
    return t


def print_generate(out: Console, result) -> None:
    generate_header(out, result)
    out.print(generate_table(result.rows))
    table = batching_table(result.rows)
    if table is not None:
        out.print(table)
    methods = {r.memory_method for r in result.rows if r.memory_method}
    notes = list(result.notes)
    if "cuda-max-allocated" in methods:
        notes.append("measured memory: torch.cuda.max_memory_allocated over the timed run")
    for note in notes:
        out.print(f"note: {note}", style="dim", highlight=False)
    if not result.complete:
        out.print(f"interrupted: {len(result.rows)} of {len(result.batches)} batches done", style="yellow")
