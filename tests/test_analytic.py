"""The analytic model against numbers worked out by hand or published."""

import pytest

from gpt_batchprof.analytic import Dtypes, Scenario, enumerate_ops, predict
from gpt_batchprof.analytic.gpt import expected_experts_touched
from gpt_batchprof.analytic.ops import causal_pairs
from gpt_batchprof.analytic.serving import critical_batch, latencies, max_batch, memory_use, serving_report
from gpt_batchprof.errors import BatchprofError
from gpt_batchprof.profiles import hardware_from_mapping, load_hardware, load_model, model_from_mapping

GiB = 2**30


def by_op(ops):
    return {o.op: o for o in ops}


def test_kv_cache_of_gpt3_6_7b_is_8_gib_for_8_sequences_of_2048_tokens():
    # Seed 000: 32 layers x 2 (K and V) x 4096 x 2 bytes = 512 KiB per token; x 8 x 2048 = 8 GiB.
    m = load_model("gpt3-6.7b")
    assert m.kv_bytes_per_token("fp16") == 512 * 1024
    # prompt 1024 + 1025 generated - 1 (the last token is never fed back) = 2048 positions cached
    mem = memory_use(m, Scenario(prompt_len=1024, gen_len=1025), batch=8)
    assert mem.kv_cache_bytes == 8 * GiB


def test_kv_cache_shrinks_with_gqa_and_with_its_dtype():
    # llama-2-70b: 80 layers x 2 x 8 KV heads x 128 x 2 B = 327,680 B per token (vs 2.6 MB with 64 KV heads)
    m = load_model("llama-2-70b")
    assert m.kv_bytes_per_token("fp16") == 327_680
    assert m.kv_bytes_per_token("fp8") == 163_840


@pytest.mark.parametrize(
    "name, published, rel",
    [
        ("gpt2", 124_439_808, 0),  # Hugging Face gpt2: 124,439,808 parameters exactly
        ("llama-2-7b", 6.74e9, 0.005),  # Llama 2 paper / HF: 6,738,415,616
        ("llama-2-13b", 13.0e9, 0.01),
        ("llama-2-70b", 6.90e10, 0.005),  # 68,976,648,192
        ("llama-3-8b", 8.03e9, 0.005),
        ("llama-3-70b", 70.6e9, 0.005),
        ("mistral-7b", 7.24e9, 0.005),
        ("mixtral-8x7b", 46.7e9, 0.005),
        ("gpt3-175b", 175e9, 0.01),
        ("gpt3-13b", 13.0e9, 0.02),
        ("gpt3-6.7b", 6.7e9, 0.01),
        ("opt-6.7b", 6.7e9, 0.01),
        ("opt-13b", 13.0e9, 0.02),
        ("opt-66b", 66e9, 0.01),
    ],
)
def test_parameter_counts_match_published_sizes(name, published, rel):
    n = load_model(name).n_params
    if rel == 0:
        assert n == published
    else:
        assert abs(n - published) / published <= rel, f"{name}: {n:,} vs {published:,.0f}"


def test_llama_2_7b_parameter_count_exact():
    # 32 x (4 x 4096^2 + 3 x 4096 x 11008 + 2 x 4096) + 2 x 32000 x 4096 + 4096 = 6,738,415,616
    assert load_model("llama-2-7b").n_params == 6_738_415_616


def test_decode_flops_per_token_are_two_per_weight_plus_attention_over_the_context():
    m = load_model("gpt3-6.7b")
    ops = enumerate_ops(m, "decode", batch=1, kv_len=1023)  # attends to 1024 keys
    total = sum(o.flops for o in ops)
    # Worked by hand: dense 2 x 12 x 32 x 4096^2 = 12,884,901,888;
    # attention QK^T and x V: 2 x 2 x 32 layers x 4096 x 1024 keys = 536,870,912;
    # LM head: 2 x 4096 x 50257 = 411,705,344.
    assert total == 12_884_901_888 + 536_870_912 + 411_705_344
    # ... i.e. about 2 x non-embedding parameters plus attention over the context.
    approx = 2 * m.n_params_non_embedding + 4 * m.n_layer * m.d_model * 1024
    assert total == pytest.approx(approx, rel=0.04)


