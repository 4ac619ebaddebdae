"""Import NVIDIA's measured kernel database (the `aiconfigurator-core` package) as `measured:` tables.

AIConfigurator publishes kernels timed on real GPUs under
``aiconfigurator_core/systems/data/<gpu>/<op>/<framework>/<version>/*.parquet`` (Apache-2.0;
latencies in milliseconds). This module converts the parts our pricing reads into the tables
of :mod:`gpt_batchprof.analytic.efficiency`:

- ``gemm/`` -> ``matmul.bf16`` and ``matmul.fp8`` (per-tensor scaled) over (m, n, k);
- ``attention/`` context and generation tables -> ``attn_prefill.bf16`` / ``attn_decode.bf16``
  over (batch x K/V heads, length, query heads per K/V head, head_dim), bf16 K/V cache,
  no sliding window; FLOPs counted as ``enumerate_ops`` counts them;
- ``moe/`` fused MoE layers (bf16, balanced routing, no TP/EP) -> ``moe.bf16`` over (rows per
  touched expert, elements of one expert matrix): each measured model configuration gives one
  curve along the rows axis (resampled log-log onto the kept rows); its matrix size is a point
  of the second axis;
- ``comm/`` all-reduce -> the profile's ``interconnect`` (bandwidth and per-step latency
  fitted to the ring formula the pricing uses).

Only a compact grid is kept (``GRIDS`` below: about a third of the database's points on
each axis); the points left out are what ``benchmarks/gpu_accuracy.py`` judges the tables on.
A shape outside the kept grid is clamped to its edge and flagged ``extrapolated`` by the
interpolation, as for any table; a kept grid point the database lacks is stored as null
and filled by the usual rule (the dominated measured cell with the most work).

Rates are stored net of the in-graph launch gap (the profile's ``graph_launch_overhead_us``),
as `calibrate` stores them net of the overhead it measures, so that a prediction at a grid
point in ``--launch graphs`` mode returns the published latency. The eager overhead is the
profile's datasheet estimate: the database does not time launches.

Needs the optional extra (``pip install 'gpt-batchprof[aic]'``: aiconfigurator-core, which
brings pandas and pyarrow); without it, one line and exit 2. Never imports torch.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from gpt_batchprof.profiles.measured import MeasuredTables, Table
from gpt_batchprof.analytic.gpt import expected_experts_touched
from gpt_batchprof.analytic.ops import causal_pairs
from gpt_batchprof.errors import BatchprofError
from gpt_batchprof.profiles import HardwareSpec, Interconnect

PACKAGE = "aiconfigurator-core"
FRAMEWORKS = ("vllm", "sglang", "trtllm")
# built-in profile name -> the database's system folder
SYSTEMS = {
    "h100-sxm": "h100_sxm",
    "h200": "h200_sxm",
    "a100-80gb": "a100_sxm",
    "b200": "b200_sxm",
    "gb200": "gb200",
    "l40s": "l40s",
}
GEMM_DTYPES = {"bf16": "bfloat16", "fp8": "fp8"}  # our dtype -> the database's gemm_dtype

# The grid kept in the profiles (the database has ~74 m, 22 n and k values per GEMM dtype).
GRIDS: dict[str, dict[str, tuple[float, ...]]] = {
    "matmul": {
        "m": (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768),
        "n": (32, 128, 512, 1024, 2048, 4096, 8192, 16384, 65536),
        "k": (32, 128, 512, 1024, 2048, 4096, 8192, 16384, 65536),
    },
    "attn_decode": {
        "batch_kv_heads": (1, 4, 16, 64, 256, 1024, 4096, 16384),
        "kv_len": (2, 16, 128, 512, 2048, 8192, 32768, 131072),
        "gqa": (1, 2, 4, 8),
        "head_dim": (64, 128, 256),
    },
    "moe": {"rows_per_expert": (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)},  # + the configs' matrices
    "attn_prefill": {
        "batch_kv_heads": (1, 4, 16, 64, 256, 1024, 4096),
        "seq_len": (16, 64, 256, 1024, 4096, 16384),
        "gqa": (1, 2, 4, 8),
        "head_dim": (64, 128, 256),
    },
}


class MissingExtra(BatchprofError):
    pass


@dataclass(frozen=True)
class Database:
    """Where one GPU's data lies in the installed package."""

    root: Path  # .../systems/data/<system>
    system: str
    package_version: str


