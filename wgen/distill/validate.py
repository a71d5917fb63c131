"""The checks of ``distill.*`` before Ray starts (`wgen.core.stages`)."""

from __future__ import annotations

from wgen.config import Config, at_least, need, positive


def halves_to_one(steps: int) -> bool:
    """Whether halving ``steps`` round by round reaches 1: a power of two."""
    return steps >= 1 and steps & (steps - 1) == 0


def validate(config: Config) -> None:
    """The distillation's ranges; the teacher's folder (exists, trained with
    denoiser.cond_drop > 0) is `wgen.distill.stage.prepare_distill`'s, also before Ray starts."""
    dist = config.distill
    need(
        dist.target in ("generator", "pdiff"),
        "distill.target",
        dist.target,
        "generator (the weight generator) or pdiff (p-diff's latent DDPM)",
    )
    if dist.target == "pdiff":  # the rest is the generator's; the run folder is checked later
        need(
            halves_to_one(dist.pdiff_steps),
            "distill.pdiff_steps",
            dist.pdiff_steps,
            "must be a power of two (1, 2, 4, 8, ...): each round halves the steps down to 1",
        )
        at_least(dist, "pdiff_epochs", 1)
        positive(dist, "pdiff_lr")
        return
    at_least(dist, "w_min", 0, "w = 0 is the unguided model")
    need(
        dist.w_min <= dist.w_max,
        "distill.w_max",
        dist.w_max,
        f"must be at least distill.w_min={dist.w_min} (w ~ U[w_min, w_max])",
    )
    steps = dist.start_steps
    need(
        halves_to_one(steps),
        "distill.start_steps",
        steps,
        "must be a power of two (1, 2, 4, 8, ...): each round halves the steps down to 1",
    )
    need(
        steps > 1 or dist.w_max > 0,
        "distill.start_steps",
        steps,
        "must be 2 or more when distill.w_max=0: unguided, only the steps are distilled",
    )
    need(
        2 * steps <= config.denoiser.train_timesteps,
        "distill.start_steps",
        steps,
        f"the first round's teacher takes 2 x start_steps DDIM steps, more than "
        f"denoiser.train_timesteps={config.denoiser.train_timesteps}",
    )
    at_least(dist, "epochs", 1)
    positive(dist, "lr")
    at_least(dist, "batch_size", 1)
    need(
        dist.batch_size % config.train.workers == 0,
        "distill.batch_size",
        dist.batch_size,
        f"the global batch must divide by train.workers={config.train.workers}",
    )
    need(
        0.0 <= dist.single_step_share <= 1.0,
        "distill.single_step_share",
        dist.single_step_share,
        "must be in [0, 1]",
    )
    at_least(dist, "bench_guidance", 0)
