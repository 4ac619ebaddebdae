"""The `generate` core: a real generation loop per batch, next to analyze's serving prediction.

Per batch: one prefill of ``prompt_len`` random tokens (its time is the TTFT: the first
output token comes out of it), then ``gen_len - 1`` greedy decode steps, each adding one
token per sequence to the KV cache. Measured: TTFT, ITL (median and p90 over the decode
steps), end-to-end time (prefill + every step) and tokens/s = batch x gen_len / e2e
(TTFT included, as ``analytic.serving`` counts it), and the peak memory.

Timing: a monotonic clock around each phase on the CPU (``time.perf_counter_ns``, threads
fixed); CUDA events between phases on the GPU with one synchronisation at the end, decode
steps replayed from CUDA graphs (one graph per step, each at its own cache length, all
captured before the timed run into one shared memory pool). Warm-up runs (whole
generations) come first at every batch. ``torch`` is imported inside functions only.

Engines: ``reference`` is :mod:`gpt_batchprof.measure.model` (analyze's operators at
analyze's shapes); ``hf`` is the Hugging Face transformers model of the same config
(:mod:`gpt_batchprof.measure.hf`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from gpt_batchprof.analytic.serving import Scenario, ServingPoint, memory_use, serving_report
from gpt_batchprof.errors import BatchprofError
from gpt_batchprof.measure.kernels import torch_dtype_of
from gpt_batchprof.profiles import HardwareSpec, ModelSpec
from gpt_batchprof.stats import quantile

ENGINES = ("reference", "hf")
ITL_P90 = 0.9


@dataclass(frozen=True, slots=True)
class GenerateSettings:
    device: str  # "cpu" | "cuda"
    device_name: str
    torch_version: str
    threads: int
    engine: str = "reference"
    cuda_graphs: bool = True  # decode steps replayed from CUDA graphs (CUDA, reference engine)
    warmup_runs: int = 1  # whole generations before the timed one, at every batch
    runs: int = 1  # timed generations; the one with the median e2e is reported
    seed: int = 0


@dataclass(frozen=True, slots=True)
class GenerationRun:
    """The raw times of one generation at one batch."""

    batch: int
    ttft_s: float
    step_times_s: tuple[float, ...]  # one per decode step (gen_len - 1 of them)
    e2e_s: float
    cache_lengths: tuple[int, ...]  # tokens in the KV cache after prefill and after each step
    peak_memory_bytes: float | None = None
    timing_method: str = "cpu-clock"  # | "cuda-events" | "cuda-graph"

    @property
    def gen_len(self) -> int:
        return len(self.step_times_s) + 1

    @property
    def itl_s(self) -> float | None:
        return quantile(self.step_times_s, 0.5) if self.step_times_s else None

    @property
    def itl_p90_s(self) -> float | None:
        return quantile(self.step_times_s, ITL_P90) if self.step_times_s else None

    @property
    def tokens_per_s(self) -> float:
        return self.batch * self.gen_len / self.e2e_s


def _error(measured: float | None, predicted: float | None) -> float | None:
    """Relative error of the prediction against the measurement: (predicted - measured) / measured."""
    if measured is None or predicted is None or not measured or math.isnan(predicted):
        return None
    return (predicted - measured) / measured


@dataclass(frozen=True, slots=True)
class GenerateRow:
    batch: int
    predicted: ServingPoint
    status: str = "ok"  # ok | oom | skipped
    reason: str = ""
    run: GenerationRun | None = None
    calibrated: bool = False  # `predicted` is from measured tables: its roofline_* figures go alongside
    memory_method: str = ""

    @property
    def errors(self) -> dict[str, float | None]:
        """(predicted - measured) / measured of TTFT, ITL, e2e and tokens/s."""
        r, p = self.run, self.predicted
        if r is None:
            return dict.fromkeys(("ttft", "itl", "e2e", "tokens_per_s"))
        return {"ttft": _error(r.ttft_s, p.ttft_s), "itl": _error(r.itl_s, p.itl_s),
                "e2e": _error(r.e2e_s, p.e2e_s), "tokens_per_s": _error(r.tokens_per_s, p.tokens_per_s)}


@dataclass(frozen=True, slots=True)
class GenerateResult:
    model: ModelSpec
    hardware: HardwareSpec
    scenario: Scenario
    batches: tuple[int, ...]
    settings: GenerateSettings
    rows: tuple[GenerateRow, ...]
    notes: tuple[str, ...] = ()
    complete: bool = True  # False when interrupted


# --------------------------------------------------------------------------- checks


def available_memory_bytes(device: str) -> float:
    """What a generation may use: the GPU's total memory, or the CPU's MemAvailable (else physical)."""
    if device == "cuda":
        import torch

        return float(torch.cuda.mem_get_info()[1])
    try:
        with open("/proc/meminfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    from gpt_batchprof.measure.device import physical_memory_bytes

    return physical_memory_bytes()


def check_fits(model: ModelSpec, scenario: Scenario, device: str, available: float) -> None:
    """Refuse a model whose weights and one sequence cannot fit, naming what it needs."""
    from gpt_batchprof.units import fmt_bytes

    one = memory_use(model, scenario, 1)
    if one.total_bytes > available:
        raise BatchprofError(
            f"{model.name} needs {fmt_bytes(one.total_bytes)} at batch 1 ({fmt_bytes(one.weights_bytes)} of "
            f"{scenario.dtypes.weight} weights, {fmt_bytes(one.kv_cache_bytes)} KV cache, "
            f"{fmt_bytes(one.activation_bytes)} activations); {device} has {fmt_bytes(available)}")


# --------------------------------------------------------------------------- the loop


def _peak_memory_start(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def peak_memory(device: str) -> tuple[float | None, str]:
    """CUDA: bytes allocated by torch at the peak of the timed run. CPU: the process's peak
    resident set size (ru_maxrss), a high-water mark over the whole process so far (it cannot be
    reset between batches: read it as an upper bound for the batch)."""
    if device == "cuda":
        import torch

        return float(torch.cuda.max_memory_allocated()), "cuda-max-allocated"
    try:
        import resource
        import sys

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return float(rss if sys.platform == "darwin" else rss * 1024), "process-peak-rss"
    except (ImportError, OSError):
        return None, "unavailable"


def generate_once(session, prompt, gen_len: int, device: str, graphs=None) -> GenerationRun:
    """One timed generation: prefill then ``gen_len - 1`` decode steps (replayed from ``graphs`` if given)."""
    import torch

    batch, prompt_len = prompt.shape
    lengths: list[int] = []
    if device == "cuda":
        events = [torch.cuda.Event(enable_timing=True) for _ in range(gen_len + 1)]
        events[0].record()
        tok = session.prefill(prompt)
        events[1].record()
        lengths.append(session.cache_len)
        if graphs is not None:
            graphs.start(tok)
        for i in range(gen_len - 1):
            if graphs is not None:
                graphs.replay(i)
            else:
                tok = session.decode(tok, prompt_len + i)
            events[i + 2].record()
            lengths.append(prompt_len + i + 1 if graphs is not None else session.cache_len)
        torch.cuda.synchronize()
        marks = [events[0].elapsed_time(e) * 1e-3 for e in events]
        method = "cuda-graph" if graphs is not None else "cuda-events"
    else:
        clock = time.perf_counter_ns
        t = [clock()]
        tok = session.prefill(prompt)
        t.append(clock())
        lengths.append(session.cache_len)
        for i in range(gen_len - 1):
            tok = session.decode(tok, prompt_len + i)
            t.append(clock())
            lengths.append(session.cache_len)
        marks = [(x - t[0]) * 1e-9 for x in t]
        method = "cpu-clock"
    steps = tuple(b - a for a, b in zip(marks[1:], marks[2:]))
    return GenerationRun(batch, marks[1], steps, marks[-1], tuple(lengths), timing_method=method)


class DecodeGraphs:
    """One CUDA graph per decode step of a reference session (step i at cache length prompt + i).

    Steps read the token buffer and write their greedy choice back into it, so replaying
    graph 0, 1, ... in order is the whole decode loop without a host round trip. All graphs
    share one memory pool (replayed in capture order, as torch requires for that).
    """

    def __init__(self, session, batch: int, prompt_len: int, steps: int):
        import torch

        self.tok = torch.zeros(batch, 1, dtype=torch.long, device="cuda")
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm up outside the capture (CUDA-graph rule)
            for _ in range(2):
                session.decode(self.tok, prompt_len)
        torch.cuda.current_stream().wait_stream(side)
        self.graphs, pool = [], None
        for i in range(steps):
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g, pool=pool):
                self.tok.copy_(session.decode(self.tok, prompt_len + i))
            pool = g.pool()
            self.graphs.append(g)
        torch.cuda.synchronize()

    def start(self, tok) -> None:
        self.tok.copy_(tok)

    def replay(self, i: int) -> None:
        self.graphs[i].replay()


def measure_batch(engine, batch: int, scenario: Scenario, settings: GenerateSettings) -> tuple[GenerationRun, str]:
    """Warm up, then time ``settings.runs`` generations at ``batch``; the run with the median e2e."""
    import torch

    device = settings.device
    gen = torch.Generator(device="cpu").manual_seed(settings.seed + batch)
    prompt = torch.randint(0, engine.vocab_size, (batch, scenario.prompt_len), generator=gen).to(device)
    session = engine.session(batch, scenario.positions)
    graphs = None
    try:
        for _ in range(settings.warmup_runs):
            generate_once(session, prompt, scenario.gen_len, device)
        if device == "cuda" and settings.cuda_graphs and engine.graphable and scenario.gen_len > 1:
            graphs = DecodeGraphs(session, batch, scenario.prompt_len, scenario.gen_len - 1)
        runs = []
        for _ in range(settings.runs):
            _peak_memory_start(device)
            run = generate_once(session, prompt, scenario.gen_len, device, graphs)
            peak, method = peak_memory(device)
            runs.append(GenerationRun(run.batch, run.ttft_s, run.step_times_s, run.e2e_s, run.cache_lengths,
                                      peak, run.timing_method))
    finally:
        del graphs, session
    runs.sort(key=lambda r: r.e2e_s)
    return runs[(len(runs) - 1) // 2], method


def make_engine(model: ModelSpec, scenario: Scenario, settings: GenerateSettings, hf_config=None):
    if settings.engine == "hf":
        from gpt_batchprof.measure.hf import HFEngine

        return HFEngine(model, scenario, settings, hf_config)
    return ReferenceEngine(model, scenario, settings)


class ReferenceEngine:
    """The reference GPT of :mod:`gpt_batchprof.measure.model`, built once for all batches."""

    name = "reference"

    def __init__(self, model: ModelSpec, scenario: Scenario, settings: GenerateSettings):
        from gpt_batchprof.measure.model import build_model

        self.model = build_model(model, torch_dtype_of(scenario), settings.device, scenario.attention,
                                 max_len=scenario.positions, seed=settings.seed)
        self.vocab_size = model.vocab_size
        # MoE routing sends per-expert token counts to the host: not capturable in a CUDA graph
        self.graphable = not model.is_moe

    def session(self, batch: int, max_len: int) -> "ReferenceSession":
        return ReferenceSession(self.model, self.model.new_cache(batch, max_len))


@dataclass
class ReferenceSession:
    model: Any
    cache: Any

    def prefill(self, prompt):
        return self.model(prompt, self.cache, 0).argmax(-1, keepdim=True)  # (B, 1)

    def decode(self, tok, pos: int):
        return self.model(tok, self.cache, pos).argmax(-1, keepdim=True)  # (B, 1)

    @property
    def cache_len(self) -> int:
        return self.cache.length


# --------------------------------------------------------------------------- orchestration


@dataclass(frozen=True)
class Plan:
    """What a run will do, worked out before any weight is built (so bad input fails fast)."""

    predicted: dict[int, ServingPoint]
    calibrated: bool = False  # the profile has measured tables
    too_big: dict[int, str] = field(default_factory=dict)  # batch -> why it is not run
    notes: tuple[str, ...] = ()


def plan_generate(model: ModelSpec, hw: HardwareSpec, scenario: Scenario, batches: tuple[int, ...],
                  settings: GenerateSettings, available: float) -> Plan:
    from gpt_batchprof.units import fmt_bytes

    torch_dtype_of(scenario)
    if settings.engine not in ENGINES:
        raise BatchprofError(f"--engine: unknown value '{settings.engine}' (choose from {', '.join(ENGINES)})")
    if settings.runs < 1 or settings.warmup_runs < 0:
        raise BatchprofError(f"--runs must be >= 1 and --warmup-runs >= 0 (got {settings.runs}, {settings.warmup_runs})")
    report = serving_report(model, hw, scenario, batches)  # checks batches and max_seq_len
    check_fits(model, scenario, settings.device, available)
    predicted = {p.batch: p for p in report.points}
    too_big = {}
    if settings.device == "cpu":  # the kernel's OOM killer does not raise: do not try what cannot fit
        for b, p in predicted.items():
            if p.memory.total_bytes > available:
                too_big[b] = (f"needs {fmt_bytes(p.memory.total_bytes)} (predicted), "
                              f"{fmt_bytes(available)} available: not run")
    notes = []
    if settings.device == "cuda" and settings.cuda_graphs and model.is_moe and settings.engine == "reference":
        notes.append("MoE routing is data-dependent: decode steps run eagerly, not from CUDA graphs")
    if settings.device == "cuda" and settings.cuda_graphs and settings.engine == "hf":
        notes.append("--engine hf runs eagerly (CUDA graphs need transformers' static cache and torch.compile)")
    if settings.device == "cpu":
        notes.append("peak memory on the CPU is the process's peak RSS so far (an upper bound per batch)")
    return Plan(predicted, hw.measured is not None, too_big, tuple(notes))


def iter_generate(model: ModelSpec, scenario: Scenario, batches: tuple[int, ...], settings: GenerateSettings,
                  plan: Plan, engine=None, hf_config=None,
                  on_batch: Callable[[int], None] | None = None) -> Iterator[GenerateRow]:
    """Build the engine once, then measure each batch in turn, yielding its row when done."""
    from gpt_batchprof.measure.bench import _first_line, free_memory, is_oom, torch_threads
    from gpt_batchprof.measure.device import require_torch

    torch = require_torch()
    torch.manual_seed(settings.seed)
    with torch_threads(settings.device, settings.threads):
        with torch.inference_mode():
            engine = engine or make_engine(model, scenario, settings, hf_config)
            for b in batches:
                if on_batch:
                    on_batch(b)
                common = dict(predicted=plan.predicted[b], calibrated=plan.calibrated)
                if b in plan.too_big:
                    yield GenerateRow(b, status="skipped", reason=plan.too_big[b], **common)
                    continue
                try:
                    run, method = measure_batch(engine, b, scenario, settings)
                except Exception as e:  # noqa: BLE001 - out of memory at one batch is a row
                    if not is_oom(e):
                        raise
                    free_memory(settings.device)
                    yield GenerateRow(b, status="oom", reason=f"out of memory on {settings.device} "
                                      f"({_first_line(e)})", **common)
                    continue
                free_memory(settings.device)
                yield GenerateRow(b, run=run, memory_method=method, **common)


def run_generate(model: ModelSpec, hw: HardwareSpec, scenario: Scenario, batches: tuple[int, ...],
                 settings: GenerateSettings, available: float | None = None,
                 engine=None, hf_config=None, on_row: Callable[[GenerateRow, int, int], None] | None = None,
                 on_batch: Callable[[int], None] | None = None) -> GenerateResult:
    """Plan, measure every batch, collect. A KeyboardInterrupt propagates with the finished rows
    attached as ``.partial`` (a GenerateResult with ``complete=False``)."""
    if available is None:
        available = available_memory_bytes(settings.device)
    plan = plan_generate(model, hw, scenario, batches, settings, available)
    rows: list[GenerateRow] = []
    try:
        for row in iter_generate(model, scenario, batches, settings, plan, engine, hf_config, on_batch):
            rows.append(row)
            if on_row:
                on_row(row, len(rows), len(batches))
    except KeyboardInterrupt as e:
        e.partial = GenerateResult(model, hw, scenario, batches, settings, tuple(rows), plan.notes,  # type: ignore[attr-defined]
                                   complete=False)
        raise
    return GenerateResult(model, hw, scenario, batches, settings, tuple(rows), plan.notes)
