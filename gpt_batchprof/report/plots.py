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

Large sweeps (hundreds of thousands of rows): the rows are grouped in one pass, and each
panel gets one LineCollection (one polyline per series) and one scatter per marker kind,
never an artist per point or per series, so drawing stays linear in the rows and cheap
per artist. Legends list at most ``MAX_LEGEND`` series, then "+N more".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from gpt_batchprof.errors import BatchprofError

LABEL_FIELDS = ("model", "hardware", "seq_len", "dtype", "attention")
ROW_FIELDS = LABEL_FIELDS + ("workload", "phase", "op", "d_model", "device", "gen_len", "launches")
MAX_PANELS = 9
MAX_LEGEND = 12  # series named in a legend; the rest are counted ("+N more series")
AGGREGATE_ABOVE = 40  # a panel with more series draws their median and 10-90% band, not every line
BAND = (10.0, 50.0, 90.0)  # percentiles of the aggregate: band low, line, band high
AGGREGATE_COLOURS = {"predicted": "C0", "measured": "C3"}
MARKER_CELLS = 400  # roofline markers of one colour closer than 1/400 decade are drawn once
WIDE_DECADES = 4  # a log axis spanning more decades is ticked at powers of ten only
MAX_ANNOTATED = 60  # batch labels on the trade-off panel beyond this many points would be a smear
PHASE_MARKERS = {"prefill": "o", "decode": "s", "forward": "^", "generation": "D"}
KINDS = (("predicted", "--"), ("measured", "-"))


def _pyplot():
    try:
        import matplotlib
    except ModuleNotFoundError:
        raise BatchprofError("--plot needs matplotlib (pip install 'gpt-batchprof[plot]')") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _get(row: Any, name: str) -> Any:
    """A field of a row: a dict (read back from a file), another mapping, or an object with attributes."""
    if type(row) is dict:
        return row.get(name)
    return row.get(name) if isinstance(row, Mapping) else getattr(row, name, None)


def _label(row: Any, fields: Sequence[str]) -> str:
    parts = []
    for f in fields:
        v = _get(row, f)
        if f == "seq_len":
            parts.append(f"{'ctx' if _get(row, 'phase') == 'decode' else 'seq'} {v}")
        elif f == "model" and _get(row, "workload") == "mlp":
            parts.append(f"width {_get(row, 'd_model')}")
        else:
            parts.append(str(v))
    return ", ".join(parts) or str(_get(row, "model"))


