"""The bench's per-run readings and summary on hand-made runs: the target is lora-zero's
converged quality, a method that never reaches it gets null, ratios are time ratios."""

from __future__ import annotations

import pytest

from wgen.bench.report import run_metrics, speedups, summarise, summary_table
from wgen.config import load_config


def make_run(method: str, l1: list[float], gen: float = 0.0, converged: bool = True) -> dict:
    history = [
        {"step": 5 * i, "train_seconds": 0.1 * 5 * i, "l1": v, "psnr": 20.0}
        for i, v in enumerate(l1)
    ]
    return {
        "concept_id": "c9",
        "seed": 0,
        "method": method,
        "history": history,
        "generation_seconds": gen,
        "converged_step": history[-1]["step"] if converged else None,
        "time_to_converge_s": gen + history[-1]["train_seconds"] if converged else None,
        "final": {"l1": l1[-1], "psnr": 20.0, "fd": 1.0},
        "novelty": None,
    }


@pytest.fixture
def config():
    # smooth 1: every reading is of the raw curve, so the numbers below are by hand
    return load_config("tiny", ["bench.smooth=1", "bench.budgets=0,5,10", "bench.auc_steps=10"])


def test_targets_budgets_and_a_method_that_never_reaches_the_target(config):
    zero = make_run("lora-zero", [0.30, 0.20, 0.15, 0.10, 0.10])  # converged at 0.10
    good = make_run("wgen-1", [0.15, 0.10, 0.09], gen=0.05)
    bad = make_run("mean", [0.25, 0.20, 0.18, 0.18])  # plateaus worse than the target
    runs = [zero, good, bad]
    for r in runs:
        r["metrics"] = run_metrics(r, 0.10, config)
    assert good["metrics"]["steps_to_target"] == 5
    assert good["metrics"]["time_to_target_s"] == pytest.approx(0.05 + 0.5)
    assert good["metrics"]["budgets"] == {"0": 0.15, "5": 0.10, "10": 0.09}
    assert good["metrics"]["auc_mean_quality"] == pytest.approx((5 * 0.125 + 5 * 0.095) / 10)
    assert zero["metrics"]["steps_to_target"] == 15
    assert bad["metrics"]["reached_target"] is False

    summary = summarise(runs, ["lora-zero", "wgen-1", "mean"])
    assert summary["mean"]["median_time_to_target_s"] is None
    assert summary["mean"]["median_steps_to_target"] is None
    assert summary["mean"]["median_quality_step0"] == 0.25
    assert summary["wgen-1"]["median_time_to_converge_s"] == pytest.approx(0.05 + 1.0)
    ratios = speedups(summary)
    # lora-zero converged at 2.0 s, wgen-1 at 1.05 s; to the target 1.5 s vs 0.55 s
    assert ratios["wgen-1"]["lora_zero_over_method_converge"] == pytest.approx(2.0 / 1.05)
    assert ratios["wgen-1"]["lora_zero_over_method_target"] == pytest.approx(1.5 / 0.55)
    assert ratios["mean"]["lora_zero_over_method_target"] is None
    table = summary_table(summary)
    assert "| mean | 0.250 |" in table and "never" in table
