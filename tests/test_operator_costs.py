"""Tests written to kill the mutants `mutmut` left alive in the analytic core (docs/mutation.md).

Every expected number is worked by hand in the comment next to it.
"""

import math
from dataclasses import replace

import pytest

from gpt_batchprof.analytic import (
    Dtypes,
    Parallelism,
    Scenario,
    combine,
    enumerate_ops,
    predict,
    serving_report,
)
from gpt_batchprof.analytic.gpt import attention_ops
from gpt_batchprof.analytic.mlp import mlp_cost
from gpt_batchprof.analytic.ops import OpShape, causal_pairs, matmul_cost, op_group
from gpt_batchprof.analytic.parallel import (
    alltoall_time,
    collective_cost,
    ring_allreduce_time,
    stage_layers,
)
from gpt_batchprof.analytic.roofline import Prediction, kernel_overhead_s, launch_mode, predict_collective, step_time
from gpt_batchprof.analytic.serving import (
    _sum_linear,
    _sum_roofline,
    critical_batch,
    decode_attention_time,
    step_activation_bytes,
)
from gpt_batchprof.errors import BatchprofError, ProfileError
from gpt_batchprof.profiles import WEIGHT_DTYPES, hardware_from_mapping, model_from_mapping
from gpt_batchprof.report.markup import bound_markup
from gpt_batchprof.units import (
    fmt_bytes,
    fmt_count,
    fmt_pct,
    fmt_rate,
    fmt_ratio,
    fmt_time,
)


# --------------------------------------------------------------------------- units.py, report/markup.py
def test_fmt_time_boundaries_missing_values_and_the_smallest_unit():
    assert fmt_time(None) == "-"
    assert fmt_time(math.nan) == "-"  # a missing prediction (no peak for the dtype) shows as a dash
    assert fmt_time(1.0) == "1 s"  # exactly one second stays in seconds (>=, not >)
    assert fmt_time(1e-3) == "1 ms"  # exactly a thousandth: ms
    assert fmt_time(1e-6) == "1 µs"
    assert fmt_time(3e-9) == "3 ns"
    assert fmt_time(5e-10) == "0.5 ns"  # below a nanosecond: still ns, 5e-10 / 1e-9 = 0.5
    assert fmt_time(0.0) == "0 ns"  # 0 is below every step: the last unit
    assert fmt_time(-2e-3) == "-2 ms"  # the unit follows |value|
    assert fmt_time(1.23456) == "1.23 s"  # three significant digits
    assert fmt_time(12) == "12 s"  # an int is not NaN-checked as a float


def test_fmt_bytes_is_binary():
    assert fmt_bytes(None) == "-"
    assert fmt_bytes(math.nan) == "-"
    assert fmt_bytes(3 * 2**40) == "3 TiB"
    assert fmt_bytes(2**30) == "1 GiB"  # 1,073,741,824 B
    assert fmt_bytes(5 * 2**20) == "5 MiB"
    assert fmt_bytes(1536) == "1.5 KiB"  # 1536 / 1024
    assert fmt_bytes(1024) == "1 KiB"  # exactly 2**10 (>=)
    assert fmt_bytes(100) == "100 B"
    assert fmt_bytes(0.5) == "0.5 B"  # below one byte: the last unit
    assert fmt_bytes(10**9) == "954 MiB"  # 1e9 / 2**20 = 953.67 -> 954 MiB (not GiB)


def test_fmt_count_is_decimal():
    assert fmt_count(None) == "-"
    assert fmt_count(0) == "0"
    assert fmt_count(0, "FLOP") == "0 FLOP"
    assert fmt_count(2.5e15, "FLOP") == "2.5 PFLOP"
    assert fmt_count(1e15, "FLOP") == "1 PFLOP"  # exactly 1e15 (>=)
    assert fmt_count(312e12, "FLOP/s") == "312 TFLOP/s"  # A100 dense fp16 peak
    assert fmt_count(2.039e12, "B/s") == "2.04 TB/s"  # A100-80GB bandwidth, 3 significant digits
    assert fmt_count(3e9, "B") == "3 GB"
    assert fmt_count(4.5e6) == "4.5 M"
    assert fmt_count(1500, "B") == "1.5 kB"
    assert fmt_count(7) == "7"  # no unit, no trailing space
    assert fmt_count(7, "B/s") == "7 B/s"
    assert fmt_count(0.5, "FLOP") == "0.5 FLOP"  # below 1: the last unit


def test_fmt_rate_ratio_and_percent():
    assert fmt_rate(None) == "-"
    assert fmt_rate(1234.6) == "1,235"  # thousands separator, no decimals
    assert fmt_rate(1000) == "1,000"  # exactly 1000 takes the integer form (>=)
    assert fmt_rate(12.345) == "12.3"  # three significant digits below 1000
    assert fmt_rate(12.345, digits=2) == "12"
    assert fmt_ratio(None) == "-"
    assert fmt_ratio(1.234) == "1.23x"
    assert fmt_pct(None) == "-"
    assert fmt_pct(0.256) == "26%"  # 100 x 0.256 = 25.6 -> 26


