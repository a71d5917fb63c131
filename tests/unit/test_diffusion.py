"""Diffusion over weight blocks: targets, loss, oracle samplers, guidance, a real fit."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from wgen.config import DenoiserConfig, GenerateConfig
from wgen.core.runtime import torch_threads
from wgen.generator.diffusion import (
    PREDICTION_TYPES,
    WeightDiffusion,
    guided_prediction,
    masked_mse,
)
from wgen.models.denoiser import build_denoiser

B_SIZE = 16  # b
TEXT_DIM = 8


class Oracle(nn.Module):
    """Knows the clean blocks w_n and answers exactly what the prediction type asks for."""

    def __init__(self, diffusion: WeightDiffusion, x0: torch.Tensor) -> None:
        super().__init__()
        self.diffusion, self.x0, self.calls = diffusion, x0, 0

    def forward(self, x, t, n, text, extra_cond=None, drop_text=None):  # noqa: ANN001
        self.calls += 1
        x0 = self.x0[n]
        alpha, sigma = self.diffusion.alpha_sigma(t, x)
        noise = (x - alpha * x0) / sigma  # the ε that turned w_n into w_n^t
        return self.diffusion.target(x0, noise, t)


def diffusion_for(prediction: str = "epsilon", timesteps: int = 100) -> WeightDiffusion:
    return WeightDiffusion(DenoiserConfig(prediction=prediction, train_timesteps=timesteps))


def clean_blocks(count: int = 6, seed: int = 0) -> torch.Tensor:
    return torch.randn(count, 1, B_SIZE, generator=torch.Generator().manual_seed(seed))


def test_unknown_prediction_type_is_rejected() -> None:
    with pytest.raises(ValueError, match="epsilon"):
        diffusion_for("score")


@pytest.mark.parametrize("prediction", PREDICTION_TYPES)
def test_target_and_predict_x0_are_consistent(prediction: str) -> None:
    diffusion = diffusion_for(prediction)
    x0, noise = clean_blocks(), clean_blocks(seed=1)
    t = torch.tensor([0, 10, 40, 70, 99, 55])
    alpha, sigma = diffusion.alpha_sigma(t, x0)
    x_t = alpha * x0 + sigma * noise
    recovered = diffusion.predict_x0(diffusion.target(x0, noise, t), x_t, t)
    torch.testing.assert_close(recovered, x0, atol=1e-4, rtol=1e-4)


def test_alpha_sigma_follow_the_ddpm_schedule() -> None:
    diffusion = diffusion_for()
    t = torch.tensor([0, 50, 99])
    alpha, sigma = diffusion.alpha_sigma(t, clean_blocks(3))
    alpha_bar = diffusion.train_scheduler.alphas_cumprod[t]
    torch.testing.assert_close(alpha.flatten(), alpha_bar.sqrt())
    torch.testing.assert_close(alpha**2 + sigma**2, torch.ones_like(alpha))


def test_masked_mse_ignores_padding() -> None:
    prediction, target = torch.zeros(2, 1, 4), torch.ones(2, 1, 4)
    target[:, :, 2:] = 100.0
    mask = torch.tensor([[True, True, False, False]] * 2)
    assert masked_mse(prediction, target, mask.view(2, 1, 4)).item() == pytest.approx(1.0)


@pytest.mark.parametrize("prediction", PREDICTION_TYPES)
def test_oracle_training_loss_is_zero(prediction: str) -> None:
    diffusion = diffusion_for(prediction)
    x0 = clean_blocks()
    oracle = Oracle(diffusion, x0)
    mask = torch.ones(6, 1, B_SIZE, dtype=torch.bool)
    loss = diffusion.training_loss(
        oracle, x0, mask, torch.arange(6), torch.zeros(6, TEXT_DIM), 0.0,
        torch.Generator().manual_seed(0),
    )  # fmt: skip
    assert loss.item() < 1e-6


@pytest.mark.parametrize("prediction", PREDICTION_TYPES)
def test_single_step_with_oracle_recovers_x0(prediction: str) -> None:
    diffusion = diffusion_for(prediction)
    x0 = clean_blocks()
    oracle = Oracle(diffusion, x0)
    out = diffusion.sample_single_step(
        oracle, torch.arange(6), torch.zeros(1, TEXT_DIM), t=50, shape=(6, 1, B_SIZE),
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    assert oracle.calls == 1  # all blocks in ONE forward
    torch.testing.assert_close(out, x0, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("steps", [1, 4])
@pytest.mark.parametrize("prediction", PREDICTION_TYPES)
def test_ddim_with_oracle_recovers_x0(prediction: str, steps: int) -> None:
    diffusion = diffusion_for(prediction)
    x0 = clean_blocks()
    oracle = Oracle(diffusion, x0)
    out = diffusion.sample_ddim(
        oracle, torch.arange(6), torch.zeros(1, TEXT_DIM), steps=steps, shape=(6, 1, B_SIZE),
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    assert oracle.calls == steps and out.shape == x0.shape
    torch.testing.assert_close(out, x0, atol=1e-3, rtol=1e-3)


def test_ddim_starts_from_pure_noise() -> None:
    timesteps = diffusion_for(timesteps=1000).ddim_scheduler(1).timesteps
    assert timesteps.tolist() == [999]


class ConstantByText(nn.Module):
    """Returns 1 for conditional rows and 3 for null-text rows, counting forwards."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x, t, n, text, extra_cond=None, drop_text=None):  # noqa: ANN001
        self.calls += 1
        out = torch.ones_like(x)
        if drop_text is not None:
            out[drop_text] = 3.0
        return out


