"""`simulate` what-ifs: published trace formats, prefix caching, and the bad-input edges of
the trace and rate options, against numbers counted by hand."""

import json

import pytest
from typer.testing import CliRunner

from gpt_batchprof.cli import app
from gpt_batchprof.errors import BatchprofError
from gpt_batchprof.profiles import hardware_from_mapping, load_hardware, load_model, model_from_mapping
from gpt_batchprof.simulate import Lengths, Request, ServerConfig, Workload, load_trace, read_trace, simulate

runner = CliRunner()


@pytest.fixture(scope="module")
def llama():
    return load_model("llama-2-7b"), load_hardware("a100-80gb")


@pytest.fixture(scope="module")
def small():
    m = model_from_mapping({"name": "wide", "n_layer": 2, "d_model": 2048, "n_head": 16, "n_kv_head": 16,
                            "d_ff": 8192, "ffn": "gelu", "vocab_size": 1000, "max_seq_len": 512}, "test")
    return m


def tight_gpu(m, blocks: int, cfg: ServerConfig, longest_prompt: int, longest: int):
    """A device whose memory holds the weights, the activations of the server's largest step
    (what the simulator keeps free for them) and exactly ``blocks`` KV blocks."""
    from gpt_batchprof.simulate.engine import step_activation_reserve

    acts = step_activation_reserve(m, cfg, longest_prompt, longest, cfg.tokens_per_step(longest_prompt))
    mem = m.weight_bytes("fp16", "fp16") + acts + blocks * cfg.block_size * m.kv_bytes_per_token("fp16")
    return hardware_from_mapping({"name": "tight", "kind": "gpu", "memory_gb": mem / 1e9,
                                  "memory_bandwidth_gb_s": 1, "peak_tflops": {"fp16": 1000}}, "test")


# --------------------------------------------------------------------------- trace formats


def test_azure_trace_timestamps_are_seconds_from_the_first(tmp_path):
    """Azure 2023 (7 fractional digits) and 2024 (UTC offset) timestamps; rows out of order."""
    p = tmp_path / "AzureLLMInferenceTrace_code.csv"
    p.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n"
                 "2023-11-16 18:15:50.9951690,396,109\n"
                 "2023-11-16 18:15:46.6805900,374,44\n"
                 "2023-11-16 18:16:46.6805900,879,17\n")
    t = load_trace(p)
    assert t.format == "azure"
    assert [(r.prompt_len, r.gen_len) for r in t.requests] == [(374, 44), (396, 109), (879, 17)]
    assert [r.arrival_s for r in t.requests] == pytest.approx([0.0, 4.314579, 60.0], abs=1e-6)  # float seconds since 1970: ~0.2 us steps
    p24 = tmp_path / "AzureLLMInferenceTrace_conv_1week.csv"
    p24.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n"
                   "2024-05-10 00:00:00.009930+00:00,1000,10\n2024-05-10 02:00:01.5+02:00,20,5\n")
    # 02:00:01.5+02:00 is 00:00:01.5 UTC: 1.49007 s after the first
    assert [r.arrival_s for r in read_trace(p24)] == pytest.approx([0.0, 1.49007], abs=1e-6)


def test_burstgpt_skips_failed_requests(tmp_path):
    p = tmp_path / "BurstGPT_1.csv"
    p.write_text("Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
                 "5,ChatGPT,472,18,490,Conversation log\n"
                 "45,ChatGPT,1087,0,1087,Conversation log\n"
                 "118,GPT-4,417,276,693,API log\n")
    t = load_trace(p)
    assert t.format == "burstgpt" and t.skipped == 1
    assert t.requests == (Request(0.0, 472, 18), Request(113.0, 417, 276))


def test_mooncake_times_in_ms_and_hash_ids(tmp_path):
    p = tmp_path / "mooncake_trace.jsonl"
    p.write_text('{"timestamp": 0, "input_length": 6755, "output_length": 500, "hash_ids": [0, 1]}\n'
                 '{"timestamp": 3052, "input_length": 2287, "output_length": 316, "hash_ids": [0, 42]}\n')
    t = load_trace(p)
    assert t.format == "mooncake"
    assert t.requests == (Request(0.0, 6755, 500, (0, 1), 512), Request(3.052, 2287, 316, (0, 42), 512))


