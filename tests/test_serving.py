"""Serving figures (analytic/serving.py): sums over decode steps, activation memory, scenarios,
the critical batch and the serving report, each worked by hand.
"""

from dataclasses import replace

import pytest

from gpt_batchprof.analytic import Dtypes, Parallelism, Scenario, max_batch, memory_use, serving_report
from gpt_batchprof.analytic.gpt import attention_ops
from gpt_batchprof.analytic.roofline import step_time
from gpt_batchprof.analytic.serving import (
    _sum_linear, _sum_roofline, critical_batch, decode_attention_time, step_activation_bytes,
)
from gpt_batchprof.errors import BatchprofError
from gpt_batchprof.profiles import hardware_from_mapping, load_model, model_from_mapping


# --------------------------------------------------------------------------- sums of decode steps


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


# --------------------------------------------------------------------------- memory


def test_activation_memory_counts_the_fp32_logits():
    # gpt2 (d 768, 12 heads, d_ff 3072, vocab 50,257), fp16, unfused, batch 2, prompt 8, 2 tokens generated.
    # Prefill of 2 x 8 = 16 tokens: residual + normed copy 2 x 16 x 768 = 24,576 elements, plus the widest
    # of FFN inner 16 x 3072 = 49,152, QKV 16 x 2304 = 36,864, scores 2 x 2 x 12 x 8 x 8 = 3,072:
    # (24,576 + 49,152) x 2 B = 147,456 B; plus fp32 logits of the last position: 2 x 50,257 x 4 = 402,056 B.
    # 147,456 + 402,056 = 549,512 B (the decode step is smaller: (2 x 2 x 768 + 2 x 3072) x 2 + 402,056).
    mem = memory_use(load_model("gpt2"), Scenario(prompt_len=8, gen_len=2, dtypes=Dtypes.of("fp16")), 2)
    assert mem.activation_bytes == 549_512


def _gelu_model():
    return model_from_mapping(
        {"name": "g", "n_layer": 1, "d_model": 64, "n_head": 4, "n_kv_head": 4, "d_ff": 32, "ffn": "gelu",
         "vocab_size": 10, "max_seq_len": 512, "norm": "layernorm"}, "test")


def test_step_activation_bytes_takes_the_widest_tensor(small_moe):
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
    assert step_activation_bytes(small_moe(), d16, "unfused", 1, 1, 1) == 232


# --------------------------------------------------------------------------- scenarios and the serving report


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


def test_critical_batch_is_one_when_batch_one_is_already_compute_bound(tiny_model, toy_gpu):
    # 1 TFLOP/s against 1,000,000 GB/s: the ridge is 0.001 FLOP/B, below any matmul's intensity at batch 1
    hw = toy_gpu(memory_bandwidth_gb_s=1_000_000)
    assert critical_batch(tiny_model, hw, Scenario(prompt_len=8, gen_len=2, launch="eager")) == 1


def _overhead_hw(**extra):
    # roofs so high that a kernel's time is its launch: 1e18 FLOP/s and 1e18 B/s; 2 s per eager launch,
    # 1 s per kernel inside a CUDA graph; 3.60 USD an hour
    m = {"name": "slow-launch", "kind": "gpu", "memory_gb": 1, "memory_bandwidth_gb_s": 1e9,
         "peak_tflops": {"fp16": 1e6}, "launch_overhead_us": 2e6, "graph_launch_overhead_us": 1e6,
         "price_per_hour_usd": 3.6}
    return hardware_from_mapping(m | extra, "test")


@pytest.fixture
def fast_tables(measured_section):
    """bmm and softmax tables fast enough to vanish on the launch-bound device; 0.5 s per eager launch,
    0.25 s in a graph."""
    return measured_section({"bmm.fp16": {"unit": "GFLOP/s", "batch": [1], "m": [1], "n": [1], "k": [1],
                                          "values": [[[[1e9]]]]},
                             "softmax.fp16": {"unit": "GB/s", "bytes": [1], "values": [1e9]}},
                            overhead_us={"eager": 0.5e6, "graphs": 0.25e6})


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


