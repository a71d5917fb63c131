"""The search space of `wgen tune`: ``tune.space`` read, checked and turned into Tune's.

``tune.space`` maps config keys (``section.key``) to either a list of values (a grid: every
value is tried, and grids of several keys multiply) or ``{dist: [low, high]}`` with dist one
of ``uniform``, ``loguniform``, ``randint`` (drawn ``tune.num_samples`` times per grid
point). Every value is coerced to its field's type here, and the values a trial could not
run with (b <= 0, a d that SinEnc(n, d) cannot take, a learning rate <= 0, an empty list)
are refused here, naming the key, before Ray starts anything. Pure: no Ray import until
`to_tune_space`.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from wgen.config import Config, ConfigError, TrainConfig, apply_override

DISTRIBUTIONS = ("uniform", "loguniform", "randint")
# Sections a trial may vary: the tune section itself and the data/collection that made the
# weights are fixed for a whole search (the trials share one weight dataset).
SEARCHABLE_SECTIONS = ("denoiser", "train", "generate", "gan", "lora")

# Constraints beyond the field's type; value → None if fine, else what is wrong.
_RULES: dict[str, Callable[[Any], str | None]] = {
    "denoiser.block_size": lambda b: None if b >= 1 else "the block size b must be >= 1",
    # SinEnc(n, d) needs at least one sinusoid (wgen.models.denoiser.sin_enc).
    "denoiser.index_dim": lambda d: None if d >= 1 else "the index encoding width d must be >= 1",
    "train.lr": lambda lr: None if lr > 0 else "the learning rate must be > 0",
    "train.epochs": lambda e: None if e >= 1 else "epochs must be >= 1",
}


class SearchSpaceError(ConfigError):
    """A ``tune.space`` entry that no trial could run with."""


@dataclass(frozen=True)
class Param:
    """One searched key: a grid of ``values`` or a distribution over ``[low, high]``."""

    key: str
    values: tuple[Any, ...] = ()  # the grid (empty for a distribution)
    dist: str | None = None  # one of DISTRIBUTIONS, or None for a grid
    low: float | None = None
    high: float | None = None

    @property
    def is_grid(self) -> bool:
        return self.dist is None


def _coerced(config: Config, key: str, value: Any) -> Any:
    """``value`` as the type of field ``key``, checked against the key's rule."""
    probe = copy.deepcopy(config)
    try:
        apply_override(probe, key, value)
    except ConfigError as err:
        raise SearchSpaceError(f"tune.space: {err}") from None
    section, name = key.split(".")
    coerced = getattr(getattr(probe, section), name)
    if isinstance(coerced, (list, dict)):
        raise SearchSpaceError(f"tune.space.{key}: only single-valued fields can be searched")
    rule = _RULES.get(key)
    problem = rule(coerced) if rule is not None and coerced is not None else None
    if problem:
        raise SearchSpaceError(f"tune.space.{key}: {value!r} is refused: {problem}")
    return coerced


def _param(config: Config, key: str, spec: Any) -> Param:
    if not isinstance(key, str) or key.count(".") != 1:
        raise SearchSpaceError(f"tune.space: key {key!r} must look like section.key")
    section = key.split(".")[0]
    if section not in SEARCHABLE_SECTIONS:
        raise SearchSpaceError(
            f"tune.space.{key}: the {section!r} section is fixed for a whole search; "
            f"searchable sections: {list(SEARCHABLE_SECTIONS)}"
        )
    if isinstance(spec, (list, tuple)):
        if not spec:
            raise SearchSpaceError(f"tune.space.{key}: the list of values is empty")
        values = tuple(_coerced(config, key, v) for v in spec)
        if len(set(values)) != len(values):
            raise SearchSpaceError(f"tune.space.{key}: repeated values in {list(values)}")
        return Param(key, values=values)
    if isinstance(spec, dict) and len(spec) == 1:
        ((dist, bounds),) = spec.items()
        if dist not in DISTRIBUTIONS:
            raise SearchSpaceError(
                f"tune.space.{key}: unknown distribution {dist!r}; use one of {list(DISTRIBUTIONS)}"
            )
        if not isinstance(bounds, (list, tuple)) or len(bounds) != 2:
            raise SearchSpaceError(f"tune.space.{key}: {dist} needs [low, high], got {bounds!r}")
        low, high = (_coerced(config, key, v) for v in bounds)
        if not isinstance(low, (int, float)) or isinstance(low, bool):
            raise SearchSpaceError(f"tune.space.{key}: {dist} needs a numeric field")
        if not low < high:
            raise SearchSpaceError(f"tune.space.{key}: {dist} needs low < high, got {low}, {high}")
        if dist == "loguniform" and low <= 0:
            raise SearchSpaceError(f"tune.space.{key}: loguniform needs low > 0, got {low}")
        return Param(key, dist=dist, low=low, high=high)
    raise SearchSpaceError(
        f"tune.space.{key}: expected a list of values or {{dist: [low, high]}} "
        f"(dist one of {list(DISTRIBUTIONS)}), got {spec!r}"
    )