class _Table:
    """Rows as columns, each extracted, encoded and parsed once for the whole table and shared
    by the subsets ``where`` makes: grouping, sorting and filtering are then numpy operations
    on integer codes and floats, not Python work per row. Built from rows (dicts or objects)
    or from columns ({name: values}, text cells as a .csv holds them); ``idx`` selects rows."""

    def __init__(self, rows: Sequence[Any] | None = None, columns: Mapping[str, Sequence] | None = None,
                 idx: Any = None, _shared: dict | None = None):
        self.rows = rows
        self.columns = columns
        self.idx = idx
        # whole-table caches, shared by subsets: raw columns, (codes, values) per column, floats
        self._shared = _shared if _shared is not None else {"raw": {}, "enc": {}, "num": {}}
        self._codes: dict[tuple[str, ...], tuple[Any, list[int]]] = {}

    def __len__(self) -> int:
        if self.idx is not None:
            return len(self.idx)
        return len(self.rows) if self.rows is not None else len(next(iter(self.columns.values()), ()))

    def _whole(self, name: str) -> list:
        cache = self._shared["raw"]
        col = cache.get(name)
        if col is None:
            if self.columns is not None:
                col = list(self.columns.get(name) or [None] * len(next(iter(self.columns.values()))))
            elif self.rows and type(self.rows[0]) is dict:
                col = [r.get(name) for r in self.rows]
            else:
                col = [_get(r, name) for r in self.rows]
            cache[name] = col
        return col

    def _sub(self, whole):
        return whole if self.idx is None else whole[self.idx]

    def encoded(self, name: str):
        """(code per row of this table, values): ``values[code]`` is the row's value; codes
        number the distinct values of the whole table in first-seen order."""
        import numpy as np

        cache = self._shared["enc"]
        if name not in cache:
            col = self._whole(name)
            index = {v: i for i, v in enumerate(dict.fromkeys(col))}
            cache[name] = (np.fromiter(map(index.__getitem__, col), np.int64, len(col)), list(index))
        codes, values = cache[name]
        return self._sub(codes), values

    def distinct(self, name: str) -> list:
        """The values of ``name`` in this table, in first-seen order."""
        codes, first = self.codes((name,))
        return [self.encoded(name)[1][c] for c in self.encoded(name)[0][first]]

    def num(self, name: str):
        """Float column; a missing value (None or an empty cell) is NaN."""
        cache = self._shared["num"]
        if name not in cache:
            cache[name] = self._parse(name)
        return self._sub(cache[name])

    def _parse(self, name: str):
        import numpy as np

        col = self._whole(name)
        try:
            return np.array(col, dtype=float)
        except (TypeError, ValueError):
            pass
        if col.count("") + col.count(None) == len(col):  # a column no row fills (measured, analytic sweep)
            return np.full(len(col), np.nan)
        clean = [np.nan if v is None or v == "" else v for v in col]
        try:
            return np.array(clean, dtype=float)
        except (TypeError, ValueError):
            for i, v in enumerate(clean):
                try:
                    float(v)
                except (TypeError, ValueError):
                    raise BatchprofError(f"point {i + 1}: {name} is {v!r}, not a number") from None
            raise

    def row(self, i: int) -> dict[str, Any]:
        """Row ``i`` of this table (the fields labels and titles use)."""
        j = int(self.idx[i]) if self.idx is not None else i
        return {n: self._whole(n)[j] for n in ROW_FIELDS}

    def where(self, name: str) -> dict[Any, "_Table"]:
        """{value: the rows with that value of ``name``}, in first-seen order."""
        import numpy as np

        codes, first = self.codes((name,))
        base = self.idx if self.idx is not None else np.arange(len(self))
        return {v: _Table(self.rows, self.columns, base[codes == c], self._shared)
                for c, v in enumerate(self.distinct(name))}

    def varying(self, fields: Sequence[str]) -> list[str]:
        return [f for f in fields if len(self.codes((f,))[1]) > 1]

    def codes(self, names: Sequence[str]):
        """(code per row, index of the first row of each code): codes number the distinct
        combinations of ``names`` in this table, in first-seen order."""
        import numpy as np

        key = tuple(names)
        if key not in self._codes:
            combined, radix = np.zeros(len(self), dtype=np.int64), 1
            for n in names:
                c, values = self.encoded(n)
                if radix * len(values) >= 2 ** 62:  # renumber densely (a sort) only before int64 overflows
                    _, combined = np.unique(combined, return_inverse=True)
                    radix = int(combined.max()) + 1
                combined = combined * len(values) + c
                radix *= len(values)
            _, first, inverse = np.unique(combined, return_index=True, return_inverse=True)
            rank = np.empty(len(first), dtype=np.int64)
            rank[np.argsort(first)] = np.arange(len(first))
            self._codes[key] = (rank[inverse.reshape(-1)], sorted(first.tolist()))
        return self._codes[key]

    def series(self, fields: Sequence[str]):
        """(series number per row, labels): rows with the same label are one series, numbered
        in first-seen order (a series keeps its colour in every panel)."""
        import numpy as np

        codes, first = self.codes(tuple(fields) + ("phase", "workload", "d_model"))
        labels: dict[str, int] = {}
        of_code = np.array([labels.setdefault(_label(self.row(i), fields), len(labels)) for i in first],
                           dtype=np.int64)
        return of_code[codes], list(labels)


