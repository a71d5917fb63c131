import pytest

from wgen.gan.convergence import ConvergenceMonitor


def test_converges_after_patience_evaluations_without_progress():
    monitor = ConvergenceMonitor(patience=2, tolerance=0.01)
    assert not monitor.update(1.0)
    assert not monitor.update(0.5)  # progress
    assert not monitor.update(0.499)  # 0.2% better: below tolerance
    assert monitor.update(0.6)  # second evaluation without progress
    assert monitor.converged


def test_steady_improvement_never_converges():
    monitor = ConvergenceMonitor(patience=2, tolerance=0.01)
    assert not any(monitor.update(1.0 * 0.9**i) for i in range(20))


def test_smoothing_ignores_a_single_lucky_evaluation():
    monitor = ConvergenceMonitor(patience=2, tolerance=0.05, smooth=3)
    for value in [1.0, 1.0, 1.0]:
        monitor.update(value)
    monitor.update(0.5)  # one lucky swing moves the 3-mean to 0.83: counts once
    assert monitor.best == pytest.approx(2.5 / 3)
    monitor.update(1.0)
    assert monitor.update(1.0)


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
