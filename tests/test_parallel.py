"""Tensor / pipeline / expert parallelism: per-GPU numbers worked out by hand, collective pricing,
bad input, and one live gloo run with 2 processes on the CPU."""

import json
import math

import pytest
from typer.testing import CliRunner

from gpt_batchprof.analytic import Dtypes, Parallelism, Scenario, enumerate_ops, max_batch, memory_use, predict
from gpt_batchprof.analytic.parallel import (
    alltoall_time, local_model, pipelined, ring_allreduce_time, sendrecv_time, weight_split,
)
from gpt_batchprof.cli import app
from gpt_batchprof.errors import BatchprofError, ProfileError
from gpt_batchprof.measure.distributed import fit_link
from gpt_batchprof.profiles import hardware_from_mapping, load_hardware, load_model

runner = CliRunner()


def ops_by_name(*args, **kw):
    return {o.op: o for o in enumerate_ops(*args, **kw)}


@pytest.fixture
def link_hw():
    """A device with a 100 GB/s-per-direction link and 1 us per hop (round numbers for hand sums)."""
    return hardware_from_mapping(
        {"name": "linked", "kind": "gpu", "memory_gb": 80, "memory_bandwidth_gb_s": 2000,
         "peak_tflops": {"fp16": 1000}, "launch_overhead_us": 0,
         "interconnect": {"name": "test link", "bandwidth_gb_s": 100, "latency_us": 1}},
        "test",
    )


# --------------------------------------------------------------------------- memory per GPU


def test_llama2_70b_tp8_holds_an_eighth_of_the_sharded_weights_plus_the_replicated_ones():
    # llama-2-70b: d 8192, 64 heads x 128, 8 KV heads, d_ff 28672 (SwiGLU), vocab 32000, 80 layers,
    # RMSNorm, untied, no bias.  At TP 8 (8 KV heads / 8 = 1 per GPU: split, not replicated):
    #   per layer, split:   q 8192*8192 + out 8192*8192 + k,v 2*8192*1024 + ffn 3*8192*28672
    #                     = 67,108,864 + 67,108,864 + 16,777,216 + 704,643,072 = 855,638,016  -> /8 = 106,954,752
    #   per layer, whole:   two RMSNorm weights 2*8192 = 16,384
    #   embedding and LM head, vocab-parallel: 32000*8192 = 262,144,000 each -> /8 = 32,768,000 each
    #   final norm: 8192 (whole)
    # split  = 80*106,954,752 + 2*32,768,000 = 8,621,916,160 params -> x2 B = 17,243,832,320 B
    # whole  = 80*16,384 + 8,192 = 1,318,912 params              -> x2 B =      2,637,824 B
    m = load_model("llama-2-70b")
    split = weight_split(m, Parallelism(tp=8), Dtypes())
    assert split.sharded_bytes == 17_243_832_320
    assert split.replicated_bytes == 2_637_824
    mem = memory_use(m, Scenario(), 1, Parallelism(tp=8))
    assert mem.weights_bytes == 17_246_470_144
    # the whole model is 68,976,648,192 params: an eighth of it is 8,622,081,024; what a GPU holds is that
    # plus 7/8 of the replicated 1,318,912 (1,154,048) = 8,623,235,072 params = 17,246,470,144 B
    assert m.n_params == 68_976_648_192


