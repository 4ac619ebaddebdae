"""generate: the reference GPT does analyze's FLOPs, the loop runs every phase with a growing
cache, rows carry the documented fields, interrupts keep rows, bad input exits 2, the hf engine."""

import dataclasses
import json
import sys

import pytest

torch = pytest.importorskip("torch")
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from gpt_batchprof.analytic import Dtypes, Scenario, enumerate_ops, serving_report  # noqa: E402
from gpt_batchprof.analytic.ops import causal_pairs  # noqa: E402
from gpt_batchprof.cli import app  # noqa: E402
from gpt_batchprof.errors import BatchprofError  # noqa: E402
from gpt_batchprof.measure import generate as G  # noqa: E402
from gpt_batchprof.measure.model import build_model  # noqa: E402
from gpt_batchprof.profiles import load_hardware, model_from_mapping  # noqa: E402
from gpt_batchprof.report.rows import generate_row_dict  # noqa: E402

runner = CliRunner()

# One tiny config per architecture family: 2 layers, d_model 128-256.
FAMILIES = {
    "gpt2": {"name": "tiny-gpt2", "n_layer": 2, "d_model": 128, "n_head": 4, "d_ff": 512, "ffn": "gelu",
             "vocab_size": 1000, "max_seq_len": 256, "norm": "layernorm", "positional": "learned", "bias": True,
             "tied_embeddings": True},
    "llama": {"name": "tiny-llama", "n_layer": 2, "d_model": 256, "n_head": 8, "n_kv_head": 2, "d_ff": 512,
              "ffn": "swiglu", "vocab_size": 1000, "max_seq_len": 256, "norm": "rmsnorm", "positional": "rope"},
    "moe": {"name": "tiny-moe", "n_layer": 2, "d_model": 128, "n_head": 4, "n_kv_head": 2, "d_ff": 256,
            "ffn": "swiglu", "vocab_size": 1000, "max_seq_len": 256, "norm": "rmsnorm", "positional": "rope",
            "n_expert": 4, "n_expert_active": 2},
}
SPECS = {k: model_from_mapping(v, "test") for k, v in FAMILIES.items()}
# Two features some families add: qwen2_moe's always-active shared expert, Mistral's sliding window
# (16 tokens, shorter than the 32-token prompts below, so prefill and decode both cross it).
VARIANTS = {
    "moe-shared": model_from_mapping(FAMILIES["moe"] | {"name": "tiny-qwen2-moe", "d_ff_shared": 384}, "test"),
    "window": model_from_mapping(FAMILIES["llama"] | {"name": "tiny-mistral", "sliding_window": 16}, "test"),
    # stacks of layer kinds: gpt-oss / Gemma's sliding and full layers, DeepSeek's dense layer before MoE ones
    "stack-window": model_from_mapping(FAMILIES["llama"] | {"name": "tiny-oss", "layers": [
        {"count": 1, "sliding_window": 16}, {"count": 1}]}, "test"),
    # DeepSeek-V3: latent attention (naive prefill, absorbed decode), a dense layer, then MoE with a shared expert
    "mla": model_from_mapping(FAMILIES["moe"] | {"name": "tiny-dsv3-mla", "n_layer": 2, "head_dim": 16,
                                                 "kv_lora_rank": 48, "q_lora_rank": 40, "qk_rope_head_dim": 8,
                                                 "v_head_dim": 24, "d_ff_shared": 64, "shared_expert_gate": False,
                                                 "layers": [{"count": 1, "n_expert": 1, "d_ff": 192}, {"count": 1}]},
                              "test"),
    # gemma 3: GeGLU, RMSNorm before and after each sub-layer, local and global layers
    "gemma": model_from_mapping(FAMILIES["llama"] | {"name": "tiny-gemma", "ffn": "geglu", "norms_per_layer": 4,
                                                     "qk_norm": True,
                                                     "layers": [{"count": 1, "sliding_window": 16}, {"count": 1}]},
                                "test"),
    # llama 4: chunked attention (12-token chunks: the 32-token prompt is cut 12, 12, 8 and the decode step at
    # 32 cached sees 32 mod 12 + 1 = 9 keys) on 2 layers, a full-attention one, MoE layers with an ungated shared
    # expert of the experts' width (Maverick's dense layer first)
    "llama4": model_from_mapping(FAMILIES["moe"] | {"name": "tiny-llama4", "n_layer": 3, "n_expert_active": 1,
                                                    "d_ff_shared": 256, "shared_expert_gate": False,
                                                    "attention_chunk": 12, "layers": [
                                                        {"count": 1, "n_expert": 1, "d_ff": 512}, {"count": 1},
                                                        {"count": 1, "attention_chunk": None}]}, "test"),
    "stack-moe": model_from_mapping(FAMILIES["moe"] | {"name": "tiny-dsv3", "n_layer": 3, "d_ff_shared": 128, "layers": [
        {"count": 1, "n_expert": 1, "d_ff": 384}, {"count": 2}]}, "test"),
}
# gpt-oss: biases on every projection, a router bias, one attention sink per head, windowed and full layers;
# Qwen3-MoE: q/k norms on an MoE stack. Neither adds a FLOP FlopCounterMode counts (bias adds, the sink
# logit and the norms are charged by their bytes), so the equality checks they are built and run as analyze
# lists them.
VARIANTS |= {
    "gpt-oss": model_from_mapping(FAMILIES["moe"] | {"name": "tiny-gpt-oss", "bias": True, "router_bias": True,
                                                     "attention_sinks": True, "layers": [
                                                         {"count": 1, "sliding_window": 16}, {"count": 1}]}, "test"),
    "qwen3-moe": model_from_mapping(FAMILIES["moe"] | {"name": "tiny-qwen3-moe", "qk_norm": True}, "test"),
}
FP32 = Dtypes.of("fp32")
CPU = G.GenerateSettings("cpu", "test-cpu", torch.__version__, 1, warmup_runs=0)
ROW_KEYS = {"batch", "measured_ttft_s", "measured_itl_s", "measured_itl_p90_s", "measured_e2e_s",
            "measured_tokens_per_s", "predicted_ttft_s", "predicted_itl_s", "predicted_e2e_s",
            "predicted_tokens_per_s", "peak_memory_bytes"}

