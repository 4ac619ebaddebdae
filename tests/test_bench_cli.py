"""CLI wiring of bench and calibrate: exit codes, messages, JSON fields (not the maths)."""

import json
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
from typer.testing import CliRunner  # noqa: E402

from gpt_batchprof.cli import app  # noqa: E402

runner = CliRunner()

TINY = """name: tiny
n_layer: 2
d_model: 128
n_head: 4
n_kv_head: 2
d_ff: 256
ffn: swiglu
vocab_size: 500
max_seq_len: 256
norm: rmsnorm
"""
# absurd ceilings: every real kernel is far slower than this roofline
FAST = """name: impossibly-fast
kind: cpu
memory_gb: 64
memory_bandwidth_gb_s: 1000000000
peak_tflops: {fp32: 1000000000, bf16: 1000000000, fp16: 1000000000}
launch_overhead_us: 0
"""
QUICK = ["--device", "cpu", "--batch", "1", "--prompt-len", "8", "--gen-len", "8", "--warmup-ms", "0",
         "--rep-ms", "1", "--threads", "1"]


@pytest.fixture
def files(tmp_path):
    (tmp_path / "tiny.yaml").write_text(TINY)
    (tmp_path / "fast.yaml").write_text(FAST)
    return tmp_path


def test_json_output_has_the_documented_fields(files):
    r = runner.invoke(app, ["bench", "-m", str(files / "tiny.yaml"), "-f", "json", *QUICK])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert {"model", "hardware", "settings", "rows"} <= set(doc)
    assert doc["hardware"]["name"] == "cpu-generic"  # the datasheet default on a CPU
    s = doc["settings"]
    assert s["device"] == "cpu" and s["threads"] == 1 and s["cuda_graphs"] is False
    assert s["torch_version"] == torch.__version__ and s["act_dtype"] == "fp32"  # --dtype auto on CPU
    ops = [row["op"] for row in doc["rows"] if row["phase"] == "prefill"]
    assert ops == ["norm", "qkv_proj", "attn_score", "attn_softmax", "attn_context", "out_proj",
                   "ffn_gate", "ffn_up", "ffn_down", "lm_head"]
    row = doc["rows"][1]
    for key in ("measured_time_s", "measured_iqr_s", "measured_over_predicted", "roofline_share",
                "achieved_flops_per_s", "achieved_bytes_per_s", "status", "reason", "shape", "device",
                "torch_version", "warnings", "flops", "bytes", "time_s", "bound"):
        assert key in row
    assert row["status"] == "ok" and row["measured_time_s"] > 0
    assert {"m", "n", "k", "batch"} <= set(row["shape"])
    assert row["shape"]["m"] == 8 and row["shape"]["k"] == 128 and row["shape"]["n"] == 128 + 2 * 64


def test_cuda_without_cuda_is_one_line_exit_2(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    r = runner.invoke(app, ["bench", "--device", "cuda"])
    assert r.exit_code == 2
    assert "--device cuda: no CUDA device" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.output


def test_min_efficiency_names_offenders_and_exits_1(files):
    r = runner.invoke(app, ["bench", "-m", str(files / "tiny.yaml"), "-H", str(files / "fast.yaml"),
                            "--phase", "decode", "--op", "qkv_proj,lm_head", "--min-efficiency", "1.0",
                            "-f", "json", *QUICK])
    assert r.exit_code == 1, r.output
    assert "below --min-efficiency 1" in r.stderr
    assert "decode b=1 qkv_proj" in r.stderr and "decode b=1 lm_head" in r.stderr
    assert len(json.loads(r.stdout)["rows"]) == 2  # results are still written


def test_min_efficiency_out_of_range_is_exit_2():
    r = runner.invoke(app, ["bench", "--min-efficiency", "1.5", *QUICK])
    assert r.exit_code == 2 and "--min-efficiency" in r.stderr


def test_unsupported_dtype_rows_are_skipped_exit_0(files):
    r = runner.invoke(app, ["bench", "-m", str(files / "tiny.yaml"), "--dtype", "fp8", "--phase", "decode",
                            "-f", "json", *QUICK])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)["rows"]
    assert {row["status"] for row in rows} == {"skipped"}
    assert "fp8" in rows[0]["reason"]


def test_bad_op_name_is_exit_2():
    r = runner.invoke(app, ["bench", "--op", "qkvproj", *QUICK])
    assert r.exit_code == 2 and "unknown operator 'qkvproj'" in r.stderr


def test_table_output_shows_measured_next_to_predicted(files):
    r = runner.invoke(app, ["bench", "-m", str(files / "tiny.yaml"), "--op", "block,mlp", "--depth", "2",
                            "--width", "64", *QUICK], env={"COLUMNS": "160"})
    assert r.exit_code == 0, r.output
    for text in ("predicted", "measured", "roofline", "block", "plain MLP: depth 2, width 64"):
        assert text in r.stdout


def test_missing_torch_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    for cmd in (["bench"], ["calibrate"]):
        r = runner.invoke(app, cmd + ["--device", "cpu"])
        assert r.exit_code == 2
        assert "need PyTorch" in r.stderr and "pip install torch==2.13.0" in r.stderr


