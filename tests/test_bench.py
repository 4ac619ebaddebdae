"""bench core: rows line up with analyze, FLOPs of the real kernels equal the analytic FLOPs, OOM rows."""

import math

import pytest

torch = pytest.importorskip("torch")

from gpt_batchprof.report.rows import bench_row_dict  # noqa: E402
from gpt_batchprof.analytic import Dtypes, Scenario, predict  # noqa: E402
from gpt_batchprof.analytic.mlp import mlp_cost  # noqa: E402
from gpt_batchprof.analytic.ops import causal_pairs  # noqa: E402
from gpt_batchprof.measure import kernels as K  # noqa: E402
from gpt_batchprof.measure.bench import BenchSettings, input_sets, plan_bench, run_bench  # noqa: E402
from gpt_batchprof.measure.timing import FakeTimer  # noqa: E402
from gpt_batchprof.profiles import load_hardware, load_model  # noqa: E402

CPU = BenchSettings("cpu", "test-cpu", torch.__version__, 1, warmup_s=0.0, rep_s=0.002)


def _fake_settings(**kw):
    return BenchSettings("cpu", "fake", "0", 1, **kw)


def test_rows_line_up_with_analyze_under_a_fake_timer():
    model, hw = load_model("gpt2"), load_hardware("cpu-generic")
    sc = Scenario(prompt_len=64, dtypes=Dtypes.of("fp32"))
    timer = FakeTimer(base_s=1e-3, noise=0.0)
    res = run_bench(model, hw, sc, ("prefill", "decode"), (1, 8), _fake_settings(), timer=timer)
    expected = [predict(c, hw) for ph in ("prefill", "decode") for b in (1, 8) for c in sc.ops(model, ph, b)]
    assert [(r.cost.phase, r.cost.batch, r.cost.op) for r in res.rows] == \
        [(p.cost.phase, p.cost.batch, p.cost.op) for p in expected]
    assert [r.cost.flops for r in res.rows] == [p.cost.flops for p in expected]
    assert [r.prediction.time_s for r in res.rows] == [p.time_s for p in expected]
    qkv = res.rows[1]
    assert qkv.cost.op == "qkv_proj"
    # 1 ms per launch x 12 layers, no noise
    assert qkv.measured_time_s == pytest.approx(0.012) and qkv.measured_iqr_s == 0.0
    assert qkv.roofline_share == pytest.approx(qkv.prediction.time_s / 0.012)
    assert qkv.achieved_flops_per_s == pytest.approx(qkv.cost.flops / 0.012)
    assert timer.calls[:2] == ["prefill/1/norm", "prefill/1/qkv_proj"]


def test_op_filter_block_and_mlp():
    model, hw = load_model("gpt2"), load_hardware("cpu-generic")
    sc = Scenario(prompt_len=16, dtypes=Dtypes.of("fp32"))
    plan = plan_bench(model, hw, sc, ("decode",), (1, 4), ops=("lm_head", "block", "mlp"), mlp_depth=8, mlp_width=1024)
    assert [(p.prediction.cost.op, p.prediction.cost.batch) for p in plan] == \
        [("lm_head", 1), ("block", 1), ("lm_head", 4), ("block", 4), ("mlp", 1), ("mlp", 4)]
    block = plan[1]
    # a block: norm twice, qkv, score, softmax, context, out, up, down; no LM head
    assert [(c.op, rep) for c, rep in block.parts] == [("norm", 2), ("qkv_proj", 1), ("attn_score", 1),
        ("attn_softmax", 1), ("attn_context", 1), ("out_proj", 1), ("ffn_up", 1), ("ffn_down", 1)]
    # gpt2 decode at batch 1: per layer 2*768*(2304 + 768 + 2*3072) dense FLOPs + 2 * 2*64*12*L attention
    L = sc.itl_context + 1
    per_layer = 2 * 768 * (2304 + 768 + 3072 + 3072) + 2 * (2 * 64 * 12 * L)
    assert block.prediction.cost.flops == pytest.approx(12 * per_layer)
    mlp = plan[5].prediction.cost
    assert mlp.flops == 8 * 2 * 4 * 1024 * 1024 and mlp.launches == 8


