"""pix2pix losses and paired metrics on hand-computable inputs."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from wgen.gan.losses import discriminator_loss, generator_loss


class ConstantCritic(nn.Module):
    """A discriminator with fixed patch logits: +l for a pair whose image is one of the real
    targets, −l otherwise, so the expected BCE values are known in closed form."""

    def __init__(self, targets: torch.Tensor, logit: float) -> None:
        super().__init__()
        self.targets, self.logit = targets, logit

    def forward(self, source: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        is_real = [any(torch.equal(i, t) for t in self.targets) for i in image.detach()]
        signs = torch.tensor(is_real, dtype=torch.float32) * 2 - 1
        return (signs * self.logit).view(-1, 1, 1, 1).expand(-1, 1, 4, 4)


def _pair(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    source = torch.rand(2, 3, 8, 8, generator=g) * 2 - 1
    target = torch.rand(2, 3, 8, 8, generator=g) * 2 - 1
    fake = (torch.rand(2, 3, 8, 8, generator=g) * 2 - 1).requires_grad_()
    return source, target, fake


@pytest.mark.parametrize("logit", [0.0, 2.0, -1.0])
def test_discriminator_loss_matches_bce(logit):
    source, target, fake = _pair()
    loss, parts = discriminator_loss(ConstantCritic(target, logit), source, target, fake)
    # real pairs see +logit (label 1), fake pairs −logit (label 0): both cost softplus(−logit)
    expected = math.log1p(math.exp(-logit))
    assert parts["d_real"] == pytest.approx(expected, rel=1e-5)
    assert parts["d_fake"] == pytest.approx(expected, rel=1e-5)
    assert loss.item() == pytest.approx(expected, rel=1e-5)  # 0.5 · (real + fake)


def test_discriminator_loss_sends_no_gradient_to_generator():
    source, target, fake = _pair()
    disc = nn.Conv2d(6, 1, 3, padding=1)
    loss, _ = discriminator_loss(lambda s, i: disc(torch.cat([s, i], 1)), source, target, fake)
    loss.backward()
    assert fake.grad is None
    assert disc.weight.grad is not None


@pytest.mark.parametrize("lambda_l1", [0.0, 1.0, 100.0])
def test_generator_loss_is_adversarial_plus_lambda_l1(lambda_l1):
    source, target, fake = _pair()
    loss, parts = generator_loss(ConstantCritic(target, 0.0), source, target, fake, lambda_l1)
    assert parts["g_adv"] == pytest.approx(math.log(2), rel=1e-5)
    assert parts["g_l1"] == pytest.approx((fake - target).abs().mean().item(), rel=1e-6)
    assert loss.item() == pytest.approx(parts["g_adv"] + lambda_l1 * parts["g_l1"], rel=1e-5)
    assert parts["g_loss"] == pytest.approx(loss.item())


def test_generator_loss_reaches_the_generator_output():
    source, target, fake = _pair()
    disc = nn.Conv2d(6, 1, 3, padding=1)
    loss, _ = generator_loss(lambda s, i: disc(torch.cat([s, i], 1)), source, target, fake, 10.0)
    loss.backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0