def test_bound_markup_styles_and_short_names():
    assert bound_markup("compute") == "[green]compute[/]"
    assert bound_markup("compute", short=True) == "[green]comp[/]"
    assert bound_markup("memory", short=True) == "[yellow]mem[/]"
    assert bound_markup("overhead", short=True) == "[magenta]ovh[/]"
    assert bound_markup("oom", short=True) == "[red]oom[/]"  # no short name: the bound itself
    assert bound_markup("skipped") == "[dim]skipped[/]"
    assert bound_markup("link") == "link"  # no style: plain text


# --------------------------------------------------------------------------- analytic/ops.py, gpt.py


def test_every_field_of_a_chunked_prefill_step(tiny_model):
    """tiny (2 layers, d 256, 8 heads of 32, 2 K/V heads, SwiGLU d_ff 512, vocab 1000, RMSNorm), fp16,
    unfused prefill of 3 new tokens per sequence onto 4 cached ones, batch 2: T = 6 tokens, L = 4 + 3 = 7 keys."""
    ops = enumerate_ops(tiny_model, "prefill", 2, new_tokens=3, kv_len=4, dtypes=Dtypes.of("fp16"))
    # (op, flops, bytes, weight_bytes, launches, shape), each worked by hand:
    want = [
        # 2 x 2 layers + 1 = 5 norms; per launch 2 x 6 x 256 x 2 B = 6144 read+written + 256 x 2 B weights = 6656
        ("norm", 0.0, 5 * 6656, 5 * 512, 5, OpShape(6, 256, 0, variant="rmsnorm")),
        # n = 256 + 2 x 64 = 384; 2 layers x 2 x 6 x 256 x 384 = 2,359,296 FLOPs;
        # per layer 256 x 384 x 2 = 196,608 B weights + 6 x 256 x 2 = 3072 in + 6 x 384 x 2 = 4608 out = 204,288
        ("qkv_proj", 2_359_296.0, 2 * 204_288, 2 * 196_608, 2, OpShape(6, 384, 256)),
        # scores 2 x 8 x 3 x 7 = 336; FLOPs 2 layers x 2 x 32 x 336 = 43,008; queries 2 x 8 x 3 x 32 x 2 B = 3072,
        # K 2 x 2 x 7 x 32 x 2 B = 1792, scores 336 x 2 B = 672: 5536 per layer. 4 query heads per K/V head:
        # (2 x 2, 4 x 3, 32) @ (2 x 2, 32, 7)
        ("attn_score", 43_008.0, 2 * 5536, 0.0, 2,
         OpShape(m=12, n=7, k=32, batch=4, heads=8, kv_heads=2, causal=True)),
        # 2 x 8 x 3 = 48 rows of 7: 2 x 48 x 7 x 2 B = 1344 per layer
        ("attn_softmax", 0.0, 2 * 1344, 0.0, 2, OpShape(48, 7, 0)),
        ("attn_context", 43_008.0, 2 * 5536, 0.0, 2,
         OpShape(m=12, n=32, k=7, batch=4, heads=8, kv_heads=2, causal=True)),
        # 2 x 2 x 6 x 256 x 256 = 1,572,864; 131,072 B weights + 3072 in + 3072 out = 137,216
        ("out_proj", 1_572_864.0, 2 * 137_216, 2 * 131_072, 2, OpShape(6, 256, 256)),
        # 2 x 2 x 6 x 256 x 512 = 3,145,728; 262,144 B weights + 3072 in + 6144 out = 271,360
        ("ffn_gate", 3_145_728.0, 2 * 271_360, 2 * 262_144, 2, OpShape(6, 512, 256)),
        ("ffn_up", 3_145_728.0, 2 * 271_360, 2 * 262_144, 2, OpShape(6, 512, 256)),
        ("ffn_down", 3_145_728.0, 2 * 271_360, 2 * 262_144, 2, OpShape(6, 256, 512)),
        # last position of 2 sequences: 2 x 2 x 256 x 1000 = 1,024,000; 512,000 B + 1024 in + 4000 out
        ("lm_head", 1_024_000.0, 517_024, 512_000, 1, OpShape(2, 1000, 256)),
    ]
    got = [(o.op, o.flops, o.bytes, o.weight_bytes, o.launches, o.shape) for o in ops]
    assert got == want
    for o in ops:
        assert (o.phase, o.batch, o.new_tokens, o.kv_len, o.compute_dtype) == ("prefill", 2, 3, 4, "fp16"), o.op


def test_fused_decode_with_a_sliding_window(tiny_model):
    # window 4: a decode step with 10 cached tokens reads min(10, 4 - 1) + 1 = 4 keys; batch 1
    m = replace(tiny_model, sliding_window=4)
    (fused,) = [o for o in enumerate_ops(m, "decode", 1, kv_len=10, attention="fused") if o.op == "attn_fused"]
    # pairs: 1 x 8 heads x 4 keys = 32; FLOPs 2 layers x 4 x 32 x 32 = 8192
    assert fused.flops == 8192
    # per layer: Q in and O out 2 x (8 x 32 x 2 B = 512) + K and V 2 x (2 x 4 x 32 x 2 B = 512) = 2048
    assert fused.bytes == 2 * 2048 and fused.weight_bytes == 0.0
    assert fused.shape == OpShape(m=1, n=4, k=32, batch=1, heads=8, kv_heads=2, causal=False)
    assert (fused.phase, fused.batch, fused.new_tokens, fused.kv_len) == ("decode", 1, 1, 10)


