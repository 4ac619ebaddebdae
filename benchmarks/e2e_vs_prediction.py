"""Whole-model generation on this device next to analyze's predictions, and reference vs transformers.

For each model and engine (the reference GPT, and --engine hf when transformers is installed),
runs `generate`'s loop at each batch (one prefill of --prompt-len tokens, --gen-len - 1 decode
steps) and prints, as Markdown, the measured TTFT, ITL, e2e, tokens/s and peak memory next to
the predictions of every --hardware profile given (e.g. the generic datasheet profile and a
calibrated one) with their errors, then the reference engine against transformers.

    python benchmarks/e2e_vs_prediction.py [--device cpu] [--threads 2] \
        [--model gpt2 --model docs/results/configs/tinyllama-1.1b/config.json] \
        [--hardware cpu-generic --hardware docs/results/cpu-2core-epyc-calibrated.yaml] \
        [--batch 1,4,16] [--prompt-len 128] [--gen-len 16] [-o docs/results/e2e-cpu.md]
"""

from __future__ import annotations

import argparse
import datetime
import platform
import sys
import time


def _err(measured: float | None, predicted: float) -> str:
    return "-" if not measured else f"{100 * (predicted - measured) / measured:+.0f}%"


def _ms(s: float | None) -> str:
    return "-" if s is None else f"{s * 1e3:.1f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--model", action="append", default=None)
    ap.add_argument("--hardware", action="append", default=None)
    ap.add_argument("--engine", action="append", default=None, help="reference and/or hf (default: both)")
    ap.add_argument("--batch", default="1,4,16")
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--gen-len", type=int, default=16)
    ap.add_argument("--dtype", default=None, help="default: fp32 on the CPU, fp16 on CUDA")
    ap.add_argument("--attention", default="unfused")
    ap.add_argument("--warmup-runs", type=int, default=1)
    ap.add_argument("-o", "--output", default=None)
    args = ap.parse_args()

    import torch

    from gpt_batchprof.analytic import Dtypes, Scenario, serving_report
    from gpt_batchprof.lists import parse_int_list
    from gpt_batchprof.measure import generate as G
    from gpt_batchprof.measure.device import device_name, resolve_device
    from gpt_batchprof.profiles import load_hardware, load_model

    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    models = args.model or ["gpt2", "docs/results/configs/tinyllama-1.1b/config.json"]
    profiles = [load_hardware(h) for h in (args.hardware or ["cpu-generic", "docs/results/cpu-2core-epyc-calibrated.yaml"])]
    engines = args.engine or ["reference", "hf"]
    if "hf" in engines:
        try:
            import transformers  # noqa: F401
        except ModuleNotFoundError:
            print("transformers not installed: --engine hf left out", file=sys.stderr)
            engines = [e for e in engines if e != "hf"]
    batches = tuple(parse_int_list(args.batch))
    dtype = args.dtype or ("fp16" if device == "cuda" else "fp32")
    sc = Scenario(prompt_len=args.prompt_len, gen_len=args.gen_len, dtypes=Dtypes.of(dtype), attention=args.attention)
    name = device_name(device)
    keys = [f"P{i + 1}" for i in range(len(profiles))]  # short column labels; the legend names them
    out = [
        f"# Generation vs prediction on {name}",
        "",
        "`" + " ".join(["python benchmarks/e2e_vs_prediction.py", *sys.argv[1:]]) + "`",
        "",
        f"torch {torch.__version__}, {threads} threads, Python {platform.python_version()}, "
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; prompt {sc.prompt_len}, "
        f"generate {sc.gen_len} (1 prefill + {sc.gen_len - 1} decode steps), {dtype}, {sc.attention} attention, "
        f"{args.warmup_runs} warm-up generation(s) then 1 timed per batch. Predictions: "
        + ", ".join(f"**{k}** = {h.name}" for k, h in zip(keys, profiles))
        + ". Error = (predicted - measured) / measured. Times in ms.",
        "",
    ]
    runs: dict[tuple[str, str, int], object] = {}
    for ref in models:
        spec = load_model(ref)
        reports = {h.name: {p.batch: p for p in serving_report(spec, h, sc, batches).points} for h in profiles}
        out += [f"## {spec.name} ({spec.n_params / 1e9:.2f} B params)", ""]
        head = ["engine", "batch", "TTFT", *(f"TTFT {k}" for k in keys), "ITL", "ITL p90",
                *(f"ITL {k}" for k in keys), "tok/s", *(f"tok/s {k}" for k in keys), "peak mem GB", "pred mem GB"]
        out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for engine in engines:
            settings = G.GenerateSettings(device, name, torch.__version__, threads, engine=engine,
                                          warmup_runs=args.warmup_runs)
            t0 = time.perf_counter()
            res = G.run_generate(spec, profiles[0], sc, batches, settings)
            print(f"{spec.name} {engine}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
            for row in res.rows:
                r = row.run
                runs[(spec.name, engine, row.batch)] = r
                if r is None:
                    out.append(f"| {engine} | {row.batch} | {row.status}: {row.reason} |")
                    continue
                preds = [reports[h.name][row.batch] for h in profiles]
                cells = [engine, str(row.batch), _ms(r.ttft_s)]
                cells += [f"{_ms(p.ttft_s)} ({_err(r.ttft_s, p.ttft_s)})" for p in preds]
                cells += [_ms(r.itl_s), _ms(r.itl_p90_s)]
                cells += [f"{_ms(p.itl_s)} ({_err(r.itl_s, p.itl_s)})" for p in preds]
                cells += [f"{r.tokens_per_s:.1f}"]
                cells += [f"{p.tokens_per_s:.1f} ({_err(r.tokens_per_s, p.tokens_per_s)})" for p in preds]
                cells += ["-" if r.peak_memory_bytes is None else f"{r.peak_memory_bytes / 1e9:.2f}",
                          f"{preds[0].memory.total_bytes / 1e9:.2f}"]
                out.append("| " + " | ".join(cells) + " |")
        out.append("")
        if len(engines) == 2:
            out += [f"### {spec.name}: reference engine vs transformers", "",
                    "| batch | TTFT ref | TTFT hf | hf/ref | ITL ref | ITL hf | hf/ref | e2e ref | e2e hf | hf/ref |",
                    "|---|---|---|---|---|---|---|---|---|---|"]
            for b in batches:
                a, h = runs.get((spec.name, "reference", b)), runs.get((spec.name, "hf", b))
                if a is None or h is None:
                    continue
                out.append(f"| {b} | {_ms(a.ttft_s)} | {_ms(h.ttft_s)} | {h.ttft_s / a.ttft_s:.2f} | {_ms(a.itl_s)} | "
                           f"{_ms(h.itl_s)} | {h.itl_s / a.itl_s:.2f} | {_ms(a.e2e_s)} | {_ms(h.e2e_s)} | "
                           f"{h.e2e_s / a.e2e_s:.2f} |")
            out.append("")
        del spec
    text = "\n".join(out) + "\n"
    print(text)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as fh:
            fh.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