# torch's CPU flash-attention kernel is not in FlopCounterMode's table (it would count 0):
# count it with torch's own SDPA formula (GQA-aware), as the CUDA kernels are.
CPU_SDPA = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu:
            lambda q, k, v, *a, out_shape=None, **kw: sdpa_flop_count(q, k, v)}


def _forward_flops(model, idx, cache, pos):
    with FlopCounterMode(display=False, custom_mapping=CPU_SDPA) as fc:
        logits = model(idx, cache, pos)
    return fc.get_total_flops(), logits


# --------------------------------------------------------------------------- the reference model


@pytest.mark.parametrize("attention", ["unfused", "fused"])
@pytest.mark.parametrize("family", list(FAMILIES) + list(VARIANTS))
def test_one_forward_does_exactly_analyzes_flops(family, attention):
    """Prefill of 3 x 32 tokens, then one decode step at 32 cached tokens.

    MoE: every token goes to exactly n_expert_active experts, and each expert runs on just
    the rows routed to it, so the expert matmuls see tokens x n_expert_active rows whatever
    the routing: the FLOPs are routing-independent (only the distinct experts touched,
    i.e. the weight bytes, depend on it). A second seed, with other weights and so another
    routing, counts the same.
    """
    spec = (SPECS | VARIANTS)[family]
    B, P = 3, 32
    for seed in (0, 1) if spec.is_moe else (0,):
        model = build_model(spec, torch.float32, "cpu", attention, max_len=64, seed=seed)
        cache = model.new_cache(B, 64)
        with torch.inference_mode():
            prompt = torch.randint(0, spec.vocab_size, (B, P), generator=torch.Generator().manual_seed(seed))
            pre, logits = _forward_flops(model, prompt, cache, 0)
            dec, _ = _forward_flops(model, logits.argmax(-1, keepdim=True), cache, P)
        want_pre = sum(c.flops for c in enumerate_ops(spec, "prefill", B, new_tokens=P, dtypes=FP32, attention=attention))
        want_dec = sum(c.flops for c in enumerate_ops(spec, "decode", B, kv_len=P, dtypes=FP32, attention=attention))
        if attention == "fused":
            # FlopCounterMode charges SDPA the full P x P square whatever is_causal says; analyze (like a
            # causal flash kernel) counts the visible pairs: 4 x hs x B x nh x (P*P - pairs) per layer fewer.
            # With the 16-token window: queries 0..15 see 1..16 keys (136 pairs), the other 16 see 16 each
            # (256): 392 visible, 632 masked. In 12-token chunks: 78 + 78 + 36 = 192 visible, 832 masked.
            for part in spec.parts():  # a stack: each kind of layer with its own window
                masked = P * P - causal_pairs(P, P, part.sliding_window, part.attention_chunk)
                assert masked == (632 if part.sliding_window else 832 if part.attention_chunk else 496)
                # per (query, key) pair: 2 x (key width + value width); latent attention prefill is naive
                per_pair = 2 * (part.head_dim + part.qk_rope_head_dim + part.v_head_dim) if part.is_mla \
                    else 4 * part.head_dim
                pre = pre - part.n_layer * per_pair * B * part.n_head * masked
        assert pre == want_pre
        assert dec == want_dec


