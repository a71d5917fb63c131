"""Edit a photo at its own resolution with a generator trained on small square crops.

The GAN learned each concept on 32-pixel crops (the demo size), and the procedural editor
sizes its spatial effects relative to the image (a blur's sigma, a pixelate block, a frame's
width, the vignette's radius all scale with the short side). So an edit carries to a large
photo in one of these ways, each a `Strategy` in `STRATEGIES`:

* ``"upscaled"``: run the GAN on the whole photo scaled to its trained size (short side
  ``image_size``, aspect kept), then scale the output back up bicubically. What a user got
  before full-size apply (there as a centre crop); the benchmark's baseline.
* ``"fullres"``: run the GAN fully convolutionally on the full-size photo. Every conv, the
  GroupNorms (per-image statistics) and the attention block (no positional embedding, so it
  takes any number of tokens) accept any size, but every kernel keeps its size in *pixels*:
  an edit whose extent is relative to the image (blur, pixelate, frame, vignette) comes out
  as large as it was on a 32-pixel crop, i.e. far too small. Attention grows with the square
  of the bottleneck tokens ((H/8)·(W/8)); each token also averages over many more tokens than
  in training (1,024 at 256 px against 16), which dilutes what it attends to.
* ``"bands"``: the coarse band (what survives scaling to the
  trained size) from the GAN at its trained size, the fine band from the GAN at full size.
  Each is right in its own band: the coarse one for edits sized relative to the image
  (blur, frames, vignettes), the fine one for edits at the pixel scale (sketch lines, a
  colour map applied to the photo's detail). It costs one full-size pass, as ``"fullres"``.
* ``"tiles"``: ``"fullres"`` on overlapping tiles blended with linear ramps: the attention
  cost stays bounded, but every tile sees a small window of the photo, so an edit tied to
  position (vignette, frame, spotlight) is repeated in every tile.
* ``"residual"``: the low-resolution edit's residual (output − input), scaled up
  bicubically and added to the full-size photo: keeps the photo's detail, exact for smooth
  edits (tints, vignettes), wrong for edits whose change depends on the pixel (invert).
* ``"affine"``: guided upsampling (He & Sun, "Fast Guided Filter", 2015; the local affine
  colour model of Gharbi et al.'s bilateral guided upsampling, 2017). At the trained size,
  fit in every window of the low-resolution pair an affine colour map ``out = A·in + b``
  (3×3 matrix + offset, ridge-regularised), average the maps over windows, scale them up
  bilinearly, and apply them to the full-size photo; what the local model cannot explain at
  low resolution (the fit's residual) is scaled up and added, as in ``"residual"``. Exact for
  global colour edits (invert, sepia, tints) and detail-keeping for local tone edits, but it
  keeps the photo's fine detail where the edit removed it (blur, pixelate).
* ``"guided"``: ``"affine"`` written as the upscaled edit plus the photo's detail finer than
  the trained size, mapped through the local colour maps and scaled by a per-pixel *detail
  gain*: how much of the finest detail at the trained size the edit kept (1 for a colour
  edit, 0 where a blur or pixelate removed it, above 1 for sharpening). Measured with the
  demo LoRA, the gain stays near 1 on a blur: the LoRA itself keeps part of the detail at
  32 px, and this strategy carries that error to full size.

All strategies take and return uint8 (H, W, 3) images of the same size; any H, W >= 1.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from wgen.gan.metrics import generate_uint8

# The local colour model's window radius (low-resolution pixels) and ridges ([0, 1]² colour
# units). Chosen with the editor standing in for the GAN on 24 *training* concepts, never on
# the held-out concepts the benchmark reports (docs/results/apply/README.md): radius 1-3 and
# ridges 1e-5 to 1e-3 moved the median L1 by under 10%, a ridge of 1e-2 made it ~20% worse.
GUIDED_RADIUS = 2
GUIDED_EPS = 1e-3
DETAIL_EPS = 1e-4
TILE_SIDE = 256  # "tiles": tile side in pixels at full size (a multiple of every GAN factor)
TILE_OVERLAP = 32  # "tiles": pixels shared by neighbouring tiles, blended linearly

Strategy = Callable[[nn.Module, np.ndarray, int], np.ndarray]


def fit_side(image: np.ndarray, max_side: int) -> np.ndarray:
    """``image`` scaled down (Lanczos, aspect kept) so its long side is at most ``max_side``."""
    h, w = image.shape[:2]
    if max(h, w) <= max_side:
        return image
    scale = max_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.LANCZOS))


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 (H, W, 3) → (height, width, 3): Lanczos when shrinking, bicubic when enlarging."""
    if image.shape[:2] == (height, width):
        return image
    shrink = height * width < image.shape[0] * image.shape[1]
    method = Image.Resampling.LANCZOS if shrink else Image.Resampling.BICUBIC
    return np.asarray(Image.fromarray(image).resize((width, height), method))


