"""What the commands share: options, parsing of lists, error handling and output."""

from __future__ import annotations

import errno
import functools
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Callable, Optional, TypeVar

import typer
from rich.console import Console
from rich.text import Text

from gpt_batchprof.errors import BatchprofError
from gpt_batchprof.files import write_atomic
from gpt_batchprof.lists import MAX_INT, parse_int_list  # noqa: F401  (re-exported for the commands)

class _StdoutConsole(Console):
    def on_broken_pipe(self) -> None:
        """Rich exits 1 silently on a closed stdout; make it the one-line exit 2 of any bad output."""
        self.quiet = True
        raise BrokenPipeError(errno.EPIPE, "broken pipe")


console = _StdoutConsole()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])

CAUSAL_HELP = (
    "Causal prefill attention is counted as each kernel computes it: unfused QK^T and x V "
    "compute the full square (the mask comes after); fused attention skips masked tiles, "
    "so it counts only the visible query-key pairs (about half)."
)

MAX_BUDGET_MS = 60_000.0  # a minute of warm-up or timing per kernel is surely a typo
MAX_THREADS = 4096
MAX_REQUESTS = 10_000_000  # simulate serves ~10k requests/s on one core: 10M is ~20 minutes


@dataclass(frozen=True)
class Limit:
    """What one numeric option may be: ``low`` (None: the core checks the lower bound with its own
    message) up to ``high``, and why the ceiling is where it is."""

    low: float | None
    high: float
    why: str


# The one table of option limits, by parameter name, for every command that has the option
# (applied by :func:`check_numbers` before any work). Lower bounds that the core already
# checks with a message of its own are left to it (low=None).
LIMITS: dict[str, Limit] = {
    "threads": Limit(1, MAX_THREADS, "more threads than any machine has"),
    "runs": Limit(None, 1000, "a median over 1000 generations is already exact"),
    "warmup_runs": Limit(None, 1000, "a median over 1000 generations is already exact"),
    "requests": Limit(None, MAX_REQUESTS, "about 20 minutes of simulation; percentiles settle long before"),
    "concurrency": Limit(None, 1_000_000, "a million clients"),
    "duration": Limit(None, 1e6, "11.6 days of simulated time"),
    "rate_points": Limit(None, 1000, "each point is a whole simulation"),
    "tp": Limit(None, 1024, "more GPUs than one model instance spans"),
    "pp": Limit(None, 1024, "more stages than any model has layers"),
    "ep": Limit(None, 1024, "more expert groups than any model has experts"),
    "micro_batches": Limit(None, 65536, "a pipeline bubble is negligible long before"),
    "layers": Limit(None, 100_000, "more layers than any model has"),
    "depth": Limit(None, 100_000, "more layers than any model has"),
    "warmup_ms": Limit(None, MAX_BUDGET_MS, "a minute per kernel"),
    "rep_ms": Limit(None, MAX_BUDGET_MS, "a minute per kernel"),
}

DEFAULT_BATCHES = "1,2,4,8,16,32,64,128,256"