def test_kv_heads_are_replicated_when_fewer_than_tp(tiny_model):
    # tiny: d 256, 8 heads x 32, 2 KV heads, d_ff 512 SwiGLU, vocab 1000, 2 layers, RMSNorm.
    # TP 4: 8/4 = 2 query heads per GPU; 2 KV heads < 4 GPUs -> each GPU keeps ceil(2/4) = 1 KV head,
    # every KV head lives on 4/2 = 2 GPUs.
    loc = local_model(tiny_model, Parallelism(tp=4))
    assert (loc.n_head, loc.n_kv_head, loc.d_ff, loc.vocab_size) == (2, 1, 128, 250)
    # qkv_proj in decode at batch 1: n = 2*32 + 2*1*32 = 128; FLOPs 2 * 1 * 256 * 128 * 2 layers = 131,072
    ops = ops_by_name(tiny_model, "decode", 1, kv_len=10, parallel=Parallelism(tp=4))
    assert ops["qkv_proj"].shape.n == 128 and ops["qkv_proj"].flops == 131_072
    # KV cache per token on one GPU: 2 layers x (K, V) x 1 head x 32 x 2 B = 256 B, the same at TP 2
    # (2 KV heads / 2 = 1, split) and TP 4 (1, replicated): it stops shrinking at one head.
    sc = Scenario(prompt_len=10, gen_len=7)  # 10 + 7 - 1 = 16 positions cached
    assert memory_use(tiny_model, sc, 1, Parallelism(tp=4)).kv_cache_bytes == 16 * 256
    assert memory_use(tiny_model, sc, 1, Parallelism(tp=2)).kv_cache_bytes == 16 * 256
    assert memory_use(tiny_model, sc, 1).kv_cache_bytes == 16 * 512
    # Weights: replicated per layer: norms 2*256 + K/V (the GPU's one head, held whole) 2*256*32 = 16,896;
    # x 2 layers + final norm 256 = 34,048 params = 68,096 B.  Split per layer: q + out 2*256*64 = 32,768,
    # FFN 3*256*128 = 98,304 -> 131,072 x 2 = 262,144, plus embedding and head 2 * 250*256 = 128,000
    # -> 390,144 params = 780,288 B.
    split = weight_split(tiny_model, Parallelism(tp=4), Dtypes())
    assert (split.sharded_bytes, split.replicated_bytes) == (780_288, 68_096)


def test_max_batch_grows_with_tp():
    # llama-2-70b on H100 SXM (81,559 MiB as the device reports it = 85,520,809,984 B), prompt 512,
    # 128 generated (639 positions cached), fp16. At TP 8, per GPU:
    #   weights 17,246,470,144 B (above) -> free 85,520,809,984 - that = 68,274,339,840 B
    #   KV per sequence: 639 tokens x 2 (K,V) x 80 layers x 1 head x 128 x 2 B = 26,173,440 B
    #   activations per sequence, the larger of prefill (512 tokens) and decode (576 keys); prefill wins:
    #     residual + normed 2*512*8192, plus the largest of FFN inner 512*3584*2 = 3,670,016,
    #     QKV 512*1280 = 655,360, unfused scores 2*8*512*512 = 4,194,304
    #     -> (8,388,608 + 4,194,304) * 2 B = 25,165,824, plus fp32 logits 4000 * 4 = 16,000 -> 25,181,824 B
    #   max batch = floor(68,274,339,840 / (26,173,440 + 25,181,824)) = floor(1329.45) = 1329
    m, hw = load_model("llama-2-70b"), load_hardware("h100-sxm")
    sc = Scenario()
    assert max_batch(m, hw, sc, Parallelism(tp=8)) == 1329
    by_tp = [max_batch(m, hw, sc, Parallelism(tp=t)) for t in (1, 2, 4, 8)]
    assert by_tp[0] == 0  # 138 GB of fp16 weights do not fit 80 GB
    assert by_tp == sorted(by_tp) and len(set(by_tp)) == 4


def test_expert_parallel_weights_and_alltoall():
    # mixtral-8x7b, EP 8 (TP 1): one of 8 experts per GPU, attention whole (data-parallel over the 8 groups).
    # per layer: q + out 2*4096*4096 = 33,554,432; k,v 2*4096*1024 = 8,388,608; one expert 3*4096*14336 =
    # 176,160,768 -> 218,103,808 x 32 = 6,979,321,856, + embedding and head 2*32000*4096 = 262,144,000;
    # whole per layer: norms 2*4096 + router 4096*8 = 40,960 x 32 = 1,310,720, + final norm 4096.
    # total (6,979,321,856 + 262,144,000 + 1,310,720 + 4096) * 2 B = 14,485,561,344 B
    m = load_model("mixtral-8x7b")
    par = Parallelism(ep=8)
    assert weight_split(m, par, Dtypes()).total_bytes == 14_485_561_344
    # decode at batch 8: each of the 8 groups serves 1 sequence = 1 token; it routes it to 2 experts.
    # all-to-all message: 1 token x 2 copies x 4096 x 2 B = 16,384 B, dispatch + combine: 2 x 32 layers.
    ops = ops_by_name(m, "decode", 8, kv_len=100, parallel=par)
    a2a = ops["ep_alltoall"]
    assert (a2a.launches, a2a.bytes, a2a.shape.ranks) == (64, 64 * 16_384, 8)
    # each GPU's expert receives, on average, the 2 token-rows its group sent:
    # ffn_up FLOPs = 2 * 2 rows * 4096 * 14336 * 32 layers = 7,516,192,768
    assert ops["ffn_up"].flops == 7_516_192_768


