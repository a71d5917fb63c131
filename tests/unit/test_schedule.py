"""The generator's learning-rate schedule and the choice of the exported epoch."""

from __future__ import annotations

import math

import pytest

from wgen.generator.schedule import LR_FLOOR, epoch_lr, improves


def test_cosine_falls_from_the_rate_to_its_floor_and_constant_stays():
    rates = [epoch_lr(1e-3, "cosine", epoch, 10) for epoch in range(1, 11)]
    assert rates[0] == pytest.approx(1e-3) and rates[-1] == pytest.approx(1e-3 * LR_FLOOR)
    assert all(a > b for a, b in zip(rates[:-1], rates[1:], strict=True))
    assert rates[4] > 1e-3 * (1 + LR_FLOOR) / 2 > rates[5]  # symmetric about the middle
    assert epoch_lr(1e-3, "cosine", 1, 1) == pytest.approx(1e-3)  # one epoch: no decay
    assert {epoch_lr(1e-3, "constant", e, 10) for e in range(1, 11)} == {1e-3}


def test_an_unknown_schedule_is_named():
    with pytest.raises(ValueError, match="train.lr_schedule='step'"):
        epoch_lr(1e-3, "step", 1, 10)


def test_only_a_lower_real_score_improves():
    assert improves(0.1, None) and improves(0.1, 0.2)
    assert not improves(0.2, 0.1) and not improves(0.1, 0.1)
    assert not improves(math.nan, None) and not improves(None, 0.1)