ModelOpt = Annotated[str, typer.Option("--model", "-m", help="Built-in model name, model YAML, or Hugging Face config.json.")]
HardwareOpt = Annotated[str, typer.Option("--hardware", "-H", help="Built-in hardware name, hardware YAML, or auto (calibrate this machine once, cached, and predict from its measured tables; needs torch).")]
PhaseOpt = Annotated[str, typer.Option("--phase", help="prefill, decode or both.")]
BatchOpt = Annotated[str, typer.Option("--batch", "-b", help="Batch sizes: comma list (1,2,8) and/or power-of-two ranges (1..256).")]
PromptLenOpt = Annotated[int, typer.Option("--prompt-len", help="Prompt tokens per sequence (prefill length).")]
ContextLenOpt = Annotated[Optional[int], typer.Option("--context-len", help="Cached tokens for decode steps and ITL (default: prompt-len + gen-len/2).")]
GenLenOpt = Annotated[int, typer.Option("--gen-len", help="Tokens generated per sequence.")]
DtypeOpt = Annotated[str, typer.Option("--dtype", help="Dtype of activations (and of weights and KV cache unless overridden): fp32, fp16, bf16, fp8, int8.")]
WeightDtypeOpt = Annotated[Optional[str], typer.Option("--weight-dtype", help="Weight dtype override (also int4, mxfp4, nvfp4).")]
ExpertDtypeOpt = Annotated[Optional[str], typer.Option("--expert-dtype", help="Dtype of the routed experts' weights when a checkpoint stores them apart (gpt-oss: mxfp4).")]
KvDtypeOpt = Annotated[Optional[str], typer.Option("--kv-dtype", help="KV-cache dtype override.")]
AttentionOpt = Annotated[str, typer.Option("--attention", help="unfused (QK^T, softmax, x V), fused (FlashAttention-style), or auto (analyze, simulate: fused where the hardware profile's tables were measured on a serving engine's fused attention kernels, e.g. the built-in GPU profiles; else unfused). " + CAUSAL_HELP)]
TpOpt = Annotated[int, typer.Option("--tp", help="Tensor-parallel GPUs: heads, FFN columns and vocabulary split Megatron-style; two all-reduces per layer.")]
PpOpt = Annotated[int, typer.Option("--pp", help="Pipeline-parallel stages (layers split; activations sent between stages).")]
EpOpt = Annotated[int, typer.Option("--ep", help="Expert-parallel groups (MoE only): experts split, attention data-parallel, all-to-all dispatch and combine.")]
MicroBatchesOpt = Annotated[int, typer.Option("--micro-batches", help="Pipeline micro-batches per step (with --pp): step = (m + pp - 1) stage-times, bubble (pp - 1)/(m + pp - 1).")]
LaunchOpt = Annotated[str, typer.Option("--launch", help="How kernels are launched, hence the per-kernel overhead charged: eager (every launch's overhead in series, as a plain PyTorch loop or a CPU runs), graphs (a step replayed from a CUDA graph: only the small gap between kernels; GPUs only), or auto (default: graphs on a GPU, as serving engines run decode steps; eager on a CPU).")]
FormatOpt = Annotated[str, typer.Option("--format", "-f", help="table, json, csv or markdown.")]
OutputOpt = Annotated[Optional[Path], typer.Option("--output", "-o", help="Write the --format output to this file instead of stdout.")]


def parallel_of(tp: int, pp: int, ep: int, micro_batches: int = 1):
    """The --tp/--pp/--ep/--micro-batches layout (validated against a model later)."""
    from gpt_batchprof.analytic.parallel import Parallelism

    return Parallelism(tp=tp, pp=pp, ep=ep, micro_batches=micro_batches)


def choice(value: str, allowed: tuple[str, ...], option: str) -> str:
    if value not in allowed:
        raise BatchprofError(f"{option}: unknown value '{value}' (choose from {', '.join(allowed)})")
    return value


def phases_of(phase: str) -> tuple[str, ...]:
    choice(phase, ("prefill", "decode", "both"), "--phase")
    return ("prefill", "decode") if phase == "both" else (phase,)


def fail(message: str, code: int = 2) -> None:
    """One line on stderr, printed as typed (user text is never read as Rich markup)."""
    err_console.print(Text.assemble(("error:", "bold red"), " ", message.replace("\n", " ")),
                      highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def note(message: str, style: str = "dim") -> None:
    """A status line on stderr ("wrote FILE"), user text printed as typed."""
    err_console.print(Text(message, style=style), highlight=False, soft_wrap=True)


def _silence_stdout() -> None:
    """After a closed pipe or a full disk on stdout: point it at /dev/null so the interpreter's
    final flush does not print a second error (what Python's docs advise for SIGPIPE)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass  # not a real file descriptor (tests)


def guarded(fn: F) -> F:
    """Domain errors become one line on stderr and exit code 2; Ctrl-C exits 130; a closed
    stdout or a full disk is one line and exit 2, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            check_numbers(kwargs)
            check_stdout_open(kwargs)
            check_output_paths(kwargs)
            return fn(*args, **kwargs)
        except BatchprofError as e:
            fail(str(e))
        except KeyboardInterrupt:
            err_console.print("interrupted", style="yellow")
            raise typer.Exit(130)
        except BrokenPipeError:
            _silence_stdout()
            fail("stdout: closed before all output was written (broken pipe)")
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EIO, errno.EDQUOT, errno.EFBIG):
                _silence_stdout()
                fail(f"{e.filename or 'stdout'}: cannot write ({e.strerror or e})")
            raise

    return wrapper  # type: ignore[return-value]