# --------------------------------------------------------------------------- collectives


def test_allreduce_bytes_per_layer_and_token_are_two_d_model_activations():
    # Two all-reduces per layer (after attention, after the FFN), each of tokens x d_model activations:
    # per layer and token 2 x 8192 x 2 B = 32,768 B. Decode at batch 4 (4 tokens), 80 layers, plus one
    # all-reduce after the vocabulary-parallel embedding: 161 calls of 4*8192*2 = 65,536 B.
    m = load_model("llama-2-70b")
    ar = ops_by_name(m, "decode", 4, kv_len=100, parallel=Parallelism(tp=8))["tp_allreduce"]
    assert ar.launches == 161 and ar.bytes == 161 * 65_536
    assert (ar.bytes - 65_536) / (80 * 4) == 32_768
    # With 2 pipeline stages the last (slowest: LM head) stage has 40 layers and no embedding:
    # 80 calls; prefill of 2 x 16 tokens: 80 x 32 x 8192 x 2 B; 32 tokens x 40 layers x 32,768 B.
    ar = ops_by_name(m, "prefill", 2, new_tokens=16, parallel=Parallelism(tp=8, pp=2))["tp_allreduce"]
    assert ar.launches == 80 and ar.bytes == 32 * 40 * 32_768


def test_ring_allreduce_alltoall_and_sendrecv_on_a_hand_example(link_hw):
    # 1 MB over 4 GPUs at 100 GB/s each way, 1 us per hop:
    #   ring all-reduce: 2*3/4 * 1e6 / 1e11 = 15 us, plus 2*3 hops * 1 us = 6 us -> 21 us
    #   all-to-all:        3/4 * 1e6 / 1e11 = 7.5 us, plus 3 hops = 3 us   -> 10.5 us
    #   send/recv:               1e6 / 1e11 = 10 us, plus 1 us               -> 11 us
    assert ring_allreduce_time(1e6, 4, 100e9, 1e-6) == pytest.approx(21e-6)
    assert alltoall_time(1e6, 4, 100e9, 1e-6) == pytest.approx(10.5e-6)
    assert sendrecv_time(1e6, 100e9, 1e-6) == pytest.approx(11e-6)
    assert ring_allreduce_time(1e6, 1, 100e9, 1e-6) == 0.0
    # The same through an operator row: tiny_model-like row of 2 calls, 1 MB each, over 4 ranks.
    from gpt_batchprof.analytic.parallel import collective_cost

    row = collective_cost("tp_allreduce", message_bytes=1e6, launches=2, ranks=4, rows=1, width=1,
                          compute_dtype="fp16", ctx=("decode", 1, 1, 0))
    p = predict(row, link_hw)
    assert p.time_s == pytest.approx(42e-6) and p.memory_s == pytest.approx(30e-6)
    assert p.overhead_s == pytest.approx(12e-6) and p.bound == "link"


def test_pipeline_step_and_bubble():
    # GPipe forward schedule: a step is (m + pp - 1) micro-batch stage-times; a stage costs 4 ms for its m
    # micro-batches. pp 4, m 4: 4 ms * 7/4 = 7 ms; bubble 3/7. With only 2 sequences there are 2
    # micro-batches: 4 ms * 5/2 = 10 ms.
    par = Parallelism(pp=4, micro_batches=4)
    assert par.bubble_fraction == pytest.approx(3 / 7)
    assert pipelined(0.004, par, batch=8) == pytest.approx(0.007)
    assert pipelined(0.004, par, batch=2) == pytest.approx(0.010)


