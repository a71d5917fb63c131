"""Statistics that count every run: censored medians, paired ratios, bootstrap intervals.

A run that never reaches a target (or that the rule never stopped) has an infinite time:
it stays in every median ("never" when the median itself is infinite, with the count of
runs that got there beside it). Medians taken only over the runs that got there compare
different sets of runs, and once reversed which method was first (docs/results.md, "The
bench"). Speed-ups are medians of per-run ratios paired by (concept, seed), with a 95%
bootstrap interval that resamples whole concepts (a concept's seeds share its pairs and
difficulty), printed beside the ratio of the medians.

Pure functions on floats: ``None`` is read as +inf (never).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

INF = math.inf
RESAMPLES = 10_000  # bootstrap resamples; seeded, so a stored result prints the same interval


def as_time(value: float | None) -> float:
    """A time from a record: None (never got there) is +inf."""
    return INF if value is None else float(value)


def censored_median(values: Sequence[float | None]) -> float | None:
    """The median over every run, never-reached runs as +inf; None for no runs."""
    if not values:
        return None
    return float(np.median([as_time(v) for v in values]))


def paired_ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator for one (concept, seed), +inf for never: the method (the
    denominator) got there and the reference did not → +inf; the reverse → 0; neither →
    None (no information, left out and counted). Times are > 0 (see the report's floor)."""
    top, bottom = as_time(numerator), as_time(denominator)
    if math.isinf(top) and math.isinf(bottom):
        return None
    if math.isinf(bottom):
        return 0.0
    if math.isinf(top):
        return INF
    return top / bottom


def paired_ratios(
    numerators: Mapping[tuple[str, int], float | None],
    denominators: Mapping[tuple[str, int], float | None],
) -> dict[tuple[str, int], float]:
    """Per (concept, seed) present in both: `paired_ratio`, the undefined ones left out."""
    ratios = {}
    for key in sorted(set(numerators) & set(denominators)):
        value = paired_ratio(numerators[key], denominators[key])
        if value is not None:
            ratios[key] = value
    return ratios


def bootstrap_median(
    by_concept: Mapping[str, Sequence[float]],
    level: float = 0.95,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> tuple[float, float] | None:
    """A percentile interval for the median of every value, resampling concepts with
    replacement (each brings all its values). Infinite values are kept; the interval's
    ends are order statistics, never interpolated (inf - inf is not a number)."""
    groups = [np.asarray(v, dtype=float) for v in by_concept.values() if len(v)]
    if not groups:
        return None
    rng = np.random.default_rng(seed)
    medians = np.empty(resamples)
    for i in range(resamples):
        picked = rng.integers(len(groups), size=len(groups))
        medians[i] = np.median(np.concatenate([groups[j] for j in picked]))
    tail = (1 - level) / 2
    low = np.quantile(medians, tail, method="inverted_cdf")
    high = np.quantile(medians, 1 - tail, method="inverted_cdf")
    return float(low), float(high)


def ratio_summary(ratios: Mapping[tuple[str, int], float], seed: int = 0) -> dict | None:
    """Median of the paired ratios, its interval over concepts and the pair count."""
    if not ratios:
        return None
    by_concept: dict[str, list[float]] = {}
    for (concept, _), value in ratios.items():
        by_concept.setdefault(concept, []).append(value)
    interval = bootstrap_median(by_concept, seed=seed)
    return {
        "median": float(np.median(list(ratios.values()))),
        "interval": list(interval) if interval else None,
        "pairs": len(ratios),
    }


def ratio_of_medians(numerator: float | None, denominator: float | None) -> float | None:
    """The ratio of two censored medians (shown beside the paired median): +inf / finite is
    +inf, finite / +inf is 0, +inf / +inf is undefined (None)."""
    if numerator is None or denominator is None:
        return None
    return paired_ratio(numerator, denominator)