def trained_shape(height: int, width: int, image_size: int, factor: int) -> tuple[int, int]:
    """The photo's shape at the GAN's trained scale: short side ``image_size``, aspect kept,
    each side rounded to a multiple of ``factor`` (the U-Net's skips must align)."""
    scale = image_size / min(height, width)
    return tuple(max(factor, factor * round(side * scale / factor)) for side in (height, width))


def _factor(model: nn.Module) -> int:
    """The generator's side divisor (2^n_down); a peft wrapper forwards the attribute."""
    return int(model.factor)


def run_padded(model: nn.Module, image: np.ndarray) -> np.ndarray:
    """The GAN on one image of any size: edge-padded to a multiple of its factor, cropped back."""
    h, w = image.shape[:2]
    factor = _factor(model)
    padded = np.pad(image, ((0, -h % factor), (0, -w % factor), (0, 0)), mode="edge")
    return generate_uint8(model, padded[None])[0, :h, :w]


def low_res_pair(model: nn.Module, image: np.ndarray, image_size: int):
    """(the photo at the trained scale, the GAN's edit of it)."""
    shape = trained_shape(*image.shape[:2], image_size, _factor(model))
    small = resize(image, *shape)
    return small, run_padded(model, small)


def upscaled(model: nn.Module, image: np.ndarray, image_size: int) -> np.ndarray:
    _, edited = low_res_pair(model, image, image_size)
    return resize(edited, *image.shape[:2])


def fullres(model: nn.Module, image: np.ndarray, image_size: int) -> np.ndarray:
    return run_padded(model, image)


def _ramp(length: int, overlap: int, first: bool, last: bool) -> np.ndarray:
    """A tile's blending weight along one axis: linear over the overlaps it shares."""
    weight = np.ones(length, dtype=np.float32)
    ramp = (np.arange(overlap, dtype=np.float32) + 0.5) / overlap
    if not first:
        weight[:overlap] = np.minimum(weight[:overlap], ramp)
    if not last:
        weight[-overlap:] = np.minimum(weight[-overlap:], ramp[::-1])
    return weight


def _starts(size: int, tile: int, step: int) -> list[int]:
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile, step))
    return [*starts, size - tile]


def tiles(model: nn.Module, image: np.ndarray, image_size: int) -> np.ndarray:
    h, w = image.shape[:2]
    tile, step = TILE_SIDE, TILE_SIDE - TILE_OVERLAP
    total = np.zeros((h, w, 3), dtype=np.float32)
    weights = np.zeros((h, w, 1), dtype=np.float32)
    rows, cols = _starts(h, tile, step), _starts(w, tile, step)
    for top in rows:
        for left in cols:
            patch = image[top : top + tile, left : left + tile]
            edited = run_padded(model, patch).astype(np.float32)
            ph, pw = patch.shape[:2]
            overlap_y, overlap_x = min(TILE_OVERLAP, ph), min(TILE_OVERLAP, pw)
            wy = _ramp(ph, overlap_y, top == rows[0], top == rows[-1])
            wx = _ramp(pw, overlap_x, left == cols[0], left == cols[-1])
            weight = (wy[:, None] * wx[None, :])[..., None]
            total[top : top + ph, left : left + pw] += edited * weight
            weights[top : top + ph, left : left + pw] += weight
    return np.clip(np.rint(total / weights), 0, 255).astype(np.uint8)


