"""Quality of the GAN with generated LoRA, before any fine-tuning, against simple baselines.

For every validation concept of a run folder with a trained generator (``wgen train``), the
base GAN is loaded with LoRA from each method and scored on the concept's held-back pairs
(`wgen.gan.training.Evaluator`: paired L1 on [0, 1], PSNR, Fréchet distance; lower L1 / FD and
higher PSNR are better):

    identity   the source image unchanged (reference: what "no edit" scores)
    lora-zero  LoRA at peft's standard init (B = 0): the base GAN itself
    mean       the mean of all training checkpoints' flat vectors
    nearest    the last checkpoint of the training concept nearest by text embedding
    nearest-edit  the same, for the training concept whose edit program is closest (L1
               over primitive strengths): an oracle no text encoder sees, which tells
               whether the weights transfer between similar edits at all
    ridge      a linear map text embedding → weights (ridge regression on the training
               checkpoints): the simplest learned text-conditioned generator
    wgen-1     the generator, one direct step from its own t (mean over --seeds); with
               --t 200,500,800 / --guidance 0,1,3 also wgen-1@tT@wW at each (t, w)
    wgen-ddim  the generator, --ddim-steps DDIM steps (mean over --seeds)
    own        the concept's own collected LoRA (validation concepts were collected too):
               the ceiling, which no method sees

It also reports whether the denoiser uses the text at all (its loss on training blocks with
the right text, another concept's and the null text), where the generated vectors lie (cosine of wgen − mean with own − mean, for
LoRA matrices and norm parameters apart: does the generator move from the mean towards the
concept?) and the latency of generating all N blocks of one concept (median of --repeats,
1 torch thread): denoising + un-chunking alone, and with the text embedding.

    .venv/bin/python benchmarks/generator_quality.py --out runs/demo --json /tmp/quality.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from wgen.data.concepts import Concept
from wgen.data.pairs import CONCEPTS_FILE, load_concepts
from wgen.gan.metrics import build_feature_extractor
from wgen.gan.quality import METRICS, concept_evals, mean_metrics, score_lora
from wgen.generator.checkpoint import WeightGenerator
from wgen.generator.dataset import row_vectors
from wgen.generator.diffusion import masked_mse
from wgen.generator.fit import GENERATOR_DIR
from wgen.generator.textcache import cached_embeddings
from wgen.weights.format import flatten, unflatten
from wgen.weights.store import WeightStore, checkpoint_state


def flat_rows(frame: pd.DataFrame, n_groups: int) -> np.ndarray:
    """(R, total) float32: every checkpoint row's groups concatenated."""
    return np.stack([np.concatenate(vectors) for vectors in row_vectors(frame, n_groups)])


def split_flat(vector: np.ndarray, lengths: list[int]) -> list[np.ndarray]:
    return [part.copy() for part in np.split(vector, np.cumsum(lengths)[:-1])]


def flat_state(state: dict[str, torch.Tensor], manifest) -> np.ndarray:
    return np.concatenate(flatten(state, manifest))


def lora_mask(manifest) -> np.ndarray:
    """True on the values of LoRA A/B matrices, False on norm parameters."""
    return np.concatenate(
        [np.full(e.numel, ".lora_" in e.key) for g in manifest.groups for e in g.entries]
    )


