"""Zero-shot quality and latency of guided and distilled generators (issue 28's tables).

For every validation and held-out concept of a run folder, the base GAN is loaded with a
generated LoRA and scored on the concept's held-back pairs (paired L1 on [0, 1], lower is
better), as `generator_quality.py` scores (its helpers are reused):

    teacher       the guided generator (trained with denoiser.cond_drop > 0) at every
                  w × steps of the grid: 1 = the direct single step, more = DDIM; two halves
                  (conditional, null text) in one forward per step where w > 0
    <student>     each `wgen distill` folder of --distill (w, steps-N): the w-student over the
                  same grid, each progressive student at its own steps; w is its input
    mean, ridge   the mean training checkpoint and the linear text → weights map, for the gap

"gap" = (L1_mean − L1) / (L1_mean − L1_own) over the concepts with an own LoRA (held-out
ones only where collected: collect.heldout_concepts); the L1 is over every concept.
Latency: text → LoRA (embedding + denoising + un-chunk), 1 thread, median of --repeats;
"rows" = block rows through the denoiser per LoRA (N per step, 2N per guided teacher step).

    .venv/bin/python benchmarks/guidance_grid.py --out runs/demo28 \\
        --json docs/results/distill/grid.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).parent))
from generator_quality import gap_closed, latency, own_loras  # noqa: E402

from wgen.bench.methods import BaselineRecipe, Baselines  # noqa: E402
from wgen.data.pairs import CONCEPTS_FILE, load_concepts  # noqa: E402
from wgen.generator.checkpoint import WeightGenerator  # noqa: E402
from wgen.models.base import BASE_DIR, load_base_model  # noqa: E402
from wgen.weights.store import WeightStore  # noqa: E402


def floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="run folder")
    parser.add_argument("--teacher", type=Path, help="guided generator (default OUT/generator)")
    parser.add_argument("--distill", type=Path, help="wgen distill folder (default OUT/distill)")
    parser.add_argument("--w", type=floats, default=[0, 0.5, 1, 2, 4])
    parser.add_argument("--steps", type=floats, default=[1, 2, 4, 8])
    parser.add_argument("--student-steps", type=floats, default=None, help="w-student grid steps")
    parser.add_argument("--seeds", default="0", help="generation seeds to average over")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    seeds = [int(s) for s in args.seeds.split(",")]
    steps_grid = [int(s) for s in args.steps]
    teacher = WeightGenerator.load(args.teacher or args.out / "generator")
    models: dict[str, tuple[WeightGenerator, list[int]]] = {"teacher": (teacher, steps_grid)}
    distill = args.distill or args.out / "distill"
    student_steps = [int(s) for s in (args.student_steps or args.steps)]
    for folder in sorted(distill.glob("*/generator.json")):
        student = WeightGenerator.load(folder.parent)
        own_steps = student.config.generate.steps
        grid = student_steps if folder.parent.name == "w" else [own_steps]
        models[folder.parent.name] = (student, grid)

    config = teacher.config
    base = load_base_model(args.out / BASE_DIR, config)
    store = WeightStore(args.out)
    lengths = store.manifest().group_lengths
    baselines = Baselines.fit(
        args.out,
        config,
        base,
        ["ridge"],
        BaselineRecipe(config.train.paraphrases, config.train.max_train_concepts, 0, "constant"),
    )
    programs = {c.id: c for c in load_concepts(args.out / CONCEPTS_FILE)}
    eval_ids = sorted(c.id for c in programs.values() if c.split in ("val", "heldout"))
    own = own_loras(store.read(), eval_ids, len(lengths))
    evals = base.task_data(args.out, eval_ids)
    pooled = baselines.embed([e.text for e in evals])
    rows = []
    for i, e in enumerate(evals):
        split = programs[e.concept_id].split
        scores = {}
        if e.concept_id in own:
            state = baselines.state(own[e.concept_id])
            scores[("own", 0, 0.0)] = base.quality(state, e)
        for method in ("mean", "ridge"):
            flat = baselines.predict(method, pooled[e.text], None)
            scores[(method, 0, 0.0)] = base.quality(baselines.state(flat), e)
        for name, (model, grid) in models.items():
            text = model.embed(e.text)
            for steps in grid:
                for w in args.w:
                    l1 = [
                        base.quality(model.generate_from_embedding(text, steps, s, w), e)["l1"]
                        for s in seeds
                    ]
                    scores[(name, steps, w)] = {"l1": float(np.mean(l1))}
        for (name, steps, w), metrics in scores.items():
            rows.append(
                {"concept_id": e.concept_id, "split": split, "model": name, "steps": steps,
                 "w": w, "l1": metrics["l1"]}
            )  # fmt: skip
        print(
            f"[{i + 1}/{len(evals)}] {e.concept_id} {split} ({time.perf_counter() - start:.0f} s)"
        )
    table = pd.DataFrame(rows)

    summary = []
    for split in ("val", "heldout"):
        part = table[table["split"] == split]
        ref = {
            m: part[part["model"] == m].set_index("concept_id")["l1"]
            for m in ("mean", "own", "ridge")
        }
        with_own = ref["own"].index  # the gap's concepts; the L1 is over every concept
        for (name, steps, w), group in part.groupby(["model", "steps", "w"]):
            l1 = group.set_index("concept_id")["l1"].reindex(ref["mean"].index)
            gap = np.nan
            if len(with_own):
                columns = (ref["mean"], l1, ref["own"])
                gap = gap_closed(*(c.reindex(with_own).to_numpy() for c in columns))
            summary.append(
                {"split": split, "model": name, "steps": int(steps), "w": float(w),
                 "l1": float(l1.mean()), "concepts": int(l1.notna().sum()),
                 "gap": gap, "gap_concepts": len(with_own)}
            )  # fmt: skip
    summary = pd.DataFrame(summary)
    pd.set_option("display.width", 220)
    for split in ("val", "heldout"):
        part = summary[summary["split"] == split]
        print(f"\n{split}: mean paired L1 (gap closed) per model/steps × w")
        print(
            part.assign(cell=[f"{r.l1:.4f} ({r.gap:.0%})" for r in part.itertuples()])
            .pivot_table(index=["model", "steps"], columns="w", values="cell", aggfunc="first")
            .to_string()
        )

    probe = evals[0].text
    timings = []
    for name, (model, grid) in models.items():
        model.encoder  # noqa: B018 - τ loaded before the clock
        for steps in grid:
            for w in sorted({0.0, max(args.w)}):
                seconds = latency(
                    lambda m=model, s=steps, g=w: m.generate(probe, s, 0, g), args.repeats
                )
                passes = steps * (2 if w > 0 and not model.guidance_input else 1)
                timings.append({"model": name, "steps": steps, "w": w, "ms": 1000 * seconds,
                                "rows": passes * model.layout.n_blocks})  # fmt: skip
    print("\nlatency (text → LoRA, median ms):")
    print(pd.DataFrame(timings).round(1).to_string(index=False))
    total = time.perf_counter() - start
    print(f"\n{len(evals)} concepts scored in {total:.0f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "run": str(args.out),
                    "models": {
                        n: {
                            "steps": g,
                            "info": {k: m.info.get(k) for k in ("run_name", "epoch", "distill")},
                        }
                        for n, (m, g) in models.items()
                    },
                    "teacher_cond_drop": config.denoiser.cond_drop,
                    "seeds": seeds,
                    "summary": summary.to_dict(orient="records"),
                    "latency": timings,
                    "per_concept": rows,
                    "seconds": total,
                },
                indent=1,
            )
        )
        print(f"→ {args.json}")


if __name__ == "__main__":
    main()
