"""The one renderer behind every ``--format``: a result's views, and :func:`render` that picks one.

Each command describes its result once as :class:`Views` (what JSON holds, the CSV rows, the
Markdown, the Rich tables); :func:`render` turns them into text for a file or a pipe, and
the CLI's ``show`` prints the tables straight to a terminal. Nothing here writes files.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

from gpt_batchprof.report import export


@dataclass(frozen=True, slots=True)
class Views:
    json: Callable[[], Any]  # the object written as JSON
    csv: Callable[[], str]
    markdown: Callable[[], str]
    table: Callable[[Any], None]  # prints Rich tables to the console it is given


def render(views: Views, fmt: str, width: int = 120) -> str:
    """The text of one format: json, csv, markdown, or the tables without colour."""
    if fmt == "json":
        return export.to_json(views.json())
    if fmt == "csv":
        return views.csv()
    if fmt == "markdown":
        return views.markdown()
    if fmt != "table":
        raise ValueError(f"unknown format {fmt!r}")
    from rich.console import Console

    buf = io.StringIO()
    views.table(Console(file=buf, width=width, color_system=None, soft_wrap=False))
    return buf.getvalue()


# --------------------------------------------------------------------------- analyze


def analyze_views(result: Any, per_op: bool) -> Views:
    from gpt_batchprof.report.rows import analyze_dict, op_row, report_fields, summary_row

    def summary() -> list[dict[str, Any]]:
        return [summary_row(p) for p in result.report.points]

    def ops() -> list[dict[str, Any]]:
        return [op_row(p) for p in result.predictions]

    def markdown() -> str:
        sections = [("Serving figures per batch", summary())] + ([("Operators", ops())] if per_op else [])
        extra = "\n" + "".join(f"{k}: {v}\n" for k, v in report_fields(result.report).items())
        return export.markdown_sections(sections) + extra

    return Views(json=lambda: analyze_dict(result), csv=lambda: export.to_csv(ops() if per_op else summary()),
                 markdown=markdown, table=lambda out: _analyze_tables(out, result, per_op))


def _analyze_tables(out: Any, result: Any, per_op: bool) -> None:
    from gpt_batchprof.report import tables

    tables.header(out, result.model, result.hardware, result.scenario)
    out.print()
    out.print(tables.summary_table(result.report, result.hardware))
    out.print()
    out.print(tables.memory_table(result.report, result.hardware))
    tables.summary_footer(out, result.report)
    if per_op:
        for phase in result.phases:
            preds = [p for p in result.predictions if p.cost.phase == phase]
            c = preds[0].cost
            what = f"prompt {c.seq_len}" if phase == "prefill" else f"{c.kv_len} cached tokens"
            out.print()
            out.print(tables.ops_table(preds, f"{phase} operators ({what}; all layers)"))


# --------------------------------------------------------------------------- bench


def bench_views(result: Any) -> Views:
    from gpt_batchprof.report import bench_tables
    from gpt_batchprof.report.rows import bench_dict, bench_row_dict

    return Views(json=lambda: bench_dict(result), csv=lambda: export.to_csv([bench_row_dict(r) for r in result.rows]),
                 markdown=lambda: bench_tables.bench_markdown(result),
                 table=lambda out: bench_tables.print_bench(out, result))


# --------------------------------------------------------------------------- sweep


def sweep_views(rows: Sequence[dict[str, Any]], spec: Any, columns: Sequence[str]) -> Views:
    """``columns``: the row fields to export (those holding a value in some row)."""
    from gpt_batchprof.report.sweep_tables import print_summary

    cols = list(columns)
    return Views(
        json=lambda: {"sweep": asdict(spec), "rows": [{c: r.get(c) for c in cols} for r in rows]},
        csv=lambda: export.to_csv(rows, cols),
        markdown=lambda: export.to_markdown(rows, cols, title=f"sweep {spec.name}"),
        table=lambda out: print_summary(out, rows),
    )
