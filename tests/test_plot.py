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


def test_large_sweep_draws_one_line_per_series_and_a_capped_legend(tmp_path, monkeypatch):
    from matplotlib.collections import LineCollection
    from matplotlib.figure import Figure

    from gpt_batchprof.report import plots

    widths = range(256, 256 + 128 * 80, 128)  # 80 widths x 2 hardware = 160 series
    batches = [2 ** i for i in range(12)]  # 1..2048
    rows = _synthetic_rows(widths, batches)
    assert len(rows) == 80 * 2 * 2 * 12 == 3840  # series x panels x batches
    figures = {}
    real_savefig = Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda fig, path, **kw: (figures.__setitem__(_final_name(path), fig),
                                                                    real_savefig(fig, path, **kw)))
    plots.plot_all(rows, tmp_path)
    fig = figures["gpt-time.png"]
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in panels] == ["decode: qkv_proj", "decode: ffn"]
    for ax in panels:
        # no artist per point or per series: one collection holding one 12-point polyline per series
        assert not ax.lines
        (lc,) = [c for c in ax.collections if isinstance(c, LineCollection)]
        assert len(lc.get_paths()) == 160
        assert all(len(p.vertices) == 12 for p in lc.get_paths())
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    # 12 series named, the other 160 - 12 = 148 counted, then the line-style key
    assert texts[:2] == ["gpt-d256, a100-80gb", "gpt-d256, h100-sxm"]
    assert texts[12:] == ["+148 more series (colours repeat)", "predicted (roofline)"]
    roof = figures["gpt-roofline-a100-80gb.png"]
    # roofline: one scatter per (phase, kind), here decode/predicted, holding every point of that hardware
    sizes = [len(c.get_offsets()) for c in roof.axes[0].collections if len(c.get_offsets())]
    assert sizes == [80 * 2 * 12]  # widths x ops x batches


def test_plot_of_few_series_keeps_the_full_legend(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    from gpt_batchprof.report import plots

    figures = {}
    real_savefig = Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda fig, path, **kw: (figures.__setitem__(_final_name(path), fig),
                                                                    real_savefig(fig, path, **kw)))
    plots.plot_all(_synthetic_rows((256, 512), (1, 2, 4), hardware=("a100-80gb",)), tmp_path)
    texts = [t.get_text() for t in figures["gpt-time.png"].legends[0].get_texts()]
    assert texts == ["gpt-d256", "gpt-d512", "predicted (roofline)"]


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
