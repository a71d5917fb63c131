"""A weight dataset for the stages after collection, built without the actor pool."""

from __future__ import annotations

from pathlib import Path

import torch

from wgen.collect.stage import collect_one, ensure_base, select_concepts
from wgen.data.pairs import read_pairs
from wgen.gan.metrics import build_feature_extractor
from wgen.gan.training import concept_pairs, weight_manifest
from wgen.weights.store import WeightStore


def collect_without_ray(config, out: Path) -> None:
    """The weight dataset from collection's pure per-concept function (the actor pool is
    tested in test_collect.py; here it would only add start-up time). Needs `out`'s pairs."""
    torch.set_num_threads(1)
    base = ensure_base(config, out)
    store = WeightStore(out)
    store.save_manifest(weight_manifest(base, config.lora))
    ids = select_concepts(out, config.collect)
    extractor = build_feature_extractor(config.collect.feature_extractor)
    for pairs in concept_pairs(read_pairs(out, ids), config.collect):
        collect_one(config, base, extractor, store, pairs)
