"""Running a sweep: evaluate each point, stream it to the file, report progress in chunks.

The runner knows nothing of Rich: progress is a callback ``advance(n_points)`` called at
most every ``PROGRESS_EVERY_S`` (and after every slow point), so a 100,000-point analytic
sweep does not pay per-point display costs. Ctrl-C (KeyboardInterrupt) stops the loop:
the points done so far stay in the file and in the outcome, marked ``interrupted``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from gpt_batchprof.sweep.evaluate import Evaluator
from gpt_batchprof.sweep.grid import Grid
from gpt_batchprof.sweep.rows import SweepRow
from gpt_batchprof.sweep.store import StreamWriter

PROGRESS_EVERY_S = 0.1
SLOW_POINT_S = 0.01  # a point slower than this is synced to disk on its own


@dataclass
class SweepOutcome:
    rows: list[SweepRow] = field(default_factory=list)  # every row of the grid: resumed + new
    new: int = 0
    skipped: int = 0  # already in the file (--resume)
    interrupted: bool = False
    elapsed_s: float = 0.0


def run_sweep(
    grid: Grid,
    evaluator: Evaluator,
    writer: Optional[StreamWriter] = None,
    advance: Optional[Callable[[int], None]] = None,
) -> SweepOutcome:
    out = SweepOutcome()
    done = writer.done_keys if writer is not None else set()
    if done:
        grid_keys = {p.key() for p in grid.points()}
        out.rows = [r for r in writer.previous if r.key() in grid_keys]
    t0 = last = time.monotonic()
    pending = 0
    evaluate = evaluator.evaluate
    try:
        for point in grid.points():
            if done and point.key() in done:
                out.skipped += 1
                pending += 1
                continue
            t_point = time.monotonic()
            row = evaluate(point)
            now = time.monotonic()
            slow = now - t_point > SLOW_POINT_S
            if writer is not None:
                writer.write(row, sync=slow)
            out.rows.append(row)
            out.new += 1
            pending += 1
            if advance is not None and (slow or now - last >= PROGRESS_EVERY_S):
                advance(pending)
                pending, last = 0, now
    except KeyboardInterrupt:
        out.interrupted = True
    finally:
        if writer is not None:
            writer.sync()
        if advance is not None and pending:
            advance(pending)
        out.elapsed_s = time.monotonic() - t0
    return out

