"""Bad inputs across every command: each must end in exit 2, one line on stderr, no traceback,
and leave every file that existed before byte for byte as it was.

    python benchmarks/bad_inputs.py            # run the table, print one line per case
    python benchmarks/bad_inputs.py -v         # also show each case's stderr line

The same table runs in-process (typer's CliRunner) in tests/test_bad_inputs.py. Cases that
need a real process (a closed pipe, /dev/full as stdout) are marked ``process=True``; the
script runs them as subprocesses, the test runs a few of them. bench and calibrate cases all
fail during validation, before any timing.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@dataclass(frozen=True)
class Case:
    name: str
    args: tuple[str, ...]
    expect: str  # a piece of the one stderr line (case-insensitive): the case is about this
    process: bool = False  # needs a real process (pipes, fds)
    shell: str = ""  # process cases: a shell command, {cli} replaced by the CLI invocation
    hold_lock: str = ""  # a results file another "sweep" holds while the case runs
    env: dict[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------- fixture files


def _builtin(kind: str, name: str) -> str:
    from gpt_batchprof.profiles import builtin_dir

    return (builtin_dir() / kind / f"{name}.yaml").read_text(encoding="utf-8")


def _sub(text: str, key: str, line: str) -> str:
    out, n = re.subn(rf"^{key}:.*$", line, text, count=1, flags=re.M)
    assert n == 1, f"no '{key}:' line to replace"
    return out


HF_LLAMA = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
            "intermediate_size": 11008, "num_attention_heads": 32, "num_hidden_layers": 32,
            "num_key_value_heads": 32, "max_position_embeddings": 4096, "vocab_size": 32000,
            "rms_norm_eps": 1e-05, "torch_dtype": "float16", "tie_word_embeddings": False}


def make_files(d: Path) -> None:
    """Every file the cases read or must not damage, under ``d``."""
    model = _builtin("models", "llama-2-7b")
    hw = _builtin("hardware", "a100-80gb")
    files: dict[str, str | bytes] = {
        "binary.yaml": bytes(range(256)) * 4,
        "latin1.yaml": _sub(model, "name", "name: llama-\xe9t\xe9").encode("latin-1", "replace"),
        "nul.yaml": model.encode() + b"\x00\x00",
        "nan.yaml": _sub(model, "n_layer", "n_layer: .nan"),
        "inf.yaml": _sub(model, "d_model", "d_model: .inf"),
        "huge.yaml": _sub(model, "n_layer", "n_layer: 1e400"),
        "misspelt.yaml": _sub(model, "n_kv_head", "n_kv_heads: 8"),
        "unknown.yaml": model + "sliding_windw: 4096\n",
        "dup.yaml": model + "n_layer: 40\n",
        "markup-name.yaml": _sub(model, "name", "name: '[/]'") + "n_kv_heads: 8\n",
        "hw-misspelt.yaml": hw + "launch_overhead_usec: 3\n",
        "hw-dup.yaml": hw + "kind: gpu\n",
        "hw-binary.yaml": b"\x89PNG\r\n\x1a\n" + bytes(range(200)),
        "hw-nan.yaml": _sub(hw, "memory_bandwidth_gb_s", "memory_bandwidth_gb_s: .nan"),
        # a measured: table claiming 1e9 GFLOP/s of an A100's 312 TFLOP/s fp16 (issue 19)
        "hw-impossible-table.yaml": "name: impossible\nkind: gpu\nmemory_gb: 80\nmemory_bandwidth_gb_s: 2039\n"
                                    "peak_tflops: {fp16: 312}\n"
                                    "measured:\n  device_name: x\n  torch_version: '0'\n  threads: 1\n"
                                    "  date: '2026-12-04'\n  overhead_us: {eager: 5}\n  tables:\n"
                                    "    matmul.fp16: {unit: GFLOP/s, m: [1], n: [4096], k: [4096], values: [[[1.0e+9]]]}\n",
        "hf-nan/config.json": json.dumps(HF_LLAMA)[:-1] + ', "hidden_size": NaN}',
        "hf-inf/config.json": json.dumps(HF_LLAMA | {"rms_norm_eps": 1e-05})[:-1] + ', "rope_theta": 1e400}',
        "hf-dup/config.json": json.dumps(HF_LLAMA)[:-1] + ', "num_hidden_layers": 40}',
        "hf-misspelt/config.json": json.dumps({k: v for k, v in HF_LLAMA.items() if k != "num_key_value_heads"}
                                              | {"num_key_value_head": 8}),
        "hf-mla/config.json": json.dumps(HF_LLAMA | {"kv_lora_rank": 512}),
        "hf-moe-on-dense/config.json": json.dumps(HF_LLAMA | {"num_local_experts": 8}),
        "hf-binary/config.json": b"\xff\xfe{\x00}\x00",
        "hf-list/config.json": "[1, 2, 3]\n",
        "sweep-binary.yaml": b"\xff\xd8\xff\xe0" + bytes(range(100)),
        "sweep-dup.yaml": "models: [gpt2]\nbatches: [1, 2]\nbatches: [4]\n",
        "sweep-misspelt.yaml": "models: [gpt2]\nbatchs: [1, 2]\n",
        "protected.json": '{"keep": "me"}\n',
        "protected.txt": "a good report\n",
        "no-line.csv": "workload,model,hardware",
        "results-binary.csv": b"\x00\x01\x02workload,batch\n\xff\xfe\n",
        "results-binary.jsonl": b"\xff\xfe\x00\x00",
        "results-dup.json": '{"rows": [{"workload": "gpt", "workload": "mlp", "batch": 1}]}\n',
        "results-nan.jsonl": '{"workload": "gpt", "batch": 1, "phase": "decode", "op": "dense", '
                             '"hardware": "a100-80gb", "predicted_time_s": NaN}\n',
        "exp[draft]/m.yaml": _sub(model, "n_kv_head", "n_kv_heads: 8"),
        "subdir/config.json": json.dumps(HF_LLAMA),
        # --engine hf: what transformers would build differently, or only refuse with a KeyError deep inside
        "gpt2-mqa.yaml": _sub(_builtin("models", "gpt2"), "n_kv_head", "n_kv_head: 1"),
        "gpt2-window.yaml": _builtin("models", "gpt2") + "sliding_window: 256\n",
        "gpt2-experts.yaml": _builtin("models", "gpt2") + "n_expert: 4\nn_expert_active: 2\n",
        # a window on a llama label (a Gemma-2 config relabelled) would be dropped; qwen2's windowed and
        # full layers are a stack of layer kinds now, no longer a bad input
        "hf-llama-window/config.json": json.dumps(HF_LLAMA | {"sliding_window": 4096}),
        "trace-ns.csv": "arrival_s,prompt_len,gen_len\n1.7e18,64,8\n1.7000000005e18,64,8\n",
        "hf-act/config.json": json.dumps(HF_LLAMA | {"hidden_act": "swishy"}),
        "hf-rope/config.json": json.dumps(HF_LLAMA | {"rope_scaling": {"rope_type": "bogus", "factor": 2.0}}),
    }
    for rel, content in files.items():
        p = d / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content, encoding="utf-8")
    (d / "emptydir").mkdir(exist_ok=True)
    _make_results(d)


def _make_results(d: Path) -> None:
    """A good results file (from a real analytic sweep) and malformed copies of it."""
    from typer.testing import CliRunner

    from gpt_batchprof.cli import app

    for ext in ("csv", "jsonl"):
        good = d / f"results.{ext}"
        r = CliRunner().invoke(app, ["sweep", "-m", "gpt2", "-b", "1,2", "-s", "64", "--op", "dense",
                                     "--phase", "decode", "-o", str(good), "--no-progress", "-f", "csv"])
        assert r.exit_code == 0, r.output
    lines = (d / "results.csv").read_text().splitlines(keepends=True)
    (d / "malformed.csv").write_text(lines[0] + lines[1] + "gpt,gpt2,a100-80gb,decode,notanumber\n" + lines[2])
    (d / "torn-middle.csv").write_text(lines[0] + lines[1][:40] + "\n" + lines[2])
    jl = (d / "results.jsonl").read_text().splitlines(keepends=True)
    (d / "malformed.jsonl").write_text(jl[0] + "{not json}\n" + jl[1])
    (d / "wrong-type.jsonl").write_text(jl[0] + json.dumps(json.loads(jl[1]) | {"batch": "many"}) + "\n")
    (d / "list-row.jsonl").write_text(jl[0] + "[1, 2]\n")
    (d / "locked.csv").write_text(lines[0] + lines[1])
    header = lines[0].rstrip("\n").split(",")
    for name, col, value in (("neg-time", "predicted_time_s", "-1"), ("zero-time", "predicted_time_s", "0"),
                             ("inf-time", "predicted_time_s", "inf"), ("batch-0", "batch", "0"),
                             ("batch-1.5", "batch", "1.5"), ("neg-rate", "predicted_items_per_s", "-5")):
        cells = lines[2].rstrip("\n").split(",")  # an analytic row: no quoted cells
        cells[header.index(col)] = value
        (d / f"{name}.csv").write_text(lines[0] + lines[1] + ",".join(cells) + "\n")


# --------------------------------------------------------------------------- the table


def cases() -> list[Case]:
    big = "1" + "0" * 40
    c: list[Case] = []
    a = lambda name, expect, *args, **kw: c.append(Case(name, ("analyze",) + args, expect, **kw))  # noqa: E731
    # analyze: profiles
    a("model binary file", "not utf-8", "-m", "binary.yaml")
    a("model latin-1 file", "not utf-8", "-m", "latin1.yaml")
    a("model with NUL bytes", "nul", "-m", "nul.yaml")
    a("model is a directory", "is a directory", "-m", "emptydir")
    a("model dir holding config.json", "config.json", "-m", "subdir")
    a("model named [/]", "[/]", "-m", "[/]")
    a("missing path with brackets", "exp[draft]/nothing.yaml", "-m", "exp[draft]/nothing.yaml")
    a("path with brackets, misspelt key", "exp[draft]/m.yaml", "-m", "exp[draft]/m.yaml")
    a("model NaN field", "n_layer", "-m", "nan.yaml")
    a("model inf field", "d_model", "-m", "inf.yaml")
    a("model 1e400 field", "n_layer", "-m", "huge.yaml")
    a("model misspelt key", "did you mean 'n_kv_head'", "-m", "misspelt.yaml")
    a("model unknown key", "sliding_windw", "-m", "unknown.yaml")
    a("model duplicate key", "duplicate key 'n_layer'", "-m", "dup.yaml")
    a("model named [/] with a bad key", "n_kv_heads", "-m", "markup-name.yaml")
    a("config.json NaN", "nan", "-m", "hf-nan/config.json")
    a("config.json 1e400", "out of range", "-m", "hf-inf/config.json")
    a("config.json duplicate key", "duplicate key 'num_hidden_layers'", "-m", "hf-dup/config.json")
    a("config.json misspelt key", "did you mean 'num_key_value_heads'", "-m", "hf-misspelt/config.json")
    a("config.json MLA", "kv_lora_rank", "-m", "hf-mla/config.json")
    a("config.json experts on dense", "num_local_experts", "-m", "hf-moe-on-dense/config.json")
    a("config.json binary", "not utf-8", "-m", "hf-binary/config.json")
    a("config.json window on a llama label", "would be dropped", "-m", "hf-llama-window/config.json")
    a("config.json a list", "json object", "-m", "hf-list/config.json")
    a("hardware misspelt key", "did you mean 'launch_overhead_us'", "-H", "hw-misspelt.yaml")
    a("hardware duplicate key", "duplicate key 'kind'", "-H", "hw-dup.yaml")
    a("hardware binary", "not utf-8", "-H", "hw-binary.yaml")
    a("hardware NaN", "memory_bandwidth_gb_s", "-H", "hw-nan.yaml")
    a("hardware is a directory", "is a directory", "-H", "emptydir")
    a("hardware table above its peak", "1e+09 GFLOP/s is 3.21e+03x the profile's peak fp16", "-H",
      "hw-impossible-table.yaml")
    # analyze: option values
    a("batch 1e300", "--batch", "-b", "1e300")
    a("batch 10^40", "--batch", "-b", big)
    a("batch range to 10^40", "--batch", "-b", f"1..{big}")
    a("batch nan", "--batch", "-b", "nan")
    a("batch 0", "--batch", "-b", "0")
    a("prompt-len 1.5", "--prompt-len", "--prompt-len", "1.5")
    a("prompt-len nan", "--prompt-len", "--prompt-len", "nan")
    a("prompt-len 10^40", "--prompt-len", "--prompt-len", big)
    a("gen-len 10^40", "--gen-len", "--gen-len", big)
    a("prompt-len beyond the model", "max_seq_len", "--prompt-len", "100000")
    a("context-len 10^40", "--context-len", "--context-len", big)
    a("unknown option", "--bogus", "--bogus")
    a("missing value", "-m", "-m")
    a("format xml", "--format", "-f", "xml")
    a("attention nope", "--attention", "--attention", "nope")
    a("phase nope", "--phase", "--phase", "nope")
    a("dtype fp7", "fp7", "--dtype", "fp7")
    a("bad model, good -o kept", "not utf-8", "-m", "binary.yaml", "-f", "json", "-o", "protected.json")
    a("-o is a directory", "is a directory", "-f", "json", "-o", "emptydir")
    a("-o /dev/full", "/dev/full", "-f", "json", "-o", "/dev/full")
    a("table -o /dev/full", "/dev/full", "-o", "/dev/full")
    c.append(Case("stdout closed early (| true)", ("analyze",), "broken pipe", process=True,
                  shell="{cli} analyze --per-op -f json -b 1..256 | true"))
    c.append(Case("table to closed stdout", ("analyze",), "broken pipe", process=True,
                  shell="{cli} analyze --per-op -b 1..256 | true"))
    c.append(Case("stdout is /dev/full", ("analyze",), "no space", process=True,
                  shell="{cli} analyze -f json >/dev/full"))
    for cmd in ("analyze -f json", "analyze", "sweep -m gpt2 -b 1,2 -s 64 --no-progress -f json",
                "simulate -n 20 -r 5 -f json", "profiles list", "analyze --help", "--version"):  # fd 1 closed
        c.append(Case(f"{cmd} with stdout closed (>&-)", (cmd.split()[0],), "stdout: closed", process=True,
                      shell="{cli} " + cmd + " >&-"))
    # bench / calibrate: all refused during validation, before torch times anything
    b = lambda name, expect, *args: c.append(Case(name, ("bench",) + args, expect))  # noqa: E731
    b("bench --rep-ms nan", "--rep-ms", "--rep-ms", "nan")
    b("bench --rep-ms inf", "--rep-ms", "--rep-ms", "inf")
    b("bench --rep-ms 0", "--rep-ms", "--rep-ms", "0")
    b("bench --warmup-ms -1", "--warmup-ms", "--warmup-ms", "-1")
    b("bench --threads 0", "--threads", "--threads", "0")
    b("bench --min-efficiency 2", "--min-efficiency", "--min-efficiency", "2")
    b("bench --min-efficiency nan", "--min-efficiency", "--min-efficiency", "nan")
    b("bench --depth 0", "--depth", "--op", "mlp", "--depth", "0")
    b("bench -b 0", "--batch", "-b", "0")
    b("bench misspelt model key", "n_kv_head", "-m", "misspelt.yaml")
    b("bench format xml", "--format", "-f", "xml")
    b("bench --width 10^40", "--width", "--op", "mlp", "--width", big)
    b("bench --prompt-len 1.5", "--prompt-len", "--prompt-len", "1.5")
    k = lambda name, expect, *args: c.append(Case(name, ("calibrate",) + args, expect))  # noqa: E731
    k("calibrate --threads 0", "--threads", "--threads", "0")
    k("calibrate --format csv", "--format", "-f", "csv")
    k("calibrate binary datasheet", "not utf-8", "-H", "hw-binary.yaml")
    k("calibrate missing datasheet", "no such file", "-H", "nothing.yaml")
    # sweep
    s = lambda name, expect, *args, **kw: c.append(  # noqa: E731
        Case(name, ("sweep", "-m", "gpt2", "-b", "1,2", "-s", "64", "--no-progress") + args, expect, **kw))
    s("sweep --threads 0", "--threads", "--threads", "0")
    s("sweep --rep-ms 0", "--rep-ms", "--rep-ms", "0")
    s("sweep --warmup-ms -1", "--warmup-ms", "--warmup-ms", "-1")
    s("sweep --rep-ms nan", "--rep-ms", "--rep-ms", "nan")
    s("sweep -b 10^40", "--batch", "-b", big)
    s("sweep --layers 10^40", "--layers", "--layers", big)
    s("sweep --depth 10^40", "--depth", "--workload", "mlp", "--depth", big)
    s("sweep binary config", "not utf-8", "-c", "sweep-binary.yaml")
    s("sweep config duplicate key", "duplicate key 'batches'", "-c", "sweep-dup.yaml")
    s("sweep config misspelt key", "did you mean 'batches'", "-c", "sweep-misspelt.yaml")
    s("sweep model binary", "not utf-8", "-m", "binary.yaml")
    s("re-run onto finished results", "--resume", "-o", "results.csv")
    s("--export onto the stream file", "--export", "-o", "fresh.csv", "--export", "fresh.csv", "-f", "csv")
    s("--export onto a finished stream file", "--export", "-o", "results.csv", "--export", "results.csv")
    s("resume a malformed csv", "line 3", "-o", "malformed.csv", "--resume")
    s("resume a row cut mid-file", "line 2", "-o", "torn-middle.csv", "--resume")
    s("resume a malformed jsonl", "line 2", "-o", "malformed.jsonl", "--resume")
    s("resume a binary results file", "not utf-8", "-o", "results-binary.jsonl", "--resume")
    s("resume a file without a line", "no complete line", "-o", "no-line.csv", "--resume")
    s("--resume with --overwrite", "choose one", "-o", "results.csv", "--resume", "--overwrite")
    s("--overwrite without -o", "--overwrite", "--overwrite")
    s("results file held by another sweep", "in use", "-o", "locked.csv", "--resume", hold_lock="locked.csv")
    s("results as .txt", ".csv or .jsonl", "-o", "protected.txt")
    s("sweep an empty --model list", "--model: no values given", "-m", ",")
    s("sweep an empty --op list", "--op: no values given", "--op", ", ,")
    s("sweep an empty --phase list", "--phase: no values given", "--phase", ",")
    s("sweep --export is a directory", "is a directory", "-f", "csv", "--export", "emptydir")
    # plot
    p = lambda name, expect, *args: c.append(Case(name, ("plot",) + args + ("--plot", "plots"), expect))  # noqa: E731
    p("plot binary csv", "binary", "results-binary.csv")
    p("plot malformed csv", "line 3", "malformed.csv")
    p("plot malformed jsonl", "line 2", "malformed.jsonl")
    p("plot wrong-typed jsonl", "line 2", "wrong-type.jsonl")
    p("plot a list row", "line 2", "list-row.jsonl")
    p("plot NaN in jsonl", "nan", "results-nan.jsonl")
    p("plot duplicate keys json", "duplicate key", "results-dup.json")
    p("plot a directory", "is a directory", "emptydir")
    p("plot missing file", "cannot read", "nothing.csv")
    p("plot a negative time", "neg-time.csv: point 2: predicted_time_s is '-1'", "neg-time.csv")
    p("plot a zero time", "not a finite time > 0", "zero-time.csv")
    p("plot an infinite time", "not a finite time > 0", "inf-time.csv")
    p("plot batch 0", "batch is '0', not a whole number >= 1", "batch-0.csv")
    p("plot batch 1.5", "batch is '1.5'", "batch-1.5.csv")
    p("plot a negative rate", "predicted_items_per_s", "neg-rate.csv")
    # output paths: refused before any work (issue 19), so no result is measured only to be lost
    u = "protected.txt/out"  # a path under a file: no folder can be made there
    for args in (("generate", "-o", u + ".json"), ("generate", "-o", "emptydir"), ("bench", "-o", u + ".json"),
                 ("calibrate", "-o", u + ".yaml"), ("analyze", "-f", "json", "-o", u + ".json"),
                 ("simulate", "-r", "5", "-o", u + ".csv"), ("profiles", "list", "-o", u + ".txt")):
        c.append(Case(f"{args[0]} {' '.join(args[1:])}", args, "emptydir" if "emptydir" in args else "not a folder"))
    c.append(Case("sweep --export under a file", ("sweep", "-m", "gpt2", "-b", "1", "-s", "64", "--export", u),
                  "--export"))
    c.append(Case("sweep --plot is a file", ("sweep", "-m", "gpt2", "-b", "1", "-s", "64", "--plot", "protected.txt"),
                  "--plot protected.txt: is a file"))
    c.append(Case("simulate -o onto earlier results", ("simulate", "-r", "5", "-n", "5", "-o", "results.csv"),
                  "choose another -o, or remove it"))
    # (2 x 28 heads x 30000^2 scores + 2 x 30000 x 3584 residual) x 2 B + 152064 x 4 B = 94.3 GiB > 80 GiB
    c.append(Case("simulate a 30k prompt whose activations cannot fit",
                  ("simulate", "-m", "qwen2-7b", "-r", "1", "-n", "3", "--prompt-len", "30000", "--gen-len", "16",
                   "--no-chunked-prefill", "--attention", "unfused"),
                  "activations of one step (94.3 GiB for a 30000-token prompt)"))
    c.append(Case("simulate a trace in ns read as seconds", ("simulate", "--trace", "trace-ns.csv"), "in ms or ns?"))
    c.append(Case("simulate --plot is a file", ("simulate", "-r", "5", "--plot", "protected.txt"), "--plot"))
    c.append(Case("plot --plot is a file", ("plot", "results.csv", "--plot", "protected.txt"), "not a folder"))
    # generate --engine hf: refused before any weight is built (issue 19)
    for m, expect in (("gpt2-mqa.yaml", "no MQA (1 K/V heads for 12 query heads)"),
                      ("gpt2-window.yaml", "no sliding window (256)"), ("gpt2-experts.yaml", "no experts (4)"),
                      ("hf-act/config.json", "hidden_act 'swishy' is not an activation"),
                      ("hf-rope/config.json", "rope_scaling type 'bogus'")):
        c.append(Case(f"generate --engine hf {m}", ("generate", "--engine", "hf", "-m", m), expect))
    # option limits: one table (cli.common.LIMITS), refused before any work (issue 19)
    for args, expect in ((("generate", "--threads", "100000"), "--threads: must be between 1 and 4096"),
                         (("generate", "--runs", "5000"), "--runs: at most 1000"),
                         (("bench", "--threads", "5000"), "--threads: must be between 1 and 4096, got 5000"),
                         (("calibrate", "--threads", "5000"), "--threads: must be between 1 and 4096"),
                         (("sweep", "-m", "gpt2", "--mode", "live", "--threads", "5000"), "--threads: must be between"),
                         (("simulate", "-r", "5", "--tp", "2048"), "--tp: at most 1024"),
                         (("generate", "--warmup-runs", "5000"), "--warmup-runs: at most 1000"),
                         (("simulate", "-r", "5", "-n", "2147483647"), "--requests: at most 10000000"),
                         (("simulate", "-r", "5", "--duration", "1e9"), "--duration: at most 1000000"),
                         (("simulate", "-r", "1000", "--duration", "100000"), "about 1e+08 requests"),
                         (("simulate", "-r", "1..5", "--rate-points", "100000"), "--rate-points: at most 1000"),
                         (("simulate", "-c", "2000000"), "--concurrency: at most 1000000"),
                         (("calibrate", "--tp", "5000"), "--tp: at most 1024"),
                         (("calibrate", "--device", "cpu", "--tp", "1000"), "gloo over 1000 processes"),
                         (("analyze", "--pp", "2000"), "--pp: at most 1024"),
                         (("sweep", "-m", "gpt2", "-b", "1", "-s", "64", "--layers", "1000000"), "--layers: at most"),
                         (("bench", "--rep-ms", "1e6"), "--rep-ms: at most 60000")):
        c.append(Case(" ".join(args), args, expect))
    # profiles
    c.append(Case("profiles show -f xml", ("profiles", "show", "gpt2", "-f", "xml"), "--format"))
    c.append(Case("profiles show [/]", ("profiles", "show", "[/]"), "[/]"))
    c.append(Case("profiles show binary", ("profiles", "show", "binary.yaml"), "not utf-8"))
    c.append(Case("profiles show misspelt", ("profiles", "show", "misspelt.yaml"), "n_kv_head"))
    c.append(Case("profiles list -f xml", ("profiles", "list", "-f", "xml"), "--format"))
    c.append(Case("profiles list -o directory", ("profiles", "list", "-o", "emptydir"), "is a directory"))
    c.append(Case("profiles list -o /dev/full", ("profiles", "list", "-o", "/dev/full"), "/dev/full"))
    c.append(Case("unknown command", ("profile",), "no such command"))
    return c


# --------------------------------------------------------------------------- checking


@dataclass(frozen=True)
class Outcome:
    case: Case
    exit_code: int
    stderr: str
    stdout: str

    def problems(self) -> list[str]:
        out = []
        lines = [ln for ln in self.stderr.splitlines() if ln.strip()]
        if self.exit_code != 2:
            out.append(f"exit {self.exit_code}, expected 2")
        if "Traceback" in self.stderr + self.stdout:
            out.append("traceback")
        if len(lines) != 1:
            out.append(f"{len(lines)} stderr lines, expected 1")
        elif self.case.expect.lower() not in lines[0].lower():
            out.append(f"stderr line lacks {self.case.expect!r}")
        return out


def snapshot(d: Path) -> dict[str, str]:
    """Digest of every file under ``d`` (the pid sidecar of a held lock aside)."""
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(d.rglob("*")) if p.is_file() and not p.name.endswith(".pid")}


def damaged(before: dict[str, str], after: dict[str, str]) -> list[str]:
    return [f"{name} changed" for name, digest in before.items() if after.get(name) != digest] + \
        [f"{name} missing" for name in before if name not in after]


class _Holder:
    """Another sweep holding a results file: a flock on it, and its pid in the sidecar."""

    def __init__(self, path: Path):
        import fcntl

        from gpt_batchprof.sweep.store import pid_file

        self.fh = open(path, "a")
        fcntl.flock(self.fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.pid_file = pid_file(path)
        self.pid_file.write_text("4242\n")

    def close(self) -> None:
        self.fh.close()
        self.pid_file.unlink(missing_ok=True)


def run_in_process(case: Case, d: Path) -> Outcome:
    from typer.testing import CliRunner

    from gpt_batchprof.cli import app

    holder = _Holder(d / case.hold_lock) if case.hold_lock else None
    cwd = os.getcwd()
    os.chdir(d)
    try:
        r = CliRunner().invoke(app, list(case.args))
    finally:
        os.chdir(cwd)
        if holder:
            holder.close()
    err = r.stderr
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        import traceback

        err += "Traceback\n" + "".join(traceback.format_exception(r.exception))
    return Outcome(case, r.exit_code, err, r.stdout)


def cli_command() -> str:
    return f"{sys.executable} -m gpt_batchprof"


def run_process(case: Case, d: Path) -> Outcome:
    env = os.environ | {"PYTHONPATH": str(ROOT)} | case.env
    holder = _Holder(d / case.hold_lock) if case.hold_lock else None
    try:
        if case.shell:
            cmd = ["bash", "-o", "pipefail", "-c", case.shell.format(cli=cli_command())]
        else:
            cmd = [sys.executable, "-m", "gpt_batchprof", *case.args]
        r = subprocess.run(cmd, cwd=d, env=env, capture_output=True, text=True, timeout=120)
    finally:
        if holder:
            holder.close()
    return Outcome(case, r.returncode, r.stderr, r.stdout)


def main() -> int:
    import argparse
    import tempfile

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument("--in-process", action="store_true", help="run non-process cases with CliRunner (faster)")
    args = ap.parse_args()
    table = cases()
    failed = 0
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        make_files(d)
        for case in table:
            before = snapshot(d)
            out = run_in_process(case, d) if args.in_process and not case.process else run_process(case, d)
            issues = out.problems() + damaged(before, snapshot(d))
            failed += bool(issues)
            mark = "ok  " if not issues else "FAIL"
            print(f"{mark} {case.name}" + (f"  <- {'; '.join(issues)}" if issues else ""))
            if args.verbose or issues:
                for line in out.stderr.strip().splitlines()[-3:]:
                    print(f"       {line}")
    print(f"{len(table) - failed} of {len(table)} bad inputs handled (exit 2, one line, no traceback, "
          f"no file damaged); {time.perf_counter() - t0:.1f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
