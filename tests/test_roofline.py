"""The roofline (analytic/roofline.py): a kernel's bound, launch modes and their overhead,
predictions without a peak, and how `combine` totals a group. Numbers worked by hand; the toy
GPU (conftest.toy_gpu) is 1 TFLOP/s fp16, 100 GB/s, 2 us per launch.
"""

import math

import pytest

from gpt_batchprof.analytic import combine, predict
from gpt_batchprof.analytic.ops import OpShape, matmul_cost
from gpt_batchprof.analytic.roofline import Prediction, attention_mode, kernel_overhead_s, launch_mode
from gpt_batchprof.errors import BatchprofError, ProfileError


def test_bound_ties_go_to_the_roofs():
    c = matmul_cost("qkv_proj", tokens=1, k=4, n=4, w_bytes=2, a_bytes=2, launches=1, compute_dtype="fp16",
                    ctx=("decode", 1, 1, 0))
    assert Prediction(c, 1.0, 1.0, 1.0, 2.0).bound == "compute"  # overhead equal to the roof does not exceed it
    assert Prediction(c, 1.0, 2.0, 0.0, 2.0).bound == "memory"
    assert Prediction(c, 1.0, 1.0, 1.5, 2.5).bound == "overhead"


def test_launch_modes_and_their_messages(toy_gpu):
    cpu = toy_gpu(kind="cpu")
    assert launch_mode("eager", cpu) == "eager"  # no graph gap is needed for eager
    assert launch_mode("auto", cpu) == "eager"
    with pytest.raises(BatchprofError, match=r"^--launch: unknown mode 'fast' \(choose from auto, eager, graphs\)$"):
        launch_mode("fast", cpu)
    with pytest.raises(BatchprofError, match=r"^--launch graphs: hardware 'toy' has no graph_launch_overhead_us "
                                             r"\(the per-kernel gap inside a CUDA graph\); add it to the profile "
                                             r"or use --launch eager$"):
        launch_mode("graphs", toy_gpu())
    assert kernel_overhead_s(toy_gpu(graph_launch_overhead_us=0), "graphs") == 0.0  # a zero gap stays zero
    assert kernel_overhead_s(toy_gpu(graph_launch_overhead_us=0.5), "graphs") == pytest.approx(0.5e-6)


def test_predict_without_a_peak_raises_unless_told_not_to(toy_gpu):
    c = matmul_cost("qkv_proj", tokens=1, k=1000, n=1000, w_bytes=4, a_bytes=4, launches=1, compute_dtype="fp32",
                    ctx=("decode", 1, 1, 0))
    hw = toy_gpu()  # fp16 peak only
    with pytest.raises(ProfileError):
        predict(c, hw)  # strict by default
    p = predict(c, hw, strict=False)
    # bytes 1000 x 4 + 1,000,000 x 4 + 1000 x 4 = 4,008,000 at 100 GB/s = 40.08 us; 1 launch x 2 us
    assert p.cost is c and math.isnan(p.compute_s) and math.isnan(p.time_s)
    assert p.memory_s == pytest.approx(40.08e-6) and p.overhead_s == pytest.approx(2e-6)
    assert p.bound == "memory"
    assert p.note == ("no prediction: hardware 'toy': no fp32 peak in peak_tflops (has: fp16); "
                      "choose another --dtype or add fp32 to the profile")


def test_combine_totals_every_field_and_takes_the_scaled_slowest_bound():
    ctx = ("prefill", 3, 5, 7)
    kw = dict(w_bytes=2, a_bytes=2, launches=1, compute_dtype="fp16", ctx=ctx)
    a = Prediction(matmul_cost("ffn_up", tokens=1, k=2, n=2, **kw), 1.0, 2.0, 0.5, 2.5, note="x")
    b = Prediction(matmul_cost("ffn_down", tokens=1, k=2, n=2, **kw), 3.0, 1.0, 0.5, 3.5, note="y")
    # ffn_up: 2 x 1 x 2 x 2 = 8 FLOPs, 4 in + 8 weights + 4 out = 16 B, 8 weight B; same for ffn_down
    g = combine([a, b], "ffn", launches=3, shape=OpShape(9, 9, 9), scale=[2.0, 1.0])
    assert (g.cost.op, g.cost.phase, g.cost.batch, g.cost.new_tokens, g.cost.kv_len, g.cost.compute_dtype) == \
        ("ffn", "prefill", 3, 5, 7, "fp16")
    # 2 x a + b: FLOPs 24, bytes 48, weights 24; compute 2 + 3 = 5, memory 4 + 1 = 5, overhead 1.5, time 8.5
    assert (g.cost.flops, g.cost.bytes, g.cost.weight_bytes, g.cost.launches) == (24, 48, 24, 3)
    assert (g.compute_s, g.memory_s, g.overhead_s, g.time_s) == (5.0, 5.0, 1.5, 8.5)
    assert g.cost.shape == OpShape(9, 9, 9) and g.note == "x; y"
    assert g.bound == "memory"  # a takes 2 x 2.5 = 5 > b's 3.5: a's bound (memory 2 > compute 1)
    g = combine([a, b], "ffn", launches=2)  # unscaled: b (3.5 s) dominates; shape from the first member
    assert g.bound == "compute" and g.cost.shape == a.cost.shape and g.time_s == 6.0
    with pytest.raises(BatchprofError, match=r"^ffn: empty group of operators$"):
        combine([], "ffn", launches=0)


