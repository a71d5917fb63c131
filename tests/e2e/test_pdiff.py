"""p-diff on the tiny preset, on the shared local Ray: the zoo's Ray tasks resume after an
interruption without duplicates, and the whole stage writes its report."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest

from wgen.config import load_config
from wgen.pdiff.stage import run_pdiff
from wgen.pdiff.zoo import read_zoo, run_zoo, zoo_folder

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(600)]


def test_zoo_collection_resumes_after_an_interruption_without_duplicates(ray_local, tmp_path):
    config = load_config("tiny", ["pdiff.checkpoints=6", "pdiff.zoo_tasks=3"])
    first = run_zoo(config, tmp_path, "mlp")
    assert first["shards_trained"] == ["mlp-000", "mlp-001", "mlp-002"]
    folder = tmp_path / zoo_folder("mlp")
    kept = {p.name: p.stat().st_mtime_ns for p in folder.glob("*.parquet")}

    # The interruption: a task that died mid-write leaves its temporary file and no shard.
    (folder / "mlp-001.parquet").unlink()
    (folder / ".mlp-001.parquet.tmp-deadbeef").write_bytes(b"half a parquet file")
    second = run_zoo(config, tmp_path, "mlp")

    assert second["shards_trained"] == ["mlp-001"]  # only the missing shard ran again
    for name in ("mlp-000.parquet", "mlp-002.parquet"):
        assert (folder / name).stat().st_mtime_ns == kept[name]
    zoo = read_zoo(tmp_path, "mlp")
    assert sorted(zoo.meta["concept_id"]) == [f"mlp-s{i:04d}" for i in range(6)]  # no duplicates
    assert zoo.vectors.shape == (6, zoo.manifest.total_numel)
    assert len(pd.read_parquet(folder)) == 6  # the weight format opens in one call
    assert run_zoo(config, tmp_path, "mlp")["shards_trained"] == []


def test_pdiff_stage_writes_report_results_and_scatter(ray_local, tmp_path):
    config = load_config("tiny", ["pdiff.settings=convnet"])
    results = run_pdiff(config, tmp_path)

    folder = tmp_path / "pdiff"
    for name in ("report.md", "results.json", "scatter.png"):
        assert (folder / name).stat().st_size > 0
    assert json.loads((folder / "results.json").read_text())["settings"].keys() == {"convnet"}
    convnet = results["settings"]["convnet"]
    methods = convnet["methods"]
    assert {"original", "p-diff", "gaussian fit", "ae reconstruction"} <= methods.keys()
    assert methods["original"]["models"] == 8 and methods["p-diff"]["models"] == 6
    assert 0.0 <= methods["p-diff"]["heldout_acc"]["mean"] <= 1.0
    # The autoencoder learned: its reported loss fell between the first and last report.
    history = [h for h in json.loads((folder / "convnet/model/state.json").read_text())["history"]]
    ae_losses = [h["loss"] for h in history if h["phase"] == "autoencoder"]
    assert ae_losses[-1] < ae_losses[0]
    assert "p-diff's claim" in (folder / "report.md").read_text()
    assert os.path.exists(folder / "convnet/zoo/_manifest.json")
