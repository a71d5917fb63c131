"""The generator's diffusion adapter: the block denoiser's conditions through the core,
`GenerateConfig` sampling pinned to the outputs before the core was split out, a real fit."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from wgen.config import DenoiserConfig, GenerateConfig
from wgen.core.runtime import torch_threads
from wgen.diffusion import guided_prediction
from wgen.generator.diffusion import NULL_TEXT_KEY, WeightDiffusion, block_cond
from wgen.models.denoiser import build_denoiser

B_SIZE = 16  # b
TEXT_DIM = 8


class Oracle(nn.Module):
    """Knows the clean blocks w_n and answers exactly what the prediction type asks for."""

    def __init__(self, diffusion: WeightDiffusion, x0: torch.Tensor) -> None:
        super().__init__()
        self.schedule, self.x0, self.calls = diffusion.schedule, x0, 0

    def forward(self, x, t, n, text, extra_cond=None, drop_text=None):  # noqa: ANN001
        self.calls += 1
        x0 = self.x0[n]
        alpha, sigma = self.schedule.alpha_sigma(t, x)
        noise = (x - alpha * x0) / sigma  # the ε that turned w_n into w_n^t
        return self.schedule.target(x0, noise, t)


def diffusion_for(prediction: str = "epsilon", timesteps: int = 100) -> WeightDiffusion:
    return WeightDiffusion(DenoiserConfig(prediction=prediction, train_timesteps=timesteps))


def clean_blocks(count: int = 6, seed: int = 0) -> torch.Tensor:
    return torch.randn(count, 1, B_SIZE, generator=torch.Generator().manual_seed(seed))


def test_the_schedule_is_the_denoiser_configs() -> None:
    cfg = DenoiserConfig(
        prediction="v_prediction", train_timesteps=50, beta_schedule="scaled_linear"
    )
    schedule = WeightDiffusion(cfg).schedule
    assert (schedule.prediction, schedule.num_timesteps, schedule.beta_schedule) == (
        "v_prediction", 50, "scaled_linear",
    )  # fmt: skip


def test_block_cond_leaves_out_what_is_not_given() -> None:
    n, text = torch.arange(3), torch.zeros(1, TEXT_DIM)
    assert set(block_cond(n, text)) == {"n", "text"}
    assert set(block_cond(n, text, torch.ones(3), torch.zeros(3))) == {
        "n", "text", "extra_cond", "text_rows",
    }  # fmt: skip


@pytest.mark.parametrize("prediction", ["epsilon", "sample", "v_prediction"])
def test_oracle_training_loss_is_zero(prediction: str) -> None:
    diffusion = diffusion_for(prediction)
    x0 = clean_blocks()
    mask = torch.ones(6, B_SIZE, dtype=torch.bool)  # (B, b) is read as (B, 1, b)
    loss = diffusion.training_loss(
        Oracle(diffusion, x0), x0, mask, torch.arange(6), torch.zeros(6, TEXT_DIM), 0.5,
        torch.Generator().manual_seed(0),
    )  # fmt: skip
    assert loss.item() < 1e-6


def test_guidance_with_a_real_denoiser_and_shared_text() -> None:
    torch.manual_seed(0)
    model = build_denoiser(DenoiserConfig(size="tiny", index_dim=16), TEXT_DIM).eval()
    with torch.no_grad():
        model.null_text.normal_()
    x = torch.randn(5, 1, B_SIZE)
    t, n, text = torch.full((5,), 30), torch.arange(5), torch.randn(1, 4, TEXT_DIM)  # tokens
    with torch.no_grad():
        guided = guided_prediction(model, x, t, block_cond(n, text), 1.5, NULL_TEXT_KEY)
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


N_BLOCKS = 6

# Generated blocks and losses computed with the code before the diffusion core was split
# out of the generator (wgen/generator/diffusion.py at commit b9e861d): values at flat
# positions 0, 7, 23, -1 and the sum. The split reproduced them bit for bit; the tolerance
# only leaves room for other BLAS builds.
PINNED_SAMPLES = {
    # (prediction, text view, w-student, steps, w): (values, sum)
    ("epsilon", "tokens", False, 1, 1.5): ([-2.538729, -2.461612, 2.883988, -2.326586], -75.61282),
    ("sample", "tokens", False, 1, 1.5): ([0.657555, -0.947725, -0.782421, 0.353575], 26.76252),
    ("v_prediction", "tokens", False, 1, 1.5): ([-0.652837, 0.464759, 0.766162, -0.425838], -24.41448),
    ("sample", "tokens", True, 4, 1.5): ([-0.977368, 0.322981, 0.414571, 0.358618], 12.7363),
    ("v_prediction", "tokens", True, 4, 1.5): ([0.490719, 0.196333, -0.075615, -1.267463], 11.12932),
    ("sample", "pooled", False, 4, 1.5): ([1.271569, -1.443276, -0.860816, -0.578606], 20.67084),
}  # fmt: skip
PINNED_LOSSES = {
    # (prediction, text view, text drop, text_rows given): loss
    ("sample", "tokens", 0.3, False): 1.5304512,
    ("v_prediction", "tokens", None, True): 1.7359287,
    ("epsilon", "pooled", 0.3, False): 2.2012517,
}


def pinned_denoiser(prediction: str, view: str, w_student: bool = False):
    """A tiny denoiser whose output layer and w embedding (both start at zero) and null text
    (near zero) are random, so every condition shows in its output."""
    cfg = DenoiserConfig(
        size="tiny", block_size=B_SIZE, index_dim=8, prediction=prediction, text=view,
        block_readout=2, train_timesteps=1000,
    )  # fmt: skip
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_denoiser(cfg, TEXT_DIM, extra_cond=w_student, n_blocks=N_BLOCKS)
        nn.init.normal_(model.conv_out.weight, std=0.3)
        nn.init.normal_(model.conv_out.bias, std=0.3)
        nn.init.normal_(model.null_text, std=1.0)
        if w_student:
            nn.init.normal_(model.extra_mlp.net[-1].weight, std=0.3)
    return WeightDiffusion(cfg), model.eval()


def pinned_texts() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(42)
    tokens = torch.randn(1, 3, TEXT_DIM, generator=generator)
    return {"tokens": tokens, "pooled": torch.randn(1, TEXT_DIM, generator=generator)}


@pytest.mark.parametrize("case", list(PINNED_SAMPLES), ids=str)
def test_sampling_matches_the_outputs_before_the_core_split(case, one_thread: None) -> None:
    prediction, view, w_student, steps, w = case
    diffusion, model = pinned_denoiser(prediction, view, w_student)
    gen = GenerateConfig(steps=steps, single_step_t=500, guidance=w, seed=3)
    with torch.no_grad():
        out = diffusion.sample(
            model, torch.arange(N_BLOCKS), pinned_texts()[view], B_SIZE, gen, w_student
        ).flatten()
    values, total = PINNED_SAMPLES[case]
    torch.testing.assert_close(out[[0, 7, 23, -1]], torch.tensor(values), rtol=1e-5, atol=1e-5)
    assert out.sum().item() == pytest.approx(total, rel=1e-5, abs=1e-4)


@pytest.mark.parametrize("case", list(PINNED_LOSSES), ids=str)
def test_training_loss_matches_the_loss_before_the_core_split(case, one_thread: None) -> None:
    prediction, view, drop, by_rows = case
    diffusion, model = pinned_denoiser(prediction, view)
    x0 = torch.randn(12, 1, B_SIZE, generator=torch.Generator().manual_seed(5))
    mask = torch.ones_like(x0, dtype=torch.bool)
    mask[:, :, -3:] = False
    n, rows = torch.arange(12) % N_BLOCKS, torch.arange(12) % 2
    shape = (2, 3, TEXT_DIM) if view == "tokens" else (2, TEXT_DIM)
    texts = torch.randn(shape, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        if by_rows:
            generator = torch.Generator().manual_seed(8)
            loss = diffusion.training_loss(
                model, x0, mask, n, texts, generator=generator, text_rows=rows
            )
        else:
            generator = torch.Generator().manual_seed(7)
            loss = diffusion.training_loss(model, x0, mask, n, texts[rows], drop, generator)
    assert loss.item() == pytest.approx(PINNED_LOSSES[case], rel=1e-5)


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
