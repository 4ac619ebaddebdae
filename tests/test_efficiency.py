"""Calibrated predictions from hand-made efficiency tables (no timing), and the `measured:` section."""

import json
import math

import pytest
import yaml
from typer.testing import CliRunner

from gpt_batchprof.analytic import Dtypes, Scenario, predict, serving_report
from gpt_batchprof.profiles.measured import Table
from gpt_batchprof.analytic.ops import matmul_cost
from gpt_batchprof.cli import app
from gpt_batchprof.errors import ProfileError
from gpt_batchprof.profiles import (
    hardware_from_mapping, load_hardware, measured_from_mapping, measured_to_yaml_mapping,
)

BASE = {"name": "hand", "kind": "cpu", "memory_gb": 16, "memory_bandwidth_gb_s": 100,
        "peak_tflops": {"fp32": 1}, "launch_overhead_us": 0}
# matmul.fp32: 1 GFLOP/s at m=1 and 2 GFLOP/s at m=4 (batch 4 costs twice batch 1), n = k = 1000 only;
# copy: 100 GB/s at every size. Overhead: 10 us per call.
MEASURED = {
    "device_name": "hand-made", "torch_version": "0", "threads": 1, "date": "2026-11-23",
    "overhead_us": {"eager": 10},
    "tables": {
        "matmul.fp32": {"unit": "GFLOP/s", "m": [1, 4], "n": [1000], "k": [1000], "values": [[[1]], [[2]]]},
        "copy": {"unit": "GB/s", "bytes": [1000, 1e9], "values": [100, 100]},
    },
}


def hw(measured=MEASURED):
    return hardware_from_mapping(BASE | ({"measured": measured} if measured else {}), "test")


def mm(m, n=1000, k=1000, launches=2):
    return matmul_cost("ffn_up", tokens=m, k=k, n=n, w_bytes=4, a_bytes=4, launches=launches,
                       compute_dtype="fp32", ctx=("decode", m, 1, 0))


def test_at_grid_points_the_table_gives_the_measured_time():
    # m=4: 2*4*1000*1000 = 8e6 FLOP per launch at 2 GFLOP/s = 4 ms, + 10 us overhead; 2 launches = 8.02 ms.
    # copy floor: (4*1000 + 1000*1000 + 4*1000) * 4 B = 4.032 MB at 100 GB/s = 40.3 us < 4 ms.
    p = predict(mm(4), hw())
    assert p.prediction == "calibrated" and not p.extrapolated
    assert p.time_s == pytest.approx(8.02e-3, rel=1e-9)
    # m=1: 2e6 FLOP at 1 GFLOP/s = 2 ms + 10 us; x2 = 4.02 ms
    assert predict(mm(1), hw()).time_s == pytest.approx(4.02e-3, rel=1e-9)


def test_between_grid_points_interpolates_log_rate_in_log_m():
    # m=2 is halfway between 1 and 4 in log m: rate = sqrt(1e9 * 2e9) = 1.41421356e9 FLOP/s;
    # 4e6 FLOP / 1.41421356e9 = 2.828427 ms, + 10 us, x2 launches = 5.676854 ms.
    p = predict(mm(2), hw())
    assert not p.extrapolated
    assert p.time_s == pytest.approx(2 * (4e6 / math.sqrt(2e18) + 10e-6), rel=1e-9)
    assert p.time_s == pytest.approx(5.676854e-3, rel=1e-6)


def test_outside_the_grid_clamps_to_the_edge_and_is_flagged():
    # m=8 > 4: the m=4 rate (2 GFLOP/s); 16e6 FLOP / 2e9 = 8 ms + 10 us; x2 = 16.02 ms
    p = predict(mm(8), hw())
    assert p.extrapolated
    assert p.time_s == pytest.approx(16.02e-3, rel=1e-9)
    assert predict(mm(4, n=2000), hw()).extrapolated  # n beyond the single measured 1000


def test_roofline_kept_alongside_and_decides_the_bound():
    # roofline of m=4: compute 2 * 8e6 / 1e12 = 16 us; memory 2 * 4.032e6 / 1e11 = 80.64 us -> memory-bound
    p = predict(mm(4), hw())
    assert p.roofline_time_s == pytest.approx(80.64e-6, rel=1e-9)
    assert p.bound == "memory"
    assert predict(mm(4), hw(), roofline_only=True).time_s == pytest.approx(80.64e-6, rel=1e-9)