def check_stdout_open(options: dict[str, Any]) -> None:
    """A command whose result goes to stdout (no -o / --export given) is refused before any work
    when stdout was closed before it started (``>&-``): nothing it computed could be shown."""
    from gpt_batchprof.cli.streams import ClosedStdout

    if isinstance(sys.stdout, ClosedStdout) and options.get("output") is None and options.get("export") is None:
        raise BrokenPipeError(errno.EPIPE, "stdout is closed")


OUTPUT_FILES = {"output": "--output", "export": "--export"}  # the parameters every command writes a file to
OUTPUT_FOLDERS = {"plot": "--plot"}


def check_output_paths(options: dict[str, Any]) -> None:
    """Every output file and folder a command was given, checked writable before any work, so
    minutes of measuring never end in "cannot write" (the writer still writes all or nothing)."""
    from gpt_batchprof.files import check_writable_file, check_writable_folder

    for name, opt in OUTPUT_FILES.items():
        if isinstance(options.get(name), Path):
            check_writable_file(options[name], opt)
    for name, opt in OUTPUT_FOLDERS.items():
        if isinstance(options.get(name), Path):
            check_writable_folder(options[name], opt)


def check_numbers(options: dict[str, Any]) -> None:
    """Every numeric option of every command: floats finite (no nan / inf), integers within
    2^31 - 1 (no batch, length, width or thread count beyond that is meant). Option names are
    the parameter names (prompt_len -> --prompt-len)."""
    for name, v in options.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        opt = "--" + name.replace("_", "-")
        if isinstance(v, float):
            check_finite(v, opt)
        elif abs(v) > MAX_INT:
            shown = str(v) if abs(v) < 10**30 else f"a {len(str(abs(v)))}-digit number"
            raise BatchprofError(f"{opt}: must be <= {MAX_INT} (2^31 - 1), got {shown}")
        limit = LIMITS.get(name)
        if limit is None:
            continue
        if limit.low is not None and not limit.low <= v <= limit.high:
            raise BatchprofError(f"{opt}: must be between {_num(limit.low)} and {_num(limit.high)}, got {_num(v)}")
        if v > limit.high:
            raise BatchprofError(f"{opt}: at most {_num(limit.high)} ({limit.why}), got {_num(v)}")


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else f"{x:g}"


def check_finite(value: float | None, option: str) -> None:
    if value is not None and not math.isfinite(value):
        raise BatchprofError(f"{option}: must be a finite number, got {value}")


def check_live_options(warmup_ms: float, rep_ms: float, threads: int | None) -> None:
    """The timing options of live runs, checked the same way for bench and sweep --mode live."""
    check_finite(warmup_ms, "--warmup-ms")
    check_finite(rep_ms, "--rep-ms")
    if warmup_ms < 0:
        raise BatchprofError(f"--warmup-ms: must be >= 0, got {warmup_ms:g}")
    if rep_ms <= 0:
        raise BatchprofError(f"--rep-ms: must be > 0, got {rep_ms:g}")
    check_numbers({"warmup_ms": warmup_ms, "rep_ms": rep_ms, "threads": threads})  # the ceilings (LIMITS)


def write_stdout(text: str) -> None:
    """Machine-readable text to stdout, plain (no Rich markup or wrapping)."""
    sys.stdout.write(text)
    sys.stdout.flush()


def emit(text: str, output: Path | None) -> None:
    """Machine-readable output to a file (written whole or not at all), or plain to stdout."""
    if output is None:
        write_stdout(text)
        return
    write_atomic(output, text)
    note(f"wrote {output}")


def show(views: Any, fmt: str, output: Path | None, width: int = 120) -> None:
    """Render a result (report.render.Views) in ``fmt``: Rich tables straight to the terminal,
    everything else (and tables into a file) through :func:`emit`."""
    from gpt_batchprof.report.render import render

    if fmt == "table" and output is None and console.is_terminal:
        views.table(console)
        return
    # piped tables: plain text as wide as the widest table needs up to ``width`` (Rich would cut
    # them at 80 columns, ellipsising numbers)
    emit(render(views, fmt, width), output)


