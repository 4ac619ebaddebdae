"""The `bench` core: time every operator `analyze` predicts, at its exact shape.

``plan_bench`` lists what to time (the predictions of ``analysis.phase_ops``, plus the
composite ``block`` and ``mlp`` rows on request); ``iter_bench`` times them one by one and
yields a frozen ``BenchRow`` per operator as soon as it is done (so an interrupted run keeps
what finished); ``run_bench`` collects them. Nothing here prints.
"""

from __future__ import annotations

import gc
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from gpt_batchprof.analysis import phase_ops
from gpt_batchprof.analytic.gpt import Dtypes
from gpt_batchprof.analytic.mlp import mlp_cost
from gpt_batchprof.analytic.ops import OP_NAMES, OpCost, OpShape
from gpt_batchprof.analytic.parallel import Parallelism, local_model, micro_batches
from gpt_batchprof.analytic.roofline import Prediction, predict
from gpt_batchprof.analytic.serving import Scenario
from gpt_batchprof.errors import BatchprofError
from gpt_batchprof.profiles import HardwareSpec, ModelSpec
from gpt_batchprof.report.rows import op_row, settings_dict

BENCH_OPS = OP_NAMES + ("block", "mlp")
STATUSES = ("ok", "oom", "skipped")
LAUNCH_BOUND_S = 20e-6  # CUDA kernels shorter than this are mostly launch overhead without graphs
ROTATE_CAP_BYTES = 512 * 2**20  # never allocate more than this just to rotate input copies


@dataclass(frozen=True, slots=True)
class BenchSettings:
    device: str  # "cpu" | "cuda"
    device_name: str
    torch_version: str
    threads: int
    cuda_graphs: bool = False
    warmup_s: float = 0.025
    rep_s: float = 0.1
    ops: tuple[str, ...] = ()  # empty: every operator of the model
    mlp_depth: int = 8
    mlp_width: int = 1024

    def to_dict(self) -> dict[str, Any]:
        return {"device": self.device, "device_name": self.device_name, "torch_version": self.torch_version,
                "threads": self.threads, "cuda_graphs": self.cuda_graphs, "warmup_s": self.warmup_s,
                "rep_s": self.rep_s, "ops": list(self.ops), "mlp_depth": self.mlp_depth,
                "mlp_width": self.mlp_width}


@dataclass(frozen=True, slots=True)
class Planned:
    """One row to time: its prediction, and the kernels (per-launch OpCost, launches per row launch)."""

    prediction: Prediction
    parts: tuple[tuple[OpCost, int], ...]
    note: str = ""  # e.g. the profile has no peak for this dtype (prediction is NaN)


def _predict(c: OpCost, hw: HardwareSpec) -> tuple[Prediction, str]:
    """The roofline prediction; NaN compute time (and a note) when the profile lacks the dtype's peak."""
    from gpt_batchprof.errors import ProfileError

    try:
        return predict(c, hw), ""
    except ProfileError as e:
        memory_s = c.bytes / hw.memory_bandwidth_bytes_per_s
        overhead_s = c.launches * hw.launch_overhead_s
        return Prediction(c, math.nan, memory_s, overhead_s, math.nan), f"no prediction: {e}"


@dataclass(frozen=True, slots=True)
class BenchRow:
    prediction: Prediction
    status: str  # ok | oom | skipped
    reason: str = ""
    measured_time_s: float | None = None  # median per launch x launches (the row's total)
    measured_iqr_s: float | None = None
    samples: int = 0
    method: str = ""
    warnings: tuple[str, ...] = ()
    device_name: str = ""
    torch_version: str = ""
    sets: int = 1

    @property
    def cost(self) -> OpCost:
        return self.prediction.cost

    @property
    def measured_over_predicted(self) -> float | None:
        if self.measured_time_s is None or not self.prediction.time_s:
            return None
        return self.measured_time_s / self.prediction.time_s

    @property
    def roofline_share(self) -> float | None:
        """Predicted / measured: 1.0 = the kernel runs at its roofline, 0.25 = four times slower."""
        if not self.measured_time_s:
            return None
        return self.prediction.time_s / self.measured_time_s

    @property
    def achieved_flops_per_s(self) -> float | None:
        return self.cost.flops / self.measured_time_s if self.measured_time_s else None

    @property
    def achieved_bytes_per_s(self) -> float | None:
        return self.cost.bytes / self.measured_time_s if self.measured_time_s else None

    def to_dict(self) -> dict[str, Any]:
        return op_row(self.prediction) | {
            "status": self.status,
            "reason": self.reason,
            "measured_time_s": self.measured_time_s,
            "measured_iqr_s": self.measured_iqr_s,
            "measured_over_predicted": self.measured_over_predicted,
            "roofline_share": self.roofline_share,
            "achieved_flops_per_s": self.achieved_flops_per_s,
            "achieved_bytes_per_s": self.achieved_bytes_per_s,
            "samples": self.samples,
            "timing_method": self.method,
            "input_sets": self.sets,
            "device": self.device_name,
            "torch_version": self.torch_version,
            "warnings": list(self.warnings),
        }


