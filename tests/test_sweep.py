"""sweep: grid expansion, hand-worked predicted values, files, resume, errors, exports."""

import csv
import io
import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from gpt_batchprof.cli import app
from gpt_batchprof.sweep.evaluate import Evaluator
from gpt_batchprof.sweep.grid import SweepSpec, resolve, spec_from_mapping
from gpt_batchprof.sweep.presets import PRESETS
from gpt_batchprof.sweep.results import free_batch
from gpt_batchprof.sweep.run import run_sweep
from gpt_batchprof.sweep.rows import SweepRow
from gpt_batchprof.sweep.store import StreamWriter, read_rows

runner = CliRunner()

# Seed 002's T4: 65 TFLOP/s fp16, 300 GB/s, no launch overhead.
T4_ARTICLE = """name: t4-article
kind: gpu
memory_gb: 16
memory_bandwidth_gb_s: 300
peak_tflops: {fp16: 65, fp32: 8.1}
launch_overhead_us: 0
"""


@pytest.fixture
def t4(tmp_path):
    p = tmp_path / "t4-article.yaml"
    p.write_text(T4_ARTICLE)
    return str(p)


def rows_of(spec):
    grid = resolve(spec)
    return run_sweep(grid, Evaluator(grid)).rows


def test_points_are_the_cartesian_product():
    spec = SweepSpec(models=("d256", "d512"), hardware=("a100-80gb", "t4"), phases=("prefill", "decode"),
                     batches=(1, 2, 4), seq_lens=(64, 128), ops=("block-dense", "attention", "qkv_proj"))
    rows = rows_of(spec)
    assert len(rows) == 2 * 2 * 2 * 3 * 2 * 3 == spec.n_points == 144
    assert len({r.key() for r in rows}) == 144


def test_mlp_width_1024_batch_1_fp16_hand_worked(t4):
    # one layer: (1 x 1024) @ (1024 x 1024) = 2*1024*1024 = 2,097,152 FLOPs;
    # bytes: the 1024x1024 fp16 weight (2 MiB = 2,097,152) + input and output rows (2 * 1024 * 2 = 4096).
    # depth 8: eight of them. Memory-bound: 2,101,248 B / 300 GB/s = 7.004 us per layer.
    (row,) = rows_of(SweepSpec(workload="mlp", models=("d1024",), hardware=(t4,), batches=(1,), dtypes=("fp16",)))
    assert row.flops == 8 * 2_097_152
    assert row.bytes == 8 * (2_097_152 + 4096)
    assert row.bound == "memory"
    assert row.predicted_time_s == pytest.approx(8 * 7.00416e-6, rel=1e-5)
    assert row.items == 1 and row.launches == 8


def test_mlp_width_4096_turns_compute_bound_past_the_magic_ratio(t4):
    # ridge 65e12 / 300e9 = 216.7 FLOP/B counts weights only; with the activations read and written,
    # per layer FLOPs 2*b*4096^2 vs bytes 2*4096^2 + 4*b*4096 (fp16):
    # compute-bound when 2b*4096^2/65e12 >= (2*4096^2 + 16384 b)/300e9  <=>  b >= 242.3.
    rows = rows_of(SweepSpec(workload="mlp", models=("d4096",), hardware=(t4,), batches=(1, 128, 216, 242, 243, 512)))
    bound = {r.batch: r.bound for r in rows}
    assert bound == {1: "memory", 128: "memory", 216: "memory", 242: "memory", 243: "compute", 512: "compute"}
    t = {r.batch: r.predicted_time_s for r in rows}
    # memory-bound: 128x the batch costs only the activations more (2*4096^2 + 16384*128 vs + 16384 bytes): +12%
    assert t[128] / t[1] == pytest.approx((2 * 4096**2 + 16384 * 128) / (2 * 4096**2 + 16384), rel=1e-9)
    assert t[128] / t[1] < 1.13


