"""Units: SI values to the text people read (gpt_batchprof/units.py), and the bound markup of
the report's tables (report/markup.py). Every expected string is worked by hand.
"""

import math

from gpt_batchprof.report.markup import bound_markup
from gpt_batchprof.units import fmt_bytes, fmt_count, fmt_pct, fmt_rate, fmt_ratio, fmt_time


# --------------------------------------------------------------------------- units.py: SI values to text


def test_fmt_time_boundaries_missing_values_and_the_smallest_unit():
    assert fmt_time(None) == "-"
    assert fmt_time(math.nan) == "-"  # a missing prediction (no peak for the dtype) shows as a dash
    assert fmt_time(1.0) == "1 s"  # exactly one second stays in seconds (>=, not >)
    assert fmt_time(1e-3) == "1 ms"  # exactly a thousandth: ms
    assert fmt_time(1e-6) == "1 µs"
    assert fmt_time(3e-9) == "3 ns"
    assert fmt_time(5e-10) == "0.5 ns"  # below a nanosecond: still ns, 5e-10 / 1e-9 = 0.5
    assert fmt_time(0.0) == "0 ns"  # 0 is below every step: the last unit
    assert fmt_time(-2e-3) == "-2 ms"  # the unit follows |value|
    assert fmt_time(1.23456) == "1.23 s"  # three significant digits
    assert fmt_time(12) == "12 s"  # an int is not NaN-checked as a float


def test_fmt_time_units():
    assert fmt_time(2.5e-3) == "2.5 ms"  # 2.5 thousandths of a second
    assert fmt_time(0.0123) == "12.3 ms"
    assert fmt_time(4.2e-6) == "4.2 µs"  # millionths
    assert fmt_time(1.5) == "1.5 s"


def test_fmt_bytes_is_binary():
    assert fmt_bytes(None) == "-"
    assert fmt_bytes(math.nan) == "-"
    assert fmt_bytes(3 * 2**40) == "3 TiB"
    assert fmt_bytes(2**30) == "1 GiB"  # 1,073,741,824 B
    assert fmt_bytes(5 * 2**20) == "5 MiB"
    assert fmt_bytes(1536) == "1.5 KiB"  # 1536 / 1024
    assert fmt_bytes(1024) == "1 KiB"  # exactly 2**10 (>=)
    assert fmt_bytes(100) == "100 B"
    assert fmt_bytes(0.5) == "0.5 B"  # below one byte: the last unit
    assert fmt_bytes(10**9) == "954 MiB"  # 1e9 / 2**20 = 953.67 -> 954 MiB (not GiB)


def test_fmt_count_is_decimal():
    assert fmt_count(None) == "-"
    assert fmt_count(0) == "0"
    assert fmt_count(0, "FLOP") == "0 FLOP"
    assert fmt_count(2.5e15, "FLOP") == "2.5 PFLOP"
    assert fmt_count(1e15, "FLOP") == "1 PFLOP"  # exactly 1e15 (>=)
    assert fmt_count(312e12, "FLOP/s") == "312 TFLOP/s"  # A100 dense fp16 peak
    assert fmt_count(2.039e12, "B/s") == "2.04 TB/s"  # A100-80GB bandwidth, 3 significant digits
    assert fmt_count(3e9, "B") == "3 GB"
    assert fmt_count(4.5e6) == "4.5 M"
    assert fmt_count(1500, "B") == "1.5 kB"
    assert fmt_count(7) == "7"  # no unit, no trailing space
    assert fmt_count(7, "B/s") == "7 B/s"
    assert fmt_count(0.5, "FLOP") == "0.5 FLOP"  # below 1: the last unit


def test_fmt_count_of_one_and_its_exact_steps_and_a_whole_percent():
    assert fmt_count(1, "B") == "1 B"
    assert [fmt_count(x, "F") for x in (1e12, 1e9, 1e6, 1e3)] == ["1 TF", "1 GF", "1 MF", "1 kF"]  # exact steps
    assert fmt_pct(1.0) == "100%"


def test_fmt_rate_ratio_and_percent():
    assert fmt_rate(None) == "-"
    assert fmt_rate(1234.6) == "1,235"  # thousands separator, no decimals
    assert fmt_rate(1000) == "1,000"  # exactly 1000 takes the integer form (>=)
    assert fmt_rate(12.345) == "12.3"  # three significant digits below 1000
    assert fmt_rate(12.345, digits=2) == "12"
    assert fmt_ratio(None) == "-"
    assert fmt_ratio(1.234) == "1.23x"
    assert fmt_pct(None) == "-"
    assert fmt_pct(0.256) == "26%"  # 100 x 0.256 = 25.6 -> 26


# --------------------------------------------------------------------------- report/markup.py: a kernel's bound in the tables


def test_bound_markup_styles_and_short_names():
    assert bound_markup("compute") == "[green]compute[/]"
    assert bound_markup("compute", short=True) == "[green]comp[/]"
    assert bound_markup("memory", short=True) == "[yellow]mem[/]"
    assert bound_markup("overhead", short=True) == "[magenta]ovh[/]"
    assert bound_markup("oom", short=True) == "[red]oom[/]"  # no short name: the bound itself
    assert bound_markup("skipped") == "[dim]skipped[/]"
    assert bound_markup("link") == "link"  # no style: plain text
