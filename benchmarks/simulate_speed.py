#!/usr/bin/env python3
"""Wall time of `simulate` on this CPU: 10,000 requests of llama-2-7b on an A100 80GB at
several loads (goal <= 2 s each), and --find-max-rate (goal <= 20 s).

    python benchmarks/simulate_speed.py [--requests 10000] [--profile]

Each run builds a fresh StepModel (cold step-time memo), as one CLI call does.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gpt_batchprof.profiles import load_hardware, load_model  # noqa: E402
from gpt_batchprof.simulate import (  # noqa: E402
    Lengths, ServerConfig, Slo, StepModel, Workload, find_max_rate, simulate,
)

SINGLE_GOAL_S = 2.0
SEARCH_GOAL_S = 20.0


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=10_000)
    ap.add_argument("--profile", action="store_true", help="cProfile the mid-load run; print the top 15")
    args = ap.parse_args()
    m, hw = load_model("llama-2-7b"), load_hardware("a100-80gb")
    n = args.requests
    cases = [
        ("fixed 512/128, 0.5 req/s (idle server, ~1M steps)", Workload(rate_rps=0.5, requests=n), ServerConfig()),
        ("fixed 512/128, 10 req/s", Workload(rate_rps=10, requests=n), ServerConfig()),
        ("fixed 512/128, 18 req/s (near capacity)", Workload(rate_rps=18, requests=n), ServerConfig()),
        ("fixed 512/128, 40 req/s (overload, preempting)", Workload(rate_rps=40, requests=n), ServerConfig()),
        ("prompt 128..2048, gen 16..512, 5 req/s", Workload(rate_rps=5, requests=n, prompt=Lengths(128, 2048),
                                                            gen=Lengths(16, 512)), ServerConfig()),
        ("fixed 512/128, 10 req/s, no chunked prefill", Workload(rate_rps=10, requests=n),
         ServerConfig(chunked_prefill=False)),
        ("fixed 512/128, 10 req/s, static batching", Workload(rate_rps=10, requests=n),
         ServerConfig(scheduler="static", max_batch=32)),
    ]
    worst = 0.0
    print(f"{n:,} requests of {m.name} on {hw.name} (goal <= {SINGLE_GOAL_S:g} s each)")
    for name, w, cfg in cases:
        if args.profile and "10 req/s" in name and cfg.chunked_prefill and cfg.scheduler == "continuous":
            prof = cProfile.Profile()
            res, dt = timed(lambda: prof.runcall(simulate, m, hw, w, cfg))
            pstats.Stats(prof).sort_stats("tottime").print_stats(15)
        else:
            res, dt = timed(lambda: simulate(m, hw, w, cfg))
        worst = max(worst, dt)
        print(f"  {dt:6.2f} s  {res.steps:>9,} steps  {name}")
    print(f"worst single run: {worst:.2f} s ({worst / SINGLE_GOAL_S:.0%} of the goal)")

    # decode attention interpolated between every 16th cache length vs predicted at every length
    from dataclasses import asdict

    w = cases[4][1]
    (exact, t_exact), (grid, t_grid) = (timed(lambda: simulate(m, hw, w, steps=StepModel(m, hw, kv_grid=g)))
                                        for g in (1, 16))
    a, b = asdict(exact.summary), asdict(grid.summary)
    moved = max(abs(b[k] - a[k]) / abs(a[k]) for k in a if a[k])
    print(f"kv grid 16 vs every length ({cases[4][0]}): largest summary change {moved:.2e} relative; "
          f"{t_exact:.2f} s -> {t_grid:.2f} s")

    print(f"--find-max-rate, SLO TTFT <= 500 ms, ITL <= 50 ms at p90 (goal <= {SEARCH_GOAL_S:g} s)")
    for reqs in (1000, n):
        s, dt = timed(lambda: find_max_rate(m, hw, Workload(rate_rps=1.0, requests=reqs), slo=Slo(0.5, 0.05, 90)))
        print(f"  {dt:6.2f} s  {len(s.points)} runs of {reqs:,} requests -> {s.max_rate_rps:.3g} req/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
