"""Profile loading, validation and Hugging Face config.json import."""

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from gpt_batchprof.errors import ProfileError
from gpt_batchprof.profiles import builtin_names, load_hardware, load_model

REQUIRED_MODELS = ["gpt2", "gpt3-6.7b", "gpt3-13b", "gpt3-175b", "opt-6.7b", "opt-13b", "opt-66b", "llama-2-7b",
                   "llama-2-13b", "llama-2-70b", "llama-3-8b", "llama-3-70b", "mistral-7b", "mixtral-8x7b"]
REQUIRED_HW = ["t4", "v100", "a10g", "l4", "a100-40gb", "a100-80gb", "h100-sxm", "h100-pcie", "h200", "b200",
               "mi300x", "rtx-4090"]


def test_every_required_profile_ships_and_loads():
    assert set(REQUIRED_MODELS) <= set(builtin_names("models"))
    assert set(REQUIRED_HW) <= set(builtin_names("hardware"))
    for n in builtin_names("models"):
        assert load_model(n).name == n
    for n in builtin_names("hardware"):
        assert load_hardware(n).name == n


def test_hardware_profiles_name_their_source():
    from gpt_batchprof.profiles import builtin_dir

    for n in REQUIRED_HW:
        text = (builtin_dir() / "hardware" / f"{n}.yaml").read_text()
        assert text.lstrip().startswith("#") and "source" in text.lower(), n


def test_hardware_in_si_units():
    hw = load_hardware("a100-80gb")
    assert hw.memory_bandwidth_bytes_per_s == 2039e9
    assert hw.peak("fp16") == 312e12
    with pytest.raises(ProfileError, match="no fp8 peak"):
        hw.peak("fp8")


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


GOOD = """name: m
n_layer: 2
d_model: 64
n_head: 4
d_ff: 256
ffn: gelu
vocab_size: 100
max_seq_len: 128
"""


@pytest.mark.parametrize(
    "text, message",
    [
        (GOOD.replace("n_layer: 2", "n_layer: -2"), "field 'n_layer': must be >= 1, got -2"),
        (GOOD.replace("d_ff: 256", "d_ff: lots"), "field 'd_ff': must be an integer, got 'lots'"),
        (GOOD.replace("vocab_size: 100\n", ""), "field 'vocab_size': missing"),
        (GOOD.replace("d_model: 64", "d_model: 66"), "field 'd_model': 66 is not divisible by n_head=4"),
        (GOOD + "n_kv_head: 3\n", "field 'n_kv_head': 3 does not divide n_head=4"),
        (GOOD.replace("ffn: gelu", "ffn: relu2"), "field 'ffn': must be one of gelu, swiglu"),
        (GOOD + "  bad: [\n", "malformed YAML at line"),
        ("- just\n- a list\n", "expected a mapping"),
    ],
)
def test_malformed_model_profiles_name_file_and_field(tmp_path, text, message):
    path = write(tmp_path, "m.yaml", text)
    with pytest.raises(ProfileError) as e:
        load_model(path)
    assert str(e.value).startswith(path) and message in str(e.value)


def test_head_dim_may_differ_from_d_model_over_n_head(tmp_path):
    m = load_model(write(tmp_path, "m.yaml", GOOD.replace("d_model: 64", "d_model: 66") + "head_dim: 16\n"))
    assert m.head_dim == 16 and m.q_dim == 64


def test_malformed_hardware(tmp_path):
    text = "name: x\nkind: gpu\nmemory_gb: 10\nmemory_bandwidth_gb_s: 100\npeak_tflops: {fp16: -1}\n"
    with pytest.raises(ProfileError, match=r"field 'peak_tflops.fp16': must be a number > 0, got -1"):
        load_hardware(write(tmp_path, "h.yaml", text))
    with pytest.raises(ProfileError, match=r"field 'peak_tflops.fp7': unknown dtype"):
        load_hardware(write(tmp_path, "h.yaml", text.replace("fp16: -1", "fp7: 1")))


def test_unknown_names_suggest_the_closest():
    with pytest.raises(ProfileError, match=r"unknown model 'llama-2-7' .*did you mean .*llama-2-7b"):
        load_model("llama-2-7")
    with pytest.raises(ProfileError, match=r"unknown hardware 'h100' .*did you mean h100-"):
        load_hardware("h100")
    with pytest.raises(ProfileError, match="no such file"):
        load_model("nowhere/config.json")


HF_LLAMA_2_7B = {  # meta-llama/Llama-2-7b-hf config.json (abridged)
    "model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008, "num_attention_heads": 32,
    "num_hidden_layers": 32, "num_key_value_heads": 32, "vocab_size": 32000, "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-05, "tie_word_embeddings": False, "torch_dtype": "float16",
}


def hf(tmp_path, cfg, name="config.json"):
    d = tmp_path / "some-model"
    d.mkdir(exist_ok=True)
    p = d / name
    p.write_text(json.dumps(cfg))
    return str(p)


def test_hf_llama_config_matches_the_builtin_profile(tmp_path):
    m = load_model(hf(tmp_path, HF_LLAMA_2_7B))
    assert m.name == "some-model"
    assert m.n_params == load_model("llama-2-7b").n_params == 6_738_415_616


