import pytest

from gpt_batchprof.profiles import hardware_from_mapping, model_from_mapping


@pytest.fixture
def seed002_hw():
    """Seed 002's T4 numbers: 65 TFLOP/s fp16 and 300 GB/s (ridge ~216 FLOP/byte)."""
    return hardware_from_mapping(
        {"name": "t4-article", "kind": "gpu", "memory_gb": 16, "memory_bandwidth_gb_s": 300,
         "peak_tflops": {"fp16": 65, "fp32": 8.1}, "launch_overhead_us": 0},
        "test",
    )


@pytest.fixture
def tiny_model():
    """2 layers, d_model 256, 8 query heads sharing 2 K/V heads (GQA), gated FFN."""
    return model_from_mapping(
        {"name": "tiny", "n_layer": 2, "d_model": 256, "n_head": 8, "n_kv_head": 2, "d_ff": 512,
         "ffn": "swiglu", "vocab_size": 1000, "max_seq_len": 512, "norm": "rmsnorm"},
        "test",
    )


@pytest.fixture
def measured_section():
    """A factory: measured_section(tables, overhead_us={"eager": 2}, **extra) is a hardware profile's
    `measured:` section (datasheet units) with its provenance filled in."""
    def make(tables, overhead_us=None, **extra):
        return {"device_name": "hand", "torch_version": "0", "threads": 0, "date": "2026-12-05",
                "overhead_us": overhead_us or {"eager": 2}, "tables": tables} | extra
    return make


@pytest.fixture
def small_moe():
    """A factory: small_moe(norm="layernorm") is 1 layer, d_model 8, 2 heads of 4, 4 experts of d_ff 16
    with 2 active per token, and a shared expert of d_ff 8 (SwiGLU, vocab 10)."""
    def make(norm: str = "layernorm"):
        return model_from_mapping(
            {"name": "moe", "n_layer": 1, "d_model": 8, "n_head": 2, "n_kv_head": 2, "d_ff": 16, "ffn": "swiglu",
             "vocab_size": 10, "max_seq_len": 64, "norm": norm, "n_expert": 4, "n_expert_active": 2,
             "d_ff_shared": 8},
            "test",
        )
    return make


@pytest.fixture
def toy_gpu():
    """A factory: toy_gpu(**fields) is 1 TFLOP/s fp16, 100 GB/s, 2 us per launch, kind gpu, 1 GB,
    with ``fields`` overriding or adding profile fields."""
    def make(**extra):
        m = {"name": "toy", "kind": "gpu", "memory_gb": 1, "memory_bandwidth_gb_s": 100,
             "peak_tflops": {"fp16": 1}, "launch_overhead_us": 2}
        return hardware_from_mapping(m | extra, "test")
    return make
