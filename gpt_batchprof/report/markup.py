"""Rich markup of a kernel's bound (compute, memory, overhead) in the report's tables."""

from __future__ import annotations

BOUND_STYLE = {"compute": "green", "memory": "yellow", "overhead": "magenta", "oom": "red", "skipped": "dim"}


BOUND_SHORT = {"compute": "comp", "memory": "mem", "overhead": "ovh"}


def bound_markup(bound: str, short: bool = False) -> str:
    style = BOUND_STYLE.get(bound, "")
    text = BOUND_SHORT.get(bound, bound) if short else bound
    return f"[{style}]{text}[/]" if style else text
