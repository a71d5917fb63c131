"""Concepts of the classifier zoo: subsets of the digit classes, named in text.

A concept is a set of k classes (`NormZooConfig.classes_per_concept`), e.g. {2, 5, 7}, with
the text "digits 2, 5 and 7". Its task is to classify the images of those classes; its
weights are the classifier's norm layers fine-tuned on them (`wgen.normzoo.zoo`).

Splits follow the GAN's concepts (`wgen.data.concepts`): ``train`` and ``val`` concepts are
collected, ``heldout`` ones are never trained on. Every held-out and validation subset is a
combination of classes that no training concept has, while each of its classes occurs in
some training concept (the planner covers every class first).

``concepts.jsonl`` is written in the layout of the GAN's concept file (id, text, split,
category, edits, kind), so that wgen's concept reader (`wgen.data.pairs.load_concepts`) reads
it too: ``edits`` lists the classes as ``[name, 1.0]`` pairs, ``category`` is "digits" and a
held-out concept's ``kind`` is "combination".
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wgen.core.errors import ConfigError

CONCEPTS_FILE = "concepts.jsonl"  # the run folder's concept table (the GAN's name for it)
SPLITS = ("train", "val", "heldout")
CATEGORY = "digits"


@dataclass(frozen=True)
class SubsetConcept:
    """One class subset: its id (``c`` + number: the weight store's file pattern), text, split."""

    id: str
    classes: tuple[int, ...]
    split: str

    @property
    def text(self) -> str:
        return subset_text(self.classes)

    def to_json(self) -> dict:
        """The line of ``concepts.jsonl`` (the GAN concept file's keys; see the module doc)."""
        return {
            "id": self.id,
            "text": self.text,
            "split": self.split,
            "category": CATEGORY,
            "edits": [[str(c), 1.0] for c in self.classes],
            "kind": "combination" if self.split == "heldout" else "",
        }

    @classmethod
    def from_json(cls, values: dict) -> SubsetConcept:
        return cls(values["id"], tuple(int(name) for name, _ in values["edits"]), values["split"])


def subset_text(classes: Sequence[int]) -> str:
    """ "digit 4", "digits 2 and 5", "digits 2, 5 and 7"."""
    names = [str(c) for c in sorted(classes)]
    if len(names) == 1:
        return f"digit {names[0]}"
    return f"digits {', '.join(names[:-1])} and {names[-1]}"


def plan_concepts(
    n_classes: int, per_concept: int, n_train: int, n_val: int, n_heldout: int, seed: int
) -> list[SubsetConcept]:
    """``n_train + n_val + n_heldout`` distinct subsets of ``per_concept`` of ``n_classes``
    classes, seeded. Validation and held-out subsets are drawn first; training subsets then
    cover every class before the rest follow in the seeded order."""
    subsets = list(itertools.combinations(range(n_classes), per_concept))
    wanted = n_train + n_val + n_heldout
    if not 0 < per_concept < n_classes or wanted > len(subsets):
        raise ConfigError(
            f"{wanted} concepts of {per_concept} classes do not fit in the "
            f"{len(subsets)} subsets of {n_classes} classes; ask for fewer concepts"
        )
    rng = np.random.default_rng(seed)
    order = [subsets[i] for i in rng.permutation(len(subsets))]
    val, held, rest = order[:n_val], order[n_val : n_val + n_heldout], order[n_val + n_heldout :]
    train: list[tuple[int, ...]] = []
    covered: set[int] = set()
    while len(train) < n_train:
        missing = set(range(n_classes)) - covered
        pick = next((s for s in rest if missing & set(s)), rest[0])
        rest.remove(pick)
        train.append(pick)
        covered |= set(pick)
    named = [("train", s) for s in train] + [("val", s) for s in val]
    named += [("heldout", s) for s in held]
    return [SubsetConcept(f"c{i:04d}", s, split) for i, (split, s) in enumerate(named)]


def save_concepts(concepts: Sequence[SubsetConcept], path: Path) -> None:
    Path(path).write_text("".join(json.dumps(c.to_json()) + "\n" for c in concepts))


def load_concepts(path: Path) -> list[SubsetConcept]:
    return [
        SubsetConcept.from_json(json.loads(line))
        for line in Path(path).read_text().splitlines()
        if line.strip()
    ]
