"""calibrate's table measurement: end to end on a tiny grid, the busy check, the YAML it writes."""

import pytest
import yaml
from typer.testing import CliRunner

from gpt_batchprof.cli import app
from gpt_batchprof.errors import BatchprofError
from gpt_batchprof.measure import tables as T
from gpt_batchprof.measure.timing import FakeTimer, Measurement
from gpt_batchprof.profiles import load_hardware

pytest.importorskip("torch")

TINY = T.GridSpec(dtypes=("fp32",), matmul_m=(1, 4), matmul_nk=(64, 128), bmm_batch=(1,), bmm_m=(1,),
                  bmm_nk=(64,), sdpa_bh=(1,), sdpa_len=(64,), sdpa_hd=(64,), nbytes=(4096, 65536),
                  max_call_flops=1e8, max_call_bytes=2**22, warmup_s=0.001, rep_s=0.002)


def test_busy_warning_threshold_is_twenty_percent():
    assert T.busy_warning((1e-3, 1e-3), (1.15e-3, 0.9e-3)) is None  # 15% and 10% apart
    msg = T.busy_warning((1e-3, 1e-3), (1.3e-3, 1e-3))  # 30% apart
    assert msg and "30% apart > 20%" in msg and "--force" in msg


class SlowingTimer(FakeTimer):
    """The reference kernels take 50% longer the second time: a machine that got busy."""

    def measure(self, fn, *, warmup_s, rep_s, label=""):
        seen = self.calls.count(label)
        self.calls.append(label)
        t = 1e-3 * (1.5 if label.startswith("reference") and seen else 1.0)
        return Measurement((t,) * 5, 0, "fake")


def test_busy_machine_is_refused_unless_forced():
    with pytest.raises(BatchprofError, match="machine busy"):
        T.measure_tables("cpu", TINY, timer=SlowingTimer())
    m = T.measure_tables("cpu", TINY, timer=SlowingTimer(), force=True)
    assert m.warnings and "--force" in m.warnings[0]
    # every cell timed at 1 ms: matmul 1 x 64 x 64 = 8192 FLOP in (1 ms - overhead) -> about 8.2 MFLOP/s
    assert m.tables["matmul.fp32"].values[0] == pytest.approx(8192 / (1e-3 - m.overhead_s["eager"]))


def test_calibrate_quick_end_to_end_on_a_tiny_grid(tmp_path, monkeypatch):
    monkeypatch.setattr(T, "default_grid", lambda device, quick: TINY)
    out = tmp_path / "cal.yaml"
    res = CliRunner().invoke(app, ["calibrate", "--device", "cpu", "--quick", "--force", "-o", str(out)])
    assert res.exit_code == 0, res.output
    text = out.read_text()
    assert "measured:" in text and "matmul.fp32:" in text
    hw = load_hardware(str(out))
    assert {"copy", "matmul.fp32", "bmm.fp32", "layernorm.fp32", "rmsnorm.fp32", "softmax.fp32"} <= set(hw.measured.tables)
    section = yaml.safe_load(text)["measured"]
    assert {"device_name", "torch_version", "threads", "date"} <= set(section)
    res = CliRunner().invoke(app, ["analyze", "-m", "gpt2", "-H", str(out), "--dtype", "fp32", "-b", "1",
                                   "-f", "json"])
    assert res.exit_code == 0 and '"prediction": "calibrated"' in res.output
