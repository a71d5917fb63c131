"""The forward process of a DDPM and its training loss, on plain tensors.

Forward process: x_t = α_t·x0 + σ_t·ε, ε ~ N(0, I), with α_t = sqrt(ᾱ_t), σ_t = sqrt(1 − ᾱ_t)
and ᾱ_t from diffusers' `DDPMScheduler` (the beta schedule by name). The model's output is
read according to the prediction type:

- "epsilon": ε̂ (Ho et al. 2020), loss E‖ε − ε̂θ(x_t, t)‖²;
- "sample": x̂0 directly;
- "v_prediction": v̂ with v = α_t·ε − σ_t·x0 (Salimans & Ho 2022).

The model is any callable ``model(x_t, t, **cond)``: ``cond`` is forwarded as it is.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import torch
from diffusers import DDPMScheduler

__all__ = ["PREDICTION_TYPES", "DenoisingModel", "NoiseSchedule", "masked_mse"]

PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")


class DenoisingModel(Protocol):
    """What the core needs of a network: x_t (B, ...) and t (B,) → an output of x_t's shape,
    read as ε, x0 or v; ``cond`` are keyword tensors only the model understands."""

    def __call__(
        self, x_t: torch.Tensor, t: torch.Tensor, **cond: torch.Tensor
    ) -> torch.Tensor: ...


def masked_mse(
    prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean squared error over the real values only (``mask`` True; None: every value is
    real): padding carries nothing to learn."""
    squared = (prediction - target) ** 2
    if mask is None:
        return squared.sum() / squared.numel()
    weight = mask.to(prediction.dtype).expand_as(prediction)
    return (squared * weight).sum() / weight.sum().clamp_min(1.0)


class NoiseSchedule:
    """A DDPM's schedule over T training timesteps and the reading of the model's output.

    Args:
        prediction: what the model outputs, one of `PREDICTION_TYPES`.
        train_timesteps: T; t runs over 0, ..., T − 1.
        beta_schedule: a diffusers beta schedule name ("linear", "scaled_linear",
            "squaredcos_cap_v2").
    """

    def __init__(
        self,
        prediction: str = "epsilon",
        train_timesteps: int = 1000,
        beta_schedule: str = "linear",
    ) -> None:
        if prediction not in PREDICTION_TYPES:
            raise ValueError(
                f"unknown prediction type {prediction!r}; valid: {list(PREDICTION_TYPES)}"
            )
        self.prediction = prediction
        self.num_timesteps = train_timesteps
        self.beta_schedule = beta_schedule
        # clip_sample=False: normalised weights and latents are not images in [-1, 1].
        ddpm = DDPMScheduler(
            num_train_timesteps=train_timesteps,
            beta_schedule=beta_schedule,
            prediction_type=prediction,
            clip_sample=False,
        )
        self.alphas_cumprod = ddpm.alphas_cumprod.to(torch.float32)  # ᾱ_t

    def alpha_sigma(self, t: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """α_t = sqrt(ᾱ_t) and σ_t = sqrt(1 − ᾱ_t), shaped (B, 1, ...) to broadcast over ``like``."""
        alpha_bar = self.alphas_cumprod.to(like.device)[t.to(like.device)].to(like.dtype)
        shape = (-1,) + (1,) * (like.ndim - 1)
        return alpha_bar.sqrt().view(shape), (1.0 - alpha_bar).sqrt().view(shape)

    def q_sample(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t = α_t·x0 + σ_t·ε."""
        alpha, sigma = self.alpha_sigma(t, x0)
        return alpha * x0 + sigma * noise

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the model learns to output at t: ε, x0, or v = α_t·ε − σ_t·x0."""
        if self.prediction == "epsilon":
            return noise
        if self.prediction == "sample":
            return x0
        alpha, sigma = self.alpha_sigma(t, x0)
        return alpha * noise - sigma * x0

    def predict_x0(self, output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x̂0 from the model's output: (x_t − σ_t·ε̂)/α_t, the output itself, or α_t·x_t − σ_t·v̂."""
        alpha, sigma = self.alpha_sigma(t, x_t)
        if self.prediction == "epsilon":
            return (x_t - sigma * output) / alpha
        if self.prediction == "sample":
            return output
        return alpha * x_t - sigma * output

    def training_loss(
        self,
        model: DenoisingModel,
        x0: torch.Tensor,
        mask: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        cond: Mapping[str, torch.Tensor] | None = None,
        cond_drop: float = 0.0,
        drop_key: str | None = None,
    ) -> torch.Tensor:
        """E_{t,ε} ‖target − model(x_t, t, **cond)‖² over the real values of x0.

        Args:
            x0: (B, ...) clean data.
            mask: True on real values, x0's shape up to a reshape; None: all real.
            generator: seeds t ~ U{0, T − 1}, ε and the condition drop, in that order.
            cond: keyword tensors forwarded to the model.
            cond_drop: classifier-free guidance training: the chance that a row's condition
                is dropped, passed to the model as the (B,) bool keyword ``drop_key`` (only
                when > 0, so a model without the keyword trains unconditionally).
        """
        if cond_drop > 0.0 and drop_key is None:
            raise ValueError("a condition drop needs drop_key, the model's per-row drop flag")
        batch, device = x0.shape[0], x0.device
        t = torch.randint(0, self.num_timesteps, (batch,), generator=generator).to(device)
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(device)
        x_t = self.q_sample(x0, noise, t)
        cond = dict(cond or {})
        if cond_drop > 0.0:
            cond[drop_key] = (torch.rand(batch, generator=generator) < cond_drop).to(device)
        output = model(x_t, t, **cond)
        target = self.target(x0, noise, t)
        return masked_mse(output, target, None if mask is None else mask.reshape(output.shape))
