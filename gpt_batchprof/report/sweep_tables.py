"""Rich tables closing a sweep: free batching per series, measured vs predicted, generation."""

from __future__ import annotations

from typing import Any, Sequence

from rich.console import Console
from rich.markup import escape

from gpt_batchprof.report.tables import compact_table
from gpt_batchprof.units import fmt_rate, fmt_ratio, fmt_time

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
    fixed = [f"{c[1]} {escape(str(summaries[0].field(c[0])))}" for c in ID_COLUMNS if c not in ids] if summaries else []
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
        cells = [escape(str(s.field(c[0]))) for c in ids]
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
        t.add_row(escape(op), str(n), fmt_ratio(med))
    return t


GEN_PREDICTED = ("ttft_s", "itl_s", "predicted_time_s", "predicted_items_per_s")
GEN_MEASURED = ("measured_ttft_s", "measured_itl_s", "measured_time_s", "measured_items_per_s")


def generation_table(rows: Sequence[Any], measured: bool, predicted: bool = True):
    """Seed 000's table: per batch, what batching buys (x tput: tokens/s against the first batch)
    and costs (x lat: end-to-end latency against it); measured next to predicted when both exist."""
    rows = sorted(rows, key=lambda r: (r.model, r.hardware, r.seq_len, r.batch))
    cols = [("model", "left"), ("hw", "left"), ("prompt", "right"), ("batch", "right")]
    both = measured and predicted
    if both:
        cols += [(h, "right") for name in ("TTFT", "e2e", "tok/s") for h in (name, "meas")]
        cols += [("x tput", "right"), ("meas", "right"), ("x lat", "right"), ("meas", "right")]
        title = "Generation per batch: predicted, then measured (a real generation loop)"
    else:
        cols += [(h, "right") for h in ("TTFT", "ITL", "e2e", "tok/s", "x tput", "x lat")]
        title = "Generation: end-to-end latency and throughput per batch" + (" (measured)" if measured else "")
    t = compact_table(title, cols)
    base: dict[tuple, Any] = {}
    for r in rows:
        k = (r.model, r.hardware, r.seq_len, r.dtype, r.attention)
        b0 = base.setdefault(k, r)
        cells = [escape(str(r.model)), escape(str(r.hardware)), str(r.seq_len), str(r.batch)]
        sources = (GEN_PREDICTED, GEN_MEASURED) if both else (GEN_MEASURED if measured else GEN_PREDICTED,)
        tput = [_rel(getattr(r, src[3]), getattr(b0, src[3])) for src in sources]
        lat = [_rel(getattr(r, src[2]), getattr(b0, src[2])) for src in sources]
        if both:
            for i, fmt in ((0, fmt_time), (2, fmt_time), (3, fmt_rate)):
                cells += [fmt(getattr(r, GEN_PREDICTED[i])), fmt(getattr(r, GEN_MEASURED[i]))]
            cells += tput + lat
        else:
            ttft, itl, e2e, tps = sources[0]
            cells += [fmt_time(getattr(r, ttft)), fmt_time(getattr(r, itl)), fmt_time(getattr(r, e2e)),
                      fmt_rate(getattr(r, tps)), tput[0], lat[0]]
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
        out.print(generation_table(summary.generation, summary.measured, summary.predicted))
    if summary.measured and summary.ratios:
        out.print(ratio_table(summary.ratios))
