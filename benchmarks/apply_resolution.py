"""How well an edit learned on 32-pixel crops carries to a photo at its own resolution.

For every collected concept of a split (default: held-out, whose LoRA were trained on their
own pairs, so this measures carrying the edit to full size, not predicting the LoRA), the
procedural editor's own edit of each full-size photo is the ground truth. Every strategy in
`wgen.gan.fullsize.STRATEGIES` edits the same photos (the built-in photographs whose long
side is at least the largest size, scaled to a long side of 128, 256 and 512 px), and is
scored by paired L1 on [0, 1] against the ground truth, beside ``upscaled`` (the GAN at its
trained size, scaled up bicubically: what `wgen apply` returned before, as a centre crop).
Prints the table (strategy x size: median over concepts of the mean L1 over photos, wins
against ``upscaled``, seconds per image), writes it as JSON and a before | after grid.

Needs a run folder with held-out weights, e.g. (about 3 minutes on 2 cores):

    .venv/bin/wgen pairs --preset demo --out runs/demo30
    .venv/bin/wgen collect --preset demo --out runs/demo30 \\
        --set collect.max_concepts=6 --set collect.heldout_concepts=12
    .venv/bin/python benchmarks/apply_resolution.py --run runs/demo30 \\
        --json docs/results/apply/apply_resolution.json --grid docs/results/apply/grid.png
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from wgen.config import load_config
from wgen.data.editors.procedural import ProceduralEditor
from wgen.data.images import builtin_photos
from wgen.data.pairs import CONCEPTS_FILE, load_concepts
from wgen.gan.fullsize import DEFAULT_STRATEGY, STRATEGIES, edit_full_size, fit_side
from wgen.gan.metrics import model_to_uint8, paired_l1, uint8_to_model
from wgen.gan.training import BaseGAN, lora_generator
from wgen.models.base import BASE_DIR
from wgen.models.gan import GAN_SIZES
from wgen.weights.store import WeightStore, checkpoint_state

BASELINE = "upscaled"


class EditorAsGAN(nn.Module):
    """The editor itself at whatever size it is given, in the GAN's convention ([-1, 1] NCHW):
    a perfect GAN at the trained size (``--oracle``), so what remains is the strategies' own
    error in carrying an edit to full size, apart from the LoRA's error at 32 px."""

    factor = 1

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text, self.editor = text, ProceduralEditor()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        images = model_to_uint8(x)
        return uint8_to_model(self.editor(images, [self.text] * len(images)))


def concept_models(run: Path, split: str, preset: str, limit: int | None, oracle: bool):
    """(concept id, text, generator with the concept's last checkpoint, its trained size) per
    collected concept of ``split``; with ``oracle``, every concept of the split in
    RUN/concepts.jsonl with the editor standing in for the generator."""
    config = load_config(preset)
    base = BaseGAN.load(run / BASE_DIR)
    image_size = GAN_SIZES[base.size].image_size
    if oracle:
        concepts = [c for c in load_concepts(run / CONCEPTS_FILE) if c.split == split]
        for concept in concepts[:limit]:
            yield concept.id, concept.text, EditorAsGAN(concept.text), image_size
        return
    store = WeightStore(run)
    last = store.read(splits=[split]).groupby("concept_id").tail(1)
    for _, row in list(last.iterrows())[:limit]:
        state = checkpoint_state(row, store.manifest(), base.fingerprint)
        model = lora_generator(base, config.lora, state).eval()
        yield row["concept_id"], row["concept_text"], model, image_size


def benchmark_photos(sizes: list[int], count: int) -> dict[int, list[tuple[str, np.ndarray]]]:
    """The first ``count`` built-in photos large enough for every size, per size."""
    large = [(n, p) for n, p in builtin_photos() if max(p.shape[:2]) >= max(sizes)][:count]
    return {size: [(n, fit_side(p, size)) for n, p in large] for size in sizes}


