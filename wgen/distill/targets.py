"""Guided distillation's targets and losses on plain tensors (no Ray, no GAN, no blocks).

Meng et al., "On Distillation of Guided Diffusion Models" (CVPR 2023), in two stages:

1. The w-conditioned student: one pass of x̂_η(z_t, t, w) matches the teacher's guided
   x̂^w = (1 + w)·x̂_c − w·x̂_∅ (two passes), for w ~ U[w_min, w_max] and t over the schedule;
   loss ‖x̂_η − x̂^w‖² in x̂ space.
2. Progressive distillation (Salimans & Ho, ICLR 2022): from z_t the N-step teacher takes two
   DDIM half-steps t → m → s; the N/2-step student's one DDIM step from t must land on the
   same z_s, which it does when it predicts x̃ = (z_s − (σ_s/σ_t)·z_t) / (α_s − (σ_s/σ_t)·α_t).

The schedule (α_t, σ_t), the reading of a raw output as x̂ and the DDIM grid are the
diffusion core's (`WeightDiffusion`); guidance is `guided_prediction`'s. The student's DDIM
steps are those `WeightDiffusion.sample_ddim` takes: the "trailing" grid, and from t the
step to s = t − T // N (diffusers' DDIM), s < 0 being the clean end (α = 1, σ = 0).
"""

from __future__ import annotations

import torch

from wgen.generator.diffusion import (
    BlockDenoiser,
    WeightDiffusion,
    guided_prediction,
    masked_mse,
)

__all__ = [
    "alpha_sigma_or_clean",
    "check_power_of_two",
    "ddim_step",
    "draw_w",
    "progressive_loss",
    "progressive_target",
    "student_timesteps",
    "teacher_x0",
    "w_student_loss",
]


def check_power_of_two(steps: int) -> int:
    """``steps`` if it is 1, 2, 4, 8, ...; else a ValueError (rounds halve it down to 1)."""
    if steps < 1 or steps & (steps - 1):
        raise ValueError(f"a step count that halves down to 1 must be a power of two, got {steps}")
    return steps


