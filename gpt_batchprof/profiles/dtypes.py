"""Storage dtypes: bytes per element of each, and which weights a quantised checkpoint leaves alone."""

from __future__ import annotations

# Bytes per element of each storage dtype. The 4-bit formats are weights only, each value with
# its share of a block scale:
# - int4: two values per byte plus, as real int4 formats store them (GPTQ, AWQ,
#   bitsandbytes-style group quantisation), one fp16 scale per group of INT4_GROUP_SIZE
#   weights: 4 + 16/128 = 4.125 bits per weight;
# - mxfp4 (OCP Microscaling, gpt-oss's experts): e2m1 values with one 8-bit (e8m0) scale per
#   block of 32: 4 + 8/32 = 4.25 bits;
# - nvfp4 (NVIDIA Blackwell): e2m1 values with one fp8 (e4m3) scale per block of 16:
#   4 + 8/16 = 4.5 bits (its one fp32 scale per tensor is left out: 4 bytes a matrix).
INT4_GROUP_SIZE = 128
MXFP4_BLOCK = 32
NVFP4_BLOCK = 16
DTYPE_BYTES: dict[str, float] = {
    "fp32": 4.0,
    "fp16": 2.0,
    "bf16": 2.0,
    "fp8": 1.0,
    "int8": 1.0,
    "int4": (4 + 16 / INT4_GROUP_SIZE) / 8,
    "mxfp4": (4 + 8 / MXFP4_BLOCK) / 8,
    "nvfp4": (4 + 8 / NVFP4_BLOCK) / 8,
}
# Quantised weight formats: checkpoints in them quantise only the linear layers of the
# blocks; embeddings, the LM head, norms, MoE routers and biases keep the activation dtype.
QUANTISED_DTYPES = ("int4", "int8", "fp8", "mxfp4", "nvfp4")


def unquantised_dtype(weight_dtype: str, act_dtype: str) -> str:
    """Dtype of the weights a quantised checkpoint leaves alone (embeddings, LM head, norms,
    routers, biases): the activation dtype when ``weight_dtype`` is a quantised format, else
    ``weight_dtype`` itself. The one place this rule is written."""
    return act_dtype if weight_dtype in QUANTISED_DTYPES else weight_dtype
ACT_DTYPES = ("fp32", "fp16", "bf16", "fp8", "int8")
WEIGHT_DTYPES = ("fp32", "fp16", "bf16", "fp8", "int8", "int4", "mxfp4", "nvfp4")
KV_DTYPES = ("fp32", "fp16", "bf16", "fp8", "int8")
PEAK_DTYPES = ("fp32", "tf32", "fp16", "bf16", "fp8", "int8")


def store_bytes(weight_dtype: str, act_dtype: str, expert_dtype: str | None = None) -> dict[str, float]:
    """Bytes per weight of each store (``specs.Weights.store``): ``matrix`` (the blocks' linear
    layers) at the weight dtype, ``expert`` (the routed experts' matrices) at ``expert_dtype`` or the
    weight dtype, ``other`` (embeddings, LM head, norms, routers, biases) at :func:`unquantised_dtype`."""
    return {"matrix": DTYPE_BYTES[weight_dtype], "expert": DTYPE_BYTES[expert_dtype or weight_dtype],
            "other": DTYPE_BYTES[unquantised_dtype(weight_dtype, act_dtype)]}
