"""Source photographs and the pool of random crops the image pairs are cut from.

By default the photos are the real photographs that ship inside scikit-image and
scikit-learn, so the pipeline runs offline; a user may point ``data.images_dir`` at a folder
of their own JPEG/PNG photos instead. Each photo is cut into many random crops of random
scale, so a few photos still give a diverse pool of small training images.
"""

from __future__ import annotations

import io
import logging
import math
import warnings
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from wgen.config import DataConfig

log = logging.getLogger(__name__)

Photo = tuple[str, np.ndarray]  # (name, uint8 (H, W, 3))

# scikit-image photos as (name, loader in skimage.data, file that must sit in the installed
# package). The file check keeps us offline: other images are fetched with pooch. Skipped on
# purpose: `cat` (the same photo as `chelsea`), `logo` and `horse` (drawings, not photos).
_SKIMAGE_PHOTOS: tuple[tuple[str, str, str], ...] = (
    ("astronaut", "astronaut", "astronaut.png"),
    ("coffee", "coffee", "coffee.png"),
    ("chelsea", "chelsea", "chelsea.png"),
    ("rocket", "rocket", "rocket.jpg"),
    ("retina", "retina", "retina.jpg"),
    ("hubble_deep_field", "hubble_deep_field", "hubble_deep_field.jpg"),
    ("immunohistochemistry", "immunohistochemistry", "ihc.png"),
    ("colorwheel", "colorwheel", "color.png"),
    ("motorcycle", "stereo_motorcycle", "motorcycle_left.png"),
    ("camera", "camera", "camera.png"),
    ("coins", "coins", "coins.png"),
    ("moon", "moon", "moon.png"),
    ("brick", "brick", "brick.png"),
    ("grass", "grass", "grass.png"),
    ("gravel", "gravel", "gravel.png"),
    ("clock", "clock", "clock_motion.png"),
    ("cell", "cell", "cell.png"),
    ("page", "page", "page.png"),
    ("text", "text", "text.png"),
    ("microaneurysms", "microaneurysms", "microaneurysms.png"),
)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
LUMA_BT601 = (0.299, 0.587, 0.114)  # ITU-R BT.601 weights of R, G, B in luminance


def check_images(images: np.ndarray, what: str = "images", allow_empty: bool = False) -> np.ndarray:
    """``images`` if it is a uint8 (N, H, W, 3) batch (N >= 1 unless ``allow_empty``), else a
    ``ValueError`` naming the convention: fail early instead of computing a wrong number."""
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8:
        dtype = getattr(images, "dtype", None)
        found = (
            f"{type(images).__name__} of {dtype}" if dtype is not None else type(images).__name__
        )
        raise ValueError(f"{what}: expected a uint8 numpy array (N, H, W, 3), got {found}")
    if images.ndim != 4 or images.shape[-1] != 3 or (len(images) == 0 and not allow_empty):
        at_least = "" if allow_empty else " with N >= 1"
        raise ValueError(f"{what}: expected shape (N, H, W, 3){at_least}, got {images.shape}")
    return images


def to_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """Any 2-D/3-D image array (bool, float in [0, 1], uint8; gray, RGB, RGBA) → uint8 RGB."""
    image = np.asarray(image)
    if image.dtype == bool:
        image = image.astype(np.uint8) * 255
    elif np.issubdtype(image.dtype, np.floating):
        image = np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)
    elif image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"not an image: shape {image.shape}")
    return np.ascontiguousarray(image[:, :, :3])


def builtin_photos() -> list[Photo]:
    """The real photographs shipped inside scikit-image and scikit-learn, as uint8 RGB.

    Only images present in the installed packages are used (nothing is downloaded); those
    missing from this installation are skipped silently.
    """
    import skimage.data
    from sklearn.datasets import load_sample_images

    data_dir = Path(skimage.data.__file__).parent
    photos: list[Photo] = []
    for name, loader, filename in _SKIMAGE_PHOTOS:
        if not (data_dir / filename).is_file():
            continue
        try:
            image = getattr(skimage.data, loader)()
        except Exception as err:  # an installation without this image: skip, as documented
            log.debug("skipping skimage.data.%s: %s", loader, err)
            continue
        photos.append((name, to_rgb_uint8(image[0] if isinstance(image, tuple) else image)))
    samples = load_sample_images()
    for filename, image in zip(samples.filenames, samples.images, strict=True):
        photos.append((Path(filename).stem, to_rgb_uint8(image)))
    return photos


