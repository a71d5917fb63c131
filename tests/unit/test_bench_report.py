"""The bench's per-run readings and summary on hand-made runs: the targets are the references'
converged test quality, a method that never reaches one is +inf in the median (shown as
never), ratios are medians of paired time ratios."""

from __future__ import annotations

import math

import pytest

from wgen.bench.report import add_metrics, goals, headline_table, speedups, summarise
from wgen.config import load_config


def make_run(
    method: str, test_l1: list[float], gen: float = 0.0, converged: bool = True, seed: int = 0
) -> dict:
    """A run evaluated every 5 steps, 0.1 s a step; its selection curve equals its test
    curve, its restored best is its lowest point."""
    history = [
        {"step": 5 * i, "train_seconds": 0.5 * i, "l1": v, "test_l1": v, "psnr": 20.0}
        for i, v in enumerate(test_l1)
    ]
    best = min(range(len(test_l1)), key=lambda i: test_l1[i])
    return {
        "concept_id": "c9",
        "seed": seed,
        "method": method,
        "history": history,
        "generation_seconds": gen,
        "converged_step": history[-1]["step"] if converged else None,
        "best_step": history[best]["step"],
        "steps": history[-1]["step"],
        "steps_to_converge": history[best]["step"] if converged else None,
        "time_to_converge_s": gen + history[best]["train_seconds"] if converged else None,
        "final": {"l1": test_l1[best], "psnr": 20.0, "fd": 1.0},
        "novelty": None,
    }


@pytest.fixture
def config():
    # smooth 1: every reading is of the raw curve, so the numbers below are by hand
    return load_config("tiny", ["bench.smooth=1", "bench.budgets=0,5,10", "bench.auc_steps=10"])


def test_targets_budgets_and_a_method_that_never_reaches_the_target(config):
    zero = make_run("lora-zero", [0.30, 0.20, 0.15, 0.10, 0.10])  # converged at 0.10, 1.5 s
    scratch = make_run("scratch", [0.40, 0.30, 0.20, 0.16, 0.14, 0.12], converged=False)
    good = make_run("wgen-1", [0.15, 0.10, 0.09], gen=0.05)
    bad = make_run("mean", [0.25, 0.20, 0.18, 0.18])  # plateaus worse than the target
    runs = [zero, scratch, good, bad]
    add_metrics(runs, config)
    m = good["metrics"]
    assert m["target"] == 0.10 and m["steps_to_target"] == 5
    assert m["time_to_target_s"] == pytest.approx(0.05 + 0.5)
    assert m["converged_test_quality"] == 0.09
    assert m["budgets"] == {"0": 0.15, "5": 0.10, "10": 0.09}
    assert m["auc_mean_quality"] == pytest.approx((5 * 0.125 + 5 * 0.095) / 10)
    # scratch's converged test quality (0.12) is the second target
    assert m["targets"]["scratch"]["target"] == 0.12 and m["targets"]["scratch"]["steps"] == 5
    assert zero["metrics"]["steps_to_target"] == 15
    assert bad["metrics"]["reached_target"] is False

    summary = summarise(runs, ["scratch", "lora-zero", "wgen-1", "mean"])
    assert summary["mean"]["median_time_to_target_s"] == math.inf  # never, and counted
    assert summary["mean"]["reached_target"] == 0
    assert summary["mean"]["median_quality_step0"] == 0.25
    assert summary["scratch"]["median_time_to_converge_s"] == math.inf
    assert summary["wgen-1"]["median_time_to_converge_s"] == pytest.approx(0.05 + 1.0)
    ratios = speedups(runs, summary)
    # lora-zero converged at 1.5 s, wgen-1 at 1.05 s; to lora-zero's quality 1.5 s vs 0.55 s
    assert ratios["wgen-1"]["lora-zero_converge"]["median"] == pytest.approx(1.5 / 1.05)
    assert ratios["wgen-1"]["lora-zero_target"]["median"] == pytest.approx(1.5 / 0.55)
    # scratch never converged, wgen-1 did: an unbounded win, not a division by zero
    assert ratios["wgen-1"]["scratch_converge"]["median"] == math.inf
    assert ratios["mean"]["lora-zero_target"]["median"] == 0.0  # mean never gets there
    assert ratios["wgen-1"]["quality_vs_lora-zero"]["median"] == pytest.approx(0.9)
    table = headline_table(summary, ratios)
    assert "| mean | " in table and "never" in table
    goal = goals(runs, summary, ratios)
    assert goal["a_quality_vs_scratch"]["median"] == pytest.approx(0.09 / 0.12)
    # the only text baseline, mean, never gets there and wgen-1 does: an unbounded lead
    assert goal["b_closest_rival"] == "mean" and goal["b_ratio"]["median"] == math.inf
    assert goal["b_met"]


def test_a_run_at_the_target_from_the_start_is_counted_at_its_first_evaluation(config):
    zero = make_run("lora-zero", [0.30, 0.20, 0.10, 0.10])
    early = make_run("nearest", [0.08, 0.09, 0.07], gen=0.01)
    runs = [zero, early]
    add_metrics(runs, config)
    assert early["metrics"]["at_start"] and early["metrics"]["steps_to_target"] == 0
    assert early["metrics"]["time_to_target_s"] == pytest.approx(0.01 + 0.5)
    summary = summarise(runs, ["lora-zero", "nearest"])
    assert summary["nearest"]["at_start"] == 1
    ratios = speedups(runs, summary)
    assert ratios["nearest"]["lora-zero_target"]["median"] == pytest.approx(1.0 / 0.51)
