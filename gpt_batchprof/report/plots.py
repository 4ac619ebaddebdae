"""PNG plots of sweep rows (matplotlib, headless Agg; imported only when plotting).

- ``<workload>-time.png``: time per call vs batch, log-log, one panel per (phase, operator),
  one line per series (hidden size, sequence length, ... whatever varies); predicted
  dashed, measured solid, same colour.
- ``<workload>-throughput.png``: tokens/s (GPT operators) or items/s (MLP) vs batch.
- ``<workload>-roofline-<hw>.png``: achieved FLOP/s against arithmetic intensity, with the
  profile's memory and compute ceilings; one marker per operator x batch (hollow:
  predicted, filled: measured).
- ``generation.png``: end-to-end latency and throughput vs batch, and the trade-off
  (throughput gain against latency growth, relative to batch 1).
Rows are dicts of SI values; units are scaled here (ms, TFLOP/s).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from gpt_batchprof.errors import BatchprofError

LABEL_FIELDS = ("model", "hardware", "seq_len", "dtype", "attention")
MAX_PANELS = 9
PHASE_MARKERS = {"prefill": "o", "decode": "s", "forward": "^", "generation": "D"}


def _pyplot():
    try:
        import matplotlib
    except ModuleNotFoundError:
        raise BatchprofError("--plot needs matplotlib (pip install 'gpt-batchprof[plot]')") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _varying(rows: Sequence[Mapping[str, Any]], fields: Sequence[str]) -> list[str]:
    return [f for f in fields if len({r.get(f) for r in rows}) > 1]


def _label(row: Mapping[str, Any], fields: Sequence[str]) -> str:
    parts = []
    for f in fields:
        v = row.get(f)
        if f == "seq_len":
            parts.append(f"{'ctx' if row.get('phase') == 'decode' else 'seq'} {v}")
        elif f == "model" and row.get("workload") == "mlp":
            parts.append(f"width {row.get('d_model')}")
        else:
            parts.append(str(v))
    return ", ".join(parts) or str(row.get("model"))


def _series(rows, fields):
    """{label: rows sorted by batch}, labels in first-seen order."""
    out: dict[str, list] = {}
    for r in rows:
        out.setdefault(_label(r, fields), []).append(r)
    return {k: sorted(v, key=lambda r: r["batch"]) for k, v in out.items()}


def _log_batch_axis(ax) -> None:
    from matplotlib.ticker import FuncFormatter, LogLocator

    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(LogLocator(base=2))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
    ax.set_xlabel("batch size")
    ax.grid(True, which="major", alpha=0.3)


def _log_value_axis(ax) -> None:
    """Log y with plain numbers at 1, 2, 5 x 10^k (no 2x10^-1 labels)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:,.6g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def _panels(plt, n: int, width: float = 5.2, height: float = 3.9):
    ncols = 1 if n == 1 else 2 if n in (2, 4) else 3
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols + 2.6, height * nrows + 0.9), squeeze=False)
    flat = [a for row in axes for a in row]
    for a in flat[n:]:
        a.set_visible(False)
    return fig, flat[:n]


def _facets(rows):
    facets: dict[tuple[str, str], list] = {}
    for r in rows:
        facets.setdefault((r["phase"], r["op"]), []).append(r)
    return list(facets.items())[:MAX_PANELS]


