"""The benchmark's results: every run's numbers → results.json, report.md and the figures.

Per run (concept, method, seed), read off its curves (`wgen.bench.curves`):
- its own convergence: the step where the rule stopped it, the step of the model it ended
  with (its best on the selection pairs), the time to converge read after the run (first
  step within `bench.converge_delta` of its converged value), and the **converged test
  quality**: the restored model's paired L1 on the test pairs;
- the times to reach two targets on the same concept and seed: lora-zero's converged test
  quality and scratch's, read off the smoothed test curve;
- the test quality of the model at step 0 and at the fixed budgets (unsmoothed).

Then per method (`wgen.bench.stats`): medians over every run, a run that never got there
counting as +inf ("never", with the count that did); speed-ups as medians of per-run
ratios paired by (concept, seed), with 95% bootstrap intervals over concepts, beside the
ratio of the medians.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np

from wgen.bench import clock, curves, stats
from wgen.bench.methods import METHODS, TEXT_BASELINES
from wgen.config import Config
from wgen.core.runtime import print0, read_json, write_json

QUALITY = {"name": "l1", "lower_is_better": True}
WALL_FLOOR_S = 1e-3  # where a zero-time start sits on the log time axis
REFERENCES = ("scratch", "lora-zero")  # the paper's two rivals: targets and speed-ups
HEADLINE = "wgen-1"  # the method the goals are about


def run_key(run: dict[str, Any]) -> tuple[str, int]:
    return run["concept_id"], run["seed"]


def first_at(
    run: dict[str, Any], target: float | None, smooth: int, eval_every_s: float
) -> dict[str, Any]:
    """When ``run``'s smoothed test curve first reaches ``target``: seconds (generation +
    training), steps, whether it was already there at step 0. A run at the target at step 0
    is counted as getting there at its first evaluation after it (the finest time the bench
    resolves), never at 0 s, so no ratio divides by zero."""
    if target is None:
        return {"target": None, "reached": False, "at_start": False, "steps": None, "seconds": None}
    history = run["history"]
    steps = [h["step"] for h in history]
    wall = [run["generation_seconds"] + h["train_seconds"] for h in history]
    smoothed = curves.smooth([h["test_l1"] for h in history], smooth)
    step, seconds = curves.first_reaching(steps, wall, smoothed, target)
    at_start = step == 0
    if at_start:
        seconds = run["generation_seconds"] + eval_every_s
    return {
        "target": target,
        "reached": step is not None,
        "at_start": at_start,
        "steps": step,
        "seconds": seconds,
    }


def first_eval_seconds(run: dict[str, Any]) -> float:
    """Training seconds to the run's first evaluation after step 0 (its time resolution)."""
    history = run["history"]
    return history[1]["train_seconds"] if len(history) > 1 else history[0]["train_seconds"]


def budget_quality(run: dict[str, Any], budget: int) -> float:
    """Test quality of the model at step ``budget``: the evaluation there, or the model the
    run ended with (its restored best) when it stopped earlier."""
    history = run["history"]
    if budget > history[-1]["step"]:
        return run["final"]["l1"]
    steps = [h["step"] for h in history]
    return curves.quality_at(steps, [h["test_l1"] for h in history], budget)


def run_metrics(
    run: dict[str, Any], targets: dict[str, float | None], config: Config
) -> dict[str, Any]:
    """Everything read off one run's curves (see the module docstring)."""
    bench = config.bench
    resolution = first_eval_seconds(run)
    reached = {
        name: first_at(run, target, bench.smooth, resolution) for name, target in targets.items()
    }
    lora_zero = reached["lora-zero"]
    steps = [h["step"] for h in run["history"]]
    return {
        "converged_test_quality": run["final"]["l1"],
        "quality_step0": run["history"][0]["test_l1"],
        "budgets": {str(b): budget_quality(run, b) for b in bench.budgets},
        "auc_mean_quality": curves.mean_quality(
            steps, [h["test_l1"] for h in run["history"]], bench.auc_steps
        ),
        # lora-zero's converged test quality: the common target (the names as before)
        "target": lora_zero["target"],
        "reached_target": lora_zero["reached"],
        "at_start": lora_zero["at_start"],
        "steps_to_target": lora_zero["steps"],
        "time_to_target_s": lora_zero["seconds"],
        "targets": reached,
    }


