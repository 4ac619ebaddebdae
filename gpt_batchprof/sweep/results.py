"""What a finished sweep says: where batching stops being free, and measured vs predicted.

Pure functions of the rows (:class:`~gpt_batchprof.sweep.rows.SweepRow`), so they work the
same on a fresh run and on a results file read back (``--resume``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from gpt_batchprof.stats import median
from gpt_batchprof.sweep.rows import SweepRow

FREE_TOLERANCE = 0.15  # batching is "free" while time stays within 15% of the smallest batch's
SERIES = ("workload", "model", "hardware", "phase", "seq_len", "op", "dtype", "attention")


@dataclass(frozen=True, slots=True)
class SeriesSummary:
    """One line of the grid over batch sizes (everything fixed but the batch)."""

    key: tuple[Any, ...]  # the SERIES fields
    batches: tuple[int, ...]
    predicted_s: tuple[float | None, ...]
    measured_s: tuple[float | None, ...]
    free_batch_predicted: int | None
    free_batch_measured: int | None
    median_ratio: float | None  # median of measured / predicted over the series

    def field(self, name: str) -> Any:
        return self.key[SERIES.index(name)]


def free_batch(batches: Sequence[int], times: Sequence[float | None], tolerance: float = FREE_TOLERANCE) -> int | None:
    """Largest batch up to which every time stays within ``1 + tolerance`` of the smallest batch's.

    batches ascending. None without a time at the smallest batch.
    """
    if not times or times[0] is None or times[0] <= 0:
        return None
    limit = times[0] * (1.0 + tolerance)
    best = batches[0]
    for b, t in zip(batches, times):
        if t is None or t > limit:
            break
        best = b
    return best


def _median(xs: Iterable[float | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    return median(vals) if vals else None


def series(rows: Sequence[SweepRow], tolerance: float = FREE_TOLERANCE) -> list[SeriesSummary]:
    groups: dict[tuple, list[SweepRow]] = {}
    for r in rows:
        groups.setdefault(tuple(getattr(r, k) for k in SERIES), []).append(r)
    out = []
    for key, rs in groups.items():
        rs = sorted(rs, key=lambda r: r.batch)
        batches = tuple(r.batch for r in rs)
        pred = tuple(r.predicted_time_s for r in rs)
        meas = tuple(r.measured_time_s for r in rs)
        out.append(SeriesSummary(key, batches, pred, meas, free_batch(batches, pred, tolerance),
                                 free_batch(batches, meas, tolerance),
                                 _median(r.measured_over_predicted for r in rs)))
    return out


def ratio_by_op(rows: Sequence[SweepRow]) -> dict[str, tuple[float, int]]:
    """Median measured / predicted per operator (or group), with the number of points;
    key 'all' for every row."""
    by: dict[str, list[float]] = {}
    for r in rows:
        x = r.measured_over_predicted
        if x is not None:
            by.setdefault(r.op, []).append(x)
            by.setdefault("all", []).append(x)
    return {k: (median(v), len(v)) for k, v in by.items()}


def has_measured(rows: Sequence[SweepRow]) -> bool:
    return any(r.measured_time_s is not None for r in rows)


def has_predicted(rows: Sequence[SweepRow]) -> bool:
    return any(r.predicted_time_s is not None for r in rows)


@dataclass(frozen=True, slots=True)
class SweepSummary:
    """Everything the closing tables of a sweep show, computed once from its rows."""

    series: tuple[SeriesSummary, ...]  # operator points, one line per series over batch sizes
    generation: tuple[SweepRow, ...]  # generation points (end-to-end per batch)
    ratios: dict[str, tuple[float, int]]  # median measured / predicted per operator, and 'all'
    measured: bool
    predicted: bool
    tolerance: float = FREE_TOLERANCE

    @property
    def empty(self) -> bool:
        return not self.series and not self.generation


def summarise(rows: Sequence[SweepRow], tolerance: float = FREE_TOLERANCE) -> SweepSummary:
    gen = tuple(r for r in rows if r.workload == "generation")
    ops = [r for r in rows if r.workload != "generation"]
    return SweepSummary(tuple(series(ops, tolerance)) if ops else (), gen, ratio_by_op(rows), has_measured(rows),
                        has_predicted(rows), tolerance)