def _line_plot(plt, rows, value, title: str, ylabel: str, path: Path, scale: float = 1.0) -> Path:
    """One panel per (phase, op); predicted dashed, measured solid; one colour per series."""
    fields = _varying(rows, LABEL_FIELDS)
    facets = _facets(rows)
    fig, axes = _panels(plt, len(facets))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    handles: dict[str, Any] = {}
    for ax, ((phase, op), frows) in zip(axes, facets):
        for i, (label, srows) in enumerate(_series(frows, fields).items()):
            c = colours[list(_series(rows, fields)).index(label) % len(colours)]
            for kind, style, marker in (("predicted", "--", None), ("measured", "-", "o")):
                pts = [(r["batch"], value(r, kind)) for r in srows if value(r, kind) is not None]
                if pts:
                    xs, ys = zip(*pts)
                    (h,) = ax.plot(xs, [y * scale for y in ys], style, color=c, marker=marker, markersize=3.5,
                                   linewidth=1.6)
                    handles.setdefault(label, h)
        _log_batch_axis(ax)
        _log_value_axis(ax)
        ax.set_ylabel(ylabel)
        what = "MLP (all layers)" if op == "mlp" and phase == "forward" else op
        ax.set_title(f"{phase}: {what}" if phase != "forward" else what, fontsize=11)
    from matplotlib.lines import Line2D

    legend = [Line2D([], [], color=h.get_color(), linewidth=2) for h in handles.values()]
    labels = list(handles)
    if any(value(r, "predicted") is not None for r in rows):
        legend.append(Line2D([], [], color="0.3", linestyle="--"))
        labels.append("predicted (roofline)")
    if any(value(r, "measured") is not None for r in rows):
        legend.append(Line2D([], [], color="0.3", marker="o"))
        labels.append("measured" + (f" on {rows[0].get('device')}" if rows[0].get("device") else ""))
    fig.legend(legend, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False, fontsize=9,
               title=", ".join(fields) if fields else None)
    hws = sorted({str(r["hardware"]) for r in rows})
    fig.suptitle(f"{title} (roofline: {', '.join(hws)})", fontsize=13)
    fig.tight_layout()
    _save(plt, fig, path)
    return path


def _time(r, kind):
    return r.get(f"{kind}_time_s")


def _rate(r, kind):
    return r.get(f"{kind}_items_per_s")


def _roofline(plt, rows, hw, hw_name: str, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(8.6, 5.6))
    pts = [r for r in rows if r.get("intensity")]
    # colour by operator; with a single operator (the MLP), by whatever else varies (width, ...)
    fields = _varying(pts, LABEL_FIELDS)
    colour_of = (lambda r: r["op"]) if len({r["op"] for r in pts}) > 1 else (lambda r: _label(r, fields))
    ops = list(dict.fromkeys(colour_of(r) for r in pts))
    phases = list(dict.fromkeys(r["phase"] for r in pts))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    xs_all = [r["intensity"] for r in pts]
    lo, hi = min(xs_all) / 2, max(xs_all) * 2
    if hw is not None:
        bw = hw.memory_bandwidth_bytes_per_s
        dts = list(dict.fromkeys(r["dtype"] for r in pts))
        for j, dt in enumerate(dts):
            peak = hw.peak_flops_per_s.get(dt)
            if not peak:
                continue
            ridge = peak / bw
            lo, hi = min(lo, ridge / 4), max(hi, ridge * 4)
            xs = [lo, ridge, hi]
            ax.plot(xs, [min(peak, bw * x) / 1e12 for x in xs], color="black", linewidth=2.0 - 0.5 * j,
                    linestyle=("-", ":", "-.")[j % 3], zorder=1,
                    label=f"ceiling {dt}: {peak / 1e12:g} TFLOP/s, {bw / 1e9:g} GB/s (ridge {ridge:.0f} FLOP/B)")
    for i, op in enumerate(ops):
        c = colours[i % len(colours)]
        for r in (r for r in pts if colour_of(r) == op):
            m = PHASE_MARKERS.get(r["phase"], "o")
            pred = r.get("predicted_flops_per_s")
            meas = r.get("measured_flops_per_s")
            if pred:
                ax.scatter(r["intensity"], pred / 1e12, s=28, facecolors="none", edgecolors=c, marker=m, zorder=3)
            if meas:
                ax.scatter(r["intensity"], meas / 1e12, s=28, color=c, marker=m, zorder=4)
        ax.scatter([], [], color=c, marker=PHASE_MARKERS.get(phases[0], "o") if len(phases) == 1 else "o",
                   label=op)
    for ph in phases if len(phases) > 1 else ():
        ax.scatter([], [], color="0.4", marker=PHASE_MARKERS.get(ph, "o"), label=f"{ph}")
    ax.scatter([], [], facecolors="none", edgecolors="0.4", label="predicted (hollow)")  # noqa
    if any(r.get("measured_flops_per_s") for r in pts):
        ax.scatter([], [], color="0.4", label="measured (filled)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.set_xlabel("arithmetic intensity (FLOP/byte)")
    ax.set_ylabel("achieved TFLOP/s")
    ax.grid(True, which="major", alpha=0.3)
    ax.set_title(f"Roofline on {hw_name}: one marker per operator x batch x size", fontsize=11)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False, fontsize=8.5)
    fig.tight_layout()
    _save(plt, fig, path)
    return path