@dataclass(frozen=True, slots=True)
class BenchResult:
    model: ModelSpec
    hardware: HardwareSpec
    scenario: Scenario
    phases: tuple[str, ...]
    batches: tuple[int, ...]
    settings: BenchSettings
    rows: tuple[BenchRow, ...]
    complete: bool = True  # False when interrupted
    parallel: Parallelism = Parallelism()

    def below(self, min_efficiency: float) -> tuple[BenchRow, ...]:
        """Timed rows whose roofline share is under ``min_efficiency``."""
        return tuple(r for r in self.rows if r.status == "ok" and r.roofline_share is not None
                     and r.roofline_share < min_efficiency)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.to_dict(),
            "hardware": self.hardware.to_dict(),
            "settings": settings_dict(self.scenario, self.phases, self.batches, self.parallel)
            | self.settings.to_dict(),
            "complete": self.complete,
            "rows": [r.to_dict() for r in self.rows],
        }


# --------------------------------------------------------------------------- planning


def check_ops(ops: tuple[str, ...]) -> tuple[str, ...]:
    bad = [o for o in ops if o not in BENCH_OPS]
    if bad:
        raise BatchprofError(f"--op: unknown operator '{bad[0]}' (choose from {', '.join(BENCH_OPS)})")
    return ops


def block_plan(ops: tuple[OpCost, ...], hw: HardwareSpec, n_layer: int) -> Planned:
    """One transformer block (every operator but the LM head, norm twice), totalled over layers.

    Its roofline is the sum of its kernels' rooflines (they run one after another). Across
    GPUs: one GPU's sharded kernels (collectives have rows of their own).
    """
    parts: list[tuple[OpCost, int]] = []
    flops = nbytes = wbytes = compute_s = memory_s = overhead_s = time_s = 0.0
    for c in ops:
        if c.op == "lm_head" or c.group == "collective":
            continue
        per_layer = 2 if c.op == "norm" else 1
        scale = per_layer * n_layer / c.launches
        p, _ = _predict(c, hw)
        flops += c.flops * scale
        nbytes += c.bytes * scale
        wbytes += c.weight_bytes * scale
        compute_s += p.compute_s * scale
        memory_s += p.memory_s * scale
        overhead_s += p.overhead_s * scale
        time_s += p.time_s * scale
        parts.append((c, per_layer))
    c0 = ops[0]
    cost = OpCost("block", c0.phase, c0.batch, c0.seq_len, c0.kv_len, flops, nbytes, wbytes, n_layer,
                  c0.compute_dtype, OpShape(m=c0.shape.m, n=c0.shape.n, k=c0.shape.n))
    return Planned(Prediction(cost, compute_s, memory_s, overhead_s, time_s), tuple(parts))


def _with_parts(c: OpCost, hw: HardwareSpec) -> tuple[Prediction, tuple[tuple[OpCost, int], ...], str]:
    pred, note = _predict(c, hw)
    return pred, ((c, 1),), note


