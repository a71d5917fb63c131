"""The classifier-norm zoo built on the shared local Ray: the run folder it writes passes the
checks `wgen train` makes before it starts, and an interrupted build resumes."""

from __future__ import annotations

import dataclasses

import pytest

from wgen.config import load_config
from wgen.core.errors import ConfigError, RunFolderError
from wgen.core.integrity import verify_inputs
from wgen.core.runfolder import check_input, command_args
from wgen.core.runtime import SUCCESS_FILE, read_json
from wgen.generator.dataset import load_block_data
from wgen.models.base import base_family
from wgen.normzoo.zoo import NormZooConfig, build_zoo
from wgen.weights.store import WeightStore

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]

CFG = NormZooConfig(train_concepts=6, val_concepts=2, heldout_concepts=2, k_checkpoints=2)


def test_the_zoo_is_a_run_folder_that_wgen_train_accepts(ray_local, tmp_path):
    summary = build_zoo(tmp_path, CFG)
    assert summary["converged"] == summary["selected"] == 8
    assert base_family(tmp_path / "base") == "classifier-norm"
    store = WeightStore(tmp_path)
    frame = store.read(with_vectors=False)
    assert frame.groupby("split")["concept_id"].nunique().to_dict() == {"train": 6, "val": 2}
    assert len(frame) == 8 * CFG.k_checkpoints
    assert {"error", "accuracy"} <= set(frame.columns)
    # every concept's norms beat the base on its classes
    for concept_id, status in store.statuses().items():
        assert status["metrics"]["error"] < status["base"]["error"], concept_id
    listed = read_json(store.folder / SUCCESS_FILE)["files"]
    assert {"base/base.json", "base/classifier.safetensors", "weights/_manifest.json"} <= set(
        listed
    )
    # what `wgen train` checks before it starts (wgen.pipeline.run_stage), on any preset
    config = load_config("tiny")
    check_input(tmp_path, "train", config)
    verify_inputs(tmp_path, "train", command_args(config, tmp_path))
    # the tiny preset's paraphrases (the GAN's edit grammar): one line before anything trains
    with pytest.raises(ConfigError, match="train.paraphrases=0"):
        load_block_data(tmp_path, 32, config.train.text_encoder, n_paraphrases=2)


def test_a_rebuild_trains_only_the_missing_concepts_and_refuses_other_settings(ray_local, tmp_path):
    build_zoo(tmp_path, CFG)
    store = WeightStore(tmp_path)
    kept = {p.name: p.stat().st_mtime_ns for p in store.parquet_files()}
    (store.folder / "c0003.parquet").unlink()  # as if its task died before its status
    store.forget("c0003")
    assert build_zoo(tmp_path, CFG)["converged"] == 8
    for path in store.parquet_files():
        if path.name != "c0003.parquet":
            assert path.stat().st_mtime_ns == kept[path.name]
    with pytest.raises(RunFolderError, match="base_epochs"):
        build_zoo(tmp_path, dataclasses.replace(CFG, base_epochs=3))
