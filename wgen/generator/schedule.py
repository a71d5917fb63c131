"""How the generator's training moves over its epochs: the learning rate of each epoch, and
which epoch's weights are exported.

Why a schedule and a choice of epoch: with a constant rate the demo generator's validation
probe went 0.109 → 0.102 → 0.088 → 0.100 at epochs 10/20/30/40 (stop 9, one seed), so the
last epoch was not the best one. A cosine decay settles the weights at the end; exporting
the best probed epoch keeps a good epoch the rate then left.
"""

from __future__ import annotations

import math

LR_SCHEDULES = ("constant", "cosine")
EXPORTS = ("last", "best")
LR_FLOOR = 0.05  # the cosine schedule ends at this fraction of train.lr, not at 0


def epoch_lr(lr: float, schedule: str, epoch: int, epochs: int) -> float:
    """The learning rate of epoch ``epoch`` (1-based) of ``epochs``.

    Computed from the epoch number alone (no scheduler state), so a resumed run continues
    the same curve; asking for more epochs stretches the rest of it.
    """
    if schedule == "constant":
        return lr
    if schedule == "cosine":
        progress = (epoch - 1) / max(1, epochs - 1)  # 0 at the first epoch, 1 at the last
        return lr * (LR_FLOOR + (1 - LR_FLOOR) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))
    raise ValueError(f"train.lr_schedule={schedule!r}; valid: {', '.join(LR_SCHEDULES)}")


def improves(score: float | None, best: float | None) -> bool:
    """Whether a probe score beats the best so far (lower is better; NaN never does)."""
    return score is not None and not math.isnan(score) and (best is None or score < best)
