"""Per-request timings, latency percentiles, SLOs and goodput.

TTFT: arrival to first token. ITL: a request's mean gap between output tokens,
(finish - first token) / (gen_len - 1), what vLLM's benchmark calls TPOT; undefined for
gen_len 1 (left out of ITL statistics, judged on TTFT alone). E2E: arrival to last token.
Percentiles interpolate linearly between order statistics (``gpt_batchprof.stats``, as
numpy's default and ``statistics.quantiles(method="inclusive")``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from gpt_batchprof.errors import BatchprofError
from gpt_batchprof.stats import quantiles

PERCENTILES = (50, 90, 99)


@dataclass(frozen=True, slots=True)
class RequestRecord:
    index: int
    prompt_len: int
    gen_len: int
    arrival_s: float
    start_s: float  # first scheduled
    first_token_s: float
    finish_s: float
    preemptions: int

    @property
    def wait_s(self) -> float:
        return self.start_s - self.arrival_s

    @property
    def ttft_s(self) -> float:
        return self.first_token_s - self.arrival_s

    @property
    def itl_s(self) -> float:
        return (self.finish_s - self.first_token_s) / (self.gen_len - 1) if self.gen_len > 1 else math.nan

    @property
    def e2e_s(self) -> float:
        return self.finish_s - self.arrival_s

    def meets(self, slo: "Slo") -> bool:
        return self.ttft_s <= slo.ttft_s and (self.gen_len == 1 or self.itl_s <= slo.itl_s)

    def to_dict(self, slo: "Slo") -> dict:
        return {"request": self.index, "prompt_len": self.prompt_len, "gen_len": self.gen_len,
                "arrival_s": self.arrival_s, "start_s": self.start_s, "first_token_s": self.first_token_s,
                "finish_s": self.finish_s, "wait_s": self.wait_s, "ttft_s": self.ttft_s,
                "itl_s": self.itl_s, "e2e_s": self.e2e_s, "preemptions": self.preemptions,
                "meets_slo": self.meets(slo)}


REQUEST_COLUMNS = ("rate_rps", "request", "prompt_len", "gen_len", "arrival_s", "start_s", "first_token_s",
                   "finish_s", "wait_s", "ttft_s", "itl_s", "e2e_s", "preemptions", "meets_slo")


@dataclass(frozen=True, slots=True)
class Slo:
    ttft_s: float = 0.5
    itl_s: float = 0.05
    percentile: float = 90.0

    def __post_init__(self) -> None:
        if not (0 < self.percentile < 100):
            raise BatchprofError(f"--slo-percentile must be between 0 and 100 (exclusive), got {self.percentile}")


def percentiles(values: list[float], ps: tuple[float, ...]) -> list[float]:
    """Each percentile in ``ps`` (0..100) of ``values``; NaN for no values."""
    return quantiles(values, [p / 100 for p in ps])


@dataclass(frozen=True, slots=True)
class Summary:
    """The figures of one simulated run (SI units)."""

    throughput_rps: float
    output_tokens_per_s: float
    ttft_s_mean: float
    ttft_s_p50: float
    ttft_s_p90: float
    ttft_s_p99: float
    itl_s_mean: float
    itl_s_p50: float
    itl_s_p90: float
    itl_s_p99: float
    e2e_s_mean: float
    e2e_s_p50: float
    e2e_s_p90: float
    e2e_s_p99: float
    mean_batch: float
    kv_utilisation: float
    preemptions: int
    goodput_rps: float


def _stats(values: list[float]) -> list[float]:
    values = [v for v in values if not math.isnan(v)]
    mean = math.fsum(values) / len(values) if values else math.nan
    return [mean, *percentiles(values, PERCENTILES)]


def summarise(records: tuple[RequestRecord, ...], slo: Slo, mean_batch: float, kv_share_s: float,
              preemptions: int) -> Summary:
    """``kv_share_s``: the integral over time of the share of KV blocks in use; divided by
    the span (first arrival to last token) it is the mean utilisation."""
    span = max(r.finish_s for r in records) - min(r.arrival_s for r in records)
    span = span if span > 0 else math.nan
    return Summary(
        len(records) / span,
        sum(r.gen_len for r in records) / span,
        *_stats([r.ttft_s for r in records]),
        *_stats([r.itl_s for r in records]),
        *_stats([r.e2e_s for r in records]),
        mean_batch,
        kv_share_s / span,
        preemptions,
        sum(1 for r in records if r.meets(slo)) / span,
    )


def slo_percentiles(records: tuple[RequestRecord, ...], slo: Slo) -> tuple[float, float]:
    """TTFT and ITL at the SLO's percentile."""
    itl = [r.itl_s for r in records if r.gen_len > 1]
    return (percentiles([r.ttft_s for r in records], (slo.percentile,))[0],
            percentiles(itl, (slo.percentile,))[0] if itl else 0.0)