def load_hardware_or_auto(ref: str, device: str = "auto", threads: int | None = None):
    """The --hardware profile: a built-in name or YAML, or ``auto``: this machine calibrated once
    (cached by ``measure.calibrate.cached_hardware``), so predictions come from its measured tables."""
    if ref != "auto":
        from gpt_batchprof.profiles import load_hardware

        return load_hardware(ref)
    from gpt_batchprof.measure.calibrate import cached_hardware
    from gpt_batchprof.measure.device import resolve_device

    dev = resolve_device(device)
    with err_console.status(f"calibrating {dev} (once; cached)"):
        return cached_hardware(dev, threads)


def progress_bar(show: bool = True, *, eta: bool = False, transient: bool = True):
    """The progress bar on stderr that every long command uses (the one place one is built):
    each task's description, the bar, done/total and the time elapsed; ``eta``: the time
    remaining too; ``transient``: gone once done; ``show=False``: a bar that draws nothing."""
    from rich.progress import (
        BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn,
    )

    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn()]
    if eta:
        columns += [TextColumn("ETA"), TimeRemainingColumn()]
    return Progress(*columns, TimeElapsedColumn(), console=err_console, transient=transient, disable=not show)


def partial_path(output: Path) -> Path:
    """Where an incomplete result goes when ``output`` already holds a file: beside it, with
    ``.partial`` before the suffix (gen.json -> gen.partial.json)."""
    return output.with_name(f"{output.stem}.partial{output.suffix}")


def output_for(output: Path | None, complete: bool) -> Path | None:
    """The file a result is written to: ``output``, except that an interrupted (incomplete) run
    never replaces a file already there (it may be a complete result); the partial result then
    goes beside it (:func:`partial_path`), and a line says so."""
    if complete or output is None or not output.exists() or not output.is_file():
        return output
    beside = partial_path(output)
    note(f"incomplete run: kept {output} as it was; the finished part goes to {beside}", style="yellow")
    return beside


def folder_for(folder: Path | None, complete: bool) -> Path | None:
    """:func:`output_for` for an output folder (``--plot``): an incomplete run's plots go to
    ``FOLDER.partial`` when ``folder`` already holds files, so earlier plots are kept."""
    if complete or folder is None or not folder.is_dir() or not any(folder.iterdir()):
        return folder
    beside = folder.with_name(folder.name + ".partial")
    note(f"incomplete run: kept {folder} as it was; its plots go to {beside}", style="yellow")
    return beside


def run_keeping_partial(progress, run: Callable[[], Any], what: str) -> Any:
    """``run()`` under ``progress``; on Ctrl-C, the partial result the core attached to the
    KeyboardInterrupt (``.partial``, with ``.rows``), so finished rows are still reported."""
    try:
        with progress:
            return run()
    except KeyboardInterrupt as e:
        partial = getattr(e, "partial", None)
        if partial is None:
            raise
        err_console.print(f"interrupted after {len(partial.rows)} {what}", style="yellow")
        return partial


def render(fmt: str, output: Path | None, *, doc: Callable[[], Any], rows: Callable[[], list],
           markdown: Callable[[], str], table: Callable[[Console], None]) -> None:
    """One result in the chosen --format: JSON document, CSV rows, Markdown, or Rich tables
    (to the terminal, or as plain text to --output), through the one renderer and writer."""
    from gpt_batchprof.report import export
    from gpt_batchprof.report.render import Views

    show(Views(json=doc, csv=lambda: export.to_csv(rows()), markdown=markdown, table=table), fmt, output,
         width=160)


SpeculateOpt = Annotated[int, typer.Option("--speculate", help="Speculative decoding: tokens the draft proposes per step (0: off); needs --draft.")]
AcceptanceOpt = Annotated[float, typer.Option("--acceptance", help="Probability that a drafted token is accepted (0..1); tokens per verify step (1 - a^(k+1)) / (1 - a).")]
DraftOpt = Annotated[Optional[str], typer.Option("--draft", help="Draft model for --speculate (a model name, YAML or config.json), or mtp: multi-token-prediction heads, one layer of the target.")]


