"""Operator costs (analytic/ops.py, gpt.py, mlp.py): the FLOPs, bytes, launches and shapes of
every row, each worked by hand in the comment next to it. (Most were written from mutmut runs:
docs/mutation.md.)
"""

from dataclasses import replace

import pytest

from gpt_batchprof.analytic import Dtypes, enumerate_ops
from gpt_batchprof.analytic.mlp import mlp_cost
from gpt_batchprof.analytic.ops import OpShape, causal_pairs, matmul_cost, op_group
from gpt_batchprof.errors import BatchprofError
from gpt_batchprof.profiles import WEIGHT_DTYPES


# --------------------------------------------------------------------------- enumerate_ops: every row of a step


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


def test_moe_with_a_shared_expert_and_layernorm_rows(small_moe):
    ops = {o.op: o for o in enumerate_ops(small_moe(), "decode", 1, kv_len=0)}
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
    rms = {o.op: o for o in enumerate_ops(small_moe("rmsnorm"), "decode", 1)}
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


# --------------------------------------------------------------------------- mlp_cost, groups and dtypes


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


def test_an_unknown_group_or_dtype_and_the_smallest_mlp():
    with pytest.raises(KeyError, match="nope"):
        op_group("nope")
    with pytest.raises(BatchprofError) as e:
        Dtypes(weight="fp7")
    assert str(e.value) == f"unknown weight dtype 'fp7' (choose from {', '.join(WEIGHT_DTYPES)})"
    # one layer of 1 x 1 at batch 1 is a valid MLP: 2 FLOPs, 2 B weight + 2 B in + 2 B out
    c = mlp_cost(1, depth=1, width=1)
    assert (c.flops, c.bytes) == (2, 6)
