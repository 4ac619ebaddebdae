"""CUDA paths: event timing, CUDA graphs, calibrate. Skipped where there is no CUDA device."""

import pytest

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def test_cuda_event_timing_tracks_work():
    from gpt_batchprof.measure.timing import CudaTimer

    a = torch.randn(4096, 4096, device="cuda", dtype=torch.float16)
    small = torch.randn(1024, 1024, device="cuda", dtype=torch.float16)
    t = CudaTimer()
    big_m = t.measure(lambda i: a @ a, warmup_s=0.01, rep_s=0.05)
    small_m = t.measure(lambda i: small @ small, warmup_s=0.01, rep_s=0.05)
    assert big_m.method == "cuda-events" and len(big_m.times_s) >= 5
    # 64x the FLOPs: at least 8x the time, and never faster than 2 PFLOP/s
    assert big_m.median_s > 8 * small_m.median_s
    assert 2 * 4096**3 / big_m.median_s < 2e15


def test_cuda_graph_timing_is_close_to_events_for_a_big_kernel():
    from gpt_batchprof.measure.timing import CudaTimer

    a = torch.randn(8192, 8192, device="cuda", dtype=torch.float16)
    out = torch.empty_like(a)
    ev = CudaTimer().measure(lambda i: torch.mm(a, a, out=out), warmup_s=0.01, rep_s=0.1)
    gr = CudaTimer(cuda_graphs=True).measure(lambda i: torch.mm(a, a, out=out), warmup_s=0.01, rep_s=0.1)
    assert gr.method == "cuda-graph"
    assert 0.8 < gr.median_s / ev.median_s < 1.25


def test_bench_decode_with_cuda_graphs(tiny_model):
    from gpt_batchprof.analytic import Dtypes, Scenario
    from gpt_batchprof.measure.bench import BenchSettings, run_bench
    from gpt_batchprof.profiles import load_hardware

    s = BenchSettings("cuda", torch.cuda.get_device_name(), torch.__version__, 1, cuda_graphs=True,
                      warmup_s=0.005, rep_s=0.02)
    sc = Scenario(prompt_len=64, gen_len=16, dtypes=Dtypes.of("fp16"), attention="fused")
    res = run_bench(tiny_model, load_hardware("h100-sxm"), sc, ("prefill", "decode"), (1, 8), s)
    assert all(r.status == "ok" for r in res.rows), [(r.cost.op, r.reason) for r in res.rows if r.status != "ok"]
    assert all(r.method == "cuda-graph" and r.measured_time_s > 0 for r in res.rows)


def test_calibrate_cuda_quick():
    from gpt_batchprof.measure.calibrate import calibrate

    cal = calibrate("cuda", quick=True)
    assert cal.peak_flops_per_s["fp16"] > 10e12  # any tensor-core GPU of the last years
    assert cal.memory_bandwidth_bytes_per_s > 100e9
    assert 0 < cal.launch_overhead_s < 50e-6
    assert cal.memory_bytes > 1e9
