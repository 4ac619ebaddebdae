"""Issue 19: output that survives its surroundings (an ASCII-only terminal, a closed stdout,
an unwritable output path, an interrupted run) and numbers that cannot be impossible."""

from __future__ import annotations

import os
import re
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
    (["sweep", "-m", "gpt2", "-b", "1,2", "-s", "64", "--no-progress"], r"[0-9] us "),  # µs -> us
    (["simulate", "-n", "20", "-r", "5"], "<= 256 sequences"),  # ≤ -> <=
    (["profiles", "list"], "gpt2"),
])
def test_ascii_only_output_encoding_prints_ascii_not_a_traceback(args, shown):
    r = _cli(args, ASCII_ENV)
    assert r.returncode == 0, r.stderr.decode(errors="replace")[-800:]
    out = r.stdout.decode("ascii")  # raises if anything beyond ASCII got through
    r.stderr.decode("ascii")
    assert re.search(shown, out)


def test_files_written_with_o_stay_utf8_under_an_ascii_terminal(tmp_path):
    r = _cli(["sweep", "-m", "gpt2", "-b", "1,2", "-s", "64", "--no-progress", "--export", "t.txt"],
             ASCII_ENV, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert re.search("[0-9] µs", (tmp_path / "t.txt").read_text(encoding="utf-8"))


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


# --------------------------------------------------------------------------- calibrated below the roofline


def _hand_hw(peak_tflops: float, bandwidth_gb_s: float, launch_us: float, overhead_us: float):
    from gpt_batchprof.profiles import hardware_from_mapping

    measured = {"device_name": "hand-made", "torch_version": "0", "threads": 1, "date": "2026-12-04",
                "overhead_us": {"eager": overhead_us},
                "tables": {"matmul.fp32": {"unit": "GFLOP/s", "m": [1, 4], "n": [1000], "k": [1000],
                                           "values": [[[1]], [[2]]]},
                           "copy": {"unit": "GB/s", "bytes": [1000, 1e9], "values": [100, 100]}}}
    return hardware_from_mapping({"name": "hand", "kind": "cpu", "memory_gb": 16,
                                  "memory_bandwidth_gb_s": bandwidth_gb_s, "peak_tflops": {"fp32": peak_tflops},
                                  "launch_overhead_us": launch_us, "measured": measured}, "test")


def _mm4():
    from gpt_batchprof.analytic.ops import matmul_cost

    return matmul_cost("ffn_up", tokens=4, k=1000, n=1000, w_bytes=4, a_bytes=4, launches=1,
                       compute_dtype="fp32", ctx=("decode", 4, 1, 0))


def test_a_calibrated_time_within_the_roofline_carries_no_flag():
    from gpt_batchprof.analytic import predict

    # table: 8e6 FLOP at 2 GFLOP/s = 4 ms + 10 us; roofline at 1 TFLOP/s, 100 GB/s, 0 us: 40.3 us
    p = predict(_mm4(), _hand_hw(1, 100, 0, 10))
    assert p.time_s == pytest.approx(4.01e-3) and p.roofline_time_s == pytest.approx(40.32e-6)
    assert p.below_roofline == ""


def test_a_calibrated_time_below_the_roofline_says_why():
    from gpt_batchprof.analytic import predict

    # profile peak 0.001 TFLOP/s (1 GFLOP/s) but the table achieved 2 GFLOP/s at m=4: roofline
    # 8e6 / 1e9 = 8 ms + 50 us launch; calibrated 4 ms + 10 us. Bytes 4.032 MB at 100 GB/s either way.
    p = predict(_mm4(), _hand_hw(0.001, 100, 50, 10))
    assert p.time_s == pytest.approx(4.01e-3) and p.roofline_time_s == pytest.approx(8.05e-3)
    assert p.below_roofline == ("matmul.fp32 achieves 0.002 TFLOP/s, above the profile's peak 0.001; "
                                "measured overhead 10 us per kernel, below the profile's 50 us")


def test_the_json_row_and_the_table_flag_it(tmp_path):
    import json

    from gpt_batchprof.report.rows import op_row
    from gpt_batchprof.analytic import predict

    row = op_row(predict(_mm4(), _hand_hw(0.001, 100, 50, 10)))
    assert row["below_roofline"].startswith("matmul.fp32 achieves 0.002 TFLOP/s")
    assert op_row(predict(_mm4(), _hand_hw(1, 100, 0, 10)))["below_roofline"] is None


def test_analyze_warns_under_the_roofline_table(tmp_path):
    import yaml
    from typer.testing import CliRunner

    from gpt_batchprof.cli import app

    measured = {"device_name": "hand-made", "torch_version": "0", "threads": 1, "date": "2026-12-04",
                "overhead_us": {"eager": 1},
                "tables": {"matmul.fp32": {"unit": "GFLOP/s", "m": [1, 4], "n": [1000], "k": [1000],
                                           "values": [[[1]], [[2]]]},
                           "copy": {"unit": "GB/s", "bytes": [1000, 1e9], "values": [100, 100]}}}
    slow = {"name": "slow-peaks", "kind": "cpu", "memory_gb": 16, "memory_bandwidth_gb_s": 10,
            "peak_tflops": {"fp32": 0.001}, "launch_overhead_us": 50, "measured": measured}
    p = tmp_path / "slow.yaml"
    p.write_text(yaml.safe_dump(slow))
    r = CliRunner().invoke(app, ["analyze", "-m", "gpt2", "-H", str(p), "--dtype", "fp32", "-b", "1",
                                 "--prompt-len", "16", "--gen-len", "4"])
    assert r.exit_code == 0, r.output
    assert "note: some calibrated times are below their roofline" in " ".join(r.stdout.split())


# --------------------------------------------------------------------------- measured tables beyond the peaks


def _with_table(matmul_gflops: float, copy_gb_s: float):
    from gpt_batchprof.profiles import hardware_from_mapping

    measured = {"device_name": "hand-made", "torch_version": "0", "threads": 1, "date": "2026-12-04",
                "overhead_us": {"eager": 1},
                "tables": {"matmul.fp32": {"unit": "GFLOP/s", "m": [1], "n": [1000], "k": [1000],
                                           "values": [[[matmul_gflops]]]},
                           "copy": {"unit": "GB/s", "bytes": [1000], "values": [copy_gb_s]}}}
    # peak 1 TFLOP/s fp32, 100 GB/s
    return hardware_from_mapping({"name": "hand", "kind": "cpu", "memory_gb": 16, "memory_bandwidth_gb_s": 100,
                                  "peak_tflops": {"fp32": 1}, "measured": measured}, "hw.yaml")


def test_table_rates_within_the_margins_are_kept():
    hw = _with_table(3900, 4900)  # 3.9x the peak FLOP/s, 49x the bandwidth (cache-resident copies)
    assert hw.measured.table("matmul", "fp32").values == (3.9e12,)


@pytest.mark.parametrize("gflops, gb_s, message", [
    (1e9, 100, "hw.yaml: field 'measured.tables.matmul.fp32': 1e+09 GFLOP/s is 1e+06x the profile's peak fp32 "
               "(1 TFLOP/s); no device beats its ceiling by more than 4x"),
    (4100, 100, "'measured.tables.matmul.fp32': 4100 GFLOP/s is 4.1x"),
    (100, 5100, "'measured.tables.copy': 5100 GB/s is 51x the profile's memory bandwidth (100 GB/s)"),
])
def test_table_rates_no_device_reaches_are_refused(gflops, gb_s, message):
    from gpt_batchprof.errors import ProfileError

    with pytest.raises(ProfileError) as e:
        _with_table(gflops, gb_s)
    assert message in str(e.value)


def test_profiles_show_a_calibrated_profile_names_its_tables():
    r = _cli(["profiles", "show", str(ROOT / "docs/results/cpu-2core-epyc-tables-1thread.yaml")])
    assert r.returncode == 0, r.stderr.decode()[-500:]
    out = r.stdout.decode()
    assert "AMD EPYC" in out and "matmul.fp32" in out


def test_calibrate_raises_a_peak_its_own_tables_beat():
    """A busy machine measured fp32's peak at 0.9 GFLOP/s while the matmul table reached 23:
    the written profile's peak is the tables' best, so its roofline stays a ceiling."""
    from gpt_batchprof.measure.calibrate import Calibration

    hw = _with_table(23.19, 10)  # a measured section: matmul.fp32 23.19 GFLOP/s
    cal = Calibration("cpu", "test", "0", 1, {"fp32": 0.9e9, "bf16": 2e9}, {"fp32": 256, "bf16": 256},
                      10e9, 1e-6, 16e9, 0)
    assert cal.to_hardware(measured=hw.measured).peak_flops_per_s == {"fp32": 23.19e9, "bf16": 2e9}
    assert cal.to_hardware().peak_flops_per_s == {"fp32": 0.9e9, "bf16": 2e9}


def test_an_interrupted_sweep_keeps_an_earlier_export_and_plots(tmp_path, monkeypatch):
    import dataclasses

    from typer.testing import CliRunner

    import gpt_batchprof.sweep.run as run
    from gpt_batchprof.cli import app

    real = run.run_sweep
    monkeypatch.setattr(run, "run_sweep", lambda *a, **k: dataclasses.replace(real(*a, **k), interrupted=True))
    (tmp_path / "s.json").write_text("a complete earlier export\n")
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "gpt-time.png").write_bytes(b"an earlier plot")
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(app, ["sweep", "-m", "gpt2", "-b", "1,2", "-s", "64", "--no-progress", "-f", "json",
                                 "--export", "s.json", "--plot", "plots"])
    assert r.exit_code == 130, r.output
    assert (tmp_path / "s.json").read_text() == "a complete earlier export\n"
    assert (tmp_path / "plots" / "gpt-time.png").read_bytes() == b"an earlier plot"
    assert '"rows"' in (tmp_path / "s.partial.json").read_text()
    assert (tmp_path / "plots.partial" / "gpt-time.png").exists()


