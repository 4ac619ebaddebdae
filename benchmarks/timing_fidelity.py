"""Does bench's timer agree with the reference timers on the same matmul?

CPU: bench's CpuTimer vs torch.utils.benchmark.Timer(...).blocked_autorange().
CUDA: bench's CudaTimer vs triton.testing.do_bench (when triton imports) and vs
torch.utils.benchmark. Prints the medians and their ratio side by side; exit 1 when a ratio
is off by more than --tolerance (default 5%).

    python benchmarks/timing_fidelity.py [--device cpu|cuda|auto] [--threads N]
"""

from __future__ import annotations

import argparse
import sys


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--tolerance", type=float, default=0.05)
    args = ap.parse_args()

    import torch
    import torch.utils.benchmark as tb

    from gpt_batchprof.measure.device import resolve_device
    from gpt_batchprof.measure.timing import default_timer

    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    # shapes: a decode-like (memory-bound) and a prefill-like (compute-bound) matmul of gpt2's FFN
    shapes = [(16, 768, 3072), (256, 768, 3072)] if device == "cpu" else [(16, 4096, 11008), (4096, 4096, 11008)]
    dtype = torch.float32 if device == "cpu" else torch.float16
    bench_timer = default_timer(device)
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, dtype {dtype}")
    print(f"{'shape (m x k x n)':>22} {'bench':>12} {'reference':>12} {'ratio':>7}  reference timer")
    worst = 0.0
    for m, k, n in shapes:
        a = torch.randn(m, k, dtype=dtype, device=device)
        b = torch.randn(k, n, dtype=dtype, device=device)
        out = torch.empty(m, n, dtype=dtype, device=device)
        fn = lambda i: torch.mm(a, b, out=out)  # noqa: E731 - one input set on both sides
        ours = bench_timer.measure(fn, warmup_s=0.05, rep_s=0.5).median_s
        refs = []
        t = tb.Timer("torch.mm(a, b, out=out)", globals={"torch": torch, "a": a, "b": b, "out": out},
                     num_threads=torch.get_num_threads())
        refs.append(("torch.utils.benchmark blocked_autorange", t.blocked_autorange(min_run_time=1.0).median))
        if device == "cuda":
            try:
                import triton.testing

                refs.append(("triton.testing.do_bench", triton.testing.do_bench(lambda: fn(0), warmup=50, rep=500,
                                                                                 return_mode="median") * 1e-3))
            except ImportError:
                print("  (triton not importable: do_bench comparison skipped)")
        for name, ref in refs:
            ratio = ours / ref
            worst = max(worst, abs(ratio - 1.0))
            print(f"{f'{m} x {k} x {n}':>22} {ours * 1e6:>10.1f}us {ref * 1e6:>10.1f}us {ratio:>7.3f}  {name}")
    ok = worst <= args.tolerance
    print(f"worst deviation {100 * worst:.1f}% ({'within' if ok else 'OUTSIDE'} {100 * args.tolerance:.0f}%)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