def test_causal_pairs_past_the_window_and_integer_results():
    # 2 queries at positions 9, 10 of 10 keys, window 4: both see 4 keys -> 8 pairs (none below the window)
    assert causal_pairs(2, 10, 4) == 8
    # no window: queries 1..3 of 3 see 1 + 2 + 3 = 6 keys
    assert causal_pairs(3, 3) == 6 and type(causal_pairs(3, 3)) is int
    # window 3, 4 queries of 5 keys: positions 2..5 see 2, 3, 3, 3 -> 11
    assert causal_pairs(4, 5, 3) == 11 and type(causal_pairs(4, 5, 3)) is int


def test_moe_matmul_shape_is_the_mean_rows_per_touched_expert():
    ctx = ("decode", 3, 1, 0)
    kw = dict(k=4, n=8, w_bytes=2, a_bytes=2, launches=1, compute_dtype="fp16", ctx=ctx)
    # 3 tokens x 2 routes = 6 rows over 2.5 experts: round(2.4) = 2 rows per expert, round(2.5) = 2 groups
    c = matmul_cost("ffn_up", tokens=3, experts_touched=2.5, routes=2, **kw)
    assert c.shape == OpShape(m=2, n=8, k=4, batch=2)
    # 1 row over 1.4 experts: round(0.71) = 1 row, round(1.4) = 1 group (neither is raised to 2)
    c = matmul_cost("ffn_up", tokens=1, experts_touched=1.4, routes=1, **kw)
    assert c.shape == OpShape(m=1, n=8, k=4, batch=1)
    # FLOPs 2 x 1 x 4 x 8 = 64; bytes 1 x 4 x 2 in + 1.4 x 4 x 8 x 2 = 89.6 weights + 1 x 8 x 2 out = 113.6
    assert c.flops == 64 and c.bytes == pytest.approx(113.6) and c.weight_bytes == pytest.approx(89.6)
    assert (c.phase, c.batch, c.new_tokens, c.kv_len) == ctx


def _moe_model(norm="layernorm"):
    return model_from_mapping(
        {"name": "moe", "n_layer": 1, "d_model": 8, "n_head": 2, "n_kv_head": 2, "d_ff": 16, "ffn": "swiglu",
         "vocab_size": 10, "max_seq_len": 64, "norm": norm, "n_expert": 4, "n_expert_active": 2,
         "d_ff_shared": 8},
        "test",
    )


def test_moe_with_a_shared_expert_and_layernorm_rows():
    ops = {o.op: o for o in enumerate_ops(_moe_model(), "decode", 1, kv_len=0)}
    assert list(ops) == ["norm", "qkv_proj", "attn_score", "attn_softmax", "attn_context", "out_proj",
                         "moe_router", "ffn_gate", "ffn_up", "ffn_down", "ffn_shared_gate", "ffn_shared_up",
                         "ffn_shared_down", "lm_head"]
    # LayerNorm: weight and bias, 2 x 8 x 2 B = 32 per norm; 3 norms of 1 x 8: (2 x 8 x 2 + 32) x 3 = 192
    assert ops["norm"].bytes == 192 and ops["norm"].weight_bytes == 96
    # router 8 -> 4 experts: 2 x 8 x 4 = 64 FLOPs, 64 B weights + 16 in + 8 out = 88
    assert ops["moe_router"].flops == 64 and ops["moe_router"].bytes == 88
    # 1 token to 2 of 4 experts: touched 4 x (1 - (1/2)^1) = 2; rows 2.
    # gate/up: 2 x 2 x 8 x 16 = 512 FLOPs; 2 x 8 x 16 x 2 = 512 B weights + 2 x 8 x 2 in + 2 x 16 x 2 out = 608
    for name, shape in (("ffn_gate", OpShape(1, 16, 8, batch=2)), ("ffn_up", OpShape(1, 16, 8, batch=2)),
                        ("ffn_down", OpShape(1, 8, 16, batch=2))):
        assert (ops[name].flops, ops[name].bytes, ops[name].weight_bytes, ops[name].shape) == (512, 608, 512, shape)
    # shared expert, always on, 8 wide: 2 x 8 x 8 = 128 FLOPs; 128 B weights + 16 in + 16 out = 160
    for name in ("ffn_shared_gate", "ffn_shared_up", "ffn_shared_down"):
        assert (ops[name].flops, ops[name].bytes, ops[name].shape) == (128, 160, OpShape(1, 8, 8)), name
    # RMSNorm keeps one weight vector: (32 + 16) x 3 = 144
    rms = {o.op: o for o in enumerate_ops(_moe_model("rmsnorm"), "decode", 1)}
    assert rms["norm"].bytes == 144


def test_decode_ignores_new_tokens_and_prefill_defaults_to_one_token(tiny_model):
    qkv = {o.op: o for o in enumerate_ops(tiny_model, "decode", 1, new_tokens=5, kv_len=3)}["qkv_proj"]
    assert qkv.shape.m == 1 and qkv.new_tokens == 1  # decode feeds one token whatever new_tokens says
    qkv = {o.op: o for o in enumerate_ops(tiny_model, "prefill", 1)}["qkv_proj"]
    assert qkv.shape.m == 1  # new_tokens defaults to 1


