"""How a parallel layout shards the model (analytic/parallel.py): collective formulas and the rows
that price them, layout validation, the rows of a sharded step and the weights each GPU holds,
worked by hand. (The end-to-end TP/PP/EP numbers and the live gloo run are in test_parallel.py.)
"""

import pytest

from gpt_batchprof.analytic import Dtypes, Parallelism, enumerate_ops
from gpt_batchprof.analytic.ops import OpShape
from gpt_batchprof.analytic.parallel import alltoall_time, collective_cost, ring_allreduce_time, stage_layers
from gpt_batchprof.analytic.roofline import predict, predict_collective
from gpt_batchprof.errors import BatchprofError, ProfileError
from gpt_batchprof.profiles import model_from_mapping


# --------------------------------------------------------------------------- collectives


# 100 GB/s per direction, 5 us per hop
LINK = {"name": "toy link", "bandwidth_gb_s": 100, "latency_us": 5}


def test_collective_formulas_at_two_ranks_and_one():
    # ring all-reduce of 1000 B over 2 at 100 B/s, 1 s per hop: 2 x 1/2 x 1000 / 100 + 2 x 1 x 1 = 12
    assert ring_allreduce_time(1000, 2, 100, 1) == 12
    assert ring_allreduce_time(1000, 1, 100, 1) == 0.0  # nothing to reduce on one GPU
    # all-to-all: 1/2 x 1000 / 100 + 1 x 1 = 6
    assert alltoall_time(1000, 2, 100, 1) == 6
    assert alltoall_time(1000, 1, 100, 1) == 0.0


def test_collective_rows_are_priced_by_the_link(toy_gpu):
    ctx = ("decode", 8, 1, 3)
    kw = dict(launches=2, ranks=4, rows=8, width=256, compute_dtype="fp16", ctx=ctx)
    # 4,000,000 B per call over 4 GPUs at 1e11 B/s, 5 us per hop:
    # all-reduce: link 2 x 3/4 x 4e6 / 1e11 = 60 us, latency 2 x 3 x 5 = 30 us; 2 calls -> 120 + 60 = 180 us
    ar = collective_cost("tp_allreduce", message_bytes=4e6, **kw)
    assert (ar.op, ar.phase, ar.batch, ar.new_tokens, ar.kv_len, ar.compute_dtype) == ("tp_allreduce", *ctx, "fp16")
    assert (ar.flops, ar.bytes, ar.weight_bytes, ar.launches) == (0.0, 8e6, 0.0, 2)
    assert ar.shape == OpShape(m=8, n=256, k=0, ranks=4)
    p = predict_collective(ar, toy_gpu(interconnect=LINK))
    assert p.compute_s == 0.0 and p.bound == "link"
    assert (p.memory_s, p.overhead_s, p.time_s) == pytest.approx((120e-6, 60e-6, 180e-6))
    # all-to-all: link 3/4 x 4e-5 s = 30 us, latency 3 x 5 = 15 us; x 2 calls
    p = predict_collective(collective_cost("ep_alltoall", message_bytes=4e6, **kw), toy_gpu(interconnect=LINK))
    assert (p.memory_s, p.overhead_s, p.time_s) == pytest.approx((60e-6, 30e-6, 90e-6))
    # send/recv: 4e6 / 1e11 = 40 us + 5 us; x 2
    p = predict_collective(collective_cost("pp_sendrecv", message_bytes=4e6, **kw), toy_gpu(interconnect=LINK))
    assert (p.memory_s, p.overhead_s) == pytest.approx((80e-6, 10e-6))
    # a tiny message: 1000 B all-to-all, link 3/4 x 1e-8 s = 7.5 ns under 15 us of hops: latency-bound
    p = predict_collective(collective_cost("ep_alltoall", message_bytes=1000, **kw), toy_gpu(interconnect=LINK))
    assert p.bound == "latency" and p.memory_s == pytest.approx(2 * 7.5e-9)
    with pytest.raises(ProfileError, match=r"^hardware 'toy': no interconnect section to price tp_allreduce "
                                           r"\(add interconnect: name, bandwidth_gb_s, latency_us\)$"):
        predict_collective(ar, toy_gpu())


