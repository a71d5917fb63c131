"""`wgen finetune` writes its preview at the photos' own size (issue 30), next to the adapter."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from tests.e2e.test_bench import run_folder  # noqa: F401 - the tiny run with a generator
from wgen.cli import app
from wgen.gan.lora import load_adapter
from wgen.gan.training import BaseGAN
from wgen.models.base import BASE_DIR

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]


def test_finetune_previews_each_photo_at_its_own_size_up_to_max_side(run_folder, tmp_path):  # noqa: F811
    from skimage import data

    photos, adapter = tmp_path / "photos", tmp_path / "adapter"
    photos.mkdir()
    for name, (w, h) in (("astronaut", (90, 60)), ("coffee", (50, 80)), ("chelsea", (150, 120))):
        Image.fromarray(getattr(data, name)()).resize((w, h)).save(photos / f"{name}.png")
    args = ["finetune", "--generator", str(run_folder / "generator"), "--images", str(photos)]
    result = CliRunner().invoke(
        app, [*args, "--concept", "make it sepia-toned", "--out", str(adapter), "--max-side", "100"]
    )
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "chelsea: 150x120 is over --max-side 100; edited at 100x80" in result.output
    preview = adapter / "preview"
    for name, shape in (("astronaut", (60, 90)), ("coffee", (80, 50)), ("chelsea", (80, 100))):
        assert np.asarray(Image.open(preview / f"{name}.png")).shape == (*shape, 3)
    assert (preview / "grid.png").is_file()
    base = BaseGAN.load(run_folder / BASE_DIR)
    load_adapter(base.build_generator(), adapter, base.fingerprint)  # still a peft adapter
