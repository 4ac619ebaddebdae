"""Plots: the files exist, are PNGs, and `plot` redraws from every saved format."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gpt_batchprof.cli import app

pytest.importorskip("matplotlib")
runner = CliRunner()
PNG = b"\x89PNG\r\n\x1a\n"



def _final_name(path) -> str:
    """The PNG a savefig call writes: plots go through a temporary '.NAME.XXXX.tmp' beside
    the target (write_atomic), renamed when complete."""
    name = Path(path).name
    if name.startswith(".") and name.endswith(".tmp"):
        name = name[1:].rsplit(".", 2)[0]
    return name

def _pngs(folder):
    files = sorted(p.name for p in folder.glob("*.png"))
    for p in folder.glob("*.png"):
        assert p.read_bytes()[:8] == PNG and p.stat().st_size > 10_000
    return files


def test_sweep_plot_writes_time_throughput_and_roofline(tmp_path):
    r = runner.invoke(app, ["sweep", "--preset", "dense-vs-attention", "--quick", "--no-progress",
                            "--plot", str(tmp_path / "p")])
    assert r.exit_code == 0, r.output
    assert _pngs(tmp_path / "p") == ["gpt-roofline-a100-80gb.png", "gpt-throughput.png", "gpt-time.png"]


def test_plot_command_redraws_from_csv_jsonl_and_json(tmp_path):
    base = ["sweep", "--preset", "generation", "--quick", "--no-progress"]
    assert runner.invoke(app, base + ["-o", str(tmp_path / "g.jsonl")]).exit_code == 0
    r = runner.invoke(app, ["plot", str(tmp_path / "g.jsonl"), "--plot", str(tmp_path / "a")])
    assert r.exit_code == 0, r.output
    assert _pngs(tmp_path / "a") == ["generation.png"]
    r = runner.invoke(app, ["sweep", "--preset", "mlp-batching", "--quick", "--no-progress", "-f", "json",
                            "--export", str(tmp_path / "m.json")])
    assert r.exit_code == 0 and json.loads((tmp_path / "m.json").read_text())["rows"]
    r = runner.invoke(app, ["plot", str(tmp_path / "m.json"), "--plot", str(tmp_path / "b")])
    assert r.exit_code == 0, r.output
    assert _pngs(tmp_path / "b") == ["mlp-roofline-t4.png", "mlp-throughput.png", "mlp-time.png"]


def test_plot_of_a_missing_or_bad_file_is_exit_2(tmp_path):
    r = runner.invoke(app, ["plot", str(tmp_path / "nope.csv")])
    assert r.exit_code == 2 and "cannot read" in r.output
    (tmp_path / "x.txt").write_text("hi")
    r = runner.invoke(app, ["plot", str(tmp_path / "x.txt")])
    assert r.exit_code == 2 and "unknown results format" in r.output


def _synthetic_rows(widths, batches, hardware=("a100-80gb", "h100-sxm")):
    """gpt rows: one series per (width, hardware), two panels (decode qkv_proj, decode ffn)."""
    rows = []
    for w in widths:
        for hw in hardware:
            for op in ("qkv_proj", "ffn"):
                for b in batches:
                    t = 1e-5 * (1 + b / 64) * w / 256
                    rows.append({"workload": "gpt", "model": f"gpt-d{w}", "hardware": hw, "phase": "decode",
                                 "batch": b, "seq_len": 512, "op": op, "dtype": "fp16", "attention": "unfused",
                                 "d_model": w, "intensity": float(b), "predicted_time_s": t,
                                 "predicted_items_per_s": b / t, "predicted_flops_per_s": 1e12 * b / (1 + b / 64),
                                 "device": "analytic"})
    return rows


def _capture(monkeypatch) -> dict:
    """{PNG name: its Figure}, filled as plot_all saves them."""
    from matplotlib.figure import Figure

    figures = {}
    real_savefig = Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda fig, path, **kw: (figures.__setitem__(_final_name(path), fig),
                                                                    real_savefig(fig, path, **kw)))
    return figures


def test_sweep_of_40_series_draws_one_line_per_series_and_a_capped_legend(tmp_path, monkeypatch):
    from matplotlib.collections import LineCollection

    from gpt_batchprof.report import plots

    widths = range(256, 256 + 128 * 20, 128)  # 20 widths x 2 hardware = 40 series: the most not aggregated
    batches = [2 ** i for i in range(12)]  # 1..2048
    rows = _synthetic_rows(widths, batches)
    assert len(rows) == 20 * 2 * 2 * 12 == 960  # series x panels x batches
    figures = _capture(monkeypatch)
    plots.plot_all(rows, tmp_path)
    fig = figures["gpt-time.png"]
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in panels] == ["decode: qkv_proj", "decode: ffn"]
    for ax in panels:
        # no artist per point or per series: one collection holding one 12-point polyline per series
        assert not ax.lines
        (lc,) = [c for c in ax.collections if isinstance(c, LineCollection)]
        assert len(lc.get_paths()) == 40
        assert all(len(p.vertices) == 12 for p in lc.get_paths())
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    # 12 series named, the other 40 - 12 = 28 counted, then the line-style key
    assert texts[:2] == ["gpt-d256, a100-80gb", "gpt-d256, h100-sxm"]
    assert texts[12:] == ["+28 more series (colours repeat)", "predicted (roofline)"]
    roof = figures["gpt-roofline-a100-80gb.png"]
    # roofline: one scatter per (phase, kind), here decode/predicted, coloured by op; markers of
    # one colour at the same place are drawn once: these rows' (intensity, FLOP/s) depend on the
    # batch only, so of 20 widths x 2 ops x 12 batches = 480 points, 2 ops x 12 batches = 24 show
    sizes = [len(c.get_offsets()) for c in roof.axes[0].collections if len(c.get_offsets())]
    assert sizes == [2 * 12]


def test_sweep_of_many_series_draws_their_median_and_10_90_band(tmp_path, monkeypatch):
    """50 series whose time at every batch is 1, 2, ..., 50 ms: per batch the median is
    (25 + 26) / 2 = 25.5 ms; numpy's linear percentiles sit at rank 0.10 x 49 = 4.9 -> 5 + 0.9 x
    (6 - 5) = 5.9 ms and 0.90 x 49 = 44.1 -> 45 + 0.1 x (46 - 45) = 45.1 ms."""
    from matplotlib.collections import LineCollection

    from gpt_batchprof.report import plots

    batches = (1, 2, 4, 8)
    rows = [{"workload": "gpt", "model": f"gpt-d{64 * k}", "hardware": "a100-80gb", "phase": "decode", "batch": b,
             "seq_len": 512, "op": "ffn", "dtype": "fp16", "attention": "unfused", "d_model": 64 * k,
             "intensity": float(b), "predicted_time_s": k * 1e-3, "predicted_items_per_s": b / (k * 1e-3),
             "predicted_flops_per_s": 1e12, "device": "analytic"}
            for k in range(50, 0, -1) for b in batches]  # written largest first: order must not matter
    figures = _capture(monkeypatch)
    plots.plot_all(rows, tmp_path)
    fig = figures["gpt-time.png"]
    (ax,) = [a for a in fig.axes if a.get_visible()]
    assert ax.get_title() == "decode: ffn\n50 series: median and 10-90% band"
    assert not [c for c in ax.collections if isinstance(c, LineCollection)]  # no line per series
    (median,) = ax.lines
    assert list(median.get_xdata()) == [1, 2, 4, 8]
    assert median.get_ydata() == pytest.approx([25.5] * 4)
    (band,) = [c for c in ax.collections if not isinstance(c, LineCollection)]
    ys = band.get_paths()[0].vertices[:, 1]
    assert ys.min() == pytest.approx(5.9) and ys.max() == pytest.approx(45.1)
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert texts == ["predicted (roofline): median of the series", "predicted (roofline): 10-90% of the series"]
    assert fig.legends[0].get_title().get_text() == "50 series (model)"


def test_plot_of_few_series_keeps_the_full_legend(tmp_path, monkeypatch):
    from gpt_batchprof.report import plots

    figures = _capture(monkeypatch)
    plots.plot_all(_synthetic_rows((256, 512), (1, 2, 4), hardware=("a100-80gb",)), tmp_path)
    fig = figures["gpt-time.png"]
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert texts == ["gpt-d256", "gpt-d512", "predicted (roofline)"]
    assert [a.get_title() for a in fig.axes if a.get_visible()] == ["decode: qkv_proj", "decode: ffn"]  # not aggregated


def test_plot_reads_a_csv_with_a_torn_last_line(tmp_path):
    from gpt_batchprof.sweep.store import read_columns

    f = tmp_path / "r.csv"
    f.write_text("workload,hardware,batch\ngpt,a100-80gb,1\ngpt,a100-80gb,2\ngpt,a1")
    assert read_columns(f) == {"workload": ["gpt", "gpt"], "hardware": ["a100-80gb"] * 2, "batch": ["1", "2"]}
    f.write_text("workload,hardware,batch\ngpt,a100-80gb\n")
    with pytest.raises(Exception, match="line 2: 2 fields, the header has 3"):
        read_columns(f)


def test_read_columns_splits_plain_csv_as_the_csv_module_does(tmp_path):
    """The fast path (no quotes: one split of the whole body) must give the csv module's cells,
    and hand quoted or ragged files to the csv module."""
    from gpt_batchprof.sweep.store import read_columns

    f = tmp_path / "r.csv"
    f.write_text("workload,model,batch,measured_time_s\ngpt,m1,1,\ngpt,m2,2,0.5\n")
    assert read_columns(f) == {"workload": ["gpt", "gpt"], "model": ["m1", "m2"], "batch": ["1", "2"],
                               "measured_time_s": ["", "0.5"]}
    # a model name with a comma is quoted by the writer: the quotes are read, not split on
    f.write_text('workload,model,batch\ngpt,"a,b",1\n')
    assert read_columns(f) == {"workload": ["gpt"], "model": ["a,b"], "batch": ["1"]}
    # one line short and one line long: the total number of cells is right, the lines are not
    f.write_text("workload,model,batch\ngpt,m1\ngpt,m2,2,9\n")
    with pytest.raises(Exception, match="line 2: 2 fields, the header has 3"):
        read_columns(f)
    f.write_text("workload,model,batch\n")
    assert read_columns(f) == {"workload": [], "model": [], "batch": []}
    f.write_text("model,batch\nm1,1\n")
    with pytest.raises(Exception, match="no 'workload' column"):
        read_columns(f)


def test_roofline_draws_coinciding_markers_of_one_colour_once_keeping_the_top_one():
    import numpy as np

    from gpt_batchprof.report.plots import _topmost

    # 0 red, 1 blue, 2 red at one place (2 is on top of 0: only 1 and 2 can show), 3 red a
    # decade away; 4 red 1/1000 decade from 3 (under 1/400: the same place), drawn after it
    x = np.array([10.0, 10.0, 10.0, 100.0, 100.0 * 10 ** 0.001])
    y = np.array([1e12, 1e12, 1e12, 1e13, 1e13])
    colour = np.array([0, 1, 0, 0, 0])
    assert _topmost(x, y, colour).tolist() == [1, 2, 4]
