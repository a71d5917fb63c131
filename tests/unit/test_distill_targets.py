"""Guided distillation's pure pieces: the progressive target, the DDIM step, the grid."""

from __future__ import annotations

import math

import pytest
import torch

from wgen.diffusion import NoiseSchedule, ddim_scheduler
from wgen.distill.targets import (
    alpha_sigma_or_clean,
    check_power_of_two,
    ddim_step,
    draw_w,
    progressive_loss,
    progressive_target,
    student_timesteps,
)


def schedule_for(prediction: str = "sample", timesteps: int = 100) -> NoiseSchedule:
    return NoiseSchedule(prediction, train_timesteps=timesteps)


def test_progressive_target_against_a_hand_computed_case():
    # α_t = 0.6, σ_t = 0.8, α_s = 0.8, σ_s = 0.6, z_t = 1, z_s = 2:
    # σ_s/σ_t = 0.75; x̃ = (2 − 0.75·1) / (0.8 − 0.75·0.6) = 1.25 / 0.35
    values = [torch.tensor([v]) for v in (1.0, 2.0, 0.6, 0.8, 0.8, 0.6)]
    assert progressive_target(*values).item() == pytest.approx(1.25 / 0.35)


def test_the_target_is_what_one_ddim_step_must_predict_to_land_on_z_s():
    gen = torch.Generator().manual_seed(0)
    z_t, z_s = torch.randn(5, 1, 8, generator=gen), torch.randn(5, 1, 8, generator=gen)
    alpha_t, alpha_s = torch.tensor(0.3), torch.tensor(0.7)
    sigma_t, sigma_s = (1 - alpha_t**2).sqrt(), (1 - alpha_s**2).sqrt()
    target = progressive_target(z_t, z_s, alpha_t, sigma_t, alpha_s, sigma_s)
    landed = ddim_step(target, z_t, alpha_t, sigma_t, alpha_s, sigma_s)
    assert torch.allclose(landed, z_s, atol=1e-5)
    # at the clean end (α_s = 1, σ_s = 0) the target is z_s itself
    clean = progressive_target(z_t, z_s, alpha_t, sigma_t, torch.tensor(1.0), torch.tensor(0.0))
    assert torch.equal(clean, z_s)


@pytest.mark.parametrize("prediction", ["sample", "epsilon", "v_prediction"])
@pytest.mark.parametrize("steps", [1, 2, 4])
def test_ddim_step_is_the_samplers_step(prediction, steps):
    """The per-row step equals diffusers' DDIMScheduler.step, which the sampler uses, at
    every point of the grid, the last (to the clean end) included."""
    schedule = schedule_for(prediction)
    scheduler = ddim_scheduler(schedule, steps)
    gen = torch.Generator().manual_seed(1)
    for t in student_timesteps(schedule, steps):
        z_t, output = torch.randn(3, 1, 8, generator=gen), torch.randn(3, 1, 8, generator=gen)
        expected = scheduler.step(output, int(t), z_t, eta=0.0).prev_sample
        rows = torch.full((3,), int(t))
        s = rows - schedule.num_timesteps // steps
        x0 = schedule.predict_x0(output, z_t, rows)
        got = ddim_step(
            x0, z_t, *schedule.alpha_sigma(rows, z_t), *alpha_sigma_or_clean(schedule, s, z_t)
        )
        assert torch.allclose(got, expected, atol=1e-4), (prediction, steps, int(t))


def test_student_grid_is_every_other_point_of_its_teachers():
    schedule = schedule_for(timesteps=1000)
    for steps in (1, 2, 4):
        student, teacher = (
            student_timesteps(schedule, steps),
            student_timesteps(schedule, 2 * steps),
        )
        assert student[0] == 999 and torch.equal(student, teacher[::2])


