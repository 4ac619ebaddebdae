"""Statistics and timers, checked against hand-worked numbers (no hardware needed)."""

import pytest

from gpt_batchprof.measure.timing import CpuTimer, FakeTimer, Measurement, call_counts


def test_median_and_iqr_of_hand_made_samples():
    m = Measurement((1.0, 2.0, 3.0, 4.0, 100.0))
    assert m.median_s == 3.0  # the outlier does not move the median
    assert m.iqr_s == 2.0  # quartiles 2 and 4 (linear interpolation)
    assert m.noisy  # 2 / 3 > 10%
    assert m.warnings(0.1)[0].startswith("noisy: IQR/median 67% > 10%; consider --rep-ms")


def test_even_count_interpolates():
    m = Measurement((4.0, 1.0, 3.0, 2.0))  # order does not matter
    assert m.median_s == 2.5
    assert m.iqr_s == pytest.approx(3.25 - 1.75)


def test_quiet_samples_are_not_noisy():
    m = Measurement((10.0, 10.0, 10.0, 10.0, 10.5, 10.0))
    assert m.median_s == 10.0 and m.iqr_s == 0.0
    assert not m.noisy and m.warnings(0.1) == ()


def test_noise_threshold_is_ten_percent_of_median():
    # quartiles at 95 and 105: IQR 10 = exactly 10% of the median 100 -> not noisy; 12 -> noisy
    assert not Measurement((90.0, 95.0, 100.0, 105.0, 110.0)).noisy
    assert Measurement((90.0, 94.0, 100.0, 106.0, 110.0)).noisy


def test_few_samples_warn():
    assert any("few samples" in w for w in Measurement((1.0, 1.0, 1.0)).warnings())


def test_empty_measurement_is_refused():
    with pytest.raises(ValueError):
        Measurement(())


def test_budgets_become_call_counts():
    assert call_counts(1e-3, warmup_s=0.025, rep_s=0.1) == (25, 100)
    assert call_counts(1.0, warmup_s=0.025, rep_s=0.1) == (1, 5)  # slow call: minimum 5 timed
    assert call_counts(1e-9, warmup_s=1.0, rep_s=1.0, max_reps=50) == (50, 50)


def test_fake_timer_is_seeded_and_never_calls_fn():
    called = []
    t1 = FakeTimer(base_s=2e-3, noise=0.05, seed=7)
    t2 = FakeTimer(base_s=2e-3, noise=0.05, seed=7)
    a = t1.measure(called.append, warmup_s=0, rep_s=0, label="decode/1/qkv_proj")
    b = t2.measure(called.append, warmup_s=0, rep_s=0, label="decode/1/qkv_proj")
    assert a.times_s == b.times_s and called == []
    assert all(1.9e-3 <= t <= 2.1e-3 for t in a.times_s)
    assert t1.calls == ["decode/1/qkv_proj"]


def test_cpu_timer_rotates_input_sets_and_respects_max_reps():
    seen = []
    m = CpuTimer(max_reps=40).measure(seen.append, warmup_s=0.0, rep_s=10.0)
    assert len(m.times_s) == 40  # a no-op call is far under the budget: capped
    assert m.method == "cpu-clock" and all(t >= 0 for t in m.times_s)
    assert seen[-40:] == list(range(40))  # timed calls walk the input sets 0, 1, 2, ...


def test_cpu_timer_measures_a_known_sleep():
    import time

    m = CpuTimer(min_reps=5, max_reps=5).measure(lambda i: time.sleep(0.002), warmup_s=0.0, rep_s=0.0)
    assert 0.002 <= m.median_s < 0.01
