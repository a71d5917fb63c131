"""The bench's statistics count every run: never-reached runs are +inf in every median,
speed-ups are medians of paired ratios with intervals, and a run already at the target at
step 0 never becomes a division by zero."""

from __future__ import annotations

import math

import pytest

from wgen.bench import stats
from wgen.bench.report import _fmt, first_at, headline_table


def test_a_run_that_never_gets_there_makes_the_median_inf_and_is_shown_as_never():
    assert stats.censored_median([1.0, 2.0, None]) == 2.0  # counted, not dropped
    assert stats.censored_median([1.0, None, None]) == math.inf
    assert stats.censored_median([]) is None
    # the old statistic, over the runs that got there, would have said 1.0
    assert _fmt(stats.censored_median([1.0, None, None])) == "never"


def test_paired_ratios_count_every_pair_and_leave_out_only_the_undefined():
    reference = {("c1", 0): 4.0, ("c1", 1): None, ("c2", 0): 2.0, ("c2", 1): None}
    method = {("c1", 0): 1.0, ("c1", 1): 1.0, ("c2", 0): None, ("c2", 1): None}
    ratios = stats.paired_ratios(reference, method)
    assert ratios == {("c1", 0): 4.0, ("c1", 1): math.inf, ("c2", 0): 0.0}
    summary = stats.ratio_summary(ratios)
    assert summary["median"] == 4.0 and summary["pairs"] == 3


def test_the_bootstrap_interval_brackets_the_median_resamples_concepts_and_is_reproducible():
    by_concept = {f"c{i}": [1.0 + i, 1.5 + i] for i in range(8)}
    low, high = stats.bootstrap_median(by_concept)
    assert low < 4.75 < high
    assert stats.bootstrap_median(by_concept) == (low, high)  # seeded
    # one concept: every resample is that concept, so the interval has no width
    assert stats.bootstrap_median({"c0": [2.0, 3.0]}) == (2.5, 2.5)
    # infinite values are order statistics, never inf - inf
    assert stats.bootstrap_median({"a": [math.inf], "b": [math.inf]}) == (math.inf, math.inf)


def run(l1s, generation=0.02, per_eval=0.5):
    return {
        "generation_seconds": generation,
        "history": [
            {"step": 5 * i, "train_seconds": per_eval * i, "test_l1": v} for i, v in enumerate(l1s)
        ],
    }


def test_a_run_at_the_target_at_step_0_counts_at_its_first_evaluation_never_at_zero():
    at_start = first_at(run([0.05, 0.06, 0.04]), target=0.05, smooth=1, eval_every_s=0.5)
    assert at_start["at_start"] and at_start["steps"] == 0
    assert at_start["seconds"] == pytest.approx(0.52)  # generation + one evaluation interval
    later = first_at(run([0.09, 0.07, 0.05]), target=0.05, smooth=1, eval_every_s=0.5)
    assert not later["at_start"] and later["seconds"] == pytest.approx(1.02)
    never = first_at(run([0.09, 0.08]), target=0.05, smooth=1, eval_every_s=0.5)
    assert not never["reached"] and never["seconds"] is None
    # the ratio of a reference that needed 3 s against an at-start method is bounded
    assert stats.paired_ratio(3.0, at_start["seconds"]) == pytest.approx(3 / 0.52)


def test_the_headline_table_shows_never_with_the_reached_count():
    summary = {
        "scratch": {
            "oracle": False,
            "runs": 4,
            "converged": 1,
            "median_time_to_converge_s": math.inf,
            "median_final_quality": 0.1,
            "reached": {"scratch": 4, "lora-zero": 1},
            "median_time_to_reference_s": {"scratch": 9.0, "lora-zero": math.inf},
        }
    }
    table = headline_table(summary, {"scratch": {}})
    assert "| scratch | never (1/4) | 0.100 | 9.00 (4/4) | never (1/4) |" in table