def fit_ridge(
    embeddings: np.ndarray, weights: np.ndarray, alpha: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Linear text → weights map (ridge regression on centred data): (x mean, y mean, W).

    The simplest text-conditioned generator: what a learned map can get from the text
    embeddings of the training concepts, as a reference for the diffusion generator.
    """
    x_mean, y_mean = embeddings.mean(axis=0), weights.mean(axis=0)
    x = embeddings - x_mean
    coef = np.linalg.solve(x.T @ x + alpha * np.eye(x.shape[1]), x.T @ (weights - y_mean))
    return x_mean, y_mean, coef


def edit_distance(a: Concept, b: Concept) -> float:
    """L1 distance between two edit programs as {primitive: strength} (absent = 0)."""
    sa, sb = dict(a.edits), dict(b.edits)
    return sum(abs(sa.get(k, 0.0) - sb.get(k, 0.0)) for k in sa.keys() | sb.keys())


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))


@torch.no_grad()
def text_sensitivity(
    generator: WeightGenerator, frame: pd.DataFrame, embedded: dict, samples: int = 8192
) -> dict[int, dict[str, float]]:
    """Does the denoiser use the text? Its denoising loss on blocks of ``frame`` at a few t,
    with each block's own text, a shuffled concept's text, and the learned null text (same
    noise). Equal losses mean the text is ignored."""
    rows = row_vectors(frame, len(generator.manifest.groups))
    blocks, mask = generator.codec.encode(rows)
    n_blocks, block_size = mask.shape
    rng = np.random.default_rng(0)
    pick = rng.choice(len(rows) * n_blocks, min(samples, len(rows) * n_blocks), replace=False)
    x = torch.from_numpy(blocks.reshape(-1, block_size)[pick])[:, None]
    real = torch.from_numpy(np.tile(mask, (len(rows), 1))[pick])[:, None]
    n = torch.from_numpy(np.tile(np.arange(n_blocks), len(rows))[pick])
    texts = np.stack([embedded[t] for t in frame["concept_text"]])
    own = torch.from_numpy(np.repeat(texts, n_blocks, axis=0)[pick])
    shuffled = own[torch.from_numpy(rng.permutation(len(own)))]
    null = generator.denoiser.null_text.detach()[None].expand_as(own)
    result = {}
    for t in (generator.diffusion.num_timesteps * share // 10 for share in (1, 3, 5)):
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(t))
        steps = torch.full((len(x),), t)
        alpha, sigma = generator.diffusion.alpha_sigma(steps, x)
        x_t = alpha * x + sigma * noise
        target = generator.diffusion.target(x, noise, steps)  # ε, x0 or v, as trained
        result[t] = {
            name: masked_mse(generator.denoiser(x_t, steps, n, text), target, real).item()
            for name, text in (("own", own), ("shuffled", shuffled), ("null", null))
        }
    return result


def latency(fn, repeats: int) -> float:
    fn()  # warm-up: first-call allocations
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="run folder with generator/")
    parser.add_argument(
        "--generator", type=Path, default=None, help="generator folder (default: OUT/generator)"
    )
    parser.add_argument("--seeds", default="0,1,2", help="generation seeds to average over")
    parser.add_argument("--ddim-steps", type=int, default=10)
    parser.add_argument(
        "--guidance",
        default=None,
        help="classifier-free guidance weights w to compare for the single step, comma-separated"
        " (needs a generator trained with denoiser.cond_drop > 0; default: its own)",
    )
    parser.add_argument(
        "--t",
        default=None,
        help="single-step t values to compare, comma-separated (default: the generator's own)",
    )
    parser.add_argument("--repeats", type=int, default=20, help="latency repeats (median)")
    parser.add_argument("--ridge-alpha", type=float, default=1.0, help="ridge baseline's alpha")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    seeds = [int(s) for s in args.seeds.split(",")]

    generator = WeightGenerator.load(args.generator or args.out / GENERATOR_DIR)
    config, manifest, base = generator.config, generator.manifest, generator.base
    own_t, own_w = config.generate.single_step_t, config.generate.guidance
    t_values = [int(t) for t in args.t.split(",")] if args.t else [own_t]
    w_values = [float(w) for w in args.guidance.split(",")] if args.guidance else [own_w]
    single = {  # name → (t, w); "wgen-1" is the generator's own setting
        "wgen-1" + (f"@t{t}" if t != own_t else "") + (f"@w{w:g}" if w != own_w else ""): (t, w)
        for t in t_values
        for w in w_values
    }
    store = WeightStore(args.out)
    generator.check_base(store.manifest().fingerprint)
    frame = store.read()
    train, val = frame[frame["split"] == "train"], frame[frame["split"] == "val"]
    n_groups = len(manifest.groups)

    train_flat = flat_rows(train, n_groups)
    mean_state = unflatten(split_flat(train_flat.mean(axis=0), manifest.group_lengths), manifest)
    last = train.sort_values("checkpoint").groupby("concept_id").tail(1).set_index("concept_id")
    texts = dict(zip(frame["concept_id"], frame["concept_text"], strict=False))
    embedded = cached_embeddings(
        args.out, generator.text_encoder, list(dict.fromkeys(texts.values()))
    )
    train_ids = sorted(last.index)
    train_matrix = np.stack([embedded[texts[c]] for c in train_ids])
    programs = {c.id: c for c in load_concepts(args.out / CONCEPTS_FILE)}

    extractor = build_feature_extractor(config.collect.feature_extractor)
    evals = concept_evals(args.out, sorted(val["concept_id"].unique()), config, extractor)
    mask = lora_mask(manifest)
    mean_flat = train_flat.mean(axis=0)
    x_mean, y_mean, coef = fit_ridge(
        np.stack([embedded[t] for t in train["concept_text"]]), train_flat, args.ridge_alpha
    )
    rows, geometry = [], []
    for e in evals:
        embedding = embedded[e.text]
        similarity = train_matrix @ embedding
        nearest_id = train_ids[int(np.argmax(similarity))]
        edit_id = min(train_ids, key=lambda c: edit_distance(programs[e.concept_id], programs[c]))
        own_row = val[val["concept_id"] == e.concept_id].sort_values("checkpoint").iloc[-1]
        states = {
            "lora-zero": None,
            "mean": mean_state,
            "nearest": checkpoint_state(last.loc[nearest_id], manifest, base.fingerprint),
            "nearest-edit": checkpoint_state(last.loc[edit_id], manifest, base.fingerprint),
            "ridge": unflatten(
                split_flat(y_mean + (embedding - x_mean) @ coef, manifest.group_lengths), manifest
            ),
            "own": checkpoint_state(own_row, manifest, base.fingerprint),
        }
        scores = {"identity": e.evaluate(nn.Identity())}
        scores.update({m: score_lora(base, config, s, e.evaluate) for m, s in states.items()})
        own_delta = flat_state(states["own"], manifest) - mean_flat
        samplers = [(name, 1, t, w) for name, (t, w) in single.items()]
        samplers.append((f"wgen-ddim{args.ddim_steps}", args.ddim_steps, own_t, own_w))
        for name, steps, t, w in samplers:
            config.generate.single_step_t, config.generate.guidance = t, w
            generated = [
                generator.generate_from_embedding(embedding, steps, seed) for seed in seeds
            ]
            config.generate.single_step_t, config.generate.guidance = own_t, own_w
            scores[name] = mean_metrics(
                [score_lora(base, config, g, e.evaluate) for g in generated]
            )
            delta = np.mean([flat_state(g, manifest) for g in generated], axis=0) - mean_flat
            geometry.append(
                {
                    "concept_id": e.concept_id,
                    "method": name,
                    "cos_lora": cosine(delta[mask], own_delta[mask]),
                    "cos_norms": cosine(delta[~mask], own_delta[~mask]),
                    "norm_ratio": float(np.linalg.norm(delta) / np.linalg.norm(own_delta)),
                }
            )
        for method, metrics in scores.items():
            rows.append({"concept_id": e.concept_id, "text": e.text, "method": method, **metrics})
        print(
            f"{e.concept_id} {e.text!r}: nearest training concept {nearest_id} "
            f"{texts[nearest_id]!r} (cos {similarity.max():.2f}); nearest edit {edit_id} "
            f"{texts[edit_id]!r}"
        )

    table = pd.DataFrame(rows)
    order = list(dict.fromkeys(table["method"]))
    summary = table.groupby("method")[list(METRICS)].mean().loc[order]
    l1 = table.pivot(index="concept_id", columns="method", values="l1")[order]
    wins = {
        f"{w} beats {m}": int((l1[w] < l1[m]).sum())
        for w in single
        for m in ("lora-zero", "mean", "nearest", "nearest-edit", "ridge")
    }
    pd.set_option("display.width", 200)
    print(
        f"\nGAN quality with each LoRA, mean over {len(evals)} validation concepts (before fine-tuning):"
    )
    print(summary.round(4).to_string())
    print("\nL1 per concept:")
    print(l1.round(4).to_string())
    print(f"\nConcepts where the generator has the lower L1: {wins} (of {len(evals)})")
    geo = pd.DataFrame(geometry).groupby("method")[["cos_lora", "cos_norms", "norm_ratio"]].mean()
    print("\nGenerated minus mean vs own minus mean (cosine; 1 = straight towards the concept):")
    print(geo.round(3).to_string())

    sensitivity = text_sensitivity(generator, train, embedded)
    print(
        "\nDenoising loss on training blocks with the concept's own text / another concept's / null:"
    )
    for t, losses in sensitivity.items():
        print(f"  t={t}: " + ", ".join(f"{k} {v:.4f}" for k, v in losses.items()))

    embedding = embedded[evals[0].text]
    text = evals[0].text
    generator.encoder  # noqa: B018 - load τ before timing
    timings = {
        f"denoise_{steps}_ms": 1000
        * latency(lambda s=steps: generator.generate_from_embedding(embedding, s), args.repeats)
        for steps in (1, args.ddim_steps)
    }
    timings.update(
        {
            f"text_to_lora_{steps}_ms": 1000
            * latency(lambda s=steps: generator.generate(text, s), args.repeats)
            for steps in (1, args.ddim_steps)
        }
    )
    print(
        f"\nLatency, all {generator.layout.n_blocks} blocks of b={generator.layout.block_size} of one "
        f"concept, 1 thread, median of {args.repeats}: "
        + ", ".join(f"{k} {v:.1f}" for k, v in timings.items())
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "run": str(args.out),
                    "generator_epoch": generator.info.get("epoch"),
                    "seeds": seeds,
                    "summary": summary.reset_index().to_dict(orient="records"),
                    "per_concept": rows,
                    "wins": wins,
                    "geometry": geometry,
                    "text_sensitivity": sensitivity,
                    "latency": timings,
                    "n_blocks": generator.layout.n_blocks,
                    "feature_extractor": extractor.name,
                },
                indent=2,
            )
        )
        print(f"→ {args.json}")


if __name__ == "__main__":
    main()