def alpha_sigma_or_clean(
    diffusion: WeightDiffusion, t: torch.Tensor, like: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """α_t, σ_t shaped to broadcast over ``like``; t < 0 is the clean end (α = 1, σ = 0),
    where DDIM's last step lands (``set_alpha_to_one``)."""
    alpha, sigma = diffusion.alpha_sigma(t.clamp_min(0), like)
    clean = (t < 0).to(like.device).view(alpha.shape)
    return torch.where(clean, torch.ones_like(alpha), alpha), torch.where(
        clean, torch.zeros_like(sigma), sigma
    )


def ddim_step(
    x0: torch.Tensor,
    z_t: torch.Tensor,
    alpha_t: torch.Tensor,
    sigma_t: torch.Tensor,
    alpha_s: torch.Tensor,
    sigma_s: torch.Tensor,
) -> torch.Tensor:
    """Deterministic DDIM (η = 0) from t to s given x̂: z_s = α_s·x̂ + σ_s·ε̂ with
    ε̂ = (z_t − α_t·x̂)/σ_t, per row (diffusers' `DDIMScheduler.step` takes one t a batch)."""
    return alpha_s * x0 + sigma_s * (z_t - alpha_t * x0) / sigma_t


def progressive_target(
    z_t: torch.Tensor,
    z_s: torch.Tensor,
    alpha_t: torch.Tensor,
    sigma_t: torch.Tensor,
    alpha_s: torch.Tensor,
    sigma_s: torch.Tensor,
) -> torch.Tensor:
    """Salimans & Ho's x̃: the x̂ whose one DDIM step from z_t lands on z_s,
    x̃ = (z_s − (σ_s/σ_t)·z_t) / (α_s − (σ_s/σ_t)·α_t); at the clean end (σ_s = 0) x̃ = z_s."""
    ratio = sigma_s / sigma_t
    return (z_s - ratio * z_t) / (alpha_s - ratio * alpha_t)


def student_timesteps(diffusion: WeightDiffusion, steps: int) -> torch.Tensor:
    """The (steps,) timesteps the ``steps``-step DDIM sampler evaluates, first (t = T − 1) first."""
    return diffusion.ddim_scheduler(check_power_of_two(steps)).timesteps.to(torch.long)


def draw_w(batch: int, w_min: float, w_max: float, generator: torch.Generator) -> torch.Tensor:
    """(batch,) guidance weights w ~ U[w_min, w_max]."""
    return w_min + (w_max - w_min) * torch.rand(batch, generator=generator)


def teacher_x0(
    teacher: BlockDenoiser,
    diffusion: WeightDiffusion,
    x_t: torch.Tensor,
    t: torch.Tensor,
    n: torch.Tensor,
    text: torch.Tensor,
    w: torch.Tensor | None,
    guidance_input: bool,
) -> torch.Tensor:
    """The teacher's guided x̂^w per row: a guided teacher in two passes (one batched
    forward), a w-student (``guidance_input``) in one pass with w as its input (an
    unconditional model: ``guidance_input`` and w None)."""
    if guidance_input:
        output = teacher(x_t, t, n, text, extra_cond=w)
    else:
        output = guided_prediction(teacher, x_t, t, n, text, w.view(-1, *([1] * (x_t.ndim - 1))))
    return diffusion.predict_x0(output, x_t, t)


def _student_x0(student, diffusion, x_t, t, n, text, w) -> torch.Tensor:
    return diffusion.predict_x0(student(x_t, t, n, text, extra_cond=w), x_t, t)


def w_student_loss(
    student: BlockDenoiser,
    teacher: BlockDenoiser,
    diffusion: WeightDiffusion,
    x0: torch.Tensor,
    mask: torch.Tensor,
    n: torch.Tensor,
    text: torch.Tensor,
    w: torch.Tensor,
    generator: torch.Generator,
    single_step_t: int | None = None,
    single_step_share: float = 0.0,
) -> torch.Tensor:
    """Stage 1: ‖x̂_η(z_t, t, w) − x̂^w_teacher(z_t, t)‖² over the real values.

    z_t = α_t·x0 + σ_t·ε at t ~ U{0, T−1}; a ``single_step_share`` of the rows instead get
    what single-step generation feeds the model, pure noise at ``single_step_t`` (the teacher's
    one-step output there is what `wgen generate --steps 1` gives).
    """
    batch, device = x0.shape[0], x0.device
    t = torch.randint(0, diffusion.num_timesteps, (batch,), generator=generator)
    noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
    single = torch.rand(batch, generator=generator) < single_step_share
    if single_step_t is not None:
        t = torch.where(single, torch.full_like(t, single_step_t), t)
    t, noise, single, w = t.to(device), noise.to(device), single.to(device), w.to(device)
    alpha, sigma = diffusion.alpha_sigma(t, x0)
    z_t = alpha * x0 + sigma * noise
    z_t = torch.where(single.view(-1, *([1] * (x0.ndim - 1))), noise, z_t)
    with torch.no_grad():
        target = teacher_x0(teacher, diffusion, z_t, t, n, text, w, guidance_input=False)
    return masked_mse(_student_x0(student, diffusion, z_t, t, n, text, w), target, mask)


def progressive_loss(
    student: BlockDenoiser,
    teacher: BlockDenoiser,
    diffusion: WeightDiffusion,
    steps: int,
    x0: torch.Tensor,
    mask: torch.Tensor,
    n: torch.Tensor,
    text: torch.Tensor,
    w: torch.Tensor | None,
    generator: torch.Generator,
    teacher_guidance_input: bool = True,
    space: str = "x",
) -> torch.Tensor:
    """Stage 2: the ``steps``-step student's x̂ at a grid point t against x̃ from two DDIM
    half-steps t → m → s of its (2·steps)-step teacher, m = t − T // (2·steps),
    s = t − T // steps. ``teacher_guidance_input``: the teacher is a w-student (one pass);
    False: a guided teacher (two passes each). ``w`` None: an unconditional teacher and
    student (p-diff's latent DDPM), one pass each, ``teacher_guidance_input`` True.

    ``space`` "x": ‖x̂ − x̃‖² (Salimans & Ho). "z": where the student's DDIM step lands
    against z_s, ‖(α_s − (σ_s/σ_t)·α_t)·(x̂ − x̃)‖², the same target weighted per t: an
    ε-predicting model's x̂ = (z_t − σ_t·ε̂)/α_t is ill-conditioned near t = T (α_t → 0),
    where x-space errors of the student's ε̂ grow by (σ_t/α_t)² and swamp every other t,
    while its step from there moves z by a small multiple of x̂ (the clean end: weight 1)."""
    if space not in ("x", "z"):
        raise ValueError(f"progressive loss space must be 'x' or 'z', got {space!r}")
    batch, device = x0.shape[0], x0.device
    grid = student_timesteps(diffusion, steps)
    t = grid[torch.randint(0, steps, (batch,), generator=generator)]
    m = t - diffusion.num_timesteps // (2 * steps)
    s = t - diffusion.num_timesteps // steps  # < 0 after the last step: the clean end
    noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
    t, m, s, noise = t.to(device), m.to(device), s.to(device), noise.to(device)
    w = None if w is None else w.to(device)
    alpha_t, sigma_t = diffusion.alpha_sigma(t, x0)
    alpha_m, sigma_m = alpha_sigma_or_clean(diffusion, m, x0)
    alpha_s, sigma_s = alpha_sigma_or_clean(diffusion, s, x0)
    z_t = alpha_t * x0 + sigma_t * noise
    with torch.no_grad():
        guided = teacher_guidance_input
        x0_t = teacher_x0(teacher, diffusion, z_t, t, n, text, w, guided)
        z_m = ddim_step(x0_t, z_t, alpha_t, sigma_t, alpha_m, sigma_m)
        x0_m = teacher_x0(teacher, diffusion, z_m, m, n, text, w, guided)
        z_s = ddim_step(x0_m, z_m, alpha_m, sigma_m, alpha_s, sigma_s)
        target = progressive_target(z_t, z_s, alpha_t, sigma_t, alpha_s, sigma_s)
    student_x0 = _student_x0(student, diffusion, z_t, t, n, text, w)
    if space == "z":
        scale = alpha_s - sigma_s / sigma_t * alpha_t  # z_s's change per unit of x̂
        return masked_mse(scale * student_x0, scale * target, mask)
    return masked_mse(student_x0, target, mask)
