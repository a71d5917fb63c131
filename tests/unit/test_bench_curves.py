"""The benchmark's readings of a quality-versus-steps curve, against hand-computed values."""

from __future__ import annotations

import pytest

from wgen.bench import curves

STEPS = [0, 5, 10, 15, 20]
SECONDS = [0.5, 1.5, 2.5, 3.5, 4.5]  # 0.5 s generation + 0.2 s a step
L1 = [0.30, 0.20, 0.12, 0.10, 0.10]


def test_smooth_is_a_trailing_mean():
    assert curves.smooth([1.0, 3.0, 5.0, 7.0], 2) == [1.0, 2.0, 4.0, 6.0]
    assert curves.smooth([1.0, 3.0, 5.0], 1) == [1.0, 3.0, 5.0]
    assert curves.smooth([3.0, 6.0, 9.0], 3) == [3.0, 4.5, 6.0]
    with pytest.raises(ValueError):
        curves.smooth([1.0], 0)


def test_first_reaching_the_target():
    assert curves.first_reaching(STEPS, SECONDS, L1, 0.12) == (10, 2.5)
    assert curves.first_reaching(STEPS, SECONDS, L1, 0.30) == (0, 0.5)  # at the start
    # a method that plateaus worse never reaches it: not a fast convergence
    assert curves.first_reaching(STEPS, SECONDS, L1, 0.05) == (None, None)
    # higher-is-better metrics (PSNR) reach from below
    assert curves.first_reaching([0, 5], [0.0, 1.0], [20.0, 30.0], 25.0, False) == (5, 1.0)


def test_quality_at_budgets_holds_the_last_value():
    assert curves.quality_at(STEPS, L1, 0) == 0.30
    assert curves.quality_at(STEPS, L1, 10) == 0.12
    assert curves.quality_at(STEPS, L1, 12) == 0.12  # between evaluations: the last one
    assert curves.quality_at(STEPS, L1, 100) == 0.10  # converged at 20: its model stays
    with pytest.raises(ValueError):
        curves.quality_at([5, 10], [0.1, 0.1], 0)


def test_mean_quality_is_the_area_under_the_curve_per_step():
    # trapezoids over [0, 10]: 5·(0.30+0.20)/2 + 5·(0.20+0.12)/2 = 1.25 + 0.8 = 2.05 → /10
    assert curves.mean_quality(STEPS, L1, 10) == pytest.approx(0.205)
    # [0, 7]: 5·0.25 + 2·(0.20 + 0.168)/2 = 1.25 + 0.368 → /7 (0.168 interpolated at step 7)
    assert curves.mean_quality(STEPS, L1, 7) == pytest.approx((1.25 + 0.368) / 7)
    # past the run's end the last value is held: [0, 40] = area to 20 + 20·0.10
    area_20 = 1.25 + 0.8 + 5 * 0.11 + 5 * 0.10
    assert curves.mean_quality(STEPS, L1, 40) == pytest.approx((area_20 + 2.0) / 40)
    assert curves.mean_quality(STEPS, L1, 0) == 0.30


def test_medians_and_ratios_skip_missing_values():
    assert curves.median_or_none([3.0, None, 1.0, 2.0]) == 2.0
    assert curves.median_or_none([None, None]) is None
    assert curves.ratio(10.0, 2.0) == 5.0
    assert curves.ratio(None, 2.0) is None
    assert curves.ratio(1.0, 0.0) is None
