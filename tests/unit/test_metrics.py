"""Paired metrics, the Fréchet distance and its feature extractors, and evaluate_generator."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage
from torch import nn

from wgen.gan import metrics

# SHA-256 of the offline extractor's conv weights. It must never change: FD values recorded
# with the offline extractor are only comparable while it holds. If this fails, the weights
# changed (code, seed, or torch's Mersenne Twister), and old results are not comparable.
OFFLINE_FINGERPRINT = "794529ae6eea9cb2"


def _photos(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    """Photo-like uint8 NHWC images: smooth colour fields, hard-edged shapes and grain."""
    rng = np.random.default_rng(seed)
    coarse = torch.from_numpy(rng.uniform(0, 255, size=(n, 3, 4, 4)).astype(np.float32))
    images = nn.functional.interpolate(coarse, size=(size, size), mode="bilinear").numpy()
    for image in images:
        top, left = rng.integers(0, size // 2, size=2)
        height, width = rng.integers(size // 4, size // 2, size=2)
        image[:, top : top + height, left : left + width] = rng.uniform(0, 255, size=(3, 1, 1))
    images += rng.normal(0, 6, size=images.shape)
    return np.clip(images, 0, 255).round().astype(np.uint8).transpose(0, 2, 3, 1).copy()


def _blur(images: np.ndarray, sigma: float) -> np.ndarray:
    blurred = ndimage.gaussian_filter(images.astype(np.float64), sigma=(0, sigma, sigma, 0))
    return np.clip(blurred, 0, 255).round().astype(np.uint8)


def _tint(images: np.ndarray, strength: float) -> np.ndarray:
    orange = np.array([255.0, 140.0, 20.0])
    tinted = (1 - strength) * images.astype(np.float64) + strength * orange
    return np.clip(tinted, 0, 255).round().astype(np.uint8)


@pytest.fixture(scope="module")
def offline() -> metrics.OfflineFeatureExtractor:
    return metrics.OfflineFeatureExtractor()


# ----------------------------------------------------------------------------- conversions


def test_uint8_model_round_trip_is_exact() -> None:
    every_value = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1).repeat(3, axis=3)
    signed = metrics.uint8_to_model(every_value)
    assert signed.shape == (1, 3, 16, 16) and signed.min() == -1.0 and signed.max() == 1.0
    np.testing.assert_array_equal(metrics.model_to_uint8(signed), every_value)


@pytest.mark.parametrize(
    "bad",
    [np.zeros((2, 8, 8, 3), np.float32), np.zeros((8, 8, 3), np.uint8), torch.zeros(2, 3, 8, 8)],
)
def test_metrics_reject_other_conventions(bad: object) -> None:
    with pytest.raises((TypeError, ValueError), match="uint8|shape"):
        metrics.to_unit(bad)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- paired metrics


def test_paired_metrics_of_identical_images() -> None:
    images = _photos(4)
    assert metrics.paired_l1(images, images) == 0.0
    assert metrics.psnr(images, images) == metrics.PSNR_CAP_DB


def test_paired_metrics_of_a_known_offset() -> None:
    target = np.full((3, 8, 8, 3), 100, np.uint8)
    pred = target + np.uint8(10)
    assert metrics.paired_l1(pred, target) == pytest.approx(10 / 255)
    assert metrics.psnr(pred, target) == pytest.approx(20 * math.log10(255 / 10))


def test_paired_metrics_reject_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="shape"):
        metrics.paired_l1(_photos(2, size=16), _photos(2, size=32))


# ----------------------------------------------------------------------------- Fréchet distance


def test_identical_sets_have_zero_distance(offline: metrics.OfflineFeatureExtractor) -> None:
    images = _photos(8)
    assert metrics.ReferenceStats.from_images(images, offline).score(images) == pytest.approx(
        0.0, abs=1e-6
    )


@pytest.mark.parametrize("n_images", [8, 32])
@pytest.mark.parametrize(
    ("edit", "levels"), [(_blur, (0.5, 1.0, 2.0)), (_tint, (0.1, 0.3, 0.6))], ids=["blur", "tint"]
)
def test_distance_grows_with_edit_strength(
    offline: metrics.OfflineFeatureExtractor, edit, levels, n_images: int
) -> None:
    images = _photos(n_images, seed=1)
    reference = metrics.ReferenceStats.from_images(images, offline)
    distances = [reference.score(edit(images, level)) for level in levels]
    assert 0 < distances[0] < distances[1] < distances[2], distances


def test_reference_stats_match_the_direct_distance(
    offline: metrics.OfflineFeatureExtractor,
) -> None:
    targets, preds = _photos(16, seed=2), _tint(_photos(16, seed=2), 0.3)
    reference = metrics.ReferenceStats.from_images(targets, offline)
    direct = metrics.frechet_distance(offline.features(preds), offline.features(targets))
    assert reference.score(preds) == pytest.approx(direct)


@pytest.mark.parametrize("size", [16, 32])
def test_offline_features_are_small_and_finite(
    offline: metrics.OfflineFeatureExtractor, size: int
) -> None:
    features = offline.features(_photos(5, size=size))
    assert features.shape == (5, offline.dim) and offline.dim <= 128
    assert np.isfinite(features).all()
    flat = offline.features(np.full((2, size, size, 3), 128, np.uint8))
    assert np.isfinite(flat).all()  # a constant image must not give NaN (std of zero)


def test_offline_extractor_is_identical_across_builds() -> None:
    first, second = metrics.OfflineFeatureExtractor(), metrics.OfflineFeatureExtractor()
    assert first.fingerprint == second.fingerprint
    assert first.fingerprint.startswith(OFFLINE_FINGERPRINT)
    images = _photos(6)
    np.testing.assert_array_equal(first.features(images), second.features(images))


def test_reference_stats_extract_the_reference_once(offline: metrics.OfflineFeatureExtractor):
    """The per-concept loop evaluates often: each score extracts only the predictions'
    features (the reference's are computed once), and scores agree with a fresh reference."""

    class CountingExtractor(metrics.OfflineFeatureExtractor):
        def __init__(self) -> None:
            super().__init__()
            self.batches: list[int] = []

        def features(self, images: np.ndarray) -> np.ndarray:
            self.batches.append(len(images))
            return super().features(images)

    counting = CountingExtractor()
    reference = metrics.ReferenceStats.from_images(_photos(64, seed=3), counting)
    preds = _blur(_photos(64, seed=3), 1.0)
    scores = [reference.score(preds[:n]) for n in (64, 32, 16)]
    assert counting.batches == [64, 64, 32, 16]
    fresh = metrics.ReferenceStats.from_images(_photos(64, seed=3), offline)
    assert scores[0] == pytest.approx(fresh.score(preds))


def test_gaussian_stats_need_two_samples() -> None:
    with pytest.raises(ValueError, match="n >= 2"):
        metrics.gaussian_stats(np.zeros((1, 4)))


# ----------------------------------------------------------------------------- extractor choice


def test_unknown_extractor_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="inception.*offline|offline.*inception"):
        metrics.build_feature_extractor("resnet")


