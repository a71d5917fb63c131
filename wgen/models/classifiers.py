"""Small image classifiers for p-diff's model zoo (Wang et al. 2024, "Neural Network Diffusion").

Layout: building blocks first, then the two models, then `CLASSIFIERS` (the names the
configuration accepts) and `build_classifier`.

- `ConvNet3`: three conv + BatchNorm + ReLU stages and a linear head; p-diff's main setting
  varies only its last two normalisation layers (``norm2``, ``norm3``).
- `MLP3`: three linear layers; p-diff's whole-model setting trains every parameter from
  many seeds.

Parameter names are stable (``conv1``, ``norm1``, ..., ``head``; ``fc1``, ``fc2``, ``fc3``)
because the zoo's selection spec picks parameters by name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["CLASSIFIERS", "ConvNet3", "ImageSpec", "MLP3", "build_classifier"]


@dataclass(frozen=True)
class ImageSpec:
    """What a classifier is built for: input channels, square side, number of classes."""

    channels: int
    size: int
    classes: int


class ConvBNReLU(nn.Sequential):
    """Conv 3x3 → BatchNorm → ReLU, keeping the spatial size."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__(
            nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(),
        )


class ConvNet3(nn.Module):
    """ConvNet-3: conv1/norm1 → pool → conv2/norm2 → pool → conv3/norm3 → global pool → head."""

    def __init__(self, spec: ImageSpec, width: int) -> None:
        super().__init__()
        channels = (width, 2 * width, 2 * width)
        self.conv1 = nn.Conv2d(spec.channels, channels[0], 3, padding=1, bias=False)
        self.norm1 = nn.BatchNorm2d(channels[0])
        self.conv2 = nn.Conv2d(channels[0], channels[1], 3, padding=1, bias=False)
        self.norm2 = nn.BatchNorm2d(channels[1])
        self.conv3 = nn.Conv2d(channels[1], channels[2], 3, padding=1, bias=False)
        self.norm3 = nn.BatchNorm2d(channels[2])
        self.head = nn.Linear(channels[2], spec.classes)
        self.pool = nn.MaxPool2d(2, ceil_mode=True)  # 8 → 4 → 2 on digits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, C, H, W) → logits (B, classes)."""
        x = self.pool(torch.relu(self.norm1(self.conv1(x))))
        x = self.pool(torch.relu(self.norm2(self.conv2(x))))
        x = torch.relu(self.norm3(self.conv3(x)))
        return self.head(x.mean(dim=(2, 3)))


class MLP3(nn.Module):
    """MLP-3: flatten → fc1 → ReLU → fc2 → ReLU → fc3."""

    def __init__(self, spec: ImageSpec, width: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(spec.channels * spec.size * spec.size, width)
        self.fc2 = nn.Linear(width, width)
        self.fc3 = nn.Linear(width, spec.classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.fc1(x.flatten(1)))
        return self.fc3(torch.relu(self.fc2(h)))


CLASSIFIERS: dict[str, Callable[[ImageSpec, int], nn.Module]] = {
    "convnet": ConvNet3,
    "mlp": MLP3,
}


def build_classifier(name: str, spec: ImageSpec, width: int, seed: int | None = None) -> nn.Module:
    """A fresh classifier ``name`` ("convnet" or "mlp"); seeded without touching the global RNG."""
    if name not in CLASSIFIERS:
        raise KeyError(f"unknown classifier {name!r}; valid: {sorted(CLASSIFIERS)}")
    if seed is None:
        return CLASSIFIERS[name](spec, width)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return CLASSIFIERS[name](spec, width)
