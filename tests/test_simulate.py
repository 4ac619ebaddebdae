"""`simulate`: the serving simulation against closed forms and hand-counted schedules, its
input checks, and the CLI's wiring (exit codes, JSON fields)."""

import json
import math

import pytest
from typer.testing import CliRunner

from gpt_batchprof.analytic import Scenario, serving_report
from gpt_batchprof.cli import app
from gpt_batchprof.errors import BatchprofError
from gpt_batchprof.profiles import hardware_from_mapping, load_hardware, load_model, model_from_mapping
from gpt_batchprof.simulate import (
    Lengths, Request, ServerConfig, Slo, Workload, find_max_rate, parse_duration, parse_lengths, read_trace,
    simulate,
)

runner = CliRunner()


@pytest.fixture(scope="module")
def llama():
    return load_model("llama-2-7b"), load_hardware("a100-80gb")


def mean(xs):
    xs = list(xs)
    return sum(xs) / len(xs)


# --------------------------------------------------------------------------- closed forms


@pytest.mark.parametrize("rho, n", [(0.5, 20000), (0.8, 60000)])
def test_one_at_a_time_is_an_md1_queue(llama, rho, n):
    """--max-batch 1, fixed lengths, Poisson arrivals: an M/D/1 queue.

    Service S is one request alone, from analyze: prompt 512, one output token, so
    S = analyze's TTFT at batch 1 (= its e2e). Pollaczek-Khinchine for deterministic
    service: W = rho * S / (2 (1 - rho)): W = S/2 at rho 0.5, W = 2 S at rho 0.8.
    (The sample mean over n requests scatters by about 1-2% at these n; seeds 0-4 all land
    within 4%.)"""
    m, hw = llama
    S = serving_report(m, hw, Scenario(prompt_len=512, gen_len=1), (1,)).points[0].e2e_s
    expected = {0.5: 0.5 * S, 0.8: 2.0 * S}[rho]
    assert expected == pytest.approx(rho * S / (2 * (1 - rho)))
    res = simulate(m, hw, Workload(prompt=Lengths(512, 512), gen=Lengths(1, 1), rate_rps=rho / S, requests=n),
                   ServerConfig(max_batch=1))
    assert all(r.e2e_s - r.wait_s == pytest.approx(S, rel=1e-9) for r in res.records[:100])
    assert mean(r.wait_s for r in res.records) == pytest.approx(expected, rel=0.05)


def test_at_low_load_ttft_and_itl_are_analyzes(llama):
    """Requests 100 s apart never meet: each one's TTFT is analyze's prefill at batch 1, and
    its mean inter-token gap is analyze's decode steps at their own cache lengths."""
    m, hw = llama
    trace = tuple(Request(100.0 * i, 512, g) for i, g in enumerate((2, 64, 2, 64)))
    res = simulate(m, hw, Workload(trace=trace))
    two = serving_report(m, hw, Scenario(prompt_len=512, gen_len=2, context_len=512), (1,)).points[0]
    long = serving_report(m, hw, Scenario(prompt_len=512, gen_len=64), (1,)).points[0]
    for r in res.records:
        assert r.wait_s == 0.0
        assert r.ttft_s == pytest.approx(two.ttft_s, rel=1e-9)
    # gen 2: one decode step at 512 cached tokens = analyze's ITL at --context-len 512
    assert res.records[0].itl_s == pytest.approx(two.itl_s, rel=1e-9)
    # gen 64: 63 decode steps at 512..574 cached tokens = (e2e - TTFT) / 63 in analyze
    assert res.records[1].itl_s == pytest.approx((long.e2e_s - long.ttft_s) / 63, rel=1e-9)
    assert res.summary.preemptions == 0 and res.summary.mean_batch == pytest.approx(1.0)