def plan_bench(model: ModelSpec, hw: HardwareSpec, scenario: Scenario, phases: tuple[str, ...],
               batches: tuple[int, ...], ops: tuple[str, ...] = (), mlp_depth: int = 8,
               mlp_width: int = 1024, parallel: Parallelism = Parallelism()) -> tuple[Planned, ...]:
    """What to time, in `analyze`'s order (phase, batch, operator); MLP rows last.

    Across GPUs (``parallel``): one GPU's sharded operators and the collectives between them.
    """
    check_ops(ops)
    wanted = set(ops)
    model_ops = [o for o in ops if o in OP_NAMES]
    plan: list[Planned] = []
    seen: set[str] = set()
    if not ops or model_ops or "block" in wanted:
        for phase in phases:
            for b in batches:
                costs = phase_ops(model, scenario, phase, b, parallel)
                for c in costs:
                    seen.add(c.op)
                    if not ops or c.op in wanted:
                        plan.append(Planned(*_with_parts(c, hw)))
                if "block" in wanted:
                    layers = local_model(model, parallel).n_layer * micro_batches(b, parallel)
                    plan.append(block_plan(costs, hw, layers))
    missing = [o for o in model_ops if o not in seen]
    if missing:
        raise BatchprofError(
            f"--op {missing[0]}: not an operator of {model.name} with --attention {scenario.attention} "
            f"(its operators: {', '.join(o for o in OP_NAMES if o in seen)})")
    if "mlp" in wanted:
        for b in batches:
            plan.append(Planned(*_with_parts(mlp_cost(b, mlp_depth, mlp_width, scenario.dtypes), hw)))
    return tuple(plan)


# --------------------------------------------------------------------------- timing


def input_sets(set_bytes: float, cache_bytes: float, max_sets: int = 8) -> int:
    """Copies of the inputs to rotate so that together they exceed the cache twice over (when cheap)."""
    if set_bytes <= 0 or cache_bytes <= 0:
        return 1
    n = min(max_sets, max(1, math.ceil(2 * cache_bytes / set_bytes)))
    while n > 1 and n * set_bytes > ROTATE_CAP_BYTES:
        n -= 1
    return n


def is_oom(e: BaseException) -> bool:
    if isinstance(e, MemoryError):
        return True
    msg = str(e).lower()
    return isinstance(e, RuntimeError) and ("out of memory" in msg or "can't allocate memory" in msg)


def free_memory(device: str) -> None:
    gc.collect()
    if device == "cuda":
        import torch

        torch.cuda.empty_cache()


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__


def _label(c: OpCost) -> str:
    return f"{c.phase}/{c.batch}/{c.op}"


def time_planned(item: Planned, model: ModelSpec, dtypes: Dtypes, settings: BenchSettings, timer,
                 cache_bytes: float) -> BenchRow:
    """Build the kernels of one row, time them, and turn the raw samples into a row."""
    from gpt_batchprof.measure import kernels as K

    pred = item.prediction
    cost = pred.cost
    common = dict(device_name=settings.device_name, torch_version=settings.torch_version)
    per_launch = sum(K.per_launch_bytes(c) * rep for c, rep in item.parts)
    sets = 1 if (settings.device == "cuda" and not settings.cuda_graphs) else input_sets(per_launch, cache_bytes)
    kernel = None
    try:
        built = [(K.build_kernel(c, model, dtypes, settings.device, sets), rep) for c, rep in item.parts]
        kernel = built[0][0] if len(built) == 1 and built[0][1] == 1 else K.build_sequence(built, cost.op, per_launch)
        m = timer.measure(kernel.fn, warmup_s=settings.warmup_s, rep_s=settings.rep_s, label=_label(cost))
    except K.Unsupported as e:
        return BenchRow(pred, "skipped", str(e), warnings=(item.note,) if item.note else (), **common)
    except Exception as e:  # noqa: BLE001 - torch raises RuntimeError/NotImplementedError for both cases
        if is_oom(e):
            kernel = None
            free_memory(settings.device)
            return BenchRow(pred, "oom", f"out of memory on {settings.device} ({_first_line(e)})", **common)
        if isinstance(e, (RuntimeError, NotImplementedError, TypeError)):
            return BenchRow(pred, "skipped", f"torch cannot run it: {_first_line(e)}", **common)
        raise
    finally:
        del kernel
    launches = cost.launches
    warnings = ([item.note] if item.note else []) + list(m.warnings(settings.rep_s))
    if settings.device == "cuda" and not settings.cuda_graphs and m.median_s < LAUNCH_BOUND_S:
        warnings.append(f"launch-bound: {m.median_s * 1e6:.1f} us per kernel is close to CPU launch "
                        "overhead; consider --cuda-graphs")
    return BenchRow(pred, "ok", "", m.median_s * launches, m.iqr_s * launches, len(m.times_s), m.method,
                    tuple(warnings), sets=sets, **common)


