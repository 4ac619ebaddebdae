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
