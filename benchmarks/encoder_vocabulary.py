"""How well a text encoder knows the held-out split's reserved synonyms, before any training.

Held-out paraphrases name each edit primitive with a word no training text uses ("antique
tint" for sepia, "icy" for cool; `wgen.data.concepts.PRIMITIVES`). A generator can only map
such a word through its text encoder, so this asks the encoder alone: for each reserved
phrase, is the nearest seen phrase (cosine similarity of pooled embeddings) one of the same
primitive, and at what rank does the first one come? No run folder, no training.

    python benchmarks/encoder_vocabulary.py                        # MiniLM (packaged)
    python benchmarks/encoder_vocabulary.py --encoder /path/to/all-mpnet-base-v2

Prints top-1 hits, the mean rank of the first right primitive (0 = nearest) and each miss.
"""

from __future__ import annotations

import argparse

import numpy as np

from wgen.data.concepts import PRIMITIVES
from wgen.generator.text import MINILM, build_text_encoder


def vocabulary() -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(primitive, phrase) for every seen and every reserved noun and adjective phrase."""
    seen, reserved = [], []
    for primitive in PRIMITIVES.values():
        for wording in (primitive.nouns, primitive.adjectives):
            seen += [(primitive.name, phrase) for phrase in wording.seen if phrase]
            reserved += [(primitive.name, phrase) for phrase in wording.reserved if phrase]
    return seen, reserved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--encoder", default=MINILM, help="as train.text_encoder")
    args = parser.parse_args()
    encoder = build_text_encoder(args.encoder)
    seen, reserved = vocabulary()
    similarity = encoder.encode([p for _, p in reserved]) @ encoder.encode([p for _, p in seen]).T
    ranks, misses = [], []
    for row, (primitive, phrase) in zip(similarity, reserved, strict=True):
        order = np.argsort(-row)
        ranks.append(next(k for k, j in enumerate(order) if seen[j][0] == primitive))
        if ranks[-1] > 0:
            misses.append(f"{phrase!r} ({primitive}) → {seen[order[0]][1]!r}")
    hits = sum(rank == 0 for rank in ranks)
    print(
        f"{args.encoder} ({encoder.dim}-d): the nearest seen phrase names the right primitive "
        f"for {hits}/{len(reserved)} reserved phrases; mean rank of the first right one "
        f"{np.mean(ranks):.2f} (0 = nearest) among {len(seen)} seen phrases"
    )
    print("misses: " + "; ".join(misses))


if __name__ == "__main__":
    main()
