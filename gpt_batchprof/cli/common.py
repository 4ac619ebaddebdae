"""What the commands share: options, parsing of lists, error handling and output."""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Annotated, Any, Callable, Optional, TypeVar

import typer
from rich.console import Console

from gpt_batchprof.errors import BatchprofError
from gpt_batchprof.lists import parse_int_list  # noqa: F401  (re-exported for the commands)

console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])

CAUSAL_HELP = (
    "Causal prefill attention is counted as each kernel computes it: unfused QK^T and x V "
    "compute the full square (the mask comes after); fused attention skips masked tiles, "
    "so it counts only the visible query-key pairs (about half)."
)

DEFAULT_BATCHES = "1,2,4,8,16,32,64,128,256"

ModelOpt = Annotated[str, typer.Option("--model", "-m", help="Built-in model name, model YAML, or Hugging Face config.json.")]
HardwareOpt = Annotated[str, typer.Option("--hardware", "-H", help="Built-in hardware name or hardware YAML.")]
PhaseOpt = Annotated[str, typer.Option("--phase", help="prefill, decode or both.")]
BatchOpt = Annotated[str, typer.Option("--batch", "-b", help="Batch sizes: comma list (1,2,8) and/or power-of-two ranges (1..256).")]
PromptLenOpt = Annotated[int, typer.Option("--prompt-len", help="Prompt tokens per sequence (prefill length).")]
ContextLenOpt = Annotated[Optional[int], typer.Option("--context-len", help="Cached tokens for decode steps and ITL (default: prompt-len + gen-len/2).")]
GenLenOpt = Annotated[int, typer.Option("--gen-len", help="Tokens generated per sequence.")]
DtypeOpt = Annotated[str, typer.Option("--dtype", help="Dtype of activations (and of weights and KV cache unless overridden): fp32, fp16, bf16, fp8, int8.")]
WeightDtypeOpt = Annotated[Optional[str], typer.Option("--weight-dtype", help="Weight dtype override (also int4).")]
KvDtypeOpt = Annotated[Optional[str], typer.Option("--kv-dtype", help="KV-cache dtype override.")]
AttentionOpt = Annotated[str, typer.Option("--attention", help="unfused (QK^T, softmax, x V) or fused (FlashAttention-style). " + CAUSAL_HELP)]
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
    from rich.markup import escape

    # escaped: messages quote user input and shell text such as 'gpt-batchprof[hf]'
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def guarded(fn: F) -> F:
    """Domain errors become one line on stderr and exit code 2; Ctrl-C exits 130."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except BatchprofError as e:
            fail(str(e))
        except KeyboardInterrupt:
            err_console.print("interrupted", style="yellow")
            raise typer.Exit(130)

    return wrapper  # type: ignore[return-value]


def emit(text: str, output: Path | None) -> None:
    """Machine-readable output to a file, or plain to stdout (no Rich markup or wrapping)."""
    if output is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text, encoding="utf-8")
    except OSError as e:
        raise BatchprofError(f"{output}: cannot write ({e.strerror or e})") from None
    err_console.print(f"wrote {output}", style="dim", highlight=False)


def progress_bar():
    """The transient progress bar on stderr that long commands share."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=err_console, transient=True)


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
    (to the terminal, or as plain text to --output)."""
    from gpt_batchprof.report import export

    if fmt == "json":
        emit(export.to_json(doc()), output)
    elif fmt == "csv":
        emit(export.to_csv(rows()), output)
    elif fmt == "markdown":
        emit(markdown(), output)
    elif output is None:
        table(console)
    else:
        with open(output, "w", encoding="utf-8") as fh:
            table(Console(file=fh, width=160, color_system=None))
