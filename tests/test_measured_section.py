"""The `measured:` section of a hardware profile, read and written (profiles/measured.py), worked
by hand: every value in datasheet units goes in and comes back in SI, every malformed field gets
its whole one-line message, and a table no device could reach is refused. Pure Python (no torch),
so the mutation run judges profiles/measured.py with it."""

import copy
import datetime

import pytest
import yaml

from gpt_batchprof.errors import ProfileError
from gpt_batchprof.profiles.measured import (
    best_flop_rate, implausible_rate, measured_from_mapping, measured_to_yaml_mapping,
)

# Every optional key present. matmul.bf16 is a 2 x 1 x 2 grid (m, n, k) with one cell not measured;
# copy has a non-integral axis value. Numbers chosen so each rounding in the writer shows.
SECTION = {
    "device_name": "hand GPU", "torch_version": "2.13.0", "threads": 0, "date": "2026-12-05",
    "overhead_us": {"eager": 4.5, "graphs": 1.23456},
    "warnings": ["written with --force on a busy machine"],
    "source": {"package": "hand", "version": "1"},
    "dtype_aliases": {"fp16": "bf16"},
    "interconnect": {"name": "nvlink", "bandwidth_gb_s": 450.04, "latency_us": 2.50004},
    "host_us_per_layer": {"llama": 260.04, "moe": 700},
    "quality": {"matmul.bf16": {"cells": 3, "spread_pct": 1.5}},
    "tables": {
        "matmul.bf16": {"unit": "GFLOP/s", "m": [1, 16], "n": [4096], "k": [1024, 4096],
                        "values": [[[123.456, 400]], [[1500, None]]]},
        "copy": {"unit": "GB/s", "bytes": [512.5, 1.6e7], "values": [800.5, 2000]},
    },
}


def read(section=SECTION):
    return measured_from_mapping(section, "hw.yaml")


def test_every_value_is_read_into_si_units():
    m = read()
    assert (m.device_name, m.torch_version, m.threads, m.date) == ("hand GPU", "2.13.0", 0, "2026-12-05")
    assert m.overhead_s == {"eager": pytest.approx(4.5e-6), "graphs": pytest.approx(1.23456e-6)}
    mm = m.tables["matmul.bf16"]
    assert (mm.kind, mm.dtype) == ("matmul", "bf16")
    assert mm.axes == ((1.0, 16.0), (4096.0,), (1024.0, 4096.0))
    assert mm.values == (pytest.approx(123.456e9), 400e9, 1500e9, None)
    cp = m.tables["copy"]
    assert (cp.kind, cp.dtype, cp.axes, cp.values) == ("copy", "", ((512.5, 1.6e7),), (800.5e9, 2000e9))
    assert m.warnings == ("written with --force on a busy machine",)
    assert m.dtype_aliases == {"fp16": "bf16"} and m.source == {"package": "hand", "version": "1"}
    assert m.link == ("nvlink", pytest.approx(450.04e9), pytest.approx(2.50004e-6))
    assert m.host_s_per_layer == {"llama": pytest.approx(260.04e-6), "moe": pytest.approx(700e-6)}
    assert m.quality == {"matmul.bf16": {"cells": 3, "spread_pct": 1.5}}


def test_a_date_yaml_read_as_a_date_is_kept_as_text():
    assert read(SECTION | {"date": datetime.date(2026, 12, 5)}).date == "2026-12-05"


def test_the_optional_keys_may_be_left_out():
    bare = {k: SECTION[k] for k in ("device_name", "torch_version", "threads", "date", "overhead_us", "tables")}
    m = read(bare)
    assert (m.warnings, m.dtype_aliases, m.source, m.link, m.quality, m.host_s_per_layer) == ((), {}, {}, None, {}, {})
    assert measured_to_yaml_mapping(m) == {
        "device_name": "hand GPU", "torch_version": "2.13.0", "threads": 0, "date": "2026-12-05",
        "overhead_us": {"eager": 4.5, "graphs": 1.235}, "warnings": [],
        "tables": measured_to_yaml_mapping(read())["tables"]}