def parse_space(config: Config) -> list[Param]:
    """Every entry of ``config.tune.space``, checked; raises SearchSpaceError naming the key."""
    space = config.tune.space
    if not space:
        raise SearchSpaceError("tune.space is empty: name at least one config key to search")
    params = [_param(config, key, spec) for key, spec in space.items()]
    # A whole trial config must be valid too (e.g. the global batch split over the workers).
    for point in grid_points(params):
        trial_config(config, point)
    tune = config.tune
    if tune.mode not in ("min", "max"):
        raise SearchSpaceError(f"tune.mode must be 'min' or 'max', got {tune.mode!r}")
    for name in ("num_samples", "max_concurrent_trials", "grace_period", "latency_repeats"):
        if getattr(tune, name) < 1:
            raise SearchSpaceError(f"tune.{name} must be >= 1, got {getattr(tune, name)}")
    if tune.trial_cpus <= 0:
        raise SearchSpaceError(
            f"tune.trial_cpus must be > 0 (Ray places a trial's driver by it), got {tune.trial_cpus}"
        )
    if tune.reduction_factor <= 1:
        raise SearchSpaceError(f"tune.reduction_factor must be > 1, got {tune.reduction_factor}")
    return params


def grid_points(params: list[Param]) -> list[dict[str, Any]]:
    """Every combination of the grid keys (the sampled keys left out)."""
    grid = [p for p in params if p.is_grid]
    return [
        dict(zip([p.key for p in grid], combo, strict=True))
        for combo in itertools.product(*(p.values for p in grid))
    ]


def n_trials(params: list[Param], num_samples: int) -> int:
    return len(grid_points(params)) * num_samples


def trial_config(base: Config, point: dict[str, Any]) -> Config:
    """The base config with the searched values of one trial set."""
    config = copy.deepcopy(base)
    for key, value in point.items():
        apply_override(config, key, value)
    if config.train.workers < 1 or config.train.batch_size % config.train.workers:
        raise SearchSpaceError(
            f"tune.space: train.batch_size={config.train.batch_size} does not divide by "
            f"train.workers={config.train.workers} at {point}"
        )
    return config


def evaluations_through(epoch: int, train: TrainConfig) -> int:
    """Quality evaluations a trial has made by the end of ``epoch``: ASHA's time axis.

    Why not Tune's ``training_iteration``: a trial resumed after an interrupted search
    continues its Train run at epoch e, but Tune counts its iterations from 1 again, so ASHA
    would compare it at the wrong rung. This count follows the epoch instead.
    """
    every = train.quality_every if train.quality_every > 0 else train.epochs
    done = epoch // every
    return done + (1 if epoch >= train.epochs and train.epochs % every else 0)


def iterations_per_trial(config: Config) -> int:
    """Reports a full trial sends to Tune: one per quality evaluation (and the last epoch)."""
    return evaluations_through(config.train.epochs, config.train)


def to_tune_space(params: list[Param]) -> dict[str, Any]:
    """Tune's param_space: grid keys as grid_search, the others as sample domains."""
    from ray import tune

    space: dict[str, Any] = {}
    for p in params:
        if p.is_grid:
            space[p.key] = tune.grid_search(list(p.values))
        elif p.dist == "uniform":
            space[p.key] = tune.uniform(p.low, p.high)
        elif p.dist == "loguniform":
            space[p.key] = tune.loguniform(p.low, p.high)
        else:  # randint: Tune's upper bound is exclusive; ours is inclusive
            space[p.key] = tune.randint(int(p.low), int(p.high) + 1)
    return space


def describe(params: list[Param]) -> str:
    """One line: ``denoiser.block_size ∈ [16, 32] × ... · train.lr ~ loguniform(1e-4, 1e-2)``."""
    parts = [
        f"{p.key} ∈ {list(p.values)}" if p.is_grid else f"{p.key} ~ {p.dist}({p.low:g}, {p.high:g})"
        for p in params
    ]
    return " × ".join(parts)


def finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
