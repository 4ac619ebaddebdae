"""Memory, length, launch-overhead and model-family numbers (issue 7), each worked out by hand."""

import json

import pytest
from typer.testing import CliRunner

from gpt_batchprof.analytic import Dtypes, Scenario, enumerate_ops, memory_use, predict, serving_report
from gpt_batchprof.analytic.ops import causal_pairs
from gpt_batchprof.analytic.serving import latencies
from gpt_batchprof.cli import app
from gpt_batchprof.profiles import hardware_from_mapping, load_hardware, load_model, model_from_hf_config

runner = CliRunner()
MiB = 2**20


def analyze_json(*args):
    r = runner.invoke(app, ["analyze", "-f", "json", *args])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


# --------------------------------------------------------------------------- memory and lengths


def test_memory_covers_the_context_of_the_analysed_decode_step():
    # llama-2-7b: 524,288 B of KV per token. A decode step at 4000 cached tokens holds 4001 of them:
    # 64 x 4001 x 524,288 = 134,251,282,432 B, more than an H100's 81,559 MiB = 85,520,809,984 B.
    d = analyze_json("-m", "llama-2-7b", "-H", "h100-sxm", "-b", "64", "--context-len", "4000")
    s = d["summary"][0]
    assert s["kv_cache_bytes"] == 64 * 4001 * 524_288
    assert s["fits"] is False
    # max batch: (85,520,809,984 - 13,476,831,232 weights) / (4001 x 524,288 + activations) < 35
    assert d["max_batch"] < 35


def test_generation_caches_prompt_plus_gen_minus_one_positions():
    m = load_model("gpt2")  # max_seq_len 1024
    mem = memory_use(m, Scenario(prompt_len=1000, gen_len=25), 1)
    # 1000 + 25 - 1 = 1024 positions x (2 x 12 layers x 768 x 2 B = 36,864 B)
    assert mem.kv_cache_bytes == 1024 * 36_864


def test_length_limit_is_prompt_plus_gen_minus_one():
    ok = runner.invoke(app, ["analyze", "-m", "gpt2", "-H", "t4", "-b", "1", "--prompt-len", "1024", "--gen-len", "1"])
    assert ok.exit_code == 0, ok.output
    bad = runner.invoke(app, ["analyze", "-m", "gpt2", "-H", "t4", "-b", "1", "--prompt-len", "1024", "--gen-len", "2"])
    assert bad.exit_code == 2
    assert "--prompt-len + --gen-len - 1 = 1025 positions exceeds gpt2's max_seq_len 1024" in bad.output
    ctx = runner.invoke(app, ["analyze", "-m", "gpt2", "-H", "t4", "--context-len", "1024"])
    assert ctx.exit_code == 2 and "--context-len + 1 = 1025 positions" in ctx.output


def test_sweep_prefill_of_the_full_context_is_accepted():
    r = runner.invoke(app, ["sweep", "--no-progress", "-m", "gpt2", "-H", "t4", "-s", "1024", "--phase", "prefill",
                            "-b", "1", "-f", "json"])
    assert r.exit_code == 0, r.output


def test_bench_refuses_a_prompt_longer_than_the_model():
    r = runner.invoke(app, ["bench", "--device", "cpu", "-m", "gpt2", "--prompt-len", "5000", "-b", "1"])
    assert r.exit_code == 2
    assert "--prompt-len + --gen-len - 1 = 5127 positions exceeds gpt2's max_seq_len 1024" in r.output


def test_device_memory_is_what_the_device_reports():
    assert load_hardware("h100-sxm").memory_bytes == 81_559 * MiB  # nvidia-smi: 81559MiB
    assert load_hardware("a100-80gb").memory_bytes == 80 * 2**30
    assert load_hardware("mi300x").memory_bytes == 205_822_885_888  # rocm-smi, bytes
    assert load_hardware("cpu-generic").memory_bytes == 64e9  # DDR: decimal GB
    hw = hardware_from_mapping({"name": "x", "kind": "gpu", "memory_gib": 2, "memory_bandwidth_gb_s": 1,
                                "peak_tflops": {"fp16": 1}}, "t")
    assert hw.memory_bytes == 2 * 2**30