def test_combine_skips_a_member_without_a_prediction_when_picking_the_bound():
    c = matmul_cost("ffn_up", tokens=1, k=2, n=2, w_bytes=2, a_bytes=2, launches=1, compute_dtype="fp16",
                    ctx=("decode", 1, 1, 0))
    nan = Prediction(c, math.nan, 1.0, 0.0, math.nan, bound="memory", note="no peak")
    ok = Prediction(c, 0.5, 0.1, 0.0, 0.5)  # compute-bound, half a second
    assert combine([nan, ok], "ffn", launches=2).bound == "compute"


GRIDS = {"copy": {"unit": "GB/s", "bytes": [1000], "values": [100]},
         "matmul.fp16": {"unit": "GFLOP/s", "m": [1], "n": [8], "k": [8], "values": [[[1]]]},
         "attn_prefill.fp16": {"unit": "GFLOP/s", "batch_kv_heads": [1], "seq_len": [8], "gqa": [1],
                               "head_dim": [8], "values": [[[[1]]]]},
         "attn_decode.fp16": {"unit": "GFLOP/s", "batch_kv_heads": [1], "kv_len": [8], "gqa": [1],
                              "head_dim": [8], "values": [[[[1]]]]}}


def test_auto_attention_is_fused_where_the_tables_time_fused_attention_kernels(toy_gpu, measured_section):
    """Either fused-attention table (a serving engine's FlashAttention timed) makes `auto` fused; a
    profile with only matmul and copy tables, or with none, times the eager loop (QK^T, softmax, x V)."""
    def _tables(*names):
        return measured_section({n: GRIDS[n] for n in names})

    assert attention_mode("auto", toy_gpu(measured=_tables("copy", "attn_prefill.fp16"))) == "fused"
    assert attention_mode("auto", toy_gpu(measured=_tables("copy", "attn_decode.fp16"))) == "fused"
    assert attention_mode("auto", toy_gpu(measured=_tables("copy", "matmul.fp16"))) == "unfused"
    assert attention_mode("auto", toy_gpu()) == "unfused"
    assert attention_mode("unfused", toy_gpu(measured=_tables("attn_decode.fp16"))) == "unfused"  # asked for
    assert attention_mode("fused", toy_gpu()) == "fused"


def test_ridge_point_is_peak_over_bandwidth_fp16_by_default(toy_gpu):
    # 1 TFLOP/s fp16 over 100 GB/s: 10 FLOP/B; fp32 at 0.5 TFLOP/s: 5; a profile without fp16 takes its first peak
    two = toy_gpu(peak_tflops={"fp32": 0.5, "fp16": 1})
    assert two.ridge_point() == pytest.approx(10.0) and two.ridge_point("fp32") == pytest.approx(5.0)
    assert toy_gpu(peak_tflops={"bf16": 2, "fp32": 0.5}).ridge_point() == pytest.approx(20.0)
    with pytest.raises(ProfileError, match=r"^hardware 'toy': no int8 peak in peak_tflops \(has: fp32, fp16\)"):
        two.ridge_point("int8")


def test_the_hardware_record_in_json_output_is_in_si_units(toy_gpu):
    hw = toy_gpu(interconnect={"name": "x", "bandwidth_gb_s": 50, "latency_us": 5}, graph_launch_overhead_us=0.5,
                 engine={"name": "vllm", "per_step_us": 100, "per_layer_us": 9, "per_request_us": 3},
                 price_per_hour_usd=2.5, l2_cache_mb=50)
    assert hw.to_dict() == {
        "name": "toy", "kind": "gpu", "memory_bytes": 1e9, "memory_bandwidth_bytes_per_s": 1e11,
        "peak_flops_per_s": {"fp16": 1e12}, "launch_overhead_s": pytest.approx(2e-6),
        "graph_launch_overhead_s": pytest.approx(0.5e-6), "l2_cache_bytes": 50e6, "price_per_hour_usd": 2.5,
        "source": "", "engine": {"name": "vllm", "per_step_s": pytest.approx(100e-6), "per_layer_s": pytest.approx(9e-6),
                                 "per_request_s": pytest.approx(3e-6), "source": ""},
        "interconnect": {"name": "x", "bandwidth_bytes_per_s": 5e10, "latency_s": pytest.approx(5e-6)}}
    plain = toy_gpu().to_dict()
    assert (plain["engine"], plain["interconnect"], plain["graph_launch_overhead_s"]) == (None, None, None)
    assert "measured" not in plain
