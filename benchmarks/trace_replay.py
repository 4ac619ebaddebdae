#!/usr/bin/env python3
"""Wall time of replaying a 10,000-request trace with `simulate` (goal: a few seconds), and
its ratio to today's plain `simulate` of as many Poisson requests drawn from the same length ranges.

    python benchmarks/trace_replay.py [--requests 10000]

The traces are written here, in the published formats (a Mooncake JSONL with hash_ids and an
Azure CSV), from a seeded generator: arrivals Poisson at 3 req/s, prompts 128..3000 tokens of
which the first 1..4 512-token blocks are one of 20 shared prefixes, outputs 16..512 tokens.
Reading the file is timed too. llama-2-7b on an A100 80GB.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gpt_batchprof.profiles import load_hardware, load_model  # noqa: E402
from gpt_batchprof.simulate import Lengths, ServerConfig, Workload, load_trace, simulate  # noqa: E402
from gpt_batchprof.simulate.disagg import Disagg  # noqa: E402

GOAL_S = 5.0
RATE_RPS = 3.0


def write_traces(folder: Path, n: int) -> tuple[Path, Path, float, float]:
    rng = random.Random(17)
    t, next_id, rows = 0.0, 1000, []
    for _ in range(n):
        t += rng.expovariate(RATE_RPS)
        p, g = rng.randint(128, 3000), rng.randint(16, 512)
        blocks = -(-p // 512)
        shared = min(blocks - 1, rng.randint(1, 4))
        group = rng.randrange(20)
        ids = [group * 10 + j for j in range(shared)] + list(range(next_id, next_id + blocks - shared))
        next_id += blocks - shared
        rows.append((t, p, g, ids))
    mc = folder / "mooncake_trace.jsonl"
    mc.write_text("".join(json.dumps({"timestamp": round(a * 1e3), "input_length": p, "output_length": g,
                                      "hash_ids": ids}) + "\n" for a, p, g, ids in rows))
    az = folder / "AzureLLMInferenceTrace_conv.csv"
    t0 = datetime(2023, 11, 16, 18, 0, 0)
    az.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n" + "".join(
        f"{(t0 + timedelta(seconds=a)).strftime('%Y-%m-%d %H:%M:%S.%f')}0,{p},{g}\n" for a, p, g, _ in rows))
    return mc, az, sum(r[1] for r in rows) / n, sum(r[2] for r in rows) / n


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=10_000)
    args = ap.parse_args()
    m, hw = load_model("llama-2-7b"), load_hardware("a100-80gb")
    n = args.requests
    with tempfile.TemporaryDirectory() as tmp:
        mc, az, p_mean, g_mean = write_traces(Path(tmp), n)
        (mc_trace, t_mc), (az_trace, t_az) = timed(lambda: load_trace(mc)), timed(lambda: load_trace(az))
    base, t_base = timed(lambda: simulate(m, hw, Workload(rate_rps=RATE_RPS, requests=n, prompt=Lengths(128, 3000),
                                                           gen=Lengths(16, 512))))
    print(f"{n:,} requests of {m.name} on {hw.name}; today's simulate of {n:,} Poisson requests at "
          f"{RATE_RPS:g} req/s, prompt 128..3000, output 16..512 (the trace's lengths): {t_base:.2f} s "
          f"(mean prompt {p_mean:.0f}, output {g_mean:.0f} in the trace)")
    print(f"read the Mooncake JSONL: {t_mc:.2f} s; the Azure CSV: {t_az:.2f} s")
    cases = [
        ("Azure CSV replay", Workload(trace=az_trace.requests), ServerConfig()),
        ("Mooncake replay", Workload(trace=mc_trace.requests), ServerConfig()),
        ("Mooncake replay, --prefix-caching", Workload(trace=mc_trace.requests), ServerConfig(prefix_caching=True)),
        ("Mooncake replay, --disagg 1:3", Workload(trace=mc_trace.requests), ServerConfig(disagg=Disagg(1, 3))),
    ]
    worst = 0.0
    for name, w, cfg in cases:
        res, dt = timed(lambda: simulate(m, hw, w, cfg))
        worst = max(worst, dt)
        hit = f", prefix hit rate {res.prefix_hit_rate:.1%}" if res.prefix_hit_rate is not None else ""
        print(f"  {name:<36} {dt:6.2f} s  ({dt / t_base:4.2f}x today's simulate)  {len(res.records):,} requests, "
              f"TTFT p90 {res.summary.ttft_s_p90 * 1e3:.1f} ms, ITL p90 {res.summary.itl_s_p90 * 1e3:.2f} ms{hit}")
    ok = worst <= GOAL_S
    print(f"slowest replay {worst:.2f} s: {'within' if ok else 'OVER'} the {GOAL_S:g} s goal")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
