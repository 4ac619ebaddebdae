"""Machine-readable exports: JSON, CSV and Markdown of plain rows (dicts of SI values)."""

from __future__ import annotations

import csv
import io
import json
import math
from typing import Any, Iterable, Mapping, Sequence

FORMATS = ("table", "json", "csv", "markdown")


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, Mapping):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    return v


def to_json(obj: Any) -> str:
    return json.dumps(_clean(obj), indent=2) + "\n"


def _columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    cols: list[str] = []
    for r in rows:
        for k in r:
            if k not in cols:
                cols.append(k)
    return cols


def _cell(v: Any) -> Any:
    if isinstance(v, Mapping):
        return json.dumps(_clean(v), separators=(",", ":"))
    if v is None:
        return ""
    return v


def to_csv(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    cols = list(columns or _columns(rows))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: _cell(r.get(k)) for k in cols})
    return buf.getvalue()


def _md_cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(_cell(v)).replace("|", "\\|")


def to_markdown(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None, title: str = "") -> str:
    cols = list(columns or _columns(rows))
    out = [f"### {title}\n"] if title else []
    out.append("| " + " | ".join(cols) + " |")
    out.append("|" + "|".join("---" for _ in cols) + "|")
    out += ["| " + " | ".join(_md_cell(r.get(k)) for k in cols) + " |" for r in rows]
    return "\n".join(out) + "\n"


def markdown_sections(sections: Iterable[tuple[str, Sequence[Mapping[str, Any]]]]) -> str:
    return "\n".join(to_markdown(rows, title=title) for title, rows in sections if rows)