def test_above_capacity_the_queue_grows_and_goodput_falls(llama):
    """Capacity bound by hand: every output token after the first is a decode step that
    reads the request's own cache, >= 512 tokens x 512 KiB (llama-2-7b fp16: 2 x 32 layers
    x 4096 x 2 B) = 268 MB, at 2039 GB/s >= 0.1317 ms; 127 of them >= 16.7 ms of the
    device per request, so no more than ~59.8 requests/s can be served. Offer 100/s."""
    m, hw = llama
    per_request_s = 127 * 512 * 2 * 32 * 4096 * 2 / 2039e9
    assert 1 / per_request_s == pytest.approx(59.8, rel=0.01)
    res = simulate(m, hw, Workload(rate_rps=100.0, requests=1500), slo=Slo(0.5, 0.05))
    recs = res.records
    third = len(recs) // 3
    # the backlog grows linearly: mean waits of the thirds go like 1 : 3 : 5 from an empty start
    w1, w2, w3 = (mean(r.wait_s for r in recs[i * third:(i + 1) * third]) for i in range(3))
    assert w3 > 1.4 * w2 and w2 > 1.4 * w1 > 0
    assert res.summary.throughput_rps < 1 / per_request_s
    assert res.summary.goodput_rps < 0.5 * 100.0
    assert res.summary.kv_utilisation > 0.5  # the cache is what caps the batch


@pytest.fixture(scope="module")
def weights_bound():
    """A GPT whose every small step is ~its weight read: 2 layers of d 2048 (~120 MB fp16) on a
    1 GB/s device with 1000 TFLOP/s and no launch overhead."""
    m = model_from_mapping({"name": "wide", "n_layer": 2, "d_model": 2048, "n_head": 16, "n_kv_head": 16,
                            "d_ff": 8192, "ffn": "gelu", "vocab_size": 1000, "max_seq_len": 512}, "test")
    hw = hardware_from_mapping({"name": "slow", "kind": "gpu", "memory_gb": 2, "memory_bandwidth_gb_s": 1,
                                "peak_tflops": {"fp16": 1000}, "launch_overhead_us": 0}, "test")
    return m, hw


def test_continuous_beats_static_on_mean_ttft_by_the_counted_steps(weights_bound):
    """Four requests at t=0, prompts of 8, outputs 2, 10, 2, 10 tokens; --max-batch 2.

    Static: batch {1, 2} runs 10 steps (prefill + 9 decode, until request 2's 10th token);
    batch {3, 4} starts then: TTFTs 1, 1, 11, 11 steps, mean 6 steps.
    Continuous: step 1 prefills 1 and 2; step 2 ends request 1 (its 2nd token); step 3
    prefills 3 next to 2's decode; step 4 ends 3; step 5 prefills 4: TTFTs 1, 1, 3, 5 steps,
    mean 2.5 steps. Static's mean TTFT is 3.5 steps more, 2.4x.
    Every step here costs between analyze's decode step at batch 1 (cheapest) and its
    prefill of 2 x 8 tokens (dearest); they differ by ~1.5% (weights dominate)."""
    m, hw = weights_bound
    lo = serving_report(m, hw, Scenario(prompt_len=8, gen_len=2, context_len=8), (1,)).points[0].itl_s
    hi = serving_report(m, hw, Scenario(prompt_len=8, gen_len=2), (2,)).points[0].ttft_s
    assert 1 < hi / lo < 1.02
    trace = tuple(Request(0.0, 8, g) for g in (2, 10, 2, 10))
    cont = simulate(m, hw, Workload(trace=trace), ServerConfig(max_batch=2))
    stat = simulate(m, hw, Workload(trace=trace), ServerConfig(max_batch=2, scheduler="static"))
    c_ttft = [r.ttft_s for r in cont.records]
    s_ttft = [r.ttft_s for r in stat.records]
    for got, steps in zip(c_ttft, (1, 1, 3, 5)):
        assert steps * lo <= got * (1 + 1e-12) and got <= steps * hi * (1 + 1e-12)
    for got, steps in zip(s_ttft, (1, 1, 11, 11)):
        assert steps * lo <= got * (1 + 1e-12) and got <= steps * hi * (1 + 1e-12)
    assert 2.5 * lo <= mean(c_ttft) <= 2.5 * hi
    assert mean(s_ttft) - mean(c_ttft) >= 6 * lo - 2.5 * hi > 3.4 * lo


