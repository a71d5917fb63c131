"""The checks of ``denoiser.*``, ``train.*`` and ``generate.*`` before Ray starts
(`wgen.core.stages`).
"""

from __future__ import annotations

from pathlib import Path

from wgen.config import Config, at_least, need, positive
from wgen.diffusion import PREDICTION_TYPES
from wgen.generator.schedule import EXPORTS, LR_SCHEDULES
from wgen.models.denoiser import DENOISER_SIZES


def validate_train(config: Config) -> None:
    """The denoiser and its Ray Train fit."""
    den, train = config.denoiser, config.train
    need(
        den.size in DENOISER_SIZES,
        "denoiser.size",
        den.size,
        f"valid sizes: {', '.join(DENOISER_SIZES)}",
    )
    at_least(den, "block_size", 1)
    at_least(den, "index_dim", 2)
    at_least(den, "block_readout", 0, "0 = off")
    at_least(den, "train_timesteps", 2)
    need(
        den.prediction in PREDICTION_TYPES,
        "denoiser.prediction",
        den.prediction,
        f"valid: {', '.join(PREDICTION_TYPES)}",
    )
    beta_schedules = ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid")
    need(
        den.beta_schedule in beta_schedules,
        "denoiser.beta_schedule",
        den.beta_schedule,
        f"valid: {', '.join(beta_schedules)}",
    )
    need(0.0 <= den.cond_drop < 1.0, "denoiser.cond_drop", den.cond_drop, "must be in [0, 1)")
    at_least(train, "workers", 1)
    positive(train, "cpus_per_worker")
    for resource, amount in train.worker_resources.items():
        need(
            resource not in ("CPU", "GPU"),
            "train.worker_resources",
            train.worker_resources,
            f"{resource} has its own field: train.cpus_per_worker or train.use_gpu",
        )
        need(
            isinstance(amount, (int, float)) and not isinstance(amount, bool) and amount > 0,
            "train.worker_resources",
            train.worker_resources,
            f"the amount of {resource} must be a number more than 0, e.g. {{{resource}: 1}}",
        )
    at_least(train, "epochs", 1)
    at_least(train, "batch_size", 1)
    need(
        train.batch_size % train.workers == 0,
        "train.batch_size",
        train.batch_size,
        f"the global batch must divide by train.workers={train.workers}",
    )
    positive(train, "lr")
    at_least(train, "weight_decay", 0)
    at_least(train, "quality_every", 0)
    at_least(train, "max_failures", 0)
    at_least(train, "threads", 1)
    at_least(train, "shuffle_buffer", 0)
    if train.max_train_concepts is not None:
        at_least(train, "max_train_concepts", 1, "or none for every collected concept")
    need(
        train.lr_schedule in LR_SCHEDULES,
        "train.lr_schedule",
        train.lr_schedule,
        f"valid: {', '.join(LR_SCHEDULES)}",
    )
    need(
        train.export in EXPORTS,
        "train.export",
        train.export,
        f"valid: {', '.join(EXPORTS)} (best needs train.quality_every > 0 to choose among epochs)",
    )
    encoder = train.text_encoder
    looks_like_path = encoder.startswith(("/", ".", "~")) or Path(encoder).expanduser().exists()
    if encoder != "minilm" and looks_like_path:
        need(
            Path(encoder).expanduser().is_dir(),
            "train.text_encoder",
            encoder,
            "not a folder: use minilm (offline, packaged), a local sentence-transformers folder "
            "or a local CLIP folder",
        )


def validate_generate(config: Config) -> None:
    gen = config.generate
    at_least(gen, "steps", 1, "1 = the single direct step, more = DDIM steps")
    need(
        1 <= gen.single_step_t < config.denoiser.train_timesteps,
        "generate.single_step_t",
        gen.single_step_t,
        f"must be between 1 and denoiser.train_timesteps-1={config.denoiser.train_timesteps - 1}",
    )
    at_least(gen, "guidance", 0)
    at_least(gen, "threads", 1)
