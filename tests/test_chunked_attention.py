"""Chunked attention (Llama 4's ``attention_chunk_size``: a query sees only the keys of its own chunk) and the
Llama 4 family: numbers worked by hand for one chunked layer, its KV cache, the decode sum across chunk
boundaries, the config.json import (tiny and full-size configs through the CLI) and parameter counts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gpt_batchprof.analytic import Dtypes, Parallelism, Scenario, enumerate_ops, memory_use, serving_report
from gpt_batchprof.analytic.gpt import attention_ops
from gpt_batchprof.analytic.ops import causal_pairs
from gpt_batchprof.analytic.roofline import step_time
from gpt_batchprof.analytic.serving import decode_attention_time, max_batch
from gpt_batchprof.cli import app
from gpt_batchprof.errors import BatchprofError, ProfileError
from gpt_batchprof.profiles import (
    hardware_from_mapping, load_hardware, load_model, model_from_hf_config, model_from_mapping,
)

HF = Path(__file__).parent / "data" / "hf"
runner = CliRunner()

# One layer, d 64, 4 heads of 16 (no GQA), GELU FFN of 128, vocab 100, chunks of 4 positions (0-3, 4-7, 8-11, ...).
ONE = {"name": "chunked", "n_layer": 1, "d_model": 64, "n_head": 4, "d_ff": 128, "ffn": "gelu", "vocab_size": 100,
       "max_seq_len": 64, "attention_chunk": 4}
HW = {"name": "g", "kind": "gpu", "memory_gb": 80, "memory_bandwidth_gb_s": 2000, "peak_tflops": {"fp16": 300},
      "launch_overhead_us": 3, "interconnect": {"name": "x", "bandwidth_gb_s": 100}}


def one(**over):
    return model_from_mapping(ONE | over, "test")


def rows(ops):
    return {(o.op, o.shape.variant): o for o in ops}


# --------------------------------------------------------------------------- one chunked layer by hand


def test_visible_pairs_follow_the_chunk_boundaries():
    # prompt of 10 in chunks of 4: chunks 4, 4, 2 -> (1+2+3+4) + (1+2+3+4) + (1+2) = 10 + 10 + 3 = 23 pairs,
    # against 55 causal and 34 in a window of 4
    assert causal_pairs(10, 10, chunk=4) == 23
    assert (causal_pairs(10, 10), causal_pairs(10, 10, 4)) == (55, 34)
    # 5 new tokens (positions 6..10) after 6 cached: 6 sees 4..6 (3), 7 sees 4 keys, 8 starts a chunk (1), 9: 2, 10: 3
    # = 13 pairs; the keys in view are 6 mod 4 = 2 cached of the first query's chunk + 5 new = 7 (positions 4..10)
    assert causal_pairs(5, 7, chunk=4) == 13
    assert one().keys_in_view(6, 5) == 7


def test_chunk_pairs_equal_a_count_of_every_visible_pair():
    # queries at positions L - q .. L - 1 (position 0 starts a chunk); key k visible to query p when
    # floor(p / C) * C <= k <= p: counted one by one
    for C in (1, 2, 3, 5, 8):
        for L in range(1, 26):
            for q in range(1, L + 1):
                seen = sum(1 for p in range(L - q, L) for k in range(L) if p - p % C <= k <= p)
                assert causal_pairs(q, L, chunk=C) == seen, (C, L, q)


def test_one_chunked_layer_prefill_worked_by_hand():
    # prefill of 10 tokens, batch 1, fp16. Unfused: the full 10 x 10 rectangle (the chunk boundaries are a mask
    # applied afterwards, as a window is): 4 heads x 100 = 400 scores, 2 x 16 x 400 = 12,800 FLOPs;
    # bytes: queries 4 x 10 x 16 x 2 = 1280, K of the 10 keys 1280, scores 800 = 3360 B. Context the same FLOPs and
    # bytes (probabilities 800 + V 1280 + output 1280); softmax reads and writes the 400 scores: 1600 B.
    unf = rows(enumerate_ops(one(), "prefill", 1, new_tokens=10))
    assert (unf[("attn_score", "")].flops, unf[("attn_score", "")].bytes) == (12_800, 3360)
    assert (unf[("attn_context", "")].flops, unf[("attn_context", "")].bytes) == (12_800, 3360)
    assert unf[("attn_softmax", "")].bytes == 1600
    # fused: only the 23 visible pairs per head: 4 x 16 x 4 heads x 23 = 5888 FLOPs (full causal: 14,080);
    # bytes: Q and output 2 x 1280, K and V 2 x 1280 = 5120 B
    fused = rows(enumerate_ops(one(), "prefill", 1, new_tokens=10, attention="fused"))[("attn_fused", "")]
    assert (fused.flops, fused.bytes) == (5888, 5120)
    # a prompt chunk of 5 after 6 cached (chunked prefill): 13 pairs, 4 x 16 x 4 x 13 = 3328 FLOPs; the 7 keys in view
    # (positions 4..10): Q and output 2 x (4 x 5 x 16 x 2) = 1280, K and V 2 x (4 x 7 x 16 x 2) = 1792 -> 3072 B
    cont = rows(enumerate_ops(one(), "prefill", 1, new_tokens=5, kv_len=6, attention="fused"))[("attn_fused", "")]
    assert (cont.flops, cont.bytes) == (3328, 3072)


@pytest.mark.parametrize("kv_len, keys", [(10, 3), (8, 1), (7, 4), (11, 4), (3, 4), (0, 1)])
def test_one_chunked_layer_decode_worked_by_hand(kv_len, keys):
    # decode with kv_len cached: the new token sits at position kv_len and sees its chunk's keys from
    # floor(kv_len / 4) * 4 up to itself: (kv_len mod 4) + 1 of them (10 cached: positions 8, 9, 10 -> 3;
    # 8 cached: a new chunk, itself only). attn_score: 2 x 16 x 4 heads x keys FLOPs; bytes: queries
    # 4 x 16 x 2 = 128, K of the keys 4 x keys x 16 x 2 = 128 keys, scores 4 x keys x 2 = 8 keys.
    s = rows(enumerate_ops(one(), "decode", 1, kv_len=kv_len))[("attn_score", "")]
    assert (s.flops, s.bytes) == (128 * keys, 128 + 136 * keys)
    assert {10: 3, 8: 1, 7: 4, 11: 4, 3: 4, 0: 1}[kv_len] == keys  # the convention, spelled out


def test_a_chunked_layer_caches_at_most_one_chunk():
    # K and V of one layer: 2 x 64 x 2 B = 256 B per token. prompt 8 + gen 4 - 1 = 11 positions: the chunked
    # layer keeps 4 tokens (1024 B per sequence, as vLLM's chunked local attention reserves a whole chunk),
    # a full layer 11 (2816 B). 2 sequences.
    sc = Scenario(prompt_len=8, gen_len=4)
    assert memory_use(one(), sc, 2).kv_cache_bytes == 2 * 1024
    assert memory_use(one(attention_chunk=None), sc, 2).kv_cache_bytes == 2 * 2816
    # shorter than a chunk: what was written, 2 + 2 - 1 = 3 tokens
    assert memory_use(one(), Scenario(prompt_len=2, gen_len=2), 1).kv_cache_bytes == 3 * 256
    # a stack of a chunked and a full layer keeps 4 + 11 tokens: 3840 B per sequence
    stack = one(n_layer=2, layers=[{"count": 1}, {"count": 1, "attention_chunk": None}])
    assert memory_use(stack, sc, 2).kv_cache_bytes == 2 * 3840


def test_the_largest_batch_follows_the_capped_cache():
    # a device of 1 MB (1e6 B). Weights, fp16: the layer's qkv 64 x 192 + out 64 x 64 + FFN 2 x 64 x 128 = 32,768,
    # 2 layernorms 256, embedding and head 2 x 6400, final norm 128 = 45,952 -> 91,904 B; 908,096 B left.
    # Per sequence at prompt 8 + gen 4: activations of the prefill (the widest: residual and its norm 2 x 8 x 64,
    # the QKV output 8 x 192, at 2 B, + fp32 logits 400 B) = 5520 B, and the KV cache: chunked 1024 B
    # -> 908,096 // 6544 = 138 sequences; full 2816 B -> 908,096 // 8336 = 108
    hw = hardware_from_mapping(HW | {"memory_gb": 1e-3}, "t")
    sc = Scenario(prompt_len=8, gen_len=4)
    assert memory_use(one(), sc, 1).weights_bytes == 91_904
    assert memory_use(one(), sc, 1).activation_bytes == 5520
    assert max_batch(one(), hw, sc) == 138
    assert max_batch(one(attention_chunk=None), hw, sc) == 108


def test_decode_activations_span_the_keys_of_the_current_chunk():
    # 64 heads of 1 (d 64), GELU FFN of 16, chunks of 8, unfused; prompt 1, ITL quoted at 9 cached tokens: the
    # decode step sees 9 mod 8 + 1 = 2 keys, its score and probability matrices 2 x 64 heads x 2 keys = 256 values,
    # wider than the QKV output (192) or the prefill's (QKV 192, scores 128); with the residual and its norm
    # (2 x 64) at 2 B and the fp32 logits (100 x 4 B): (128 + 256) x 2 + 400 = 1168 B. (A whole chunk of 8 keys
    # would give 1024 score values: 2704 B.)
    m = one(n_head=64, head_dim=1, d_ff=16, attention_chunk=8)
    sc = Scenario(prompt_len=1, gen_len=12, context_len=9)
    assert memory_use(m, sc, 1).activation_bytes == 1168


# (2, 5): steps in two neighbouring chunks, none whole between; (5, 2): one step; (3, 1): none
@pytest.mark.parametrize("prompt, gen", [(8, 201), (10, 301), (2, 3), (5, 40), (2, 5), (5, 2), (3, 1)])
def test_decode_sum_across_chunk_boundaries_equals_the_step_by_step_sum(prompt, gen):
    # the closed form cuts the steps at the chunk boundaries; against every step's attention priced one by one
    hw = hardware_from_mapping(HW, "t")
    for m in (one(max_seq_len=512), one(max_seq_len=512, n_layer=2, layers=[{"count": 1}, {"count": 1, "attention_chunk": None}])):
        sc = Scenario(prompt_len=prompt, gen_len=gen)
        walked = sum(step_time(attention_ops(m, "decode", 2, 1, kv, Dtypes(), "unfused"), hw, "eager")
                     for kv in range(prompt, prompt + gen - 1))
        assert decode_attention_time(m, hw, sc, 2, "eager") == pytest.approx(walked, rel=1e-12)


def test_a_chunk_keeps_the_decode_sum_below_full_attention():
    # 200 decode steps from 8 cached: full attention reads 9..208 keys, chunks of 4 at most 4
    hw = hardware_from_mapping(HW, "t")
    sc = Scenario(prompt_len=8, gen_len=201)
    chunked = decode_attention_time(one(max_seq_len=512), hw, sc, 64, "eager")
    full = decode_attention_time(one(max_seq_len=512, attention_chunk=None), hw, sc, 64, "eager")
    assert chunked < full


def test_simulate_steps_follow_the_chunks():
    # the step model interpolates decode attention on a grid of kv lengths; with chunks of 24 (not a multiple of
    # its 16) the grid becomes 8 and no cell interpolates across a chunk boundary: every length is analyze's step
    from gpt_batchprof.simulate.steptime import StepModel

    hw = hardware_from_mapping(HW, "t")
    m = one(attention_chunk=24, max_seq_len=512)
    steps = StepModel(m, hw)
    assert steps.kv_grid == 8
    for kv in range(0, 80):
        want = step_time(enumerate_ops(m, "decode", 3, kv_len=kv), hw, steps.launch)
        assert steps.decode_step_s(3, kv) == pytest.approx(want, rel=1e-9), kv


def test_speculative_steps_follow_the_target_chunks():
    # speculative decoding's per-token time is interpolated on the same grid: with a chunked target (and a
    # full-attention draft) every length is the step analyze's speculative model gives
    from gpt_batchprof.analytic.speculative import Speculation, spec_step
    from gpt_batchprof.simulate.steptime import StepModel

    hw = hardware_from_mapping(HW, "t")
    m = one(attention_chunk=24, max_seq_len=512)
    spec = Speculation(k=3, acceptance=0.7, draft=one(name="draft", attention_chunk=None, max_seq_len=512))
    steps = StepModel(m, hw, speculation=spec)
    for kv in range(0, 80):
        want = spec_step(m, hw, spec, 3, kv, Dtypes(), "unfused", steps.launch).time_per_token_s
        assert steps.decode_step_s(3, kv) == pytest.approx(want, rel=1e-9), kv


def test_chunked_layers_split_over_gpus_as_windowed_ones_do():
    hw = hardware_from_mapping(HW, "t")
    stack = one(n_layer=2, layers=[{"count": 1}, {"count": 1, "attention_chunk": None}])
    # tp 2 halves the heads: decode at 10 cached, the chunked layer 2 heads x 3 keys x 2 x 16 = 192 FLOPs,
    # the full one 2 x 11 x 32 = 704
    ops = rows(enumerate_ops(stack, "decode", 1, kv_len=10, parallel=Parallelism(tp=2)))
    assert ops[("attn_score", "chunk 4")].flops == 192 and ops[("attn_score", "full")].flops == 704
    # each GPU keeps its 2 of the 4 K/V heads: half of 2 x 3840 B
    assert memory_use(stack, Scenario(prompt_len=8, gen_len=4), 2, Parallelism(tp=2)).kv_cache_bytes == 3840
    # Scout: every layer MoE, chunked or full attention: tensor and expert parallelism apply
    scout = load_model("llama-4-scout")
    serving_report(scout, load_hardware("h200"), Scenario(prompt_len=512, gen_len=8), (1, 8), Parallelism(tp=4, ep=2))
    serving_report(load_model("llama-4-maverick"), load_hardware("h200"), Scenario(prompt_len=512, gen_len=8), (1,),
                   Parallelism(tp=8, pp=2))


def test_pipeline_stages_keep_their_layers_chunks():
    from gpt_batchprof.analytic.parallel import stage_groups

    # a uniform stack of 2 chunked layers over 2 stages: each GPU caches its one layer's chunk, 4 tokens x 256 B
    assert memory_use(one(n_layer=2), Scenario(prompt_len=8, gen_len=4), 1, Parallelism(pp=2)).kv_cache_bytes == 1024
    # Scout over 2 stages: 24 layers each, every 4th full -> 18 chunked + 6 full per stage; at 32,768 positions in
    # bf16 (4096 B per token and layer) a stage caches 18 x 8192 + 6 x 32,768 tokens' K and V = 1,409,286,144 B
    scout = load_model("llama-4-scout")
    assert [[(g.count, g.attention_kind) for g in st] for st in stage_groups(scout, 2)] == \
           [[(18, "chunk 8192"), (6, "full")]] * 2
    sc = Scenario(prompt_len=30_000, gen_len=2769, dtypes=Dtypes.of("bf16"))
    assert memory_use(scout, sc, 1, Parallelism(pp=2)).kv_cache_bytes == 1_409_286_144
    # Maverick: layers run dense, MoE chunked, dense, MoE full: 12 + 6 + 6 per stage
    mav = load_model("llama-4-maverick")
    assert [[(g.count, g.attention_kind, g.n_expert) for g in st] for st in stage_groups(mav, 2)] == \
           [[(12, "chunk 8192", 1), (6, "chunk 8192", 128), (6, "full", 128)]] * 2
    hf = load_model(str(HF / "llama-4-maverick.json"))
    assert hf.layer_sequence() == mav.layer_sequence()


@pytest.mark.parametrize("data, msg", [
    (ONE | {"attention_chunk": 0}, "field 'attention_chunk': must be >= 1, got 0"),
    (ONE | {"sliding_window": 4}, "field 'attention_chunk': a layer has either a sliding window or chunked"),
    (ONE | {"layers": [{"count": 1, "attention_chunk": -2}]}, "field 'layers[0].attention_chunk': must be >= 1"),
    (ONE | {"layers": [{"count": 1, "attention_chunks": 4}]}, "did you mean 'attention_chunk'"),
    (ONE | {"attention_chunks": 4}, "unknown field 'attention_chunks'"),
])
def test_bad_chunk_settings_are_named(data, msg):
    with pytest.raises(ProfileError) as e:
        model_from_mapping(data, "m.yaml")
    assert msg in str(e.value) and "\n" not in str(e.value)


def test_a_group_that_gives_a_window_drops_the_inherited_chunk():
    m = one(n_layer=2, layers=[{"count": 1}, {"count": 1, "sliding_window": 3}])
    assert [(g.attention_chunk, g.sliding_window, g.attention_kind) for g in m.layer_groups] == \
           [(4, None, "chunk 4"), (None, 3, "window 3")]


# --------------------------------------------------------------------------- Llama 4 config.json

# 4 layers, d 64, 4 heads of 16, 2 K/V heads; MoE (4 experts of 32, 1 routed, a shared expert of 32) on every 2nd
# layer (1, 3), dense FFNs of 128 on 0, 2; chunks of 8 but on layer 3 (every 4th: NoPE, full attention).
TINY = {"model_type": "llama4_text", "num_hidden_layers": 4, "hidden_size": 64, "num_attention_heads": 4,
        "num_key_value_heads": 2, "head_dim": 16, "intermediate_size": 32, "intermediate_size_mlp": 128,
        "num_local_experts": 4, "num_experts_per_tok": 1, "interleave_moe_layer_step": 2, "attention_chunk_size": 8,
        "vocab_size": 100, "max_position_embeddings": 256, "tie_word_embeddings": False, "use_qk_norm": True,
        "attention_bias": False, "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "attn_temperature_tuning": True}


def analyze_json(path, *extra):
    r = runner.invoke(app, ["analyze", "-m", str(path), "-H", "h200", "-b", "1", "-f", "json", *extra])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def test_a_tiny_llama4_config_through_the_cli(tmp_path):
    p = tmp_path / "config.json"
    p.write_text(json.dumps(TINY))
    model = analyze_json(p, "--prompt-len", "64", "--gen-len", "16")["model"]
    # layers 0, 2: chunked, dense 128; layer 1: chunked, MoE; layer 3: full, MoE
    assert [(g["count"], g["attention_chunk"], g["n_expert"], g["d_ff"], g["d_ff_shared"])
            for g in model["layer_groups"]] == [(2, 8, 1, 128, 0), (1, 8, 4, 32, 32), (1, None, 4, 32, 32)]
    # attention per layer: q 64x64 + k, v 64x32 + o 64x64 = 12,288; 2 RMSNorms 128 (the L2 qk norm has no weights).
    # dense layer: + 3 x 64 x 128 = 24,576 -> 36,992. MoE layer: + 4 experts x 3 x 64 x 32 = 24,576, the shared
    # expert 6144, the router 64 x 4 = 256 -> 43,392. 2 of each = 160,768; embedding and head 2 x 6400, final
    # norm 64: 173,632. Active: 3 idle experts of 6144 in each MoE layer -> 173,632 - 36,864 = 136,768.
    assert (model["n_params"], model["n_params_active"]) == (173_632, 136_768)
    ops = {(o["op"], o["shape"]["variant"]) for o in
           analyze_json(p, "--prompt-len", "64", "--gen-len", "16", "--per-op", "--phase", "decode",
                        "--attention", "unfused")["ops"]}
    assert ("attn_score", "chunk 8") in ops and ("attn_score", "full") in ops


def test_the_llama4_wrapper_reads_its_text_config_and_counts_the_vision_tower():
    scout = model_from_hf_config(json.loads((HF / "llama-4-scout.json").read_text()), "c.json", "s")
    # vision_config: h 1408, 34 layers, intermediate 5632, patch 14 on 336-pixel images, projector 4096 -> 4096,
    # vision output 4096 into d_model 5120:
    #   patch embedding 3 x 14 x 14 x 1408 = 827,904; class embedding 1408; positions (24^2 + 1) x 1408 = 812,416;
    #   LayerNorms pre / post 4 x 1408 = 5632; a layer: q, k, v, o 4 x (1408^2 + 1408) = 7,935,488,
    #   MLP 1408 x 5632 + 5632 + 5632 x 1408 + 1408 = 15,866,752, two LayerNorms 5632 -> 23,807,872, x 34
    #   = 809,467,648; adapter 5632 x 4096 + 4096^2 = 39,845,888; projector 4096 x 5120 = 20,971,520
    #   -> 871,932,416 (transformers' Llama4VisionModel + Llama4MultiModalProjector count the same)
    assert scout.vision_params == 871_932_416
    text = model_from_hf_config(json.loads((HF / "llama-4-scout.json").read_text())["text_config"], "c.json", "s")
    assert text.vision_params == 0 and scout.n_params - text.n_params == 871_932_416
    assert scout.n_params_active == text.n_params_active  # a text token does not run the vision tower
    # the vision tower is weight memory, not per-token work: same operators with and without it
    assert enumerate_ops(scout, "decode", 4, kv_len=100) == enumerate_ops(text, "decode", 4, kv_len=100)
    sc = Scenario(prompt_len=16, gen_len=4, dtypes=Dtypes.of("bf16"))
    assert memory_use(scout, sc, 1).weights_bytes - memory_use(text, sc, 1).weights_bytes == 2 * 871_932_416


def test_the_vision_tower_sits_whole_on_the_first_gpu():
    import dataclasses

    from gpt_batchprof.analytic.parallel import weight_split

    scout, dt = load_model("llama-4-scout"), Dtypes.of("bf16")
    assert weight_split(scout, Parallelism(), dt).total_bytes == scout.weight_bytes("bf16", "bf16")
    # tp 4: every GPU keeps a quarter of the language model's matrices, the first one the whole vision tower
    # (871,932,416 weights at 2 B, as a data-parallel encoder)
    text = dataclasses.replace(scout, vision_params=0)
    with_tower, without = weight_split(scout, Parallelism(tp=4), dt), weight_split(text, Parallelism(tp=4), dt)
    assert with_tower.replicated_bytes - without.replicated_bytes == 2 * 871_932_416
    assert with_tower.sharded_bytes == without.sharded_bytes


def test_the_vision_count_is_what_transformers_builds():
    torch = pytest.importorskip("torch")
    tr = pytest.importorskip("transformers.models.llama4.modeling_llama4")
    from transformers import Llama4Config

    cfg = json.loads((HF / "llama-4-scout.json").read_text())
    cfg["text_config"]["attn_temperature_tuning"] = True  # transformers 5.x's strict config wants a bool (Meta's: 4)
    c = Llama4Config(text_config=cfg["text_config"], vision_config=cfg["vision_config"])
    with torch.device("meta"):
        built = sum(p.numel() for m in (tr.Llama4VisionModel(c.vision_config), tr.Llama4MultiModalProjector(c))
                    for p in m.parameters())
    assert built == load_model(str(HF / "llama-4-scout.json")).vision_params


@pytest.mark.parametrize("config, builtin", [("llama-4-scout", "llama-4-scout"), ("llama-4-maverick", "llama-4-maverick")])
def test_full_size_llama4_configs_through_the_cli_read_as_the_builtins(config, builtin):
    model = analyze_json(HF / f"{config}.json")["model"]
    b = load_model(builtin)
    assert (model["n_params"], model["n_params_active"], model["vision_params"]) == \
           (b.n_params, b.n_params_active, b.vision_params)
    assert [tuple(g.values()) for g in model["layer_groups"]] == \
           [(g.count, g.sliding_window, g.d_ff, g.n_expert, g.n_expert_active, g.d_ff_shared, g.attention_chunk)
            for g in b.layer_groups]


def test_scout_and_maverick_layers_and_parameters_by_hand():
    # attention per layer: q, o 5120 x 5120 = 26,214,400 each, k, v 5120 x 1024 = 5,242,880 each -> 62,914,560;
    # 2 RMSNorms 10,240. An expert (gate, up, down) 3 x 5120 x 8192 = 125,829,120, the shared expert as much.
    # Embedding and untied head 2 x 202,048 x 5120 = 2,068,971,520, final norm 5120.
    scout = load_model("llama-4-scout")
    # Scout: 48 MoE layers of 16 experts: 62,924,800 + 17 x 125,829,120 + router 5120 x 16 = 2,202,101,760 each
    # -> 105,700,884,480 + 2,068,976,640 = 107,769,861,120; active: 1 routed + shared, 314,664,960 x 48
    # + 2,068,976,640 = 17,172,894,720
    assert [(g.count, g.attention_kind) for g in scout.layer_groups] == [(36, "chunk 8192"), (12, "full")]
    assert scout.n_params - scout.vision_params == 107_769_861_120
    assert scout.n_params_active == 17_172_894_720
    mav = load_model("llama-4-maverick")
    # Maverick: 24 dense layers of 62,924,800 + 3 x 5120 x 16384 = 314,583,040; 24 MoE layers of 128 experts,
    # 62,924,800 + 129 x 125,829,120 + router 655,360 = 16,295,536,640 -> 400,711,848,960 with embeddings;
    # active: 24 x 314,583,040 + 24 x (62,924,800 + 2 x 125,829,120 + 655,360) + 2,068,976,640 = 17,184,691,200
    assert [(g.count, g.attention_kind, g.ffn_kind) for g in mav.layer_groups] == [
        (24, "chunk 8192", "dense 16384"), (12, "chunk 8192", "1 of 128 x 8192 + shared 8192"),
        (12, "full", "1 of 128 x 8192 + shared 8192")]
    assert mav.n_params - mav.vision_params == 400_711_848_960
    assert mav.n_params_active == 17_184_691_200


@pytest.mark.parametrize("name, total", [("llama-4-scout", 109e9), ("llama-4-maverick", 400e9)])
def test_llama4_totals_match_the_card_to_1_percent(name, total):
    # 108.64B (-0.33%) and 401.58B (+0.40%), vision tower included as the card's totals include it; the active
    # figures (+1.02%, +1.09% of "17B") are in test_models.PUBLISHED, marked as the known miss of the 1% goal
    assert load_model(name).n_params == pytest.approx(total, rel=0.01)


def test_scout_kv_cache_at_32k_by_hand():
    # bf16 K and V of 8 heads x 128 per layer: 4096 B per token. 32,768 positions (prompt 30,000 + gen 2769 - 1):
    # 36 chunked layers keep 8192 tokens (1,207,959,552 B), 12 full ones 32,768 (1,610,612,736 B) = 2,818,572,288 B
    # per sequence, against 48 x 32,768 x 4096 = 6,442,450,944 B were every layer full
    sc = Scenario(prompt_len=30_000, gen_len=2769, dtypes=Dtypes.of("bf16"))
    assert memory_use(load_model("llama-4-scout"), sc, 1).kv_cache_bytes == 2_818_572_288


@pytest.mark.parametrize("over, msg", [
    ({"attention_chunk_size": 0}, "field 'attention_chunk_size': must be an integer >= 1, got 0"),
    ({"attention_chunk_size": "8k"}, "field 'attention_chunk_size': must be an integer >= 1"),
    ({"attention_chunk_sise": 8192}, "unknown field 'attention_chunk_sise'; did you mean 'attention_chunk_size'?"),
    ({"interleave_moe_layer_step": 0}, "field 'interleave_moe_layer_step': must be an integer >= 1, got 0"),
    ({"no_rope_layers": [1, 0]}, "field 'no_rope_layers': must list 1 (RoPE) or 0 (NoPE) for each of the 4 layers"),
    ({"layer_types": ["sliding_attention"] * 4}, "field 'layer_types': 'sliding_attention' is not modelled for llama4"),
    ({"attention_bias": True}, "field 'attention_bias': biases on q, k, v and o only are not modelled"),
    ({"moe_layers": "odd"}, "field 'moe_layers': must be a list of layer indices"),
    ({"num_hidden_layers": "4"}, "field 'num_hidden_layers': must be an integer >= 1, got '4'"),
    ({"num_attention_heads": 0}, "field 'num_attention_heads': must be an integer >= 1, got 0"),
    ({"num_local_experts": None}, "field 'num_local_experts': missing"),
])
def test_bad_llama4_configs_are_one_line_and_exit_2(tmp_path, over, msg):
    p = tmp_path / "config.json"
    p.write_text(json.dumps(TINY | over))
    r = runner.invoke(app, ["analyze", "-m", str(p)])
    assert r.exit_code == 2, r.output
    assert msg in r.output and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1


@pytest.mark.parametrize("edit, msg", [
    (lambda c: c | {"text_config": 3}, "field 'text_config': missing or not an object"),
    (lambda c: c | {"vision_config": c["vision_config"] | {"num_hidden_layer": 34}},
     "vision_config: unknown field 'num_hidden_layer'; did you mean 'num_hidden_layers'?"),
    (lambda c: c | {"vision_config": c["vision_config"] | {"hidden_size": 0}},
     "vision_config: field 'hidden_size': must be an integer >= 1, got 0"),
    (lambda c: c | {"text_config": c["text_config"] | {"attention_chunk_size": 0}},
     "text_config: field 'attention_chunk_size': must be an integer >= 1, got 0"),
])
def test_bad_llama4_wrappers_are_one_line_and_exit_2(tmp_path, edit, msg):
    p = tmp_path / "config.json"
    p.write_text(json.dumps(edit(json.loads((HF / "llama-4-scout.json").read_text()))))
    r = runner.invoke(app, ["analyze", "-m", str(p)])
    assert r.exit_code == 2, r.output
    assert msg in r.output and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1


def test_llama4_layer_patterns_as_transformers_derives_them():
    # moe_layers overrides interleave_moe_layer_step; an explicit layer_types overrides no_rope_layers;
    # a null chunk size makes every layer full; an empty no_rope_layers is the default pattern (as transformers)
    m = model_from_hf_config(TINY | {"moe_layers": [0]}, "c.json", "t")
    assert sorted((g.count, g.n_expert, g.attention_chunk or 0) for g in m.layer_groups) == \
           sorted([(1, 4, 8), (2, 1, 8), (1, 1, 0)])
    m = model_from_hf_config(TINY | {"layer_types": ["full_attention", "chunked_attention"] * 2}, "c.json", "t")
    assert sorted((g.count, g.n_expert, g.attention_chunk or 0) for g in m.layer_groups) == \
           sorted([(2, 1, 0), (2, 4, 8)])
    m = model_from_hf_config(TINY | {"attention_chunk_size": None}, "c.json", "t")
    assert {g.attention_chunk for g in m.layer_groups} == {None} and m.attention_chunk is None
    assert model_from_hf_config(TINY | {"no_rope_layers": []}, "c.json", "t").layer_groups == \
           model_from_hf_config(TINY, "c.json", "t").layer_groups
    # the chunk size defaults to 8192 when the key is absent (Llama4TextConfig)
    no_key = {k: v for k, v in TINY.items() if k != "attention_chunk_size"}
    assert model_from_hf_config(no_key, "c.json", "t").attention_chunk == 8192
    # on a llama label the Llama 4 keys are refused, not dropped
    with pytest.raises(ProfileError, match="field 'attention_chunk_size': chunked attention is not read"):
        model_from_hf_config(TINY | {"model_type": "llama", "interleave_moe_layer_step": 1,
                                     "num_local_experts": 1, "intermediate_size_mlp": None}, "c.json", "t")


def test_bench_times_the_chunked_and_full_rows_apart(tmp_path):
    # the tiny Llama 4 timed on this CPU: a decode row for each attention kind, labelled with it
    pytest.importorskip("torch")
    p = tmp_path / "config.json"
    p.write_text(json.dumps(TINY))
    r = runner.invoke(app, ["bench", "-m", str(p), "--prompt-len", "32", "--gen-len", "8", "-b", "1",
                            "--phase", "decode", "--op", "attn_score"])
    assert r.exit_code == 0, r.output
    assert "attn_score (chunk 8)" in r.output and "attn_score (full)" in r.output
