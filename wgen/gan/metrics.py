"""Quality metrics for image-to-image generators: paired L1 / PSNR and a Fréchet distance.

Used every few steps of per-concept LoRA training (so everything here is cheap on one CPU
core at 16-32 px) and by the benchmark. Conventions, one for each side of a generator:

* **Images** are ``uint8`` numpy arrays, NHWC, RGB, values 0-255: what the pairs dataset
  stores and what clean-fid's feature extractors read. Every metric takes images in this
  form; paired metrics are computed on the [0, 1] scale (``to_unit``).
* **Generators** map float NCHW tensors in [-1, 1] to the same. ``uint8_to_model`` and
  ``model_to_uint8`` convert between the two (the round trip is exact), and
  ``evaluate_generator`` scores a generator's quantised outputs, i.e. exactly the images a
  user would save.

Fréchet distance (FD). Features of both image sets are summarised by a Gaussian (μ, Σ) and
compared with clean-fid's own ``frechet_distance``:
d² = ‖μ_a − μ_b‖² + Tr(Σ_a + Σ_b − 2·(Σ_a·Σ_b)^½). Two feature extractors:

* ``"inception"``: clean-fid's Inception-v3 (TorchScript ``inception-2015-12-05.pt``) with
  clean-fid's "clean" resizing (PIL bicubic on float pixels to 299x299), i.e. FID as clean-fid
  reports it. Only from a local file: the folder named by ``$WGEN_INCEPTION_PATH``, else
  wgen's cache folder (``$XDG_CACHE_HOME/wgen``, by default ``~/.cache/wgen``). Never from
  clean-fid's own cache in the system temp folder: TorchScript is code, and ``/tmp`` is
  writable by every user of the machine. Nothing is downloaded.
* ``"offline"``: a fixed extractor that needs no download (documented below).
* ``"auto"``: ``"inception"`` when its weights are present locally, else ``"offline"``. The
  extractor's ``name`` says which one was used, so reports can state it.

The offline extractor (``OfflineFeatureExtractor``, 76 features, images at their own
resolution) concatenates two parts. (1) A randomly initialised, never trained conv net of 3
layers (8 channels each, 3x3 kernels, ReLU; layer 2 has stride 2, layer 3 stride 2 and
dilation 2, so the receptive fields are 3, 5 and 13 px) applied to the image scaled to
[-1, 1]; each layer's activations are pooled by spatial mean and standard deviation (48
features). Its weights are Kaiming-uniform (bound √(6/fan_in), no biases), drawn as 24-bit
integers from a CPU ``torch.Generator`` seeded with ``OFFLINE_SEED`` and mapped to float32 by
exact arithmetic (no transcendental functions), so they are bit-identical on every machine;
``fingerprint`` is their SHA-256. (2) 28 hand-written statistics on the [0, 1] scale:
per-channel mean and std (6), saturation (max − min over RGB) mean and std (2), a 4-bin
histogram per channel (12), the Sobel gradient magnitude of the luminance: mean, std and the
fraction of pixels above 0.1 (3), the mean absolute Laplacian (1, sharpness), the fraction of
neighbouring pixels within 1.5 grey levels (1, flat areas: posterize, pixelate) and the mean
luminance in 3 concentric rings (3, vignetting). The random conv features respond to texture,
edges and local structure (blur, sketch, pixelate); the statistics make colour, tone,
sharpness, flatness and vignetting visible directly (sepia, invert, tint, contrast,
posterize). Eight channels rather than more: on 32x32 crops they gave a larger ratio of
edited-vs-unedited to unedited-vs-unedited distance than 16, and a third of the cost.

With fewer images than features (8-64 images, 76 features) the sample covariance is
rank-deficient: the FD is then dominated by the difference of the means and is only
comparable between evaluations with the same number of images. A ridge of ``COV_RIDGE``·I is
added to every covariance so the matrix square root stays finite.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from threadpoolctl import ThreadpoolController

from wgen.core.runtime import torch_threads
from wgen.data.images import LUMA_BT601, check_images

EXTRACTOR_NAMES = ("auto", "inception", "offline")
INCEPTION_ENV = "WGEN_INCEPTION_PATH"  # folder holding INCEPTION_FILENAME
INCEPTION_FILENAME = "inception-2015-12-05.pt"  # the file clean-fid downloads and loads
COV_RIDGE = 1e-6  # added to the diagonal of every feature covariance (see the module docstring)
PSNR_CAP_DB = 100.0  # PSNR of an image identical to its target (instead of +inf)
OFFLINE_SEED = 20240716  # seeds the offline extractor's random conv weights
OFFLINE_CHANNELS = 8  # channels of each random conv layer
OFFLINE_LAYERS = ((1, 1), (2, 1), (2, 2))  # (stride, dilation) of the 3x3 random conv layers
HIST_BINS = 4  # bins per channel of the colour histogram
EDGE_THRESHOLD = 0.1  # Sobel magnitude (on [0, 1], divided by 4) that counts as an edge
FLAT_STEP = 1.5 / 255  # neighbours closer than this (on [0, 1]) count as flat
N_IMAGE_STATISTICS = 28  # hand-written statistics in the offline features (see _image_statistics)
FEATURE_BATCH = 32  # images per forward pass in the feature extractors (bounds memory)


# ----------------------------------------------------------------------------- conversions


def to_unit(images: np.ndarray) -> np.ndarray:
    """uint8 NHWC images → float64 NHWC on [0, 1], the scale of the paired metrics."""
    return check_images(images).astype(np.float64) / 255.0


def uint8_to_model(images: np.ndarray) -> torch.Tensor:
    """uint8 NHWC images → float32 NCHW tensor on [-1, 1], the generators' input convention."""
    # C-contiguous and writable (arrays from Ray's object store are read-only: torch warns)
    pixels = torch.from_numpy(np.require(check_images(images), requirements=["C", "W"]))
    return pixels.permute(0, 3, 1, 2).to(torch.float32) / 127.5 - 1.0


def model_to_uint8(tensor: torch.Tensor) -> np.ndarray:
    """Float NCHW tensor on [-1, 1] → uint8 NHWC images (clipped, rounded to nearest)."""
    pixels = ((tensor.detach().cpu().float().clamp(-1.0, 1.0) + 1.0) * 127.5).round()
    return pixels.to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def _batches(images: np.ndarray, size: int) -> Iterator[np.ndarray]:
    for start in range(0, len(images), size):
        yield images[start : start + size]


# ----------------------------------------------------------------------------- paired metrics


def _check_pair(pred: np.ndarray, target: np.ndarray) -> None:
    check_images(pred, "pred")
    check_images(target, "target")
    if pred.shape != target.shape:
        raise ValueError(f"pred and target differ in shape: {pred.shape} vs {target.shape}")


def paired_l1(pred: np.ndarray, target: np.ndarray) -> float:
    """Mean absolute pixel difference on the [0, 1] scale (the pix2pix L1, image by image)."""
    _check_pair(pred, target)
    return float(np.mean(np.abs(to_unit(pred) - to_unit(target))))


def psnr(pred: np.ndarray, target: np.ndarray) -> float:
    """Mean over images of the PSNR in dB on the [0, 1] scale, each capped at ``PSNR_CAP_DB``.

    Per image, then averaged, as image-translation papers report it. The cap replaces the
    +inf of an exact match so that curves can be averaged and written to JSON.
    """
    _check_pair(pred, target)
    mse = np.mean((to_unit(pred) - to_unit(target)) ** 2, axis=(1, 2, 3))
    with np.errstate(divide="ignore"):
        per_image = 10.0 * np.log10(1.0 / mse)
    return float(np.mean(np.minimum(per_image, PSNR_CAP_DB)))


# ----------------------------------------------------------------------------- Fréchet distance


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """μ and Σ (+ ``COV_RIDGE``·I) of an (n, dim) feature matrix, n >= 2, in float64."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"need an (n, dim) feature matrix with n >= 2, got shape {features.shape}")
    sigma = np.atleast_2d(np.cov(features, rowvar=False))
    return features.mean(axis=0), sigma + COV_RIDGE * np.eye(len(sigma))


@functools.cache
def _threadpools() -> ThreadpoolController:
    """Built once: inspecting the loaded BLAS libraries costs milliseconds."""
    return ThreadpoolController()


@contextlib.contextmanager
def _single_threaded() -> Iterator[None]:
    """Run small numeric work on one torch and one BLAS thread, then restore both.

    The offline features and the Fréchet distance are many tiny kernels; on a busy 2-core
    machine two threads wait for each other far longer than they compute. Measured here:
    offline features of 64 images 1.2 s with 2 torch threads, 30 ms with 1; scipy's ``sqrtm``
    at dim 128 1.3 s with 2 BLAS threads, 14 ms with 1. The torch setting is process-wide, so
    another Python thread running torch at the same moment also runs on one thread meanwhile.
    """
    with torch_threads(1), _threadpools().limit(limits=1, user_api="blas"):
        yield


def _frechet_from_stats(
    stats_a: tuple[np.ndarray, np.ndarray], stats_b: tuple[np.ndarray, np.ndarray]
) -> float:
    """clean-fid's Fréchet distance, single-threaded (see ``_single_threaded``), clamped at 0.

    The clamp removes the tiny negative values that rounding gives for identical sets.
    """
    from cleanfid.fid import frechet_distance as cleanfid_frechet  # imports torchvision: ~2 s

    with _single_threaded(), warnings.catch_warnings():
        # clean-fid passes scipy's deprecated `disp` argument; the result is unaffected.
        warnings.filterwarnings("ignore", message=".*`disp` argument is deprecated.*")
        value = cleanfid_frechet(stats_a[0], stats_a[1], stats_b[0], stats_b[1])
    return max(float(value), 0.0)


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Fréchet distance between the Gaussians fitted to two (n, dim) feature matrices."""
    return _frechet_from_stats(gaussian_stats(features_a), gaussian_stats(features_b))


class FeatureExtractor(Protocol):
    """Turns uint8 NHWC images into an (n, dim) float feature matrix for the Fréchet distance."""

    name: str

    def features(self, images: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True, eq=False)
class ReferenceStats:
    """μ and Σ of a fixed image set (a concept's targets), computed once and scored against often.

    In the per-concept loop the targets never change, so each evaluation only extracts the
    predictions' features and computes one Fréchet distance.
    """

    extractor: FeatureExtractor
    mu: np.ndarray
    sigma: np.ndarray

    @classmethod
    def from_images(cls, images: np.ndarray, extractor: FeatureExtractor) -> ReferenceStats:
        mu, sigma = gaussian_stats(extractor.features(images))
        return cls(extractor, mu, sigma)

    def score_features(self, features: np.ndarray) -> float:
        return _frechet_from_stats(gaussian_stats(features), (self.mu, self.sigma))

    def score(self, images: np.ndarray) -> float:
        """Fréchet distance from ``images`` to the reference set."""
        return self.score_features(self.extractor.features(images))


# ----------------------------------------------------------------------------- offline extractor


class _ConvLayer(NamedTuple):
    weight: torch.Tensor  # (out, in, 3, 3), float32
    stride: int
    dilation: int


def _fixed_uniform(
    shape: tuple[int, ...], bound: float, generator: torch.Generator
) -> torch.Tensor:
    """U(-bound, bound) from 24-bit integers by exact arithmetic: bit-identical on any CPU.

    ``torch.randn``/``rand`` may take vectorised code paths whose rounding depends on the CPU;
    integers from the Mersenne Twister and one correctly rounded multiply do not.
    """
    integers = torch.randint(0, 2**24, shape, generator=generator, dtype=torch.int64)
    unit = integers.to(torch.float64) / 2**24  # exact: 24 bits fit a float64 mantissa
    return ((2.0 * unit - 1.0) * bound).to(torch.float32)


def _random_conv_layers(seed: int) -> list[_ConvLayer]:
    generator = torch.Generator(device="cpu").manual_seed(seed)
    layers, in_channels = [], 3
    for stride, dilation in OFFLINE_LAYERS:
        bound = (6.0 / (in_channels * 9)) ** 0.5  # Kaiming-uniform for ReLU: keeps unit scale
        shape = (OFFLINE_CHANNELS, in_channels, 3, 3)
        layers.append(_ConvLayer(_fixed_uniform(shape, bound, generator), stride, dilation))
        in_channels = OFFLINE_CHANNELS
    return layers


def _spatial_mean_std(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and (population) std over the last two dims, as √(E[x²] − E[x]²).

    ``Tensor.std`` was measured 30x slower than two means on the CPU (16 ms against 0.6 ms
    for 64 maps of 16x32x32); the values here are O(1), so the cancellation is harmless.
    """
    mean = values.mean(dim=(-2, -1))
    mean_square = values.square().mean(dim=(-2, -1))
    return mean, (mean_square - mean.square()).clamp_(min=0.0).sqrt()


def _conv_features(signed: torch.Tensor, layers: list[_ConvLayer]) -> torch.Tensor:
    """Spatial mean and std of every random conv layer's ReLU activations."""
    pooled, hidden = [], signed
    for layer in layers:
        hidden = F.relu(
            F.conv2d(
                hidden,
                layer.weight,
                stride=layer.stride,
                padding=layer.dilation,
                dilation=layer.dilation,
            )
        )
        pooled += _spatial_mean_std(hidden)
    return torch.cat(pooled, dim=1)


_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
_LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])
_LUMA = torch.tensor(LUMA_BT601)


def _histograms(unit: torch.Tensor) -> torch.Tensor:
    """Fraction of each channel's pixels in ``HIST_BINS`` equal bins of [0, 1]: (n, 3·bins)."""
    n, channels, height, width = unit.shape
    bins = (unit * HIST_BINS).long().clamp_(max=HIST_BINS - 1)
    offsets = torch.arange(n * channels).view(n, channels, 1, 1) * HIST_BINS
    counts = torch.bincount((bins + offsets).flatten(), minlength=n * channels * HIST_BINS)
    return counts.view(n, channels * HIST_BINS).float() / (height * width)


def _gradient_stats(luma: torch.Tensor) -> torch.Tensor:
    """Sobel magnitude mean/std/edge fraction and mean |Laplacian| of (n, 1, H, W) luminance."""
    kernels = torch.stack([_SOBEL_X, _SOBEL_X.T]).unsqueeze(1)
    gradients = F.conv2d(luma, kernels) / 4.0  # a full black-to-white step gives 1
    magnitude = gradients.square().sum(dim=1).sqrt()
    laplacian = F.conv2d(luma, _LAPLACIAN.view(1, 1, 3, 3)).abs()[:, 0]
    edges = (magnitude > EDGE_THRESHOLD).float()
    statistics = [*_spatial_mean_std(magnitude), edges.mean(dim=(1, 2)), laplacian.mean(dim=(1, 2))]
    return torch.stack(statistics, dim=1)


def _flat_fraction(unit: torch.Tensor) -> torch.Tensor:
    """Fraction of neighbouring pixel pairs (both axes, all channels) closer than ``FLAT_STEP``.

    Photographs have almost none; posterized and pixelated images are mostly flat.
    """
    across = (unit[..., 1:] - unit[..., :-1]).abs() < FLAT_STEP
    down = (unit[..., 1:, :] - unit[..., :-1, :]).abs() < FLAT_STEP
    fractions = [flat.float().mean(dim=(1, 2, 3)) for flat in (across, down)]
    return ((fractions[0] + fractions[1]) / 2).unsqueeze(1)


def _ring_means(luma: torch.Tensor) -> torch.Tensor:
    """Mean luminance in 3 rings of normalised radius [0, ⅓), [⅓, ⅔), [⅔, 1]: vignetting."""
    height, width = luma.shape[-2:]
    rows = torch.linspace(-1.0, 1.0, height).view(height, 1)
    cols = torch.linspace(-1.0, 1.0, width).view(1, width)
    ring = ((rows**2 + cols**2).sqrt() / 2**0.5 * 3).long().clamp_(max=2)
    masks = torch.stack([(ring == index).float() for index in range(3)])  # (3, H, W)
    return torch.einsum("nhw,rhw->nr", luma[:, 0], masks) / masks.sum(dim=(1, 2))


def _image_statistics(unit: torch.Tensor) -> torch.Tensor:
    """The ``N_IMAGE_STATISTICS`` colour, tone, sharpness and layout statistics of [0, 1] NCHW."""
    saturation = unit.amax(dim=1) - unit.amin(dim=1)
    luma = torch.einsum("nchw,c->nhw", unit, _LUMA).unsqueeze(1)
    parts = [
        *_spatial_mean_std(unit),
        torch.stack(_spatial_mean_std(saturation), dim=1),
        _histograms(unit),
        _gradient_stats(luma),
        _flat_fraction(unit),
        _ring_means(luma),
    ]
    return torch.cat(parts, dim=1)


class OfflineFeatureExtractor:
    """The fixed, download-free feature extractor described in the module docstring."""

    name = "offline"

    def __init__(self, seed: int = OFFLINE_SEED) -> None:
        self.layers = _random_conv_layers(seed)
        self.dim = 2 * OFFLINE_CHANNELS * len(OFFLINE_LAYERS) + N_IMAGE_STATISTICS

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the conv weights: equal on every machine, so reports can prove it."""
        digest = hashlib.sha256()
        for layer in self.layers:
            digest.update(layer.weight.numpy().tobytes())
        return digest.hexdigest()

    def features(self, images: np.ndarray) -> np.ndarray:
        """(n, dim) float64 features of uint8 NHWC images (at least 3x3 pixels)."""
        check_images(images)
        with _single_threaded():
            chunks = [self._batch_features(batch) for batch in _batches(images, FEATURE_BATCH)]
        return np.concatenate(chunks).astype(np.float64)

    def _batch_features(self, images: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            signed = uint8_to_model(images)
            unit = (signed + 1.0) / 2.0
            return torch.cat(
                [_conv_features(signed, self.layers), _image_statistics(unit)], 1
            ).numpy()


# ----------------------------------------------------------------------------- clean-fid / Inception


class CleanFidExtractor:
    """Features from a clean-fid feature model, after clean-fid's "clean" resizing.

    ``model`` is anything clean-fid accepts as a feature extractor (its Inception, or a
    ``custom_feat_extractor``): it takes float NCHW images with values 0-255 at ``299x299``
    and returns (n, dim) features. Images are resized one by one exactly as clean-fid's
    ``mode="clean"`` does (PIL bicubic on float pixels, no re-quantisation).
    """

    def __init__(
        self,
        model: Callable[[torch.Tensor], torch.Tensor],
        name: str,
        device: str | torch.device = "cpu",
    ) -> None:
        from cleanfid.resize import build_resizer

        self.model = model
        self.name = name
        self.device = torch.device(device)
        self._resize = build_resizer("clean")

    def features(self, images: np.ndarray) -> np.ndarray:
        from cleanfid.fid import get_batch_features

        chunks = []
        for batch in _batches(check_images(images), FEATURE_BATCH):
            resized = np.stack([self._resize(image) for image in batch])  # (n, 299, 299, 3) float
            pixels = torch.from_numpy(resized).permute(0, 3, 1, 2)
            chunks.append(get_batch_features(pixels, self.model, self.device))
        return np.concatenate(chunks).astype(np.float64)


def wgen_cache_dir() -> Path:
    """wgen's own cache folder, ``$XDG_CACHE_HOME/wgen`` (default ``~/.cache/wgen``): a folder
    of the user's, unlike clean-fid's cache in the world-writable temp folder."""
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "wgen"


def inception_search_paths() -> list[Path]:
    """Where the Inception weights are looked for: ``$WGEN_INCEPTION_PATH``, else wgen's cache.

    An explicit ``$WGEN_INCEPTION_PATH`` is the only place looked at when it is set, so a
    deliberate choice is never silently replaced by some other file.
    """
    folder = os.environ.get(INCEPTION_ENV)
    return [(Path(folder).expanduser() if folder else wgen_cache_dir()) / INCEPTION_FILENAME]


def inception_weights_path() -> Path | None:
    """The first existing Inception weights file, or None (never downloads)."""
    return next((path for path in inception_search_paths() if path.is_file()), None)


def _missing_inception_message() -> str:
    from cleanfid.downloads_helper import inception_url

    looked = ", ".join(str(path) for path in inception_search_paths())
    return (
        f"Inception weights for the Fréchet distance not found (looked at: {looked}). "
        f"Download {inception_url} on a machine with internet, put it in a folder and set "
        f"{INCEPTION_ENV}=<that folder> (or, with it unset, copy it into wgen's cache: "
        f"{wgen_cache_dir() / INCEPTION_FILENAME}); "
        "or use the feature extractor 'offline' (or 'auto', which falls back to it)."
    )


def build_inception_extractor(device: str | torch.device = "cpu") -> CleanFidExtractor:
    """clean-fid's Inception (``InceptionV3W``, clean mode) from the local weights file."""
    path = inception_weights_path()
    if path is None:
        raise FileNotFoundError(_missing_inception_message())
    from cleanfid.inception_torchscript import InceptionV3W

    with warnings.catch_warnings():
        # clean-fid's weights are TorchScript; torch's deprecation of jit.load is not ours to fix.
        warnings.filterwarnings(
            "ignore", message=".*torch.jit.load.*is deprecated", category=FutureWarning
        )
        model = InceptionV3W(str(path.parent), download=False, resize_inside=False)
    model = model.to(device).eval()
    return CleanFidExtractor(model, name="inception", device=device)


def build_feature_extractor(name: str, device: str | torch.device = "cpu") -> FeatureExtractor:
    """``"inception"``, ``"offline"`` or ``"auto"`` (Inception if local, else offline).

    ``device`` places the Inception network (e.g. ``"cuda"`` on a cluster); the offline
    extractor always runs on the CPU, where it is fastest for its size.
    """
    if name not in EXTRACTOR_NAMES:
        raise ValueError(f"unknown feature extractor {name!r}; valid: {list(EXTRACTOR_NAMES)}")
    if name == "offline" or (name == "auto" and inception_weights_path() is None):
        return OfflineFeatureExtractor()
    return build_inception_extractor(device)


# ----------------------------------------------------------------------------- generators


def _module_device(module: torch.nn.Module) -> torch.device:
    parameter = next(module.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def generate_uint8(
    generator: torch.nn.Module, sources: np.ndarray, batch_size: int = 64
) -> np.ndarray:
    """Run ``generator`` on uint8 NHWC sources in eval mode, without gradients; uint8 NHWC out.

    The previous train/eval mode is restored, so this can be called in the middle of training.
    """
    device = _module_device(generator)
    was_training = generator.training
    generator.eval()
    try:
        with torch.no_grad():
            outputs = [
                generator(uint8_to_model(batch).to(device)).cpu()
                for batch in _batches(check_images(sources, "sources"), batch_size)
            ]
    finally:
        generator.train(was_training)
    return model_to_uint8(torch.cat(outputs))


def evaluate_generator(
    generator: torch.nn.Module,
    sources_uint8: np.ndarray,
    targets_uint8: np.ndarray,
    extractor: FeatureExtractor,
    reference: ReferenceStats | None = None,
) -> dict[str, float]:
    """``{"l1", "psnr", "fd"}`` of the generator's outputs on ``sources`` against ``targets``.

    Pass ``reference`` (the targets' ``ReferenceStats``, same extractor) when evaluating the
    same targets repeatedly, to skip recomputing their features.
    """
    if reference is None:
        reference = ReferenceStats.from_images(targets_uint8, extractor)
    elif reference.extractor.name != extractor.name:
        raise ValueError(
            f"reference statistics come from the {reference.extractor.name!r} extractor, "
            f"not {extractor.name!r}"
        )
    predictions = generate_uint8(generator, sources_uint8)
    return {
        "l1": paired_l1(predictions, targets_uint8),
        "psnr": psnr(predictions, targets_uint8),
        "fd": reference.score(predictions),
    }
