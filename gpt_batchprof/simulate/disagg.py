"""The layout of a disaggregated pool (``--disagg P:D``): instance counts, each kind's ``tp`` and the
KV link. Configuration only: the server (engine.py) holds it and the pool (pools.py) runs it."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace

from gpt_batchprof.analytic.parallel import Parallelism
from gpt_batchprof.errors import BatchprofError
from gpt_batchprof.profiles import HardwareSpec


@dataclass(frozen=True, slots=True)
class Disagg:
    prefill: int  # instances
    decode: int
    kv_link_bytes_per_s: float | None = None  # None: the hardware profile's interconnect
    prefill_tp: int | None = None  # None: the server's --tp
    decode_tp: int | None = None

    def __post_init__(self) -> None:
        for name in ("prefill_tp", "decode_tp"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise BatchprofError(f"--{name.replace('_', '-')} must be >= 1, got {v}")
        if self.prefill < 1 or self.decode < 1:
            raise BatchprofError(f"--disagg needs at least one prefill and one decode instance, got "
                                 f"{self.prefill}:{self.decode}")
        if self.kv_link_bytes_per_s is not None and not (math.isfinite(self.kv_link_bytes_per_s)
                                                         and self.kv_link_bytes_per_s > 0):
            raise BatchprofError(f"--kv-link must be a finite bandwidth > 0 GB/s, got {self.kv_link_bytes_per_s / 1e9:g}")

    @property
    def instances(self) -> int:
        return self.prefill + self.decode

    def label(self) -> str:
        tp = lambda v: f"(tp {v})" if v else ""  # noqa: E731
        return f"{self.prefill}P{tp(self.prefill_tp)}:{self.decode}D{tp(self.decode_tp)}"

    def layouts(self, par: Parallelism) -> tuple[Parallelism, Parallelism]:
        """The layout of a prefill instance and of a decode instance."""
        return (replace(par, tp=self.prefill_tp or par.tp), replace(par, tp=self.decode_tp or par.tp))

    def gpus(self, par: Parallelism) -> int:
        pre, dec = self.layouts(par)
        return self.prefill * pre.world + self.decode * dec.world

    def link(self, hw: HardwareSpec) -> tuple[float, float]:
        """(bandwidth bytes/s, latency s) of the KV transfer."""
        ic = hw.interconnect
        if self.kv_link_bytes_per_s is not None:
            return self.kv_link_bytes_per_s, ic.latency_s if ic is not None else 0.0
        if ic is None:
            raise BatchprofError(f"--disagg moves KV caches between instances, and {hw.name} has no interconnect: "
                                 "give --kv-link GB/s")
        return ic.bandwidth_bytes_per_s, ic.latency_s


def parse_disagg(text: str, kv_link_gb_s: float | None = None, prefill_tp: int | None = None,
                 decode_tp: int | None = None) -> Disagg:
    """'P:D' (instances of each kind)."""
    m = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", str(text))
    if not m:
        raise BatchprofError(f"--disagg: cannot read '{text}' (expected P:D, prefill and decode instances, like 1:3)")
    if kv_link_gb_s is not None and not (math.isfinite(kv_link_gb_s) and kv_link_gb_s > 0):
        raise BatchprofError(f"--kv-link must be a finite bandwidth > 0 GB/s, got {kv_link_gb_s:g}")
    return Disagg(int(m.group(1)), int(m.group(2)), None if kv_link_gb_s is None else kv_link_gb_s * 1e9,
                  prefill_tp, decode_tp)
