"""--engine hf: transformers builds every family analyze reads, from its config.json or from a
built-in profile, with exactly the weights the profile counts; what it cannot build is refused
in one line before any weight is made."""

import dataclasses
import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from typer.testing import CliRunner  # noqa: E402

from gpt_batchprof.analytic import Dtypes, Scenario  # noqa: E402
from gpt_batchprof.cli import app  # noqa: E402
from gpt_batchprof.errors import BatchprofError, ProfileError  # noqa: E402
from gpt_batchprof.measure import generate as G  # noqa: E402
from gpt_batchprof.measure.hf import HFEngine, config_dict, stored_numel  # noqa: E402
from gpt_batchprof.profiles import all_models, load_hardware, load_model, model_from_hf_config, model_from_mapping  # noqa: E402

runner = CliRunner()
HF = Path(__file__).parent / "data" / "hf"
CPU = G.GenerateSettings("cpu", "test-cpu", torch.__version__, 1, engine="hf", warmup_runs=0)
SCENARIO = Scenario(prompt_len=8, gen_len=3, dtypes=Dtypes.of("fp32"))

# The published config.json of each family, cut to a few hundred thousand weights: every other key
# (rope scaling, routing, layer pattern, norms, biases) is kept as published.
TINY = {"hidden_size": 64, "num_hidden_layers": 4, "intermediate_size": 96, "moe_intermediate_size": 32,
        "vocab_size": 256, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
        "num_local_experts": 4, "num_experts": 4, "n_routed_experts": 4, "num_experts_per_tok": 2,
        "kv_lora_rank": 32, "q_lora_rank": 48, "qk_rope_head_dim": 8, "qk_nope_head_dim": 16, "v_head_dim": 16,
        "first_k_dense_replace": 1, "sliding_window": 8, "max_position_embeddings": 256, "n_group": 1,
        "topk_group": 1}


def tiny(cfg: dict) -> dict:
    if isinstance(cfg.get("text_config"), dict):
        return cfg | {"text_config": tiny(cfg["text_config"])}
    out = {k: (TINY[k] if k in TINY else v) for k, v in cfg.items()}
    if "layer_types" in out:
        out["layer_types"] = out["layer_types"][:4]
    if "kv_lora_rank" in out:  # latent attention: one K/V per query head
        out["num_key_value_heads"] = out["num_attention_heads"]
    for key in ("pad_token_id", "bos_token_id", "eos_token_id"):  # ids of the full vocabulary
        out[key] = None
    out.pop("quantization_config", None)
    return out


@pytest.mark.parametrize("name", sorted(p.stem for p in HF.glob("*.json")))
def test_every_published_family_builds_with_the_profiles_weights_and_generates(name, tmp_path):
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(tiny(json.loads((HF / f"{name}.json").read_text()))))
    spec = load_model(str(path))
    engine = HFEngine(spec, SCENARIO, CPU)
    # DeepSeek-V3 and Kimi-K2 (built as DeepSeek-V3) keep their per-expert score correction as a buffer;
    # Llama 4's vision tower (vision_params) is not built: the language model is what generates
    assert stored_numel(engine.model) == spec.n_params - spec.vision_params
    res = G.run_generate(spec, load_hardware("cpu-generic"), SCENARIO, (2,), CPU, engine=engine)
    assert res.rows[0].status == "ok" and res.rows[0].run.cache_lengths == (8, 9, 10)


def test_every_builtin_profile_is_written_as_a_config_transformers_builds_alike():
    """On the meta device (nothing allocated), one layer of each kind where there are many experts."""
    refused = {}
    for spec in all_models():
        if spec.n_layer * max(p.n_expert for p in spec.parts()) > 64:
            groups = tuple(dataclasses.replace(g, count=1) for g in spec.layer_groups)
            spec = dataclasses.replace(spec, n_layer=max(1, len(groups)), layer_groups=groups)
        try:
            cfg = config_dict(spec)
        except BatchprofError as e:
            refused[spec.name] = str(e)
            continue
        mt = cfg.pop("model_type")
        with torch.device("meta"):
            model = transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.for_model(mt, **cfg))
        assert stored_numel(model) == spec.n_params - spec.vision_params, (spec.name, mt)
    # GPT-3 13B: 40 heads of 128 in a 5140-wide model; GPT-2's config ties head_dim to d_model / n_head
    assert list(refused) == ["gpt3-13b"]
    assert "head_dim 128 apart from d_model / n_head (5140 / 40)" in refused["gpt3-13b"]


@pytest.mark.parametrize("name, model_type", [("deepseek-v3", "deepseek_v3"), ("kimi-k2", "deepseek_v3"),
                                              ("gpt-oss-20b", "gpt_oss"), ("gemma-3-27b", "gemma3_text"),
                                              ("qwen3-30b-a3b", "qwen3_moe"), ("qwen2-7b", "qwen2"),
                                              ("phi-3-medium", "mistral"), ("llama-4-maverick", "llama4_text")])
