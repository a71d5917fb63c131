"""p-diff's memorisation analysis on hand-made predictions and vectors."""

from __future__ import annotations

import numpy as np
import pytest

from wgen.pdiff import analysis

LABELS = np.array([0, 1, 2, 3, 4, 5])


def predictions_wrong_on(*indices: int) -> np.ndarray:
    """Predictions that are wrong exactly at ``indices``."""
    predictions = LABELS.copy()
    predictions[list(indices)] = (LABELS[list(indices)] + 1) % 6
    return predictions


@pytest.mark.parametrize(
    ("wrong_a", "wrong_b", "expected"),
    [
        ((0, 1), (1, 2), 1 / 3),  # one shared mistake of three distinct
        ((0, 1), (0, 1), 1.0),
        ((0,), (3,), 0.0),
        ((), (), 1.0),  # neither makes a mistake: they agree everywhere
        ((), (2,), 0.0),
    ],
)
def test_similarity_is_the_iou_of_wrong_predictions(wrong_a, wrong_b, expected):
    a = analysis.wrong_sets(predictions_wrong_on(*wrong_a)[None], LABELS)
    b = analysis.wrong_sets(predictions_wrong_on(*wrong_b)[None], LABELS)
    assert analysis.iou_matrix(a, b)[0, 0] == pytest.approx(expected)


def test_max_similarity_of_originals_skips_themselves():
    originals = analysis.wrong_sets(
        np.stack([predictions_wrong_on(0, 1), predictions_wrong_on(1, 2), predictions_wrong_on(4)]),
        LABELS,
    )
    np.testing.assert_allclose(
        analysis.max_similarity(originals, originals, same=True), [1 / 3, 1 / 3, 0.0]
    )
    np.testing.assert_allclose(analysis.max_similarity(originals, originals), [1.0, 1.0, 1.0])


def test_nearest_distance_and_the_baselines():
    rng = np.random.default_rng(0)
    originals = np.array([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0]], np.float32)
    np.testing.assert_allclose(
        analysis.nearest_distance(originals, originals, same=True), [5, 5, 5]
    )
    std = np.ones(2, np.float32)
    assert analysis.noise_added(originals, std, 0.0, 4, rng).shape == (4, 2)
    noisy = analysis.noise_added(originals, std, 0.5, 2000, rng)
    assert analysis.nearest_distance(noisy, originals).mean() == pytest.approx(
        0.5 * np.sqrt(np.pi / 2), rel=0.1
    )
    np.testing.assert_allclose(analysis.averaged(originals, 3, 2, rng), [[3, 4], [3, 4]])
    fitted = analysis.gaussian_fitted(originals, 5000, rng)
    np.testing.assert_allclose(fitted.mean(0), [3, 4], atol=0.15)


def test_matched_similarity_is_positive_when_generated_models_are_more_novel():
    result = analysis.matched_similarity(
        acc=np.array([0.9, 0.5]),
        sim=np.array([0.2, 0.1]),
        ref_acc=np.array([0.9, 0.9, 0.7]),
        ref_sim=np.array([0.8, 0.6, 0.1]),
        tolerance=0.01,
    )
    assert result == {"matched": 1, "of": 2, "mean_gap": pytest.approx(0.5)}
