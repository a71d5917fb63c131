"""The diffusion process over weight blocks: noise, training loss and samplers.

The denoiser (`wgen.models.denoiser`) knows nothing of schedules; this module owns them
(diffusers' `DDPMScheduler` for training noise, `DDIMScheduler` for sampling), and the
training loop owns optimisation.

Forward process on a block: w_n^t = α_t·w_n + σ_t·ε, ε ~ N(0, I), with α_t = sqrt(ᾱ_t)
and σ_t = sqrt(1 − ᾱ_t). The model's output is read according to
`DenoiserConfig.prediction`:

- "epsilon" (the paper): ε̂, loss E‖ε − ε̂θ(w_n^t, t, n, τ(T))‖²;
- "sample": ŵ_n directly;
- "v_prediction": v̂ with v = α_t·ε − σ_t·w_n.

Samplers draw noise for all N blocks of one concept and run ONE batched forward per
step (two halves of one batch with guidance): the paper's single direct-reconstruction
step, ŵ_n = (w_n^t − σ_t·ε̂)/α_t from a noise-biased t, or a few DDIM steps.
"""

from __future__ import annotations

from typing import Protocol

import torch
from diffusers import DDIMScheduler, DDPMScheduler

from wgen.config import DenoiserConfig, GenerateConfig

__all__ = [
    "PREDICTION_TYPES",
    "BlockDenoiser",
    "WeightDiffusion",
    "guided_prediction",
    "masked_mse",
]

PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")


class BlockDenoiser(Protocol):
    """What the diffusion module needs of a model: `wgen.models.denoiser.Denoiser.forward`."""

    def __call__(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        n: torch.Tensor,
        text: torch.Tensor,
        extra_cond: torch.Tensor | None = None,
        drop_text: torch.Tensor | None = None,
    ) -> torch.Tensor: ...


