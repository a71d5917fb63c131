"""The checks of ``bench.*`` before Ray starts (`wgen.core.stages`)."""

from __future__ import annotations

from wgen.bench.clock import CLOCKS
from wgen.bench.methods import METHODS
from wgen.config import Config, at_least, need, positive
from wgen.generator.schedule import LR_SCHEDULES


def validate(config: Config) -> None:
    """The benchmark's methods, rule, budgets and pool; the run-folder checks (concept texts,
    generator, weights) are `wgen.bench.stage.prepare_bench`'s, also before Ray starts."""
    bench = config.bench
    unknown = [m for m in bench.methods if m not in METHODS]
    need(
        not unknown,
        "bench.methods",
        ",".join(bench.methods),
        f"unknown {unknown}; valid: {', '.join(METHODS)}",
    )
    need(
        bool(bench.methods),
        "bench.methods",
        bench.methods,
        f"name at least one of {', '.join(METHODS)}",
    )
    if bench.max_concepts is not None:
        at_least(bench, "max_concepts", 1, "or none for every held-out concept")
    for name in ("seeds", "eval_every", "smooth", "ddim_steps", "knn_k", "actors"):
        at_least(bench, name, 1)
    at_least(bench, "selection_pairs", 1, "the rule needs pairs of its own to read")
    for name in ("ridge_alpha", "window_fraction", "tolerance", "min_delta", "converge_delta"):
        at_least(bench, name, 0)
    for name in ("hyper_epochs", "paraphrases"):
        if getattr(bench, name) is not None:
            at_least(bench, name, 0, "or none for the generator's")
    need(bench.clock in CLOCKS, "bench.clock", bench.clock, f"one of {', '.join(CLOCKS)}")
    if bench.hyper_lr_schedule is not None:
        need(
            bench.hyper_lr_schedule in LR_SCHEDULES,
            "bench.hyper_lr_schedule",
            bench.hyper_lr_schedule,
            f"one of {', '.join(LR_SCHEDULES)}, or none for the generator's",
        )
    need(
        bench.window_steps >= bench.eval_every,
        "bench.window_steps",
        bench.window_steps,
        f"must be at least bench.eval_every={bench.eval_every}",
    )
    pairs_left = config.data.pairs_per_concept - config.collect.eval_pairs - bench.selection_pairs
    need(
        pairs_left >= 1,
        "bench.selection_pairs",
        bench.selection_pairs,
        f"leaves {pairs_left} pairs to train on (data.pairs_per_concept="
        f"{config.data.pairs_per_concept} minus collect.eval_pairs={config.collect.eval_pairs} "
        "test pairs); lower it or raise data.pairs_per_concept",
    )
    positive(bench, "cpus_per_actor", "logical CPUs per actor; fractions are fine")
    at_least(bench, "gpus_per_actor", 0)
    need(
        bench.max_steps >= bench.eval_every,
        "bench.max_steps",
        bench.max_steps,
        f"must be at least bench.eval_every={bench.eval_every}",
    )
    for name in ("budgets", "auc_steps", "grid_step"):
        value = getattr(bench, name)
        for step in value if isinstance(value, list) else [value]:
            need(
                step >= 0 and step % bench.eval_every == 0,
                f"bench.{name}",
                value,
                f"steps must be multiples of bench.eval_every={bench.eval_every} (they are read "
                "off the evaluations)",
            )