def test_enumerate_ops_and_dtypes_refuse_with_the_whole_message(tiny_model):
    with pytest.raises(BatchprofError, match=r"^unknown phase 'warmup' \(choose from prefill, decode\)$"):
        enumerate_ops(tiny_model, "warmup", 1)
    with pytest.raises(BatchprofError, match=r"^unknown attention mode 'flash' \(choose from unfused, fused\)$"):
        enumerate_ops(tiny_model, "decode", 1, attention="flash")
    with pytest.raises(BatchprofError, match=r"^impossible shape: batch=1, new_tokens=1, kv_len=-1$"):
        enumerate_ops(tiny_model, "decode", 1, kv_len=-1)
    with pytest.raises(BatchprofError, match=r"^unknown weight dtype 'fp7' \(choose from "):
        Dtypes(weight="fp7")
    with pytest.raises(BatchprofError, match=r"^unknown kv dtype 'fp7' \(choose from "):
        Dtypes(kv="fp7")
    assert Dtypes.of("fp32") == Dtypes(weight="fp32", act="fp32", kv="fp32")
    assert Dtypes.of("fp16", kv="fp8") == Dtypes(weight="fp16", act="fp16", kv="fp8")


# --------------------------------------------------------------------------- analytic/mlp.py
def test_mlp_cost_hand_worked():
    # seed 002: 8 layers of 1024 x 1024 fp16 at batch 4: FLOPs 8 x 2 x 4 x 1024 x 1024 = 67,108,864;
    # per layer weights 1024 x 1024 x 2 = 2,097,152 B + 4 x 1024 x 2 in + 4 x 1024 x 2 out = 2,113,536
    c = mlp_cost(4)
    assert (c.op, c.flops, c.bytes, c.weight_bytes, c.launches) == ("mlp", 67_108_864, 8 * 2_113_536,
                                                                     8 * 2_097_152, 8)
    assert (c.phase, c.batch, c.new_tokens, c.kv_len, c.compute_dtype) == ("decode", 4, 1, 0, "fp16")
    assert c.shape == OpShape(4, 1024, 1024)
    # fp32 activations, int8 weights, 2 layers of 16 at batch 1: 2 x 2 x 16 x 16 = 1024 FLOPs;
    # per layer 256 x 1 B + 16 x 4 in + 16 x 4 out = 384
    c = mlp_cost(1, depth=2, width=16, dtypes=Dtypes(weight="int8", act="fp32", kv="fp32"))
    assert (c.flops, c.bytes, c.compute_dtype) == (1024, 768, "fp32")
    for bad in (dict(batch=0), dict(batch=1, depth=0), dict(batch=1, width=0)):
        with pytest.raises(BatchprofError, match=r"^impossible MLP: batch=\d+, depth=\d+, width=\d+ \(all must be >= 1\)$"):
            mlp_cost(**bad)


# --------------------------------------------------------------------------- analytic/roofline.py


def _hw(**extra):
    # 1 TFLOP/s fp16, 100 GB/s, 2 us per launch (kind gpu unless given)
    m = {"name": "toy", "kind": "gpu", "memory_gb": 1, "memory_bandwidth_gb_s": 100,
         "peak_tflops": {"fp16": 1}, "launch_overhead_us": 2}
    return hardware_from_mapping(m | extra, "test")


def test_bound_ties_go_to_the_roofs():
    c = matmul_cost("qkv_proj", tokens=1, k=4, n=4, w_bytes=2, a_bytes=2, launches=1, compute_dtype="fp16",
                    ctx=("decode", 1, 1, 0))
    assert Prediction(c, 1.0, 1.0, 1.0, 2.0).bound == "compute"  # overhead equal to the roof does not exceed it
    assert Prediction(c, 1.0, 2.0, 0.0, 2.0).bound == "memory"
    assert Prediction(c, 1.0, 1.0, 1.5, 2.5).bound == "overhead"


def test_launch_modes_and_their_messages():
    cpu = _hw(kind="cpu")
    assert launch_mode("eager", cpu) == "eager"  # no graph gap is needed for eager
    assert launch_mode("auto", cpu) == "eager"
    with pytest.raises(BatchprofError, match=r"^--launch: unknown mode 'fast' \(choose from auto, eager, graphs\)$"):
        launch_mode("fast", cpu)
    with pytest.raises(BatchprofError, match=r"^--launch graphs: hardware 'toy' has no graph_launch_overhead_us "
                                             r"\(the per-kernel gap inside a CUDA graph\); add it to the profile "
                                             r"or use --launch eager$"):
        launch_mode("graphs", _hw())
    assert kernel_overhead_s(_hw(graph_launch_overhead_us=0), "graphs") == 0.0  # a zero gap stays zero
    assert kernel_overhead_s(_hw(graph_launch_overhead_us=0.5), "graphs") == pytest.approx(0.5e-6)


def test_predict_without_a_peak_raises_unless_told_not_to():
    c = matmul_cost("qkv_proj", tokens=1, k=1000, n=1000, w_bytes=4, a_bytes=4, launches=1, compute_dtype="fp32",
                    ctx=("decode", 1, 1, 0))
    hw = _hw()  # fp16 peak only
    with pytest.raises(ProfileError):
        predict(c, hw)  # strict by default
    p = predict(c, hw, strict=False)
    # bytes 1000 x 4 + 1,000,000 x 4 + 1000 x 4 = 4,008,000 at 100 GB/s = 40.08 us; 1 launch x 2 us
    assert p.cost is c and math.isnan(p.compute_s) and math.isnan(p.time_s)
    assert p.memory_s == pytest.approx(40.08e-6) and p.overhead_s == pytest.approx(2e-6)
    assert p.bound == "memory" and p.note.startswith("no prediction: ")


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


