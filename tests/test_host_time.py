"""Host time per layer (Python, dispatch, the glue kernels no operator row lists), measured by
`calibrate` and charged in eager mode: once per layer per forward step, per micro-batch on each
pipeline stage's own layers, never on the roofline or under CUDA graphs. Each figure worked by hand."""

import pytest

from gpt_batchprof.analytic import Dtypes, Parallelism, Scenario
from gpt_batchprof.analytic.efficiency import host_style, host_time_s
from gpt_batchprof.analytic.serving import stage_times
from gpt_batchprof.profiles import hardware_from_mapping, measured_from_mapping, model_from_mapping


BASE = {"name": "hand", "kind": "cpu", "memory_gb": 16, "memory_bandwidth_gb_s": 100,
        "peak_tflops": {"fp32": 1}, "launch_overhead_us": 0}
MEASURED = {
    "device_name": "hand-made", "torch_version": "0", "threads": 1, "date": "2026-11-23",
    "overhead_us": {"eager": 10},
    "host_us_per_layer": {"gpt2": 100, "llama": 250},
    "tables": {"copy": {"unit": "GB/s", "bytes": [1000, 1e9], "values": [100, 100]}},
}


def test_host_time_is_charged_once_per_layer_per_forward_in_eager_mode(tiny_model):
    """tiny_model: 2 layers, rotary (llama style, 250 us per layer). Each forward step (the
    prefill, each of the 3 decode steps) costs 2 x 250 us = 0.5 ms more than its kernels."""
    from gpt_batchprof.analytic.serving import latencies

    with_host = hardware_from_mapping(BASE | {"measured": MEASURED}, "test")
    without = hardware_from_mapping(BASE | {"measured": {k: v for k, v in MEASURED.items()
                                                          if k != "host_us_per_layer"}}, "test")
    assert host_style(tiny_model) == "llama"
    assert host_time_s(tiny_model, with_host, "eager") == pytest.approx(2 * 250e-6)
    sc = Scenario(prompt_len=8, gen_len=4, dtypes=Dtypes.of("fp32"))
    t1, i1, e1 = latencies(tiny_model, with_host, sc, 1)
    t0, i0, e0 = latencies(tiny_model, without, sc, 1)
    assert t1 - t0 == pytest.approx(500e-6)
    assert i1 - i0 == pytest.approx(500e-6)
    assert e1 - e0 == pytest.approx(4 * 500e-6)  # prefill + 3 decode steps
    # the roofline beside it, and CUDA graphs, carry no host time
    assert host_time_s(tiny_model, with_host, "eager", roofline_only=True) == 0.0
    assert host_time_s(tiny_model, with_host, "graphs") == 0.0
    assert latencies(tiny_model, with_host, sc, 1, roofline_only=True) == latencies(tiny_model, without, sc, 1,
                                                                                     roofline_only=True)


def test_host_time_styles_and_fallback():
    from gpt_batchprof.profiles import load_model, model_from_mapping

    gpt2 = load_model("gpt2")
    moe = model_from_mapping({"name": "m", "n_layer": 4, "d_model": 64, "n_head": 4, "d_ff": 128, "ffn": "swiglu",
                              "vocab_size": 100, "max_seq_len": 64, "n_expert": 8, "n_expert_active": 2}, "t")
    hw = hardware_from_mapping(BASE | {"measured": MEASURED}, "test")
    assert host_style(gpt2) == "gpt2" and host_time_s(gpt2, hw, "eager") == pytest.approx(12 * 100e-6)
    assert host_style(moe) == "moe" and host_time_s(moe, hw, "eager") == pytest.approx(4 * 250e-6)  # -> llama


def test_simulated_decode_step_carries_the_host_time_as_analyze_does(tiny_model):
    from gpt_batchprof.analytic.serving import latencies
    from gpt_batchprof.simulate.steptime import StepModel

    hw = hardware_from_mapping(BASE | {"measured": MEASURED}, "test")
    sc = Scenario(prompt_len=8, gen_len=4, context_len=20, dtypes=Dtypes.of("fp32"))
    _, itl, _ = latencies(tiny_model, hw, sc, 2)
    assert StepModel(tiny_model, hw, Dtypes.of("fp32"), kv_grid=1).decode_step_s(2, 20) == pytest.approx(itl, rel=1e-12)


def test_old_profiles_without_the_new_fields_still_load():
    m = measured_from_mapping({k: v for k, v in MEASURED.items() if k != "host_us_per_layer"}, "test")
    assert m.host_s_per_layer == {} and m.quality == {} and m.host_per_layer("gpt2") == 0.0
    with pytest.raises(Exception, match="host_us_per_layer.bert"):
        measured_from_mapping(MEASURED | {"host_us_per_layer": {"bert": 5}}, "test")


def test_each_pipeline_stage_carries_the_host_time_of_its_own_layers_per_micro_batch():
    """3 llama-style layers over 2 stages: stage 0 runs 2 layers, stage 1 one. Batch 4 in 2 micro-batches:
    each stage's forward runs twice a step, so stage 0 carries 2 x 2 x 250 us = 1 ms of host time per step
    and stage 1 2 x 1 x 250 us = 0.5 ms; 3 decode steps (gen_len 4) add 3 x that to the summed decode."""
    three = model_from_mapping({"name": "three", "n_layer": 3, "d_model": 256, "n_head": 8, "n_kv_head": 2,
                                "d_ff": 512, "ffn": "swiglu", "vocab_size": 1000, "max_seq_len": 512,
                                "norm": "rmsnorm"}, "test")
    link = {"interconnect": {"name": "x", "bandwidth_gb_s": 100}}
    with_host = hardware_from_mapping(BASE | link | {"measured": MEASURED}, "test")
    without = hardware_from_mapping(BASE | link | {"measured": {k: v for k, v in MEASURED.items()
                                                                 if k != "host_us_per_layer"}}, "test")
    sc = Scenario(prompt_len=8, gen_len=4, dtypes=Dtypes.of("fp32"), launch="eager")
    par = Parallelism(pp=2, micro_batches=2)
    got = stage_times(three, with_host, sc, 4, par)
    base = stage_times(three, without, sc, 4, par)
    assert [t.stage for t in got] == [0, 1]
    for t1, t0, host in zip(got, base, (1e-3, 0.5e-3)):
        assert t1.prefill_s - t0.prefill_s == pytest.approx(host, rel=1e-9)
        assert t1.decode_s - t0.decode_s == pytest.approx(host, rel=1e-9)
        assert t1.decode_fixed_s - t0.decode_fixed_s == pytest.approx(3 * host, rel=1e-9)
        assert t1.decode_attention_s == t0.decode_attention_s