def test_serving_report_over_two_gpus_prices_the_layout_at_every_batch(tiny_model, fast_tables):
    """The launch-bound device above with a 1 s-per-hop link, tiny over TP 2: each GPU runs the 22 kernels of a
    step (1 s each in a graph) and 5 all-reduces (2 per layer and 1 after the vocabulary-split embedding),
    each 2 ring hops of 1 s (the bytes take ~1e-15 s): 22 + 10 = 32 s per step, batch 1 as any other.
    gen_len 3: e2e 96 s, tokens/s 3 x b / 96 = b / 32; 2 GPUs x 3.6 USD/h: 2 x 1e-3 USD/s / (b / 32) x 1e6 =
    64,000 / b USD per million tokens. Memory and the critical batch are those of the layout too."""
    hw = _overhead_hw(interconnect={"name": "slow", "bandwidth_gb_s": 1e9, "latency_us": 1e6})
    sc, tp2 = Scenario(prompt_len=4, gen_len=3), Parallelism(tp=2)
    rep = serving_report(tiny_model, hw, sc, (1, 2), tp2)
    for p, b in zip(rep.points, (1, 2)):
        assert (p.ttft_s, p.itl_s, p.e2e_s) == pytest.approx((32.0, 32.0, 96.0), rel=1e-9)
        assert p.cost_per_million_tokens_usd == pytest.approx(64_000 / b, rel=1e-9)
    assert rep.max_batch == max_batch(tiny_model, hw, sc, tp2) != max_batch(tiny_model, hw, sc)
    assert rep.critical_batch == critical_batch(tiny_model, hw, sc, tp2)
    # with measured tables the best figures are calibrated, and the roofline beside them is still the layout's
    cal = _overhead_hw(interconnect={"name": "slow", "bandwidth_gb_s": 1e9, "latency_us": 1e6},
                       measured=fast_tables)
    p = serving_report(tiny_model, cal, sc, (1,), tp2).points[0]
    assert (p.roofline_ttft_s, p.roofline_itl_s, p.roofline_e2e_s) == pytest.approx((32.0, 32.0, 96.0), rel=1e-9)
    assert p.itl_s < 32.0


def test_max_batch_is_what_fits_on_the_fullest_gpu_times_the_expert_groups(small_moe):
    """Checked against the memory each batch takes: the largest batch fits and the next one that adds a
    sequence to every group does not; with ep 2 each group holds its own sequences, so the batch is even.
    Memory that holds the weights and less than one sequence fits no batch."""
    model, sc = small_moe(), Scenario(prompt_len=64, gen_len=64)
    one = memory_use(model, sc, 1)
    per_sequence = one.kv_cache_bytes + one.activation_bytes

    def gpu(memory_bytes):
        return hardware_from_mapping({"name": "m", "kind": "gpu", "memory_gb": memory_bytes / 1e9,
                                      "memory_bandwidth_gb_s": 1, "peak_tflops": {"fp16": 1}}, "test")

    for par in (Parallelism(), Parallelism(ep=2)):
        w = memory_use(model, sc, 1, par).weights_bytes
        for sequences in (3, 40):  # memory for the weights and 3.5 or 40.5 sequences of one GPU
            hw = gpu(w + (sequences + 0.5) * per_sequence)
            mb = max_batch(model, hw, sc, par)
            assert mb == sequences * par.ep
            assert memory_use(model, sc, mb, par).total_bytes <= hw.memory_bytes
            assert memory_use(model, sc, mb + par.ep, par).total_bytes > hw.memory_bytes
        assert max_batch(model, gpu(w + per_sequence / 2), sc, par) == 0
        assert max_batch(model, gpu(w), sc, par) == 0  # the weights alone fill it


def test_a_stacks_decode_attention_is_priced_at_the_launch_mode_and_pricing_asked_for(fast_tables):
    """tiny as a stack, one layer with a 4-token window and one full, on the launch-bound device: 2 decode steps
    (gen_len 3) x 2 layers x 3 kernels (scores, softmax, context) = 12 launches: 24 s eager, 12 s in a graph.
    With measured tables (bmm and softmax fast enough to vanish, 0.5 s per eager launch, 0.25 s in a graph)
    the calibrated sum is 6 s and 3 s, the roofline's stays 24 s and 12 s."""
    stack = model_from_mapping({"name": "tiny", "n_layer": 2, "d_model": 256, "n_head": 8, "n_kv_head": 2,
                                "d_ff": 512, "ffn": "swiglu", "vocab_size": 1000, "max_seq_len": 512,
                                "norm": "rmsnorm", "layers": [{"count": 1, "sliding_window": 4}, {"count": 1}]},
                               "test")
    sc = Scenario(prompt_len=4, gen_len=3)
    assert decode_attention_time(stack, _overhead_hw(), sc, 1, "eager") == pytest.approx(24.0)
    assert decode_attention_time(stack, _overhead_hw(), sc, 1, "graphs") == pytest.approx(12.0)
    cal = _overhead_hw(measured=fast_tables)
    assert decode_attention_time(stack, cal, sc, 1, "eager") == pytest.approx(6.0)
    assert decode_attention_time(stack, cal, sc, 1, "graphs") == pytest.approx(3.0)
    assert decode_attention_time(stack, cal, sc, 1, "eager", roofline_only=True) == pytest.approx(24.0)
    assert decode_attention_time(stack, cal, sc, 1, "graphs", roofline_only=True) == pytest.approx(12.0)
