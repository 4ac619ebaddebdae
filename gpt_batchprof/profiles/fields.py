"""Typed fields read out of a profile mapping, every error naming the file and the field."""

from __future__ import annotations

import math
from typing import Any, Mapping

from gpt_batchprof.errors import ProfileError


class _Fields:
    """Reads typed fields out of a mapping and names the file and field on every error."""

    def __init__(self, data: Mapping[str, Any], where: str, prefix: str = ""):
        self.data = data
        self.where = where
        self.prefix = prefix  # for nested sections: "interconnect."

    def fail(self, key: str, why: str) -> ProfileError:
        return ProfileError(f"{self.where}: field '{self.prefix}{key}': {why}")

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def int(self, key: str, default: int | None = None, minimum: int = 1) -> int:
        v = self.data.get(key)
        if v is None:
            if default is None:
                raise self.fail(key, "missing (required)")
            return default
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v != int(v):
            raise self.fail(key, f"must be an integer, got {v!r}")
        if v < minimum:
            raise self.fail(key, f"must be >= {minimum}, got {v!r}")
        return int(v)

    def num(self, key: str, default: float | None = None, positive: bool = True) -> float:
        v = self.data.get(key)
        if v is None:
            if default is None:
                raise self.fail(key, "missing (required)")
            return default
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise self.fail(key, f"must be a number, got {v!r}")
        if v < 0 or (positive and v == 0):
            raise self.fail(key, f"must be {'> 0' if positive else '>= 0'}, got {v!r}")
        return float(v)

    def str(self, key: str, default: str | None = None, choices: tuple[str, ...] | None = None) -> str:
        v = self.data.get(key)
        if v is None:
            if default is None:
                raise self.fail(key, "missing (required)")
            return default
        if not isinstance(v, str) or not v.strip():
            raise self.fail(key, f"must be a non-empty string, got {v!r}")
        if choices and v not in choices:
            raise self.fail(key, f"must be one of {', '.join(choices)}, got {v!r}")
        return v

    def bool(self, key: str, default: bool) -> bool:
        v = self.data.get(key)
        if v is None:
            return default
        if not isinstance(v, bool):
            raise self.fail(key, f"must be true or false, got {v!r}")
        return v


INTERCONNECT_KEYS = ("name", "bandwidth_gb_s", "latency_us")


def link_fields(data: Any, where: str) -> tuple[str, float, float]:
    """An ``interconnect:`` section (GB/s per direction, microseconds) as (name, bytes/s, seconds per
    hop); unknown keys refused. Read here once for the datasheet link and a measured one."""
    if not isinstance(data, Mapping):
        raise ProfileError(f"{where}: field 'interconnect': expected a mapping (name, bandwidth_gb_s, latency_us)")
    unknown = [k for k in data if k not in INTERCONNECT_KEYS]
    if unknown:
        raise ProfileError(f"{where}: field 'interconnect.{unknown[0]}': unknown key "
                           f"(known: {', '.join(INTERCONNECT_KEYS)})")
    f = _Fields(data, where, prefix="interconnect.")
    return f.str("name"), f.num("bandwidth_gb_s") * 1e9, f.num("latency_us", default=0.0, positive=False) * 1e-6