def test_a_profile_is_written_as_its_familys_architecture(name, model_type):
    cfg = config_dict(load_model(name))
    assert cfg["model_type"] == model_type
    if name == "deepseek-v3":  # 3 dense layers, 1 shared expert of 2048, latent attention as published
        assert (cfg["first_k_dense_replace"], cfg["n_shared_experts"], cfg["kv_lora_rank"], cfg["q_lora_rank"],
                cfg["intermediate_size"], cfg["moe_intermediate_size"]) == (3, 1, 512, 1536, 18432, 2048)
    if name == "gpt-oss-20b":  # 12 sliding and 12 full layers of 128 tokens' window
        assert cfg["layer_types"].count("sliding_attention") == 12 and cfg["sliding_window"] == 128
    if name == "llama-4-maverick":  # 36 chunked layers of 8192 and 12 full; 24 MoE layers, 24 dense of 16384
        assert cfg["layer_types"].count("chunked_attention") == 36 and cfg["attention_chunk_size"] == 8192
        assert (len(cfg["moe_layers"]), cfg["intermediate_size_mlp"], cfg["num_local_experts"]) == (24, 16384, 128)


def test_a_model_transformers_would_build_differently_is_refused_in_one_line(tmp_path):
    # Gemma 3's attention_bias puts biases on q, k, v and o only; the profile's `bias` also has them on
    # the FFN: the model transformers builds would not be the one analyze prices.
    spec = model_from_mapping({"name": "biased-gemma", "n_layer": 2, "d_model": 64, "n_head": 4, "n_kv_head": 2,
                               "d_ff": 96, "ffn": "geglu", "vocab_size": 256, "max_seq_len": 64, "norm": "rmsnorm",
                               "norms_per_layer": 4, "qk_norm": True, "bias": True, "tied_embeddings": True,
                               "layers": [{"count": 1, "sliding_window": 8}, {"count": 1}]}, "test")
    with pytest.raises(BatchprofError, match=r"Gemma3ForCausalLM built from biased-gemma holds [\d,]+ weights, "
                                             r"the profile [\d,]+; it would time another model"):
        HFEngine(spec, SCENARIO, CPU)
    p = tmp_path / "m.yaml"
    import yaml

    p.write_text(yaml.safe_dump({"name": "biased-gemma", "n_layer": 2, "d_model": 64, "n_head": 4, "n_kv_head": 2,
                                 "d_ff": 96, "ffn": "geglu", "vocab_size": 256, "max_seq_len": 64, "norm": "rmsnorm",
                                 "norms_per_layer": 4, "qk_norm": True, "bias": True, "tied_embeddings": True}))
    r = runner.invoke(app, ["generate", "-m", str(p), "--engine", "hf", "--device", "cpu", "--batch", "1",
                            "--prompt-len", "4", "--gen-len", "2", "--threads", "1"])
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert "holds" in r.output and "it would time another model" in " ".join(r.output.split())


def test_generate_runs_a_latent_attention_config_json_with_the_hf_engine(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(tiny(json.loads((HF / "deepseek-v3.json").read_text()))))
    r = runner.invoke(app, ["generate", "-m", str(path), "--engine", "hf", "--device", "cpu", "--batch", "1,2",
                            "--prompt-len", "8", "--gen-len", "3", "--threads", "1", "-f", "json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["settings"]["engine"] == "hf" and [row["batch"] for row in doc["rows"]] == [1, 2]


def test_a_bad_value_is_named_before_a_key_the_mapping_had_not_reached():
    # the loader stops at num_key_value_heads (latent attention has one K/V per query head) before it
    # reads first_k_dense_replace: that key is not "unmodelled", the heads are the error
    cfg = json.loads((HF / "deepseek-v3.json").read_text()) | {"num_key_value_heads": 8}
    with pytest.raises(ProfileError, match="field 'num_key_value_heads': 8 differs from num_attention_heads 128"):
        model_from_hf_config(cfg, "c.json", "d")


def test_qwen3_and_gemma3_count_their_query_and_key_norms():
    # Qwen3-30B-A3B: 48 layers x (q_norm + k_norm) = 48 x 2 x 128 = 12,288 weights more than without them
    m = load_model(str(HF / "qwen3-30b-a3b.json"))
    assert m.qk_norm and m.n_params - dataclasses.replace(m, qk_norm=False).n_params == 12_288
    g = load_model(str(HF / "gemma-3-27b.json"))
    assert g.qk_norm and g.n_params - dataclasses.replace(g, qk_norm=False).n_params == 62 * 2 * 128
