"""The benchmark's results: every run's numbers → results.json, report.md and the figures.

Per run (concept, method, seed), read off its smoothed curve (`wgen.bench.curves`):
quality at step 0 and at the fixed budgets, the mean quality over the first
`bench.auc_steps` steps (area under the curve / steps), time- and steps-to-converge under
the rule (generation time included, evaluation time excluded) and final quality, and
time- and steps-to-target, the target being lora-zero's converged quality on the same
concept and seed. Medians over concepts and seeds make the summary; a method whose runs
never reach the target gets null there, and the report says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from wgen.bench import curves
from wgen.bench.methods import METHODS, TEXT_BASELINES
from wgen.bench.stage import bench_rule
from wgen.config import Config
from wgen.core.runtime import print0, read_json, write_json

QUALITY = {"name": "l1", "lower_is_better": True}
WALL_FLOOR_S = 1e-3  # where a zero-time start sits on the log time axis


def run_metrics(run: dict[str, Any], target: float | None, config: Config) -> dict[str, Any]:
    """Everything read off one run's curve (see the module docstring)."""
    bench = config.bench
    steps = [h["step"] for h in run["history"]]
    wall = [run["generation_seconds"] + h["train_seconds"] for h in run["history"]]
    smoothed = curves.smooth([h["l1"] for h in run["history"]], bench.smooth)
    lower = QUALITY["lower_is_better"]
    step_to_target, time_to_target = (None, None)
    if target is not None:
        step_to_target, time_to_target = curves.first_reaching(steps, wall, smoothed, target, lower)
    return {
        "quality_step0": smoothed[0],
        "final_quality": smoothed[-1],
        "budgets": {str(b): curves.quality_at(steps, smoothed, b) for b in bench.budgets},
        "auc_mean_quality": curves.mean_quality(steps, smoothed, bench.auc_steps),
        "target": target,
        "steps_to_target": step_to_target,
        "time_to_target_s": time_to_target,
        "reached_target": step_to_target is not None,
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


def summarise(runs: list[dict[str, Any]], methods: list[str]) -> dict[str, dict[str, Any]]:
    """Per method: medians over its (concept, seed) runs."""
    summary = {}
    for method in methods:
        mine = [r for r in runs if r["method"] == method]
        if not mine:
            continue
        reached = [r for r in mine if r["metrics"]["reached_target"]]
        summary[method] = {
            "runs": len(mine),
            "oracle": METHODS[method].oracle,
            "converged": sum(r["converged_step"] is not None for r in mine),
            "reached_target": len(reached),
            "median_time_to_converge_s": curves.median_or_none(
                [r["time_to_converge_s"] for r in mine]
            ),
            "median_steps_to_converge": curves.median_or_none([r["converged_step"] for r in mine]),
            "median_final_quality": curves.median_or_none(
                [r["metrics"]["final_quality"] for r in mine]
            ),
            "median_final_fd": curves.median_or_none([r["final"]["fd"] for r in mine]),
            "median_time_to_target_s": curves.median_or_none(
                [r["metrics"]["time_to_target_s"] for r in reached]
            ),
            "median_steps_to_target": curves.median_or_none(
                [r["metrics"]["steps_to_target"] for r in reached]
            ),
            "median_quality_step0": curves.median_or_none(
                [r["metrics"]["quality_step0"] for r in mine]
            ),
            "median_quality_at": {
                b: curves.median_or_none([r["metrics"]["budgets"][b] for r in mine])
                for b in mine[0]["metrics"]["budgets"]
            },
            "median_auc_mean_quality": curves.median_or_none(
                [r["metrics"]["auc_mean_quality"] for r in mine]
            ),
            "median_generation_s": curves.median_or_none([r["generation_seconds"] for r in mine]),
            "final_quality_spread": spread([r["metrics"]["final_quality"] for r in mine]),
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


def speedups(summary: dict[str, dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """Median time ratios: scratch / method and lora-zero / method to converge, and
    lora-zero / method to the target (> 1 = the method is faster)."""
    scratch = summary.get("scratch", {}).get("median_time_to_converge_s")
    zero = summary.get("lora-zero", {}).get("median_time_to_converge_s")
    zero_target = summary.get("lora-zero", {}).get("median_time_to_target_s")
    return {
        m: {
            "scratch_over_method_converge": curves.ratio(scratch, s["median_time_to_converge_s"]),
            "lora_zero_over_method_converge": curves.ratio(zero, s["median_time_to_converge_s"]),
            "lora_zero_over_method_target": curves.ratio(zero_target, s["median_time_to_target_s"]),
        }
        for m, s in summary.items()
    }


def goals(summary: dict[str, dict[str, Any]], ratios: dict[str, Any]) -> dict[str, Any]:
    """The issue's two goals, measured: (a) wgen-1 vs scratch (20x) and lora-zero (6x) to
    converge, final quality no worse than scratch's; (b) wgen-1 to the target 1.5x sooner
    than the best text baseline."""
    if "wgen-1" not in summary:
        return {}
    w = summary["wgen-1"]
    a = ratios["wgen-1"]
    best = [
        summary[m]["median_time_to_target_s"]
        for m in TEXT_BASELINES
        if m in summary and summary[m]["median_time_to_target_s"] is not None
    ]
    best_baseline = min(best) if best else None
    b_ratio = curves.ratio(best_baseline, w["median_time_to_target_s"])
    scratch_q = summary.get("scratch", {}).get("median_final_quality")
    quality_ok = (
        None
        if scratch_q is None or w["median_final_quality"] is None
        else w["median_final_quality"] <= scratch_q
    )
    s_ratio, z_ratio = a["scratch_over_method_converge"], a["lora_zero_over_method_converge"]
    return {
        "a_scratch_ratio": s_ratio,
        "a_lora_zero_ratio": z_ratio,
        "a_quality_no_worse_than_scratch": quality_ok,
        "a_met": bool(s_ratio and z_ratio and s_ratio >= 20 and z_ratio >= 6 and quality_ok),
        "b_best_baseline_time_to_target_s": best_baseline,
        "b_ratio": b_ratio,
        "b_met": bool(b_ratio and b_ratio >= 1.5),
    }


def write_results(plan, config: Config, hardware: dict[str, Any], seconds: float) -> dict[str, Any]:
    """results.json, report.md and the figures from every finished run of ``plan``."""
    from wgen.gan.metrics import build_feature_extractor

    runs = load_runs(plan)
    targets: dict[tuple[str, int], float] = {}  # (concept, seed) → lora-zero's converged quality
    for r in runs:
        if r["method"] == "lora-zero":
            smoothed = curves.smooth([h["l1"] for h in r["history"]], config.bench.smooth)
            targets[(r["concept_id"], r["seed"])] = smoothed[-1]
    for r in runs:
        r["metrics"] = run_metrics(r, targets.get((r["concept_id"], r["seed"])), config)
    summary = summarise(runs, plan.methods)
    ratios = speedups(summary)
    rule = bench_rule(config).collect  # the convergence rule every fine-tuning ran under
    per_concept: dict[str, dict[str, Any]] = {}
    for concept in plan.concepts:
        mine = [r for r in runs if r["concept_id"] == concept.concept_id]
        per_concept[concept.concept_id] = {
            "text": concept.text,
            "methods": summarise(mine, plan.methods),
            "runs": mine,
        }
    results = {
        "quality_metric": QUALITY,
        "summary": summary,
        "speedups": ratios,
        "goals": goals(summary, ratios),
        "methods": {m: METHODS[m].what for m in plan.methods},
        "oracles": [m for m in plan.methods if METHODS[m].oracle],
        "concepts": {c.concept_id: c.text for c in plan.concepts},
        "flagged_concepts": plan.flagged,
        "seeds": plan.seeds,
        "per_concept": per_concept,
        "rule": {
            "eval_every": rule.eval_every,
            "patience": rule.patience,
            "smooth": rule.smooth,
            "tolerance": rule.tolerance,
            "min_delta": rule.min_delta,
            "gain_fraction": rule.gain_fraction,
            "max_steps": rule.max_steps,
            "floor_steps": rule.patience * rule.eval_every,
        },
        "hardware": hardware,
        "torch_threads": config.gan.threads,
        "feature_extractor": build_feature_extractor(config.collect.feature_extractor).name,
        "generator": str(plan.generator_dir) if plan.generator_dir else None,
        "preset": config.preset,
        "complete": len(runs) == len(plan.concepts) * len(plan.methods) * len(plan.seeds),
        "wall_seconds_this_command": seconds,
    }
    write_json(plan.folder / "results.json", results)
    figures = write_figures(plan, runs, summary, ratios, config)
    report = write_report(plan.folder / "report.md", results, figures)
    print0(summary_table(summary))
    print0(f"bench: report {report}; results {plan.folder / 'results.json'}")
    print0("bench: figures " + ", ".join(str(f) for f in figures))
    return results


# ---------------------------------------------------------------------------------------
# Tables and figures
# ---------------------------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 3, unit: str = "") -> str:
    return "never" if value is None else f"{value:.{digits}f}{unit}"


def summary_table(summary: dict[str, dict[str, Any]]) -> str:
    """The summary as a Markdown table (also what `wgen bench` and `wgen demo` print)."""
    head = (
        "| method | L1 step 0 | time to converge (s) | steps | final L1 | time to target (s) "
        "| steps to target | reached target | mean L1 first steps |\n|---|---|---|---|---|---|---|---|---|"
    )
    rows = []
    for method, s in summary.items():
        name = f"{method} (oracle)" if s["oracle"] else method
        converge = _fmt(s["median_time_to_converge_s"], 2)
        if s["converged"] < s["runs"]:
            converge += f" ({s['converged']}/{s['runs']} converged)"
        rows.append(
            f"| {name} | {_fmt(s['median_quality_step0'])} | {converge} "
            f"| {_fmt(s['median_steps_to_converge'], 0)} | {_fmt(s['median_final_quality'])} "
            f"| {_fmt(s['median_time_to_target_s'], 2)} | {_fmt(s['median_steps_to_target'], 0)} "
            f"| {s['reached_target']}/{s['runs']} | {_fmt(s['median_auc_mean_quality'])} |"
        )
    return "\n".join([head, *rows])


def write_report(path: Path, results: dict[str, Any], figures: list[Path]) -> Path:
    summary, ratios, rule = results["summary"], results["speedups"], results["rule"]
    budgets = next(iter(summary.values()))["median_quality_at"] if summary else {}
    lines = [
        "# wgen bench",
        "",
        f"Preset `{results['preset']}`, {len(results['concepts'])} held-out concept(s), seeds "
        f"{results['seeds']}, generator `{results['generator']}`. Quality: paired L1 on each "
        "concept's held-back pairs (lower is better), smoothed over the last "
        f"{rule['smooth']} evaluation(s); Fréchet distance at the end with the "
        f"`{results['feature_extractor']}` feature extractor. Rule: an evaluation every "
        f"{rule['eval_every']} steps, converged after {rule['patience']} without progress "
        f"(floor {rule['floor_steps']} steps; progress = more than {rule['tolerance']:.0%} of "
        f"the best, {rule['min_delta']} and {rule['gain_fraction']:.0%} of the gain "
        f"since the start), at most {rule['max_steps']} steps. Times: "
        "generation + training, evaluation excluded; "
        f"{results['torch_threads']} torch thread(s) per run on {results['hardware']['cpu']}.",
        "",
        "Medians over concepts and seeds. The target is lora-zero's converged quality on the "
        "same concept and seed; **never** = no run of that method reached it (it plateaus "
        "worse, which is not a fast convergence).",
        "",
        summary_table(summary),
        "",
        "## Quality at fixed budgets (median L1 at step N)",
        "",
        "| method | " + " | ".join(budgets) + " |",
        "|---|" + "---|" * len(budgets),
        *[
            f"| {m} | " + " | ".join(_fmt(s["median_quality_at"][b]) for b in budgets) + " |"
            for m, s in summary.items()
        ],
        "",
        "## Speed-ups (median time ratios; > 1 = faster than the reference)",
        "",
        "| method | scratch / method (converge) | lora-zero / method (converge) | lora-zero / method (target) |",
        "|---|---|---|---|",
        *[
            f"| {m} | {_fmt(r['scratch_over_method_converge'], 2, 'x')} "
            f"| {_fmt(r['lora_zero_over_method_converge'], 2, 'x')} "
            f"| {_fmt(r['lora_zero_over_method_target'], 2, 'x')} |"
            for m, r in ratios.items()
        ],
        "",
        "## Novelty of the predicted LoRA",
        "",
        "L2 distance to the nearest training checkpoint, beside the median spread between "
        "checkpoints of one training concept; output L1 between the GAN with the predicted "
        "LoRA and with that checkpoint, on the evaluation images.",
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
    spread = _first_spread(results)
    if spread is not None:
        lines += [f"Within-concept spread of the training checkpoints: {spread:.3f}.", ""]
    goal = results["goals"]
    if goal:
        lines += [
            "## The issue's goals",
            "",
            f"- (a) wgen-1 converges {_fmt(goal['a_scratch_ratio'], 2, 'x')} sooner than scratch "
            f"(goal 20x) and {_fmt(goal['a_lora_zero_ratio'], 2, 'x')} sooner than lora-zero "
            f"(goal 6x); final quality no worse than scratch's: {goal['a_quality_no_worse_than_scratch']}. "
            f"**{'met' if goal['a_met'] else 'missed'}**.",
            f"- (b) wgen-1 reaches the target {_fmt(goal['b_ratio'], 2, 'x')} sooner than the best "
            f"of {', '.join(TEXT_BASELINES)} (goal 1.5x). **{'met' if goal['b_met'] else 'missed'}**.",
            "",
        ]
    if results["flagged_concepts"]:
        lines += ["## Left out", ""]
        lines += [f"- {f['text']!r}: {f['reason']}" for f in results["flagged_concepts"]]
        lines += [""]
    lines += ["## Figures", ""] + [f"![{f.stem}]({f.relative_to(path.parent)})" for f in figures]
    lines += ["", "## Concepts", ""] + [f"- `{c}` {t!r}" for c, t in results["concepts"].items()]
    path.write_text("\n".join(lines) + "\n")
    return path


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
        colours = {}
        for r in mine:
            wall = [
                max(r["generation_seconds"] + h["train_seconds"], WALL_FLOOR_S)
                for h in r["history"]
            ]
            values = curves.smooth([h["l1"] for h in r["history"]], config.bench.smooth)
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
            if r["converged_step"] is not None:
                ax.plot([wall[-1]], [values[-1]], "o", color=line.get_color(), mfc="none")
        target = mine[0]["metrics"]["target"]
        if target is not None:
            ax.axhline(target, color="k", lw=0.8, ls=":", label="target (lora-zero converged)")
        ax.set_xscale("log")
        ax.set_xlabel("wall time: generation + training, s (log; evaluation excluded)")
        ax.set_ylabel("paired L1, smoothed (lower is better)")
        ax.set_title(f"{concept.concept_id}: {concept.text}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        figures.append(save_figure(fig, folder / f"quality_vs_time_{concept.concept_id}.png"))

    names = [m for m in ratios if m not in ("scratch",)]
    fig = new_figure((8, 4))
    ax = fig.subplots()
    x = np.arange(len(names))
    width = 0.27
    for i, (key, label) in enumerate(
        [
            ("scratch_over_method_converge", "scratch / method, to converge"),
            ("lora_zero_over_method_converge", "lora-zero / method, to converge"),
            ("lora_zero_over_method_target", "lora-zero / method, to target"),
        ]
    ):
        values = [ratios[m][key] or 0.0 for m in names]
        ax.bar(x + (i - 1) * width, values, width, label=label)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("speed-up (median time ratio; 0 = never reached)")
    ax.legend(fontsize=7)
    figures.append(save_figure(fig, folder / "speedups.png"))

    grid = image_grid_rows(plan, config)
    if grid:
        rows, titles = grid
        figures.append(image_grid(rows, folder / "grid.png", titles))
    return figures


def image_grid_rows(plan, config: Config):
    """Rows: one per (concept, method) of seed 0: source, target, output at step 0 and at
    bench.grid_step, for the first evaluation image of the first two concepts."""
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
