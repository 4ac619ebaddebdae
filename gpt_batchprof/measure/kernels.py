"""Real tensors and a callable for every operator, at exactly the shape its OpCost names.

`bench` times these; the analytic model predicts the same OpCost, so rows line up by
construction. One call of a kernel is ONE launch (one layer); the row's totals are over
``cost.launches``. Inputs are random (``torch.randn``), never zeros, and ``sets`` copies
of them are made so that a timer can rotate through them (``fn(i)`` uses set ``i % sets``).
``torch`` is imported inside functions only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from gpt_batchprof.analytic.gpt import Dtypes
from gpt_batchprof.analytic.ops import DENSE_OPS, OpCost
from gpt_batchprof.errors import BatchprofError
from gpt_batchprof.profiles import ModelSpec

DENSE = DENSE_OPS + ("mlp",)
FLOAT_DTYPES = ("fp32", "fp16", "bf16")


class Unsupported(Exception):
    """This device / torch cannot run the operator at these dtypes: the row is skipped."""


@dataclass(frozen=True)
class Kernel:
    op: str
    fn: Callable[[int], object]  # fn(i): one launch on input set i % sets
    sets: int
    set_bytes: float  # bytes of one input set (inputs and outputs)


def torch_dtype(name: str):
    import torch

    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16,
            "fp8": torch.float8_e4m3fn, "int8": torch.int8}[name]


# the float dtypes a whole model runs in (generate, the HF engine)
RUN_DTYPES = ("fp32", "fp16", "bf16")


def torch_dtype_of(scenario):
    """The one float dtype a generation runs in (``scenario.dtypes``: weights, activations and KV
    cache alike); mixed or integer dtypes have no plain torch kernels."""
    dt = scenario.dtypes
    if not (dt.weight == dt.act == dt.kv) or dt.act not in RUN_DTYPES:
        raise BatchprofError(
            f"generate runs weights, activations and KV cache in one float dtype ({', '.join(RUN_DTYPES)}); "
            f"got weights {dt.weight}, activations {dt.act}, KV {dt.kv}")
    return torch_dtype(dt.act)


def _operand_dtypes(op: str, dtypes: Dtypes) -> tuple[str, str]:
    """(left operand / activations, right operand) dtypes of an operator."""
    if op in ("lm_head", "moe_router"):  # left unquantised by quantised checkpoints
        return dtypes.act, dtypes.unquantised
    if op in DENSE:
        return dtypes.act, dtypes.weight
    if op in ("attn_score", "attn_context", "attn_fused"):
        return dtypes.act, dtypes.kv
    return dtypes.act, dtypes.act  # norm, softmax


def unsupported_reason(op: str, dtypes: Dtypes, device: str, m: int = 0, n: int = 0, k: int = 0,
                       groups: int = 1) -> str | None:
    """Why ``op`` cannot be timed at these dtypes on ``device`` (None when it can)."""
    import torch

    left, right = _operand_dtypes(op, dtypes)
    if left != right:
        what = "weights" if op in DENSE else "KV cache"
        return (f"mixed dtypes ({left} activations, {right} {what}) need a fused dequantising kernel, "
                "which torch does not provide; bench --dtype with one dtype for both")
    dt = left
    if dt in FLOAT_DTYPES:
        if device == "cuda" and dt == "bf16" and not torch.cuda.is_bf16_supported():
            return "bf16 is not supported by this GPU"
        return None
    if device == "cpu":
        return f"torch has no native {dt} CPU kernel for {op} (only emulation); time {dt} on CUDA"
    if op not in DENSE:
        return f"torch has no {dt} {op} kernel; bench it at fp16/bf16"
    if groups > 1:
        return f"grouped (MoE) {dt} matmuls are not in torch"
    if dt == "fp8":
        if not hasattr(torch, "_scaled_mm") or torch.cuda.get_device_capability() < (8, 9):
            return "fp8 matmul (torch._scaled_mm) needs an Ada/Hopper GPU (compute capability >= 8.9)"
        if m % 16 or n % 16 or k % 16:
            return f"torch._scaled_mm needs m, n, k divisible by 16 (got {m}, {n}, {k})"
        return None
    if dt == "int8":
        if not hasattr(torch, "_int_mm"):
            return "int8 matmul (torch._int_mm) is not in this torch"
        if m <= 16 or n % 8 or k % 8:
            return f"torch._int_mm needs m > 16 and n, k divisible by 8 (got {m}, {n}, {k})"
        return None
    return f"{dt} is not a compute dtype bench can time"


def _randn(shape, dtype: str, device: str):
    import torch

    if dtype == "int8":
        return torch.randint(-8, 8, shape, dtype=torch.int8, device=device)
    if dtype == "fp8":
        return torch.randn(shape, dtype=torch.float16, device=device).to(torch.float8_e4m3fn)
    return torch.randn(shape, dtype=torch_dtype(dtype), device=device)


def per_launch_bytes(cost: OpCost) -> float:
    return cost.bytes / cost.launches if cost.launches else cost.bytes


def build_kernel(cost: OpCost, model: ModelSpec, dtypes: Dtypes, device: str, sets: int = 1) -> Kernel:
    """Tensors and one-launch callable for ``cost`` (raises Unsupported, or OOM from torch)."""
    import torch

    s = cost.shape
    op = cost.op
    reason = unsupported_reason(op, dtypes, device, s.m, s.n, s.k, s.batch)
    if reason:
        raise Unsupported(reason)
    sets = max(1, int(sets))
    act, right = _operand_dtypes(op, dtypes)
    F = torch.nn.functional

    if op in DENSE:
        if act == "fp8":
            xs = [_randn((s.m, s.k), act, device) for _ in range(sets)]
            ws = [_randn((s.n, s.k), right, device).t() for _ in range(sets)]  # column-major (k, n)
            one = torch.ones((), dtype=torch.float32, device=device)
            fn = lambda i: torch._scaled_mm(xs[i % sets], ws[i % sets], scale_a=one, scale_b=one,  # noqa: E731
                                            out_dtype=torch.bfloat16)
        elif act == "int8":
            xs = [_randn((s.m, s.k), act, device) for _ in range(sets)]
            ws = [_randn((s.k, s.n), right, device) for _ in range(sets)]
            fn = lambda i: torch._int_mm(xs[i % sets], ws[i % sets])  # noqa: E731
        elif s.batch > 1:  # MoE: one GEMM per touched expert, batched
            xs = [_randn((s.batch, s.m, s.k), act, device) for _ in range(sets)]  # (E, rows, k)
            ws = [_randn((s.batch, s.k, s.n), right, device) for _ in range(sets)]  # (E, k, n)
            outs = [torch.empty((s.batch, s.m, s.n), dtype=torch_dtype(act), device=device) for _ in range(sets)]
            fn = lambda i: torch.bmm(xs[i % sets], ws[i % sets], out=outs[i % sets])  # noqa: E731
        else:
            xs = [_randn((s.m, s.k), act, device) for _ in range(sets)]  # (tokens, k)
            # stored (n, k) as nn.Linear keeps its weight (x @ W^T): the layout models run
            ws = [_randn((s.n, s.k), right, device).t() for _ in range(sets)]  # (k, n), column-major
            outs = [torch.empty((s.m, s.n), dtype=torch_dtype(act), device=device) for _ in range(sets)]
            fn = lambda i: torch.mm(xs[i % sets], ws[i % sets], out=outs[i % sets])  # noqa: E731
    elif op in ("attn_score", "attn_context"):
        # score:   (B*nkv, g*q, hd) @ (B*nkv, hd, L) -> (B*nkv, g*q, L)
        # context: (B*nkv, g*q, L)  @ (B*nkv, L, hd) -> (B*nkv, g*q, hd)
        xs = [_randn((s.batch, s.m, s.k), act, device) for _ in range(sets)]
        ys = [_randn((s.batch, s.k, s.n), right, device) for _ in range(sets)]
        outs = [torch.empty((s.batch, s.m, s.n), dtype=torch_dtype(act), device=device) for _ in range(sets)]
        fn = lambda i: torch.bmm(xs[i % sets], ys[i % sets], out=outs[i % sets])  # noqa: E731
    elif op == "attn_softmax":
        xs = [_randn((s.m, s.n), act, device) for _ in range(sets)]  # (B*nh*q, L)
        outs = [torch.empty_like(x) for x in xs]
        softmax_out = getattr(getattr(torch.ops.aten, "_softmax", None), "out", None)
        if softmax_out is not None and device != "meta":
            fn = lambda i: softmax_out(xs[i % sets], -1, False, out=outs[i % sets])  # noqa: E731
        else:
            fn = lambda i: torch.softmax(xs[i % sets], dim=-1)  # noqa: E731
    elif op == "attn_fused":
        B, q, L, hd, nh, nkv = s.batch, s.m, s.n, s.k, s.heads, s.kv_heads
        qs = [_randn((B, nh, q, hd), act, device) for _ in range(sets)]  # (B, nh, q, hd)
        ks = [_randn((B, nkv, L, hd), right, device) for _ in range(sets)]  # (B, nkv, L, hd)
        vs = [_randn((B, nkv, L, hd), right, device) for _ in range(sets)]
        kw: dict = {}
        if s.causal and q == L:
            kw["is_causal"] = True
        elif s.causal:  # queries are the last q of L positions: bottom-right aligned mask
            kw["attn_mask"] = torch.ones((q, L), dtype=torch.bool, device=device).tril(L - q)
        if nkv != nh:
            try:
                F.scaled_dot_product_attention(qs[0][:1, :, :1], ks[0][:1, :, :1], vs[0][:1, :, :1], enable_gqa=True)
                kw["enable_gqa"] = True
            except TypeError:  # older torch: expand K/V to every query head
                g = nh // nkv
                ks = [k.repeat_interleave(g, dim=1) for k in ks]
                vs = [v.repeat_interleave(g, dim=1) for v in vs]
        fn = lambda i: F.scaled_dot_product_attention(qs[i % sets], ks[i % sets], vs[i % sets], **kw)  # noqa: E731
    elif op == "norm":
        xs = [_randn((s.m, s.n), act, device) for _ in range(sets)]  # (tokens, d_model)
        w = _randn((s.n,), act, device)
        if model.norm == "rmsnorm":
            fn = lambda i: F.rms_norm(xs[i % sets], (s.n,), w)  # noqa: E731
        else:
            b = _randn((s.n,), act, device)
            fn = lambda i: F.layer_norm(xs[i % sets], (s.n,), w, b)  # noqa: E731
    else:
        raise Unsupported(f"no kernel for operator '{op}'")
    return Kernel(op, fn, sets, per_launch_bytes(cost))


def build_sequence(kernels: list[tuple[Kernel, int]], op: str, set_bytes: float) -> Kernel:
    """Several kernels back to back as one callable (``repeat`` launches each): a whole block."""

    def fn(i: int) -> None:
        for k, repeat in kernels:
            for _ in range(repeat):
                k.fn(i)

    return Kernel(op, fn, max(k.sets for k, _ in kernels), set_bytes)
