#!/usr/bin/env python3
"""`gpt-batchprof analyze` as a whole process against `python -c "import torch"`.

Both are run alternately in one session (so machine noise hits both alike) and the medians
are compared. The analytic path never imports torch, so it should be many times faster.

    python benchmarks/startup.py [--runs 7]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time


def wall(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    py = sys.executable
    cases = {
        "gpt-batchprof analyze (defaults, 9 batches, table)": [py, "-m", "gpt_batchprof", "analyze"],
        "gpt-batchprof analyze --per-op -f json": [py, "-m", "gpt_batchprof", "analyze", "--per-op", "-f", "json"],
        'python -c "import torch"': [py, "-c", "import torch"],
        'python -c "pass" (interpreter floor)': [py, "-c", "pass"],
    }
    try:
        wall(cases['python -c "import torch"'])
    except subprocess.CalledProcessError:
        print("torch is not installed here; nothing to compare against", file=sys.stderr)
        return 2
    times: dict[str, list[float]] = {k: [] for k in cases}
    for k, cmd in cases.items():  # warm the file cache once
        wall(cmd)
    for _ in range(args.runs):
        for k, cmd in cases.items():
            times[k].append(wall(cmd))
    torch_s = statistics.median(times['python -c "import torch"'])
    print(f"{'command':55s} {'median':>9s} {'min':>9s}  vs import torch")
    for k, ts in times.items():
        med = statistics.median(ts)
        print(f"{k:55s} {med * 1e3:7.0f} ms {min(ts) * 1e3:7.0f} ms  {torch_s / med:5.1f}x faster"
              if "torch" not in k else f"{k:55s} {med * 1e3:7.0f} ms {min(ts) * 1e3:7.0f} ms  1.0x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
