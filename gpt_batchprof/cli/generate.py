"""`gpt-batchprof generate`: a real generation loop per batch, next to analyze's prediction.

A command of its own rather than ``bench --e2e``: bench times operators one by one (and has
--op / --depth / --cuda-graphs per kernel), generate runs the whole model as a server would;
the two share the device, hardware, dtype and threads options.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gpt_batchprof.cli.common import (
    AttentionOpt, BatchOpt, BenchDtypeOpt, BenchHardwareOpt, DeviceOpt, FormatOpt, GenLenOpt, ModelOpt, OutputOpt,
    PromptLenOpt, ThreadsOpt, choice, guarded, live_device, live_hardware, output_for, parse_int_list, progress_bar,
    render, run_keeping_partial, scenario_from_options,
)

EngineOpt = Annotated[str, typer.Option(
    "--engine", help="reference: the built-in reference GPT (analyze's operators at analyze's shapes). hf: the "
                     "Hugging Face transformers model of the same config (random weights, offline; "
                     "pip install 'gpt-batchprof[hf]').")]


@guarded
def generate_cmd(
    model: ModelOpt = "gpt2",
    hardware: BenchHardwareOpt = "datasheet",
    batch: BatchOpt = "1,4,16",
    prompt_len: PromptLenOpt = 128,
    gen_len: GenLenOpt = 32,
    dtype: BenchDtypeOpt = "auto",
    attention: AttentionOpt = "unfused",
    engine: EngineOpt = "reference",
    device: DeviceOpt = "auto",
    cuda_graphs: Annotated[bool, typer.Option("--cuda-graphs/--no-cuda-graphs", help="On CUDA, replay each decode step from a CUDA graph (captured before the timed run), as serving engines do.")] = True,
    warmup_runs: Annotated[int, typer.Option("--warmup-runs", help="Untimed whole generations before the timed ones, at every batch.")] = 1,
    runs: Annotated[int, typer.Option("--runs", help="Timed generations per batch; the one with the median end-to-end time is reported.")] = 1,
    threads: ThreadsOpt = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the random weights and prompts.")] = 0,
    fmt: FormatOpt = "table",
    output: OutputOpt = None,
) -> None:
    """Generate with the whole model at each batch size and compare TTFT, inter-token latency, end-to-end time, tokens/s and peak memory with analyze's prediction.

    Per batch: one prefill of --prompt-len random tokens (TTFT), then --gen-len - 1 greedy decode steps, each adding a token to a KV cache preallocated for the whole generation. ITL is the median (and p90) over the decode steps; tokens/s = batch x gen-len / e2e, TTFT included. Weights are random, in one float dtype (fp32 on the CPU by default, fp16 on CUDA). On CUDA the decode steps replay from CUDA graphs and are timed with events; peak memory is torch's peak allocation (on the CPU, the process's peak RSS).

    Exit codes: 0 when the run completed, 2 for bad input or a model that cannot fit (the memory it needs is named), 130 when interrupted (finished batches are still printed). A batch that runs out of memory is a row, not an error.
    """
    from gpt_batchprof.measure.device import device_name, torch_version
    from gpt_batchprof.measure.generate import ENGINES, GenerateSettings, run_generate
    from gpt_batchprof.profiles import load_model
    from gpt_batchprof.report.export import FORMATS

    choice(fmt, FORMATS, "--format")
    choice(engine, ENGINES, "--engine")
    # --threads, --runs, --warmup-runs: bounded by common.LIMITS before this runs
    batches = parse_int_list(batch)
    spec = load_model(model)
    if engine == "hf":
        from gpt_batchprof.measure.hf import check_config, config_dict, require_transformers

        require_transformers()
        check_config(config_dict(spec), model)  # an architecture and values transformers has, before any weight
    dev, dtype = live_device(device, dtype)
    # decode steps from CUDA graphs only where they are captured (reference engine, not MoE): predict the same
    graphed = dev == "cuda" and cuda_graphs and engine == "reference" and not spec.is_moe
    scenario = scenario_from_options(prompt_len, None, gen_len, dtype, None, None, attention,
                                     "graphs" if graphed else "eager")
    n_threads, hw = live_hardware(hardware, dev, threads)
    settings = GenerateSettings(dev, device_name(dev), torch_version(), n_threads, engine, cuda_graphs,
                                warmup_runs, runs, seed)
    result = _run_with_progress(run_generate, spec, hw, scenario, batches, settings)
    _render(result, fmt, output_for(output, result.complete))  # a partial run never replaces a file
    if not result.complete:
        raise typer.Exit(130)


def _run_with_progress(run_generate, spec, hw, scenario, batches, settings):
    """A progress bar over batches on stderr; Ctrl-C returns the batches finished so far."""
    progress = progress_bar()
    task = progress.add_task(f"building {spec.name}", total=len(batches))

    def on_batch(b: int) -> None:
        progress.update(task, description=f"generating at batch {b}")

    def on_row(row, done: int, total: int) -> None:
        progress.update(task, completed=done)

    return run_keeping_partial(
        progress, lambda: run_generate(spec, hw, scenario, batches, settings, on_row=on_row, on_batch=on_batch),
        "batches")


def _render(result, fmt: str, output: Path | None) -> None:
    from gpt_batchprof.report import export, generate_tables
    from gpt_batchprof.report.rows import generate_dict

    title = f"{result.model.name}: generation on {result.settings.device_name}"
    render(fmt, output, doc=lambda: generate_dict(result), rows=lambda: generate_dict(result)["rows"],
           markdown=lambda: export.to_markdown(generate_dict(result)["rows"], title=title),
           table=lambda out: generate_tables.print_generate(out, result))


def register(app: typer.Typer) -> None:
    app.command("generate")(generate_cmd)
