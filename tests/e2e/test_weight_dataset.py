"""The weight dataset is an ordinary Parquet dataset: the tools users reach for open
``<run>/weights`` in one call, skipping wgen's ``_``-prefixed side files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.dataset as pads
import pytest
import torch

from wgen.weights.format import Selection, build_manifest
from wgen.weights.store import META_COLUMNS, WEIGHTS_DIR, WeightStore, group_column

pytestmark = [pytest.mark.timeout(300)]

CONCEPTS, K = 3, 2


def _written_store(run):
    """A store with every kind of side file: manifest, statuses, attempts, a temp file."""
    state = {"a.lora_A.weight": torch.zeros(2, 3), "n.weight": torch.zeros(4)}
    manifest = build_manifest(state, Selection(), "base123")
    store = WeightStore(run)
    store.save_manifest(manifest)
    rng = np.random.default_rng(0)
    for c in range(CONCEPTS):
        concept_id = f"c{c:04d}"
        store.begin_attempt(concept_id)
        meta = {"concept_id": concept_id, "concept_text": "sepia", "split": "train"}
        checkpoints = [
            {"step": 10 * k, "metrics": {"l1": 0.1, "psnr": 20.0, "fd": 1.0}} for k in range(K)
        ]
        vectors = [
            [rng.standard_normal(g.numel).astype(np.float32) for g in manifest.groups]
            for _ in range(K)
        ]
        store.write_concept({**meta, "converged_step": 10}, checkpoints, vectors)
        store.record_status(concept_id, {"status": "converged"})
    store.begin_attempt("c9999")  # a concept in flight: an attempt, no rows, no status
    return store


def _open_with_pandas(folder):
    return pd.read_parquet(folder)


def _open_with_pyarrow(folder):
    return pads.dataset(folder).to_table().to_pandas()


def _open_with_ray_data(folder):
    import ray.data

    return ray.data.read_parquet(str(folder)).to_pandas()


@pytest.mark.parametrize("open_", [_open_with_pandas, _open_with_pyarrow, _open_with_ray_data])
def test_the_weight_dataset_opens_in_one_call(tmp_path, request, open_):
    if open_ is _open_with_ray_data:
        request.getfixturevalue("ray_local")
    store = _written_store(tmp_path)
    assert {p.name for p in (tmp_path / WEIGHTS_DIR).iterdir() if p.suffix != ".parquet"} == {
        "_manifest.json",
        "_status",
        "_attempts",
    }
    frame = open_(tmp_path / WEIGHTS_DIR)
    assert len(frame) == CONCEPTS * K
    groups = [group_column(g) for g in range(len(store.manifest().groups))]
    assert set(frame.columns) == set(META_COLUMNS + groups)
    expected = store.read()
    frame = frame.sort_values(["concept_id", "checkpoint"]).reset_index(drop=True)
    assert frame["step"].tolist() == expected["step"].tolist()
    np.testing.assert_array_equal(np.stack(frame["g001"]), np.stack(expected["g001"]))