def test_alpha_sigma_or_clean_is_one_and_zero_below_zero():
    schedule = schedule_for()
    alpha, sigma = alpha_sigma_or_clean(schedule, torch.tensor([-1, 10]), torch.zeros(2, 1, 4))
    assert alpha[0].item() == 1.0 and sigma[0].item() == 0.0
    assert math.isclose(alpha[1].item() ** 2 + sigma[1].item() ** 2, 1.0, rel_tol=1e-5)


@pytest.mark.parametrize("steps", [0, 3, 6, -2])
def test_a_step_count_that_is_not_a_power_of_two_is_refused(steps):
    with pytest.raises(ValueError, match="power of two"):
        check_power_of_two(steps)


def test_draw_w_stays_in_its_range():
    w = draw_w(1000, 0.5, 2.0, torch.Generator().manual_seed(0))
    assert w.min() >= 0.5 and w.max() <= 2.0 and w.std() > 0.3


class Constant(torch.nn.Module):
    """An unconditional ε-model of (z_t, t) only, like p-diff's latent denoiser, that
    outputs ``value`` everywhere."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def forward(self, x, t):
        return torch.full_like(x, self.value)


def test_progressive_loss_of_an_unconditional_latent_model_against_a_hand_computed_case():
    """p-diff's latent DDPM (ε-prediction, no condition, no w, no mask): a teacher with
    ε̂ ≡ 0 predicts x̂ = z_t/α_t at every t, so its two DDIM half-steps keep z ∝ α and
    x̃ = z_t/α_t; a student with ε̂ ≡ 1 predicts (z_t − σ_t)/α_t, off by σ_t/α_t everywhere.
    With one step, t = T − 1: the loss is (σ_{T−1}/α_{T−1})²."""
    schedule = schedule_for("epsilon", timesteps=100)
    z0 = torch.randn(6, 4, 8, generator=torch.Generator().manual_seed(0))  # (B, C, L) latents
    args = (schedule, 1, z0, None)
    loss = progressive_loss(Constant(1.0), Constant(0.0), *args, torch.Generator().manual_seed(1))
    alpha, sigma = schedule.alpha_sigma(torch.tensor([99]), z0)
    assert loss.item() == pytest.approx((sigma / alpha).item() ** 2, rel=1e-4)
    same = progressive_loss(Constant(0.0), Constant(0.0), *args, torch.Generator())
    assert same.item() == pytest.approx(0.0, abs=1e-6)


def test_the_z_space_loss_weights_each_row_by_where_its_step_lands():
    """The same constant models with two steps: rows at t = 99 or 49 (the grid), s = t − 50;
    x̂ − x̃ = −σ_t/α_t, and the student's step moves z_s by (α_s − (σ_s/σ_t)·α_t) per unit
    of x̂, so the z-space loss is the mean of ((α_s − (σ_s/σ_t)·α_t)·σ_t/α_t)²."""
    schedule = schedule_for("epsilon", timesteps=100)
    z0 = torch.randn(8, 4, 8, generator=torch.Generator().manual_seed(0))

    def loss(space: str) -> float:
        gen = torch.Generator().manual_seed(3)
        args = (Constant(1.0), Constant(0.0), schedule, 2, z0, None, gen)
        return progressive_loss(*args, space=space).item()

    t = torch.tensor([99, 49])[
        torch.randint(0, 2, (8,), generator=torch.Generator().manual_seed(3))
    ]
    assert 0 < (t == 99).sum() < 8  # both grid points are drawn
    alpha_t, sigma_t = schedule.alpha_sigma(t, z0)
    alpha_s, sigma_s = alpha_sigma_or_clean(schedule, t - 50, z0)
    scale = alpha_s - sigma_s / sigma_t * alpha_t
    assert loss("x") == pytest.approx(((sigma_t / alpha_t) ** 2).mean().item(), rel=1e-4)
    assert loss("z") == pytest.approx(((scale * sigma_t / alpha_t) ** 2).mean().item(), rel=1e-4)
    with pytest.raises(ValueError, match="'x' or 'z'"):
        loss("eps")