def load_runs(plan) -> list[dict[str, Any]]:
    runs = []
    for concept in plan.concepts:
        for method in plan.methods:
            for seed in plan.seeds:
                path = plan.run_path(concept.concept_id, method, seed)
                if path.exists():
                    runs.append(read_json(path))
    return runs


def add_metrics(runs: list[dict[str, Any]], config: Config) -> None:
    """Each run's `metrics`, its targets being the references' converged test quality on
    the same concept and seed."""
    converged = {
        (r["method"], *run_key(r)): r["final"]["l1"] for r in runs if r["method"] in REFERENCES
    }
    benched = [ref for ref in REFERENCES if any(r["method"] == ref for r in runs)]
    for r in runs:
        targets = {ref: converged.get((ref, *run_key(r))) for ref in benched}
        r["metrics"] = run_metrics(r, targets, config)


def _times(runs: list[dict[str, Any]], method: str, read) -> dict[tuple[str, int], Any]:
    return {run_key(r): read(r) for r in runs if r["method"] == method}


def converged_quality(run: dict[str, Any]) -> float:
    return run["final"]["l1"]


def converge_time(run: dict[str, Any]) -> float | None:
    """The run's time to its own convergence; a run converged at step 0 (its start was as
    good as it got) counts at its first evaluation, as an at-start target does, so no ratio
    divides by a generation time of ~0 s."""
    if run["time_to_converge_s"] is not None and run["steps_to_converge"] == 0:
        return run["generation_seconds"] + first_eval_seconds(run)
    return run["time_to_converge_s"]


def target_time(reference: str):
    return lambda run: run["metrics"]["targets"][reference]["seconds"]


def summarise(runs: list[dict[str, Any]], methods: list[str]) -> dict[str, dict[str, Any]]:
    """Per method: medians over every (concept, seed) run, never-reached as +inf."""
    summary = {}
    for method in methods:
        mine = [r for r in runs if r["method"] == method]
        if not mine:
            continue
        m = [r["metrics"] for r in mine]
        med = stats.censored_median
        summary[method] = {
            "runs": len(mine),
            "oracle": METHODS[method].oracle,
            "converged": sum(r["converged_step"] is not None for r in mine),
            "median_time_to_converge_s": med([converge_time(r) for r in mine]),
            "median_steps_to_converge": med([r["steps_to_converge"] for r in mine]),
            "median_stop_step": med([r["steps"] for r in mine]),
            "median_best_step": med([r["best_step"] for r in mine]),
            "median_final_quality": med([x["converged_test_quality"] for x in m]),
            "median_final_fd": med([r["final"]["fd"] for r in mine]),
            "reached_target": sum(x["reached_target"] for x in m),
            "at_start": sum(x["at_start"] for x in m),
            "median_time_to_target_s": med([x["time_to_target_s"] for x in m]),
            "median_steps_to_target": med([x["steps_to_target"] for x in m]),
            "reached": {
                ref: sum(x["targets"][ref]["reached"] for x in m) for ref in m[0]["targets"]
            },
            "median_time_to_reference_s": {
                ref: med([x["targets"][ref]["seconds"] for x in m]) for ref in m[0]["targets"]
            },
            "median_quality_step0": med([x["quality_step0"] for x in m]),
            "median_quality_at": {b: med([x["budgets"][b] for x in m]) for b in m[0]["budgets"]},
            "median_auc_mean_quality": med([x["auc_mean_quality"] for x in m]),
            "median_generation_s": med([r["generation_seconds"] for r in mine]),
            "final_quality_spread": spread([x["converged_test_quality"] for x in m]),
            "median_novelty_distance": curves.median_or_none(
                [(r["novelty"] or {}).get("nearest_checkpoint_distance") for r in mine]
            ),
            "median_novelty_output_l1": curves.median_or_none(
                [(r["novelty"] or {}).get("output_l1_to_nearest_checkpoint") for r in mine]
            ),
        }
    return summary


def spread(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {
        "min": float(np.min(values)),
        "max": float(np.max(values)),
        "std": float(np.std(values)),
    }


def speedups(
    runs: list[dict[str, Any]], summary: dict[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Per method and reference: the paired ratios reference / method (> 1 = the method is
    faster) of the time to converge and of the time to reach lora-zero's converged test
    quality, with intervals and the ratio of medians beside; and the paired quality ratio
    method / reference of the converged test quality (< 1 = better)."""
    out: dict[str, dict[str, Any]] = {}
    for method in summary:
        entry: dict[str, Any] = {}
        for ref in REFERENCES:
            if ref not in summary:
                continue
            entry[f"{ref}_converge"] = _paired(
                runs, ref, method, converge_time, summary, "converge"
            )
            theirs = _times(runs, ref, converged_quality)
            quality = {
                k: q / theirs[k]
                for k, q in _times(runs, method, converged_quality).items()
                if k in theirs
            }
            entry[f"quality_vs_{ref}"] = stats.ratio_summary(quality)
        if "lora-zero" in summary:
            entry["lora-zero_target"] = _paired(
                runs, "lora-zero", method, target_time("lora-zero"), summary, "target"
            )
        out[method] = entry
    return out


def _paired(runs, reference: str, method: str, read, summary, kind: str) -> dict[str, Any]:
    ratios = stats.paired_ratios(_times(runs, reference, read), _times(runs, method, read))
    paired = stats.ratio_summary(ratios) or {"median": None, "interval": None, "pairs": 0}
    key = "median_time_to_converge_s" if kind == "converge" else "median_time_to_target_s"
    paired["ratio_of_medians"] = stats.ratio_of_medians(
        summary[reference][key], summary[method][key]
    )
    return paired


def goals(
    runs: list[dict[str, Any]], summary: dict[str, dict[str, Any]], ratios: dict[str, Any]
) -> dict[str, Any]:
    """The headline's goals, measured: (a) wgen-1 converges >= 20x sooner than scratch and
    >= 6x sooner than lora-zero (medians of paired ratios), with converged test quality
    better than scratch's and within 2% of lora-zero's; (b) wgen-1 reaches lora-zero's
    converged test quality >= 1.5x sooner than the best text baseline, counting every run,
    with a bootstrap interval that excludes 1."""
    if HEADLINE not in summary or not set(REFERENCES) <= set(summary):
        return {}
    mine = ratios[HEADLINE]
    scratch, zero = mine["scratch_converge"], mine["lora-zero_converge"]
    q_scratch, q_zero = mine["quality_vs_scratch"], mine["quality_vs_lora-zero"]
    quality_ok = bool(q_scratch and q_zero and q_scratch["median"] < 1 and q_zero["median"] <= 1.02)
    rivals = {}
    for baseline in TEXT_BASELINES:
        if baseline in summary:
            rivals[baseline] = _paired(
                runs, baseline, HEADLINE, target_time("lora-zero"), summary, "target"
            )
    closest = min(rivals, key=lambda b: _finite_or(rivals[b]["median"], math.inf), default=None)
    b = rivals.get(closest) if closest else None
    return {
        "a_scratch_ratio": scratch,
        "a_lora_zero_ratio": zero,
        "a_quality_vs_scratch": q_scratch,
        "a_quality_vs_lora_zero": q_zero,
        "a_met": bool(
            quality_ok
            and _finite_or(scratch["median"], 0) >= 20
            and _finite_or(zero["median"], 0) >= 6
        ),
        "b_rivals": rivals,
        "b_closest_rival": closest,
        "b_ratio": b,
        "b_met": bool(b and b["interval"] and b["median"] >= 1.5 and b["interval"][0] > 1),
    }


def _finite_or(value: float | None, default: float) -> float:
    return default if value is None else value


def write_results(plan, config: Config, hardware: dict[str, Any], seconds: float) -> dict[str, Any]:
    """results.json, report.md and the figures from every finished run of ``plan``."""
    from wgen.gan.metrics import build_feature_extractor

    bench = config.bench
    runs = load_runs(plan)
    costs = clock.normalise(runs) if bench.clock == "normalised" else None
    add_metrics(runs, config)
    summary = summarise(runs, plan.methods)
    ratios = speedups(runs, summary)
    per_concept: dict[str, dict[str, Any]] = {}
    for concept in plan.concepts:
        mine = [r for r in runs if r["concept_id"] == concept.concept_id]
        per_concept[concept.concept_id] = {
            "text": concept.text,
            "kind": concept.kind,
            "methods": summarise(mine, plan.methods),
            "runs": mine,
        }
    results = {
        "protocol": "splits-v2",  # train / selection / test; censored, paired statistics
        "notes": "times in seconds, generation + training, evaluation excluded; 'inf' = never "
        "(a run that did not get there counts as +inf in every median)",
        "quality_metric": QUALITY,
        # normalised: each method's median cost per step and generation seconds (these)
        "clock": {"name": bench.clock, "method_costs": costs},
        "summary": summary,
        "speedups": ratios,
        "goals": goals(runs, summary, ratios),
        "methods": {m: METHODS[m].what for m in plan.methods},
        "oracles": [m for m in plan.methods if METHODS[m].oracle],
        "concepts": {c.concept_id: c.text for c in plan.concepts},
        "concept_kinds": {c.concept_id: c.kind for c in plan.concepts},
        "flagged_concepts": plan.flagged,
        "seeds": plan.seeds,
        "per_concept": per_concept,
        "splits": {
            "selection_pairs": bench.selection_pairs,
            "test_pairs": config.collect.eval_pairs,
        },
        "rule": {
            "eval_every": bench.eval_every,
            "window_steps": bench.window_steps,
            "window_fraction": bench.window_fraction,
            "tolerance": bench.tolerance,
            "min_delta": bench.min_delta,
            "smooth": bench.smooth,
            "max_steps": bench.max_steps,
            "converge_delta": bench.converge_delta,
        },
        "hardware": hardware,
        "torch_threads": config.gan.threads,
        "feature_extractor": build_feature_extractor(config.collect.feature_extractor).name,
        "generator": str(plan.generator_dir) if plan.generator_dir else None,
        "baselines": dataclasses.asdict(plan.baselines_recipe) if plan.baselines_recipe else None,
        "preset": config.preset,
        "complete": len(runs) == len(plan.concepts) * len(plan.methods) * len(plan.seeds),
        "wall_seconds_this_command": seconds,
    }
    write_json(plan.folder / "results.json", json_safe(results))
    figures = write_figures(plan, runs, summary, ratios, config)
    report = write_report(plan.folder / "report.md", results, figures)
    print0(headline_table(summary, ratios))
    print0(f"bench: report {report}; results {plan.folder / 'results.json'}")
    print0("bench: figures " + ", ".join(str(f) for f in figures))
    return results


def json_safe(value: Any) -> Any:
    """Infinities as the string 'inf' (strict JSON has no +inf; float('inf') reads it back)."""
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


# ---------------------------------------------------------------------------------------
# Tables and figures
# ---------------------------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 3, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isinf(value) and value > 0):
        return "never"
    return f"{value:.{digits}f}{unit}"


def _ratio(entry: dict[str, Any] | None) -> str:
    """'3.2x (2.1-5.0)' for a paired ratio; ∞ where the method got there and the
    reference never did in most pairs."""
    if not entry or entry.get("median") is None:
        return "n/a"

    def x(v: float) -> str:
        return "∞" if math.isinf(v) else f"{v:.2f}"

    text = f"{x(entry['median'])}x"
    if entry.get("interval"):
        low, high = entry["interval"]
        text += f" ({x(low)}-{x(high)})"
    return text


def _times_x(value: float | None) -> str:
    """A ratio of medians: ∞ where the reference's median is never and the method's is not."""
    if value is None:
        return "n/a"
    return "∞x" if math.isinf(value) else f"{value:.2f}x"


def _reached(s: dict[str, Any], ref: str) -> str:
    return f"{_fmt(s['median_time_to_reference_s'][ref], 2)} ({s['reached'][ref]}/{s['runs']})"


def headline_table(summary: dict[str, dict[str, Any]], ratios: dict[str, Any]) -> str:
    """The paper's form, per method (also what `wgen bench` and `wgen demo` print)."""
    head = (
        "| method | time to converge (s) | converged test L1 | time to scratch's L1 (s, reached) "
        "| time to lora-zero's L1 (s, reached) | vs scratch, to converge | vs lora-zero, to "
        "converge | L1 / lora-zero's |\n|---|---|---|---|---|---|---|---|"
    )
    rows = []
    for method, s in summary.items():
        name = f"{method} (oracle)" if s["oracle"] else method
        r = ratios.get(method, {})
        converge = f"{_fmt(s['median_time_to_converge_s'], 2)} ({s['converged']}/{s['runs']})"
        q_zero = r.get("quality_vs_lora-zero")
        rows.append(
            f"| {name} | {converge} | {_fmt(s['median_final_quality'])} "
            f"| {_reached(s, 'scratch') if 'scratch' in s['reached'] else 'n/a'} "
            f"| {_reached(s, 'lora-zero') if 'lora-zero' in s['reached'] else 'n/a'} "
            f"| {_ratio(r.get('scratch_converge'))} | {_ratio(r.get('lora-zero_converge'))} "
            f"| {_ratio(q_zero)} |"
        )
    return "\n".join([head, *rows])


def steps_table(summary: dict[str, dict[str, Any]]) -> str:
    head = (
        "| method | L1 step 0 | rule stopped at (step) | best at (step) | converged at (step, "
        "read after) | steps to lora-zero's L1 | at the target at step 0 | mean L1 first steps "
        "|\n|---|---|---|---|---|---|---|---|"
    )
    rows = [
        f"| {m} | {_fmt(s['median_quality_step0'])} | {_fmt(s['median_stop_step'], 0)} "
        f"| {_fmt(s['median_best_step'], 0)} | {_fmt(s['median_steps_to_converge'], 0)} "
        f"| {_fmt(s['median_steps_to_target'], 0)} | {s['at_start']}/{s['runs']} "
        f"| {_fmt(s['median_auc_mean_quality'])} |"
        for m, s in summary.items()
    ]
    return "\n".join([head, *rows])


def clock_text(used: dict[str, Any]) -> str:
    """How the report's seconds were read (`wgen.bench.clock`)."""
    if used["name"] == "wall":
        return "on each run's own wall clock (`bench.clock=wall`)"
    costs = ", ".join(
        f"{m} {c['seconds_per_step'] * 1000:.0f} ms/step ({c['trains']}) + {c['generation_seconds']:.2f} s"
        for m, c in used["method_costs"].items()
    )
    return (
        "on the load-normalised clock (`bench.clock=normalised`: a run's time at step s is "
        "its method's median generation seconds + s × the median seconds per step of what it "
        "trains (a LoRA, or the whole GAN for scratch), so the "
        "machine's other load does not decide a paired ratio; `--set bench.clock=wall` reads "
        f"each run's own clock): {costs}"
    )


def write_report(path: Path, results: dict[str, Any], figures: list[Path]) -> Path:
    summary, ratios, rule = results["summary"], results["speedups"], results["rule"]
    budgets = next(iter(summary.values()))["median_quality_at"] if summary else {}
    splits = results["splits"]
    lines = [
        "# wgen bench",
        "",
        f"Preset `{results['preset']}`, {len(results['concepts'])} held-out concept(s) "
        f"({_kinds(results)}), seeds {results['seeds']}, generator `{results['generator']}`.",
        "",
        f"**Splits.** Each concept's pairs: the last {splits['test_pairs']} are the *test* "
        f"pairs, which only this report reads; the {splits['selection_pairs']} before them "
        "are the *selection* pairs, the only ones the rule and the restoring of the best model "
        "read; the rest are trained on. The same split for every method.",
        "",
        f"**Rule** (the same for every method): an evaluation every {rule['eval_every']} "
        "steps; converged once the best smoothed selection L1 (mean of the last "
        f"{rule['smooth']} evaluations) improved by at most {rule['tolerance']:.0%} of itself "
        f"(or {rule['min_delta']}) over the last max({rule['window_steps']}, "
        f"{rule['window_fraction']} × steps run) steps; at most {rule['max_steps']} steps (a "
        "run the rule has not stopped by then never converged). Every run ends with its best "
        "selection model; **converged test L1** is that model's paired L1 on the test pairs. "
        "*Time to converge* is read after the run: the first evaluation whose smoothed "
        f"selection L1 is within {rule['converge_delta']:.0%} of the run's converged value.",
        "",
        "**Statistics.** Times are generation + training, evaluation excluded, "
        f"{results['torch_threads']} torch thread(s) per run on {results['hardware']['cpu']}, "
        f"{clock_text(results['clock'])}. "
        "Medians over every run: a run that never got there counts as +inf (**never** when "
        "the median itself is, as it is once half the runs never got there), with the runs "
        "that got there in brackets. A target is "
        "reached when the smoothed test curve first gets to it; a run already there at "
        "step 0 counts as reaching it at its first evaluation. Speed-ups are medians of "
        "per-run ratios paired by (concept, seed), reference / method (> 1 = the method is "
        "faster), with 95% bootstrap intervals over concepts; ∞ = the method got there and "
        "the reference did not.",
        "",
        "## Headline: each method to its own convergence",
        "",
        headline_table(summary, ratios),
        "",
        "## Steps",
        "",
        steps_table(summary),
        "",
        "## Paired speed-ups beside the ratio of medians",
        "",
        "| method | scratch / method, converge (ratio of medians) | lora-zero / method, converge "
        "| lora-zero / method, to lora-zero's L1 | L1 / scratch's |",
        "|---|---|---|---|---|",
        *[
            f"| {m} | {_ratio(r.get('scratch_converge'))} "
            f"({_times_x((r.get('scratch_converge') or {}).get('ratio_of_medians'))}) "
            f"| {_ratio(r.get('lora-zero_converge'))} "
            f"({_times_x((r.get('lora-zero_converge') or {}).get('ratio_of_medians'))}) "
            f"| {_ratio(r.get('lora-zero_target'))} "
            f"({_times_x((r.get('lora-zero_target') or {}).get('ratio_of_medians'))}) "
            f"| {_ratio(r.get('quality_vs_scratch'))} |"
            for m, r in ratios.items()
        ],
        "",
        "## Test quality at fixed budgets (median L1 of the model at step N)",
        "",
        "| method | " + " | ".join(budgets) + " |",
        "|---|" + "---|" * len(budgets),
        *[
            f"| {m} | " + " | ".join(_fmt(s["median_quality_at"][b]) for b in budgets) + " |"
            for m, s in summary.items()
        ],
        "",
    ]
    lines += convergence_steps_lines(results)
    lines += [
        "## Novelty of the predicted LoRA",
        "",
        "L2 distance to the nearest training checkpoint; output L1 between the GAN with the "
        "predicted LoRA and with that checkpoint, on the test images.",
        "",
        "| method | distance to nearest checkpoint | output L1 to it |",
        "|---|---|---|",
        *[
            f"| {m} | {_fmt(s['median_novelty_distance'])} | {_fmt(s['median_novelty_output_l1'])} |"
            for m, s in summary.items()
            if s["median_novelty_distance"] is not None
        ],
        "",
    ]
    spread_value = _first_spread(results)
    if spread_value is not None:
        lines += [f"Within-concept spread of the training checkpoints: {spread_value:.3f}.", ""]
    lines += goal_lines(results["goals"])
    if results.get("baselines"):
        lines += ["## Baselines' recipe", "", f"{results['baselines']}", ""]
    if results["flagged_concepts"]:
        lines += ["## Left out", ""]
        lines += [f"- {f['text']!r}: {f['reason']}" for f in results["flagged_concepts"]]
        lines += [""]
    lines += ["## Figures", ""] + [f"![{f.stem}]({f.relative_to(path.parent)})" for f in figures]
    kinds = results.get("concept_kinds", {})
    lines += ["", "## Concepts", ""] + [
        f"- `{c}` {t!r}" + (f" ({kinds[c]})" if kinds.get(c) else "")
        for c, t in results["concepts"].items()
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def _kinds(results: dict[str, Any]) -> str:
    kinds = [k for k in results.get("concept_kinds", {}).values() if k]
    if not kinds:
        return "from --concepts"
    return ", ".join(f"{kinds.count(k)} {k}" for k in sorted(set(kinds)))


def convergence_steps_lines(results: dict[str, Any]) -> list[str]:
    """Where the rule stopped scratch, and where its best and its convergence were."""
    runs = [
        r for c in results["per_concept"].values() for r in c["runs"] if r["method"] == "scratch"
    ]
    if not runs:
        return []

    def quantiles(values: list[float | None]) -> str:
        finite = sorted(v for v in values if v is not None)
        if not finite:
            return "never"
        q = np.quantile(finite, [0, 0.25, 0.5, 0.75, 1.0])
        return " / ".join(f"{v:.0f}" for v in q)

    stopped = sum(r["converged_step"] is not None for r in runs)
    return [
        "## Scratch under the rule (min / 25% / median / 75% / max)",
        "",
        f"Converged in {stopped} of {len(runs)} runs under the {results['rule']['max_steps']}-"
        "step cap.",
        "",
        "| reading | steps |",
        "|---|---|",
        f"| rule stopped | {quantiles([r['converged_step'] for r in runs])} |",
        f"| best (restored) model | {quantiles([r['best_step'] for r in runs])} |",
        f"| converged (read after the run) | {quantiles([r['steps_to_converge'] for r in runs])} |",
        "",
    ]


def goal_lines(goal: dict[str, Any]) -> list[str]:
    if not goal:
        return []
    b = goal["b_ratio"]
    return [
        "## The headline's goals",
        "",
        f"- (a) wgen-1 converges {_ratio(goal['a_scratch_ratio'])} sooner than scratch (goal "
        f"20x) and {_ratio(goal['a_lora_zero_ratio'])} sooner than lora-zero (goal 6x); its "
        f"converged test L1 is {_ratio(goal['a_quality_vs_scratch'])} scratch's (goal < 1) and "
        f"{_ratio(goal['a_quality_vs_lora_zero'])} lora-zero's (goal <= 1.02). "
        f"**{'met' if goal['a_met'] else 'missed'}**.",
        f"- (b) wgen-1 reaches lora-zero's converged test L1 {_ratio(b)} sooner than "
        f"{goal['b_closest_rival']}, the closest of "
        + ", ".join(f"{k} {_ratio(v)}" for k, v in goal["b_rivals"].items())
        + f" (goal 1.5x, interval above 1). **{'met' if goal['b_met'] else 'missed'}**.",
        "",
    ]


def _first_spread(results: dict[str, Any]) -> float | None:
    for concept in results["per_concept"].values():
        for run in concept["runs"]:
            if run.get("novelty"):
                return run["novelty"]["within_concept_spread"]
    return None


def write_figures(plan, runs, summary, ratios, config: Config) -> list[Path]:
    from wgen.core.plots import image_grid, new_figure, save_figure

    folder = plan.folder / "plots"
    figures = []
    for concept in plan.concepts:
        mine = [r for r in runs if r["concept_id"] == concept.concept_id]
        if not mine:
            continue
        fig = new_figure((7.5, 4.5))
        ax = fig.subplots()
        colours: dict[str, Any] = {}
        for r in mine:
            wall = [
                max(r["generation_seconds"] + h["train_seconds"], WALL_FLOOR_S)
                for h in r["history"]
            ]
            values = curves.smooth([h["test_l1"] for h in r["history"]], config.bench.smooth)
            kwargs = {"color": colours[r["method"]]} if r["method"] in colours else {}
            (line,) = ax.plot(
                wall,
                values,
                lw=1.4,
                ls="--" if METHODS[r["method"]].oracle else "-",
                label=r["method"] if r["method"] not in colours else None,
                **kwargs,
            )
            colours.setdefault(r["method"], line.get_color())
            if r["time_to_converge_s"] is not None:  # where it converged, at its test L1
                at = max(r["time_to_converge_s"], WALL_FLOOR_S)
                ax.plot([at], [r["final"]["l1"]], "o", color=line.get_color(), mfc="none")
        target = mine[0]["metrics"]["target"]
        if target is not None:
            ax.axhline(target, color="k", lw=0.8, ls=":", label="lora-zero converged (test)")
        ax.set_xscale("log")
        ax.set_xlabel("wall time: generation + training, s (log; evaluation excluded)")
        ax.set_ylabel("paired L1 on test pairs, smoothed (lower is better)")
        ax.set_title(f"{concept.concept_id}: {concept.text}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        figures.append(save_figure(fig, folder / f"quality_vs_time_{concept.concept_id}.png"))
    figures.append(speedup_figure(ratios, folder / "speedups.png"))
    grid = image_grid_rows(plan, config)
    if grid:
        rows, titles = grid
        figures.append(image_grid(rows, folder / "grid.png", titles))
    return figures


def speedup_figure(ratios: dict[str, Any], path: Path) -> Path:
    """Paired speed-ups with their intervals, on a log axis (never-reached as the top)."""
    from wgen.core.plots import new_figure, save_figure

    names = [m for m in ratios if m != "scratch"]
    fig = new_figure((8, 4))
    ax = fig.subplots()
    x = np.arange(len(names))
    width = 0.27
    keys = [
        ("scratch_converge", "scratch / method, to converge"),
        ("lora-zero_converge", "lora-zero / method, to converge"),
        ("lora-zero_target", "lora-zero / method, to lora-zero's L1"),
    ]
    finite = [
        v
        for m in names
        for k, _ in keys
        for v in [((ratios[m].get(k) or {}).get("median"))]
        if v is not None and not math.isinf(v) and v > 0
    ]
    top = max(finite, default=1.0) * 4
    for i, (key, label) in enumerate(keys):
        medians, lows, highs = [], [], []
        for m in names:
            entry = ratios[m].get(key) or {}
            med = entry.get("median")
            med = top if med is not None and math.isinf(med) else (med or 0.0)
            low, high = entry.get("interval") or (med, med)
            low, high = (min(top, v) if v is not None else med for v in (low, high))
            medians.append(med)
            lows.append(max(0.0, med - low))
            highs.append(max(0.0, high - med))
        ax.bar(x + (i - 1) * width, medians, width, label=label, yerr=[lows, highs], capsize=2)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_yscale("symlog", linthresh=0.1)
    ax.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("speed-up: median of paired ratios, 95% interval")
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def image_grid_rows(plan, config: Config):
    """Rows: one per (concept, method) of seed 0: source, target, output at step 0 and at
    bench.grid_step, for the first test image of the first two concepts."""
    rows = []
    for concept in plan.concepts[:2]:
        pairs_file = plan.folder / "runs" / concept.concept_id / "pairs.npz"
        if not pairs_file.exists():
            continue
        pairs = np.load(pairs_file)
        for method in plan.methods:
            path = plan.run_path(concept.concept_id, method, 0).with_suffix(".npz")
            if not path.exists():
                continue
            outputs = np.load(path)
            keys = ["step0", f"step{config.bench.grid_step}"]
            images = [pairs["sources"][0], pairs["targets"][0]] + [
                outputs[k][0] for k in keys if k in outputs
            ]
            rows.append((f"{concept.concept_id} {method}", images))
    titles = ["source", "target", "step 0", f"step {config.bench.grid_step}"]
    return (rows, titles) if rows else None