def test_prefill_attention_flops_grow_with_the_square_of_the_sequence():
    m = load_model("gpt3-6.7b")
    a1 = by_op(enumerate_ops(m, "prefill", 1, new_tokens=1024))["attn_score"].flops
    a2 = by_op(enumerate_ops(m, "prefill", 1, new_tokens=2048))["attn_score"].flops
    d1 = by_op(enumerate_ops(m, "prefill", 1, new_tokens=1024))["qkv_proj"].flops
    d2 = by_op(enumerate_ops(m, "prefill", 1, new_tokens=2048))["qkv_proj"].flops
    assert a2 == 4 * a1 and d2 == 2 * d1


def test_matmul_bytes_hand_worked_gpt2_qkv_decode():
    m = load_model("gpt2")
    qkv = by_op(enumerate_ops(m, "decode", batch=4, kv_len=99))["qkv_proj"]
    # per layer: weights 768 x 2304 x 2 B = 3,538,944; in 4 x 768 x 2 = 6,144; out 4 x 2304 x 2 = 18,432
    assert qkv.bytes == 12 * (3_538_944 + 6_144 + 18_432)
    assert qkv.flops == 12 * 2 * 4 * 768 * 2304
    assert qkv.weight_bytes == 12 * 3_538_944


def test_gqa_reads_fewer_kv_bytes_in_decode(tiny_model):
    mha = model_from_mapping(
        {"name": "tiny-mha", "n_layer": 2, "d_model": 256, "n_head": 8, "d_ff": 512, "ffn": "swiglu",
         "vocab_size": 1000, "max_seq_len": 512}, "test")
    gqa = by_op(enumerate_ops(tiny_model, "decode", 1, kv_len=99, attention="fused"))["attn_fused"]
    full = by_op(enumerate_ops(mha, "decode", 1, kv_len=99, attention="fused"))["attn_fused"]
    # per layer: Q and O 2 x 8 x 32 x 2 B = 1,024; K and V 2 x kv_heads x 100 x 32 x 2 B
    assert gqa.bytes == 2 * (1_024 + 2 * 2 * 100 * 32 * 2)
    assert full.bytes == 2 * (1_024 + 2 * 8 * 100 * 32 * 2)
    assert gqa.flops == full.flops == 2 * 4 * 8 * 32 * 100


def test_causal_pairs_and_fused_prefill_counts_only_visible_pairs(tiny_model):
    assert causal_pairs(4, 4) == 10  # 1 + 2 + 3 + 4
    assert causal_pairs(1, 100) == 100  # decode: one query sees every key
    assert causal_pairs(2, 6) == 5 + 6  # chunked prefill: 4 cached, then 2 new
    fused = by_op(enumerate_ops(tiny_model, "prefill", 1, new_tokens=4, attention="fused"))["attn_fused"]
    unfused = by_op(enumerate_ops(tiny_model, "prefill", 1, new_tokens=4, attention="unfused"))
    assert fused.flops == 2 * 4 * 32 * 8 * 10
    assert unfused["attn_score"].flops == unfused["attn_context"].flops == 2 * 2 * 32 * 8 * 16


def test_operator_names_per_model_kind():
    gpt2 = [o.op for o in enumerate_ops(load_model("gpt2"), "decode", 1, kv_len=10)]
    assert gpt2 == ["norm", "qkv_proj", "attn_score", "attn_softmax", "attn_context", "out_proj",
                    "ffn_up", "ffn_down", "lm_head"]
    mixtral = [o.op for o in enumerate_ops(load_model("mixtral-8x7b"), "prefill", 1, new_tokens=8, attention="fused")]
    assert mixtral == ["norm", "qkv_proj", "attn_fused", "out_proj", "moe_router", "ffn_gate", "ffn_up",
                       "ffn_down", "lm_head"]


