"""Quantiles (gpt_batchprof/stats.py), worked by hand, and the modules that take theirs from there."""

from __future__ import annotations

import math
import statistics

import pytest

from gpt_batchprof.stats import median, quantile, quantiles

# 4 values, given unsorted; sorted x = (1, 2, 4, 8), so the q-quantile sits at position 3q.
XS = [8.0, 1.0, 4.0, 2.0]


def test_quantiles_interpolate_between_the_closest_ranks_by_hand():
    # q = 0.25: position 0.75, 1 + 0.75 (2 - 1) = 1.75
    # q = 0.5:  position 1.5,  2 + 0.5 (4 - 2) = 3
    # q = 0.75: position 2.25, 4 + 0.25 (8 - 4) = 5
    # q = 0.9:  position 2.7,  4 + 0.7 (8 - 4) = 6.8
    # q = 0 and 1: the smallest and the largest
    assert quantiles(XS, (0.25, 0.5, 0.75)) == [1.75, 3.0, 5.0]
    assert quantile(XS, 0.9) == pytest.approx(6.8, rel=1e-15)
    assert quantiles(XS, (0.0, 1.0)) == [1.0, 8.0]
    assert median(XS) == 3.0  # an even count: the mean of the middle two
    assert median([3, 1, 2]) == 2  # an odd count: the middle one
    # the standard definition: the same cuts as statistics.quantiles(method="inclusive") (and numpy's default)
    assert statistics.quantiles(XS, n=4, method="inclusive") == [1.75, 3.0, 5.0]


def test_a_whole_rank_is_exact_despite_float_rounding():
    # 26 values 0, 10, ..., 250: the 0.28-quantile is at position 25 x 0.28, which is
    # 7.000000000000001 in floating point; the value there is 70 exactly, not 70.00000000000001
    xs = [10.0 * i for i in range(26)]
    assert 25 * 0.28 != 7.0
    assert 70.0 + 10.0 * (25 * 0.28 - 7) != 70.0  # what the unsnapped formula would give
    assert quantile(xs, 0.28) == 70.0


def test_no_value_one_value_and_a_q_outside_0_1():
    assert math.isnan(quantile([], 0.5))
    assert quantiles([5.0], (0.0, 0.37, 1.0)) == [5.0, 5.0, 5.0]
    with pytest.raises(ValueError, match="between 0 and 1"):
        quantile(XS, 1.5)
    with pytest.raises(ValueError):
        quantile(XS, -0.1)


def test_timers_simulate_and_sweeps_use_the_one_definition():
    from gpt_batchprof.measure.timing import Measurement
    from gpt_batchprof.simulate.metrics import percentiles

    m = Measurement(tuple(XS))
    assert m.median_s == 3.0
    assert m.iqr_s == 5.0 - 1.75
    # percentiles in 0..100: p90 at position 2.7 as above; p50 = 3
    assert percentiles(XS, (50, 90)) == [3.0, pytest.approx(6.8, rel=1e-15)]
    # a percentile with more than one decimal is not rounded to 0.1 any more: p12.34 at position
    # 3 x 0.1234 = 0.3702, 1 + 0.3702 (2 - 1) = 1.3702
    assert percentiles(XS, (12.34,)) == [pytest.approx(1.3702, rel=1e-12)]