def test_a_measured_link_prices_collectives_and_the_datasheet_link_is_their_roofline(toy_gpu, measured_section):
    """A link fitted from measured all-reduces (measured.interconnect: 50 GB/s, 2 us per hop) prices the
    rows; the datasheet's 100 GB/s and 5 us stay beside them as the roofline."""
    kw = dict(launches=2, ranks=4, rows=8, width=256, compute_dtype="fp16", ctx=("decode", 8, 1, 3))
    ar = collective_cost("tp_allreduce", message_bytes=4e6, **kw)
    measured = measured_section({"copy": {"unit": "GB/s", "bytes": [1000], "values": [100]}},
                                interconnect={"name": "fitted", "bandwidth_gb_s": 50, "latency_us": 2})
    both = toy_gpu(interconnect=LINK, measured=measured)
    # measured, per call: link 2 x 3/4 x 4e6 / 5e10 = 120 us, latency 2 x 3 x 2 = 12 us; 2 calls: 240 + 24 = 264 us.
    # datasheet: 180 us (above)
    p = predict(ar, both)
    assert (p.compute_s, p.memory_s, p.overhead_s, p.time_s) == pytest.approx((0.0, 240e-6, 24e-6, 264e-6))
    assert p.roofline_time_s == pytest.approx(180e-6)
    assert (p.prediction, p.tables, p.bound) == ("calibrated", ("interconnect",), "link")
    # --roofline: the datasheet link alone
    r = predict(ar, both, roofline_only=True)
    assert (r.memory_s, r.overhead_s, r.time_s, r.roofline_time_s) == pytest.approx((120e-6, 60e-6, 180e-6, 180e-6))
    assert (r.prediction, r.tables) == ("roofline", ())
    # no datasheet link: the measured one is its own roofline
    only = predict_collective(ar, toy_gpu(measured=measured))
    assert (only.time_s, only.roofline_time_s) == pytest.approx((264e-6, 264e-6))
    # 1000 B all-to-all: link 3/4 x 1000 / 5e10 = 15 ns under 3 x 2 us of hops: latency-bound on the measured link
    tiny = predict_collective(collective_cost("ep_alltoall", message_bytes=1000, **kw), both)
    assert tiny.bound == "latency"
    assert (tiny.memory_s, tiny.overhead_s) == pytest.approx((2 * 15e-9, 2 * 6e-6))
    # all-reduce over one GPU: nothing moves, and a zero link time is not latency-bound
    one = predict_collective(collective_cost("tp_allreduce", message_bytes=4e6, **(kw | {"ranks": 1})), both)
    assert (one.time_s, one.bound) == (0.0, "link")


# --------------------------------------------------------------------------- layouts and the rows they shard


def test_layout_validation_and_labels():
    assert Parallelism().label() == "TP 1 x PP 1 x EP 1 = 1 GPU"
    assert Parallelism(tp=2, pp=3).label() == "TP 2 x PP 3 x EP 1 = 6 GPUs"
    for bad, shown in ((dict(tp=0), "--tp must be an integer >= 1, got 0"),
                       (dict(pp=1.5), "--pp must be an integer >= 1, got 1.5"),
                       (dict(ep=True), "--ep must be an integer >= 1, got True"),
                       (dict(micro_batches=0), "--micro-batches must be an integer >= 1, got 0")):
        with pytest.raises(BatchprofError) as e:
            Parallelism(**bad)
        assert str(e.value) == shown
    with pytest.raises(BatchprofError, match=r"^--micro-batches 2 needs --pp > 1"):
        Parallelism(micro_batches=2)
    assert stage_layers(5, 2) == (3, 2)  # the first stage takes the extra layer
    assert stage_layers(4, 2) == (2, 2)


