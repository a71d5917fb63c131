"""The diffusion core on plain tensors: schedule, targets, loss, guidance, samplers; models
are small callables ``model(x_t, t, **cond)`` and no config of wgen is built."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
from torch import nn

import wgen.diffusion
from wgen.diffusion import (
    PREDICTION_TYPES,
    NoiseSchedule,
    ddim_scheduler,
    guided_prediction,
    masked_mse,
    sample_ddim,
    sample_single_step,
)

SHAPE = (6, 2, 5)  # any (B, ...) data: the core knows no blocks


def data(seed: int = 0, shape: tuple[int, ...] = SHAPE) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


class Oracle(nn.Module):
    """Knows the clean rows x0 and answers exactly what the prediction type asks for; row r
    of the batch is clean row ``row[r]`` (a condition the core only forwards)."""

    def __init__(self, schedule: NoiseSchedule, x0: torch.Tensor) -> None:
        super().__init__()
        self.schedule, self.x0, self.calls = schedule, x0, 0

    def forward(self, x_t, t, row):  # noqa: ANN001
        self.calls += 1
        x0 = self.x0[row]
        alpha, sigma = self.schedule.alpha_sigma(t, x_t)
        noise = (x_t - alpha * x0) / sigma  # the ε that turned x0 into x_t
        return self.schedule.target(x0, noise, t)


def test_the_core_imports_nothing_of_wgen() -> None:
    """No config, GAN, denoiser or generator: every user takes the core as it is."""
    imported = set()
    for path in Path(wgen.diffusion.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                imported.add(node.module)
    assert {name for name in imported if name.startswith("wgen")} <= {
        "wgen.diffusion",
        "wgen.diffusion.samplers",
        "wgen.diffusion.schedule",
    }


def test_unknown_prediction_type_is_rejected() -> None:
    with pytest.raises(ValueError, match="epsilon"):
        NoiseSchedule("score")


@pytest.mark.parametrize("prediction", PREDICTION_TYPES)
def test_target_and_predict_x0_round_trip(prediction: str) -> None:
    schedule = NoiseSchedule(prediction, train_timesteps=100)
    x0, noise = data(), data(seed=1)
    t = torch.tensor([0, 10, 40, 70, 99, 55])
    x_t = schedule.q_sample(x0, noise, t)
    recovered = schedule.predict_x0(schedule.target(x0, noise, t), x_t, t)
    torch.testing.assert_close(recovered, x0, atol=1e-4, rtol=1e-4)


def test_alpha_sigma_follow_the_ddpm_schedule() -> None:
    schedule = NoiseSchedule(train_timesteps=100, beta_schedule="squaredcos_cap_v2")
    t = torch.tensor([0, 50, 99])
    alpha, sigma = schedule.alpha_sigma(t, data(shape=(3, 4)))
    assert alpha.shape == (3, 1)
    torch.testing.assert_close(alpha.flatten(), schedule.alphas_cumprod[t].sqrt())
    torch.testing.assert_close(alpha**2 + sigma**2, torch.ones_like(alpha))
    assert alpha[0] > alpha[1] > alpha[2]  # noisier with t


def test_masked_mse_ignores_padding_and_none_is_every_value() -> None:
    prediction, target = torch.zeros(2, 1, 4), torch.ones(2, 1, 4)
    target[:, :, 2:] = 100.0
    mask = torch.tensor([[True, True, False, False]] * 2)
    assert masked_mse(prediction, target, mask.view(2, 1, 4)).item() == pytest.approx(1.0)
    a, b = data(), data(seed=1)
    assert torch.equal(masked_mse(a, b), masked_mse(a, b, torch.ones_like(a, dtype=torch.bool)))


@pytest.mark.parametrize("prediction", PREDICTION_TYPES)
def test_oracle_training_loss_is_zero(prediction: str) -> None:
    schedule = NoiseSchedule(prediction, train_timesteps=100)
    x0 = data()
    loss = schedule.training_loss(
        Oracle(schedule, x0), x0, generator=torch.Generator().manual_seed(0),
        cond={"row": torch.arange(len(x0))},
    )  # fmt: skip
    assert loss.item() < 1e-6


class Recorder(nn.Module):
    """Returns zeros and keeps the keyword conditions of its last call."""

    def forward(self, x_t, t, **cond):  # noqa: ANN001
        self.cond = cond
        return torch.zeros_like(x_t)


def test_the_training_loss_forwards_cond_and_draws_the_drop_flag() -> None:
    schedule, model, x0 = NoiseSchedule("sample", 100), Recorder(), data(shape=(400, 3))
    label = torch.arange(400)
    schedule.training_loss(model, x0, cond={"label": label})
    assert set(model.cond) == {"label"} and model.cond["label"] is label  # no drop flag at 0
    schedule.training_loss(model, x0, cond={"label": label}, cond_drop=0.25, drop_key="null")
    drop = model.cond["null"]
    assert drop.dtype == torch.bool and drop.shape == (400,) and 0.15 < drop.float().mean() < 0.35
    with pytest.raises(ValueError, match="drop_key"):
        schedule.training_loss(model, x0, cond_drop=0.1)


class ConstantByDrop(nn.Module):
    """Returns 1 for conditional rows and 3 for dropped rows, counting forwards and rows."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[int] = []

    def forward(self, x_t, t, label=None, shared=None, null=None):  # noqa: ANN001
        self.rows.append(x_t.shape[0])
        self.label, self.shared = label, shared
        out = torch.ones_like(x_t)
        if null is not None:
            out[null] = 3.0
        return out