def test_hf_configs_of_other_families(tmp_path):
    gpt2 = {"model_type": "gpt2", "n_embd": 768, "n_layer": 12, "n_head": 12, "n_positions": 1024,
            "vocab_size": 50257, "n_inner": None}
    assert load_model(hf(tmp_path, gpt2)).n_params == 124_439_808
    mixtral = HF_LLAMA_2_7B | {"model_type": "mixtral", "intermediate_size": 14336, "num_key_value_heads": 8,
                               "num_local_experts": 8, "num_experts_per_tok": 2, "max_position_embeddings": 32768}
    m = load_model(hf(tmp_path, mixtral))
    assert (m.n_expert, m.n_expert_active, m.n_kv_head) == (8, 2, 8)
    assert m.n_params == pytest.approx(46.7e9, rel=0.005)
    opt = {"model_type": "opt", "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
           "ffn_dim": 16384, "vocab_size": 50272, "max_position_embeddings": 2048, "enable_bias": True}
    assert load_model(hf(tmp_path, opt)).n_params == pytest.approx(6.66e9, rel=0.01)
    neox = {"model_type": "gpt_neox", "hidden_size": 2560, "num_hidden_layers": 32, "num_attention_heads": 32,
            "intermediate_size": 10240, "vocab_size": 50432, "max_position_embeddings": 2048}
    assert load_model(hf(tmp_path, neox)).n_params == pytest.approx(2.78e9, rel=0.01)  # pythia-2.8b
    qwen = {"model_type": "qwen2", "hidden_size": 3584, "num_hidden_layers": 28, "num_attention_heads": 28,
            "num_key_value_heads": 4, "intermediate_size": 18944, "vocab_size": 152064,
            "max_position_embeddings": 32768, "tie_word_embeddings": False}
    m = load_model(hf(tmp_path, qwen))
    # q, k and v have biases, o_proj and the FFN none (Qwen2Attention, Qwen2MLP)
    assert (m.n_kv_head, m.bias, m.qkv_bias) == (4, False, True)
    assert m.n_params == 7_615_616_512  # Qwen2-7B as published (the safetensors index's total)


def test_hf_config_errors(tmp_path):
    with pytest.raises(ProfileError, match="field 'model_type': unsupported 't5'"):
        load_model(hf(tmp_path, {"model_type": "t5"}))
    with pytest.raises(ProfileError, match="field 'hidden_size': missing"):
        load_model(hf(tmp_path, {k: v for k, v in HF_LLAMA_2_7B.items() if k != "hidden_size"}))
    p = tmp_path / "broken.json"
    p.write_text("{not json")
    with pytest.raises(ProfileError, match=r"broken.json: malformed JSON at line 1"):
        load_model(str(p))


@pytest.mark.slow
def test_wheel_ships_the_profiles_and_finds_them_from_another_directory(tmp_path):
    root = Path(__file__).resolve().parents[1]
    pytest.importorskip("hatchling")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path / "dist"), str(root)], check=True)
    wheel = next((tmp_path / "dist").glob("gpt_batchprof-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "gpt_batchprof/_profiles/models/llama-2-7b.yaml" in names
    assert "gpt_batchprof/_profiles/hardware/h100-sxm.yaml" in names
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(tmp_path / "site"),
                    str(wheel)], check=True)
    code = "from gpt_batchprof.profiles import load_model; print(load_model('gpt2').n_params)"
    env = {"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "124439808", out.stderr


# --------------------------------------------------------------------------- Qwen2 sliding window (issue 19)

QWEN2_7B = {"model_type": "qwen2", "hidden_size": 3584, "num_hidden_layers": 28, "num_attention_heads": 28,
            "num_key_value_heads": 4, "intermediate_size": 18944, "vocab_size": 152064,
            "max_position_embeddings": 32768, "sliding_window": 4096, "use_sliding_window": True}


@pytest.mark.parametrize("extra, window", [
    ({}, None),                          # max_window_layers defaults to 28: layers 28.. are windowed, of 28: none
    ({"max_window_layers": 28}, None),
    ({"max_window_layers": 0}, 4096),    # every layer from 0 on
    ({"use_sliding_window": False, "max_window_layers": 0}, None),
    ({"layer_types": ["sliding_attention"] * 28}, 4096),
    ({"layer_types": ["full_attention"] * 28}, None),
])
def test_qwen2_window_applies_to_the_layers_max_window_layers_says(tmp_path, extra, window):
    p = tmp_path / "config.json"
    p.write_text(json.dumps(QWEN2_7B | extra))
    assert load_model(str(p)).sliding_window == window


def test_qwen2_window_on_some_layers_only_is_a_stack(tmp_path):
    # layers 20..27 windowed, 0..19 full (was refused before models were stacks of layer kinds)
    p = tmp_path / "config.json"
    p.write_text(json.dumps(QWEN2_7B | {"max_window_layers": 20}))
    m = load_model(str(p))
    assert [(g.count, g.sliding_window) for g in m.layer_groups] == [(8, 4096), (20, None)]
