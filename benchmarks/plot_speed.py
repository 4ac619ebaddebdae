#!/usr/bin/env python3
"""How long `gpt-batchprof plot` takes on a 13k- and a 350k-point results file.

    python benchmarks/plot_speed.py [--old-ref REF] [--skip-big]

Each file comes from an analytic sweep (`gpt-batchprof sweep --mode analytic ... -o f.csv`):
synthetic GPTs over many hidden sizes, 3 hardware profiles, both phases, batch 1..2048, 4
sequence lengths, 7 operator selectors (2,016 points per hidden size). `plot` then runs as a
fresh process, as a user would run it; wall and CPU (user+sys) seconds are printed. With
``--old-ref`` (a git ref, e.g. the commit before the rewrite) the same file is also plotted
by that version (checked out into a temporary worktree) where it finishes within
``--old-timeout`` seconds, and the old/new ratio is printed. Goal: < 5 s for 350k points.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOAL_S = 5.0  # issue 7: plot 350k points in under 5 s (ratio < 1 meets it)
SIZES = {"13k": 6, "350k": 174}  # hidden sizes: 6 x 2,016 = 12,096 points; 174 x 2,016 = 350,784


def sweep_file(folder: Path, n_widths: int) -> Path:
    out = folder / f"sweep-{n_widths}.csv"
    widths = ",".join(str(256 + 128 * i) for i in range(n_widths))
    cmd = [sys.executable, "-m", "gpt_batchprof", "sweep", "--mode", "analytic", "--d-model", widths,
           "-b", "1..2048", "-s", "128,256,512,1024", "--phase", "both",
           "--op", "qkv_proj,attn_score,ffn,block,step,attention,dense", "-H", "a100-80gb,h100-sxm,l4",
           "--no-progress", "-f", "csv", "--export", os.devnull, "-o", str(out)]
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return out


def time_plot(tree: Path, results: Path, folder: Path, timeout: float | None = None) -> tuple[float, float] | None:
    """(wall s, CPU s) of one `plot` run from source tree ``tree``; None if it ran past ``timeout``."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    try:
        subprocess.run([sys.executable, "-m", "gpt_batchprof", "plot", str(results), "--plot", str(folder)],
                       cwd=tree, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old-ref", help="git ref of an older version to compare with (e.g. main~5)")
    ap.add_argument("--old-timeout", type=float, default=120.0, help="seconds before the old version is given up")
    ap.add_argument("--skip-big", action="store_true", help="only the 13k-point file")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        old_tree = None
        if args.old_ref:
            old_tree = tmp / "old"
            subprocess.run(["git", "worktree", "add", "--detach", str(old_tree), args.old_ref], cwd=ROOT, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for name, widths in SIZES.items():
                if args.skip_big and name != "13k":
                    continue
                results = sweep_file(tmp, widths)
                n = sum(1 for _ in open(results)) - 1
                new = time_plot(ROOT, results, tmp / f"new-{name}")
                line = (f"{name} ({n:,} points): plot {new[0]:.2f} s wall, {new[1]:.2f} s CPU; "
                        f"{new[0] / GOAL_S:.2f}x the {GOAL_S:g} s goal (wall), {new[1] / GOAL_S:.2f}x (CPU)")
                if old_tree is not None:
                    old = time_plot(old_tree, results, tmp / f"old-{name}", args.old_timeout)
                    line += (f"; old {old[0]:.2f} s wall, {old[1]:.2f} s CPU: {old[1] / new[1]:.1f}x less CPU now"
                             if old else f"; old did not finish in {args.old_timeout:g} s")
                print(line, flush=True)
        finally:
            if old_tree is not None:
                subprocess.run(["git", "worktree", "remove", "--force", str(old_tree)], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


if __name__ == "__main__":
    main()
