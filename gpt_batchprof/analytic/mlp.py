"""Seed 002's experiment as an OpCost: a plain MLP of ``depth`` square layers at one batch.

Each layer is a (batch x width) @ (width x width) matmul; the row totals over ``depth``
launches. Pure Python, like the rest of ``analytic``.
"""

from __future__ import annotations

from gpt_batchprof.analytic.gpt import Dtypes
from gpt_batchprof.analytic.ops import OpCost, matmul_cost
from gpt_batchprof.errors import BatchprofError
from gpt_batchprof.profiles import DTYPE_BYTES


def mlp_cost(batch: int, depth: int = 8, width: int = 1024, dtypes: Dtypes = Dtypes()) -> OpCost:
    """``depth`` layers of ``width`` x ``width`` weights applied to ``batch`` input vectors."""
    if batch < 1 or depth < 1 or width < 1:
        raise BatchprofError(f"impossible MLP: batch={batch}, depth={depth}, width={width} (all must be >= 1)")
    return matmul_cost(
        "mlp", tokens=batch, k=width, n=width, w_bytes=DTYPE_BYTES[dtypes.weight],
        a_bytes=DTYPE_BYTES[dtypes.act], launches=depth, compute_dtype=dtypes.act,
        ctx=("decode", batch, 1, 0),
    )
