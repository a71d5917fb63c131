"""The pair stage on the tiny preset, on the shared local Ray."""

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from wgen.cli import app
from wgen.config import load_config
from wgen.data.images import decode_png
from wgen.data.pairs import load_concepts, read_pairs, run_pairs

pytestmark = [pytest.mark.ray, pytest.mark.timeout(240)]


def test_pairs_stage_writes_every_pair_once_and_resumes(ray_local, tmp_path):
    config = load_config("tiny")
    summary = run_pairs(config, tmp_path)
    data = config.data
    n_concepts = data.n_train_concepts + data.n_val_concepts + data.n_heldout_concepts
    assert summary["pairs"] == n_concepts * data.pairs_per_concept

    frame = read_pairs(tmp_path)
    assert len(frame) == summary["pairs"]
    assert frame.groupby("concept_id").size().eq(data.pairs_per_concept).all()
    assert not frame.duplicated(["concept_id", "image_id"]).any()
    assert set(frame["split"]) == {"train", "val", "heldout"}
    sources, targets = decode_png(frame["source_png"]), decode_png(frame["target_png"])
    assert sources.shape == (len(frame), data.image_size, data.image_size, 3)
    assert np.abs(sources.astype(int) - targets).mean() > 1.0, "the edits changed nothing"
    assert [c.id for c in load_concepts(tmp_path / "concepts.jsonl")] == sorted(
        frame["concept_id"].unique()
    )

    # A finished stage is not redone: the same files stay.
    files = sorted(p.name for p in (tmp_path / "pairs").iterdir())
    assert run_pairs(config, tmp_path) == summary
    assert sorted(p.name for p in (tmp_path / "pairs").iterdir()) == files


def test_user_images_folder_skips_a_corrupt_file(ray_local, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(
            photos / f"p{i}.png"
        )
    (photos / "broken.jpg").write_bytes(b"not a jpeg at all")
    config = load_config("tiny", [f"data.images_dir={photos}"])
    with pytest.warns(UserWarning, match="broken.jpg"):
        summary = run_pairs(config, tmp_path / "run")
    assert summary["photos"] == 2


def test_cli_rejects_an_empty_images_folder_before_writing(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = CliRunner().invoke(
        app, ["pairs", "--preset", "tiny", "--images", str(empty), "--out", str(tmp_path / "run")]
    )
    assert result.exit_code == 2
    assert "has no JPEG or PNG files" in result.output and str(empty) in result.output
    assert not (tmp_path / "run" / "pairs").exists()


def test_cli_rejects_an_unknown_set_key(tmp_path):
    result = CliRunner().invoke(
        app, ["pairs", "--preset", "tiny", "--set", "data.imagesize=8", "--out", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert "data.imagesize" in result.output and "image_size" in result.output
