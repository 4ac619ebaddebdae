"""`simulate --tp/--pp/--ep`: the server as one model over several GPUs, against analyze's
JSON for the same layout and against hand-worked collective and KV-cache numbers."""

import json
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from gpt_batchprof.analytic import Parallelism
from gpt_batchprof.cli import app
from gpt_batchprof.profiles import hardware_to_yaml_mapping, load_hardware, load_model
from gpt_batchprof.simulate import Request, ServerConfig, StepModel, Workload, simulate

runner = CliRunner()


def _datasheet_file(name: str) -> str:
    """The built-in profile without its measured tables, as a file: these tests compare simulate's
    step-by-step sums with analyze's closed forms, which are exact on the roofline (calibrated
    tables are summed by sampling, within 1e-4)."""
    import tempfile

    import yaml

    data = hardware_to_yaml_mapping(load_hardware(name))
    data.pop("measured", None)
    path = Path(tempfile.mkdtemp()) / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return str(path)


H100 = _datasheet_file("h100-sxm")
H100_BYTES = 81559 * 2**20  # h100-sxm.yaml: memory_mib 81559 = 85,520,809,984 B


def invoke(*args):
    r = runner.invoke(app, list(args))
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def analyze_json(*args):
    return invoke("analyze", "-f", "json", *args)


def simulate_json(*args):
    return invoke("simulate", "-f", "json", "--no-progress", *args)


@pytest.fixture
def trace(tmp_path):
    """Four requests 100 s apart (none meets another): prompt 512, output 2 or 64 tokens."""
    p = tmp_path / "trace.csv"
    p.write_text("arrival_s,prompt_len,gen_len\n0,512,2\n100,512,64\n200,512,2\n300,512,64\n")
    return str(p)


@pytest.mark.parametrize("layout", [("--tp", "2"), ("--tp", "2", "--pp", "2"), ("--tp", "4", "--pp", "2")])
def test_at_low_load_ttft_and_itl_are_analyzes_for_the_same_layout(trace, layout):
    """Alone on the server, a request's TTFT is analyze's prefill at batch 1 and its gaps are
    analyze's decode steps, both for the sharded group (taken from analyze's JSON)."""
    base = ("-m", "llama-2-7b", "-H", H100, *layout)
    sim = simulate_json("--trace", trace, *base)["requests"]
    two = analyze_json(*base, "-b", "1", "--prompt-len", "512", "--gen-len", "2", "--context-len", "512")["summary"][0]
    long = analyze_json(*base, "-b", "1", "--prompt-len", "512", "--gen-len", "64")["summary"][0]
    for r in sim:
        assert r["wait_s"] == 0.0
        assert r["ttft_s"] == pytest.approx(two["ttft_s"], rel=1e-12)
    # gen 2: its one gap is the decode step at 512 cached tokens, analyze's ITL at --context-len 512
    assert sim[0]["itl_s"] == pytest.approx(two["itl_s"], rel=1e-12)
    # gen 64: 63 decode steps at 512..574 cached tokens = analyze's (e2e - TTFT) / 63
    assert sim[1]["itl_s"] == pytest.approx((long["e2e_s"] - long["ttft_s"]) / 63, rel=1e-9)
    # and sharding does something: TP 2 is not the one-GPU step
    one = analyze_json("-m", "llama-2-7b", "-H", H100, "-b", "1", "--prompt-len", "512", "--gen-len", "2",
                       "--context-len", "512")["summary"][0]
    assert abs(sim[0]["itl_s"] / one["itl_s"] - 1) > 0.1


def test_decode_step_of_uneven_micro_batches_is_analyzes():
    """3 sequences in 2 micro-batches: analyze pads them to 2 x 2; a decode-only step of the
    simulation is that same step (analyze's JSON at batch 3)."""
    args = ("-m", "llama-2-7b", "-H", H100, "--tp", "2", "--pp", "2", "--micro-batches", "2")
    itl = analyze_json(*args, "-b", "3", "--prompt-len", "512", "--context-len", "512")["summary"][0]["itl_s"]
    steps = StepModel(load_model("llama-2-7b"), load_hardware(H100),
                      parallel=Parallelism(tp=2, pp=2, micro_batches=2))
    assert steps.decode_step_s(3, 512) == pytest.approx(itl, rel=1e-12)


