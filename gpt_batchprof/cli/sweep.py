"""`gpt-batchprof sweep` and `gpt-batchprof plot`: grids of points, streamed, summarised, drawn."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from gpt_batchprof.cli.common import (
    check_live_options, choice, console, err_console, folder_for, guarded, note, output_for, progress_bar, show,
)

ListOpt = Optional[str]
Opt = typer.Option


@guarded
def sweep_cmd(
    preset: Annotated[Optional[str], Opt("--preset", "-p", help="An article's experiment (see --list-presets).")] = None,
    list_presets: Annotated[bool, Opt("--list-presets", help="Show the presets and exit.")] = False,
    quick: Annotated[bool, Opt("--quick", help="Shrink the preset to CI size (seconds on a small CPU).")] = False,
    config: Annotated[Optional[Path], Opt("--config", "-c", help="A YAML sweep file (fields: workload, models, d_model, hardware, phases, batches, seq_lens, ops, dtypes, attentions, layers, depth, gen_len, tp, pp, ep, micro_batches, preset).")] = None,
    workload: Annotated[Optional[str], Opt("--workload", help="gpt (operators of a GPT step), mlp (seed 002's MLP) or generation (end-to-end per batch).")] = None,
    model: Annotated[ListOpt, Opt("--model", "-m", help="Models, comma list: built-in names or profile files.")] = None,
    d_model: Annotated[ListOpt, Opt("--d-model", "--width", help="Synthetic GPTs given only d_model (n_head d/128, d_ff 4d, GELU); for --workload mlp the widths. Comma list or 256..8192.")] = None,
    layers: Annotated[Optional[int], Opt("--layers", help="Layers of the synthetic GPTs (default 1).")] = None,
    depth: Annotated[Optional[int], Opt("--depth", help="Layers of the mlp workload (default 8).")] = None,
    hardware: Annotated[ListOpt, Opt("--hardware", "-H", help="Hardware profiles, comma list (default: the preset's; with live timing, the one matching the device).")] = None,
    batch: Annotated[ListOpt, Opt("--batch", "-b", help="Batch sizes: comma list and/or power-of-two ranges (1..128).")] = None,
    seq_len: Annotated[ListOpt, Opt("--seq-len", "-s", help="Tokens of context the step works at: the prompt for prefill and generation, the cache for decode. Comma list or range.")] = None,
    phase: Annotated[ListOpt, Opt("--phase", help="prefill, decode or both (comma list).")] = None,
    op: Annotated[ListOpt, Opt("--op", help="Operators or groups, comma list: block-dense, dense, attention, ffn, block, step, or names (qkv_proj, attn_score, ...).")] = None,
    dtype: Annotated[ListOpt, Opt("--dtype", help="Dtypes, comma list (fp32, fp16, bf16, fp8, int8).")] = None,
    attention: Annotated[ListOpt, Opt("--attention", help="unfused and/or fused (comma list).")] = None,
    gen_len: Annotated[Optional[int], Opt("--gen-len", help="generation workload: tokens generated per sequence.")] = None,
    launch: Annotated[Optional[str], Opt("--launch", help="Launch overhead the predictions charge: eager, graphs (CUDA graph replay, GPUs) or auto (graphs on a GPU for analytic sweeps; eager when kernels are timed, since live kernels launch eagerly).")] = None,
    tp: Annotated[Optional[int], Opt("--tp", help="Tensor-parallel GPUs: every point per GPU, collectives included (analytic only).")] = None,
    pp: Annotated[Optional[int], Opt("--pp", help="Pipeline-parallel stages (analytic only).")] = None,
    ep: Annotated[Optional[int], Opt("--ep", help="Expert-parallel groups, MoE models (analytic only).")] = None,
    micro_batches: Annotated[Optional[int], Opt("--micro-batches", help="Pipeline micro-batches per step (with --pp).")] = None,
    mode: Annotated[str, Opt("--mode", help="analytic (roofline), live (time kernels) or both (measured next to predicted).")] = "analytic",
    device: Annotated[str, Opt("--device", help="Where live kernels run: auto, cuda or cpu.")] = "auto",
    warmup_ms: Annotated[float, Opt("--warmup-ms", help="Live: warm-up budget per kernel.")] = 10.0,
    rep_ms: Annotated[float, Opt("--rep-ms", help="Live: timing budget per kernel (at least 5 calls).")] = 50.0,
    threads: Annotated[Optional[int], Opt("--threads", help="Live on CPU: torch threads (default: torch's choice).")] = None,
    output: Annotated[Optional[Path], Opt("--output", "-o", help="Stream every finished point to this .csv or .jsonl file (fsync'd as it goes).")] = None,
    resume: Annotated[bool, Opt("--resume", help="Keep the points already in --output and run only the missing ones.")] = False,
    overwrite: Annotated[bool, Opt("--overwrite", help="Start --output again when it already holds results (without it, or --resume, such a file is refused).")] = False,
    fmt: Annotated[str, Opt("--format", "-f", help="table (summary), csv, json or markdown (every point).")] = "table",
    export: Annotated[Optional[Path], Opt("--export", help="Write the --format output to this file instead of stdout.")] = None,
    plot: Annotated[Optional[Path], Opt("--plot", help="Write PNG plots (time, throughput vs batch; roofline) to this folder.")] = None,
    progress: Annotated[bool, Opt("--progress/--no-progress", help="Progress bar on stderr.")] = True,
) -> None:
    """Run a grid of points: every combination of models, hardware, phases, batch sizes, sequence lengths, operators, dtypes and attention modes.

    Each point is predicted by the roofline model (--mode analytic), timed on the device (--mode live), or both. Points are written to --output as they finish, so an interrupted sweep keeps its work; --resume runs only what is missing. Files are in SI units (time_s, flops, bytes, flops_per_s).

    Presets re-run the articles' experiments: dense-vs-attention, mlp-batching, generation.
    """
    from gpt_batchprof.report.export import FORMATS
    from gpt_batchprof.sweep import grid as g
    from gpt_batchprof.sweep.presets import PRESETS, get_preset

    if list_presets:
        _print_presets(PRESETS)
        return
    choice(fmt, FORMATS, "--format")
    choice(mode, g.MODES, "--mode")
    check_live_options(warmup_ms, rep_ms, threads)
    if resume and output is None:
        raise g.BatchprofError("--resume needs --output FILE (the file to resume)")
    if output is not None:
        from gpt_batchprof.sweep.store import stream_format

        stream_format(output)
        if export is not None and _same_file(export, output):
            raise g.BatchprofError(f"--export {export}: is the --output stream file; choose another file")
    elif overwrite:
        raise g.BatchprofError("--overwrite needs --output FILE (the file to start again)")
    # --export and --plot: checked writable before any work by common.check_output_paths

    file_data = g.load_sweep_file(config) if config is not None else {}
    preset = preset or file_data.get("preset")
    if quick and not preset:
        raise g.BatchprofError("--quick shrinks a preset; give --preset NAME (see --list-presets)")
    spec = get_preset(preset).spec(quick) if preset else g.SweepSpec()
    if file_data:
        spec = g.spec_from_mapping(file_data, str(config), spec)
    spec = _apply_flags(spec, g, workload=workload, model=model, d_model=d_model, layers=layers, depth=depth,
                        hardware=hardware, batch=batch, seq_len=seq_len, phase=phase, op=op, dtype=dtype,
                        attention=attention, gen_len=gen_len, launch=launch, tp=tp, pp=pp, ep=ep,
                        micro_batches=micro_batches)
    if mode != "analytic" and not spec.parallel.is_single:
        raise g.BatchprofError(f"sweep --mode {mode} with --tp/--pp/--ep: live collectives are timed by "
                               "`gpt-batchprof bench --tp N`; use --mode analytic here")

    # analytic: every name and shape checked before the results file is touched
    grid = g.resolve(spec) if mode == "analytic" else None
    writer = None
    if output is not None:
        from gpt_batchprof.sweep.store import StreamWriter

        writer = StreamWriter(output, resume=resume, overwrite=overwrite)
    try:
        timer = None
        if mode != "analytic":
            from gpt_batchprof.sweep.live import LiveTimer

            timer = LiveTimer(device, warmup_s=warmup_ms / 1e3, rep_s=rep_ms / 1e3, threads=threads)
            spec = _match_device(spec, timer, hardware_given=bool(hardware) or "hardware" in file_data,
                                 dtype_given=bool(dtype) or "dtypes" in file_data or "dtype" in file_data)
            grid = g.resolve(spec)

        from gpt_batchprof.sweep.evaluate import Evaluator

        evaluator = Evaluator(grid, mode, timer)
    except BaseException:
        if writer is not None:
            writer.close()
        raise
    outcome = _run(grid, evaluator, writer, progress)
    if timer is not None:
        for op_name, why in timer.unsupported.items():
            note(f"not timed: {op_name}: {why}", style="yellow")

    _render(outcome.rows, spec, fmt, output_for(export, not outcome.interrupted))  # never over a full export
    if output is not None:
        note(f"{outcome.new} new point(s), {outcome.skipped} kept from {output}; {outcome.elapsed_s:.2f} s")
    if plot is not None and outcome.rows:
        _plot(outcome.rows, folder_for(plot, not outcome.interrupted), grid.hardware)  # never over full plots
    if outcome.interrupted:
        note(f"interrupted: {len(outcome.rows)} of {len(grid)} points done"
             + (f", kept in {output} (--resume to finish)" if output else ""), style="yellow")
        raise typer.Exit(130)


def _apply_flags(spec, g, **flags):
    from gpt_batchprof.lists import parse_int_list, parse_name_list

    changes: dict = {}
    if flags["workload"]:
        changes["workload"] = flags["workload"]
    models: tuple[str, ...] = ()
    if flags["model"]:
        models += parse_name_list(flags["model"], "--model")
    if flags["d_model"]:
        models += tuple(f"d{d}" for d in parse_int_list(flags["d_model"], "--d-model"))
    if models:
        changes["models"] = models
    for key, opt in (("hardware", "hardware"), ("op", "ops"), ("dtype", "dtypes"), ("attention", "attentions")):
        if flags[key]:
            changes[opt] = parse_name_list(flags[key], f"--{key}")
    if flags["phase"]:
        phases = parse_name_list(flags["phase"], "--phase")
        changes["phases"] = ("prefill", "decode") if phases == ("both",) else phases
    if flags["batch"]:
        changes["batches"] = parse_int_list(flags["batch"], "--batch")
    if flags["seq_len"]:
        changes["seq_lens"] = parse_int_list(flags["seq_len"], "--seq-len")
    for key in ("layers", "depth", "gen_len", "launch", "tp", "pp", "ep", "micro_batches"):
        if flags[key] is not None:
            changes[key] = flags[key]
    return spec.updated(**changes)


def _match_device(spec, timer, hardware_given: bool, dtype_given: bool):
    """Live timing: predict for the device being timed (unless -H says otherwise); on a CPU
    use fp32 unless --dtype says otherwise (CPUs have no fast fp16 matmul)."""
    from gpt_batchprof.measure.device import datasheet_hardware

    changes: dict = {}
    if not hardware_given:
        changes["hardware"] = (datasheet_hardware(timer.kind),)
    if not dtype_given and timer.kind == "cpu":
        changes["dtypes"] = ("fp32",)
    return spec.updated(**changes)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and a.samefile(b))
    except OSError:
        return False


def _run(grid, evaluator, writer, show_progress):
    """Run the grid with a progress bar; closes ``writer`` (the open results file) at the end."""
    from gpt_batchprof.sweep.run import run_sweep

    try:
        with progress_bar(show_progress, eta=True, transient=False) as bar:
            task = bar.add_task("sweep", total=len(grid))
            return run_sweep(grid, evaluator, writer, advance=lambda n: bar.advance(task, n))
    finally:
        if writer is not None:
            writer.close()


def _render(rows, spec, fmt: str, export: Optional[Path]) -> None:
    from gpt_batchprof.report.render import sweep_views
    from gpt_batchprof.report.sweep_tables import print_summary
    from gpt_batchprof.sweep.results import summarise
    from gpt_batchprof.sweep.store import columns_present

    summary = summarise(rows)
    views = sweep_views(rows, spec, columns_present(rows), summary)
    if fmt != "table":
        print_summary(err_console, summary)
    show(views, fmt, export, width=160)


def _plot(data, folder: Path, hardware=None) -> None:
    from gpt_batchprof.report.plots import plot_all

    for path in plot_all(data, folder, hardware):
        note(f"wrote {path}")


def _print_presets(presets) -> None:
    from gpt_batchprof.report.tables import compact_table

    t = compact_table("Presets (--preset NAME; --quick for a CI-sized run)",
                      [("name", "left"), ("from", "left"), ("points", "right"), ("quick", "right"),
                       ("what it shows", "left")])
    for p in presets.values():
        t.add_row(p.name, p.source, str(p.full.n_points), str(p.quick.n_points), p.description)
    t.columns[-1].no_wrap = False
    console.print(t)


@guarded
def plot_cmd(
    results: Annotated[Path, typer.Argument(help="A saved sweep result: .csv or .jsonl (from -o), or .json (from --format json).")],
    plot: Annotated[Path, Opt("--plot", help="Folder for the PNGs.")] = Path("plots"),
    hardware: Annotated[Optional[str], Opt("--hardware", "-H", help="Hardware profile(s) for the roofline ceilings (default: the rows' hardware).")] = None,
) -> None:
    """Redraw the plots of a saved sweep (time and throughput vs batch, roofline)."""
    from gpt_batchprof.errors import BatchprofError
    from gpt_batchprof.sweep.store import read_columns

    columns = read_columns(results)  # columns, not a dict per row: large files plot in seconds
    if not columns.get("workload"):
        raise BatchprofError(f"{results}: no points in it")
    try:
        _plot(columns, plot, _load_hw(columns["hardware"], hardware))
    except BatchprofError as e:
        raise BatchprofError(f"{results}: {e}" if str(e).startswith("point ") else str(e)) from None


def _load_hw(row_hardware, names: Optional[str]):
    from gpt_batchprof.errors import BatchprofError
    from gpt_batchprof.profiles import load_hardware
    from gpt_batchprof.lists import parse_name_list

    wanted = parse_name_list(names, "--hardware") if names else tuple(dict.fromkeys(row_hardware))
    out = {}
    for n in wanted:
        try:
            out[n] = load_hardware(n)
        except BatchprofError:
            if names:
                raise
            note(f"note: no profile '{n}'; its roofline has no ceilings", style="yellow")
    return out


def register(app: typer.Typer) -> None:
    app.command("sweep")(sweep_cmd)
    app.command("plot")(plot_cmd)
