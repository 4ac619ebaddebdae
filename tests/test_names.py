"""One meaning per name: an operator's ``new_tokens`` (tokens the step feeds in per sequence)
is not the sweep's ``seq_len`` (tokens of context the step works at) nor ``max_seq_len``."""

import csv
import io
import json

from typer.testing import CliRunner

from gpt_batchprof.analytic import OpCost, enumerate_ops
from gpt_batchprof.cli import app
from gpt_batchprof.profiles import load_model
from gpt_batchprof.sweep.evaluate import Evaluator
from gpt_batchprof.sweep.grid import SweepSpec, resolve

runner = CliRunner()


def test_opcost_counts_new_tokens_and_has_no_seq_len():
    m = load_model("gpt2")
    assert "seq_len" not in OpCost.__dataclass_fields__
    assert {(c.new_tokens, c.kv_len) for c in enumerate_ops(m, "prefill", 2, new_tokens=64)} == {(64, 0)}
    # decode feeds one token per sequence whatever the cache holds
    assert {(c.new_tokens, c.kv_len) for c in enumerate_ops(m, "decode", 2, kv_len=300)} == {(1, 300)}


def test_analyze_op_rows_say_new_tokens_one_in_decode():
    r = runner.invoke(app, ["analyze", "-m", "gpt2", "-H", "t4", "-b", "1,8", "--prompt-len", "128",
                            "--gen-len", "16", "-f", "json"])
    assert r.exit_code == 0, r.output
    ops = json.loads(r.stdout)["ops"]
    assert all("seq_len" not in o for o in ops)
    # prefill: the 128-token prompt, nothing cached; decode: 1 new token at the mean cache of the
    # 15 decode steps (128 .. 142), 128 + 16 // 2 - 1 = 135
    assert {(o["phase"], o["new_tokens"], o["kv_len"]) for o in ops} == {("prefill", 128, 0), ("decode", 1, 135)}
    r = runner.invoke(app, ["analyze", "-m", "gpt2", "-H", "t4", "-b", "1", "--prompt-len", "128",
                            "--gen-len", "16", "-f", "csv", "--per-op"])
    assert r.exit_code == 0, r.output
    header = next(csv.reader(io.StringIO(r.stdout)))
    assert "new_tokens" in header and "seq_len" not in header


def test_sweep_seq_len_is_the_prompt_in_prefill_and_the_cache_in_decode():
    # gpt2 (12 layers, d 768), batch 2 at seq_len 100: prefill feeds the 100-token prompt,
    # decode 1 token with 100 cached; qkv_proj weights 768 x 2304, 2 FLOPs per MAC:
    # prefill 12 x 2 x (2 x 100) x 768 x 2304 = 8,493,465,600; decode 12 x 2 x 2 x 768 x 2304 = 84,934,656
    grid = resolve(SweepSpec(models=("gpt2",), hardware=("t4",), batches=(2,), seq_lens=(100,), ops=("qkv_proj",)))
    ev = Evaluator(grid)
    rows = {p.phase: (ev.evaluate(p), ev.costs(p)) for p in grid.points()}
    (pre,), (dec,) = rows["prefill"][1], rows["decode"][1]
    assert (pre.new_tokens, pre.kv_len, dec.new_tokens, dec.kv_len) == (100, 0, 1, 100)
    assert rows["prefill"][0].seq_len == rows["decode"][0].seq_len == 100
    assert rows["prefill"][0].flops == 8_493_465_600 and rows["decode"][0].flops == 84_934_656
    assert (rows["prefill"][0].items, rows["decode"][0].items) == (200, 2)  # batch x new tokens
