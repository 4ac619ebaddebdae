"""Live sweeps on the CPU, killed for real: SIGKILL then --resume, and SIGINT (exit 130)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gpt_batchprof.sweep.store import read_rows

pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[1]
N_POINTS = 4 * 8  # widths x batches
# each point is one timed kernel (a 40 ms budget, fewer when the repetition cap is reached first): about
# 3 s in all on one thread, slow enough to stop partway. Narrower MLPs (64..160) hit the cap and finished
# all 32 points in 0.7 s, before SIGINT arrived, on a quiet machine.
ARGS = ["sweep", "--workload", "mlp", "--width", "512,768,1024,1536", "-b", "1..128", "--depth", "2",
        "--mode", "both", "--device", "cpu", "--warmup-ms", "5", "--rep-ms", "40", "--no-progress"]


def start(out: Path, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    # A job started in the background by a non-interactive shell (nohup, `cmd &` in a CI script) inherits
    # SIGINT ignored, and Python then never raises KeyboardInterrupt: restore the default in the child.
    return subprocess.Popen([sys.executable, "-m", "gpt_batchprof", *ARGS, "-o", str(out), *extra], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_for_rows(out: Path, n: int, proc: subprocess.Popen, timeout: float = 15.0) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if out.exists() and out.read_text().count("\n") >= n + 1:  # header + n rows
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    raise AssertionError("sweep wrote too few rows in time")


def test_sigkill_then_resume_gives_every_point_exactly_once(tmp_path):
    out = tmp_path / "live.csv"
    proc = start(out)
    wait_for_rows(out, 4, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    before = read_rows(out)  # readable after kill -9 (a torn last line is ignored)
    assert 4 <= len(before) < N_POINTS
    assert all(r.measured_time_s > 0 for r in before)

    done = subprocess.run([sys.executable, "-m", "gpt_batchprof", *ARGS, "-o", str(out), "--resume"], cwd=ROOT,
                          capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=60)
    assert done.returncode == 0, done.stderr
    rows = read_rows(out)
    keys = [r.key() for r in rows]
    assert len(keys) == len(set(keys)) == N_POINTS
    assert {r.batch for r in rows} == {1, 2, 4, 8, 16, 32, 64, 128}
    assert out.read_text().count("workload,model") == 1
    assert f"{N_POINTS - len(before)} new point(s), {len(before)} kept" in done.stderr
    assert all(r.torch_version and r.device != "analytic" for r in rows)


def test_sigint_stops_cleanly_with_exit_130(tmp_path):
    out = tmp_path / "live.jsonl"
    proc = start(out)
    wait_for_rows(out, 3, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    text = out.read_text()
    assert text.endswith("\n")  # no torn line: the interrupted point is simply not written
    rows = read_rows(out)
    assert 3 <= len(rows) < N_POINTS
