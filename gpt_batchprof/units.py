"""SI values to human units, for display only. Machine-readable output stays SI.

Plain text, below every layer: the report's tables, the CLI and the measuring code's messages
(``measure`` says how much memory a run needs) all format quantities the same way."""

from __future__ import annotations

import math


def _scaled(value: float, steps: tuple[tuple[float, str], ...], digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    for factor, unit in steps:
        if abs(value) >= factor:
            return f"{value / factor:.{digits}g} {unit}"
    factor, unit = steps[-1]
    return f"{value / factor:.{digits}g} {unit}"


def fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return _scaled(seconds, ((1.0, "s"), (1e-3, "ms"), (1e-6, "µs"), (1e-9, "ns")))


def fmt_bytes(n: float | None) -> str:
    """Binary units (what nvidia-smi and allocators show)."""
    if n is None:
        return "-"
    return _scaled(n, ((2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB"), (1, "B")))


def fmt_count(n: float | None, unit: str = "") -> str:
    """Decimal prefixes: FLOP, FLOP/s, B/s."""
    if n is None:
        return "-"
    if n == 0:
        return f"0 {unit}".strip()
    return _scaled(n, ((1e15, "P" + unit), (1e12, "T" + unit), (1e9, "G" + unit), (1e6, "M" + unit),
                       (1e3, "k" + unit), (1, unit))).strip()


def fmt_rate(n: float | None, digits: int = 3) -> str:
    if n is None:
        return "-"
    return f"{n:,.0f}" if n >= 1000 else f"{n:.{digits}g}"


def fmt_ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


def fmt_pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"
