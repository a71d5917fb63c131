"""The checks of ``gan.*``, ``lora.*`` and ``collect.*`` before Ray starts (`wgen.core.stages`)."""

from __future__ import annotations

import math

from wgen.config import Config, ConfigError, at_least, need, positive
from wgen.gan.metrics import EXTRACTOR_NAMES, _missing_inception_message, inception_weights_path
from wgen.models.gan import GAN_SIZES


def validate(config: Config) -> None:
    """Base GAN, LoRA and the per-concept training: sizes that agree, counts >= 1, the
    feature extractor and its weights."""
    gan, lora, collect, data = config.gan, config.lora, config.collect, config.data
    need(gan.size in GAN_SIZES, "gan.size", gan.size, f"valid sizes: {', '.join(GAN_SIZES)}")
    factor = 2 ** max(GAN_SIZES[gan.size].n_down, GAN_SIZES[gan.size].disc_layers)
    need(
        data.image_size % factor == 0,
        "data.image_size",
        data.image_size,
        f"gan.size={gan.size} halves the image {int(math.log2(factor))} times: "
        f"use a multiple of {factor}",
    )
    # The paper-sized GAN (the cluster preset's) is built for its own crop size: its widths,
    # depth and bottleneck attention assume 256 px, and on smaller crops it is a slow, badly
    # sized model; larger ones make the attention's cost grow with the square of the tokens.
    made_for = GAN_SIZES[gan.size].image_size
    need(
        gan.size != "cluster" or data.image_size == made_for,
        "data.image_size",
        data.image_size,
        f"gan.size=cluster is the paper-sized GAN built for {made_for} px crops: set "
        f"data.image_size={made_for}, or a smaller gan.size (demo: 32 px, tiny: 16 px)",
    )
    at_least(gan, "batch_size", 1)
    positive(gan, "lr")
    at_least(gan, "lambda_l1", 0)
    at_least(gan, "base_steps", 1)
    at_least(gan, "threads", 1)
    if gan.base_concepts is not None:
        at_least(gan, "base_concepts", 1, "or none for all training concepts")
    at_least(lora, "rank", 1)
    positive(lora, "alpha")
    positive(lora, "lr")
    if collect.max_concepts is not None:
        at_least(collect, "max_concepts", 1, "or none for every train and validation concept")
    for name in ("eval_every", "patience", "smooth", "k_checkpoints", "checkpoint_every"):
        at_least(collect, name, 1)
    at_least(collect, "actors", 1, "Ray actors training concepts side by side")
    positive(collect, "cpus_per_actor", "logical CPUs per actor; fractions are fine")
    for name in ("gpus_per_actor", "max_retries", "tolerance", "min_delta"):
        at_least(collect, name, 0)
    at_least(collect, "gain_fraction", 0, "0 = no margin from the gain since the start")
    need(
        collect.max_steps >= collect.eval_every,
        "collect.max_steps",
        collect.max_steps,
        f"must be at least collect.eval_every={collect.eval_every}, or nothing is ever evaluated",
    )
    need(
        1 <= collect.eval_pairs < data.pairs_per_concept,
        "collect.eval_pairs",
        collect.eval_pairs,
        f"must be at least 1 and leave training pairs: less than data.pairs_per_concept="
        f"{data.pairs_per_concept}",
    )
    need(
        0.0 <= collect.min_converged <= 1.0,
        "collect.min_converged",
        collect.min_converged,
        "a fraction of the selected concepts, from 0 to 1",
    )
    need(
        collect.feature_extractor in EXTRACTOR_NAMES,
        "collect.feature_extractor",
        collect.feature_extractor,
        f"valid: {', '.join(EXTRACTOR_NAMES)}",
    )
    if collect.feature_extractor == "inception" and inception_weights_path() is None:
        raise ConfigError(f"collect.feature_extractor=inception: {_missing_inception_message()}")
