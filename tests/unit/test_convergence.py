import pytest

from wgen.gan.convergence import ConvergenceMonitor


def test_converges_after_patience_evaluations_without_progress_at_a_stable_point():
    monitor = ConvergenceMonitor(patience=2, tolerance=0.01)
    assert not monitor.update(1.0)
    assert not monitor.update(0.5)  # progress
    assert not monitor.update(0.499)  # 0.2% better: below tolerance, but 0.5 was in the window
    assert not monitor.update(0.6)  # no progress for 2 evaluations, but 20% off the best: a swing
    assert monitor.update(0.5)  # back near the best: a stable point
    assert monitor.converged


def test_steady_large_improvement_never_converges():
    monitor = ConvergenceMonitor(patience=2, tolerance=0.01)
    assert not any(monitor.update(1.0 - 0.08 * i) for i in range(12))


def test_a_slow_creep_after_a_large_gain_converges():
    # c0022-like: from 0.5 down to 0.2, then 1.5% better at every evaluation until max_steps.
    values = [0.5, 0.35, 0.25, 0.2] + [0.2 * 0.985**i for i in range(1, 30)]
    old_rule = ConvergenceMonitor(patience=4, tolerance=0.01, gain_fraction=0.0)
    assert not any(old_rule.update(v) for v in values)
    monitor = ConvergenceMonitor(patience=4, tolerance=0.01)
    steps = [i for i, v in enumerate(values) if monitor.update(v)]
    assert steps and steps[0] < 12


def test_a_run_no_better_than_its_start_is_not_converged():
    # c0027-like: the LoRA first got worse, came back to the base's level, then learned.
    values = [0.37, 0.45, 0.41, 0.38, 0.37, 0.37, 0.37]
    # The old rule (no progress over the best for `patience` evaluations) said "converged" at
    # the 5th evaluation here: the start was the best.
    monitor = ConvergenceMonitor(patience=4, tolerance=0.01)
    assert not any(monitor.update(v) for v in values)
    assert "not better than its start" in monitor.reason()
    assert not any(monitor.update(v) for v in (0.30, 0.25))
    assert any(monitor.update(v) for v in (0.245, 0.246, 0.245, 0.246, 0.245))


def test_smoothing_ignores_a_single_lucky_evaluation():
    monitor = ConvergenceMonitor(patience=2, tolerance=0.05, smooth=3)
    for value in [1.0, 1.0, 1.0]:
        monitor.update(value)
    monitor.update(0.5)  # one lucky swing moves the 3-mean to 0.83: counts once
    assert monitor.best == pytest.approx(2.5 / 3)
    monitor.update(1.0)
    assert monitor.update(1.0)


def test_a_run_that_leaves_its_best_and_stays_away_has_drifted():
    monitor = ConvergenceMonitor(patience=2, tolerance=0.01)
    for value in [1.0, 0.5, 0.7, 0.75]:  # best 0.5, then 40-50% worse
        monitor.update(value)
    assert not monitor.drifted, "two evaluations away may still be a swing"
    for value in [0.8, 0.8]:
        assert not monitor.update(value)
    assert monitor.drifted and not monitor.converged, "no new best for 2 x patience"
    assert "not at a stable point" in monitor.reason()


def test_a_run_never_better_than_its_start_has_not_drifted():
    monitor = ConvergenceMonitor(patience=2, tolerance=0.01)
    for value in [0.5, 0.7, 0.8, 0.8, 0.8, 0.8, 0.8]:
        monitor.update(value)
    assert not monitor.drifted, "there is no learned best to go back to"


def test_a_swing_that_comes_back_converges_instead_of_drifting():
    monitor = ConvergenceMonitor(patience=2, tolerance=0.01)
    for value in [1.0, 0.5, 0.7, 0.75, 0.8]:
        monitor.update(value)
    assert monitor.update(0.51) and not monitor.drifted


@pytest.mark.parametrize(
    "kwargs", [{"patience": 0, "tolerance": 0.1}, {"patience": 1, "tolerance": -1}]
)
def test_invalid_settings_are_rejected(kwargs):
    with pytest.raises(ValueError, match="convergence needs"):
        ConvergenceMonitor(**kwargs)


def test_tiny_absolute_gains_on_a_near_zero_metric_do_not_count():
    # An easy concept hovering near zero: 2% relative gains, but only 5e-5 absolute.
    values = [0.0030 * 0.98**i for i in range(10)]
    relative_only = ConvergenceMonitor(patience=3, tolerance=0.01)
    assert not any(relative_only.update(v) for v in values)
    with_floor = ConvergenceMonitor(patience=3, tolerance=0.01, min_delta=5e-4)
    assert any(with_floor.update(v) for v in values)


# --- the bench's rule: progress relative to the current best over a growing window -------

from wgen.gan.convergence import GrowingWindowMonitor  # noqa: E402


def growing(**kw) -> GrowingWindowMonitor:
    fields = dict(eval_every=5, window_steps=20, window_fraction=0.5, tolerance=0.02)
    return GrowingWindowMonitor(**{**fields, **kw})


def test_a_slow_learner_far_from_its_start_is_not_cut_while_it_improves():
    # scratch's shape: a long way down, then 3% better every 5 steps for 400 steps; the
    # collection's gain-since-the-start margin called this converged at step ~15 (see
    # test_gan_training.test_the_gain_since_the_start_margin_is_the_configured_one)
    values = [0.25, 0.15] + [0.13 * 0.97**i for i in range(80)]
    monitor = growing()
    assert not any(monitor.update(v) for v in values)


def test_the_window_grows_with_the_steps_run():
    monitor = growing()
    assert monitor.window_evaluations() == 4  # before any evaluation: the floor, 20 steps
    for _ in range(41):
        monitor.update(1.0)  # flat from the start: converged at the floor, step 20
        if monitor.converged:
            break
    assert monitor.step == 20
    late = growing()
    values = [1.0 * 0.9**i for i in range(40)] + [0.9**39] * 200  # improves until step 195
    stopped = next(i for i, v in enumerate(values) if late.update(v)) * 5
    # flat from step 195: the window at step t is t/2, so it stops at t with t - t/2 = 195
    assert stopped == pytest.approx(390, abs=10)


def test_a_run_whose_start_is_its_best_converges_at_the_floor():
    monitor = growing()
    steps = [i * 5 for i, v in enumerate([0.1, 0.2, 0.3, 0.3, 0.3, 0.3]) if monitor.update(v)]
    assert steps == [20, 25]


@pytest.mark.parametrize(
    "kwargs",
    [dict(eval_every=0), dict(window_steps=1), dict(window_fraction=-1), dict(tolerance=-0.1)],
)
def test_a_bad_growing_window_setting_is_refused(kwargs):
    with pytest.raises(ValueError, match="growing-window rule"):
        growing(**kwargs)
