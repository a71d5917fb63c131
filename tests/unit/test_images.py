"""Source photos (built-in and from a folder) and the seeded crop pool."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from wgen.config import DataConfig
from wgen.data.images import (
    builtin_photos,
    check_images,
    crop_pool,
    folder_photos,
    load_photos,
    to_rgb_uint8,
)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def photos() -> list[tuple[str, np.ndarray]]:
    return builtin_photos()


def _save(folder: Path, name: str, size: tuple[int, int] = (40, 30), colour: int = 90) -> None:
    Image.new("RGB", size, (colour, 2 * colour % 256, 50)).save(folder / name)


def test_builtin_photos_are_real_rgb_photographs(photos: list[tuple[str, np.ndarray]]) -> None:
    names = [name for name, _ in photos]
    assert {"astronaut", "coffee", "chelsea", "camera", "china", "flower"} <= set(names)
    assert len(names) == len(set(names))
    for name, image in photos:
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3, name
        assert min(image.shape[:2]) >= 64, name


def test_load_photos_defaults_to_builtin(photos: list[tuple[str, np.ndarray]]) -> None:
    assert [n for n, _ in load_photos(DataConfig())] == [n for n, _ in photos]


@pytest.mark.parametrize("size", [16, 32])
def test_crop_pool_shapes_ids_and_determinism(
    photos: list[tuple[str, np.ndarray]], size: int
) -> None:
    subset = photos[:3]
    ids, crops = crop_pool(subset, size, crops_per_photo=5, seed=0)
    assert crops.shape == (15, size, size, 3) and crops.dtype == np.uint8
    assert ids[:2] == [f"{subset[0][0]}/000", f"{subset[0][0]}/001"] and len(set(ids)) == 15
    again_ids, again = crop_pool(subset, size, crops_per_photo=5, seed=0)
    assert again_ids == ids
    np.testing.assert_array_equal(again, crops)
    assert not np.array_equal(crop_pool(subset, size, 5, seed=1)[1], crops)
    # Crops are diverse, not copies of one window.
    assert len({crop.tobytes() for crop in crops}) == len(crops)


def test_a_photos_crops_do_not_depend_on_the_other_photos(
    photos: list[tuple[str, np.ndarray]],
) -> None:
    _, alone = crop_pool(photos[1:2], 16, 4, seed=3)
    _, together = crop_pool(photos[:2], 16, 4, seed=3)
    np.testing.assert_array_equal(together[4:], alone)


def test_small_photos_are_upscaled_to_the_crop_size() -> None:
    ids, crops = crop_pool([("tiny", np.full((10, 12, 3), 7, np.uint8))], 16, 2, seed=0)
    assert crops.shape == (2, 16, 16, 3)


def test_to_rgb_uint8_converts_gray_float_bool_and_rgba() -> None:
    assert to_rgb_uint8(np.zeros((4, 5), bool)).shape == (4, 5, 3)
    assert to_rgb_uint8(np.ones((4, 5), np.float64)).max() == 255
    assert to_rgb_uint8(np.zeros((4, 5, 4), np.uint8)).shape == (4, 5, 3)


def test_folder_photos_reads_jpeg_and_png(tmp_path: Path) -> None:
    _save(tmp_path, "b.png")
    _save(tmp_path, "a.JPG")
    (tmp_path / "notes.txt").write_text("not an image")
    photos = folder_photos(tmp_path)
    assert [name for name, _ in photos] == ["a", "b"]
    assert photos[0][1].shape == (30, 40, 3) and photos[0][1].dtype == np.uint8
    assert [n for n, _ in load_photos(DataConfig(images_dir=str(tmp_path)))] == ["a", "b"]


def test_corrupt_files_are_skipped_with_one_warning(tmp_path: Path) -> None:
    _save(tmp_path, "good.png")
    (tmp_path / "broken.jpg").write_bytes(b"\x00garbage, not a jpeg" * 10)
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.warns(
        UserWarning, match=r"skipped 2 of 3 files .*broken\.jpg, empty\.png"
    ) as caught:
        photos = folder_photos(tmp_path)
    assert len(caught) == 1
    assert [name for name, _ in photos] == ["good"]


def test_missing_or_empty_folders_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist.*JPEG or PNG"):
        folder_photos(tmp_path / "missing")
    with pytest.raises(ValueError, match="no JPEG or PNG files"):
        folder_photos(tmp_path)
    (tmp_path / "bad.png").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="none of the 1 JPEG/PNG files.*could be read"):
        folder_photos(tmp_path)


def test_same_stem_photos_keep_distinct_names(tmp_path: Path) -> None:
    _save(tmp_path, "x.png")
    _save(tmp_path, "x.jpg")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        names = [name for name, _ in folder_photos(tmp_path)]
    assert names == ["x.jpg", "x.png"]


@pytest.mark.parametrize(
    ("images", "match"),
    [
        (np.zeros((2, 8, 8, 3), np.float32), "uint8"),
        (torch.zeros(2, 8, 8, 3, dtype=torch.uint8), "uint8.*Tensor"),
        (np.zeros((8, 8, 3), np.uint8), r"\(N, H, W, 3\)"),
        (np.zeros((0, 8, 8, 3), np.uint8), "N >= 1"),
    ],
)
def test_check_images_names_the_convention(images, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        check_images(images)


def test_check_images_passes_a_batch_through() -> None:
    images = np.zeros((2, 8, 8, 3), np.uint8)
    assert check_images(images) is images
    empty = np.zeros((0, 8, 8, 3), np.uint8)
    assert check_images(empty, allow_empty=True) is empty