def test_written_back_in_datasheet_units_to_four_significant_digits():
    assert measured_to_yaml_mapping(read()) == {
        "device_name": "hand GPU", "torch_version": "2.13.0", "threads": 0, "date": "2026-12-05",
        "overhead_us": {"eager": 4.5, "graphs": 1.235},  # microseconds to 3 decimals
        "warnings": ["written with --force on a busy machine"],
        "host_us_per_layer": {"llama": 260.0, "moe": 700.0},  # to 0.1 us
        "quality": {"matmul.bf16": {"cells": 3, "spread_pct": 1.5}},
        "source": {"package": "hand", "version": "1"},
        "dtype_aliases": {"fp16": "bf16"},
        "interconnect": {"name": "nvlink", "bandwidth_gb_s": 450.0, "latency_us": 2.5},
        "tables": {
            # integral axis values as integers, the rest as they are; rates to 4 significant digits
            "matmul.bf16": {"unit": "GFLOP/s", "m": [1, 16], "n": [4096], "k": [1024, 4096],
                            "values": [[[123.5, 400.0]], [[1500.0, None]]]},
            "copy": {"unit": "GB/s", "bytes": [512.5, 16000000], "values": [800.5, 2000.0]},
        },
    }
    m = read()
    again = read(yaml.safe_load(yaml.safe_dump(measured_to_yaml_mapping(m))))
    assert again.tables["copy"] == m.tables["copy"] and again.link == ("nvlink", 450e9, pytest.approx(2.5e-6))


def test_summary_is_provenance_and_table_names_in_si():
    assert read().summary() == {
        "device_name": "hand GPU", "torch_version": "2.13.0", "threads": 0, "date": "2026-12-05",
        "overhead_s": {"eager": pytest.approx(4.5e-6), "graphs": pytest.approx(1.23456e-6)},
        "tables": ["copy", "matmul.bf16"], "warnings": ["written with --force on a busy machine"],
        "dtype_aliases": {"fp16": "bf16"}, "source": {"package": "hand", "version": "1"},
        "interconnect": {"name": "nvlink", "bandwidth_bytes_per_s": pytest.approx(450.04e9),
                         "latency_s": pytest.approx(2.50004e-6)},
        "quality": {"matmul.bf16": {"cells": 3, "spread_pct": 1.5}},
        "host_s_per_layer": {"llama": pytest.approx(260.04e-6), "moe": pytest.approx(700e-6)},
    }


def test_tables_are_found_by_kind_and_dtype_through_the_aliases():
    m = read()
    assert m.table("matmul", "bf16") is m.tables["matmul.bf16"]
    assert m.table("matmul", "fp16") is m.tables["matmul.bf16"]  # fp16 reads the bf16 table
    assert m.table("matmul", "fp32") is None and m.table("bmm", "bf16") is None
    assert m.table("copy", "fp32") is m.tables["copy"]  # bytes are bytes: one copy table for every dtype
    assert m.overhead("graphs") == pytest.approx(1.23456e-6)
    assert m.overhead("eager") == pytest.approx(4.5e-6)
    assert m.overhead("unknown") == pytest.approx(4.5e-6)  # a launch mode not measured: eager


def test_best_flop_rate_is_the_fastest_measured_cell_of_a_dtype():
    m = read()
    assert best_flop_rate(m, "bf16") == 1500e9  # the null cell is skipped, copy (bytes/s) is not a FLOP rate
    assert best_flop_rate(m, "fp32") == 0.0


# --------------------------------------------------------------------------- malformed fields


DELETE = object()  # _with's value: drop the key


def _with(path, value):
    bad = copy.deepcopy(SECTION)
    node = bad
    for p in path[:-1]:
        node = node[p]
    if value is DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return bad


MM = ("tables", "matmul.bf16")
DTYPES = "fp32, tf32, fp16, bf16, fp8, int8"