def run(args) -> dict:
    editor = ProceduralEditor()
    photos = benchmark_photos(args.sizes, args.photos)
    strategies = args.strategies or list(STRATEGIES)
    if BASELINE not in strategies:
        strategies.append(BASELINE)
    rows = []
    grid_cells = {}
    for concept_id, text, model, image_size in concept_models(
        args.run, args.split, args.preset, args.limit, args.oracle
    ):
        for size, images in photos.items():
            truths = [editor(image[None], [text])[0] for _, image in images]
            for strategy in strategies:
                l1s, seconds = [], []
                for (name, image), truth in zip(images, truths, strict=True):
                    start = time.perf_counter()
                    edited = edit_full_size(model, image, image_size, strategy)
                    seconds.append(time.perf_counter() - start)
                    l1s.append(paired_l1(edited[None], truth[None]))
                    if size == args.grid_size and name == images[0][0]:
                        grid_cells[(concept_id, strategy)] = (image, edited, truth)
                rows.append(
                    {
                        "concept_id": concept_id,
                        "text": text,
                        "size": size,
                        "strategy": strategy,
                        "l1": float(np.mean(l1s)),
                        "seconds_per_image": float(np.mean(seconds)),
                    }
                )
        print(f"{concept_id} done: {text}", flush=True)
    # before | the baseline | the default strategy | the editor's own edit, at full size
    grid = []
    for concept_id in dict.fromkeys(r["concept_id"] for r in rows):
        if (concept_id, DEFAULT_STRATEGY) in grid_cells:
            image, edited, truth = grid_cells[(concept_id, DEFAULT_STRATEGY)]
            grid.append((image, grid_cells[(concept_id, BASELINE)][1], edited, truth))
    return {"rows": rows, "grid": grid[: args.grid_concepts]}


def summarise(rows: list[dict]) -> list[dict]:
    """Per (strategy, size): median L1 over concepts, wins against the baseline, s/image."""
    baseline = {(r["concept_id"], r["size"]): r["l1"] for r in rows if r["strategy"] == BASELINE}
    table = []
    for strategy in dict.fromkeys(r["strategy"] for r in rows):
        for size in sorted({r["size"] for r in rows}):
            cell = [r for r in rows if r["strategy"] == strategy and r["size"] == size]
            wins = sum(r["l1"] < baseline[(r["concept_id"], size)] for r in cell)
            table.append(
                {
                    "strategy": strategy,
                    "size": size,
                    "median_l1": statistics.median(r["l1"] for r in cell),
                    "wins_vs_upscaled": wins,
                    "concepts": len(cell),
                    "seconds_per_image": statistics.mean(r["seconds_per_image"] for r in cell),
                }
            )
    return table


def print_table(table: list[dict]) -> None:
    print(
        f"{'strategy':10s} {'size':>5s} {'median L1':>10s} {'wins vs upscaled':>17s} {'s/image':>8s}"
    )
    for t in table:
        wins = f"{t['wins_vs_upscaled']}/{t['concepts']}" if t["strategy"] != BASELINE else "—"
        print(
            f"{t['strategy']:10s} {t['size']:5d} {t['median_l1']:10.4f} {wins:>17s} "
            f"{t['seconds_per_image']:8.3f}"
        )


def save_grid(grid: list[tuple[np.ndarray, ...]], path: Path) -> None:
    """One row per concept: before | upscaled | the default strategy | the editor's edit."""
    rows = [np.concatenate(row, axis=1) for row in grid]
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(rows, axis=0)).save(path, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", type=Path, required=True, help="run folder with base/ + weights/")
    parser.add_argument("--preset", default="demo", help="the run's preset (its LoRA config)")
    parser.add_argument(
        "--split", default="heldout", help="concepts to score (heldout, val, train)"
    )
    parser.add_argument("--limit", type=int, default=None, help="at most this many concepts")
    parser.add_argument(
        "--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[128, 256, 512]
    )
    parser.add_argument("--photos", type=int, default=6, help="photos per concept and size")
    parser.add_argument("--strategies", type=lambda s: s.split(","), default=None)
    # One thread: the demo GAN is 8 channels wide at full resolution, too little work per op
    # to share; with 2 threads on this (busy) 2-core machine an edit took 5-25x longer.
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument(
        "--oracle", action="store_true", help="the editor at the trained size as the GAN"
    )
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--grid", type=Path, default=None, help="PNG: before | upscaled | default | editor"
    )
    parser.add_argument("--grid-size", type=int, default=256)
    parser.add_argument("--grid-concepts", type=int, default=3)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    result = run(args)
    table = summarise(result["rows"])
    print_table(table)
    wall = time.perf_counter() - start
    print(f"wall time {wall:.0f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        summary = {
            "command": "python benchmarks/apply_resolution.py "
            f"--run {args.run} --split {args.split} --photos {args.photos} "
            + (f"--limit {args.limit} " if args.limit else "")
            + f"--sizes {','.join(map(str, args.sizes))}"
            + (" --oracle" if args.oracle else ""),
            "default_strategy": DEFAULT_STRATEGY,
            "wall_seconds": round(wall, 1),
            "threads": args.threads,
            "table": table,
            "rows": result["rows"],
        }
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    if args.grid and result["grid"]:
        save_grid(result["grid"], args.grid)


if __name__ == "__main__":
    main()
