"""`gpt-batchprof bench` and `gpt-batchprof calibrate`: live kernels next to the roofline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from gpt_batchprof.cli.common import (
    AttentionOpt, BatchOpt, BenchDtypeOpt, BenchHardwareOpt, ContextLenOpt, DeviceOpt, EpOpt, FormatOpt, GenLenOpt,
    KvDtypeOpt, MicroBatchesOpt, ModelOpt, OutputOpt, PhaseOpt, PpOpt, PromptLenOpt, ThreadsOpt, TpOpt, WeightDtypeOpt,
    check_live_options, choice, console, emit, err_console, guarded, live_device, live_hardware, output_for,
    parallel_of, parse_int_list, phases_of, progress_bar, render, run_keeping_partial, scenario_from_options,
)
from gpt_batchprof.errors import BatchprofError

BENCH_BATCHES = "1,4,16,64"


def _op_list(text: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in text.split(",") if p.strip())


@guarded
def bench_cmd(
    model: ModelOpt = "gpt2",
    hardware: BenchHardwareOpt = "datasheet",
    phase: PhaseOpt = "both",
    batch: BatchOpt = BENCH_BATCHES,
    prompt_len: PromptLenOpt = 128,
    context_len: ContextLenOpt = None,
    gen_len: GenLenOpt = 128,
    dtype: BenchDtypeOpt = "auto",
    weight_dtype: WeightDtypeOpt = None,
    kv_dtype: KvDtypeOpt = None,
    attention: AttentionOpt = "unfused",
    device: DeviceOpt = "auto",
    tp: TpOpt = 1,
    pp: PpOpt = 1,
    ep: EpOpt = 1,
    micro_batches: MicroBatchesOpt = 1,
    op: Annotated[str, typer.Option("--op", help="Operators to time, comma-separated: any operator name (qkv_proj, attn_score, ...), 'block' (one whole transformer block, all its kernels back to back; decode reads a KV cache of context-len), or 'mlp' (a plain MLP of --depth x --width at each batch: seed 002's experiment). Default: every operator of the model.")] = "",
    depth: Annotated[int, typer.Option("--depth", help="Layers of the --op mlp network.")] = 8,
    width: Annotated[int, typer.Option("--width", help="Width of the --op mlp network.")] = 1024,
    cuda_graphs: Annotated[bool, typer.Option("--cuda-graphs", help="Replay each kernel from a CUDA graph so short decode kernels are not measured as CPU launch overhead.")] = False,
    warmup_ms: Annotated[float, typer.Option("--warmup-ms", help="Warm-up time budget per operator (ms).")] = 25.0,
    rep_ms: Annotated[float, typer.Option("--rep-ms", help="Timed-repetition budget per operator (ms); at least 5 calls are timed.")] = 100.0,
    threads: ThreadsOpt = None,
    min_efficiency: Annotated[Optional[float], typer.Option("--min-efficiency", help="Exit 1 when any timed operator reaches less than this share of its roofline prediction (predicted/measured, 0 < X <= 1), naming the offenders on stderr.")] = None,
    fmt: FormatOpt = "table",
    output: OutputOpt = None,
) -> None:
    """Time every operator `analyze` predicts, on this device, at exactly the same shapes.

    Each row shows the measured median (totalled over layers) and its IQR next to the roofline prediction, measured/predicted, the share of the roofline reached (predicted/measured), and the achieved FLOP/s and bytes/s. Timing: CUDA events with the L2 flushed before each call (or a monotonic clock on the CPU, threads fixed), warm-up and repetitions as time budgets, input copies rotated so caches do not flatter small shapes. Noisy rows (IQR/median > 10%) carry a warning. Rows that run out of memory or use a dtype the device cannot run are reported, not fatal.

    With --tp/--pp/--ep: one GPU's sharded operators are timed here, and the collectives (all-reduce, all-to-all, send/recv) at the model's exact message sizes across N processes through torch.distributed (gloo on the CPU, NCCL on CUDA, which needs N GPUs); see docs/parallel.md.

    Exit codes: 0 when the run completed, 1 with --min-efficiency and an operator below it, 2 for bad input (or --device cuda without CUDA), 130 when interrupted (finished rows are still printed).
    """
    from gpt_batchprof.measure.bench import BenchSettings, check_ops, run_bench
    from gpt_batchprof.measure.device import device_name, torch_version
    from gpt_batchprof.profiles import load_model
    from gpt_batchprof.report.export import FORMATS

    choice(fmt, FORMATS, "--format")
    if min_efficiency is not None and not 0 < min_efficiency <= 1:
        raise BatchprofError(f"--min-efficiency: must be in (0, 1], got {min_efficiency}")
    check_live_options(warmup_ms, rep_ms, threads)
    if depth < 1 or width < 1:
        raise BatchprofError(f"--depth and --width must be >= 1 (got {depth}, {width})")
    ops = check_ops(_op_list(op))
    phases, batches = phases_of(phase), parse_int_list(batch)
    parallel = parallel_of(tp, pp, ep, micro_batches)
    spec = load_model(model)
    parallel.check(spec)
    dev, dtype = live_device(device, dtype)
    from gpt_batchprof.analytic.ops import COLLECTIVE_OPS

    if not parallel.is_single and (not ops or set(ops) & set(COLLECTIVE_OPS)):
        from gpt_batchprof.measure.distributed import check_world

        check_world(dev, max(parallel.tp, parallel.ep, 2 if parallel.pp > 1 else 1))
    scenario = scenario_from_options(prompt_len, context_len, gen_len, dtype, weight_dtype, kv_dtype, attention,
                                     "graphs" if cuda_graphs else "eager")
    scenario.check_fits_model(spec)
    n_threads, hw = live_hardware(hardware, dev, threads)
    settings = BenchSettings(dev, device_name(dev), torch_version(), n_threads, cuda_graphs,
                             warmup_ms * 1e-3, rep_ms * 1e-3, ops, depth, width)
    parallel.check(spec, hw)
    result = _run_with_progress(run_bench, spec, hw, scenario, phases, batches, settings, parallel)
    _render(result, fmt, output_for(output, result.complete))  # a partial run never replaces a file
    if not result.complete:
        raise typer.Exit(130)
    if min_efficiency is not None:
        low = result.below(min_efficiency)
        if low:
            names = ", ".join(f"{r.cost.phase} b={r.cost.batch} {r.cost.op} ({100 * r.roofline_share:.0f}%)" for r in low)
            err_console.print(f"below --min-efficiency {min_efficiency:g} of the roofline: {names}",
                              style="red", highlight=False, soft_wrap=True)
            raise typer.Exit(1)


def _run_with_progress(run_bench, spec, hw, scenario, phases, batches, settings, parallel):
    """Run with a transient progress bar on stderr; Ctrl-C returns the rows finished so far."""
    progress = progress_bar()
    task = progress.add_task("bench", total=None)

    def on_row(row, done: int, total: int) -> None:
        c = row.cost
        progress.update(task, completed=done, total=total, description=f"{c.phase} b={c.batch} {c.op}")

    return run_keeping_partial(
        progress, lambda: run_bench(spec, hw, scenario, phases, batches, settings, on_row=on_row, parallel=parallel),
        "rows")


def _render(result, fmt: str, output: Path | None) -> None:
    from gpt_batchprof.report import bench_tables
    from gpt_batchprof.report.rows import bench_dict, bench_row_dict

    render(fmt, output, doc=lambda: bench_dict(result), rows=lambda: [bench_row_dict(r) for r in result.rows],
           markdown=lambda: bench_tables.bench_markdown(result),
           table=lambda out: bench_tables.print_bench(out, result))


@guarded
def calibrate_cmd(
    device: DeviceOpt = "auto",
    hardware: Annotated[Optional[str], typer.Option("--hardware", "-H", help="Datasheet profile to compare with (built-in name or YAML): adds measured/datasheet columns.")] = None,
    quick: Annotated[bool, typer.Option("--quick", help="Smaller grids and budgets (under 30 s on a 2-core CPU; rougher figures).")] = False,
    tables: Annotated[bool, typer.Option("--tables/--no-tables", help="Also measure the efficiency tables (the `measured:` section: achieved FLOP/s and bandwidth over log-spaced grids of shapes) that predictions interpolate. --no-tables: the three ceilings only.")] = True,
    force: Annotated[bool, typer.Option("--force", help="Write the tables even when the machine looks busy (a table whose cells stay out of line with their neighbours after re-measuring, or reference kernels > 20% apart between start and end); the profile then carries a warning.")] = False,
    threads: Annotated[Optional[int], typer.Option("--threads", help="CPU threads (default on the CPU: the cores actually idle now, from /proc/stat: on a shared machine, threads competing with another process for a core stall each other).")] = None,
    tp: Annotated[int, typer.Option("--tp", help="Also measure the interconnect: all-reduce across this many processes (gloo on the CPU, NCCL over this many GPUs) from 4 KiB up; the written profile gets an interconnect section (best bus bandwidth, per-step latency).")] = 1,
    name: Annotated[Optional[str], typer.Option("--name", help="Profile name in the written YAML (default: calibrated-<device>).")] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="table or json (to stdout).")] = "table",
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write a hardware profile YAML here (accepted by analyze, bench and sweep as --hardware FILE).")] = None,
    from_db: Annotated[Optional[str], typer.Option("--from", help="Import the tables instead of measuring: 'aiconfigurator[:vllm|sglang|trtllm]' converts the GPU kernels NVIDIA measured (package aiconfigurator-core, optional extra: pip install 'gpt-batchprof[aic]') for the -H profile's GPU (h100-sxm, h200, a100-80gb, b200, gb200, l40s) into its measured: tables and measured interconnect.")] = None,
) -> None:
    """Measure this device's ceilings: the best dense matmul FLOP/s per dtype it supports (a few large square shapes, the max, as mamf-finder does; fp32, tf32 / fp16 / bf16 / fp8 / int8 on CUDA where the GPU has them), memory bandwidth from a large copy (bytes read + written), and the launch overhead of a tiny kernel.

    It then measures the efficiency tables (unless --no-tables): dense matmul FLOP/s over a log-spaced (M, N, K) grid per dtype (weights rotated past the last-level cache, so decode shapes stream them from memory as a model does), batched matmuls, fused attention, copy / norm / softmax bandwidth against bytes moved, the per-kernel overhead, and on the CPU the host time per layer between kernels (charged in eager mode). Predictions from a profile with these tables interpolate them (see docs/bench.md). Each cell is the best of its repeats; a cell whose repeats disagree, or that is out of line with its neighbours, is re-measured, and one that stays out of line is dropped; the quality of each table is printed and recorded. A table that stays implausible, or reference kernels that differ by > 20% between start and end, is refused with exit 2 unless --force.

    With --hardware NAME the figures are printed next to that datasheet profile. With -o FILE they are written as a hardware profile YAML (with a header naming device, torch version and date), which any command takes as --hardware FILE. On a 2-core CPU: about 3 minutes (--quick: under 30 s; --no-tables: about 15 s).
    """
    from gpt_batchprof.measure.calibrate import calibrate, calibrate_with_tables, hardware_yaml
    from gpt_batchprof.measure.device import resolve_device
    from gpt_batchprof.profiles import load_hardware

    choice(fmt, ("table", "json"), "--format")
    if from_db is not None:
        return _import_tables(from_db, hardware, fmt, output)
    check_live_options(0.0, 1.0, threads)
    if tp < 1:
        raise BatchprofError(f"--tp: must be >= 1, got {tp}")
    sheet = load_hardware(hardware) if hardware else None
    dev = resolve_device(device)
    if tp > 1:
        from gpt_batchprof.measure.distributed import calibrate_interconnect, check_world

        check_world(dev, tp)
    if dev == "cpu" and threads is None:
        from gpt_batchprof.measure.device import free_cores

        threads, why = free_cores()
        err_console.print(f"calibrating with {threads} thread(s): {why} (--threads N to choose)", highlight=False)
    measured = None
    with err_console.status(f"calibrating {dev}") as status:
        say = lambda s: status.update(f"calibrating {dev}: {s}")  # noqa: E731
        if tables:
            cal, measured = calibrate_with_tables(dev, quick=quick, threads=threads, force=force, progress=say)
        else:
            cal = calibrate(dev, quick=quick, threads=threads, progress=say)
        if tp > 1:
            import dataclasses

            status.update(f"calibrating the interconnect: all-reduce over {tp} processes")
            cal = dataclasses.replace(cal, link=calibrate_interconnect(dev, tp, quick=quick))
    if output is not None:  # the profile first: a closed stdout below must not lose minutes of measuring
        emit(hardware_yaml(cal, name, measured), output)
    if fmt == "json":
        from gpt_batchprof.report import export

        emit(export.to_json(cal.to_dict() | ({"measured": measured.summary()} if measured else {})), None)
    else:
        from gpt_batchprof.report.bench_tables import print_calibration

        print_calibration(console, cal, sheet, measured)
    if measured is not None:
        for w in measured.warnings:
            err_console.print(f"WARNING: {w}", style="bold red", highlight=False, soft_wrap=True)


def _import_tables(source: str, hardware: str | None, fmt: str, output: Path | None) -> None:
    """`calibrate --from aiconfigurator[:framework]`: the -H profile with imported tables."""
    import dataclasses

    from gpt_batchprof.profiles import hardware_path, load_hardware

    db, _, framework = source.partition(":")
    if db != "aiconfigurator":
        raise BatchprofError(f"--from: unknown source '{db}' (known: aiconfigurator[:vllm|sglang|trtllm])")
    if hardware is None:
        raise BatchprofError("--from aiconfigurator: name the GPU's profile with -H (e.g. -H h100-sxm)")
    from gpt_batchprof.measure import aiconfigurator as aic

    hw = load_hardware(hardware)
    with err_console.status(f"importing {source} for {hw.name}") as status:
        measured, link, report = aic.convert(hw, framework or "vllm", progress=status.update)
    if link is not None:
        measured = dataclasses.replace(measured, link=(link.name, link.bandwidth_bytes_per_s, link.latency_s))
    if fmt == "json":
        from gpt_batchprof.report import export

        emit(export.to_json({"hardware": hw.name, "measured": measured.summary(), "report": report}), None)
    else:
        console.print(f"{hw.name}: imported from {measured.source['package']} {measured.source['package_version']} "
                      f"({measured.source['framework']} {measured.source['framework_version']}, {measured.device_name})",
                      highlight=False, markup=False)
        for name, (have, total) in sorted(report["cells"].items()):
            console.print(f"  {name}: {have} of {total} grid cells measured ({measured.source['kernels'][name]})",
                          highlight=False, markup=False)
        if link is not None:
            console.print(f"  interconnect: {link.name}: {link.bandwidth_bytes_per_s / 1e9:.1f} GB/s, "
                          f"{link.latency_s * 1e6:.2f} us per ring step", highlight=False, markup=False)
    if output is not None:
        path = hardware_path(hardware)
        original = path.read_text(encoding="utf-8")
        emit(aic.profile_text(original, measured, report), output)


def register(app: typer.Typer) -> None:
    app.command("bench")(bench_cmd)
    app.command("calibrate")(calibrate_cmd)