def test_a_full_cache_makes_admission_wait_and_growth_preempts(weights_bound):
    """Cache of exactly 4 blocks of 4 tokens (weights + the largest step's activations + 16
    tokens of KV; the activations: a 4-token prefill, (2 x 4 x 2048 residual + FFN 4 x 8192)
    x 2 B + 1000 fp32 logits = 102,304 B, more than the 2-sequence decode's 57,152). Two requests at
    t=0, prompt 4, output 6: each needs ceil((4 + 6 - 1) / 4) = 3 blocks, 6 in all > 4.
    Both prefill (1 block each), then grow: after 2 decode steps each holds 2 blocks (4
    used); at the step writing token 8 of its cache each needs a 3rd: the younger one is
    preempted (1 preemption), the older finishes, then the younger recomputes and finishes."""
    m, hw0 = weights_bound
    weights = m.weight_bytes("fp16", "fp16")
    kv16 = 16 * m.kv_bytes_per_token("fp16")
    hw = hardware_from_mapping({"name": "tight", "kind": "gpu", "memory_gb": (weights + 102_304 + kv16) / 1e9,
                                "memory_bandwidth_gb_s": 1, "peak_tflops": {"fp16": 1000}}, "test")
    res = simulate(m, hw, Workload(trace=(Request(0.0, 4, 6), Request(0.0, 4, 6))), ServerConfig(max_batch=2,
                   block_size=4))
    assert res.capacity.kv_blocks == 4
    assert res.summary.preemptions == 1
    first, second = res.records
    assert first.preemptions == 0 and second.preemptions == 1
    assert second.finish_s > first.finish_s and second.first_token_s < first.finish_s


# --------------------------------------------------------------------------- inputs


def test_slo_units(tmp_path):
    assert parse_duration("500ms", "--slo-ttft") == pytest.approx(0.5)
    assert parse_duration("0.5s", "--slo-ttft") == pytest.approx(0.5)
    assert parse_duration("50 ms", "--slo-itl") == pytest.approx(0.05)
    assert parse_duration("200us", "--slo-itl") == pytest.approx(2e-4)
    with pytest.raises(BatchprofError, match="no unit"):
        parse_duration("500", "--slo-ttft")
    with pytest.raises(BatchprofError, match="unknown unit 'min'"):
        parse_duration("5min", "--slo-ttft")
    with pytest.raises(BatchprofError, match="> 0"):
        parse_duration("0ms", "--slo-ttft")


def test_lengths():
    assert parse_lengths("512", "--prompt-len") == Lengths(512, 512)
    assert parse_lengths("128..2048", "--prompt-len") == Lengths(128, 2048)
    for bad in ("0", "2048..128", "abc", "1..2..3"):
        with pytest.raises(BatchprofError, match="--prompt-len"):
            parse_lengths(bad, "--prompt-len")


