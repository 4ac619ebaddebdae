"""One grid point -> one row (a :class:`~gpt_batchprof.sweep.rows.SweepRow` of SI values with its provenance).

Prediction comes from the analytic core (one ``enumerate_ops`` call yields every operator
of a step, so it is cached per (model, phase, batch, seq_len, dtype, attention) and the
points of one step share it). Measurement, when asked for, comes from a ``LiveTimer``
(see :mod:`gpt_batchprof.sweep.live`) and is cached without the hardware profile, which
does not change what the device does.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Sequence

from gpt_batchprof import __version__
from gpt_batchprof.analytic import (
    Dtypes, OpCost, Prediction, Scenario, combine, enumerate_ops, launch_mode, predict,
)
from gpt_batchprof.analytic.mlp import mlp_cost as analytic_mlp_cost
from gpt_batchprof.analytic.serving import latencies, roofline_latencies
from gpt_batchprof.sweep.grid import IDENTITY, Grid, Point
from gpt_batchprof.sweep.rows import SweepRow


def mlp_cost(width: int, depth: int, batch: int, dtype: str) -> OpCost:
    """Seed 002's MLP: ``depth`` layers of (batch x width) @ (width x width), one launch each.

    FLOPs 2 * batch * width^2 per layer; bytes: the weight plus the input and output activations.
    """
    return analytic_mlp_cost(batch, depth=depth, width=width, dtypes=Dtypes.of(dtype))


class Evaluator:
    """Turns points into rows. ``timer`` is None for analytic sweeps."""

    def __init__(self, grid: Grid, mode: str = "analytic", timer: Any = None):
        self.grid = grid
        self.mode = mode
        self.timer = timer if mode != "analytic" else None
        self.predicted = mode != "live"
        self._ops = lru_cache(maxsize=4096)(self._ops_uncached)
        self._preds = lru_cache(maxsize=4096)(self._preds_uncached)
        self._measured: dict[tuple, tuple[float, float]] = {}
        self._provenance = {
            "mode": mode,
            "device": getattr(self.timer, "device", None) or "analytic",
            "torch_version": getattr(self.timer, "torch_version", None),
            "gpt_batchprof_version": __version__,
        }

    # -- operators and predictions (cached: consecutive points share one step)
    def _ops_uncached(self, model: str, phase: str, batch: int, seq_len: int, dtype: str, attention: str):
        m = self.grid.models[model]
        dt = Dtypes.of(dtype)
        if phase == "forward":
            return (mlp_cost(m.d_model, m.n_layer, batch, dtype),)
        par = self.grid.spec.parallel
        if phase == "prefill":
            return enumerate_ops(m, "prefill", batch, new_tokens=seq_len, dtypes=dt, attention=attention, parallel=par)
        return enumerate_ops(m, "decode", batch, kv_len=seq_len, dtypes=dt, attention=attention, parallel=par)

    def _preds_uncached(self, hardware: str, model: str, phase: str, batch: int, seq_len: int, dtype: str,
                        attention: str) -> tuple[Prediction, ...]:
        # a tuple, not a dict by operator name: a stack of layer kinds has several rows of one operator
        hw = self.grid.hardware[hardware]
        launch = self.launch(hw)
        return tuple(predict(c, hw, launch) for c in self._ops(model, phase, batch, seq_len, dtype, attention))

    def launch(self, hw) -> str:
        """The launch mode predictions charge: the spec's, where ``auto`` means graphs on a GPU
        for analytic sweeps but eager when kernels are timed (live kernels launch eagerly)."""
        wanted = self.grid.spec.launch
        if wanted == "auto" and self.mode != "analytic":
            wanted = "eager"
        return launch_mode(wanted, hw)

    def costs(self, p: Point) -> tuple[OpCost, ...]:
        ops = self._ops(p.model, p.phase, p.batch, p.seq_len, p.dtype, p.attention)
        if p.workload != "gpt":
            return ops
        names = self.grid.op_members[p.op]
        return tuple(c for c in ops if c.op in names)

    # -- one point
    def evaluate(self, p: Point) -> SweepRow:
        if p.workload == "generation":
            return self._generation(p)
        preds = self._preds(p.hardware, p.model, p.phase, p.batch, p.seq_len, p.dtype, p.attention)
        if p.workload == "gpt":
            names = self.grid.op_members[p.op]
            chosen = [pr for pr in preds if pr.cost.op in names]
        else:
            chosen = list(preds)
        group = combine(chosen, p.op, launches=sum(pr.cost.launches for pr in chosen))
        flops, nbytes, t = group.cost.flops, group.cost.bytes, group.time_s
        items = p.batch * group.cost.new_tokens  # tokens through the operator (mlp: rows of the input)
        row = self._base(p) | {
            "items": items,
            "flops": flops,
            "bytes": nbytes,
            "weight_bytes": group.cost.weight_bytes,
            "intensity": group.cost.intensity,
            "launches": group.cost.launches,
        }
        if self.predicted:
            row |= {
                "predicted_time_s": t,
                "roofline_time_s": group.roofline_time_s,
                "prediction": group.prediction,
                "predicted_flops_per_s": flops / t if t else None,
                "predicted_items_per_s": items / t if t else None,
                "bound": group.bound,
            }
        if self.timer is not None:
            ms, iqr = self._measure(p, tuple(pr.cost for pr in chosen))
        if self.timer is not None and ms is not None:
            row |= {
                "measured_time_s": ms,
                "measured_iqr_s": iqr,
                "measured_flops_per_s": flops / ms if ms else None,
                "measured_items_per_s": items / ms if ms else None,
            }
            if self.predicted and t:
                row["measured_over_predicted"] = ms / t
        return SweepRow(**row)

    def _base(self, p: Point) -> dict[str, Any]:
        """The fields every row has (the point, its width, the provenance), as SweepRow keywords."""
        return {f: getattr(p, f) for f in IDENTITY} | {"d_model": self.grid.models[p.model].d_model,
                                                       **self._provenance}

    def _measure(self, p: Point, costs: Sequence[OpCost]) -> tuple[float | None, float | None]:
        """Sum of per-operator medians (and IQRs); one measurement per operator shape.
        (None, None) when the device cannot run one of them."""
        total, iqr = 0.0, 0.0
        for c in costs:
            key = (p.model, c.op, c.phase, c.batch, c.new_tokens, c.kv_len, p.dtype, p.attention)
            if key not in self._measured:
                self._measured[key] = self.timer.time_op(c, self.grid.models[p.model], p.dtype)
            m, q = self._measured[key]
            if m is None:
                return None, None
            total += m
            iqr += q
        return total, iqr

    def _generation(self, p: Point) -> SweepRow:
        m = self.grid.models[p.model]
        hw = self.grid.hardware[p.hardware]
        gen = self.grid.spec.gen_len
        sc = Scenario(prompt_len=p.seq_len, gen_len=gen, dtypes=Dtypes.of(p.dtype), attention=p.attention,
                      launch=self.launch(hw))
        items = p.batch * gen
        row = self._base(p) | {"items": items, "gen_len": gen}
        if self.predicted:
            par = self.grid.spec.parallel
            ttft, itl, e2e = latencies(m, hw, sc, p.batch, par)
            rl = roofline_latencies(m, hw, sc, p.batch, par, (ttft, itl, e2e))
            row |= {"predicted_time_s": e2e, "predicted_items_per_s": items / e2e, "ttft_s": ttft, "itl_s": itl,
                    "prediction": hw.prediction,
                    "roofline_time_s": rl[2], "roofline_ttft_s": rl[0], "roofline_itl_s": rl[1]}
        if self.timer is not None:  # a real generation loop (measure.generate), prefill + gen_len - 1 steps
            run = self.timer.time_generation(m, p.batch, p.seq_len, gen, p.dtype, p.attention)
            if run is None:
                return SweepRow(**row)
            row |= {"measured_time_s": run.e2e_s, "measured_items_per_s": run.tokens_per_s,
                    "measured_ttft_s": run.ttft_s, "measured_itl_s": run.itl_s}
            if self.predicted:
                row["measured_over_predicted"] = run.e2e_s / row["predicted_time_s"]
        return SweepRow(**row)

