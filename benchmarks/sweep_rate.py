#!/usr/bin/env python3
"""Points per second of an analytic sweep (default: 100,000 points), with and without the CSV stream.

    python benchmarks/sweep_rate.py [--points 100000] [--profile]

The grid is dense-vs-attention-like: synthetic GPTs over many hidden sizes, 4 hardware
profiles, both phases, batch 1..N, 3 sequence lengths, 5 operator selectors.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gpt_batchprof.sweep.evaluate import Evaluator  # noqa: E402
from gpt_batchprof.sweep.grid import SweepSpec, resolve  # noqa: E402
from gpt_batchprof.sweep.run import run_sweep  # noqa: E402
from gpt_batchprof.sweep.store import StreamWriter  # noqa: E402


def grid_of(points: int):
    per_batch = 25 * 4 * 2 * 3 * 5  # models x hardware x phases x seq_lens x ops = 3000
    batches = tuple(range(1, max(1, round(points / per_batch)) + 1))
    spec = SweepSpec(models=tuple(f"d{128 * i}" for i in range(1, 26)),
                     hardware=("a100-80gb", "h100-sxm", "t4", "l4"), phases=("prefill", "decode"),
                     batches=batches, seq_lens=(128, 512, 2048),
                     ops=("block-dense", "attention", "ffn", "qkv_proj", "norm"))
    return resolve(spec)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=100_000)
    ap.add_argument("--profile", action="store_true", help="cProfile the streamed run; print the top 15")
    args = ap.parse_args()
    grid = grid_of(args.points)
    n = len(grid)
    t0 = time.perf_counter()
    run_sweep(grid, Evaluator(grid))
    mem_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "r.csv"
        prof = cProfile.Profile() if args.profile else None
        t0 = time.perf_counter()
        with StreamWriter(out) as w:
            if prof:
                prof.enable()
            run_sweep(grid, Evaluator(grid), w)
            if prof:
                prof.disable()
        csv_s = time.perf_counter() - t0
        size = os.path.getsize(out)
    print(f"{n:,} analytic points")
    print(f"  in memory:        {mem_s:6.2f} s  {n / mem_s:10,.0f} points/s")
    print(f"  streamed to CSV:  {csv_s:6.2f} s  {n / csv_s:10,.0f} points/s  ({size / 1e6:.1f} MB)")
    if prof:
        pstats.Stats(prof).sort_stats("cumulative").print_stats(15)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