def test_two_memory_fields_are_refused(tmp_path):
    p = tmp_path / "hw.yaml"
    p.write_text("name: x\nkind: gpu\nmemory_gb: 80\nmemory_mib: 81559\nmemory_bandwidth_gb_s: 1\npeak_tflops: {fp16: 1}\n")
    r = runner.invoke(app, ["analyze", "-H", str(p)])
    assert r.exit_code == 2 and "given 2 times (memory_mib, memory_gb); keep one" in r.output


# --------------------------------------------------------------------------- launch overhead


def test_graphs_charge_the_in_graph_gap_instead_of_the_launch_overhead():
    # llama-2-7b decode: 65 norms + 8 kernels x 32 layers + 1 LM head = 322 kernels per step.
    # a100-80gb: eager 4 us per kernel, graphs 0.5 us: the step differs by 322 x 3.5 us = 1.127 ms.
    m, hw = load_model("llama-2-7b"), load_hardware("a100-80gb")
    eager = latencies(m, hw, Scenario(launch="eager"), 1)
    graphs = latencies(m, hw, Scenario(launch="graphs"), 1)
    assert sum(o.launches for o in Scenario().ops(m, "decode", 1)) == 322
    assert eager[1] - graphs[1] == pytest.approx(322 * 3.5e-6)
    assert latencies(m, hw, Scenario(launch="auto"), 1) == graphs  # auto: graphs on a GPU


def test_graphs_on_a_cpu_are_refused():
    r = runner.invoke(app, ["analyze", "-H", "cpu-generic", "-m", "gpt2", "--launch", "graphs"])
    assert r.exit_code == 2 and "CUDA graphs need a GPU" in r.output
    d = analyze_json("-H", "cpu-generic", "-m", "gpt2", "-b", "1")
    assert d["settings"]["launch"] == "eager"


# --------------------------------------------------------------------------- critical batch, tokens/s


def test_critical_batch_beyond_memory_is_flagged():
    # llama-2-7b on a T4: 15,360 MiB hold the 13.5 GB of weights and a few sequences, while the
    # decode dense layers only turn compute-bound at batch ~200 (65 TFLOP/s / 320 GB/s).
    d = analyze_json("-m", "llama-2-7b", "-H", "t4", "-b", "1")
    assert d["critical_batch"] > d["max_batch"]
    assert d["critical_batch_reachable"] is False
    table = runner.invoke(app, ["analyze", "-m", "llama-2-7b", "-H", "t4", "-b", "1"])
    assert "not reachable" in table.output
    ok = analyze_json("-m", "gpt2", "-H", "a100-80gb", "-b", "1")
    assert ok["critical_batch_reachable"] is True


def test_tokens_per_s_is_defined_in_help():
    r = runner.invoke(app, ["analyze", "--help"], env={"COLUMNS": "200"})
    assert "tokens/s = batch x gen-len / e2e (TTFT included)" in " ".join(r.output.split())


# --------------------------------------------------------------------------- model families


def test_sliding_window_caps_mistral_kv_cache_and_attention_span():
    m = load_model("mistral-7b")
    assert m.sliding_window == 4096
    # 8 KV heads x 128 x 2 (K, V) x 32 layers x 2 B = 131,072 B per token; the cache holds 4096 tokens
    mem = memory_use(m, Scenario(prompt_len=8000, gen_len=1000), 1)
    assert mem.kv_cache_bytes == 4096 * 131_072
    # decode at 8000 cached tokens attends to the last 4096: QK^T = 32 layers x 2 x 128 x 32 heads x 4096
    score = {o.op: o for o in enumerate_ops(m, "decode", 1, kv_len=8000)}["attn_score"]
    assert score.flops == 32 * 2 * 128 * 32 * 4096
    # fused prefill of 6000 tokens: query p sees min(p + 1, 4096) keys:
    # 4096 x 4097 / 2 + (6000 - 4096) x 4096 = 8,390,656 + 7,798,784 = 16,189,440 pairs
    assert causal_pairs(6000, 6000, 4096) == 16_189_440


QWEN15_MOE = {  # Qwen/Qwen1.5-MoE-A2.7B config.json (abridged)
    "model_type": "qwen2_moe", "hidden_size": 2048, "num_hidden_layers": 24, "num_attention_heads": 16,
    "num_key_value_heads": 16, "intermediate_size": 5632, "moe_intermediate_size": 1408,
    "shared_expert_intermediate_size": 5632, "num_experts": 60, "num_experts_per_tok": 4,
    "vocab_size": 151936, "max_position_embeddings": 8192, "tie_word_embeddings": False,
    "use_sliding_window": False, "sliding_window": 32768,
}