def _split(order, *keys):
    """Cut ``order`` (row indices sorted by keys) into runs of equal keys: [(key values, indices)]."""
    import numpy as np

    if not len(order):
        return []
    ks = [k[order] for k in keys]
    change = np.zeros(len(order), dtype=bool)
    change[0] = True
    for k in ks:
        change[1:] |= k[1:] != k[:-1]
    starts = np.flatnonzero(change)
    heads = zip(*(k[starts].tolist() for k in ks))
    return list(zip(heads, np.split(order, starts[1:])))


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


def _draw_lines(ax, lines: Sequence[tuple[Any, Any, Any]], style: str, marker: str | None, markersize: float,
                linewidth: float = 1.6) -> None:
    """Polylines (xs, ys, colour) as one LineCollection, their markers as one scatter."""
    import numpy as np
    from matplotlib.collections import LineCollection

    lines = [(x, y, c) for x, y, c in lines if len(x)]
    if not lines:
        return
    ax.add_collection(LineCollection([np.column_stack((x, y)) for x, y, _ in lines],
                                     colors=[c for *_, c in lines], linestyles=style, linewidths=linewidth))
    if marker:
        xs = np.concatenate([x for x, _, _ in lines])
        ys = np.concatenate([y for _, y, _ in lines])
        cs = np.concatenate([np.repeat([c], len(x), axis=0) for x, _, c in lines])
        # s is the marker's area in pt^2: a Line2D marker of size m is m pt across
        ax.scatter(xs, ys, s=markersize ** 2, c=cs, marker=marker, linewidths=1.0, edgecolors="face", zorder=2.5)
    ax.autoscale_view()


def _capped(handles: list, labels: list[str], what: str = "series") -> tuple[list, list[str]]:
    """At most MAX_LEGEND entries; the rest summed up in one last line."""
    if len(labels) <= MAX_LEGEND:
        return handles, labels
    from matplotlib.lines import Line2D

    extra = len(labels) - MAX_LEGEND
    return (handles[:MAX_LEGEND] + [Line2D([], [], linestyle="none")],
            labels[:MAX_LEGEND] + [f"+{extra} more {what} (colours repeat)"])


def _palette(plt):
    from matplotlib.colors import to_rgba_array

    return to_rgba_array(plt.rcParams["axes.prop_cycle"].by_key()["color"])


def _bands(rows, facet, x, y) -> dict[int, tuple]:
    """{panel: (xs, low, median, high)}: per panel and x value, the BAND percentiles of ``y``
    over ``rows`` there (linear interpolation between order statistics: ``gpt_batchprof.stats``)."""
    import numpy as np

    from gpt_batchprof.stats import quantiles

    order = rows[np.lexsort((x[rows], facet[rows]))]
    points: dict[int, list] = {}
    for (f, xv), r in _split(order, facet, x):
        points.setdefault(f, []).append((xv, *quantiles(y[r].tolist(), [b / 100 for b in BAND])))
    return {f: tuple(np.array(c) for c in zip(*pts)) for f, pts in points.items()}


