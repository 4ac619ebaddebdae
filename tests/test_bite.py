"""Tests that bite: each one catches a bug a review planted and the suite missed (issue 7).

Every expected number is worked out by hand in the comment beside it; the tests go through
the CLI's JSON output or the package-level API, not through internals.
"""

import json

import pytest
from typer.testing import CliRunner

from gpt_batchprof.analytic import Dtypes, Scenario, memory_use
from gpt_batchprof.cli import app
from gpt_batchprof.profiles import load_hardware, load_model

runner = CliRunner()


def _json(args):
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


# 1 ------------------------------------------------------------------ sweep group bound
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


# 2 ------------------------------------------------------------------ live generation e2e
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


# 3 ------------------------------------------------------------------ activation memory
def test_activation_memory_counts_the_fp32_logits():
    # gpt2 (d 768, 12 heads, d_ff 3072, vocab 50,257), fp16, unfused, batch 2, prompt 8, 2 tokens generated.
    # Prefill of 2 x 8 = 16 tokens: residual + normed copy 2 x 16 x 768 = 24,576 elements, plus the widest
    # of FFN inner 16 x 3072 = 49,152, QKV 16 x 2304 = 36,864, scores 2 x 2 x 12 x 8 x 8 = 3,072:
    # (24,576 + 49,152) x 2 B = 147,456 B; plus fp32 logits of the last position: 2 x 50,257 x 4 = 402,056 B.
    # 147,456 + 402,056 = 549,512 B (the decode step is smaller: (2 x 2 x 768 + 2 x 3072) x 2 + 402,056).
    mem = memory_use(load_model("gpt2"), Scenario(prompt_len=8, gen_len=2, dtypes=Dtypes.of("fp16")), 2)
    assert mem.activation_bytes == 549_512


# 5 ------------------------------------------------------------------ fmt_time
def test_fmt_time_units():
    from gpt_batchprof.units import fmt_time

    assert fmt_time(2.5e-3) == "2.5 ms"  # 2.5 thousandths of a second
    assert fmt_time(0.0123) == "12.3 ms"
    assert fmt_time(4.2e-6) == "4.2 µs"  # millionths
    assert fmt_time(1.5) == "1.5 s"


# 8 ------------------------------------------------------------------ free-batch tolerance
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


# bench: real CPU kernels with tiny budgets (the numbers checked are predictions, or need no timer)
BENCH = ["bench", "-m", "gpt2", "--device", "cpu", "--phase", "decode", "-b", "1", "--prompt-len", "16",
         "--gen-len", "2", "--warmup-ms", "0", "--rep-ms", "1", "-f", "json"]


# 4 ------------------------------------------------------------------ bench block overhead
def test_bench_block_charges_each_kernel_of_a_layer_once():
    pytest.importorskip("torch")
    # one gpt2 block per layer launches 2 norms + qkv, score, softmax, context, out, ffn_up, ffn_down
    # = 9 kernels; 12 layers x 9 = 108 launches x 5 us (cpu-generic, eager) = 540 us
    (row,) = _json(BENCH + ["-H", "cpu-generic", "--dtype", "fp32", "--op", "block"])["rows"]
    assert row["op"] == "block"
    assert row["overhead_s"] == pytest.approx(108 * 5e-6)


# 6 ------------------------------------------------------------------ missing peak
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


# 7 ------------------------------------------------------------------ measured / predicted
SLOW_LAUNCH = """name: slow-launch
kind: cpu
memory_gb: 64
memory_bandwidth_gb_s: 1000000000
peak_tflops:
  fp32: 1000000000
launch_overhead_us: 4000
"""


def test_bench_measured_over_predicted_and_roofline_share(tmp_path):
    pytest.importorskip("torch")
    from gpt_batchprof.measure.bench import BenchSettings, run_bench
    from gpt_batchprof.measure.timing import FakeTimer

    (tmp_path / "slow.yaml").write_text(SLOW_LAUNCH)
    hw = load_hardware(str(tmp_path / "slow.yaml"))
    sc = Scenario(prompt_len=16, gen_len=2, dtypes=Dtypes.of("fp32"))
    res = run_bench(load_model("gpt2"), hw, sc, ("decode",), (1,), BenchSettings("cpu", "fake", "0", 1),
                    timer=FakeTimer(base_s=1e-3, noise=0.0))
    qkv = next(r for r in res.rows if r.cost.op == "qkv_proj")
    # predicted: 12 launches x 4 ms = 48 ms (+ 85 MB at 1e18 B/s and 42 MFLOP at 1e21 FLOP/s: ~0);
    # measured: the fake timer's 1 ms per launch x 12 = 12 ms
    assert qkv.prediction.time_s == pytest.approx(0.048)
    assert qkv.measured_time_s == pytest.approx(0.012)
    assert qkv.measured_over_predicted == pytest.approx(0.25)  # 12 / 48
    assert qkv.roofline_share == pytest.approx(4.0)  # 48 / 12: faster than the (too slow) roofline
