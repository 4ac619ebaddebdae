"""The weight format a checkpoint stores is what analyze and simulate price by default.

gpt-oss ships its routed experts in MXFP4 and everything else in bf16; DeepSeek-V3 and Kimi-K2 ship
their linear layers in fp8. Pricing them at --dtype (fp16) doubled gpt-oss-20b's weights (41.8 GB
instead of 13.8 GB) and DeepSeek-V3's (1342 GB instead of 673 GB). A config.json says so in its
``quantization_config``; the built-in profiles say so in ``checkpoint_dtype`` /
``checkpoint_expert_dtype``. An explicit --weight-dtype / --expert-dtype still wins.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gpt_batchprof.analytic import Dtypes
from gpt_batchprof.cli import app
from gpt_batchprof.errors import ProfileError
from gpt_batchprof.profiles import load_model, model_from_hf_config, model_from_mapping

HF = Path(__file__).parent / "data" / "hf"
runner = CliRunner()

# gpt-oss-20b by hand (config.json: hidden 2880, 24 layers, 64 query heads and 8 K/V heads of 64, 32 experts of
# 2880, vocab 201088, untied):
#   routed experts' matrices: 24 layers x 32 experts x (gate 2880x2880 + up 2880x2880 + down 2880x2880)
#     = 24 x 32 x 24,883,200 = 19,110,297,600 weights at MXFP4 (4 bits + one 8-bit scale per 32 = 4.25 bits)
#     = 10,152,345,600 B
#   everything else at bf16 (2 B):
#     embedding + LM head 2 x 201,088 x 2,880 = 1,158,266,880
#     per layer: q 2880x4096 + k, v 2880x512 each + o 4096x2880 = 26,542,080; their biases 4096+512+512+2880 = 8,000;
#       64 sinks; router 2880x32 + 32 bias = 92,192; 2 norms of 2880 = 5,760 -> 26,648,096; x 24 = 639,554,304
#     the experts' biases: 24 x 32 x (2x2880 + 2880) = 6,635,520
#     final norm 2,880
#     = 1,804,459,584 weights = 3,608,919,168 B
#   total 13,761,264,768 B (20,914,757,184 parameters: the model card's 20.91B)
GPT_OSS_20B_STORED = 13_761_264_768
GPT_OSS_20B_PARAMS = 20_914_757_184

# DeepSeek-V3 by hand: 671,026,419,200 parameters (test_models: the report's 671B). Left in bf16 by the fp8
# checkpoint: embedding + LM head 2 x 129,280 x 7,168 = 1,853,358,080; norms 61 x (2 x 7168 + q_a 1536 +
# kv_a 512) + final 7168 = 1,006,592; routers 58 x (256 x 7168 + 256 bias) = 106,445,312 -> 1,960,809,984.
# The other 669,065,609,216 weights at 1 B: 669,065,609,216 + 2 x 1,960,809,984 = 672,987,229,184 B.
DEEPSEEK_V3_STORED = 672_987_229_184


def analyze_json(*args: str) -> dict:
    r = runner.invoke(app, ["analyze", "-b", "1", "--phase", "decode", "-f", "json", *args])
    assert r.exit_code == 0, r.output
    return json.loads(r.output)


def weights_bytes(doc: dict) -> float:
    return doc["summary"][0]["weights_bytes"]


def test_gpt_oss_is_priced_with_its_experts_in_mxfp4_by_default():
    doc = analyze_json("-m", "gpt-oss-20b", "-H", "h100-sxm")
    assert weights_bytes(doc) == GPT_OSS_20B_STORED
    assert (doc["settings"]["weight_dtype"], doc["settings"]["expert_dtype"]) == ("fp16", "mxfp4")


def test_an_explicit_weight_dtype_prices_every_matrix_in_it():
    # --weight-dtype bf16: the experts follow it (a bf16 checkpoint), 2 B per parameter
    doc = analyze_json("-m", "gpt-oss-20b", "-H", "h100-sxm", "--weight-dtype", "bf16")
    assert weights_bytes(doc) == 2 * GPT_OSS_20B_PARAMS
    assert doc["settings"]["expert_dtype"] == "bf16"
    # --expert-dtype alone overrides only the experts (the rest was already the run's fp16)
    doc = analyze_json("-m", "gpt-oss-20b", "-H", "h100-sxm", "--expert-dtype", "fp16")
    assert weights_bytes(doc) == 2 * GPT_OSS_20B_PARAMS


def test_deepseek_v3_is_priced_in_fp8_by_default():
    doc = analyze_json("-m", "deepseek-v3", "-H", "h200")
    assert weights_bytes(doc) == DEEPSEEK_V3_STORED
    assert doc["settings"]["weight_dtype"] == "fp8"
    assert weights_bytes(analyze_json("-m", "deepseek-v3", "-H", "h200", "--weight-dtype", "bf16")) \
        == 2 * 671_026_419_200


def test_models_without_a_stated_format_keep_the_run_dtype():
    m = load_model("llama-3-8b")
    assert Dtypes.for_model(m, "fp16") == Dtypes.of("fp16")
    assert not Dtypes.for_model(m, "fp16").as_checkpoint(m)


def test_the_header_says_when_weights_are_priced_as_stored():
    r = runner.invoke(app, ["analyze", "-m", "gpt-oss-20b", "-H", "h100-sxm", "-b", "1"])
    assert r.exit_code == 0, r.output
    assert "experts mxfp4 as the checkpoint stores them" in " ".join(r.output.split())
    r = runner.invoke(app, ["analyze", "-m", "gpt-oss-20b", "-H", "h100-sxm", "-b", "1", "--expert-dtype", "fp16"])
    assert r.exit_code == 0, r.output
    assert "as the checkpoint stores them" not in " ".join(r.output.split())


def test_simulate_sizes_its_kv_cache_after_the_stored_weights():
    r = runner.invoke(app, ["simulate", "-m", "gpt-oss-20b", "-H", "h100-sxm", "--requests", "4", "--rate", "1",
                            "-f", "json"])
    assert r.exit_code == 0, r.output
    settings = json.loads(r.output)["settings"]
    assert (settings["weight_dtype"], settings["expert_dtype"]) == ("fp16", "mxfp4")


def test_published_configs_state_their_format():
    assert load_model(str(HF / "gpt-oss-20b.json")).checkpoint_expert_dtype == "mxfp4"  # modules_to_not_convert: self_attn
    assert load_model(str(HF / "gpt-oss-20b.json")).checkpoint_dtype is None
    assert load_model(str(HF / "deepseek-v3.json")).checkpoint_dtype == "fp8"
    # the built-in profiles say the same as the configs they were written from
    for name in ("gpt-oss-20b", "gpt-oss-120b", "deepseek-v3", "kimi-k2"):
        b, hf = load_model(name), load_model(str(HF / f"{name}.json"))
        assert (b.checkpoint_dtype, b.checkpoint_expert_dtype) == (hf.checkpoint_dtype, hf.checkpoint_expert_dtype)


LLAMA = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
         "num_key_value_heads": 2, "num_hidden_layers": 2, "vocab_size": 100, "max_position_embeddings": 64}


@pytest.mark.parametrize("q, expected", [
    ({"quant_method": "fp8", "fmt": "e4m3", "weight_block_size": [128, 128]}, "fp8"),
    ({"quant_method": "gptq", "bits": 4, "group_size": 128}, "int4"),
    ({"quant_method": "awq", "bits": 4}, "int4"),
    ({"quant_method": "gptq", "bits": 8}, "int8"),
    ({"quant_method": "modelopt", "quant_algo": "NVFP4"}, "nvfp4"),
    ({"quant_method": "modelopt", "quant_algo": "FP8"}, "fp8"),
    # a dense model quantised except attention: no experts to store apart, so the whole of its linear layers
    ({"quant_method": "mxfp4", "modules_to_not_convert": ["model.layers.*.self_attn"]}, "mxfp4"),
])
def test_quantization_config_methods(q, expected):
    m = model_from_hf_config(LLAMA | {"quantization_config": q}, "c.json", "c")
    assert (m.checkpoint_dtype, m.checkpoint_expert_dtype) == (expected, None)



def test_an_fp8_config_is_priced_at_one_byte_per_linear_weight():
    m = load_model_fp8 = model_from_hf_config(LLAMA | {"quantization_config": {"quant_method": "fp8"}}, "c.json", "c")
    # 2 layers x (q 64x64 + k, v 64x32 + o 64x64 + gate, up, down 64x128) = 2 x 36,864 = 73,728 weights at 1 B;
    # embedding + LM head 2 x 100 x 64 = 12,800, norms 2 x 2 x 64 + 64 = 320 at fp16: 26,240 B -> 99,968 B
    dt = Dtypes.for_model(load_model_fp8, "fp16")
    assert m.weight_bytes(dt.weight, dt.act, dt.expert) == 99_968


@pytest.mark.parametrize("q, message", [
    ({"quant_method": "bitsandbytes", "load_in_4bit": True}, "quant_method 'bitsandbytes' is not modelled"),
    ({"quant_method": "gptq", "bits": 3}, "gptq with bits=3 is not modelled"),
    ({"quant_method": "modelopt", "quant_algo": "W4A8_AWQ"}, "modelopt quant_algo 'W4A8_AWQ' is not modelled"),
    ("fp8", "expected an object"),
])
def test_formats_not_modelled_are_refused_with_one_line(q, message, tmp_path):
    with pytest.raises(ProfileError, match=message):
        model_from_hf_config(LLAMA | {"quantization_config": q}, "c.json", "c")
    path = tmp_path / "config.json"
    path.write_text(json.dumps(LLAMA | {"quantization_config": q}))
    r = runner.invoke(app, ["analyze", "-m", str(path)])
    assert r.exit_code == 2 and "quantization_config" in r.output
    assert len(r.output.strip().splitlines()) == 1 and "Traceback" not in r.output


def test_profile_fields_are_checked():
    base = {"name": "m", "n_layer": 2, "d_model": 64, "n_head": 4, "d_ff": 128, "ffn": "swiglu", "vocab_size": 100,
            "max_seq_len": 64}
    with pytest.raises(ProfileError, match="checkpoint_expert_dtype.*dense model has no routed experts"):
        model_from_mapping(base | {"checkpoint_expert_dtype": "mxfp4"}, "m.yaml")
    with pytest.raises(ProfileError, match="checkpoint_dtype.*must be one of"):
        model_from_mapping(base | {"checkpoint_dtype": "fp6"}, "m.yaml")
    assert model_from_mapping(base | {"checkpoint_dtype": "int4"}, "m.yaml").checkpoint_dtype == "int4"