def _unique_names(paths: list[Path]) -> list[str]:
    """File stems as photo names; a stem shared by two files keeps its suffix to stay unique."""
    stems = [p.stem for p in paths]
    return [p.stem if stems.count(p.stem) == 1 else p.name for p in paths]


def folder_photos(path: str | Path) -> list[Photo]:
    """The JPEG/PNG photos directly inside ``path`` (sorted by name), as uint8 RGB.

    Unreadable files are skipped and reported in one warning; a missing folder, a folder
    without JPEG/PNG files, or one where no file can be read is a ``ValueError``.
    """
    folder = Path(path)
    expected = f"expected a folder of JPEG or PNG photos ({', '.join(IMAGE_SUFFIXES)})"
    if not folder.is_dir():
        raise ValueError(f"images folder {folder} does not exist or is not a folder; {expected}")
    files = sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    if not files:
        raise ValueError(f"images folder {folder} has no JPEG or PNG files; {expected}")
    photos: list[Photo] = []
    skipped: list[str] = []
    for name, file in zip(_unique_names(files), files, strict=True):
        try:
            with Image.open(file) as image:
                photos.append((name, to_rgb_uint8(np.asarray(image.convert("RGB")))))
        except (OSError, ValueError, Image.DecompressionBombError):
            skipped.append(file.name)
    if not photos:
        raise ValueError(
            f"none of the {len(files)} JPEG/PNG files in {folder} could be read "
            f"({', '.join(skipped)}); {expected}"
        )
    if skipped:
        warnings.warn(
            f"skipped {len(skipped)} of {len(files)} files in {folder} that could not be read: "
            f"{', '.join(skipped)}",
            stacklevel=2,
        )
    return photos


def load_photos(cfg: DataConfig) -> list[Photo]:
    """The source photos of a run: ``cfg.images_dir`` if set, else the built-in photographs."""
    if cfg.images_dir:
        return folder_photos(cfg.images_dir)
    photos = builtin_photos()
    if not photos:
        raise ValueError(
            "no built-in photographs found in scikit-image / scikit-learn; "
            "set data.images_dir to a folder of JPEG or PNG photos"
        )
    return photos


def _random_crop(photo: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A square crop of random side between ``size`` and half the short side, resized to ``size``.

    The side is log-uniform so fine textures (small crops) and whole scenes (large crops) are
    about equally common.
    """
    h, w = photo.shape[:2]
    short = min(h, w)
    low = min(size, short)
    high = max(low, short // 2)
    side = min(high, round(math.exp(rng.uniform(math.log(low), math.log(high)))))
    top = int(rng.integers(0, h - side + 1))
    left = int(rng.integers(0, w - side + 1))
    crop = photo[top : top + side, left : left + side]
    if side == size:
        return np.ascontiguousarray(crop)
    return np.asarray(Image.fromarray(crop).resize((size, size), Image.Resampling.LANCZOS))


def crop_pool(
    photos: list[Photo], size: int, crops_per_photo: int, seed: int
) -> tuple[list[str], np.ndarray]:
    """``crops_per_photo`` random crops of every photo: ids ``"name/017"`` and uint8 (N, size, size, 3).

    Seeded per photo by (seed, photo name), so a photo's crops do not change when other
    photos are added or removed.
    """
    if size < 1 or crops_per_photo < 0:
        raise ValueError(f"need size ≥ 1 and crops_per_photo ≥ 0, got {size} and {crops_per_photo}")
    ids: list[str] = []
    crops: list[np.ndarray] = []
    for name, photo in photos:
        rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
        for j in range(crops_per_photo):
            ids.append(f"{name}/{j:03d}")
            crops.append(_random_crop(photo, size, rng))
    if not crops:
        return ids, np.zeros((0, size, size, 3), dtype=np.uint8)
    return ids, np.stack(crops)


def encode_png(images: np.ndarray) -> list[bytes]:
    """uint8 (N, H, W, 3) → PNG bytes per image (lossless; fast compression)."""
    encoded = []
    for image in images:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG", compress_level=1)
        encoded.append(buffer.getvalue())
    return encoded


def decode_png(blobs: list[bytes] | np.ndarray) -> np.ndarray:
    """PNG bytes per image → uint8 (N, H, W, 3)."""
    return np.stack([np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in blobs])
