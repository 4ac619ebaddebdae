"""Does calibration make the roofline predict this device better than the generic profile?

Calibrates the CPU (or GPU), benches gpt2's dense operators (qkv_proj, out_proj, ffn_up,
ffn_down, lm_head) at batch 1..64 in decode and in prefill with a short prompt, and compares
each measured time with the prediction from the generic datasheet profile and from the
calibrated one. Reports the median |ln(measured / predicted)| (0 = perfect; 0.69 = off by 2x)
and the median relative error of both.

    python benchmarks/calibration_accuracy.py [--device cpu] [--threads N] [--generic cpu-generic]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time

DENSE = ("qkv_proj", "out_proj", "ffn_up", "ffn_down", "lm_head")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--generic", default=None, help="datasheet profile (default: cpu-generic or the matching GPU)")
    ap.add_argument("--prompt-len", type=int, default=16)
    args = ap.parse_args()

    import torch

    from gpt_batchprof.analytic import Dtypes, Scenario, predict
    from gpt_batchprof.measure.bench import BenchSettings, run_bench
    from gpt_batchprof.measure.calibrate import calibrate
    from gpt_batchprof.measure.device import datasheet_hardware, device_name, resolve_device
    from gpt_batchprof.profiles import load_hardware, load_model

    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    generic = load_hardware(args.generic or datasheet_hardware(device))
    t0 = time.perf_counter()
    cal = calibrate(device, threads=threads)
    t_cal = time.perf_counter() - t0
    calibrated = cal.to_hardware("calibrated")
    print(f"device {device_name(device)}, torch {torch.__version__}; calibrate took {t_cal:.1f} s")
    print("calibrated: " + ", ".join(f"{k} {v / 1e9:.1f} GFLOP/s" for k, v in cal.peak_flops_per_s.items())
          + f", {cal.memory_bandwidth_bytes_per_s / 1e9:.1f} GB/s, launch {cal.launch_overhead_s * 1e6:.2f} us")

    dtype = "fp16" if device == "cuda" else "fp32"
    model = load_model("gpt2")
    sc = Scenario(prompt_len=args.prompt_len, gen_len=16, dtypes=Dtypes.of(dtype))
    settings = BenchSettings(device, device_name(device), torch.__version__, threads, warmup_s=0.02, rep_s=0.2,
                             ops=DENSE)
    res = run_bench(model, generic, sc, ("decode", "prefill"), (1, 2, 4, 8, 16, 32, 64), settings)
    errs: dict[str, list[float]] = {"generic": [], "calibrated": []}
    rel: dict[str, list[float]] = {"generic": [], "calibrated": []}
    print(f"{'phase':>8} {'b':>3} {'op':>9} {'measured':>10} {'generic':>10} {'calibrated':>10}")
    for r in res.rows:
        if r.status != "ok":
            continue
        meas = r.measured_time_s
        preds = {"generic": r.prediction.time_s, "calibrated": predict(r.cost, calibrated).time_s}
        for k, p in preds.items():
            errs[k].append(abs(math.log(meas / p)))
            rel[k].append(abs(meas - p) / meas)
        print(f"{r.cost.phase:>8} {r.cost.batch:>3} {r.cost.op:>9} {meas * 1e3:>8.3f}ms "
              f"{preds['generic'] * 1e3:>8.3f}ms {preds['calibrated'] * 1e3:>8.3f}ms")
    print(f"\n{len(errs['generic'])} operators; generic profile '{generic.name}' vs calibrated:")
    for k in ("generic", "calibrated"):
        print(f"  {k:>10}: median |ln(measured/predicted)| = {statistics.median(errs[k]):.3f} "
              f"(x{math.exp(statistics.median(errs[k])):.2f}), median relative error {100 * statistics.median(rel[k]):.0f}%")
    better = statistics.median(errs["calibrated"]) < statistics.median(errs["generic"])
    print("calibrated is " + ("better" if better else "NOT better"))
    return 0 if better else 1


if __name__ == "__main__":
    sys.exit(main())
