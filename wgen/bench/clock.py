"""The clock the bench's times are read on: each run's own wall clock, or a load-normalised
one (docs/architecture.md, "The benchmark").

A run's wall clock counts whatever else the machine did meanwhile: on a shared 2-core
machine two runs of the same model and init (nearest and nearest-edit start from the same
checkpoint and follow the same curve) took 15.7 s and 71.0 s to their 115th step. Paired
ratios then measure the load as much as the method. The normalised clock keeps what
differs between methods, the cost of a training step of what they train (the whole GAN for
scratch, a LoRA for every other method: one training loop, so one cost) and each method's
one-off generation time, and drops what differs between runs: a run's time at step s is

    median generation seconds of its method  +  s × median seconds per step of what it trains

(medians over every run of that method, or of every method that trains the same thing, in
the bench). Every statistic is then read off the same records as before; each run keeps its
measured wall-clock times under `wall`.
"""

from __future__ import annotations

import statistics
from typing import Any

from wgen.bench.methods import SCRATCH_INITS

CLOCKS = ("normalised", "wall")


def trains(method: str) -> str:
    """What a method's runs train, which sets the cost of a step."""
    return "whole GAN" if method in SCRATCH_INITS else "LoRA"


def method_costs(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per method: what it trains, the median over every run that trains the same of
    (training seconds / steps) at the run's last evaluation, and its median generation
    seconds."""
    per_step: dict[str, list[float]] = {}
    for r in runs:
        last = r["history"][-1]
        if last["step"] > 0:
            per_step.setdefault(trains(r["method"]), []).append(
                last["train_seconds"] / last["step"]
            )
    costs = {}
    for method in dict.fromkeys(r["method"] for r in runs):
        kind = trains(method)
        costs[method] = {
            "trains": kind,
            "seconds_per_step": statistics.median(per_step[kind]) if kind in per_step else 0.0,
            "generation_seconds": statistics.median(
                r["generation_seconds"] for r in runs if r["method"] == method
            ),
        }
    return costs


def normalise(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Rewrite ``runs`` in place onto the normalised clock (see the module docstring); the
    measured times move to each run's ``wall``. Returns the per-method costs used."""
    costs = method_costs(runs)
    for run in runs:
        cost = costs[run["method"]]
        run["wall"] = {
            "generation_seconds": run["generation_seconds"],
            "time_to_converge_s": run["time_to_converge_s"],
            "train_seconds": [h["train_seconds"] for h in run["history"]],
        }
        run["generation_seconds"] = cost["generation_seconds"]
        for h in run["history"]:
            h["train_seconds"] = h["step"] * cost["seconds_per_step"]
        if run["time_to_converge_s"] is not None:
            run["time_to_converge_s"] = (
                cost["generation_seconds"] + run["steps_to_converge"] * cost["seconds_per_step"]
            )
    return costs
