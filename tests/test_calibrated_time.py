"""Calibrated time: which measured table prices each operator and at which coordinates, the tables'
validation and log-space interpolation, an operator's time from them (per launch, with the copy
floor), predictions and `combine` on a calibrated profile, and the sampled decode sum of the
calibrated branches of serving.py. Each expected number is worked by hand. (Written from a mutmut
run on analytic/efficiency.py: docs/mutation.md.)"""

import math

import pytest

from gpt_batchprof.analytic import Dtypes, Scenario, combine, predict, serving_report
from gpt_batchprof.analytic.efficiency import Calibrated, calibrated_time, kernel_table, kernel_tables
from gpt_batchprof.analytic.ops import OpCost, OpShape
from gpt_batchprof.analytic.serving import _sum_sampled, latencies
from gpt_batchprof.profiles import hardware_from_mapping, model_from_mapping
from gpt_batchprof.profiles.measured import MeasuredTables, Table, table_name, unit


def cost(op, flops=0.0, nbytes=0.0, launches=1, dtype="fp32", **shape):
    shape = OpShape(**({"m": 1, "n": 1, "k": 1} | shape))
    return OpCost(op, "decode", 1, 1, 0, flops, nbytes, 0.0, launches, dtype, shape)


# --------------------------------------------------------------------------- which table, which coordinates


def test_kernel_table_maps_every_operator_kind_to_its_table_and_coordinates():
    assert kernel_table(cost("qkv_proj", m=4, n=96, k=32)) == ("matmul", (4, 96, 32))
    # a dense op run as `batch` independent products (MoE experts) is a fused MoE kernel first (rows per
    # expert, elements of one expert matrix: 64 x 32), then a batched matmul
    assert kernel_table(cost("ffn_up", m=3, n=64, k=32, batch=8)) == ("moe", (3, 2048))
    assert kernel_table(cost("lm_head", m=2, n=1000, k=256)) == ("matmul", (2, 1000, 256))
    assert kernel_table(cost("attn_score", m=4, n=130, k=32, batch=6)) == ("bmm", (6, 4, 130, 32))
    assert kernel_table(cost("attn_context", m=4, n=130, k=32, batch=6)) == ("bmm", (6, 4, 130, 32))
    # fused attention: first the head-layout tables (batch x K/V heads, length, query heads per K/V head,
    # head_dim), then torch SDPA's (batch x heads problems); decode (m == 1) on the kv length, prefill on the
    # query length
    assert kernel_tables(cost("attn_fused", m=1, n=300, k=64, batch=2, heads=8, kv_heads=2)) == (
        ("attn_decode", (4, 300, 4.0, 64)), ("sdpa_decode", (16, 300, 64)))
    assert kernel_tables(cost("attn_fused", m=100, n=100, k=64, batch=2, heads=8)) == (
        ("attn_prefill", (16, 100, 1.0, 64)), ("sdpa_prefill", (16, 100, 64)))  # kv_heads 0 -> heads (MHA)
    # a chunk of 5 queries over 575 keys does 5 x 570 + 15 = 2865 pairs per head: the square causal prefill
    # doing as many is sqrt(2 x 2865) = 75.7 long (SDPA's table keeps the query length)
    chunk = kernel_tables(cost("attn_fused", m=5, n=575, k=128, batch=1, heads=32, kv_heads=8))
    assert chunk[0][0] == "attn_prefill" and chunk[0][1] == pytest.approx((8, 75.6968, 4.0, 128), rel=1e-5)
    assert chunk[1] == ("sdpa_prefill", (32, 5, 128))
    assert kernel_tables(cost("attn_fused", m=1, n=300, k=64, batch=3)) == (
        ("attn_decode", (3, 300, 1.0, 64)), ("sdpa_decode", (3, 300, 64)))  # heads 0 -> 1
    # a grouped expert GEMM: the fused-MoE table (rows per expert, elements of one expert matrix), then bmm
    assert kernel_tables(cost("ffn_up", m=3, n=64, k=32, batch=8)) == (("moe", (3, 2048)), ("bmm", (8, 3, 64, 32)))
    # memory-bound kernels: bytes per launch (4 launches of 4000 B = 1000 B each)
    assert kernel_table(cost("attn_softmax", nbytes=4000.0, launches=4)) == ("softmax", (1000.0,))
    assert kernel_table(cost("norm", nbytes=4000.0, launches=4, variant="rmsnorm")) == ("rmsnorm", (1000.0,))
    assert kernel_table(cost("norm", nbytes=3000.0, launches=0)) == ("layernorm", (3000.0,))  # launches 0 -> 1
    for op in ("embedding", "ffn_act", "tp_allreduce"):
        assert kernel_table(cost(op, nbytes=1e6)) is None


