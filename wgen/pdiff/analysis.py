"""The memorisation analysis (p-diff section 4; Zeng et al. 2025, "Generative Modeling of
Weights: Generalization or Memorization?"), on plain arrays.

- Similarity of two classifiers: the IoU of their sets of wrong predictions on held-out
  data, |W_a ∩ W_b| / |W_a ∪ W_b| (1 when neither makes a mistake: they agree everywhere).
- For each model: its maximum similarity to any original checkpoint, and its distance in
  weight space (L2 over the flat vector) to the nearest original; for the originals
  themselves, to the nearest *other* original.
- Zeng et al.'s baselines, which a generator must beat to show it does more than copy or
  average: originals + Gaussian noise (amplitudes in units of each tensor's std over the
  zoo), the average of k random originals, and samples of a per-parameter Gaussian fitted
  to the originals.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def wrong_sets(predictions: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(M, N) bool: model m is wrong on example n."""
    return np.asarray(predictions) != np.asarray(labels)[None, :]


def iou_matrix(wrong_a: np.ndarray, wrong_b: np.ndarray) -> np.ndarray:
    """(Ma, Mb) IoU of every pair of wrong-prediction sets."""
    a, b = wrong_a.astype(np.float64), wrong_b.astype(np.float64)
    intersection = a @ b.T
    union = a.sum(1)[:, None] + b.sum(1)[None, :] - intersection
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, intersection / np.maximum(union, 1), 1.0)


def max_similarity(
    wrong: np.ndarray, wrong_originals: np.ndarray, same: bool = False
) -> np.ndarray:
    """Each model's highest IoU with any original; ``same``: the models are the originals,
    so each is compared with the others only."""
    similarity = iou_matrix(wrong, wrong_originals)
    if same:
        np.fill_diagonal(similarity, -np.inf)
    return similarity.max(axis=1)


def pairwise_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(Ma, Mb) Euclidean distances, in float64 (differences of near-equal checkpoints)."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    squared = (a**2).sum(1)[:, None] + (b**2).sum(1)[None, :] - 2.0 * a @ b.T
    return np.sqrt(np.maximum(squared, 0.0))


def nearest_distance(vectors: np.ndarray, originals: np.ndarray, same: bool = False) -> np.ndarray:
    distances = pairwise_distances(vectors, originals)
    if same:
        np.fill_diagonal(distances, np.inf)
    return distances.min(axis=1)


# ---------------------------------------------------------------------------------------
# Baselines
# ---------------------------------------------------------------------------------------


def noise_added(
    originals: np.ndarray, std: np.ndarray, scale: float, count: int, rng: np.random.Generator
) -> np.ndarray:
    """``count`` random originals plus N(0, (scale·std)²), std per value (each tensor's std)."""
    picks = rng.integers(0, len(originals), count)
    return (
        originals[picks] + scale * std * rng.standard_normal((count, originals.shape[1]))
    ).astype(np.float32)


def averaged(originals: np.ndarray, k: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` times: the mean of k originals drawn without replacement."""
    k = min(k, len(originals))
    return np.stack(
        [originals[rng.choice(len(originals), k, replace=False)].mean(0) for _ in range(count)]
    ).astype(np.float32)


def gaussian_fitted(originals: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """Samples of N(μ, diag σ²) with μ, σ per parameter over the originals."""
    mu, sigma = originals.mean(0), originals.std(0)
    return (mu + sigma * rng.standard_normal((count, originals.shape[1]))).astype(np.float32)


# ---------------------------------------------------------------------------------------
# Summaries
# ---------------------------------------------------------------------------------------


def summary(values: np.ndarray) -> dict[str, float]:
    values = np.asarray(values, np.float64)
    return {
        "best": float(values.max()),
        "mean": float(values.mean()),
        "median": float(np.median(values)),
        "min": float(values.min()),
    }


def method_stats(
    heldout_acc: np.ndarray, train_acc: np.ndarray, similarity: np.ndarray, distance: np.ndarray
) -> dict[str, Any]:
    """Accuracy (best/mean/median), the model picked on the training set, similarity and
    nearest-original distance statistics of one method's models."""
    picked = int(np.argmax(train_acc))
    return {
        "models": int(len(heldout_acc)),
        "heldout_acc": summary(heldout_acc),
        "selected_on_train": {
            "train_acc": float(train_acc[picked]),
            "heldout_acc": float(heldout_acc[picked]),
        },
        "max_similarity": summary(similarity),
        "nearest_distance": summary(distance),
    }


def matched_similarity(
    acc: np.ndarray, sim: np.ndarray, ref_acc: np.ndarray, ref_sim: np.ndarray, tolerance: float
) -> dict[str, float]:
    """Novelty at equal accuracy: for each model, the mean max-similarity of the reference
    models (e.g. noise-added originals) whose accuracy is within ``tolerance`` of its own.
    Returns how many models found a match and the mean of (reference − model) similarity:
    > 0 means the models are less similar to the originals (more novel) than the reference
    at the same accuracy."""
    gaps = []
    for a, s in zip(acc, sim, strict=True):
        close = np.abs(ref_acc - a) <= tolerance
        if close.any():
            gaps.append(float(ref_sim[close].mean() - s))
    return {
        "matched": len(gaps),
        "of": int(len(acc)),
        "mean_gap": float(np.mean(gaps)) if gaps else float("nan"),
    }