def test_decode_dense_vs_attention_seed000():
    # gpt-d1024, 1 layer, decode at batch 1, fp16. Block dense layers: qkv 3d^2, out d^2, ffn 4d^2 + 4d^2
    # = 12 d^2 weights -> 2 * 12 * 1024^2 = 25,165,824 FLOPs; bytes = 12 d^2 * 2 (25,165,824) plus the
    # activations in + out: qkv d+3d, out d+d, up d+4d, down 4d+d = 16d elements = 32,768 bytes.
    rows = rows_of(SweepSpec(models=("d1024",), hardware=("a100-80gb",), phases=("decode",), batches=(1, 128),
                             seq_lens=(512,), ops=("block-dense", "attention")))
    r = {(x.op, x.batch): x for x in rows}
    assert r[("block-dense", 1)].flops == 25_165_824
    assert r[("block-dense", 1)].bytes == 25_165_824 + 32_768
    # batching decode dense layers raises intensity ~ with the batch; attention's does not move
    assert r[("block-dense", 128)].intensity > 50 * r[("block-dense", 1)].intensity
    assert r[("attention", 128)].intensity == pytest.approx(r[("attention", 1)].intensity, rel=1e-9)
    # attention bytes grow in proportion to the batch: 128x
    assert r[("attention", 128)].bytes == pytest.approx(128 * r[("attention", 1)].bytes, rel=1e-9)


def test_generation_batch_2_nearly_doubles_throughput():
    rows = rows_of(PRESETS["generation"].full)
    by = {r.batch: r for r in rows}
    gain2 = by[2].predicted_items_per_s / by[1].predicted_items_per_s
    lat2 = by[2].predicted_time_s / by[1].predicted_time_s
    # decode is weight-bound: batch 2 is almost free (a100-80gb's measured tables put the m = 2 GEMMs
    # a hair faster than m = 1, so the gain may pass 2 by a fraction of a percent)
    assert 1.9 < gain2 < 2.02 and lat2 < 1.05
    assert all(r.ttft_s < r.predicted_time_s for r in rows)


def test_free_batch_hand_worked():
    assert free_batch((1, 2, 4, 8), (1.0, 1.05, 1.15, 2.0)) == 4  # 1.15 <= 1.0 * 1.15
    assert free_batch((1, 2, 4, 8), (1.0, 1.3, 1.0, 1.0)) == 1  # stops at the first crossing
    assert free_batch((1, 2), (None, 1.0)) is None


def test_every_preset_quick_runs_and_fits_ci(tmp_path):
    for name, p in PRESETS.items():
        out = tmp_path / f"{name}.csv"
        r = runner.invoke(app, ["sweep", "--preset", name, "--quick", "--no-progress", "-o", str(out)])
        assert r.exit_code == 0, r.output
        rows = read_rows(out)
        assert len(rows) == p.quick.n_points
        assert all(type(x) is SweepRow for x in rows)
        assert all(x.predicted_time_s > 0 and x.gpt_batchprof_version for x in rows)


def test_csv_header_once_and_resume_skips_done_points_after_a_torn_line(tmp_path):
    out = tmp_path / "r.csv"
    args = ["sweep", "--d-model", "256,512", "-H", "t4", "-b", "1..8", "-s", "64", "--no-progress", "-o", str(out)]
    assert runner.invoke(app, args).exit_code == 0
    full = out.read_text().splitlines()
    assert len(full) == 1 + 2 * 4 * 2 * 2  # header + models x batches x phases x ops
    # simulate a crash: keep the header and 5 rows, then half a line
    out.write_text("\n".join(full[:6]) + "\n" + full[6][:20])
    r = runner.invoke(app, args + ["--resume"])
    assert r.exit_code == 0, r.output
    text = out.read_text()
    assert text.count("workload,model") == 1
    keys = [x.key() for x in read_rows(out)]
    assert len(keys) == len(set(keys)) == 32
    assert "27 new point(s), 5 kept" in r.output


def test_jsonl_stream_and_json_export(tmp_path):
    out = tmp_path / "r.jsonl"
    r = runner.invoke(app, ["sweep", "--workload", "mlp", "--width", "512,1024", "-b", "1,64", "-H", "t4",
                            "--no-progress", "-o", str(out), "-f", "json"])
    assert r.exit_code == 0, r.output
    lines = out.read_text().splitlines()
    assert len(lines) == 4 and json.loads(lines[0])["workload"] == "mlp"
    doc = json.loads(r.stdout)
    assert doc["sweep"]["depth"] == 8 and len(doc["rows"]) == 4
    assert "measured_time_s" not in doc["rows"][0]  # all-empty columns are left out of exports