# --------------------------------------------------------------------------- analytic/serving.py


def test_sum_linear_hand_sums():
    assert _sum_linear(1, 2, 3, 5) == 27  # (1 + 6) + (1 + 8) + (1 + 10)
    assert _sum_linear(1, 2, 4, 4) == 9  # one term: 1 + 8
    assert _sum_linear(1, 2, 5, 3) == 0.0  # empty range


def test_sum_roofline_splits_where_the_lines_cross():
    # flops 20 + 2 L at 2 FLOP/s -> compute 10 + L; bytes 16 + 12 L at 4 B/s -> memory 4 + 3 L; equal at L = 3
    # L = 1..5: max(11, 7), max(12, 10), 13 (tie), max(14, 16), max(15, 19) = 11 + 12 + 13 + 16 + 19 = 71
    assert _sum_roofline((20, 2), (16, 12), 2.0, 4.0, 1, 5) == 71
    assert _sum_roofline((20, 2), (16, 12), 2.0, 4.0, 3, 5) == 13 + 16 + 19
    assert _sum_roofline((20, 2), (16, 12), 2.0, 4.0, 2, 2) == 12
    assert _sum_roofline((20, 2), (16, 12), 2.0, 4.0, 3, 2) == 0.0
    # memory first: compute 1 + 3 L, memory 10 + L; cross at 4.5: 11, 12, 13, 14, then compute 16 -> 66
    assert _sum_roofline((2, 6), (40, 4), 2.0, 4.0, 1, 5) == 66
    # parallel lines (same slope): compute 10 + L always above memory 1 + L: 11 + 12 + 13 = 36
    assert _sum_roofline((20, 2), (4, 4), 2.0, 4.0, 1, 3) == 36


def _gelu_model():
    return model_from_mapping(
        {"name": "g", "n_layer": 1, "d_model": 64, "n_head": 4, "n_kv_head": 4, "d_ff": 32, "ffn": "gelu",
         "vocab_size": 10, "max_seq_len": 512, "norm": "layernorm"}, "test")


def test_step_activation_bytes_takes_the_widest_tensor():
    d16 = Dtypes.of("fp16")
    # d 64, 4 heads, d_ff 32 (GELU: one inner tensor); batch 1, 1 token; logits 10 x 4 B = 40
    # QKV 64 + 2 x 64 = 192 beats FFN 32 and scores 2 x 4 x 1 key = 8: (2 x 64 + 192) x 2 + 40 = 680
    assert step_activation_bytes(_gelu_model(), d16, "unfused", 1, 1, 1) == 680
    # 100 keys: scores + probabilities 2 x 4 x 100 = 800 win: (128 + 800) x 2 + 40 = 1896; fused keeps none
    assert step_activation_bytes(_gelu_model(), d16, "unfused", 1, 1, 100) == 1896
    assert step_activation_bytes(_gelu_model(), d16, "fused", 1, 1, 100) == 680
    # batch 2 (one token each), 100 keys: residual 2 x 2 x 64 = 256; scores 2 x 2 x 4 x 100 = 1600 beat QKV 384:
    # (256 + 1600) x 2 + 2 x 10 x 4 = 3792
    assert step_activation_bytes(_gelu_model(), d16, "unfused", 2, 1, 100) == 3792
    # MoE (d 8, d_ff 16 SwiGLU, 2 active + shared 8): inner 2 x (16 x 2 + 8) = 80 beats QKV 24:
    # (2 x 8 + 80) x 2 + 10 x 4 = 232
    assert step_activation_bytes(_moe_model(), d16, "unfused", 1, 1, 1) == 232


def test_scenario_steps_and_messages(tiny_model):
    s = Scenario(prompt_len=10, gen_len=6, context_len=0)  # a context of 0 cached tokens is allowed
    assert s.step("prefill") == (10, 0) and s.step("decode") == (1, 0)
    with pytest.raises(BatchprofError, match=r"^unknown phase 'x' \(choose from prefill, decode\)$"):
        s.step("x")
    with pytest.raises(BatchprofError, match=r"^--prompt-len must be >= 1, got 0$"):
        Scenario(prompt_len=0)
    with pytest.raises(BatchprofError, match=r"^--gen-len must be >= 1, got 0$"):
        Scenario(gen_len=0)
    with pytest.raises(BatchprofError, match=r"^--context-len must be >= 0, got -1$"):
        Scenario(context_len=-1)
    # tiny holds 512 positions; 500 + 20 - 1 = 519 generated positions
    with pytest.raises(BatchprofError, match=r"^--prompt-len \+ --gen-len - 1 = 519 positions"):
        Scenario(prompt_len=500, gen_len=20, context_len=518).check_fits_model(tiny_model)  # 518 + 1 = 519, not more
    with pytest.raises(BatchprofError, match=r"^--context-len \+ 1 = 520 positions"):
        Scenario(prompt_len=500, gen_len=20, context_len=519).check_fits_model(tiny_model)
    # prefill ops feed the whole prompt
    qkv = {o.op: o for o in s.ops(tiny_model, "prefill", 1)}["qkv_proj"]
    assert qkv.shape.m == 10