def test_pp_stage_lists_its_layers_and_a_sendrecv(tiny_model, link_hw):
    # 2 layers over 2 stages: 1 layer per stage (norm twice + the final one on the last stage).
    # send/recv: decode at batch 3 -> 3 tokens x 256 x 2 B = 1,536 B, once.
    ops = ops_by_name(tiny_model, "decode", 3, kv_len=10, parallel=Parallelism(pp=2))
    assert ops["qkv_proj"].launches == 1 and ops["norm"].launches == 3
    sr = ops["pp_sendrecv"]
    assert (sr.bytes, sr.launches, sr.shape.ranks) == (1_536, 1, 2)
    # 1,536 B / 100 GB/s = 15.36 ns, + 1 us
    assert predict(sr, link_hw).time_s == pytest.approx(15.36e-9 + 1e-6)


def test_calibration_fit_on_hand_made_times():
    # 2 ranks: 2(N-1)/N = 1, 2(N-1) = 2 hops. Times made from B = 4.096 GB/s and a = 50 us per hop:
    # 4,096 B -> 1 us + 100 us = 101 us; 4,096,000 B -> 1 ms + 100 us = 1,100 us.
    link = fit_link(2, [4096, 4_096_000], [101e-6, 1100e-6])
    # best bus bandwidth is the large message's: 4,096,000 / 1.1 ms = 3.7236 GB/s (latency still inside it)
    assert link.bandwidth_bytes_per_s == pytest.approx(4_096_000 / 1.1e-3)
    # latency: (101 us - 4096 / 3.7236e9 = 1.1 us) / 2 = 49.95 us
    assert link.latency_s == pytest.approx((101e-6 - 4096 / (4_096_000 / 1.1e-3)) / 2)


# --------------------------------------------------------------------------- profiles and bad input


def test_interconnect_section_is_parsed_and_validated():
    hw = load_hardware("h100-sxm")
    assert hw.interconnect.bandwidth_bytes_per_s == 450e9 and hw.interconnect.latency_s == 1e-6
    assert load_hardware("a100-80gb").interconnect.bandwidth_bytes_per_s == 300e9
    base = {"name": "x", "kind": "gpu", "memory_gb": 1, "memory_bandwidth_gb_s": 1, "peak_tflops": {"fp16": 1}}
    with pytest.raises(ProfileError, match=r"field 'interconnect.speed': unknown key"):
        hardware_from_mapping(base | {"interconnect": {"name": "l", "bandwidth_gb_s": 1, "speed": 2}}, "f.yaml")
    with pytest.raises(ProfileError, match=r"field 'interconnect.bandwidth_gb_s': must be > 0"):
        hardware_from_mapping(base | {"interconnect": {"name": "l", "bandwidth_gb_s": 0}}, "f.yaml")


@pytest.mark.parametrize("args, says", [
    (("--tp", "3"), "--tp 3 does not divide llama-2-70b's 64 query heads"),
    (("--pp", "81"), "--pp 81 is more stages than llama-2-70b's 80 layers"),
    (("--ep", "2"), "--ep 2: llama-2-70b is a dense model"),
    (("-m", "mixtral-8x7b", "--ep", "3"), "--ep 3 does not divide mixtral-8x7b's 8 experts"),
    (("--micro-batches", "4"), "--micro-batches 4 needs --pp > 1"),
    (("-m", "tiny.yaml", "--tp", "4"), "--tp 4 does not divide tiny's d_ff 6"),
])
def test_bad_layouts_are_one_line_exit_2(args, says, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.yaml").write_text("name: tiny\nn_layer: 2\nd_model: 64\nn_head: 4\nd_ff: 6\nffn: gelu\n"
                                        "vocab_size: 10\nmax_seq_len: 64\n")
    r = runner.invoke(app, ["analyze", "-m", "llama-2-70b", "-H", "h100-sxm", "-b", "1", *args])
    assert r.exit_code == 2, r.output
    assert says in r.output and "Traceback" not in r.output


def test_tp_without_an_interconnect_is_one_line_exit_2(tmp_path):
    f = tmp_path / "nolink.yaml"
    f.write_text("name: nolink\nkind: gpu\nmemory_gb: 80\nmemory_bandwidth_gb_s: 2000\npeak_tflops: {fp16: 300}\n")
    r = runner.invoke(app, ["analyze", "-m", "llama-2-70b", "-H", str(f), "--tp", "2", "-b", "1"])
    assert r.exit_code == 2
    assert "hardware 'nolink' has no interconnect section" in r.output
    assert runner.invoke(app, ["analyze", "-m", "llama-2-70b", "-H", str(f), "-b", "1"]).exit_code == 0


