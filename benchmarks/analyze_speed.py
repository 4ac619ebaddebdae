"""How long `analyze`'s core takes as gen_len grows: closed-form decode sum vs step by step.

Prints, for each gen_len, the time of ``serving_report`` over 9 batch sizes (the default
1..256) and, where it is affordable, the time of summing every decode step one by one (what
analyze did before), with their ratio. Goal: any valid input in < 0.5 s.

    python benchmarks/analyze_speed.py
"""

from __future__ import annotations

import time
from dataclasses import replace

from gpt_batchprof.analytic import Scenario, serving_report, step_time
from gpt_batchprof.analytic.gpt import attention_ops
from gpt_batchprof.analytic.ops import ATTENTION_OPS
from gpt_batchprof.profiles import load_hardware, load_model

BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def step_by_step(model, hw, sc: Scenario, batch: int) -> float:
    """The old O(gen_len) sum, kept here as the reference."""
    launch = sc.launch_for(hw)
    ttft = step_time(sc.ops(model, "prefill", batch), hw, launch)
    fixed = step_time(tuple(o for o in sc.ops(model, "decode", batch) if o.op not in ATTENTION_OPS), hw, launch)
    e2e = ttft
    for i in range(sc.gen_len - 1):
        e2e += fixed + step_time(attention_ops(model, "decode", batch, 1, sc.prompt_len + i, sc.dtypes, sc.attention),
                                 hw, launch)
    return e2e


def timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main() -> None:
    model = load_model("llama-3.1-405b")  # 131,072-token context
    long_model = replace(model, name="llama-3.1-405b-10M", max_seq_len=10_000_000)
    hw = load_hardware("h200")
    print(f"{'gen_len':>10} {'closed form':>12} {'step by step':>13} {'ratio':>8}  e2e agree")
    for gen, m in ((128, model), (10_000, model), (100_000, model), (2_000_000, long_model)):
        sc = Scenario(prompt_len=512, gen_len=gen)
        t_new, report = timed(lambda: serving_report(m, hw, sc, BATCHES))
        if gen <= 10_000:
            t_old, olds = timed(lambda: [step_by_step(m, hw, sc, b) for b in BATCHES])
            agree = max(abs(p.e2e_s / o - 1) for p, o in zip(report.points, olds))
            print(f"{gen:>10} {t_new * 1e3:>10.1f}ms {t_old * 1e3:>11.1f}ms {t_old / t_new:>7.0f}x  "
                  f"max rel diff {agree:.1e}")
        else:
            print(f"{gen:>10} {t_new * 1e3:>10.1f}ms {'(skipped)':>13} {'':>8}")


if __name__ == "__main__":
    main()