def test_table_names_and_units():
    assert table_name("matmul", "fp16") == "matmul.fp16"
    assert table_name("copy", "fp16") == "copy"  # bytes are bytes: one copy table for every dtype
    assert unit("bmm") == "FLOP/s" and unit("sdpa_decode") == "FLOP/s" and unit("softmax") == "B/s"


# --------------------------------------------------------------------------- the tables themselves


def test_table_refuses_malformed_grids_with_its_name():
    with pytest.raises(ValueError, match="unknown table kind 'conv'"):
        Table("conv", "fp32", ((1.0,),), (1.0,))
    with pytest.raises(ValueError, match=r"matmul.fp32: needs axes \('m', 'n', 'k'\)"):
        Table("matmul", "fp32", ((1.0,), (1.0,)), (1.0,))
    with pytest.raises(ValueError, match="softmax.fp32: axis values must be positive and increasing"):
        Table("softmax", "fp32", ((2.0, 1.0),), (1.0, 1.0))
    with pytest.raises(ValueError, match="axis values must be positive"):
        Table("softmax", "fp32", ((0.0, 1.0),), (1.0, 1.0))
    with pytest.raises(ValueError, match="axis values must be positive and increasing"):
        Table("softmax", "fp32", ((1.0, 1.0),), (1.0, 1.0))  # equal is not increasing
    with pytest.raises(ValueError, match="softmax.fp32: 3 values for a 2 grid"):
        Table("softmax", "fp32", ((1.0, 2.0),), (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="matmul.fp32: 1 values for a 2x1x1 grid"):
        Table("matmul", "fp32", ((1.0, 2.0), (1.0,), (1.0,)), (1.0,))
    with pytest.raises(ValueError, match="softmax.fp32: no measured value"):
        Table("softmax", "fp32", ((1.0, 2.0),), (None, None))
    t = Table("copy", "", ((1.0, 2.0),), (1.0, 2.0))
    assert t.name == "copy" and t.axis_names == ("bytes",)


def test_lookup_interpolates_in_log_space_on_every_axis_and_clamps_below_and_above():
    # bytes 1e3 -> 1 GB/s, 1e5 -> 100 GB/s: log rate linear in log bytes
    t = Table("softmax", "fp32", ((1e3, 1e5),), (1e9, 1e11))
    assert t.lookup((1e4,)).rate == pytest.approx(1e10, rel=1e-12)  # halfway in log: sqrt(1e9 * 1e11)
    assert t.lookup((1e3,)).rate == pytest.approx(1e9) and not t.lookup((1e3,)).extrapolated
    assert t.lookup((1e5,)).rate == pytest.approx(1e11) and not t.lookup((1e5,)).extrapolated
    lo, hi = t.lookup((10.0,)), t.lookup((1e7,))
    assert (lo.rate, lo.extrapolated) == (pytest.approx(1e9), True)
    assert (hi.rate, hi.extrapolated) == (pytest.approx(1e11), True)
    # three points: the right cell is found (1e5..1e7: 100 -> 400 GB/s; at 1e6 sqrt(100 x 400) = 200)
    t3 = Table("softmax", "fp32", ((1e3, 1e5, 1e7),), (1e9, 1e11, 4e11))
    assert t3.lookup((1e6,)).rate == pytest.approx(2e11, rel=1e-12)
    assert t3.lookup((1e4,)).rate == pytest.approx(1e10, rel=1e-12)
    # two axes, (m, n): rates 1, 2 / 4, 8 GFLOP/s at m 1/4, n 10/1000; centre (2, 100): 2^((0 + 1 + 2 + 3) / 4)
    m2 = Table("matmul", "fp32", ((1.0, 4.0), (10.0, 1000.0), (5.0,)), (1e9, 2e9, 4e9, 8e9))
    assert m2.lookup((2.0, 100.0, 5.0)).rate == pytest.approx(2 ** 1.5 * 1e9, rel=1e-12)
    assert m2.lookup((4.0, 10.0, 5.0)).rate == pytest.approx(4e9, rel=1e-12)  # an exact corner


def test_unmeasured_cell_with_nothing_below_takes_the_nearest_and_is_flagged():
    # cells m 1, 4, 16: (1) null, (4) 2 GFLOP/s, (16) 8 GFLOP/s -> m=1 has nothing at or below it;
    # the nearest in grid steps is m=4 (one step) rather than m=16 (two)
    t = Table("matmul", "fp32", ((1.0, 4.0, 16.0), (10.0,), (10.0,)), (None, 2e9, 8e9))
    hit = t.lookup((1.0, 10.0, 10.0))
    assert hit.rate == pytest.approx(2e9) and hit.extrapolated
    assert t.lookup((16.0, 10.0, 10.0)) == type(hit)(pytest.approx(8e9), False)


def test_measured_tables_overhead_falls_back_to_eager_and_summary_lists_provenance():
    t = Table("copy", "", ((1.0,),), (1.0,))
    mt = MeasuredTables("dev", "2.13", 4, "2026-11-23", {"eager": 5e-6}, {"copy": t}, ("busy",))
    assert mt.overhead("eager") == 5e-6 and mt.overhead("graphs") == 5e-6 and mt.overhead() == 5e-6
    assert MeasuredTables("d", "t", 1, "x", {"eager": 5e-6, "graphs": 1e-6}, {}).overhead("graphs") == 1e-6
    assert MeasuredTables("d", "t", 1, "x", {}, {}).overhead("eager") == 0.0
    assert mt.summary() == {"device_name": "dev", "torch_version": "2.13", "threads": 4, "date": "2026-11-23",
                            "overhead_s": {"eager": 5e-6}, "tables": ["copy"], "warnings": ["busy"]}
    assert mt.table("copy", "fp16") is t and mt.table("matmul", "fp32") is None


# --------------------------------------------------------------------------- one operator's calibrated time


def tables(**extra):
    return MeasuredTables("hand", "0", 1, "2026-11-23", {"eager": 10e-6, "graphs": 2e-6}, {
        "matmul.fp32": Table("matmul", "fp32", ((1.0, 4.0), (1000.0,), (1000.0,)), (1e9, 2e9)),
        "softmax.fp32": Table("softmax", "fp32", ((1e3, 1e6),), (1e9, 1e9)),
        "sdpa_prefill.fp32": Table("sdpa_prefill", "fp32", ((1.0, 64.0), (16.0, 4096.0), (64.0,)), (1e9,) * 4),
    } | extra)


def test_calibrated_time_of_a_matmul_per_launch_times_launches():
    # m=1 rate 1 GFLOP/s: 2e6 FLOP per launch = 2 ms; 3 launches of (2 ms + 10 us) = 6.03 ms
    c = cost("ffn_up", flops=6e6, nbytes=3 * 4.008e6, launches=3, m=1, n=1000, k=1000)
    got = calibrated_time(c, tables())
    assert got == Calibrated(pytest.approx(6.03e-3, rel=1e-12), pytest.approx(6e-3, rel=1e-12), 0.0,
                             pytest.approx(30e-6, rel=1e-12), False, ("matmul.fp32",))
    # in a CUDA graph the measured in-graph gap: 3 x (2 ms + 2 us)
    assert calibrated_time(c, tables(), "graphs").time_s == pytest.approx(6.006e-3, rel=1e-12)


def test_calibrated_time_takes_the_copy_floor_when_bytes_bound():
    # softmax of 1e5 B per launch at 1 GB/s = 100 us; the copy table at 0.5 GB/s says 200 us -> the floor binds
    copy = Table("copy", "", ((1e3, 1e6),), (5e8, 5e8))
    c = cost("attn_softmax", nbytes=2e5, launches=2)
    got = calibrated_time(c, tables(copy=copy))
    assert got.memory_s == pytest.approx(2 * 200e-6, rel=1e-12) and got.compute_s == 0.0
    assert got.time_s == pytest.approx(2 * (200e-6 + 10e-6), rel=1e-12)
    assert got.tables == ("softmax.fp32", "copy") and not got.extrapolated
    # a faster copy (10 GB/s: 10 us) does not bind: the softmax table's 100 us stays
    fast = Table("copy", "", ((1e3, 1e6),), (1e10, 1e10))
    assert calibrated_time(c, tables(copy=fast)).memory_s == pytest.approx(2 * 100e-6, rel=1e-12)
    # an out-of-grid copy lookup flags the result only when the floor is what binds
    tiny = Table("copy", "", ((1e6, 1e7),), (5e8, 5e8))  # 1e5 B is below the grid: clamped, flagged
    assert calibrated_time(c, tables(copy=tiny)).extrapolated
    assert not calibrated_time(c, tables(copy=Table("copy", "", ((1e6, 1e7),), (1e12, 1e12)))).extrapolated


def test_calibrated_time_of_a_compute_kernel_with_a_copy_floor():
    # matmul m=4 at 2 GFLOP/s: 8e6 FLOP = 4 ms; its 4.032e6 B at a 1 GB/s copy = 4.032 ms binds instead
    copy = Table("copy", "", ((1e3, 1e8),), (1e9, 1e9))
    c = cost("ffn_up", flops=8e6, nbytes=4.032e6, launches=1, m=4, n=1000, k=1000)
    got = calibrated_time(c, tables(copy=copy))
    assert got.compute_s == pytest.approx(4e-3) and got.memory_s == pytest.approx(4.032e-3)
    assert got.time_s == pytest.approx(4.032e-3 + 10e-6, rel=1e-12)


def test_no_table_for_the_kernel_or_its_dtype_gives_none():
    assert calibrated_time(cost("ffn_act", nbytes=1e6), tables()) is None  # no kernel table at all
    assert calibrated_time(cost("ffn_up", flops=2e6, m=1, n=1000, k=1000, dtype="fp16"), tables()) is None
    assert calibrated_time(cost("attn_score", flops=1e6, m=4, n=10, k=8, batch=2), tables()) is None  # no bmm


def test_chunked_fused_prefill_is_flagged_as_extrapolated():
    # sdpa_prefill is measured with q == kv; a chunk of 16 queries over 64 keys is not on that surface
    square = cost("attn_fused", flops=1e6, m=16, n=16, k=64, batch=1, heads=1)
    chunk = cost("attn_fused", flops=1e6, m=16, n=64, k=64, batch=1, heads=1)
    assert not calibrated_time(square, tables()).extrapolated
    assert calibrated_time(chunk, tables()).extrapolated
    # the head-layout table (a serving engine's fused kernel) likewise: 16 queries over 64 keys is read at the
    # square prefill doing as many pairs, an estimate the table never measured
    fa = Table("attn_prefill", "fp32", ((1.0, 64.0), (16.0, 4096.0), (1.0,), (64.0,)), (1e9,) * 4)
    assert calibrated_time(square, tables(**{"attn_prefill.fp32": fa})).tables == ("attn_prefill.fp32",)
    assert not calibrated_time(square, tables(**{"attn_prefill.fp32": fa})).extrapolated
    assert calibrated_time(chunk, tables(**{"attn_prefill.fp32": fa})).extrapolated


def test_a_binding_copy_floor_keeps_the_flag_of_a_kernel_read_off_the_grid():
    # matmul m=8 is past the table's m=4 edge (flagged); at 2 GFLOP/s 16e6 FLOP take 8 ms, while its 4.064e6 B
    # at a 0.1 GB/s copy (inside that table's grid, not flagged) take 40.64 ms and bind: the result stays flagged
    copy = Table("copy", "", ((1e3, 1e8),), (1e8, 1e8))
    c = cost("ffn_up", flops=16e6, nbytes=4.064e6, launches=1, m=8, n=1000, k=1000)
    got = calibrated_time(c, tables(copy=copy))
    assert got.memory_s == pytest.approx(40.64e-3) and got.compute_s == pytest.approx(8e-3)
    assert got.extrapolated


# --------------------------------------------------------------------------- predict, combine


HW = {"name": "hand", "kind": "cpu", "memory_gb": 16, "memory_bandwidth_gb_s": 100,
      "peak_tflops": {"fp32": 1}, "launch_overhead_us": 0}
MEASURED = {"device_name": "hand-made", "torch_version": "0", "threads": 1, "date": "2026-11-23",
            "overhead_us": {"eager": 10},
            "tables": {"matmul.fp32": {"unit": "GFLOP/s", "m": [1, 4], "n": [1000], "k": [1000],
                                       "values": [[[1]], [[2]]]}}}


def hw(measured=MEASURED):
    return hardware_from_mapping(HW | ({"measured": measured} if measured else {}), "test")


def test_predict_reports_the_tables_used_and_combine_sums_both_times():
    mm = cost("ffn_up", flops=2e6, nbytes=4.008e6, launches=1, m=1, n=1000, k=1000)
    act = cost("norm", nbytes=1e6, launches=1)  # MEASURED has no layernorm table
    p, q = predict(mm, hw()), predict(act, hw())
    # matmul: 2 ms + 10 us calibrated; roofline max(2e6 / 1e12, 4.008e6 / 1e11) = 40.08 us
    assert (p.prediction, p.tables, p.extrapolated) == ("calibrated", ("matmul.fp32",), False)
    assert p.time_s == pytest.approx(2.01e-3) and p.roofline_time_s == pytest.approx(40.08e-6)
    # the norm has no table: roofline 1e6 / 1e11 = 10 us for both
    assert (q.prediction, q.time_s, q.roofline_time_s) == ("roofline", pytest.approx(10e-6), pytest.approx(10e-6))
    g = combine([p, q], "ffn", launches=2, scale=[2.0, 1.0])
    assert g.time_s == pytest.approx(2 * 2.01e-3 + 10e-6)
    assert g.roofline_time_s == pytest.approx(2 * 40.08e-6 + 10e-6)
    assert (g.prediction, g.tables, g.extrapolated) == ("mixed", ("matmul.fp32",), False)
    assert combine([p, p], "two", launches=2).prediction == "calibrated"
    assert combine([q, q], "two", launches=2).prediction == "roofline"
    out = predict(cost("ffn_up", flops=8e6 * 4, nbytes=1e6, launches=1, m=16, n=1000, k=1000), hw())
    assert out.extrapolated and combine([q, out], "g", launches=2).extrapolated


# --------------------------------------------------------------------------- the decode sum, sampled


def test_sum_sampled_is_exact_term_by_term_up_to_256_terms():
    assert _sum_sampled(lambda x: x * x, 1, 256) == 256 * 257 * 513 / 6  # sum of squares, n = 256
    assert _sum_sampled(lambda x: 1.0, 5, 4) == 0.0  # empty range
    assert _sum_sampled(lambda x: 1.0, 7, 7) == 1.0


def test_sum_sampled_is_exact_for_lines_and_close_for_curves_beyond():
    # linear f: trapezoid + (f(lo) + f(hi)) / 2 is exact: sum of x for x = 0..9999 = 9999 x 10000 / 2
    assert _sum_sampled(lambda x: float(x), 0, 9999) == pytest.approx(49_995_000, rel=1e-12)
    assert _sum_sampled(lambda x: 3.0, 10, 10009) == pytest.approx(30_000, rel=1e-12)
    # x^2 over 1..10000: n(n+1)(2n+1)/6 = 333,383,335,000; trapezoid over 64 segments overshoots by
    # (segment^2 / 12) x (range) ~ (156^2 / 12) x 2 x 1e4 ~ 4e7, about 1e-4 relative
    got = _sum_sampled(lambda x: float(x * x), 1, 10000)
    assert got == pytest.approx(333_383_335_000, rel=2e-4) and got != pytest.approx(333_383_335_000, rel=1e-9)


def test_sum_sampled_puts_a_node_on_each_kink():
    # f = min(x, 3001) over 0..9999: sum 0..3001 of x plus 6998 x 3001 = 4,504,501 + 21,000,998
    # (3001 is not one of the 64 segment ends, which fall at 2968 and 3125 around it)
    f = lambda x: float(min(x, 3001))  # noqa: E731
    assert _sum_sampled(f, 0, 9999, kinks=(3001,)) == pytest.approx(25_505_499, rel=1e-12)
    assert _sum_sampled(f, 0, 9999) != pytest.approx(25_505_499, rel=1e-6)  # without the node it is off
    assert _sum_sampled(f, 0, 9999, kinks=(20000, -5)) == _sum_sampled(f, 0, 9999)  # kinks outside are ignored


LONG = {"name": "long", "n_layer": 2, "d_model": 256, "n_head": 8, "n_kv_head": 2, "d_ff": 512,
        "ffn": "swiglu", "vocab_size": 1000, "max_seq_len": 4096, "norm": "rmsnorm"}
BMM = {"bmm.fp32": {"unit": "GFLOP/s", "batch": [1, 8], "m": [1, 4], "n": [64, 512, 4096], "k": [32],
                    "values": [[[[0.5], [1.5], [3]], [[1], [3], [6]]], [[[1], [2], [4]], [[2], [5], [9]]]]},
       "softmax.fp32": {"unit": "GB/s", "bytes": [1e3, 1e6, 1e8], "values": [1, 10, 30]}}


@pytest.mark.parametrize("gen_len,window", [(10, None), (3000, None), (10, 120), (3000, 1000)])
def test_roofline_only_figures_of_a_calibrated_profile_are_the_plain_rooflines(gen_len, window):
    """roofline_only must reach every branch of the decode sum (step by step, closed form, past
    a sliding window): the calibrated profile's roofline figures equal a profile without tables."""
    model = model_from_mapping(LONG | ({"sliding_window": window} if window else {}), "test")
    cal = hw(MEASURED | {"tables": MEASURED["tables"] | BMM})
    sc = Scenario(prompt_len=100, gen_len=gen_len, dtypes=Dtypes.of("fp32"))
    plain = latencies(model, hw(None), sc, 4)
    assert latencies(model, cal, sc, 4, roofline_only=True) == pytest.approx(plain, rel=1e-12)
    best = latencies(model, cal, sc, 4)
    assert best[2] > plain[2] * 1.5  # the tables (GFLOP/s where the roofline has TFLOP/s) are much slower


def test_calibrated_decode_sum_caps_at_the_sliding_window():
    # past the window every step reads `window` keys: a generation twice as far past it adds
    # exactly as many equal steps. e2e(gen 2001) - e2e(gen 1001) = 1000 steps at the window's time.
    model = model_from_mapping(LONG | {"sliding_window": 200}, "test")
    cal = hw(MEASURED | {"tables": MEASURED["tables"] | BMM})
    a = latencies(model, cal, Scenario(prompt_len=300, gen_len=1001, dtypes=Dtypes.of("fp32")), 2)
    b = latencies(model, cal, Scenario(prompt_len=300, gen_len=2001, dtypes=Dtypes.of("fp32")), 2)
    assert b[2] - a[2] == pytest.approx(1000 * a[1], rel=1e-9)  # ITL: one step, also at the window
    assert not math.isnan(a[2])


def test_calibrated_decode_sum_across_the_window_puts_a_node_on_it():
    # 2999 steps from 100 cached tokens over a window of 1000: the step time grows until the window, then stays
    # flat. The sampled sum with a node where it flattens is 1.2e-5 off the step-by-step sum (the tables'
    # curvature alone); without that node the trapezoid cuts the corner and is 7.1e-5 off
    from gpt_batchprof.analytic.gpt import attention_ops
    from gpt_batchprof.analytic.roofline import step_time
    from gpt_batchprof.analytic.serving import decode_attention_time

    model = model_from_mapping(LONG | {"sliding_window": 1000}, "test")
    cal = hw(MEASURED | {"tables": MEASURED["tables"] | BMM})
    sc = Scenario(prompt_len=100, gen_len=3000, dtypes=Dtypes.of("fp32"))
    walked = sum(step_time(attention_ops(model, "decode", 4, 1, kv, sc.dtypes, sc.attention), cal, "eager")
                 for kv in range(100, 100 + 2999))
    assert decode_attention_time(model, cal, sc, 4, "eager") == pytest.approx(walked, rel=3e-5)


def test_serving_report_of_a_calibrated_profile_keeps_the_roofline_for_every_batch(tiny_model):
    sc = Scenario(prompt_len=8, gen_len=4, dtypes=Dtypes.of("fp32"))
    plain = serving_report(tiny_model, hw(None), sc, (1, 2, 4)).points
    cal = serving_report(tiny_model, hw(), sc, (1, 2, 4)).points
    for p, c in zip(plain, cal):
        assert (c.roofline_ttft_s, c.roofline_itl_s, c.roofline_e2e_s) == pytest.approx((p.ttft_s, p.itl_s, p.e2e_s))
        # tokens/s of the roofline: batch x gen_len / its e2e
        assert c.roofline_tokens_per_s == pytest.approx(c.batch * 4 / p.e2e_s)
        assert p.roofline_tokens_per_s == p.tokens_per_s  # no tables: the roofline is the prediction


def test_a_calibrated_time_below_the_roofline_names_each_ceiling_it_passes():
    """Softmax over 2 launches of 1 MB each: the table's 10 GB/s at 1 MB gives 2 x 100 us of work plus the
    measured 2 x 10 us overhead, 220 us. The profile claims 5 GB/s and 50 us per launch: its roofline is
    2 MB / 5 GB/s + 2 x 50 us = 500 us. Both ceilings are passed, each named, overhead per kernel."""
    from gpt_batchprof.analytic.roofline import below_roofline_causes

    slow = hardware_from_mapping(HW | {"memory_bandwidth_gb_s": 5, "launch_overhead_us": 50,
                                       "measured": MEASURED | {"tables": MEASURED["tables"] | BMM}}, "test")
    p = predict(cost("attn_softmax", nbytes=2e6, launches=2), slow)
    assert (p.time_s, p.roofline_time_s) == (pytest.approx(220e-6), pytest.approx(500e-6))
    assert p.below_roofline == ("softmax.fp32 implies 10 GB/s, above the profile's 5 GB/s (inputs held in cache?); "
                                "measured overhead 10 us per kernel, below the profile's 50 us")
    assert below_roofline_causes([p, p]) == ["softmax.fp32 implies 10 GB/s, above the profile's 5 GB/s (inputs "
                                             "held in cache?)", "measured overhead 10 us per kernel, below the "
                                             "profile's 50 us"]
    # a profile whose ceilings the table does not pass: 20 GB/s and 10 us, roofline 2 MB / 20 GB/s + 20 us
    # = 120 us, under the calibrated 220 us: no flag
    fast = hardware_from_mapping(HW | {"memory_bandwidth_gb_s": 20, "launch_overhead_us": 10,
                                       "measured": MEASURED | {"tables": MEASURED["tables"] | BMM}}, "test")
    assert predict(cost("attn_softmax", nbytes=2e6, launches=2), fast).below_roofline == ""
    # one launch: 100 us of work + 10 us against 1 MB / 5 GB/s + 50 us = 250 us; the overhead is per kernel still
    one = predict(cost("attn_softmax", nbytes=1e6, launches=1), slow)
    assert (one.time_s, one.roofline_time_s) == (pytest.approx(110e-6), pytest.approx(250e-6))
    assert one.below_roofline.endswith("; measured overhead 10 us per kernel, below the profile's 50 us")


def test_a_calibrated_matmul_faster_than_the_profiles_peak_names_the_table_and_both_rates():
    """A 1 x 1000 x 1000 fp32 matmul read at the table's 1 GFLOP/s: 2e6 FLOP in 2 ms, plus the measured 10 us.
    A profile claiming a 0.8 GFLOP/s peak (and 100 GB/s, no launch cost) has a roofline of 2e6 / 0.8e9 = 2.5 ms:
    the table beats the peak, by FLOPs alone (its 4.008 MB in 2 ms is 2 GB/s, far under 100 GB/s)."""
    low_peak = hardware_from_mapping(HW | {"peak_tflops": {"fp32": 0.0008}, "measured": MEASURED}, "test")
    p = predict(cost("ffn_up", flops=2e6, nbytes=4.008e6, m=1, n=1000, k=1000), low_peak)
    assert (p.time_s, p.roofline_time_s) == (pytest.approx(2.01e-3), pytest.approx(2.5e-3))
    assert p.below_roofline == "matmul.fp32 achieves 0.001 TFLOP/s, above the profile's peak 0.0008"
