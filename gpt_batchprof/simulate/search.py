"""Load sweeps and the search for the highest rate that meets an SLO.

Every rate sees the same seeded arrival pattern, scaled (see ``workload``), and every run
shares one ``StepModel``, so its memoised step times serve the whole search.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from gpt_batchprof.errors import BatchprofError
from gpt_batchprof.profiles import HardwareSpec, ModelSpec
from gpt_batchprof.simulate.engine import ServerConfig, SimResult, server_steps
from gpt_batchprof.simulate.pools import simulate
from gpt_batchprof.simulate.metrics import Slo, slo_percentiles
from gpt_batchprof.simulate.steptime import StepModel
from gpt_batchprof.simulate.workload import Workload

START_RATE_RPS = 1.0
LOWEST_RATE_RPS = 1e-3
HIGHEST_RATE_RPS = 1e6
TOLERANCE = 0.01  # stop when the bracket is within 1% of its upper end


@dataclass(frozen=True, slots=True)
class LoadPoint:
    """One offered load: the run's summary and whether it meets the SLO at its percentile."""

    rate_rps: float
    result: SimResult
    ttft_at_percentile_s: float
    itl_at_percentile_s: float

    @property
    def meets(self) -> bool:
        slo = self.result.slo
        return self.ttft_at_percentile_s <= slo.ttft_s and self.itl_at_percentile_s <= slo.itl_s


@dataclass(frozen=True, slots=True)
class RateSearch:
    max_rate_rps: float
    best: LoadPoint  # the run at max_rate_rps
    points: tuple[LoadPoint, ...]  # every rate tried, in order


def run_at(model: ModelSpec, hw: HardwareSpec, workload: Workload, cfg: ServerConfig, slo: Slo,
           rate: float, steps: StepModel, on_request=None) -> LoadPoint:
    res = simulate(model, hw, workload.with_rate(rate), cfg, slo, on_request=on_request, steps=steps)
    if res.interrupted:  # Ctrl-C: stop the whole sweep or search (-o keeps the finished requests)
        raise KeyboardInterrupt
    ttft, itl = slo_percentiles(res.records, slo)
    return LoadPoint(rate, res, ttft, itl)


def sweep_rates(model: ModelSpec, hw: HardwareSpec, workload: Workload, rates: tuple[float, ...],
                cfg: ServerConfig = ServerConfig(), slo: Slo = Slo(),
                on_point: Callable[[LoadPoint], None] | None = None, on_request=None) -> tuple[LoadPoint, ...]:
    steps = server_steps(model, hw, cfg)
    points = []
    for r in rates:
        p = run_at(model, hw, workload, cfg, slo, r, steps, on_request)
        points.append(p)
        if on_point is not None:
            on_point(p)
    return tuple(points)


def find_max_rate(model: ModelSpec, hw: HardwareSpec, workload: Workload, cfg: ServerConfig = ServerConfig(),
                  slo: Slo = Slo(), tolerance: float = TOLERANCE,
                  on_point: Callable[[LoadPoint], None] | None = None) -> RateSearch:
    """Bracket by doubling / halving from 1 request/s, then bisect."""
    steps = server_steps(model, hw, cfg)
    points: list[LoadPoint] = []

    def at(rate: float) -> LoadPoint:
        p = run_at(model, hw, workload, cfg, slo, rate, steps)
        points.append(p)
        if on_point is not None:
            on_point(p)
        return p

    first = at(START_RATE_RPS)
    if first.meets:
        lo, hi = first, None
        while hi is None:
            if lo.rate_rps * 2 > HIGHEST_RATE_RPS:
                raise BatchprofError(f"the SLO is still met at {lo.rate_rps:g} requests/s; nothing to search")
            p = at(lo.rate_rps * 2)
            lo, hi = (p, None) if p.meets else (lo, p)
    else:
        lo, hi = None, first
        while lo is None:
            if hi.rate_rps / 2 < LOWEST_RATE_RPS:
                raise BatchprofError(
                    f"the SLO is not met even at {hi.rate_rps:g} requests/s: at p{slo.percentile:g} TTFT is "
                    f"{hi.ttft_at_percentile_s * 1e3:.4g} ms (SLO {slo.ttft_s * 1e3:.4g} ms), ITL "
                    f"{hi.itl_at_percentile_s * 1e3:.4g} ms (SLO {slo.itl_s * 1e3:.4g} ms)")
            p = at(hi.rate_rps / 2)
            lo, hi = (p, hi) if p.meets else (None, p)
    while (hi.rate_rps - lo.rate_rps) > tolerance * hi.rate_rps:
        p = at(math.sqrt(lo.rate_rps * hi.rate_rps) if hi.rate_rps > 4 * lo.rate_rps
               else (lo.rate_rps + hi.rate_rps) / 2)
        lo, hi = (p, hi) if p.meets else (lo, p)
    return RateSearch(lo.rate_rps, lo, tuple(points))