@pytest.mark.parametrize("model, layout", [
    ("llama-2-7b", ("--tp", "2")),
    ("llama-2-7b", ("--tp", "2", "--pp", "2", "--micro-batches", "2")),  # 2 micro-batches of 2 prompts
    ("mixtral-8x7b", ("--tp", "2", "--ep", "2")),  # 2 attention groups of 2 prompts
])
def test_a_static_batch_of_even_prompts_is_analyzes_prefill_at_that_batch(model, layout):
    """4 clients at once, static batches of 4: the batch's prefill (a mixed step of 4 whole
    prompts) shares its 4 x 512 tokens evenly among micro-batches and groups, as analyze's
    batch-4 prefill does when they divide evenly; its one decode step is analyze's at 512."""
    base = ("-m", model, "-H", H100, *layout)
    sim = simulate_json(*base, "--concurrency", "4", "-n", "4", "--scheduler", "static", "--max-batch", "4",
                        "--prompt-len", "512", "--gen-len", "2")["requests"]
    a = analyze_json(*base, "-b", "4", "--prompt-len", "512", "--gen-len", "2", "--context-len", "512")["summary"][0]
    assert [r["ttft_s"] for r in sim] == pytest.approx([a["ttft_s"]] * 4, rel=1e-12)
    assert [r["itl_s"] for r in sim] == pytest.approx([a["itl_s"]] * 4, rel=1e-12)


@pytest.mark.parametrize("par", [Parallelism(tp=2), Parallelism(tp=2, pp=2)])
def test_every_step_pays_the_hand_counted_collective_latency(par):
    """Only the link latency differs (1 ms per ring step against 0), so every step is slower
    by the latency terms alone. llama-2-7b has 32 layers; a ring all-reduce over N = 2 GPUs
    takes 2 (N-1) = 2 steps: 2 ms a call.
      TP 2: 2 all-reduces per layer x 32 + 1 after the embedding = 65 calls = 130 ms a step.
      TP 2 x PP 2: a stage holds 16 layers: 32 calls (no embedding one on the slowest stage)
      + 1 send/recv (1 ms) = 65 ms per stage-time; one sequence is one micro-batch, so a
      step takes pp = 2 stage-times = 130 ms.
    So TTFT and every inter-token gap grow by exactly 0.130 s."""
    m, hw = load_model("llama-2-7b"), load_hardware(H100)
    slow = replace(hw, interconnect=replace(hw.interconnect, latency_s=1e-3))
    fast = replace(hw, interconnect=replace(hw.interconnect, latency_s=0.0))
    w = Workload(trace=(Request(0.0, 512, 8), Request(100.0, 128, 4)))
    cfg = ServerConfig(parallel=par)
    a, b = (simulate(m, h, w, cfg).records for h in (slow, fast))
    for ra, rb in zip(a, b):
        assert ra.ttft_s - rb.ttft_s == pytest.approx(0.130, rel=1e-9)
        assert ra.itl_s - rb.itl_s == pytest.approx(0.130, rel=1e-9)


def test_llama_2_70b_needs_tensor_parallelism_on_h100():
    """fp16 llama-2-70b weights are ~138 GB (69e9 params x 2 B): more than one H100's 85.5 GB."""
    r = runner.invoke(app, ["simulate", "-m", "llama-2-70b", "-H", H100, "--rate", "1", "-n", "10"])
    assert r.exit_code == 2
    line, = r.stderr.strip().splitlines()
    assert "does not fit" in line and "memory" in line and "138" in line
    d = simulate_json("-m", "llama-2-70b", "-H", H100, "--tp", "8", "--rate", "1", "-n", "10")
    assert len(d["requests"]) == 10