def speculation_of(k: int, acceptance: float, draft: "str | None", model):
    """The speculative-decoding setting of --speculate/--acceptance/--draft (None: off)."""
    from gpt_batchprof.errors import BatchprofError

    if not k:
        if draft is not None:
            raise BatchprofError("--draft needs --speculate K (tokens drafted per step)")
        return None
    if draft is None:
        raise BatchprofError("--speculate needs --draft MODEL (a smaller model) or --draft mtp")
    from gpt_batchprof.analytic.speculative import MTP, Speculation, mtp_draft
    from gpt_batchprof.profiles import load_model

    return Speculation(k, acceptance, mtp_draft(model) if draft == MTP else load_model(draft))


def scenario_from_options(prompt_len, context_len, gen_len, dtype, weight_dtype, kv_dtype, attention, launch="auto",
                          expert_dtype=None, mla="auto", model=None):
    """The scenario of the options; with ``model`` (analytic commands) weights default to the format its
    checkpoint stores (live commands time kernels at --dtype and leave ``model`` out)."""
    from gpt_batchprof.analytic import ATTENTION_MODES, LAUNCH_MODES, Dtypes, Scenario
    from gpt_batchprof.analytic.gpt import MLA_FORMS

    choice(attention, ("auto",) + ATTENTION_MODES, "--attention")
    choice(launch, ("auto",) + LAUNCH_MODES, "--launch")
    choice(mla, ("auto",) + MLA_FORMS, "--mla-form")
    return Scenario(prompt_len=prompt_len, gen_len=gen_len, context_len=context_len,
                    dtypes=(Dtypes.of(dtype, weight_dtype, kv_dtype, expert_dtype) if model is None
                            else Dtypes.for_model(model, dtype, weight_dtype, kv_dtype, expert_dtype)),
                    attention=attention, launch=launch,
                    mla=mla)


# --------------------------------------------------------------------------- the live commands (bench, generate)

DeviceOpt = Annotated[str, typer.Option("--device", help="cuda, cpu, or auto (CUDA when present, else the CPU).")]
BenchHardwareOpt = Annotated[str, typer.Option(
    "--hardware", "-H",
    help="Profile the predictions use. 'datasheet' (default): the built-in profile matching this GPU "
         "(by torch.cuda.get_device_name), or cpu-generic on the CPU. 'auto': calibrate this device first, "
         "ceilings and efficiency tables (about 3 min on a 2-core CPU; cached in ~/.cache/gpt-batchprof/, keyed by "
         "device name and torch version), and predict from the tables. Or any built-in name "
         "or hardware YAML.")]
BenchDtypeOpt = Annotated[str, typer.Option(
    "--dtype", help="Activation dtype (and weights / KV unless overridden): fp32, fp16, bf16, fp8, int8, or auto "
                    "(fp16 on CUDA, fp32 on the CPU, where fp16 matmuls are emulated and very slow). Dtypes the "
                    "device cannot run are reported as skipped rows, not errors.")]
ThreadsOpt = Annotated[Optional[int], typer.Option("--threads", help="CPU threads (fixed for the whole run; default: torch's).")]


def live_device(device: str, dtype: str) -> tuple[str, str]:
    """The device to run on (torch installed, CUDA when asked for) and --dtype auto resolved for it."""
    from gpt_batchprof.measure.device import resolve_device

    dev = resolve_device(device)
    if dtype == "auto":
        dtype = "fp16" if dev == "cuda" else "fp32"
    return dev, dtype


def live_hardware(ref: str, dev: str, threads: int | None):
    """Fix the thread count for the whole run, then load (or calibrate) the --hardware profile."""
    import torch

    n_threads = threads or torch.get_num_threads()
    torch.set_num_threads(n_threads)
    return n_threads, _live_profile(ref, dev, n_threads)


def _live_profile(ref: str, device: str, threads: int | None):
    from gpt_batchprof.measure.device import datasheet_hardware
    from gpt_batchprof.profiles import load_hardware

    if ref == "datasheet":
        return load_hardware(datasheet_hardware(device))
    return load_hardware_or_auto(ref, device, threads)
