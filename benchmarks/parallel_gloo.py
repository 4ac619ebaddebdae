"""Measured vs predicted collectives on this CPU: gloo, 2 processes, at the models' exact message sizes.

Prints a Markdown table (docs/results/parallel-cpu-gloo.md was made with it):

    PYTHONPATH=. python benchmarks/parallel_gloo.py [--hardware PROFILE] [--rep-ms 200]

Every collective row `analyze --tp/--pp/--ep` predicts (tp_allreduce, pp_sendrecv,
ep_alltoall) for gpt2, llama-2-7b and mixtral-8x7b at a few batches is timed in one launch of
2 processes (measure.distributed.time_collectives, the same path as `bench --tp 2`), next to
its prediction from cpu-generic's guessed interconnect and from --hardware (default: a fresh
`calibrate --tp 2` of this machine, quick).
"""

from __future__ import annotations

import argparse

from gpt_batchprof.analytic import Dtypes, Parallelism, Scenario, predict
from gpt_batchprof.measure.distributed import CollectiveCall, calibrate_interconnect, time_collectives
from gpt_batchprof.profiles import load_hardware, load_model

CASES = (  # model, layout, batches
    ("gpt2", Parallelism(tp=2), (1, 4, 16)),
    ("llama-2-7b", Parallelism(tp=2), (1, 4, 16)),
    ("llama-2-7b", Parallelism(pp=2), (1, 16)),
    ("mixtral-8x7b", Parallelism(ep=2), (2, 32)),
)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hardware", default=None, help="profile with a measured interconnect (default: calibrate now)")
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--rep-ms", type=float, default=200.0)
    args = ap.parse_args()
    guess = load_hardware("cpu-generic")
    if args.hardware:
        measured_hw = load_hardware(args.hardware)
    else:
        from dataclasses import replace

        link = calibrate_interconnect("cpu", 2, quick=True)
        measured_hw = replace(guess, name="cpu-generic + calibrate --tp 2", interconnect=link.interconnect())
    ic = measured_hw.interconnect
    sc = Scenario(prompt_len=args.prompt_len, gen_len=16, dtypes=Dtypes.of("fp32"))
    rows = []
    for name, par, batches in CASES:
        model = load_model(name)
        for phase in ("prefill", "decode"):
            for b in batches:
                for c in sc.ops(model, phase, b, par):
                    if c.group == "collective":
                        rows.append((name, par, c, CollectiveCall(c.op, round(c.bytes / c.launches), c.shape.ranks)))
    calls = list(dict.fromkeys(r[3] for r in rows))
    times = dict(zip(calls, time_collectives(calls, "cpu", warmup_s=args.rep_ms / 4e3, rep_s=args.rep_ms / 1e3)))
    print(f"interconnect used for 'pred (cal.)': {ic.name}, {ic.bandwidth_bytes_per_s / 1e9:.3g} GB/s, "
          f"{ic.latency_s * 1e6:.0f} us per hop; 'pred (guess)': cpu-generic's {guess.interconnect.bandwidth_bytes_per_s / 1e9:g} GB/s, "
          f"{guess.interconnect.latency_s * 1e6:g} us\n")
    print("| model | layout | phase | batch | op | message | per call: pred (guess) | pred (cal.) | measured (median) | IQR | meas/pred (cal.) |")
    print("|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|")
    for name, par, c, call in rows:
        m = times[call]
        n = c.launches
        p_guess = predict(c, guess).time_s / n
        p_cal = predict(c, measured_hw).time_s / n
        layout = f"tp{par.tp}" if par.tp > 1 else f"pp{par.pp}" if par.pp > 1 else f"ep{par.ep}"
        print(f"| {name} | {layout} | {c.phase} | {c.batch} | {c.op} | {call.message_bytes:,} B | {p_guess * 1e6:,.0f} us "
              f"| {p_cal * 1e6:,.0f} us | {m.median_s * 1e6:,.0f} us | {100 * m.iqr_s / m.median_s:.0f}% "
              f"| {m.median_s / p_cal:.2f} |")


if __name__ == "__main__":
    main()