def test_qwen2_moe_shared_expert_is_counted():
    m = model_from_hf_config(QWEN15_MOE, "config.json", "qwen1.5-moe")
    assert m.d_ff_shared == 5632 and m.sliding_window is None
    # Published: 14.3B parameters in total. The shared expert adds 24 x (3 x 2048 x 5632 + 2048) = 830,521,344;
    # without it the count would be 13.5B.
    assert m.n_params == pytest.approx(14.3e9, rel=0.005)
    ops = {o.op: o for o in enumerate_ops(m, "decode", 1, kv_len=10)}
    assert ops["ffn_shared_up"].flops == 24 * 2 * 2048 * 5632


def test_opt_with_a_projected_embedding_is_refused():
    cfg = {"model_type": "opt", "hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
           "ffn_dim": 4096, "vocab_size": 50272, "max_position_embeddings": 2048, "word_embed_proj_dim": 512}
    from gpt_batchprof.errors import ProfileError

    with pytest.raises(ProfileError, match="word_embed_proj_dim': 512 differs from hidden_size 1024"):
        model_from_hf_config(cfg, "config.json", "opt-350m")


def test_int4_keeps_the_lm_head_and_norms_unquantised():
    m = load_model("gpt2")
    ops = {o.op: o for o in enumerate_ops(m, "decode", 1, kv_len=10, dtypes=Dtypes.of("fp16", weight="int4"))}
    assert ops["lm_head"].weight_bytes == 50257 * 768 * 2  # fp16, as quantised checkpoints keep it
    assert ops["qkv_proj"].weight_bytes == 12 * 768 * 2304 * 4.125 / 8  # 4.125 bits per weight


# --------------------------------------------------------------------------- speed and closed form


def datasheet(name: str):
    """A built-in GPU profile without its measured tables and engine overhead: the roofline of the kernels
    the closed forms are about."""
    import dataclasses

    return dataclasses.replace(load_hardware(name), measured=None, engine=None)


@pytest.mark.parametrize("model", ["gpt2", "mistral-7b"])
def test_closed_form_decode_sum_equals_the_step_by_step_sum(model):
    m, hw = load_model(model), datasheet("a100-80gb")
    for attention in ("unfused", "fused"):
        sc = Scenario(prompt_len=4000 if model == "mistral-7b" else 100, gen_len=300, attention=attention)
        ttft, _, e2e = latencies(m, hw, sc, 4)
        steps = sum(sum(predict(o, hw, "graphs").time_s for o in enumerate_ops(m, "decode", 4, kv_len=sc.prompt_len + i,
                                                                                 attention=attention))
                    for i in range(sc.gen_len - 1))
        assert e2e == pytest.approx(ttft + steps, rel=1e-9)


def test_analyze_e2e_work_does_not_grow_with_gen_len(monkeypatch):
    import gpt_batchprof.analytic.serving as serving

    calls = []
    real = serving.attention_ops
    monkeypatch.setattr(serving, "attention_ops", lambda *a: calls.append(a) or real(*a))
    m, hw = load_model("llama-3-8b"), datasheet("h100-sxm")
    for gen in (1000, 8000):
        calls.clear()
        latencies(m, hw, Scenario(prompt_len=1, gen_len=gen), 8)
        assert len(calls) == 2  # two evaluations give each operator's line; the sum is closed form


def test_sharded_e2e_closed_form_equals_the_step_by_step_sum():
    from gpt_batchprof.analytic.parallel import Parallelism, pipelined
    from gpt_batchprof.analytic.roofline import step_time

    m, hw = load_model("llama-2-7b"), datasheet("a100-80gb")
    par = Parallelism(tp=2, pp=2, micro_batches=2)
    sc = Scenario(prompt_len=100, gen_len=200, launch="graphs")
    ttft, _, e2e = latencies(m, hw, sc, 4, par)
    steps = sum(pipelined(step_time(Scenario(prompt_len=100, gen_len=200, context_len=100 + i, launch="graphs")
                                    .ops(m, "decode", 4, par), hw, "graphs"), par, 4) for i in range(199))
    assert e2e == pytest.approx(ttft + steps, rel=1e-9)
