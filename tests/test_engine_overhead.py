"""The serving engine's per-step costs (`engine:` in a hardware profile): charged once per step,
per layer and per sequence on top of the kernels, in analyze and simulate, and shown apart."""

import dataclasses
import json

import pytest
from typer.testing import CliRunner

from gpt_batchprof.analytic import Scenario
from gpt_batchprof.analytic.serving import engine_step_s, latencies
from gpt_batchprof.cli import app
from gpt_batchprof.errors import ProfileError
from gpt_batchprof.profiles import hardware_from_mapping, load_hardware, load_model

runner = CliRunner()
BASE = {"name": "g", "kind": "gpu", "memory_gb": 80, "memory_bandwidth_gb_s": 2000, "peak_tflops": {"fp16": 300},
        "launch_overhead_us": 4, "graph_launch_overhead_us": 0.5}


def test_h100_engine_step_by_hand():
    # h100-sxm: 100 us per step + 9 us per layer + 3 us per sequence; llama-3-8b has 32 layers
    hw, m = load_hardware("h100-sxm"), load_model("llama-3-8b")
    assert engine_step_s(m, hw, 1) == pytest.approx(100e-6 + 32 * 9e-6 + 3e-6)  # 391 us
    assert engine_step_s(m, hw, 64) == pytest.approx(100e-6 + 32 * 9e-6 + 64 * 3e-6)  # 580 us
    assert engine_step_s(m, dataclasses.replace(hw, engine=None), 64) == 0.0


def test_every_step_of_a_generation_pays_the_engine_once():
    # TTFT and ITL are one step each; e2e is gen_len steps (the prefill and gen_len - 1 decode steps)
    hw, m = load_hardware("h100-sxm"), load_model("llama-3-8b")
    sc = Scenario(prompt_len=100, gen_len=50)
    with_e = latencies(m, hw, sc, 4)
    without = latencies(m, dataclasses.replace(hw, engine=None), sc, 4)
    step = 100e-6 + 32 * 9e-6 + 4 * 3e-6  # 400 us
    assert with_e[0] - without[0] == pytest.approx(step, rel=1e-9)
    assert with_e[1] - without[1] == pytest.approx(step, rel=1e-9)
    assert with_e[2] - without[2] == pytest.approx(50 * step, rel=1e-9)


def test_analyze_shows_the_engine_apart_and_in_json():
    r = runner.invoke(app, ["analyze", "-m", "llama-3-8b", "-H", "h100-sxm", "-b", "1,64", "-f", "json"])
    d = json.loads(r.stdout)
    assert [row["engine_step_s"] for row in d["summary"]] == pytest.approx([391e-6, 580e-6])
    assert d["hardware"]["engine"]["per_layer_s"] == pytest.approx(9e-6)
    r = runner.invoke(app, ["analyze", "-m", "llama-3-8b", "-H", "h100-sxm", "-b", "1"])
    assert r.exit_code == 0 and "engine (" in r.output and "32 layers" in r.output


def test_simulate_charges_the_engine_on_every_step(tmp_path):
    # one request alone: its TTFT is analyze's TTFT at batch 1 (the engine's 391 us included), with and without
    import yaml

    from gpt_batchprof.profiles import hardware_to_yaml_mapping

    def sim(hw_ref):
        r = runner.invoke(app, ["simulate", "-m", "llama-3-8b", "-H", hw_ref, "--rate", "0.01", "-n", "1",
                                "--prompt-len", "100", "--gen-len", "2", "-f", "json", "--no-progress"])
        assert r.exit_code == 0, r.output
        return json.loads(r.stdout)

    data = hardware_to_yaml_mapping(load_hardware("h100-sxm"))
    data.pop("engine")
    bare = tmp_path / "bare.yaml"
    bare.write_text(yaml.safe_dump(data), encoding="utf-8")
    ttft = lambda d: d["summary"]["ttft_s_mean"]  # noqa: E731
    a, b = sim("h100-sxm"), sim(str(bare))
    assert ttft(a) - ttft(b) == pytest.approx(391e-6, rel=1e-6)


@pytest.mark.parametrize("engine, message", [
    ({"name": "x", "per_stepp_us": 1}, "engine.per_stepp_us': unknown key"),
    ({"name": "x", "per_step_us": -1}, "engine.per_step_us"),
    ("fast", "field 'engine': expected a mapping"),
])
def test_a_malformed_engine_section_names_the_field(engine, message):
    with pytest.raises(ProfileError, match=message.replace("(", r"\(")):
        hardware_from_mapping(BASE | {"engine": engine}, "hw.yaml")
