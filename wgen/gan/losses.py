"""The pix2pix losses, as pure functions on tensors (the paired quality metrics, L1 and PSNR
on uint8 images, are `wgen.gan.metrics`).

pix2pix (Isola et al., 2017) with the vanilla (BCE-with-logits) adversarial loss: the
discriminator D judges (source, image) pairs patch by patch; the generator G minimises
adversarial + λ·L1. Gong et al. fine-tune their LoRA with exactly this objective:
L_cGAN(G, D) + λ·L1(G(x), x̃^T). Images are float NCHW in [-1, 1].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _bce(logits: torch.Tensor, real: bool) -> torch.Tensor:
    """BCE-with-logits of every patch logit against an all-real or all-fake label."""
    labels = torch.ones_like(logits) if real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits, labels)


def discriminator_loss(
    discriminator: nn.Module, source: torch.Tensor, target: torch.Tensor, fake: torch.Tensor
) -> tuple[torch.Tensor, dict[str, float]]:
    """D's loss: real pairs → 1, generated pairs → 0, halved as in pix2pix (it slows D down).

    ``fake`` is detached here, so this step never sends gradients into the generator. Real
    and fake pairs go through D as one batch (one pass instead of two; D's GroupNorm is
    per sample, so the two halves do not interact). Returns the loss to back-propagate and
    its parts as floats for logging.
    """
    logits = discriminator(torch.cat([source, source]), torch.cat([target, fake.detach()]))
    logits_real, logits_fake = logits.chunk(2)
    loss_real = _bce(logits_real, real=True)
    loss_fake = _bce(logits_fake, real=False)
    loss = 0.5 * (loss_real + loss_fake)
    return loss, {"d_real": loss_real.item(), "d_fake": loss_fake.item(), "d_loss": loss.item()}


def generator_loss(
    discriminator: nn.Module,
    source: torch.Tensor,
    target: torch.Tensor,
    fake: torch.Tensor,
    lambda_l1: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """G's loss: fool D on (source, fake), plus λ·L1 to the edited target (λ = GANConfig.lambda_l1).

    Returns the loss to back-propagate and its parts (adversarial, L1, total) for logging.
    """
    adversarial = _bce(discriminator(source, fake), real=True)
    l1 = F.l1_loss(fake, target)
    loss = adversarial + lambda_l1 * l1
    return loss, {"g_adv": adversarial.item(), "g_l1": l1.item(), "g_loss": loss.item()}