def _require(module: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtra(
            f"--from aiconfigurator needs the optional extra: pip install 'gpt-batchprof[aic]' "
            f"({PACKAGE} with pandas and pyarrow; no module named {module!r})") from None


def locate(system_or_profile: str) -> Database:
    """The installed database folder of a GPU (a built-in profile name or the database's own)."""
    _require("pandas")
    _require("pyarrow")
    pkg = _require("aiconfigurator_core")
    from importlib.metadata import version

    data = Path(pkg.__file__).parent / "systems" / "data"
    system = SYSTEMS.get(system_or_profile, system_or_profile)
    root = data / system
    have = sorted(p.name for p in data.iterdir() if p.is_dir() and (p / "gemm").is_dir())
    if not (root / "gemm").is_dir():
        raise BatchprofError(f"--from aiconfigurator: no measured GEMMs for '{system_or_profile}' in {PACKAGE} "
                             f"(GPUs with data: {', '.join(have)}; built-in profiles: {', '.join(SYSTEMS)})")
    return Database(root, system, version(PACKAGE))


def _version_key(v: str):
    from packaging.version import InvalidVersion, Version

    try:
        return (1, Version(v))
    except InvalidVersion:
        return (0, v)


def newest(root: Path, op: str, framework: str, filename: str) -> Path | None:
    """The newest version folder of ``op``/``framework`` holding ``filename``."""
    base = root / op / framework
    if not base.is_dir():
        return None
    versions = sorted((d.name for d in base.iterdir() if (d / filename).is_file()), key=_version_key)
    return base / versions[-1] / filename if versions else None


def _net(latency_s: float, overhead_s: float) -> float:
    """Kernel time net of the launch gap (calibrate's rule: half the time when t < 2 x overhead)."""
    return latency_s - overhead_s if latency_s > 2 * overhead_s else latency_s / 2


def _pick_kernel(df, where: str) -> str:
    """The kernel with the most measured points (one framework may list several for a dtype)."""
    counts = df["kernel_source"].value_counts()
    if counts.empty:
        raise BatchprofError(f"--from aiconfigurator: no rows for {where}")
    return str(counts.index[0])


def _table(kind: str, dtype: str, grid: dict[str, tuple[float, ...]], cells: dict[tuple, float]) -> Table | None:
    """A Table over ``grid`` with the rates in ``cells`` (missing cells null); None if all are missing."""
    from itertools import product

    values = [cells.get(c) for c in product(*grid.values())]
    if all(v is None for v in values):
        return None
    return Table(kind, dtype, tuple(tuple(float(x) for x in ax) for ax in grid.values()), tuple(values))


def gemm_table(df, dtype: str, overhead_s: float, grid=None) -> tuple[Table | None, str]:
    """``matmul.<dtype>`` from the gemm rows: FLOP/s = 2mnk / net latency at the kept (m, n, k)."""
    grid = grid or GRIDS["matmul"]
    rows = df[df["gemm_dtype"] == GEMM_DTYPES[dtype]]
    if rows.empty:
        return None, ""
    kernel = _pick_kernel(rows, f"gemm {dtype}")
    rows = rows[rows["kernel_source"] == kernel]
    rows = rows[rows["m"].isin(grid["m"]) & rows["n"].isin(grid["n"]) & rows["k"].isin(grid["k"])]
    cells = {}
    for (m, n, k), t in rows.groupby(["m", "n", "k"])["latency"].median().items():
        cells[(m, n, k)] = 2.0 * m * n * k / _net(t * 1e-3, overhead_s)
    return _table("matmul", dtype, grid, cells), kernel


def attention_flops(batch: int, heads: int, head_dim: int, q: int, keys: int) -> float:
    """FLOPs of fused attention as `enumerate_ops` counts them: 4 x head_dim per visible pair."""
    return 4.0 * head_dim * batch * heads * causal_pairs(q, keys)


def _attention_rows(df):
    """bf16 attention over a bf16 K/V cache, no sliding window: the configuration we price."""
    sel = (df["attn_dtype"] == "bfloat16") & (df["kv_cache_dtype"] == "bfloat16")
    if "window_size" in df.columns:
        sel &= df["window_size"] == 0
    if "beam_width" in df.columns:
        sel &= df["beam_width"] == 1
    return df[sel]


def layout_for(bkv: int, gqa: int, measured: set[tuple[int, int, int]]):
    """A measured (batch, heads, kv_heads) with batch x kv_heads = ``bkv`` and heads = gqa x kv_heads
    (``measured``: the layouts the database has at one head_dim): 8 K/V heads where it has them
    (the common layout), else the most K/V heads."""
    options = [kv for (b, h, kv) in measured if b * kv == bkv and h == kv * gqa]
    if not options:
        return None
    kv = 8 if 8 in options else max(options)
    return bkv // kv, kv * gqa, kv


def attention_points(df, phase: str) -> dict[tuple[int, int, int, int, int], float]:
    """(batch, heads, kv_heads, head_dim, keys) -> latency in seconds (median of repeats)."""
    keys = df["step"] + 1 if phase == "decode" else df["isl"]  # decode: `step` cached tokens + the new one
    g = df.assign(keys=keys).groupby(["batch_size", "num_heads", "num_key_value_heads", "head_dim", "keys"])["latency"]
    return {tuple(int(x) for x in k): float(t) * 1e-3 for k, t in g.median().items()}


def attention_table(df, phase: str, overhead_s: float, grid=None) -> tuple[Table | None, str]:
    kind = f"attn_{phase}"
    grid = grid or GRIDS[kind]
    rows = _attention_rows(df)
    if rows.empty:
        return None, ""
    kernel = _pick_kernel(rows, f"{phase} attention")
    rows = rows[rows["kernel_source"] == kernel]
    points = attention_points(rows, phase)
    length_axis = grid["kv_len" if phase == "decode" else "seq_len"]
    cells = {}
    for hd in grid["head_dim"]:
        layouts = {(b, h, kv) for (b, h, kv, d, _) in points if d == hd}
        for bkv in grid["batch_kv_heads"]:
            for g in grid["gqa"]:
                lay = layout_for(int(bkv), int(g), layouts)
                if lay is None:
                    continue
                b, h, kv = lay
                for L in length_axis:
                    t = points.get((b, h, kv, int(hd), int(L)))
                    if t is None:
                        continue
                    q = 1 if phase == "decode" else int(L)
                    cells[(bkv, L, g, hd)] = attention_flops(b, h, int(hd), q, int(L)) / _net(t, overhead_s)
    return _table(kind, "bf16", grid, cells), kernel


def moe_curves(df, exclude: Iterable[tuple[int, int, int, int]] = ()) -> dict[tuple[int, int, int, int], list]:
    """(hidden, inter, topk, experts) -> [(rows per touched expert, FLOP/s-ready (flops, seconds))], bf16,
    balanced routing, one GPU (no TP/EP); rows per expert as `enumerate_ops` counts them (uniform routing)."""
    sel = ((df["moe_dtype"] == "bfloat16") & (df["moe_tp_size"] == 1) & (df["moe_ep_size"] == 1)
           & (df["distribution"] == "balanced"))
    rows = df[sel]
    if rows.empty:
        return {}
    rows = rows[rows["kernel_source"] == _pick_kernel(rows, "moe bf16")]
    out: dict[tuple[int, int, int, int], list] = {}
    keys = ["hidden_size", "inter_size", "topk", "num_experts", "num_tokens"]
    for (h, i, k, e, t), lat in rows.groupby(keys)["latency"].median().items():
        cfg = (int(h), int(i), int(k), int(e))
        if cfg in exclude:
            continue
        touched = max(1, round(expected_experts_touched(e, k, t)))
        m = max(1, round(t * k / touched))
        out.setdefault(cfg, []).append((m, 3 * 2.0 * t * k * h * i, lat * 1e-3))  # gate, up, down: 3 GEMMs
    return {c: sorted(v) for c, v in out.items()}


def moe_table(df, overhead_s: float, exclude=(), grid=None) -> tuple[Table | None, str]:
    """``moe.bf16``: each configuration's FLOP/s along its rows per expert, resampled log-log onto the
    kept rows axis (no extrapolation past its measured range: those cells stay null); configurations
    sharing a matrix size are averaged in log rate."""
    import math

    curves = moe_curves(df, exclude)
    if not curves:
        return None, ""
    m_axis = (grid or GRIDS["moe"])["rows_per_expert"]
    by_w: dict[int, list[dict[float, float]]] = {}
    for (h, i, _k, _e), pts in curves.items():
        rates = sorted({m: f / _net(t, overhead_s) for m, f, t in pts}.items())  # last duplicate m wins
        at = {}
        for target in m_axis:
            for (m0, r0), (m1, r1) in zip(rates, rates[1:]):
                if m0 <= target <= m1:
                    u = 0.0 if m1 == m0 else (math.log(target) - math.log(m0)) / (math.log(m1) - math.log(m0))
                    at[target] = math.exp((1 - u) * math.log(r0) + u * math.log(r1))
                    break
        by_w.setdefault(h * i, []).append(at)
    w_axis = tuple(sorted(by_w))
    cells = {}
    for w in w_axis:
        for m in m_axis:
            vals = [c[m] for c in by_w[w] if m in c]
            if vals:
                cells[(m, w)] = math.exp(sum(math.log(v) for v in vals) / len(vals))
    kernel = _pick_kernel(df[df["moe_dtype"] == "bfloat16"], "moe bf16")
    return _table("moe", "bf16", {"rows_per_expert": m_axis, "expert_weights": w_axis}, cells), kernel


def allreduce_link(df, n_ranks: int | None = None) -> tuple[Interconnect, dict[str, Any]] | None:
    """Bandwidth and per-step latency of the ring formula the pricing uses,
    t = 2 (n-1)/n x S / bandwidth + 2 (n-1) x latency, fitted to the measured all-reduce at the
    largest GPU count: the latency from the smallest message, the bandwidth from the largest."""
    rows = df[df["op_name"] == "all_reduce"] if "op_name" in df.columns else df
    if "kernel_source" in rows.columns and rows["kernel_source"].str.contains("graph").any():
        rows = rows[rows["kernel_source"].str.contains("graph")]  # what a CUDA-graph decode step runs
    if rows.empty:
        return None
    n = n_ranks or int(rows["num_gpus"].max())
    rows = rows[rows["num_gpus"] == n]
    by_size = rows.groupby("message_size")["latency"].median().sort_index()
    if len(by_size) < 2:
        return None
    s_min, t_min = float(by_size.index[0]), float(by_size.iloc[0]) * 1e-3
    s_max, t_max = float(by_size.index[-1]), float(by_size.iloc[-1]) * 1e-3
    steps = 2 * (n - 1)
    latency = t_min / steps
    bandwidth = (steps / n) * s_max / max(t_max - steps * latency, 1e-12)
    kernel = str(rows["kernel_source"].iloc[0]) if "kernel_source" in rows.columns else "nccl"
    fit = {"ranks": n, "kernel": kernel, "message_bytes": [s_min, s_max], "latency_s": [t_min, t_max]}
    return Interconnect(name=f"measured all-reduce ({kernel}, {n} GPUs)", bandwidth_bytes_per_s=bandwidth,
                        latency_s=latency), fit


def convert(hw: HardwareSpec, framework: str = "vllm", system: str | None = None,
            progress=lambda s: None, exclude_moe: Iterable[tuple[int, int, int, int]] = ()) -> tuple[MeasuredTables, Interconnect | None, dict[str, Any]]:
    """The `measured:` tables (and the fitted interconnect) of ``hw`` from the installed database."""
    if framework not in FRAMEWORKS:
        raise BatchprofError(f"--from aiconfigurator:{framework}: unknown framework (known: {', '.join(FRAMEWORKS)})")
    db = locate(system or hw.name)  # one line and exit 2 without the extra (pandas, pyarrow, the package)
    import pandas as pd

    gap = hw.graph_launch_overhead_s if hw.graph_launch_overhead_s is not None else 0.0
    tables: dict[str, Table] = {}
    kernels: dict[str, str] = {}
    versions: dict[str, str] = {}
    device = ""

    gemm = newest(db.root, "gemm", framework, "gemm_perf.parquet")
    if gemm is None:
        raise BatchprofError(f"--from aiconfigurator:{framework}: no GEMM data for {db.system} "
                             f"(frameworks there: {', '.join(sorted(p.name for p in (db.root / 'gemm').iterdir()))})")
    progress(f"reading {gemm.relative_to(db.root.parent)}")
    df = pd.read_parquet(gemm)
    device = str(df["device"].iloc[0]) if "device" in df.columns else db.system
    versions["gemm"] = gemm.parent.name
    for dtype in GEMM_DTYPES:
        t, kernel = gemm_table(df, dtype, gap)
        if t is not None:
            tables[t.name] = t
            kernels[t.name] = kernel
    for phase, filename in (("prefill", "context_attention_perf.parquet"), ("decode", "generation_attention_perf.parquet")):
        path = newest(db.root, "attention", framework, filename)
        if path is None:
            continue
        progress(f"reading {path.relative_to(db.root.parent)}")
        t, kernel = attention_table(pd.read_parquet(path), phase, gap)
        if t is not None:
            tables[t.name] = t
            kernels[t.name] = kernel
            versions[t.name] = path.parent.name
    path = newest(db.root, "moe", framework, "moe_perf.parquet")
    if path is not None:
        progress(f"reading {path.relative_to(db.root.parent)}")
        t, kernel = moe_table(pd.read_parquet(path), gap, exclude=tuple(exclude_moe))
        if t is not None:
            tables[t.name] = t
            kernels[t.name] = kernel
            versions[t.name] = path.parent.name
    link, link_fit = None, None
    for filename in ("custom_allreduce_perf.parquet", "nccl_perf.parquet"):
        for fw in (framework, "nccl"):
            path = newest(db.root, "comm", fw, filename)
            if path is not None and link is None:
                found = allreduce_link(pd.read_parquet(path))
                if found is not None:
                    link, link_fit = found
                    link_fit["file"] = str(path.relative_to(db.root.parent))
    if not tables:
        raise BatchprofError(f"--from aiconfigurator:{framework}: nothing usable for {db.system}")
    fw_version = versions.get("gemm", "")
    source = {
        "package": PACKAGE, "package_version": db.package_version, "licence": "Apache-2.0",
        "gpu": db.system, "framework": framework, "framework_version": fw_version,
        "kernels": {name: kernels[name] + (f" ({framework} {versions[name]})" if versions.get(name, fw_version) != fw_version else "")
                    for name in sorted(kernels)},
        "eager_overhead": "datasheet estimate (the database does not time launches)",
        "grid": "gpt_batchprof.measure.aiconfigurator.GRIDS",
    }
    measured = MeasuredTables(
        device_name=device, torch_version="n/a", threads=0,
        date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
        overhead_s={"eager": hw.launch_overhead_s, "graphs": gap},
        tables=tables, dtype_aliases={"fp16": "bf16"} if "matmul.bf16" in tables else {}, source=source,
    )
    report = {"database": str(db.root), "source": source, "interconnect_fit": link_fit,
              "cells": {n: (sum(v is not None for v in t.values), len(t.values)) for n, t in tables.items()}}
    return measured, link, report


def profile_text(original: str, measured: MeasuredTables, report: dict[str, Any]) -> str:
    """A hardware profile file: ``original`` (its hand-written fields and comments) with its
    `measured:` section replaced by ``measured``."""
    import yaml

    from gpt_batchprof.profiles import measured_to_yaml_mapping

    kept = []
    skipping = False
    for line in original.splitlines():
        if line.startswith("# measured (imported") or line.startswith("measured:"):
            skipping = True
            continue
        if skipping and (line.startswith((" ", "#")) or not line.strip()):
            continue
        skipping = False
        kept.append(line)
    src = measured.source
    header = (f"# measured (imported): kernels NVIDIA measured on a real {measured.device_name}, published in "
              f"{src.get('package')} {src.get('package_version')} ({src.get('licence')}),\n"
              f"# {src.get('framework')} {src.get('framework_version')}; rebuilt by `gpt-batchprof calibrate --from "
              f"aiconfigurator:{src.get('framework')} -H <this profile> -o FILE`.\n"
              "# Grid kept: gpt_batchprof/measure/aiconfigurator.py GRIDS (cells: "
              + ", ".join(f"{n} {have}/{total}" for n, (have, total) in sorted(report["cells"].items()))
              + "); rates net of graph_launch_overhead_us.\n")
    body = yaml.safe_dump({"measured": measured_to_yaml_mapping(measured)}, sort_keys=False,
                          default_flow_style=None, width=160)
    return "\n".join(kept).rstrip() + "\n" + header + body