def test_trace_files(tmp_path):
    good = tmp_path / "t.csv"
    good.write_text("arrival_s,prompt_len,gen_len\n1.5,100,10\n0.5,200,20\n")
    assert read_trace(good) == (Request(0.5, 200, 20), Request(1.5, 100, 10))
    jl = tmp_path / "t.jsonl"
    jl.write_text('{"arrival_s": 0, "prompt_len": 8, "gen_len": 2}\n\n{"arrival_s": 1, "prompt_len": 9, "gen_len": 3}\n')
    assert read_trace(jl) == (Request(0.0, 8, 2), Request(1.0, 9, 3))
    cases = {
        "missing.csv": ("arrival_s,prompt_len\n0,8\n", "missing column 'gen_len'"),
        "text.csv": ("arrival_s,prompt_len,gen_len\n0,8,2\n1,eight,2\n", "line 3: prompt_len 'eight' is not an integer"),
        "neg.csv": ("arrival_s,prompt_len,gen_len\n-1,8,2\n", "arrival_s must be a finite time >= 0"),
        "zero.csv": ("arrival_s,prompt_len,gen_len\n0,8,0\n", "gen_len must be >= 1"),
        "missing.jsonl": ('{"arrival_s": 0, "prompt_len": 8}\n', "line 1: missing 'gen_len'"),
        "broken.jsonl": ('{"arrival_s": 0,\n', "line 1: not JSON"),
        "empty.csv": ("arrival_s,prompt_len,gen_len\n", "no requests"),
        "t.txt": ("", "must be .csv or .jsonl"),
    }
    for name, (text, message) in cases.items():
        p = tmp_path / name
        p.write_text(text)
        with pytest.raises(BatchprofError, match=message):
            read_trace(p)


def test_workload_checks():
    for kw, message in (({"rate_rps": 0.0}, "> 0"), ({"rate_rps": -1.0}, "> 0"), ({"rate_rps": math.nan}, "> 0"),
                        ({"rate_rps": 1.0, "concurrency": 2}, "not both"), ({}, "give --rate"),
                        ({"concurrency": 0}, ">= 1")):
        with pytest.raises(BatchprofError, match=message):
            Workload(**kw)
    with pytest.raises(BatchprofError, match="--max-batch must be >= 1"):
        ServerConfig(max_batch=0)


def test_closed_loop_keeps_concurrency_requests_in_flight(llama):
    """4 clients with zero think time: at any moment at most 4 requests are in the system,
    and each client's next request arrives when its previous one finishes."""
    m, hw = llama
    res = simulate(m, hw, Workload(concurrency=4, requests=40, gen=Lengths(16, 16)))
    assert len(res.records) == 40
    events = sorted([(r.arrival_s, 1) for r in res.records] + [(r.finish_s, -1) for r in res.records],
                    key=lambda e: (e[0], e[1]))
    live = peak = 0
    for _, d in events:
        live += d
        peak = max(peak, live)
    assert peak == 4
    assert sorted(r.arrival_s for r in res.records[4:]) == sorted(r.finish_s for r in res.records)[:36]


def test_find_max_rate_brackets_the_slo(llama):
    m, hw = llama
    slo = Slo(0.2, 0.03, 90)
    s = find_max_rate(m, hw, Workload(rate_rps=1.0, requests=300), slo=slo)
    assert s.best.meets and s.best.rate_rps == s.max_rate_rps
    above = [p for p in s.points if p.rate_rps > s.max_rate_rps]
    assert above and all(not p.meets for p in above)
    assert min(p.rate_rps for p in above) <= s.max_rate_rps * 1.01 + 1e-9


# --------------------------------------------------------------------------- CLI

SUMMARY_FIELDS = {"throughput_rps", "output_tokens_per_s", "ttft_s_mean", "ttft_s_p50", "ttft_s_p90", "ttft_s_p99",
                  "itl_s_mean", "itl_s_p50", "itl_s_p90", "itl_s_p99", "e2e_s_mean", "e2e_s_p50", "e2e_s_p90",
                  "e2e_s_p99", "mean_batch", "kv_utilisation", "preemptions", "goodput_rps"}


def run(*args):
    return runner.invoke(app, ["simulate", *args])


def test_cli_json_has_the_issue_fields_and_streams_requests(tmp_path):
    out = tmp_path / "reqs.csv"
    r = run("--rate", "5", "--requests", "60", "--gen-len", "16", "-f", "json", "-o", str(out), "--no-progress")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert set(d["summary"]) == SUMMARY_FIELDS
    assert d["settings"]["slo_ttft_s"] == 0.5 and d["settings"]["slo_itl_s"] == 0.05
    assert len(d["requests"]) == 60
    row = d["requests"][0]
    assert {"arrival_s", "start_s", "first_token_s", "finish_s"} <= set(row)
    assert row["arrival_s"] <= row["start_s"] < row["first_token_s"] <= row["finish_s"]
    assert len(out.read_text().splitlines()) == 61


