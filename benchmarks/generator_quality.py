"""Zero-shot quality: the GAN with a predicted LoRA, before any fine-tuning, on concepts no
predictor trained on — the weight generator(s) against every honest baseline.

For every validation and held-out concept of a run folder (held-out = unseen combinations
and unseen paraphrases), the base GAN is loaded with each method's LoRA and scored on the
concept's held-back pairs (paired L1 on [0, 1], lower is better; PSNR higher is better):

    lora-zero     peft's standard init (B = 0): the base GAN itself
    mean          the mean training checkpoint
    nearest, knn  by pooled MiniLM text similarity (every wording of a training concept)
    ridge, hyper  linear / function-space MLP text → weights (`wgen.generator.baselines`),
                  trained on the SAME paraphrases as the generator (--paraphrases)
    nearest-edit  the training concept with the closest edit program: an ORACLE no text
                  model sees, reported apart
    <generator>   each --generator NAME=DIR, one direct step (mean over --seeds), with the
                  text sensitivity beside it: another eval concept's text, and the null text
    <name>-ddim   the first generator with --ddim-steps DDIM steps
    <name>-readout-only, <name>-unet-only
                  with --components: the first generator's trained denoiser with its UNet's
                  output zeroed (the block readout alone), and without its readout (the UNet
                  alone); a component ablation of one trained model, not a retraining
    average       with --average: the LoRA factors of every --generator averaged (each from
                  its own text encoder, same seed): an ensemble probe, e.g. of two encoders
    own           the concept's own collected LoRA where it was collected: the ceiling
                  (--ceilings RUN adds those a second collection over the same pairs and
                  base GAN holds, e.g. held-out concepts collected after the fact)

"gap closed" = (L1_mean − L1_method) / (L1_mean − L1_own), over the concepts with an own
LoRA; "wins" count concepts where a method's L1 is below the mean's / below the better of
ridge and hyper on that concept. After the tables, each generator's gap and its L1 against
hyper's come with 95% bootstrap intervals over the concepts (24 per split is few: a few
points of gap between two methods can be noise). `--from-json FILE` prints all of it again
from a stored result, without scoring anything.

    .venv/bin/python benchmarks/generator_quality.py --out runs/study \\
        --generator wgen=runs/study/generator --json docs/results/generator/quality.json
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import filecmp
import json
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from wgen.bench.methods import BaselineRecipe, Baselines
from wgen.config import Config
from wgen.data.pairs import CONCEPTS_FILE, load_concepts
from wgen.generator.checkpoint import WeightGenerator
from wgen.models.base import BASE_DIR, load_base_model
from wgen.models.denoiser import Denoiser
from wgen.weights.store import WeightStore

ORACLES = ("nearest-edit", "own")
BASELINE_METHODS = ("mean", "nearest", "knn", "ridge", "hyper", "nearest-edit")


def latency(fn, repeats: int) -> float:
    fn()  # warm-up: first-call allocations
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def per_concept_l1(table: pd.DataFrame, split: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One split's L1 as concept × method, and its rows with an own LoRA (the gap's concepts)."""
    l1 = table[table["split"] == split].pivot(index="concept_id", columns="method", values="l1")
    with_own = l1.dropna(subset=["own"]) if "own" in l1 else l1.iloc[:0]
    return l1, with_own


def summarise(table: pd.DataFrame, split: str) -> pd.DataFrame:
    """Per method: mean L1 / PSNR, gap closed, wins vs mean and vs the best of ridge/hyper."""
    l1, with_own = per_concept_l1(table, split)
    psnr = table[table["split"] == split].groupby("method")["psnr"].mean()
    best_simple = l1[["ridge", "hyper"]].min(axis=1)
    rows = []
    for method in l1.columns:
        gap = np.nan
        if len(with_own):
            gap = gap_closed(with_own["mean"], with_own[method], with_own["own"])
        rows.append(
            {
                "method": method,
                "l1": float(l1[method].mean()),
                "psnr": float(psnr[method]),
                "gap_closed": gap,
                "wins_vs_mean": int((l1[method] < l1["mean"]).sum()),
                "wins_vs_best_simple": int((l1[method] < best_simple).sum()),
                "concepts": int(l1[method].notna().sum()),
            }
        )
    return pd.DataFrame(rows).set_index("method")


