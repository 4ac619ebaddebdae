"""The one renderer behind every ``--format``: a result's views, and :func:`render` that picks one.

Each command describes its result once as :class:`Views` (what JSON holds, the CSV rows, the
Markdown, the Rich tables; the CLI's ``common.render`` builds them from keyword arguments);
:func:`render` turns them into text for a file or a pipe, and the CLI's ``show`` prints the
tables straight to a terminal or hands the text to the one writer. Nothing here writes files.
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


# --------------------------------------------------------------------------- sweep


def sweep_views(rows: Sequence[Any], spec: Any, columns: Sequence[str], summary: Any) -> Views:
    """``rows``: the sweep's rows (``sweep.rows.SweepRow``); ``columns``: the fields to export
    (those holding a value in some row); ``summary``: what sweep.results.summarise says about
    the rows (the tables show it)."""
    from gpt_batchprof.report.sweep_tables import print_summary

    cols = list(columns)
    records = lambda: [{c: getattr(r, c) for c in cols} for r in rows]  # noqa: E731
    return Views(
        json=lambda: {"sweep": asdict(spec), "rows": records()},
        csv=lambda: export.to_csv(records(), cols),
        markdown=lambda: export.to_markdown(records(), cols, title=f"sweep {spec.name}"),
        table=lambda out: print_summary(out, summary),
    )
