"""Sweep rows are a frozen dataclass (SweepRow) whose fields are the results files' columns."""

import csv
import dataclasses
import json

import pytest
from typer.testing import CliRunner

from gpt_batchprof.cli import app
from gpt_batchprof.errors import BatchprofError
from gpt_batchprof.sweep.grid import IDENTITY
from gpt_batchprof.sweep.rows import COLUMNS, FLOAT_COLUMNS, INT_COLUMNS, SweepRow, parse_row
from gpt_batchprof.sweep.store import read_rows

runner = CliRunner()
MLP = ["sweep", "--workload", "mlp", "--width", "256", "-b", "1,2", "-H", "t4", "--no-progress"]


def test_the_csv_header_and_jsonl_keys_are_the_dataclass_fields_in_order(tmp_path):
    names = [f.name for f in dataclasses.fields(SweepRow)]
    for ext in ("csv", "jsonl"):
        out = tmp_path / f"r.{ext}"
        assert runner.invoke(app, MLP + ["-o", str(out)]).exit_code == 0
        first = out.read_text().splitlines()[0]
        keys = next(csv.reader([first])) if ext == "csv" else list(json.loads(first))
        assert keys == names
    assert list(COLUMNS) == names and COLUMNS[:len(IDENTITY)] == IDENTITY


def test_column_types_come_from_the_annotations():
    # the hand-kept lists these replaced (sweep/evaluate.py before SweepRow)
    assert set(INT_COLUMNS) == {"batch", "seq_len", "d_model", "items", "launches", "gen_len", "tp", "pp", "ep"}
    assert set(FLOAT_COLUMNS) == {
        "flops", "bytes", "weight_bytes", "intensity", "predicted_time_s", "predicted_flops_per_s",
        "predicted_items_per_s", "measured_time_s", "measured_iqr_s", "measured_flops_per_s",
        "measured_items_per_s", "measured_over_predicted", "ttft_s", "itl_s", "measured_ttft_s", "measured_itl_s",
        "roofline_time_s", "roofline_ttft_s", "roofline_itl_s"}


def test_rows_are_frozen():
    row = SweepRow(workload="mlp", model="d256", hardware="t4", phase="forward", batch=1, seq_len=1, op="mlp",
                   dtype="fp16", attention="-")
    with pytest.raises(dataclasses.FrozenInstanceError):
        row.batch = 2  # type: ignore[misc]
    assert row.key() == ("mlp", "d256", "t4", "forward", "1", "1", "mlp", "fp16", "-", "1", "1", "1")


@pytest.mark.parametrize("ext", ["csv", "jsonl"])
def test_resumed_rows_come_back_typed(tmp_path, ext):
    out = tmp_path / f"r.{ext}"
    assert runner.invoke(app, MLP + ["-o", str(out)]).exit_code == 0
    r = runner.invoke(app, MLP + ["-b", "1,2,4", "-o", str(out), "--resume"])
    assert r.exit_code == 0 and "1 new point(s), 2 kept" in r.output
    rows = read_rows(out)
    assert all(type(x) is SweepRow for x in rows)
    assert [x.batch for x in rows] == [1, 2, 4] and all(type(x.batch) is int for x in rows)
    # depth 8 layers of (b x 256) @ (256 x 256): 2 * 256 * 256 = 131,072 FLOPs per row of the input
    assert [x.flops for x in rows] == [8 * 131_072.0, 16 * 131_072.0, 32 * 131_072.0]
    assert all(type(x.flops) is float and type(x.predicted_time_s) is float for x in rows)
    assert rows[0].measured_time_s is None and rows[0].mode == "analytic" and rows[0].model == "mlp-w256-x8"


def test_an_old_jsonl_without_the_newer_columns_resumes(tmp_path):
    # written before tp/pp/ep and issue 8's prediction columns existed: no parallelism, nothing to re-run
    out = tmp_path / "r.jsonl"
    assert runner.invoke(app, MLP + ["-o", str(out)]).exit_code == 0
    newer = {"tp", "pp", "ep", "prediction", "roofline_time_s", "roofline_ttft_s", "roofline_itl_s"}
    old = [{k: v for k, v in json.loads(line).items() if k not in newer} for line in out.read_text().splitlines()]
    out.write_text("".join(json.dumps(o) + "\n" for o in old))
    r = runner.invoke(app, MLP + ["-o", str(out), "--resume"])
    assert r.exit_code == 0, r.output
    assert "0 new point(s), 2 kept" in r.output
    assert [(x.tp, x.pp, x.ep, x.prediction) for x in read_rows(out)] == [(1, 1, 1, None)] * 2


def test_a_csv_with_other_columns_is_refused_on_resume_untouched(tmp_path):
    out = tmp_path / "r.csv"
    assert runner.invoke(app, MLP + ["-o", str(out)]).exit_code == 0
    header, *rows = out.read_text().splitlines(keepends=True)
    out.write_text(header.replace("workload,", "workload,colour,") + "".join(r.replace("mlp,", "mlp,red,", 1)
                                                                             for r in rows))
    before = out.read_bytes()
    r = runner.invoke(app, MLP + ["-o", str(out), "--resume"])
    assert r.exit_code == 2 and "its columns differ from this version's" in r.output
    assert out.read_bytes() == before


def test_parse_row_refuses_unknown_and_missing_columns_with_their_place():
    good = {"workload": "gpt", "model": "gpt2", "hardware": "t4", "phase": "decode", "batch": "2", "seq_len": "64",
            "op": "dense", "dtype": "fp16", "attention": "unfused"}
    assert parse_row(good, "f: line 2") == SweepRow(workload="gpt", model="gpt2", hardware="t4", phase="decode",
                                                     batch=2, seq_len=64, op="dense", dtype="fp16",
                                                     attention="unfused")
    with pytest.raises(BatchprofError, match=r"^f: line 3: unknown column 'colour'"):
        parse_row(good | {"colour": "red"}, "f: line 3")
    with pytest.raises(BatchprofError, match=r"^f: line 4: not a sweep result row \(no 'model'\)"):
        parse_row({k: v for k, v in good.items() if k != "model"}, "f: line 4")
    with pytest.raises(BatchprofError, match=r"^f: line 5: column 'seq_len': cannot read '6.5' as an integer"):
        parse_row(good | {"seq_len": "6.5"}, "f: line 5")
    with pytest.raises(BatchprofError, match=r"^f: line 6: not a sweep result row \(no batch >= 1\)"):
        parse_row(good | {"batch": "0"}, "f: line 6")
