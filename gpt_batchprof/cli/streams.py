"""The standard streams as the commands find them: an output encoding that cannot show the
tables' symbols (µs, ≤, ×, box rules, bars), and a stdout that was closed before we started.

:func:`prepare_streams` runs once, before any command: a stream whose encoding cannot write
our symbols gets an error handler that writes an ASCII stand-in for each (``µ`` -> ``u``,
``≤`` -> ``<=``, box rules -> ``-`` / ``|`` / ``+``, bars -> ``#``) instead of raising
UnicodeEncodeError mid-table; a closed stdout (``>&-``, where Python sets ``sys.stdout`` to
None) becomes a stream whose first write raises BrokenPipeError, so the command ends the way
every closed pipe does: one line, exit 2. Files written with ``-o`` stay UTF-8.
"""

from __future__ import annotations

import codecs
import io
import sys
import unicodedata

ERRORS = "gpt-batchprof-ascii"

# what the reports print, and what a reader of plain ASCII understands in its place
ASCII = {
    "µ": "u", "μ": "u", "≤": "<=", "≥": ">=", "×": "x", "…": "...", "—": "-", "–": "-", "−": "-",
    "≈": "~", "→": "->", "←": "<-", "·": ".", "•": "*", "±": "+-", "²": "^2", "³": "^3", "√": "sqrt",
    "∞": "inf", "≠": "!=", "✓": "ok", "✗": "x", "✔": "ok", "✘": "x", "°": "deg", "‰": "/1000",
    "‘": "'", "’": "'", "“": '"', "”": '"', "\u00a0": " ", "\u2009": " ", "\u202f": " ",
}


def ascii_for(ch: str) -> str:
    """The ASCII stand-in of one character the output encoding cannot write."""
    if ch in ASCII:
        return ASCII[ch]
    name = unicodedata.name(ch, "")
    if name.startswith("BOX DRAWINGS"):
        horizontal, vertical = "HORIZONTAL" in name, "VERTICAL" in name
        if horizontal and not vertical:
            return "-"
        if vertical and not horizontal:
            return "|"
        return "+"
    if name.startswith(("BLOCK", "FULL BLOCK", "LEFT ", "RIGHT ", "UPPER ", "LOWER ")) and "BLOCK" in name:
        return "#"
    if name.startswith(("BLACK", "WHITE")) and ("SQUARE" in name or "CIRCLE" in name):
        return "o"
    plain = unicodedata.normalize("NFKD", ch).encode("ascii", "ignore").decode("ascii")
    return plain or "?"


def _handler(err: UnicodeError) -> tuple[str, int]:
    if not isinstance(err, UnicodeEncodeError):
        raise err
    return "".join(ascii_for(ch) for ch in err.object[err.start:err.end]), err.end


try:
    codecs.lookup_error(ERRORS)
except LookupError:
    codecs.register_error(ERRORS, _handler)


class ClosedStdout:
    """Stands in for a stdout that was closed before we started: writing to it is a broken pipe."""

    encoding = "utf-8"
    errors = "strict"
    attempted = False  # set once something tried to print: the run then ends as a broken pipe

    def __init__(self, fd: int | None = None):
        self._fd = fd  # /dev/null put on fd 1, for libraries that redirect a broken stdout by its fd

    def write(self, text: str) -> int:
        if not text:
            return 0
        ClosedStdout.attempted = True
        # no errno: click swallows an EPIPE OSError into a silent exit 1; this one reaches our handlers
        raise BrokenPipeError("stdout is closed")

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        if self._fd is None:
            raise io.UnsupportedOperation("stdout is closed")  # what an in-memory stream says
        return self._fd


def can_show(stream: object, text: str = "µ≤×─█") -> bool:
    encoding = getattr(stream, "encoding", None) or "utf-8"
    try:
        text.encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def _devnull_on_fd1() -> int | None:
    """Put /dev/null on the closed fd 1 (so nothing else opened later lands there and gets our
    output); None where that cannot be done."""
    import os

    try:
        fd = os.open(os.devnull, os.O_WRONLY)
        if fd != 1:
            os.dup2(fd, 1)
            os.close(fd)
        return 1
    except OSError:
        return None


def prepare_streams() -> None:
    """Make stdout and stderr safe for every command (see the module's docstring)."""
    if sys.stdout is None:
        sys.stdout = ClosedStdout(_devnull_on_fd1())  # type: ignore[assignment]
    for stream in (sys.stdout, sys.stderr):
        if stream is None or can_show(stream):
            continue
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            try:
                reconfigure(errors=ERRORS)
            except (ValueError, OSError):  # pragma: no cover - a stream that cannot change
                pass