def test_critical_batch_is_one_when_batch_one_is_already_compute_bound(tiny_model):
    # 1 TFLOP/s against 1,000,000 GB/s: the ridge is 0.001 FLOP/B, below any matmul's intensity at batch 1
    hw = _hw(memory_bandwidth_gb_s=1_000_000)
    assert critical_batch(tiny_model, hw, Scenario(prompt_len=8, gen_len=2, launch="eager")) == 1


# --------------------------------------------------------------------------- analytic/parallel.py


def _linked_hw():
    # 100 GB/s per direction, 5 us per hop
    return _hw(interconnect={"name": "toy link", "bandwidth_gb_s": 100, "latency_us": 5})


def test_collective_formulas_at_two_ranks_and_one():
    # ring all-reduce of 1000 B over 2 at 100 B/s, 1 s per hop: 2 x 1/2 x 1000 / 100 + 2 x 1 x 1 = 12
    assert ring_allreduce_time(1000, 2, 100, 1) == 12
    assert ring_allreduce_time(1000, 1, 100, 1) == 0.0  # nothing to reduce on one GPU
    # all-to-all: 1/2 x 1000 / 100 + 1 x 1 = 6
    assert alltoall_time(1000, 2, 100, 1) == 6
    assert alltoall_time(1000, 1, 100, 1) == 0.0


def test_collective_rows_are_priced_by_the_link():
    ctx = ("decode", 8, 1, 3)
    kw = dict(launches=2, ranks=4, rows=8, width=256, compute_dtype="fp16", ctx=ctx)
    # 4,000,000 B per call over 4 GPUs at 1e11 B/s, 5 us per hop:
    # all-reduce: link 2 x 3/4 x 4e6 / 1e11 = 60 us, latency 2 x 3 x 5 = 30 us; 2 calls -> 120 + 60 = 180 us
    ar = collective_cost("tp_allreduce", message_bytes=4e6, **kw)
    assert (ar.op, ar.phase, ar.batch, ar.new_tokens, ar.kv_len, ar.compute_dtype) == ("tp_allreduce", *ctx, "fp16")
    assert (ar.flops, ar.bytes, ar.weight_bytes, ar.launches) == (0.0, 8e6, 0.0, 2)
    assert ar.shape == OpShape(m=8, n=256, k=0, ranks=4)
    p = predict_collective(ar, _linked_hw())
    assert p.compute_s == 0.0 and p.bound == "link"
    assert (p.memory_s, p.overhead_s, p.time_s) == pytest.approx((120e-6, 60e-6, 180e-6))
    # all-to-all: link 3/4 x 4e-5 s = 30 us, latency 3 x 5 = 15 us; x 2 calls
    p = predict_collective(collective_cost("ep_alltoall", message_bytes=4e6, **kw), _linked_hw())
    assert (p.memory_s, p.overhead_s, p.time_s) == pytest.approx((60e-6, 30e-6, 90e-6))
    # send/recv: 4e6 / 1e11 = 40 us + 5 us; x 2
    p = predict_collective(collective_cost("pp_sendrecv", message_bytes=4e6, **kw), _linked_hw())
    assert (p.memory_s, p.overhead_s) == pytest.approx((80e-6, 10e-6))
    # a tiny message: 1000 B all-to-all, link 3/4 x 1e-8 s = 7.5 ns under 15 us of hops: latency-bound
    p = predict_collective(collective_cost("ep_alltoall", message_bytes=1000, **kw), _linked_hw())
    assert p.bound == "latency" and p.memory_s == pytest.approx(2 * 7.5e-9)
    with pytest.raises(ProfileError, match=r"^hardware 'toy': no interconnect section to price tp_allreduce "
                                           r"\(add interconnect: name, bandwidth_gb_s, latency_us\)$"):
        predict_collective(ar, _hw())


def test_layout_validation_and_labels():
    assert Parallelism().label() == "TP 1 x PP 1 x EP 1 = 1 GPU"
    assert Parallelism(tp=2, pp=3).label() == "TP 2 x PP 3 x EP 1 = 6 GPUs"
    for bad, shown in ((dict(tp=0), "--tp must be an integer >= 1, got 0"),
                       (dict(pp=1.5), "--pp must be an integer >= 1, got 1.5"),
                       (dict(ep=True), "--ep must be an integer >= 1, got True"),
                       (dict(micro_batches=0), "--micro-batches must be an integer >= 1, got 0")):
        with pytest.raises(BatchprofError) as e:
            Parallelism(**bad)
        assert str(e.value) == shown
    with pytest.raises(BatchprofError, match=r"^--micro-batches 2 needs --pp > 1"):
        Parallelism(micro_batches=2)
    assert stage_layers(5, 2) == (3, 2)  # the first stage takes the extra layer
    assert stage_layers(4, 2) == (2, 2)