def test_nccl_with_too_few_gpus_is_refused(monkeypatch):
    import torch

    from gpt_batchprof.measure.distributed import check_world

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(BatchprofError, match=r"NCCL over 8 GPUs is not possible here: torch sees 1 CUDA device"):
        check_world("cuda", 8)


def test_analyze_json_carries_the_layout_and_collective_rows():
    r = runner.invoke(app, ["analyze", "-m", "llama-2-70b", "-H", "h100-sxm", "--tp", "8", "--pp", "2",
                            "--micro-batches", "2", "-b", "4", "--phase", "decode", "-f", "json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    s = d["settings"]
    assert (s["tp"], s["pp"], s["ep"], s["micro_batches"], s["gpus"]) == (8, 2, 1, 2, 16)
    ops = {o["op"]: o for o in d["ops"]}
    assert ops["tp_allreduce"]["group"] == "collective" and ops["tp_allreduce"]["shape"]["ranks"] == 8
    assert ops["pp_sendrecv"]["flops"] == 0
    assert d["pipeline_bubble_fraction"] == pytest.approx(1 / 3)  # (2 - 1) / (2 + 2 - 1)
    assert d["summary"][0]["weights_bytes"] == sum(d["weights_per_gpu"].values())


def test_default_layout_is_the_single_gpu_model(tiny_model):
    # Parallelism() must leave enumerate_ops as it was: no collective rows and the whole model's FLOPs
    # (qkv_proj, decode, batch 1: 2 * 256 * (256 + 2*64) * 2 layers = 393,216).
    ops = ops_by_name(tiny_model, "decode", 1, kv_len=4, dtypes=Dtypes(), parallel=Parallelism())
    assert not {"tp_allreduce", "pp_sendrecv", "ep_alltoall"} & set(ops)
    assert ops["qkv_proj"].flops == 393_216


# --------------------------------------------------------------------------- live: gloo, 2 processes


def test_bench_tp2_times_allreduce_with_gloo_next_to_its_prediction():
    """Two real processes on the CPU (gloo) all-reduce gpt2's decode activations: 768 x 4 B = 3,072 B per
    call, 2 x 12 layers + 1 = 25 calls per step. A few seconds (process start-up dominates)."""
    r = runner.invoke(app, ["bench", "-m", "gpt2", "--device", "cpu", "--tp", "2", "-b", "1", "--phase", "decode",
                            "--op", "tp_allreduce,qkv_proj", "--warmup-ms", "5", "--rep-ms", "30", "-f", "json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["settings"]["tp"] == 2
    rows = {row["op"]: row for row in d["rows"]}
    ar = rows["tp_allreduce"]
    assert ar["bytes"] == 25 * 3_072 and ar["launches"] == 25 and ar["shape"]["ranks"] == 2
    assert ar["timing_method"] == "gloo-2proc" and ar["samples"] >= 5
    assert ar["measured_time_s"] > 0 and math.isfinite(ar["time_s"])
    # qkv_proj per GPU at TP 2: n = (768 + 2*768) / 2 = 1,152
    assert rows["qkv_proj"]["shape"]["n"] == 1_152 and rows["qkv_proj"]["status"] == "ok"


def test_sweep_rows_carry_the_layout_and_refuse_bad_ones():
    r = runner.invoke(app, ["sweep", "-m", "llama-2-70b", "-H", "h100-sxm", "--tp", "8", "-b", "1", "--phase", "decode",
                            "--op", "tp_allreduce", "-f", "json", "--no-progress"])
    assert r.exit_code == 0, r.output
    row = json.loads(r.stdout)[0] if r.stdout.lstrip().startswith("[") else json.loads(r.stdout)["rows"][0]
    assert (row["tp"], row["pp"], row["ep"], row["launches"]) == (8, 1, 1, 161)
    bad = runner.invoke(app, ["sweep", "-m", "llama-2-70b", "-H", "h100-sxm", "--tp", "3", "-b", "1", "--no-progress"])
    assert bad.exit_code == 2 and "--tp 3 does not divide" in bad.output
    live = runner.invoke(app, ["sweep", "-m", "gpt2", "--tp", "2", "--mode", "live", "-b", "1", "--no-progress"])
    assert live.exit_code == 2 and "bench --tp" in live.output
