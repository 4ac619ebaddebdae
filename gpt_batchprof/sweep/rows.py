"""One sweep point's result: :class:`SweepRow`, whose fields, in order, are the columns of
every results file (.csv header, .jsonl keys, ``--format`` exports).

The column lists (``COLUMNS``, ``INT_COLUMNS``, ``FLOAT_COLUMNS``) are read off the dataclass,
so a new field is a new column everywhere at once. :func:`parse_row` turns one row read
back from a file (text cells or JSON values) into a ``SweepRow``, refusing a malformed one
with the place it came from.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, fields
from typing import Any, Mapping, get_args, get_type_hints

from gpt_batchprof.errors import BatchprofError
from gpt_batchprof.sweep.grid import Point


@dataclass(frozen=True, slots=True, kw_only=True)
class SweepRow(Point):
    """A point of the grid (its fields come first: ``sweep.grid.IDENTITY``) and what was
    predicted or measured there: SI values with their provenance; None where a point has no
    such value (a column left empty).

    ``seq_len`` is the tokens of context the step works at: the prompt for prefill and
    generation, the cache for decode (1 for the mlp workload)."""

    # the operator group (or the whole generation)
    d_model: int | None = None
    mode: str | None = None  # analytic | live | both
    items: int | None = None  # tokens through the operator (mlp: input rows; generation: tokens generated)
    flops: float | None = None
    bytes: float | None = None
    weight_bytes: float | None = None
    intensity: float | None = None  # FLOP per byte
    launches: int | None = None
    predicted_time_s: float | None = None
    predicted_flops_per_s: float | None = None
    predicted_items_per_s: float | None = None
    bound: str | None = None
    measured_time_s: float | None = None
    measured_iqr_s: float | None = None
    measured_flops_per_s: float | None = None
    measured_items_per_s: float | None = None
    measured_over_predicted: float | None = None
    gen_len: int | None = None
    ttft_s: float | None = None
    itl_s: float | None = None
    measured_ttft_s: float | None = None
    measured_itl_s: float | None = None
    # provenance
    device: str | None = None
    torch_version: str | None = None
    gpt_batchprof_version: str | None = None
    # issue 8: predicted_time_s / ttft_s / itl_s are the best prediction; the roofline's alongside
    prediction: str | None = None  # calibrated | roofline
    roofline_time_s: float | None = None
    roofline_ttft_s: float | None = None
    roofline_itl_s: float | None = None


def _kind(tp: Any) -> type:
    args = get_args(tp) or (tp,)
    for k in (int, float):
        if k in args:
            return k
    return str


_HINTS = get_type_hints(SweepRow)
COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(SweepRow))
INT_COLUMNS: tuple[str, ...] = tuple(c for c in COLUMNS if _kind(_HINTS[c]) is int)
FLOAT_COLUMNS: tuple[str, ...] = tuple(c for c in COLUMNS if _kind(_HINTS[c]) is float)
_KIND = {c: _kind(_HINTS[c]) for c in COLUMNS}
_REQUIRED = tuple(f.name for f in fields(SweepRow) if f.default is MISSING)  # identity, less tp/pp/ep


def _cell(name: str, v: Any, where: str) -> Any:
    """One cell back to its column's type ('' -> None; a non-finite float -> None)."""
    if v == "" or v is None:
        return None
    kind = _KIND[name]
    try:
        if kind is str:
            return v if isinstance(v, str) else str(v)
        if isinstance(v, bool):
            raise ValueError
        f = float(v)
        if kind is float:
            return f if math.isfinite(f) else None
        if not math.isfinite(f) or f != int(f):
            raise ValueError
        return int(f)
    except (TypeError, ValueError, OverflowError):
        raise BatchprofError(f"{where}: column '{name}': cannot read {v!r} as "
                             f"{'an integer' if kind is int else 'a number'}") from None


def parse_row(cells: Mapping[str, Any], where: str) -> SweepRow:
    """A row read back from a file ({column: text cell or JSON value}) as a ``SweepRow``;
    refused with ``where`` (its file and line) when a cell does not read as its column's
    type, a column is unknown, or an identifying one is missing. Files written before the
    tp/pp/ep columns existed read as tp = pp = ep = 1 (no parallelism)."""
    values: dict[str, Any] = {}
    for k, v in cells.items():
        if k not in _KIND:
            raise BatchprofError(f"{where}: unknown column '{k}' (not a column of this version's sweep rows)")
        values[k] = _cell(k, v, where)
    for k in _REQUIRED:
        if not isinstance(values.get(k), _KIND[k]):
            raise BatchprofError(f"{where}: not a sweep result row (no '{k}')")
    if values["batch"] < 1:
        raise BatchprofError(f"{where}: not a sweep result row (no batch >= 1)")
    for k in ("tp", "pp", "ep"):
        if values.get(k) is None:
            values[k] = 1
    return SweepRow(**values)