def test_sharded_rows_of_a_pipelined_tensor_parallel_decode_step(tiny_model):
    """tiny over TP 2 x PP 2 with 2 micro-batches, decode of batch 4 at 5 cached tokens.

    One GPU of a stage: 1 layer, 4 query heads, max(1, 2 // 2) = 1 K/V head, d_ff 256, 500 vocabulary rows;
    2 micro-batches of 2 sequences (1 token each): every row is 2 micro-batches' worth.
    """
    par = Parallelism(tp=2, pp=2, micro_batches=2)
    ops = {o.op: o for o in enumerate_ops(tiny_model, "decode", 4, kv_len=5, parallel=par)}
    for o in ops.values():
        assert (o.phase, o.batch, o.new_tokens, o.kv_len, o.compute_dtype) == ("decode", 4, 1, 5, "fp16"), o.op
    # QKV: n = 128 + 2 x 32 = 192; per micro-batch 2 x 2 x 256 x 192 = 196,608 FLOPs,
    # 256 x 192 x 2 = 98,304 B weights + 2 x 256 x 2 = 1024 in + 2 x 192 x 2 = 768 out = 100,096 B
    q = ops["qkv_proj"]
    assert (q.flops, q.bytes, q.weight_bytes, q.launches) == (2 * 196_608, 2 * 100_096, 2 * 98_304, 2)
    assert q.shape == OpShape(2, 192, 256)
    # all-reduce of 2 tokens x 256 x 2 B = 1024 B, twice per layer (no embedding all-reduce on a pipeline)
    ar = ops["tp_allreduce"]
    assert (ar.flops, ar.bytes, ar.weight_bytes, ar.launches) == (0.0, 2 * 2 * 1024, 0.0, 2 * 2)
    assert ar.shape == OpShape(m=2, n=256, k=0, ranks=2)
    sr = ops["pp_sendrecv"]  # one 1024 B hand-over per micro-batch
    assert (sr.bytes, sr.launches, sr.shape) == (2 * 1024, 2, OpShape(m=2, n=256, k=0, ranks=2))
    assert "ep_alltoall" not in ops
    # TP only: 2 layers x 2 + 1 after the embedding = 5 all-reduces, and no hand-over between stages
    tp = {o.op: o for o in enumerate_ops(tiny_model, "decode", 4, kv_len=5, parallel=Parallelism(tp=2))}
    assert tp["tp_allreduce"].launches == 5 and "pp_sendrecv" not in tp and "ep_alltoall" not in tp
    pp = {o.op: o for o in enumerate_ops(tiny_model, "decode", 4, kv_len=5, parallel=Parallelism(pp=2))}
    assert "tp_allreduce" not in pp and "pp_sendrecv" in pp


# --------------------------------------------------------------------------- second round (mutmut run on the survivors)


def test_fused_prefill_skips_the_pairs_outside_the_window(tiny_model):
    m = replace(tiny_model, sliding_window=4)
    (f,) = [o for o in enumerate_ops(m, "prefill", 2, new_tokens=6, attention="fused") if o.op == "attn_fused"]
    # positions 1..6 see 1, 2, 3, 4, 4, 4 keys = 18 pairs (21 without the window); x 2 sequences x 8 heads = 288;
    # FLOPs 2 layers x 4 x 32 x 288 = 73,728
    assert f.flops == 73_728
    assert f.shape == OpShape(m=6, n=6, k=32, batch=2, heads=8, kv_heads=2, causal=True)
    # two new tokens are already causal; the score kernel's m is an int (4 query heads per K/V head x 2)
    (s,) = [o for o in enumerate_ops(tiny_model, "prefill", 1, new_tokens=2) if o.op == "attn_score"]
    assert s.shape.causal is True and s.shape.m == 8 and type(s.shape.m) is int


def test_small_leftovers_of_ops_gpt_mlp_and_units():
    with pytest.raises(KeyError, match="nope"):
        op_group("nope")
    with pytest.raises(BatchprofError) as e:
        Dtypes(weight="fp7")
    assert str(e.value) == f"unknown weight dtype 'fp7' (choose from {', '.join(WEIGHT_DTYPES)})"
    # one layer of 1 x 1 at batch 1 is a valid MLP: 2 FLOPs, 2 B weight + 2 B in + 2 B out
    c = mlp_cost(1, depth=1, width=1)
    assert (c.flops, c.bytes) == (2, 6)
    assert fmt_count(1, "B") == "1 B"
    assert [fmt_count(x, "F") for x in (1e12, 1e9, 1e6, 1e3)] == ["1 TF", "1 GF", "1 MF", "1 kF"]  # exact steps
    assert fmt_pct(1.0) == "100%"


def test_combine_skips_a_member_without_a_prediction_when_picking_the_bound():
    c = matmul_cost("ffn_up", tokens=1, k=2, n=2, w_bytes=2, a_bytes=2, launches=1, compute_dtype="fp16",
                    ctx=("decode", 1, 1, 0))
    nan = Prediction(c, math.nan, 1.0, 0.0, math.nan, bound="memory", note="no peak")
    ok = Prediction(c, 0.5, 0.1, 0.0, 0.5)  # compute-bound, half a second
    assert combine([nan, ok], "ffn", launches=2).bound == "compute"


def _overhead_hw(**extra):
    # roofs so high that a kernel's time is its launch: 1e18 FLOP/s and 1e18 B/s; 2 s per eager launch,
    # 1 s per kernel inside a CUDA graph; 3.60 USD an hour
    m = {"name": "slow-launch", "kind": "gpu", "memory_gb": 1, "memory_bandwidth_gb_s": 1e9,
         "peak_tflops": {"fp16": 1e6}, "launch_overhead_us": 2e6, "graph_launch_overhead_us": 1e6,
         "price_per_hour_usd": 3.6}
    return hardware_from_mapping(m | extra, "test")


