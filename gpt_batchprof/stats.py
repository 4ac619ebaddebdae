"""Quantiles, defined once for the package: timers' medians and IQRs, generation ITLs, the
calibration's spreads, a sweep's median ratios, simulate's latency percentiles and the plots'
bands all come from here.

The definition is the standard one: linear interpolation between the closest ranks, as numpy's
default (``method="linear"``), R's type 7 and ``statistics.quantiles(method="inclusive")`` compute
it. For ``n`` sorted values ``x[0..n-1]`` the q-quantile sits at position ``(n - 1) q``: with
``j = floor((n - 1) q)`` and ``f = (n - 1) q - j`` it is ``x[j] + f (x[j+1] - x[j])``.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence


def quantiles(values: Iterable[float], qs: Sequence[float]) -> list[float]:
    """Each q-quantile in ``qs`` (0 <= q <= 1) of ``values`` (sorted once); NaN for no values."""
    s = sorted(values)
    out = []
    for q in qs:
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"a quantile is between 0 and 1, got {q}")
        if not s:
            out.append(math.nan)
            continue
        pos = (len(s) - 1) * q
        if abs(pos - round(pos)) < 1e-9:  # a whole rank but for rounding (25 x 0.28 = 7.000000000000001)
            pos = float(round(pos))
        lo = math.floor(pos)
        hi = min(lo + 1, len(s) - 1)
        out.append(s[lo] + (s[hi] - s[lo]) * (pos - lo))
    return out


def quantile(values: Iterable[float], q: float) -> float:
    """The q-quantile (0 <= q <= 1) of ``values``; NaN for no values."""
    return quantiles(values, (q,))[0]


def median(values: Iterable[float]) -> float:
    """The 0.5-quantile: the middle value, or the mean of the two middle ones."""
    return quantile(values, 0.5)
