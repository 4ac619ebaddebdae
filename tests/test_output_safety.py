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


# --------------------------------------------------------------------------- output paths first


def _read_only_folder(monkeypatch, folder: Path) -> None:
    """``folder`` behaves as a read-only mount: creating a file in it fails (even for root)."""
    import errno
    import tempfile

    real = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kw):
        if dir is not None and Path(dir).resolve() == folder.resolve():
            raise OSError(errno.EROFS, "Read-only file system")
        return real(*args, dir=dir, **kw)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


@pytest.mark.parametrize("args", [
    ["generate", "-m", "gpt2", "-o", "ro/gen.json"],
    ["bench", "-m", "gpt2", "-o", "ro/bench.json"],
    ["calibrate", "--quick", "-o", "ro/mine.yaml"],
    ["sweep", "-m", "gpt2", "-b", "1", "-s", "64", "--no-progress", "--export", "ro/s.json", "-f", "json"],
    ["sweep", "-m", "gpt2", "-b", "1", "-s", "64", "--no-progress", "--plot", "ro/plots"],
])
def test_an_unwritable_output_is_refused_before_any_work(args, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import gpt_batchprof.measure.calibrate as calibrate
    import gpt_batchprof.measure.device as device
    import gpt_batchprof.sweep.run as run
    from gpt_batchprof.cli import app

    def work(*a, **k):
        raise AssertionError("work started before the output path was checked")

    for mod, name in ((device, "resolve_device"), (calibrate, "calibrate_with_tables"), (run, "run_sweep")):
        monkeypatch.setattr(mod, name, work)
    (tmp_path / "ro").mkdir()
    _read_only_folder(monkeypatch, tmp_path / "ro")
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit)
    assert "cannot write into ro (Read-only file system)" in r.stderr
    assert list((tmp_path / "ro").iterdir()) == []


# --------------------------------------------------------------------------- trace clocks


def test_epoch_timestamps_are_rebased_to_the_first_arrival():
    from gpt_batchprof.simulate.workload import Request, rebase_trace

    # at 1.7e9 s a float resolves 2^-22 s = 0.24 us: too coarse for microsecond steps
    reqs = (Request(1733320000.0, 8, 2), Request(1733320000.25, 8, 2), Request(1733320000.5, 8, 2))
    out, shift = rebase_trace(reqs, "t.csv")
    assert shift == 1733320000.0
    assert [r.arrival_s for r in out] == [0.0, 0.25, 0.5]


def test_a_trace_on_its_own_clock_is_left_alone():
    from gpt_batchprof.simulate.workload import Request, rebase_trace

    reqs = (Request(5.0, 8, 2), Request(6.5, 8, 2))  # 5 s in: an idle start the user meant
    assert rebase_trace(reqs, "t.csv") == (reqs, 0.0)


def test_a_trace_spanning_more_than_a_float_resolves_is_refused():
    from gpt_batchprof.errors import BatchprofError
    from gpt_batchprof.simulate.workload import Request, rebase_trace

    # epoch nanoseconds read as seconds: 1.7e18 "s" apart by 5e8 "s"
    reqs = (Request(1.7e18, 8, 2), Request(1.7e18 + 5e8, 8, 2))
    with pytest.raises(BatchprofError, match=r"t.csv: arrival_s spans 5e\+08 s .* in ms or ns\?"):
        rebase_trace(reqs, "t.csv")


def _trace_json(tmp_path, name: str, start: float, extra: list[str] = ()) -> dict:
    import json

    p = tmp_path / name
    gaps = (0.0, 0.125, 0.5, 0.75, 2.0)
    p.write_text("arrival_s,prompt_len,gen_len\n" + "".join(f"{start + g!r},64,8\n" for g in gaps))
    r = _cli(["simulate", "-m", "gpt2", "--trace", str(p), "-f", "json", *extra])
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_an_epoch_trace_gives_the_latencies_of_the_same_trace_from_zero(tmp_path):
    """The server does not care when the clock started: latencies must match to the last bit
    (before the rebase, they were multiples of the 0.24 us a float resolves at 1.7e9 s)."""
    at_zero = _trace_json(tmp_path, "zero.csv", 0.0)
    at_epoch = _trace_json(tmp_path, "epoch.csv", 1733320000.0)
    for key in ("ttft_s", "itl_s", "e2e_s"):
        assert [q[key] for q in at_epoch["requests"]] == [q[key] for q in at_zero["requests"]]


def test_duration_stops_a_trace_too(tmp_path):
    """Arrivals at 0, 0.125, 0.5, 0.75 and 2 s: --duration 1 sends the first four."""
    assert len(_trace_json(tmp_path, "t.csv", 0.0, ["--duration", "1"])["requests"]) == 4
    assert len(_trace_json(tmp_path, "t.csv", 0.0)["requests"]) == 5