def test_cli_table_prints_slo_with_units():
    r = run("--rate", "5", "--requests", "40", "--slo-ttft", "0.25s", "--slo-itl", "30ms")
    assert r.exit_code == 0, r.output
    assert "TTFT ≤ 250 ms" in r.output and "ITL ≤ 30 ms" in r.output and "goodput" in r.output


def test_cli_rate_sweep_rows(tmp_path):
    r = run("--rate", "2..8", "--rate-points", "3", "--requests", "40", "-f", "csv", "--plot", str(tmp_path))
    assert r.exit_code == 0, r.output
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 4 and lines[0].startswith("rate_rps,meets_slo")
    assert (tmp_path / "simulate-load.png").stat().st_size > 0


@pytest.mark.parametrize("args, message", [
    (("--rate", "0"), "--rate"),
    (("--rate", "-3"), "--rate"),
    (("--rate", "nan"), "--rate"),
    (("--rate", "5", "--max-batch", "0"), "--max-batch"),
    (("--rate", "5", "--slo-ttft", "500"), "no unit"),
    (("--rate", "5", "-m", "llama-2-70b"), "does not fit"),
    (("--rate", "5", "--prompt-len", "4000", "--gen-len", "200"), "max_seq_len"),
    (("--rate", "5", "--no-chunked-prefill", "--max-tokens-per-step", "256"), "does not fit --max-tokens-per-step"),
    (("--rate", "5", "--scheduler", "fifo"), "--scheduler"),
    (("--rate", "5", "--concurrency", "3"), "not both"),
])
def test_cli_bad_input_is_one_line_and_exit_2(args, message):
    r = run(*args, "--requests", "10")
    assert r.exit_code == 2, r.output
    assert message in r.output and "Traceback" not in r.output
    assert len(r.stderr.strip().splitlines()) == 1


def test_cli_bad_trace_is_exit_2(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("arrival_s,prompt_len\n0,8\n")
    r = run("--trace", str(p))
    assert r.exit_code == 2 and "missing column 'gen_len'" in r.output


def test_interpolated_decode_attention_moves_results_under_half_a_percent():
    """Decode attention is predicted every 16th cache length and interpolated between. On a
    compute-bound CPU profile (where bounds can flip inside a cell) with mixed lengths, no
    summary figure moves by 0.5% against predicting every length."""
    from dataclasses import asdict

    from gpt_batchprof.simulate import StepModel

    m, hw = load_model("gpt2"), load_hardware("cpu-generic")
    w = Workload(rate_rps=2.0, requests=150, prompt=Lengths(16, 300), gen=Lengths(2, 200), seed=3)
    exact, grid = (asdict(simulate(m, hw, w, steps=StepModel(m, hw, kv_grid=g)).summary) for g in (1, 16))
    assert exact["mean_batch"] > 1.5  # sequences share steps
    for k, v in exact.items():
        assert grid[k] == pytest.approx(v, rel=0.005, abs=1e-12), k


def test_cli_find_max_rate_json():
    r = run("--find-max-rate", "--requests", "150", "--gen-len", "32", "-f", "json", "--no-progress")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert set(d["summary"]) == SUMMARY_FIELDS and len(d["requests"]) == 150
    best = [p for p in d["search"] if p["rate_rps"] == d["max_rate_rps"]]
    assert best and best[0]["meets_slo"] and d["settings"]["rate_rps"] == d["max_rate_rps"]


def test_simulate_core_imports_no_torch_rich_or_typer():
    import subprocess
    import sys

    code = ("import sys, gpt_batchprof.simulate; "
            "print([m for m in ('torch', 'rich', 'typer') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