def test_serving_report_on_a_launch_bound_device(tiny_model):
    """tiny runs 5 norms + 2 x (qkv, score, softmax, context, out, gate, up, down) + 1 LM head = 22 kernels
    per step, prefill or decode. Graphs on a GPU: 22 x 1 s = 22 s per step (compute and memory ~1e-12 s).
    gen_len 3: TTFT 22 s, 2 decode steps of 22 s: e2e 66 s at every batch; tokens/s = 3 x b / 66 = b / 22;
    cost = 1 GPU x 3.6 USD/h / 3600 s/h / (b / 22 tokens/s) x 1e6 = 22,000 / b USD per million tokens."""
    rep = serving_report(tiny_model, _overhead_hw(), Scenario(prompt_len=4, gen_len=3), (1, 2))
    assert rep.launch == "graphs"
    one, two = rep.points
    for p, b in ((one, 1), (two, 2)):
        assert p.batch == b and p.fits
        assert (p.ttft_s, p.itl_s, p.e2e_s) == pytest.approx((22.0, 22.0, 66.0), rel=1e-6)
        assert p.tokens_per_s == pytest.approx(b / 22, rel=1e-6)
        assert p.cost_per_million_tokens_usd == pytest.approx(22_000 / b, rel=1e-6)
        assert (p.speedup, p.latency_growth) == pytest.approx((b, 1.0), rel=1e-6)
    with pytest.raises(BatchprofError, match=r"^--batch sizes must be >= 1, got \[\]$"):
        serving_report(tiny_model, _overhead_hw(), Scenario(), ())
    with pytest.raises(BatchprofError, match=r"^--batch sizes must be >= 1, got \[0, 2\]$"):
        serving_report(tiny_model, _overhead_hw(), Scenario(), (0, 2))
    with pytest.raises(BatchprofError, match=r"has no interconnect section"):
        serving_report(tiny_model, _overhead_hw(), Scenario(prompt_len=4, gen_len=3), (1,), Parallelism(tp=2))


@pytest.mark.parametrize("prompt", [4, 8, 10])
@pytest.mark.parametrize("peak_tflops", [65, 1e-3])  # seed 002's T4 (memory-bound attention), or compute-bound
def test_closed_form_decode_sum_across_a_sliding_window(tiny_model, prompt, peak_tflops):
    """Window 8, 80 tokens: the 79 decode steps (more than the 64 summed one by one) read min(cached + 1, 8)
    keys: a prompt of 4 starts below the window, 8 at it, 10 past it. The closed form must equal the plain
    sum of the steps' roofline times, whichever roof the attention kernels hit."""
    hw = hardware_from_mapping({"name": "t4", "kind": "gpu", "memory_gb": 16, "memory_bandwidth_gb_s": 300,
                                "peak_tflops": {"fp16": peak_tflops}, "launch_overhead_us": 0}, "test")
    m = replace(tiny_model, sliding_window=8)
    s = Scenario(prompt_len=prompt, gen_len=80, launch="eager")
    steps = [step_time(attention_ops(m, "decode", 3, 1, prompt + i, s.dtypes, s.attention), hw, "eager")
             for i in range(79)]
    assert decode_attention_time(m, hw, s, 3, "eager") == pytest.approx(sum(steps), rel=1e-12)


def test_expert_parallel_decode_rows():
    """The small MoE (1 layer, d 8, 4 experts of d_ff 16, 2 active, shared expert 8) over EP 2, decode of
    batch 2: each group serves ceil(2 / 2) = 1 sequence, 1 token routed to 2 experts."""
    ops = {o.op: o for o in enumerate_ops(_moe_model(), "decode", 2, kv_len=0, parallel=Parallelism(ep=2))}
    # experts a GPU touches: both groups' 2 tokens pick 2 of 4: 4 x (1 - (1/2)^2) = 3 experts in all, 3 / 2 = 1.5
    # per GPU. gate/up: rows 1 x 2 = 2; FLOPs 2 x 2 x 8 x 16 = 512; weights 1.5 x 8 x 16 x 2 B = 384;
    # 2 x 8 x 2 = 32 B in + 384 + 2 x 16 x 2 = 64 B out = 480; round(1.5) = 2 groups of round(2 / 1.5) = 1 row
    for name, shape in (("ffn_gate", OpShape(1, 16, 8, batch=2)), ("ffn_up", OpShape(1, 16, 8, batch=2)),
                        ("ffn_down", OpShape(1, 8, 16, batch=2))):
        o = ops[name]
        assert (o.flops, o.bytes, o.weight_bytes, o.shape) == (512, 480, 384, shape), name
        assert (o.batch, o.new_tokens, o.launches) == (2, 1, 1)
    assert ops["ffn_shared_up"].flops == 128  # the shared expert is not split over the groups
    # dispatch and combine, each 1 token x 2 experts x 8 x 2 B = 32 B: 2 calls, 64 B, over 2 GPUs
    a2a = ops["ep_alltoall"]
    assert (a2a.bytes, a2a.launches, a2a.shape) == (64, 2, OpShape(m=1, n=8, k=0, ranks=2))
    assert "tp_allreduce" not in ops and "pp_sendrecv" not in ops
