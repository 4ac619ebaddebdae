"""How close are the built-in GPU profiles' predictions to kernels measured on real GPUs?

Judges the calibrated prediction (the `measured:` tables the built-in profiles ship, imported
from NVIDIA's aiconfigurator-core) and the datasheet roofline against the database's own
measurements at points the profiles did NOT keep (held out: m, n, k, batch, length or head
layout off the kept grid, `gpt_batchprof.measure.aiconfigurator.GRIDS`):

- per operator family and regime: bf16 GEMMs (decode m <= 64, mid, prefill m >= 1024),
  fp8 GEMMs, fused attention in decode and prefill, and fused MoE layers (leave one model
  configuration out: each configuration judged on tables built without it);
- whole steps of three models whose every layer kernel the database measured exactly
  (Qwen3-8B: dense GQA; OPT-6.7B: MHA; Qwen3-30B-A3B: MoE, 128 experts top-8): the sum of
  the measured kernels of the transformer layers (QKV, attention, out-projection, FFN or
  router + fused MoE) against the sum of the same operators predicted; the LM head, norms,
  rotary and residual kernels are not in the database and are left out of both sides. The MoE
  model is judged on tables built without its own MoE configuration.

Errors are predicted / measured - 1 (negative: predicted too fast). Launch mode: graphs (the
database's kernels are what a CUDA-graph step replays). Needs the optional extra:
pip install 'gpt-batchprof[aic]'.

    python benchmarks/gpu_accuracy.py [--gpus h100-sxm,h200] [--samples 3000] [-o docs/results/gpu-accuracy.md]
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import sys
from pathlib import Path

from gpt_batchprof.analytic import Dtypes, predict
from gpt_batchprof.analytic.gpt import attention_ops, enumerate_ops
from gpt_batchprof.analytic.ops import OpCost, OpShape
from gpt_batchprof.measure import aiconfigurator as aic
from gpt_batchprof.profiles import load_hardware, model_from_mapping
from gpt_batchprof.stats import median, quantile

BF16 = Dtypes.of("bf16")
MODELS = {  # published config.json shapes (Hugging Face), as our model YAML fields
    "qwen3-8b (dense GQA)": {"n_layer": 36, "d_model": 4096, "n_head": 32, "n_kv_head": 8, "head_dim": 128,
                             "d_ff": 12288, "ffn": "swiglu", "vocab_size": 151936, "max_seq_len": 40960,
                             "norm": "rmsnorm", "positional": "rope", "tied_embeddings": False, "bias": False},
    "opt-6.7b (MHA)": {"n_layer": 32, "d_model": 4096, "n_head": 32, "d_ff": 16384, "ffn": "gelu",
                       "vocab_size": 50272, "max_seq_len": 2048, "norm": "layernorm", "positional": "learned",
                       "tied_embeddings": True, "bias": True},
    "qwen3-30b-a3b (MoE)": {"n_layer": 48, "d_model": 2048, "n_head": 32, "n_kv_head": 4, "head_dim": 128,
                            "d_ff": 768, "ffn": "swiglu", "vocab_size": 151936, "max_seq_len": 40960,
                            "norm": "rmsnorm", "positional": "rope", "tied_embeddings": False, "bias": False,
                            "n_expert": 128, "n_expert_active": 8},
}
LAYER_OPS = ("qkv_proj", "attn_fused", "out_proj", "ffn_gate", "ffn_up", "ffn_down", "moe_router")


def p90(xs: list[float]) -> float:
    """The 90th percentile, interpolated between order statistics (as numpy's default)."""
    return quantile(xs, 0.9)


def stats(errors: list[float]) -> str:
    a = [abs(e) for e in errors]
    return (f"{len(a)} | {100 * median(a):.1f}% | {100 * p90(a):.1f}% | "
            f"{100 * median(errors):+.1f}%") if a else "0 | - | - | -"


def gemm_cost(m: int, n: int, k: int, dtype: str) -> OpCost:
    nbytes = (m * k + k * n + m * n) * (1 if dtype == "fp8" else 2)
    return OpCost("qkv_proj", "decode", m, 1, 0, 2.0 * m * n * k, nbytes, k * n, 1, dtype, OpShape(m=m, n=n, k=k))


def errors_of(cost: OpCost, measured_s: float, hw, sheet) -> tuple[float, float]:
    cal = predict(cost, hw, "graphs").time_s
    roof = predict(cost, sheet, "graphs").time_s
    return cal / measured_s - 1, roof / measured_s - 1


def gemm_rows(db, gpu_hw, sheet, rng, samples):
    import pandas as pd

    df = pd.read_parquet(aic.newest(db.root, "gemm", "vllm", "gemm_perf.parquet"))
    grid = aic.GRIDS["matmul"]
    out = []
    for dtype, name in aic.GEMM_DTYPES.items():
        rows = df[df["gemm_dtype"] == name]
        rows = rows[rows["kernel_source"] == aic._pick_kernel(rows, dtype)]
        inside = (rows["n"].between(grid["n"][0], grid["n"][-1]) & rows["k"].between(grid["k"][0], grid["k"][-1])
                  & (rows["m"] <= grid["m"][-1]))
        held = ~(rows["m"].isin(grid["m"]) & rows["n"].isin(grid["n"]) & rows["k"].isin(grid["k"]))
        pts = rows[inside & held]
        pts = pts.sample(min(samples, len(pts)), random_state=rng.randrange(2**31))
        for m, n, k, t in pts[["m", "n", "k", "latency"]].itertuples(index=False):
            regime = "decode m<=64" if m <= 64 else ("prefill m>=1024" if m >= 1024 else "mid 64<m<1024")
            cal, roof = errors_of(gemm_cost(int(m), int(n), int(k), dtype), t * 1e-3, gpu_hw, sheet)
            out.append((f"GEMM {dtype}, {regime}", cal, roof))
    return out


def attention_cost(phase: str, b: int, h: int, kv: int, hd: int, keys: int) -> OpCost:
    model = model_from_mapping({"name": "probe", "n_layer": 1, "d_model": h * hd, "n_head": h, "n_kv_head": kv,
                                "head_dim": hd, "d_ff": 4 * h * hd, "ffn": "swiglu", "vocab_size": 32000,
                                "max_seq_len": 2 * keys + 2, "norm": "rmsnorm"}, "probe")
    if phase == "decode":
        return attention_ops(model, "decode", b, 1, keys - 1, BF16, "fused")[0]
    return attention_ops(model, "prefill", b, keys, 0, BF16, "fused")[0]


def attention_rows(db, gpu_hw, sheet, rng, samples):
    import pandas as pd

    out = []
    for phase, filename in (("decode", "generation_attention_perf.parquet"), ("prefill", "context_attention_perf.parquet")):
        df = aic._attention_rows(pd.read_parquet(aic.newest(db.root, "attention", "vllm", filename)))
        df = df[df["kernel_source"] == aic._pick_kernel(df, phase)]
        grid = aic.GRIDS[f"attn_{phase}"]
        points = aic.attention_points(df, phase)
        kept = set()
        for hd in grid["head_dim"]:
            layouts = {(b, h, kv) for (b, h, kv, d, _) in points if d == hd}
            for bkv in grid["batch_kv_heads"]:
                for g in grid["gqa"]:
                    lay = aic.layout_for(int(bkv), int(g), layouts)
                    if lay:
                        for L in grid["kv_len" if phase == "decode" else "seq_len"]:
                            kept.add((lay[0], lay[1], lay[2], int(hd), int(L)))
        lengths = grid["kv_len" if phase == "decode" else "seq_len"]
        cands = [(k, t) for k, t in points.items()
                 if k not in kept and k[1] % k[2] == 0 and k[1] // k[2] <= grid["gqa"][-1]
                 and lengths[0] <= k[4] <= lengths[-1] and k[3] in grid["head_dim"]
                 and k[0] * k[2] <= grid["batch_kv_heads"][-1]]
        for (b, h, kv, hd, keys), t in rng.sample(cands, min(samples, len(cands))):
            cal, roof = errors_of(attention_cost(phase, b, h, kv, hd, keys), t, gpu_hw, sheet)
            out.append((f"attention {phase}", cal, roof))
    return out


def moe_model(h: int, i: int, k: int, e: int):
    return model_from_mapping({"name": "moe-probe", "n_layer": 1, "d_model": h, "n_head": max(1, h // 128),
                               "head_dim": 128, "d_ff": i, "ffn": "swiglu", "vocab_size": 32000,
                               "max_seq_len": 4096, "norm": "rmsnorm", "n_expert": e, "n_expert_active": k}, "probe")


EXPERT_OPS = ("ffn_gate", "ffn_up", "ffn_down")


def without_config(gpu_hw, db, cfg):
    """The profile with its moe table rebuilt without one model configuration (leave one out)."""
    import pandas as pd

    df = pd.read_parquet(aic.newest(db.root, "moe", "vllm", "moe_perf.parquet"))
    gap = gpu_hw.graph_launch_overhead_s or 0.0
    t, _ = aic.moe_table(df, gap, exclude=(cfg,))
    tables = dict(gpu_hw.measured.tables) | {t.name: t}
    return dataclasses.replace(gpu_hw, measured=dataclasses.replace(gpu_hw.measured, tables=tables))


def moe_rows(db, gpu_hw, sheet):
    import pandas as pd

    curves = aic.moe_curves(pd.read_parquet(aic.newest(db.root, "moe", "vllm", "moe_perf.parquet")))
    out = []
    for cfg, pts in curves.items():
        hw_out = without_config(gpu_hw, db, cfg)
        model = moe_model(*cfg)
        for t_tokens in sorted({p_[1] / (6.0 * cfg[2] * cfg[0] * cfg[1]) for p_ in pts}):
            T = int(round(t_tokens))
            meas = next(lat for m, f, lat in pts if round(f / (6.0 * cfg[2] * cfg[0] * cfg[1])) == T)
            ops = [o for o in enumerate_ops(model, "decode", T, 1, 0, dtypes=BF16) if o.op in EXPERT_OPS]
            cal = sum(predict(o, hw_out, "graphs").time_s for o in ops)
            roof = sum(predict(o, sheet, "graphs").time_s for o in ops)
            regime = "MoE tokens<=64" if T <= 64 else "MoE tokens>64"
            out.append((regime, cal / meas - 1, roof / meas - 1))
    return out


class Kernels:
    """The database's measurements at exact shapes (seconds)."""

    def __init__(self, db):
        import pandas as pd

        g = pd.read_parquet(aic.newest(db.root, "gemm", "vllm", "gemm_perf.parquet"))
        g = g[g["gemm_dtype"] == "bfloat16"]
        g = g[g["kernel_source"] == aic._pick_kernel(g, "gemm")]
        self.gemm = {(int(m), int(n), int(k)): t * 1e-3 for (m, n, k), t in g.groupby(["m", "n", "k"])["latency"].median().items()}
        self.attn = {}
        for phase, fn in (("decode", "generation_attention_perf.parquet"), ("prefill", "context_attention_perf.parquet")):
            df = aic._attention_rows(pd.read_parquet(aic.newest(db.root, "attention", "vllm", fn)))
            self.attn[phase] = aic.attention_points(df[df["kernel_source"] == aic._pick_kernel(df, phase)], phase)
        moe = pd.read_parquet(aic.newest(db.root, "moe", "vllm", "moe_perf.parquet"))
        moe = moe[(moe["moe_dtype"] == "bfloat16") & (moe["moe_tp_size"] == 1) & (moe["moe_ep_size"] == 1)
                  & (moe["distribution"] == "balanced")]
        self.moe = {tuple(int(x) for x in k): t * 1e-3 for k, t in moe.groupby(
            ["num_tokens", "hidden_size", "inter_size", "topk", "num_experts"])["latency"].median().items()}

    def layer(self, model, phase: str, batch: int, q: int, keys: int) -> float | None:
        """Measured time of one transformer layer's database kernels, or None if one is missing."""
        T, d = batch * q, model.d_model
        hd, nh, nkv = model.head_dim, model.n_head, model.n_kv_head
        shapes = [(T, (nh + 2 * nkv) * hd, d), (T, d, nh * hd)]
        if model.n_expert > 1:
            shapes.append((T, model.n_expert, d))
            moe = self.moe.get((T, d, model.d_ff, model.n_expert_active, model.n_expert))
            if moe is None:
                return None
            total = moe
        else:
            n_in = 2 if model.ffn == "swiglu" else 1
            shapes += [(T, model.d_ff, d)] * n_in + [(T, d, model.d_ff)]
            total = 0.0
        for s in shapes:
            if s not in self.gemm:
                return None
            total += self.gemm[s]
        a = self.attn[phase].get((batch, nh, nkv, hd, keys))
        return None if a is None else total + a


def step_rows(db, gpu_hw, sheet, kernels: Kernels):
    out = []
    cases = [("decode", b, 1, keys) for b in (1, 2, 4, 8, 16, 32, 64, 128, 256) for keys in (1024, 4096)]
    cases += [("prefill", b, s, s) for b in (1, 2, 4) for s in (512, 1024, 2048)]
    for name, spec in MODELS.items():
        model = model_from_mapping({"name": name.split()[0]} | spec, name)
        hw_m = (without_config(gpu_hw, db, (model.d_model, model.d_ff, model.n_expert_active, model.n_expert))
                if model.n_expert > 1 else gpu_hw)
        for phase, b, q, keys in cases:
            meas = kernels.layer(model, phase, b, q, keys)
            if meas is None:
                continue
            kv_len = keys - 1 if phase == "decode" else 0
            ops = [o for o in enumerate_ops(model, phase, b, q, kv_len, dtypes=BF16, attention="fused")
                   if o.op in LAYER_OPS]
            per_layer = lambda hw: sum(predict(o, hw, "graphs").time_s for o in ops) / model.n_layer  # noqa: E731
            cal, roof = per_layer(hw_m), per_layer(sheet)
            out.append((name, phase, b, keys, meas, cal, roof))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gpus", default="h100-sxm,h200")
    ap.add_argument("--samples", type=int, default=3000, help="held-out points per table (seeded)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("-o", "--output", type=Path)
    args = ap.parse_args(argv)
    lines = ["# GPU prediction accuracy against NVIDIA's measured kernels (held-out shapes)", "",
             "Generated by `python benchmarks/gpu_accuracy.py` (seed "
             f"{args.seed}, up to {args.samples} held-out points per table). Measurements: aiconfigurator-core "
             "(Apache-2.0), vLLM kernels; predictions: the built-in profiles (calibrated = their imported tables, "
             "roofline = the datasheet ceilings), `--launch graphs`. Error = predicted / measured - 1; "
             "|err| median and p90; bias = median signed error (negative: predicted too fast).", ""]
    for gpu in args.gpus.split(","):
        hw = load_hardware(gpu)
        sheet = dataclasses.replace(hw, measured=None)
        db = aic.locate(gpu)
        rng = random.Random(args.seed)
        print(f"{gpu}: per-operator ...", file=sys.stderr)
        ops = (gemm_rows(db, hw, sheet, rng, args.samples) + attention_rows(db, hw, sheet, rng, args.samples)
               + moe_rows(db, hw, sheet))
        lines += [f"## {gpu} ({hw.measured.device_name}; tables: {hw.measured.source.get('framework')} "
                  f"{hw.measured.source.get('framework_version')})", "",
                  "### Per operator, held-out shapes", "",
                  "| family | points | calibrated median | p90 | bias | roofline median | p90 | bias |",
                  "|---|---|---|---|---|---|---|---|"]
        fams = sorted({f for f, _, _ in ops})
        for fam in fams + ["all"]:
            sel = [r for r in ops if fam == "all" or r[0] == fam]
            lines.append(f"| {fam} | {stats([r[1] for r in sel])} | {stats([r[2] for r in sel]).split(' | ', 1)[1]} |")
        print(f"{gpu}: whole steps ...", file=sys.stderr)
        steps = step_rows(db, hw, sheet, Kernels(db))
        lines += ["", "### Whole steps (one transformer layer's database kernels, summed)", "",
                  "| model | phase | batch | keys | measured | calibrated | err | roofline | err |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for name, phase, b, keys, meas, cal, roof in steps:
            lines.append(f"| {name} | {phase} | {b} | {keys} | {meas * 1e6:.1f} us | {cal * 1e6:.1f} us | "
                         f"{100 * (cal / meas - 1):+.1f}% | {roof * 1e6:.1f} us | {100 * (roof / meas - 1):+.1f}% |")
        lines += ["", "| model | phase | steps | calibrated median | p90 | bias | roofline median | p90 | bias |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for name in MODELS:
            for phase in ("decode", "prefill"):
                sel = [s for s in steps if s[0] == name and s[1] == phase]
                ce = [s[5] / s[4] - 1 for s in sel]
                re_ = [s[6] / s[4] - 1 for s in sel]
                lines.append(f"| {name} | {phase} | {stats(ce)} | {stats(re_).split(' | ', 1)[1]} |")
        lines.append("")
    text = "\n".join(lines) + "\n"
    if args.output:
        args.output.write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