def test_time_scale_and_the_trace_rate(tmp_path):
    """Arrivals at 0, 1, 4 s: mean rate (3 - 1) / 4 = 0.5 req/s; --time-scale 0.5 halves the
    times (1 req/s); --trace-rate 2 scales them by 0.5 / 2 = 0.25."""
    p = tmp_path / "t.csv"
    p.write_text("arrival_s,prompt_len,gen_len\n0,8,2\n1,8,2\n4,8,2\n")
    assert load_trace(p).rate_rps == 0.5
    assert [r.arrival_s for r in read_trace(p, 0.5)] == [0.0, 0.5, 2.0]
    r = runner.invoke(app, ["simulate", "-m", "gpt2", "--trace", str(p), "--trace-rate", "2", "-f", "json"])
    assert r.exit_code == 0, r.output
    assert [q["arrival_s"] for q in json.loads(r.stdout)["requests"]] == [0.0, 0.25, 1.0]


def test_byte_order_mark_is_read(tmp_path):
    p = tmp_path / "excel.csv"
    p.write_bytes(b"\xef\xbb\xbfarrival_s,prompt_len,gen_len\r\n0,100,10\r\n")
    assert read_trace(p) == (Request(0.0, 100, 10),)


@pytest.mark.parametrize("name, text, message", [
    ("far.csv", "arrival_s,prompt_len,gen_len\n0,8,2\n1e300,8,2\n", "far.csv: arrival_s spans 1e+300 s"),
    ("az.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\nyesterday,8,2\n", "line 2: TIMESTAMP 'yesterday' is not a date"),
    ("az2.csv", "TIMESTAMP,ContextTokens\n2023-11-16 18:15:46,8\n", "missing column 'GeneratedTokens'"),
    ("b.csv", "Timestamp,Request tokens,Response tokens\n1,8,-1\n", "line 2: Response tokens must be >= 0"),
    ("b0.csv", "Timestamp,Request tokens,Response tokens\n1,8,0\n", "no requests in the trace (1 failed"),
    ("mc.jsonl", '{"timestamp": 0, "input_length": 8, "output_length": 2, "hash_ids": "ab"}\n',
     "line 1: hash_ids must be a list of integers"),
    ("mc2.jsonl", '{"timestamp": 0, "input_length": 8}\n', "line 1: missing 'output_length'"),
    ("mc3.jsonl", '{"timestamp": 0, "input_length": 8, "output_length": 2}\n{"timestamp": 1, "input_length": 8}\n',
     "line 2: missing 'output_length'"),
    ("n.jsonl", '{"arrival_s": 0, "prompt_len": 8, "gen_len": 2.5}\n', "line 1: gen_len '2.5' is not an integer"),
])
def test_bad_trace_rows_name_their_line(tmp_path, name, text, message):
    p = tmp_path / name
    p.write_text(text)
    with pytest.raises(BatchprofError, match=message.replace("(", r"\(").replace("+", r"\+")):
        read_trace(p)