def test_without_measured_section_predictions_are_todays_roofline(seed002_hw):
    # T4 article numbers: 1 x 4096 x 4096 fp16 matmul reads (4096 + 4096^2 + 4096) * 2 B = 33.57 MB
    # at 300 GB/s = 111.9 us; compute 2 * 4096^2 / 65e12 = 0.52 us: memory-bound, 111.9 us.
    c = matmul_cost("ffn_up", tokens=1, k=4096, n=4096, w_bytes=2, a_bytes=2, launches=1,
                    compute_dtype="fp16", ctx=("decode", 1, 1, 0))
    p = predict(c, seed002_hw)
    assert seed002_hw.measured is None
    assert p.prediction == "roofline" and not p.extrapolated
    assert p.time_s == p.roofline_time_s == pytest.approx((4096 * 2 + 4096**2) * 2 / 300e9, rel=1e-12)


def test_op_without_a_table_falls_back_to_the_roofline():
    # no bmm table in MEASURED: an MoE (grouped) matmul stays on the roofline, even with a matmul table
    # (a fused MoE kernel runs the experts grouped; separate GEMMs would price it 2-3x too slow on GPUs)
    c = matmul_cost("ffn_up", tokens=8, k=1000, n=1000, w_bytes=4, a_bytes=4, launches=1, compute_dtype="fp32",
                    ctx=("decode", 8, 1, 0), experts_touched=4.0, routes=2)
    assert predict(c, hw()).prediction == "roofline"
    # only a copy table: no table describes a matmul kernel, so it stays on the roofline
    only_copy = MEASURED | {"tables": {"copy": MEASURED["tables"]["copy"]}}
    assert predict(mm(4), hw(only_copy)).prediction == "roofline"


def test_unmeasured_cell_takes_the_dominated_cell_with_most_work_and_is_flagged():
    # cells (m, n): (1,1000)=1, (1,2000)=2, (4,1000)=3, (4,2000)=null -> takes (4,1000): product 4000 is the largest
    t = Table("matmul", "fp32", ((1.0, 4.0), (1000.0, 2000.0), (1000.0,)), (1e9, 2e9, 3e9, None))
    hit = t.lookup((4, 2000, 1000))
    assert hit.rate == pytest.approx(3e9) and hit.extrapolated
    assert not t.lookup((1, 2000, 1000)).extrapolated


def test_serving_report_gives_roofline_figures_too(tiny_model):
    sc = Scenario(prompt_len=8, gen_len=4, dtypes=Dtypes.of("fp32"))
    plain = serving_report(tiny_model, hw(None), sc, (1,)).points[0]
    cal = serving_report(tiny_model, hw(), sc, (1,)).points[0]
    assert plain.roofline_itl_s == plain.itl_s  # no tables: best = roofline
    assert cal.roofline_itl_s == pytest.approx(plain.itl_s) and cal.roofline_e2e_s == pytest.approx(plain.e2e_s)
    assert cal.itl_s != cal.roofline_itl_s


def test_yaml_round_trip_keeps_every_value():
    m = measured_from_mapping(MEASURED, "test")
    back = measured_from_mapping(yaml.safe_load(yaml.safe_dump(measured_to_yaml_mapping(m))), "test")
    assert back.tables["matmul.fp32"].values == (1e9, 2e9)
    assert back.overhead_s == {"eager": pytest.approx(10e-6)}


@pytest.mark.parametrize("path,value,field", [
    (("tables", "matmul.fp32", "values"), [[[1]]], "measured.tables.matmul.fp32.values"),
    (("tables", "matmul.fp32", "values"), [[[1]], [["x"]]], "measured.tables.matmul.fp32.values[1][0][0]"),
    (("tables", "matmul.fp32", "m"), [4, 1], "measured.tables.matmul.fp32.m"),
    (("tables", "matmul.fp32", "unit"), "GB/s", "measured.tables.matmul.fp32.unit"),
    (("overhead_us",), {"eager": -1}, "measured.overhead_us.eager"),
    (("threads",), None, "measured.threads"),
])
def test_malformed_measured_section_names_the_field(tmp_path, path, value, field):
    bad = json.loads(json.dumps(MEASURED))
    node = bad
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(BASE | {"measured": bad}))
    with pytest.raises(ProfileError, match=f"field '{field}'".replace("[", r"\[").replace("]", r"\]")):
        load_hardware(str(f))
    res = CliRunner().invoke(app, ["analyze", "-m", "gpt2", "-H", str(f)])
    assert res.exit_code == 2 and field in res.output and "Traceback" not in res.output


def test_unknown_table_kind_is_exit_2(tmp_path):
    bad = json.loads(json.dumps(MEASURED))
    bad["tables"]["gemm.fp32"] = bad["tables"].pop("matmul.fp32")
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(BASE | {"measured": bad}))
    res = CliRunner().invoke(app, ["analyze", "-m", "gpt2", "-H", str(f)])
    assert res.exit_code == 2 and "measured.tables.gemm.fp32" in res.output


