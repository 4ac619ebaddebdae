"""Rich rendering of `bench` and `calibrate` results. Values arrive in SI; units are scaled here."""

from __future__ import annotations

from typing import Any, Sequence

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from gpt_batchprof.report.tables import compact_table
from gpt_batchprof.report.markup import bound_markup
from gpt_batchprof.units import fmt_bytes, fmt_count, fmt_pct, fmt_ratio, fmt_time


def _share_markup(share: float | None) -> str:
    if share is None:
        return "-"
    style = "green" if share >= 0.7 else "yellow" if share >= 0.3 else "red"
    return f"[{style}]{fmt_pct(share)}[/]"


def bench_header(out: Console, result) -> None:
    s, hw, sc = result.settings, result.hardware, result.scenario
    dt = sc.dtypes
    out.print(
        f"[bold]{escape(result.model.name)}[/] measured on [bold]{escape(s.device_name)}[/] (torch {s.torch_version}"
        f"{f', {s.threads} threads' if s.device == 'cpu' else ''}{', CUDA graphs' if s.cuda_graphs else ''}); "
        f"predicted with [bold]{escape(hw.name)}[/] ({fmt_count(hw.peak_flops_per_s.get(dt.act), 'FLOP/s')} {dt.act}, "
        f"{fmt_count(hw.memory_bandwidth_bytes_per_s, 'B/s')})"
        + (f"; calibrated from its measured tables ({escape(hw.measured.device_name)}, {hw.measured.date})"
           if hw.measured is not None else ""),
        highlight=False,
    )
    par = getattr(result, "parallel", None)
    if par is not None and not par.is_single:
        ic = hw.interconnect
        out.print(f"{par.label()}: one GPU's sharded operators timed here; collectives across {par.tp if par.tp > 1 else max(par.ep, 2)} "
                  f"processes ({'NCCL' if s.device == 'cuda' else 'gloo'}), predicted with "
                  f"{ic.name + ' ' + fmt_count(ic.bandwidth_bytes_per_s, 'B/s') if ic else 'no interconnect'}",
                  highlight=False)
    out.print(f"prompt {sc.prompt_len}, decode at {sc.itl_context} cached tokens; weights {dt.weight}, "
              f"activations {dt.act}, KV {dt.kv}; {sc.attention} attention. Times are totals over all "
              "layers (median x launches); IQR relative to the median; roof = share of the roofline reached "
              "(roofline / measured); pred = the prediction (calibrated from the profile's measured tables when it has them, "
              "* = outside the measured grid, ! = below the roofline: see below_roofline in JSON), err = pred / meas - 1; achieved = FLOP/s when compute-bound, else bytes/s.",
              style="dim", highlight=False)


def _achieved(row) -> str:
    """The rate of the resource the roofline says binds: FLOP/s when compute-bound, else B/s."""
    if row.prediction.bound == "compute" and row.cost.flops:
        return fmt_count(row.achieved_flops_per_s, "FLOP/s")
    return fmt_count(row.achieved_bytes_per_s, "B/s")


def _note(row) -> str:
    if row.status != "ok":
        return f"[{'red' if row.status == 'oom' else 'dim'}]{row.status}[/]"
    return "[yellow]" + ",".join(w.split(":", 1)[0] for w in row.warnings) + "[/]" if row.warnings else ""


def bench_table(rows: Sequence, title: str) -> Table:
    """One line per operator; details of warnings and skipped rows come from ``bench_notes``."""
    # Short headers so the table fits an 80-column terminal; the title and notes explain them.
    calibrated = any(r.prediction.prediction != "roofline" for r in rows)
    cols = [("batch", "right"), ("op", "left"), ("meas", "right"), ("IQR", "right"), ("pred", "right"),
            ("err", "right")] + ([("roofline", "right")] if calibrated else []) + [
            ("bound", "left"), ("roof", "right"), ("achieved", "right"), ("note", "left")]
    t = compact_table(title, cols)
    prev_batch = None
    for r in rows:
        c = r.cost
        if prev_batch is not None and c.batch != prev_batch:
            t.add_section()
        prev_batch = c.batch
        ok = r.status == "ok"
        iqr = fmt_pct(r.measured_iqr_s / r.measured_time_s) if ok and r.measured_time_s else "-"
        p = r.prediction
        pred = fmt_time(p.time_s) + ("*" if p.extrapolated else "") + ("!" if p.below_roofline else "")
        err = _error_markup(r.prediction_error) if ok else "-"
        cells = [str(c.batch), c.label, fmt_time(r.measured_time_s) if ok else "-", iqr, pred, err]
        if calibrated:
            cells.append(fmt_time(p.roofline_time_s))
        cells += [bound_markup(p.bound, short=True), _share_markup(r.roofline_share) if ok else "-",
                  _achieved(r) if ok else "-", _note(r)]
        t.add_row(*cells)
    return t


