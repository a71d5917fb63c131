"""Recount a bench result of the first protocol (one set of held-back pairs read by the rule
and the report alike; medians over the runs that got there) with the statistics of the
current one: every run counted (never = +inf), paired ratios with bootstrap intervals over
concepts, a run at the target at step 0 counted at its first evaluation.

The runs themselves are not redone, so what the first protocol measured stays as it was
(the target is lora-zero's smoothed final L1 on the same pairs the rule read, the rule is
the collection's); only the statistics change. This is how the README's and docs' figures
measured before the three-split protocol compare with their recount.

    .venv/bin/python benchmarks/bench_recount.py docs/results/bench/history/bench_preset/results.json
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from wgen.bench import stats
from wgen.bench.methods import TEXT_BASELINES


def target_seconds(run: dict) -> float | None:
    """The run's time to lora-zero's quality, at-start runs at their first evaluation."""
    metrics = run["metrics"]
    if not metrics["reached_target"]:
        return None
    if metrics["steps_to_target"] == 0:
        history = run["history"]
        return run["generation_seconds"] + history[min(1, len(history) - 1)]["train_seconds"]
    return metrics["time_to_target_s"]


def keyed(runs: list[dict], method: str, read) -> dict[tuple[str, int], float | None]:
    return {(r["concept_id"], r["seed"]): read(r) for r in runs if r["method"] == method}


def fmt(value: float | None, digits: int = 2, infinite: str = "never") -> str:
    """A time (+inf = never) or, with ``infinite="∞"``, a ratio."""
    if value is None:
        return "n/a"
    return infinite if value == float("inf") else f"{value:.{digits}f}"


def ratio_text(summary: dict | None) -> str:
    if not summary:
        return "n/a"
    low, high = summary["interval"]
    return f"{fmt(summary['median'], infinite='∞')}x ({fmt(low, infinite='∞')}-{fmt(high, infinite='∞')})"


def recount(results: dict) -> dict:
    runs = [r for c in results["per_concept"].values() for r in c["runs"]]
    methods = list(results["summary"])
    table = {}
    for method in methods:
        mine = [r for r in runs if r["method"] == method]
        reached = [target_seconds(r) for r in mine if r["metrics"]["reached_target"]]
        table[method] = {
            "runs": len(mine),
            "reached": len(reached),
            "old_median_time_to_target_s": statistics.median(reached) if reached else None,
            "median_time_to_target_s": stats.censored_median([target_seconds(r) for r in mine]),
            "converged": sum(r["converged_step"] is not None for r in mine),
            "median_time_to_converge_s": stats.censored_median(
                [r["time_to_converge_s"] for r in mine]
            ),
            "lora_zero_over_method_target": stats.ratio_summary(
                stats.paired_ratios(
                    keyed(runs, "lora-zero", target_seconds), keyed(runs, method, target_seconds)
                )
            ),
        }
    rivals = {
        b: stats.ratio_summary(
            stats.paired_ratios(
                keyed(runs, b, target_seconds), keyed(runs, "wgen-1", target_seconds)
            )
        )
        for b in TEXT_BASELINES
        if b in methods and "wgen-1" in methods
    }
    return {"methods": table, "rival_over_wgen1_target": rivals}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="results.json of a first-protocol bench")
    parser.add_argument("--json", type=Path, help="write the recount here")
    args = parser.parse_args()
    results = json.loads(args.results.read_text())
    counted = recount(results)
    print(
        "| method | time to target, old (median of runs that got there) | time to target, "
        "every run counted (reached) | lora-zero / method, paired | time to converge under "
        "the old rule, every run counted (converged) |"
    )
    print("|---|---|---|---|---|")
    for method, row in counted["methods"].items():
        print(
            f"| {method} | {fmt(row['old_median_time_to_target_s'])} "
            f"| {fmt(row['median_time_to_target_s'])} ({row['reached']}/{row['runs']}) "
            f"| {ratio_text(row['lora_zero_over_method_target'])} "
            f"| {fmt(row['median_time_to_converge_s'])} ({row['converged']}/{row['runs']}) |"
        )
    print("\nwgen-1 to the target, paired: rival / wgen-1 (> 1 = wgen-1 sooner)")
    for rival, summary in counted["rival_over_wgen1_target"].items():
        print(f"- {rival}: {ratio_text(summary)}")
    if args.json:
        args.json.write_text(json.dumps(counted, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