def test_sharded_rows_of_a_pipelined_tensor_parallel_decode_step(tiny_model):
    """tiny over TP 2 x PP 2 with 2 micro-batches, decode of batch 4 at 5 cached tokens.

    One GPU of a stage: 1 layer, 4 query heads, max(1, 2 // 2) = 1 K/V head, d_ff 256, 500 vocabulary rows;
    2 micro-batches of 2 sequences (1 token each): every row is 2 micro-batches' worth.
    """
    par = Parallelism(tp=2, pp=2, micro_batches=2)
    ops = {o.op: o for o in enumerate_ops(tiny_model, "decode", 4, kv_len=5, parallel=par)}
    for o in ops.values():
        assert (o.phase, o.batch, o.new_tokens, o.kv_len, o.compute_dtype) == ("decode", 4, 1, 5, "fp16"), o.op
    # QKV: n = 128 + 2 x 32 = 192; per micro-batch 2 x 2 x 256 x 192 = 196,608 FLOPs,
    # 256 x 192 x 2 = 98,304 B weights + 2 x 256 x 2 = 1024 in + 2 x 192 x 2 = 768 out = 100,096 B
    q = ops["qkv_proj"]
    assert (q.flops, q.bytes, q.weight_bytes, q.launches) == (2 * 196_608, 2 * 100_096, 2 * 98_304, 2)
    assert q.shape == OpShape(2, 192, 256)
    # all-reduce of 2 tokens x 256 x 2 B = 1024 B, twice per layer (no embedding all-reduce on a pipeline)
    ar = ops["tp_allreduce"]
    assert (ar.flops, ar.bytes, ar.weight_bytes, ar.launches) == (0.0, 2 * 2 * 1024, 0.0, 2 * 2)
    assert ar.shape == OpShape(m=2, n=256, k=0, ranks=2)
    sr = ops["pp_sendrecv"]  # one 1024 B hand-over per micro-batch
    assert (sr.bytes, sr.launches, sr.shape) == (2 * 1024, 2, OpShape(m=2, n=256, k=0, ranks=2))
    assert "ep_alltoall" not in ops
    # TP only: 2 layers x 2 + 1 after the embedding = 5 all-reduces, and no hand-over between stages
    tp = {o.op: o for o in enumerate_ops(tiny_model, "decode", 4, kv_len=5, parallel=Parallelism(tp=2))}
    assert tp["tp_allreduce"].launches == 5 and "pp_sendrecv" not in tp and "ep_alltoall" not in tp
    pp = {o.op: o for o in enumerate_ops(tiny_model, "decode", 4, kv_len=5, parallel=Parallelism(pp=2))}
    assert "tp_allreduce" not in pp and "pp_sendrecv" in pp


def test_expert_parallel_decode_rows(small_moe):
    """The small MoE (1 layer, d 8, 4 experts of d_ff 16, 2 active, shared expert 8) over EP 2, decode of
    batch 2: each group serves ceil(2 / 2) = 1 sequence, 1 token routed to 2 experts."""
    ops = {o.op: o for o in enumerate_ops(small_moe(), "decode", 2, kv_len=0, parallel=Parallelism(ep=2))}
    # experts a GPU touches: both groups' 2 tokens pick 2 of 4: 4 x (1 - (1/2)^2) = 3 experts in all, 3 / 2 = 1.5
    # per GPU. gate/up: rows 1 x 2 = 2; FLOPs 2 x 2 x 8 x 16 = 512; weights 1.5 x 8 x 16 x 2 B = 384;
    # 2 x 8 x 2 = 32 B in + 384 + 2 x 16 x 2 = 64 B out = 480; round(1.5) = 2 groups of round(2 / 1.5) = 1 row
    for name, shape in (("ffn_gate", OpShape(1, 16, 8, batch=2)), ("ffn_up", OpShape(1, 16, 8, batch=2)),
                        ("ffn_down", OpShape(1, 8, 16, batch=2))):
        o = ops[name]
        assert (o.flops, o.bytes, o.weight_bytes, o.shape) == (512, 480, 384, shape), name
        assert (o.batch, o.new_tokens, o.launches) == (2, 1, 1)
    assert ops["ffn_shared_up"].flops == 128  # the shared expert is not split over the groups
    # dispatch and combine, each 1 token x 2 experts x 8 x 2 B = 32 B: 2 calls, 64 B, over 2 GPUs
    a2a = ops["ep_alltoall"]
    assert (a2a.bytes, a2a.launches, a2a.shape) == (64, 2, OpShape(m=1, n=8, k=0, ranks=2))
    assert "tp_allreduce" not in ops and "pp_sendrecv" not in ops


