"""Plots: the files exist, are PNGs, and `plot` redraws from every saved format."""

import json

import pytest
from typer.testing import CliRunner

from gpt_batchprof.cli import app

pytest.importorskip("matplotlib")
runner = CliRunner()
PNG = b"\x89PNG\r\n\x1a\n"


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
