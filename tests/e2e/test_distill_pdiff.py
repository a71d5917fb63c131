"""`wgen distill --target pdiff` on the tiny preset, on the shared local Ray: a p-diff
model, two progressive rounds (4 → 2 → 1 DDIM steps) as Ray Train runs, their folders
loaded by p-diff's sampler, a second command that skips them, and the sampler table."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from wgen.cli import app
from wgen.config import load_config
from wgen.core.runtime import read_json
from wgen.distill.fit import Round
from wgen.distill.pdiff import (
    ROUNDS_FILE,
    SAMPLERS_FILE,
    fixed_loss,
    round_folder,
    zoo_latents,
)
from wgen.pdiff.fit import PdiffModel
from wgen.pdiff.stage import model_folder, run_pdiff
from wgen.pdiff.zoo import read_zoo

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]  # about 100 s on a loaded 2-core machine

SETS = ["pdiff.settings=[convnet]", "distill.pdiff_steps=4", "distill.pdiff_epochs=20"]


def distill(out: Path, *sets: str):
    args = ["distill", "--preset", "tiny", "--out", str(out), "--target", "pdiff"]
    result = CliRunner().invoke(app, [*args, *[x for s in (*SETS, *sets) for x in ("--set", s)]])
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def distilled(ray_local, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pdiff_distill")
    run_pdiff(load_config("tiny", ["pdiff.settings=convnet"]), out)
    distill(out)
    return out


def test_every_round_writes_a_pdiff_model_that_samples_with_its_steps(distilled):
    rounds = read_json(distilled / "distill/pdiff" / ROUNDS_FILE)["rounds"]
    assert [(r["round"], r["teacher_steps"]) for r in rounds] == [("steps-2", 4), ("steps-1", 2)]
    assert all(r["job_seconds"] > 0 and r["epochs_trained"] == 20 for r in rounds)
    teacher = PdiffModel.load(model_folder(distilled, "convnet"))
    for steps in (2, 1):
        student = PdiffModel.load(
            round_folder(distilled, "convnet", Round(f"steps-{steps}", steps, True))
        )
        assert student.cfg.sample_steps == steps
        assert student.state.latent_scale == teacher.state.latent_scale
        vectors = student.sample(3, seed=0)
        assert vectors.shape == (3, len(teacher.codec.mean)) and (vectors == vectors).all()


def test_a_round_brings_the_one_step_student_closer_to_the_teachers_two_steps(distilled):
    """The same t and noise (a fixed seed): the student's one DDIM step lands nearer the
    teacher's two than the student did before training (when it was its teacher)."""
    teacher = PdiffModel.load(model_folder(distilled, "convnet"))
    student = PdiffModel.load(round_folder(distilled, "convnet", Round("steps-2", 2, True)))
    z0 = torch.from_numpy(zoo_latents(teacher, read_zoo(distilled, "convnet").vectors))
    for seed in (0, 1, 2):
        before = fixed_loss(teacher.denoiser, teacher, 2, z0, seed)
        after = fixed_loss(student.denoiser, teacher, 2, z0, seed)
        assert after < before, (seed, before, after)


def test_a_second_command_skips_the_finished_rounds_and_tables_every_sampler(distilled):
    before = {p: p.stat().st_mtime_ns for p in (distilled / "distill/pdiff").glob("convnet-*/*")}
    result = distill(distilled)
    assert result.output.count("is complete") == 2
    assert before == {
        p: p.stat().st_mtime_ns for p in (distilled / "distill/pdiff").glob("convnet-*/*")
    }
    rows = read_json(distilled / "distill/pdiff" / SAMPLERS_FILE)["convnet"]
    labels = [r["sampler"] for r in rows]
    assert labels == [f"teacher DDIM {n}" for n in (100, 5, 4, 2, 1)] + ["student 2", "student 1"]
    assert all(r["sampling_s"] > 0 and 0 <= r["heldout_acc"]["mean"] <= 1 for r in rows)
    assert rows[2]["distance_to_teacher"] == 0.0  # the reference: the 4-step teacher itself


def test_pdiff_reports_a_student_with_its_steps(distilled):
    """`wgen pdiff` with pdiff.sampler_dir and pdiff.sample_steps: the run's zoo and fitted
    model are reused, the generated models come from the 1-step student."""
    student = f"{distilled}/distill/pdiff/{{setting}}-steps-1"
    sets = ["pdiff.settings=convnet", f"pdiff.sampler_dir={student}", "pdiff.sample_steps=1"]
    results = run_pdiff(load_config("tiny", sets), distilled)["settings"]["convnet"]
    folder = str(distilled / "distill/pdiff/convnet-steps-1")
    assert results["sampler"] == {"folder": folder, "steps": 1}
    assert results["methods"]["p-diff"]["models"] == 6 and results["zoo_shards_trained"] == []
    assert f"p-diff's models: {folder}, 1 DDIM steps" in (distilled / "pdiff/report.md").read_text()


def test_more_epochs_continue_each_round_from_its_checkpoint(distilled):
    """Last in this file: it trains the fixture's rounds further. The run name leaves the
    epochs out, so the same rounds resume from their epoch-20 checkpoints."""
    distill(distilled, "distill.pdiff_epochs=30")
    rounds = read_json(distilled / "distill/pdiff" / ROUNDS_FILE)["rounds"]
    assert [r["epochs_trained"] for r in rounds] == [30, 30]
    assert [r["metrics"]["first_epoch"] for r in rounds] == [21, 21]
