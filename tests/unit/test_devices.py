"""`wgen.core.devices`: which device a process trains on, and mixed precision only on CUDA.

No GPU is needed: the choice from Ray's GPU assignment is a pure function, and on the CPU
the mixed-precision wrapper must leave training bit-identical to plain fp32 code.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wgen.core.devices import (
    Precision,
    autocast_dtype,
    current_device,
    device_for_gpu_ids,
    precision_for,
)

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize(
    ("gpu_ids", "visible", "count", "expected"),
    [
        ([], None, 0, "cpu"),  # no GPU assigned, none present
        ([], "0,1", 2, "cpu"),  # GPUs on the node, none assigned to this process
        ([0], "0", 0, "cpu"),  # assigned, but torch sees no CUDA: CPU (with a warning)
        ([2], "2", 1, "cuda:0"),  # Ray set CUDA_VISIBLE_DEVICES to the assigned GPU
        (["3"], "0,1,2,3", 4, "cuda:3"),  # Ray told not to set it: the id's position
        ([5, 6], "5,6", 2, "cuda:0"),  # two GPUs assigned: the first
        ([1], None, 2, "cuda:0"),  # no CUDA_VISIBLE_DEVICES at all
    ],
)
def test_device_for_gpu_ids(gpu_ids, visible, count, expected):
    assert device_for_gpu_ids(gpu_ids, visible, count) == torch.device(expected)


def test_current_device_is_cpu_outside_ray_and_train_workers():
    assert current_device() == torch.device("cpu")


def test_no_autocast_on_cpu():
    cpu = torch.device("cpu")
    assert autocast_dtype(cpu) is None
    precision = precision_for(cpu)
    assert not precision.enabled and not precision.scaler.is_enabled()
    with precision.autocast():
        assert not torch.is_autocast_enabled("cpu")
        out = torch.nn.Linear(4, 4)(torch.ones(2, 4))
    assert out.dtype == torch.float32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_autocast_on_cuda_uses_bf16_or_fp16_with_a_scaler():
    device = torch.device("cuda", 0)
    precision = precision_for(device)
    assert precision.dtype in (torch.bfloat16, torch.float16)
    assert precision.scaler.is_enabled() == (precision.dtype == torch.float16)
    with precision.autocast():
        out = torch.nn.Linear(4, 4).to(device)(torch.ones(2, 4, device=device))
    assert out.dtype == precision.dtype


def test_precision_step_on_cpu_equals_a_plain_fp32_step():
    def run(step) -> torch.Tensor:
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        x = torch.randn(16, 8)
        for _ in range(3):
            step(model, optimizer, x)
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    precision = Precision(torch.device("cpu"), None)

    def wrapped(model, optimizer, x):
        with precision.autocast():
            loss = model(x).square().mean()
        precision.step(loss, optimizer)

    def plain(model, optimizer, x):
        loss = model(x).square().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    assert torch.equal(run(wrapped), run(plain))


def test_pix2pix_trainer_trains_on_the_generators_device_without_autocast_on_cpu():
    from wgen.config import load_config
    from wgen.gan.training import ConceptPairs, Pix2PixTrainer
    from wgen.models.gan import build_discriminator, build_generator

    config = load_config("tiny")
    size = config.data.image_size
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(6, size, size, 3), dtype=np.uint8)
    pairs = ConceptPairs("c0", "t", "train", images[:4], images[:4], images[4:], images[4:])
    trainer = Pix2PixTrainer(
        build_generator(config.gan.size, seed=0),
        build_discriminator(config.gan.size, seed=1),
        config.gan,
        config.gan.lr,
        pairs,
        seed=0,
    )
    assert trainer.precision.device == torch.device("cpu") and not trainer.precision.enabled
    assert trainer.sources.device == torch.device("cpu")
    losses = trainer.step()
    assert all(np.isfinite(v) for v in losses.values())
