"""Layouts over several GPUs follow the layer stack: pipeline stages hold whole layers in the order the
stack runs them, tensor parallelism splits each layer kind's matrices, expert parallelism only the MoE
layers' experts, and multi-head latent attention splits its heads while every GPU keeps the whole
latent cache. Every expected number is worked by hand in the comment beside it."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from gpt_batchprof.analytic import Dtypes, Parallelism, enumerate_ops
from gpt_batchprof.analytic.parallel import stage_groups, stage_model, weight_split
from gpt_batchprof.analytic.serving import Scenario, max_batch, memory_use, slowest_stage
from gpt_batchprof.cli import app
from gpt_batchprof.errors import BatchprofError, ProfileError
from gpt_batchprof.profiles import hardware_from_mapping, load_model, model_from_mapping

HW = hardware_from_mapping({"name": "g", "kind": "gpu", "memory_gb": 80, "memory_bandwidth_gb_s": 2000,
                            "peak_tflops": {"fp16": 300}, "interconnect": {"name": "x", "bandwidth_gb_s": 100}},
                           "test")

# 4 layers, d 16, 4 heads of 4, gelu FFN (2 matrices), rmsnorm (16 weights), vocab 10, untied:
#   attention per layer: qkv 16 x 48 = 768 + out 16 x 16 = 256 -> 1024; two norms 32
#   dense layer: FFN 2 x 16 x 64 = 2048 -> 1024 + 2048 + 32 = 3104 weights
#   MoE layer: 4 experts x 2 x 16 x 32 = 4096, router 16 x 4 = 64 -> 1024 + 4096 + 64 + 32 = 5216 weights
#   embedding 160, LM head 160, final norm 16
MIXED = {"name": "mixed", "n_layer": 4, "d_model": 16, "n_head": 4, "d_ff": 32, "ffn": "gelu", "vocab_size": 10,
         "max_seq_len": 64, "norm": "rmsnorm", "n_expert": 4, "n_expert_active": 2,
         "layers": [{"count": 2, "n_expert": 1, "d_ff": 64}, {"count": 2}]}


def mixed(**over):
    return model_from_mapping(MIXED | over, "t")


def rows(ops):
    return {o.label: o for o in ops}


# --------------------------------------------------------------------------- pipeline stages


def test_pipeline_stages_hold_the_layers_in_order_and_the_fullest_sets_the_weights():
    # listed order (dense, dense | MoE, MoE): stage 0 = 2 x 3104 + embedding 160 = 6368 weights;
    # stage 1 = 2 x 5216 + final norm 16 + head 160 = 10608 weights = 21216 B at fp16: the fullest.
    # replicated there: norms 2 x 32 + routers 2 x 64 + final norm 16 = 208 weights = 416 B
    m = mixed()
    assert [[(g.count, g.ffn_kind) for g in s] for s in stage_groups(m, 2)] == \
        [[(2, "dense 64")], [(2, "2 of 4 x 32")]]
    split = weight_split(m, Parallelism(pp=2), Dtypes())
    assert (split.sharded_bytes, split.replicated_bytes) == (21216 - 416, 416)
    # alternating (layer_order [0, 1]: dense, MoE, dense, MoE): each stage holds one of each;
    # stage 0 = 3104 + 5216 + 160 = 8480, stage 1 = 3104 + 5216 + 176 = 8496 weights = 16992 B
    alt = mixed(layer_order=[0, 1])
    assert [[(g.count, g.ffn_kind) for g in s] for s in stage_groups(alt, 2)] == \
        [[(1, "dense 64"), (1, "2 of 4 x 32")]] * 2
    assert weight_split(alt, Parallelism(pp=2), Dtypes()).total_bytes == 16992
    # on one GPU the order changes nothing: 2 x 3104 + 2 x 5216 + 336 = 16976 weights = 33952 B
    assert weight_split(m, Parallelism(), Dtypes()).total_bytes == weight_split(alt, Parallelism(), Dtypes()).total_bytes \
        == 33952


def test_each_stage_lists_its_own_layer_kinds():
    # decode, batch 1: the dense stage's ffn_up is 2 layers x 2 x 16 x 64 = 4096 FLOPs and it has no router;
    # the MoE stage's is 2 layers x 2 routes x 2 x 16 x 32 = 4096 FLOPs, its router 2 x 2 x 16 x 4 = 256
    m, par = mixed(), Parallelism(pp=2)
    first = rows(enumerate_ops(m, "decode", 1, kv_len=3, parallel=par, stage=0))
    second = rows(enumerate_ops(m, "decode", 1, kv_len=3, parallel=par, stage=1))
    assert first["ffn_up"].flops == 4096 and first["ffn_up"].shape.batch == 1 and "moe_router" not in first
    assert second["ffn_up"].flops == 4096 and second["moe_router"].flops == 256
    assert second["ffn_up"].shape.batch == 2  # grouped GEMMs over the 2 experts one token touches
    with pytest.raises(BatchprofError, match="pipeline stage 2 does not exist"):
        enumerate_ops(m, "decode", 1, parallel=par, stage=2)


def test_the_slowest_stage_sets_the_step_and_is_the_one_analyze_lists():
    # decode at batch 4, memory-bound: a dense layer reads its 2048 FFN weights (4096 B); a MoE layer
    # reads the 4 x (1 - (1/2)^4) = 3.75 experts 4 tokens touch, 3.75 x 1024 x 2 B = 7680 B, and its
    # router. The MoE stage is the slower one, whichever end of the stack it sits at.
    sc = Scenario(prompt_len=8, gen_len=4)
    assert slowest_stage(mixed(), HW, sc, "decode", 4, Parallelism(pp=2)) == 1
    moe_first = mixed(layer_order=[1, 1, 0, 0])
    assert slowest_stage(moe_first, HW, sc, "decode", 4, Parallelism(pp=2)) == 0
    from gpt_batchprof.analytic import analyze

    res = analyze(mixed(), HW, sc, ("decode",), (4,), Parallelism(pp=2))
    assert "moe_router" in {p.cost.op for p in res.predictions}  # the MoE stage's rows


def test_gpt_oss_stages_alternate_window_and_full_layers():
    # gpt-oss-20b alternates sliding (128) and full layers; a K/V token of one layer is
    # 2 x 8 heads x 64 x 2 B = 2048 B. prompt 1000 + gen 25 - 1 = 1024 positions, batch 1, pp 2:
    # each stage of 12 layers keeps 6 full layers x 1024 + 6 window layers x 128 tokens
    # = 6912 x 2048 = 14,155,776 B (in the listed order, 12 window | 12 full, the full stage would keep
    # 12 x 1024 x 2048 = 25,165,824 B)
    m = load_model("gpt-oss-20b")
    sc = Scenario(prompt_len=1000, gen_len=25)
    assert memory_use(m, sc, 1, Parallelism(pp=2)).kv_cache_bytes == 14_155_776
    listed = model_from_mapping({k: v for k, v in m.to_dict().items()
                                 if k not in ("n_params", "n_params_active", "layer_groups", "layer_order",
                                              "source", "n_expert", "n_expert_active")}
                                | {"n_expert": 32, "n_expert_active": 4,
                                   "layers": [{"count": 12, "sliding_window": 128},
                                              {"count": 12, "sliding_window": None}]}, "t")
    assert memory_use(listed, sc, 1, Parallelism(pp=2)).kv_cache_bytes == 25_165_824


def test_deepseek_v3_stages_from_its_config_json_match_the_profile():
    # first_k_dense_replace 3: stage 0 of 31 layers holds the 3 dense ones and 28 MoE, stage 1 30 MoE
    from pathlib import Path

    profile = load_model("deepseek-v3")
    hf = load_model(str(Path(__file__).parent / "data" / "hf" / "deepseek-v3.json"))
    for m in (profile, hf):
        assert [[(g.count, g.n_expert) for g in s] for s in stage_groups(m, 2)] == [[(28, 256), (3, 1)], [(30, 256)]]
    assert hf.layer_sequence() == profile.layer_sequence()


# --------------------------------------------------------------------------- tensor parallelism


def test_tp_splits_each_layer_kind_of_a_mixed_stack():
    # tp 2: dense FFN 64 -> 32 columns, each expert 32 -> 16; per GPU the dense stage's ffn_up at decode
    # batch 1 is 2 layers x 2 x 16 x 32 = 2048 FLOPs, the MoE one's 2 layers x 2 routes x 2 x 16 x 16 = 2048
    ops = rows(enumerate_ops(mixed(), "decode", 1, kv_len=3, parallel=Parallelism(tp=2)))
    assert ops["ffn_up (dense 32)"].flops == 2048 and ops["ffn_up (2 of 4 x 16)"].flops == 2048
    # two all-reduces per layer of every kind, and one after the embedding: 2 x 4 + 1 = 9
    assert ops["tp_allreduce"].launches == 9
    # weights per GPU: attention 2 x 16 x 8 (q, out) + 2 x 16 x 8 (k, v: 2 of 4 heads) = 512; dense FFN 1024;
    # MoE 4 x 2 x 16 x 16 = 2048 plus its router 64 (whole); norms 32 (whole).
    # 2 x (512 + 1024 + 32) + 2 x (512 + 2048 + 64 + 32) + embedding 80 + head 80 + final norm 16 = 8624
    assert weight_split(mixed(), Parallelism(tp=2), Dtypes()).total_bytes == 8624 * 2


# 1 layer, d 16, 2 heads; latent attention: q_lora 5, kv_lora 6, non-rotary head 4, rotary 2, value head 3
MLA = {"name": "mla", "n_layer": 1, "d_model": 16, "n_head": 2, "head_dim": 4, "kv_lora_rank": 6, "q_lora_rank": 5,
       "qk_rope_head_dim": 2, "v_head_dim": 3, "d_ff": 8, "ffn": "gelu", "vocab_size": 10, "max_seq_len": 64,
       "norm": "rmsnorm"}


def test_mla_under_tp_splits_heads_and_every_gpu_reads_the_whole_latent():
    # tp 2: one head per GPU. Absorbed decode, 9 cached tokens (L = 10):
    # scores 1 head x 10 keys over the 6 + 2 = 8 wide latent: 2 x 8 x 10 = 160 FLOPs;
    # bytes: the query 8 x 2 = 16, the whole cache 10 x 8 x 2 = 160 (not halved), scores 10 x 2 = 20: 196
    # q_up 5 -> 1 x (4 + 2) = 6: 60 FLOPs; kv_down 16 -> 8 runs whole on every GPU: 256 FLOPs (as on one)
    ops = rows(enumerate_ops(model_from_mapping(MLA, "t"), "decode", 1, kv_len=9, parallel=Parallelism(tp=2)))
    assert (ops["attn_score"].flops, ops["attn_score"].bytes) == (160, 196)
    assert ops["mla_q_up"].flops == 60 and ops["mla_kv_down"].flops == 256
    # the latent cache is replicated: (6 + 2) x 2 B = 16 B per token on each GPU, as on one;
    # 8 + 4 - 1 = 11 positions, 2 sequences: 352 B
    sc = Scenario(prompt_len=8, gen_len=4)
    assert memory_use(model_from_mapping(MLA, "t"), sc, 2, Parallelism(tp=2)).kv_cache_bytes == 352


def test_deepseek_v3_tp8_memory_per_gpu_with_the_latent_cache_replicated():
    m = load_model("deepseek-v3")
    sc = Scenario(prompt_len=1000, gen_len=25, dtypes=Dtypes.of("bf16"))
    mem = memory_use(m, sc, 1, Parallelism(tp=8))
    # the cache is the latent, whole on every GPU: 61 layers x (512 + 64) x 2 B = 70,272 B per token,
    # x 1024 positions = 71,958,528 B, as on one GPU (an MHA cache would be split 8 ways)
    assert mem.kv_cache_bytes == 71_958_528 == memory_use(m, sc, 1).kv_cache_bytes
    # weights per GPU, 16 of the 128 heads:
    #  MLA, split: q_up 1536 x 16 x 192 = 4,718,592, kv_up 512 x 16 x 256 = 2,097,152, out 2048 x 7168 = 14,680,064
    #       -> 21,495,808; whole: q_down 7168 x 1536 = 11,010,048, kv_down 7168 x 576 = 4,128,768, the
    #       latents' norms 1536 + 512 and two norms 2 x 7168 -> 15,155,200
    #  MoE layer: 256 experts x 3 x 7168 x 256 = 1,409,286,144 and the shared expert 3 x 7168 x 256 = 5,505,024
    #       split; the router (7168 + 1) x 256 = 1,835,264 whole
    #  dense layer: 3 x 7168 x 2304 = 49,545,216 split
    #  58 MoE layers: 58 x (21,495,808 + 1,414,791,168) = 83,304,644,608 split, 58 x 16,990,464 = 985,446,912 whole
    #  3 dense layers: 3 x 71,041,024 = 213,123,072 split, 3 x 15,155,200 = 45,465,600 whole
    #  embedding and head: 2 x 16,160 x 7168 = 231,669,760 split; final norm 7168 whole
    #  split 83,749,437,440, whole 1,030,919,680 weights; x 2 B
    split = weight_split(m, Parallelism(tp=8), Dtypes.of("bf16"))
    assert (split.sharded_bytes, split.replicated_bytes) == (167_498_874_880, 2_061_839_360)
    assert mem.weights_bytes == 169_560_714_240
    # 8 x the split part + the whole part is the model: 671,026,419,200 weights
    assert 8 * 83_749_437_440 + 1_030_919_680 == m.n_params


def test_deepseek_v3_over_16_gpus_runs_in_the_cli():
    r = CliRunner().invoke(app, ["analyze", "-m", "deepseek-v3", "-H", "h200", "--tp", "8", "--pp", "2",
                                 "-b", "1,8", "--format", "json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert (d["settings"]["tp"], d["settings"]["pp"], d["settings"]["gpus"]) == (8, 2, 16)


# --------------------------------------------------------------------------- expert parallelism


def test_ep_splits_only_the_moe_layers_of_a_mixed_stack():
    # ep 2: 2 of the 4 experts per GPU in the MoE layers; the dense FFN stays whole.
    # per GPU: 2 x (1024 + 2048 + 32) + 2 x (1024 + 2 x 1024 + 64 + 32) + 336 = 12880 weights = 25760 B
    m, par = mixed(), Parallelism(ep=2)
    assert weight_split(m, par, Dtypes()).total_bytes == 25760
    ops = rows(enumerate_ops(m, "decode", 2, kv_len=3, parallel=par))
    # dispatch and combine in the 2 MoE layers only: 4 all-to-alls, each 1 token x 2 routes x 16 x 2 B = 64 B
    assert (ops["ep_alltoall"].launches, ops["ep_alltoall"].bytes) == (4, 256)
    # the dense layers' FFN is that of the group's 1 sequence: 2 layers x 2 x 16 x 64 = 4096 FLOPs
    assert ops["ffn_up (dense 64)"].flops == 4096
    # experts a GPU touches: 2 tokens (1 per group) x 2 routes over 4 experts, 4 x (1 - (1/2)^2) = 3,
    # half of them its own: 1.5 of 2 x 16 x 32 weights = 1536 B per layer, 3072 B over the 2 MoE layers
    assert ops["ffn_up (2 of 4 x 32)"].weight_bytes == 3072


def test_layouts_a_stack_cannot_take_are_one_line():
    bad = mixed(layers=[{"count": 2, "n_expert": 1, "d_ff": 64}, {"count": 2, "n_expert": 6, "n_expert_active": 2, "d_ff": 32}],
                n_expert=4)
    with pytest.raises(BatchprofError, match=r"--ep 4 does not divide the 6 experts of mixed's 2 of 6 x 32 layers"):
        memory_use(bad, Scenario(prompt_len=8, gen_len=4), 1, Parallelism(ep=4))
    with pytest.raises(BatchprofError, match=r"--tp 3 does not divide the FFN width of mixed's dense 64 layers"):
        memory_use(mixed(), Scenario(prompt_len=8, gen_len=4), 1, Parallelism(tp=3))
    # the mixed stack itself fits ep 2 (2 experts per GPU); with 80 GB it is not memory that limits it
    assert max_batch(mixed(), HW, Scenario(prompt_len=8, gen_len=4), Parallelism(ep=2)) > 10**6


def test_rows_of_one_kernel_add_up_over_the_groups_of_a_stack():
    """mixed's dense and MoE layers share their attention: one qkv_proj row and one attn_score row, launched by
    all 4 layers. Decode of batch 1 over 3 cached tokens (4 keys), fp16, per layer: qkv_proj 2 x 16 x 48 = 1536
    FLOPs, 32 B in + 1536 B of weights + 96 B out = 1664 B; attn_score 4 heads x 2 x 4 dims x 4 keys = 128 FLOPs,
    queries 32 B + keys 4 x 4 heads x 4 x 2 B = 128 B + scores 32 B = 192 B."""
    ops = {o.op: o for o in enumerate_ops(mixed(), "decode", 1, kv_len=3)}
    qkv, score = ops["qkv_proj"], ops["attn_score"]
    assert (qkv.flops, qkv.bytes, qkv.weight_bytes, qkv.launches) == (4 * 1536, 4 * 1664, 4 * 1536, 4)
    assert (score.flops, score.bytes, score.weight_bytes, score.launches) == (4 * 128, 4 * 192, 0, 4)


def test_attention_sinks_are_split_with_their_query_heads():
    """One sink logit per query head and layer (gpt-oss): mixed's 4 heads x 4 layers = 16 values, 32 B in fp16 on
    one GPU; over tp 2 each GPU holds the sinks of its 2 heads, 16 B, and no GPU keeps them whole."""
    for tp, share in ((1, 32), (2, 16)):
        plain = weight_split(mixed(), Parallelism(tp=tp), Dtypes.of("fp16"))
        sinks = weight_split(mixed(attention_sinks=True), Parallelism(tp=tp), Dtypes.of("fp16"))
        assert (sinks.sharded_bytes - plain.sharded_bytes, sinks.replicated_bytes - plain.replicated_bytes) == (share, 0)


def test_a_stage_model_is_named_for_its_layout_and_a_stage_outside_it_is_one_line():
    par = Parallelism(tp=2, pp=2)
    s = stage_model(mixed(), par)  # stage 0 by default: the two dense layers
    assert (s.name, s.n_layer, s.n_head, s.d_ff, s.layer_order) == ("mixed/TP 2 x PP 2 x EP 1 = 4 GPUs", 2, 2, 16, ())
    assert [(g.count, g.n_expert, g.d_ff) for g in s.layer_groups] == [(2, 1, 32)]  # 64 // 2
    assert [(g.count, g.n_expert, g.d_ff) for g in stage_model(mixed(), par, 1).layer_groups] == [(2, 4, 16)]
    for stage in (2, -1):
        with pytest.raises(BatchprofError) as e:
            stage_model(mixed(), par, stage)
        assert str(e.value) == f"pipeline stage {stage} does not exist in TP 2 x PP 2 x EP 1 = 4 GPUs (stages 0 to 1)"
    assert stage_model(mixed(), Parallelism()) == mixed()  # one GPU: the model itself


# --------------------------------------------------------------------------- the profile key


@pytest.mark.parametrize("order, says", [
    ([0, 0, 0, 1], "places 3 layers in layers[0], whose count is 2"),
    ([0, 2], "must be a list of at most n_layer=4 indices of 'layers' groups (0 to 1)"),
    ("01", "must be a list of at most n_layer=4 indices"),
])
def test_a_bad_layer_order_is_one_line(order, says):
    with pytest.raises(ProfileError, match=r"t: field 'layer_order': " + says.replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[").replace("]", r"\]")):
        mixed(layer_order=order)


def test_a_bad_layer_order_in_a_profile_file_exits_2(tmp_path):
    import yaml

    f = tmp_path / "m.yaml"
    f.write_text(yaml.safe_dump(MIXED | {"layer_order": [1, 1, 1, 0]}))
    r = CliRunner().invoke(app, ["analyze", "-m", str(f), "-H", "h100-sxm", "-b", "1"])
    assert r.exit_code == 2
    assert "field 'layer_order': places 1 layers in layers[0], whose count is 2" in r.output
    assert "Traceback" not in r.output


# --------------------------------------------------------------------------- one inventory of a layer's weights


def test_one_gpu_holds_what_the_model_counts_for_every_profile_and_dtype():
    # the layout's share of each weight and the model's weight bytes are summed from one inventory
    # (ModelSpec.layer_weights): on one GPU they agree to the byte, quantised and per-expert dtypes included
    from gpt_batchprof.profiles import builtin_names

    for name in builtin_names("models"):
        m = load_model(name)
        for w, a, e in (("fp16", "fp16", None), ("int4", "bf16", None), ("fp8", "bf16", "mxfp4" if m.is_moe else None)):
            assert weight_split(m, Parallelism(), Dtypes(weight=w, act=a, kv=a, expert=e)).total_bytes \
                == m.weight_bytes(w, a, e), (name, w, e)


def test_the_inventory_of_a_biased_moe_layer_by_hand():
    # d 16, 4 heads of 4 (2 K/V heads), gelu, 4 experts of 32, biases everywhere:
    # q 256 + kv 2 x 16 x 8 = 256 + out 256; experts 4 x 2 x 16 x 32 = 4096; norms 2 x 16 (rmsnorm);
    # biases q 16, kv 16, out 16, expert up 4 x 32 = 128, expert down 4 x 16 = 64; router 16 x 4 = 64
    m = model_from_mapping({"name": "b", "n_layer": 1, "d_model": 16, "n_head": 4, "n_kv_head": 2, "d_ff": 32,
                            "ffn": "gelu", "vocab_size": 10, "max_seq_len": 8, "norm": "rmsnorm", "bias": True,
                            "n_expert": 4, "n_expert_active": 2}, "t")
    assert {w.what: w.params for w in m.layer_weights()} == {
        "q_proj": 256, "kv_proj": 256, "out_proj": 256, "ffn": 4096, "norms": 32, "q_bias": 16, "kv_bias": 16,
        "out_bias": 16, "ffn_bias": 128, "ffn_down_bias": 64, "router": 64}
    assert (m.layer_matrix_params, m.layer_other_params) == (4864, 336)
    assert m.expert_params == 1024 + 32 + 16  # one expert: 2 x 16 x 32, its up bias 32 and down bias 16
    # tp 4 over 2 K/V heads: each GPU keeps 1 of them whole (replicated), 2 x 16 x 4 = 128 + bias 8;
    # ep 2: 2 experts per GPU cut in 4: 2 x 2 x 16 x 8 = 512, up bias 2 x 8 = 16, down bias 2 x 16 = 32 whole.
    # split: q 64 + out 64 + q bias 4 + experts 512 + up bias 16 = 660; whole: kv 136 + norms 32 + out bias 16
    # + down bias 32 + router 64 = 280; at fp16 x 2 B
    from gpt_batchprof.analytic.parallel import layer_weight_bytes

    assert layer_weight_bytes(m, Parallelism(tp=4, ep=2), Dtypes()) == (1320, 560)


# --------------------------------------------------------------------------- simulate follows the stages


def test_simulate_steps_wait_for_the_slowest_stage_as_analyze_does():
    from gpt_batchprof.analytic.serving import latencies
    from gpt_batchprof.simulate import StepModel

    par = Parallelism(pp=2)
    for m, slow in ((mixed(), 1), (mixed(layer_order=[1, 1, 0, 0]), 0)):
        steps = StepModel(m, HW, parallel=par, launch="eager")
        slowest = StepModel(m, HW, parallel=par, launch="eager", stage=slow)
        other = StepModel(m, HW, parallel=par, launch="eager", stage=1 - slow)
        # the MoE stage (4 tokens read 3.75 experts a layer, the dense one 1 FFN) is the slower
        assert steps.decode_step_s(4, 32) == slowest.decode_step_s(4, 32) > other.decode_step_s(4, 32)
        assert steps.mixed_step_s(0, 0, [(8, 0)], 1) == max(
            slowest.mixed_step_s(0, 0, [(8, 0)], 1), other.mixed_step_s(0, 0, [(8, 0)], 1))
        # a decode step at 32 cached tokens (a multiple of the 16-token grid) is analyze's ITL there
        sc = Scenario(prompt_len=8, gen_len=4, context_len=32, launch="eager")
        assert steps.decode_step_s(4, 32) == pytest.approx(latencies(m, HW, sc, 4, par)[1], rel=1e-12)


def test_a_spec_rebuilt_with_other_groups_does_not_keep_a_stale_order():
    # tests and tools shrink a stack to one layer per kind with dataclasses.replace; the 61-layer order
    # of DeepSeek-V3 no longer fits 2 layers, so the groups run one after another: MoE, then dense
    import dataclasses

    m = load_model("deepseek-v3")
    small = dataclasses.replace(m, n_layer=2, layer_groups=tuple(dataclasses.replace(g, count=1)
                                                                 for g in m.layer_groups))
    assert small.layer_sequence() == (0, 1)
    assert [[(g.count, g.n_expert) for g in s] for s in stage_groups(small, 2)] == [[(1, 256)], [(1, 1)]]


def test_the_header_names_what_a_latent_attention_gpu_keeps_whole():
    from typer.testing import CliRunner

    from gpt_batchprof.cli import app

    out = " ".join(CliRunner().invoke(app, ["analyze", "-m", "deepseek-v3", "-H", "h200", "--tp", "8", "-b", "1"]).output.split())
    assert "replicated (norms, row-parallel biases, router, latent attention's down projections)" in out
    out = " ".join(CliRunner().invoke(app, ["analyze", "-m", "llama-3-70b", "-H", "h200", "--tp", "8", "-b", "1"]).output.split())
    assert "K/V heads when n_kv_head < tp" in out


def test_each_gpu_holds_its_share_of_a_groups_shared_expert():
    # the MoE layers of the mixed stack with a shared expert 96 wide; fp16, fused, prefill of 8 tokens.
    # One GPU: residual and normed copy 2 x 8 x 16 = 256, the widest tensor the MoE layers' FFN inner one,
    # 8 x (2 active x 32 + 96) = 1280: (256 + 1280) x 2 + logits 10 x 4 = 3112 B.
    # tp 2: each expert's width and the shared expert's halved, 8 x (2 x 16 + 48) = 640; the vocabulary
    # 10 -> 5 per GPU: (256 + 640) x 2 + 5 x 4 = 1812 B
    m = mixed(d_ff_shared=96)
    sc = Scenario(prompt_len=8, gen_len=2, dtypes=Dtypes.of("fp16"), attention="fused")
    assert memory_use(m, sc, 1).activation_bytes == 3112
    assert memory_use(m, sc, 1, Parallelism(tp=2)).activation_bytes == 1812
