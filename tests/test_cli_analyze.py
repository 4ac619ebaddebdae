"""CLI wiring and exit codes of analyze and profiles (the maths is tested in test_analytic)."""

import csv
import io
import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from gpt_batchprof.cli import app

runner = CliRunner()


def run(*args):
    return runner.invoke(app, list(args))


def test_bare_analyze_shows_tables_and_key_figures():
    r = run("analyze")
    assert r.exit_code == 0, r.output
    assert "llama-2-7b" in r.output and "a100-80gb" in r.output
    assert "TTFT" in r.output and "critical batch" in r.output and "largest batch that fits" in r.output


def test_per_op_table_lists_every_operator_with_its_bound():
    r = run("analyze", "-m", "mixtral-8x7b", "-H", "h100-sxm", "-b", "1", "--phase", "decode", "--per-op",
            "--attention", "unfused")
    assert r.exit_code == 0, r.output
    for op in ("norm", "qkv_proj", "attn_score", "attn_softmax", "attn_context", "out_proj", "moe_router",
               "ffn_gate", "ffn_up", "ffn_down", "lm_head"):
        assert op in r.output
    assert "memory" in r.output


def test_attention_auto_is_fused_on_a_profile_measured_on_fused_kernels_and_unfused_elsewhere():
    # h100-sxm ships tables imported from FlashAttention-3 kernels (attn_decode/attn_prefill): auto -> fused;
    # t4 has no tables, and a CPU calibration times unfused attention: auto -> unfused
    ops = lambda hw: {r["op"] for r in json.loads(run("analyze", "-m", "gpt2", "-H", hw, "-b", "1", "--per-op",
                                                          "-f", "json").stdout)["ops"]}
    assert "attn_fused" in ops("h100-sxm") and "attn_score" not in ops("h100-sxm")
    assert "attn_score" in ops("t4") and "attn_fused" not in ops("t4")


def test_json_has_the_documented_fields():
    r = run("analyze", "-m", "gpt2", "-H", "t4", "-b", "1,8", "--prompt-len", "128", "--gen-len", "16", "-f", "json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert set(d) >= {"model", "hardware", "settings", "ops", "summary", "critical_batch", "max_batch"}
    row = d["ops"][0]
    assert set(row) >= {"phase", "batch", "new_tokens", "kv_len", "op", "flops", "bytes", "intensity", "time_s", "bound"}
    assert {r["phase"] for r in d["ops"]} == {"prefill", "decode"}
    assert len(d["ops"]) == 2 * 2 * 9  # 2 phases x 2 batches x 9 gpt2 operators
    s = d["summary"][1]
    assert set(s) >= {"batch", "ttft_s", "itl_s", "e2e_s", "tokens_per_s", "weights_bytes", "kv_cache_bytes", "fits"}
    # SI: gpt2 in fp16 is 124,439,808 x 2 bytes
    assert s["weights_bytes"] == 248_879_616
    # ITL at the mean cache length of the 15 decode steps (128 .. 142): 128 + 16 // 2 - 1 = 135
    assert d["settings"]["context_len"] == 135
    assert d["settings"]["tokens_per_s"].startswith("batch x gen_len / e2e_s")
    assert d["critical_batch_reachable"] in (True, False)


def test_csv_and_markdown_to_file(tmp_path):
    out = tmp_path / "ops.csv"
    r = run("analyze", "-m", "gpt2", "-b", "1,2", "--per-op", "--attention", "unfused", "-f", "csv", "-o", str(out))
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert len(rows) == 2 * 2 * 9 and rows[0]["op"] == "norm"
    assert float(rows[1]["flops"]) > 0
    r = run("analyze", "-m", "gpt2", "-b", "1,2", "-f", "markdown")
    assert r.exit_code == 0 and "| batch | ttft_s |" in r.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["-m", "lama-2-7b"], "unknown model 'lama-2-7b'"),
        (["-H", "h100"], "did you mean"),
        (["-b", "1,two"], "--batch: cannot read 'two'"),
        (["-b", "0"], "--batch: values must be >= 1"),
        (["--dtype", "fp4"], "unknown activation dtype 'fp4'"),
        (["-H", "t4", "--dtype", "bf16"], "hardware 't4': no bf16 peak"),
        (["--phase", "both-ways"], "--phase: unknown value"),
        (["--attention", "flash"], "--attention: unknown value 'flash'"),
        (["-m", "gpt2", "--prompt-len", "2000"], "exceeds gpt2's max_seq_len 1024"),
        (["-f", "xml"], "--format: unknown value 'xml'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message):
    r = run("analyze", *args)
    assert r.exit_code == 2
    assert message in r.output
    assert "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1


def test_malformed_profile_file_exit_2(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("name: x\nkind: gpu\nmemory_gb: lots\n")
    r = run("analyze", "-H", str(p))
    assert r.exit_code == 2 and f"{p}: field 'memory_gb': must be a number" in r.output


def test_profiles_list_and_show():
    r = run("profiles", "list")
    assert r.exit_code == 0 and "llama-2-70b" in r.output and "h100-sxm" in r.output
    r = run("profiles", "show", "llama-2-7b", "-f", "json")
    assert r.exit_code == 0 and json.loads(r.stdout)["n_params"] == 6_738_415_616
    r = run("profiles", "show", "h100-sxm")
    assert r.exit_code == 0 and "memory_bandwidth" in r.output
    r = run("profiles", "show", "nope")
    assert r.exit_code == 2


def test_analyze_process_does_not_import_torch():
    code = ("import sys; from gpt_batchprof.cli import main; sys.argv=['gpt-batchprof','analyze','-f','json'];\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules, 'torch imported'")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
