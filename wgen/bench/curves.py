"""What the benchmark reads off a quality-versus-steps curve: pure functions on lists.

A curve is one fine-tuning run's evaluations: the steps they were taken at, the training
seconds at each (evaluation time left out, generation time added by the caller) and the
quality (paired L1 by default: lower is better), on the selection pairs (`l1`, what the rule
read) and on the test pairs (`test_l1`, read only here). GAN evaluations swing by 10-20%
from one to the next (docs/architecture.md, "The benchmark"), so times are read off the
*smoothed* curve (the trailing mean of the last `window` evaluations); quality at a budget
is the model at that step, unsmoothed.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence


def smooth(values: Sequence[float], window: int) -> list[float]:
    """Trailing mean: entry i is the mean of values[max(0, i - window + 1) : i + 1]."""
    if window < 1:
        raise ValueError(f"window must be at least 1, got {window}")
    return [
        sum(values[max(0, i - window + 1) : i + 1]) / (i + 1 - max(0, i - window + 1))
        for i in range(len(values))
    ]


def reaches(value: float, target: float, lower_is_better: bool = True) -> bool:
    return value <= target if lower_is_better else value >= target


def first_reaching(
    steps: Sequence[int],
    seconds: Sequence[float],
    values: Sequence[float],
    target: float,
    lower_is_better: bool = True,
) -> tuple[int | None, float | None]:
    """(step, seconds) of the first evaluation whose value reaches ``target``; (None, None)
    when the curve never does (a method that plateaus worse never 'converges fast')."""
    for step, second, value in zip(steps, seconds, values, strict=True):
        if reaches(value, target, lower_is_better):
            return step, second
    return None, None


def quality_at(steps: Sequence[int], values: Sequence[float], budget: int) -> float:
    """The value at the last evaluation taken at or before ``budget`` steps: a run that
    stopped (converged) earlier keeps its last model, so it keeps its last value."""
    if not steps or budget < steps[0]:
        raise ValueError(f"no evaluation at or before step {budget} (first: {steps[:1]})")
    chosen = values[0]
    for step, value in zip(steps, values, strict=True):
        if step > budget:
            break
        chosen = value
    return chosen


def mean_quality(steps: Sequence[int], values: Sequence[float], up_to: int) -> float:
    """Area under the quality-versus-steps curve over [0, up_to] divided by ``up_to``
    (trapezoids between evaluations; the last value held past the run's end): the mean
    quality over the first ``up_to`` steps, in the metric's own units. ``up_to`` = 0 gives
    the value at step 0."""
    if not steps or steps[0] != 0:
        raise ValueError("a curve starts with its evaluation at step 0")
    if up_to <= 0:
        return values[0]
    xs, ys = [], []
    for step, value in zip(steps, values, strict=True):
        if step >= up_to:
            break
        xs.append(step)
        ys.append(value)
    xs.append(up_to)
    ys.append(
        _interpolate(steps, values, up_to) if steps[-1] >= up_to else values[-1]  # held
    )
    area = sum((xs[i + 1] - xs[i]) * (ys[i + 1] + ys[i]) / 2 for i in range(len(xs) - 1))
    return area / up_to


def _interpolate(steps: Sequence[int], values: Sequence[float], at: int) -> float:
    for i in range(1, len(steps)):
        if steps[i] >= at:
            s0, s1, v0, v1 = steps[i - 1], steps[i], values[i - 1], values[i]
            return v0 + (v1 - v0) * (at - s0) / (s1 - s0)
    return values[-1]


def time_to_converge(
    history: Sequence[dict[str, float]], window: int, delta: float
) -> tuple[int, float]:
    """(step, train seconds) of the first evaluation whose smoothed selection quality is
    within ``delta`` (relative) of the run's converged value, its best smoothed value: when
    the run got there, not when the rule's window ran out (which would add the window to
    every run and cap every ratio near 2x for fast starters)."""
    smoothed = smooth([h["l1"] for h in history], window)
    best = min(smoothed)
    for h, value in zip(history, smoothed, strict=True):
        if value <= best + delta * abs(best):
            return int(h["step"]), float(h["train_seconds"])
    raise AssertionError("the best value is always within delta of itself")


def median_or_none(values: Sequence[float | None]) -> float | None:
    """The median of the values that are not None; None when there are none."""
    present = [v for v in values if v is not None]
    return float(statistics.median(present)) if present else None


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator where both exist and the denominator is positive."""
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator
