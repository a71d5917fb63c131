"""The images the zoo's classifiers learn: scikit-learn's digits (8x8, offline, the default)
or a torchvision-style folder (one sub-folder of images per class).

Split once, stratified, with `PdiffConfig.seed`: the training part trains the zoo and
selects generated models; the held-out part is never trained on and scores every model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from wgen.config import PdiffConfig
from wgen.core.errors import ConfigError
from wgen.models.classifiers import ImageSpec

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


class PdiffError(ConfigError):
    """Bad p-diff input (a dataset folder, a setting name, a selection spec): one line."""


@dataclass
class ImageData:
    """Float images in [0, 1], (N, 1, H, W), and int64 labels, split into train and held-out."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_heldout: torch.Tensor
    y_heldout: torch.Tensor
    spec: ImageSpec
    name: str


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    return (digits.images / 16.0).astype(np.float32), digits.target.astype(np.int64)


def _image_folder(folder: Path, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Grey images resized to size x size; class = sub-folder, in sorted name order."""
    from PIL import Image

    if not folder.is_dir():
        raise PdiffError(f"pdiff.dataset_dir={folder} is not a folder")
    classes = sorted(p for p in folder.iterdir() if p.is_dir())
    images, labels = [], []
    for label, class_dir in enumerate(classes):
        for path in sorted(class_dir.iterdir()):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                with Image.open(path) as image:
                    grey = image.convert("L").resize((size, size), Image.Resampling.BILINEAR)
                images.append(np.asarray(grey, dtype=np.float32) / 255.0)
                labels.append(label)
    if len(classes) < 2 or not images:
        raise PdiffError(
            f"pdiff.dataset_dir={folder} needs one sub-folder of images per class "
            f"(found {len(classes)} sub-folders, {len(images)} images)"
        )
    return np.stack(images), np.asarray(labels, dtype=np.int64)


def load_images(cfg: PdiffConfig) -> ImageData:
    """The configured dataset, split into train and held-out (stratified, seeded)."""
    from sklearn.model_selection import train_test_split

    if cfg.dataset_dir is None:
        images, labels, name = *_digits(), "digits"
    else:
        images, labels = _image_folder(Path(cfg.dataset_dir), cfg.image_size)
        name = str(cfg.dataset_dir)
    if not 0.0 < cfg.heldout_fraction < 1.0:
        raise PdiffError(f"pdiff.heldout_fraction must be in (0, 1), got {cfg.heldout_fraction}")
    x_train, x_heldout, y_train, y_heldout = train_test_split(
        images, labels, test_size=cfg.heldout_fraction, random_state=cfg.seed, stratify=labels
    )
    spec = ImageSpec(channels=1, size=images.shape[-1], classes=int(labels.max()) + 1)

    def tensor(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(x))[:, None]

    return ImageData(
        tensor(x_train),
        torch.from_numpy(y_train),
        tensor(x_heldout),
        torch.from_numpy(y_heldout),
        spec,
        name,
    )
