"""`wgen apply`: a generated adapter edits the user's own photos (a tiny random base GAN)."""

from __future__ import annotations

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from wgen.cli import app
from wgen.config import LoRAConfig
from wgen.gan.lora import add_lora, save_adapter
from wgen.gan.training import BaseGAN
from wgen.models.gan import build_discriminator, build_generator, fingerprint

SIZE = "tiny"


def make_run(tmp_path):
    """RUN/base with a random tiny base GAN and RUN/adapters/c0001 with an adapter for it."""
    run = tmp_path / "run"
    generator = build_generator(SIZE, seed=0)
    base = BaseGAN(
        size=SIZE,
        generator=generator.state_dict(),
        discriminator=build_discriminator(SIZE, seed=0).state_dict(),
        fingerprint=fingerprint(generator, SIZE),
    )
    base.save(run / "base")
    model = add_lora(base.build_generator(), LoRAConfig(), SIZE)
    save_adapter(model, SIZE, run / "adapters" / "c0001", base.fingerprint)
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for name, shape in (("wide", (30, 50, 3)), ("tall", (40, 20, 3))):
        Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)).save(photos / f"{name}.png")
    return run, photos


def test_apply_writes_edited_images_and_a_grid_and_refuses_to_overwrite(tmp_path):
    run, photos = make_run(tmp_path)
    out = tmp_path / "edited"
    args = ["apply", "--adapter", str(run / "adapters" / "c0001"), "--images", str(photos)]
    result = CliRunner().invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    # each photo at its own size; the grid's rows (before | after) padded to the widest
    assert np.asarray(Image.open(out / "wide.png")).shape == (30, 50, 3)
    assert np.asarray(Image.open(out / "tall.png")).shape == (40, 20, 3)
    assert np.asarray(Image.open(out / "grid.png")).shape == (30 + 40, 2 * 50, 3)
    again = CliRunner().invoke(app, [*args, "--out", str(out)])
    assert again.exit_code == 2 and "--force" in again.output
    forced = CliRunner().invoke(app, [*args, "--out", str(out), "--force"])
    assert forced.exit_code == 0, forced.output


def test_apply_names_an_adapter_made_for_another_base(tmp_path):
    run, photos = make_run(tmp_path)
    other = build_generator(SIZE, seed=1)
    BaseGAN(
        SIZE, other.state_dict(), build_discriminator(SIZE).state_dict(), fingerprint(other, SIZE)
    ).save(tmp_path / "other")
    result = CliRunner().invoke(
        app,
        [
            "apply",
            "--adapter",
            str(run / "adapters" / "c0001"),
            "--images",
            str(photos),
            "--out",
            str(tmp_path / "o"),
            "--base",
            str(tmp_path / "other"),
        ],
    )
    assert result.exit_code == 2
    assert "does not fit the base GAN" in result.output and "Traceback" not in result.output
