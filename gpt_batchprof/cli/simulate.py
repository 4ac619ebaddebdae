"""`gpt-batchprof simulate`: one inference server under load, from analyze's step times."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from gpt_batchprof.cli.common import (
    AttentionOpt, DtypeOpt, EpOpt, FormatOpt, HardwareOpt, KvDtypeOpt, LaunchOpt, MicroBatchesOpt, ModelOpt, PpOpt,
    TpOpt, WeightDtypeOpt, ExpertDtypeOpt, choice, err_console, guarded, load_hardware_or_auto, parallel_of,
    render,
)

Opt = typer.Option
PROGRESS_MIN_REQUESTS = 2000  # a single run shorter than this finishes before a bar would help


@guarded
def simulate_cmd(
    model: ModelOpt = "llama-2-7b",
    hardware: HardwareOpt = "a100-80gb",
    rate: Annotated[Optional[str], Opt("--rate", "-r", help="Poisson arrivals, requests/s: 5, a list 2,4,8, or a range 1..20 (--rate-points values evenly spaced) to sweep the load.")] = None,
    rate_points: Annotated[int, Opt("--rate-points", help="Values in a --rate a..b range.")] = 8,
    concurrency: Annotated[Optional[int], Opt("--concurrency", "-c", help="Closed loop: this many clients, each sending its next request when the last one finishes.")] = None,
    requests: Annotated[Optional[int], Opt("--requests", "-n", help="Requests to send (default 1000, or the whole trace).")] = None,
    duration: Annotated[Optional[float], Opt("--duration", help="Send requests for this many seconds of simulated time (then drain).")] = None,
    prompt_len: Annotated[str, Opt("--prompt-len", help="Prompt tokens: fixed (512) or uniform over a range (128..2048).")] = "512",
    gen_len: Annotated[str, Opt("--gen-len", help="Output tokens: fixed (128) or uniform over a range (16..512).")] = "128",
    trace: Annotated[Optional[Path], Opt("--trace", help="CSV or JSONL with columns arrival_s, prompt_len, gen_len; with --rate or --concurrency only its lengths are used.")] = None,
    scheduler: Annotated[str, Opt("--scheduler", help="continuous (iteration-level batching) or static (whole batches).")] = "continuous",
    max_batch: Annotated[int, Opt("--max-batch", help="Most sequences in a step (a static batch).")] = 256,
    max_tokens: Annotated[Optional[int], Opt("--max-tokens-per-step", help="Most tokens in one step, prefill chunks and decode tokens together (default 2048; without chunked prefill at least the longest prompt).")] = None,
    chunked: Annotated[bool, Opt("--chunked-prefill/--no-chunked-prefill", help="Split long prompts over steps, next to decode tokens.")] = True,
    batch_timeout: Annotated[str, Opt("--batch-timeout", help="Static batching: start a partial batch once its oldest request has waited this long (with unit: 100ms).")] = "100ms",
    block_size: Annotated[int, Opt("--block-size", help="Tokens per KV-cache block (paged cache).")] = 16,
    slo_ttft: Annotated[str, Opt("--slo-ttft", help="Time-to-first-token objective, with unit (500ms, 1s).")] = "500ms",
    slo_itl: Annotated[str, Opt("--slo-itl", help="Inter-token latency objective, with unit (50ms).")] = "50ms",
    slo_percentile: Annotated[float, Opt("--slo-percentile", help="Percentile at which --find-max-rate and the SLO column judge TTFT and ITL.")] = 90.0,
    find_max_rate: Annotated[bool, Opt("--find-max-rate", help="Bisect for the highest Poisson rate whose TTFT and ITL meet the SLO at --slo-percentile.")] = False,
    plot: Annotated[Optional[Path], Opt("--plot", help="Folder for a PNG of latency percentiles and goodput against offered load.")] = None,
    seed: Annotated[int, Opt("--seed", help="Seed of arrivals and drawn lengths.")] = 0,
    dtype: DtypeOpt = "fp16",
    weight_dtype: WeightDtypeOpt = None,
    expert_dtype: ExpertDtypeOpt = None,
    kv_dtype: KvDtypeOpt = None,
    attention: AttentionOpt = "auto",
    launch: LaunchOpt = "auto",
    tp: TpOpt = 1,
    pp: PpOpt = 1,
    ep: EpOpt = 1,
    micro_batches: MicroBatchesOpt = 1,
    fmt: FormatOpt = "table",
    output: Annotated[Optional[Path], Opt("--output", "-o", help="Stream one row per finished request to this .csv or .jsonl file.")] = None,
    progress: Annotated[bool, Opt("--progress/--no-progress", help="Progress bar on stderr for long runs.")] = True,
) -> None:
    """Simulate one inference server under load: arrivals, continuous (or static) batching, a paged KV cache, and the latency users see.

    Every step's time comes from the same operator model as `analyze` (dense operators over all the step's tokens, attention per sequence at its own length). Reports TTFT, inter-token latency and end-to-end latency (mean, p50, p90, p99), throughput, goodput (requests/s meeting --slo-ttft and --slo-itl), mean batch, KV-cache use and preemptions. Machine-readable output is in SI units.

    With --tp/--pp/--ep the server is one model instance over tp x pp x ep GPUs: steps are those of analyze --tp/--pp/--ep (sharded operators, collectives priced by the profile's interconnect, pipelined over --micro-batches), and the KV cache is what the fullest GPU holds after its sharded weights; see docs/parallel.md.
    """
    from gpt_batchprof.analytic import ATTENTION_MODES, LAUNCH_MODES, Dtypes
    from gpt_batchprof.errors import BatchprofError
    from gpt_batchprof.lists import parse_float_list
    from gpt_batchprof.profiles import load_model
    from gpt_batchprof.report.export import FORMATS
    from gpt_batchprof.simulate import ServerConfig, Slo, Workload, parse_duration, parse_lengths, read_trace

    choice(fmt, FORMATS, "--format")
    choice(attention, ("auto",) + ATTENTION_MODES, "--attention")
    choice(launch, ("auto",) + LAUNCH_MODES, "--launch")
    if output is not None:
        from gpt_batchprof.sweep.store import stream_format

        stream_format(output)
    slo = Slo(parse_duration(slo_ttft, "--slo-ttft"), parse_duration(slo_itl, "--slo-itl"), slo_percentile)
    cfg = ServerConfig(scheduler=scheduler, max_batch=max_batch, max_tokens_per_step=max_tokens,
                       chunked_prefill=chunked, batch_timeout_s=parse_duration(batch_timeout, "--batch-timeout"),
                       block_size=block_size, dtypes=Dtypes.of(dtype, weight_dtype, kv_dtype, expert_dtype), attention=attention,
                       launch=launch, parallel=parallel_of(tp, pp, ep, micro_batches))
    rates = parse_float_list(rate, "--rate", rate_points) if rate is not None else None
    if find_max_rate and concurrency is not None:
        raise BatchprofError("--find-max-rate searches over Poisson rates; drop --concurrency")
    if find_max_rate and rates is not None and len(rates) > 1:
        raise BatchprofError("--find-max-rate searches the rate itself; give no --rate range")
    workload = Workload(prompt=parse_lengths(prompt_len, "--prompt-len"), gen=parse_lengths(gen_len, "--gen-len"),
                        rate_rps=(rates[0] if rates else (1.0 if find_max_rate else None)),
                        concurrency=concurrency, requests=requests, duration_s=duration,
                        trace=read_trace(trace) if trace is not None else None, seed=seed)
    m, hw = load_model(model), load_hardware_or_auto(hardware)
    import dataclasses

    from gpt_batchprof.analytic.roofline import attention_mode

    cfg = dataclasses.replace(cfg, attention=attention_mode(cfg.attention, hw))
    if find_max_rate:
        _search(m, hw, workload, cfg, slo, fmt, output, plot, progress)
    elif rates is not None and len(rates) > 1:
        _sweep(m, hw, workload, cfg, slo, rates, fmt, output, plot, progress)
    else:
        _single(m, hw, workload, cfg, slo, fmt, output, plot, progress)


class _Streams:
    """-o: per-request rows appended as requests finish (with the rate of the run)."""

    def __init__(self, path: Optional[Path]):
        self.writer = None
        self.rate = None
        if path is not None:
            from gpt_batchprof.simulate import REQUEST_COLUMNS
            from gpt_batchprof.sweep.store import StreamWriter

            self.writer = StreamWriter(path, columns=REQUEST_COLUMNS)

    def __call__(self, slo, record) -> None:
        if self.writer is not None:
            self.writer.write(record.to_dict(slo) | {"rate_rps": self.rate})

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            err_console.print(f"wrote {self.writer.path}", style="dim", highlight=False)


def _bar(show: bool, what: str, total):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn(what), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   console=err_console, transient=True, disable=not show)
    return bar, bar.add_task(what, total=total)


def _single(m, hw, workload, cfg, slo, fmt, output, plot, progress) -> None:
    from gpt_batchprof.simulate import simulate

    streams = _Streams(output)
    streams.rate = workload.rate_rps
    total = workload.limit
    bar, task = _bar(progress and (total is None or total >= PROGRESS_MIN_REQUESTS), "simulate", total)
    done = [0]

    def on_request(rec) -> None:
        streams(slo, rec)
        done[0] += 1
        if done[0] % 200 == 0:
            bar.update(task, completed=done[0])

    try:
        with bar:
            res = simulate(m, hw, workload, cfg, slo, on_request=on_request)
    finally:
        streams.close()
    _render(fmt, m, hw, single=res)
    if plot is not None:
        from gpt_batchprof.simulate.search import LoadPoint
        from gpt_batchprof.simulate.metrics import slo_percentiles

        _plot([LoadPoint(workload.rate_rps or res.summary.throughput_rps, res, *slo_percentiles(res.records, slo))],
              plot, m, hw)
    if res.interrupted:
        raise typer.Exit(130)


def _sweep(m, hw, workload, cfg, slo, rates, fmt, output, plot, progress) -> None:
    from gpt_batchprof.simulate import sweep_rates

    streams = _Streams(output)
    bar, task = _bar(progress, "load sweep", len(rates))
    rates_left = list(rates)

    def on_point(p) -> None:
        bar.advance(task)
        rates_left.pop(0)
        streams.rate = rates_left[0] if rates_left else None

    streams.rate = rates[0]
    try:
        with bar:
            points = sweep_rates(m, hw, workload, rates, cfg, slo, on_point=on_point,
                                 on_request=lambda rec: streams(slo, rec))
    finally:
        streams.close()
    _render(fmt, m, hw, points=points)
    if plot is not None:
        _plot(points, plot, m, hw)


def _search(m, hw, workload, cfg, slo, fmt, output, plot, progress) -> None:
    from gpt_batchprof.simulate import find_max_rate

    bar, task = _bar(progress, "searching", None)
    with bar:
        search = find_max_rate(m, hw, workload, cfg, slo, on_point=lambda p: bar.update(
            task, description=f"tried {p.rate_rps:.4g} req/s"))
    if output is not None:
        streams = _Streams(output)
        streams.rate = search.max_rate_rps
        for rec in search.best.result.records:
            streams(slo, rec)
        streams.close()
    _render(fmt, m, hw, search=search)
    if plot is not None:
        _plot(search.points, plot, m, hw)


def _render(fmt: str, m, hw, single=None, points=None, search=None) -> None:
    """The result in --format through the one renderer (-o is the per-request stream, not this)."""
    from dataclasses import asdict

    from gpt_batchprof.report import export
    from gpt_batchprof.report import simulate_tables as st

    def rows() -> list:
        if single is not None:
            return [asdict(single.summary)]
        return [st.point_row(p) for p in (points if points is not None else search.points)]

    def markdown() -> str:
        extra = f"\nmax_rate_rps: {search.max_rate_rps:.6g}\n" if search is not None else ""
        return export.to_markdown(rows(), title=f"simulate {m.name} on {hw.name}") + extra

    def table(out) -> None:
        if single is not None:
            st.print_single(out, m, hw, single)
        elif points is not None:
            st.print_sweep(out, m, hw, points)
        else:
            st.print_search(out, m, hw, search)

    render(fmt, None, doc=lambda: (st.single_json(m, hw, single) if single is not None else
                                   st.sweep_json(m, hw, points) if points is not None else st.search_json(m, hw, search)),
           rows=rows, markdown=markdown, table=table)


def _plot(points, folder: Path, m, hw) -> None:
    from gpt_batchprof.report.simulate_plots import plot_load

    par = points[0].result.config.parallel
    where = hw.name if par.is_single else f"{hw.name} ({par.label()})"
    path = plot_load(points, folder, f"{m.name} on {where}: latency and goodput against offered load")
    err_console.print(f"wrote {path}", style="dim", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("simulate")(simulate_cmd)
