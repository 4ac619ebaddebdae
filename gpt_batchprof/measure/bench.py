"""The `bench` core: time every operator `analyze` predicts, at its exact shape.

``plan_bench`` lists what to time (the operators of ``Scenario.ops``, plus the composite
``block`` and ``mlp`` rows on request); ``iter_bench`` times them one by one and yields a
frozen ``BenchRow`` per operator as soon as it is done (so an interrupted run keeps what
finished); ``run_bench`` collects them. ``time_costs`` is the one measuring path: `bench`
and live sweeps both time through it. Nothing here prints; rows become dicts in
``report.rows``.
"""

from __future__ import annotations

import gc
import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

from gpt_batchprof.analytic import Dtypes, OpCost, OpShape, Prediction, Scenario, combine, predict
from gpt_batchprof.analytic.mlp import mlp_cost
from gpt_batchprof.analytic.ops import OP_NAMES
from gpt_batchprof.analytic.parallel import Parallelism, local_model, micro_batches
from gpt_batchprof.errors import BatchprofError
from gpt_batchprof.profiles import HardwareSpec, ModelSpec

BENCH_OPS = OP_NAMES + ("block", "mlp")
LAUNCH_BOUND_S = 20e-6  # CUDA kernels shorter than this are mostly launch overhead without graphs
ROTATE_CAP_BYTES = 512 * 2**20  # never allocate more than this just to rotate input copies
DENSE_MAX_SETS = 256  # copies a dense (weight-streaming) kernel may rotate; others: 8


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

    @property
    def launch(self) -> str:
        """How the timed kernels are launched, hence which overhead the prediction charges."""
        return "graphs" if self.cuda_graphs else "eager"


@dataclass(frozen=True, slots=True)
class Planned:
    """One row to time: its prediction, and the kernels (per-launch OpCost, launches per row launch)."""

    prediction: Prediction
    parts: tuple[tuple[OpCost, int], ...]


@dataclass(frozen=True, slots=True)
class Timed:
    """What timing one row gave: a status, and for ``ok`` the row's total time (median per
    launch x launches) with its spread."""

    status: str  # ok | oom | skipped
    reason: str = ""
    time_s: float | None = None
    iqr_s: float | None = None
    samples: int = 0
    method: str = ""
    warnings: tuple[str, ...] = ()
    sets: int = 1


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
        """Roofline / measured: 1.0 = the kernel runs at its roofline, 0.25 = four times slower."""
        if not self.measured_time_s:
            return None
        return self.prediction.roofline_time_s / self.measured_time_s

    @property
    def prediction_error(self) -> float | None:
        """Best prediction / measured - 1 (calibrated when the profile has tables): +0.1 = 10% too slow."""
        if not self.measured_time_s:
            return None
        return self.prediction.time_s / self.measured_time_s - 1.0

    @property
    def roofline_error(self) -> float | None:
        """Roofline / measured - 1."""
        share = self.roofline_share
        return None if share is None else share - 1.0

    @property
    def achieved_flops_per_s(self) -> float | None:
        return self.cost.flops / self.measured_time_s if self.measured_time_s else None

    @property
    def achieved_bytes_per_s(self) -> float | None:
        return self.cost.bytes / self.measured_time_s if self.measured_time_s else None


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

    @property
    def launch(self) -> str:
        return self.settings.launch

    def below(self, min_efficiency: float) -> tuple[BenchRow, ...]:
        """Timed rows whose roofline share is under ``min_efficiency``."""
        return tuple(r for r in self.rows if r.status == "ok" and r.roofline_share is not None
                     and r.roofline_share < min_efficiency)


# --------------------------------------------------------------------------- planning


def check_ops(ops: tuple[str, ...]) -> tuple[str, ...]:
    bad = [o for o in ops if o not in BENCH_OPS]
    if bad:
        raise BatchprofError(f"--op: unknown operator '{bad[0]}' (choose from {', '.join(BENCH_OPS)})")
    return ops


def block_plan(ops: Sequence[OpCost], hw: HardwareSpec, n_layer: int, launch: str = "eager",
               norms_per_layer: int = 2) -> Planned:
    """One transformer block (every operator but the LM head, norm twice), totalled over layers.

    Its roofline is the sum of its kernels' rooflines (they run one after another). Across
    GPUs: one GPU's sharded kernels (collectives have rows of their own).
    """
    members = [c for c in ops if c.op != "lm_head" and c.group != "collective"]
    per_layer = [norms_per_layer if c.op == "norm" else 1 for c in members]
    preds = [predict(c, hw, launch, strict=False) for c in members]
    scale = [rep * n_layer / c.launches for c, rep in zip(members, per_layer)]
    c0 = members[0]
    pred = combine(preds, "block", launches=n_layer, scale=scale,
                   shape=OpShape(m=c0.shape.m, n=c0.shape.n, k=c0.shape.n))
    return Planned(pred, tuple(zip(members, per_layer)))


def _single(c: OpCost, hw: HardwareSpec, launch: str) -> Planned:
    return Planned(predict(c, hw, launch, strict=False), ((c, 1),))