def test_flops_of_a_tiny_gpt2_decode_step_by_hand():
    """tiny-gpt2 (d 128, 4 heads of 32, d_ff 512, vocab 1000), batch 1, 32 cached tokens (L = 33):
    per layer qkv 2*128*384 = 98,304; out 2*128*128 = 32,768; up and down 2*128*512 = 131,072 each;
    QK^T and x V 2*32*4*33 = 8,448 each -> 410,112; two layers 820,224; LM head 2*128*1000 = 256,000.
    Total 1,076,224."""
    model = build_model(SPECS["gpt2"], torch.float32, "cpu", "unfused", max_len=64)
    cache = model.new_cache(1, 64)
    with torch.inference_mode():
        model(torch.zeros(1, 32, dtype=torch.long), cache, 0)
        flops, _ = _forward_flops(model, torch.zeros(1, 1, dtype=torch.long), cache, 32)
    assert flops == 1_076_224


@pytest.mark.parametrize("attention", ["unfused", "fused"])
@pytest.mark.parametrize("family", list(FAMILIES) + list(VARIANTS))
def test_cached_decode_equals_a_full_forward(family, attention):
    """The KV cache is right: prefill of 12 tokens + one decode step gives the logits a prefill of
    all 13 tokens gives (same weights, no cache reuse). With a 16-token window the 13th token still
    sees all 13; the window test below checks the cut."""
    spec = (SPECS | VARIANTS)[family]
    model = build_model(spec, torch.float32, "cpu", attention, max_len=32)
    idx = torch.randint(0, spec.vocab_size, (2, 13), generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        cache = model.new_cache(2, 32)
        model(idx[:, :12], cache, 0)
        assert cache.length == 12
        # keys of the 12 cached positions are written, the rest of the preallocated cache is untouched
        assert cache.k[:, :, :, :12].abs().sum() > 0 and cache.k[:, :, :, 12:].abs().sum() == 0
        step = model(idx[:, 12:], cache, 12)
        assert cache.length == 13
        full = model(idx, model.new_cache(2, 32), 0)
    torch.testing.assert_close(step, full, rtol=1e-4, atol=1e-4)


def test_sliding_window_hides_keys_older_than_the_window():
    """One layer of tiny-mistral, window 16: the logits at position 20 do not change when tokens
    0..4 do (position 20 sees 5..20), but do when token 5 does. (With more layers the receptive
    field grows by 15 positions per layer.)"""
    spec = model_from_mapping(FAMILIES["llama"] | {"name": "w", "n_layer": 1, "sliding_window": 16}, "test")
    model = build_model(spec, torch.float32, "cpu", "unfused", max_len=32)
    _hidden_then_seen(model, spec, first_seen=5)


def _hidden_then_seen(model, spec, first_seen: int):
    """Position 20's logits do not move when tokens 0..first_seen-1 change, and do when token first_seen
    changes. Returns the 21 tokens and their logits."""
    idx = torch.randint(0, spec.vocab_size, (1, 21), generator=torch.Generator().manual_seed(7))
    old, edge = idx.clone(), idx.clone()
    old[0, :first_seen] = (old[0, :first_seen] + 1) % spec.vocab_size
    edge[0, first_seen] = (edge[0, first_seen] + 1) % spec.vocab_size
    with torch.inference_mode():
        out = [model(x, model.new_cache(1, 32), 0) for x in (idx, old, edge)]
    torch.testing.assert_close(out[0], out[1], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(out[0], out[2], rtol=1e-5, atol=1e-5)
    return idx, out[0]


@pytest.mark.parametrize("attention", ["unfused", "fused"])
def test_chunked_attention_sees_only_its_own_chunk(attention):
    """One chunked layer (Llama 4's local attention), chunks of 8: position 20 (chunk 16..23) sees 16..20,
    so its logits do not change when tokens 0..15 do, but do when token 16 does; a decode step at 20
    cached tokens (mid-chunk, 20 mod 8 + 1 = 5 keys) gives the logits of the full forward."""
    spec = model_from_mapping(FAMILIES["llama"] | {"name": "c", "n_layer": 1, "attention_chunk": 8}, "test")
    model = build_model(spec, torch.float32, "cpu", attention, max_len=32)
    idx, full = _hidden_then_seen(model, spec, first_seen=16)
    with torch.inference_mode():
        cache = model.new_cache(1, 32)
        model(idx[:, :20], cache, 0)
        step = model(idx[:, 20:], cache, 20)
    torch.testing.assert_close(step, full, rtol=1e-4, atol=1e-4)


def test_unfused_and_fused_attention_agree():
    spec = SPECS["llama"]
    idx = torch.randint(0, spec.vocab_size, (2, 16), generator=torch.Generator().manual_seed(5))
    out = []
    with torch.inference_mode():
        for attention in ("unfused", "fused"):  # same seed: same weights
            model = build_model(spec, torch.float32, "cpu", attention, max_len=32)
            out.append(model(idx, model.new_cache(2, 32), 0))
    torch.testing.assert_close(out[0], out[1], rtol=1e-4, atol=1e-4)


def test_every_shipped_profile_builds_on_meta():
    """Every built-in profile (and so every config.json family analyze maps to them) builds, with
    ModelSpec's parameter count. The meta device allocates nothing, so even 405B is instant."""
    from gpt_batchprof.measure.model import GPT
    from gpt_batchprof.profiles import all_models

    for spec in all_models():
        if sum(p.n_layer * p.n_expert for p in spec.parts()) > 512:
            # thousands of expert modules (qwen3-235b: 94 x 128) take a minute to build even on meta:
            # one layer of each kind builds the same modules, and must count what its spec counts
            groups = tuple(dataclasses.replace(g, count=1) for g in spec.layer_groups)
            spec = dataclasses.replace(spec, n_layer=max(1, len(groups)), layer_groups=groups)
        with torch.device("meta"):
            model = GPT(spec)
        # the reference model is the language model: a vision tower (Llama 4's vision_params) is not built
        assert sum(p.numel() for p in model.parameters()) == spec.n_params - spec.vision_params, spec.name


# --------------------------------------------------------------------------- the loop


def _scenario(prompt=8, gen=5, attention="unfused"):
    return Scenario(prompt_len=prompt, gen_len=gen, dtypes=FP32, attention=attention)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_phase_runs_and_the_cache_grows(family):
    spec, hw, sc = SPECS[family], load_hardware("cpu-generic"), _scenario()
    res = G.run_generate(spec, hw, sc, (1, 3), CPU)
    assert res.complete and [r.batch for r in res.rows] == [1, 3]
    for row in res.rows:
        run = row.run
        assert row.status == "ok" and run.timing_method == "cpu-clock"
        # prompt 8 tokens after prefill, then one more per decode step: 4 steps for gen_len 5
        assert run.cache_lengths == (8, 9, 10, 11, 12) and len(run.step_times_s) == 4
        assert 0 < run.ttft_s < run.e2e_s
        assert run.e2e_s == pytest.approx(run.ttft_s + sum(run.step_times_s))
        assert run.tokens_per_s == pytest.approx(row.batch * 5 / run.e2e_s)
        d = generate_row_dict(row)
        assert ROW_KEYS <= set(d)
        assert d["peak_memory_bytes"] > 0 and d["peak_memory_method"] == "process-peak-rss"
    # predictions are serving_report's, batch by batch
    rep = serving_report(spec, hw, sc, (1, 3))
    for row, p in zip(res.rows, rep.points):
        d = generate_row_dict(row)
        assert (d["predicted_ttft_s"], d["predicted_itl_s"], d["predicted_e2e_s"], d["predicted_tokens_per_s"]) == \
            (p.ttft_s, p.itl_s, p.e2e_s, p.tokens_per_s)


def test_itl_statistics_and_errors_by_hand():
    run = G.GenerationRun(2, 0.05, tuple(i * 1e-3 for i in range(1, 11)), 0.105, tuple(range(4, 15)))
    # steps 1..10 ms: median 5.5 ms; p90 at rank 0.9 * 9 = 8.1 -> 9 + 0.1 * (10 - 9) = 9.1 ms
    assert run.itl_s == pytest.approx(5.5e-3) and run.itl_p90_s == pytest.approx(9.1e-3)
    assert run.gen_len == 11 and run.tokens_per_s == pytest.approx(2 * 11 / 0.105)  # 209.5 tok/s
    assert G._error(0.2, 0.15) == pytest.approx(-0.25)  # predicted 25% under the measurement


def _fail_at(monkeypatch, at_batch: int, exc: BaseException) -> None:
    """measure_batch raises ``exc`` at ``at_batch`` and measures every other batch for real."""
    real = G.measure_batch

    def flaky(engine, batch, *a, **kw):
        if batch == at_batch:
            raise exc
        return real(engine, batch, *a, **kw)

    monkeypatch.setattr(G, "measure_batch", flaky)


def test_oom_at_one_batch_is_a_row(monkeypatch):
    _fail_at(monkeypatch, 3, RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    res = G.run_generate(SPECS["llama"], load_hardware("cpu-generic"), _scenario(), (1, 3, 4), CPU)
    assert [r.status for r in res.rows] == ["ok", "oom", "ok"]
    assert "out of memory" in res.rows[1].reason and generate_row_dict(res.rows[1])["measured_e2e_s"] is None


def test_batches_that_cannot_fit_in_ram_are_not_run():
    # 16 MB available: tiny-llama's weights (~1.8 M params, 7.2 MB fp32) fit at batch 1; the batch-64
    # activations (fp32 logits alone 64 x 1000 x 4 B plus 64 x 8 x 256-wide streams) do not
    spec = SPECS["llama"]
    need64 = G.memory_use(spec, _scenario(), 64).total_bytes
    res = G.run_generate(spec, load_hardware("cpu-generic"), _scenario(), (1, 64), CPU, available=need64 - 1)
    assert [r.status for r in res.rows] == ["ok", "skipped"] and "not run" in res.rows[1].reason


def test_interrupt_keeps_finished_batches(monkeypatch):
    _fail_at(monkeypatch, 4, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt) as exc:
        G.run_generate(SPECS["gpt2"], load_hardware("cpu-generic"), _scenario(), (1, 2, 4, 8), CPU)
    partial = exc.value.partial
    assert not partial.complete and [r.batch for r in partial.rows] == [1, 2]


def test_model_that_cannot_fit_is_refused_with_what_it_needs():
    big = model_from_mapping(FAMILIES["llama"] | {"name": "big", "n_layer": 1000, "d_model": 8192, "n_head": 64,
                                                 "n_kv_head": 8, "d_ff": 28672}, "test")
    with pytest.raises(BatchprofError, match=r"big needs .* at batch 1 \(.* of fp32 weights.*cpu has"):
        G.run_generate(big, load_hardware("cpu-generic"), _scenario(), (1,), CPU, available=64e9)


def test_mixed_and_integer_dtypes_are_refused():
    for dt in (Dtypes.of("fp32", weight="int4"), Dtypes.of("int8")):
        sc = Scenario(prompt_len=8, gen_len=4, dtypes=dt)
        with pytest.raises(BatchprofError, match="one float dtype"):
            G.run_generate(SPECS["llama"], load_hardware("cpu-generic"), sc, (1,), CPU)


# --------------------------------------------------------------------------- the command

QUICK = ["--device", "cpu", "--batch", "1,2", "--prompt-len", "8", "--gen-len", "4", "--threads", "1",
         "--warmup-runs", "0"]


@pytest.fixture
def tiny_yaml(tmp_path):
    import yaml

    p = tmp_path / "tiny-llama.yaml"
    p.write_text(yaml.safe_dump(FAMILIES["llama"]))
    return p


def test_cli_json_rows(tiny_yaml):
    r = runner.invoke(app, ["generate", "-m", str(tiny_yaml), "-f", "json", *QUICK])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["complete"] is True and doc["hardware"]["name"] == "cpu-generic"
    assert doc["settings"]["engine"] == "reference" and doc["settings"]["threads"] == 1
    rows = doc["rows"]
    assert [row["batch"] for row in rows] == [1, 2]
    for row in rows:
        assert ROW_KEYS <= set(row) and row["status"] == "ok" and row["torch_version"] == torch.__version__
        assert row["measured_ttft_s"] < row["measured_e2e_s"]


def test_cli_table(tiny_yaml):
    r = runner.invoke(app, ["generate", "-m", str(tiny_yaml), *QUICK])
    assert r.exit_code == 0, r.output
    for text in ("Measured vs predicted", "TTFT", "ITL p90", "tok/s", "x tput"):
        assert text in r.stdout


@pytest.mark.parametrize("args, message", [
    (["--engine", "vllm"], "--engine: unknown value 'vllm'"),
    (["--dtype", "int8"], "one float dtype"),
    (["--batch", "0"], "must be >= 1"),
    (["--prompt-len", "250", "--gen-len", "10"], "exceeds tiny-llama's max_seq_len 256"),
    (["--attention", "flash"], "--attention: unknown value 'flash'"),
    (["--runs", "0"], "--runs must be >= 1"),
])
def test_cli_bad_input_exits_2(tiny_yaml, args, message):
    r = runner.invoke(app, ["generate", "-m", str(tiny_yaml), *QUICK, *args])
    assert r.exit_code == 2, r.output
    assert message in " ".join(r.output.split()) and "Traceback" not in r.output


def test_cli_refuses_a_model_that_cannot_fit(monkeypatch):
    monkeypatch.setattr(G, "available_memory_bytes", lambda device: 64e9)
    r = runner.invoke(app, ["generate", "-m", "llama-2-70b", *QUICK])
    assert r.exit_code == 2
    # 68.98 B params x 4 bytes (fp32 on the CPU) = 276 GB = 257 GiB of weights alone
    assert "llama-2-70b needs" in r.output and "257 GiB of fp32 weights" in " ".join(r.output.split())


def test_cli_interrupt_prints_finished_batches_and_exits_130(monkeypatch, tiny_yaml):
    _fail_at(monkeypatch, 2, KeyboardInterrupt())
    r = runner.invoke(app, ["generate", "-m", str(tiny_yaml), "-f", "json", *QUICK])
    assert r.exit_code == 130
    doc = json.loads(r.stdout)
    assert doc["complete"] is False and [row["batch"] for row in doc["rows"]] == [1]


def test_hf_engine_without_transformers_names_the_extra(monkeypatch, tiny_yaml):
    monkeypatch.setitem(sys.modules, "transformers", None)  # import fails as if not installed
    r = runner.invoke(app, ["generate", "-m", str(tiny_yaml), "--engine", "hf", *QUICK])
    assert r.exit_code == 2
    assert "pip install 'gpt-batchprof[hf]'" in r.output and "Traceback" not in r.output


# --------------------------------------------------------------------------- --engine hf


@pytest.mark.parametrize("family", list(FAMILIES))
def test_hf_engine_runs_every_family(family):
    pytest.importorskip("transformers")
    from gpt_batchprof.measure.hf import config_dict

    spec = SPECS[family]
    assert config_dict(spec)["model_type"] == {"gpt2": "gpt2", "llama": "llama", "moe": "mixtral"}[family]
    settings = G.GenerateSettings("cpu", "test-cpu", torch.__version__, 1, engine="hf", warmup_runs=0)
    res = G.run_generate(spec, load_hardware("cpu-generic"), _scenario(), (2,), settings)
    run = res.rows[0].run
    assert res.rows[0].status == "ok" and run.cache_lengths == (8, 9, 10, 11, 12)
    assert 0 < run.ttft_s < run.e2e_s


def test_hf_engine_model_has_the_specs_parameters():
    """The transformers model built from the spec is the same size as the reference one
    (tiny-llama: untied, so embeddings and LM head count separately)."""
    pytest.importorskip("transformers")
    from gpt_batchprof.measure.hf import HFEngine

    spec = SPECS["llama"]
    eng = HFEngine(spec, _scenario(), CPU)
    assert sum(p.numel() for p in eng.model.parameters()) == spec.n_params


def test_hf_engine_reads_a_config_json(tmp_path):
    pytest.importorskip("transformers")
    cfg = {"model_type": "llama", "hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
           "num_key_value_heads": 2, "intermediate_size": 256, "vocab_size": 500, "max_position_embeddings": 128}
    p = tmp_path / "config.json"
    p.write_text(json.dumps(cfg))
    r = runner.invoke(app, ["generate", "-m", str(p), "--engine", "hf", "-f", "json", *QUICK])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["settings"]["engine"] == "hf"


# --------------------------------------------------------------------------- CUDA


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graph_decode_matches_eager_and_is_event_timed():
    spec = SPECS["llama"]
    sc = Scenario(prompt_len=16, gen_len=8, dtypes=Dtypes.of("fp16"))
    base = dict(device_name="gpu", torch_version=torch.__version__, threads=1, warmup_runs=1)
    graphed = G.run_generate(spec, load_hardware("h100-sxm"), sc, (1, 4), G.GenerateSettings("cuda", **base))
    eager = G.run_generate(spec, load_hardware("h100-sxm"), sc, (1, 4),
                           G.GenerateSettings("cuda", cuda_graphs=False, **base))
    for g, e in zip(graphed.rows, eager.rows):
        assert g.run.timing_method == "cuda-graph" and e.run.timing_method == "cuda-events"
        assert g.run.cache_lengths == e.run.cache_lengths == tuple(range(16, 24))
        assert 0 < g.run.ttft_s < g.run.e2e_s
        # the peak holds at least the fp16 weights
        assert g.run.peak_memory_bytes >= spec.n_params * 2
    # same greedy tokens from graph replays as from eager steps
    eng = G.ReferenceEngine(spec, sc, G.GenerateSettings("cuda", **base))
    prompt = torch.randint(0, spec.vocab_size, (2, 16), device="cuda")
    with torch.inference_mode():
        s = eng.session(2, sc.positions)
        tok = s.prefill(prompt)
        eager_toks = [tok]
        for i in range(7):
            eager_toks.append(s.decode(eager_toks[-1], 16 + i))
        graphs = G.DecodeGraphs(s, 2, 16, 7)
        graphs.start(s.prefill(prompt))
        for i in range(7):
            graphs.replay(i)
        torch.cuda.synchronize()
        assert torch.equal(graphs.tok, eager_toks[-1])


# --------------------------------------------------------------------------- sweep's generation preset


def test_live_generation_sweep_runs_the_loop(monkeypatch):
    """Live `generation` points come from one real generation per batch (measure.generate), not from
    one decode step multiplied by gen_len - 1: a hand-made run's figures land in the row as they are."""
    from gpt_batchprof.sweep.evaluate import Evaluator
    from gpt_batchprof.sweep.grid import SweepSpec, resolve
    from gpt_batchprof.sweep.live import LiveTimer

    spec = SweepSpec(workload="generation", models=("d128",), hardware=("cpu-generic",), batches=(1, 2),
                     seq_lens=(8,), dtypes=("fp32",), gen_len=4, layers=2, name="generation")
    grid = resolve(spec)
    timer = LiveTimer("cpu", threads=1)
    real = [row for row in map(Evaluator(grid, "both", timer).evaluate, grid.points())]
    for row in real:  # a real run: 1 prefill + 3 steps on a tiny model
        assert 0 < row.measured_ttft_s < row.measured_time_s
        assert row.measured_items_per_s == pytest.approx(row.batch * 4 / row.measured_time_s)
    from rich.console import Console

    from gpt_batchprof.report.sweep_tables import print_summary
    from gpt_batchprof.sweep.results import summarise

    out = Console(record=True, width=200)
    print_summary(out, summarise(real))
    text = out.export_text()
    assert "Generation per batch: predicted, then measured" in text and "x tput" in text
    # steps 1, 2 and 6 ms after a 10 ms prefill: e2e 19 ms (ttft + 3 x median ITL would say 16 ms)
    fake = G.GenerationRun(2, 0.010, (0.001, 0.002, 0.006), 0.019, (8, 9, 10, 11))
    monkeypatch.setattr(G, "measure_batch", lambda *a, **kw: (fake, "x"))
    row = Evaluator(grid, "both", timer).evaluate(list(grid.points())[1])
    assert row.measured_time_s == 0.019 and row.measured_itl_s == 0.002
    assert row.measured_items_per_s == pytest.approx(2 * 4 / 0.019)  # gen_len 4 tokens x batch 2


def test_roofline_fields_appear_only_when_the_prediction_is_calibrated():
    spec, sc = SPECS["gpt2"], _scenario()
    from pathlib import Path

    results = Path(__file__).resolve().parents[1] / "docs/results"
    ceilings = load_hardware(str(results / "cpu-2core-epyc-calibrated.yaml"))  # no measured: tables
    plain = generate_row_dict(G.run_generate(spec, ceilings, sc, (2,), CPU).rows[0])
    assert not any(k.startswith("roofline_") for k in plain)
    cal = load_hardware(str(results / "cpu-1thread-epyc-tables-quiet.yaml"))
    row = generate_row_dict(G.run_generate(spec, cal, sc, (2,), CPU).rows[0])
    roof = serving_report(spec, dataclasses.replace(cal, measured=None), sc, (2,)).points[0]
    assert (row["roofline_ttft_s"], row["roofline_e2e_s"]) == (roof.ttft_s, roof.e2e_s)
    assert row["roofline_e2e_s"] != row["predicted_e2e_s"]
    assert row["predicted_e2e_s"] == serving_report(spec, cal, sc, (2,)).points[0].e2e_s


def test_interrupted_run_never_replaces_an_earlier_file(monkeypatch, tiny_yaml, tmp_path):
    """Issue 19: Ctrl-C used to replace a complete gen.json with a one-row partial one."""
    earlier = tmp_path / "gen.json"
    earlier.write_text('{"complete": true, "rows": ["a finished earlier run"]}\n')
    _fail_at(monkeypatch, 2, KeyboardInterrupt())
    r = runner.invoke(app, ["generate", "-m", str(tiny_yaml), "-f", "json", "-o", str(earlier), *QUICK])
    assert r.exit_code == 130
    assert earlier.read_text() == '{"complete": true, "rows": ["a finished earlier run"]}\n'
    partial = tmp_path / "gen.partial.json"
    doc = json.loads(partial.read_text())
    assert doc["complete"] is False and [row["batch"] for row in doc["rows"]] == [1]
    assert f"kept {earlier} as it was; the finished part goes to {partial}" in " ".join(r.stderr.split())


def test_interrupted_run_with_no_earlier_file_writes_the_partial_result_there(monkeypatch, tiny_yaml, tmp_path):
    out = tmp_path / "gen.json"
    _fail_at(monkeypatch, 2, KeyboardInterrupt())
    r = runner.invoke(app, ["generate", "-m", str(tiny_yaml), "-f", "json", "-o", str(out), *QUICK])
    assert r.exit_code == 130
    assert json.loads(out.read_text())["complete"] is False
    assert not (tmp_path / "gen.partial.json").exists()
