"""`gpt-batchprof simulate`: one inference server under load, from analyze's step times."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from gpt_batchprof.cli.common import (
    AttentionOpt, DtypeOpt, EpOpt, FormatOpt, HardwareOpt, KvDtypeOpt, LaunchOpt, MicroBatchesOpt, ModelOpt, PpOpt,
    MAX_REQUESTS, TpOpt, WeightDtypeOpt, ExpertDtypeOpt, AcceptanceOpt, DraftOpt, SpeculateOpt, choice, folder_for,
    speculation_of, err_console, guarded, load_hardware_or_auto, parallel_of,
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
    trace: Annotated[Optional[Path], Opt("--trace", help="CSV or JSONL with columns arrival_s, prompt_len, gen_len, or a published trace as released: Azure LLM inference CSV, BurstGPT CSV, Mooncake JSONL (its hash_ids feed --prefix-caching); with --rate or --concurrency only its lengths are used.")] = None,
    time_scale: Annotated[Optional[float], Opt("--time-scale", help="Multiply the trace's arrival times by this (0.5: the same trace twice as fast).")] = None,
    trace_rate: Annotated[Optional[float], Opt("--trace-rate", help="Rescale the trace's arrival times to this mean rate, requests/s (its bursts kept).")] = None,
    rescale_trace: Annotated[bool, Opt("--rescale-trace", help="With --trace and --rate (a sweep too) or --find-max-rate: scale the trace's own arrival times to each rate, keeping its bursts, instead of drawing Poisson arrivals.")] = False,
    prefix_caching: Annotated[bool, Opt("--prefix-caching/--no-prefix-caching", help="Keep the KV blocks of prompt prefixes for later requests (LRU, inside the KV cache); prefill computes only the uncached tokens.")] = False,
    shared_prefix_len: Annotated[int, Opt("--shared-prefix-len", help="Synthetic shared system prompt: the first this many tokens of every prompt are one of --prefix-groups prefixes.")] = 0,
    prefix_groups: Annotated[int, Opt("--prefix-groups", help="Distinct shared prefixes; each request draws one uniformly.")] = 1,
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
    replicas: Annotated[int, Opt("--replicas", help="Aggregated pool: this many identical servers (each over tp x pp x ep GPUs), arrivals dealt round-robin.")] = 1,
    disagg: Annotated[Optional[str], Opt("--disagg", help="Disaggregated serving P:D: P prefill and D decode instances (each over tp x pp x ep GPUs); each request's KV cache crosses the interconnect (or --kv-link).")] = None,
    kv_link: Annotated[Optional[float], Opt("--kv-link", help="Bandwidth of the prefill-to-decode KV transfer, GB/s per GPU (default: the profile's interconnect).")] = None,
    prefill_tp: Annotated[Optional[int], Opt("--prefill-tp", help="With --disagg: tensor parallelism of each prefill instance (default --tp).")] = None,
    decode_tp: Annotated[Optional[int], Opt("--decode-tp", help="With --disagg: tensor parallelism of each decode instance (default --tp).")] = None,
    compare: Annotated[bool, Opt("--compare", help="With --disagg P:D: also run an aggregated pool of P + D servers (equal GPU count) and compare them, per SLO.")] = False,
    speculate: SpeculateOpt = 0,
    acceptance: AcceptanceOpt = 0.7,
    draft: DraftOpt = None,
    fmt: FormatOpt = "table",
    output: Annotated[Optional[Path], Opt("--output", "-o", help="Stream one row per finished request to this .csv or .jsonl file.")] = None,
    progress: Annotated[bool, Opt("--progress/--no-progress", help="Progress bar on stderr for long runs.")] = True,
) -> None:
    """Simulate one inference server under load: arrivals, continuous (or static) batching, a paged KV cache, and the latency users see.

    Every step's time comes from the same operator model as `analyze` (dense operators over all the step's tokens, attention per sequence at its own length). Reports TTFT, inter-token latency and end-to-end latency (mean, p50, p90, p99), throughput, goodput (requests/s meeting --slo-ttft and --slo-itl), mean batch, KV-cache use and preemptions. Machine-readable output is in SI units.

    Serving what-ifs (docs/simulate.md): --trace reads Azure, BurstGPT and Mooncake traces as published (--time-scale, --trace-rate); --prefix-caching reuses the KV blocks of shared prompt prefixes (Mooncake hash_ids, or --shared-prefix-len/--prefix-groups); --speculate K --draft MODEL|mtp --acceptance A prices decode steps as speculative rounds.

    With --tp/--pp/--ep the server is one model instance over tp x pp x ep GPUs: steps are those of analyze --tp/--pp/--ep (sharded operators, collectives priced by the profile's interconnect, pipelined over --micro-batches), and the KV cache is what the fullest GPU holds after its sharded weights; see docs/parallel.md.
    """
    from gpt_batchprof.analytic import ATTENTION_MODES, LAUNCH_MODES, Dtypes
    from gpt_batchprof.errors import BatchprofError
    from gpt_batchprof.lists import parse_float_list
    from gpt_batchprof.profiles import load_model
    from gpt_batchprof.report.export import FORMATS
    from gpt_batchprof.simulate import ServerConfig, Slo, Workload, parse_duration, parse_lengths

    choice(fmt, FORMATS, "--format")
    m = load_model(model)
    choice(attention, ("auto",) + ATTENTION_MODES, "--attention")
    choice(launch, ("auto",) + LAUNCH_MODES, "--launch")
    if output is not None:
        from gpt_batchprof.sweep.store import stream_format

        stream_format(output)
    slo = Slo(parse_duration(slo_ttft, "--slo-ttft"), parse_duration(slo_itl, "--slo-itl"), slo_percentile)
    cfg = ServerConfig(scheduler=scheduler, max_batch=max_batch, max_tokens_per_step=max_tokens,
                       chunked_prefill=chunked, batch_timeout_s=parse_duration(batch_timeout, "--batch-timeout"),
                       block_size=block_size, dtypes=Dtypes.for_model(m, dtype, weight_dtype, kv_dtype, expert_dtype),
                       attention=attention,
                       launch=launch, parallel=parallel_of(tp, pp, ep, micro_batches), prefix_caching=prefix_caching,
                       speculation=speculation_of(speculate, acceptance, draft, m), replicas=replicas,
                       disagg=_disagg(disagg, kv_link, compare, prefill_tp, decode_tp))
    rates = parse_float_list(rate, "--rate", rate_points) if rate is not None else None
    if duration is not None and rates and max(rates) * duration > MAX_REQUESTS:  # the --requests ceiling, by time
        raise BatchprofError(f"--rate {max(rates):g} x --duration {duration:g} s: about "
                             f"{max(rates) * duration:.3g} requests, at most {MAX_REQUESTS} (see --requests)")
    if find_max_rate and concurrency is not None:
        raise BatchprofError("--find-max-rate searches over Poisson rates; drop --concurrency")
    if find_max_rate and rates is not None and len(rates) > 1:
        raise BatchprofError("--find-max-rate searches the rate itself; give no --rate range")
    tr = _trace(trace, time_scale, trace_rate, requests, replay=rates is None and concurrency is None
                and not find_max_rate)
    if rescale_trace and rates is None and not find_max_rate and concurrency is None:
        raise BatchprofError("--rescale-trace scales the trace to each --rate (or the rates --find-max-rate tries); "
                             "give one, or use --trace-rate for a single replay")
    first_rate = rates[0] if rates else (1.0 if find_max_rate else None)
    workload = Workload(prompt=parse_lengths(prompt_len, "--prompt-len"), gen=parse_lengths(gen_len, "--gen-len"),
                        rate_rps=None if rescale_trace else first_rate,
                        concurrency=concurrency, requests=requests, duration_s=duration,
                        trace=tr.requests if tr is not None else None, seed=seed,
                        shared_prefix_len=shared_prefix_len, prefix_groups=prefix_groups, rescale_trace=rescale_trace)
    if rescale_trace:
        workload = workload.with_rate(first_rate)
    if shared_prefix_len and not prefix_caching:
        _note("--shared-prefix-len without --prefix-caching: every prompt is computed in full (the baseline)")
    elif prefix_caching and not shared_prefix_len and not (tr is not None and any(r.prefix for r in tr.requests)):
        _note("--prefix-caching: no request shares a prefix (give --shared-prefix-len, or a Mooncake trace "
              "with hash_ids); the hit rate will be 0")
    hw = load_hardware_or_auto(hardware)
    import dataclasses

    from gpt_batchprof.analytic.roofline import attention_mode

    cfg = dataclasses.replace(cfg, attention=attention_mode(cfg.attention, hw))
    if compare:
        if rates is not None and len(rates) > 1:
            raise BatchprofError("--compare runs one rate or --find-max-rate; give no --rate range")
        if output is not None or plot is not None:
            raise BatchprofError(f"{'-o' if output is not None else '--plot'} is not written with --compare "
                                 "(run each layout on its own for per-request rows or a plot)")
        _compare(m, hw, workload, cfg, slo, fmt, find_max_rate, progress)
    elif find_max_rate:
        _search(m, hw, workload, cfg, slo, fmt, output, plot, progress)
    elif rates is not None and len(rates) > 1:
        _sweep(m, hw, workload, cfg, slo, rates, fmt, output, plot, progress)
    else:
        _single(m, hw, workload, cfg, slo, fmt, output, plot, progress)


def _note(text: str) -> None:
    err_console.print(f"note: {text}", style="yellow", highlight=False, soft_wrap=True)


def _disagg(text: Optional[str], kv_link: Optional[float], compare: bool, prefill_tp: Optional[int],
            decode_tp: Optional[int]):
    from gpt_batchprof.errors import BatchprofError

    if text is None:
        given = [o for o, v in (("--kv-link", kv_link), ("--compare", compare or None), ("--prefill-tp", prefill_tp),
                                ("--decode-tp", decode_tp)) if v is not None]
        if given:
            raise BatchprofError(f"{given[0]} needs --disagg P:D")
        return None
    from gpt_batchprof.simulate.pools import parse_disagg

    return parse_disagg(text, kv_link, prefill_tp, decode_tp)


def _compare(m, hw, workload, cfg, slo, fmt, search: bool, progress) -> None:
    """Aggregated (P + D replicas) against disaggregated (P:D) at equal GPU count."""
    from dataclasses import replace

    from gpt_batchprof.errors import BatchprofError
    from gpt_batchprof.report import export
    from gpt_batchprof.report import simulate_tables as st
    from gpt_batchprof.simulate import find_max_rate, simulate

    gpus, world = cfg.disagg.gpus(cfg.parallel), cfg.parallel.world
    if gpus % world:
        raise BatchprofError(f"--compare: the disaggregated pool has {gpus} GPUs, not a whole number of "
                             f"aggregated servers of {world} GPUs (--tp x --pp x --ep)")
    modes = (("aggregated", replace(cfg, disagg=None, replicas=gpus // world)), ("disaggregated", cfg))
    bar, task = _bar(progress, "comparing", None)
    with bar:
        if search:
            runs = [(name, find_max_rate(m, hw, workload, c, slo)) for name, c in modes]
            results = [(name, s.best.result, s.max_rate_rps) for name, s in runs]
        else:
            results = [(name, simulate(m, hw, workload, c, slo), None) for name, c in modes]
    rows = [st.compare_row(name, res, rate) for name, res, rate in results]
    render(fmt, None, doc=lambda: st.compare_json(m, hw, results), rows=lambda: rows,
           markdown=lambda: export.to_markdown(rows, title=f"simulate {m.name} on {hw.name}: aggregated vs "
                                                            "disaggregated"),
           table=lambda out: st.print_compare(out, m, hw, results))


def _trace(path: Optional[Path], time_scale: Optional[float], trace_rate: Optional[float], requests: Optional[int],
           replay: bool):
    """The trace file, rescaled; notes on what is left out or cut short go to stderr."""
    from gpt_batchprof.errors import BatchprofError
    from gpt_batchprof.simulate import load_trace

    if path is None:
        if time_scale is not None or trace_rate is not None:
            raise BatchprofError(f"{'--time-scale' if time_scale is not None else '--trace-rate'} rescales a "
                                 "trace's arrivals; give --trace FILE")
        return None
    if time_scale is not None and trace_rate is not None:
        raise BatchprofError("give --time-scale or --trace-rate, not both")
    if (time_scale is not None or trace_rate is not None) and not replay:
        raise BatchprofError("--time-scale and --trace-rate rescale the trace's own arrivals; with --rate, "
                             "--concurrency or --find-max-rate only its lengths are used")
    if trace_rate is not None and not (trace_rate > 0 and trace_rate < float("inf")):
        raise BatchprofError(f"--trace-rate must be a finite number > 0, got {trace_rate:g}")
    tr = load_trace(path, 1.0 if time_scale is None else time_scale)
    if trace_rate is not None:
        import math

        if math.isnan(tr.rate_rps):
            raise BatchprofError(f"{path}: every request arrives at the same time; --trace-rate cannot rescale it")
        tr = load_trace(path, tr.rate_rps / trace_rate * tr.time_scale)
    if tr.shift_s:
        _note(f"{path}: arrivals start at {tr.shift_s:.10g} s (absolute timestamps?); rebased to the first one, so "
              "steps resolve to 1 ns")
    if tr.skipped:
        _note(f"{path}: {tr.skipped} failed request(s) (0 response tokens) left out")
    if replay and requests is not None and requests > len(tr.requests):
        _note(f"the trace has {len(tr.requests)} request(s); replaying {len(tr.requests)}, not {requests} "
              "(give --rate or --concurrency to cycle its lengths)")
    return tr


class _Streams:
    """-o: per-request rows appended as requests finish (with the rate of the run)."""

    def __init__(self, path: Optional[Path]):
        self.writer = None
        self.rate = None
        if path is not None:
            from gpt_batchprof.simulate import REQUEST_COLUMNS
            from gpt_batchprof.sweep.store import StreamWriter

            self.writer = StreamWriter(path, columns=REQUEST_COLUMNS,  # simulate has no --resume / --overwrite
                                       existing_hint="choose another -o, or remove it to start again")

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
              folder_for(plot, not res.interrupted), m, hw)  # an interrupted run's plot never over earlier ones
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