def test_cli_and_analyze_do_not_import_torch():
    code = ("import sys; import gpt_batchprof.cli, gpt_batchprof.measure.bench, gpt_batchprof.measure.timing, "
            "gpt_batchprof.measure.kernels, gpt_batchprof.measure.calibrate; "
            "from typer.testing import CliRunner; "
            "r = CliRunner().invoke(gpt_batchprof.cli.app, ['analyze', '-m', 'gpt2', '-H', 'cpu-generic']); "
            "assert r.exit_code == 0, r.output; assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_calibrate_quick_writes_a_profile_that_loads(tmp_path):
    from gpt_batchprof.profiles import load_hardware

    out = tmp_path / "me.yaml"
    r = runner.invoke(app, ["calibrate", "--device", "cpu", "--quick", "--no-tables", "--threads", "1", "-H", "cpu-generic",
                            "--name", "this-box", "-o", str(out)], env={"COLUMNS": "160"})
    assert r.exit_code == 0, r.output
    assert "measured/datasheet" in r.stdout and "memory bandwidth" in r.stdout
    text = out.read_text()
    assert text.startswith("# Measured by `gpt-batchprof calibrate` on ")
    hw = load_hardware(str(out))
    assert hw.name == "this-box" and hw.kind == "cpu"
    assert set(hw.peak_flops_per_s) >= {"fp32"}
    assert 1e9 < hw.peak_flops_per_s["fp32"] < 1e14  # a CPU core does GFLOP/s .. tens of TFLOP/s
    assert 1e8 < hw.memory_bandwidth_bytes_per_s < 1e13
    # the file is accepted by analyze
    r = runner.invoke(app, ["analyze", "-m", "gpt2", "-H", str(out), "--dtype", "fp32", "-b", "1", "-f", "json"])
    assert r.exit_code == 0, r.output


def test_interrupted_bench_keeps_an_earlier_output_file(files, tmp_path, monkeypatch):
    """Issue 19: Ctrl-C after the first row used to replace a complete bench.json."""
    import gpt_batchprof.measure.bench as B

    real = B.iter_bench

    def first_row_then_ctrl_c(*a, **kw):
        for row in real(*a, **kw):
            yield row
            raise KeyboardInterrupt

    monkeypatch.setattr(B, "iter_bench", first_row_then_ctrl_c)
    earlier = tmp_path / "bench.json"
    earlier.write_text("a complete earlier result\n")
    r = runner.invoke(app, ["bench", "-m", str(files / "tiny.yaml"), *QUICK, "--op", "qkv_proj", "--phase", "decode",
                            "-f", "json", "-o", str(earlier)])
    assert r.exit_code == 130, r.output
    assert earlier.read_text() == "a complete earlier result\n"
    doc = json.loads((tmp_path / "bench.partial.json").read_text())
    assert doc["complete"] is False and len(doc["rows"]) == 1


# --------------------------------------------------------------------------- bench's figures through the CLI (hand-worked)


def _json(args):
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


BENCH = ["bench", "-m", "gpt2", "--device", "cpu", "--phase", "decode", "-b", "1", "--prompt-len", "16",
         "--gen-len", "2", "--warmup-ms", "0", "--rep-ms", "1", "-f", "json"]


def test_bench_block_charges_each_kernel_of_a_layer_once():
    pytest.importorskip("torch")
    # one gpt2 block per layer launches 2 norms + qkv, score, softmax, context, out, ffn_up, ffn_down
    # = 9 kernels; 12 layers x 9 = 108 launches x 5 us (cpu-generic, eager) = 540 us
    (row,) = _json(BENCH + ["-H", "cpu-generic", "--dtype", "fp32", "--op", "block"])["rows"]
    assert row["op"] == "block"
    assert row["overhead_s"] == pytest.approx(108 * 5e-6)


NO_FP32 = """name: no-fp32
kind: cpu
memory_gb: 64
memory_bandwidth_gb_s: 50
peak_tflops:
  fp16: 0.5
launch_overhead_us: 5
"""


def test_a_profile_without_the_dtypes_peak(tmp_path):
    pytest.importorskip("torch")
    hw = tmp_path / "no-fp32.yaml"
    hw.write_text(NO_FP32)
    # bench still times the kernel and reports it: memory time 85,082,112 B / 50 GB/s = 1.70 ms is known,
    # the compute time (hence the prediction and the ratios) is not, and a note says why
    (row,) = _json(BENCH + ["-H", str(hw), "--dtype", "fp32", "--op", "qkv_proj"])["rows"]
    assert row["status"] == "ok" and row["measured_time_s"] > 0
    assert row["memory_s"] == pytest.approx(85_082_112 / 50e9)
    assert row["time_s"] is None and row["compute_s"] is None  # NaN in the core, null in JSON
    assert row["measured_over_predicted"] is None and row["roofline_share"] is None
    assert any("no fp32 peak" in w for w in row["warnings"])
    # analyze has nothing to show without it: exit 2, one line naming the dtype
    r = runner.invoke(app, ["analyze", "-m", "gpt2", "-H", str(hw), "--dtype", "fp32"])
    assert r.exit_code == 2
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "no fp32 peak" in lines[0] and "Traceback" not in r.output