def test_replaying_fewer_requests_than_asked_says_so(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("arrival_s,prompt_len,gen_len\n0,8,2\n1,8,2\n2,8,2\n")
    r = runner.invoke(app, ["simulate", "-m", "gpt2", "--trace", str(p), "-n", "100", "-f", "json"])
    assert r.exit_code == 0, r.output
    assert len(json.loads(r.stdout)["requests"]) == 3
    assert "note: the trace has 3 request(s); replaying 3, not 100" in r.stderr


# --------------------------------------------------------------------------- prefix caching


def test_a_fixed_prefix_hit_rate_cuts_prefill_by_that_share(llama):
    """20 requests far apart (0.1 req/s, each alone), prompt 512 of which 384 are one shared
    system prompt. The first computes all 512; the 19 others find 384 cached:
    hit rate h = 19 x 384 / (20 x 512) = 0.7125, and the prompt tokens computed (what every
    dense layer's prefill FLOPs are proportional to) fall from 20 x 512 = 10240 to
    10240 x (1 - h) = 2944 = 512 + 19 x 128."""
    m, hw = llama
    w = Workload(prompt=Lengths(512, 512), gen=Lengths(4, 4), rate_rps=0.1, requests=20, shared_prefix_len=384)
    cold = simulate(m, hw, w)
    warm = simulate(m, hw, w, ServerConfig(prefix_caching=True))
    assert cold.prefix_hit_rate is None and cold.prefill_tokens == 10240
    assert warm.prefix_hit_rate == pytest.approx(0.7125, rel=1e-12)
    assert warm.prefill_tokens == 2944 == round(10240 * (1 - 0.7125))
    # the first request sees a cold cache: same TTFT; the others prefill 128 tokens instead of 512
    assert warm.records[0].ttft_s == cold.records[0].ttft_s
    assert all(r.ttft_s < 0.5 * cold.records[0].ttft_s for r in warm.records[1:])


def test_prefix_groups_draw_a_prefix_each(llama):
    """With 4 groups each group misses once, the others hit: h = (20 - 4) x 256 / (20 x 512)
    = 0.4 exactly, provided all 4 groups were drawn (seed 0 draws them all)."""
    m, hw = llama
    w = Workload(prompt=Lengths(512, 512), gen=Lengths(2, 2), rate_rps=0.1, requests=20, shared_prefix_len=256,
                 prefix_groups=4)
    res = simulate(m, hw, w, ServerConfig(prefix_caching=True))
    assert res.prefix_hit_rate == pytest.approx(0.4, rel=1e-12)


@pytest.mark.parametrize("blocks, hit_tokens, computed", [(4, 0, 27), (8, 8, 19)])
def test_lru_eviction_inside_the_kv_budget(small, blocks, hit_tokens, computed):
    """Requests A, B, A one after the other; prompt 9 whose first 8 tokens (2 blocks of 4) are
    prefix A or B; output 1 token; each needs ceil(9 / 4) = 3 blocks. With a 4-block cache,
    A's 2 cached blocks leave 2 free: B must evict A, so the second A misses (0 of 27 prompt
    tokens hit). With 8 blocks both prefixes stay: the second A hits 8 tokens, 27 - 8 = 19
    are computed."""
    cfg = ServerConfig(prefix_caching=True, block_size=4)
    hw = tight_gpu(small, blocks, cfg, 9, 10)
    trace = tuple(Request(10.0 * i, 9, 1, (k,), 8) for i, k in enumerate((1, 2, 1)))
    res = simulate(small, hw, Workload(trace=trace), cfg)
    assert res.capacity.kv_blocks == blocks
    assert (res.prefix_hit_tokens, res.prompt_tokens, res.prefill_tokens) == (hit_tokens, 27, computed)


def test_mooncake_hash_ids_hit_whole_keys_and_leave_a_token(tmp_path):
    """Prompts of 1100 tokens, keys of 512: at most (1100 - 1) // 512 = 2 keys are reusable.
    Request 2 shares keys 46, 47 (1024 tokens); request 3 too (its 3rd key, 48, covers tokens
    1024..1535, past what may be cached): 2048 of 3300 prompt tokens hit."""
    p = tmp_path / "mc.jsonl"
    p.write_text('{"timestamp": 0, "input_length": 1100, "output_length": 5, "hash_ids": [46, 47, 48]}\n'
                 '{"timestamp": 10000, "input_length": 1100, "output_length": 5, "hash_ids": [46, 47, 49]}\n'
                 '{"timestamp": 20000, "input_length": 1100, "output_length": 5, "hash_ids": [46, 47, 48]}\n')
    r = runner.invoke(app, ["simulate", "--trace", str(p), "--prefix-caching", "-f", "json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["prefix_cache"] == {"hit_rate": 2048 / 3300, "prompt_tokens": 3300, "hit_tokens": 2048,
                                 "prefill_tokens_computed": 1252}
    assert d["settings"]["prefix_caching"] is True


def test_prefix_options_are_checked():
    with pytest.raises(BatchprofError, match="--shared-prefix-len 512 must be shorter than the shortest prompt"):
        Workload(rate_rps=1.0, prompt=Lengths(512, 512), shared_prefix_len=512)
    with pytest.raises(BatchprofError, match="--prefix-groups must be >= 1"):
        Workload(rate_rps=1.0, shared_prefix_len=8, prefix_groups=0)
    with pytest.raises(BatchprofError, match="--prefix-caching needs --scheduler continuous"):
        ServerConfig(scheduler="static", prefix_caching=True)


# --------------------------------------------------------------------------- option edges


@pytest.mark.parametrize("args, message", [
    (("-r", "1,,2"), "--rate: empty item in '1,,2'"),
    (("-r", "5..1"), "--rate: the range 5..1 must go upwards (write 1..5)"),
    (("-r", "1..5", "--rate-points", "0"), "--rate-points must be >= 2"),
    (("--time-scale", "2", "-r", "1"), "give --trace FILE"),
    (("--trace-rate", "2", "-r", "1"), "give --trace FILE"),
])
def test_rate_and_trace_option_mistakes_are_one_line(args, message):
    r = runner.invoke(app, ["simulate", "-m", "gpt2", "-n", "5", *args])
    assert r.exit_code == 2, r.output
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_a_group_without_its_subcommand_names_the_choices():
    r = runner.invoke(app, ["profiles"])
    assert r.exit_code == 2
    assert "error: missing command (choose from list, show)" in r.stderr


# --------------------------------------------------------------------------- speculative decoding

from gpt_batchprof.analytic import Dtypes  # noqa: E402
from gpt_batchprof.analytic.speculative import Speculation, mtp_draft, speculative_points, tokens_per_step  # noqa: E402


@pytest.mark.parametrize("k, a, expected", [(4, 0.0, 1.0), (3, 0.5, 1.875), (4, 0.5, 1.9375), (3, 1.0, 4.0),
                                            (1, 0.8, 1.8)])
def test_tokens_per_verify_step(k, a, expected):
    """1 + a + ... + a^k: a = 0 only the target's own token; a = 0.5, k = 3: 1 + 1/2 + 1/4 + 1/8;
    a = 1: all k drafted tokens plus the bonus one."""
    assert tokens_per_step(k, a) == pytest.approx(expected, rel=1e-12)
    assert Speculation(k, a, load_model("gpt2")).tokens_per_step == pytest.approx(expected, rel=1e-12)


@pytest.fixture(scope="module")
def weight_bound():
    """Every small step here is its weight read: a 2-layer d=2048 model (~200 MB fp16) on a
    1 GB/s device with 1000 TFLOP/s and no launch overhead, and a tiny draft (~1% of the bytes)."""
    m = model_from_mapping({"name": "wide", "n_layer": 2, "d_model": 2048, "n_head": 16, "n_kv_head": 16,
                            "d_ff": 8192, "ffn": "gelu", "vocab_size": 1000, "max_seq_len": 512}, "test")
    d = model_from_mapping({"name": "tiny", "n_layer": 1, "d_model": 256, "n_head": 4, "n_kv_head": 4,
                            "d_ff": 1024, "ffn": "gelu", "vocab_size": 1000, "max_seq_len": 512}, "test")
    hw = hardware_from_mapping({"name": "slow", "kind": "gpu", "memory_gb": 2, "memory_bandwidth_gb_s": 1,
                                "peak_tflops": {"fp16": 1000}, "launch_overhead_us": 0}, "test")
    return m, d, hw


def test_memory_bound_speedup_is_tokens_per_step_over_the_draft_overhead(weight_bound):
    """When steps are weight reads, verifying k + 1 tokens costs one decode step T and a draft
    step costs T x (draft bytes / target bytes) = T r, so the speed-up is E / (1 + k r). (At 8
    cached tokens the k + 1 reads of the cache add < 0.5% to the verify.)"""
    m, d, hw = weight_bound
    r = d.weight_bytes("fp16", "fp16") / m.weight_bytes("fp16", "fp16")
    assert 0.005 < r < 0.02
    for k, a in ((1, 1.0), (4, 0.5), (4, 0.8)):
        (p,) = speculative_points(m, hw, Speculation(k, a, d), (1,), 8, Dtypes(), "unfused", "eager")
        assert p.verify_s == pytest.approx(p.itl_s, rel=0.01)
        assert p.speedup == pytest.approx(tokens_per_step(k, a) / (1 + k * r), rel=0.01)


def test_the_gain_shrinks_as_the_batch_turns_compute_bound(llama):
    """llama-2-7b on an A100 (its datasheet roofline), 4 tokens drafted by MTP heads, a = 0.5
    (E = 1.94): at batch 1 the verify of 5 tokens costs about a decode step (weights
    dominate; reading the 575-token cache 5 times adds ~9%) and speculation gains ~1.5x; at batch 256 (past the critical batch, 166) the
    verify costs ~2x a decode step and speculation loses."""
    from dataclasses import replace

    m, hw = llama
    hw = replace(hw, measured=None)
    pts = speculative_points(m, hw, Speculation(4, 0.5, mtp_draft(m)), (1, 16, 64, 256), 575, Dtypes(),
                             "unfused", "graphs")
    speedups = [p.speedup for p in pts]
    assert speedups == sorted(speedups, reverse=True)
    assert speedups[0] > 1.4 and speedups[-1] < 1.0
    assert pts[0].verify_s < 1.1 * pts[0].itl_s and pts[-1].verify_s > 1.8 * pts[-1].itl_s


def test_simulated_itl_with_speculation(weight_bound):
    """One request alone, prompt 8, 33 tokens out: with k = 1, a = 1 every round yields 2
    tokens for one verify (~T) and one draft step (T r): ITL falls to (1 + r) / 2 of plain."""
    m, d, hw = weight_bound
    r = d.weight_bytes("fp16", "fp16") / m.weight_bytes("fp16", "fp16")
    w = Workload(trace=(Request(0.0, 8, 33),))
    plain = simulate(m, hw, w)
    spec = simulate(m, hw, w, ServerConfig(speculation=Speculation(1, 1.0, d)))
    assert spec.records[0].itl_s / plain.records[0].itl_s == pytest.approx((1 + r) / 2, rel=0.01)
    assert spec.records[0].ttft_s == plain.records[0].ttft_s  # the prompt is not speculated
    assert spec.capacity.kv_blocks < plain.capacity.kv_blocks  # the draft's weights and cache take memory


@pytest.mark.parametrize("args, message", [
    (("--speculate", "4"), "--speculate needs --draft"),
    (("--draft", "mtp"), "--draft needs --speculate"),
    (("--speculate", "4", "--draft", "mtp", "--acceptance", "1.5"), "--acceptance must be between 0 and 1"),
    (("--speculate", "4", "--draft", "mtp", "--tp", "2"), "modelled on one GPU"),
])
def test_speculation_option_mistakes(args, message):
    for cmd in (["analyze"], ["simulate", "-r", "1", "-n", "5"]):
        r = runner.invoke(app, [*cmd, *args])
        assert r.exit_code == 2, r.output
        assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_analyze_json_speculative_rows():
    r = runner.invoke(app, ["analyze", "-b", "1,8", "--speculate", "3", "--draft", "gpt2", "--acceptance", "0.5",
                            "-f", "json"])
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)["speculative"]
    assert s["speculate_k"] == 3 and s["draft"] == "gpt2" and s["tokens_per_step"] == 1.875
    assert [p["batch"] for p in s["points"]] == [1, 8]
    assert all(p["spec_itl_s"] == pytest.approx((p["verify_s"] + p["draft_s"]) / 1.875) for p in s["points"])


# --------------------------------------------------------------------------- pools: replicas and disaggregation

from gpt_batchprof.analytic import Parallelism  # noqa: E402
from gpt_batchprof.simulate.disagg import Disagg, parse_disagg  # noqa: E402

KV_512 = 512 * 2 * 32 * 4096 * 2  # llama-2-7b fp16: 512 KiB per token (K and V, 32 layers, d 4096), 512 tokens


@pytest.mark.parametrize("link_gb_s, expected_s", [(None, KV_512 / 300e9 + 1e-6), (25.0, KV_512 / 25e9 + 1e-6)])
def test_one_request_disaggregated_ttft_is_prefill_plus_the_kv_transfer(llama, link_gb_s, expected_s):
    """One request, prompt 512: its 256 MiB of KV cross NVLink (300 GB/s, 1 us) in 0.8958 ms,
    or a 25 GB/s link in 10.74 ms; TTFT is the aggregated server's (the same prefill) plus
    that; the decode instance then runs the same decode steps: ITL unchanged."""
    m, hw = llama
    w = Workload(trace=(Request(0.0, 512, 16),))
    agg = simulate(m, hw, w)
    dis = simulate(m, hw, w, ServerConfig(disagg=parse_disagg("1:1", link_gb_s)))
    assert dis.records[0].ttft_s - agg.records[0].ttft_s == pytest.approx(expected_s, rel=1e-9)
    assert dis.kv_transfer_s_mean == pytest.approx(expected_s, rel=1e-9)
    assert dis.records[0].itl_s == pytest.approx(agg.records[0].itl_s, rel=1e-9)
    assert dis.gpus == 2 and dis.goodput_per_gpu_rps == dis.summary.goodput_rps / 2


def test_one_link_carries_one_transfer_at_a_time(llama):
    """Two equal prompts at t=0 prefill together on the one prefill instance; the second's KV
    waits for the first's: its TTFT is one transfer (0.8958 ms) later."""
    m, hw = llama
    w = Workload(trace=(Request(0.0, 512, 16), Request(0.0, 512, 16)))
    dis = simulate(m, hw, w, ServerConfig(disagg=Disagg(1, 2)))
    a, b = dis.records
    assert b.ttft_s - a.ttft_s == pytest.approx(KV_512 / 300e9 + 1e-6, rel=1e-9)


def test_replicas_share_arrivals_round_robin(llama):
    """Two requests at t=0: one server prefills them together (a longer step); two replicas
    take one each, so each sees the TTFT of a request alone. GPUs: 2 x (tp 2) = 4."""
    m, hw = llama
    w = Workload(trace=(Request(0.0, 512, 4), Request(0.0, 512, 4)))
    alone = simulate(m, hw, Workload(trace=(Request(0.0, 512, 4),))).records[0].ttft_s
    one = simulate(m, hw, w)
    two = simulate(m, hw, w, ServerConfig(replicas=2))
    assert all(r.ttft_s > alone for r in one.records)
    assert [r.ttft_s for r in two.records] == [alone, alone]
    assert simulate(m, hw, w, ServerConfig(replicas=2, parallel=Parallelism(tp=2))).gpus == 4


def test_cli_compare_at_equal_gpu_count():
    r = runner.invoke(app, ["simulate", "-r", "10", "-n", "100", "--disagg", "1:3", "--compare", "-f", "json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)["compare"]
    assert [(x["mode"], x["layout"], x["gpus"]) for x in rows] == [("aggregated", "4x", 4),
                                                                   ("disaggregated", "1P:3D", 4)]
    assert rows[0]["kv_transfer_s_mean"] is None and rows[1]["kv_transfer_s_mean"] > 0


@pytest.mark.parametrize("args, message", [
    (("--disagg", "1-3"), "--disagg: cannot read '1-3'"),
    (("--disagg", "0:2"), "at least one prefill and one decode instance"),
    (("--kv-link", "10"), "--kv-link needs --disagg P:D"),
    (("--compare",), "--compare needs --disagg P:D"),
    (("--disagg", "1:1", "--kv-link", "0"), "--kv-link must be a finite bandwidth > 0"),
    (("--disagg", "1:1", "--replicas", "2"), "not both"),
    (("--disagg", "1:1", "--compare", "-o", "x.csv"), "-o is not written with --compare"),
    (("--replicas", "2", "--concurrency", "4", "--rate", None), "not --concurrency"),
])
def test_pool_option_mistakes(args, message):
    base = ["simulate", "-m", "gpt2", "-n", "5"] + ([] if None in args else ["-r", "1"])
    r = runner.invoke(app, base + [a for a in args if a is not None and a != "--rate"])
    assert r.exit_code == 2, r.output
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_a_device_without_interconnect_needs_kv_link(weight_bound):
    m, _, hw = weight_bound  # its profile names no interconnect
    with pytest.raises(BatchprofError, match="slow has no interconnect: give --kv-link GB/s"):
        simulate(m, hw, Workload(trace=(Request(0.0, 8, 4),)), ServerConfig(disagg=Disagg(1, 1)))
    res = simulate(m, hw, Workload(trace=(Request(0.0, 8, 4),)), ServerConfig(disagg=Disagg(1, 1, 1e9)))
    kv = 8 * m.kv_bytes_per_token("fp16")  # no interconnect, no latency: bytes / 1 GB/s
    assert res.kv_transfer_s_mean == pytest.approx(kv / 1e9, rel=1e-12)


def test_each_pool_its_own_tp(llama):
    """--prefill-tp 2 --decode-tp 2: each GPU holds half of every token's KV (16 of 32 heads),
    256 KiB, and sends it over its own link: the transfer halves to 512 x 256 KiB / 300 GB/s
    + 1 us. With prefill tp 1 and decode tp 2 the single prefill GPU sends whole tokens: the
    full 0.8958 ms. GPUs: 1 x 2 + 1 x 2 = 4, and 1 x 1 + 1 x 2 = 3."""
    m, hw = llama
    w = Workload(trace=(Request(0.0, 512, 16),))
    both = simulate(m, hw, w, ServerConfig(disagg=Disagg(1, 1, prefill_tp=2, decode_tp=2)))
    assert both.kv_transfer_s_mean == pytest.approx(KV_512 / 2 / 300e9 + 1e-6, rel=1e-9)
    assert both.gpus == 4
    mixed = simulate(m, hw, w, ServerConfig(disagg=Disagg(1, 1, decode_tp=2)))
    assert mixed.kv_transfer_s_mean == pytest.approx(KV_512 / 300e9 + 1e-6, rel=1e-9)
    assert mixed.gpus == 3
    r = runner.invoke(app, ["simulate", "-r", "1", "-n", "5", "--tp", "2", "--disagg", "1:1", "--prefill-tp", "1",
                            "--compare"])
    assert r.exit_code == 2 and "has 3 GPUs, not a whole number of aggregated servers of 2 GPUs" in r.stderr


def test_rescale_trace_keeps_its_bursts_at_each_rate(tmp_path):
    """Arrivals 0, 1, 4 s (mean rate 0.5 req/s): at --rate 2 --rescale-trace they become
    0, 0.25, 1 s (x 0.25); --find-max-rate searches over that scaling."""
    p = tmp_path / "t.csv"
    p.write_text("arrival_s,prompt_len,gen_len\n0,8,2\n1,8,2\n4,8,2\n")
    w = Workload(trace=read_trace(p), rescale_trace=True)
    assert [r.arrival_s for r in w.with_rate(2.0).trace] == [0.0, 0.25, 1.0]
    r = runner.invoke(app, ["simulate", "-m", "gpt2", "--trace", str(p), "-r", "2", "--rescale-trace", "-f", "json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert [q["arrival_s"] for q in d["requests"]] == [0.0, 0.25, 1.0] and d["settings"]["rescale_trace"] is True
    busy = tmp_path / "busy.csv"  # 200 requests in bursts of 10 at one time, a burst per second
    busy.write_text("arrival_s,prompt_len,gen_len\n" + "".join(f"{i // 10},512,64\n" for i in range(200)))
    r = runner.invoke(app, ["simulate", "--trace", str(busy), "--rescale-trace", "--find-max-rate", "-f", "json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    arrivals = sorted({q["arrival_s"] for q in d["requests"]})
    assert len(arrivals) == 20  # still 20 bursts of 10 requests
    # mean rate 199 requests / 19 s: a burst gap of 1 s becomes (199 / 19) / rate
    assert arrivals[1] - arrivals[0] == pytest.approx(199 / 19 / d["max_rate_rps"], rel=1e-9)
    for args, message in ((["--rescale-trace"], "give one, or use --trace-rate"),
                          (["--rescale-trace", "-c", "2"], "no --concurrency")):
        r = runner.invoke(app, ["simulate", "-m", "gpt2", "--trace", str(p), *args])
        assert r.exit_code == 2 and message in r.stderr, r.output
    one = tmp_path / "one.csv"
    one.write_text("arrival_s,prompt_len,gen_len\n0,8,2\n")
    with pytest.raises(BatchprofError, match="no rate to rescale"):
        Workload(trace=read_trace(one), rescale_trace=True).with_rate(1.0)


def test_prefix_options_that_change_nothing_say_so():
    r = runner.invoke(app, ["simulate", "-m", "gpt2", "-r", "5", "-n", "5", "--prefix-caching", "-f", "json"])
    assert r.exit_code == 0 and "no request shares a prefix" in r.stderr
    assert json.loads(r.stdout)["prefix_cache"]["hit_rate"] == 0.0
    r = runner.invoke(app, ["simulate", "-m", "gpt2", "-r", "5", "-n", "5", "--shared-prefix-len", "100"])
    assert r.exit_code == 0 and "without --prefix-caching: every prompt is computed in full" in r.stderr


def test_a_search_prices_each_pool_at_its_own_tp(llama):
    """find_max_rate hands every run one step model built for --tp; a prefill pool at
    --prefill-tp 2 must not be priced with it: one request's TTFT through the search's path
    equals a fresh run's."""
    from gpt_batchprof.simulate.engine import server_steps

    m, hw = llama
    cfg = ServerConfig(disagg=Disagg(1, 1, prefill_tp=2))
    w = Workload(trace=(Request(0.0, 512, 16),))
    fresh = simulate(m, hw, w, cfg)
    searched = simulate(m, hw, w, cfg, steps=server_steps(m, hw, cfg))
    assert searched.records[0].ttft_s == fresh.records[0].ttft_s