def _generation(plt, rows, path: Path) -> Path:
    fields = _varying(rows, LABEL_FIELDS)
    series = _series(rows, fields)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, (a1, a2, a3) = plt.subplots(1, 3, figsize=(16, 4.8))
    for i, (label, srows) in enumerate(series.items()):
        c = colours[i % len(colours)]
        for kind, style, marker in (("predicted", "--", "o"), ("measured", "-", "s")):
            pts = [(r["batch"], r.get(f"{kind}_time_s"), r.get(f"{kind}_items_per_s")) for r in srows
                   if r.get(f"{kind}_time_s")]
            if not pts:
                continue
            b, t, tps = zip(*pts)
            name = f"{label} {kind}" if label else kind
            a1.plot(b, [x * 1e3 for x in t], style, color=c, marker=marker, markersize=4, label=name)
            a2.plot(b, tps, style, color=c, marker=marker, markersize=4, label=name)
            gain = [x / tps[0] for x in tps]
            growth = [x / t[0] for x in t]
            a3.plot(gain, growth, style, color=c, marker=marker, markersize=4, label=name)
            for bb, gx, gy in zip(b, gain, growth):
                a3.annotate(f"b{bb}", (gx, gy), textcoords="offset points", xytext=(4, -10), fontsize=7.5, color=c)
    for ax in (a1, a2):
        _log_batch_axis(ax)
        _log_value_axis(ax)
    a1.set_ylabel("end-to-end latency per request (ms)")
    a1.set_title("Latency vs batch", fontsize=11)
    a2.set_ylabel("throughput (generated tokens/s)")
    a2.set_title("Throughput vs batch", fontsize=11)
    a3.set_xscale("log", base=2)
    from matplotlib.ticker import FuncFormatter

    a3.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}x"))
    a3.set_xlabel("throughput gain vs batch 1 (x)")
    a3.set_ylabel("latency growth vs batch 1 (x)")
    a3.set_title("The trade-off (each marker is a batch)", fontsize=11)
    a3.grid(True, alpha=0.3)
    a3.legend(fontsize=8, frameon=False)
    r0 = rows[0]
    fig.suptitle(f"Generation: prompt {r0['seq_len']}, {r0.get('gen_len')} tokens generated "
                 "(predicted dashed, measured solid)", fontsize=13)
    fig.tight_layout()
    _save(plt, fig, path)
    return path


def _save(plt, fig, path: Path) -> None:
    """A whole PNG or none: written beside the target, then renamed (no 0-byte file left)."""
    from gpt_batchprof.files import write_atomic

    try:
        write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
    finally:
        plt.close(fig)


def plot_all(rows: Sequence[Mapping[str, Any]], folder: Path, hardware: Mapping[str, Any] | None = None) -> list[Path]:
    """Every plot the rows support; returns the files written."""
    plt = _pyplot()
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BatchprofError(f"{folder}: cannot create ({e.strerror or e})") from None
    hardware = hardware or {}
    written: list[Path] = []
    by_workload: dict[str, list] = {}
    for r in rows:
        by_workload.setdefault(r["workload"], []).append(r)
    for wl, wrows in by_workload.items():
        if wl == "generation":
            written.append(_generation(plt, wrows, folder / "generation.png"))
            continue
        unit = "tokens/s" if wl == "gpt" else "items/s (input rows)"
        what = "GPT operators" if wl == "gpt" else f"MLP of depth {wrows[0].get('launches')}"
        written.append(_line_plot(plt, wrows, _time, f"{what}: time per call vs batch", "time (ms)",
                                  folder / f"{wl}-time.png", scale=1e3))
        written.append(_line_plot(plt, wrows, _rate, f"{what}: throughput vs batch", f"throughput ({unit})",
                                  folder / f"{wl}-throughput.png"))
        for hw_name in dict.fromkeys(r["hardware"] for r in wrows):
            hrows = [r for r in wrows if r["hardware"] == hw_name]
            if any(r.get("intensity") for r in hrows):
                safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in hw_name)
                written.append(_roofline(plt, hrows, hardware.get(hw_name), hw_name,
                                         folder / f"{wl}-roofline-{safe}.png"))
    return written
