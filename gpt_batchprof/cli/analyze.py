"""`gpt-batchprof analyze`: the analytic roofline model, no GPU needed."""

from __future__ import annotations

from gpt_batchprof.cli.common import (
    DEFAULT_BATCHES, AttentionOpt, BatchOpt, ContextLenOpt, DtypeOpt, EpOpt, FormatOpt,
    GenLenOpt, HardwareOpt, KvDtypeOpt, LaunchOpt, MicroBatchesOpt, ModelOpt, OutputOpt, PhaseOpt, PpOpt,
    PromptLenOpt, TpOpt, WeightDtypeOpt, ExpertDtypeOpt, AcceptanceOpt, DraftOpt, SpeculateOpt, choice, speculation_of,
    guarded, load_hardware_or_auto, parallel_of, parse_int_list,
    phases_of, render, scenario_from_options,
)
from typing import Annotated

import typer

from gpt_batchprof.report.export import FORMATS


def with_attention(scenario, hw):
    """The scenario with ``--attention auto`` resolved for this hardware."""
    import dataclasses

    from gpt_batchprof.analytic.roofline import attention_mode

    return dataclasses.replace(scenario, attention=attention_mode(scenario.attention, hw))


@guarded
def analyze_cmd(
    model: ModelOpt = "llama-2-7b",
    hardware: HardwareOpt = "a100-80gb",
    phase: PhaseOpt = "both",
    batch: BatchOpt = DEFAULT_BATCHES,
    prompt_len: PromptLenOpt = 512,
    context_len: ContextLenOpt = None,
    gen_len: GenLenOpt = 128,
    dtype: DtypeOpt = "fp16",
    weight_dtype: WeightDtypeOpt = None,
    expert_dtype: ExpertDtypeOpt = None,
    kv_dtype: KvDtypeOpt = None,
    mla_form: Annotated[str, typer.Option("--mla-form", help="Multi-head latent attention (DeepSeek-V3): naive (decompress K and V), absorbed (attend in the latent space), or auto: naive prefill, absorbed decode, as serving engines run it.")] = "auto",
    attention: AttentionOpt = "auto",
    launch: LaunchOpt = "auto",
    tp: TpOpt = 1,
    pp: PpOpt = 1,
    ep: EpOpt = 1,
    micro_batches: MicroBatchesOpt = 1,
    speculate: SpeculateOpt = 0,
    acceptance: AcceptanceOpt = 0.7,
    draft: DraftOpt = None,
    per_op: Annotated[bool, typer.Option("--per-op", help="Add the operator breakdown (FLOPs, bytes, intensity, bound).")] = False,
    fmt: FormatOpt = "table",
    output: OutputOpt = None,
) -> None:
    """Predict latency, throughput and memory per batch size from the roofline model.

    Every operator gets FLOPs (2 per multiply-add), minimum bytes moved, arithmetic intensity, roofline time max(FLOPs/peak, bytes/bandwidth) + launch overhead, and its bound. Machine-readable output (--format json|csv|markdown) is in SI units.

    TTFT is the prefill of --prompt-len tokens; ITL one decode step at --context-len cached tokens (default: the mean cache length of the decode steps, prompt-len + gen-len/2 - 1); e2e is TTFT plus gen-len - 1 decode steps, each at its own cache length; tokens/s = batch x gen-len / e2e (TTFT included). Memory covers the longest context any analysed step uses.

    Causal prefill attention is counted as each kernel computes it: unfused QK^T and x V compute the full square (the mask comes after); fused attention skips masked tiles, so it counts only the visible query-key pairs (about half).

    With --speculate K --draft MODEL|mtp --acceptance A a table compares plain decoding with speculative decoding per batch: a verify step of K + 1 tokens of the target plus K draft decode steps yield (1 - A^(K+1)) / (1 - A) tokens; see docs/simulate.md.

    With --tp/--pp/--ep the figures are per GPU (of the slowest pipeline stage, the fullest GPU for memory); all-reduce, all-to-all and send/recv are operator rows priced by the profile's interconnect; see docs/parallel.md.
    """
    from gpt_batchprof.analytic import analyze
    from gpt_batchprof.profiles import load_model

    choice(fmt, FORMATS, "--format")
    m = load_model(model)
    scenario = scenario_from_options(prompt_len, context_len, gen_len, dtype, weight_dtype, kv_dtype, attention,
                                     launch, expert_dtype, mla_form, model=m)
    hw = load_hardware_or_auto(hardware)
    scenario = with_attention(scenario, hw)
    result = analyze(m, hw, scenario, phases_of(phase), parse_int_list(batch), parallel_of(tp, pp, ep, micro_batches),
                     speculation_of(speculate, acceptance, draft, m))
    render_analyze(result, fmt, per_op, output)


def render_analyze(result, fmt: str, per_op: bool, output) -> None:
    from gpt_batchprof.report import export, tables
    from gpt_batchprof.report.rows import analyze_dict, op_row, report_fields, summary_row

    def markdown() -> str:
        summary = [summary_row(p) for p in result.report.points]
        sections = [("Serving figures per batch", summary)] + ([("Operators", ops())] if per_op else [])
        if result.speculation is not None:
            from dataclasses import asdict

            sections.append(("Speculative decoding", [asdict(p) for p in result.speculative]))
        extra = "\n" + "".join(f"{k}: {v}\n" for k, v in report_fields(result.report).items())
        if not result.parallel.is_single:
            extra += f"parallel: {result.parallel.label()} (figures per GPU)\n"
        return export.markdown_sections(sections) + extra

    def ops() -> list:
        return [op_row(p) for p in result.predictions]

    render(fmt, output, doc=lambda: analyze_dict(result),
           rows=lambda: ops() if per_op else [summary_row(p) for p in result.report.points],
           markdown=markdown, table=lambda out: _print_tables(out, result, per_op, tables))


def _print_tables(out, result, per_op: bool, tables) -> None:
    tables.header(out, result.model, result.hardware, result.scenario)
    if not result.parallel.is_single:
        tables.parallel_header(out, result.parallel, result.hardware, result.weights, result.model)
    out.print()
    out.print(tables.summary_table(result.report, result.hardware))
    if result.hardware.measured is not None:
        out.print()
        from gpt_batchprof.analytic.roofline import below_roofline_causes

        out.print(tables.roofline_table(result.report, below_roofline_causes(result.predictions)))
    out.print()
    out.print(tables.memory_table(result.report, result.hardware, result.parallel))
    tables.engine_line(out, result.report, result.hardware, result.model.n_layer)
    tables.summary_footer(out, result.report)
    if result.speculation is not None:
        out.print()
        out.print(tables.speculative_table(result.speculative, result.speculation))
    if per_op:
        for phase in result.phases:
            preds = [p for p in result.predictions if p.cost.phase == phase]
            c = preds[0].cost
            what = f"prompt {c.new_tokens}" if phase == "prefill" else f"{c.kv_len} cached tokens"
            out.print()
            per = "" if result.parallel.is_single else "; per GPU of the slowest stage"
            out.print(tables.ops_table(preds, f"{phase} operators ({what}; all layers{per})"))
