"""`simulate --plot`: latency percentiles and goodput against offered load (one PNG)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from gpt_batchprof.errors import BatchprofError
from gpt_batchprof.report.plots import _pyplot


def plot_load(points: Sequence, folder: Path, title: str) -> Path:
    """Left: TTFT and ITL percentiles (ms, log) against offered rate, SLOs dashed. Right:
    throughput and goodput against offered rate, with the y = x line of a server that keeps up."""
    plt = _pyplot()
    pts = sorted(points, key=lambda p: p.rate_rps)
    x = [p.rate_rps for p in pts]
    slo = pts[0].result.slo
    fig, (lat, thr) = plt.subplots(1, 2, figsize=(12, 4.6))
    for key, colour, limit in (("ttft", "C0", slo.ttft_s), ("itl", "C1", slo.itl_s)):
        for q, style in (("p50", ":"), ("p90", "-"), ("p99", "--")):
            lat.plot(x, [getattr(p.result.summary, f"{key}_s_{q}") * 1e3 for p in pts], style, color=colour,
                     marker="o", markersize=3, label=f"{key.upper()} {q}")
        lat.axhline(limit * 1e3, color=colour, linewidth=0.8, alpha=0.6, linestyle="-.",
                    label=f"{key.upper()} SLO")
    lat.set_yscale("log")
    lat.set_xlabel("offered load (requests/s)")
    lat.set_ylabel("latency (ms)")
    lat.grid(True, alpha=0.3)
    lat.legend(fontsize=8, ncol=2)
    thr.plot(x, x, color="0.6", linestyle="--", linewidth=1, label="offered (keeps up)")
    thr.plot(x, [p.result.summary.throughput_rps for p in pts], "o-", color="C2", label="throughput")
    thr.plot(x, [p.result.summary.goodput_rps for p in pts], "s-", color="C3",
             label=f"goodput (TTFT ≤ {slo.ttft_s * 1e3:g} ms, ITL ≤ {slo.itl_s * 1e3:g} ms)")
    thr.set_xlabel("offered load (requests/s)")
    thr.set_ylabel("requests/s")
    thr.grid(True, alpha=0.3)
    thr.legend(fontsize=8)
    fig.suptitle(title, fontsize=12)
    fig.tight_layout()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "simulate-load.png"
        fig.savefig(path, dpi=110, bbox_inches="tight")
    except OSError as e:
        raise BatchprofError(f"{folder}: cannot write the plot ({e.strerror or e})") from None
    finally:
        plt.close(fig)
    return path
