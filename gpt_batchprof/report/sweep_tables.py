"""Rich tables closing a sweep: free batching per series, measured vs predicted, generation."""

from __future__ import annotations

from typing import Any, Sequence

from rich.console import Console

from gpt_batchprof.report.tables import compact_table
from gpt_batchprof.report.units import fmt_rate, fmt_ratio, fmt_time

MAX_SERIES_ROWS = 60


def _slowdown(times: Sequence[float | None]) -> str:
    if not times or times[0] is None or times[-1] is None or not times[0]:
        return "-"
    return fmt_ratio(times[-1] / times[0])


ID_COLUMNS = (("model", "model", "left"), ("hardware", "hw", "left"), ("phase", "phase", "left"),
              ("seq_len", "seq", "right"), ("op", "op", "left"), ("dtype", "dtype", "left"),
              ("attention", "attn", "left"))


def free_batching_table(summaries: Sequence[Any], measured: bool, predicted: bool = True, tolerance: float = 0.15):
    """One row per series; identity columns only where they vary (the title names the rest)."""
    ids = [c for c in ID_COLUMNS if c[0] in ("model", "op") or len({s.field(c[0]) for s in summaries}) > 1]
    fixed = [f"{c[1]} {summaries[0].field(c[0])}" for c in ID_COLUMNS if c not in ids] if summaries else []
    cols = [(head, just) for _, head, just in ids]
    if predicted:
        cols += [("b1 pred", "right"), ("free to", "right"), ("bmax/b1", "right")]
    if measured:
        cols += [("b1 meas", "right"), ("free to", "right"), ("bmax/b1", "right")]
    if measured and predicted:
        cols.append(("meas/pred", "right"))
    pct = round(100 * tolerance)
    t = compact_table(f"Free batching: largest batch within {pct}% of batch 1's time"
                      + (f" ({', '.join(fixed)})" if fixed else ""), cols)
    for s in summaries[:MAX_SERIES_ROWS]:
        cells = [str(s.field(c[0])) for c in ids]
        if predicted:
            cells += [fmt_time(s.predicted_s[0]), _b(s.free_batch_predicted, s.batches), _slowdown(s.predicted_s)]
        if measured:
            cells += [fmt_time(s.measured_s[0]), _b(s.free_batch_measured, s.batches), _slowdown(s.measured_s)]
        if measured and predicted:
            cells.append(fmt_ratio(s.median_ratio))
        t.add_row(*cells)
    if len(summaries) > MAX_SERIES_ROWS:
        t.caption = f"first {MAX_SERIES_ROWS} of {len(summaries)} series; --format csv has every point"
    return t


def _b(free: int | None, batches: Sequence[int]) -> str:
    if free is None:
        return "-"
    return f"{free}+" if free == batches[-1] and len(batches) > 1 else str(free)


def ratio_table(ratios: dict[str, tuple[float, int]]):
    t = compact_table("Measured / predicted time (median; 1.00x = roofline)",
                      [("op", "left"), ("points", "right"), ("median", "right")])
    for op, (med, n) in sorted(ratios.items(), key=lambda kv: (kv[0] == "all", kv[0])):
        t.add_row(op, str(n), fmt_ratio(med))
    return t


def generation_table(rows: Sequence[dict[str, Any]], measured: bool):
    rows = sorted(rows, key=lambda r: (r["model"], r["hardware"], r["seq_len"], r["batch"]))
    cols = [("model", "left"), ("hw", "left"), ("prompt", "right"), ("batch", "right"), ("TTFT", "right"),
            ("ITL", "right"), ("e2e", "right"), ("tok/s", "right"), ("x tput", "right"), ("x lat", "right")]
    if measured:
        cols += [("e2e meas", "right"), ("tok/s meas", "right"), ("x tput meas", "right"), ("x lat meas", "right")]
    t = compact_table("Generation: end-to-end latency and throughput per batch", cols)
    base: dict[tuple, dict[str, Any]] = {}
    for r in rows:
        k = (r["model"], r["hardware"], r["seq_len"], r["dtype"], r["attention"])
        b0 = base.setdefault(k, r)
        cells = [r["model"], r["hardware"], str(r["seq_len"]), str(r["batch"]), fmt_time(r.get("ttft_s")),
                 fmt_time(r.get("itl_s")), fmt_time(r.get("predicted_time_s")),
                 fmt_rate(r.get("predicted_items_per_s")),
                 _rel(r.get("predicted_items_per_s"), b0.get("predicted_items_per_s")),
                 _rel(r.get("predicted_time_s"), b0.get("predicted_time_s"))]
        if measured:
            cells += [fmt_time(r.get("measured_time_s")), fmt_rate(r.get("measured_items_per_s")),
                      _rel(r.get("measured_items_per_s"), b0.get("measured_items_per_s")),
                      _rel(r.get("measured_time_s"), b0.get("measured_time_s"))]
        t.add_row(*cells)
    return t


def _rel(x: float | None, base: float | None) -> str:
    return "-" if x is None or not base else fmt_ratio(x / base)


def print_summary(out: Console, summary) -> None:
    """The closing tables of a sweep, from ``sweep.results.summarise(rows)``."""
    if summary.empty:
        out.print("no points", style="dim")
        return
    if summary.series:
        out.print(free_batching_table(summary.series, summary.measured, summary.predicted, summary.tolerance))
    if summary.generation:
        out.print(generation_table(summary.generation, summary.measured))
    if summary.measured and summary.ratios:
        out.print(ratio_table(summary.ratios))
