"""Built-in GPU profiles predict from kernels NVIDIA measured (aiconfigurator-core), and
`calibrate --from aiconfigurator` rebuilds those tables from the installed package.

Numbers below are the published latencies of aiconfigurator-core 0.12.0 (systems/data/h100_sxm,
vLLM 0.24.0), read once from its parquet files; at a kept grid point, in --launch graphs mode, the
prediction must give them back (rates are stored net of the 0.5 us in-graph gap, to 4 digits).
"""

import dataclasses
import json

import pytest
from typer.testing import CliRunner

from gpt_batchprof.analytic import Dtypes, predict
from gpt_batchprof.analytic.gpt import attention_ops
from gpt_batchprof.analytic.ops import OpCost, OpShape
from gpt_batchprof.cli import app
from gpt_batchprof.profiles import load_hardware, measured_to_yaml_mapping, model_from_mapping

runner = CliRunner()


def run(*args):
    return runner.invoke(app, list(args))


def test_h100_gemm_at_a_kept_grid_point_gives_back_the_published_latency():
    # gemm_perf.parquet: bfloat16, torch.nn.functional.linear, m=16 n=4096 k=4096 -> 0.015543 ms.
    # An fp16 matmul reads the bf16 table (dtype_aliases: fp16 -> bf16).
    hw = load_hardware("h100-sxm")
    cost = OpCost("qkv_proj", "decode", 16, 1, 0, 2.0 * 16 * 4096 * 4096, (16 * 4096 * 2 + 4096 * 4096) * 2,
                  4096 * 4096 * 2, 1, "fp16", OpShape(m=16, n=4096, k=4096))
    p = predict(cost, hw, "graphs")
    assert p.prediction == "calibrated" and not p.extrapolated and p.tables == ("matmul.bf16",)
    assert p.time_s == pytest.approx(15.543e-6, rel=1e-3)
    # the roofline beside it: 33.6 MB of weights at 3.35 TB/s = 10.03 us + 0.5 us gap, 32% optimistic
    assert p.roofline_time_s == pytest.approx(33_816_576 / 3350e9 + 0.5e-6, rel=1e-9)


def test_h100_decode_attention_at_a_kept_grid_point_gives_back_the_published_latency():
    # generation_attention_perf.parquet: vllm_flash_attn_fa3, batch 8, 32 heads, 8 K/V heads, head_dim 128,
    # step 2047 (2047 cached + 1 new = 2048 keys) -> 0.040443 ms; grid point (batch x K/V heads 64, 2048, 4, 128)
    model = model_from_mapping({"name": "probe", "n_layer": 1, "d_model": 4096, "n_head": 32, "n_kv_head": 8,
                                "d_ff": 14336, "ffn": "swiglu", "vocab_size": 32000, "max_seq_len": 8192,
                                "norm": "rmsnorm"}, "probe")
    (cost,) = attention_ops(model, "decode", 8, 1, 2047, Dtypes.of("bf16"), "fused")
    p = predict(cost, load_hardware("h100-sxm"), "graphs")
    assert p.prediction == "calibrated" and p.tables == ("attn_decode.bf16",) and not p.extrapolated
    assert p.time_s == pytest.approx(40.443e-6, rel=1e-3)
    # the roofline: K and V of 8 x 8 heads x 2048 keys x 128 x 2 B (67.1 MB) at 3.35 TB/s = 20.0 us + 0.5 us:
    # half the measured time (small attention kernels do not reach the bandwidth)
    assert p.roofline_time_s < 0.55 * p.time_s


def test_analyze_on_a_builtin_gpu_predicts_from_the_imported_tables_with_the_roofline_beside():
    r = run("analyze", "-m", "llama-3-8b", "-H", "h100-sxm", "-b", "1,64", "-f", "json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["settings"]["prediction"] == "calibrated"
    src = d["hardware"]["measured"]["source"]
    assert src["package"] == "aiconfigurator-core" and src["framework"] == "vllm" and src["gpu"] == "h100_sxm"
    for row in d["summary"]:
        # measured kernels are slower than the datasheet ceilings: the roofline is the optimistic side
        assert row["roofline_itl_s"] < row["itl_s"] and row["roofline_ttft_s"] < row["ttft_s"]
    r = run("analyze", "-m", "llama-3-8b", "-H", "h100-sxm", "-b", "1")
    assert r.exit_code == 0 and "aiconfigurator-core" in r.output and "roofline" in r.output


def test_measured_interconnect_prices_the_all_reduce_and_the_datasheet_link_is_its_roofline():
    # h100-sxm: measured all-reduce link 234.6 GB/s, 0.3367 us per ring step (vLLM custom all-reduce, 8 GPUs);
    # datasheet NVLink 450 GB/s, 1 us. TP 2, one 8 MB message: ring 2 (n-1)/n = 1 x 8e6 B.
    hw = load_hardware("h100-sxm")
    cost = OpCost("tp_allreduce", "decode", 1, 1, 0, 0.0, 8e6, 0.0, 1, "fp16",
                  OpShape(m=1, n=4096, k=0, ranks=2))
    p = predict(cost, hw, "graphs")
    assert p.time_s == pytest.approx(8e6 / 234.6e9 + 2 * 0.3367e-6, rel=1e-6)
    assert p.roofline_time_s == pytest.approx(8e6 / 450e9 + 2 * 1.0e-6, rel=1e-9)
    assert predict(cost, hw, "graphs", roofline_only=True).time_s == pytest.approx(p.roofline_time_s)


def test_calibrate_from_aiconfigurator_rebuilds_the_shipped_tables(tmp_path):
    pytest.importorskip("aiconfigurator_core")
    pytest.importorskip("pandas")
    out = tmp_path / "h100.yaml"
    r = run("calibrate", "--from", "aiconfigurator", "-H", "h100-sxm", "-o", str(out))
    assert r.exit_code == 0, r.output
    rebuilt, shipped = load_hardware(str(out)), load_hardware("h100-sxm")
    a, b = measured_to_yaml_mapping(rebuilt.measured), measured_to_yaml_mapping(shipped.measured)
    assert a["tables"] == b["tables"] and a["interconnect"] == b["interconnect"] and a["source"] == b["source"]
    # the hand-written part of the profile is kept as it was
    assert dataclasses.replace(rebuilt, measured=None, source="") == dataclasses.replace(shipped, measured=None, source="")


def test_calibrate_from_without_the_extra_is_one_line_and_exit_2(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "aiconfigurator_core", None)  # import raises ImportError
    r = run("calibrate", "--from", "aiconfigurator", "-H", "h100-sxm")
    assert r.exit_code == 2
    assert "pip install 'gpt-batchprof[aic]'" in r.output and "Traceback" not in r.output


@pytest.mark.parametrize("args, message", [
    (["--from", "nvidia-db", "-H", "h100-sxm"], "unknown source 'nvidia-db'"),
    (["--from", "aiconfigurator"], "name the GPU's profile with -H"),
    (["--from", "aiconfigurator:tensorrt", "-H", "h100-sxm"], "unknown framework"),
])
def test_calibrate_from_bad_input_is_one_line_and_exit_2(args, message):
    r = run("calibrate", *args)
    assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output


def test_a_gpu_the_database_lacks_is_named_with_the_ones_it_has():
    pytest.importorskip("aiconfigurator_core")
    pytest.importorskip("pandas")
    r = run("calibrate", "--from", "aiconfigurator", "-H", "t4")
    assert r.exit_code == 2 and "no measured GEMMs for 't4'" in r.output and "h100_sxm" in r.output