def test_missing_inception_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv(metrics.INCEPTION_ENV, str(tmp_path))
    with pytest.raises(FileNotFoundError) as error:
        metrics.build_feature_extractor("inception")
    message = str(error.value)
    assert str(tmp_path) in message and metrics.INCEPTION_ENV in message
    assert metrics.INCEPTION_FILENAME in message and "offline" in message
    assert metrics.build_feature_extractor("auto").name == "offline"


class _StandInFeatures(nn.Module):
    """A clean-fid custom feature extractor: 299x299 float images on 0-255 → 48 features."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        assert images.shape[1:] == (3, 299, 299) and images.dtype == torch.float32
        assert 0.0 <= images.min() and images.max() <= 255.0
        return nn.functional.adaptive_avg_pool2d(images / 255.0, 4).flatten(1)


def test_clean_fid_path_with_a_stand_in_model() -> None:
    extractor = metrics.CleanFidExtractor(_StandInFeatures(), name="stand-in")
    images = _photos(6, size=16)
    features = extractor.features(images)
    assert features.shape == (6, 48)
    reference = metrics.ReferenceStats.from_images(images, extractor)
    assert reference.score(images) == pytest.approx(0.0, abs=1e-6)
    assert reference.score(_tint(images, 0.5)) > 0.01


class _FakeInception(nn.Module):
    """Has the interface clean-fid's InceptionV3W uses: a ``layers`` module giving 2048 features."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2048))

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        return self.layers(x)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_local_inception_file_is_loaded(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    torch.jit.script(_FakeInception()).save(str(tmp_path / metrics.INCEPTION_FILENAME))
    monkeypatch.setenv(metrics.INCEPTION_ENV, str(tmp_path))
    extractor = metrics.build_feature_extractor("auto")
    assert extractor.name == "inception"
    assert extractor.features(_photos(3, size=16)).shape == (3, 2048)


# ----------------------------------------------------------------------------- evaluate_generator


class _ModeRecorder(nn.Identity):
    """Identity that records the train flag and grad mode it was called under."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.seen = (
            self.training,
            torch.is_grad_enabled(),
            images.min().item(),
            images.max().item(),
        )
        return images


def test_identity_generator_scores_perfectly(offline: metrics.OfflineFeatureExtractor) -> None:
    generator = _ModeRecorder().train()
    sources = _photos(8)
    scores = metrics.evaluate_generator(generator, sources, sources, offline)
    assert scores["l1"] == 0.0 and scores["psnr"] == metrics.PSNR_CAP_DB
    assert scores["fd"] == pytest.approx(0.0, abs=1e-6)
    training, grad_enabled, low, high = generator.seen
    assert not training and not grad_enabled and -1.0 <= low and high <= 1.0
    assert generator.training  # the previous mode is restored


def test_evaluate_generator_uses_the_given_reference(
    offline: metrics.OfflineFeatureExtractor,
) -> None:
    sources, targets = _photos(8, seed=4), _tint(_photos(8, seed=4), 0.4)
    reference = metrics.ReferenceStats.from_images(targets, offline)
    with_reference = metrics.evaluate_generator(nn.Identity(), sources, targets, offline, reference)
    assert with_reference == pytest.approx(
        metrics.evaluate_generator(nn.Identity(), sources, targets, offline)
    )
    assert with_reference["fd"] > 0 and with_reference["l1"] > 0


def test_evaluate_generator_rejects_a_reference_from_another_extractor(
    offline: metrics.OfflineFeatureExtractor,
) -> None:
    images = _photos(4)
    other = metrics.CleanFidExtractor(_StandInFeatures(), name="stand-in")
    reference = metrics.ReferenceStats.from_images(images, other)
    with pytest.raises(ValueError, match="stand-in"):
        metrics.evaluate_generator(nn.Identity(), images, images, offline, reference)


def test_inception_weights_are_never_taken_from_the_temp_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    # TorchScript is code and /tmp is writable by anyone: only $WGEN_INCEPTION_PATH or
    # wgen's cache in the user's own folder are looked at.
    monkeypatch.delenv(metrics.INCEPTION_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    paths = metrics.inception_search_paths()
    assert paths == [tmp_path / "cache" / "wgen" / metrics.INCEPTION_FILENAME]
