"""Draw (source, edited) pairs for 8 concepts of different categories from a pairs folder.

python benchmarks/pairs_grid.py --out runs/demo --png docs/results/collect/pairs_grid.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

from wgen.core.plots import image_grid
from wgen.data.images import decode_png
from wgen.data.pairs import load_concepts, read_pairs


def pick_concepts(concepts, n: int):
    """Round-robin over categories so the grid shows every kind of edit."""
    by_category: dict[str, list] = {}
    for concept in concepts:
        if concept.split == "train":
            by_category.setdefault(concept.category, []).append(concept)
    chosen, queues = [], sorted(by_category.items())
    while len(chosen) < n and any(q for _, q in queues):
        for _, queue in queues:
            if queue and len(chosen) < n:
                chosen.append(queue.pop(0))
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--out", type=Path, default=Path("runs/demo"), help="run folder with pairs/"
    )
    parser.add_argument("--png", type=Path, default=Path("docs/results/collect/pairs_grid.png"))
    parser.add_argument("--concepts", type=int, default=8)
    parser.add_argument("--images", type=int, default=3, help="pairs shown per concept")
    args = parser.parse_args()

    chosen = pick_concepts(load_concepts(args.out / "concepts.jsonl"), args.concepts)
    frame = read_pairs(args.out, [c.id for c in chosen])
    rows = []
    for concept in chosen:
        group = frame[frame["concept_id"] == concept.id].head(args.images)
        sources, targets = decode_png(group["source_png"]), decode_png(group["target_png"])
        images = [img for pair in zip(sources, targets, strict=True) for img in pair]
        rows.append((f"[{concept.category}]\n{concept.text}", images))
    titles = ["source", "edited"] * args.images
    print(image_grid(rows, args.png, titles))


if __name__ == "__main__":
    main()
