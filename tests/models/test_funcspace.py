"""The function-space term: the differentiable decode equals the exact one, and its gradient
moves weights so that the GAN's output moves toward the targets (through the GAN's
`BaseModel` implementation)."""

from __future__ import annotations

import numpy as np
import torch

from wgen.config import load_config
from wgen.gan.base_model import GanBaseModel
from wgen.gan.lora import trainable_state_dict
from wgen.gan.training import lora_generator, weight_manifest
from wgen.generator.funcspace import FunctionSpaceLoss
from wgen.weights.blocks import BlockLayout
from wgen.weights.codec import BlockCodec
from wgen.weights.format import flatten, unflatten

from .test_weightgen import tiny_base


def random_rows(base, config, manifest, count: int, seed: int = 0) -> list[list[np.ndarray]]:
    """Trainable states of the tiny GAN with every value perturbed (B ≠ 0, norms moved)."""
    rng = np.random.default_rng(seed)
    state = trainable_state_dict(lora_generator(base, config.lora))
    rows = []
    for _ in range(count):
        vectors = flatten(state, manifest)
        rows.append([v + 0.05 * rng.standard_normal(v.shape).astype(np.float32) for v in vectors])
    return rows


def setup():
    config = load_config("tiny")
    base = tiny_base()
    manifest = weight_manifest(base, config.lora)
    layout = BlockLayout.from_lengths(manifest.group_lengths, config.denoiser.block_size)
    rows = random_rows(base, config, manifest, 4)
    codec = BlockCodec.fit(rows, layout, center=True)
    return config, base, manifest, codec, rows


def test_differentiable_decode_matches_the_exact_one():
    config, base, manifest, codec, rows = setup()
    blocks, _ = codec.encode(rows[:1])
    loss = FunctionSpaceLoss(GanBaseModel(base, config.lora, config.collect), codec, manifest)
    views = loss.state(torch.from_numpy(blocks[0]))
    exact = unflatten(codec.decode(blocks[0]), manifest)
    assert len(views) == len(exact)
    for key, value in exact.items():
        torch.testing.assert_close(views[loss.names[key]], value, rtol=1e-5, atol=1e-6)
    # Same output as the GAN with that LoRA loaded the ordinary way.
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        expected = lora_generator(base, config.lora, init=exact).eval()(x)
        torch.testing.assert_close(loss.outputs(torch.from_numpy(blocks[0]), x), expected)


def test_gradient_steps_on_the_blocks_lower_the_loss():
    config, base, manifest, codec, rows = setup()
    loss_fn = FunctionSpaceLoss(GanBaseModel(base, config.lora, config.collect), codec, manifest)
    g = torch.Generator().manual_seed(0)
    sources = torch.rand(4, 3, 16, 16, generator=g) * 2 - 1
    targets = -sources  # an inversion: far from what the base GAN does
    blocks = torch.zeros(codec.layout.n_blocks, 1, codec.layout.block_size, requires_grad=True)
    optimizer = torch.optim.Adam([blocks], lr=0.05)
    losses = []
    for _ in range(15):
        loss = loss_fn(blocks, sources, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert blocks.grad is not None and blocks.grad.abs().sum() > 0
    frozen = loss_fn.base.frozen_model
    assert not any(p.requires_grad for p in frozen.parameters()), "the GAN stays frozen"
    assert losses[-1] < 0.95 * losses[0]


class ListShard:
    """The one method of a Ray Train dataset shard that `function_space_epoch` uses."""

    def __init__(self, rows: list[dict]) -> None:
        self.rows = rows

    def iter_batches(self, batch_size: int, batch_format: str):
        assert batch_format == "numpy"
        for start in range(0, len(self.rows), batch_size):
            chunk = self.rows[start : start + batch_size]
            yield {key: np.stack([row[key] for row in chunk]) for key in chunk[0]}


def test_function_space_epochs_lower_the_loss_of_generated_weights():
    """The denoiser trained by whole-concept steps (no Ray): the GAN with the LoRA
    it generates in one step gets closer to the concepts' targets epoch after epoch."""
    from types import SimpleNamespace

    from wgen.gan.metrics import model_to_uint8, uint8_to_model
    from wgen.generator.diffusion import WeightDiffusion
    from wgen.generator.fit import TextTable, concept_epoch, func_timesteps
    from wgen.models.denoiser import build_denoiser

    config, base, manifest, codec, concept_rows = setup()
    # x0 prediction: the clean estimate is the output itself (with ε, one step from noise
    # must also learn to cancel the noise, which needs far more than a test's steps).
    config.denoiser.prediction = "sample"
    rng = np.random.default_rng(0)
    sources = rng.integers(0, 256, (2, 3, 16, 16, 3), dtype=np.uint8)
    # Two "concepts" whose targets some LoRA reaches exactly: the GAN with two known LoRAs.
    with torch.no_grad():
        targets = np.stack(
            [
                model_to_uint8(
                    lora_generator(base, config.lora, unflatten(concept_rows[c], manifest)).eval()(
                        uint8_to_model(sources[c])
                    )
                )
                for c in range(2)
            ]
        )
    blocks, _ = codec.encode(concept_rows[:2])
    rows = [
        {"concept": c, "blocks": blocks[c : c + 1], "inputs": sources[c], "targets": targets[c]}
        for c in range(2)
    ]
    texts = SimpleNamespace(
        text_states=rng.standard_normal((2, 3, 8)).astype(np.float32),
        wordings=np.array([[0], [1]]),
        n_wordings=np.array([1, 1]),
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_denoiser(config.denoiser, 8)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    loss_fn = FunctionSpaceLoss(GanBaseModel(base, config.lora, config.collect), codec, manifest)
    losses = [
        concept_epoch(
            model, optimizer, WeightDiffusion(config.denoiser), loss_fn, ListShard(rows),
            TextTable(texts, torch.device("cpu")), torch.as_tensor(codec.layout.mask()), 2,
            func_timesteps(config.train, config.generate), config.train.func_weight, seed,
        )["func_loss"]
        for seed in range(30)
    ]  # fmt: skip
    assert all(np.isfinite(losses))
    assert np.mean(losses[-5:]) < 0.85 * np.mean(losses[:5])