def iter_bench(plan: tuple[Planned, ...], model: ModelSpec, scenario: Scenario, hw: HardwareSpec,
               settings: BenchSettings, timer=None) -> Iterator[BenchRow]:
    """Time each planned row in turn, yielding it as soon as it is done."""
    from gpt_batchprof.measure.timing import default_timer

    timer = timer or default_timer(settings.device, l2_cache_bytes=hw.l2_cache_bytes,
                                   cuda_graphs=settings.cuda_graphs)
    cache = hw.l2_cache_bytes or 32e6
    if getattr(timer, "method", "") == "fake":  # tests: no torch needed
        for item in plan:
            yield _fake_row(item, settings, timer)
        return
    collectives = collective_rows(plan, settings)  # one launch of N processes for all of them
    import torch

    old_threads = torch.get_num_threads()
    if settings.device == "cpu":
        torch.set_num_threads(settings.threads)
    torch.manual_seed(0)
    try:
        with torch.inference_mode():
            for i, item in enumerate(plan):
                yield collectives[i] if i in collectives else time_planned(
                    item, model, scenario.dtypes, settings, timer, cache)
    finally:
        torch.set_num_threads(old_threads)


def collective_rows(plan: tuple[Planned, ...], settings: BenchSettings) -> dict[int, BenchRow]:
    """The collective rows of ``plan`` (by index), timed across real processes at their message sizes."""
    from gpt_batchprof.measure.distributed import CollectiveCall, time_collectives

    where = [i for i, item in enumerate(plan) if item.prediction.cost.group == "collective"]
    if not where:
        return {}
    calls = {}
    for i in where:
        c = plan[i].prediction.cost
        calls[i] = CollectiveCall(c.op, round(c.bytes / c.launches), c.shape.ranks)
    unique = list(dict.fromkeys(calls.values()))
    measured = dict(zip(unique, time_collectives(unique, settings.device, settings.warmup_s, settings.rep_s)))
    rows = {}
    for i, call in calls.items():
        m, pred = measured[call], plan[i].prediction
        n = pred.cost.launches
        rows[i] = BenchRow(pred, "ok", "", m.median_s * n, m.iqr_s * n, len(m.times_s), m.method,
                           m.warnings(settings.rep_s), settings.device_name, settings.torch_version)
    return rows


def _fake_row(item: Planned, settings: BenchSettings, timer) -> BenchRow:
    """Rows from a fake timer, for tests of orchestration and statistics without kernels."""
    cost = item.prediction.cost
    m = timer.measure(lambda i: None, warmup_s=settings.warmup_s, rep_s=settings.rep_s, label=_label(cost))
    return BenchRow(item.prediction, "ok", "", m.median_s * cost.launches, m.iqr_s * cost.launches,
                    len(m.times_s), m.method, m.warnings(settings.rep_s), settings.device_name,
                    settings.torch_version)


def run_bench(model: ModelSpec, hw: HardwareSpec, scenario: Scenario, phases: tuple[str, ...],
              batches: tuple[int, ...], settings: BenchSettings, timer=None,
              on_row: Callable[[BenchRow, int, int], None] | None = None,
              parallel: Parallelism = Parallelism()) -> BenchResult:
    """Time everything; ``on_row(row, done, total)`` after each row.

    A KeyboardInterrupt propagates with the rows finished so far attached as ``.partial``
    (a BenchResult with ``complete=False``), so the caller can still report them.
    """
    parallel.check(model, hw)
    plan = plan_bench(model, hw, scenario, phases, batches, settings.ops, settings.mlp_depth, settings.mlp_width,
                      parallel)
    rows: list[BenchRow] = []
    try:
        for row in iter_bench(plan, model, scenario, hw, settings, timer):
            rows.append(row)
            if on_row:
                on_row(row, len(rows), len(plan))
    except KeyboardInterrupt as e:
        e.partial = BenchResult(model, hw, scenario, phases, batches, settings, tuple(rows), complete=False,  # type: ignore[attr-defined]
                                parallel=parallel)
        raise
    return BenchResult(model, hw, scenario, phases, batches, settings, tuple(rows), parallel=parallel)