def gap_closed(mean: np.ndarray, method: np.ndarray, own: np.ndarray) -> float:
    """The share of the distance from the mean checkpoint to the own LoRA that a method
    closes, from per-concept L1 values (all three over the same concepts)."""
    return float((mean.mean() - method.mean()) / (mean.mean() - own.mean()))


def bootstrap_interval(
    statistic, *columns: np.ndarray, rounds: int = 10_000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile interval of ``statistic(*columns)`` over ``rounds`` resamples of the concepts
    (the rows of every column together) drawn with replacement. The seed is fixed: a stored
    result always prints the same interval."""
    n = len(columns[0])
    draws = np.random.default_rng(seed).integers(0, n, size=(rounds, n))
    values = np.array([statistic(*(c[d] for c in columns)) for d in draws])
    low, high = np.nanquantile(values, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def intervals(table: pd.DataFrame, split: str, generators: list[str]) -> pd.DataFrame:
    """Per generator on one split: the gap closed and the mean L1 difference to hyper (negative:
    the generator is better), each with its 95% bootstrap interval over concepts."""
    l1, with_own = per_concept_l1(table, split)
    rows = []
    for name in generators:
        row: dict = {"method": name}
        if len(with_own):
            columns = [with_own[c].to_numpy() for c in ("mean", name, "own")]
            row["gap_closed"] = gap_closed(*columns)
            row["gap_low"], row["gap_high"] = bootstrap_interval(gap_closed, *columns)
        diff = (l1[name] - l1["hyper"]).to_numpy()
        row["l1_minus_hyper"] = float(diff.mean())
        row["low"], row["high"] = bootstrap_interval(np.mean, diff)
        rows.append(row)
    return pd.DataFrame(rows).set_index("method")


def report(table: pd.DataFrame, generators: list[str]) -> dict[str, dict[str, pd.DataFrame]]:
    """Print every split's summary and the generators' intervals; returns both per split."""
    if "average" in set(table["method"]):
        generators = [*generators, "average"]
    tables = {
        split: {
            "summary": summarise(table, split),
            "intervals": intervals(table, split, generators),
        }
        for split in ("val", "heldout")
    }
    pd.set_option("display.width", 220)
    for split, parts in tables.items():
        print(f"\n{split}: paired L1 before fine-tuning (lower is better); oracles: {ORACLES}")
        print(parts["summary"].round(4).to_string())
        print(f"{split}: 95% bootstrap intervals over its concepts")
        print(parts["intervals"].round(4).to_string())
    return tables


def from_json(path: Path) -> None:
    """--from-json: the tables and intervals of a stored result, nothing scored again."""
    if not path.is_file():
        raise SystemExit(f"--from-json {path}: no such file (a --json output of this script)")
    stored = json.loads(path.read_text())
    if "per_concept" not in stored:
        raise SystemExit(
            f"--from-json {path}: no per_concept rows (not a --json output of this script)"
        )
    report(pd.DataFrame(stored["per_concept"]), list(stored["generators"]))


def own_loras(frame: pd.DataFrame, concept_ids: list[str], groups: int) -> dict[str, np.ndarray]:
    """Each listed concept's last collected checkpoint, as one flat vector."""
    last = (
        frame[frame["concept_id"].isin(concept_ids)]
        .sort_values("checkpoint")
        .groupby("concept_id")
        .tail(1)
    )
    return {
        r.concept_id: np.concatenate(
            [np.asarray(r[f"g{g:03d}"], np.float32) for g in range(groups)]
        )
        for _, r in last.iterrows()
    }


def denoiser_parts(denoiser: Denoiser) -> dict[str, Denoiser]:
    """Copies of a trained denoiser with a block readout: its readout alone (the UNet's output
    projection zeroed, so the UNet adds nothing) and its UNet alone (the readout removed)."""
    if denoiser.readout is None:
        raise SystemExit("--components: the first generator has no block readout to split off")
    readout_only, unet_only = copy.deepcopy(denoiser), copy.deepcopy(denoiser)
    with torch.no_grad():
        readout_only.conv_out.weight.zero_()
        readout_only.conv_out.bias.zero_()
    unet_only.readout = None
    return {"readout-only": readout_only, "unet-only": unet_only}


def mean_scores(per_seed: list[dict[str, float]]) -> dict[str, float]:
    """Each metric averaged over the generation seeds."""
    return {k: float(np.mean([p[k] for p in per_seed])) for k in per_seed[0]}


def average_loras(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The element-wise mean of several LoRA state dicts over the same base GAN (factor by
    factor, as the mean-checkpoint baseline averages checkpoints)."""
    return {key: torch.stack([s[key] for s in states]).mean(dim=0) for key in states[0]}


def check_ceilings(ceilings: Path, out: Path) -> None:
    """--ceilings must be a run folder over the same concepts as ``out`` (one-line exit)."""
    if not (ceilings / CONCEPTS_FILE).is_file():
        raise SystemExit(f"--ceilings {ceilings}: not a run folder (no {CONCEPTS_FILE})")
    if not filecmp.cmp(ceilings / CONCEPTS_FILE, out / CONCEPTS_FILE, shallow=False):
        raise SystemExit(f"--ceilings {ceilings}: its concepts differ from {out}'s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="run folder (pairs, weights, base)")
    parser.add_argument(
        "--generator",
        action="append",
        default=[],
        help="NAME=DIR of a trained generator (repeatable; default: wgen=OUT/generator)",
    )
    parser.add_argument(
        "--ceilings",
        type=Path,
        default=None,
        help="run folder with more own LoRAs (same pairs and base GAN), e.g. "
        "`wgen collect --set collect.max_concepts=2 --set collect.heldout_concepts=24`",
    )
    parser.add_argument("--paraphrases", type=int, default=16, help="P for ridge/hyper's texts")
    parser.add_argument("--hyper-epochs", type=int, default=40)
    parser.add_argument("--ridge-alpha", type=float, default=1.0)
    parser.add_argument("--seeds", default="0,1,2", help="generation seeds to average over")
    parser.add_argument("--ddim-steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=20, help="latency repeats (median)")
    parser.add_argument("--json", type=Path, default=None, help="write every number here")
    parser.add_argument(
        "--components",
        action="store_true",
        help="also score the first generator's readout alone and its UNet alone",
    )
    parser.add_argument(
        "--average",
        action="store_true",
        help="also score the LoRA averaged over every --generator (two or more)",
    )
    parser.add_argument(
        "--from-json",
        type=Path,
        default=None,
        help="print the tables and intervals of a stored --json result (nothing is scored)",
    )
    args = parser.parse_args()
    if args.from_json is not None:
        return from_json(args.from_json)
    if args.out is None:
        parser.error("--out is required (or --from-json FILE)")
    torch.set_num_threads(1)
    seeds = [int(s) for s in args.seeds.split(",")]
    named = [g.split("=", 1) for g in args.generator] or [["wgen", str(args.out / "generator")]]
    if args.average and len(named) < 2:
        raise SystemExit("--average needs two or more --generator NAME=DIR to average")
    generators = {name: WeightGenerator.load(Path(folder)) for name, folder in named}
    averaged = list(generators)  # before --components adds the first one's parts
    first_name, first = next(iter(generators.items()))
    if args.components:
        for part, denoiser in denoiser_parts(first.denoiser).items():
            generators[f"{first_name}-{part}"] = dataclasses.replace(first, denoiser=denoiser)
    config: Config = first.config
    base = load_base_model(args.out / BASE_DIR, config)
    store = WeightStore(args.out)
    manifest = store.manifest()
    for generator in generators.values():
        generator.check_base(manifest.fingerprint)
    frame = store.read()
    lengths = manifest.group_lengths
    programs = {c.id: c for c in load_concepts(args.out / CONCEPTS_FILE)}

    # 1-2. Every text baseline, fitted on the training checkpoints and every wording of their
    # texts (the same code `wgen bench` uses: wgen.bench.methods.Baselines).
    baselines = Baselines.fit(
        args.out,
        config,
        base,
        ["ridge", "hyper"],
        BaselineRecipe(
            args.paraphrases, config.train.max_train_concepts, args.hyper_epochs, "constant"
        ),
        ridge_alpha=args.ridge_alpha,
    )
    train_ids = baselines.data.concept_ids
    fit_seconds = baselines.fit_seconds
    print(
        f"baselines fitted on {len(train_ids)} training concepts × {1 + args.paraphrases} wordings in {fit_seconds:.0f} s"
    )
    eval_ids = sorted(c.id for c in programs.values() if c.split in ("val", "heldout"))
    pooled = baselines.embed([programs[c].text for c in eval_ids])

    # 3. Score every method on every validation / held-out concept.
    evals = base.task_data(args.out, eval_ids)
    own = own_loras(frame, eval_ids, len(lengths))
    if args.ceilings is not None:
        check_ceilings(args.ceilings, args.out)
        ceilings = WeightStore(args.ceilings)
        if ceilings.manifest().fingerprint != manifest.fingerprint:
            raise SystemExit(
                f"--ceilings {args.ceilings}: its LoRAs are for another base GAN "
                f"({ceilings.manifest().fingerprint}, this run: {manifest.fingerprint})"
            )
        more = own_loras(ceilings.read(), eval_ids, len(lengths))
        own.update({c: flat for c, flat in more.items() if c not in own})
        print(f"own LoRA: {len(more)} from {args.ceilings}, {len(own)} in all")
    states = {n: g.embed for n, g in generators.items()}
    text_states = {n: {e.concept_id: states[n](e.text) for e in evals} for n in generators}
    rows = []
    for i, e in enumerate(evals):
        embedding = pooled[e.text]
        edits = programs[e.concept_id].edits
        flats = {m: baselines.predict(m, embedding, edits) for m in BASELINE_METHODS}
        if e.concept_id in own:
            flats["own"] = own[e.concept_id]
        scores = {"lora-zero": base.quality(None, e)}
        for method, flat in flats.items():
            scores[method] = base.quality(baselines.state(flat), e)
        other = evals[(i + 1) % len(evals)].concept_id
        own_text_loras = {}  # per generator, one LoRA per seed: --average reuses them
        for name, generator in generators.items():
            own_text = text_states[name][e.concept_id]
            variants = {
                name: own_text,
                f"{name}|other-text": text_states[name][other],
                f"{name}|null-text": np.zeros_like(own_text),
            }
            for label, text in variants.items():
                loras = [generator.generate_from_embedding(text, 1, s) for s in seeds]
                if label == name:
                    own_text_loras[name] = loras
                per_seed = [base.quality(lora, e) for lora in loras]
                scores[label] = mean_scores(per_seed)
        if args.average:
            per_seed = [
                base.quality(average_loras([own_text_loras[n][k] for n in averaged]), e)
                for k in range(len(seeds))
            ]
            scores["average"] = mean_scores(per_seed)
        ddim = [
            first.generate_from_embedding(text_states[first_name][e.concept_id], args.ddim_steps, s)
            for s in seeds
        ]
        per_seed = [base.quality(d, e) for d in ddim]
        scores[f"{first_name}-ddim"] = mean_scores(per_seed)
        split = programs[e.concept_id].split
        kind = programs[e.concept_id].kind
        for method, metrics in scores.items():
            rows.append(
                {
                    "concept_id": e.concept_id,
                    "split": split,
                    "kind": kind,
                    "method": method,
                    **metrics,
                }
            )
        print(
            f"{e.concept_id} [{split}{'/' + kind if kind else ''}] {e.text!r}: "
            + ", ".join(f"{m} {s['l1']:.3f}" for m, s in scores.items() if "|" not in m)
        )

    tables = report(pd.DataFrame(rows), [n for n, _ in named])

    text = evals[0].text
    timings = {
        f"{name}_1step_ms": 1000 * latency(lambda g=g: g.generate(text, 1), args.repeats)
        for name, g in generators.items()
    }
    print(
        "\nText → LoRA latency (embedding + 1 step + un-chunk, 1 thread, median):",
        {k: round(v, 1) for k, v in timings.items()},
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "run": str(args.out),
                    "generators": {
                        n: {
                            "folder": d,
                            "epoch": generators[n].info.get("epoch"),
                            "denoiser": vars(generators[n].config.denoiser),
                            "train": vars(generators[n].config.train),
                        }
                        for n, d in named
                    },
                    "train_concepts": len(train_ids),
                    "paraphrases": args.paraphrases,
                    "seeds": seeds,
                    "summary": {
                        s: t["summary"].reset_index().to_dict(orient="records")
                        for s, t in tables.items()
                    },
                    "intervals": {
                        s: t["intervals"].reset_index().to_dict(orient="records")
                        for s, t in tables.items()
                    },
                    "per_concept": rows,
                    "latency_ms": timings,
                    "baseline_fit_s": fit_seconds,
                    "feature_extractor": base.extractor.name,
                },
                indent=1,
            )
        )
        print(f"→ {args.json}")


if __name__ == "__main__":
    main()