def _error_markup(err: float | None) -> str:
    """Signed error of the prediction against the measurement: +12% = predicted 12% too slow."""
    if err is None:
        return "-"
    style = "green" if abs(err) <= 0.10 else "yellow" if abs(err) <= 0.25 else "red"
    return f"[{style}]{100 * err:+.0f}%[/]"


def bench_notes(rows: Sequence) -> list[str]:
    """One line per skipped / out-of-memory row and per warning: what happened and what to try."""
    out = []
    for r in rows:
        c = r.cost
        where = f"{c.phase} b={c.batch} {c.label}"
        if r.status != "ok":
            out.append(f"{where}: {r.status}: {r.reason}")
        out += [f"{where}: {w}" for w in r.warnings]
    return out


def print_bench(out: Console, result) -> None:
    bench_header(out, result)
    phases = list(dict.fromkeys(r.cost.phase for r in result.rows if r.cost.op != "mlp"))
    for phase in phases:
        rows = [r for r in result.rows if r.cost.phase == phase and r.cost.op != "mlp"]
        c = rows[0].cost
        what = f"prompt {c.new_tokens}" if phase == "prefill" else f"{c.kv_len} cached tokens"
        out.print(bench_table(rows, f"{phase} ({what}; all layers)"))
    mlp = [r for r in result.rows if r.cost.op == "mlp"]
    if mlp:
        s = result.settings
        out.print(bench_table(mlp, f"plain MLP: depth {s.mlp_depth}, width {s.mlp_width} (seed 002)"))
    notes = bench_notes(result.rows)
    for line in notes[:20]:
        out.print(f"  {line}", style="dim", highlight=False, soft_wrap=True)
    if len(notes) > 20:
        out.print(f"  ... and {len(notes) - 20} more notes (see --format json)", style="dim")
    if not result.complete:
        out.print(f"[yellow]interrupted: {len(result.rows)} rows finished[/]")


def bench_markdown(result) -> str:
    from gpt_batchprof.report import export

    keep = ("phase", "batch", "op", "time_s", "bound", "status", "measured_time_s", "measured_iqr_s",
            "measured_over_predicted", "prediction_error", "roofline_time_s", "roofline_error", "roofline_share",
            "achieved_flops_per_s", "achieved_bytes_per_s", "reason")
    from gpt_batchprof.report.rows import bench_row_dict

    rows = [bench_row_dict(r) for r in result.rows]
    return export.to_markdown(rows, columns=keep, title=f"bench: {result.model.name} on {result.settings.device_name}")