def test_guidance_combines_conditional_and_null_halves_in_one_forward() -> None:
    model = ConstantByDrop()
    x, t = torch.zeros(5, 3), torch.zeros(5, dtype=torch.long)
    cond = {"label": torch.arange(5), "shared": torch.ones(1, 4)}
    out = guided_prediction(model, x, t, cond, guidance=2.0, drop_key="null")
    assert model.rows == [10]  # both halves, one forward
    torch.testing.assert_close(out, torch.full_like(x, (1 + 2.0) * 1 - 2.0 * 3))
    assert model.label.tolist() == [0, 1, 2, 3, 4] * 2  # per-row conditions doubled
    assert model.shared.shape == (1, 4)  # a one-row condition is shared, passed once
    w = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0])  # one w per row
    per_row = guided_prediction(model, x, t, cond, guidance=w, drop_key="null")
    torch.testing.assert_close(per_row, (1 - 2 * w)[:, None].expand_as(x))
    assert guided_prediction(model, x, t, cond).eq(1.0).all()  # w = 0: conditional only
    assert model.rows[-1] == 5
    with pytest.raises(ValueError, match="drop_key"):
        guided_prediction(model, x, t, cond, guidance=1.0)


@pytest.mark.parametrize("prediction", PREDICTION_TYPES)
def test_single_step_with_oracle_recovers_x0(prediction: str) -> None:
    schedule = NoiseSchedule(prediction, train_timesteps=100)
    x0 = data()
    oracle = Oracle(schedule, x0)
    out = sample_single_step(
        schedule, oracle, 50, SHAPE, torch.Generator().manual_seed(0),
        cond={"row": torch.arange(len(x0))},
    )  # fmt: skip
    assert oracle.calls == 1  # all rows in ONE forward
    torch.testing.assert_close(out, x0, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="single-step t"):
        sample_single_step(schedule, oracle, 100, SHAPE)


@pytest.mark.parametrize("steps", [1, 4])
@pytest.mark.parametrize("prediction", PREDICTION_TYPES)
def test_ddim_with_oracle_recovers_x0(prediction: str, steps: int) -> None:
    schedule = NoiseSchedule(prediction, train_timesteps=100)
    x0 = data()
    oracle = Oracle(schedule, x0)
    out = sample_ddim(
        schedule, oracle, steps, SHAPE, torch.Generator().manual_seed(0),
        cond={"row": torch.arange(len(x0))},
    )  # fmt: skip
    assert oracle.calls == steps and out.shape == x0.shape
    torch.testing.assert_close(out, x0, atol=1e-3, rtol=1e-3)


class Wobbly(nn.Module):
    """Any fixed function of (x_t, t): its x̂0 is no oracle's."""

    def forward(self, x_t, t):  # noqa: ANN001
        return torch.sin(3 * x_t) + t[:, None, None] / 500.0


@pytest.mark.parametrize("prediction", PREDICTION_TYPES)
def test_one_ddim_step_is_the_models_x0_from_pure_noise(prediction: str) -> None:
    """Trailing spacing: the one step is at t = T − 1, and it lands on the model's x̂0."""
    schedule = NoiseSchedule(prediction, train_timesteps=1000)
    assert ddim_scheduler(schedule, 1).timesteps.tolist() == [999]
    assert ddim_scheduler(schedule, 4).timesteps.tolist() == [999, 749, 499, 249]
    model = Wobbly()
    out = sample_ddim(schedule, model, 1, SHAPE, torch.Generator().manual_seed(4))
    x_t = torch.randn(SHAPE, generator=torch.Generator().manual_seed(4))
    t = torch.full((SHAPE[0],), 999)
    torch.testing.assert_close(out, schedule.predict_x0(model(x_t, t), x_t, t))


class LatentMLP(nn.Module):
    """An unconditional ε-model of (x_t, t) only, like p-diff's latent denoiser."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(width + 1, 32), nn.SiLU(), nn.Linear(32, width))

    def forward(self, x_t, t):  # noqa: ANN001
        flat = x_t.flatten(1)
        out = self.net(torch.cat((flat, t[:, None].float() / 100.0), dim=1))
        return out.view_as(x_t)


def test_an_unconditional_model_trains_and_samples_without_any_config() -> None:
    """p-diff's use: latents (B, C, L), no mask, no condition; the loss falls and DDIM runs."""
    torch.manual_seed(0)
    schedule, model = NoiseSchedule("epsilon", train_timesteps=100), LatentMLP(2 * 5)
    z0 = data(shape=(4, 2, 5)).repeat(16, 1, 1)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)

    def fixed_draw_loss() -> float:
        with torch.no_grad():
            return schedule.training_loss(
                model, z0, generator=torch.Generator().manual_seed(9)
            ).item()

    before = fixed_draw_loss()
    generator = torch.Generator().manual_seed(1)
    for _ in range(150):
        loss = schedule.training_loss(model, z0, generator=generator)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert fixed_draw_loss() < 0.7 * before
    samples = sample_ddim(schedule, model, 4, (3, 2, 5), torch.Generator().manual_seed(2))
    assert samples.shape == (3, 2, 5) and samples.isfinite().all()
