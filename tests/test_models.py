"""Models as stacks of layer kinds, and the families served today: numbers worked by hand for a
small stack, and parameter counts of full-size models against their published figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gpt_batchprof.analytic import Dtypes, Scenario, enumerate_ops, memory_use, serving_report
from gpt_batchprof.analytic.gpt import attention_ops
from gpt_batchprof.analytic.roofline import step_time
from gpt_batchprof.analytic.serving import decode_attention_time, step_activation_bytes
from gpt_batchprof.errors import BatchprofError, ProfileError
from gpt_batchprof.profiles import hardware_from_mapping, load_model, model_from_hf_config, model_from_mapping

HF = Path(__file__).parent / "data" / "hf"

# 2 layers, d 64, 4 heads of 16 (no GQA), GELU FFN of 128, vocab 100: layer 0 sees a window of 4 keys, layer 1 all.
STACK = {"name": "stack", "n_layer": 2, "d_model": 64, "n_head": 4, "d_ff": 128, "ffn": "gelu", "vocab_size": 100,
         "max_seq_len": 64, "layers": [{"count": 1, "sliding_window": 4}, {"count": 1}]}


def stack(**over):
    return model_from_mapping(STACK | over, "test")


def rows(ops):
    return {(o.op, o.shape.variant): o for o in ops}


def test_sliding_and_full_layers_worked_by_hand():
    # decode, batch 1, fp16, 10 cached tokens. Window layer: keys min(10, 4 - 1) + 1 = 4; full layer: 11.
    # attn_score = 2 x head_dim x heads x keys: 2*16*4*4 = 512 FLOPs (window), 2*16*4*11 = 1408 (full).
    # bytes: queries 4*16*2 = 128 B, K of the keys in view 4*keys*16*2 B, scores 4*keys*2 B:
    #   window 128 + 512 + 32 = 672 B; full 128 + 1408 + 88 = 1624 B.
    ops = rows(enumerate_ops(stack(), "decode", 1, kv_len=10))
    w, f = ops[("attn_score", "window 4")], ops[("attn_score", "full")]
    assert (w.flops, w.bytes, w.launches) == (512, 672, 1)
    assert (f.flops, f.bytes, f.launches) == (1408, 1624, 1)
    # layers that do not differ merge into one row over both: qkv 2 x (2*64*192) = 49152 FLOPs
    qkv = ops[("qkv_proj", "")]
    assert (qkv.flops, qkv.launches) == (49152, 2)
    # norms: 2 per layer + the final one; the LM head once
    assert ops[("norm", "layernorm")].launches == 5
    assert ops[("lm_head", "")].launches == 1
    assert ("ffn_up", "") in ops  # same FFN in both layers: no label
    # attention_ops (what serving sums over the decode steps) gives the same attention rows
    att = rows(attention_ops(stack(), "decode", 1, 1, 10, Dtypes(), "unfused"))
    assert att[("attn_score", "window 4")] == w and att[("attn_score", "full")] == f


def test_the_window_caps_only_its_own_layers_cache():
    # prompt 8 + gen 4 - 1 = 11 positions; K and V of one layer: 2 x 64 x 2 B = 256 B per token.
    # window layer keeps 4 tokens (1024 B), full layer 11 (2816 B): 3840 B per sequence, 7680 B for 2.
    sc = Scenario(prompt_len=8, gen_len=4)
    assert memory_use(stack(), sc, 2).kv_cache_bytes == 7680
    full = model_from_mapping({k: v for k, v in STACK.items() if k != "layers"}, "test")
    assert memory_use(full, sc, 2).kv_cache_bytes == 2 * 2 * 11 * 256


def test_one_kind_of_layer_gives_todays_numbers():
    base = load_model("mixtral-8x7b")
    grouped = model_from_mapping(
        {"name": "m", "n_layer": 32, "d_model": 4096, "n_head": 32, "n_kv_head": 8, "d_ff": 14336, "ffn": "swiglu",
         "vocab_size": 32000, "max_seq_len": 32768, "norm": "rmsnorm", "n_expert": 8, "n_expert_active": 2,
         "layers": [{"count": 20}, {"count": 12}]}, "test")
    assert len(grouped.layer_groups) == 1  # two groups of the same kind merge
    for phase, kv in (("prefill", 0), ("decode", 300)):
        a = enumerate_ops(base, phase, 4, new_tokens=64, kv_len=kv)
        b = enumerate_ops(grouped, phase, 4, new_tokens=64, kv_len=kv)
        assert [(o.op, o.flops, o.bytes, o.launches, o.shape) for o in a] == \
               [(o.op, o.flops, o.bytes, o.launches, o.shape) for o in b]
    assert grouped.n_params == base.n_params
    sc = Scenario(prompt_len=128, gen_len=16)
    assert memory_use(grouped, sc, 3) == memory_use(base, sc, 3)


def test_dense_and_moe_layers_count_their_own_parameters():
    # 1 dense layer (d_ff 128) + 2 MoE layers (4 experts of 32, 2 active), d 64, GELU (2 matrices), layernorm, no bias.
    m = model_from_mapping(STACK | {"n_layer": 3, "d_ff": 32, "n_expert": 4, "n_expert_active": 2,
                                    "layers": [{"count": 1, "n_expert": 1, "d_ff": 128}, {"count": 2}]}, "test")
    attn = 64 * (3 * 64) + 64 * 64  # qkv + out = 16384
    norms = 2 * 128  # two layernorms of (scale, shift)
    dense = attn + 2 * 64 * 128 + norms  # 16384 + 16384 + 256 = 33024
    moe = attn + 4 * 2 * 64 * 32 + 64 * 4 + norms  # 16384 + 16384 + 256 router + 256 = 33280
    emb = 100 * 64
    assert m.n_params == emb + dense + 2 * moe + 128 + emb  # untied head: 6400 + 33024 + 66560 + 128 + 6400
    assert m.n_params == 112512
    assert m.n_params_active == 112512 - 2 * 2 * (2 * 64 * 32)  # 2 idle experts in each MoE layer: 104320
    ops = rows(enumerate_ops(m, "decode", 1, kv_len=5))
    # FFN rows of the two kinds stay apart, labelled: dense 2*64*128 FLOPs; MoE 2 layers x 2 routes x 2*64*32
    assert ops[("ffn_up", "dense 128")].flops == 16384 and ops[("ffn_up", "dense 128")].launches == 1
    assert ops[("ffn_up", "2 of 4 x 32")].flops == 16384 and ops[("ffn_up", "2 of 4 x 32")].launches == 2
    assert ops[("moe_router", "2 of 4 x 32")].launches == 2


def test_decode_sum_of_a_stack_equals_the_step_by_step_sum():
    # 200 decode steps: the closed form per layer kind against every step's attention rows priced one by one
    hw = hardware_from_mapping({"name": "g", "kind": "gpu", "memory_gb": 80, "memory_bandwidth_gb_s": 2000,
                                "peak_tflops": {"fp16": 300}, "launch_overhead_us": 3}, "test")
    m = stack(max_seq_len=512)
    sc = Scenario(prompt_len=8, gen_len=201)
    closed = decode_attention_time(m, hw, sc, 2, "eager")
    walked = sum(step_time(attention_ops(m, "decode", 2, 1, kv, Dtypes(), "unfused"), hw, "eager")
                 for kv in range(8, 8 + 200))
    assert closed == pytest.approx(walked, rel=1e-12)


def test_a_stack_over_several_gpus():
    from gpt_batchprof.analytic import Parallelism
    from gpt_batchprof.analytic.parallel import weight_split

    hw = hardware_from_mapping({"name": "g", "kind": "gpu", "memory_gb": 80, "memory_bandwidth_gb_s": 2000,
                                "peak_tflops": {"fp16": 300}, "interconnect": {"name": "x", "bandwidth_gb_s": 100}},
                               "test")
    # layers that differ only in their attention split like a uniform model: tp 2 halves the heads
    ops = rows(enumerate_ops(stack(), "decode", 1, kv_len=10, parallel=Parallelism(tp=2)))
    # window layer: 2 of the 4 heads x 4 keys x 2 x 16 = 256 FLOPs; full layer: 2 x 11 x 32 = 704
    assert ops[("attn_score", "window 4")].flops == 256 and ops[("attn_score", "full")].flops == 704
    assert ("tp_allreduce", "") in ops
    # each GPU keeps its 2 K/V heads of both kinds: half the single-GPU cache (7680 B for 2 sequences)
    sc = Scenario(prompt_len=8, gen_len=4)
    assert memory_use(stack(), sc, 2, Parallelism(tp=2)).kv_cache_bytes == 7680 / 2
    # on one GPU the per-GPU split counts what the model counts (gpt-oss: sinks and router biases included)
    oss = load_model("gpt-oss-20b")
    assert weight_split(oss, Parallelism(), Dtypes.of("bf16")).total_bytes == oss.weight_bytes("bf16", "bf16")
    serving_report(oss, hw, Scenario(prompt_len=64, gen_len=8), (1, 4), Parallelism(tp=2, ep=2))
    # a stack of dense and MoE layers under tp, and pipeline stages of a stack, used to be refused; they
    # are modelled now (worked by hand in test_layouts.py): each GPU of the mixed stack holds half of
    # each layer kind's FFN, 1 x 128 dense and 4 experts x 32 cut in two
    mixed = model_from_mapping(STACK | {"n_layer": 2, "d_ff": 32, "n_expert": 4, "n_expert_active": 2,
                                        "layers": [{"count": 1, "n_expert": 1, "d_ff": 128}, {"count": 1}]}, "t")
    ffn = {o.label: o for o in enumerate_ops(mixed, "decode", 1, kv_len=3, parallel=Parallelism(tp=2))}
    assert ffn["ffn_up (dense 64)"].shape.n == 64 and ffn["ffn_up (2 of 4 x 16)"].shape.n == 16
    for model, par in ((mixed, Parallelism(tp=2)), (stack(), Parallelism(pp=2))):
        serving_report(model, hw, Scenario(prompt_len=8, gen_len=4), (1,), par)


@pytest.mark.parametrize("layers, msg", [
    ([{"count": 1}], "add up to 1, not n_layer=2"),
    ([{"count": 1, "n_expert": 2, "n_expert_active": 3, "d_ff": 8}, {"count": 1}],
     "layers[0].n_expert_active': 3 is more than n_expert=2"),
    ([{"count": 2, "sliding_windw": 4}], "did you mean 'sliding_window'"),
    ("12 sliding", "must be a list of layer groups"),
    ([{"count": 1, "n_expert": 1}, {"count": 1, "n_expert": 4, "n_expert_active": 2}], "layers[1].d_ff"),
])
def test_malformed_layer_groups_name_the_field(layers, msg):
    with pytest.raises(ProfileError, match=msg.replace("[", r"\[").replace("]", r"\]")):
        model_from_mapping(STACK | {"layers": layers}, "m.yaml")


# Published totals and active parameters. gpt-oss's card counts active weights without the token
# embedding ("3.61B active"), Qwen's and Llama's with it.
PUBLISHED = [
    # name, total, active, active counts the embedding?, tolerance of the active figure
    ("gpt-oss-20b", 20.91e9, 3.61e9, False, 0.01),
    ("gpt-oss-120b", 116.83e9, 5.13e9, False, 0.01),
    ("qwen3-30b-a3b", 30.5e9, 3.3e9, True, 0.02),  # card: "3.3B activated", two digits (we count 3.353B)
    ("qwen3-235b-a22b", 235e9, 22e9, True, 0.01),
    ("phi-3-medium", 14e9, 14e9, True, 0.01),
    ("gemma-3-27b", 27e9, 27e9, True, 0.01),  # the language model (27.4B with its 0.4B vision tower)
    # Llama 4 (Meta's card: "17B (Activated) 109B / 400B (Total)"): the totals include the vision tower (Scout's text
    # alone, 107.77B, is -1.13%), the active figure the embedding and LM head of the text model only (without the
    # token embedding 16.14B, -5.1%; with the vision tower 18.04B). Measured active: Scout 17.173B (+1.02%),
    # Maverick 17.185B (+1.09%): the 1% goal is missed; the card gives two digits (both round to 17B). Kept at 1%,
    # marked as the known miss (strict: it fails the day the counts come within 1%).
    pytest.param("llama-4-scout", 109e9, 17e9, True, 0.01,
                 marks=pytest.mark.xfail(strict=True, reason="active 17.173B is +1.02% of the card's 17B")),
    pytest.param("llama-4-maverick", 400e9, 17e9, True, 0.01,
                 marks=pytest.mark.xfail(strict=True, reason="active 17.185B is +1.09% of the card's 17B")),
]


@pytest.mark.parametrize("name, total, active, with_embedding, tol", PUBLISHED)
def test_builtin_parameter_counts_match_published_figures(name, total, active, with_embedding, tol):
    m = load_model(name)
    assert m.n_params == pytest.approx(total, rel=0.01)
    got = m.n_params_active - (0 if with_embedding else m.embedding_params)
    assert got == pytest.approx(active, rel=tol)


@pytest.mark.parametrize("config, builtin", [
    ("gpt-oss-20b", "gpt-oss-20b"), ("gpt-oss-120b", "gpt-oss-120b"), ("qwen3-30b-a3b", "qwen3-30b-a3b"),
    ("qwen3-235b-a22b", "qwen3-235b-a22b"), ("phi-3-medium-4k", "phi-3-medium"), ("gemma-3-27b", "gemma-3-27b"),
    ("llama-4-scout", "llama-4-scout"), ("llama-4-maverick", "llama-4-maverick"),
])
def test_published_config_json_reads_as_the_builtin_profile(config, builtin):
    hf = load_model(str(HF / f"{config}.json"))
    b = load_model(builtin)
    assert (hf.n_params, hf.n_params_active) == (b.n_params, b.n_params_active)
    assert hf.layer_groups == b.layer_groups
    assert (hf.sliding_window, hf.head_dim, hf.n_kv_head, hf.bias) == (b.sliding_window, b.head_dim, b.n_kv_head, b.bias)


def test_gpt_oss_layer_types_become_two_groups():
    cfg = json.loads((HF / "gpt-oss-20b.json").read_text())
    m = model_from_hf_config(cfg, "c.json", "oss")
    assert [(g.count, g.sliding_window) for g in m.layer_groups] == [(12, 128), (12, None)]
    with pytest.raises(ProfileError, match="layer_types.*'chunked_attention' is not modelled"):
        model_from_hf_config(cfg | {"layer_types": ["chunked_attention"] * 24}, "c.json", "oss")
    with pytest.raises(ProfileError, match="layer_types.*must list the attention of each of the 24 layers"):
        model_from_hf_config(cfg | {"layer_types": ["full_attention"]}, "c.json", "oss")


def test_qwen_moe_dense_layers_are_read_not_refused():
    # mlp_only_layers [0, 1] and decoder_sparse_step 2: MoE on layers 3, 5, 7 (1-based multiples of 2) of 8,
    # minus none listed there; dense (intermediate_size) on 0, 1, 2, 4, 6 -> 5 dense, 3 MoE.
    cfg = json.loads((HF / "qwen3-30b-a3b.json").read_text()) | {
        "num_hidden_layers": 8, "mlp_only_layers": [0, 1], "decoder_sparse_step": 2}
    m = model_from_hf_config(cfg, "c.json", "q")
    assert [(g.count, g.n_expert, g.d_ff) for g in m.layer_groups] == [(3, 128, 768), (5, 1, 6144)]


# --------------------------------------------------------------------------- 4-bit block formats


def test_4bit_block_formats_carry_their_scales():
    from gpt_batchprof.profiles import DTYPE_BYTES

    assert DTYPE_BYTES["mxfp4"] * 8 == 4.25  # 4 bits + one 8-bit scale per 32 values
    assert DTYPE_BYTES["nvfp4"] * 8 == 4.5  # 4 bits + one fp8 scale per 16 values


def test_gpt_oss_with_mxfp4_experts_weighs_what_its_checkpoint_does():
    # routed experts: 24 layers x 32 experts x 3 x 2880 x 2880 = 19,110,297,600 weights at 4.25 bits
    #   = 10,152,345,600 B; the other 20,914,757,184 - 19,110,297,600 = 1,804,459,584 at bf16 = 3,608,919,168 B.
    # 13,761,264,768 B in all: the published checkpoint is 13.8 GB.
    m = load_model("gpt-oss-20b")
    assert m.routed_expert_matrix_params == 19_110_297_600
    sc = Scenario(prompt_len=16, gen_len=4, dtypes=Dtypes.of("bf16", expert="mxfp4"))
    assert memory_use(m, sc, 1).weights_bytes == 13_761_264_768
    # decode at batch 1 reads the 4 experts it routes to, per layer, at 4.25 bits: 24 x 4 x 2880^2 x 0.53125
    ops = rows(enumerate_ops(m, "decode", 1, kv_len=8, dtypes=sc.dtypes))
    assert ops[("ffn_up", "")].weight_bytes == 24 * 4 * 2880 * 2880 * 0.53125
    assert ops[("qkv_proj", "")].weight_bytes == 24 * 2880 * (4096 + 1024) * 2  # attention stays bf16


def test_whole_model_nvfp4_keeps_embeddings_and_head_at_the_activation_dtype():
    # the window stack above: 2 layers of qkv 64x192 + out 64x64 + up/down 2 x 64x128 = 32768 weights each;
    # 65536 at 4.5 bits = 36864 B; the other 6400 + 6400 (embedding, head) + 5 x 128 norms = 13440 at 2 B = 26880 B
    m = stack()
    assert m.n_params == 65536 + 13440
    sc = Scenario(prompt_len=4, gen_len=2, dtypes=Dtypes.of("fp16", "nvfp4"))
    assert memory_use(m, sc, 1).weights_bytes == 36864 + 26880


def test_expert_dtype_on_a_dense_model_is_refused():
    with pytest.raises(BatchprofError, match="--expert-dtype mxfp4: stack has no experts"):
        serving_report(stack(), hardware_from_mapping(
            {"name": "g", "kind": "gpu", "memory_gb": 80, "memory_bandwidth_gb_s": 2000, "peak_tflops": {"fp16": 300}},
            "t"), Scenario(prompt_len=4, gen_len=2, dtypes=Dtypes.of("fp16", expert="mxfp4")), (1,))


def test_expert_dtype_follows_the_experts_across_gpus():
    from gpt_batchprof.analytic import Parallelism
    from gpt_batchprof.analytic.parallel import weight_split

    m = load_model("mixtral-8x7b")
    dt = Dtypes.of("fp16", expert="nvfp4")
    # one GPU holds everything: the same bytes as the single-device count
    assert weight_split(m, Parallelism(), dt).total_bytes == m.weight_bytes("fp16", "fp16", "nvfp4")
    # ep 2: each GPU holds 4 of the 8 experts; their matrices 32 x 4 x 3 x 4096 x 14336 at 4.5 bits
    # = 12,683,575,296 B less than the whole model's 8
    whole = weight_split(m, Parallelism(), dt).total_bytes
    half = weight_split(m, Parallelism(ep=2), dt).total_bytes
    assert whole - half == 32 * 4 * 3 * 4096 * 14336 * 0.5625


# --------------------------------------------------------------------------- no silently ignored key

from gpt_batchprof import hf_keys  # noqa: E402

LLAMA = {"model_type": "llama", "num_hidden_layers": 32, "hidden_size": 4096, "num_attention_heads": 32,
         "num_key_value_heads": 8, "intermediate_size": 14336, "vocab_size": 128256, "max_position_embeddings": 8192}
MIXTRAL = LLAMA | {"model_type": "mixtral", "num_local_experts": 8, "num_experts_per_tok": 2}
# one value per refused key that changes the model, on a model_type whose mapping does not read it
REFUSED = {
    "kv_lora_rank": (MIXTRAL, 512), "q_lora_rank": (MIXTRAL, 1536), "qk_rope_head_dim": (MIXTRAL, 64),
    "qk_nope_head_dim": (MIXTRAL, 128), "v_head_dim": (MIXTRAL, 128),
    "num_local_experts": (LLAMA, 8), "num_experts": (LLAMA, 8),
    "n_routed_experts": (MIXTRAL, 256), "n_shared_experts": (MIXTRAL, 1), "num_shared_experts": (MIXTRAL, 1),
    "moe_intermediate_size": (MIXTRAL, 2048), "shared_expert_intermediate_size": (MIXTRAL, 2048),
    "intermediate_size_mlp": (MIXTRAL, 16384),
    "mlp_only_layers": (MIXTRAL, [0]), "decoder_sparse_step": (MIXTRAL, 2), "first_k_dense_replace": (MIXTRAL, 3),
    "moe_layer_freq": (MIXTRAL, 2), "interleave_moe_layer_step": (MIXTRAL, 2), "moe_layers": (MIXTRAL, [1, 3]),
    "layer_types": (LLAMA, ["sliding_attention", "full_attention"] * 16), "sliding_window_pattern": (LLAMA, 6),
    "attention_chunk_size": (LLAMA, 8192), "sliding_window": (LLAMA | {"model_type": "gpt_neox"}, 4096),
    "attention_bias": (LLAMA | {"model_type": "opt", "ffn_dim": 16384}, True),
    "mlp_bias": (LLAMA | {"model_type": "opt", "ffn_dim": 16384}, True),
    "attn_logit_softcapping": (LLAMA, 50.0), "final_logit_softcapping": (LLAMA, 30.0),
}


def test_every_refused_key_has_a_case():
    assert set(REFUSED) == set(hf_keys.UNMODELLED)


@pytest.mark.parametrize("key", sorted(REFUSED))
def test_a_key_that_changes_the_model_is_refused_in_one_line(key):
    cfg, value = REFUSED[key]
    with pytest.raises(ProfileError) as e:
        model_from_hf_config(cfg | {key: value}, "c.json", "m")
    assert f"field '{key}'" in str(e.value) and "\n" not in str(e.value)
    # without it (or with its neutral value) the same config loads
    model_from_hf_config(cfg, "c.json", "m")


def test_the_deepseek_keys_on_a_mixtral_label_are_refused_not_ignored():
    # issue 16: a DeepSeek-V3 config labelled mixtral (no MLA keys) loaded as 702B, its expert keys ignored
    cfg = MIXTRAL | {"n_routed_experts": 256, "n_shared_experts": 1, "moe_intermediate_size": 2048}
    with pytest.raises(ProfileError, match="field '(n_routed_experts|n_shared_experts|moe_intermediate_size)'"):
        model_from_hf_config(cfg, "c.json", "m")


def test_llama_biases_are_read_both_or_refused():
    # llama-3-8b: 8,030,261,248 weights; attention_bias + mlp_bias add per layer q/k/v (4096 + 2 x 1024),
    # o (4096), gate/up (2 x 14336), down (4096): 43,008 x 32 layers = 1,376,256
    plain = model_from_hf_config(LLAMA, "c.json", "m")
    both = model_from_hf_config(LLAMA | {"attention_bias": True, "mlp_bias": True}, "c.json", "m")
    assert plain.n_params == 8_030_261_248
    assert both.n_params - plain.n_params == 1_376_256
    with pytest.raises(ProfileError, match="field 'mlp_bias': biases on only the FFN projections"):
        model_from_hf_config(LLAMA | {"mlp_bias": True}, "c.json", "m")
    assert model_from_hf_config(LLAMA | {"attention_bias": False, "mlp_bias": False}, "c.json", "m").n_params \
        == plain.n_params


def test_a_window_on_a_llama_label_is_refused():
    # issue 16: a Gemma-2 config labelled llama loaded with its 4096-token window dropped
    with pytest.raises(ProfileError, match="field 'sliding_window': 4096 would be dropped"):
        model_from_hf_config(LLAMA | {"sliding_window": 4096}, "c.json", "m")
    # qwen3 keeps its documented switch: a window only with use_sliding_window
    q = model_from_hf_config(LLAMA | {"model_type": "qwen3", "sliding_window": 4096}, "c.json", "m")
    assert q.sliding_window is None


# --------------------------------------------------------------------------- multi-head latent attention

# 1 layer, d 16, 2 heads; latent attention: q_lora 5, kv_lora 6, non-rotary head 4, rotary 2, value head 3.
MLA = {"name": "mla", "n_layer": 1, "d_model": 16, "n_head": 2, "head_dim": 4, "kv_lora_rank": 6, "q_lora_rank": 5,
       "qk_rope_head_dim": 2, "v_head_dim": 3, "d_ff": 8, "ffn": "gelu", "vocab_size": 10, "max_seq_len": 64,
       "norm": "rmsnorm"}


def test_one_mla_layer_absorbed_decode_worked_by_hand():
    # decode, batch 1, fp16, 9 cached tokens: L = 10 keys
    ops = rows(enumerate_ops(model_from_mapping(MLA, "t"), "decode", 1, kv_len=9))
    got = {name: (o.flops, o.bytes) for (name, _), o in ops.items()}
    # q_down 16 -> 5: 2*16*5 = 160 FLOPs; 16*2 in + 80*2 weights + 5*2 out = 202 B
    assert got["mla_q_down"] == (160, 202)
    # q_up 5 -> 2 x (4 + 2) = 12: 120 FLOPs; 10 + 120 + 24 = 154 B
    assert got["mla_q_up"] == (120, 154)
    # kv_down 16 -> 6 + 2 = 8 (the latent and the rotary key: what is cached): 256 FLOPs; 32 + 256 + 16 = 304 B
    assert got["mla_kv_down"] == (256, 304)
    # q_absorb: each head's 4 non-rotary query values into the latent (4 -> 6): 2*2*4*6 = 96 FLOPs;
    # 2 x 4 x 2 in + 2 x 4 x 6 x 2 weights + 2 x 6 x 2 out = 16 + 96 + 24 = 136 B
    assert got["mla_q_absorb"] == (96, 136)
    # scores over the latent + rotary key (8 wide), 2 heads x 10 keys = 20 scores: 2*8*20 = 320 FLOPs;
    # queries 2*8*2 = 32 B, the cache 10*8*2 = 160 B (one latent for both heads), scores 40 B = 232 B
    assert got["attn_score"] == (320, 232)
    assert got["attn_softmax"] == (0, 80)  # 2 rows of 10, read and written at 2 B
    # context: the latent's 6 values as V: 2*6*20 = 240 FLOPs; 40 + 10*6*2 + 2*6*2 = 184 B
    assert got["attn_context"] == (240, 184)
    # v_absorb 6 -> 3 per head: 2*2*6*3 = 72 FLOPs; 24 + 72 + 12 = 108 B
    assert got["mla_v_absorb"] == (72, 108)
    # out_proj 2 x 3 -> 16: 192 FLOPs; 12 + 192 + 32 = 236 B
    assert got["out_proj"] == (192, 236)
    assert "qkv_proj" not in got and "mla_kv_up" not in got


def test_one_mla_layer_naive_prefill_worked_by_hand():
    # prefill of 3 tokens, batch 1: K and V of the 3 keys decompressed, 6 -> 2 x (4 + 3) = 14:
    # 2*3*6*14 = 504 FLOPs; scores over 4 + 2 = 6 dims, 2 x 3 x 3 = 18: 216 FLOPs, bytes 72 + 72 + 36 = 180;
    # context over 3 value dims: 108 FLOPs
    ops = rows(enumerate_ops(model_from_mapping(MLA, "t"), "prefill", 1, new_tokens=3))
    assert ops[("mla_kv_up", "")].flops == 504
    assert (ops[("attn_score", "")].flops, ops[("attn_score", "")].bytes) == (216, 180)
    assert ops[("attn_context", "")].flops == 108
    assert ("mla_q_absorb", "") not in ops
    # bytes at fp16: kv_up reads the 3 latents (36 B) and its 6 x 14 weights (168 B), writes 3 x 14 (84 B) = 288;
    # context reads the 18 scores (36 B) and the 3 keys' decompressed values, 2 heads x 3 x 3 x 2 B = 36 B,
    # and writes 2 x 3 x 3 x 2 B = 36 B: 108
    assert ops[("mla_kv_up", "")].bytes == 288
    assert ops[("attn_context", "")].bytes == 108


def test_mla_kernel_shapes_follow_the_form():
    # what a calibrated attention table is looked up with. naive: an MHA of 2 heads, one problem per head, each
    # 3 queries x 3 keys over 4 + 2 dims, causal. absorbed: an MQA (one K/V head: the latent) of 2 query heads,
    # both heads' rows in one problem over 6 + 2 dims
    m = model_from_mapping(MLA, "t")
    naive = rows(enumerate_ops(m, "prefill", 1, new_tokens=3))[("attn_score", "")].shape
    assert (naive.m, naive.n, naive.k, naive.batch, naive.heads, naive.kv_heads, naive.causal) == \
           (3, 3, 6, 2, 2, 2, True)
    absorbed = rows(enumerate_ops(m, "decode", 1, kv_len=9))[("attn_context", "")].shape
    assert (absorbed.m, absorbed.n, absorbed.k, absorbed.batch, absorbed.heads, absorbed.kv_heads,
            absorbed.causal) == (2, 6, 10, 1, 2, 1, False)
    assert isinstance(absorbed.m, int)


def test_mla_fused_attention_worked_by_hand():
    m = model_from_mapping(MLA, "t")
    # absorbed decode, 10 keys: 2 heads x 10 pairs, each 2 x (8 score dims + 6 value dims): 560 FLOPs;
    # bytes: queries 2 x 8 x 2 = 32, outputs 2 x 6 x 2 = 24, the cache 10 x 8 x 2 = 160 (its values are
    # the latent already read for the scores): 216
    fused = rows(enumerate_ops(m, "decode", 1, kv_len=9, attention="fused"))[("attn_fused", "")]
    assert (fused.flops, fused.bytes) == (560, 216)
    # naive prefill of 3 tokens: 2 heads x 6 causal pairs x 2 x (6 + 3) = 216 FLOPs; queries 2 x 3 x 6 x 2 = 72,
    # outputs 2 x 3 x 3 x 2 = 36, decompressed keys 72 and values 36: 216 B
    fused = rows(enumerate_ops(m, "prefill", 1, new_tokens=3, attention="fused"))[("attn_fused", "")]
    assert (fused.flops, fused.bytes) == (216, 216)
    assert (fused.shape.heads, fused.shape.kv_heads, fused.shape.causal) == (2, 2, True)


def test_mla_attention_rows_of_a_batch_worked_by_hand():
    """Batch 2, fp16, one layer; every attention row carries its step (phase, sequences, new tokens, cached
    tokens), no weights, one launch, and the shape a calibrated table is read at.
    naive prefill of 2 tokens (per head keys of 4 + 2 dims, values of 3): the eager loop scores the whole 2 x 2
    square; fused counts the 3 causal pairs. absorbed decode over 10 keys: 8-dim latent keys, 6-dim latent
    values, one K/V head (the latent) for both query heads."""
    m = model_from_mapping(MLA, "t")

    def attn(phase, attention, **kw):
        return {o.op: o for o in enumerate_ops(m, phase, 2, attention=attention, **kw) if o.op.startswith("attn")}

    def step(o):
        return (o.phase, o.batch, o.new_tokens, o.kv_len, o.weight_bytes, o.launches, o.compute_dtype)

    def shape(o):
        s = o.shape
        return (s.m, s.n, s.k, s.batch, s.heads, s.kv_heads, s.causal)

    pre = attn("prefill", "unfused", new_tokens=2)
    assert all(step(o) == ("prefill", 2, 2, 0, 0.0, 1, "fp16") for o in pre.values()) and len(pre) == 3
    # scores: 2 x 6 dims x 4 pairs x 2 heads x 2 sequences = 192 FLOPs; queries and decompressed keys
    # 2 x 2 x 2 x 6 x 2 B = 96 each, scores 2 x 2 x 4 x 2 B = 32: 224 B; 2 x 2 problems of 2 x 2 over 6 dims
    assert (pre["attn_score"].flops, pre["attn_score"].bytes) == (192, 224)
    assert shape(pre["attn_score"]) == (2, 2, 6, 4, 2, 2, True)
    # softmax: 2 x 2 x 2 rows of 2, read and written: 64 B
    assert (pre["attn_softmax"].bytes, pre["attn_softmax"].shape.m, pre["attn_softmax"].shape.n) == (64, 8, 2)
    # context: 2 x 3 x 16 = 96 FLOPs; scores 32 + values 2 x 2 x 2 x 3 x 2 = 48 + outputs 48: 128 B
    assert (pre["attn_context"].flops, pre["attn_context"].bytes) == (96, 128)
    assert shape(pre["attn_context"]) == (2, 3, 2, 4, 2, 2, True)

    dec = attn("decode", "unfused", kv_len=9)
    assert all(step(o) == ("decode", 2, 1, 9, 0.0, 1, "fp16") for o in dec.values())
    # scores: 2 x 8 x 10 keys x 2 heads x 2 = 640 FLOPs; queries 2 x 2 x 8 x 2 = 64, the latent cache
    # 2 x 10 x 8 x 2 = 320, scores 2 x 2 x 10 x 2 = 80: 464 B; 2 problems (one per sequence) of both heads' rows
    assert (dec["attn_score"].flops, dec["attn_score"].bytes) == (640, 464)
    assert shape(dec["attn_score"]) == (2, 10, 8, 2, 2, 1, False)
    assert (dec["attn_softmax"].bytes, dec["attn_softmax"].shape.m) == (160, 4)  # 4 rows of 10, read and written
    # context: 2 x 6 x 40 = 480 FLOPs; scores 80 + latent values 2 x 10 x 6 x 2 = 240 + outputs 2 x 2 x 6 x 2 = 48
    assert (dec["attn_context"].flops, dec["attn_context"].bytes) == (480, 368)
    assert shape(dec["attn_context"]) == (2, 6, 10, 2, 2, 1, False)

    fused = attn("prefill", "fused", new_tokens=2)["attn_fused"]
    # 2 x (6 + 3) x 3 causal pairs x 2 heads x 2 = 216 FLOPs; queries 96, keys 96, values 48, outputs 48: 288 B
    assert step(fused) == ("prefill", 2, 2, 0, 0.0, 1, "fp16") and (fused.flops, fused.bytes) == (216, 288)
    assert shape(fused) == (2, 2, 6, 2, 2, 2, True)
    fused = attn("decode", "fused", kv_len=9)["attn_fused"]
    # 2 x (8 + 6) x 10 x 2 x 2 = 1120 FLOPs; queries 64, the cache 320 (read once), outputs 48: 432 B
    assert step(fused) == ("decode", 2, 1, 9, 0.0, 1, "fp16") and (fused.flops, fused.bytes) == (1120, 432)
    assert shape(fused) == (1, 10, 8, 2, 2, 1, False)


def test_mla_step_activations_worked_by_hand():
    # fp16; logits 10 x 4 B per sequence; the FFN (GELU) keeps one inner tensor of 8 per token
    m, d16 = model_from_mapping(MLA, "t"), Dtypes.of("fp16")
    # prefill of 2 tokens (batch 1): queries 2 x 2 heads x (4 + 2) = 24, plus the keys and values decompressed
    # for the 2 keys in view, 2 x 2 x (4 + 3) = 28: 52 beats the FFN's 16. (2 x 2 x 16 + 52) x 2 + 40 = 272
    assert step_activation_bytes(m, d16, "fused", 1, 2, 2) == 272
    # decode, batch 2 over 10 keys (absorbed): queries 2 x 2 x 6 = 24 and their latent form 2 x 2 x (6 + 2) = 32:
    # 56 beats the FFN's 16: (2 x 2 x 16 + 56) x 2 + 2 x 40 = 320; unfused, scores and probabilities
    # 2 x 2 x 2 x 10 = 80 are wider: (64 + 80) x 2 + 80 = 368
    assert step_activation_bytes(m, d16, "fused", 2, 1, 10) == 320
    assert step_activation_bytes(m, d16, "unfused", 2, 1, 10) == 368


def test_mla_caches_the_latent_and_counts_its_weights():
    m = model_from_mapping(MLA, "t")
    assert m.kv_bytes_per_token("fp16") == 16  # (6 + 2) values x 2 B, against 2 x 2 x 4 x 2 = 32 for K and V
    # layer: q_down 80 + q_up 60 + kv_down 128 + kv_up 6 x 14 = 84 + out 96 = 448; FFN 2 x 16 x 8 = 256;
    # norms 2 x 16 + the latents' 5 + 6 = 43: 747. Embedding and head 2 x 160, final norm 16: 1083.
    assert m.n_params == 1083


def test_deepseek_v3_parameters_and_cache():
    m = load_model("deepseek-v3")
    # 58 MoE layers of 11,507,286,272 + 3 dense of 583,483,392 + embedding and head 2 x 926,679,040 + 7168
    assert m.n_params == 671_026_419_200
    assert m.n_params == pytest.approx(671e9, rel=0.001)
    # "37B activated": 36.63B without the token embedding (37.55B with it); the report rounds to whole billions
    assert m.n_params_active - m.embedding_params == pytest.approx(37e9, rel=0.011)
    # 61 layers x (512 + 64) x 2 B = 70,272 B per token: 70 KB, against 61 x 2 x 128 x 128 x 2 = 3.9 MB for MHA
    assert m.kv_bytes_per_token("bf16") == 70_272
    hf = load_model(str(HF / "deepseek-v3.json"))
    assert (hf.n_params, hf.layer_groups, hf.kv_bytes_per_token("bf16")) == \
           (m.n_params, m.layer_groups, m.kv_bytes_per_token("bf16"))


def test_kimi_k2_reads_as_its_builtin():
    m = load_model("kimi-k2")
    hf = load_model(str(HF / "kimi-k2.json"))
    assert (hf.n_params, hf.n_params_active, hf.layer_groups) == (m.n_params, m.n_params_active, m.layer_groups)
    # card: "1T total, 32B activated" (one and two digits)
    assert m.n_params == pytest.approx(1e12, rel=0.05)
    assert m.n_params_active == pytest.approx(32e9, rel=0.03)


def test_mla_decode_sum_and_refusals():
    hw = hardware_from_mapping({"name": "g", "kind": "gpu", "memory_gb": 80, "memory_bandwidth_gb_s": 2000,
                                "peak_tflops": {"fp16": 300}, "launch_overhead_us": 3}, "test")
    m = model_from_mapping(MLA, "t")
    sc = Scenario(prompt_len=8, gen_len=101)
    walked = sum(step_time(attention_ops(m, "decode", 2, 1, kv, Dtypes(), "unfused"), hw, "eager")
                 for kv in range(8, 8 + 100))
    assert decode_attention_time(m, hw, sc, 2, "eager") == pytest.approx(walked, rel=1e-12)
    with pytest.raises(ProfileError, match="kv_lora_rank.*sliding window is not modelled"):
        model_from_mapping(MLA | {"sliding_window": 4}, "t")
    with pytest.raises(ProfileError, match="qk_rope_head_dim': missing"):
        model_from_mapping({k: v for k, v in MLA.items() if k != "qk_rope_head_dim"}, "t")


def test_the_mla_form_can_be_chosen_and_the_decode_sum_follows_it():
    m = model_from_mapping(MLA, "t")
    # naive decode: the 10 keys in view decompressed every step, 2 x 10 x 6 x 14 = 1680 FLOPs; no absorption
    ops = rows(enumerate_ops(m, "decode", 1, kv_len=9, mla="naive"))
    assert ops[("mla_kv_up", "")].flops == 1680 and ("mla_q_absorb", "") not in ops
    # absorbed prefill: no decompression; scores over the latent (8 wide) for 2 heads x 3 x 3
    ops = rows(enumerate_ops(m, "prefill", 1, new_tokens=3, mla="absorbed"))
    assert ("mla_kv_up", "") not in ops and ops[("attn_score", "")].flops == 2 * 8 * 18
    # the decompression grows with the cache: it is summed with attention over the decode steps
    hw = hardware_from_mapping({"name": "g", "kind": "gpu", "memory_gb": 80, "memory_bandwidth_gb_s": 2000,
                                "peak_tflops": {"fp16": 300}, "launch_overhead_us": 3}, "test")
    sc = Scenario(prompt_len=8, gen_len=101, mla="naive")
    walked = sum(step_time(attention_ops(m, "decode", 2, 1, kv, Dtypes(), "unfused", "naive"), hw, "eager")
                 for kv in range(8, 8 + 100))
    assert any(o.op == "mla_kv_up" for o in attention_ops(m, "decode", 2, 1, 8, Dtypes(), "unfused", "naive"))
    assert decode_attention_time(m, hw, sc, 2, "eager") == pytest.approx(walked, rel=1e-12)
    with pytest.raises(BatchprofError, match="--mla-form: unknown form 'lazy'"):
        enumerate_ops(m, "decode", 1, kv_len=2, mla="lazy")


def test_mla_form_option_on_the_command_line():
    from typer.testing import CliRunner

    from gpt_batchprof.cli import app

    r = CliRunner().invoke(app, ["analyze", "-m", "deepseek-v3", "-H", "h200", "-b", "1", "--phase", "decode",
                                 "--mla-form", "naive", "--per-op", "-f", "json", "--attention", "unfused"])
    assert r.exit_code == 0, r.output
    names = {row["op"] for row in json.loads(r.output)["ops"]}
    assert "mla_kv_up" in names and "mla_q_absorb" not in names
    r = CliRunner().invoke(app, ["analyze", "-m", "deepseek-v3", "--mla-form", "lazy"])
    assert r.exit_code == 2 and "--mla-form" in r.output


def test_gemma3_local_global_layers_and_sandwich_norms():
    m = load_model(str(HF / "gemma-3-27b.json"))
    # one global layer in 6 (layers 5, 11, ..., 59): 10 global, 52 with a 1024-token window
    assert [(g.count, g.sliding_window) for g in m.layer_groups] == [(52, 1024), (10, None)]
    # 4 RMSNorms per layer and the final one: 249 launches; GeGLU has a gate row
    ops = rows(enumerate_ops(m, "decode", 1, kv_len=4000))
    assert ops[("norm", "rmsnorm")].launches == 4 * 62 + 1
    assert ("ffn_gate", "") in ops
    # KV cache at 8000 positions, bf16: K and V of 16 heads x 128 = 8 KiB per token and layer;
    # 52 layers keep 1024 tokens, 10 keep 8000: (52 x 1024 + 10 x 8000) x 8192 B
    sc = Scenario(prompt_len=7000, gen_len=1001, dtypes=Dtypes.of("bf16"))
    assert memory_use(m, sc, 1).kv_cache_bytes == (52 * 1024 + 10 * 8000) * 8192
    # the multimodal wrapper's text_config is read as its own config (a misspelt key inside it is still named)
    cfg = json.loads((HF / "gemma-3-27b.json").read_text())
    cfg["text_config"]["num_key_value_head"] = 16
    with pytest.raises(ProfileError, match="did you mean 'num_key_value_heads'"):
        model_from_hf_config(cfg, "c.json", "g")


@pytest.mark.parametrize("config", sorted(p.name for p in HF.glob("*.json")))
def test_every_published_config_analyzes_from_the_command_line(config):
    # `analyze -m config.json` as a user runs it, for every family's published config kept here
    from typer.testing import CliRunner

    from gpt_batchprof.cli import app

    r = CliRunner().invoke(app, ["analyze", "-m", str(HF / config), "-H", "h200", "-b", "1,8", "-f", "json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert [p["batch"] for p in doc["summary"]] == [1, 8]
    assert all(p["ttft_s"] > 0 and p["itl_s"] > 0 for p in doc["summary"])


# --- the one inventory of a layer's weights (ModelSpec.layer_weights), by hand on tiny models ---------------
# d_model 64, 4 query heads of 16, 2 K/V heads, vocab 100, untied, RMSNorm: per layer q 64x64 + k, v 64x32 + o 64x64
# = 12,288 attention weights and 2 x 64 norm weights; embedding + LM head 2 x 6,400 = 12,800; final norm 64.
TINY = {"name": "t", "n_layer": 2, "d_model": 64, "n_head": 4, "n_kv_head": 2, "d_ff": 128, "ffn": "swiglu",
        "vocab_size": 100, "max_seq_len": 64, "norm": "rmsnorm"}


def test_qk_norms_add_a_query_and_a_key_vector_per_layer():
    # FFN 3 x 64 x 128 = 24,576: 2 x (12,288 + 24,576 + 128) + 12,800 + 64 = 86,848; q/k norms: 2 x (16 + 16) more
    assert model_from_mapping(TINY, "t").n_params == 86_848
    assert model_from_mapping(TINY | {"qk_norm": True}, "t").n_params == 86_912


def test_two_experts_are_experts():
    # 2 experts of 128, 1 per token: per layer 12,288 + router 64 x 2 = 128 + experts 2 x 3 x 64 x 128 = 49,152
    # + norms 128 = 61,696; x 2 + 12,800 + 64 = 136,256 weights. Experts at fp8 (98,304 x 1 B), the rest at
    # fp16 (37,952 x 2 B): 174,208 B
    m = model_from_mapping(TINY | {"n_expert": 2, "n_expert_active": 1}, "t")
    assert m.n_params == 136_256
    assert m.weight_bytes("fp16", "fp16", "fp8") == 174_208


def test_the_expert_dtype_leaves_the_dense_layers_of_a_stack_alone():
    # layer 1 dense (FFN 3 x 64 x 128 = 24,576), layer 2 MoE: 4 experts of 32 (4 x 3 x 64 x 32 = 24,576) + router
    # 64 x 4 = 256. Weights: 36,992 + 37,248 + 12,800 + 64 = 87,104; experts at fp8 (24,576 B), the other
    # 62,528 at fp16 (125,056 B): 149,632 B (the dense FFN at fp8 too would be 125,056 B)
    m = model_from_mapping(TINY | {"d_ff": 32, "n_expert": 4, "n_expert_active": 2,
                                   "layers": [{"count": 1, "n_expert": 1, "d_ff": 128}, {"count": 1}]}, "t")
    assert m.n_params == 87_104
    assert m.weight_bytes("fp16", "fp16", "fp8") == 149_632
