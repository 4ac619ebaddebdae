"""Number lists as users write them: '1,2,8', ranges, and mixes.

Integers (``--batch`` and friends): '1..256' is the powers of two from 1 to 256. Floats
(``simulate --rate``): 'a..b' is ``points`` values evenly spaced from a to b.
Shared by the CLI and by sweep files; no Typer or Rich here, so the core can read lists
without the CLI.
"""

from __future__ import annotations

import math
from typing import Callable, TypeVar

from gpt_batchprof.errors import BatchprofError

MAX_INT = 2**31 - 1  # no batch, length or width beyond this is meant (or fits any device)

N = TypeVar("N", int, float)


def _parse_list(text: str, option: str, one: Callable[[str], N], span: Callable[[N, N], list[N]],
                example: str) -> tuple[N, ...]:
    values: list[N] = []
    parts = [p.strip() for p in str(text).split(",")]
    if len(parts) > 1 and not all(parts):
        raise BatchprofError(f"{option}: empty item in '{text}' (write values separated by single commas, "
                             "like 1,2,8)")
    for part in parts:
        if not part:
            continue
        try:
            if ".." in part:
                lo_s, hi_s = part.split("..", 1)
                values += span(one(lo_s), one(hi_s))
            else:
                values.append(one(part))
        except ValueError:
            raise BatchprofError(f"{option}: cannot read '{part}' (expected {example})") from None
    if not values:
        raise BatchprofError(f"{option}: no values given")
    return tuple(dict.fromkeys(values))


def _powers_of_two(lo: int, hi: int) -> list[int]:
    if lo < 1 or hi < lo:
        raise ValueError
    out = []
    while lo <= hi:
        out.append(lo)
        lo *= 2
    return out


def parse_int_list(text: str, option: str = "--batch") -> tuple[int, ...]:
    values = _parse_list(text, option, int, _powers_of_two, "integers like 1,2,8 or a range 1..256")
    bad = [v for v in values if v < 1]
    if bad:
        raise BatchprofError(f"{option}: values must be >= 1, got {bad[0]}")
    huge = [v for v in values if v > MAX_INT]
    if huge:
        shown = str(huge[0]) if huge[0] < 10**30 else f"a {len(str(huge[0]))}-digit number"
        raise BatchprofError(f"{option}: values must be <= {MAX_INT} (2^31 - 1), got {shown}")
    return values


def parse_float_list(text: str, option: str, points: int = 8) -> tuple[float, ...]:
    """'5', '1,2,4' or 'a..b' (``points`` values evenly spaced from a to b); all finite and > 0."""

    def spaced(lo: float, hi: float) -> list[float]:
        if points < 2:
            raise BatchprofError(f"--rate-points must be >= 2 to space values over a range, got {points}")
        if not hi > lo:
            raise BatchprofError(f"{option}: the range {lo:g}..{hi:g} must go upwards (write {hi:g}..{lo:g})"
                                 if hi < lo else f"{option}: the range {lo:g}..{hi:g} is empty (give one value)")
        return [lo + (hi - lo) * i / (points - 1) for i in range(points)]

    values = _parse_list(text, option, float, spaced, "numbers like 5 or 1,2,4 or a range 1..20")
    bad = [v for v in values if not (math.isfinite(v) and v > 0)]
    if bad:
        raise BatchprofError(f"{option}: values must be finite and > 0, got {bad[0]:g}")
    return values


def parse_name_list(text: str, option: str | None = None) -> tuple[str, ...]:
    """'a,b,a' -> ('a', 'b'); with ``option``, a list of nothing (',') is refused as the
    number lists are, instead of silently meaning "the default"."""
    names = tuple(dict.fromkeys(p.strip() for p in str(text).split(",") if p.strip()))
    if option is not None and not names:
        raise BatchprofError(f"{option}: no values given")
    return names