@pytest.mark.parametrize("path, value, message", [
    (("overhead_us",), DELETE, "'measured.overhead_us': missing or not a mapping with at least 'eager: MICROSECONDS'"),
    (("overhead_us",), {"graphs": 1}, "'measured.overhead_us': missing or not a mapping with at least 'eager: MICROSECONDS'"),
    (("overhead_us",), {"eager": 1, "lazy": 2}, "'measured.overhead_us.lazy': unknown launch mode (known: eager, graphs)"),
    (("overhead_us", "eager"), True, "'measured.overhead_us.eager': must be a number >= 0, got True"),
    (("overhead_us", "eager"), -1, "'measured.overhead_us.eager': must be a number >= 0, got -1"),
    (("overhead_us", "eager"), float("inf"), "'measured.overhead_us.eager': must be a number >= 0, got inf"),
    (("overhead_us", "eager"), "4", "'measured.overhead_us.eager': must be a number >= 0, got '4'"),
    (("tables",), {}, "'measured.tables': missing or not a mapping of table name: grid"),
    (("tables",), [1], "'measured.tables': missing or not a mapping of table name: grid"),
    (("tables", "gemm.bf16"), {}, "'measured.tables.gemm.bf16': unknown kind 'gemm' (known: matmul, bmm, "
     "sdpa_prefill, sdpa_decode, attn_prefill, attn_decode, moe, layernorm, rmsnorm, softmax, copy)"),
    (("tables", "matmul"), {}, f"'measured.tables.matmul': 'matmul' tables take a dtype ({DTYPES}): e.g. matmul.fp32"),
    (("tables", "matmul.fp7"), {}, f"'measured.tables.matmul.fp7': 'matmul' tables take a dtype ({DTYPES}): "
     "e.g. matmul.fp32"),
    (("tables", "copy.fp32"), {}, "'measured.tables.copy.fp32': 'copy' tables take no dtype: e.g. copy"),
    (MM, [1], "'measured.tables.matmul.bf16': must be a mapping of unit, axes and values"),
    (MM + ("unit",), DELETE, "'measured.tables.matmul.bf16.unit': must be GFLOP/s, got None"),
    (("tables", "copy", "unit"), "GFLOP/s", "'measured.tables.copy.unit': must be GB/s, got 'GFLOP/s'"),
    (MM + ("m",), [], "'measured.tables.matmul.bf16.m': must be a non-empty increasing list of positive numbers, got []"),
    (MM + ("m",), DELETE, "'measured.tables.matmul.bf16.m': must be a non-empty increasing list of positive numbers, "
     "got None"),
    (MM + ("m",), [0, 16], "'measured.tables.matmul.bf16.m': must be a non-empty increasing list of positive numbers, "
     "got [0, 16]"),
    (MM + ("m",), [True, 16], "'measured.tables.matmul.bf16.m': must be a non-empty increasing list of positive "
     "numbers, got [True, 16]"),
    (MM + ("m",), [16, 16], "'measured.tables.matmul.bf16.m': must be a non-empty increasing list of positive "
     "numbers, got [16, 16]"),
    (MM + ("m",), ["1", "16"], "'measured.tables.matmul.bf16.m': must be a non-empty increasing list of positive "
     "numbers, got ['1', '16']"),
    (MM + ("values",), [[[1, 2]]], "'measured.tables.matmul.bf16.values': must be a list of 2 entries (axis 'm'), "
     "got 1 entries"),
    (MM + ("values",), [5, [[1, 2]]], "'measured.tables.matmul.bf16.values[0]': must be a list of 1 entries "
     "(axis 'n'), got 5"),
    (MM + ("values",), [[[1, 2]], [[3]]], "'measured.tables.matmul.bf16.values[1][0]': must be a list of 2 entries "
     "(axis 'k'), got 1 entries"),
    (MM + ("values",), [[[1, 2]], [[3, 0]]], "'measured.tables.matmul.bf16.values[1][0][1]': must be a number > 0 "
     "(or null: not measured), got 0"),
    (MM + ("values",), [[[True, 2]], [[3, 4]]], "'measured.tables.matmul.bf16.values[0][0][0]': must be a number > 0 "
     "(or null: not measured), got True"),
    (MM + ("values",), [[[1, float("nan")]], [[3, 4]]], "'measured.tables.matmul.bf16.values[0][0][1]': must be a "
     "number > 0 (or null: not measured), got nan"),
    (MM + ("values",), [[[None, None]], [[None, None]]], "'measured.tables.matmul.bf16.values': no measured value "
     "(all null)"),
    (("warnings",), "x", "'measured.warnings': must be a list of strings, got 'x'"),
    (("warnings",), [1], "'measured.warnings': must be a list of strings, got [1]"),
    (("dtype_aliases",), {"fp16": "fp7"}, f"'measured.dtype_aliases': must map a dtype to the dtype whose tables "
     f"stand for it ({DTYPES}), got {{'fp16': 'fp7'}}"),
    (("dtype_aliases",), {"fp7": "bf16"}, f"'measured.dtype_aliases': must map a dtype to the dtype whose tables "
     f"stand for it ({DTYPES}), got {{'fp7': 'bf16'}}"),
    (("dtype_aliases",), ["fp16"], f"'measured.dtype_aliases': must map a dtype to the dtype whose tables "
     f"stand for it ({DTYPES}), got ['fp16']"),
    (("source",), "x", "'measured.source': must be a mapping (package, version, framework, ...), got 'x'"),
    (("host_us_per_layer",), [1], "'measured.host_us_per_layer': must be a mapping of block style: MICROSECONDS, "
     "got [1]"),
    (("host_us_per_layer",), {"bert": 1}, "'measured.host_us_per_layer.bert': unknown block style "
     "(known: gpt2, llama, moe)"),
    (("host_us_per_layer", "llama"), -5, "'measured.host_us_per_layer.llama': must be a number >= 0, got -5"),
    (("quality",), {"matmul.bf16": 3}, "'measured.quality': must be a mapping of table name: {figure: number}, "
     "got {'matmul.bf16': 3}"),
    (("quality",), {"matmul.bf16": {"cells": True}}, "'measured.quality': must be a mapping of table name: "
     "{figure: number}, got {'matmul.bf16': {'cells': True}}"),
    (("quality",), {"matmul.bf16": {"cells": "3"}}, "'measured.quality': must be a mapping of table name: "
     "{figure: number}, got {'matmul.bf16': {'cells': '3'}}"),
    (("quality",), ["matmul.bf16"], "'measured.quality': must be a mapping of table name: {figure: number}, "
     "got ['matmul.bf16']"),
    (("threads",), -1, "'measured.threads': must be >= 0, got -1"),
    (("device_name",), DELETE, "'measured.device_name': missing (required)"),
    (("date",), DELETE, "'measured.date': missing (required)"),
])
def test_a_malformed_field_gets_its_one_line_message(path, value, message):
    with pytest.raises(ProfileError) as e:
        read(_with(path, value))
    assert str(e.value) == f"hw.yaml: field {message}"


