"""Bad input and data (issue 7): the table of benchmarks/bad_inputs.py in-process, and the
mechanisms behind it (strict reading, atomic writing, results-file locking) one by one."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gpt_batchprof.cli import app
from gpt_batchprof.errors import BatchprofError, ProfileError
from gpt_batchprof.files import load_json, load_yaml, write_atomic

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("bad_inputs", ROOT / "benchmarks" / "bad_inputs.py")
bad_inputs = importlib.util.module_from_spec(_spec)
sys.modules["bad_inputs"] = bad_inputs  # dataclasses look their module up there
_spec.loader.exec_module(bad_inputs)

CASES = bad_inputs.cases()
runner = CliRunner()


@pytest.fixture(scope="module")
def files_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    bad_inputs.make_files(d)
    return d


def test_the_table_covers_every_command_with_at_least_60_inputs():
    commands = {c.args[0] if c.args[0] != "profiles" else " ".join(c.args[:2]) for c in CASES}
    assert len(CASES) >= 60
    assert {"analyze", "bench", "calibrate", "sweep", "plot", "profiles show", "profiles list"} <= commands


@pytest.mark.parametrize("case", [c for c in CASES if not c.process], ids=lambda c: c.name)
def test_bad_input_is_one_line_exit_2_and_damages_nothing(case, files_dir):
    before = bad_inputs.snapshot(files_dir)
    out = bad_inputs.run_in_process(case, files_dir)
    assert out.problems() == [], (out.stderr, out.stdout[-500:])
    assert bad_inputs.damaged(before, bad_inputs.snapshot(files_dir)) == []


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("case", [c for c in CASES if c.process], ids=lambda c: c.name)
def test_closed_or_full_stdout_in_a_real_process(case, files_dir):
    out = bad_inputs.run_process(case, files_dir)
    assert out.problems() == [], out.stderr


# --------------------------------------------------------------------------- reading


def test_binary_file_is_named_as_not_text(tmp_path):
    p = tmp_path / "m.yaml"
    p.write_bytes(b"name: x\n\xff\xfe")
    with pytest.raises(BatchprofError, match=r"m\.yaml: not UTF-8 text \(byte 8"):  # 8 = len("name: x\n")
        load_yaml(p)


def test_duplicate_yaml_key_is_refused_with_its_line(tmp_path):
    p = tmp_path / "m.yaml"
    p.write_text("a: 1\nb: 2\na: 3\n")
    with pytest.raises(BatchprofError, match=r"line 3, column 1: duplicate key 'a'"):
        load_yaml(p)


def test_yaml_merge_keys_are_not_duplicates(tmp_path):
    p = tmp_path / "m.yaml"
    p.write_text("base: &b {x: 1, y: 2}\nderived:\n  <<: *b\n  y: 3\n")
    assert load_yaml(p)["derived"] == {"x": 1, "y": 3}


@pytest.mark.parametrize("text, why", [('{"a": 1, "a": 2}', "duplicate key 'a'"), ('{"a": NaN}', "NaN"),
                                       ('{"a": -Infinity}', "-Infinity"), ('{"a": 1e400}', "out of range")])
def test_strict_json(tmp_path, text, why):
    p = tmp_path / "c.json"
    p.write_text(text)
    with pytest.raises(BatchprofError, match=why):
        load_json(p)


def _llama_yaml(tmp_path, replace: str, by: str) -> str:
    text = (ROOT / "profiles" / "models" / "llama-2-7b.yaml").read_text()
    assert replace in text
    p = tmp_path / "m.yaml"
    p.write_text(text.replace(replace, by))
    return str(p)


def test_misspelt_model_key_names_the_right_one(tmp_path):
    from gpt_batchprof.profiles import load_model

    # Before: n_kv_heads was ignored and llama-2-7b ran with 32/32 heads.
    with pytest.raises(ProfileError, match=r"unknown field 'n_kv_heads'; did you mean 'n_kv_head'\?"):
        load_model(_llama_yaml(tmp_path, "n_kv_head: 32", "n_kv_heads: 8"))


def test_misspelt_required_key_is_named_as_a_misspelling(tmp_path):
    from gpt_batchprof.profiles import load_model

    with pytest.raises(ProfileError, match=r"unknown field 'n_layers'; did you mean 'n_layer'\?"):
        load_model(_llama_yaml(tmp_path, "n_layer: 32", "n_layers: 32"))


def test_nan_integer_field_is_one_line(tmp_path):
    from gpt_batchprof.profiles import load_model

    # int(nan) raised ValueError before (a traceback)
    with pytest.raises(ProfileError, match=r"field 'n_layer': must be an integer, got nan"):
        load_model(_llama_yaml(tmp_path, "n_layer: 32", "n_layer: .nan"))


HF_CONFIGS = {  # real config.json files, as published on the Hugging Face hub (all their keys)
    "llama": {"_name_or_path": "meta-llama/Llama-2-7b-hf", "architectures": ["LlamaForCausalLM"],
              "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu", "hidden_size": 4096,
              "initializer_range": 0.02, "intermediate_size": 11008, "max_position_embeddings": 4096,
              "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 32,
              "num_key_value_heads": 32, "pretraining_tp": 1, "rms_norm_eps": 1e-05, "rope_scaling": None,
              "tie_word_embeddings": False, "torch_dtype": "float16", "transformers_version": "4.31.0.dev0",
              "use_cache": True, "vocab_size": 32000},
    "gpt2": {"activation_function": "gelu_new", "architectures": ["GPT2LMHeadModel"], "attn_pdrop": 0.1,
             "bos_token_id": 50256, "embd_pdrop": 0.1, "eos_token_id": 50256, "initializer_range": 0.02,
             "layer_norm_epsilon": 1e-05, "model_type": "gpt2", "n_ctx": 1024, "n_embd": 768, "n_head": 12,
             "n_layer": 12, "n_positions": 1024, "resid_pdrop": 0.1, "summary_activation": None,
             "summary_first_dropout": 0.1, "summary_proj_to_labels": True, "summary_type": "cls_index",
             "summary_use_proj": True, "task_specific_params": {"text-generation": {"do_sample": True}},
             "vocab_size": 50257},
    "gpt_neox": {"architectures": ["GPTNeoXForCausalLM"], "bos_token_id": 0, "eos_token_id": 0,
                 "hidden_act": "gelu", "hidden_size": 2560, "initializer_range": 0.02,
                 "intermediate_size": 10240, "layer_norm_eps": 1e-05, "max_position_embeddings": 2048,
                 "model_type": "gpt_neox", "num_attention_heads": 32, "num_hidden_layers": 32,
                 "rotary_emb_base": 10000, "rotary_pct": 0.25, "tie_word_embeddings": False,
                 "torch_dtype": "float16", "transformers_version": "4.24.0", "use_cache": True,
                 "use_parallel_residual": True, "vocab_size": 50432},
    "qwen3": {"architectures": ["Qwen3ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
              "bos_token_id": 151643, "eos_token_id": 151645, "head_dim": 128, "hidden_act": "silu",
              "hidden_size": 4096, "initializer_range": 0.02, "intermediate_size": 12288,
              "max_position_embeddings": 40960, "max_window_layers": 36, "model_type": "qwen3",
              "num_attention_heads": 32, "num_hidden_layers": 36, "num_key_value_heads": 8,
              "rms_norm_eps": 1e-06, "rope_scaling": None, "rope_theta": 1000000, "sliding_window": None,
              "tie_word_embeddings": False, "torch_dtype": "bfloat16", "transformers_version": "4.51.0",
              "use_cache": True, "use_sliding_window": False, "vocab_size": 151936},
}


@pytest.mark.parametrize("mt", list(HF_CONFIGS))
def test_real_config_json_metadata_is_accepted(tmp_path, mt):
    from gpt_batchprof.profiles import load_model

    p = tmp_path / mt / "config.json"
    p.parent.mkdir()
    p.write_text(json.dumps(HF_CONFIGS[mt]))
    assert load_model(str(p)).n_layer == HF_CONFIGS[mt].get("num_hidden_layers", HF_CONFIGS[mt].get("n_layer"))


def test_misspelt_config_json_key_is_refused_not_defaulted(tmp_path):
    from gpt_batchprof.profiles import load_model

    cfg = dict(HF_CONFIGS["qwen3"])
    cfg["num_key_value_head"] = cfg.pop("num_key_value_heads")  # would silently default to 32 (MHA)
    p = tmp_path / "config.json"
    p.write_text(json.dumps(cfg))
    with pytest.raises(ProfileError, match=r"'num_key_value_head'; did you mean 'num_key_value_heads'\?"):
        load_model(str(p))


# --------------------------------------------------------------------------- writing


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "report.json"
    target.write_text("good\n")

    def half_then_fail(path: str) -> None:
        Path(path).write_text("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(BatchprofError, match=r"report\.json: cannot write \(No space left on device\)"):
        write_atomic(target, half_then_fail)
    assert target.read_text() == "good\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_atomic_write_replaces_through_a_symlink_and_keeps_the_link(tmp_path):
    real = tmp_path / "real.txt"
    real.write_text("old")
    link = tmp_path / "link.txt"
    link.symlink_to(real)
    write_atomic(link, "new")
    assert link.is_symlink() and real.read_text() == "new"


def test_plot_that_fails_leaves_no_png(tmp_path, monkeypatch):
    import matplotlib.figure

    from gpt_batchprof.report import plots

    rows = [{"workload": "gpt", "model": "m", "hardware": "h", "phase": "decode", "op": "dense", "batch": b,
             "seq_len": 64, "dtype": "fp16", "attention": "unfused", "predicted_time_s": 1e-3 * b,
             "predicted_items_per_s": 1e3} for b in (1, 2)]

    def broken(self, fname, **kw):
        Path(fname).write_bytes(b"")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", broken)
    with pytest.raises(BatchprofError, match="No space left"):
        plots.plot_all(rows, tmp_path / "plots")
    assert list((tmp_path / "plots").iterdir()) == []


def test_export_table_to_file_is_plain_text(tmp_path):
    out = tmp_path / "t.txt"
    r = runner.invoke(app, ["analyze", "-m", "gpt2", "-H", "a100-80gb", "-b", "1", "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert "TTFT" in out.read_text() and "\x1b[" not in out.read_text()


def test_profiles_list_writes_the_file(tmp_path):
    out = tmp_path / "profiles.txt"
    r = runner.invoke(app, ["profiles", "list", "-o", str(out)])
    assert r.exit_code == 0, r.output
    text = out.read_text()
    assert "llama-2-7b" in text and "a100-80gb" in text  # before: printed to stdout, file never written


@pytest.mark.parametrize("fmt, first", [("csv", "name,"), ("markdown", "### gpt2"), ("json", "{")])
def test_profiles_show_accepts_every_format_its_help_lists(fmt, first):
    r = runner.invoke(app, ["profiles", "show", "gpt2", "-f", fmt])
    assert r.exit_code == 0, r.stderr  # csv and markdown were listed in --help but refused
    assert r.stdout.startswith(first) and "124439808" in r.stdout  # gpt2: 124,439,808 params (HF count)


def test_markup_in_names_is_printed_as_typed(tmp_path):
    p = Path(_llama_yaml(tmp_path, "name: llama-2-7b", "name: '[/]'"))
    r = runner.invoke(app, ["analyze", "-m", str(p), "-b", "1"])
    assert r.exit_code == 0, r.output  # a MarkupError traceback before
    assert r.stdout.startswith("[/] (")
    r = runner.invoke(app, ["profiles", "show", str(p)])
    assert r.exit_code == 0 and "[/]" in r.stdout


def test_path_with_brackets_is_printed_as_typed(tmp_path):
    d = tmp_path / "exp[draft]"
    d.mkdir()
    r = runner.invoke(app, ["analyze", "-m", "gpt2", "-b", "1", "-f", "json", "-o", str(d / "m.json")])
    assert r.exit_code == 0
    assert r.stderr.strip() == f"wrote {d / 'm.json'}"  # was 'wrote .../exp/m.json'


# --------------------------------------------------------------------------- usage errors


def test_usage_error_is_one_line_with_the_hint():
    r = runner.invoke(app, ["analyze", "--prompt-len", "1.5"])
    assert r.exit_code == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "╭" not in r.stderr
    assert "'--prompt-len'" in lines[0] and lines[0].endswith("Try 'gpt-batchprof analyze --help' for help.")


# --------------------------------------------------------------------------- sweep results files


SWEEP = ["sweep", "-m", "gpt2", "-b", "1,2", "-s", "64", "--op", "dense", "--phase", "decode", "--no-progress"]


def test_rerun_without_resume_refuses_then_overwrite_starts_again(tmp_path):
    out = tmp_path / "r.csv"
    assert runner.invoke(app, SWEEP + ["-o", str(out)]).exit_code == 0
    first = out.read_bytes()
    r = runner.invoke(app, SWEEP + ["-b", "4", "-o", str(out)])
    assert r.exit_code == 2 and "--resume" in r.stderr and "--overwrite" in r.stderr
    assert out.read_bytes() == first  # before: truncated to the new run's one point
    r = runner.invoke(app, SWEEP + ["-b", "4", "-o", str(out), "--overwrite"])
    assert r.exit_code == 0
    assert len(out.read_text().splitlines()) == 1 + 1  # header + the batch-4 point


def test_second_sweep_on_a_held_file_names_the_holder(tmp_path):
    from gpt_batchprof.sweep.store import StreamWriter

    out = tmp_path / "r.jsonl"
    with StreamWriter(out):
        r = runner.invoke(app, SWEEP + ["-o", str(out), "--resume"])
        assert r.exit_code == 2
        assert f"in use by another sweep (pid {os.getpid()})" in r.stderr
    with StreamWriter(out, resume=True):  # released on close
        pass


def test_resume_keeps_tolerating_a_torn_last_line(tmp_path):
    out = tmp_path / "r.csv"
    assert runner.invoke(app, SWEEP + ["-o", str(out)]).exit_code == 0
    with open(out, "a") as fh:
        fh.write("gpt,gpt2,a100")  # killed mid-write
    r = runner.invoke(app, SWEEP + ["-o", str(out), "--resume", "-b", "1,2,4"])
    assert r.exit_code == 0, r.stderr
    assert "1 new point(s), 2 kept" in r.stderr


def test_malformed_middle_row_is_refused_with_its_line(tmp_path):
    from gpt_batchprof.sweep.store import read_rows

    out = tmp_path / "r.csv"
    assert runner.invoke(app, SWEEP + ["-o", str(out)]).exit_code == 0
    lines = out.read_text().splitlines(keepends=True)
    out.write_text(lines[0] + lines[1].replace(",1,", ",one,", 1) + lines[2])
    with pytest.raises(BatchprofError, match=r"r\.csv: line 2: column 'batch': cannot read 'one'"):
        read_rows(out)


def test_live_options_are_checked_alike_for_bench_and_sweep():
    for cmd in (["bench"], SWEEP):
        r = runner.invoke(app, cmd + ["--rep-ms", "0"])
        assert r.exit_code == 2 and "--rep-ms: must be > 0, got 0" in r.stderr, (cmd, r.stderr)


def test_console_script_prints_no_traceback_for_closed_stdout():
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    r = subprocess.run(["bash", "-o", "pipefail", "-c",
                        f"{sys.executable} -m gpt_batchprof analyze -f json --per-op -b 1..256 | true"],
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip() == "error: stdout: closed before all output was written (broken pipe)"


def test_binary_calibration_cache_is_one_line_naming_the_file(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    from gpt_batchprof.measure import calibrate

    monkeypatch.setenv("GPT_BATCHPROF_CACHE", str(tmp_path))
    monkeypatch.setattr(calibrate, "calibrate", lambda *a, **k: pytest.fail("must not re-measure"))
    monkeypatch.setattr(calibrate, "calibrate_with_tables", lambda *a, **k: pytest.fail("must not re-measure"))
    monkeypatch.setattr(calibrate, "slug", lambda text: "this-cpu")  # the cache key, fixed for the test
    (tmp_path / "this-cpu-tables2.yaml").write_bytes(b"\x89PNG\r\n\x1a\n\xff")
    with pytest.raises(ProfileError, match=r"this-cpu-tables2\.yaml: not UTF-8 text .*delete the file to calibrate again"):
        calibrate.cached_hardware("cpu")
