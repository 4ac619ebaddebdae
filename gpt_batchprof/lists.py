"""Integer lists as users write them: '1,2,8', '1..256' (powers of two), and mixes.

Shared by the CLI's ``--batch`` and friends and by sweep files; no Typer or Rich here, so
the core can read lists without the CLI.
"""

from __future__ import annotations

from gpt_batchprof.errors import BatchprofError

MAX_INT = 2**31 - 1  # no batch, length or width beyond this is meant (or fits any device)


def parse_int_list(text: str, option: str = "--batch") -> tuple[int, ...]:
    values: list[int] = []
    for part in (p.strip() for p in str(text).split(",")):
        if not part:
            continue
        try:
            if ".." in part:
                lo_s, hi_s = part.split("..", 1)
                lo, hi = int(lo_s), min(int(hi_s), MAX_INT + 1)
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
    huge = [v for v in values if v > MAX_INT]
    if huge:
        shown = str(huge[0]) if huge[0] < 10**30 else f"a {len(str(huge[0]))}-digit number"
        raise BatchprofError(f"{option}: values must be <= {MAX_INT} (2^31 - 1), got {shown}")
    return tuple(dict.fromkeys(values))


def parse_name_list(text: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(p.strip() for p in str(text).split(",") if p.strip()))
