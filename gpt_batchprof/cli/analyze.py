"""`gpt-batchprof analyze`: the analytic roofline model, no GPU needed."""

from __future__ import annotations

from gpt_batchprof.cli.common import (
    DEFAULT_BATCHES, AttentionOpt, BatchOpt, ContextLenOpt, DtypeOpt, FormatOpt,
    GenLenOpt, HardwareOpt, KvDtypeOpt, LaunchOpt, ModelOpt, OutputOpt, PhaseOpt, PromptLenOpt,
    WeightDtypeOpt, choice, guarded, parse_int_list, phases_of, show,
)
from typing import Annotated

import typer

from gpt_batchprof.report.export import FORMATS


def scenario_from_options(prompt_len, context_len, gen_len, dtype, weight_dtype, kv_dtype, attention, launch="auto"):
    from gpt_batchprof.analytic import ATTENTION_MODES, LAUNCH_MODES, Dtypes, Scenario

    choice(attention, ATTENTION_MODES, "--attention")
    choice(launch, ("auto",) + LAUNCH_MODES, "--launch")
    return Scenario(prompt_len=prompt_len, gen_len=gen_len, context_len=context_len,
                    dtypes=Dtypes.of(dtype, weight_dtype, kv_dtype), attention=attention, launch=launch)


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
    kv_dtype: KvDtypeOpt = None,
    attention: AttentionOpt = "unfused",
    launch: LaunchOpt = "auto",
    per_op: Annotated[bool, typer.Option("--per-op", help="Add the operator breakdown (FLOPs, bytes, intensity, bound).")] = False,
    fmt: FormatOpt = "table",
    output: OutputOpt = None,
) -> None:
    """Predict latency, throughput and memory per batch size from the roofline model.

    Every operator gets FLOPs (2 per multiply-add), minimum bytes moved, arithmetic intensity, roofline time max(FLOPs/peak, bytes/bandwidth) + launch overhead, and its bound. Machine-readable output (--format json|csv|markdown) is in SI units.

    TTFT is the prefill of --prompt-len tokens; ITL one decode step at --context-len cached tokens (default: the mean cache length of the decode steps, prompt-len + gen-len/2 - 1); e2e is TTFT plus gen-len - 1 decode steps, each at its own cache length; tokens/s = batch x gen-len / e2e (TTFT included). Memory covers the longest context any analysed step uses.

    Causal prefill attention is counted as each kernel computes it: unfused QK^T and x V compute the full square (the mask comes after); fused attention skips masked tiles, so it counts only the visible query-key pairs (about half).
    """
    from gpt_batchprof.analytic import analyze
    from gpt_batchprof.profiles import load_hardware, load_model

    choice(fmt, FORMATS, "--format")
    scenario = scenario_from_options(prompt_len, context_len, gen_len, dtype, weight_dtype, kv_dtype, attention,
                                     launch)
    result = analyze(load_model(model), load_hardware(hardware), scenario, phases_of(phase),
                     parse_int_list(batch))
    render_analyze(result, fmt, per_op, output)


def render_analyze(result, fmt: str, per_op: bool, output) -> None:
    from gpt_batchprof.report.render import analyze_views

    show(analyze_views(result, per_op), fmt, output)