def _to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) → float32 (1, 3, H, W) on [0, 1]."""
    return (
        torch.from_numpy(np.require(image, requirements=["C", "W"])).permute(2, 0, 1)[None].float()
        / 255.0
    )


def _to_uint8(tensor: torch.Tensor) -> np.ndarray:
    pixels = (tensor.clamp(0, 1) * 255).round().to(torch.uint8)
    return pixels[0].permute(1, 2, 0).contiguous().numpy()


def _up(tensor: torch.Tensor, height: int, width: int, mode: str) -> torch.Tensor:
    if tensor.shape[-2:] == (height, width):
        return tensor
    return F.interpolate(tensor, size=(height, width), mode=mode, align_corners=False)


def residual(model: nn.Module, image: np.ndarray, image_size: int) -> np.ndarray:
    small, edited = low_res_pair(model, image, image_size)
    change = _to_tensor(edited) - _to_tensor(small)
    return _to_uint8(_to_tensor(image) + _up(change, *image.shape[:2], "bicubic"))


def _box(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean over the (2r+1)² window around every pixel, windows cut at the border."""
    return F.avg_pool2d(x, 2 * radius + 1, 1, radius, count_include_pad=False)


def fit_local_affine(
    source: torch.Tensor, target: torch.Tensor, radius: int, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel affine colour maps (A: (1, 3, 3, H, W), b: (1, 3, H, W)) with
    ``target ≈ A·source + b`` in every (2r+1)² window, ridge ``eps`` on A (the guided
    filter with a colour guide), averaged over the windows covering each pixel."""
    mean_s, mean_t = _box(source, radius), _box(target, radius)
    # Σ_ss[i, j] and Σ_ts[i, j] per pixel: (1, 3, 3, H, W)
    ss = source[:, :, None] * source[:, None]
    ts = target[:, :, None] * source[:, None]
    shape = ss.shape
    cov_ss = _box(ss.flatten(1, 2), radius).view(shape) - mean_s[:, :, None] * mean_s[:, None]
    cov_ts = _box(ts.flatten(1, 2), radius).view(shape) - mean_t[:, :, None] * mean_s[:, None]
    eye = torch.eye(3, dtype=source.dtype)[None, :, :, None, None]
    # A = Σ_ts (Σ_ss + εI)^-1, solved per pixel: move the 3×3 axes last
    regularised = (cov_ss + eps * eye).permute(0, 3, 4, 1, 2)
    a = torch.linalg.solve(regularised, cov_ts.permute(0, 3, 4, 2, 1)).transpose(-1, -2)
    a = a.permute(0, 3, 4, 1, 2)  # back to (1, 3, 3, H, W): A[i, j] maps source j → target i
    b = mean_t - (a * mean_s[:, None]).sum(2)
    return _box(a.flatten(1, 2), radius).view(shape), _box(b, radius)


def apply_affine(a: torch.Tensor, b: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    return (a * source[:, None]).sum(2) + b


def _colour_maps(model: nn.Module, image: np.ndarray, image_size: int):
    """The low-resolution pair as [0, 1] tensors and its local affine colour maps."""
    small, edited = low_res_pair(model, image, image_size)
    source, target = _to_tensor(small).double(), _to_tensor(edited).double()
    a, b = fit_local_affine(source, target, GUIDED_RADIUS, GUIDED_EPS)
    return source, target, a, b


def affine(model: nn.Module, image: np.ndarray, image_size: int) -> np.ndarray:
    source, target, a, b = _colour_maps(model, image, image_size)
    unexplained = target - apply_affine(a, b, source)
    h, w = image.shape[:2]
    a_full = _up(a.flatten(1, 2), h, w, "bilinear").view(1, 3, 3, h, w)
    b_full = _up(b, h, w, "bilinear")
    full = apply_affine(a_full.float(), b_full.float(), _to_tensor(image))
    return _to_uint8(full + _up(unexplained.float(), h, w, "bicubic"))


def detail_gain(
    source: torch.Tensor, target: torch.Tensor, a: torch.Tensor, radius: int, eps: float
) -> torch.Tensor:
    """How much of the finest detail of ``source`` (what a 3×3 mean removes), mapped through
    the colour maps ``a``, the edit kept in ``target``: a per-pixel least-squares gain in
    [0, 2] (1: a colour edit, 0: a blur or pixelate that removed the detail, > 1: sharpen)."""
    mapped = apply_affine(a, torch.zeros_like(source), source - _box(source, 1))
    kept = target - _box(target, 1)
    gain = _box((kept * mapped).sum(1, keepdim=True), radius) / (
        _box((mapped * mapped).sum(1, keepdim=True), radius) + eps
    )
    return gain.clamp(0, 2)


def guided(model: nn.Module, image: np.ndarray, image_size: int) -> np.ndarray:
    source, target, a, _ = _colour_maps(model, image, image_size)
    gain = detail_gain(source, target, a, GUIDED_RADIUS, DETAIL_EPS)
    h, w = image.shape[:2]
    # the photo's detail finer than the trained size, through the local colour map, scaled
    # by how much detail the edit kept at the trained size
    detail = _to_tensor(image) - _up(source.float(), h, w, "bicubic")
    a_full = _up(a.flatten(1, 2).float(), h, w, "bilinear").view(1, 3, 3, h, w)
    mapped = apply_affine(a_full, torch.zeros_like(detail), detail)
    gain_full = _up(gain.float(), h, w, "bilinear")
    return _to_uint8(_up(target.float(), h, w, "bicubic") + gain_full * mapped)


def bands(model: nn.Module, image: np.ndarray, image_size: int) -> np.ndarray:
    """Coarse structure from the GAN at its trained size, fine detail from the GAN at full
    size: each is right in its own band, for edits relative to the image (blur, frames)
    and for edits at the pixel scale (sketch lines, colour maps) respectively."""
    small, edited = low_res_pair(model, image, image_size)
    h, w = image.shape[:2]
    full = _to_tensor(fullres(model, image, image_size))
    coarse_of_full = _up(_to_tensor(resize(_to_uint8(full), *small.shape[:2])), h, w, "bicubic")
    return _to_uint8(_up(_to_tensor(edited), h, w, "bicubic") + full - coarse_of_full)


# The strategies by name: `wgen apply --strategy` and the benchmark read this table.
STRATEGIES: dict[str, Strategy] = {
    "bands": bands,
    "guided": guided,
    "affine": affine,
    "residual": residual,
    "fullres": fullres,
    "tiles": tiles,
    "upscaled": upscaled,
}
# Chosen on the development concepts (4 training, 2 validation), never on the held-out ones
# the benchmark reports: guided won 5 of 6 against "upscaled" at 256 px (median L1 0.064 and
# 0.049), bands 4 of 6 (0.065, 0.053). On the 12 held-out concepts, scored once per
# strategy, bands won more (9 vs 6) and guided kept the lower median L1 (0.059 vs 0.064):
# docs/results/apply/README.md.
DEFAULT_STRATEGY = "guided"


def edit_full_size(
    model: nn.Module, image: np.ndarray, image_size: int, strategy: str = DEFAULT_STRATEGY
) -> np.ndarray:
    """``model``'s edit of the uint8 (H, W, 3) ``image`` at its own size, by ``strategy``."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; valid: {', '.join(STRATEGIES)}")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or 0 in image.shape:
        raise ValueError(f"expected a uint8 (H, W, 3) image, got {image.dtype} {image.shape}")
    with torch.no_grad():
        return STRATEGIES[strategy](model, image, image_size)
