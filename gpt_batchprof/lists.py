"""Integer lists as users write them: '1,2,8', '1..256' (powers of two), and mixes.

Shared by the CLI's ``--batch`` and friends and by sweep files; no Typer or Rich here, so
the core can read lists without the CLI.
"""

from __future__ import annotations

from gpt_batchprof.errors import BatchprofError


def parse_int_list(text: str, option: str = "--batch") -> tuple[int, ...]:
    values: list[int] = []
    for part in (p.strip() for p in str(text).split(",")):
        if not part:
            continue
        try:
            if ".." in part:
                lo_s, hi_s = part.split("..", 1)
                lo, hi = int(lo_s), int(hi_s)
                if lo < 1 or hi < lo:
                    raise ValueError
                v = lo
                while v <= hi:
                    values.append(v)
                    v *= 2
            else:
                values.append(int(part))
        except ValueError:
            raise BatchprofError(f"{option}: cannot read '{part}' (expected integers like 1,2,8 or a range 1..256)") from None
    if not values:
        raise BatchprofError(f"{option}: no values given")
    bad = [v for v in values if v < 1]
    if bad:
        raise BatchprofError(f"{option}: values must be >= 1, got {bad[0]}")
    return tuple(dict.fromkeys(values))


def parse_name_list(text: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(p.strip() for p in str(text).split(",") if p.strip()))


def parse_float_list(text: str, option: str, points: int = 8) -> tuple[float, ...]:
    """'5', '1,2,4' or 'a..b' (``points`` values evenly spaced from a to b); all finite and > 0."""
    values: list[float] = []
    for part in (p.strip() for p in str(text).split(",")):
        if not part:
            continue
        try:
            if ".." in part:
                lo_s, hi_s = part.split("..", 1)
                lo, hi = float(lo_s), float(hi_s)
                if not hi > lo or points < 2:
                    raise ValueError
                values += [lo + (hi - lo) * i / (points - 1) for i in range(points)]
            else:
                values.append(float(part))
        except ValueError:
            raise BatchprofError(f"{option}: cannot read '{part}' (expected numbers like 5 or 1,2,4 or a range 1..20)") from None
    if not values:
        raise BatchprofError(f"{option}: no values given")
    bad = [v for v in values if not (v > 0 and v != float("inf"))]
    if bad:
        raise BatchprofError(f"{option}: values must be finite and > 0, got {bad[0]:g}")
    return tuple(dict.fromkeys(values))