def test_guidance_combines_conditional_and_null_in_one_forward() -> None:
    model = ConstantByText()
    x = torch.zeros(5, 1, B_SIZE)
    t, n, text = torch.zeros(5, dtype=torch.long), torch.arange(5), torch.zeros(1, TEXT_DIM)
    out = guided_prediction(model, x, t, n, text, guidance=2.0)
    assert model.calls == 1
    torch.testing.assert_close(out, torch.full_like(x, (1 + 2.0) * 1 - 2.0 * 3))
    assert guided_prediction(model, x, t, n, text).eq(1.0).all()  # w = 0: conditional only


def test_guidance_with_a_real_denoiser_and_shared_text() -> None:
    torch.manual_seed(0)
    model = build_denoiser(DenoiserConfig(size="tiny", index_dim=16), TEXT_DIM).eval()
    with torch.no_grad():
        model.null_text.normal_()
    x = torch.randn(5, 1, B_SIZE)
    t, n, text = torch.full((5,), 30), torch.arange(5), torch.randn(1, 4, TEXT_DIM)  # tokens
    with torch.no_grad():
        guided = guided_prediction(model, x, t, n, text, guidance=1.5)
        conditional = model(x, t, n, text)
        null = model(x, t, n, torch.zeros_like(text))  # zeros = the learned null tokens
    torch.testing.assert_close(guided, 2.5 * conditional - 1.5 * null, atol=1e-5, rtol=1e-5)


def test_sample_dispatches_on_steps() -> None:
    diffusion = diffusion_for()
    x0 = clean_blocks()
    for steps in (1, 3):
        oracle = Oracle(diffusion, x0)
        gen = GenerateConfig(steps=steps, single_step_t=60, seed=1)
        out = diffusion.sample(oracle, torch.arange(6), torch.zeros(1, TEXT_DIM), B_SIZE, gen)
        assert oracle.calls == steps
        torch.testing.assert_close(out, x0, atol=1e-3, rtol=1e-3)


@pytest.fixture
def one_thread():
    """Batches of 32 tiny blocks gain nothing from threads, and lose a lot when the
    machine is busy (OpenMP threads wait on each other); restore the count afterwards."""
    with torch_threads(1):
        yield


def test_loss_goes_down_when_fitting_a_tiny_denoiser(one_thread: None) -> None:
    """A real fit: 100 Adam steps on 4 fixed blocks must cut the loss on a fixed draw."""
    torch.manual_seed(0)
    cfg = DenoiserConfig(size="tiny", block_size=B_SIZE, index_dim=16, train_timesteps=100)
    diffusion = WeightDiffusion(cfg)
    model = build_denoiser(cfg, TEXT_DIM)
    x0 = clean_blocks(4, seed=3).repeat(8, 1, 1)  # 32 samples of 4 distinct blocks
    n = torch.arange(4).repeat(8)
    text = torch.randn(4, 3, TEXT_DIM).repeat(8, 1, 1)  # token states of 4 texts
    mask = torch.ones_like(x0, dtype=torch.bool)
    mask[:, :, -3:] = False  # the last values are padding: never fitted, never scored

    def fixed_draw_loss() -> float:
        with torch.no_grad():
            generator = torch.Generator().manual_seed(123)
            return diffusion.training_loss(model, x0, mask, n, text, 0.0, generator).item()

    before = fixed_draw_loss()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    for _ in range(100):
        loss = diffusion.training_loss(model, x0, mask, n, text, 0.1, generator)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    after = fixed_draw_loss()
    print(f"fixed-draw loss {before:.3f} -> {after:.3f}")
    assert after < 0.6 * before, (before, after)