def calibration_table(cal, datasheet=None) -> Table:
    """Measured ceilings, next to a datasheet profile when one is given."""
    cols = [("ceiling", "left"), ("measured", "right")]
    if datasheet is not None:
        cols += [(escape(datasheet.name), "right"), ("measured/datasheet", "right")]
    t = compact_table(f"calibrated: {escape(cal.device_name)} (torch {cal.torch_version}, {cal.threads} threads)", cols)

    def add(label: str, measured: float | None, sheet: float | None, fmt) -> None:
        cells = [label, fmt(measured) if measured is not None else "-"]
        if datasheet is not None:
            ratio = measured / sheet if (measured and sheet) else None
            cells += [fmt(sheet) if sheet else "-", fmt_ratio(ratio)]
        t.add_row(*cells)

    sheet_peaks: dict[str, Any] = dict(datasheet.peak_flops_per_s) if datasheet is not None else {}
    for dt in dict.fromkeys(list(cal.peak_flops_per_s) + list(sheet_peaks)):
        add(f"matmul {dt}", cal.peak_flops_per_s.get(dt), sheet_peaks.get(dt), lambda v: fmt_count(v, "FLOP/s"))
    add("memory bandwidth", cal.memory_bandwidth_bytes_per_s,
        datasheet.memory_bandwidth_bytes_per_s if datasheet is not None else None, lambda v: fmt_count(v, "B/s"))
    add("launch overhead", cal.launch_overhead_s, datasheet.launch_overhead_s if datasheet is not None else None, fmt_time)
    add("memory", cal.memory_bytes, datasheet.memory_bytes if datasheet is not None else None, fmt_bytes)
    return t


def measured_table(measured) -> Table:
    """One line per efficiency table: its axes, how many cells were measured, the range of rates,
    and (when recorded) its quality: spread of the repeats, cells re-measured and dropped."""
    from gpt_batchprof.profiles.measured import unit

    host = measured.host_s_per_layer
    title = ("efficiency tables (overhead per kernel call: "
             + ", ".join(f"{k} {fmt_time(v)}" for k, v in measured.overhead_s.items())
             + ("; host time per layer: " + ", ".join(f"{k} {fmt_time(v)}" for k, v in host.items()) if host else "")
             + ")")
    cols = [("table", "left"), ("axes", "left"), ("measured", "right"), ("lowest", "right"), ("highest", "right")]
    if measured.quality:
        cols += [("spread med/p90", "right"), ("re-measured", "right"), ("dropped", "right"), ("CPU share", "right")]
    t = compact_table(title, cols)
    for name, tab in sorted(measured.tables.items()):
        vals = [v for v in tab.values if v is not None]
        axes = " x ".join(f"{a} {fmt_count(ax[0])}..{fmt_count(ax[-1])}" for a, ax in zip(tab.axis_names, tab.axes))
        u = unit(tab.kind)
        row = [name, axes, f"{len(vals)}/{len(tab.values)}", fmt_count(min(vals), u), fmt_count(max(vals), u)]
        if measured.quality:
            q = measured.quality.get(name)
            share = q.get("cpu_share_pct") if q else None
            row += ([f"{q.get('spread_pct', 0):.1f}% / {q.get('spread_p90_pct', 0):.1f}%",
                     f"{int(q.get('remeasured', 0))}", f"{int(q.get('dropped', 0))}",
                     "-" if share is None else f"{share:.0f}%"] if q else ["-"] * 4)
        t.add_row(*row)
    return t


def print_calibration(out: Console, cal, datasheet=None, measured=None) -> None:
    out.print(calibration_table(cal, datasheet))
    for dt, why in cal.skipped.items():
        out.print(f"  {dt}: not measured ({why})", style="dim", highlight=False)
    if measured is not None:
        out.print(measured_table(measured))
    if cal.link is not None:
        out.print()
        out.print(link_table(cal.link))
        link = cal.link
        ic = datasheet.interconnect if datasheet is not None else None
        sheet = f"; {datasheet.name}: {ic.name}, {fmt_count(ic.bandwidth_bytes_per_s, 'B/s')}, {fmt_time(ic.latency_s)}" if ic else ""
        out.print(f"interconnect: bus bandwidth {fmt_count(link.bandwidth_bytes_per_s, 'B/s')} (best), "
                  f"latency {fmt_time(link.latency_s)} per ring step{sheet}", highlight=False)


def link_table(link) -> Table:
    """All-reduce time and bandwidth against message size."""
    t = compact_table(f"All-reduce over {link.ranks} processes ({link.backend})",
                      [("message", "right"), ("time", "right"), ("algbw", "right"), ("busbw", "right")])
    for p in link.points:
        t.add_row(fmt_bytes(p.message_bytes), fmt_time(p.time_s), fmt_count(p.algbw_bytes_per_s, "B/s"),
                  fmt_count(p.busbw_bytes_per_s, "B/s"))
    return t