def plan_bench(model: ModelSpec, hw: HardwareSpec, scenario: Scenario, phases: tuple[str, ...],
               batches: tuple[int, ...], ops: tuple[str, ...] = (), mlp_depth: int = 8,
               mlp_width: int = 1024, launch: str = "eager",
               parallel: Parallelism = Parallelism()) -> tuple[Planned, ...]:
    """What to time, in `analyze`'s order (phase, batch, operator); MLP rows last.

    Across GPUs (``parallel``): one GPU's sharded operators and the collectives between them.
    """
    check_ops(ops)
    scenario.check_fits_model(model)
    wanted = set(ops)
    if "block" in wanted and model.is_stack:
        raise BatchprofError(f"--op block: {model.name} is a stack of different layer kinds, so it has no one "
                             "block to time; time its operators (each kind has rows of its own)")
    model_ops = [o for o in ops if o in OP_NAMES]
    plan: list[Planned] = []
    seen: set[str] = set()
    if not ops or model_ops or "block" in wanted:
        for phase in phases:
            for b in batches:
                costs = scenario.ops(model, phase, b, parallel)
                for c in costs:
                    seen.add(c.op)
                    if not ops or c.op in wanted:
                        plan.append(_single(c, hw, launch))
                if "block" in wanted:
                    layers = local_model(model, parallel).n_layer * micro_batches(b, parallel)
                    plan.append(block_plan(costs, hw, layers, launch, model.norms_per_layer))
    missing = [o for o in model_ops if o not in seen]
    if missing:
        raise BatchprofError(
            f"--op {missing[0]}: not an operator of {model.name} with --attention {scenario.attention} "
            f"(its operators: {', '.join(o for o in OP_NAMES if o in seen)})")
    if "mlp" in wanted:
        for b in batches:
            plan.append(_single(mlp_cost(b, mlp_depth, mlp_width, scenario.dtypes), hw, launch))
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


@contextmanager
def torch_threads(device: str, threads: int | None):
    """Run with ``threads`` CPU threads (when given, on the CPU), then restore torch's setting."""
    import torch

    old = torch.get_num_threads()
    if device == "cpu" and threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def time_costs(parts: Sequence[tuple[OpCost, int]], launches: int, label: str, model: ModelSpec, dtypes: Dtypes,
               device: str, timer, warmup_s: float, rep_s: float, cache_bytes: float,
               cuda_graphs: bool = False) -> Timed:
    """Build the kernels of one row at their exact shapes, time one launch, scale to ``launches``.

    The one measuring path of `bench` and live sweeps: input sets rotated past the cache (not
    on CUDA without graphs, where the timer flushes L2 instead), noisy-sample warnings, and a
    row (not a crash) for a kernel torch cannot run or that runs out of memory.
    """
    from gpt_batchprof.measure import kernels as K

    per_launch = sum(K.per_launch_bytes(c) * rep for c, rep in parts)
    # Dense layers' weights stream from memory in a model (each layer has its own): rotate as many
    # copies as fill twice the cache. Other kernels read activations the previous kernel just wrote.
    dense = all(c.op in K.DENSE for c, _ in parts)
    sets = 1 if (device == "cuda" and not cuda_graphs) else input_sets(per_launch, cache_bytes,
                                                                       DENSE_MAX_SETS if dense else 8)
    kernel = None
    try:
        built = [(K.build_kernel(c, model, dtypes, device, sets), rep) for c, rep in parts]
        kernel = built[0][0] if len(built) == 1 and built[0][1] == 1 else K.build_sequence(built, parts[0][0].op,
                                                                                           per_launch)
        m = timer.measure(kernel.fn, warmup_s=warmup_s, rep_s=rep_s, label=label)
    except K.Unsupported as e:
        return Timed("skipped", str(e))
    except Exception as e:  # noqa: BLE001 - torch raises RuntimeError/NotImplementedError for both cases
        if is_oom(e):
            kernel = None
            free_memory(device)
            return Timed("oom", f"out of memory on {device} ({_first_line(e)})")
        if isinstance(e, (RuntimeError, NotImplementedError, TypeError)):
            return Timed("skipped", f"torch cannot run it: {_first_line(e)}")
        raise
    finally:
        del kernel
    warnings = list(m.warnings(rep_s))
    if device == "cuda" and not cuda_graphs and m.median_s < LAUNCH_BOUND_S:
        warnings.append(f"launch-bound: {m.median_s * 1e6:.1f} us per kernel is close to CPU launch "
                        "overhead; consider --cuda-graphs")
    return Timed("ok", "", m.median_s * launches, m.iqr_s * launches, len(m.times_s), m.method, tuple(warnings), sets)


def iter_bench(plan: tuple[Planned, ...], model: ModelSpec, scenario: Scenario, hw: HardwareSpec,
               settings: BenchSettings, timer=None) -> Iterator[BenchRow]:
    """Time each planned row in turn, yielding it as soon as it is done."""
    from gpt_batchprof.measure.timing import default_timer

    import torch

    timer = timer or default_timer(settings.device, l2_cache_bytes=hw.l2_cache_bytes,
                                   cuda_graphs=settings.cuda_graphs)
    if hw.l2_cache_bytes:
        cache = hw.l2_cache_bytes
    elif settings.device == "cpu":
        from gpt_batchprof.measure.device import last_level_cache_bytes

        cache = last_level_cache_bytes()[0]
    else:
        cache = 32e6
    collectives = collective_rows(plan, settings)  # one launch of N processes for all of them
    common = dict(device_name=settings.device_name, torch_version=settings.torch_version)
    torch.manual_seed(0)
    with torch_threads(settings.device, settings.threads), torch.inference_mode():
        for i, item in enumerate(plan):
            if i in collectives:
                yield collectives[i]
                continue
            cost = item.prediction.cost
            t = time_costs(item.parts, cost.launches, _label(cost), model, scenario.dtypes, settings.device, timer,
                           settings.warmup_s, settings.rep_s, cache, settings.cuda_graphs)
            notes = (item.prediction.note,) if item.prediction.note else ()
            yield BenchRow(item.prediction, t.status, t.reason, t.time_s, t.iqr_s, t.samples, t.method,
                           notes + t.warnings, sets=t.sets, **common)


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
                      settings.launch, parallel)
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