def _line_plot(plt, tab: _Table, column: str, title: str, ylabel: str, path: Path, scale: float = 1.0) -> Path:
    """One panel per (phase, op); predicted dashed, measured solid; one colour per series.

    A panel with more than AGGREGATE_ABOVE series (a sweep over many sizes) would be a smear
    of lines that takes long to draw: it shows instead, per batch, the series' median (line)
    and 10-90% range (band), one colour per kind, and its title says how many series that is.
    ``column`` names the value with a ``{kind}`` slot: predicted or measured."""
    import numpy as np
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    fields = tab.varying(LABEL_FIELDS)
    series, labels = tab.series(fields)
    facet, first = tab.codes(("phase", "op"))
    names = [(tab.row(i).get("phase"), tab.row(i).get("op")) for i in first[:MAX_PANELS]]
    batch = tab.num("batch")
    ys = {kind: tab.num(column.format(kind=kind)) * scale for kind, _ in KINDS}
    on_panel = facet < len(names)
    # series per panel: distinct (panel, series) among the rows with a value of either kind
    valued = on_panel & np.logical_or.reduce([np.isfinite(y) for y in ys.values()])
    pairs = np.unique(facet[valued] * len(labels) + series[valued])
    n_series = np.bincount(pairs // len(labels), minlength=len(names))
    aggregate = np.zeros(int(facet.max()) + 1, dtype=bool)  # panels past MAX_PANELS: never drawn
    aggregate[:len(names)] = n_series > AGGREGATE_ABOVE
    fig, axes = _panels(plt, len(names))
    palette = _palette(plt)
    shown: set[int] = set()  # series drawn as lines in some panel
    lined, banded = {}, {}  # kind -> drawn as lines / as a band in some panel
    for kind, style in KINDS:
        y = ys[kind]
        ok = np.isfinite(y) & on_panel
        marker = "o" if kind == "measured" else None
        idx = np.flatnonzero(ok & ~aggregate[facet])
        lined[kind] = bool(len(idx))
        order = idx[np.lexsort((batch[idx], series[idx], facet[idx]))]
        by_facet: dict[int, list] = {}
        for (f, s), rows in _split(order, facet, series):
            by_facet.setdefault(f, []).append((batch[rows], y[rows], palette[s % len(palette)]))
            shown.add(s)
        for f, lines in by_facet.items():
            _draw_lines(axes[f], lines, style, marker, 3.5)
        bands = _bands(np.flatnonzero(ok & aggregate[facet]), facet, batch, y)
        banded[kind] = bool(bands)
        colour = AGGREGATE_COLOURS[kind]
        for f, (x, low, mid, high) in bands.items():
            axes[f].fill_between(x, low, high, color=colour, alpha=0.2, linewidth=0)
            axes[f].plot(x, mid, linestyle=style, color=colour, marker=marker, markersize=3.5, linewidth=1.8)
    for f, (ax, (phase, op)) in enumerate(zip(axes, names)):
        _log_batch_axis(ax)
        _log_value_axis(ax)
        ax.autoscale_view()
        ax.set_ylabel(ylabel)
        what = "MLP (all layers)" if op == "mlp" and phase == "forward" else op
        head = f"{phase}: {what}" if phase != "forward" else what
        if aggregate[f]:
            head += f"\n{n_series[f]:,} series: median and 10-90% band"
        ax.set_title(head, fontsize=11 if not aggregate[f] else 10)
    drawn = sorted(shown)
    legend, texts = _capped([Line2D([], [], color=palette[s % len(palette)], linewidth=2) for s in drawn[:MAX_LEGEND]],
                            [labels[s] for s in drawn])
    device = tab.row(0).get("device")
    kind_text = {"predicted": "predicted (roofline)", "measured": "measured" + (f" on {device}" if device else "")}
    for kind, style in KINDS:
        if lined[kind]:
            legend.append(Line2D([], [], color="0.3", linestyle=style, marker="o" if kind == "measured" else None))
            texts.append(kind_text[kind])
    for kind, style in KINDS:
        if banded[kind]:
            colour = AGGREGATE_COLOURS[kind]
            legend += [Line2D([], [], color=colour, linestyle=style, marker="o" if kind == "measured" else None),
                       Patch(facecolor=colour, alpha=0.2)]
            texts += [f"{kind_text[kind]}: median of the series", f"{kind_text[kind]}: 10-90% of the series"]
    heading = ", ".join(fields) if fields else None
    if any(banded.values()):
        heading = f"{len(labels):,} series" + (f" ({heading})" if heading else "")
    fig.legend(legend, texts, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False, fontsize=9,
               title=heading)
    hws = sorted(str(h) for h in tab.distinct("hardware"))
    fig.suptitle(f"{title} (roofline: {', '.join(hws)})", fontsize=13)
    _save(plt, fig, path)
    return path


def _topmost(x, y, colour):
    """Positions (ascending) of the markers that can show: of the markers of one colour within
    1/MARKER_CELLS of a decade of each other on both log axes (under a quarter of a pixel
    at the roofline's 110 dpi, ~75 px per decade), only the last drawn, the one on top. A
    350k-point sweep puts ~117k markers on each roofline, ~19k of them distinct: the PNG is
    the same, drawn in a sixth of the time."""
    import numpy as np

    kx = np.rint(np.log10(x) * MARKER_CELLS).astype(np.int64)
    ky = np.rint(np.log10(y) * MARKER_CELLS).astype(np.int64)
    kx -= kx.min()
    ky -= ky.min()
    key = (colour.astype(np.int64) * (kx.max() + 1) + kx) * (ky.max() + 1) + ky
    _, last = np.unique(key[::-1], return_index=True)  # first from the end: the last drawn
    return np.sort(len(key) - 1 - last)


def _roofline(plt, tab: _Table, hw, hw_name: str, path: Path) -> Path:
    import numpy as np

    fig, ax = plt.subplots(figsize=(8.6, 5.6))
    intensity = tab.num("intensity")
    pts = np.isfinite(intensity) & (intensity != 0)
    # colour by operator; with a single operator (the MLP), by whatever else varies (width, ...)
    by_op = len(tab.distinct("op")) > 1
    if by_op:
        colour, first = tab.codes(("op",))
        keys = [str(tab.row(i).get("op")) for i in first]
    else:
        colour, keys = tab.series(tab.varying(LABEL_FIELDS))
    phase, pfirst = tab.codes(("phase",))
    phases = [tab.row(i).get("phase") for i in pfirst]
    palette = _palette(plt)
    lo, hi = intensity[pts].min() / 2, intensity[pts].max() * 2
    if hw is not None:
        bw = hw.memory_bandwidth_bytes_per_s
        dcodes, dvalues = tab.encoded("dtype")
        dts = [dvalues[c] for c in dict.fromkeys(dcodes[pts].tolist())]
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
    # one scatter per (phase, kind): hollow predicted, filled measured
    used = set()
    for p, ph in enumerate(phases):
        m = PHASE_MARKERS.get(ph, "o")
        for kind, z in (("predicted", 3), ("measured", 4)):
            y = tab.num(f"{kind}_flops_per_s")
            sel = np.flatnonzero(pts & (phase == p) & np.isfinite(y) & (y != 0))
            if not len(sel):
                continue
            used.update(np.unique(colour[sel]).tolist())
            sel = sel[_topmost(intensity[sel], y[sel], colour[sel] % len(palette))]
            c = palette[colour[sel] % len(palette)]
            if kind == "predicted":
                ax.scatter(intensity[sel], y[sel] / 1e12, s=28, facecolors="none", edgecolors=c, marker=m, zorder=z)
            else:
                ax.scatter(intensity[sel], y[sel] / 1e12, s=28, color=c, marker=m, zorder=z)
    handles, labels = ax.get_legend_handles_labels()  # the ceilings
    drawn = sorted(used)
    marker = PHASE_MARKERS.get(phases[0], "o") if len(phases) == 1 else "o"
    entries, names = _capped([ax.scatter([], [], color=palette[i % len(palette)], marker=marker)
                              for i in drawn[:MAX_LEGEND]], [keys[i] for i in drawn],
                             "operators" if by_op else "series")
    handles += entries
    labels += names
    for ph in phases if len(phases) > 1 else ():
        handles.append(ax.scatter([], [], color="0.4", marker=PHASE_MARKERS.get(ph, "o")))
        labels.append(f"{ph}")
    handles.append(ax.scatter([], [], facecolors="none", edgecolors="0.4"))
    labels.append("predicted (hollow)")
    if np.any(pts & (np.nan_to_num(tab.num("measured_flops_per_s")) != 0)):
        handles.append(ax.scatter([], [], color="0.4"))
        labels.append("measured (filled)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.set_xlabel("arithmetic intensity (FLOP/byte)")
    ax.set_ylabel("achieved TFLOP/s")
    ax.grid(True, which="major", alpha=0.3)
    ax.set_title(f"Roofline on {hw_name}: one marker per operator x batch x size", fontsize=11)
    ax.legend(handles, labels, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False, fontsize=8.5)
    _save(plt, fig, path)
    return path


def _generation(plt, tab: _Table, path: Path) -> Path:
    import numpy as np
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter

    series, labels = tab.series(tab.varying(LABEL_FIELDS))
    batch = tab.num("batch")
    palette = _palette(plt)
    fig, (a1, a2, a3) = plt.subplots(1, 3, figsize=(16, 4.8))
    for ax in (a1, a2):
        _log_batch_axis(ax)
        _log_value_axis(ax)
    a3.set_xscale("log", base=2)
    legend: dict[tuple[int, int], tuple[Any, str]] = {}  # (series, kind) -> entry: series-major order
    annotate = len(tab) <= MAX_ANNOTATED
    for k, (kind, style, marker) in enumerate((("predicted", "--", "o"), ("measured", "-", "s"))):
        t = tab.num(f"{kind}_time_s")
        tps = tab.num(f"{kind}_items_per_s")
        idx = np.flatnonzero(np.isfinite(t) & (t != 0))
        order = idx[np.lexsort((batch[idx], series[idx]))]
        lat, thr, trade = [], [], []
        for (s,), rows in _split(order, series):
            c = palette[s % len(palette)]
            b = batch[rows]
            gain, growth = tps[rows] / tps[rows[0]], t[rows] / t[rows[0]]
            lat.append((b, t[rows] * 1e3, c))
            thr.append((b, tps[rows], c))
            trade.append((gain, growth, c))
            legend[s, k] = (Line2D([], [], linestyle=style, color=c, marker=marker, markersize=4),
                            f"{labels[s]} {kind}" if labels[s] else kind)
            if annotate:
                for bb, gx, gy in zip(b, gain, growth):
                    a3.annotate(f"b{bb:g}", (gx, gy), textcoords="offset points", xytext=(4, -10), fontsize=7.5,
                                color=c)
        for ax, lines in ((a1, lat), (a2, thr), (a3, trade)):
            _draw_lines(ax, lines, style, marker, 4, linewidth=1.5)
    a1.set_ylabel("end-to-end latency per request (ms)")
    a1.set_title("Latency vs batch", fontsize=11)
    a2.set_ylabel("throughput (generated tokens/s)")
    a2.set_title("Throughput vs batch", fontsize=11)
    a3.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}x"))
    a3.set_xlabel("throughput gain vs batch 1 (x)")
    a3.set_ylabel("latency growth vs batch 1 (x)")
    a3.set_title("The trade-off (each marker is a batch)", fontsize=11)
    a3.grid(True, alpha=0.3)
    entries = [legend[k] for k in sorted(legend)]
    a3.legend(*_capped([h for h, _ in entries], [n for _, n in entries], "lines"), fontsize=8, frameon=False)
    r0 = tab.row(0)
    fig.suptitle(f"Generation: prompt {_get(r0, 'seq_len')}, {_get(r0, 'gen_len')} tokens generated "
                 "(predicted dashed, measured solid)", fontsize=13)
    _save(plt, fig, path)
    return path


def _thin_log_ticks(fig) -> None:
    """A base-10 log axis that spans more than WIDE_DECADES decades gets a tick at each power
    of ten only: 1-2-5 labels and 8 minor ticks per decade would sit a few pixels apart (a
    smear, not a scale), and every tick is an artist laid out on each draw pass: on a 9-panel
    figure over 8 decades they took over half its drawing time."""
    import math

    from matplotlib.ticker import LogLocator, NullLocator

    for ax in fig.axes:
        for axis, lim in ((ax.xaxis, ax.get_xlim), (ax.yaxis, ax.get_ylim)):
            if axis.get_scale() != "log" or getattr(axis.get_transform(), "base", None) != 10:
                continue
            lo, hi = sorted(lim())
            if lo > 0 and math.log10(hi / lo) > WIDE_DECADES:
                axis.set_major_locator(LogLocator(base=10))
                axis.set_minor_locator(NullLocator())


def _save(plt, fig, path: Path) -> None:
    """Lay the figure out and write it: a whole PNG or none, written beside the target, then
    renamed (no 0-byte file left)."""
    from gpt_batchprof.files import write_atomic

    _thin_log_ticks(fig)  # before any layout pass lays the ticks out
    fig.tight_layout()
    try:
        write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
    finally:
        plt.close(fig)


POSITIVE = ("predicted_time_s", "measured_time_s", "roofline_time_s", "ttft_s", "itl_s", "measured_ttft_s",
            "measured_itl_s", "roofline_ttft_s", "roofline_itl_s")  # a time of 0 or less is no measurement
NON_NEGATIVE = ("predicted_flops_per_s", "predicted_items_per_s", "measured_flops_per_s", "measured_items_per_s",
                "intensity", "flops", "bytes")


def check_values(table: "_Table") -> None:
    """Refuse, naming the first point, what no sweep writes and a log axis cannot draw: a batch
    that is not a whole number >= 1, a time that is not finite and > 0, a rate, intensity,
    FLOP or byte count that is negative or infinite. Empty cells (not measured) are fine."""
    import numpy as np

    def first(bad, name: str, why: str) -> None:
        if bad.any():
            i = int(np.argmax(bad))
            raise BatchprofError(f"point {i + 1}: {name} is {table._whole(name)[i]!r}, {why}")

    batch = table.num("batch")
    first(~(np.isfinite(batch) & (batch >= 1) & (batch == np.floor(batch))), "batch", "not a whole number >= 1")
    for name in POSITIVE:
        v = table.num(name)
        first(~np.isnan(v) & ~(np.isfinite(v) & (v > 0)), name, "not a finite time > 0")
    for name in NON_NEGATIVE:
        v = table.num(name)
        first(~np.isnan(v) & ~(np.isfinite(v) & (v >= 0)), name, "not a finite number >= 0")


def plot_all(data: Sequence[Any] | Mapping[str, Sequence], folder: Path,
             hardware: Mapping[str, Any] | None = None) -> list[Path]:
    """Every plot the rows support; returns the files written. ``data``: the rows (dicts or
    objects with the sweep's fields), or the columns of a results file ({name: values},
    :func:`gpt_batchprof.sweep.store.read_columns`)."""
    plt = _pyplot()
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BatchprofError(f"{folder}: cannot create ({e.strerror or e})") from None
    hardware = hardware or {}
    written: list[Path] = []
    table = _Table(columns=data) if isinstance(data, Mapping) else _Table(rows=data)
    check_values(table)
    for wl, tab in table.where("workload").items():
        if wl == "generation":
            written.append(_generation(plt, tab, folder / "generation.png"))
            continue
        unit = "tokens/s" if wl == "gpt" else "items/s (input rows)"
        what = "GPT operators" if wl == "gpt" else f"MLP of depth {tab.row(0).get('launches')}"
        written.append(_line_plot(plt, tab, "{kind}_time_s", f"{what}: time per call vs batch", "time (ms)",
                                  folder / f"{wl}-time.png", scale=1e3))
        written.append(_line_plot(plt, tab, "{kind}_items_per_s", f"{what}: throughput vs batch",
                                  f"throughput ({unit})", folder / f"{wl}-throughput.png"))
        for hw_name, htab in tab.where("hardware").items():
            intensity = htab.num("intensity")
            if (intensity[intensity == intensity] != 0).any():
                safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in str(hw_name))
                written.append(_roofline(plt, htab, hardware.get(hw_name), str(hw_name),
                                         folder / f"{wl}-roofline-{safe}.png"))
    return written
