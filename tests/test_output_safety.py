"""Issue 19: output that survives its surroundings (an ASCII-only terminal, a closed stdout,
an unwritable output path, an interrupted run) and numbers that cannot be impossible."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gpt_batchprof.cli.streams import ascii_for

ROOT = Path(__file__).resolve().parent.parent


def _cli(args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None, **kw):
    full_env = os.environ | {"PYTHONPATH": str(ROOT)} | (env or {})
    return subprocess.run([sys.executable, "-m", "gpt_batchprof", *args], env=full_env, cwd=cwd,
                          capture_output=True, timeout=120, **kw)


# --------------------------------------------------------------------------- ASCII fallback


@pytest.mark.parametrize("ch, plain", [("µ", "u"), ("≤", "<="), ("×", "x"), ("─", "-"), ("│", "|"),
                                       ("┼", "+"), ("━", "-"), ("█", "#"), ("▌", "#"), ("é", "e"),
                                       ("…", "..."), ("中", "?")])
def test_each_symbol_has_an_ascii_stand_in(ch, plain):
    assert ascii_for(ch) == plain


ASCII_ENV = {"PYTHONIOENCODING": "ascii", "LC_ALL": "C"}


@pytest.mark.parametrize("args, shown", [
    (["analyze", "-b", "1,2"], "---"),                       # the table rule, drawn in ASCII
    (["sweep", "-m", "gpt2", "-b", "1,2", "-s", "64", "--no-progress"], "117 us"),  # µs -> us
    (["simulate", "-n", "20", "-r", "5"], "<= 256 sequences"),  # ≤ -> <=
    (["profiles", "list"], "gpt2"),
])
def test_ascii_only_output_encoding_prints_ascii_not_a_traceback(args, shown):
    r = _cli(args, ASCII_ENV)
    assert r.returncode == 0, r.stderr.decode(errors="replace")[-800:]
    out = r.stdout.decode("ascii")  # raises if anything beyond ASCII got through
    r.stderr.decode("ascii")
    assert shown in out


def test_files_written_with_o_stay_utf8_under_an_ascii_terminal(tmp_path):
    r = _cli(["sweep", "-m", "gpt2", "-b", "1,2", "-s", "64", "--no-progress", "--export", "t.txt"],
             ASCII_ENV, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "117 µs" in (tmp_path / "t.txt").read_text(encoding="utf-8")