def test_json_contract(tmp_path):
    f = tmp_path / "cal.yaml"
    f.write_text(yaml.safe_dump(BASE | {"measured": MEASURED}))
    for profile, source in ((str(f), "calibrated"), ("cpu-generic", "roofline")):
        res = CliRunner().invoke(app, ["analyze", "-m", "gpt2", "-H", profile, "--dtype", "fp32", "-b", "1,4",
                                       "-f", "json"])
        assert res.exit_code == 0, res.output
        d = json.loads(res.output)
        assert d["settings"]["prediction"] == source
        for row in d["ops"]:
            assert {"time_s", "roofline_time_s", "prediction", "extrapolated"} <= set(row)
        for row in d["summary"]:
            assert {"ttft_s", "itl_s", "e2e_s", "tokens_per_s", "roofline_ttft_s", "roofline_itl_s",
                    "roofline_e2e_s", "roofline_tokens_per_s"} <= set(row)
    # gpt2's decode FFN at batch 1 (m=1, n=3072, k=768: clamped to n=k=1000) is calibrated from the table
    res = CliRunner().invoke(app, ["analyze", "-m", "gpt2", "-H", str(f), "--dtype", "fp32", "-b", "1",
                                   "--phase", "decode", "--per-op", "-f", "json"])
    row = next(r for r in json.loads(res.output)["ops"] if r["op"] == "ffn_up")
    # 2 * 768 * 3072 FLOP per layer at the m=1 rate 1 GFLOP/s = 4.718592 ms + 10 us; 12 layers
    assert row["prediction"] == "calibrated" and row["extrapolated"]
    assert row["time_s"] == pytest.approx(12 * (2 * 768 * 3072 / 1e9 + 10e-6), rel=1e-9)


def test_calibrated_e2e_sums_the_decode_steps_without_walking_them():
    """The calibrated attention time is not linear in the cache length, so e2e cannot use the
    roofline's arithmetic series; it samples the steps (serving._sum_sampled). Held against
    the plain step-by-step sum over 2999 decode steps: within 1e-4."""
    from gpt_batchprof.analytic import step_time
    from gpt_batchprof.analytic.gpt import attention_ops
    from gpt_batchprof.analytic.ops import ATTENTION_OPS
    from gpt_batchprof.analytic.serving import latencies
    from gpt_batchprof.profiles import model_from_mapping

    model = model_from_mapping(
        {"name": "long", "n_layer": 2, "d_model": 256, "n_head": 8, "n_kv_head": 2, "d_ff": 512,
         "ffn": "swiglu", "vocab_size": 1000, "max_seq_len": 4096, "norm": "rmsnorm"}, "test")
    # GQA decode attention is a bmm of (batch x 2 kv heads) problems, m = 4 query heads, n = keys, k = 32;
    # its achieved rate grows with the keys (a power law between grid points), so time(L) curves.
    measured = MEASURED | {"tables": MEASURED["tables"] | {
        "bmm.fp32": {"unit": "GFLOP/s", "batch": [1, 8], "m": [1, 4], "n": [64, 512, 4096], "k": [32],
                     "values": [[[[0.5], [1.5], [3]], [[1], [3], [6]]], [[[1], [2], [4]], [[2], [5], [9]]]]},
        "softmax.fp32": {"unit": "GB/s", "bytes": [1e3, 1e6, 1e8], "values": [1, 10, 30]},
    }}
    dev = hw(measured)
    sc = Scenario(prompt_len=100, gen_len=3000, dtypes=Dtypes.of("fp32"), attention="unfused")
    ttft, _, e2e = latencies(model, dev, sc, 4)
    decode = sc.ops(model, "decode", 4)
    fixed = step_time(tuple(o for o in decode if o.op not in ATTENTION_OPS), dev)
    walked = ttft + sum(fixed + step_time(attention_ops(model, "decode", 4, 1, 100 + i, sc.dtypes, "unfused"), dev)
                        for i in range(2999))
    assert e2e == pytest.approx(walked, rel=1e-4)  # sampled: 4e-6 off; one step at the mean length: 3.5e-3 off
    assert predict(attention_ops(model, "decode", 4, 1, 1000, sc.dtypes, "unfused")[0], dev).prediction == "calibrated"
    # and the roofline figures beside it still come from the closed form
    assert latencies(model, dev, sc, 4, roofline_only=True)[2] == pytest.approx(latencies(model, hw(None), sc, 4)[2])