def masked_mse(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the real values only: padding carries no weights to learn."""
    weight = mask.to(prediction.dtype).expand_as(prediction)
    return ((prediction - target) ** 2 * weight).sum() / weight.sum().clamp_min(1.0)


def guided_prediction(
    model: BlockDenoiser,
    x_t: torch.Tensor,
    t: torch.Tensor,
    n: torch.Tensor,
    text: torch.Tensor,
    guidance: float | torch.Tensor = 0.0,
    extra_cond: torch.Tensor | None = None,
) -> torch.Tensor:
    """The model's output with classifier-free guidance: x̂^w = (1 + w)·x̂_c − w·x̂_∅.

    The one place guidance happens, used by every sampler and by distillation's teacher.
    With w = 0 this is a single conditional forward. Otherwise conditional and null-text
    halves run as ONE batched forward. Combining raw outputs (ε, x0 or v) is the same as
    combining x̂: at fixed w^t and t each is an affine function of the other with the same
    coefficients. ``guidance``: one w, or a (B, 1, 1) tensor of one w per row (distillation).
    """
    if not torch.is_tensor(guidance) and guidance == 0.0:
        return model(x_t, t, n, text, extra_cond=extra_cond)
    batch = x_t.shape[0]
    drop = torch.cat((torch.zeros(batch, dtype=torch.bool), torch.ones(batch, dtype=torch.bool)))
    both = model(
        torch.cat((x_t, x_t)),
        torch.cat((t, t)),
        torch.cat((n, n)),
        text if text.shape[0] == 1 else torch.cat((text, text)),  # batch 1 is shared
        extra_cond=None if extra_cond is None else torch.cat((extra_cond, extra_cond)),
        drop_text=drop.to(x_t.device),
    )
    conditional, unconditional = both.chunk(2)
    return (1.0 + guidance) * conditional - guidance * unconditional


class WeightDiffusion:
    """DDPM noise and loss for training, single-step and DDIM sampling for generation."""

    def __init__(self, cfg: DenoiserConfig) -> None:
        if cfg.prediction not in PREDICTION_TYPES:
            raise ValueError(
                f"unknown prediction type {cfg.prediction!r}; valid: {list(PREDICTION_TYPES)}"
            )
        self.cfg = cfg
        # clip_sample=False: normalised weights are not images in [-1, 1].
        self.train_scheduler = DDPMScheduler(
            num_train_timesteps=cfg.train_timesteps,
            beta_schedule=cfg.beta_schedule,
            prediction_type=cfg.prediction,
            clip_sample=False,
        )
        self.alphas_cumprod = self.train_scheduler.alphas_cumprod.to(torch.float32)  # ᾱ_t

    @property
    def num_timesteps(self) -> int:
        """T, the number of training timesteps."""
        return self.cfg.train_timesteps

    def alpha_sigma(self, t: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """α_t = sqrt(ᾱ_t) and σ_t = sqrt(1 − ᾱ_t), shaped (B, 1, 1) to broadcast over blocks."""
        alpha_bar = self.alphas_cumprod.to(like.device)[t.to(like.device)].to(like.dtype)
        shape = (-1,) + (1,) * (like.ndim - 1)
        return alpha_bar.sqrt().view(shape), (1.0 - alpha_bar).sqrt().view(shape)

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the model learns to output at t: ε, w_n, or v = α_t·ε − σ_t·w_n."""
        if self.cfg.prediction == "epsilon":
            return noise
        if self.cfg.prediction == "sample":
            return x0
        alpha, sigma = self.alpha_sigma(t, x0)
        return alpha * noise - sigma * x0

    def predict_x0(self, output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """ŵ_n from the model's output: (w^t − σ_t·ε̂)/α_t, the output itself, or α_t·w^t − σ_t·v̂."""
        alpha, sigma = self.alpha_sigma(t, x_t)
        if self.cfg.prediction == "epsilon":
            return (x_t - sigma * output) / alpha
        if self.cfg.prediction == "sample":
            return output
        return alpha * x_t - sigma * output

    def training_loss(
        self,
        model: BlockDenoiser,
        x0: torch.Tensor,
        mask: torch.Tensor,
        n: torch.Tensor,
        text: torch.Tensor,
        cond_drop_prob: float | None = None,
        generator: torch.Generator | None = None,
        extra_cond: torch.Tensor | None = None,
        text_rows: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """E_{n,t,ε} ‖target − model(w_n^t, t, n, τ(T))‖² over the real values of the blocks.

        Args:
            x0: (B, 1, b) normalised clean blocks w_n.
            mask: (B, 1, b) or (B, b) bool, True on real values.
            n: (B,) block indices; text: (B, text_dim) τ(T) of each block's concept.
            cond_drop_prob: chance of replacing a block's text by the null embedding
                (guidance training); None = `cfg.cond_drop`.
            generator: seeds t, ε and the text drop, for reproducible steps.
            text_rows: (B,) which row of ``text`` each block reads (see the denoiser).
        """
        batch = x0.shape[0]
        drop_p = self.cfg.cond_drop if cond_drop_prob is None else cond_drop_prob
        device = x0.device
        t = torch.randint(0, self.num_timesteps, (batch,), generator=generator).to(device)
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(device)
        alpha, sigma = self.alpha_sigma(t, x0)
        x_t = alpha * x0 + sigma * noise  # w_n^t = α_t·w_n + σ_t·ε
        drop = None
        if drop_p > 0.0:
            drop = (torch.rand(batch, generator=generator) < drop_p).to(device)
        rows = {} if text_rows is None else {"text_rows": text_rows}  # protocol stays minimal
        output = model(x_t, t, n, text, extra_cond=extra_cond, drop_text=drop, **rows)
        return masked_mse(output, self.target(x0, noise, t), mask.reshape(output.shape))

    def _initial_noise(
        self, n: torch.Tensor, shape: tuple[int, ...], generator: torch.Generator | None
    ) -> torch.Tensor:
        """w^T ~ N(0, I) for all N blocks of one concept at once."""
        if shape[0] != n.shape[0]:
            raise ValueError(f"shape {shape} must have one row per block index ({n.shape[0]})")
        return torch.randn(shape, generator=generator).to(n.device)

    @torch.no_grad()
    def sample_single_step(
        self,
        model: BlockDenoiser,
        n: torch.Tensor,
        text: torch.Tensor,
        t: int,
        shape: tuple[int, ...],
        generator: torch.Generator | None = None,
        guidance: float = 0.0,
        extra_cond: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Gong et al.'s direct reconstruction: w^t ~ N(0, I), one forward at a noise-biased
        t, ŵ_n = (w^t − σ_t·ε̂)/α_t for all blocks at once. Returns (N, 1, b) normalised ŵ.
        `extra_cond` (N,) feeds a w-conditioned (distilled) student."""
        if not 0 <= t < self.num_timesteps:
            raise ValueError(f"single-step t must be in [0, {self.num_timesteps}), got {t}")
        x_t = self._initial_noise(n, shape, generator)
        timesteps = torch.full((shape[0],), t, dtype=torch.long, device=x_t.device)
        output = guided_prediction(model, x_t, timesteps, n, text, guidance, extra_cond)
        return self.predict_x0(output, x_t, timesteps)

    def ddim_scheduler(self, steps: int) -> DDIMScheduler:
        """DDIM on the training schedule with `steps` steps.

        "trailing" spacing starts at t = T − 1 (pure noise), so even 1-2 steps are valid
        ("leading" would start at a nearly clean t); set_alpha_to_one makes the last step
        return the clean prediction.
        """
        scheduler = DDIMScheduler(
            num_train_timesteps=self.cfg.train_timesteps,
            beta_schedule=self.cfg.beta_schedule,
            prediction_type=self.cfg.prediction,
            clip_sample=False,
            set_alpha_to_one=True,
            timestep_spacing="trailing",
        )
        scheduler.set_timesteps(steps)
        return scheduler

    @torch.no_grad()
    def sample_ddim(
        self,
        model: BlockDenoiser,
        n: torch.Tensor,
        text: torch.Tensor,
        steps: int,
        shape: tuple[int, ...],
        generator: torch.Generator | None = None,
        guidance: float = 0.0,
        extra_cond: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Deterministic DDIM (η = 0) from w^T ~ N(0, I): one batched forward per step."""
        if steps < 1:
            raise ValueError(f"DDIM needs at least one step, got {steps}")
        scheduler = self.ddim_scheduler(steps)
        x_t = self._initial_noise(n, shape, generator) * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            timesteps = torch.full((shape[0],), int(t), dtype=torch.long, device=x_t.device)
            output = guided_prediction(model, x_t, timesteps, n, text, guidance, extra_cond)
            x_t = scheduler.step(output, int(t), x_t, eta=0.0).prev_sample
        return x_t

    def sample(
        self,
        model: BlockDenoiser,
        n: torch.Tensor,
        text: torch.Tensor,
        block_size: int,
        gen: GenerateConfig,
        guidance_input: bool = False,
    ) -> torch.Tensor:
        """All N blocks of one concept as `GenerateConfig` asks: steps = 1 → the paper's single
        step at `single_step_t`; steps > 1 → DDIM. Returns (N, 1, b) normalised blocks.

        ``guidance_input``: the model is a w-conditioned student (`wgen.distill`), which
        takes w = ``gen.guidance`` as its extra condition and is run once per step, without
        the null-text pass."""
        generator = torch.Generator().manual_seed(gen.seed)
        shape = (n.shape[0], 1, block_size)
        guidance, extra = gen.guidance, None
        if guidance_input:
            guidance, extra = 0.0, torch.full((n.shape[0],), gen.guidance, device=n.device)
        if gen.steps == 1:
            return self.sample_single_step(
                model, n, text, gen.single_step_t, shape, generator, guidance, extra
            )
        return self.sample_ddim(model, n, text, gen.steps, shape, generator, guidance, extra)