def test_csv_and_markdown_exports_to_stdout():
    r = runner.invoke(app, ["sweep", "--workload", "mlp", "--width", "256", "-b", "1,2", "-H", "t4",
                            "--no-progress", "-f", "csv"])
    assert r.exit_code == 0
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert [int(x["batch"]) for x in rows] == [1, 2] and float(rows[0]["flops"]) == 8 * 2 * 256 * 256
    r = runner.invoke(app, ["sweep", "--workload", "mlp", "--width", "256", "-b", "1", "-H", "t4",
                            "--no-progress", "-f", "markdown"])
    assert r.exit_code == 0 and "| workload |" in r.stdout


def test_sweep_file_and_flags_merge(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text("preset: mlp-batching\nwidths: [256, 512]\nbatches: '1..4'\nhardware: t4\n")
    spec = spec_from_mapping({"widths": [256, 512], "batches": "1..4"}, "s.yaml", PRESETS["mlp-batching"].full)
    assert spec.models == ("d256", "d512") and spec.batches == (1, 2, 4) and spec.workload == "mlp"
    r = runner.invoke(app, ["sweep", "--config", str(f), "-b", "8", "--no-progress", "-f", "csv"])
    assert r.exit_code == 0, r.output
    assert len(r.stdout.strip().splitlines()) == 1 + 2  # two widths, batch 8 from the flag


@pytest.mark.parametrize("args, message", [
    (["--preset", "nope"], "unknown preset 'nope'"),
    (["--op", "qkv"], "unknown operator or group 'qkv'"),
    (["-m", "gpt2", "-s", "4096"], "4097 positions exceeds gpt2's max_seq_len 1024"),
    (["-b", "0"], "values must be >= 1"),
    (["--workload", "mlp", "-m", "gpt2"], "mlp sweeps take widths"),
    (["--quick"], "--quick shrinks a preset"),
    (["-o", "r.txt"], "must be .csv or .jsonl"),
    (["--resume"], "--resume needs --output"),
    (["--mode", "fast"], "--mode: unknown value 'fast'"),
    (["-m", "d256", "--op", "ffn_gate"], "has no such operator"),
])
def test_bad_input_is_one_line_and_exit_2(args, message):
    r = runner.invoke(app, ["sweep", "--no-progress", *args])
    assert r.exit_code == 2, r.output
    assert message in r.output and "Traceback" not in r.output


def test_malformed_sweep_file(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("batches: [1, 2\nmodels: x\n")
    r = runner.invoke(app, ["sweep", "-c", str(f)])
    assert r.exit_code == 2 and "malformed YAML" in r.output
    f.write_text("batchez: [1]\n")
    r = runner.invoke(app, ["sweep", "-c", str(f)])
    assert r.exit_code == 2 and "unknown field 'batchez'" in r.output


def test_list_presets():
    r = runner.invoke(app, ["sweep", "--list-presets"])
    assert r.exit_code == 0
    for name in PRESETS:
        assert name in r.output


def test_analytic_sweep_never_imports_torch():
    code = ("import sys; from gpt_batchprof.sweep.grid import resolve; from gpt_batchprof.sweep.presets import PRESETS;"
            "from gpt_batchprof.sweep.evaluate import Evaluator; from gpt_batchprof.sweep.run import run_sweep;"
            "g = resolve(PRESETS['dense-vs-attention'].full); run_sweep(g, Evaluator(g));"
            "import gpt_batchprof.cli.sweep; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_stream_writer_never_writes_a_key_twice_on_resume(tmp_path):
    spec = SweepSpec(workload="mlp", models=("d256",), hardware=("t4",), batches=(1, 2, 4))
    grid = resolve(spec)
    with StreamWriter(tmp_path / "a.jsonl") as w:
        run_sweep(grid, Evaluator(grid), w)
    with StreamWriter(tmp_path / "a.jsonl", resume=True) as w:
        o = run_sweep(grid, Evaluator(grid), w)
    assert o.new == 0 and o.skipped == 3 and len(o.rows) == 3
    assert len(read_rows(tmp_path / "a.jsonl")) == 3


# --------------------------------------------------------------------------- what a sweep reports (hand-worked)


def _json(args):
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def test_sweep_group_bound_is_the_slowest_members_bound():
    # gpt2 decode, batch 1, 1000 cached tokens, fp16 on a100-80gb (2039 GB/s, 312 TFLOP/s; an analytic
    # sweep on a GPU charges the CUDA-graph gap, 0.5 us per kernel):
    #  attn_softmax: 2 x 1 x 12 heads x 1001 keys x 2 B read+written x 12 layers = 576,576 B -> 0.28 us,
    #                under its 12 x 0.5 = 6 us of launches: overhead-bound; 6.28 us, the fastest member.
    #  ffn: weights 2 x 768 x 3072 x 2 B x 12 layers = 113.2 MB (+ activations) -> 55.6 us at 2039 GB/s
    #       (vs 0.36 us of FLOPs): memory-bound; 55.6 + 24 x 0.5 = 67.6 us, the slowest member.
    # The block's bound is the bound of the member that takes the most time: memory, not overhead.
    rows = _json(["sweep", "-m", "gpt2", "-H", "a100-80gb", "--phase", "decode", "-b", "1", "-s", "1000",
                  "--op", "block,attn_softmax,ffn,norm", "--no-progress", "-f", "json"])["rows"]
    by = {r["op"]: r for r in rows}
    assert by["attn_softmax"]["bound"] == "overhead" and by["norm"]["bound"] == "overhead"
    assert by["ffn"]["bound"] == "memory"
    assert by["ffn"]["roofline_time_s"] == pytest.approx(113_246_208 / 2039e9 + 24 * 0.5e-6, rel=0.01)
    assert by["block"]["bound"] == "memory"


def test_batching_stays_free_up_to_exactly_15_percent():
    from gpt_batchprof.sweep.results import free_batch, series  # where the summary decides it
    from gpt_batchprof.sweep.rows import SweepRow

    # batch 1 takes 20 s; "free" while within 15%: up to 20 x 1.15 = 23 s inclusive
    assert free_batch((1, 2, 4, 8), (20.0, 22.0, 23.0, 23.01)) == 4
    assert free_batch((1, 2, 4, 8), (20.0, 22.0, 22.99, 24.0)) == 4
    assert free_batch((1, 2, 4, 8), (20.0, 23.01, 23.0, 23.0)) == 1  # the first step already costs > 15%
    # a whole sweep's summary uses the same rule: 2.0 -> 2.3 ms is +15% (free), 2.31 ms is not
    rows = [SweepRow(workload="gpt", model="m", hardware="h", phase="decode", seq_len=8, op="ffn",
                     dtype="fp16", attention="unfused", batch=b, predicted_time_s=t)
            for b, t in ((1, 2.0e-3), (2, 2.3e-3), (4, 2.31e-3))]
    (s,) = series(rows)
    assert s.free_batch_predicted == 2


def test_live_generation_e2e_is_ttft_plus_gen_len_minus_one_decode_steps():
    """The live generation preset runs a real loop: 5 tokens = 1 from the prefill + 4 decode steps."""
    pytest.importorskip("torch")
    from gpt_batchprof.sweep.evaluate import Evaluator
    from gpt_batchprof.sweep.grid import SweepSpec, resolve
    from gpt_batchprof.sweep.live import LiveTimer

    grid = resolve(SweepSpec(workload="generation", models=("d128",), hardware=("cpu-generic",), batches=(2,),
                             seq_lens=(16,), dtypes=("fp32",), gen_len=5))
    (point,) = list(grid.points())
    runs = []
    timer = LiveTimer("cpu", threads=1)
    real = timer.time_generation
    timer.time_generation = lambda *a: runs.append(real(*a)) or runs[-1]
    row = Evaluator(grid, "both", timer).evaluate(point)
    (run,) = runs
    assert len(run.step_times_s) == 4 and run.cache_lengths == (16, 17, 18, 19, 20)
    assert row.measured_time_s == pytest.approx(run.ttft_s + sum(run.step_times_s))
    # tokens/s = batch x gen_len / e2e = 2 x 5 / e2e
    assert row.measured_items_per_s == pytest.approx(10 / row.measured_time_s)