# --------------------------------------------------------------------------- weights per GPU (weight_split)


GPT2ISH = {"name": "g", "n_layer": 2, "d_model": 8, "n_head": 2, "n_kv_head": 2, "d_ff": 16, "ffn": "gelu",
           "vocab_size": 10, "max_seq_len": 6, "norm": "layernorm", "positional": "learned", "bias": True,
           "tied_embeddings": True}


@pytest.mark.parametrize("variant,pp,weight,want", [
    # TP 2, fp16 (2 B). Per layer on one GPU: Q and O 2 x 8 x 4 = 64, FFN 2 x 8 x 8 = 128 -> 192 x 2 B = 384;
    # K and V 2 x 8 x 4 x 2 B = 128 + their biases 2 x 4 x 2 B = 16; column-parallel biases (4 + 8) x 2 B = 24
    # -> sharded 552 B. Replicated: two layernorms 2 x 16 x 2 B = 64, row-parallel biases (8 + 8) x 2 B = 32 -> 96.
    # Vocabulary 10 / 2 = 5 rows x 8 x 2 B = 80 (tied: once); learned positions 6 x 8 x 2 B = 96; final norm 32.
    ("tied", 1, "fp16", (2 * 552 + 80, 2 * 96 + 96 + 32)),
    ("untied", 1, "fp16", (2 * 552 + 80 + 80, 2 * 96 + 96 + 32)),
    # PP 2: stage 0 holds layer 0, the embedding and positions (632 + 192 = 824 B); stage 1 layer 1, the
    # final norm and the head, a copy of the tied embedding (632 + 128 = 760 B): the fullest is stage 0
    ("tied", 2, "fp16", (552 + 80, 96 + 96)),
    # int8 weights: the blocks' matrices at 1 B (192 + K/V 64), biases, norms, embedding and positions at fp16:
    # sharded per layer 192 + 64 + 16 + 24 = 296
    ("tied", 1, "int8", (2 * 296 + 80, 2 * 96 + 96 + 32)),
])
def test_weight_split_of_a_gpt2_style_model_by_hand(variant, pp, weight, want):
    from gpt_batchprof.analytic import Parallelism
    from gpt_batchprof.analytic.parallel import weight_split

    model = model_from_mapping(GPT2ISH | {"tied_embeddings": variant == "tied"}, "test")
    got = weight_split(model, Parallelism(tp=2, pp=pp), Dtypes.of("fp16", weight))
    assert (got.sharded_bytes, got.replicated_bytes) == want


def test_weight_split_replicates_kv_heads_when_fewer_than_tp():
    from gpt_batchprof.analytic import Parallelism
    from gpt_batchprof.analytic.parallel import weight_split

    # d 8, 4 query heads of 2, 1 K/V head, SwiGLU 16, rmsnorm, rope, untied, no bias, TP 2, fp16:
    # sharded per layer (2 x 8 x 4 + 3 x 8 x 8) x 2 B = 512; replicated: 2 rmsnorms 2 x 8 x 2 B = 32 and the
    # whole K/V head 2 x 8 x 2 x 2 B = 64 -> 96. Vocabulary 5 x 8 x 2 B = 80, twice (untied); final norm 16.
    model = model_from_mapping({"name": "gqa", "n_layer": 2, "d_model": 8, "n_head": 4, "n_kv_head": 1,
                                "d_ff": 16, "ffn": "swiglu", "vocab_size": 10, "max_seq_len": 6,
                                "norm": "rmsnorm"}, "test")
    got = weight_split(model, Parallelism(tp=2), Dtypes.of("fp16"))
    assert (got.sharded_bytes, got.replicated_bytes) == (2 * 512 + 80 + 80, 2 * 96 + 16)
