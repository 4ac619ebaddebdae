"""`gpt-batchprof profiles list|show`: the built-in model and hardware profiles."""

from __future__ import annotations

from typing import Annotated

import typer

from rich.markup import escape

from gpt_batchprof.cli.common import FormatOpt, OutputOpt, choice, guarded, show
from gpt_batchprof.report.export import FORMATS

profiles_app = typer.Typer(help="List and show model and hardware profiles.", no_args_is_help=True)


@profiles_app.command("list")
@guarded
def list_cmd(fmt: FormatOpt = "table", output: OutputOpt = None) -> None:
    """All built-in models and hardware with their headline numbers."""
    from gpt_batchprof.profiles import all_hardware, all_models
    from gpt_batchprof.report import export
    from gpt_batchprof.report.render import Views

    choice(fmt, FORMATS, "--format")
    models, hws = all_models(), all_hardware()
    rows = [{"kind": "model"} | m.to_dict() for m in models] + [{"kind": "hardware"} | h.to_dict() for h in hws]
    show(Views(json=lambda: {"models": [m.to_dict() for m in models], "hardware": [h.to_dict() for h in hws]},
               csv=lambda: export.to_csv(rows), markdown=lambda: export.to_markdown(rows),
               table=lambda out: _list_tables(out, models, hws)), fmt, output)


def _list_tables(out, models, hws) -> None:
    from gpt_batchprof.report.tables import compact_table
    from gpt_batchprof.units import fmt_bytes

    t = compact_table("Models", [(c, "left" if c in ("name", "ffn") else "right") for c in
                                 ("name", "params", "layers", "d_model", "heads", "d_ff", "ffn", "experts", "ctx")])
    for m in models:
        t.add_row(escape(m.name), f"{m.n_params / 1e9:.2f}B", str(m.n_layer), str(m.d_model), f"{m.n_head}/{m.n_kv_head}",
                  str(m.d_ff), m.ffn, f"{m.n_expert_active}/{m.n_expert}" if m.is_moe else "-", str(m.max_seq_len))
    out.print(t)
    t = compact_table("Hardware (datasheet, dense)", [(c, "left" if c in ("name", "kind") else "right") for c in
                      ("name", "kind", "memory", "GB/s", "fp16 TF/s", "fp8 TF/s", "ridge", "link GB/s", "$/h")])
    for h in hws:
        pk = h.peak_flops_per_s
        t.add_row(escape(h.name), h.kind, fmt_bytes(h.memory_bytes), f"{h.memory_bandwidth_bytes_per_s / 1e9:g}",
                  f"{pk['fp16'] / 1e12:g}" if "fp16" in pk else "-", f"{pk['fp8'] / 1e12:g}" if "fp8" in pk else "-",
                  f"{h.ridge_point('fp16'):.0f}" if "fp16" in pk else "-",
                  f"{h.interconnect.bandwidth_bytes_per_s / 1e9:g}" if h.interconnect else "-",
                  "-" if h.price_per_hour_usd is None else f"{h.price_per_hour_usd:.2f}")
    out.print(t)


@profiles_app.command("show")
@guarded
def show_cmd(
    name: Annotated[str, typer.Argument(help="A model or hardware name (or a profile file).")],
    fmt: FormatOpt = "table",
) -> None:
    """One profile, with its derived sizes (parameters, KV cache per token, ridge point)."""
    from gpt_batchprof.errors import ProfileError
    from gpt_batchprof.profiles import builtin_names, load_hardware, load_model
    from gpt_batchprof.report import export
    from gpt_batchprof.report.render import Views

    choice(fmt, FORMATS, "--format")
    if name in builtin_names("hardware"):
        spec, derived = load_hardware(name), {}
        derived = {"ridge_flop_per_byte": spec.ridge_point()}
    else:
        try:
            spec = load_model(name)
        except ProfileError as model_error:
            try:
                spec = load_hardware(name)
            except ProfileError:
                raise model_error from None
            derived = {"ridge_flop_per_byte": spec.ridge_point()}
        else:
            derived = {
                "n_params": spec.n_params,
                "n_params_non_embedding": spec.n_params_non_embedding,
                "kv_cache_bytes_per_token_fp16": spec.kv_bytes_per_token("fp16"),
            }
    data = spec.to_dict() | derived
    show(Views(json=lambda: data, csv=lambda: export.to_csv([data]),
               markdown=lambda: export.to_markdown([data], title=spec.name),
               table=lambda out: out.print(_show_table(spec.name, data))), fmt, None)


def _show_table(title: str, data: dict):
    from rich.table import Table

    from gpt_batchprof.units import fmt_bytes

    t = Table(title=escape(title), title_justify="left", show_header=False)
    t.add_column("field")
    t.add_column("value", justify="right")
    for k, v in data.items():
        if k == "kv_cache_bytes_per_token_fp16":
            v = f"{v:,.0f} B ({fmt_bytes(v)})"
        elif k in ("n_params", "n_params_non_embedding"):
            v = f"{v:,} ({v / 1e9:.3f} B)"
        elif k == "interconnect" and v:
            v = f"{v['name']}: {v['bandwidth_bytes_per_s'] / 1e9:g} GB/s per direction, {v['latency_s'] * 1e6:g} us"
        elif k == "engine" and v:
            v = (f"{v['name']}: {v['per_step_s'] * 1e6:g} us per step + {v['per_layer_s'] * 1e6:g} us per layer "
                 f"+ {v['per_request_s'] * 1e6:g} us per sequence")
        elif k == "measured" and v:
            src = v.get("source") or {}
            origin = (f"imported from {src.get('package')} {src.get('package_version')} ({src.get('framework')} "
                      f"{src.get('framework_version')})" if src else f"calibrated {v['date']}")
            v = f"{v['device_name']}, {origin}: {', '.join(v['tables'])}"
        elif isinstance(v, dict):
            v = ", ".join(f"{kk}: {vv / 1e12:g} T" for kk, vv in v.items())
        elif isinstance(v, float):
            v = f"{v:.6g}"
        t.add_row(k, escape(str(v)))
    return t