def test_unknown_and_absent_ops_are_errors():
    from gpt_batchprof.errors import BatchprofError

    model, hw = load_model("gpt2"), load_hardware("cpu-generic")
    with pytest.raises(BatchprofError, match="unknown operator 'qkv'"):
        plan_bench(model, hw, Scenario(), ("decode",), (1,), ops=("qkv",))
    with pytest.raises(BatchprofError, match="--op ffn_gate: not an operator of gpt2"):
        plan_bench(model, hw, Scenario(), ("decode",), (1,), ops=("ffn_gate",))


def _count_flops(kernel):
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        kernel.fn(0)
    return fc.get_total_flops()


@pytest.mark.parametrize("attention", ["unfused", "fused"])
@pytest.mark.parametrize("phase", ["prefill", "decode"])
@pytest.mark.parametrize("model_name", ["gpt2", "tiny"])
def test_flop_counter_agrees_with_analytic_flops(model_name, phase, attention, tiny_model):
    """Every bench kernel, at its exact shape, does the FLOPs analyze charges for one launch.

    Kernels are built on the 'meta' device: no memory, no compute, and SDPA dispatches to the
    flash-attention meta kernel that FlopCounterMode knows (the CPU SDPA kernel is not
    registered with the counter and would count 0).
    """
    model = tiny_model if model_name == "tiny" else load_model("gpt2")
    sc = Scenario(prompt_len=32, gen_len=16, dtypes=Dtypes.of("fp32"), attention=attention)
    for batch in (1, 3):
        for cost in sc.ops(model, phase, batch):
            kernel = K.build_kernel(cost, model, sc.dtypes, "meta")
            counted = _count_flops(kernel)
            per_launch = cost.flops / cost.launches
            if cost.op == "attn_fused" and cost.shape.causal:
                # FlopCounterMode charges SDPA the full q x L square whatever is_causal says
                # (torch/utils/flop_counter.py: "We aren't accounting for causal attention");
                # our fused count covers only the visible (query, key) pairs, which is what a
                # causal flash kernel computes.
                q, L = cost.shape.m, cost.shape.n
                assert per_launch == pytest.approx(counted * causal_pairs(q, L) / (q * L))
                assert per_launch < counted
            else:
                assert per_launch == counted, (cost.op, phase, batch)
    # a hand-worked case: gpt2 decode batch 1 qkv_proj is 2 x 768 x 2304 FLOPs per layer
    qkv = [c for c in sc.ops(load_model("gpt2"), "decode", 1) if c.op == "qkv_proj"][0]
    assert _count_flops(K.build_kernel(qkv, load_model("gpt2"), sc.dtypes, "meta")) == 2 * 768 * 2304


def test_mlp_kernel_flops():
    cost = mlp_cost(16, depth=8, width=256, dtypes=Dtypes.of("fp32"))
    assert _count_flops(K.build_kernel(cost, load_model("gpt2"), Dtypes.of("fp32"), "meta")) == 2 * 16 * 256 * 256


def test_real_cpu_run_of_a_tiny_model(tiny_model):
    hw = load_hardware("cpu-generic")
    sc = Scenario(prompt_len=16, gen_len=8, dtypes=Dtypes.of("fp32"), attention="fused")
    res = run_bench(tiny_model, hw, sc, ("prefill", "decode"), (2,), CPU)
    assert [r.status for r in res.rows] == ["ok"] * len(res.rows)
    for r in res.rows:
        assert r.measured_time_s > 0 and r.samples >= 5 and r.device_name == "test-cpu"
        d = bench_row_dict(r)
        for key in ("measured_time_s", "measured_iqr_s", "measured_over_predicted", "roofline_share",
                    "achieved_flops_per_s", "achieved_bytes_per_s", "status", "reason", "shape",
                    "device", "torch_version", "warnings", "op", "flops", "time_s", "bound"):
            assert key in d


def test_oom_on_one_shape_leaves_the_others(monkeypatch, tiny_model):
    real = K.build_kernel

    def flaky(cost, *a, **kw):
        if cost.op == "attn_score":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        if cost.op == "ffn_up":
            raise MemoryError()
        return real(cost, *a, **kw)

    monkeypatch.setattr(K, "build_kernel", flaky)
    sc = Scenario(prompt_len=8, gen_len=8, dtypes=Dtypes.of("fp32"))
    res = run_bench(tiny_model, load_hardware("cpu-generic"), sc, ("decode",), (1,), CPU)
    status = {r.cost.op: r.status for r in res.rows}
    assert status["attn_score"] == "oom" and status["ffn_up"] == "oom"
    assert "out of memory" in [r for r in res.rows if r.cost.op == "attn_score"][0].reason
    assert {op for op, s in status.items() if s == "ok"} == set(status) - {"attn_score", "ffn_up"}