@pytest.mark.parametrize("model, tp, ep, kv_per_token, activations", [
    # llama-2-70b: 80 layers, 8 K/V heads of 128, fp16: 2 (K, V) x 80 x (8/tp) x 128 x 2 B per GPU.
    # Activations of the largest step (prompt 512, output 128, 2048 tokens and 256 sequences per
    # step, unfused): the larger of the 512-token prefill, (2 x 512 x 8192 residual + the widest of
    # FFN inner 512 x 2 x 28672/tp, QKV, scores 2 x 64/tp heads x 512 x 512) x 2 B + logits 1 x
    # 32000/tp x 4 B, and the 256-sequence decode at 639 keys (residual 2 x 256 x 8192, scores
    # 2 x 256 x 64/tp x 639, FFN 256 x 2 x 28672/tp; logits 256 x 32000/tp x 4 B). The prefill is
    # larger at every tp: its scores (tp 2: (8,388,608 + 16,777,216) x 2 + 64,000).
    ("llama-2-70b", 2, 1, 2 * 80 * 4 * 128 * 2, 50_395_648),   # 163,840 B per token
    ("llama-2-70b", 4, 1, 2 * 80 * 2 * 128 * 2, 33_586_432),   # 81,920 B; (8,388,608 + 8,388,608) x 2 + 32,000
    ("llama-2-70b", 8, 1, 2 * 80 * 1 * 128 * 2, 25_181_824),   # 40,960 B; (8,388,608 + 4,194,304) x 2 + 16,000
    # 8 K/V heads < 16 GPUs: one head each, replicated; (8,388,608 + 2,097,152) x 2 + 8,000
    ("llama-2-70b", 16, 1, 2 * 80 * 1 * 128 * 2, 20_979_520),
    # mixtral-8x7b: 32 layers, 8 K/V heads of 128; TP 2 -> 4 heads; EP 2: two groups, a cache each.
    # Prefill's widest tensor is the FFN of 2 active experts: 512 x 2 x (2 x 7168) = 14,680,064;
    # (4,194,304 + 14,680,064) x 2 + 16000 x 4
    ("mixtral-8x7b", 2, 2, 2 * 32 * 4 * 128 * 2, 37_812_736),  # 65,536 B
])
def test_kv_capacity_is_the_memory_left_by_analyzes_sharded_weights(model, tp, ep, kv_per_token, activations):
    """Blocks of 16 tokens on the fullest GPU = floor((memory - its weights - the activations of
    the largest step) / (16 x KV bytes per token on that GPU)); with --ep, every one of the ep
    groups has such a cache. The weights per GPU are analyze's (its JSON), the KV bytes per token
    and the activations worked by hand above."""
    args = ("-m", model, "-H", H100, "--tp", str(tp), "--ep", str(ep))
    w = analyze_json(*args, "-b", "1")["weights_per_gpu"]
    free = H100_BYTES - w["sharded_bytes"] - w["replicated_bytes"] - activations
    blocks = int(free // (16 * kv_per_token)) * ep
    s = simulate_json(*args, "--rate", "1", "-n", "4")["settings"]
    assert s["kv_blocks"] == blocks
    assert s["kv_capacity_tokens"] == 16 * blocks


def test_kv_capacity_grows_with_tp():
    """llama-2-70b (~138 GB of fp16 weights) on H100s (85.5 GB), KV bytes per token as above:
      TP 2:  85.5 - ~69.0 GB = ~16.5 GB / 163,840 B = ~0.10M tokens
      TP 4:  85.5 - ~34.6 GB = ~50.9 GB /  81,920 B = ~0.62M tokens
      TP 8:  85.5 - ~17.3 GB = ~68.2 GB /  40,960 B = ~1.67M tokens
      TP 16: 85.5 -  ~8.7 GB = ~76.8 GB /  40,960 B = ~1.88M tokens: K/V heads replicated, so
             only the weights shrink: x1.13 over TP 8, not the x2.25 of a split half head."""
    tokens = [simulate_json("-m", "llama-2-70b", "-H", H100, "--tp", str(tp), "--rate", "1", "-n", "2")
              ["settings"]["kv_capacity_tokens"] for tp in (2, 4, 8, 16)]
    for got, approx in zip(tokens, (0.10e6, 0.62e6, 1.67e6, 1.88e6)):
        assert got == pytest.approx(approx, rel=0.03)
    assert 1.1 < tokens[3] / tokens[2] < 1.15


def test_json_settings_carry_the_layout_as_analyze_does():
    args = ("-m", "mixtral-8x7b", "-H", H100, "--tp", "2", "--pp", "2", "--ep", "2", "--micro-batches", "2")
    a = analyze_json(*args, "-b", "1")["settings"]
    s = simulate_json(*args, "--rate", "1", "-n", "4")["settings"]
    layout = {"tp": 2, "pp": 2, "ep": 2, "micro_batches": 2, "gpus": 8}
    assert {k: a[k] for k in layout} == layout == {k: s[k] for k in layout}


@pytest.fixture
def linkless(tmp_path):
    """a100-80gb without its interconnect section."""
    data = hardware_to_yaml_mapping(load_hardware("a100-80gb"))
    del data["interconnect"]
    p = tmp_path / "linkless.yaml"
    p.write_text(yaml.safe_dump(data))
    return str(p)


@pytest.mark.parametrize("args, message", [
    (("--tp", "3"), "does not divide llama-2-7b's 32 query heads"),
    (("--pp", "33"), "more stages than llama-2-7b's 32 layers"),
    (("--ep", "2"), "dense model"),
    (("--micro-batches", "2"), "needs --pp"),
    (("--tp", "0"), "--tp must be an integer >= 1"),
    (("--tp", "2", "-H", "LINKLESS"), "no interconnect section"),
])
def test_bad_layouts_are_refused_as_analyze_refuses_them(linkless, args, message):
    """One line, exit 2, and the very line analyze prints for the same layout."""
    args = tuple(linkless if a == "LINKLESS" else a for a in args)
    sim = runner.invoke(app, ["simulate", "--rate", "1", "-n", "4", *args])
    ana = runner.invoke(app, ["analyze", "-b", "1", *args])
    assert sim.exit_code == ana.exit_code == 2, sim.output
    line, = sim.stderr.strip().splitlines()
    assert message in line and "Traceback" not in sim.output
    assert line == ana.stderr.strip()