# --------------------------------------------------------------------------- the one table of limits


@pytest.mark.parametrize("options, message", [
    ({"threads": 4097}, "--threads: must be between 1 and 4096, got 4097"),
    ({"threads": 0}, "--threads: must be between 1 and 4096, got 0"),
    ({"requests": 10_000_001}, "--requests: at most 10000000 (about 20 minutes of simulation"),
    ({"duration": 1.5e6}, "--duration: at most 1000000 (11.6 days of simulated time), got 1500000"),
    ({"rate_points": 1001}, "--rate-points: at most 1000"),
    ({"micro_batches": 65537}, "--micro-batches: at most 65536"),
])
def test_the_limits_table_refuses_each_option_past_its_bound(options, message):
    from gpt_batchprof.cli.common import check_numbers
    from gpt_batchprof.errors import BatchprofError

    with pytest.raises(BatchprofError) as e:
        check_numbers(options)
    assert str(e.value).startswith(message)


def test_the_limits_table_keeps_values_at_the_bounds_and_options_it_does_not_know():
    from gpt_batchprof.cli.common import check_numbers

    check_numbers({"threads": 4096, "requests": 10_000_000, "duration": 1e6, "tp": 1024, "seed": 123456789,
                   "threads_unset": None})


def test_the_progress_bar_draws_on_stderr_and_shows_the_eta_only_when_asked():
    # every long command's bar comes from cli/common.progress_bar: on stderr, so stdout stays the result
    from rich.progress import TimeRemainingColumn

    from gpt_batchprof.cli.common import err_console, progress_bar

    kinds = lambda bar: [type(c).__name__ for c in bar.columns]  # noqa: E731
    plain = progress_bar()  # bench, generate, simulate: transient, no ETA
    assert plain.console is err_console and plain.live.transient and not plain.disable
    assert kinds(plain) == ["TextColumn", "BarColumn", "MofNCompleteColumn", "TimeElapsedColumn"]
    sweep = progress_bar(False, eta=True, transient=False)  # sweep: stays on screen, with the time remaining
    assert sweep.disable and not sweep.live.transient
    assert any(isinstance(c, TimeRemainingColumn) for c in sweep.columns)
