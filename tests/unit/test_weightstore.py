import numpy as np
import pytest
import torch

from wgen.weights.format import Selection, WeightFormatError, build_manifest
from wgen.weights.store import WeightStore, checkpoint_state


def manifest():
    state = {
        "a.lora_A.weight": torch.zeros(2, 3),
        "a.lora_B.weight": torch.zeros(3, 2),
        "n.weight": torch.zeros(4),
    }
    return build_manifest(state, Selection(), "base123")


def write_concept(store, concept_id, k=2, seed=0):
    rng = np.random.default_rng(seed)
    lengths = [g.numel for g in manifest().groups]
    vectors = [[rng.standard_normal(n).astype(np.float32) for n in lengths] for _ in range(k)]
    meta = {
        "concept_id": concept_id,
        "concept_text": "make it sepia",
        "split": "train",
        "converged_step": 50,
    }
    checkpoints = [
        {"step": 50 + 10 * i, "metrics": {"l1": 0.1, "psnr": 20.0, "fd": 1.0}} for i in range(k)
    ]
    store.write_concept(meta, checkpoints, vectors)
    return vectors


def test_rows_round_trip_to_the_state_dict(tmp_path):
    store = WeightStore(tmp_path)
    store.save_manifest(manifest())
    vectors = write_concept(store, "c0001", k=3)
    frame = store.read()
    assert list(frame["checkpoint"]) == [0, 1, 2]
    state = checkpoint_state(frame.iloc[1], store.manifest(), "base123")
    assert torch.equal(state["n.weight"], torch.from_numpy(vectors[1][1]))
    with pytest.raises(WeightFormatError, match="other"):
        checkpoint_state(frame.iloc[1], store.manifest(), "other")


def test_a_family_stores_its_own_metrics_and_reads_them_without_vectors(tmp_path):
    store = WeightStore(tmp_path)
    store.save_manifest(manifest())
    lengths = [g.numel for g in manifest().groups]
    meta = {"concept_id": "c0002", "concept_text": "digits 1, 2 and 3", "split": "val"}
    checkpoints = [{"step": 40, "metrics": {"error": 0.25, "accuracy": 0.75}}]
    vectors = [[np.zeros(n, np.float32) for n in lengths]]
    store.write_concept({**meta, "converged_step": 40}, checkpoints, vectors, ("error", "accuracy"))
    frame = store.read(with_vectors=False)
    assert list(frame.columns) == [
        *["concept_id", "concept_text", "split", "checkpoint", "step", "converged_step"],
        *["error", "accuracy"],
    ]
    assert frame["error"].tolist() == [0.25]


def test_a_manifest_for_another_layout_is_refused_and_the_old_one_kept(tmp_path):
    store = WeightStore(tmp_path)
    store.save_manifest(manifest())
    other = build_manifest({"x.weight": torch.zeros(5)}, Selection(), "base999")
    with pytest.raises(ValueError, match="another weight layout"):
        store.save_manifest(other)
    assert store.manifest().fingerprint == "base123"


def test_retry_forgets_only_unconverged_concepts(tmp_path):
    store = WeightStore(tmp_path)
    for concept_id, status in [("c1", "converged"), ("c2", "not_converged"), ("c3", "failed")]:
        store.begin_attempt(concept_id)
        store.record_status(concept_id, {"status": status})
    assert sorted(store.unfinished_attempts()) == ["c2", "c3"]
    for concept_id in store.unfinished_attempts():
        store.forget(concept_id)
    assert store.finished() == {"c1"}
    assert store.attempts("c2") == [] and len(store.attempts("c1")) == 1


def test_reading_an_empty_store_says_which_command_makes_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="wgen collect"):
        WeightStore(tmp_path).read()
    with pytest.raises(FileNotFoundError, match="wgen collect"):
        WeightStore(tmp_path).manifest()
