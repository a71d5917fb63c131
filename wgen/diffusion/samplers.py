"""Samplers over a `NoiseSchedule`: classifier-free guidance, the one-step direct
reconstruction and DDIM, each ONE batched forward of the model per step.

Guidance (Ho & Salimans 2022) needs a model that can drop its condition per row: it takes a
(B,) bool keyword, named by the caller (``drop_key``), that replaces its condition by the
learned null condition where True (`NoiseSchedule.training_loss` trains it so). The
conditional and null halves then run as one forward of a doubled batch.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from diffusers import DDIMScheduler

from wgen.diffusion.schedule import DenoisingModel, NoiseSchedule

__all__ = ["ddim_scheduler", "guided_prediction", "sample_ddim", "sample_single_step"]


def _both_halves(value: torch.Tensor, batch: int) -> torch.Tensor:
    """A condition for the doubled batch: one row shared by a batch of several stays one row
    (the model broadcasts it, nothing is copied); any other is repeated."""
    shared = value.shape[0] == 1 and batch > 1
    return value if shared else torch.cat((value, value))


def guided_prediction(
    model: DenoisingModel,
    x_t: torch.Tensor,
    t: torch.Tensor,
    cond: Mapping[str, torch.Tensor] | None = None,
    guidance: float | torch.Tensor = 0.0,
    drop_key: str | None = None,
) -> torch.Tensor:
    """The model's output with classifier-free guidance: x̂^w = (1 + w)·x̂_c − w·x̂_∅.

    With w = 0 this is one conditional forward. Otherwise the conditional rows and the
    dropped (``drop_key`` True) rows run as ONE batched forward. Combining raw outputs
    (ε, x0 or v) is the same as combining x̂: at fixed x_t and t each is an affine function
    of the other with the same coefficients. ``guidance``: one w, or a (B,) tensor of one w
    per row (distillation draws w per row).
    """
    cond = cond or {}
    if not torch.is_tensor(guidance) and guidance == 0.0:
        return model(x_t, t, **cond)
    if drop_key is None:
        raise ValueError("guidance needs drop_key, the model's per-row drop flag")
    if torch.is_tensor(guidance):
        guidance = guidance.view(-1, *([1] * (x_t.ndim - 1)))
    batch = x_t.shape[0]
    both = {key: _both_halves(value, batch) for key, value in cond.items()}
    drop = torch.cat((torch.zeros(batch, dtype=torch.bool), torch.ones(batch, dtype=torch.bool)))
    both[drop_key] = drop.to(x_t.device)
    conditional, unconditional = model(torch.cat((x_t, x_t)), torch.cat((t, t)), **both).chunk(2)
    return (1.0 + guidance) * conditional - guidance * unconditional


@torch.no_grad()
def sample_single_step(
    schedule: NoiseSchedule,
    model: DenoisingModel,
    t: int,
    shape: tuple[int, ...],
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    cond: Mapping[str, torch.Tensor] | None = None,
    guidance: float = 0.0,
    drop_key: str | None = None,
) -> torch.Tensor:
    """Gong et al.'s direct reconstruction: x_t ~ N(0, I), one forward at a noise-biased t,
    x̂0 read from it (for ε: (x_t − σ_t·ε̂)/α_t). Returns x̂0 of ``shape``."""
    if not 0 <= t < schedule.num_timesteps:
        raise ValueError(f"single-step t must be in [0, {schedule.num_timesteps}), got {t}")
    x_t = torch.randn(shape, generator=generator).to(device)
    timesteps = torch.full((shape[0],), t, dtype=torch.long, device=x_t.device)
    output = guided_prediction(model, x_t, timesteps, cond, guidance, drop_key)
    return schedule.predict_x0(output, x_t, timesteps)


def ddim_scheduler(schedule: NoiseSchedule, steps: int) -> DDIMScheduler:
    """DDIM on the training schedule with ``steps`` steps.

    "trailing" spacing starts at t = T − 1 (pure noise), so even 1-2 steps are valid
    ("leading" would start at a nearly clean t); set_alpha_to_one makes the last step
    return the clean prediction.
    """
    scheduler = DDIMScheduler(
        num_train_timesteps=schedule.num_timesteps,
        beta_schedule=schedule.beta_schedule,
        prediction_type=schedule.prediction,
        clip_sample=False,
        set_alpha_to_one=True,
        timestep_spacing="trailing",
    )
    scheduler.set_timesteps(steps)
    return scheduler


@torch.no_grad()
def sample_ddim(
    schedule: NoiseSchedule,
    model: DenoisingModel,
    steps: int,
    shape: tuple[int, ...],
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    cond: Mapping[str, torch.Tensor] | None = None,
    guidance: float = 0.0,
    drop_key: str | None = None,
) -> torch.Tensor:
    """Deterministic DDIM (η = 0) from x_T ~ N(0, I): one batched forward per step.
    Returns x̂0 of ``shape``."""
    if steps < 1:
        raise ValueError(f"DDIM needs at least one step, got {steps}")
    scheduler = ddim_scheduler(schedule, steps)
    x_t = torch.randn(shape, generator=generator).to(device) * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        timesteps = torch.full((shape[0],), int(t), dtype=torch.long, device=x_t.device)
        output = guided_prediction(model, x_t, timesteps, cond, guidance, drop_key)
        x_t = scheduler.step(output, int(t), x_t, eta=0.0).prev_sample
    return x_t