def test_unsupported_dtype_is_a_skipped_row(tiny_model):
    sc = Scenario(prompt_len=8, gen_len=8, dtypes=Dtypes.of("int8"))
    res = run_bench(tiny_model, load_hardware("h100-sxm"), sc, ("decode",), (1,), CPU)
    assert {r.status for r in res.rows} == {"skipped"}
    assert all("int8" in r.reason for r in res.rows)
    assert all(r.measured_time_s is None and r.roofline_share is None for r in res.rows)


def test_mixed_dtypes_are_skipped_with_the_reason(tiny_model):
    sc = Scenario(prompt_len=8, gen_len=8, dtypes=Dtypes.of("fp32", weight="bf16"))
    res = run_bench(tiny_model, load_hardware("cpu-generic"), sc, ("decode",), (1,), CPU)
    by_op = {r.cost.op: r for r in res.rows}
    assert by_op["qkv_proj"].status == "skipped" and "mixed dtypes" in by_op["qkv_proj"].reason
    assert by_op["attn_score"].status == "ok"  # fp32 activations and fp32 KV


def test_input_sets_exceed_the_cache_when_cheap():
    assert input_sets(1e6, 32e6) == 8  # capped at 8 copies
    assert input_sets(10e6, 32e6) == 7  # ceil(64 / 10)
    assert input_sets(100e6, 32e6) == 1
    assert input_sets(300e6, 32e6) == 1
    assert input_sets(5e6, 0) == 1
    assert input_sets(1e6, 32e6, max_sets=256) == 64  # dense layers: weights streamed past twice the cache


def test_small_dense_weights_rotate_past_the_cache_and_activations_do_not(tiny_model):
    """A decode out_proj (256 x 256 fp32: 262 kB of weights, ~264 kB a launch): enough copies to fill
    2 x 32 MB, ceil(64e6 / 264 kB) = 243; a norm (activations the previous kernel wrote): 8 at most."""
    from gpt_batchprof.measure.bench import time_costs
    from gpt_batchprof.analytic.gpt import Dtypes

    timer = FakeTimer(base_s=1e-3, noise=0.0)
    ops = {o.op: o for o in Scenario(dtypes=Dtypes.of("fp32")).ops(tiny_model, "decode", 1)}
    dense = time_costs([(ops["out_proj"], 1)], 1, "x", tiny_model, Dtypes.of("fp32"), "cpu", timer, 0, 0, 32e6)
    norm = time_costs([(ops["norm"], 1)], 1, "x", tiny_model, Dtypes.of("fp32"), "cpu", timer, 0, 0, 32e6)
    per_launch = ops["out_proj"].bytes / ops["out_proj"].launches
    assert dense.sets == math.ceil(2 * 32e6 / per_launch) == 243 and norm.sets == 8


def test_min_efficiency_selects_rows_below_share():
    model, hw = load_model("gpt2"), load_hardware("cpu-generic")
    sc = Scenario(prompt_len=16, dtypes=Dtypes.of("fp32"))
    pred = {c.op: predict(c, hw).time_s / c.launches for c in sc.ops(model, "decode", 1)}
    # each op takes exactly twice its roofline, except lm_head which hits it
    timer = FakeTimer(base_s=lambda label: pred[label.split("/")[2]] * (1 if label.endswith("lm_head") else 2),
                      noise=0.0)
    res = run_bench(model, hw, sc, ("decode",), (1,), _fake_settings(), timer=timer)
    assert all(math.isclose(r.roofline_share, 1.0 if r.cost.op == "lm_head" else 0.5) for r in res.rows)
    assert {r.cost.op for r in res.below(0.6)} == {r.cost.op for r in res.rows} - {"lm_head"}
    assert res.below(0.49) == ()  # 0.5 up to rounding


SLOW_LAUNCH = """name: slow-launch
kind: cpu
memory_gb: 64
memory_bandwidth_gb_s: 1000000000
peak_tflops:
  fp32: 1000000000
launch_overhead_us: 4000
"""


def test_bench_measured_over_predicted_and_roofline_share(tmp_path):
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
