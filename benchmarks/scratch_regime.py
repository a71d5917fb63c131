"""How long pix2pix from scratch needs when no convergence rule stops it, against the bench.

Reads two finished `wgen bench` folders on the same held-out concepts and seeds:

- ``--rule``: the ordinary bench (every method under the bench's convergence rule); its
  lora-zero runs give each (concept, seed) its target, as in `wgen bench`'s report;
- ``--fixed``: scratch and lora-zero on a fixed schedule, made with
  ``wgen bench --methods scratch --set bench.patience=400 --set bench.max_steps=1500``
  (patience x eval_every > max_steps: nothing stops a run early).

Prints, per run of the fixed schedule, the step at which the smoothed L1 first reaches the
target, the best L1 and its step. Then, on the (concept, seed) pairs that scratch reached,
scratch's steps over each method's steps-to-target under the rule (median of the matched
ratios; a method that never reached the target there is counted apart).

    .venv/bin/python benchmarks/scratch_regime.py --rule runs/bench/bench \\
        --fixed runs/bench_long/bench --json docs/results/bench/history/bench_preset_fixed/scratch_regime.json
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from wgen.bench import curves

COMPARED = ("wgen-1", "wgen-ddim", "lora-zero", "ridge", "hyper", "knn", "mean", "nearest")


def load(folder: Path) -> dict[str, dict]:
    return json.loads((folder / "results.json").read_text())


def runs_of(results: dict, method: str) -> dict[tuple[str, int], dict]:
    return {
        (cid, r["seed"]): r
        for cid, concept in results["per_concept"].items()
        for r in concept["runs"]
        if r["method"] == method
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rule", type=Path, required=True, help="bench folder under the rule")
    parser.add_argument("--fixed", type=Path, required=True, help="bench folder, fixed schedule")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    rule, fixed = load(args.rule), load(args.fixed)
    smooth = rule["rule"]["smooth"]
    targets = {
        key: curves.smooth([h["l1"] for h in r["history"]], smooth)[-1]
        for key, r in runs_of(rule, "lora-zero").items()
    }
    per_run = []
    for method in ("scratch", "lora-zero"):
        for (cid, seed), r in sorted(runs_of(fixed, method).items()):
            steps = [h["step"] for h in r["history"]]
            l1 = curves.smooth([h["l1"] for h in r["history"]], smooth)
            target = targets[(cid, seed)]
            best = min(l1)
            per_run.append(
                {
                    "concept_id": cid,
                    "seed": seed,
                    "method": method,
                    "target": target,
                    "steps_to_target": next(
                        (s for s, v in zip(steps, l1, strict=True) if v <= target), None
                    ),
                    "best": best,
                    "best_step": steps[l1.index(best)],
                    "last": l1[-1],
                    "last_step": steps[-1],
                }
            )
    summary = {}
    for method in ("scratch", "lora-zero"):
        mine = [r for r in per_run if r["method"] == method]
        reached = [r["steps_to_target"] for r in mine if r["steps_to_target"] is not None]
        summary[method] = {
            "runs": len(mine),
            "reached_target": len(reached),
            "median_steps_to_target": statistics.median(reached) if reached else None,
            "median_best": statistics.median(r["best"] for r in mine),
            "median_best_step": statistics.median(r["best_step"] for r in mine),
            "median_last": statistics.median(r["last"] for r in mine),
            "median_last_over_target": statistics.median(r["last"] / r["target"] for r in mine),
        }
        print(f"{method} (fixed schedule): {summary[method]}")
    scratch_reached = {
        (r["concept_id"], r["seed"]): r["steps_to_target"]
        for r in per_run
        if r["method"] == "scratch" and r["steps_to_target"] is not None
    }
    matched = {}
    for method in COMPARED:
        under_rule = runs_of(rule, method)
        if not under_rule:
            continue
        pairs = [
            (steps, under_rule[key]["metrics"].get("steps_to_target"))
            for key, steps in scratch_reached.items()
            if key in under_rule
        ]
        ratios = [a / b for a, b in pairs if b]
        matched[method] = {
            "pairs": len(pairs),
            "method_reached": len(ratios),
            "median_scratch_over_method_steps": statistics.median(ratios) if ratios else None,
            "steps": pairs,
        }
        print(
            f"where scratch reached the target ({len(pairs)} runs): {method} reached it in "
            f"{len(ratios)}, scratch took {matched[method]['median_scratch_over_method_steps']}x "
            f"its steps (median of matched ratios)"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps({"summary": summary, "matched": matched, "runs": per_run}, indent=1)
        )
        print(f"→ {args.json}")


if __name__ == "__main__":
    main()