def test_a_section_that_is_not_a_mapping():
    with pytest.raises(ProfileError) as e:
        read([1])
    assert str(e.value) == "hw.yaml: field 'measured': must be a mapping (see docs/bench.md), got [1]"


def test_zero_overhead_and_zero_host_time_are_measurements():
    m = read(_with(("overhead_us",), {"eager": 0}) | {"host_us_per_layer": {"gpt2": 0}})
    assert m.overhead_s == {"eager": 0.0} and m.host_s_per_layer == {"gpt2": 0.0}


# --------------------------------------------------------------------------- rates no device reaches


REFUSAL = "; no device beats its ceiling by more than {}x (tables from another device, or a unit slip?)"


def test_rates_up_to_the_margins_are_plausible():
    m = read()  # best matmul.bf16 cell 1500 GFLOP/s, best copy 2000 GB/s
    assert implausible_rate(m, {"bf16": 375e9}.get, 40e9) is None  # exactly 4x the peak, exactly 50x the bandwidth
    assert implausible_rate(m, {}.get, 40e9) is None  # no peak for the dtype: nothing to judge the FLOP table by


def test_a_flop_rate_past_four_times_the_peak_is_named():
    assert implausible_rate(read(), {"bf16": 300e9}.get, 1e12) == (
        "matmul.bf16", "1500 GFLOP/s is 5x the profile's peak bf16 (0.3 TFLOP/s)" + REFUSAL.format(4))


def test_a_bandwidth_past_fifty_times_the_profiles_is_named():
    assert implausible_rate(read(), {"bf16": 1e15}.get, 39.9e9) == (
        "copy", "2000 GB/s is 50.1x the profile's memory bandwidth (39.9 GB/s)" + REFUSAL.format(50))
