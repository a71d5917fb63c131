"""Convergence on a noisy validation metric (lower is better).

GAN evaluations swing 10-20% from one evaluation to the next, so the rule compares the
mean of the last `smooth` evaluations against the best such mean so far: an evaluation
counts as progress only if it improves that best by more than `tolerance` (relative).
Progress must also exceed `min_delta` in the metric's own units: an easy concept whose
metric hovers near zero otherwise keeps making "relative" progress on noise forever.
After `patience` evaluations without progress the run has converged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class ConvergenceMonitor:
    patience: int  # evaluations without relative improvement before declaring convergence
    tolerance: float  # relative improvement of the smoothed metric that still counts
    smooth: int = 1  # evaluations averaged into the smoothed metric
    min_delta: float = 0.0  # smallest absolute improvement that counts, in the metric's units
    values: list[float] = field(default_factory=list)
    best: float = math.inf
    since_best: int = 0

    def __post_init__(self) -> None:
        if self.patience < 1 or self.smooth < 1 or self.tolerance < 0 or self.min_delta < 0:
            raise ValueError(
                f"convergence needs patience >= 1, smooth >= 1, tolerance >= 0, min_delta >= 0; got "
                f"patience={self.patience}, smooth={self.smooth}, tolerance={self.tolerance}, "
                f"min_delta={self.min_delta}"
            )

    @property
    def smoothed(self) -> float:
        window = self.values[-self.smooth :]
        return sum(window) / len(window) if window else math.inf

    def update(self, value: float) -> bool:
        """Record one evaluation; return True once the run has converged."""
        self.values.append(float(value))
        current = self.smoothed
        improved = (
            current < self.best * (1.0 - self.tolerance) and self.best - current > self.min_delta
        )
        if improved or not math.isfinite(self.best):
            self.best = current
            self.since_best = 0
        else:
            self.since_best += 1
        return self.converged

    @property
    def converged(self) -> bool:
        return self.since_best >= self.patience