def test_moe_decode_reads_only_the_experts_a_batch_touches():
    assert expected_experts_touched(8, 2, 1) == 2.0
    assert expected_experts_touched(8, 2, 2) == pytest.approx(3.5)  # 8 x (1 - 0.75^2)
    m = load_model("mixtral-8x7b")
    one = by_op(enumerate_ops(m, "decode", 1, kv_len=10))["ffn_up"]
    many = by_op(enumerate_ops(m, "decode", 256, kv_len=10))["ffn_up"]
    per_expert = 4096 * 14336 * 2
    assert one.weight_bytes == 32 * 2 * per_expert
    assert many.weight_bytes == pytest.approx(32 * 8 * per_expert, rel=1e-6)


def test_roofline_time_and_bound_hand_worked(seed002_hw):
    m = load_model("gpt2")
    qkv = by_op(enumerate_ops(m, "decode", batch=1, kv_len=99))["qkv_proj"]
    p = predict(qkv, seed002_hw)
    # bytes 12 x (3,538,944 + 1,536 + 4,608) = 42,541,056 at 300 GB/s = 141.8 us; FLOPs 42.5 M at 65 T = 0.65 us
    assert p.memory_s == pytest.approx(42_541_056 / 300e9)
    assert p.compute_s == pytest.approx(12 * 2 * 768 * 2304 / 65e12)
    assert p.bound == "memory" and p.time_s == p.memory_s


def test_launch_overhead_is_added_per_kernel_and_can_dominate():
    hw = hardware_from_mapping({"name": "x", "kind": "gpu", "memory_gb": 80, "memory_bandwidth_gb_s": 3000,
                                "peak_tflops": {"fp16": 1000}, "launch_overhead_us": 5}, "test")
    norm = by_op(enumerate_ops(load_model("gpt2"), "decode", 1, kv_len=10))["norm"]
    p = predict(norm, hw)
    assert norm.launches == 25  # 2 per layer + the final norm
    assert p.overhead_s == pytest.approx(25 * 5e-6)
    assert p.bound == "overhead"


def test_critical_batch_near_the_magic_ratio_216(seed002_hw):
    # Seed 002: 65e12 / 300e9 = 216.7 counting weight bytes only. Counting the activations too,
    # a 12288 x 12288 out_proj of gpt3-175b turns compute-bound at
    # b >= 1 / (300e9/65e12 - 1/12288 - 1/12288) = 224.6, the last of its dense layers -> 225.
    cb = critical_batch(load_model("gpt3-175b"), seed002_hw, Scenario(prompt_len=512, gen_len=128))
    assert cb == 225


def test_decode_dense_is_memory_bound_and_prefill_dense_compute_bound_on_a100():
    m, hw = load_model("llama-2-7b"), load_hardware("a100-80gb")
    dec = by_op(enumerate_ops(m, "decode", 1, kv_len=512))
    pre = by_op(enumerate_ops(m, "prefill", 1, new_tokens=2048))
    assert predict(dec["ffn_up"], hw).bound == "memory"
    assert predict(pre["ffn_up"], hw).bound == "compute"
    # attention's intensity does not grow with batch in decode (each sequence has its own K/V)
    i1 = by_op(enumerate_ops(m, "decode", 1, kv_len=512))["attn_score"].intensity
    i64 = by_op(enumerate_ops(m, "decode", 64, kv_len=512))["attn_score"].intensity
    assert i64 == pytest.approx(i1)


def test_batching_decode_is_nearly_free_below_the_critical_batch():
    m, hw = load_model("llama-2-7b"), load_hardware("a100-80gb")
    sc = Scenario(prompt_len=128, gen_len=128, dtypes=Dtypes(), attention="fused")
    r = serving_report(m, hw, sc, (1, 2, 4, 64))
    p = {x.batch: x for x in r.points}
    assert p[2].speedup > 1.9 and p[2].latency_growth < 1.05
    assert p[4].speedup > 3.5 and p[4].latency_growth < 1.15
    assert p[64].itl_s < 2 * p[1].itl_s


def test_e2e_is_ttft_plus_decode_steps_each_at_its_own_context(tiny_model, seed002_hw):
    sc = Scenario(prompt_len=10, gen_len=3, attention="fused")
    ttft, itl, e2e = latencies(tiny_model, seed002_hw, sc, 2)
    steps = [sum(predict(o, seed002_hw).time_s for o in enumerate_ops(tiny_model, "decode", 2, kv_len=kv,
                                                                      attention="fused")) for kv in (10, 11)]
    assert e2e == pytest.approx(ttft + steps[0] + steps[1])
    # ITL at the mean cache length of the two decode steps, rounded down: 10 + 3 // 2 - 1 = 10
    assert itl == pytest.approx(steps[0])


def test_max_batch_and_fits():
    m = load_model("llama-2-7b")
    hw = hardware_from_mapping({"name": "x", "kind": "gpu", "memory_gb": 40, "memory_bandwidth_gb_s": 1000,
                                "peak_tflops": {"fp16": 100}}, "test")
    sc = Scenario(prompt_len=1024, gen_len=1024, attention="fused")
    mb = max_batch(m, hw, sc)
    # weights 13.48 GB; per sequence 2048 x 524,288 B KV = 1.07 GB plus activations: (40 - 13.48) / 1.1 ~ 23
    assert 20 <= mb <= 25
    assert memory_use(m, sc, mb).total_bytes <= 40e9 < memory_use(m, sc, mb + 1).total_bytes


def test_quantised_weights_keep_embeddings_and_norms_and_int4_carries_group_scales():
    # llama-2-7b: per layer 4 x 4096^2 (attention) + 3 x 4096 x 11008 (FFN) = 202,375,168 matrix weights,
    # x 32 = 6,476,005,376; the other 262,410,240 are embeddings and LM head (2 x 32000 x 4096) and norms
    # (65 x 4096), kept in fp16 (2 B) by quantised checkpoints: 524,820,480 B.
    m = load_model("llama-2-7b")
    w8 = memory_use(m, Scenario(dtypes=Dtypes.of("fp16", weight="int8")), 1).weights_bytes
    w4 = memory_use(m, Scenario(dtypes=Dtypes.of("fp16", weight="int4")), 1).weights_bytes
    w16 = memory_use(m, Scenario(dtypes=Dtypes.of("fp16")), 1).weights_bytes
    assert w16 == 2 * 6_738_415_616
    assert w8 == 6_476_005_376 + 524_820_480
    # int4 with an fp16 scale per group of 128: 4 + 16/128 = 4.125 bits: 6,476,005,376 x 4.125 / 8 = 3,339,190,272
    assert w4 == 3_339_190_272 + 524_820_480


def test_bad_shapes_and_dtypes_raise_domain_errors(tiny_model):
    with pytest.raises(BatchprofError, match="unknown activation dtype 'fp4'"):
        Dtypes.of("fp4")
    with pytest.raises(BatchprofError, match="impossible shape"):
        enumerate_ops(tiny_model, "prefill", 0, new_tokens=10)
    with pytest.raises(BatchprofError, match="max_seq_len"):
        serving_report(tiny_model, load_hardware("a100-80gb"), Scenario(prompt_len=500, gen_len=100), (1,))


def test_analytic_import_does_not_pull_torch_yaml_rich_or_typer():
    import subprocess
    import sys

    code = ("import sys, gpt_batchprof.analytic; "
            "print([m for m in ('torch', 'yaml', 'rich', 'typer') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
