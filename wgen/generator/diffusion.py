"""The diffusion core (`wgen.diffusion`) as the weight generator drives it.

The core owns the schedule, the loss and the samplers on plain tensors; this adapter knows
what the generator's denoiser ε̂θ(w_n^t, t, n, τ(T)) (`wgen.models.denoiser`) is conditioned
on, as the keywords of its forward:

- ``n``: (B,) block indices; ``text``: τ(T), one row shared by all N blocks of a concept or
  one row per block; ``text_rows``: which row of ``text`` each block reads;
- ``extra_cond``: (B,) w, the input of a w-conditioned (distilled) student;
- ``drop_text``: (B,) bool, the null text instead of τ(T): classifier-free guidance's drop
  flag (`NULL_TEXT_KEY`).

`WeightDiffusion` builds the core's schedule from `DenoiserConfig`, trains with its
``cond_drop`` and samples all N blocks of one concept as `GenerateConfig` asks: the paper's
single direct-reconstruction step from a noise-biased t, or a few DDIM steps, ONE batched
forward per step (two halves of one batch with guidance).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch

from wgen.config import DenoiserConfig, GenerateConfig
from wgen.diffusion import (
    DenoisingModel,
    NoiseSchedule,
    guided_prediction,
    sample_ddim,
    sample_single_step,
)

__all__ = ["NULL_TEXT_KEY", "WeightDiffusion", "block_cond", "denoiser_schedule", "guided_output"]

NULL_TEXT_KEY = "drop_text"  # the denoiser's per-row flag: the null text replaces τ(T)


def denoiser_schedule(cfg: DenoiserConfig) -> NoiseSchedule:
    """The core's schedule of the denoiser's config (prediction type, T, beta schedule)."""
    return NoiseSchedule(cfg.prediction, cfg.train_timesteps, cfg.beta_schedule)


def block_cond(
    n: torch.Tensor,
    text: torch.Tensor,
    w: torch.Tensor | None = None,
    text_rows: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """The denoiser's keyword conditions; those not given are left out (its defaults)."""
    cond = {"n": n, "text": text}
    if w is not None:
        cond["extra_cond"] = w
    if text_rows is not None:
        cond["text_rows"] = text_rows
    return cond


def guided_output(
    model: DenoisingModel,
    n: torch.Tensor,
    text: torch.Tensor,
    w: torch.Tensor,
    guidance_input: bool,
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """(x_t, t) → the denoiser's raw output at guidance w (B,) per row, with the batch's
    conditions bound: a w-student (``guidance_input``) takes w as its input, one pass; any
    other runs guided, its conditional and null halves in one forward."""
    if guidance_input:
        return partial(model, **block_cond(n, text, w))
    cond = block_cond(n, text)
    return partial(guided_prediction, model, cond=cond, guidance=w, drop_key=NULL_TEXT_KEY)


class WeightDiffusion:
    """The core's schedule built from `DenoiserConfig`; the block-conditioned loss and
    sampling of the generator's training loop and `WeightGenerator`."""

    def __init__(self, cfg: DenoiserConfig) -> None:
        self.cfg = cfg
        self.schedule = denoiser_schedule(cfg)

    def predict_x0(self, output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """ŵ_n from the denoiser's output (`NoiseSchedule.predict_x0`)."""
        return self.schedule.predict_x0(output, x_t, t)

    def training_loss(
        self,
        model: DenoisingModel,
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
            n: (B,) block indices; text: τ(T) of each block's concept.
            cond_drop_prob: chance of replacing a block's text by the null embedding
                (guidance training); None = `cfg.cond_drop`.
            generator: seeds t, ε and the text drop, for reproducible steps.
            text_rows: (B,) which row of ``text`` each block reads (see the denoiser).
        """
        drop = self.cfg.cond_drop if cond_drop_prob is None else cond_drop_prob
        cond = block_cond(n, text, extra_cond, text_rows)
        return self.schedule.training_loss(model, x0, mask, generator, cond, drop, NULL_TEXT_KEY)

    def sample(
        self,
        model: DenoisingModel,
        n: torch.Tensor,
        text: torch.Tensor,
        block_size: int,
        gen: GenerateConfig,
        guidance_input: bool = False,
    ) -> torch.Tensor:
        """All N blocks of one concept as `GenerateConfig` asks: steps = 1 → the paper's single
        step at `single_step_t`; steps > 1 → DDIM. Returns (N, 1, b) normalised blocks.

        ``guidance_input``: the model is a w-conditioned student (`wgen.distill`), which
        takes w = ``gen.guidance`` as its input and is run once per step, without the
        null-text pass."""
        shape = (n.shape[0], 1, block_size)
        cond, w = block_cond(n, text), gen.guidance
        if guidance_input:  # w is the student's input: one conditional pass
            cond, w = block_cond(n, text, torch.full((n.shape[0],), w, device=n.device)), 0.0
        args = {
            "generator": torch.Generator().manual_seed(gen.seed),
            "device": n.device,
            "cond": cond,
            "guidance": w,
            "drop_key": NULL_TEXT_KEY,
        }
        if gen.steps == 1:
            return sample_single_step(self.schedule, model, gen.single_step_t, shape, **args)
        return sample_ddim(self.schedule, model, gen.steps, shape, **args)
